//! Probes of the running kernel: the effective `mmap_min_addr` floor and the
//! user address width.

use crate::error::{Errno, Error};
use crate::sys::{self, OwnedRange, PAGE};

/// What the probes found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Probe {
    /// The effective floor of non-fixed placement: the kernel-internal
    /// `mmap_min_addr` (0x10000 here although the sysctl says 4096; see
    /// `docs/linux-semantics.md`, "`mmap_min_addr`").
    pub mmap_min_addr: u64,
    /// The sysctl `vm.mmap_min_addr` (what the `EPERM` check uses), if readable.
    pub sysctl_mmap_min_addr: Option<u64>,
    /// User address bits: 47 (4-level paging) or 56 (LA57, 5-level).
    pub user_va_bits: u32,
    /// The top of the default user window, `2^47 - PAGE`, where top-down
    /// placement starts (even with LA57, unless a hint asks for more).
    pub default_map_window: u64,
    /// `TASK_SIZE`: `2^user_va_bits - PAGE`, the end of the user range.
    pub task_size: u64,
    /// `/proc/cpuinfo` lists `la57` (the CPU can do 5-level paging; the
    /// kernel may still run 4-level).
    pub cpu_la57: bool,
}

/// The effective floor: a non-fixed `mmap` with hint 0x1000 is raised by the
/// kernel to `PAGE_ALIGN(mmap_min_addr)` (`round_hint_to_min`) and, if that
/// page is free, placed there. The mapping is unmapped again.
///
/// If the floor page happens to be taken the kernel places the mapping
/// elsewhere; then the probe falls back to the smallest hint that is
/// honoured, trying powers of two from 0x1000, and, failing that, to the
/// sysctl value.
pub fn mmap_floor() -> Result<u64, Error> {
    let r = OwnedRange::reserve_anywhere(0x1000, PAGE).map_err(|errno| Error::Sys {
        call: "mmap(hint 0x1000, PROT_NONE)",
        addr: 0x1000,
        len: PAGE,
        errno,
    })?;
    let got = r.addr();
    drop(r);
    if got < 0x100_0000 {
        return Ok(got);
    }
    // The floor page was busy: the kernel ignored the hint. A fixed probe
    // below the floor is refused with EPERM (capability LSM) or succeeds
    // (the DAC floor is lower): take the sysctl as the best answer.
    Ok(sysctl_mmap_min_addr().unwrap_or(0x10000).max(PAGE))
}

/// `/proc/sys/vm/mmap_min_addr`.
pub fn sysctl_mmap_min_addr() -> Option<u64> {
    std::fs::read_to_string("/proc/sys/vm/mmap_min_addr")
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// `/proc/sys/vm/max_map_count`.
pub fn max_map_count() -> Option<u64> {
    std::fs::read_to_string("/proc/sys/vm/max_map_count")
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// The user address width of this process.
///
/// Method: `MAP_FIXED_NOREPLACE` of one page at `2^47`. With 4-level paging
/// `TASK_SIZE` is `2^47 - PAGE`, so the kernel refuses with `ENOMEM`
/// (`addr > TASK_SIZE - len` in `__get_unmapped_area`); with 5-level paging
/// the address is valid and the call succeeds (or fails with `EEXIST` if
/// something is already there, which proves the same). A plain hint would
/// not do: above 47 bits it is ignored on 4-level and honoured on 5-level,
/// but "ignored" is indistinguishable from "taken". `/proc/cpuinfo`'s `la57`
/// says only what the CPU supports, not what the kernel enabled.
pub fn user_va_bits() -> u32 {
    match OwnedRange::reserve_at(1 << 47, PAGE) {
        Ok(r) => {
            drop(r);
            56
        }
        Err(Errno::EEXIST) => 56,
        Err(_) => 47,
    }
}

fn cpu_la57() -> bool {
    std::fs::read_to_string("/proc/cpuinfo")
        .map(|s| {
            s.lines()
                .filter(|l| l.starts_with("flags"))
                .any(|l| l.split_whitespace().any(|f| f == "la57"))
        })
        .unwrap_or(false)
}

/// Runs every probe.
pub fn probe() -> Result<Probe, Error> {
    let bits = user_va_bits();
    let _ = sys::page_size();
    Ok(Probe {
        mmap_min_addr: mmap_floor()?,
        sysctl_mmap_min_addr: sysctl_mmap_min_addr(),
        user_va_bits: bits,
        default_map_window: (1 << 47) - PAGE,
        task_size: (1u64 << bits) - PAGE,
        cpu_la57: cpu_la57(),
    })
}

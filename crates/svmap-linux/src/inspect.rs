//! `svmap inspect`: a process's address space as a device with `va_bits`
//! address bits sees it. This module builds the report as data; the
//! `svmap` command renders it as text, JSON or a picture.

use crate::error::Error;
use crate::maps::{self, Target};
use crate::probe;
use crate::reserve::STACK_GUARD_GAP;
use crate::sys::PAGE;

/// How much of a VMA a device with the given width can reach.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Visibility {
    /// Entirely below `2^va_bits`.
    Visible,
    /// Crosses `2^va_bits`.
    Partial,
    /// Entirely above.
    Invisible,
}

impl Visibility {
    /// `visible`, `partial` or `invisible`.
    pub fn name(self) -> &'static str {
        match self {
            Visibility::Visible => "visible",
            Visibility::Partial => "partial",
            Visibility::Invisible => "invisible",
        }
    }
}

/// One VMA of the report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VmaInfo {
    /// First address.
    pub start: u64,
    /// One past the last.
    pub end: u64,
    /// `rwxp` as in maps.
    pub perms: String,
    /// Name (escapes kept), empty for anonymous memory.
    pub name: String,
    /// `VM_GROWSDOWN`.
    pub growsdown: bool,
    /// Device reach.
    pub visibility: Visibility,
    /// A reservation, not memory: private anonymous `PROT_NONE` (what the
    /// fence and guard regions are made of). It holds no memory and cannot
    /// be accessed; the kernel may still label one `[heap]` (a reservation
    /// that starts at the program break), so its name is dropped.
    pub reserved: bool,
}

/// The report of [`report`].
#[derive(Clone, Debug, PartialEq)]
pub struct Report {
    /// The process.
    pub pid: u32,
    /// The device width.
    pub va_bits: u32,
    /// `2^va_bits` (clamped to the user range).
    pub limit: u64,
    /// The effective `mmap_min_addr` (probed in this process).
    pub floor: u64,
    /// Every user VMA.
    pub vmas: Vec<VmaInfo>,
    /// Kernel-half entries such as `[vsyscall]` (not part of the user space).
    pub beyond_user: Vec<VmaInfo>,
    /// The largest free windows in `[floor, limit)`, outside stack guard
    /// gaps, largest first (at most 8): `(start, end)`.
    pub largest_free: Vec<(u64, u64)>,
    /// Free bytes in `[floor, limit)` (outside guard gaps).
    pub free_bytes: u64,
    /// Number of free holes in `[floor, limit)`.
    pub free_holes: usize,
    /// Mapped bytes at or above the limit, reservations not counted.
    pub mapped_above_bytes: u64,
    /// Reserved bytes (see [`VmaInfo::reserved`]) at or above the limit:
    /// the fence's reservations, mostly.
    pub reserved_above_bytes: u64,
    /// `1 - largest / free`: 0 when all free space is one window.
    pub fragmentation: f64,
}

/// Builds the report for `target` and a device with `va_bits` bits.
pub fn report(target: Target, va_bits: u32) -> Result<Report, Error> {
    if !(12..=64).contains(&va_bits) {
        return Err(Error::InvalidArgument {
            what: format!("va_bits {va_bits} is not in 12..=64"),
        });
    }
    let view = maps::read_view(target)?;
    let pid = match target {
        Target::SelfProcess => std::process::id(),
        Target::Pid(p) => p,
    };
    let task = (1u64 << probe::user_va_bits()) - PAGE;
    let limit = if va_bits >= 64 {
        task
    } else {
        (1u64 << va_bits).min(task)
    };
    let floor = probe::mmap_floor()?;
    let info = |e: &maps::MapsEntry| VmaInfo {
        start: e.start,
        end: e.end,
        perms: e.perms.to_string(),
        name: if is_reservation(e) {
            String::new()
        } else {
            e.name_lossy()
        },
        reserved: is_reservation(e),
        growsdown: e.growsdown,
        visibility: if e.end <= limit {
            Visibility::Visible
        } else if e.start >= limit {
            Visibility::Invisible
        } else {
            Visibility::Partial
        },
    };
    let vmas: Vec<VmaInfo> = view.entries.iter().map(info).collect();
    let beyond_user = view.beyond_user.iter().map(info).collect();
    let mut holes = Vec::new();
    let mut prev_end = 0u64;
    for v in view.map.iter() {
        let mut e = v.start;
        if v.flags.contains(svmap_core::VmaFlags::GROWSDOWN) {
            e = e.saturating_sub(STACK_GUARD_GAP);
        }
        let (s, e) = (prev_end.max(floor), e.min(limit));
        if e > s {
            holes.push((s, e));
        }
        prev_end = prev_end.max(v.end);
    }
    if limit > prev_end.max(floor) {
        holes.push((prev_end.max(floor), limit));
    }
    let free_bytes: u64 = holes.iter().map(|&(s, e)| e - s).sum();
    let free_holes = holes.len();
    holes.sort_by_key(|&(s, e)| (std::cmp::Reverse(e - s), s));
    holes.truncate(8);
    let largest = holes.first().map_or(0, |&(s, e)| e - s);
    let above = |reserved: bool| -> u64 {
        view.entries
            .iter()
            .filter(|e| e.end > limit && is_reservation(e) == reserved)
            .map(|e| e.end - e.start.max(limit))
            .sum()
    };
    let mapped_above_bytes = above(false);
    let reserved_above_bytes = above(true);
    Ok(Report {
        pid,
        va_bits,
        limit,
        floor,
        vmas,
        beyond_user,
        largest_free: holes,
        free_bytes,
        free_holes,
        mapped_above_bytes,
        reserved_above_bytes,
        fragmentation: if free_bytes == 0 {
            0.0
        } else {
            1.0 - largest as f64 / free_bytes as f64
        },
    })
}

/// Private anonymous `PROT_NONE`: an address-space reservation. The kernel
/// names an anonymous VMA `[heap]` when it touches the program break's
/// range, which a reservation made right after the break does.
pub fn is_reservation(e: &maps::MapsEntry) -> bool {
    let p = e.perms;
    !p.read
        && !p.write
        && !p.exec
        && !p.shared
        && e.inode == 0
        && matches!(e.kind(), maps::Kind::Anonymous | maps::Kind::Heap)
}

//! Reserving a window of the real address space below a device limit.
//!
//! ```text
//!  floor (probed mmap_min_addr)                 2^va_bits          TASK_SIZE
//!  |                                             |                  |
//!  [ lib ][  free  ][ RESERVED: PROT_NONE ][free][ stack guard | stack ]...
//!                   ^ addr                ^ addr + len
//!         the best gap of [floor, 2^N) by svmap's search over /proc/self/smaps,
//!         keeping out of the 1 MiB guard gap below grows-down VMAs
//! ```
//!
//! The reservation is one `PROT_NONE | MAP_PRIVATE | MAP_ANONYMOUS |
//! MAP_NORESERVE | MAP_FIXED_NOREPLACE` mapping: it costs one VMA and no
//! memory, and the kernel refuses (`EEXIST`) rather than replace anything.
//! `MAP_FIXED_NOREPLACE` ignores guard gaps, so the search applies them
//! (`respect_guard_gaps`). `EEXIST` means another thread mapped into the
//! chosen range between the read of the view and the call: the view is read
//! again and the search repeated, up to `max_tries` times.

use std::os::fd::BorrowedFd;

use svmap_core::{FitError, FitRequest, SearchParams, VmaFlags};

use crate::error::{Errno, Error};
use crate::maps::{self, Target, View};
use crate::probe;
use crate::sys::{Access, OwnedRange, PAGE};

/// The kernel's default `stack_guard_gap` (256 pages). The `stack_guard_gap=`
/// boot option can change it; svmap assumes the default.
pub const STACK_GUARD_GAP: u64 = 256 * PAGE;

/// What to reserve.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReserveRequest {
    /// Lowest acceptable address; raised to the probed `mmap_min_addr`.
    pub low: u64,
    /// The reservation ends at or below this address (`2^va_bits`).
    pub high: u64,
    /// Wanted length in bytes (rounded up to pages).
    pub len: u64,
    /// Smallest acceptable length when `len` cannot be had (`len` for
    /// all-or-nothing).
    pub min_len: u64,
    /// Alignment of the start (a power of two, at least a page).
    pub align: u64,
    /// Prefer the highest fit (true) or the lowest (false).
    pub topdown: bool,
    /// How many times to re-read the view after losing a race.
    pub max_tries: u32,
}

impl ReserveRequest {
    /// A request for `len` bytes anywhere below `2^va_bits`, all or nothing,
    /// lowest fit, 8 tries.
    pub fn below_bits(va_bits: u32, len: u64) -> Result<ReserveRequest, Error> {
        Ok(ReserveRequest {
            low: 0,
            high: window_high(va_bits)?,
            len,
            min_len: len,
            align: PAGE,
            topdown: false,
            max_tries: 8,
        })
    }
}

/// `2^va_bits`, clamped to the top of the default user window.
pub fn window_high(va_bits: u32) -> Result<u64, Error> {
    if !(20..=56).contains(&va_bits) {
        return Err(Error::InvalidArgument {
            what: format!("va_bits {va_bits} is not in 20..=56"),
        });
    }
    let task = (1u64 << probe::user_va_bits()) - PAGE;
    Ok((1u64 << va_bits).min(task))
}

/// A reserved range that svmap owns; unmapped on drop.
#[derive(Debug)]
pub struct Reservation {
    range: OwnedRange,
    requested: u64,
    tries: u32,
}

/// Search parameters for the live process: its effective `mmap_min_addr`,
/// the default stack guard gap and 4 KiB pages.
pub fn live_params() -> Result<SearchParams, Error> {
    Ok(SearchParams {
        mmap_min_addr: probe::mmap_floor()?,
        stack_guard_gap: STACK_GUARD_GAP,
        growsup_guard: false,
        page_size: PAGE,
    })
}

fn round_up(x: u64, a: u64) -> Option<u64> {
    Some(x.checked_add(a - 1)? & !(a - 1))
}

/// The largest aligned free piece of `[low, high)` in `view`, outside the
/// guard gaps below grows-down VMAs: `(start, len)` with `len` a multiple of a
/// page. Ties go to the lowest (or, with `topdown`, the highest). O(n).
pub fn largest_free(
    view: &View,
    low: u64,
    high: u64,
    align: u64,
    topdown: bool,
) -> Option<(u64, u64)> {
    let mut best: Option<(u64, u64)> = None;
    let mut consider = |s: u64, e: u64| {
        let s = s.max(low);
        let e = e.min(high);
        if s >= e {
            return;
        }
        let Some(a) = round_up(s, align) else { return };
        if a >= e {
            return;
        }
        let len = (e - a) & !(PAGE - 1);
        if len == 0 {
            return;
        }
        let better = match best {
            None => true,
            Some((_, bl)) => len > bl || (len == bl && topdown),
        };
        if better {
            best = Some((a, len));
        }
    };
    let mut prev_end = 0u64;
    for v in view.map.iter() {
        let mut gap_end = v.start;
        if v.flags.contains(VmaFlags::GROWSDOWN) {
            gap_end = gap_end.saturating_sub(STACK_GUARD_GAP);
        }
        if gap_end > prev_end {
            consider(prev_end, gap_end);
        }
        prev_end = prev_end.max(v.end);
    }
    consider(prev_end, !(PAGE - 1));
    best
}

impl Reservation {
    /// Reserves exactly `[addr, addr + len)` (`MAP_FIXED_NOREPLACE`), failing
    /// with [`Error::Sys`] (`EEXIST`) if anything is mapped there. No guard
    /// gap check.
    pub fn at(addr: u64, len: u64) -> Result<Reservation, Error> {
        let range = OwnedRange::reserve_at(addr, len)
            .map_err(|errno| map_err("mmap(MAP_FIXED_NOREPLACE)", addr, len, len, errno))?;
        Ok(Reservation {
            range,
            requested: len,
            tries: 1,
        })
    }

    /// Finds and reserves a window (see the module documentation).
    ///
    /// Returns the whole `len` if it fits anywhere in the window; otherwise
    /// the largest free piece if it is at least `min_len`
    /// ([`Reservation::is_partial`]); otherwise [`Error::WindowFull`].
    pub fn reserve(req: &ReserveRequest) -> Result<Reservation, Error> {
        let params = live_params()?;
        Self::reserve_with(req, &params, || maps::read_view(Target::SelfProcess))
    }

    /// [`Reservation::reserve`] with the search parameters and the source of
    /// the view given (tests use this to inject stale views).
    pub fn reserve_with(
        req: &ReserveRequest,
        params: &SearchParams,
        mut read_view: impl FnMut() -> Result<View, Error>,
    ) -> Result<Reservation, Error> {
        let bad = |what: String| Err(Error::InvalidArgument { what });
        if req.len == 0 {
            return bad("length 0".into());
        }
        if !req.align.is_power_of_two() || req.align < PAGE {
            return bad(format!(
                "alignment {:#x} is not a power of two >= a page",
                req.align
            ));
        }
        let Some(len) = round_up(req.len, PAGE) else {
            return bad(format!("length {:#x} overflows", req.len));
        };
        let min_len = round_up(req.min_len.clamp(PAGE, len), PAGE).unwrap_or(len);
        let low = req.low.max(params.mmap_min_addr);
        if req.high <= low || req.high - low < min_len {
            return Err(Error::WindowFull {
                low,
                high: req.high,
                min_len,
                largest_free: 0,
            });
        }
        let tries = req.max_tries.max(1);
        for t in 1..=tries {
            let view = match read_view() {
                Ok(v) => v,
                // The process changed while it was read: read again.
                Err(Error::Inconsistent { .. }) => continue,
                Err(e) => return Err(e),
            };
            let fit = view.map.find_fit(
                &FitRequest {
                    length: len,
                    low,
                    high: req.high,
                    align: req.align,
                    align_offset: 0,
                    topdown: req.topdown,
                    respect_guard_gaps: true,
                },
                params,
            );
            let (addr, size) = match fit {
                Ok(a) => (a, len),
                Err(FitError::NoSpace) | Err(FitError::EmptyWindow { .. }) => {
                    match largest_free(&view, low, req.high, req.align, req.topdown) {
                        Some((a, l)) if l >= min_len => (a, l.min(len)),
                        other => {
                            return Err(Error::WindowFull {
                                low,
                                high: req.high,
                                min_len,
                                largest_free: other.map_or(0, |(_, l)| l),
                            })
                        }
                    }
                }
                Err(e) => return bad(e.to_string()),
            };
            match OwnedRange::reserve_at(addr, size) {
                Ok(range) => {
                    return Ok(Reservation {
                        range,
                        requested: len,
                        tries: t,
                    })
                }
                // Another thread got there first: refresh and retry.
                Err(Errno::EEXIST) => continue,
                Err(errno) => {
                    return Err(map_err(
                        "mmap(MAP_FIXED_NOREPLACE)",
                        addr,
                        size,
                        size,
                        errno,
                    ))
                }
            }
        }
        Err(Error::RetriesExhausted { tries })
    }

    /// First address.
    pub fn addr(&self) -> u64 {
        self.range.addr()
    }

    /// Reserved length in bytes.
    pub fn len(&self) -> u64 {
        self.range.len()
    }

    /// Never true (a reservation is at least a page); for clippy.
    pub fn is_empty(&self) -> bool {
        self.range.len() == 0
    }

    /// One past the last address.
    pub fn end(&self) -> u64 {
        self.range.addr() + self.range.len()
    }

    /// The length that was asked for (page rounded).
    pub fn requested(&self) -> u64 {
        self.requested
    }

    /// True if less than the requested length was reserved.
    pub fn is_partial(&self) -> bool {
        self.len() < self.requested
    }

    /// How many views were read (1 without races).
    pub fn tries(&self) -> u32 {
        self.tries
    }

    pub(crate) fn range(&self) -> &OwnedRange {
        &self.range
    }

    /// Maps `len` bytes of `fd` (from offset 0) at `addr`, read and write,
    /// shared (`MAP_SHARED | MAP_FIXED`), over this reservation's own pages.
    /// `EINVAL` unless `[addr, addr + len)` is a non-empty page-aligned
    /// part of the reservation; errors of `mmap` pass through, and the
    /// range stays reserved after a failure. Only the owner of the
    /// reservation (`&mut`) can change what is mapped in it; a
    /// [`Heap`](crate::heap::Heap) keeps its reservation to itself.
    pub fn map_shared_fd(&mut self, addr: u64, len: u64, fd: BorrowedFd<'_>) -> Result<(), Errno> {
        self.range.map_shared_fd(addr, len, fd)
    }

    /// Maps `len` bytes of `fd` from `offset` at `addr`, as
    /// [`Reservation::map_shared_fd`] does from offset 0.
    pub fn map_shared_fd_at(
        &mut self,
        addr: u64,
        len: u64,
        fd: BorrowedFd<'_>,
        offset: u64,
    ) -> Result<(), Errno> {
        self.range.map_shared_fd_at(addr, len, fd, offset)
    }

    /// Replaces the mapped `[addr, addr + len)` (a part of this reservation)
    /// by private anonymous memory holding the same bytes, in one step
    /// (`mremap`): from then on no other process sees or changes them.
    pub fn privatize(&mut self, addr: u64, len: u64) -> Result<(), Errno> {
        self.range.privatize(addr, len)
    }

    /// Puts a fresh `PROT_NONE` reservation back over `[addr, addr + len)`
    /// (a part of this reservation, as for [`Reservation::map_shared_fd`]):
    /// whatever was mapped there is released.
    pub fn reset(&mut self, addr: u64, len: u64) -> Result<(), Errno> {
        self.range.reset(addr, len)
    }

    /// Changes the CPU access of `[addr, addr + len)` (a part of this
    /// reservation, as for [`Reservation::map_shared_fd`]) with `mprotect`.
    pub fn protect(&mut self, addr: u64, len: u64, access: Access) -> Result<(), Errno> {
        self.range.protect(addr, len, access)
    }

    /// Gives the reservation up without unmapping it: for a range the
    /// process lost by other means (another `munmap` or `MAP_FIXED`), which
    /// svmap must no longer touch.
    pub fn leak(self) {
        self.range.leak();
    }
}

/// Turns an mmap errno into the layer's error. `ENOMEM` has several causes
/// the kernel does not tell apart; they are told apart by the process's
/// own numbers, read just after the failure:
///
/// - the address-space limit: `grows` (the bytes the call adds to the
///   address space; 0 for a mapping over svmap's own reserved pages) would
///   take `VmSize` (`/proc/self/status`) past the soft `RLIMIT_AS`
///   (`/proc/self/limits`): [`Error::AddressSpaceLimit`];
/// - the map count: the process's VMAs (`/proc/self/maps`) are within 2
///   of `vm.max_map_count` (a call adds at most 2, splitting a
///   reservation): [`Error::MapCountLimit`];
/// - anything else (a range beyond `TASK_SIZE`, checked first; kernel
///   memory): [`Error::Sys`] with the errno.
///
/// "No room" never reaches here: the searches report it before any call
/// ([`Error::WindowFull`], [`Error::HeapFull`]).
pub(crate) fn map_err(call: &'static str, addr: u64, len: u64, grows: u64, errno: Errno) -> Error {
    if errno != Errno::ENOMEM {
        return Error::Sys {
            call,
            addr,
            len,
            errno,
        };
    }
    // Beyond TASK_SIZE the kernel refuses before any limit is looked at.
    let task_size = (1u64 << probe::user_va_bits()) - PAGE;
    if addr.saturating_add(len) > task_size {
        return Error::Sys {
            call,
            addr,
            len,
            errno,
        };
    }
    if grows > 0 {
        if let (Some(limit), Some(vm_size)) = (rlimit_as(), vm_size()) {
            if vm_size.saturating_add(grows) > limit {
                return Error::AddressSpaceLimit {
                    call,
                    len: grows,
                    vm_size,
                    limit,
                };
            }
        }
    }
    if let (Some(vmas), Some(max)) = (count_vmas(), probe::max_map_count()) {
        if vmas as u64 + 2 >= max {
            return Error::MapCountLimit {
                call,
                vmas,
                max_map_count: max,
            };
        }
    }
    Error::Sys {
        call,
        addr,
        len,
        errno,
    }
}

/// Number of lines of `/proc/self/maps`, one per VMA.
pub(crate) fn count_vmas() -> Option<usize> {
    use std::io::BufRead;
    let f = std::fs::File::open("/proc/self/maps").ok()?;
    let mut n = 0;
    for line in std::io::BufReader::new(f).split(b'\n') {
        line.ok()?;
        n += 1;
    }
    Some(n)
}

/// The soft `RLIMIT_AS` in bytes from `/proc/self/limits` (`None` if
/// unlimited or unreadable).
pub fn rlimit_as() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/limits").ok()?;
    parse_rlimit_as(&text)
}

/// The soft limit of the `Max address space` line of a `/proc/PID/limits`
/// text (`None` if unlimited or absent).
pub fn parse_rlimit_as(limits: &str) -> Option<u64> {
    let line = limits
        .lines()
        .find_map(|l| l.strip_prefix("Max address space"))?;
    line.split_whitespace().next()?.parse().ok()
}

/// The process's address-space size in bytes (`VmSize` of
/// `/proc/self/status`).
pub fn vm_size() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/status").ok()?;
    parse_vm_size(&text)
}

/// `VmSize` of a `/proc/PID/status` text, in bytes.
pub fn parse_vm_size(status: &str) -> Option<u64> {
    let rest = status.lines().find_map(|l| l.strip_prefix("VmSize:"))?;
    let kib: u64 = rest.trim().strip_suffix("kB")?.trim().parse().ok()?;
    kib.checked_mul(1024)
}

//! The fence's hole rule, written once for both of its users: the
//! `LD_PRELOAD` library (`libsvmap_fence.so`, which runs before `main` and
//! must not allocate) and the library call `svmap_linux::fence::Fence`.
//!
//! A fence keeps a program's later mappings below a device's limit `2^N` by
//! reserving every free hole of `[limit, top)` (`top`: the end of the user
//! address space) with `PROT_NONE` mappings. It must not take the room a
//! grows-down VMA (the main stack) needs to grow, or the program dies of
//! `SIGSEGV` on its next deep call.
//!
//! # The stack's room
//!
//! The kernel grows a `VM_GROWSDOWN` VMA downwards from its start
//! (`expand_downwards`): a fault below the start moves the start down. It
//! refuses the growth when the VMA would exceed `RLIMIT_STACK`
//! (`acct_stack_growth`) or come closer than `stack_guard_gap` to the
//! mapping below it. The fence therefore leaves free, below the start of
//! every grows-down VMA, `RLIMIT_STACK` bytes for the growth itself plus the
//! guard gap that must stay free below the grown stack. Measuring from the
//! start (rather than from the end, where the kernel's size check is
//! anchored) leaves a little more than the kernel could use, by the stack's
//! current size: the plan does not depend on how deep the stack is when the
//! fence goes up, and it never takes a page the stack may still need. With
//! an unlimited `RLIMIT_STACK` the whole hole below the stack stays free.
//!
//! [`plan`] walks the VMAs once, in address order, and yields what to
//! reserve and what to leave free; it allocates nothing.

/// What a VMA looks like to the fence.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FenceVma {
    /// First address.
    pub start: u64,
    /// One past the last address.
    pub end: u64,
    /// The VMA grows down (`VM_GROWSDOWN`; the main stack `[stack]`).
    pub grows_down: bool,
}

/// The fence's parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FenceParams {
    /// The device limit `2^N`: nothing below it is reserved.
    pub limit: u64,
    /// The end of the user address space: nothing at or above it is
    /// reserved.
    pub top: u64,
    /// The soft `RLIMIT_STACK` in bytes; `None` if unlimited.
    pub stack_rlimit: Option<u64>,
    /// The kernel's `stack_guard_gap` in bytes (256 pages by default).
    pub stack_guard_gap: u64,
    /// The page size (a power of two); reserved ranges are page aligned.
    pub page_size: u64,
}

/// One step of the plan, in address order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FenceStep {
    /// Reserve `[start, end)`: a free hole at or above the limit.
    Reserve {
        /// First address.
        start: u64,
        /// One past the last address.
        end: u64,
    },
    /// Leave `[start, end)` free: the room of the grows-down VMA that starts
    /// at `end`. Only the part at or above the limit is given.
    StackRoom {
        /// First address.
        start: u64,
        /// One past the last address (the grows-down VMA's start).
        end: u64,
    },
}

/// The lowest address the room of a grows-down VMA starting at `start`
/// reaches (page aligned down): `start - RLIMIT_STACK - stack_guard_gap`,
/// or 0 with an unlimited `RLIMIT_STACK`.
pub fn stack_room_floor(start: u64, params: &FenceParams) -> u64 {
    match params.stack_rlimit {
        Some(r) => {
            start
                .saturating_sub(r)
                .saturating_sub(params.stack_guard_gap)
                & !(params.page_size - 1)
        }
        None => 0,
    }
}

/// The fence plan over `vmas` (sorted by start, not overlapping, as
/// `/proc/PID/maps` lists them): an iterator of [`FenceStep`]s in address
/// order. Allocation free.
pub fn plan<I>(vmas: I, params: FenceParams) -> FencePlan<I::IntoIter>
where
    I: IntoIterator<Item = FenceVma>,
{
    FencePlan {
        vmas: vmas.into_iter(),
        params,
        prev_end: params.limit,
        pending: None,
        done: params.limit >= params.top,
    }
}

/// The iterator of [`plan`].
#[derive(Clone, Debug)]
pub struct FencePlan<I> {
    vmas: I,
    params: FenceParams,
    /// Everything below this is mapped, reserved or below the limit.
    prev_end: u64,
    /// A step decided together with the one returned before it.
    pending: Option<FenceStep>,
    done: bool,
}

impl<I: Iterator<Item = FenceVma>> Iterator for FencePlan<I> {
    type Item = FenceStep;

    fn next(&mut self) -> Option<FenceStep> {
        if let Some(s) = self.pending.take() {
            return Some(s);
        }
        let p = self.params;
        while !self.done {
            let Some(v) = self.vmas.next() else {
                self.done = true;
                let (s, e) = (self.prev_end, p.top);
                return (e > s).then_some(FenceStep::Reserve { start: s, end: e });
            };
            if v.end <= self.prev_end {
                continue; // wholly below the limit (or inside an earlier VMA)
            }
            let hole_start = self.prev_end;
            let next_start = v.start.min(p.top);
            self.prev_end = self.prev_end.max(v.end);
            if self.prev_end >= p.top {
                self.done = true;
            }
            let mut hole_end = next_start;
            let mut room = None;
            if v.grows_down && next_start > hole_start {
                let floor = stack_room_floor(v.start, &p).max(hole_start);
                if floor < next_start {
                    room = Some(FenceStep::StackRoom {
                        start: floor,
                        end: next_start,
                    });
                }
                hole_end = floor.min(next_start);
            }
            let hole = (hole_end > hole_start).then_some(FenceStep::Reserve {
                start: hole_start,
                end: hole_end,
            });
            match (hole, room) {
                (Some(h), r) => {
                    self.pending = r;
                    return Some(h);
                }
                (None, Some(r)) => return Some(r),
                (None, None) => {}
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec::Vec;

    const PAGE: u64 = 4096;
    const GAP: u64 = 256 * PAGE;
    const MIB: u64 = 1 << 20;

    fn params(limit: u64, top: u64, rlimit: Option<u64>) -> FenceParams {
        FenceParams {
            limit,
            top,
            stack_rlimit: rlimit,
            stack_guard_gap: GAP,
            page_size: PAGE,
        }
    }

    fn vma(start: u64, end: u64, grows_down: bool) -> FenceVma {
        FenceVma {
            start,
            end,
            grows_down,
        }
    }

    fn steps(vmas: &[FenceVma], p: FenceParams) -> Vec<FenceStep> {
        plan(vmas.iter().copied(), p).collect()
    }

    fn reserve(start: u64, end: u64) -> FenceStep {
        FenceStep::Reserve { start, end }
    }

    fn room(start: u64, end: u64) -> FenceStep {
        FenceStep::StackRoom { start, end }
    }

    #[test]
    fn every_hole_above_the_limit_is_reserved() {
        let p = params(0x1000_0000, 0x10_0000_0000, Some(8 * MIB));
        let v = [
            vma(0x100_0000, 0x200_0000, false),   // below the limit
            vma(0xff0_0000, 0x1100_0000, false),  // crosses it
            vma(0x2000_0000, 0x2100_0000, false), // above
        ];
        assert_eq!(
            steps(&v, p),
            [
                reserve(0x1100_0000, 0x2000_0000),
                reserve(0x2100_0000, 0x10_0000_0000)
            ]
        );
        // No VMAs: one hole from the limit to the top.
        assert_eq!(steps(&[], p), [reserve(0x1000_0000, 0x10_0000_0000)]);
        // A limit at or above the top fences nothing.
        let p = params(0x10_0000_0000, 0x10_0000_0000, None);
        assert_eq!(steps(&v, p), []);
    }

    /// The case the two earlier copies of this rule disagreed on: an 8 MiB
    /// stack under an 8 MiB `RLIMIT_STACK`. Measured from the stack's end
    /// the room would reach only `start - gap` (no growth left at all);
    /// the kernel grows the stack from its start, so the room reaches
    /// `start - RLIMIT_STACK - gap`.
    #[test]
    fn stack_room_is_measured_from_the_start() {
        let top = 0x7fff_ffff_f000;
        let limit = 1 << 40;
        let start = 0x7fff_f000_0000;
        let end = start + 8 * MIB;
        let p = params(limit, top, Some(8 * MIB));
        let v = [
            vma(0x7f00_0000_0000, 0x7f00_0010_0000, false),
            vma(start, end, true),
        ];
        let floor = start - 8 * MIB - GAP;
        assert_eq!(stack_room_floor(start, &p), floor);
        assert_eq!(
            steps(&v, p),
            [
                reserve(limit, 0x7f00_0000_0000),
                reserve(0x7f00_0010_0000, floor),
                room(floor, start),
                reserve(end, top),
            ]
        );
        // The room does not depend on the stack's current size.
        let v2 = [v[0], vma(start, start + PAGE, true)];
        assert_eq!(steps(&v2, p)[2], room(floor, start));
    }

    #[test]
    fn every_grows_down_vma_gets_room_clipped_to_its_hole() {
        let p = params(0x1000_0000, 0x10_0000_0000, Some(MIB));
        // A grows-down VMA whose room would reach below the mapping under it:
        // the whole hole stays free.
        let v = [
            vma(0x2000_0000, 0x2010_0000, false),
            vma(0x2020_0000, 0x2030_0000, true),
        ];
        assert_eq!(
            steps(&v, p),
            [
                reserve(0x1000_0000, 0x2000_0000),
                room(0x2010_0000, 0x2020_0000),
                reserve(0x2030_0000, 0x10_0000_0000),
            ]
        );
        // An unaligned rlimit: the room's floor is page aligned down.
        let p = params(0x1000_0000, 0x10_0000_0000, Some(MIB + 1));
        let v = [vma(0x3000_0000, 0x3010_0000, true)];
        let floor = (0x3000_0000 - MIB - 1 - GAP) & !(PAGE - 1);
        assert_eq!(
            steps(&v, p),
            [
                reserve(0x1000_0000, floor),
                room(floor, 0x3000_0000),
                reserve(0x3010_0000, 0x10_0000_0000),
            ]
        );
    }

    #[test]
    fn unlimited_stack_keeps_its_whole_hole_and_limit_clips_the_room() {
        let p = params(0x1000_0000, 0x10_0000_0000, None);
        let v = [
            vma(0x2000_0000, 0x2010_0000, false),
            vma(0x3000_0000, 0x3010_0000, true),
        ];
        assert_eq!(
            steps(&v, p),
            [
                reserve(0x1000_0000, 0x2000_0000),
                room(0x2010_0000, 0x3000_0000),
                reserve(0x3010_0000, 0x10_0000_0000),
            ]
        );
        // A stack just above the limit: its room starts at the limit.
        let v = [vma(0x1000_8000, 0x1001_0000, true)];
        assert_eq!(
            steps(&v, p),
            [
                room(0x1000_0000, 0x1000_8000),
                reserve(0x1001_0000, 0x10_0000_0000)
            ]
        );
        // A stack below the limit changes nothing above it.
        let v = [vma(0x800_0000, 0x900_0000, true)];
        assert_eq!(steps(&v, p), [reserve(0x1000_0000, 0x10_0000_0000)]);
    }

    #[test]
    fn vmas_reaching_the_top_end_the_plan() {
        let p = params(0x1000_0000, 0x2000_0000, Some(MIB));
        // A VMA beyond the top (vsyscall-like) is ignored; one reaching the
        // top ends the plan without a final hole.
        let v = [
            vma(0x1800_0000, 0x2000_0000, false),
            vma(0xffff_ffff_ff60_0000, 0xffff_ffff_ff60_1000, false),
        ];
        assert_eq!(steps(&v, p), [reserve(0x1000_0000, 0x1800_0000)]);
        let v = [vma(0x3000_0000, 0x3000_1000, false)];
        assert_eq!(steps(&v, p), [reserve(0x1000_0000, 0x2000_0000)]);
    }
}

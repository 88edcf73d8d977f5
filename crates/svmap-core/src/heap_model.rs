//! A reference model of [`crate::VaHeap`] ([`HoleModel`]), shared by the
//! property tests and the fuzz target.

use alloc::vec::Vec;

use crate::search::{FitError, FitRequest, NoCrossError};
use crate::va_heap::HeapError;

/// 2^64, the size of the address space, in the model's wider arithmetic.
pub const SPACE: u128 = 1 << 64;

/// The lowest `a >= x` with `a = off (mod align)`.
fn align_up(x: u128, align: u128, off: u128) -> u128 {
    x + (off % align + align - x % align) % align
}

/// The lowest start `a` with `[a, a + len)` inside `[s, e)`, `a = off (mod
/// align)` and, when `b != 0`, `[a, a + len)` inside one block `[k b, (k +
/// 1) b)`. `align` and `b` are powers of two (or `b` is 0), `len >= 1`.
///
/// Candidates: `a0`, the lowest aligned start at or above `s`, and `a1`, the
/// lowest aligned start in a later block than `a0`'s. If `a0` does not fit
/// below `e`, nothing does. Within one block a later start lies deeper in
/// the block, so if `a0` crosses a multiple of `b`, so does every aligned
/// start of its block; in a later block, the lowest aligned start lies
/// least deep (all blocks' lowest aligned starts lie equally deep when
/// `align <= b`, and every aligned start lies equally deep when `align >
/// b`), so `a1` fits if any start beyond `a0`'s block does.
pub fn lowest_in_hole(
    s: u128,
    e: u128,
    len: u128,
    align: u128,
    off: u128,
    b: u128,
) -> Option<u128> {
    let fits = |a: u128| a + len <= e && (b == 0 || a / b == (a + len - 1) / b);
    let a0 = align_up(s, align, off);
    if fits(a0) {
        return Some(a0);
    }
    if b == 0 {
        return None;
    }
    let a1 = align_up((a0 / b + 1) * b, align, off);
    fits(a1).then_some(a1)
}

/// The highest such start: the lowest one in the mirror image `x -> 2^64 -
/// x` of the space, where `[a, a + len)` becomes `[2^64 - a - len, 2^64 -
/// a)`, the offset `-(off + len)` (2^64 is a multiple of `align`) and the
/// blocks of `b` map onto blocks of `b` (2^64 is a multiple of `b`).
pub fn highest_in_hole(
    s: u128,
    e: u128,
    len: u128,
    align: u128,
    off: u128,
    b: u128,
) -> Option<u128> {
    let moff = (align - (off + len) % align) % align;
    lowest_in_hole(SPACE - e, SPACE - s, len, align, moff, b).map(|m| SPACE - m - len)
}

/// A reference model of [`crate::VaHeap`]: the free holes as a sorted `Vec`
/// of disjoint `[start, end)` that never touch, and their total; frees and
/// takes by linear scans, and every fit computed per hole in 128-bit
/// arithmetic (nothing wraps), independently of the heap's code.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HoleModel {
    holes: Vec<(u64, u64)>,
    free: u64,
}

impl HoleModel {
    /// The holes in address order.
    pub fn holes(&self) -> &[(u64, u64)] {
        &self.holes
    }

    /// The free bytes.
    pub fn free_bytes(&self) -> u64 {
        self.free
    }

    /// [`crate::VaHeap::free`].
    pub fn free(&mut self, s: u64, e: u64) -> Result<(), HeapError> {
        if e <= s {
            return Err(HeapError::EmptyRange { start: s, end: e });
        }
        if let Some(&(hs, he)) = self.holes.iter().find(|&&(hs, he)| hs < e && s < he) {
            return Err(HeapError::AlreadyFree {
                start: s,
                end: e,
                hole_start: hs,
                hole_end: he,
            });
        }
        let (mut ns, mut ne) = (s, e);
        self.holes.retain(|&(hs, he)| {
            if he == s {
                ns = hs;
                false
            } else if hs == e {
                ne = he;
                false
            } else {
                true
            }
        });
        let at = self.holes.iter().position(|&(hs, _)| hs > ns);
        self.holes.insert(at.unwrap_or(self.holes.len()), (ns, ne));
        self.free += e - s;
        Ok(())
    }

    /// [`crate::VaHeap::alloc_at`].
    pub fn alloc_at(&mut self, s: u64, e: u64) -> Result<(), HeapError> {
        if e <= s {
            return Err(HeapError::EmptyRange { start: s, end: e });
        }
        let Some(i) = self.holes.iter().position(|&(hs, he)| hs <= s && e <= he) else {
            return Err(HeapError::NotFree { start: s, end: e });
        };
        let (hs, he) = self.holes.remove(i);
        if e < he {
            self.holes.insert(i, (e, he));
        }
        if hs < s {
            self.holes.insert(i, (hs, s));
        }
        self.free -= e - s;
        Ok(())
    }

    /// The fit of `req` (with `boundary`, as `find_fit_nocross`; without,
    /// as `find_fit`, its error wrapped in `NoCrossError::Fit`). The
    /// argument checks follow the documented order: length, alignment,
    /// boundary, boundary against length, window.
    pub fn fit(&self, req: &FitRequest, boundary: Option<u64>) -> Result<u64, NoCrossError> {
        use NoCrossError::Fit;
        if req.length == 0 {
            return Err(Fit(FitError::ZeroLength));
        }
        if !req.align.is_power_of_two() {
            return Err(Fit(FitError::BadAlignment(req.align)));
        }
        let b = boundary.unwrap_or(0);
        if b != 0 {
            if !b.is_power_of_two() {
                return Err(NoCrossError::BadBoundary(b));
            }
            let offset = req.align_offset % req.align.min(b);
            if offset as u128 + req.length as u128 > b as u128 {
                return Err(NoCrossError::BoundaryTooSmall {
                    length: req.length,
                    boundary: b,
                    offset,
                });
            }
        }
        if req.high <= req.low || req.high - req.low < req.length {
            return Err(Fit(FitError::EmptyWindow {
                low: req.low,
                high: req.high,
            }));
        }
        let (len, align, off, b) = (
            req.length as u128,
            req.align as u128,
            req.align_offset as u128,
            b as u128,
        );
        // Only holes that meet the window can hold a fit; the first one in
        // the search order that does is the answer.
        let meets = |&&(hs, he): &&(u64, u64)| hs < req.high && req.low < he;
        let clip = |&(hs, he): &(u64, u64)| (hs.max(req.low) as u128, he.min(req.high) as u128);
        let found = if req.topdown {
            self.holes.iter().rev().filter(meets).find_map(|h| {
                let (s, e) = clip(h);
                highest_in_hole(s, e, len, align, off, b)
            })
        } else {
            self.holes.iter().filter(meets).find_map(|h| {
                let (s, e) = clip(h);
                lowest_in_hole(s, e, len, align, off, b)
            })
        };
        found.map(|a| a as u64).ok_or(Fit(FitError::NoSpace))
    }
}

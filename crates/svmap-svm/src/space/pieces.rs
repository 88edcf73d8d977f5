//! Pieces of CPU VMAs with a label each: the live pieces of SVM ranges
//! (with their allocation id) and the window-reservation pieces (with their
//! window id).
//!
//! Every piece is exactly one CPU VMA, so the pieces need no order of their
//! own: a hash map from a piece's start to its end and id labels CPU VMAs,
//! and every ordered question (the piece at an address, the pieces in a
//! range, all of them in order) walks the CPU map and looks its VMAs up.
//! An allocation and a free cost one hash insertion and one removal instead
//! of two ordered-map descents.

use std::collections::hash_map::{Entry, OccupiedEntry};
use std::collections::HashMap;

use svmap_core::AddressMap;

use super::MixState;

/// Labelled pieces by start: `start -> (end, id)`. Each is a CPU VMA `[start,
/// end)`; callers keep it so (remove a piece before the CPU map loses its
/// VMA, insert it once the VMA is there).
#[derive(Clone, Debug, Default)]
pub(super) struct Pieces {
    m: HashMap<u64, (u64, u64), MixState>,
}

impl Pieces {
    /// Whether there is none.
    pub(super) fn is_empty(&self) -> bool {
        self.m.is_empty()
    }

    /// Adds the piece `[start, end)` of allocation `id`; the CPU maps
    /// exactly that VMA.
    pub(super) fn insert(&mut self, start: u64, end: u64, id: u64) {
        let old = self.m.insert(start, (end, id));
        debug_assert!(old.is_none(), "two pieces start at {start:#x}");
    }

    /// The piece that starts exactly at `start`, as an entry holding `(end,
    /// id)` that can remove it (one lookup for both).
    pub(super) fn entry_at(&mut self, start: u64) -> Option<OccupiedEntry<'_, u64, (u64, u64)>> {
        match self.m.entry(start) {
            Entry::Occupied(o) => Some(o),
            Entry::Vacant(_) => None,
        }
    }

    /// The piece that starts exactly at `start`, as `(end, id)`.
    pub(super) fn get_exact(&self, start: u64) -> Option<(u64, &u64)> {
        self.m.get(&start).map(|(e, id)| (*e, id))
    }

    /// The piece of CPU VMA `[start, end)`, if it is one.
    fn of_vma(&self, start: u64, end: u64) -> Option<(u64, u64, &u64)> {
        match self.m.get(&start) {
            Some((e, id)) if *e == end => Some((start, end, id)),
            _ => None,
        }
    }

    /// The piece that holds `addr`.
    pub(super) fn get<'a>(&'a self, mm: &AddressMap, addr: u64) -> Option<(u64, u64, &'a u64)> {
        let v = mm.vma_at(addr)?;
        self.of_vma(v.start, v.end)
    }

    /// The pieces that intersect `[start, end)`, unclipped, in order.
    pub(super) fn range<'a>(
        &'a self,
        mm: &'a AddressMap,
        start: u64,
        end: u64,
    ) -> impl Iterator<Item = (u64, u64, &'a u64)> + 'a {
        mm.range(start, end)
            .filter_map(move |v| self.of_vma(v.start, v.end))
    }

    /// The lowest piece that intersects `[start, end)`.
    pub(super) fn first_overlap<'a>(
        &'a self,
        mm: &'a AddressMap,
        start: u64,
        end: u64,
    ) -> Option<(u64, u64, &'a u64)> {
        self.range(mm, start, end).next()
    }

    /// Every piece in order. O(n) in the CPU VMAs.
    pub(super) fn iter<'a>(
        &'a self,
        mm: &'a AddressMap,
    ) -> impl Iterator<Item = (u64, u64, &'a u64)> + 'a {
        mm.iter().filter_map(move |v| self.of_vma(v.start, v.end))
    }

    /// Removes every piece in `[start, end)` before the CPU map loses it:
    /// a piece that straddles an edge keeps its part outside (which the
    /// CPU unmap of `[start, end)` leaves as VMAs of their own). `mm` is
    /// the CPU map as it still is.
    pub(super) fn remove_range(&mut self, mm: &AddressMap, start: u64, end: u64) {
        self.remove_range_with(mm, start, end, |_, _, _| {});
    }

    /// [`Self::remove_range`] that hands each removed part (clipped to
    /// `[start, end)`, in order) with its id to `f`.
    pub(super) fn remove_range_with(
        &mut self,
        mm: &AddressMap,
        start: u64,
        end: u64,
        mut f: impl FnMut(u64, u64, u64),
    ) {
        if start >= end || self.m.is_empty() {
            return;
        }
        // The common case: one piece, exactly the range (one lookup).
        if let Entry::Occupied(o) = self.m.entry(start) {
            if o.get().0 == end {
                let (_, id) = o.remove();
                f(start, end, id);
                return;
            }
        }
        for v in mm.range(start, end) {
            let Some((e, id)) = self.m.remove(&v.start) else {
                continue;
            };
            debug_assert_eq!(e, v.end, "piece out of step with its VMA");
            if v.start < start {
                self.m.insert(v.start, (start, id));
            }
            if e > end {
                self.m.insert(end, (e, id));
            }
            f(v.start.max(start), e.min(end), id);
        }
    }

    /// Checks that every piece is a CPU VMA of `mm`. Panics on a
    /// violation.
    pub(super) fn check_invariants(&self, mm: &AddressMap) {
        for (&s, &(e, _)) in &self.m {
            let v = mm.vma_at(s).expect("piece not on the CPU");
            assert_eq!((v.start, v.end), (s, e), "piece is not one CPU VMA");
        }
    }
}

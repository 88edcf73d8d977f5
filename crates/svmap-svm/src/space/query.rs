//! Read-only views of [`SvmSpace`] that the engine ([`crate::Engine`]) needs
//! to tell its backends what a decision changes. None allocates.

use super::SvmSpace;
use crate::mirror::PtFormat;

/// The SVM range that [`SvmSpace::svm_free`] of an address would free.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AllocView<'a> {
    /// Its id (unique for the life of the space).
    pub id: u64,
    /// Start of the range as allocated.
    pub start: u64,
    /// End of the range as allocated (exclusive).
    pub end: u64,
    /// The indices of its devices, sorted.
    pub devices: &'a [usize],
    /// The bounds of the live window it was carved from (its freed pieces
    /// inside them go back into the window).
    pub window: Option<(u64, u64)>,
}

impl<F: PtFormat> SvmSpace<F> {
    /// The SVM range that `svm_free(addr)` would free now, if any.
    pub fn alloc_at(&self, addr: u64) -> Option<AllocView<'_>> {
        self.alloc_at_whole(addr).map(|(v, _)| v)
    }

    /// [`Self::alloc_at`], and whether the CPU still maps the range as one
    /// piece, the whole of it (then [`Self::alloc_pieces`] yields just
    /// that piece).
    pub(crate) fn alloc_at_whole(&self, addr: u64) -> Option<(AllocView<'_>, bool)> {
        // The common case: the CPU maps a piece at `addr` of a range that
        // starts there. That range is the latest to start at `addr`: a
        // range placed at `addr` later would have needed `addr` free, and a
        // range never regains a piece at its start (pieces only shrink or
        // split, and a split's upper part starts above the start).
        let hit = self.svm.get_exact(addr).and_then(|(pe, &id)| {
            let a = self.allocs.get(&id)?;
            (a.start == addr).then_some((id, a, pe == a.end))
        });
        let (id, a, whole) = match hit {
            Some(x) => {
                debug_assert!(
                    self.by_start.get(&addr).is_none_or(|&l| l < x.0),
                    "latest range at {addr:#x}"
                );
                x
            }
            None => {
                // No piece at its start: the range lost it and is listed in
                // `by_start` (not whole).
                let id = *self.by_start.get(&addr)?;
                (id, self.allocs.get(&id)?, false)
            }
        };
        let v = AllocView {
            id,
            start: a.start,
            end: a.end,
            devices: &a.devices[..],
            window: a
                .window
                .and_then(|w| self.windows.get(&w))
                .map(|w| (w.start, w.end)),
        };
        Some((v, whole))
    }

    /// The pieces of SVM range `id` the CPU still maps, ascending.
    pub fn alloc_pieces(&self, id: u64) -> impl Iterator<Item = (u64, u64)> + '_ {
        let (s, e) = self.allocs.get(&id).map_or((0, 0), |a| (a.start, a.end));
        // The common case: one piece, the whole range (one lookup).
        let whole = self
            .svm
            .get_exact(s)
            .is_some_and(|(pe, &p)| (pe, p) == (e, id));
        let rest = (!whole).then(|| {
            self.svm
                .range(self.mm.space(), s, e)
                .filter(move |&(_, _, &p)| p == id)
                .map(|(s, e, _)| (s, e))
        });
        whole
            .then_some((s, e))
            .into_iter()
            .chain(rest.into_iter().flatten())
    }

    /// Every SVM piece that overlaps `[start, end)`, clipped to it, with the
    /// indices of its devices.
    pub fn svm_pieces_in(
        &self,
        start: u64,
        end: u64,
    ) -> impl Iterator<Item = (u64, u64, &[usize])> + '_ {
        self.svm
            .range(self.mm.space(), start, end)
            .filter_map(move |(s, e, id)| {
                let (s, e) = (s.max(start), e.min(end));
                let a = self.allocs.get(id)?;
                (s < e).then_some((s, e, &a.devices[..]))
            })
    }

    /// Whether the CPU maps anything svmap owns in `[start, end)`: an SVM
    /// piece, a window piece or the CPU side of a device-only region.
    pub fn owns_any(&self, start: u64, end: u64) -> bool {
        self.svm
            .first_overlap(self.mm.space(), start, end)
            .is_some()
            || self
                .win_pieces
                .first_overlap(self.mm.space(), start, end)
                .is_some()
            || self.reserved.first_overlap(start, end).is_some()
    }
}

//! svmap's [`AddressMap`]: allocate = [`AddressMap::allocate`] (`find_fit`
//! and the insert into the hole it found), free = `unmap`.

use svmap_core::{AddressMap, FitRequest, SearchParams, SearchStats, VmaFlags};

use crate::workload::{Churn, WINDOW};

/// The churn's request of `bytes` in `[0, WINDOW)`, no guard gaps: the
/// same for both svmap structures, so that they place alike.
pub(crate) fn request(bytes: u64, align: u64, topdown: bool) -> FitRequest {
    FitRequest {
        length: bytes,
        low: 0,
        high: WINDOW,
        align,
        align_offset: 0,
        topdown,
        respect_guard_gaps: false,
    }
}

/// svmap's own map over `[0, WINDOW)`.
pub struct Svmap {
    map: AddressMap,
    align: u64,
    topdown: bool,
    params: SearchParams,
    /// (searches, candidate holes, leaf rescans) since the last reset.
    stats: (u64, u64, u64),
}

impl Svmap {
    /// An empty map placing with `align` bytes alignment, highest first if
    /// `topdown`.
    pub fn new(align: u64, topdown: bool) -> Self {
        Svmap {
            map: AddressMap::new(),
            align,
            topdown,
            params: SearchParams::default(),
            stats: (0, 0, 0),
        }
    }
}

impl Churn for Svmap {
    type Handle = (u64, u64);

    #[inline]
    fn alloc(&mut self, bytes: u64) -> (u64, u64) {
        let req = request(bytes, self.align, self.topdown);
        let mut st = SearchStats::default();
        let a = self
            .map
            .allocate_stats(&req, &self.params, VmaFlags::NONE, &mut st)
            .expect("svmap: no space");
        self.stats.0 += 1;
        self.stats.1 += u64::from(st.holes);
        self.stats.2 += u64::from(st.rescans);
        (a, a + bytes)
    }

    #[inline]
    fn free(&mut self, (s, e): (u64, u64)) {
        self.map.unmap(s, e).expect("svmap: unmap");
    }

    fn reported_heap_bytes(&self) -> Option<usize> {
        Some(self.map.heap_bytes())
    }

    fn holes_per_search(&self) -> Option<f64> {
        Some(self.stats.1 as f64 / self.stats.0.max(1) as f64)
    }

    fn rescans_per_alloc(&self) -> Option<f64> {
        Some(self.stats.2 as f64 / self.stats.0.max(1) as f64)
    }

    fn reset_diag(&mut self) {
        self.stats = (0, 0, 0);
    }
}

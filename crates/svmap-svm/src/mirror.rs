//! The device mirror model (layer 4): a device MMU with its own VA width
//! and page size, a multi-level radix page table, a TLB with explicit
//! shoot-down, and the `mmu_interval_notifier` protocol that keeps it in
//! step with the CPU.
//!
//! # The protocol
//!
//! The CPU side calls [`Mirror::invalidate_start`] before it changes a
//! range (unmap, free, protection change) and [`Mirror::invalidate_end`]
//! after. `invalidate_start` takes the device page-table lock, bumps the
//! notifier sequence (marking an invalidation active), clears the PTEs of
//! the range and shoots the range down from the TLB, all before it returns.
//!
//! A device access ([`Mirror::access`]) tries the TLB, then walks the page
//! table (under the page-table lock; a TLB fill happens under that lock
//! too, so a shoot-down cannot be overtaken by a fill from a stale walk).
//! On a miss the fault handler runs the `hmm_range_fault` pattern:
//!
//! ```text
//! loop {
//!     seq = read_begin()            // waits while an invalidation is active
//!     snap = snapshot(addr)         // the CPU mapping, read by the caller
//!     lock page table
//!     if seq moved { unlock; retry }
//!     install PTE from snap; fill TLB; unlock
//! }
//! ```
//!
//! so a PTE is only ever installed from a snapshot that no invalidation has
//! overtaken. Consequences the tests check: after an invalidation returns,
//! no PTE or TLB entry from before it survives in its range, and no
//! snapshot taken before it can be installed.
//!
//! # Locks
//!
//! Lock order: page table, then TLB. The TLB lock alone serves TLB hits.
//! The locks come from a [`SyncFamily`], so the same code runs on
//! `std::sync` ([`StdSync`]) and, in tests, on `shuttle`'s primitives.

use core::marker::PhantomData;

use crate::error::Fault;

/// The synchronisation primitives the mirror uses.
pub trait SyncFamily: 'static {
    /// A mutex.
    type Mutex<T: Send>: Send + Sync;
    /// A new mutex holding `t`.
    fn mutex<T: Send>(t: T) -> Self::Mutex<T>;
    /// Runs `f` with the lock held.
    fn with<T: Send, R>(m: &Self::Mutex<T>, f: impl FnOnce(&mut T) -> R) -> R;
    /// Lets another thread run (the wait in [`Mirror::read_begin`]).
    fn yield_now();
}

/// [`SyncFamily`] on `std::sync`.
#[derive(Debug)]
pub struct StdSync;

impl SyncFamily for StdSync {
    type Mutex<T: Send> = std::sync::Mutex<T>;
    fn mutex<T: Send>(t: T) -> Self::Mutex<T> {
        std::sync::Mutex::new(t)
    }
    fn with<T: Send, R>(m: &Self::Mutex<T>, f: impl FnOnce(&mut T) -> R) -> R {
        let mut g = m.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut g)
    }
    fn yield_now() {
        std::thread::yield_now();
    }
}

/// One device page-table format: how many index bits a table level
/// resolves and how a leaf entry is encoded. Levels and bits per level of a
/// device follow from its `va_bits` and page size ([`Geometry`]).
pub trait PtFormat: Send + Sync + 'static {
    /// A name for messages.
    const NAME: &'static str;
    /// Index bits per table level for pages of `2^page_shift` bytes.
    fn bits_per_level(page_shift: u32) -> u32;
    /// A valid leaf entry mapping `frame` with these rights.
    fn leaf(frame: u64, read: bool, write: bool) -> u64;
    /// The valid bit.
    fn is_valid(pte: u64) -> bool;
    /// The read bit.
    fn can_read(pte: u64) -> bool;
    /// The write bit.
    fn can_write(pte: u64) -> bool;
    /// The frame of a valid entry.
    fn frame(pte: u64) -> u64;
}

/// A generic 8-byte-entry format: a table is one page of 8-byte entries
/// (9 bits per level with 4 KiB pages, 13 with 64 KiB, 18 with 2 MiB);
/// bit 0 valid, bit 1 read, bit 2 write, frame in bits 12 and up.
#[derive(Debug)]
pub struct DefaultFormat;

impl PtFormat for DefaultFormat {
    const NAME: &'static str = "default-8byte";
    fn bits_per_level(page_shift: u32) -> u32 {
        page_shift.saturating_sub(3).max(1)
    }
    fn leaf(frame: u64, read: bool, write: bool) -> u64 {
        (frame << 12) | 1 | (u64::from(read) << 1) | (u64::from(write) << 2)
    }
    fn is_valid(pte: u64) -> bool {
        pte & 1 != 0
    }
    fn can_read(pte: u64) -> bool {
        pte & 2 != 0
    }
    fn can_write(pte: u64) -> bool {
        pte & 4 != 0
    }
    fn frame(pte: u64) -> u64 {
        pte >> 12
    }
}

/// The shape of one device's page table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Geometry {
    /// log2 of the page size.
    pub page_shift: u32,
    /// The device's VA width.
    pub va_bits: u32,
    /// Index bits of each level, top level first. Their sum is
    /// `va_bits - page_shift` (one level of 0 bits if that is 0).
    pub level_bits: Vec<u32>,
}

impl Geometry {
    /// The geometry for `va_bits` and a page of `2^page_shift` bytes with
    /// `bits_per_level` index bits per full level; the top level takes the
    /// remainder.
    pub fn new(va_bits: u32, page_shift: u32, bits_per_level: u32) -> Self {
        let total = va_bits.saturating_sub(page_shift);
        let bpl = bits_per_level.max(1);
        let level_bits = if total == 0 {
            vec![0]
        } else {
            let levels = total.div_ceil(bpl);
            let mut v = vec![bpl; levels as usize];
            v[0] = total - bpl * (levels - 1);
            v
        };
        Geometry {
            page_shift,
            va_bits,
            level_bits,
        }
    }

    /// Number of levels.
    pub fn levels(&self) -> usize {
        self.level_bits.len()
    }

    /// Index bits below `level` (0 = top).
    fn shift_below(&self, level: usize) -> u32 {
        self.level_bits[level + 1..].iter().sum()
    }

    fn index(&self, vpn: u64, level: usize) -> usize {
        let shift = self.shift_below(level);
        let bits = self.level_bits[level];
        ((vpn >> shift) & ((1u64 << bits) - 1)) as usize
    }
}

#[derive(Clone, Debug)]
enum Node {
    /// Child table indices; 0 = absent (the root is never a child).
    Dir(Vec<u32>),
    /// Raw PTEs; 0 = invalid.
    Leaf(Vec<u64>),
}

/// A sparse multi-level radix page table. Tables are allocated on demand
/// and kept when they empty (bounded by the peak population).
#[derive(Clone, Debug)]
pub struct PageTable<F: PtFormat> {
    geo: Geometry,
    nodes: Vec<Node>,
    valid: usize,
    _f: PhantomData<F>,
}

impl<F: PtFormat> PageTable<F> {
    /// An empty table of this geometry.
    pub fn new(geo: Geometry) -> Self {
        let root = Self::node(&geo, 0);
        PageTable {
            geo,
            nodes: vec![root],
            valid: 0,
            _f: PhantomData,
        }
    }

    fn node(geo: &Geometry, level: usize) -> Node {
        let n = 1usize << geo.level_bits[level];
        if level + 1 == geo.levels() {
            Node::Leaf(vec![0; n])
        } else {
            Node::Dir(vec![0; n])
        }
    }

    /// Number of valid leaf entries.
    pub fn valid_entries(&self) -> usize {
        self.valid
    }

    /// Number of tables allocated.
    pub fn tables(&self) -> usize {
        self.nodes.len()
    }

    /// The leaf entry of page `vpn` (0 if none).
    pub fn get(&self, vpn: u64) -> u64 {
        let mut t = 0usize;
        for level in 0..self.geo.levels() {
            let i = self.geo.index(vpn, level);
            match &self.nodes[t] {
                Node::Dir(c) => {
                    if c[i] == 0 {
                        return 0;
                    }
                    t = c[i] as usize;
                }
                Node::Leaf(p) => return p[i],
            }
        }
        0
    }

    /// Sets the leaf entry of page `vpn`, allocating tables on the way.
    pub fn set(&mut self, vpn: u64, pte: u64) {
        let mut t = 0usize;
        for level in 0..self.geo.levels() {
            let i = self.geo.index(vpn, level);
            let next = match &self.nodes[t] {
                Node::Dir(c) => c[i],
                Node::Leaf(_) => {
                    let Node::Leaf(p) = &mut self.nodes[t] else {
                        unreachable!()
                    };
                    let was = F::is_valid(p[i]);
                    p[i] = pte;
                    match (was, F::is_valid(pte)) {
                        (false, true) => self.valid += 1,
                        (true, false) => self.valid -= 1,
                        _ => {}
                    }
                    return;
                }
            };
            let next = if next == 0 {
                let n = Self::node(&self.geo, level + 1);
                self.nodes.push(n);
                let idx = (self.nodes.len() - 1) as u32;
                let Node::Dir(c) = &mut self.nodes[t] else {
                    unreachable!()
                };
                c[i] = idx;
                idx
            } else {
                next
            };
            t = next as usize;
        }
    }

    /// Clears every leaf entry of pages `[lo, hi]` (inclusive), visiting
    /// only tables that exist. Returns the number of entries cleared.
    pub fn clear(&mut self, lo: u64, hi: u64) -> usize {
        let n = self.clear_in(0, 0, 0, lo, hi);
        self.valid -= n;
        n
    }

    fn clear_in(&mut self, t: usize, level: usize, base: u64, lo: u64, hi: u64) -> usize {
        let shift = self.geo.shift_below(level);
        let entries = 1u64 << self.geo.level_bits[level];
        // Entry i covers pages [base + i << shift, base + (i + 1) << shift).
        let first = if lo > base { (lo - base) >> shift } else { 0 };
        let last = ((hi - base) >> shift).min(entries - 1);
        if hi < base || first > last {
            return 0;
        }
        let mut cleared = 0;
        match &mut self.nodes[t] {
            Node::Leaf(p) => {
                for e in &mut p[first as usize..=last as usize] {
                    if F::is_valid(*e) {
                        cleared += 1;
                    }
                    *e = 0;
                }
            }
            Node::Dir(_) => {
                for i in first..=last {
                    let Node::Dir(c) = &self.nodes[t] else {
                        unreachable!()
                    };
                    let child = c[i as usize];
                    if child != 0 {
                        let b = base + (i << shift);
                        cleared += self.clear_in(child as usize, level + 1, b, lo, hi);
                    }
                }
            }
        }
        cleared
    }

    /// Every valid leaf `(vpn, pte)` in order (O(tables); for checks).
    pub fn entries(&self) -> Vec<(u64, u64)> {
        let mut out = Vec::new();
        self.collect(0, 0, 0, &mut out);
        out
    }

    fn collect(&self, t: usize, level: usize, base: u64, out: &mut Vec<(u64, u64)>) {
        let shift = self.geo.shift_below(level);
        match &self.nodes[t] {
            Node::Leaf(p) => {
                for (i, &e) in p.iter().enumerate() {
                    if F::is_valid(e) {
                        out.push((base + ((i as u64) << shift), e));
                    }
                }
            }
            Node::Dir(c) => {
                for (i, &child) in c.iter().enumerate() {
                    if child != 0 {
                        let b = base + ((i as u64) << shift);
                        self.collect(child as usize, level + 1, b, out);
                    }
                }
            }
        }
    }
}

/// A fully associative TLB of `capacity` entries with FIFO replacement.
#[derive(Clone, Debug)]
pub struct Tlb {
    slots: Vec<Option<(u64, u64)>>,
    next: usize,
    /// Lookups that hit.
    pub hits: u64,
    /// Lookups that missed.
    pub misses: u64,
    /// Entries removed by shoot-downs.
    pub shot_down: u64,
}

impl Tlb {
    /// A TLB of `capacity` (at least 1) entries.
    pub fn new(capacity: usize) -> Self {
        Tlb {
            slots: vec![None; capacity.max(1)],
            next: 0,
            hits: 0,
            misses: 0,
            shot_down: 0,
        }
    }

    /// The cached PTE of page `vpn`.
    pub fn lookup(&mut self, vpn: u64) -> Option<u64> {
        let r = self
            .slots
            .iter()
            .flatten()
            .find(|(v, _)| *v == vpn)
            .map(|&(_, p)| p);
        if r.is_some() {
            self.hits += 1;
        } else {
            self.misses += 1;
        }
        r
    }

    /// Caches `pte` for page `vpn`, replacing an older entry of that page
    /// or the oldest entry.
    pub fn fill(&mut self, vpn: u64, pte: u64) {
        if let Some(s) = self.slots.iter_mut().flatten().find(|(v, _)| *v == vpn) {
            s.1 = pte;
            return;
        }
        self.slots[self.next] = Some((vpn, pte));
        self.next = (self.next + 1) % self.slots.len();
    }

    /// Shoots down every entry of pages `[lo, hi]` (inclusive).
    pub fn shoot_down(&mut self, lo: u64, hi: u64) {
        for s in &mut self.slots {
            if matches!(s, Some((v, _)) if *v >= lo && *v <= hi) {
                *s = None;
                self.shot_down += 1;
            }
        }
    }

    /// Every cached `(vpn, pte)`.
    pub fn entries(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.slots.iter().flatten().copied()
    }
}

/// What the CPU side maps at one address, as the fault handler sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Perm {
    /// What is mapped (a buffer id, or a class of memory).
    pub frame: u64,
    /// Reads allowed.
    pub read: bool,
    /// Writes allowed.
    pub write: bool,
}

/// A snapshot of the CPU mapping taken by the fault handler.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Snapshot {
    /// The mapping of the byte accessed (`None`: unmapped for this device).
    pub byte: Option<Perm>,
    /// The mapping of the whole device page, if it is uniform, so that one
    /// PTE may hold it; `None` answers this access without installing one.
    pub page: Option<Perm>,
}

/// Counters of one mirror.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MirrorStats {
    /// Accesses answered by a page-table walk.
    pub walks: u64,
    /// Fault-handler runs.
    pub faults: u64,
    /// Fault-handler retries because the sequence moved.
    pub retries: u64,
    /// Invalidations.
    pub invalidations: u64,
    /// PTEs installed.
    pub installs: u64,
}

struct PtState<F: PtFormat> {
    table: PageTable<F>,
    /// The notifier sequence; bumped at both ends of an invalidation.
    seq: u64,
    /// Invalidations between start and end.
    active: u32,
    stats: MirrorStats,
}

/// One device MMU kept in step with the CPU by the notifier protocol.
pub struct Mirror<F: PtFormat = DefaultFormat, S: SyncFamily = StdSync> {
    geo: Geometry,
    /// `2^va_bits` (up to 2^64).
    limit: u128,
    pt: S::Mutex<PtState<F>>,
    tlb: S::Mutex<Tlb>,
}

impl<F: PtFormat, S: SyncFamily> core::fmt::Debug for Mirror<F, S> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Mirror")
            .field("format", &F::NAME)
            .field("geometry", &self.geo)
            .finish_non_exhaustive()
    }
}

impl<F: PtFormat, S: SyncFamily> Mirror<F, S> {
    /// A device MMU for `va_bits` (12..=64) and pages of `page_size` (a
    /// power of two) with a TLB of `tlb_entries`.
    pub fn new(va_bits: u32, page_size: u64, tlb_entries: usize) -> Self {
        debug_assert!(page_size.is_power_of_two());
        let shift = page_size.trailing_zeros();
        let geo = Geometry::new(va_bits, shift, F::bits_per_level(shift));
        Mirror {
            limit: 1u128 << va_bits,
            pt: S::mutex(PtState {
                table: PageTable::new(geo.clone()),
                seq: 0,
                active: 0,
                stats: MirrorStats::default(),
            }),
            tlb: S::mutex(Tlb::new(tlb_entries)),
            geo,
        }
    }

    /// The page-table geometry.
    pub fn geometry(&self) -> &Geometry {
        &self.geo
    }

    /// The page size.
    pub fn page_size(&self) -> u64 {
        1 << self.geo.page_shift
    }

    /// Counters.
    pub fn stats(&self) -> MirrorStats {
        S::with(&self.pt, |p| p.stats)
    }

    /// TLB hits and misses.
    pub fn tlb_counts(&self) -> (u64, u64) {
        S::with(&self.tlb, |t| (t.hits, t.misses))
    }

    /// Inclusive page range of `[start, end)` clipped to the device, or
    /// `None` if it is empty or entirely above the limit.
    fn pages(&self, start: u64, end: u64) -> Option<(u64, u64)> {
        if start >= end || u128::from(start) >= self.limit {
            return None;
        }
        let last = u128::from(end - 1).min(self.limit - 1) as u64;
        Some((start >> self.geo.page_shift, last >> self.geo.page_shift))
    }

    /// The start of an invalidation of `[start, end)`: marks it active,
    /// clears the PTEs of every device page the range touches and shoots
    /// them down from the TLB before returning.
    pub fn invalidate_start(&self, start: u64, end: u64) {
        S::with(&self.pt, |p| {
            p.active += 1;
            p.seq += 1;
            p.stats.invalidations += 1;
            if let Some((lo, hi)) = self.pages(start, end) {
                p.table.clear(lo, hi);
                S::with(&self.tlb, |t| t.shoot_down(lo, hi));
            }
        });
    }

    /// The end of an invalidation: the CPU change is complete.
    pub fn invalidate_end(&self) {
        S::with(&self.pt, |p| {
            debug_assert!(p.active > 0, "invalidate_end without start");
            p.active -= 1;
            p.seq += 1;
        });
    }

    /// `invalidate_start` + `invalidate_end`, for a caller that has
    /// already changed the CPU side and holds it exclusively.
    pub fn invalidate(&self, start: u64, end: u64) {
        self.invalidate_start(start, end);
        self.invalidate_end();
    }

    /// `mmu_interval_read_begin`: the sequence, once no invalidation is
    /// active.
    pub fn read_begin(&self) -> u64 {
        loop {
            let (seq, active) = S::with(&self.pt, |p| (p.seq, p.active));
            if active == 0 {
                return seq;
            }
            S::yield_now();
        }
    }

    /// Installs `perm` for every device page of `[start, end)`, at most
    /// `max_pages` pages (the rest fault in on demand). For the CPU side
    /// while it creates the mapping (populate at allocation).
    pub fn prefault(&self, start: u64, end: u64, perm: Perm, max_pages: u64) {
        if !perm.read {
            return;
        }
        let Some((lo, hi)) = self.pages(start, end) else {
            return;
        };
        let hi = hi.min(lo.saturating_add(max_pages.saturating_sub(1)));
        if max_pages == 0 {
            return;
        }
        S::with(&self.pt, |p| {
            for vpn in lo..=hi {
                p.table.set(vpn, F::leaf(perm.frame, perm.read, perm.write));
                p.stats.installs += 1;
            }
            S::with(&self.tlb, |t| t.shoot_down(lo, hi));
        });
    }

    fn permits(pte: u64, write: bool) -> bool {
        F::is_valid(pte) && F::can_read(pte) && (!write || F::can_write(pte))
    }

    /// One device access of the byte at `addr`: TLB, page table, then the
    /// fault handler with `snapshot` (called with `addr`, under a sequence
    /// read). Returns the frame reached or the fault.
    pub fn access(
        &self,
        addr: u64,
        write: bool,
        snapshot: &mut dyn FnMut(u64) -> Snapshot,
    ) -> Result<u64, Fault> {
        if u128::from(addr) >= self.limit {
            return Err(Fault::OutOfRange);
        }
        let vpn = addr >> self.geo.page_shift;
        if let Some(pte) = S::with(&self.tlb, |t| t.lookup(vpn)) {
            if Self::permits(pte, write) {
                return Ok(F::frame(pte));
            }
        }
        let walked = S::with(&self.pt, |p| {
            let pte = p.table.get(vpn);
            if Self::permits(pte, write) {
                p.stats.walks += 1;
                S::with(&self.tlb, |t| t.fill(vpn, pte));
                Some(F::frame(pte))
            } else {
                None
            }
        });
        if let Some(frame) = walked {
            return Ok(frame);
        }
        S::with(&self.pt, |p| p.stats.faults += 1);
        loop {
            let seq = self.read_begin();
            let snap = snapshot(addr);
            let Some(byte) = snap.byte else {
                return Err(Fault::Unmapped);
            };
            if let Some(pg) = snap.page.filter(|pg| pg.read) {
                let committed = S::with(&self.pt, |p| {
                    if p.seq != seq {
                        p.stats.retries += 1;
                        return false;
                    }
                    let pte = F::leaf(pg.frame, pg.read, pg.write);
                    p.table.set(vpn, pte);
                    p.stats.installs += 1;
                    S::with(&self.tlb, |t| t.fill(vpn, pte));
                    true
                });
                if !committed {
                    continue;
                }
            }
            return if !byte.read || (write && !byte.write) {
                Err(Fault::Protection)
            } else {
                Ok(byte.frame)
            };
        }
    }

    /// Every valid page-table entry and every TLB entry as
    /// `(vpn, frame, read, write, from_tlb)`. For checks.
    pub fn mappings(&self) -> Vec<(u64, u64, bool, bool, bool)> {
        S::with(&self.pt, |p| {
            let mut v: Vec<_> = p
                .table
                .entries()
                .into_iter()
                .map(|(vpn, e)| (vpn, F::frame(e), F::can_read(e), F::can_write(e), false))
                .collect();
            S::with(&self.tlb, |t| {
                v.extend(
                    t.entries()
                        .map(|(vpn, e)| (vpn, F::frame(e), F::can_read(e), F::can_write(e), true)),
                )
            });
            v
        })
    }

    /// Checks that every TLB entry equals the page-table entry of its page
    /// (true whenever no lock is held). Panics on a violation.
    pub fn check_tlb(&self) {
        S::with(&self.pt, |p| {
            S::with(&self.tlb, |t| {
                for (vpn, e) in t.entries() {
                    assert_eq!(p.table.get(vpn), e, "TLB entry of page {vpn:#x} is stale");
                }
            })
        });
    }
}

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
use std::collections::{BTreeMap, VecDeque};

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

    fn index(&self, vpn: u64, level: usize) -> u64 {
        let shift = self.shift_below(level);
        let bits = self.level_bits[level];
        (vpn >> shift) & ((1u64 << bits) - 1)
    }
}

/// One table of a [`PageTable`]: only its present entries, by index.
#[derive(Clone, Debug)]
enum Node {
    /// Present child tables.
    Dir(BTreeMap<u64, Node>),
    /// Valid PTEs.
    Leaf(BTreeMap<u64, u64>),
}

impl Node {
    fn is_empty(&self) -> bool {
        match self {
            Node::Dir(c) => c.is_empty(),
            Node::Leaf(p) => p.is_empty(),
        }
    }
}

/// A sparse multi-level radix page table.
///
/// The levels and the index bits of each follow the [`Geometry`], as in a
/// hardware table, but every table holds only its present entries (an
/// ordered map from index to child table or PTE), and a table is freed as
/// soon as its last entry goes. So memory is O(valid entries x levels)
/// whatever the geometry (a top level of 2^30 entries costs nothing until
/// it is used), and [`PageTable::clear`] visits only present entries.
#[derive(Clone, Debug)]
pub struct PageTable<F: PtFormat> {
    geo: Geometry,
    root: Node,
    valid: usize,
    tables: usize,
    _f: PhantomData<F>,
}

impl<F: PtFormat> PageTable<F> {
    /// An empty table of this geometry.
    pub fn new(geo: Geometry) -> Self {
        let root = Self::node(&geo, 0);
        PageTable {
            geo,
            root,
            valid: 0,
            tables: 1,
            _f: PhantomData,
        }
    }

    fn node(geo: &Geometry, level: usize) -> Node {
        if level + 1 == geo.levels() {
            Node::Leaf(BTreeMap::new())
        } else {
            Node::Dir(BTreeMap::new())
        }
    }

    /// Number of valid leaf entries.
    pub fn valid_entries(&self) -> usize {
        self.valid
    }

    /// Number of tables allocated (the root, which always exists, and every
    /// table that holds at least one entry).
    pub fn tables(&self) -> usize {
        self.tables
    }

    /// The leaf entry of page `vpn` (0 if none).
    pub fn get(&self, vpn: u64) -> u64 {
        let mut t = &self.root;
        for level in 0..self.geo.levels() {
            let i = self.geo.index(vpn, level);
            match t {
                Node::Dir(c) => match c.get(&i) {
                    Some(child) => t = child,
                    None => return 0,
                },
                Node::Leaf(p) => return p.get(&i).copied().unwrap_or(0),
            }
        }
        0
    }

    /// Sets the leaf entry of page `vpn`, allocating tables on the way. An
    /// invalid `pte` clears the entry (and frees the tables it empties).
    pub fn set(&mut self, vpn: u64, pte: u64) {
        if !F::is_valid(pte) {
            self.clear(vpn, vpn);
            return;
        }
        let geo = &self.geo;
        let mut t = &mut self.root;
        for level in 0..geo.levels() {
            let i = geo.index(vpn, level);
            match t {
                Node::Dir(c) => {
                    t = c.entry(i).or_insert_with(|| {
                        self.tables += 1;
                        Self::node(geo, level + 1)
                    });
                }
                Node::Leaf(p) => {
                    if p.insert(i, pte).is_none() {
                        self.valid += 1;
                    }
                    return;
                }
            }
        }
    }

    /// Clears every leaf entry of pages `[lo, hi]` (inclusive), visiting
    /// only entries that are present, and frees every table this empties
    /// (except the root). Returns the number of entries cleared.
    pub fn clear(&mut self, lo: u64, hi: u64) -> usize {
        // An empty table (no valid entry, only the root) has nothing to
        // clear or free: skip the walk.
        if lo > hi || (self.valid == 0 && self.tables == 1) {
            return 0;
        }
        let mut freed = 0;
        let n = Self::clear_in(&self.geo, &mut self.root, 0, 0, lo, hi, &mut freed);
        self.valid -= n;
        self.tables -= freed;
        n
    }

    /// Clears `[lo, hi]` in table `t` of `level`, whose first page is
    /// `base`; counts the tables below `t` it frees in `freed`.
    fn clear_in(
        geo: &Geometry,
        t: &mut Node,
        level: usize,
        base: u64,
        lo: u64,
        hi: u64,
        freed: &mut usize,
    ) -> usize {
        let shift = geo.shift_below(level);
        let entries = 1u64 << geo.level_bits[level];
        // Entry i covers pages [base + i << shift, base + (i + 1) << shift).
        if hi < base {
            return 0;
        }
        let first = if lo > base { (lo - base) >> shift } else { 0 };
        let last = ((hi - base) >> shift).min(entries - 1);
        if first > last {
            return 0;
        }
        match t {
            Node::Leaf(p) => {
                let gone: Vec<u64> = p.range(first..=last).map(|(&i, _)| i).collect();
                for i in &gone {
                    p.remove(i);
                }
                gone.len()
            }
            Node::Dir(c) => {
                let mut cleared = 0;
                let mut empty = Vec::new();
                for (&i, child) in c.range_mut(first..=last) {
                    let b = base + (i << shift);
                    cleared += Self::clear_in(geo, child, level + 1, b, lo, hi, freed);
                    if child.is_empty() {
                        empty.push(i);
                    }
                }
                for i in &empty {
                    c.remove(i);
                }
                *freed += empty.len();
                cleared
            }
        }
    }

    /// Every valid leaf `(vpn, pte)` in order (O(entries); for checks).
    pub fn entries(&self) -> Vec<(u64, u64)> {
        let mut out = Vec::with_capacity(self.valid);
        self.collect(&self.root, 0, 0, &mut out);
        out
    }

    fn collect(&self, t: &Node, level: usize, base: u64, out: &mut Vec<(u64, u64)>) {
        let shift = self.geo.shift_below(level);
        match t {
            Node::Leaf(p) => out.extend(p.iter().map(|(&i, &e)| (base + (i << shift), e))),
            Node::Dir(c) => {
                for (&i, child) in c {
                    self.collect(child, level + 1, base + (i << shift), out);
                }
            }
        }
    }
}

/// A fully associative TLB of `capacity` entries with FIFO replacement:
/// when it is full, a fill evicts the entry filled longest ago (entries
/// shot down leave free room).
///
/// Lookups, fills and evictions are O(log n) in the number of cached
/// entries n (an ordered map by page, plus a queue of fills); a shoot-down
/// is O(log n + k) for the k entries it removes. Memory is O(n), never
/// O(capacity): an empty TLB of any capacity holds nothing.
#[derive(Clone, Debug)]
pub struct Tlb {
    capacity: usize,
    /// Cached entries: page -> (PTE, fill stamp).
    map: BTreeMap<u64, (u64, u64)>,
    /// `(page, fill stamp)` in fill order; a record whose stamp is no
    /// longer the page's in `map` is stale and skipped.
    fifo: VecDeque<(u64, u64)>,
    stamp: u64,
    /// Lookups that hit.
    pub hits: u64,
    /// Lookups that missed.
    pub misses: u64,
    /// Entries removed by shoot-downs.
    pub shot_down: u64,
}

impl Tlb {
    /// A TLB of `capacity` (at least 1) entries. Nothing is allocated up
    /// front.
    pub fn new(capacity: usize) -> Self {
        Tlb {
            capacity: capacity.max(1),
            map: BTreeMap::new(),
            fifo: VecDeque::new(),
            stamp: 0,
            hits: 0,
            misses: 0,
            shot_down: 0,
        }
    }

    /// The number of entries it can hold.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// The number of entries it holds.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether it holds no entry.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// The cached PTE of page `vpn`.
    pub fn lookup(&mut self, vpn: u64) -> Option<u64> {
        let r = self.map.get(&vpn).map(|&(p, _)| p);
        if r.is_some() {
            self.hits += 1;
        } else {
            self.misses += 1;
        }
        r
    }

    /// Caches `pte` for page `vpn`, replacing the entry of that page (which
    /// keeps its place in the replacement order) or, when the TLB is full,
    /// the entry filled longest ago.
    pub fn fill(&mut self, vpn: u64, pte: u64) {
        if let Some(e) = self.map.get_mut(&vpn) {
            e.0 = pte;
            return;
        }
        while self.map.len() >= self.capacity {
            let Some((v, s)) = self.fifo.pop_front() else {
                break;
            };
            if self.map.get(&v).is_some_and(|&(_, st)| st == s) {
                self.map.remove(&v);
            }
        }
        self.stamp += 1;
        self.map.insert(vpn, (pte, self.stamp));
        self.fifo.push_back((vpn, self.stamp));
        // Drop stale records once they are the majority: amortised O(1),
        // and the queue stays O(entries).
        if self.fifo.len() > 2 * self.map.len() + 16 {
            let map = &self.map;
            self.fifo
                .retain(|(v, s)| map.get(v).is_some_and(|&(_, st)| st == *s));
        }
    }

    /// Shoots down every entry of pages `[lo, hi]` (inclusive).
    pub fn shoot_down(&mut self, lo: u64, hi: u64) {
        if lo > hi || self.map.is_empty() {
            return;
        }
        while let Some(v) = self.map.range(lo..=hi).next().map(|(&v, _)| v) {
            self.map.remove(&v);
            self.shot_down += 1;
        }
    }

    /// Every cached `(vpn, pte)`, by page.
    pub fn entries(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.map.iter().map(|(&v, &(p, _))| (v, p))
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
    /// power of two of at least 4 KiB) with a TLB of `tlb_entries`.
    ///
    /// Never panics and allocates nothing sized by its arguments (the page
    /// table and the TLB grow with what they hold): `va_bits` above 64 is
    /// taken as 64, a `page_size` that is not a power of two as its lowest
    /// set bit (at least 4 KiB, at most 2^63), `tlb_entries` 0 as 1.
    /// [`crate::SvmSpace::add_device`] refuses such values with a typed
    /// error instead, and also pages larger than 1 GiB
    /// ([`crate::MAX_DEVICE_PAGE_SIZE`]), pages larger than the address
    /// space and TLBs above [`crate::MAX_TLB_ENTRIES`].
    pub fn new(va_bits: u32, page_size: u64, tlb_entries: usize) -> Self {
        let va_bits = va_bits.min(64);
        let shift = page_size.trailing_zeros().clamp(12, 63);
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

    /// The number of page-table tables allocated and of valid PTEs.
    pub fn table_counts(&self) -> (usize, usize) {
        S::with(&self.pt, |p| (p.table.tables(), p.table.valid_entries()))
    }

    /// The number of TLB entries cached.
    pub fn tlb_len(&self) -> usize {
        S::with(&self.tlb, |t| t.len())
    }

    /// Inclusive range of the device pages that `[start, end)` touches,
    /// clipped to the pages that hold device addresses, or `None` if there
    /// are none. (When a page is larger than the whole address space,
    /// bytes above the limit still share page 0 with it.)
    fn pages(&self, start: u64, end: u64) -> Option<(u64, u64)> {
        if start >= end {
            return None;
        }
        let shift = self.geo.page_shift;
        let last_page = ((self.limit - 1) >> shift) as u64;
        let (lo, hi) = (start >> shift, (end - 1) >> shift);
        (lo <= last_page).then(|| (lo, hi.min(last_page)))
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
                // The TLB caches only valid entries of the table (filled
                // under this lock): where the table held none, it holds
                // none either.
                if p.table.clear(lo, hi) > 0 {
                    S::with(&self.tlb, |t| t.shoot_down(lo, hi));
                }
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

    /// `invalidate_start` + `invalidate_end`, for a caller that holds the
    /// CPU side exclusively (no fault can run while it changes it): the
    /// same effect (sequence up by two, the range cleared and shot down,
    /// one invalidation counted) under one acquisition of the lock.
    pub fn invalidate(&self, start: u64, end: u64) {
        S::with(&self.pt, |p| {
            p.seq += 2;
            p.stats.invalidations += 1;
            if let Some((lo, hi)) = self.pages(start, end) {
                // The TLB caches only valid entries of the table (filled
                // under this lock): where the table held none, it holds
                // none either.
                if p.table.clear(lo, hi) > 0 {
                    S::with(&self.tlb, |t| t.shoot_down(lo, hi));
                }
            }
        });
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

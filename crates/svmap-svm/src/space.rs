//! [`SvmSpace`]: one CPU address space (the core [`Mm`] with its Linux
//! placement) and any number of named device spaces, kept in step.
//!
//! # State
//!
//! | field | holds |
//! | --- | --- |
//! | `mm` | the CPU VMAs: `map`/`mmap` mappings, every live SVM piece, every device-only reservation below `task_size` |
//! | `prot` | CPU pages whose protection is not `rw` (split on change) |
//! | `reserved` | the CPU VMAs that are device-only reservations, with their `cpu` policy |
//! | `svm` | the live pieces of SVM ranges, with their allocation id; each is exactly one CPU VMA, so they sit in a hash map by start and ordered questions walk `mm` |
//! | `allocs`, `by_start` | each SVM range by id; for each address, the latest range that starts there but lost its piece there to a CPU unmap (hash maps; a range that still has that piece is found through it in `svm`) |
//! | `cpu_cover` | the union of every CPU VMA and the guard gap below every grows-down one |
//! | `win_pieces` | the CPU VMAs that are window-reservation pieces, with their window id (a hash map by start, as `svm`) |
//! | `svm_cover` | once a window exists: `cpu_cover` without the window pieces |
//! | `all_cover` | `cpu_cover` plus every device-only region of every device |
//! | device `regions` | the device's device-only regions; the SVM pieces it holds are the pieces of `svm` whose range lists it ([`SvmSpace::device_occupancy`]) |
//! | device `mmu` | the device's page table and TLB ([`Mirror`]) |
//!
//! # Allocation cost
//!
//! `svm_alloc` for all devices is one [`AddressMap::find_fit`] over
//! `all_cover`: O(log n) per candidate hole, one hole when the alignment is
//! the page size. For a proper subset of the devices it searches
//! `cpu_cover` and verifies the candidate on each listed device's regions
//! (an SVM piece a device holds is a CPU VMA, occupied in `cpu_cover`
//! too); on a conflict it restarts just past the conflicting regions
//! (top-down: below the lowest one; bottom-up: above the highest one).
//! Every restart moves the window edge past at least one region that lies
//! in the window and is never met again, so the worst case is `1 + m`
//! searches, where `m` is the number of regions the listed devices hold in
//! the window but the CPU does not: O((1 + m) (log n + k)).
//! [`SvmSpace::stats`] counts the iterations.
//!
//! While the CPU map alone answers the searches (no grows-down VMA, whose
//! guard gap the covers add, no device-only region and no window), the
//! covers are not built: `svm_alloc` searches the CPU map itself, for all
//! devices with [`AddressMap::allocate`] (the search and the insertion in
//! one descent), and `svm_free` is one CPU unmap. An allocation and a free
//! then change one ordered map, the CPU's; the rest is hash-map work and
//! one invalidation per device. The covers are built (O(n)) at the first
//! grows-down VMA, region or window, and kept in step from then on.
//!
//! # Window reservations
//!
//! [`SvmSpace::reserve_window`] reserves, up front, the common window of a
//! set of devices in the CPU space: every part of `[max(mmap_min_addr,
//! bases), min(task_size, 2^va_bits of each))` that is free on the CPU
//! (guard gaps stay free) becomes a CPU reservation VMA (a *piece*). Plain
//! CPU placement (`mmap`, `find`, `map`, `svm_alloc` for other device sets)
//! sees the pieces as occupied; `svm_alloc` for a non-empty subset of the
//! window's devices searches inside the window first, treating the pieces
//! as free, and carves its range out of them; `svm_free` of such a range
//! puts the freed part back into the reservation. A third cover map,
//! `svm_cover` (every CPU VMA except pieces, plus guard gaps), exists from
//! the first window on and is what the in-window search runs on. A piece
//! and an SVM range count alike in `cpu_cover` and `all_cover`, so carving
//! and giving back change only `svm_cover` there; with one window and no
//! regions on the devices the in-window search inserts into `svm_cover` in
//! the same descent, and a range given back whole keeps its CPU VMA (it
//! becomes a piece again).
//!
//! # CPU-only spaces cost what the core map costs
//!
//! Until the first `add_device` or `svm_alloc`, `map`, `unmap`, `mmap` and
//! `find` do only the core map's work (plus the protection map, once
//! `protect` has been used), so a trace of address-space operations
//! replays at the core map's speed.

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use svmap_core::linux::{Fixed, Mm, MmConfig, MmapRequest, PAGE_SIZE};
use svmap_core::{
    AddressMap, FitError, FitRequest, SearchError, SearchParams, UnmappedAreaInfo, Vma, VmaFlags,
};

use crate::error::{Fault, SvmError};
use crate::interval::{union_of, CoverMap, IntervalMap, MixState};
use crate::mirror::{DefaultFormat, Mirror, Perm, PtFormat, Snapshot};

mod pieces;
mod query;
use pieces::Pieces;
pub use query::AllocView;

/// What a device mirrors.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum MirrorMode {
    /// Only the SVM ranges allocated for it (`"buffers"`).
    #[default]
    Buffers,
    /// Every CPU mapping that is not a device-only reservation, on demand
    /// (`"system"`, the HMM model).
    System,
}

/// What a CPU access does in a device-only region's CPU reservation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CpuPolicy {
    /// Every CPU access faults (`"fault"`).
    #[default]
    Fault,
    /// Reads see a shared zero page, writes fault (`"dummy_page"`).
    DummyPage,
}

/// When a device's page table is filled for an SVM range.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Populate {
    /// On the first device access (device page fault).
    #[default]
    OnFault,
    /// At allocation ("always mapped"), up to [`PREFAULT_MAX_PAGES`] pages
    /// per range; the rest on fault.
    AtAlloc,
}

/// The most pages [`Populate::AtAlloc`] installs per allocation.
pub const PREFAULT_MAX_PAGES: u64 = 4096;

/// The largest device page size [`SvmSpace::add_device`] accepts: 1 GiB
/// (the largest page of x86-64 and of the usual GPU MMUs).
pub const MAX_DEVICE_PAGE_SIZE: u64 = 1 << 30;

/// The most TLB entries a device may have ([`DeviceConfig::tlb_entries`]):
/// 65,536.
pub const MAX_TLB_ENTRIES: usize = 1 << 16;

/// The most devices an [`SvmSpace`] holds at once: 64. A real machine has
/// at most a few dozen accelerators, and every CPU `unmap`, `protect` or
/// `svm_free` invalidates every device, so the cap keeps the cost of each
/// of those operations bounded whatever a trace or a caller asks for.
/// [`SvmSpace::add_device`] refuses one more with
/// [`SvmError::TooManyDevices`]; `reset` drops every device.
pub const MAX_DEVICES: usize = 64;

/// CPU page protection.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Prot {
    /// No access (`"none"`).
    None,
    /// Read only (`"r"`).
    Read,
    /// Read and write (`"rw"`).
    #[default]
    ReadWrite,
}

/// A device's parameters (the trace op `device`, plus the mirror model's).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceConfig {
    /// The name operations use.
    pub name: String,
    /// The device addresses `[0, 2^va_bits)`; 12..=64.
    pub va_bits: u32,
    /// SVM ranges are placed at or above this.
    pub base: u64,
    /// The device page size: a power of two from 0x1000 to
    /// [`MAX_DEVICE_PAGE_SIZE`], and at most `2^va_bits`.
    pub page_size: u64,
    /// What it mirrors.
    pub mirror: MirrorMode,
    /// When its page table is filled.
    pub populate: Populate,
    /// TLB entries: 1..=[`MAX_TLB_ENTRIES`]. The TLB holds only what is
    /// filled, so a large one costs memory only as it fills.
    pub tlb_entries: usize,
}

impl DeviceConfig {
    /// A device with the trace format's defaults: base 0, 4 KiB pages, buffer
    /// mirroring, populate on fault, a 64-entry TLB.
    pub fn new(name: impl Into<String>, va_bits: u32) -> Self {
        DeviceConfig {
            name: name.into(),
            va_bits,
            base: 0,
            page_size: PAGE_SIZE,
            mirror: MirrorMode::Buffers,
            populate: Populate::OnFault,
            tlb_entries: 64,
        }
    }
}

/// Counters of the allocator.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SvmStats {
    /// `svm_alloc` calls answered from the combined index (all devices).
    pub combined_searches: u64,
    /// `svm_alloc` calls for a proper subset of the devices.
    pub subset_searches: u64,
    /// Candidate searches of those (1 + restarts).
    pub subset_iterations: u64,
    /// Candidate searches of the latest `svm_alloc`.
    pub last_iterations: u64,
    /// `svm_alloc` calls that searched inside a window reservation first.
    pub window_searches: u64,
}

/// One device space.
#[derive(Debug)]
pub struct Device<F: PtFormat = DefaultFormat> {
    cfg: DeviceConfig,
    /// `2^va_bits`.
    limit: u128,
    /// Device-only regions. What else the device holds, the SVM pieces
    /// mapped to it, is in the space ([`SvmSpace::device_occupancy`]):
    /// every SVM piece is a CPU VMA, so only the regions can make a range
    /// that is free on the CPU busy on the device.
    regions: IntervalMap<CpuPolicy>,
    /// The entries of `regions` that [`SvmSpace::device_hold`] made: held
    /// by the device by its own means, with no CPU side (keyed by the
    /// entry's start; entries are never split or merged).
    held: IntervalMap<()>,
    mmu: Mirror<F>,
}

impl<F: PtFormat> Device<F> {
    /// Its parameters.
    pub fn config(&self) -> &DeviceConfig {
        &self.cfg
    }

    /// `2^va_bits`, saturated at `u64::MAX` for 64 bits.
    pub fn limit(&self) -> u64 {
        self.limit.min(u128::from(u64::MAX)) as u64
    }

    /// Its device-only regions, those with a CPU side and the ranges it
    /// holds by its own means ([`Self::held`]).
    pub fn regions(&self) -> &IntervalMap<CpuPolicy> {
        &self.regions
    }

    /// The ranges it holds by its own means ([`SvmSpace::device_hold`]):
    /// entries of [`Self::regions`] without a CPU side. Another device's
    /// region may lie over them on the CPU, so the CPU reservation at such
    /// a range, if any, is never this device's.
    pub fn held(&self) -> &IntervalMap<()> {
        &self.held
    }

    /// Its device-only regions that have a CPU side (those
    /// [`SvmSpace::device_map`] placed; not the [`Self::held`] ranges).
    pub fn cpu_regions(&self) -> impl Iterator<Item = (u64, u64, &CpuPolicy)> + '_ {
        self.regions
            .iter()
            .filter(|&(s, _, _)| self.held.get_exact(s).is_none())
    }

    /// Its MMU.
    pub fn mmu(&self) -> &Mirror<F> {
        &self.mmu
    }
}

#[derive(Clone, Debug)]
struct Alloc {
    start: u64,
    end: u64,
    /// Device indices, sorted; shared by the ranges of one device set
    /// (an allocation allocates no list of its own).
    devices: Arc<[usize]>,
    /// The window reservation it was carved from.
    window: Option<u64>,
}

/// A whole SVM range that [`SvmSpace::take_whole`] took out of the records
/// of live ranges while its backends release it: handed back to
/// [`SvmSpace::free_taken`] once they all have (the range becomes free), or
/// to [`SvmSpace::restore_taken`] if one failed (the range is allocated as
/// before). Nothing else may change the space in between.
#[derive(Debug)]
#[must_use = "a taken range goes back to free_taken or restore_taken"]
pub(crate) struct Taken {
    id: u64,
    alloc: Alloc,
    /// The live window it was carved from: (id, start, end). Its piece
    /// then stays in the piece map until `free_taken`.
    win: Option<(u64, u64, u64)>,
}

impl Taken {
    /// Its id.
    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    /// Its start and end.
    pub(crate) fn bounds(&self) -> (u64, u64) {
        (self.alloc.start, self.alloc.end)
    }

    /// The indices of its devices, sorted.
    pub(crate) fn devices(&self) -> &[usize] {
        &self.alloc.devices
    }

    /// Whether it was carved from a window that is still reserved (its
    /// freed range goes back there).
    pub(crate) fn in_window(&self) -> bool {
        self.win.is_some()
    }
}

/// A window reservation (internal).
#[derive(Clone, Debug)]
struct Window {
    start: u64,
    end: u64,
    /// Device indices, sorted.
    devices: Vec<usize>,
}

/// A reservation of the common window of a set of devices in the CPU space
/// ([`SvmSpace::reserve_window`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WindowReservation {
    /// Its id, for [`SvmSpace::release_window`].
    pub id: u64,
    /// The devices, sorted by definition order, each once.
    pub devices: Vec<String>,
    /// The common window `[start, end)`: the largest floor (`mmap_min_addr`
    /// and the device bases) rounded up, and the smallest limit (`task_size`
    /// and `2^va_bits`) rounded down, to the largest device page size.
    pub start: u64,
    /// End of the common window.
    pub end: u64,
    /// The pieces of the window the CPU holds as reservations, ascending:
    /// at reservation time, every part that was free (outside guard gaps);
    /// later, what SVM ranges and CPU unmaps have left of them.
    pub reserved: Vec<(u64, u64)>,
}

impl WindowReservation {
    /// Bytes held in reservation pieces.
    pub fn reserved_bytes(&self) -> u64 {
        self.reserved.iter().map(|&(s, e)| e - s).sum()
    }

    /// Whether the whole window was free and is reserved.
    pub fn is_complete(&self) -> bool {
        self.reserved == [(self.start, self.end)]
    }
}

/// Frame of a device-only region page.
const FRAME_REGION: u64 = 1;
/// Frame of ordinary CPU memory (system mirroring).
const FRAME_CPU: u64 = 2;
/// Frame of SVM allocation `id`.
fn frame_of(id: u64) -> u64 {
    id + 16
}

/// One CPU address space and its device spaces. See the module
/// documentation for the state and the costs.
#[derive(Debug)]
pub struct SvmSpace<F: PtFormat = DefaultFormat> {
    mm: Mm,
    prot: IntervalMap<Prot>,
    reserved: IntervalMap<CpuPolicy>,
    svm: Pieces,
    allocs: HashMap<u64, Alloc, MixState>,
    /// The latest allocation that starts at each address among those that
    /// lost their piece there (their first page) to a CPU unmap. A range
    /// that still has its first piece is found through `svm` and is not
    /// listed here: it is the latest range to start at its address (any
    /// range placed there later needed the address free), and a range
    /// never regains a piece at its start (pieces only shrink or split).
    by_start: HashMap<u64, u64, MixState>,
    /// Older allocations that lost their first piece at the same address as
    /// the one in `by_start`, oldest first.
    by_start_older: BTreeMap<u64, Vec<u64>>,
    next_id: u64,
    cpu_cover: CoverMap,
    all_cover: CoverMap,
    /// Whether the space has had a device or an `svm_alloc`: from then on
    /// CPU removals do the full work (SVM pieces, invalidations).
    svm_used: bool,
    /// Whether a grows-down VMA has ever been inserted into the CPU map.
    growsdown_seen: bool,
    /// Whether `cpu_cover` and `all_cover` are built and kept in step; both
    /// are empty before. They are built once SVM is used and the CPU map
    /// alone no longer answers the searches: a grows-down VMA (its guard
    /// gap), a device-only region or a window (see the module
    /// documentation).
    covers_live: bool,
    /// Reused by `carve_insert`: the window pieces it removes.
    scratch_pieces: Vec<(u64, u64)>,
    /// Reused by `svm_alloc`: the device indices of the request.
    scratch_devs: Vec<usize>,
    /// The device set of the latest `svm_alloc`, shared with its range.
    last_devs: Arc<[usize]>,
    /// Window reservations by id.
    windows: BTreeMap<u64, Window>,
    next_window: u64,
    /// CPU VMAs that are window pieces, with their window id.
    win_pieces: Pieces,
    /// From the first window on: every CPU VMA except window pieces, and the
    /// guard gaps.
    svm_cover: Option<CoverMap>,
    devices: Vec<Device<F>>,
    names: BTreeMap<String, usize>,
    stats: SvmStats,
}

impl<F: PtFormat> Default for SvmSpace<F> {
    fn default() -> Self {
        SvmSpace::new(MmConfig::default())
    }
}

fn round_up(x: u64, p: u64) -> Option<u64> {
    Some(x.checked_add(p - 1)? & !(p - 1))
}

/// What `svm_alloc` looks for: `len` bytes aligned to `align`, highest or
/// lowest.
#[derive(Clone, Copy, Debug)]
struct Query {
    len: u64,
    align: u64,
    topdown: bool,
}

/// The exact-fit request of `q` in `[low, high)`.
fn fit_request(low: u64, high: u64, q: Query) -> FitRequest {
    FitRequest {
        length: q.len,
        low,
        high,
        align: q.align,
        align_offset: 0,
        topdown: q.topdown,
        respect_guard_gaps: false,
    }
}

/// What a failed search of `q` means for `svm_alloc`.
fn fit_error(e: FitError, q: Query) -> SvmError {
    match e {
        FitError::NoSpace
        | FitError::EmptyWindow { .. }
        | FitError::TooManyVmas
        | FitError::TooManyHoles => SvmError::NoSpace {
            length: q.len,
            align: q.align,
        },
        FitError::ZeroLength | FitError::BadAlignment(_) => {
            unreachable!("checked by svm_alloc: {e}")
        }
    }
}

/// One exact-fit search of the holes of `map` in `[low, high)`.
fn fit_one(map: &AddressMap, low: u64, high: u64, q: Query) -> Result<u64, SvmError> {
    map.find_fit(&fit_request(low, high, q), &SearchParams::default())
        .map_err(|e| fit_error(e, q))
}

impl<F: PtFormat> SvmSpace<F> {
    /// An empty CPU space with these parameters and no devices (`reset`).
    pub fn new(cfg: MmConfig) -> Self {
        SvmSpace {
            mm: Mm::new(cfg),
            prot: IntervalMap::new(),
            reserved: IntervalMap::new(),
            svm: Pieces::default(),
            allocs: HashMap::default(),
            by_start: HashMap::default(),
            by_start_older: BTreeMap::new(),
            next_id: 1,
            cpu_cover: CoverMap::new(),
            all_cover: CoverMap::new(),
            svm_used: false,
            growsdown_seen: false,
            covers_live: false,
            scratch_pieces: Vec::new(),
            scratch_devs: Vec::new(),
            last_devs: Arc::from([]),
            windows: BTreeMap::new(),
            next_window: 1,
            win_pieces: Pieces::default(),
            svm_cover: None,
            devices: Vec::new(),
            names: BTreeMap::new(),
            stats: SvmStats::default(),
        }
    }

    /// Drops everything and starts again with `cfg` (`reset`).
    pub fn reset(&mut self, cfg: MmConfig) {
        *self = SvmSpace::new(cfg);
    }

    /// The CPU space. Change it only through this type.
    pub fn mm(&self) -> &Mm {
        &self.mm
    }

    /// The devices in definition order.
    pub fn devices(&self) -> &[Device<F>] {
        &self.devices
    }

    /// The device named `name`.
    pub fn device(&self, name: &str) -> Result<&Device<F>, SvmError> {
        Ok(&self.devices[self.dev_index(name)?])
    }

    /// Allocator counters.
    pub fn stats(&self) -> SvmStats {
        self.stats
    }

    /// The combined index of everything occupied in any space: empty
    /// until the first [`Self::add_device`] or [`Self::svm_alloc`]; then
    /// the CPU map itself while that is all there is (no grows-down VMA,
    /// no device-only region, no window), and the combined cover from the
    /// first of those on (see the module documentation).
    pub fn combined_index(&self) -> &AddressMap {
        if self.svm_used && !self.covers_live {
            self.mm.space()
        } else {
            self.all_cover.index()
        }
    }

    /// Everything device `device` holds: its device-only regions and the
    /// SVM pieces mapped to it, one VMA each (flags
    /// [`VmaFlags::NONE`]). Built on each call, O(n log n): for checks and
    /// tools, not for the allocation path. Errors: `UnknownDevice`.
    pub fn device_occupancy(&self, device: &str) -> Result<AddressMap, SvmError> {
        let d = self.dev_index(device)?;
        let mut m = AddressMap::new();
        let held = self
            .svm
            .iter(self.mm.space())
            .filter(|(_, _, id)| self.allocs[*id].devices.contains(&d))
            .map(|(s, e, _)| (s, e));
        for (s, e) in self.devices[d]
            .regions
            .iter()
            .map(|(s, e, _)| (s, e))
            .chain(held)
        {
            // Regions and the pieces of one device never overlap.
            let r = m.insert(s, e, VmaFlags::NONE);
            debug_assert!(r.is_ok(), "device ranges overlap: {r:?}");
        }
        Ok(m)
    }

    /// The CPU protection of the page at `addr` (`rw` outside `protect`ed
    /// ranges; meaningful where the CPU maps something).
    pub fn prot_at(&self, addr: u64) -> Prot {
        self.prot.get(addr).map(|(_, _, p)| *p).unwrap_or_default()
    }

    /// The `cpu` policy of the device-only reservation at `addr`, if the
    /// CPU maps one there.
    pub fn reservation_at(&self, addr: u64) -> Option<CpuPolicy> {
        self.reserved.get(addr).map(|(_, _, p)| *p)
    }

    /// The live SVM ranges (pieces) as `(start, end, devices)`.
    pub fn svm_ranges(&self) -> Vec<(u64, u64, Vec<String>)> {
        self.svm
            .iter(self.mm.space())
            .map(|(s, e, id)| {
                let names = self.allocs[id]
                    .devices
                    .iter()
                    .map(|&d| self.devices[d].cfg.name.clone())
                    .collect();
                (s, e, names)
            })
            .collect()
    }

    /// [`Self::dev_index`] that first tries device `hint` (callers usually
    /// list the devices in definition order): one string comparison.
    fn dev_index_at(&self, name: &str, hint: usize) -> Result<usize, SvmError> {
        match self.devices.get(hint) {
            Some(d) if d.cfg.name == name => Ok(hint),
            _ => self.dev_index(name),
        }
    }

    /// The sorted, deduplicated indices of `devices`, shared with the
    /// latest request when it named the same set (no allocation then).
    fn device_set<S: AsRef<str>>(&mut self, devices: &[S]) -> Result<Arc<[usize]>, SvmError> {
        // The common case: the latest set again, named in the same order
        // (its indices are sorted and distinct, so the names are too).
        if devices.len() == self.last_devs.len()
            && devices.iter().zip(self.last_devs.iter()).all(|(n, &d)| {
                self.devices
                    .get(d)
                    .is_some_and(|x| x.cfg.name == n.as_ref())
            })
        {
            return Ok(Arc::clone(&self.last_devs));
        }
        let mut v = std::mem::take(&mut self.scratch_devs);
        v.clear();
        let mut r = Ok(());
        for (i, n) in devices.iter().enumerate() {
            match self.dev_index_at(n.as_ref(), i) {
                Ok(d) => v.push(d),
                Err(e) => {
                    r = Err(e);
                    break;
                }
            }
        }
        v.sort_unstable();
        v.dedup();
        let set = if *self.last_devs == *v {
            Arc::clone(&self.last_devs)
        } else {
            Arc::from(&v[..])
        };
        self.scratch_devs = v;
        r?;
        self.last_devs = Arc::clone(&set);
        Ok(set)
    }

    fn dev_index(&self, name: &str) -> Result<usize, SvmError> {
        self.names
            .get(name)
            .copied()
            .ok_or_else(|| SvmError::UnknownDevice {
                name: name.to_owned(),
            })
    }

    // ----- CPU-side bookkeeping -------------------------------------------

    /// What a CPU VMA occupies for placement: itself and, below a
    /// grows-down one, the stack guard gap.
    fn contribution(&self, v: &Vma) -> (u64, u64) {
        if v.flags.contains(VmaFlags::GROWSDOWN) {
            let gap = self.mm.config().stack_guard_gap;
            (v.start.saturating_sub(gap), v.end)
        } else {
            (v.start, v.end)
        }
    }

    /// From the first `add_device` or `svm_alloc` on: CPU removals do the
    /// full work, and the covers are built if the CPU map alone does not
    /// answer the searches.
    fn use_svm(&mut self) {
        self.svm_used = true;
        if self.growsdown_seen {
            self.activate_covers();
        }
    }

    /// Builds the cover maps from the CPU map and the device regions, once.
    fn activate_covers(&mut self) {
        if self.covers_live {
            return;
        }
        self.covers_live = true;
        let vmas: Vec<Vma> = self.mm.space().iter().collect();
        for v in &vmas {
            self.cover_add(v);
        }
        for d in 0..self.devices.len() {
            let regions: Vec<(u64, u64)> = self.devices[d]
                .regions
                .iter()
                .map(|(s, e, _)| (s, e))
                .collect();
            for (s, e) in regions {
                self.all_cover.add(s, e);
            }
        }
    }

    /// Adds a CPU VMA that is not a window piece to the covers.
    fn cover_add(&mut self, v: &Vma) {
        if !self.covers_live {
            return;
        }
        let (s, e) = self.contribution(v);
        self.cpu_cover.add(s, e);
        self.all_cover.add(s, e);
        if let Some(c) = &mut self.svm_cover {
            c.add(s, e);
        }
    }

    /// Removes a CPU VMA that is not a window piece from the covers.
    fn cover_remove(&mut self, v: &Vma) {
        if !self.covers_live {
            return;
        }
        let (s, e) = self.contribution(v);
        self.cpu_cover.remove(s, e);
        self.all_cover.remove(s, e);
        if let Some(c) = &mut self.svm_cover {
            c.remove(s, e);
        }
    }

    /// Adds (`add`) or removes the window piece `[s, e)` to or from the
    /// covers: occupied for the CPU and for the combined index, free for
    /// the in-window search.
    fn piece_cover(&mut self, s: u64, e: u64, add: bool) {
        if add {
            self.cpu_cover.add(s, e);
            self.all_cover.add(s, e);
        } else {
            self.cpu_cover.remove(s, e);
            self.all_cover.remove(s, e);
        }
    }

    /// Whether the CPU VMA `v` is a window piece.
    fn is_piece(&self, v: &Vma) -> bool {
        // A piece is a CPU VMA: one that holds `v.start` starts there.
        self.win_pieces.get_exact(v.start).is_some()
    }

    /// Inserts a CPU VMA that the caller has checked to be free.
    fn cpu_insert(&mut self, start: u64, end: u64, flags: VmaFlags) -> Result<(), SvmError> {
        self.mm
            .space_mut()
            .insert(start, end, flags)
            .map_err(|e| match e {
                svmap_core::MapError::Overlap { existing, .. } => SvmError::Overlap {
                    start,
                    end,
                    existing: (existing.start, existing.end),
                },
                _ => SvmError::EmptyRange { start, end },
            })?;
        self.after_cpu_insert(&Vma { start, end, flags });
        Ok(())
    }

    /// Keeps the covers in step with a VMA just inserted into the CPU map
    /// (not a window piece), and builds them at the first grows-down VMA
    /// once SVM is used.
    fn after_cpu_insert(&mut self, v: &Vma) {
        if v.flags.contains(VmaFlags::GROWSDOWN) {
            self.growsdown_seen = true;
        }
        if self.covers_live {
            self.cover_add(v);
        } else if self.growsdown_seen && self.svm_used {
            // Builds them from the CPU map, `v` included.
            self.activate_covers();
        }
    }

    /// The CPU VMA that is exactly `[start, end)`, if there is one (then
    /// nothing else lies there).
    fn vma_exactly(&self, start: u64, end: u64) -> Option<Vma> {
        self.mm
            .space()
            .vma_at(start)
            .filter(|v| v.start == start && v.end == end)
    }

    /// Invalidates `[start, end)` on every device's mirror before the CPU
    /// side changes it. The space is held exclusively (`&mut self`) while
    /// it changes, so no device fault can run in between and each mirror's
    /// `invalidate_start` and `invalidate_end` happen as one step
    /// ([`Mirror::invalidate`]).
    fn invalidate_devices(&self, start: u64, end: u64) {
        for d in &self.devices {
            d.mmu.invalidate(start, end);
        }
    }

    /// Removes everything the CPU maps in `[start, end)`, with every
    /// consequence: SVM pieces leave their devices, protections and
    /// reservations go, and every device is invalidated over the range.
    /// O(log n + k) per structure, plus the devices' invalidations.
    fn cpu_remove(&mut self, start: u64, end: u64) {
        self.cpu_remove_with(start, end, true);
    }

    /// [`Self::cpu_remove`]; `pieces`: whether SVM pieces may lie in the
    /// range (`false`: the caller has removed the only one).
    fn cpu_remove_with(&mut self, start: u64, end: u64, pieces: bool) {
        if start >= end {
            return;
        }
        if !self.svm_used {
            // No devices, SVM ranges or reservations yet: the CPU map and
            // the protections are all there is.
            let _ = self.mm.space_mut().unmap(start, end);
            self.prot.remove_range_each(start, end, |_, _, _| {});
            return;
        }
        self.invalidate_devices(start, end);
        // The SVM pieces go while the CPU map still holds their VMAs.
        if pieces {
            self.drop_svm_pieces(start, end);
        }
        if !self.covers_live {
            // No covers (so no windows): the CPU map is all there is.
            let _ = self.mm.space_mut().unmap(start, end);
        } else if let Some(v) = self.vma_exactly(start, end).filter(|v| !self.is_piece(v)) {
            // The common case: one whole VMA that is not a window piece.
            self.cover_remove(&v);
            let _ = self.mm.space_mut().unmap(start, end);
        } else {
            let vmas: Vec<(Vma, bool)> = self
                .mm
                .space()
                .range(start, end)
                .map(|v| (v, self.is_piece(&v)))
                .collect();
            for &(v, piece) in &vmas {
                if piece {
                    self.piece_cover(v.start, v.end, false);
                } else {
                    self.cover_remove(&v);
                }
            }
            // The window pieces go while the CPU map still holds them.
            self.win_pieces.remove_range(self.mm.space(), start, end);
            let _ = self.mm.space_mut().unmap(start, end);
            for &(v, piece) in &vmas {
                let below = (v.start < start).then_some(Vma { end: start, ..v });
                let above = (v.end > end).then_some(Vma { start: end, ..v });
                for r in below.into_iter().chain(above) {
                    if piece {
                        self.piece_cover(r.start, r.end, true);
                    } else {
                        self.cover_add(&r);
                    }
                }
            }
        }
        self.prot.remove_range_each(start, end, |_, _, _| {});
        self.reserved.remove_range_each(start, end, |_, _, _| {});
    }

    /// Removes every SVM piece in `[start, end)` while the CPU map still
    /// holds their VMAs (a piece across an edge keeps its part outside); a
    /// live range that loses the piece at its start is listed in `by_start`
    /// from then on, as the latest to start there.
    fn drop_svm_pieces(&mut self, start: u64, end: u64) {
        let SvmSpace {
            mm,
            svm,
            allocs,
            by_start,
            by_start_older,
            ..
        } = self;
        svm.remove_range_with(mm.space(), start, end, |s, _, id| {
            // A removed part starts at the piece's start unless the piece
            // straddles `start`, and then it keeps its start.
            if allocs.get(&id).is_some_and(|a| a.start == s) {
                if let Some(older) = by_start.insert(s, id) {
                    by_start_older.entry(s).or_default().push(older);
                }
            }
        });
    }

    /// [`Self::cpu_remove`] of `[start, end)` followed by
    /// [`Self::insert_piece`] of it into window `wid`, when the CPU holds
    /// exactly one VMA there, `[start, end)` itself, a plain one (no flags)
    /// that is not a window piece: the SVM range becomes a window piece
    /// again. The CPU map keeps the VMA as it is (a piece is a plain VMA
    /// too), and a piece counts as occupied in the CPU and combined covers
    /// just as the VMA does, so those covers keep their counts; the
    /// in-window cover loses the range, the devices are invalidated, and the
    /// SVM, protection and reservation maps lose it as in `cpu_remove`.
    /// Returns `false`, having changed nothing, unless those conditions
    /// hold.
    fn svm_to_piece(&mut self, start: u64, end: u64, wid: u64) -> bool {
        if !self.covers_live {
            return false;
        }
        let Some(v) = self.vma_exactly(start, end) else {
            return false;
        };
        if v.flags != VmaFlags::NONE || self.is_piece(&v) {
            return false;
        }
        self.invalidate_devices(start, end);
        if let Some(c) = &mut self.svm_cover {
            c.remove(start, end);
        }
        // No window piece lies in or across the range (the one VMA there
        // is not a piece), so `win_pieces` has nothing to remove.
        self.prot.remove_range_each(start, end, |_, _, _| {});
        self.reserved.remove_range_each(start, end, |_, _, _| {});
        self.drop_svm_pieces(start, end);
        self.win_pieces.insert(start, end, wid);
        true
    }

    /// Searches `map` in `[low, high)` and verifies each candidate on the
    /// listed devices (and, with `window`, against the pieces of every other
    /// window), restarting past each conflict; returns the result and the
    /// number of candidate searches. See the module documentation for the
    /// bound.
    fn fit_verified(
        &self,
        map: &AddressMap,
        devs: &[usize],
        low: u64,
        high: u64,
        q: Query,
        window: Option<u64>,
    ) -> (Result<u64, SvmError>, u64) {
        let (mut lo, mut hi) = (low, high);
        let mut iters = 0u64;
        let no_space = SvmError::NoSpace {
            length: q.len,
            align: q.align,
        };
        loop {
            iters += 1;
            if hi <= lo || hi - lo < q.len {
                return (Err(no_space), iters);
            }
            let c = match fit_one(map, lo, hi, q) {
                Ok(c) => c,
                Err(e) => return (Err(e), iters),
            };
            let ce = c + q.len;
            let mut conflict = false;
            // Only a device-only region can make a range that is free in
            // `map` busy on a device: every SVM piece a device holds is a
            // CPU VMA, occupied in `map` too.
            for &d in devs {
                let regions = &self.devices[d].regions;
                if let Some((vs, _, _)) = regions.first_overlap(c, ce) {
                    conflict = true;
                    if q.topdown {
                        hi = hi.min(vs);
                    } else if let Some((_, pe, _)) = regions.last_before(ce) {
                        lo = lo.max(pe);
                    }
                }
            }
            if let Some(w) = window {
                let mut other = self
                    .win_pieces
                    .range(self.mm.space(), c, ce)
                    .filter(|&(_, _, &id)| id != w)
                    .map(|(s, e, _)| (s, e));
                if let Some((s, e)) = other.next() {
                    conflict = true;
                    if q.topdown {
                        hi = hi.min(s);
                    } else {
                        lo = lo.max(other.last().map_or(e, |(_, e)| e));
                    }
                }
            }
            if !conflict {
                return (Ok(c), iters);
            }
        }
    }

    /// Inserts the window piece `[s, e)` of window `id`; the caller has
    /// checked that the CPU holds nothing there.
    fn insert_piece(&mut self, s: u64, e: u64, id: u64) {
        let r = self.mm.space_mut().insert(s, e, VmaFlags::NONE);
        debug_assert!(r.is_ok(), "window piece over a CPU VMA: {r:?}");
        self.piece_cover(s, e, true);
        self.win_pieces.insert(s, e, id);
    }

    /// Removes every window piece in `[start, end)` from the CPU (splitting
    /// pieces).
    fn carve(&mut self, start: u64, end: u64) {
        let mut removed = std::mem::take(&mut self.scratch_pieces);
        removed.clear();
        self.win_pieces
            .remove_range_with(self.mm.space(), start, end, |s, e, _| removed.push((s, e)));
        for &(s, e) in &removed {
            let _ = self.mm.space_mut().unmap(s, e);
            self.piece_cover(s, e, false);
            self.prot.remove_range(s, e);
        }
        self.scratch_pieces = removed;
    }

    /// Places the SVM range `[start, end)` carved from a window: every
    /// window piece in it leaves the CPU (splitting pieces), then the range
    /// is inserted as a CPU VMA, as [`Self::cpu_insert`] does. A piece
    /// counts as occupied in the CPU and combined covers just as the range
    /// does, so those two covers change only where the range is not a
    /// piece (removing a piece and adding the range back over it would
    /// leave the same counts, at the price of four cover updates);
    /// the in-window cover gains the whole range.
    ///
    /// With `counted`, the in-window cover already holds the range (the
    /// search inserted it).
    fn carve_insert(&mut self, start: u64, end: u64, counted: bool) -> Result<(), SvmError> {
        let whole = self
            .win_pieces
            .get_exact(start)
            .is_some_and(|(e, _)| e == end);
        let mut pieces = std::mem::take(&mut self.scratch_pieces);
        pieces.clear();
        self.win_pieces
            .remove_range_with(self.mm.space(), start, end, |s, e, _| pieces.push((s, e)));
        // Only pieces lie in the range on the CPU: one unmap takes them
        // all (splitting the edge ones). Where the range is one whole piece
        // the CPU map keeps the VMA as it is.
        let inserted = if whole {
            Ok(())
        } else {
            let _ = self.mm.space_mut().unmap(start, end);
            self.mm.space_mut().insert(start, end, VmaFlags::NONE)
        };
        self.prot.remove_range_each(start, end, |_, _, _| {});
        if let Err(e) = inserted {
            // Cannot happen (the search saw the range free but for the
            // pieces); leave the covers as the pieces' removal alone would.
            for &(s, e) in &pieces {
                self.piece_cover(s, e, false);
            }
            if counted {
                if let Some(c) = &mut self.svm_cover {
                    c.remove(start, end);
                }
            }
            self.scratch_pieces = pieces;
            return Err(match e {
                svmap_core::MapError::Overlap { existing, .. } => SvmError::Overlap {
                    start,
                    end,
                    existing: (existing.start, existing.end),
                },
                _ => SvmError::EmptyRange { start, end },
            });
        }
        if self.covers_live {
            let mut at = start;
            for &(s, e) in &pieces {
                if at < s {
                    self.piece_cover(at, s, true);
                }
                at = e;
            }
            if at < end {
                self.piece_cover(at, end, true);
            }
            if !counted {
                if let Some(c) = &mut self.svm_cover {
                    c.add(start, end);
                }
            }
        }
        self.scratch_pieces = pieces;
        Ok(())
    }

    // ----- window reservations ---------------------------------------------------

    /// Reserves the common window of `devices` in the CPU space (see the
    /// module documentation): every part of `[max(mmap_min_addr, bases),
    /// min(task_size, 2^va_bits of each))` (rounded inwards to the largest
    /// device page size) that is free on the CPU, outside stack guard gaps,
    /// becomes a CPU reservation. From then on CPU placement lands outside
    /// it, and `svm_alloc` for any non-empty subset of `devices` is carved
    /// from it (falling back to the space outside when it is full).
    /// Memory the CPU already holds inside the window stays as it is; what
    /// the CPU holds above a device's limit is in
    /// [`Self::vmas_above_limit`].
    ///
    /// Errors (nothing changes): `NoDevices` (an empty list),
    /// `UnknownDevice`, `NoCommonWindow` (the window is empty, `length` 0),
    /// `WindowFull` (no part of the window is free).
    pub fn reserve_window<S: AsRef<str>>(
        &mut self,
        devices: &[S],
    ) -> Result<WindowReservation, SvmError> {
        let mut devs = devices
            .iter()
            .map(|n| self.dev_index(n.as_ref()))
            .collect::<Result<Vec<_>, _>>()?;
        if devs.is_empty() {
            return Err(SvmError::NoDevices);
        }
        devs.sort_unstable();
        devs.dedup();
        let cfg = *self.mm.config();
        let page = devs
            .iter()
            .map(|&d| self.devices[d].cfg.page_size)
            .fold(PAGE_SIZE, u64::max);
        let floor = devs
            .iter()
            .map(|&d| self.devices[d].cfg.base)
            .fold(cfg.mmap_min_addr, u64::max);
        let limit = devs
            .iter()
            .map(|&d| self.devices[d].limit)
            .fold(u128::from(cfg.task_size), u128::min) as u64;
        let (low, high) = (
            round_up(floor, page).unwrap_or(u64::MAX),
            limit & !(page - 1),
        );
        if high <= low {
            return Err(SvmError::NoCommonWindow {
                low: floor,
                high: limit,
                length: 0,
            });
        }
        self.activate_covers();
        let mut holes = Vec::new();
        let mut at = low;
        for v in self.cpu_cover.index().range(low, high) {
            if v.start > at {
                holes.push((at, v.start.min(high)));
            }
            at = at.max(v.end);
        }
        if at < high {
            holes.push((at, high));
        }
        if holes.is_empty() {
            return Err(SvmError::WindowFull {
                start: low,
                end: high,
            });
        }
        if self.svm_cover.is_none() {
            let mut c = CoverMap::new();
            for v in self.mm.space().iter() {
                if !self.is_piece(&v) {
                    let (s, e) = self.contribution(&v);
                    c.add(s, e);
                }
            }
            self.svm_cover = Some(c);
        }
        let id = self.next_window;
        self.next_window += 1;
        for &(s, e) in &holes {
            self.insert_piece(s, e, id);
        }
        self.windows.insert(
            id,
            Window {
                start: low,
                end: high,
                devices: devs,
            },
        );
        Ok(self.window_info(id).expect("just inserted"))
    }

    /// Releases window reservation `id`: its remaining pieces leave the CPU
    /// space. SVM ranges carved from it stay (and are no longer given back
    /// to it when freed). Errors: `UnknownWindow`.
    pub fn release_window(&mut self, id: u64) -> Result<(), SvmError> {
        let w = self
            .windows
            .remove(&id)
            .ok_or(SvmError::UnknownWindow { id })?;
        let mine: Vec<(u64, u64)> = self
            .win_pieces
            .range(self.mm.space(), w.start, w.end)
            .filter(|&(_, _, &p)| p == id)
            .map(|(s, e, _)| (s, e))
            .collect();
        for (s, e) in mine {
            self.carve(s, e);
        }
        Ok(())
    }

    /// Window reservation `id` as it stands now.
    pub fn window_info(&self, id: u64) -> Option<WindowReservation> {
        let w = self.windows.get(&id)?;
        Some(WindowReservation {
            id,
            devices: w
                .devices
                .iter()
                .map(|&d| self.devices[d].cfg.name.clone())
                .collect(),
            start: w.start,
            end: w.end,
            reserved: self
                .win_pieces
                .range(self.mm.space(), w.start, w.end)
                .filter(|&(_, _, &p)| p == id)
                .map(|(s, e, _)| (s, e))
                .collect(),
        })
    }

    /// Every live window reservation, by id.
    pub fn windows(&self) -> Vec<WindowReservation> {
        self.windows
            .keys()
            .filter_map(|&id| self.window_info(id))
            .collect()
    }

    /// The window whose reservation piece the CPU maps at `addr`, if any.
    pub fn window_at(&self, addr: u64) -> Option<u64> {
        self.win_pieces
            .get(self.mm.space(), addr)
            .map(|(_, _, &id)| id)
    }

    // ----- CPU operations ---------------------------------------------------

    /// `map`: a read-write CPU VMA `[start, end)` (`growsdown` sets
    /// `VM_GROWSDOWN`). Errors: `Overlap` (`EEXIST`; nothing changes);
    /// `EmptyRange` / `Unaligned` (bad lines in a trace).
    pub fn cpu_map(&mut self, start: u64, end: u64, growsdown: bool) -> Result<(), SvmError> {
        if end <= start {
            return Err(SvmError::EmptyRange { start, end });
        }
        if !start.is_multiple_of(PAGE_SIZE) || !end.is_multiple_of(PAGE_SIZE) {
            return Err(SvmError::Unaligned {
                start,
                end,
                page_size: PAGE_SIZE,
            });
        }
        // The core map refuses an overlap itself (and names what is there).
        let flags = if growsdown {
            VmaFlags::GROWSDOWN
        } else {
            VmaFlags::NONE
        };
        self.cpu_insert(start, end, flags)
    }

    /// `unmap`: removes whatever the CPU maps in `[start, start + length)`
    /// (clipped at 2^64), splitting; SVM pieces there are invalidated on
    /// every device; device-only regions stay on their devices. Errors
    /// (bad lines in a trace): `Unaligned`, `ZeroLength`.
    pub fn cpu_unmap(&mut self, start: u64, length: u64) -> Result<(), SvmError> {
        if length == 0 {
            return Err(SvmError::ZeroLength);
        }
        if !start.is_multiple_of(PAGE_SIZE) || !length.is_multiple_of(PAGE_SIZE) {
            return Err(SvmError::Unaligned {
                start,
                end: start.saturating_add(length),
                page_size: PAGE_SIZE,
            });
        }
        self.cpu_remove(start, start.saturating_add(length));
        Ok(())
    }

    /// `mmap`: what an anonymous private `mmap()` does ([`Mm::mmap`]); a
    /// `MAP_FIXED` one first does exactly what [`Self::cpu_unmap`] does.
    /// Errors: `Mmap(errno)`.
    pub fn cpu_mmap(&mut self, req: &MmapRequest) -> Result<u64, SvmError> {
        // Before the covers are live there are no devices, SVM ranges or
        // reservations: only protections need the full removal.
        let plain = !self.svm_used && self.prot.is_empty();
        if req.fixed == Fixed::Fixed && !plain {
            let (addr, len) = self.mm.get_unmapped_area(req).map_err(SvmError::Mmap)?;
            self.cpu_remove(addr, addr + len);
        }
        let addr = self.mm.mmap(req).map_err(SvmError::Mmap)?;
        if self.covers_live || (req.growsdown && self.svm_used) {
            let v = self
                .mm
                .space()
                .vma_at(addr)
                .expect("mmap inserted a VMA at its result");
            self.after_cpu_insert(&v);
        } else if req.growsdown {
            self.growsdown_seen = true;
        }
        Ok(addr)
    }

    /// `find`: the kernel's `vm_unmapped_area()` on the CPU space.
    pub fn find(&self, info: &UnmappedAreaInfo) -> Result<u64, SearchError> {
        self.mm.find(info)
    }

    /// `protect`: like `mprotect`, every CPU page of `[start, start +
    /// length)` gets `prot`; every device is invalidated over the range
    /// first. Errors: `NotMapped` / `RangeOverflow` (`ENOMEM`, nothing
    /// changes); `Unaligned` / `ZeroLength` (bad lines in a trace).
    pub fn protect(&mut self, start: u64, length: u64, prot: Prot) -> Result<(), SvmError> {
        if length == 0 {
            return Err(SvmError::ZeroLength);
        }
        if !start.is_multiple_of(PAGE_SIZE) || !length.is_multiple_of(PAGE_SIZE) {
            return Err(SvmError::Unaligned {
                start,
                end: start.saturating_add(length),
                page_size: PAGE_SIZE,
            });
        }
        let end = start
            .checked_add(length)
            .ok_or(SvmError::RangeOverflow { start, length })?;
        let mut at = start;
        for v in self.mm.space().range(start, end) {
            if v.start > at {
                return Err(SvmError::NotMapped { addr: at });
            }
            at = v.end;
            if at >= end {
                break;
            }
        }
        if at < end {
            return Err(SvmError::NotMapped { addr: at });
        }
        self.invalidate_devices(start, end);
        match prot {
            Prot::ReadWrite => {
                self.prot.remove_range(start, end);
            }
            p => self.prot.set(start, end, p),
        }
        Ok(())
    }

    // ----- devices ------------------------------------------------------------

    /// `device`: adds a device space. Errors: `DuplicateDevice` (`EEXIST`),
    /// `BaseOutOfRange` (`EINVAL`); `BadVaBits` / `BadPageSize` /
    /// `PageAboveLimit` / `BadTlbEntries` (bad lines in a trace);
    /// `TooManyDevices` (a bad line) when the space already holds
    /// [`MAX_DEVICES`] devices and the configuration is otherwise fine.
    ///
    /// A device costs memory only for what its page table and TLB hold
    /// (both grow with the pages accessed and free what is invalidated),
    /// never for its address-space size, page size or TLB capacity.
    pub fn add_device(&mut self, cfg: DeviceConfig) -> Result<(), SvmError> {
        if !(12..=64).contains(&cfg.va_bits) {
            return Err(SvmError::BadVaBits {
                va_bits: cfg.va_bits,
            });
        }
        if !cfg.page_size.is_power_of_two()
            || !(PAGE_SIZE..=MAX_DEVICE_PAGE_SIZE).contains(&cfg.page_size)
        {
            return Err(SvmError::BadPageSize {
                page_size: cfg.page_size,
            });
        }
        if u128::from(cfg.page_size) > 1u128 << cfg.va_bits {
            return Err(SvmError::PageAboveLimit {
                page_size: cfg.page_size,
                va_bits: cfg.va_bits,
            });
        }
        if !(1..=MAX_TLB_ENTRIES).contains(&cfg.tlb_entries) {
            return Err(SvmError::BadTlbEntries {
                tlb_entries: cfg.tlb_entries,
            });
        }
        if self.names.contains_key(&cfg.name) {
            return Err(SvmError::DuplicateDevice { name: cfg.name });
        }
        let limit = 1u128 << cfg.va_bits;
        if u128::from(cfg.base) >= limit {
            return Err(SvmError::BaseOutOfRange {
                base: cfg.base,
                va_bits: cfg.va_bits,
            });
        }
        if self.devices.len() >= MAX_DEVICES {
            return Err(SvmError::TooManyDevices { max: MAX_DEVICES });
        }
        self.use_svm();
        self.names.insert(cfg.name.clone(), self.devices.len());
        self.devices.push(Device {
            mmu: Mirror::new(cfg.va_bits, cfg.page_size, cfg.tlb_entries),
            cfg,
            limit,
            regions: IntervalMap::new(),
            held: IntervalMap::new(),
        });
        Ok(())
    }

    /// `device_map`: a device-only region `[start, end)` of `device`, with a
    /// CPU reservation over its part below `task_size`. Errors:
    /// `EmptyRange` / `Unaligned` (to the device page size) /
    /// `BeyondDeviceLimit` (`EINVAL`); `Overlap` with a CPU VMA or anything on
    /// the device (`EEXIST`); `UnknownDevice` (a bad line).
    pub fn device_map(
        &mut self,
        device: &str,
        start: u64,
        end: u64,
        cpu: CpuPolicy,
    ) -> Result<(), SvmError> {
        let d = self.dev_index(device)?;
        let dev = &self.devices[d];
        let ps = dev.cfg.page_size;
        if !start.is_multiple_of(ps) || !end.is_multiple_of(ps) {
            return Err(SvmError::Unaligned {
                start,
                end,
                page_size: ps,
            });
        }
        if end <= start {
            return Err(SvmError::EmptyRange { start, end });
        }
        if u128::from(end) > dev.limit {
            return Err(SvmError::BeyondDeviceLimit {
                start,
                end,
                va_bits: dev.cfg.va_bits,
            });
        }
        // The SVM pieces the device holds are CPU VMAs: the CPU map finds
        // them first.
        let clash = self
            .mm
            .space()
            .first_overlap(start, end)
            .map(|v| (v.start, v.end))
            .or_else(|| {
                dev.regions
                    .first_overlap(start, end)
                    .map(|(s, e, _)| (s, e))
            });
        if let Some(existing) = clash {
            return Err(SvmError::Overlap {
                start,
                end,
                existing,
            });
        }
        // The combined index now differs from the CPU map.
        self.activate_covers();
        self.devices[d].regions.insert(start, end, cpu);
        self.all_cover.add(start, end);
        let ts = self.mm.config().task_size;
        if start < ts {
            let e = end.min(ts);
            self.cpu_insert(start, e, VmaFlags::NONE)?;
            self.reserved.insert(start, e, cpu);
        }
        Ok(())
    }

    // ----- SVM ranges -----------------------------------------------------------

    /// `svm_alloc`: the highest (`topdown`) or lowest aligned range free on
    /// the CPU (guard gaps included) and on every listed device, inside the
    /// common window, mapped read-write on all of them (the exact rule of
    /// `docs/trace-format.md`). `align` `None` means the page size; duplicate names count once.
    /// Errors: `ZeroLength` (`EINVAL`); `NoSpace` / `NoCommonWindow` /
    /// `LengthOverflow` (`ENOMEM`); `BadAlignment` / `UnknownDevice` (bad
    /// lines in a trace).
    pub fn svm_alloc<S: AsRef<str>>(
        &mut self,
        length: u64,
        align: Option<u64>,
        devices: &[S],
        topdown: bool,
    ) -> Result<u64, SvmError> {
        self.svm_alloc_view(length, align, devices, topdown)
            .map(|v| v.start)
    }

    /// [`Self::svm_alloc`] that answers with the new range as
    /// [`Self::alloc_at`] would, without looking it up again.
    pub(crate) fn svm_alloc_view<S: AsRef<str>>(
        &mut self,
        length: u64,
        align: Option<u64>,
        devices: &[S],
        topdown: bool,
    ) -> Result<AllocView<'_>, SvmError> {
        let align = align.unwrap_or(1);
        if !align.is_power_of_two() {
            return Err(SvmError::BadAlignment { align });
        }
        let devs = self.device_set(devices)?;
        if length == 0 {
            return Err(SvmError::ZeroLength);
        }
        self.use_svm();
        let cfg = *self.mm.config();
        let page = devs
            .iter()
            .map(|&d| self.devices[d].cfg.page_size)
            .fold(PAGE_SIZE, u64::max);
        let len = round_up(length, page).ok_or(SvmError::LengthOverflow { length, page })?;
        let align = align.max(page);
        let low = devs
            .iter()
            .map(|&d| self.devices[d].cfg.base)
            .fold(cfg.mmap_min_addr, u64::max);
        let high = devs
            .iter()
            .map(|&d| self.devices[d].limit)
            .fold(u128::from(cfg.task_size), u128::min) as u64;
        if high <= low || high - low < len {
            return Err(SvmError::NoCommonWindow {
                low,
                high,
                length: len,
            });
        }
        let q = Query {
            len,
            align,
            topdown,
        };
        // A window reserved for a superset of these devices is searched
        // first, its pieces counting as free.
        let window = if devs.is_empty() {
            None
        } else {
            self.windows
                .iter()
                .find(|(_, w)| devs.iter().all(|d| w.devices.binary_search(d).is_ok()))
                .map(|(&id, w)| (id, w.start, w.end))
        };
        let mut carved_from = None;
        let mut addr = None;
        // Whether the in-window cover already holds the range.
        let mut counted = false;
        if let (Some((wid, ws, we)), true) = (window, self.svm_cover.is_some()) {
            let (lo, hi) = (low.max(ws), high.min(we));
            // With one window and no region on these devices nothing can
            // make a range that is free in the cover busy: search and insert
            // into the cover in one descent.
            let plain =
                self.windows.len() == 1 && devs.iter().all(|&d| self.devices[d].regions.is_empty());
            let (r, iters) = match &mut self.svm_cover {
                Some(cover) if plain => {
                    if hi <= lo || hi - lo < q.len {
                        (Err(SvmError::NoSpace { length: len, align }), 1)
                    } else {
                        let r = cover
                            .allocate(&fit_request(lo, hi, q), &SearchParams::default())
                            .map_err(|e| fit_error(e, q));
                        counted = r.is_ok();
                        (r, 1)
                    }
                }
                _ => {
                    let cover = self.svm_cover.as_ref().expect("checked above");
                    self.fit_verified(cover.index(), &devs, lo, hi, q, Some(wid))
                }
            };
            self.stats.window_searches += 1;
            self.stats.last_iterations = iters;
            if let Ok(a) = r {
                addr = Some(a);
                carved_from = Some(wid);
            }
        }
        // Without covers the CPU map is the combined index: search it and
        // insert into the hole found in one descent.
        let mut inserted = false;
        let addr = match addr {
            Some(a) => a,
            None if devs.len() == self.devices.len() => {
                self.stats.combined_searches += 1;
                self.stats.last_iterations = 1;
                if self.covers_live {
                    fit_one(self.all_cover.index(), low, high, q)?
                } else {
                    inserted = true;
                    self.mm
                        .space_mut()
                        .allocate(
                            &fit_request(low, high, q),
                            &SearchParams::default(),
                            VmaFlags::NONE,
                        )
                        .map_err(|e| fit_error(e, q))?
                }
            }
            None => {
                self.stats.subset_searches += 1;
                let map = if self.covers_live {
                    self.cpu_cover.index()
                } else {
                    self.mm.space()
                };
                let (r, iters) = self.fit_verified(map, &devs, low, high, q, None);
                self.stats.subset_iterations += iters;
                self.stats.last_iterations = iters;
                r?
            }
        };
        let end = addr + len;
        debug_assert!(addr >= low && end <= high && addr % align == 0);
        let id = self.next_id;
        self.next_id += 1;
        if carved_from.is_some() {
            self.carve_insert(addr, end, counted)?;
        } else if !inserted {
            self.cpu_insert(addr, end, VmaFlags::NONE)?;
        }
        self.svm.insert(addr, end, id);
        for &d in devs.iter() {
            let dev = &mut self.devices[d];
            debug_assert!(
                dev.regions.first_overlap(addr, end).is_none(),
                "placed over a device region"
            );
            if dev.cfg.populate == Populate::AtAlloc {
                let perm = Perm {
                    frame: frame_of(id),
                    read: true,
                    write: true,
                };
                dev.mmu.prefault(addr, end, perm, PREFAULT_MAX_PAGES);
            }
        }
        self.allocs.insert(
            id,
            Alloc {
                start: addr,
                end,
                devices: devs,
                window: carved_from,
            },
        );
        Ok(AllocView {
            id,
            start: addr,
            end,
            // `device_set` left the range's set there.
            devices: &self.last_devs[..],
            window: carved_from
                .and_then(|w| self.windows.get(&w))
                .map(|w| (w.start, w.end)),
        })
    }

    /// `svm_free`: frees the SVM range that starts at `addr` on the CPU and
    /// on every device; every device is invalidated before this returns.
    /// Parts a CPU `unmap` already removed are skipped. If two recorded
    /// ranges start at `addr` (the first lost its first page to a CPU unmap
    /// and a later one was placed there), the later goes first. Errors:
    /// `NotAnSvmRange` (`EINVAL`; nothing changes).
    pub fn svm_free(&mut self, addr: u64) -> Result<(), SvmError> {
        // The range is the one whose first piece starts at `addr` (the
        // latest to start there, see `by_start`), else the latest in
        // `by_start`. Each map is looked up once, and the range leaves
        // `allocs` first (nothing below reads it for the range).
        let piece = self.svm.entry_at(addr);
        let held = piece.as_ref().and_then(|o| {
            let (pe, id) = *o.get();
            match self.allocs.entry(id) {
                Entry::Occupied(a) if a.get().start == addr => Some((id, pe, a.remove())),
                _ => None,
            }
        });
        let Some((id, pe, a)) = held else {
            return self.free_lost(addr);
        };
        let win = a
            .window
            .and_then(|w| self.windows.get(&w).map(|x| (w, x.start, x.end)));
        let whole = pe == a.end;
        if let (true, None, Some(o)) = (whole, win, piece) {
            // The common case: one piece, the whole range, outside any
            // window; it leaves the piece map here.
            o.remove();
            self.cpu_remove_with(a.start, a.end, false);
        } else if whole {
            // One piece, the whole range, carved from a window.
            self.free_piece(a.start, a.end, win);
        } else {
            self.free_pieces(id, a.start, a.end, win);
        }
        Ok(())
    }

    /// The first step of [`Self::svm_free`] of `addr` when the CPU still
    /// maps the range that starts there as one piece, the whole of it:
    /// the range leaves the records of live ranges (one lookup of each
    /// map) and is handed over. `None`, with nothing changed, if no range
    /// starts at `addr` or the CPU maps it in pieces.
    pub(crate) fn take_whole(&mut self, addr: u64) -> Option<Taken> {
        let piece = self.svm.entry_at(addr)?;
        let (pe, id) = *piece.get();
        let alloc = match self.allocs.entry(id) {
            Entry::Occupied(a) if a.get().start == addr && a.get().end == pe => a.remove(),
            _ => return None,
        };
        let win = alloc
            .window
            .and_then(|w| self.windows.get(&w).map(|x| (w, x.start, x.end)));
        if win.is_none() {
            piece.remove();
        }
        Some(Taken { id, alloc, win })
    }

    /// The rest of [`Self::svm_free`] of a range [`Self::take_whole`] took:
    /// it becomes free on the CPU and on every device.
    pub(crate) fn free_taken(&mut self, t: Taken) {
        let (start, end) = t.bounds();
        match t.win {
            // Its piece left the piece map with the take.
            None => self.cpu_remove_with(start, end, false),
            win => self.free_piece(start, end, win),
        }
    }

    /// Puts a range [`Self::take_whole`] took back as it was: it stays
    /// allocated.
    pub(crate) fn restore_taken(&mut self, t: Taken) {
        let (start, end) = t.bounds();
        if t.win.is_none() {
            self.svm.insert(start, end, t.id);
        }
        self.allocs.insert(t.id, t.alloc);
    }

    /// [`Self::svm_free`] of a range that lost its first piece: the latest
    /// in `by_start` at `addr`.
    fn free_lost(&mut self, addr: u64) -> Result<(), SvmError> {
        let id = self
            .by_start
            .remove(&addr)
            .ok_or(SvmError::NotAnSvmRange { addr })?;
        if let Some(older) = self.by_start_older.get_mut(&addr) {
            let prev = older.pop().expect("no empty lists are kept");
            if older.is_empty() {
                self.by_start_older.remove(&addr);
            }
            self.by_start.insert(addr, prev);
        }
        let Alloc {
            start, end, window, ..
        } = self
            .allocs
            .remove(&id)
            .expect("every indexed id is allocated");
        let win = window.and_then(|w| self.windows.get(&w).map(|x| (w, x.start, x.end)));
        self.free_pieces(id, start, end, win);
        Ok(())
    }

    /// Frees every piece of range `id`, `[start, end)`, that the CPU still
    /// maps, in order, each removed before the next is sought; the range
    /// has left `allocs`.
    fn free_pieces(&mut self, id: u64, start: u64, end: u64, win: Option<(u64, u64, u64)>) {
        let mut at = start;
        loop {
            let next = self
                .svm
                .range(self.mm.space(), at, end)
                .find(|&(_, _, &pid)| pid == id)
                .map(|(s, e, _)| (s, e));
            let Some((s, e)) = next else {
                break;
            };
            at = e;
            self.free_piece(s, e, win);
        }
    }

    /// Frees the SVM piece `[s, e)` on the CPU and every device; a piece
    /// of a range carved from the live window `win` (id, start, end) goes
    /// back into it as far as it lies inside.
    fn free_piece(&mut self, s: u64, e: u64, win: Option<(u64, u64, u64)>) {
        match win {
            Some((wid, ws, we)) => {
                if !(ws <= s && e <= we && self.svm_to_piece(s, e, wid)) {
                    self.cpu_remove(s, e);
                    let (s, e) = (s.max(ws), e.min(we));
                    if s < e {
                        self.insert_piece(s, e, wid);
                    }
                }
            }
            None => self.cpu_remove(s, e),
        }
    }

    // ----- device accesses ----------------------------------------------------

    /// `device_access`: the device touches the byte at `addr`, through its
    /// TLB, its page table and its fault handler. The answer is always
    /// [`Self::access_rule`]'s. Errors: `UnknownDevice` (a bad line).
    pub fn device_access(
        &self,
        device: &str,
        addr: u64,
        write: bool,
    ) -> Result<Result<(), Fault>, SvmError> {
        let d = self.dev_index(device)?;
        let r = self.devices[d]
            .mmu
            .access(addr, write, &mut |a| self.snapshot(d, a));
        Ok(r.map(|_| ()))
    }

    /// What the trace format says device `device` sees at `addr`, computed
    /// directly from the rules (the oracle of the mirror model).
    pub fn access_rule(
        &self,
        device: &str,
        addr: u64,
        write: bool,
    ) -> Result<Result<(), Fault>, SvmError> {
        let d = self.dev_index(device)?;
        let dev = &self.devices[d];
        if u128::from(addr) >= dev.limit {
            return Ok(Err(Fault::OutOfRange));
        }
        if dev.regions.get(addr).is_some() {
            return Ok(Ok(()));
        }
        let in_svm = self
            .svm
            .get(self.mm.space(), addr)
            .is_some_and(|(_, _, id)| self.allocs[id].devices.contains(&d));
        let in_cpu = dev.cfg.mirror == MirrorMode::System
            && self.mm.space().vma_at(addr).is_some()
            && self.reserved.get(addr).is_none()
            && self.win_pieces.get(self.mm.space(), addr).is_none();
        if !(in_svm || in_cpu) {
            return Ok(Err(Fault::Unmapped));
        }
        Ok(match self.prot_at(addr) {
            Prot::ReadWrite => Ok(()),
            Prot::Read if !write => Ok(()),
            _ => Err(Fault::Protection),
        })
    }

    /// The fault handler's view of the CPU side for device `d` at `addr`.
    fn snapshot(&self, d: usize, addr: u64) -> Snapshot {
        let dev = &self.devices[d];
        let ps = dev.cfg.page_size;
        let pg = addr & !(ps - 1);
        let pg_end = pg.checked_add(ps);
        let covers = |s: u64, e: u64| pg_end.is_some_and(|pe| s <= pg && e >= pe);
        if let Some((s, e, _)) = dev.regions.get(addr) {
            let p = Perm {
                frame: FRAME_REGION,
                read: true,
                write: true,
            };
            return Snapshot {
                byte: Some(p),
                page: covers(s, e).then_some(p),
            };
        }
        let piece = self.svm.get(self.mm.space(), addr);
        let src = match piece {
            Some((s, e, id)) if self.allocs[id].devices.contains(&d) => Some((s, e, frame_of(*id))),
            _ if dev.cfg.mirror == MirrorMode::System
                && self.reserved.get(addr).is_none()
                && self.win_pieces.get(self.mm.space(), addr).is_none() =>
            {
                self.mm.space().vma_at(addr).map(|v| {
                    let frame = piece.map_or(FRAME_CPU, |(_, _, id)| frame_of(*id));
                    (v.start, v.end, frame)
                })
            }
            _ => None,
        };
        let Some((s, e, frame)) = src else {
            return Snapshot {
                byte: None,
                page: None,
            };
        };
        let prot = self.prot_at(addr);
        let p = Perm {
            frame,
            read: prot != Prot::None,
            write: prot == Prot::ReadWrite,
        };
        let uniform = covers(s, e)
            && pg_end.is_some_and(|pe| match self.prot.first_overlap(pg, pe) {
                None => true,
                Some((ps, pe2, _)) => ps <= pg && pe2 >= pe,
            });
        Snapshot {
            byte: Some(p),
            page: uniform.then_some(p),
        }
    }

    // ----- limits ---------------------------------------------------------------

    /// Every CPU VMA that reaches above `device`'s limit `2^va_bits`: memory
    /// the device cannot address.
    pub fn vmas_above_limit(&self, device: &str) -> Result<Vec<Vma>, SvmError> {
        let dev = &self.devices[self.dev_index(device)?];
        let lim = dev.limit();
        if dev.limit > u128::from(u64::MAX) {
            return Ok(Vec::new());
        }
        Ok(self
            .mm
            .space()
            .range(lim.saturating_sub(1), u64::MAX)
            .filter(|v| v.end > lim)
            .collect())
    }

    /// Checks that CPU memory `[start, end)` can be handed to `device`:
    /// `AboveDeviceLimit` names the range and the limit if it cannot.
    pub fn check_addressable(&self, device: &str, start: u64, end: u64) -> Result<(), SvmError> {
        let dev = &self.devices[self.dev_index(device)?];
        if u128::from(end) > dev.limit {
            return Err(SvmError::AboveDeviceLimit {
                device: device.to_owned(),
                start,
                end,
                limit: dev.limit(),
            });
        }
        Ok(())
    }

    // ----- invariants -----------------------------------------------------------

    /// Recomputes every derived structure from scratch and checks it; checks
    /// that every SVM piece is one CPU VMA, lies inside every listed
    /// device's window and is held by exactly those devices, and that no
    /// device PTE or TLB entry disagrees with the CPU side. Panics on a
    /// violation. For tests.
    pub fn check_invariants(&self) {
        let cpu = self.mm.space();
        cpu.check_invariants();
        self.cpu_cover.check_invariants();
        self.all_cover.check_invariants();
        self.prot.check_invariants();
        self.reserved.check_invariants();
        self.svm.check_invariants(cpu);
        // The covers from scratch (empty until they are live).
        if self.covers_live {
            let mut contrib: Vec<(u64, u64)> = cpu.iter().map(|v| self.contribution(&v)).collect();
            assert_eq!(
                union_of(contrib.clone()),
                self.cpu_cover.union(),
                "cpu cover out of step"
            );
            for d in &self.devices {
                contrib.extend(d.regions.iter().map(|(s, e, _)| (s, e)));
            }
            assert_eq!(
                union_of(contrib),
                self.all_cover.union(),
                "combined index out of step"
            );
        } else {
            // The CPU map alone answers the searches: no guard gap once SVM
            // is used, no device-only region, no window.
            if self.svm_used {
                assert!(!self.growsdown_seen, "grows-down VMA without live covers");
                assert!(
                    cpu.iter().all(|v| !v.flags.contains(VmaFlags::GROWSDOWN)),
                    "grows-down VMA without live covers"
                );
            } else {
                assert!(self.devices.is_empty(), "devices before SVM use");
                assert!(self.allocs.is_empty(), "SVM ranges before SVM use");
            }
            assert!(
                self.devices.iter().all(|d| d.regions.is_empty()),
                "device-only regions without live covers"
            );
            assert!(self.windows.is_empty(), "window without live covers");
            assert_eq!(self.cpu_cover.segments(), 0, "cover built too early");
            assert_eq!(self.all_cover.segments(), 0, "cover built too early");
        }
        // Protections and reservations lie on CPU VMAs.
        for (s, e, p) in self.prot.iter() {
            assert_ne!(*p, Prot::ReadWrite, "rw stored in the protection map");
            let mut at = s;
            for v in cpu.range(s, e) {
                assert!(v.start <= at, "protection over a hole at {at:#x}");
                at = v.end;
            }
            assert!(at >= e, "protection over a hole at {at:#x}");
        }
        for (s, e, _) in self.reserved.iter() {
            let v = cpu.vma_at(s).expect("reservation without a CPU VMA");
            assert_eq!((v.start, v.end), (s, e), "reservation is not one VMA");
        }
        // Window pieces: one CPU VMA each, inside their live window, never a
        // device reservation or an SVM piece.
        self.win_pieces.check_invariants(cpu);
        for (s, e, id) in self.win_pieces.iter(cpu) {
            let v = cpu.vma_at(s).expect("window piece without a CPU VMA");
            assert_eq!((v.start, v.end), (s, e), "window piece is not one VMA");
            assert_eq!(v.flags, VmaFlags::NONE, "window piece with flags");
            let w = self.windows.get(id).expect("piece of a released window");
            assert!(w.start <= s && e <= w.end, "piece outside its window");
            assert!(self.reserved.first_overlap(s, e).is_none());
            assert!(self.svm.first_overlap(cpu, s, e).is_none());
        }
        if let Some(c) = &self.svm_cover {
            c.check_invariants();
            let contrib: Vec<(u64, u64)> = cpu
                .iter()
                .filter(|v| !self.is_piece(v))
                .map(|v| self.contribution(&v))
                .collect();
            assert_eq!(union_of(contrib), c.union(), "svm cover out of step");
        } else {
            assert!(self.win_pieces.is_empty(), "pieces without svm cover");
        }
        for a in self.allocs.values() {
            if let Some(w) = a.window.and_then(|w| self.windows.get(&w)) {
                assert!(
                    w.start <= a.start && a.end <= w.end,
                    "carved outside its window"
                );
            }
        }
        // SVM pieces.
        for (s, e, id) in self.svm.iter(cpu) {
            let a = self.allocs.get(id).expect("piece of a freed range");
            assert!(a.start <= s && e <= a.end, "piece outside its range");
            let v = cpu.vma_at(s).expect("SVM piece not on the CPU");
            assert_eq!((v.start, v.end), (s, e), "SVM piece is not one CPU VMA");
            for &d in a.devices.iter() {
                let dev = &self.devices[d];
                assert!(s >= dev.cfg.base, "piece below base of {}", dev.cfg.name);
                assert!(
                    u128::from(e) <= dev.limit,
                    "piece above limit of {}",
                    dev.cfg.name
                );
                assert!(
                    dev.regions.first_overlap(s, e).is_none(),
                    "piece over a device-only region of {}",
                    dev.cfg.name
                );
            }
        }
        // Every allocation is found by its start exactly once: through its
        // piece there while it has one (then it is the latest to start
        // there), else in `by_start` (the latest there) or below it in
        // `by_start_older`, ids ascending; nothing else is listed.
        let holder = |start: u64| {
            self.svm
                .get_exact(start)
                .map(|(_, &id)| id)
                .filter(|id| self.allocs.get(id).is_some_and(|a| a.start == start))
        };
        let mut indexed = 0;
        for (&start, id) in &self.by_start {
            let older = self.by_start_older.get(&start).map_or(&[][..], |v| &v[..]);
            assert!(
                older.windows(2).all(|w| w[0] < w[1]) && older.last().is_none_or(|o| o < id),
                "allocations at {start:#x} out of order"
            );
            let h = holder(start);
            assert!(
                h.is_none_or(|h| h > *id),
                "allocation at {start:#x} newer than the one that holds it"
            );
            for i in older.iter().chain([id]) {
                assert_eq!(self.allocs.get(i).map(|a| a.start), Some(start));
                assert_ne!(h, Some(*i), "allocation at {start:#x} listed and held");
                indexed += 1;
            }
        }
        for (start, v) in &self.by_start_older {
            assert!(!v.is_empty(), "empty list of older allocations");
            assert!(self.by_start.contains_key(start), "older without a latest");
        }
        let held = self
            .allocs
            .iter()
            .filter(|&(&id, a)| holder(a.start) == Some(id))
            .count();
        assert_eq!(indexed + held, self.allocs.len(), "allocation not indexed");
        for (i, d) in self.devices.iter().enumerate() {
            d.regions.check_invariants();
            // No stale translation.
            d.mmu.check_tlb();
            let shift = d.cfg.page_size.trailing_zeros();
            for (vpn, frame, read, write, _) in d.mmu.mappings() {
                let addr = vpn << shift;
                let snap = self.snapshot(i, addr);
                let want = snap.page.filter(|p| p.read);
                assert_eq!(
                    want,
                    Some(Perm { frame, read, write }),
                    "stale translation on {} at {addr:#x}",
                    d.cfg.name
                );
            }
        }
    }

    // ----- device ranges held by other means; devices gone -----------------

    /// Marks `[start, end)` as held on `device` by something svmap does not
    /// own, such as the device process's own mappings (its binary,
    /// libraries, stack, heap): no SVM range for the device is placed
    /// there and no device-only region may overlap it, while the CPU side
    /// is left alone (the CPU may map anything there). It is kept as a
    /// device-only region without a CPU side ([`Device::regions`] lists it,
    /// with policy [`CpuPolicy::Fault`]). The range is rounded out to the
    /// device page size and clipped to the device's limit; parts the
    /// device already holds (regions, its SVM pieces) are skipped. Returns
    /// the bytes added. Errors: `UnknownDevice`; `EmptyRange` (`end <=
    /// start`).
    pub fn device_hold(&mut self, device: &str, start: u64, end: u64) -> Result<u64, SvmError> {
        let d = self.dev_index(device)?;
        if end <= start {
            return Err(SvmError::EmptyRange { start, end });
        }
        let dev = &self.devices[d];
        let ps = dev.cfg.page_size;
        let lim = dev.limit.min(u128::from(u64::MAX)) as u64 & !(ps - 1);
        let s = start & !(ps - 1);
        let e = end.checked_add(ps - 1).map_or(!(ps - 1), |x| x & !(ps - 1));
        let e = e.min(lim);
        if s >= e {
            return Ok(0);
        }
        let mut busy: Vec<(u64, u64)> = dev.regions.range(s, e).map(|(a, b, _)| (a, b)).collect();
        busy.extend(
            self.svm
                .range(self.mm.space(), s, e)
                .filter(|(_, _, id)| self.allocs[*id].devices.contains(&d))
                .map(|(a, b, _)| (a, b)),
        );
        busy.sort_unstable();
        let mut free = Vec::new();
        let mut at = s;
        for (a, b) in busy {
            if a > at {
                free.push((at, a.min(e)));
            }
            at = at.max(b);
        }
        if at < e {
            free.push((at, e));
        }
        self.activate_covers();
        let mut added = 0;
        for (a, b) in free {
            self.devices[d].regions.insert(a, b, CpuPolicy::Fault);
            self.devices[d].held.insert(a, b, ());
            self.all_cover.add(a, b);
            added += b - a;
        }
        Ok(added)
    }

    /// Removes `device` from the space: its device-only regions and its
    /// MMU go, it leaves every SVM range and window it belonged to (they
    /// stay allocated and reserved for the other devices; a range it held
    /// alone stays an SVM range of the CPU with no device), and later
    /// devices move down one index. The CPU side of its device-only
    /// regions stays reserved with its policy (nothing is placed there).
    /// Errors: `UnknownDevice`.
    pub fn remove_device(&mut self, device: &str) -> Result<(), SvmError> {
        let d = self.dev_index(device)?;
        let dev = self.devices.remove(d);
        for (s, e, _) in dev.regions.iter() {
            self.all_cover.remove(s, e);
        }
        self.names.remove(device);
        let shift = |v: &mut Vec<usize>| {
            v.retain(|&x| x != d);
            for x in v.iter_mut() {
                if *x > d {
                    *x -= 1;
                }
            }
        };
        for a in self.allocs.values_mut() {
            let mut v = a.devices.to_vec();
            shift(&mut v);
            a.devices = Arc::from(v);
        }
        self.last_devs = Arc::from([]);
        for w in self.windows.values_mut() {
            shift(&mut w.devices);
        }
        for x in self.names.values_mut() {
            if *x > d {
                *x -= 1;
            }
        }
        Ok(())
    }
}

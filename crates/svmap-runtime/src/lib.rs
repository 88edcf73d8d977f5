//! # svmap-runtime
//!
//! The SVM engine ([`svmap_svm::Engine`]) on the real memory of this
//! process. [`LinuxCpu`] is a [`CpuBackend`] that carries out the engine's
//! decisions with system calls:
//!
//! | engine call | on this process |
//! | --- | --- |
//! | `reserve` (window piece) | `MAP_FIXED_NOREPLACE` reservation (`PROT_NONE`, `MAP_NORESERVE`), made a [`SparseHeap`]: one memfd mapped once over it |
//! | `map` inside a window piece | [`SparseHeap::claim`]: no system call (guarded mode: one `mprotect`) |
//! | `map` elsewhere | a fresh `MAP_FIXED_NOREPLACE` reservation of exactly the range with its own sparse memfd (fails with `EEXIST` rather than replace anything) |
//! | `unmap` back to a window | [`SparseHeap::release`]: the range joins the heap's punch batch, punched (`fallocate(PUNCH_HOLE)`) once the batch exceeds its bound or before the range is reused (guarded: + `mprotect(PROT_NONE)`) |
//! | `unmap` to the system | the range's own mapping is unmapped |
//! | `protect` | one `mprotect` |
//! | `map_device_only`, fault | an svmap-owned `PROT_NONE` reservation: a CPU touch raises `SIGSEGV` |
//! | `map_device_only`, dummy page | an svmap-owned private anonymous `PROT_READ` mapping: reads see the shared zero page (no memory), writes raise `SIGSEGV` |
//! | `release` (window piece) | the piece's mapping is unmapped when it is the whole piece; a part is punched and stays reserved |
//! | `forget` | whatever the range touches is given up without unmapping (never acts on it again) |
//!
//! The backend acts only on mappings it created: every new mapping is
//! `MAP_FIXED_NOREPLACE` and every `MAP_FIXED` or `mprotect` lies inside one
//! of its own. Its model of the rest of the CPU space is the engine's: seed
//! it from `/proc/self/maps` with [`seed_from_self`] before deciding
//! anything; a mapping made since then makes a `map` fail with `EEXIST`
//! ([`BackendError::NotOwned`]) instead of replacing it. [`refresh_from_self`]
//! brings the model in step again outside svmap's own ranges, and
//! [`with_refresh`] (or [`svm_alloc`]) does so once when a placement fails
//! that way, then tries again.
//!
//! [`start`] does all of it at start-up, in the order that keeps the
//! devices' window clear: the engine is seeded from `/proc/self/maps`, the
//! devices are added, and the common window of every device is reserved
//! at once (`PROT_NONE`, `MAP_NORESERVE`, `MAP_FIXED_NOREPLACE`: no memory),
//! before the application can spread there. Later mappings of the
//! application land outside it, and SVM ranges are carved from it with no
//! system call and no `/proc` read.

use std::collections::BTreeMap;
use std::os::fd::BorrowedFd;

use svmap_linux::error::{Errno, Error};
use svmap_linux::reserve::Reservation;
use svmap_linux::sparse::SparseHeap;
use svmap_linux::sys::Access;
use svmap_svm::refresh::{CpuMapping, RefreshConflict, RefreshError, RefreshReport};
use svmap_svm::{
    BackendError, CpuBackend, CpuPolicy, DeviceBackend, Engine, EngineError, Prot, PtFormat,
    Release,
};

pub use svmap_linux::sparse;

mod directory;
pub mod migrate;
mod peer;

#[cfg(feature = "bench")]
pub mod bench;
#[cfg(feature = "bench")]
pub mod migrate_bench;

pub use directory::{HeapDirectory, HeapEntry};
pub use peer::PeerDevice;

/// What one owned region of the address space is.
#[derive(Debug)]
enum Kind {
    /// A window piece, a sparse heap whose buffers are SVM ranges.
    Window(SparseHeap),
    /// An SVM range outside every window piece, with its own sparse memfd.
    Svm(SparseHeap),
    /// The CPU side of a device-only region, with its policy.
    DeviceOnly(Reservation, CpuPolicy),
}

#[derive(Debug)]
struct Region {
    end: u64,
    kind: Kind,
    /// Part of it was lost by other means: never act on it again.
    lost: bool,
    /// Parts of a window piece lost by other means (a foreign `MAP_FIXED`
    /// there): never acted on again, while the rest of the piece is still
    /// used. A region with holes is left mapped when the backend drops.
    holes: Vec<(u64, u64)>,
}

impl Region {
    fn leak(self) {
        match self.kind {
            Kind::Window(h) | Kind::Svm(h) => h.leak(),
            Kind::DeviceOnly(r, _) => r.leak(),
        }
    }
}

/// The Linux CPU backend: the engine's CPU decisions on this process. See
/// the crate documentation. Dropping it unmaps every region it owns (and
/// leaves alone the ones it was told to forget).
#[derive(Debug)]
pub struct LinuxCpu {
    /// Owned regions by start address; they never overlap.
    regions: BTreeMap<u64, Region>,
    /// Ranges whose protection `protect` changed to other than read-write
    /// (start -> (end, protection)), until they are unmapped or made
    /// read-write again; they never overlap.
    protected: BTreeMap<u64, (u64, Prot)>,
    guarded: bool,
    /// The bound of every heap's punch batch.
    punch_batch: u64,
    /// The memfds of the heaps, for the device backends.
    directory: HeapDirectory,
}

fn sys(call: &'static str, e: Errno) -> BackendError {
    BackendError::Sys { call, errno: e.0 }
}

fn from_linux(e: Error, start: u64, end: u64) -> BackendError {
    match e {
        Error::Sys { call, errno, .. } if errno == Errno::EEXIST => {
            let _ = call;
            BackendError::NotOwned { start, end }
        }
        Error::Sys { call, errno, .. } => sys(call, errno),
        other => BackendError::Other(other.to_string()),
    }
}

fn access(p: Prot) -> Access {
    match p {
        Prot::None => Access::None,
        Prot::Read => Access::Read,
        Prot::ReadWrite => Access::ReadWrite,
    }
}

impl Default for LinuxCpu {
    /// [`LinuxCpu::new`] unguarded.
    fn default() -> LinuxCpu {
        LinuxCpu::new(false)
    }
}

impl LinuxCpu {
    /// A backend that owns nothing yet. With `guarded`, free pages of
    /// window heaps are `PROT_NONE` (a use after free faults); without,
    /// they read zeros and an allocation makes no system call.
    pub fn new(guarded: bool) -> LinuxCpu {
        LinuxCpu {
            regions: BTreeMap::new(),
            protected: BTreeMap::new(),
            guarded,
            punch_batch: sparse::DEFAULT_PUNCH_BATCH,
            directory: HeapDirectory::default(),
        }
    }

    /// Sets the bound of the punch batch of every heap, now and later
    /// ([`SparseHeap::set_punch_batch`]; 0 punches every free at once).
    pub fn set_punch_batch(&mut self, bytes: u64) -> Result<(), BackendError> {
        self.punch_batch = bytes;
        for (&s, r) in &mut self.regions {
            if let Kind::Window(h) | Kind::Svm(h) = &mut r.kind {
                h.set_punch_batch(bytes)
                    .map_err(|e| from_linux(e, s, r.end))?;
            }
        }
        Ok(())
    }

    /// Punches every heap's pending freed ranges now
    /// ([`SparseHeap::flush`]): all freed memory goes back.
    pub fn flush(&mut self) -> Result<(), BackendError> {
        for (&s, r) in &mut self.regions {
            if let Kind::Window(h) | Kind::Svm(h) = &mut r.kind {
                if !r.lost {
                    h.flush().map_err(|e| from_linux(e, s, r.end))?;
                }
            }
        }
        Ok(())
    }

    /// Freed bytes the heaps have not punched yet (each heap's at most its
    /// bound).
    pub fn pending_bytes(&self) -> u64 {
        self.regions
            .values()
            .map(|r| match &r.kind {
                Kind::Window(h) | Kind::Svm(h) => h.pending_bytes(),
                Kind::DeviceOnly(..) => 0,
            })
            .sum()
    }

    /// The directory of this backend's heaps (one memfd each), shared
    /// with device backends that map the same memory in another process
    /// ([`PeerDevice`]).
    pub fn directory(&self) -> HeapDirectory {
        self.directory.clone()
    }

    /// Records a new region (publishing a heap's memfd).
    fn add_region(&mut self, start: u64, end: u64, kind: Kind) -> Result<(), BackendError> {
        if let Kind::Window(h) | Kind::Svm(h) = &kind {
            let fd = h
                .fd()
                .try_clone_to_owned()
                .map_err(|e| sys("dup(memfd)", Errno::of(&e)))?;
            self.directory.publish(start, end, fd)?;
        }
        self.regions.insert(
            start,
            Region {
                end,
                kind,
                lost: false,
                holes: Vec::new(),
            },
        );
        Ok(())
    }

    /// Takes a region out (withdrawing its memfd).
    fn remove_region(&mut self, start: u64) -> Option<Region> {
        self.directory.withdraw(start);
        self.regions.remove(&start)
    }

    /// The region that contains all of `[start, end)`, if one does.
    fn containing(&mut self, start: u64, end: u64) -> Option<(u64, &mut Region)> {
        let (&s, r) = self.regions.range_mut(..=start).next_back()?;
        let clear = !r.holes.iter().any(|&(a, b)| a < end && start < b);
        (r.end >= end && !r.lost && clear).then_some((s, r))
    }

    /// The memfd, the offset and the length of the live SVM range that
    /// contains `addr`, for mapping it in another process at the same
    /// address.
    pub fn locate(&self, addr: u64) -> Option<(BorrowedFd<'_>, u64, u64)> {
        let (_, r) = self.regions.range(..=addr).next_back()?;
        match &r.kind {
            Kind::Window(h) | Kind::Svm(h) if addr < r.end => h.locate(addr),
            _ => None,
        }
    }

    /// System calls made so far by the heaps this backend owns now
    /// ([`SparseHeap::syscalls`]): on the hot path, the frees' punches (and
    /// the guarded mode's `mprotect`s).
    pub fn syscalls(&self) -> u64 {
        self.regions
            .values()
            .map(|r| match &r.kind {
                Kind::Window(h) | Kind::Svm(h) => h.syscalls(),
                Kind::DeviceOnly(..) => 0,
            })
            .sum()
    }

    /// Number of regions (window pieces, SVM ranges outside windows,
    /// device-only regions) this backend owns.
    pub fn regions(&self) -> usize {
        self.regions.len()
    }

    /// Forgets the protection changes inside `[start, end)` (the parts of
    /// recorded ranges outside it stay recorded); whether there were any.
    fn clear_protected(&mut self, start: u64, end: u64) -> bool {
        let hit: Vec<(u64, u64, Prot)> = self
            .protected
            .range(..end)
            .filter(|(_, &(e, _))| e > start)
            .map(|(&s, &(e, p))| (s, e, p))
            .collect();
        for &(s, e, p) in &hit {
            self.protected.remove(&s);
            if s < start {
                self.protected.insert(s, (start, p));
            }
            if e > end {
                self.protected.insert(end, (e, p));
            }
        }
        !hit.is_empty()
    }

    /// Checks that the CPU may read (or, with `write`, write) the 8 bytes
    /// at `addr` without a fault: they lie in a live SVM range this backend
    /// mapped whose protection allows it, or (reads only) in the CPU side
    /// of a dummy-page device-only region.
    fn check_access(&self, addr: u64, write: bool) -> Result<(), AccessError> {
        let refuse = |why: &'static str| Err(AccessError { addr, write, why });
        if !addr.is_multiple_of(8) {
            return refuse("the address is not 8-byte aligned");
        }
        let Some((_, r)) = self.regions.range(..=addr).next_back() else {
            return refuse("no range of this backend holds it");
        };
        if addr >= r.end || r.lost {
            return refuse("no range of this backend holds it");
        }
        match &r.kind {
            Kind::Window(h) | Kind::Svm(h) => {
                if h.locate(addr).is_none() {
                    return refuse("it is not inside a live SVM range");
                }
            }
            Kind::DeviceOnly(_, CpuPolicy::DummyPage) if !write => return Ok(()),
            Kind::DeviceOnly(_, CpuPolicy::DummyPage) => {
                return refuse("the dummy page of a device-only region is read-only")
            }
            Kind::DeviceOnly(_, CpuPolicy::Fault) => {
                return refuse("every CPU access to a fault region faults")
            }
        }
        if let Some((_, &(e, p))) = self.protected.range(..=addr).next_back() {
            if addr < e && (p == Prot::None || write) {
                return refuse("its protection forbids the access");
            }
        }
        Ok(())
    }

    /// The CPU reads the `u64` at `addr` (8-byte aligned) with a volatile
    /// load, after checking that the load cannot fault: `addr` lies in a
    /// live SVM range of this backend that is readable, or in a dummy-page
    /// device-only region (which reads zeros). Anything else is refused.
    pub fn read_u64(&self, addr: u64) -> Result<u64, AccessError> {
        cpu_access::read(self, addr)
    }

    /// The CPU writes `value` to the `u64` at `addr` (8-byte aligned) with
    /// a volatile store, after checking that it lies in a live read-write
    /// SVM range of this backend. Anything else is refused.
    pub fn write_u64(&mut self, addr: u64, value: u64) -> Result<(), AccessError> {
        cpu_access::write(self, addr, value)
    }

    fn new_reservation(start: u64, end: u64) -> Result<Reservation, BackendError> {
        Reservation::at(start, end - start).map_err(|e| from_linux(e, start, end))
    }
}

impl CpuBackend for LinuxCpu {
    fn reserve(&mut self, start: u64, end: u64) -> Result<(), BackendError> {
        let res = Self::new_reservation(start, end)?;
        let mut heap = SparseHeap::new(res, self.guarded).map_err(|e| from_linux(e, start, end))?;
        heap.set_punch_batch(self.punch_batch)
            .map_err(|e| from_linux(e, start, end))?;
        self.add_region(start, end, Kind::Window(heap))
    }

    fn release(&mut self, start: u64, end: u64) -> Result<(), BackendError> {
        let Some((s, r)) = self.containing(start, end) else {
            return Err(BackendError::NotOwned { start, end });
        };
        if s == start && r.end == end {
            self.remove_region(s);
            return Ok(());
        }
        match &mut r.kind {
            Kind::Window(h) => h
                .release(start, end - start)
                .map_err(|e| from_linux(e, start, end)),
            _ => Err(BackendError::NotOwned { start, end }),
        }
    }

    fn map(&mut self, start: u64, end: u64, _in_window: bool) -> Result<(), BackendError> {
        if let Some((_, r)) = self.containing(start, end) {
            return match &mut r.kind {
                Kind::Window(h) => h
                    .claim(start, end - start)
                    .map_err(|e| from_linux(e, start, end)),
                _ => Err(BackendError::NotOwned { start, end }),
            };
        }
        let res = Self::new_reservation(start, end)?;
        let mut heap = SparseHeap::new(res, false).map_err(|e| from_linux(e, start, end))?;
        heap.claim(start, end - start)
            .map_err(|e| from_linux(e, start, end))?;
        self.add_region(start, end, Kind::Svm(heap))
    }

    fn protect(&mut self, start: u64, end: u64, prot: Prot) -> Result<(), BackendError> {
        match self.containing(start, end) {
            Some((_, r)) => match &mut r.kind {
                Kind::Window(h) | Kind::Svm(h) => {
                    h.protect(start, end - start, access(prot))
                        .map_err(|e| from_linux(e, start, end))?;
                    self.clear_protected(start, end);
                    if prot != Prot::ReadWrite {
                        self.protected.insert(start, (end, prot));
                    }
                    Ok(())
                }
                Kind::DeviceOnly(..) => Err(BackendError::NotOwned { start, end }),
            },
            None => Err(BackendError::NotOwned { start, end }),
        }
    }

    fn unmap(&mut self, start: u64, end: u64, _to: Release) -> Result<(), BackendError> {
        let touched = self.clear_protected(start, end);
        let Some((s, r)) = self.containing(start, end) else {
            return Err(BackendError::NotOwned { start, end });
        };
        match &mut r.kind {
            Kind::Svm(_) if s == start && r.end == end => {
                self.remove_region(s);
                Ok(())
            }
            Kind::Window(h) | Kind::Svm(h) => {
                h.release(start, end - start)
                    .map_err(|e| from_linux(e, start, end))?;
                // An unguarded heap's free pages stay read-write: undo a
                // protection change there (guarded ones are PROT_NONE now).
                if touched && !h.is_guarded() {
                    h.protect(start, end - start, Access::ReadWrite)
                        .map_err(|e| from_linux(e, start, end))?;
                }
                Ok(())
            }
            Kind::DeviceOnly(..) => Err(BackendError::NotOwned { start, end }),
        }
    }

    fn map_device_only(
        &mut self,
        start: u64,
        end: u64,
        policy: CpuPolicy,
    ) -> Result<(), BackendError> {
        let mut res = Self::new_reservation(start, end)?;
        if policy == CpuPolicy::DummyPage {
            res.protect(start, end - start, Access::Read)
                .map_err(|e| sys("mprotect", e))?;
        }
        self.add_region(start, end, Kind::DeviceOnly(res, policy))
    }

    /// Unmaps the fault or dummy-page mapping of the region (this backend
    /// sets every device-only region up as its own reservation, never
    /// inside a window piece, so the range goes back to the system).
    fn release_region(&mut self, start: u64, end: u64) -> Result<(), BackendError> {
        match self.regions.get(&start) {
            Some(r) if r.end == end && !r.lost && matches!(r.kind, Kind::DeviceOnly(..)) => {
                // Dropping the reservation unmaps it.
                drop(self.remove_region(start));
                Ok(())
            }
            _ => Err(BackendError::NotOwned { start, end }),
        }
    }

    fn forget(&mut self, start: u64, end: u64) {
        let hit: Vec<u64> = self
            .regions
            .range(..end)
            .filter(|(&s, r)| s < end && start < r.end)
            .map(|(&s, _)| s)
            .collect();
        for s in hit {
            let whole = {
                let r = &self.regions[&s];
                start <= s && r.end <= end
            };
            if whole {
                if let Some(r) = self.remove_region(s) {
                    r.leak();
                }
            } else if let Some(r) = self.regions.get_mut(&s) {
                if matches!(r.kind, Kind::Window(_)) {
                    // The rest of the window piece stays usable.
                    r.holes.push((start.max(s), end.min(r.end)));
                } else {
                    r.lost = true;
                    self.directory.withdraw(s);
                }
            }
        }
    }
}

impl Drop for LinuxCpu {
    fn drop(&mut self) {
        for (s, r) in std::mem::take(&mut self.regions) {
            self.directory.withdraw(s);
            if r.lost || !r.holes.is_empty() {
                r.leak();
            }
        }
    }
}

/// Tells the engine's CPU space about every mapping of this process now
/// (`/proc/self/smaps`), so that its decisions land in free space.
/// Mappings above the engine's `task_size` are left out.
pub fn seed_from_self<C: CpuBackend, D: DeviceBackend, F: PtFormat>(
    engine: &mut Engine<C, D, F>,
) -> Result<usize, SeedError> {
    let view = svmap_linux::maps::read_view(svmap_linux::maps::Target::SelfProcess)
        .map_err(SeedError::Maps)?;
    let ts = engine.mm().config().task_size;
    let mut n = 0;
    for v in view.map.iter() {
        if v.end > ts {
            continue;
        }
        engine
            .cpu_map(
                v.start,
                v.end,
                v.flags.contains(svmap_core::VmaFlags::GROWSDOWN),
            )
            .map_err(SeedError::Engine)?;
        n += 1;
    }
    Ok(n)
}

/// Brings the engine's CPU space in line with this process's mappings now
/// (`/proc/self/maps`), outside the ranges svmap owns
/// ([`Engine::refresh_cpu`]): mappings made since the engine was seeded
/// are entered, vanished ones removed; svmap's windows, SVM ranges and
/// device-only regions are never changed, and conflicts with them are
/// listed in the report.
///
/// One conflict is acted on: a foreign mapping that reaches into a window
/// piece (a `MAP_FIXED` over or into svmap's window made behind its
/// back). The part of the piece it covers is taken out of the window: the
/// CPU backend forgets it ([`CpuBackend::forget`], so it never changes the
/// protection of that mapping) and the space holds it as a foreign
/// mapping, so no SVM range is ever placed there. The conflict stays in
/// the report.
pub fn refresh_from_self<C: CpuBackend, D: DeviceBackend, F: PtFormat>(
    engine: &mut Engine<C, D, F>,
) -> Result<RefreshReport, SeedError> {
    let report = refresh_list(engine)?;
    hold_out_of_windows(engine, &report).map_err(SeedError::Engine)?;
    Ok(report)
}

/// The window pieces that foreign mappings of `report` reach into leave
/// their windows and are held as foreign mappings (see
/// [`refresh_from_self`]).
fn hold_out_of_windows<C: CpuBackend, D: DeviceBackend, F: PtFormat>(
    engine: &mut Engine<C, D, F>,
    report: &RefreshReport,
) -> Result<(), EngineError> {
    let mut parts: Vec<(u64, u64)> = Vec::new();
    for c in &report.conflicts {
        let &RefreshConflict::Overlaps {
            start,
            end,
            owned_start,
            owned_end,
        } = c
        else {
            continue;
        };
        let (s, e) = (start.max(owned_start), end.min(owned_end));
        for w in engine.windows() {
            for &(ps, pe) in &w.reserved {
                let (a, b) = (ps.max(s), pe.min(e));
                if a < b {
                    parts.push((a, b));
                }
            }
        }
    }
    for (a, b) in parts {
        engine.cpu_unmap(a, b - a)?;
        engine.cpu_map(a, b, false)?;
    }
    Ok(())
}

fn refresh_list<C: CpuBackend, D: DeviceBackend, F: PtFormat>(
    engine: &mut Engine<C, D, F>,
) -> Result<RefreshReport, SeedError> {
    let view = svmap_linux::maps::read_view(svmap_linux::maps::Target::SelfProcess)
        .map_err(SeedError::Maps)?;
    let list: Vec<CpuMapping> = view
        .entries
        .iter()
        .map(|e| CpuMapping {
            start: e.start,
            end: e.end,
            growsdown: e.growsdown,
        })
        .collect();
    engine.refresh_cpu(&list).map_err(SeedError::Refresh)
}

/// Runs `op` on the engine; if the CPU backend refused to place a new
/// mapping because something the engine does not know about is there
/// (`EEXIST` from `MAP_FIXED_NOREPLACE`: [`BackendError::NotOwned`] from
/// `map`, `reserve` or `map_device_only`), refreshes the CPU space from
/// `/proc/self/maps` once ([`refresh_from_self`]) and runs `op` once more.
/// At most one refresh and two tries; the second try's error (or the first
/// one, if the refresh fails) is returned as it is.
pub fn with_refresh<C: CpuBackend, D: DeviceBackend, F: PtFormat, T>(
    engine: &mut Engine<C, D, F>,
    mut op: impl FnMut(&mut Engine<C, D, F>) -> Result<T, EngineError>,
) -> Result<T, EngineError> {
    match op(engine) {
        Err(EngineError::Cpu {
            op: "map" | "reserve" | "map_device_only",
            error: BackendError::NotOwned { .. },
            ..
        }) if refresh_from_self(engine).is_ok() => op(engine),
        r => r,
    }
}

/// [`Engine::svm_alloc`] through [`with_refresh`]: an allocation whose
/// first choice collides with a mapping made behind the engine's back
/// refreshes the CPU space and lands elsewhere, never over that mapping.
pub fn svm_alloc<C: CpuBackend, D: DeviceBackend, F: PtFormat, S: AsRef<str>>(
    engine: &mut Engine<C, D, F>,
    length: u64,
    align: Option<u64>,
    devices: &[S],
    topdown: bool,
) -> Result<u64, EngineError> {
    with_refresh(engine, |e| e.svm_alloc(length, align, devices, topdown))
}

/// At most this much of the devices' common window is reserved by
/// [`start`] unless [`StartConfig::window`] says otherwise: 256 GiB, of
/// address space only (the reservation costs no memory).
pub const DEFAULT_WINDOW_CAP: u64 = 1 << 38;

/// What [`start`] sets up.
#[derive(Clone, Debug, Default)]
pub struct StartConfig {
    /// The CPU space's parameters (`task_size`, `mmap_min_addr`, the
    /// stack guard gap): this process's.
    pub mm: svmap_core::linux::MmConfig,
    /// Bytes of the common window to reserve, at its top (just below the
    /// lowest device limit). `None`: the whole window, up to
    /// [`DEFAULT_WINDOW_CAP`]. Rounded up to the largest device page size.
    pub window: Option<u64>,
}

/// What [`start`] hands back: the engine, with its devices and its window.
#[derive(Debug)]
pub struct Started<D> {
    /// The engine on this process, seeded, with every device.
    pub engine: Engine<LinuxCpu, D>,
    /// The common window reserved for every device (its `reserved` pieces
    /// are what the CPU holds; SVM ranges for any set of the devices are
    /// carved from them).
    pub window: svmap_svm::WindowReservation,
}

/// Why [`start`] failed; nothing it set up is kept (the engine and its
/// backends are dropped, and with them every reservation).
#[derive(Debug)]
pub enum StartError {
    /// No devices were given: there is no window to reserve.
    NoDevices,
    /// The devices have no common window (the highest floor is at or above
    /// the lowest limit).
    NoCommonWindow {
        /// The highest floor (`mmap_min_addr`, the device bases).
        floor: u64,
        /// The lowest limit (`task_size`, `2^va_bits` of each device).
        limit: u64,
    },
    /// The window asked for is empty or larger than the common window.
    WindowSize {
        /// Bytes asked for.
        requested: u64,
        /// Bytes the common window has.
        available: u64,
    },
    /// Seeding the engine from `/proc/self/maps` failed.
    Seed(SeedError),
    /// A device could not be added (its name, and why).
    Device {
        /// The device's name.
        name: String,
        /// Why.
        error: EngineError,
    },
    /// The window could not be reserved (the part of it that is free is
    /// taken, or the CPU backend could not reserve a piece), even after one
    /// refresh from `/proc/self/maps`.
    Window(EngineError),
}

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StartError::NoDevices => f.write_str("no devices: there is no window to reserve"),
            StartError::NoCommonWindow { floor, limit } => write!(
                f,
                "the devices have no common window: floor {floor:#x} is at or above limit {limit:#x}"
            ),
            StartError::WindowSize {
                requested,
                available,
            } => write!(
                f,
                "a window of {requested:#x} bytes was asked for; the common window has {available:#x}"
            ),
            StartError::Seed(e) => write!(f, "start-up: {e}"),
            StartError::Device { name, error } => {
                write!(f, "start-up: adding device {name:?}: {error}")
            }
            StartError::Window(e) => write!(f, "start-up: reserving the window: {e}"),
        }
    }
}

impl std::error::Error for StartError {}

/// Starts the runtime: an engine on this process driving `cpu` (create it
/// first and give its [`LinuxCpu::directory`] to device processes), seeded
/// from `/proc/self/maps`, with every device of `devices` added, and the
/// top `cfg.window` bytes of their common window (`[max(mmap_min_addr,
/// bases), min(task_size, 2^va_bits))`) reserved at once, before the
/// application maps anything more. The application's later mappings land
/// outside the reservation, and SVM ranges for any set of the devices are
/// carved from it with no system call and no `/proc` read.
///
/// Every device's `base` (the floor of its SVM ranges) is raised to the
/// start of the reserved window, so that its SVM ranges are placed there
/// and nowhere else ([`Started::engine`] shows the configurations as
/// added). Only the parts of the window that are free are reserved, and
/// not the room the main stack may grow into (its `RLIMIT_STACK` and guard
/// gap below it, when the window reaches up to the stack). If a mapping
/// made since the seeding is in the way, the CPU space is refreshed once
/// and the reservation tried again.
pub fn start<D: DeviceBackend>(
    cfg: &StartConfig,
    cpu: LinuxCpu,
    mut devices: Vec<(svmap_svm::DeviceConfig, D)>,
) -> Result<Started<D>, StartError> {
    if devices.is_empty() {
        return Err(StartError::NoDevices);
    }
    let (low, high, page) = common_window(&cfg.mm, devices.iter().map(|(d, _)| d));
    if high <= low {
        return Err(StartError::NoCommonWindow {
            floor: low,
            limit: high,
        });
    }
    let available = high - low;
    let requested = cfg.window.unwrap_or(available.min(DEFAULT_WINDOW_CAP));
    let len = requested
        .checked_next_multiple_of(page)
        .filter(|&l| l != 0 && l <= available)
        .ok_or(StartError::WindowSize {
            requested,
            available,
        })?;
    let cut = high - len;
    let mut engine: Engine<LinuxCpu, D> = Engine::new(cfg.mm, cpu);
    // A read of /proc/self/maps that raced with another thread's mapping
    // is inconsistent: read it again (the engine is unchanged then).
    let mut tries = 0;
    loop {
        match seed_from_self(&mut engine) {
            Ok(_) => break,
            Err(SeedError::Maps(_)) if tries < 4 => tries += 1,
            Err(e) => return Err(StartError::Seed(e)),
        }
    }
    let mut names = Vec::with_capacity(devices.len());
    for (mut dc, backend) in devices.drain(..) {
        dc.base = dc.base.max(cut);
        let name = dc.name.clone();
        engine
            .add_device_with(dc, backend)
            .map_err(|error| StartError::Device {
                name: name.clone(),
                error,
            })?;
        names.push(name);
    }
    let stack_room = svmap_linux::sys::stack_rlimit()
        .unwrap_or(u64::MAX)
        .saturating_add(cfg.mm.stack_guard_gap);
    let mut refreshed = false;
    loop {
        // The main stack's room is held by placeholders in the CPU space
        // while the window is reserved (no backend call).
        let holds = stack_rooms(&engine, cut, high, stack_room);
        for &(s, e) in &holds {
            engine
                .cpu_map(s, e, false)
                .expect("a placeholder covers free space only");
        }
        let r = engine.reserve_window(&names);
        for &(s, e) in &holds {
            engine
                .cpu_unmap(s, e - s)
                .expect("a placeholder is page aligned and holds no SVM range");
        }
        match r {
            Ok(window) => return Ok(Started { engine, window }),
            Err(EngineError::Cpu {
                error: BackendError::NotOwned { .. },
                ..
            }) if !refreshed => {
                refreshed = true;
                refresh_from_self(&mut engine).map_err(StartError::Seed)?;
            }
            Err(e) => return Err(StartError::Window(e)),
        }
    }
}

/// The common window of `devices` in a CPU space of `mm`, as
/// [`svmap_svm::SvmSpace::reserve_window`] computes it: `(low, high,
/// page)`, the bounds rounded inwards to the largest device page size.
fn common_window<'a>(
    mm: &svmap_core::linux::MmConfig,
    devices: impl Iterator<Item = &'a svmap_svm::DeviceConfig> + Clone,
) -> (u64, u64, u64) {
    let page = devices
        .clone()
        .map(|d| d.page_size)
        .fold(svmap_core::linux::PAGE_SIZE, u64::max);
    let floor = devices
        .clone()
        .map(|d| d.base)
        .fold(mm.mmap_min_addr, u64::max);
    let limit = devices
        .map(|d| 1u128.checked_shl(d.va_bits).unwrap_or(u128::MAX))
        .fold(u128::from(mm.task_size), u128::min) as u64;
    (
        floor.checked_next_multiple_of(page).unwrap_or(u64::MAX),
        limit & !(page - 1),
        page,
    )
}

/// The free parts of the main stack's room (`stack_room` bytes below the
/// end of each grows-down mapping) inside `[low, high)`, ascending, not
/// overlapping: what the start-up reservation must leave to the stack.
fn stack_rooms<C: CpuBackend, D: DeviceBackend>(
    engine: &Engine<C, D>,
    low: u64,
    high: u64,
    stack_room: u64,
) -> Vec<(u64, u64)> {
    let map = engine.mm().space();
    let mut keep: Vec<(u64, u64)> = Vec::new();
    for v in map.range(low, high) {
        if v.flags.contains(svmap_core::VmaFlags::GROWSDOWN) {
            let room = v.end.saturating_sub(stack_room).max(low);
            if room < v.start {
                keep.push((room, v.start.min(high)));
            }
        }
    }
    keep.sort_unstable();
    let mut merged: Vec<(u64, u64)> = Vec::new();
    for (s, e) in keep {
        match merged.last_mut() {
            Some(last) if s <= last.1 => last.1 = last.1.max(e),
            _ => merged.push((s, e)),
        }
    }
    let mut out = Vec::new();
    for (s, e) in merged {
        let mut at = s;
        for v in map.range(s, e) {
            if v.start > at {
                out.push((at, v.start));
            }
            at = at.max(v.end);
        }
        if at < e {
            out.push((at, e));
        }
    }
    out
}

/// Why [`seed_from_self`] or [`refresh_from_self`] failed.
#[derive(Debug)]
pub enum SeedError {
    /// `/proc/self/smaps` (or `maps`) could not be read.
    Maps(Error),
    /// The engine refused a mapping (it already holds something there).
    Engine(EngineError),
    /// The refresh refused the list ([`RefreshError`]).
    Refresh(RefreshError),
}

impl std::fmt::Display for SeedError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SeedError::Maps(e) => write!(f, "reading /proc/self/maps: {e}"),
            SeedError::Engine(e) => write!(f, "seeding the engine: {e}"),
            SeedError::Refresh(e) => write!(f, "refreshing the engine: {e}"),
        }
    }
}

impl std::error::Error for SeedError {}

/// Why [`LinuxCpu::read_u64`] or [`LinuxCpu::write_u64`] refused an
/// access (it would fault, or the address is not the backend's).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccessError {
    /// The address.
    pub addr: u64,
    /// Whether it was a write.
    pub write: bool,
    /// Why it was refused.
    pub why: &'static str,
}

impl std::fmt::Display for AccessError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "CPU {} of {:#x} refused: {}",
            if self.write { "write" } else { "read" },
            self.addr,
            self.why
        )
    }
}

impl std::error::Error for AccessError {}

/// How a CPU access made in a forked child ended ([`touch_in_child`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Touch {
    /// The access completed and the child exited normally.
    Completed,
    /// The child was killed by this signal (11: `SIGSEGV`).
    Signal(i32),
    /// The child exited with this status without completing the access
    /// (it could not set itself up).
    Exited(i32),
}

impl std::fmt::Display for Touch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Touch::Completed => f.write_str("completed"),
            Touch::Signal(11) => f.write_str("killed by SIGSEGV"),
            Touch::Signal(n) => write!(f, "killed by signal {n}"),
            Touch::Exited(c) => write!(f, "exited with status {c} before the access"),
        }
    }
}

/// Makes one CPU access at `addr` (8-byte aligned) in a forked child of
/// this process and reports how the child ended: a read of the `u64`
/// there, and with `write` a store of the value just read back to it
/// (so the access changes no memory even in a shared mapping). The child
/// has the default `SIGSEGV` and `SIGBUS` actions and no core dump, so a
/// faulting access kills it with the signal. This process is unaffected
/// whatever `addr` is. Between the fork and the child's exit only
/// async-signal-safe calls are made, so other threads do no harm.
pub fn touch_in_child(addr: u64, write: bool) -> Result<Touch, BackendError> {
    if !addr.is_multiple_of(8) {
        return Err(BackendError::Other(format!(
            "{addr:#x} is not 8-byte aligned"
        )));
    }
    cpu_access::touch_in_child(addr, write)
}

/// The raw CPU accesses: volatile loads and stores at checked addresses,
/// and the forked child of [`touch_in_child`]. Calls `libc` for `fork`,
/// `waitpid`, `signal`, `setrlimit` and `_exit`, which rustix does not
/// offer (or offers only as unstable runtime calls).
#[allow(unsafe_code)]
mod cpu_access {
    use svmap_svm::BackendError;

    /// A volatile load of the `u64` at `addr`, once `cpu` has checked
    /// that it cannot fault.
    pub(crate) fn read(cpu: &super::LinuxCpu, addr: u64) -> Result<u64, super::AccessError> {
        cpu.check_access(addr, false)?;
        // SAFETY: check_access found the 8 aligned bytes inside a readable
        // mapping the backend owns and keeps while `cpu` is borrowed.
        Ok(unsafe { std::ptr::read_volatile(addr as *const u64) })
    }

    /// A volatile store of `value` at `addr`, once `cpu` has checked that
    /// it cannot fault.
    pub(crate) fn write(
        cpu: &mut super::LinuxCpu,
        addr: u64,
        value: u64,
    ) -> Result<(), super::AccessError> {
        cpu.check_access(addr, true)?;
        // SAFETY: check_access found the 8 aligned bytes inside a live
        // read-write SVM range: shared memory the engine handed out, which
        // holds no Rust object of this process.
        unsafe { std::ptr::write_volatile(addr as *mut u64, value) };
        Ok(())
    }

    pub(crate) fn touch_in_child(addr: u64, write: bool) -> Result<super::Touch, BackendError> {
        // SAFETY: fork has no memory-safety preconditions; the child below
        // only makes async-signal-safe calls and the access, then _exits.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            return Err(BackendError::Sys {
                call: "fork",
                errno: std::io::Error::last_os_error().raw_os_error().unwrap_or(0),
            });
        }
        if pid == 0 {
            let no_core = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            // SAFETY: setrlimit, signal and _exit are async-signal-safe;
            // the access happens in this child only, whose memory is a
            // copy of the parent's (a store writes back the value just
            // read, so a shared mapping does not change).
            unsafe {
                if libc::setrlimit(libc::RLIMIT_CORE, &no_core) != 0
                    || libc::signal(libc::SIGSEGV, libc::SIG_DFL) == libc::SIG_ERR
                    || libc::signal(libc::SIGBUS, libc::SIG_DFL) == libc::SIG_ERR
                {
                    libc::_exit(2);
                }
                let p = addr as *mut u64;
                let v = std::ptr::read_volatile(p);
                if write {
                    std::ptr::write_volatile(p, v);
                }
                libc::_exit(0)
            }
        }
        let mut status = 0;
        loop {
            // SAFETY: waits for the child just forked; `status` is a valid
            // out-pointer.
            let r = unsafe { libc::waitpid(pid, &mut status, 0) };
            if r == pid {
                break;
            }
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() != Some(libc::EINTR) {
                return Err(BackendError::Sys {
                    call: "waitpid",
                    errno: err.raw_os_error().unwrap_or(0),
                });
            }
        }
        Ok(if libc::WIFSIGNALED(status) {
            super::Touch::Signal(libc::WTERMSIG(status))
        } else {
            match libc::WEXITSTATUS(status) {
                0 => super::Touch::Completed,
                c => super::Touch::Exited(c),
            }
        })
    }
}

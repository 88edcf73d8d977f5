//! Page migration between system memory and the memory of device
//! processes, driven by range attributes (`docs/attributes.md`) and by real
//! CPU page faults (`userfaultfd`).
//!
//! [`Runtime`] is the engine on this process ([`LinuxCpu`] and
//! [`PeerDevice`]s) with a [`Migrator`]. Device memory is memory of the
//! device process that this process does not map. A granule (a
//! power-of-two run of pages, from the range's granularity attribute,
//! aligned to its size and clipped to its SVM range) moves like this:
//!
//! **System -> device** (prefetch, or a device access where the preferred
//! location is that device and its access may migrate):
//!
//! 1. every other device of the range invalidates the granule (its device
//!    page-table and TLB entries go: none points at memory that moves);
//! 2. the CPU's mapping of the granule is registered with the userfaultfd
//!    (missing-page and write-protect faults) and write-protected: from
//!    the return on, a CPU write blocks in the kernel instead of landing;
//! 3. the device process invalidates its own entries, copies the granule
//!    into memory private to it (`mremap` of a private copy over the
//!    shared mapping) and maps the range again over that memory;
//! 4. this process punches the granule out of the heap's memfd
//!    (`fallocate(PUNCH_HOLE)`): the CPU has no page there any more.
//!
//! **Device -> system** (a CPU touch, a prefetch to system memory, or a
//! device that may not reach the other device's memory): a CPU touch of the
//! granule raises a fault that the handler thread receives; it asks the
//! device process to invalidate, write the bytes back into the memfd
//! (`pwrite`) and map the memfd again, then unregisters the granule, which
//! wakes every thread blocked on it; they fault again and find the page.
//!
//! **Read-mostly** granules are not moved by device reads: the reading
//! device gets a read-only copy (the device process copies the granule into
//! its own memory; the memfd keeps it), and the CPU's mapping stays present
//! but write-protected. A CPU write faults; the handler thread has every
//! device drop its copy (acknowledged) before it lifts the protection and
//! the write lands. A device write drops every copy first, its own included.
//!
//! **Device faults**: while a granule is on a device, the other devices of
//! its range are told it is not resident for them; an access there faults
//! in the device process instead of reading the memfd's hole.
//! [`Runtime::device_sum_on_fault`] services such faults (places the
//! granule by the attributes) and has the device retry.
//!
//! Every step happens under one lock, so a migration and a fault on the
//! same granule never interleave: a thread that writes during a migration
//! to the device waits until the granule is on the device and then brings
//! it back with its write (no write is lost). Device requests that
//! [`Runtime`] forwards (sums, copies) hold the same lock while they run.
//!
//! Where `userfaultfd` is not available (the system call and
//! `/dev/userfaultfd` both refused, or a kernel without missing-page and
//! write-protect faults on shared memory), [`Runtime::new`] fails with
//! [`MigrateError::Unavailable`]: there is no fallback, and the engine can
//! be used without migration (every page stays in system memory). Where
//! only user faults can be handled ([`Migrator::user_mode_only`]), a system
//! call that touches a granule on a device fails with `EFAULT` instead of
//! waiting for it (`docs/attributes.md`).
//!
//! A device process that dies while it holds granules loses their data:
//! the granules are unregistered anyway, so no CPU thread waits forever;
//! they read zeros, and [`MigrateStats::lost`] counts them.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use svmap_linux::uffd::{Sources, Uffd, UffdError};
use svmap_peer::{DirectPeer, PeerError};
use svmap_svm::attr::{Access, Flags, ATTR_PAGE};
use svmap_svm::{Attr, AttrError, DeviceConfig, Engine, EngineError, Location, RangeAttrs};

use crate::{HeapDirectory, LinuxCpu, PeerDevice};

/// How long the handler thread waits for a fault before it looks at the
/// stop flag again (the bound on shutting it down).
const POLL: Duration = Duration::from_millis(50);

/// Why a migration call failed.
#[derive(Debug)]
pub enum MigrateError {
    /// `userfaultfd` cannot be used here (at setup; see the module
    /// documentation).
    Unavailable(UffdError),
    /// A userfaultfd call failed.
    Uffd(UffdError),
    /// An attribute call failed.
    Attr(AttrError),
    /// The engine refused.
    Engine(EngineError),
    /// A device process failed a request (it is dead from then on).
    Device {
        /// Device index.
        device: usize,
        /// What happened.
        detail: String,
    },
    /// The device's access attribute is none at this address.
    NoAccess {
        /// Device index.
        device: usize,
        /// The address.
        addr: u64,
    },
    /// No device with this index.
    UnknownDevice(usize),
    /// The range is device read-only and the device access writes.
    ReadOnly {
        /// Device index.
        device: usize,
        /// The address.
        addr: u64,
    },
    /// Punching the granule out of the memfd failed.
    Punch {
        /// The granule.
        addr: u64,
        /// errno.
        errno: i32,
    },
}

impl std::fmt::Display for MigrateError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MigrateError::Unavailable(e) => write!(f, "page migration is not available: {e}"),
            MigrateError::Uffd(e) => write!(f, "userfaultfd: {e}"),
            MigrateError::Attr(e) => write!(f, "{e}"),
            MigrateError::Engine(e) => write!(f, "{e}"),
            MigrateError::Device { device, detail } => write!(f, "device {device}: {detail}"),
            MigrateError::NoAccess { device, addr } => {
                write!(f, "device {device} has no access to {addr:#x}")
            }
            MigrateError::UnknownDevice(d) => write!(f, "no device with index {d}"),
            MigrateError::ReadOnly { device, addr } => {
                write!(
                    f,
                    "device {device} may only read {addr:#x} (device read-only)"
                )
            }
            MigrateError::Punch { addr, errno } => write!(
                f,
                "punching the granule at {addr:#x} out of its memfd failed: {}",
                svmap_linux::error::Errno(*errno)
            ),
        }
    }
}

impl std::error::Error for MigrateError {}

impl From<AttrError> for MigrateError {
    fn from(e: AttrError) -> Self {
        MigrateError::Attr(e)
    }
}

impl From<EngineError> for MigrateError {
    fn from(e: EngineError) -> Self {
        MigrateError::Engine(e)
    }
}

/// Migration counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MigrateStats {
    /// CPU page faults that brought a granule back.
    pub cpu_faults: u64,
    /// CPU page faults on a granule already back (another fault or a
    /// prefetch resolved it first): the thread was only woken.
    pub spurious_faults: u64,
    /// Granules moved to a device.
    pub to_device: u64,
    /// Bytes moved to devices.
    pub bytes_to_device: u64,
    /// Granules moved back to system memory (data kept).
    pub to_system: u64,
    /// Bytes moved back to system memory.
    pub bytes_to_system: u64,
    /// Granules whose data was dropped (the range was freed).
    pub dropped: u64,
    /// Granules lost with a device process that failed.
    pub lost: u64,
    /// Read-only copies of read-mostly granules made on devices.
    pub copies: u64,
    /// Read-only copies dropped (invalidated on their device).
    pub copies_dropped: u64,
    /// CPU writes to a granule with device copies that dropped them
    /// (write-protect faults).
    pub cpu_write_invalidations: u64,
    /// Device faults on a granule another device held, serviced by
    /// placing it ([`Runtime::device_sum_on_fault`]).
    pub device_faults: u64,
}

struct State {
    peers: Vec<Arc<Mutex<DirectPeer>>>,
    directory: HeapDirectory,
    /// Granules on a device: start -> (end, device).
    on_device: BTreeMap<u64, (u64, usize)>,
    /// Read-mostly granules with read-only device copies: start -> (end,
    /// bit mask of the devices that hold one). The CPU's mapping stays
    /// present and write-protected. Disjoint from `on_device`.
    copies: BTreeMap<u64, (u64, u64)>,
    /// Granules on a device: start -> mask of the other devices told the
    /// granule is not resident for them (they fault there).
    not_resident: BTreeMap<u64, u64>,
    stats: MigrateStats,
}

struct Shared {
    uffd: Uffd,
    stop: AtomicBool,
    state: Mutex<State>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl State {
    /// Device `d`'s process, locked, once no batch of the engine's is in
    /// flight on it (the engine sends a free's batch to every device before
    /// it waits for the answers, and the process takes no other request
    /// meanwhile). Waits at most the device's timeout.
    fn peer(&self, d: usize) -> Result<MutexGuard<'_, DirectPeer>, MigrateError> {
        let p = self.peers.get(d).ok_or(MigrateError::UnknownDevice(d))?;
        let start = std::time::Instant::now();
        loop {
            let g = lock(p);
            if !g.in_flight() {
                return Ok(g);
            }
            let bound = g.config().timeout;
            drop(g);
            if start.elapsed() > bound {
                return Err(MigrateError::Device {
                    device: d,
                    detail: format!("a batch stayed in flight for more than {bound:?}"),
                });
            }
            std::thread::sleep(Duration::from_micros(200));
        }
    }

    /// The granule on a device that holds `addr`.
    fn holding(&self, addr: u64) -> Option<(u64, u64, usize)> {
        let (&s, &(e, d)) = self.on_device.range(..=addr).next_back()?;
        (addr < e).then_some((s, e, d))
    }

    /// Granules on a device that overlap `[s, e)`.
    fn overlapping(&self, s: u64, e: u64) -> Vec<(u64, u64, usize)> {
        let first = self.holding(s).map_or(s, |(gs, _, _)| gs);
        self.on_device
            .range(first..e)
            .map(|(&gs, &(ge, d))| (gs, ge, d))
            .collect()
    }

    /// The granule with device copies that holds `addr`, as `(start, end,
    /// device mask)`.
    fn copy_holding(&self, addr: u64) -> Option<(u64, u64, u64)> {
        let (&s, &(e, m)) = self.copies.range(..=addr).next_back()?;
        (addr < e).then_some((s, e, m))
    }

    /// Granules with device copies that overlap `[s, e)`.
    fn copies_overlapping(&self, s: u64, e: u64) -> Vec<(u64, u64, u64)> {
        let first = self.copy_holding(s).map_or(s, |(gs, _, _)| gs);
        self.copies
            .range(first..e)
            .map(|(&gs, &(ge, m))| (gs, ge, m))
            .collect()
    }

    /// Drops every device copy of the granule with copies that starts at
    /// `s`: each device that holds one invalidates its entries and maps the
    /// memfd again (its answer is the acknowledgement); then the CPU's
    /// write protection goes and the granule is unregistered, which wakes
    /// the writers blocked on it. The first device error is returned, after
    /// the granule is unregistered whatever happened.
    fn drop_copies(&mut self, uffd: &Uffd, s: u64) -> Result<(), MigrateError> {
        let Some((e, mask)) = self.copies.remove(&s) else {
            return Ok(());
        };
        let len = e - s;
        let mut first = Ok(());
        for d in (0..64).filter(|d| mask & (1u64 << d) != 0) {
            let r = match self.peer(d) {
                Ok(mut p) => p
                    .migrate_out(s, len, false)
                    .map_err(|err| MigrateError::Device {
                        device: d,
                        detail: err.to_string(),
                    }),
                Err(x) => Err(x),
            };
            self.stats.copies_dropped += 1;
            if first.is_ok() {
                first = r;
            }
        }
        let w = uffd.write_protect(s, len, false);
        let u = uffd.unregister(s, len);
        first?;
        w.map_err(MigrateError::Uffd)?;
        u.map_err(MigrateError::Uffd)
    }

    /// Drops every device copy that overlaps `[s, e)`.
    fn drop_copies_in(&mut self, uffd: &Uffd, s: u64, e: u64) -> Result<(), MigrateError> {
        let mut first = Ok(());
        for (gs, _, _) in self.copies_overlapping(s, e) {
            let r = self.drop_copies(uffd, gs);
            if first.is_ok() {
                first = r;
            }
        }
        first
    }

    /// Gives device `d` a read-only copy of `[s, e)` (a read-mostly
    /// granule): the data stays in system memory, write-protected for the
    /// CPU, and the device copies it into its own memory. A part of it
    /// held by another device alone comes back first; held by `d` alone,
    /// it stays there.
    fn add_copy(&mut self, uffd: &Uffd, s: u64, e: u64, d: usize) -> Result<(), MigrateError> {
        if d >= 64 {
            return Err(MigrateError::UnknownDevice(d));
        }
        let over = self.overlapping(s, e);
        if over.len() == 1 && over[0] == (s, e, d) {
            return Ok(());
        }
        for (gs, _, _) in over {
            self.move_out(uffd, gs, true)?;
        }
        let len = e - s;
        let copies = self.copies_overlapping(s, e);
        let exact = copies.len() == 1 && copies[0].0 == s && copies[0].1 == e;
        if exact && copies[0].2 & (1u64 << d) != 0 {
            return Ok(());
        }
        if !exact {
            self.drop_copies_in(uffd, s, e)?;
            uffd.register(s, len).map_err(MigrateError::Uffd)?;
            if let Err(err) = uffd.write_protect(s, len, true) {
                let _ = uffd.unregister(s, len);
                return Err(MigrateError::Uffd(err));
            }
            self.copies.insert(s, (e, 0));
        }
        let r = self.peer(d).and_then(|mut p| {
            p.migrate_in(s, len).map_err(|err| MigrateError::Device {
                device: d,
                detail: err.to_string(),
            })
        });
        if let Err(err) = r {
            if self.copies.get(&s).is_some_and(|&(_, m)| m == 0) {
                self.copies.remove(&s);
                let _ = uffd.write_protect(s, len, false);
                let _ = uffd.unregister(s, len);
            }
            return Err(err);
        }
        if let Some((_, m)) = self.copies.get_mut(&s) {
            *m |= 1u64 << d;
        }
        self.stats.copies += 1;
        Ok(())
    }

    /// Moves `[s, e)` to device `d`; `others` are the other devices that
    /// map it. Any part of it on a device goes back first, and read-only
    /// copies of it are dropped.
    fn move_in(
        &mut self,
        uffd: &Uffd,
        s: u64,
        e: u64,
        d: usize,
        others: &[usize],
    ) -> Result<(), MigrateError> {
        let over = self.overlapping(s, e);
        if over.len() == 1 && over[0] == (s, e, d) {
            return Ok(());
        }
        for (gs, _, _) in over {
            self.move_out(uffd, gs, true)?;
        }
        self.drop_copies_in(uffd, s, e)?;
        let len = e - s;
        let heap = self
            .directory
            .find(s, e)
            .ok_or(MigrateError::Attr(AttrError::NotSvm { addr: s }))?;
        drop(self.peer(d)?);
        // The other devices let go of the granule and fault there (instead
        // of reading the memfd's hole) until it comes back.
        let mut marked = 0u64;
        for &j in others.iter().filter(|&&j| j != d && j < 64) {
            let r = self.peer(j).and_then(|mut p| {
                p.set_resident(s, len, false)
                    .map_err(|err| MigrateError::Device {
                        device: j,
                        detail: err.to_string(),
                    })
            });
            if let Err(err) = r {
                self.mark_resident(s, len, marked);
                return Err(err);
            }
            marked |= 1 << j;
        }
        match self.move_in_marked(uffd, &heap, s, e, d) {
            Ok(()) => {
                self.not_resident.insert(s, marked);
                Ok(())
            }
            Err(err) => {
                if self.on_device.get(&s) == Some(&(e, d)) {
                    // Recorded as on the device after all (see
                    // `move_in_marked`): the others keep faulting there.
                    self.not_resident.insert(s, marked);
                } else {
                    self.mark_resident(s, len, marked);
                }
                Err(err)
            }
        }
    }

    /// Device `d` goes: its granules come back (written back; where its
    /// process cannot answer they are lost and counted), every read-only
    /// copy it holds is dropped (the other copies of those granules too),
    /// and the devices above `d` move down one index in every record, as
    /// they do in the engine. Returns the granules lost.
    fn remove_peer(&mut self, uffd: &Uffd, d: usize) -> u64 {
        let lost_before = self.stats.lost;
        let held: Vec<u64> = self
            .on_device
            .iter()
            .filter(|(_, &(_, x))| x == d)
            .map(|(&s, _)| s)
            .collect();
        for s in held {
            let _ = self.move_out(uffd, s, true);
        }
        if d < 64 {
            let copied: Vec<u64> = self
                .copies
                .iter()
                .filter(|(_, &(_, m))| m & (1u64 << d) != 0)
                .map(|(&s, _)| s)
                .collect();
            for s in copied {
                let _ = self.drop_copies(uffd, s);
            }
        }
        for (_, x) in self.on_device.values_mut() {
            if *x > d {
                *x -= 1;
            }
        }
        for (_, m) in self.copies.values_mut() {
            *m = without_bit(*m, d);
        }
        for m in self.not_resident.values_mut() {
            *m = without_bit(*m, d);
        }
        if d < self.peers.len() {
            self.peers.remove(d);
        }
        self.stats.lost - lost_before
    }

    /// Marks `[s, s + len)` resident again on the devices of `mask`
    /// (errors ignored: a failed device process is dead from then on).
    fn mark_resident(&self, s: u64, len: u64, mask: u64) {
        for j in (0..64).filter(|j| mask & (1u64 << j) != 0) {
            if let Ok(mut p) = self.peer(j) {
                let _ = p.set_resident(s, len, true);
            }
        }
    }

    /// The steps of [`State::move_in`] after the other devices let go.
    fn move_in_marked(
        &mut self,
        uffd: &Uffd,
        heap: &crate::directory::HeapEntry,
        s: u64,
        e: u64,
        d: usize,
    ) -> Result<(), MigrateError> {
        let len = e - s;
        // The device first: once the granule is registered and write
        // protected, every way out below lifts both (or records the granule
        // as on the device), so no CPU thread can wait on a granule the
        // state does not know. The device's lock is held throughout, so no
        // batch can start on it in between.
        let mut p = self.peer(d)?;
        uffd.register(s, len).map_err(MigrateError::Uffd)?;
        let release = |uffd: &Uffd| {
            let _ = uffd.write_protect(s, len, false);
            let _ = uffd.unregister(s, len);
        };
        if let Err(err) = uffd.write_protect(s, len, true) {
            release(uffd);
            return Err(MigrateError::Uffd(err));
        }
        if let Err(err) = p.migrate_in(s, len) {
            release(uffd);
            return Err(MigrateError::Device {
                device: d,
                detail: err.to_string(),
            });
        }
        let punched = rustix::fs::fallocate(
            &*heap.fd,
            rustix::fs::FallocateFlags::PUNCH_HOLE | rustix::fs::FallocateFlags::KEEP_SIZE,
            s - heap.start,
            len,
        );
        if let Err(errno) = punched {
            // The memfd still holds the bytes: take them back from the
            // device (it may not have changed them: its lock is held).
            // Where even that fails, the device keeps the granule as far as
            // it knows: the state says so too (registered, write
            // protected), so a CPU write still asks the device for it.
            let back = p.migrate_out(s, len, true);
            drop(p);
            if back.is_ok() {
                release(uffd);
            } else {
                self.on_device.insert(s, (e, d));
            }
            return Err(MigrateError::Punch {
                addr: s,
                errno: errno.raw_os_error(),
            });
        }
        drop(p);
        self.on_device.insert(s, (e, d));
        self.stats.to_device += 1;
        self.stats.bytes_to_device += len;
        Ok(())
    }

    /// Moves the granule on a device that starts at `s` back (its bytes
    /// written into the memfd, or dropped without `write_back`), then
    /// unregisters it, which wakes the threads that wait on it.
    fn move_out(&mut self, uffd: &Uffd, s: u64, write_back: bool) -> Result<(), MigrateError> {
        let Some((e, d)) = self.on_device.remove(&s) else {
            return Ok(());
        };
        let len = e - s;
        let r = match self.peer(d) {
            Ok(mut p) => p
                .migrate_out(s, len, write_back)
                .map_err(|err| MigrateError::Device {
                    device: d,
                    detail: err.to_string(),
                }),
            Err(x) => Err(x),
        };
        // Unregistered whatever happened: no thread may wait forever.
        let u = uffd.unregister(s, len);
        let marked = self.not_resident.remove(&s).unwrap_or(0);
        self.mark_resident(s, len, marked);
        match &r {
            Ok(()) if write_back => {
                self.stats.to_system += 1;
                self.stats.bytes_to_system += len;
            }
            Ok(()) => self.stats.dropped += 1,
            Err(_) => self.stats.lost += 1,
        }
        r?;
        u.map_err(MigrateError::Uffd)
    }
}

/// `mask` (bit `j`: device `j`) once device `d` is removed: bit `d` goes
/// and the bits above it move down one.
fn without_bit(mask: u64, d: usize) -> u64 {
    if d >= 64 {
        return mask;
    }
    let low = (1u64 << d) - 1;
    (mask & low) | ((mask >> 1) & !low)
}

/// The migration machinery: the userfaultfd, the granules on devices, the
/// fault handler thread. Dropping it brings every granule back and stops
/// the thread (within 50 ms).
pub struct Migrator {
    shared: Arc<Shared>,
    handler: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Migrator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Migrator")
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

fn handle_faults(sh: &Shared) {
    while !sh.stop.load(Ordering::Acquire) {
        let fault = match sh.uffd.next_fault(POLL) {
            Ok(Some(f)) => f,
            Ok(None) => continue,
            Err(_) => {
                // Nothing to resolve with; try again after a pause rather
                // than give up (threads may be waiting).
                std::thread::sleep(POLL);
                continue;
            }
        };
        let page = fault.addr & !(ATTR_PAGE - 1);
        let mut st = lock(&sh.state);
        if let Some((s, _, _)) = st.copy_holding(page) {
            // A CPU write to a read-mostly granule with device copies: the
            // copies go first, then the write lands.
            st.stats.cpu_write_invalidations += 1;
            let _ = st.drop_copies(&sh.uffd, s);
            continue;
        }
        match st.holding(page) {
            Some((s, _, _)) => {
                st.stats.cpu_faults += 1;
                let _ = st.move_out(&sh.uffd, s, true);
            }
            None => {
                // Already back (another fault or a prefetch resolved it),
                // or registered by a path that failed to clean up: the
                // state does not know the page, so nothing may keep it
                // registered. Lifting the protection and unregistering wake
                // the thread; so does the wake (an unregistered page).
                st.stats.spurious_faults += 1;
                let _ = sh.uffd.write_protect(page, ATTR_PAGE, false);
                let _ = sh.uffd.unregister(page, ATTR_PAGE);
                let _ = sh.uffd.wake(page, ATTR_PAGE);
            }
        }
    }
}

impl Migrator {
    /// Opens the userfaultfd (from `sources`) and starts the handler
    /// thread, for the heaps of `directory` and the device processes
    /// `peers` (by device index).
    pub fn new(
        sources: Sources,
        directory: HeapDirectory,
        peers: Vec<Arc<Mutex<DirectPeer>>>,
    ) -> Result<Migrator, MigrateError> {
        let uffd = Uffd::open_via(sources).map_err(MigrateError::Unavailable)?;
        let shared = Arc::new(Shared {
            uffd,
            stop: AtomicBool::new(false),
            state: Mutex::new(State {
                peers,
                directory,
                on_device: BTreeMap::new(),
                copies: BTreeMap::new(),
                not_resident: BTreeMap::new(),
                stats: MigrateStats::default(),
            }),
        });
        let sh = shared.clone();
        let handler = std::thread::Builder::new()
            .name("svmap-uffd".into())
            .spawn(move || handle_faults(&sh))
            .map_err(|e| MigrateError::Device {
                device: usize::MAX,
                detail: format!("starting the fault handler thread: {e}"),
            })?;
        Ok(Migrator {
            shared,
            handler: Some(handler),
        })
    }

    /// Adds the device process of the next device index.
    pub fn push_peer(&self, peer: Arc<Mutex<DirectPeer>>) {
        lock(&self.shared.state).peers.push(peer);
    }

    /// Device `d` is removed: its granules come back (lost and counted
    /// where its process cannot give them), its read-only copies are
    /// dropped, and the devices above it move down one index. Returns the
    /// granules lost.
    pub fn remove_peer(&self, d: usize) -> u64 {
        lock(&self.shared.state).remove_peer(&self.shared.uffd, d)
    }

    /// Whether only user-mode accesses fault into the handler
    /// ([`Uffd::user_mode_only`]): then a system call that touches a
    /// granule on a device fails with `EFAULT` instead of waiting for it.
    pub fn user_mode_only(&self) -> bool {
        self.shared.uffd.user_mode_only()
    }

    /// The counters.
    pub fn stats(&self) -> MigrateStats {
        lock(&self.shared.state).stats
    }

    /// Where the data of the page at `addr` is now.
    pub fn location_of(&self, addr: u64) -> Location {
        match lock(&self.shared.state).holding(addr) {
            Some((_, _, d)) => Location::Device(d as u32),
            None => Location::System,
        }
    }

    /// The devices that hold a read-only copy of the page at `addr` (a
    /// read-mostly granule; its data is in system memory too).
    pub fn copies_of(&self, addr: u64) -> Vec<usize> {
        lock(&self.shared.state)
            .copy_holding(addr)
            .map_or_else(Vec::new, |(_, _, m)| {
                (0..64).filter(|d| m & (1u64 << d) != 0).collect()
            })
    }

    /// Gives device `d` a read-only copy of `[s, e)` (see
    /// `docs/attributes.md`, read-mostly).
    pub fn to_copy(&self, s: u64, e: u64, d: usize) -> Result<(), MigrateError> {
        lock(&self.shared.state).add_copy(&self.shared.uffd, s, e, d)
    }

    /// Drops every read-only device copy that overlaps `[s, e)`.
    pub fn drop_copies(&self, s: u64, e: u64) -> Result<(), MigrateError> {
        lock(&self.shared.state).drop_copies_in(&self.shared.uffd, s, e)
    }

    /// The granules on devices, as `(start, end, device)`.
    pub fn granules(&self) -> Vec<(u64, u64, usize)> {
        lock(&self.shared.state)
            .on_device
            .iter()
            .map(|(&s, &(e, d))| (s, e, d))
            .collect()
    }

    /// Moves `[s, e)` to device `d` (`others`: the other devices that map
    /// it).
    pub fn to_device(
        &self,
        s: u64,
        e: u64,
        d: usize,
        others: &[usize],
    ) -> Result<(), MigrateError> {
        lock(&self.shared.state).move_in(&self.shared.uffd, s, e, d, others)
    }

    /// Whether the page at `addr` is held by a device other than `d`.
    fn held_elsewhere(&self, addr: u64, d: usize) -> bool {
        lock(&self.shared.state)
            .holding(addr)
            .is_some_and(|(_, _, x)| x != d)
    }

    /// Moves every granule on a device that overlaps `[s, e)` back.
    pub fn to_system(&self, s: u64, e: u64) -> Result<(), MigrateError> {
        let mut st = lock(&self.shared.state);
        for (gs, _, _) in st.overlapping(s, e) {
            st.move_out(&self.shared.uffd, gs, true)?;
        }
        Ok(())
    }

    /// Drops the device copies of every granule that overlaps `[s, e)`
    /// without writing them back (the range is being freed).
    pub fn release(&self, s: u64, e: u64) -> Result<(), MigrateError> {
        let mut st = lock(&self.shared.state);
        let mut first = st.drop_copies_in(&self.shared.uffd, s, e);
        for (gs, _, _) in st.overlapping(s, e) {
            let r = st.move_out(&self.shared.uffd, gs, false);
            if first.is_ok() {
                first = r;
            }
        }
        first
    }

    /// Runs `f` on device `d`'s process with the migration lock held (no
    /// granule moves meanwhile), after `prepare` has placed the data.
    fn with_device<R>(
        &self,
        d: usize,
        prepare: &[(u64, u64, Want)],
        others: impl Fn(u64, u64) -> Vec<usize>,
        f: impl FnOnce(&mut DirectPeer) -> R,
    ) -> Result<R, MigrateError> {
        let mut st = lock(&self.shared.state);
        for &(s, e, want) in prepare {
            match want {
                Want::Copy => st.add_copy(&self.shared.uffd, s, e, d)?,
                Want::Write(w) => {
                    st.drop_copies_in(&self.shared.uffd, s, e)?;
                    match w {
                        Place::Here => {
                            st.move_in(&self.shared.uffd, s, e, d, &others(s, e))?;
                        }
                        Place::NotElsewhere => {
                            for (gs, _, gd) in st.overlapping(s, e) {
                                if gd != d {
                                    st.move_out(&self.shared.uffd, gs, true)?;
                                }
                            }
                        }
                    }
                }
                Want::Here => st.move_in(&self.shared.uffd, s, e, d, &others(s, e))?,
                Want::NotElsewhere => {
                    for (gs, _, gd) in st.overlapping(s, e) {
                        if gd != d {
                            st.move_out(&self.shared.uffd, gs, true)?;
                        }
                    }
                }
            }
        }
        let mut p = st.peer(d)?;
        Ok(f(&mut p))
    }
}

impl Drop for Migrator {
    fn drop(&mut self) {
        {
            let mut st = lock(&self.shared.state);
            let all: Vec<u64> = st.on_device.keys().copied().collect();
            for s in all {
                let _ = st.move_out(&self.shared.uffd, s, true);
            }
            let copied: Vec<u64> = st.copies.keys().copied().collect();
            for s in copied {
                let _ = st.drop_copies(&self.shared.uffd, s);
            }
        }
        self.shared.stop.store(true, Ordering::Release);
        if let Some(h) = self.handler.take() {
            let _ = h.join();
        }
    }
}

/// The granule that holds `addr` (SVM memory of `engine`): the size its
/// granularity attribute gives, aligned to that size, clipped to the SVM
/// piece that holds `addr`. Returns `(start, end, devices of the piece)`.
pub fn granule_of<C, D, F>(engine: &Engine<C, D, F>, addr: u64) -> (u64, u64, Vec<usize>)
where
    C: svmap_svm::CpuBackend,
    D: svmap_svm::DeviceBackend,
    F: svmap_svm::PtFormat,
{
    let g = engine.attrs().at(addr).granule_bytes();
    let gs = addr & !(g - 1);
    engine
        .svm_pieces_in(gs, gs.saturating_add(g))
        .find(|&(s, e, _)| s <= addr && addr < e)
        .map(|(s, e, d)| (s, e, d.to_vec()))
        .unwrap_or((addr, addr + ATTR_PAGE, Vec::new()))
}

/// What a device access needs of a granule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Want {
    /// On this device (preferred location, may migrate).
    Here,
    /// In system memory or on this device, not on another.
    NotElsewhere,
    /// A read of a read-mostly granule: a read-only copy on this device.
    Copy,
    /// A write: every read-only copy dropped, then placed as given.
    Write(Place),
}

/// Where a device write needs a granule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Place {
    /// On this device.
    Here,
    /// In system memory or on this device, not on another.
    NotElsewhere,
}

/// The engine on this process with device processes and page migration.
/// See the module documentation.
pub struct Runtime {
    /// Dropped first: brings every granule back while the heaps and the
    /// device processes still exist.
    migrator: Migrator,
    engine: Engine<LinuxCpu, PeerDevice>,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("migrator", &self.migrator)
            .finish_non_exhaustive()
    }
}

impl Runtime {
    /// Page migration over `engine` (its heaps and its device processes,
    /// now and added later with [`Runtime::add_device`]).
    pub fn new(engine: Engine<LinuxCpu, PeerDevice>) -> Result<Runtime, MigrateError> {
        Runtime::with_sources(engine, Sources::ALL)
    }

    /// [`Runtime::new`] with the userfaultfd sources allowed (tests turn
    /// them off to see the error of a machine without it).
    pub fn with_sources(
        engine: Engine<LinuxCpu, PeerDevice>,
        sources: Sources,
    ) -> Result<Runtime, MigrateError> {
        let peers = engine
            .device_backends()
            .iter()
            .map(PeerDevice::shared)
            .collect();
        let migrator = Migrator::new(sources, engine.cpu_backend().directory(), peers)?;
        Ok(Runtime { migrator, engine })
    }

    /// The engine (every query).
    pub fn engine(&self) -> &Engine<LinuxCpu, PeerDevice> {
        &self.engine
    }

    /// The engine, mutable. Free SVM ranges with [`Runtime::free`], which
    /// drops their device copies first.
    pub fn engine_mut(&mut self) -> &mut Engine<LinuxCpu, PeerDevice> {
        &mut self.engine
    }

    /// The migration machinery.
    pub fn migrator(&self) -> &Migrator {
        &self.migrator
    }

    /// Adds a device ([`Engine::add_device_with`]).
    pub fn add_device(&mut self, cfg: DeviceConfig, dev: PeerDevice) -> Result<(), MigrateError> {
        let p = dev.shared();
        self.engine.add_device_with(cfg, dev)?;
        self.migrator.push_peer(p);
        Ok(())
    }

    /// Removes a device ([`Engine::remove_device`]): first its granules
    /// come back to system memory (where its process cannot give them,
    /// they are lost and counted in [`MigrateStats::lost`]) and its
    /// read-only copies are dropped; then the engine removes it, and the
    /// migrator renumbers the devices above it as the engine does.
    pub fn remove_device(
        &mut self,
        name: &str,
    ) -> Result<svmap_svm::RemovedDevice<PeerDevice>, MigrateError> {
        let d = self
            .engine
            .space()
            .devices()
            .iter()
            .position(|x| x.config().name == name)
            .ok_or_else(|| {
                MigrateError::Engine(EngineError::Svm(svmap_svm::SvmError::UnknownDevice {
                    name: name.to_owned(),
                }))
            })?;
        // Under the migration lock from here to the engine's removal, so
        // that no granule moves to `d` in between.
        let mut st = lock(&self.migrator.shared.state);
        st.remove_peer(&self.migrator.shared.uffd, d);
        let removed = self.engine.remove_device(name);
        drop(st);
        Ok(removed?)
    }

    /// Frees the SVM range at `addr`: its granules on devices are dropped
    /// first (not written back), then [`Engine::svm_free`].
    pub fn free(&mut self, addr: u64) -> Result<(), MigrateError> {
        if let Some(v) = self.engine.alloc_at(addr) {
            self.migrator.release(v.start, v.end)?;
        }
        Ok(self.engine.svm_free(addr)?)
    }

    /// Sets attributes ([`Engine::set_attr`]); a prefetch location among
    /// them (the last one counts) migrates the range now
    /// ([`Runtime::prefetch`]); clearing read-mostly drops the read-only
    /// device copies of the range.
    pub fn set_attr(&mut self, start: u64, len: u64, changes: &[Attr]) -> Result<(), MigrateError> {
        self.engine.set_attr(start, len, changes)?;
        let unmostly = changes
            .iter()
            .any(|c| matches!(c, Attr::ClearFlags(f) if f.contains(Flags::READ_MOSTLY)));
        if unmostly
            && !self
                .engine
                .attrs()
                .at(start)
                .flags
                .contains(Flags::READ_MOSTLY)
        {
            self.migrator.drop_copies(start, start + len)?;
        }
        let prefetch = changes.iter().rev().find_map(|c| match c {
            Attr::PrefetchLocation(l) => Some(*l),
            _ => None,
        });
        if let Some(Some(loc)) = prefetch {
            self.prefetch(start, len, loc)?;
        }
        Ok(())
    }

    /// The attributes of a range ([`Engine::get_attr`]).
    pub fn get_attr(&self, start: u64, len: u64) -> Result<RangeAttrs, MigrateError> {
        Ok(self.engine.get_attr(start, len)?)
    }

    fn granule(&self, addr: u64) -> (u64, u64, Vec<usize>) {
        granule_of(&self.engine, addr)
    }

    /// Migrates `[start, start + len)` (SVM memory) to `loc` now, granule
    /// by granule (whole granules: a granule partly inside moves whole).
    /// To a device whose access attribute is none: [`MigrateError::NoAccess`].
    /// A read-mostly granule prefetched to a device gets a read-only copy
    /// there and stays in system memory.
    pub fn prefetch(&mut self, start: u64, len: u64, loc: Location) -> Result<(), MigrateError> {
        self.engine.get_attr(start, len)?;
        let end = start + len;
        let mut at = start & !(ATTR_PAGE - 1);
        while at < end {
            let (s, e, devs) = self.granule(at);
            match loc {
                Location::System => self.migrator.to_system(s, e)?,
                Location::Device(d) => {
                    let d = d as usize;
                    if d >= self.engine.devices().len() {
                        return Err(MigrateError::UnknownDevice(d));
                    }
                    let a = self.engine.attrs().at(s);
                    if a.access[d] == Access::None {
                        return Err(MigrateError::NoAccess { device: d, addr: s });
                    }
                    if a.flags.contains(Flags::READ_MOSTLY) {
                        self.migrator.to_copy(s, e, d)?;
                    } else {
                        self.migrator.to_device(s, e, d, &devs)?;
                    }
                }
            }
            at = e;
        }
        Ok(())
    }

    /// What device `d` touching `[addr, addr + len)` needs, granule by
    /// granule (see [`Want`]).
    fn plan(
        &self,
        d: usize,
        addr: u64,
        len: u64,
        write: bool,
    ) -> Result<Vec<(u64, u64, Want)>, MigrateError> {
        if d >= self.engine.devices().len() {
            return Err(MigrateError::UnknownDevice(d));
        }
        self.engine.get_attr(
            addr & !(ATTR_PAGE - 1),
            (len + (addr & (ATTR_PAGE - 1))).next_multiple_of(ATTR_PAGE),
        )?;
        let end = addr + len;
        let mut at = addr & !(ATTR_PAGE - 1);
        let mut out = Vec::new();
        while at < end {
            let (s, e, _) = self.granule(at);
            let a = self.engine.attrs().at(at);
            let here = match a.access[d] {
                Access::None => {
                    return Err(MigrateError::NoAccess {
                        device: d,
                        addr: at,
                    })
                }
                Access::MayMigrate => a.preferred == Some(Location::Device(d as u32)),
                Access::InPlace => false,
            };
            let want = if write {
                if a.flags.contains(Flags::DEVICE_READ_ONLY) {
                    return Err(MigrateError::ReadOnly {
                        device: d,
                        addr: at,
                    });
                }
                Want::Write(if here {
                    Place::Here
                } else {
                    Place::NotElsewhere
                })
            } else if a.flags.contains(Flags::READ_MOSTLY) {
                Want::Copy
            } else if here {
                Want::Here
            } else {
                Want::NotElsewhere
            };
            out.push((s, e, want));
            at = e;
        }
        Ok(out)
    }

    fn devices_of(&self, s: u64, e: u64) -> Vec<usize> {
        self.engine
            .svm_pieces_in(s, e)
            .flat_map(|(_, _, d)| d.to_vec())
            .collect()
    }

    /// Device `d` sums the `u64` words of `[addr, addr + len)` through its
    /// MMU, after the data is where its attributes say (`docs/attributes.md`,
    /// device accesses).
    pub fn device_sum(&mut self, d: usize, addr: u64, len: u64) -> Result<u64, MigrateError> {
        let plan = self.plan(d, addr, len, false)?;
        let r = self.migrator.with_device(
            d,
            &plan,
            |s, e| self.devices_of(s, e),
            |p| p.sum_u64(addr, len),
        )?;
        r.map_err(|err| MigrateError::Device {
            device: d,
            detail: err.to_string(),
        })
    }

    /// Device `d` copies `len` bytes from `src` to `dst` through its MMU,
    /// after the data of both ranges is where the attributes say.
    pub fn device_copy(
        &mut self,
        d: usize,
        dst: u64,
        src: u64,
        len: u64,
    ) -> Result<(), MigrateError> {
        let mut plan = self.plan(d, src, len, false)?;
        plan.extend(self.plan(d, dst, len, true)?);
        let r = self.migrator.with_device(
            d,
            &plan,
            |s, e| self.devices_of(s, e),
            |p| p.copy(dst, src, len),
        )?;
        r.map_err(|err| MigrateError::Device {
            device: d,
            detail: err.to_string(),
        })
    }

    /// Device `d` sums the `u64` words of `[addr, addr + len)`, placing
    /// data on the device's faults instead of before the request: the
    /// request goes to the device process as it is; a granule that another
    /// device holds is not resident for `d`, so the device faults there
    /// and the request answers with the fault; the runtime places that
    /// granule by the attributes (as [`Runtime::device_sum`] would) and has
    /// the device retry. A fault anywhere else is the request's error
    /// ([`MigrateError::Device`]), and so is a fault past one per page of
    /// the range plus two.
    pub fn device_sum_on_fault(
        &mut self,
        d: usize,
        addr: u64,
        len: u64,
    ) -> Result<u64, MigrateError> {
        let bound = len / ATTR_PAGE + 2;
        let mut faults = 0;
        loop {
            let r =
                self.migrator
                    .with_device(d, &[], |_, _| Vec::new(), |p| p.sum_u64(addr, len))?;
            match r {
                Ok(v) => return Ok(v),
                Err(PeerError::DeviceFault { addr: at, .. })
                    if faults < bound && self.migrator.held_elsewhere(at, d) =>
                {
                    faults += 1;
                    let plan = self.plan(d, at, 1, false)?;
                    self.migrator
                        .with_device(d, &plan, |s, e| self.devices_of(s, e), |_| ())?;
                    lock(&self.migrator.shared.state).stats.device_faults += 1;
                }
                Err(err) => {
                    return Err(MigrateError::Device {
                        device: d,
                        detail: err.to_string(),
                    })
                }
            }
        }
    }

    /// The counters.
    pub fn stats(&self) -> MigrateStats {
        self.migrator.stats()
    }
}

#[cfg(test)]
#[allow(unsafe_code)] // one volatile store into this test's own SVM range
mod tests {
    use super::*;
    use std::time::Instant;

    /// A page registered and write protected that the state does not know
    /// (a path that failed to clean up): the handler unregisters it, so
    /// the writer's store lands instead of faulting again forever.
    #[test]
    fn the_handler_releases_a_registered_page_the_state_does_not_know() {
        let cpu = LinuxCpu::new(false);
        let mut e = Engine::new(svmap_core::linux::MmConfig::default(), cpu);
        crate::seed_from_self(&mut e).unwrap();
        let mut rt = match Runtime::new(e) {
            Ok(rt) => rt,
            Err(MigrateError::Unavailable(u)) => {
                eprintln!("skipped: {u}");
                return;
            }
            Err(x) => panic!("{x}"),
        };
        let a = rt
            .engine_mut()
            // Top-down: far from the low windows other tests of this
            // binary reserve in parallel.
            .svm_alloc::<&str>(0x4000, None, &[], true)
            .unwrap();
        rt.engine_mut().cpu_backend_mut().write_u64(a, 1).unwrap();
        let uffd = &rt.migrator.shared.uffd;
        uffd.register(a, ATTR_PAGE).unwrap();
        uffd.write_protect(a, ATTR_PAGE, true).unwrap();
        let writer = std::thread::spawn(move || {
            // SAFETY: 8 aligned bytes of a live read-write SVM range of
            // this test; no Rust reference points there.
            unsafe { std::ptr::write_volatile(a as *mut u64, 2) }
        });
        let t0 = Instant::now();
        while !writer.is_finished() && t0.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(5));
        }
        let done = writer.is_finished();
        if !done {
            // Let the writer go before failing, so the test ends.
            let _ = uffd.unregister(a, ATTR_PAGE);
        }
        writer.join().unwrap();
        assert!(done, "the writer still faults on the page");
        assert_eq!(rt.engine().cpu_backend().read_u64(a).unwrap(), 2);
        assert!(rt.stats().spurious_faults >= 1);
    }
}

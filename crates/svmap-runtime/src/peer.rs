//! [`PeerDevice`]: a device backend that is a device process
//! (`svmap device-peer` in the direct mode).

use std::collections::BTreeMap;
use std::os::fd::AsFd;
use std::process::Command;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use svmap_linux::reserve::STACK_GUARD_GAP;
use svmap_peer::wire::RANGES_PER_PACKET;
use svmap_peer::{DirectPeer, PeerConfig, PeerError};
use svmap_svm::backend::BatchError;
use svmap_svm::{BackendError, DeviceBackend, Prot};

use crate::directory::HeapDirectory;

/// One device hosted by its own process. Every engine call is one request
/// on the socket and waits for its answer, at most the configured timeout:
///
/// | engine call | request |
/// | --- | --- |
/// | `map` (`map_start`, `map_finish`) | the first time a heap is used: `Attach` (its memfd, mapped at the same address in the peer); then `MapRange`, sent by `map_start` and awaited by `map_finish` (the engine asks every device of an allocation before it waits) |
/// | `invalidate` | `Invalidate{seq}`, acknowledged once the device's page-table entries and TLB entries of the range are gone |
/// | `protect` | `Protect` |
/// | `unmap` | `UnmapRange` (an attachment entirely inside the range is unmapped there too) |
/// | `invalidate_unmap` (a free) | `InvalidateUnmap{seq}`: every range of the batch invalidated, acknowledged and unmapped in one request (up to 4,000 ranges a request) |
/// | `map_region` | `MapRegion`: private memory of the peer, which this process cannot see |
/// | `own_mappings` (when the engine adds the device) | `Maps`: the peer's own mappings, held on the device so that no `Attach` or `MapRange` lands on them |
///
/// A peer that dies, does not answer in time or misbehaves is dead from
/// then on: the call fails with [`BackendError::Gone`] or
/// [`BackendError::Timeout`], and so does every later one (the engine
/// keeps a range whose invalidation was not acknowledged allocated).
#[derive(Debug)]
pub struct PeerDevice {
    /// Shared with the page migration of [`crate::migrate`], whose fault
    /// handler thread sends requests too (one at a time).
    peer: Arc<Mutex<DirectPeer>>,
    directory: HeapDirectory,
    /// Heaps attached in the peer: start -> (end, serial).
    attached: BTreeMap<u64, (u64, u64)>,
}

pub(crate) fn backend_error(e: PeerError) -> BackendError {
    match e {
        PeerError::PeerExited { status, during } => BackendError::Gone {
            detail: format!("the device process exited ({status}) during {during}"),
        },
        PeerError::Timeout { after, .. } => BackendError::Timeout {
            waited_ms: u64::try_from(after.as_millis()).unwrap_or(u64::MAX),
        },
        PeerError::Malformed { during, reason } => BackendError::Gone {
            detail: format!("malformed answer during {during} ({reason}); the process was killed"),
        },
        e => BackendError::Other(e.to_string()),
    }
}

impl PeerDevice {
    /// Starts `cmd` (`svmap device-peer`, or a program that ends up in
    /// [`svmap_peer::device::serve_from_env`]) hosting the device of `cfg`
    /// (VA width, page size, TLB entries; every wait bounded by
    /// `cfg.timeout`), mapping the heaps of `directory` (from
    /// [`crate::LinuxCpu::directory`]).
    pub fn spawn(
        cmd: Command,
        cfg: &PeerConfig,
        directory: HeapDirectory,
    ) -> Result<PeerDevice, PeerError> {
        Ok(PeerDevice {
            peer: Arc::new(Mutex::new(DirectPeer::spawn(cmd, cfg)?)),
            directory,
            attached: BTreeMap::new(),
        })
    }

    /// The device process (its requests beyond the engine's: sums, copies,
    /// list walks, counters, `kill`), locked for the caller.
    pub fn peer(&mut self) -> MutexGuard<'_, DirectPeer> {
        self.peer.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The device process, shared (for page migration).
    pub fn shared(&self) -> Arc<Mutex<DirectPeer>> {
        self.peer.clone()
    }

    fn locked(&self) -> MutexGuard<'_, DirectPeer> {
        self.peer.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The peer's pid.
    pub fn pid(&self) -> u32 {
        self.locked().pid()
    }

    /// System calls made on the peer's socket so far
    /// ([`DirectPeer::syscalls`]).
    pub fn syscalls(&self) -> u64 {
        self.locked().syscalls()
    }

    /// Requests sent to the device process so far (each one round trip).
    pub fn requests(&self) -> u64 {
        self.locked().requests()
    }

    /// Forgets the attachments that lie entirely inside `[start, end)`
    /// (the peer unmapped them with the range).
    fn forget_attachments(&mut self, start: u64, end: u64) {
        let gone: Vec<u64> = self
            .attached
            .range(start..end)
            .filter(|(_, &(e, _))| e <= end)
            .map(|(&s, _)| s)
            .collect();
        for s in gone {
            self.attached.remove(&s);
        }
    }

    /// Number of heaps attached in the peer.
    pub fn attachments(&self) -> usize {
        self.attached.len()
    }

    /// Makes sure the heap holding `[start, end)` is attached in the peer.
    fn attach_for(&mut self, start: u64, end: u64) -> Result<(), BackendError> {
        let h = self
            .directory
            .find(start, end)
            .ok_or(BackendError::NotOwned { start, end })?;
        if self.attached.get(&h.start) == Some(&(h.end, h.serial)) {
            return Ok(());
        }
        self.locked()
            .attach(h.start, h.end - h.start, h.fd.as_fd())
            .map_err(backend_error)?;
        // The peer dropped every earlier attachment that overlaps.
        let stale: Vec<u64> = self
            .attached
            .range(..h.end)
            .filter(|(_, &(e, _))| e > h.start)
            .map(|(&s, _)| s)
            .collect();
        for s in stale {
            self.attached.remove(&s);
        }
        self.attached.insert(h.start, (h.end, h.serial));
        Ok(())
    }
}

impl DeviceBackend for PeerDevice {
    fn map(&mut self, start: u64, end: u64) -> Result<(), BackendError> {
        self.attach_for(start, end)?;
        self.locked()
            .map_range(start, end - start, Prot::ReadWrite)
            .map(|_| ())
            .map_err(backend_error)
    }

    /// Attaches the heap if needed (one round trip, the first time), then
    /// sends `MapRange` without waiting.
    fn map_start(&mut self, start: u64, end: u64) -> Result<(), BackendError> {
        self.attach_for(start, end)?;
        self.locked()
            .send_map_range(start, end - start, Prot::ReadWrite)
            .map_err(backend_error)
    }

    fn map_finish(&mut self, _start: u64, _end: u64) -> Result<(), BackendError> {
        if !self.locked().in_flight() {
            return Ok(());
        }
        self.locked()
            .finish_map_range()
            .map(|_| ())
            .map_err(backend_error)
    }

    fn invalidate(&mut self, start: u64, end: u64) -> Result<(), BackendError> {
        self.locked()
            .invalidate(start, end - start)
            .map(|_| ())
            .map_err(backend_error)
    }

    fn protect(&mut self, start: u64, end: u64, prot: Prot) -> Result<(), BackendError> {
        self.locked()
            .protect(start, end - start, prot)
            .map_err(backend_error)
    }

    fn unmap(&mut self, start: u64, end: u64) -> Result<(), BackendError> {
        self.locked()
            .unmap_range(start, end - start)
            .map_err(backend_error)?;
        self.forget_attachments(start, end);
        Ok(())
    }

    /// One batch of at most 4,000 ranges is sent without waiting (the
    /// engine asks every device before it waits); a larger one is done
    /// here, whole.
    fn invalidate_unmap_start(&mut self, ranges: &[(u64, u64)]) -> Result<(), BatchError> {
        if ranges.len() > RANGES_PER_PACKET {
            return self.invalidate_unmap(ranges);
        }
        let batch: Vec<(u64, u64)> = ranges.iter().map(|&(s, e)| (s, e - s)).collect();
        self.locked()
            .send_invalidate_unmap(&batch)
            .map_err(|e| BatchError {
                done: 0,
                acknowledged: false,
                error: backend_error(e),
            })
    }

    fn invalidate_unmap_finish(&mut self, ranges: &[(u64, u64)]) -> Result<(), BatchError> {
        {
            let mut p = self.locked();
            if !p.in_flight() {
                return Ok(());
            }
            p.finish_invalidate_unmap().map_err(|e| BatchError {
                done: 0,
                acknowledged: false,
                error: backend_error(e),
            })?;
        }
        for &(s, e) in ranges {
            self.forget_attachments(s, e);
        }
        Ok(())
    }

    fn invalidate_unmap(&mut self, ranges: &[(u64, u64)]) -> Result<(), BatchError> {
        let mut batch = Vec::with_capacity(ranges.len().min(RANGES_PER_PACKET));
        for (k, chunk) in ranges.chunks(RANGES_PER_PACKET).enumerate() {
            batch.clear();
            batch.extend(chunk.iter().map(|&(s, e)| (s, e - s)));
            if let Err(e) = self.locked().invalidate_unmap(&batch) {
                return Err(BatchError {
                    done: k * RANGES_PER_PACKET,
                    acknowledged: false,
                    error: backend_error(e),
                });
            }
            for &(s, e) in chunk {
                self.forget_attachments(s, e);
            }
        }
        Ok(())
    }

    fn map_region(&mut self, start: u64, end: u64) -> Result<(), BackendError> {
        self.locked()
            .map_region(start, end - start)
            .map_err(backend_error)
    }

    /// The peer's own mappings (`Maps`: its `/proc/self/maps`), a stack
    /// with the guard gap below it.
    fn own_mappings(&mut self) -> Result<Vec<(u64, u64)>, BackendError> {
        let own = self.locked().own_maps().map_err(backend_error)?;
        Ok(own
            .into_iter()
            .map(|(s, e, down)| {
                if down {
                    (s.saturating_sub(STACK_GUARD_GAP), e)
                } else {
                    (s, e)
                }
            })
            .collect())
    }
}

//! The directory of a CPU backend's heaps: which memfd holds the memory of
//! which range, for device backends that map the same memory in another
//! process at the same address.

use std::collections::BTreeMap;
use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex, PoisonError};

use svmap_svm::BackendError;

/// One heap: `[start, end)` is offset `0..end - start` of its memfd.
#[derive(Clone, Debug)]
pub struct HeapEntry {
    /// First address.
    pub start: u64,
    /// End (exclusive).
    pub end: u64,
    /// A serial number, different for every heap ever published in this
    /// directory: a heap given up and made again at the same range has a
    /// new one, so a device knows its old attachment is stale.
    pub serial: u64,
    /// The heap's memfd (a duplicate the directory owns).
    pub fd: Arc<OwnedFd>,
}

#[derive(Debug, Default)]
struct Inner {
    heaps: BTreeMap<u64, HeapEntry>,
    next_serial: u64,
}

/// A shared, cloneable directory of heaps. [`crate::LinuxCpu`] publishes
/// every heap it makes and withdraws it when it gives the heap up;
/// [`crate::PeerDevice`] looks up the heap of each range it maps.
#[derive(Clone, Debug, Default)]
pub struct HeapDirectory(Arc<Mutex<Inner>>);

impl HeapDirectory {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // The map stays consistent whatever panicked while holding it.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Publishes the heap `[start, end)` with its memfd.
    pub(crate) fn publish(&self, start: u64, end: u64, fd: OwnedFd) -> Result<(), BackendError> {
        let mut g = self.lock();
        if g.heaps
            .range(..end)
            .next_back()
            .is_some_and(|(_, h)| h.end > start)
        {
            return Err(BackendError::Other(format!(
                "heap [{start:#x}, {end:#x}) overlaps a published one"
            )));
        }
        g.next_serial += 1;
        let serial = g.next_serial;
        g.heaps.insert(
            start,
            HeapEntry {
                start,
                end,
                serial,
                fd: Arc::new(fd),
            },
        );
        Ok(())
    }

    /// Withdraws the heap that starts at `start`, if any.
    pub(crate) fn withdraw(&self, start: u64) {
        self.lock().heaps.remove(&start);
    }

    /// The heap that holds all of `[start, end)`.
    pub fn find(&self, start: u64, end: u64) -> Option<HeapEntry> {
        self.lock()
            .heaps
            .range(..=start)
            .next_back()
            .map(|(_, h)| h)
            .filter(|h| end <= h.end)
            .cloned()
    }

    /// Number of published heaps.
    pub fn len(&self) -> usize {
        self.lock().heaps.len()
    }

    /// Whether no heap is published.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

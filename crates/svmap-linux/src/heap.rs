//! An SVM heap inside a [`Reservation`]: real pointers below `2^N`, each
//! buffer its own sealed memfd, so it can be passed to a peer process and
//! mapped there at the same address.
//!
//! ```text
//!  reservation (PROT_NONE, MAP_NORESERVE, owned by svmap)
//!  [----][ buf A: memfd A, MAP_SHARED|MAP_FIXED ][----][ buf B ][------------]
//!  ^res.addr                                                       res.end^
//!  alloc: memfd_create + ftruncate + F_ADD_SEALS(SHRINK|GROW) + mmap(MAP_FIXED)
//!  free:  mmap(PROT_NONE|MAP_NORESERVE|MAP_FIXED) over it + close(memfd)
//! ```
//!
//! `MAP_FIXED` is used only inside the reservation, which svmap owns: it
//! replaces svmap's own `PROT_NONE` pages, never anything else. `free` puts a
//! fresh `PROT_NONE` mapping back, so the range stays reserved, and closing
//! the memfd drops the last reference to its pages: resident and shmem
//! memory go back to the system at once.
//!
//! The index of live buffers is the core [`AddressMap`] (placement: lowest
//! exact fit, O(log n)) plus a `BTreeMap` from address to memfd. Every
//! backed buffer is one VMA (distinct files never merge), so the kernel's
//! `vm.max_map_count` (65530 by default), and `RLIMIT_NOFILE` for the kept
//! memfds, bound how many are live at once; `ENOMEM` from `mmap` at that
//! limit becomes [`Error::MapCountLimit`].
//!
//! Address 0 is never a buffer: a reservation that starts at 0 (possible
//! with `CAP_SYS_RAWIO`, which lowers the `mmap_min_addr` floor) keeps its
//! first page reserved and unused, so every buffer is a non-null pointer.

use std::collections::BTreeMap;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::ptr::NonNull;

use svmap_core::{AddressMap, FitError, FitRequest, SearchParams, VmaFlags};

use crate::error::Error;
use crate::reserve::{map_err, Reservation, ReserveRequest};
use crate::sys::{self, PAGE};

/// The SVM heap. Dropping it unmaps the whole reservation and closes every
/// memfd; pointers into it are then dangling.
#[derive(Debug)]
pub struct Heap {
    /// Live buffers: address -> (length, memfd).
    bufs: BTreeMap<u64, (u64, OwnedFd)>,
    /// The same buffers as VMAs, for the gap search.
    index: AddressMap,
    live_bytes: u64,
    res: Reservation,
}

impl Heap {
    /// A heap over an existing reservation.
    pub fn new(res: Reservation) -> Heap {
        Heap {
            bufs: BTreeMap::new(),
            index: AddressMap::new(),
            live_bytes: 0,
            res,
        }
    }

    /// Reserves `len_bytes` below `2^va_bits` (all or nothing) and makes a
    /// heap of it.
    pub fn below_bits(va_bits: u32, len_bytes: u64) -> Result<Heap, Error> {
        let req = ReserveRequest::below_bits(va_bits, len_bytes)?;
        Ok(Heap::new(Reservation::reserve(&req)?))
    }

    /// The reservation the heap lives in.
    pub fn reservation(&self) -> &Reservation {
        &self.res
    }

    /// Number of live buffers.
    pub fn live(&self) -> usize {
        self.bufs.len()
    }

    /// Bytes in live buffers (page rounded).
    pub fn live_bytes(&self) -> u64 {
        self.live_bytes
    }

    /// Allocates `len` bytes (rounded up to pages) aligned to `align` (a
    /// power of two; below a page means a page), zero-filled, readable and
    /// writable, at the lowest free address of the reservation (never
    /// address 0: the first page of a reservation at 0 stays unused).
    ///
    /// Four system calls: `memfd_create`, `ftruncate`, `fcntl(F_ADD_SEALS)`,
    /// `mmap(MAP_SHARED | MAP_FIXED)`.
    pub fn alloc(&mut self, len: u64, align: u64) -> Result<NonNull<u8>, Error> {
        let (addr, len) = lowest_fit(&self.index, self.res.addr(), self.res.end(), len, align)?;
        let align = align.max(PAGE);
        // Never null: the window starts at a page or above.
        let Some(ptr) = NonNull::new(addr as *mut u8) else {
            return Err(Error::HeapFull { len, align });
        };
        let fd = sys::memfd_sealed(c"svmap-svm", len).map_err(|errno| Error::Sys {
            call: "memfd_create/ftruncate/F_ADD_SEALS",
            addr: 0,
            len,
            errno,
        })?;
        self.res
            .range()
            .map_shared_fd(addr, len, fd.as_fd())
            .map_err(|errno| {
                // Over the reservation's own pages: the address space does
                // not grow.
                map_err(
                    "mmap(MAP_SHARED|MAP_FIXED) of an SVM buffer",
                    addr,
                    len,
                    0,
                    errno,
                )
            })?;
        // The fit came from this index, so the insert succeeds; were it to
        // fail, the buffer is taken back and the failure reported.
        if let Err(e) = self.index.insert(addr, addr + len, VmaFlags::NONE) {
            let _ = self.res.range().reset(addr, len);
            return Err(Error::InvalidArgument {
                what: format!("heap index: {e}"),
            });
        }
        self.bufs.insert(addr, (len, fd));
        self.live_bytes += len;
        Ok(ptr)
    }

    /// Frees the buffer starting at `ptr`: its pages are replaced by a fresh
    /// `PROT_NONE | MAP_NORESERVE` mapping (the range stays reserved) and its
    /// memfd is closed, returning the memory to the system. Two system calls.
    ///
    /// Any pointer into the buffer is dangling afterwards (accesses fault).
    pub fn free(&mut self, ptr: NonNull<u8>) -> Result<(), Error> {
        let addr = ptr.as_ptr() as u64;
        let Some(&(len, _)) = self.bufs.get(&addr) else {
            return Err(Error::NotAllocated { addr });
        };
        self.res.range().reset(addr, len).map_err(|errno| {
            map_err(
                "mmap(PROT_NONE|MAP_FIXED) over a freed SVM buffer",
                addr,
                len,
                0,
                errno,
            )
        })?;
        // Closing the memfd drops the last reference to its pages.
        drop(self.bufs.remove(&addr));
        self.live_bytes = self.live_bytes.saturating_sub(len);
        // A live buffer's range is non-empty, so unmap cannot fail.
        let _ = self.index.unmap(addr, addr + len);
        Ok(())
    }

    /// The memfd behind the buffer starting at `ptr` (to pass to a peer).
    pub fn memfd(&self, ptr: NonNull<u8>) -> Option<BorrowedFd<'_>> {
        self.bufs
            .get(&(ptr.as_ptr() as u64))
            .map(|(_, fd)| fd.as_fd())
    }

    /// The (page-rounded) length of the buffer starting at `ptr`.
    pub fn len_of(&self, ptr: NonNull<u8>) -> Option<u64> {
        self.bufs.get(&(ptr.as_ptr() as u64)).map(|&(l, _)| l)
    }

    /// The live buffers, `(address, length)`, in address order.
    pub fn buffers(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.bufs.iter().map(|(&a, &(l, _))| (a, l))
    }
}

/// Where a buffer of `len` bytes (rounded up to pages) aligned to `align`
/// (a power of two; below a page means a page) goes in `[low, high)` of a
/// heap whose live buffers are `index`: the lowest such address, never
/// page 0. Returns the address and the rounded length. Both heaps place
/// their buffers with it.
pub(crate) fn lowest_fit(
    index: &AddressMap,
    low: u64,
    high: u64,
    len: u64,
    align: u64,
) -> Result<(u64, u64), Error> {
    if len == 0 || !align.is_power_of_two() {
        return Err(Error::InvalidArgument {
            what: format!("alloc(len={len:#x}, align={align:#x})"),
        });
    }
    let align = align.max(PAGE);
    let len = len
        .checked_add(PAGE - 1)
        .ok_or_else(|| Error::InvalidArgument {
            what: format!("length {len:#x} overflows"),
        })?
        & !(PAGE - 1);
    let params = SearchParams {
        mmap_min_addr: 0,
        ..SearchParams::default()
    };
    let req = FitRequest {
        length: len,
        low: low.max(PAGE),
        high,
        align,
        align_offset: 0,
        topdown: false,
        respect_guard_gaps: false,
    };
    match index.find_fit(&req, &params) {
        Ok(a) => Ok((a, len)),
        Err(FitError::NoSpace) | Err(FitError::EmptyWindow { .. }) => {
            Err(Error::HeapFull { len, align })
        }
        Err(e) => Err(Error::InvalidArgument {
            what: e.to_string(),
        }),
    }
}

//! A sparse shared heap: one memfd per window, mapped once over the
//! window's reservation; buffers are ranges of it.
//!
//! ```text
//!  reservation [addr, end), owned by svmap
//!  one memfd of (end - addr) bytes, MAP_SHARED | MAP_FIXED over all of it
//!  [ buf A ][ free: hole ][ buf B ][ free: hole ..................... ]
//!  offset of a buffer in the memfd = its address - addr
//!  alloc: nothing but the index (guarded mode: one mprotect); punches
//!         the part of the pending batch it reuses, if any
//!  free:  the range joins the pending batch (guarded mode: + mprotect);
//!         the batch is punched, fallocate(PUNCH_HOLE | KEEP_SIZE) per
//!         coalesced run, once it holds more than the bound
//! ```
//!
//! Compared with [`crate::heap::Heap`] (one memfd, one VMA and four system
//! calls per buffer), a buffer here costs no system call, no descriptor
//! and no VMA: the whole window is one VMA and one descriptor, so
//! `vm.max_map_count` and `RLIMIT_NOFILE` do not bound the number of
//! buffers. The memfd is as large as the window but sparse: only touched
//! pages take memory, and freed pages are punched out of the file, so the
//! memory goes back (`RssShmem` falls) and the range reads zeros when it is
//! handed out again.
//!
//! **Punch batching.** A punch (`fallocate(PUNCH_HOLE)`) is the one system
//! call of a free and most of its cost, so frees are not punched one by
//! one: a freed range joins a batch of pending ranges (adjacent ones
//! coalesce), and the batch is punched, one call per coalesced run, as soon
//! as it holds more than the bound ([`DEFAULT_PUNCH_BATCH`], set with
//! [`SparseHeap::set_punch_batch`]; 0 punches every free at once) or more
//! than [`MAX_PENDING_RUNS`] runs. So the freed memory not yet returned
//! never exceeds the bound, whatever the frees. Pending pages are punched
//! before they are handed out again (a claim that overlaps the batch
//! punches the overlap first, so a new buffer always reads zeros), by
//! [`SparseHeap::flush`], and when the heap is dropped. Until then a freed
//! range's old contents may still be read through a stale pointer (in the
//! unguarded mode, which promises nothing about freed ranges).
//!
//! Another process maps the same memory by mapping the memfd
//! ([`SparseHeap::fd`]) at the same address, or one buffer at its offset
//! ([`SparseHeap::locate`]).
//!
//! **Guarded mode** keeps every free page `PROT_NONE`, so a CPU use after
//! free faults at once instead of reading zeros; it costs one `mprotect`
//! per alloc and per free, and a VMA for every run of live buffers between
//! free ranges.

use std::collections::BTreeMap;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use svmap_core::{AddressMap, VmaFlags};

use crate::error::Error;
use crate::reserve::Reservation;
use crate::sys::{self, Access, PAGE};

/// The default bound of the punch batch: 16 MiB of freed address range
/// not yet punched.
pub const DEFAULT_PUNCH_BATCH: u64 = 16 << 20;
/// The most coalesced runs the punch batch holds before it is punched.
pub const MAX_PENDING_RUNS: usize = 64;

/// Freed ranges of the memfd not punched yet: offsets, coalesced. Dropping
/// it punches them all (then closes the memfd).
#[derive(Debug)]
struct Punches {
    fd: OwnedFd,
    /// start offset -> end offset; runs never touch or overlap.
    runs: BTreeMap<u64, u64>,
    bytes: u64,
    bound: u64,
    /// System calls made since creation (punches, `mprotect`s).
    syscalls: u64,
}

impl Punches {
    fn punch(&mut self, off: u64, len: u64) -> Result<(), crate::error::Errno> {
        self.syscalls += 1;
        rustix::fs::fallocate(
            &self.fd,
            rustix::fs::FallocateFlags::PUNCH_HOLE | rustix::fs::FallocateFlags::KEEP_SIZE,
            off,
            len,
        )
        .map_err(Into::into)
    }

    /// Adds `[off, end)` (free, not pending) to the batch, coalescing.
    fn add(&mut self, mut off: u64, mut end: u64) {
        self.bytes += end - off;
        if let Some((&s, &e)) = self.runs.range(..=off).next_back() {
            if e == off {
                self.runs.remove(&s);
                off = s;
            }
        }
        if let Some(e) = self.runs.remove(&end) {
            end = e;
        }
        self.runs.insert(off, end);
    }

    /// The span from the start of the first to the end of the last pending
    /// run that overlaps `[off, end)`, if any: whole runs, so that a run is
    /// punched once and never left in pieces.
    fn span_within(&self, off: u64, end: u64) -> Option<(u64, u64)> {
        let first = match self.runs.range(..off).next_back() {
            Some((&s, &e)) if e > off => s,
            _ => off,
        };
        let mut it = self.runs.range(first..end);
        let (&s, &e) = it.next()?;
        let last_end = it.next_back().map_or(e, |(_, &e)| e);
        Some((s, last_end))
    }

    fn over_bound(&self) -> bool {
        self.bytes > self.bound || self.runs.len() > MAX_PENDING_RUNS
    }

    /// Punches the pending parts of `[off, end)`; what is left of a run
    /// outside it stays pending. On an error the run that failed stays
    /// pending whole.
    fn punch_within(&mut self, off: u64, end: u64) -> Result<(), (u64, u64, crate::error::Errno)> {
        self.take_within(off, end, true)
    }

    /// Takes the pending parts of `[off, end)` out of the batch, punching
    /// them first if `punch`.
    fn take_within(
        &mut self,
        off: u64,
        end: u64,
        punch: bool,
    ) -> Result<(), (u64, u64, crate::error::Errno)> {
        let first = match self.runs.range(..off).next_back() {
            Some((&s, &e)) if e > off => s,
            _ => off,
        };
        let hit: Vec<(u64, u64)> = self.runs.range(first..end).map(|(&s, &e)| (s, e)).collect();
        for (s, e) in hit {
            let (ps, pe) = (s.max(off), e.min(end));
            if punch {
                self.punch(ps, pe - ps)
                    .map_err(|errno| (ps, pe - ps, errno))?;
            }
            self.runs.remove(&s);
            self.bytes -= pe - ps;
            if s < ps {
                self.runs.insert(s, ps);
            }
            if pe < e {
                self.runs.insert(pe, e);
            }
        }
        Ok(())
    }
}

impl Drop for Punches {
    fn drop(&mut self) {
        // Best effort: a failed punch leaves pages in a file that closing
        // gives back anyway unless another process still maps it.
        let _ = self.punch_within(0, u64::MAX);
    }
}

/// The sparse shared heap over one reservation. Dropping it punches the
/// pending batch, unmaps the reservation and closes the memfd.
#[derive(Debug)]
pub struct SparseHeap {
    /// Live buffers (exact ranges), for the gap search and the frees.
    index: AddressMap,
    live_bytes: u64,
    guarded: bool,
    punches: Punches,
    res: Reservation,
}

fn sys_err(call: &'static str, addr: u64, len: u64, errno: crate::error::Errno) -> Error {
    Error::Sys {
        call,
        addr,
        len,
        errno,
    }
}

impl SparseHeap {
    /// Makes `res` a sparse heap: one memfd as large as the reservation
    /// (sealed against shrinking and growing), mapped `MAP_SHARED |
    /// MAP_FIXED` over all of it (svmap's own pages). With `guarded`, the
    /// whole range is then made `PROT_NONE` until allocated.
    pub fn new(mut res: Reservation, guarded: bool) -> Result<SparseHeap, Error> {
        let (addr, len) = (res.addr(), res.len());
        let fd = sys::memfd_sealed(c"svmap-sparse", len)
            .map_err(|e| sys_err("memfd_create", 0, len, e))?;
        res.map_shared_fd(addr, len, fd.as_fd())
            .map_err(|e| sys_err("mmap(MAP_SHARED|MAP_FIXED)", addr, len, e))?;
        if guarded {
            res.protect(addr, len, Access::None)
                .map_err(|e| sys_err("mprotect", addr, len, e))?;
        }
        Ok(SparseHeap {
            index: AddressMap::new(),
            live_bytes: 0,
            guarded,
            punches: Punches {
                fd,
                runs: BTreeMap::new(),
                bytes: 0,
                bound: DEFAULT_PUNCH_BATCH,
                syscalls: 0,
            },
            res,
        })
    }

    /// First address of the heap.
    pub fn start(&self) -> u64 {
        self.res.addr()
    }

    /// End of the heap (exclusive).
    pub fn end(&self) -> u64 {
        self.res.end()
    }

    /// Whether freed ranges are `PROT_NONE`.
    pub fn is_guarded(&self) -> bool {
        self.guarded
    }

    /// System calls made since the heap was set up: punches and
    /// `mprotect`s (not the set-up's own).
    pub fn syscalls(&self) -> u64 {
        self.punches.syscalls
    }

    /// Sets the bound of the punch batch in bytes (0: every free is
    /// punched at once) and punches the batch if it holds more.
    pub fn set_punch_batch(&mut self, bytes: u64) -> Result<(), Error> {
        self.punches.bound = bytes;
        if self.punches.over_bound() {
            self.flush()?;
        }
        Ok(())
    }

    /// The bound of the punch batch in bytes.
    pub fn punch_batch(&self) -> u64 {
        self.punches.bound
    }

    /// Freed bytes not punched yet (at most [`Self::punch_batch`]).
    pub fn pending_bytes(&self) -> u64 {
        self.punches.bytes
    }

    /// Punches every pending freed range now: their memory goes back.
    /// Runs separated only by free pages are punched in one call.
    pub fn flush(&mut self) -> Result<(), Error> {
        let start = self.start();
        while let Some((&s, &e0)) = self.punches.runs.iter().next() {
            let mut e = e0;
            for (&s2, &e2) in self.punches.runs.range(e..) {
                if self.index.first_overlap(start + e, start + s2).is_some() {
                    break;
                }
                e = e2;
            }
            self.punches
                .punch(s, e - s)
                .map_err(|err| sys_err("fallocate(PUNCH_HOLE)", start + s, e - s, err))?;
            let _ = self.punches.take_within(s, e, false);
        }
        Ok(())
    }

    /// Number of live buffers.
    pub fn live(&self) -> usize {
        self.index.len()
    }

    /// Bytes in live buffers (page rounded).
    pub fn live_bytes(&self) -> u64 {
        self.live_bytes
    }

    /// The memfd behind the whole heap: offset `o` is address `start() + o`.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.punches.fd.as_fd()
    }

    /// The memfd, the offset and the length of the live buffer that
    /// contains `addr`, for mapping it in another process.
    pub fn locate(&self, addr: u64) -> Option<(BorrowedFd<'_>, u64, u64)> {
        let v = self.index.vma_at(addr)?;
        Some((self.fd(), v.start - self.start(), v.end - v.start))
    }

    /// Allocates `len` bytes (rounded up to pages) aligned to `align` (a
    /// power of two; below a page means a page), zero-filled, read-write,
    /// at the lowest free address (never address 0). No system call
    /// (guarded mode: one `mprotect`). Returns the address.
    pub fn alloc(&mut self, len: u64, align: u64) -> Result<u64, Error> {
        let (addr, len) =
            crate::heap::lowest_fit(&self.index, self.start(), self.end(), len, align)?;
        self.claim(addr, len)?;
        Ok(addr)
    }

    /// Makes `[addr, addr + len)` a live buffer at exactly that address
    /// (the caller decided it): `InvalidArgument` unless it is page aligned
    /// and inside the heap, `HeapFull` if it overlaps a live buffer. No
    /// system call (guarded mode: one `mprotect`).
    pub fn claim(&mut self, addr: u64, len: u64) -> Result<(), Error> {
        let inside = len > 0
            && addr.is_multiple_of(PAGE)
            && len.is_multiple_of(PAGE)
            && addr >= self.start()
            && addr.checked_add(len).is_some_and(|e| e <= self.end());
        if !inside {
            return Err(Error::InvalidArgument {
                what: format!(
                    "[{addr:#x}, +{len:#x}) is not a page-aligned part of the heap [{:#x}, {:#x})",
                    self.start(),
                    self.end()
                ),
            });
        }
        if self.index.first_overlap(addr, addr + len).is_some() {
            return Err(Error::HeapFull { len, align: PAGE });
        }
        // A reused range reads zeros: punch the pending runs it overlaps,
        // whole, in one call over their span (the gaps between them are
        // free pages of the range: punched already or never touched).
        let off = addr - self.start();
        if let Some((ps, pe)) = self.punches.span_within(off, off + len) {
            self.punches
                .punch(ps, pe - ps)
                .map_err(|e| sys_err("fallocate(PUNCH_HOLE)", self.res.addr() + ps, pe - ps, e))?;
            let _ = self.punches.take_within(ps, pe, false);
        }
        if self.guarded {
            self.punches.syscalls += 1;
            self.res
                .protect(addr, len, Access::ReadWrite)
                .map_err(|e| sys_err("mprotect", addr, len, e))?;
        }
        self.index
            .insert(addr, len + addr, VmaFlags::NONE)
            .map_err(|e| Error::InvalidArgument {
                what: e.to_string(),
            })?;
        self.live_bytes += len;
        Ok(())
    }

    /// Frees the buffer that starts at `addr`: its pages are punched out of
    /// the memfd (memory back at once; the range reads zeros when reused)
    /// and, in guarded mode, made `PROT_NONE`. Returns its length.
    /// `NotAllocated` unless `addr` starts a live buffer.
    pub fn free(&mut self, addr: u64) -> Result<u64, Error> {
        let v = self
            .index
            .vma_at(addr)
            .filter(|v| v.start == addr)
            .ok_or(Error::NotAllocated { addr })?;
        let len = v.end - v.start;
        self.release(addr, len)?;
        Ok(len)
    }

    /// Frees every live page in `[addr, addr + len)` (a page-aligned part
    /// of the heap), splitting buffers that straddle its edges: punches the
    /// whole range out of the memfd and, in guarded mode, makes it
    /// `PROT_NONE`.
    pub fn release(&mut self, addr: u64, len: u64) -> Result<(), Error> {
        let end = addr.saturating_add(len);
        if len == 0
            || !addr.is_multiple_of(PAGE)
            || !len.is_multiple_of(PAGE)
            || addr < self.start()
            || end > self.end()
        {
            return Err(Error::InvalidArgument {
                what: format!("release [{addr:#x}, +{len:#x}) outside the heap"),
            });
        }
        let off = addr - self.start();
        // Pending parts of the range rejoin the batch with the rest of it.
        if !self.punches.runs.is_empty() {
            let _ = self.punches.take_within(off, off + len, false);
        }
        if self.guarded {
            self.punches.syscalls += 1;
            self.res
                .protect(addr, len, Access::None)
                .map_err(|e| sys_err("mprotect", addr, len, e))?;
        }
        let before: u64 = self
            .index
            .range(addr, end)
            .map(|v| v.end.min(end) - v.start.max(addr))
            .sum();
        self.index
            .unmap(addr, end)
            .map_err(|e| Error::InvalidArgument {
                what: e.to_string(),
            })?;
        self.live_bytes -= before;
        self.punches.add(off, off + len);
        if self.punches.over_bound() {
            self.flush()?;
        }
        Ok(())
    }

    /// Changes the CPU access of `[addr, addr + len)` (a part of the heap)
    /// with one `mprotect`.
    pub fn protect(&mut self, addr: u64, len: u64, access: Access) -> Result<(), Error> {
        self.punches.syscalls += 1;
        self.res
            .protect(addr, len, access)
            .map_err(|e| sys_err("mprotect", addr, len, e))
    }

    /// Gives the heap up without unmapping it (the process lost the range
    /// by other means); the memfd is closed.
    pub fn leak(self) {
        self.res.leak();
    }
}

//! The Linux backend on this process's real address space:
//! `svmap_reservation_t` (a `PROT_NONE` window below `2^N`) and
//! `svmap_heap_t` (memfd-backed buffers inside one, real pointers below
//! `2^N`).

use std::ffi::{c_int, c_void};
use std::os::fd::AsRawFd;
use std::ptr::NonNull;

use svmap_linux::error::Error;
use svmap_linux::heap::Heap;
use svmap_linux::reserve::{Reservation, ReserveRequest};

use crate::svmap_status_t::{self, *};
use crate::{ffi_status, ffi_value, handle, status_of_errno, Failure, Out};

/// A reserved window of this process's address space (one `PROT_NONE |
/// MAP_NORESERVE` mapping: no memory, and the kernel places nothing else
/// there). Owned by the caller from `svmap_reservation_new*` to
/// `svmap_reservation_delete` (which unmaps it) or `svmap_heap_new_in`; not
/// thread-safe.
#[derive(Debug)]
pub struct svmap_reservation_t {
    res: Reservation,
}

/// An SVM heap: real memory below `2^N`, each buffer its own sealed memfd
/// so that another process can map it at the same address. Owned by the
/// caller from `svmap_heap_new*` to `svmap_heap_delete`, which unmaps the
/// whole window (every pointer into it then dangles); not thread-safe.
#[derive(Debug)]
pub struct svmap_heap_t {
    heap: Heap,
}

/// The status and message of a Linux-backend error.
pub(crate) fn linux_failure(e: Error) -> Failure {
    let status = match &e {
        Error::Sys { errno, .. } => status_of_errno(errno.0),
        Error::PermissionDenied { .. } => SVMAP_EPERM,
        Error::NoSuchProcess { .. } | Error::FenceLibraryNotFound { .. } => SVMAP_ENOENT,
        Error::MapCountLimit { .. }
        | Error::AddressSpaceLimit { .. }
        | Error::WindowFull { .. }
        | Error::HeapFull { .. } => SVMAP_ENOMEM,
        Error::RetriesExhausted { .. } => SVMAP_EEXIST,
        Error::InvalidArgument { .. } | Error::NotAllocated { .. } => SVMAP_EINVAL,
        Error::Io { .. }
        | Error::ProcessExited { .. }
        | Error::Malformed { .. }
        | Error::Inconsistent { .. }
        | Error::Spawn { .. } => SVMAP_EIO,
    };
    Failure::new(status, e.to_string())
}

/// Reserves `length` bytes (rounded up to pages) below `2^va_bits` (20..=56,
/// clamped to the top of user space), all or nothing, at the lowest free
/// place that keeps clear of stack guard gaps. Returns an owned handle, or
/// NULL with the last error set (`SVMAP_ENOMEM`-class: no such free range).
#[no_mangle]
pub extern "C" fn svmap_reservation_new(
    va_bits: u32,
    length: u64,
) -> Option<Box<svmap_reservation_t>> {
    ffi_value(None, || {
        let req = ReserveRequest::below_bits(va_bits, length).map_err(linux_failure)?;
        let res = Reservation::reserve(&req).map_err(linux_failure)?;
        Ok(Some(Box::new(svmap_reservation_t { res })))
    })
}

/// Reserves exactly `[addr, addr + length)` (`MAP_FIXED_NOREPLACE`): NULL
/// with `SVMAP_EEXIST` in the last error if anything is mapped there.
#[no_mangle]
pub extern "C" fn svmap_reservation_new_at(
    addr: u64,
    length: u64,
) -> Option<Box<svmap_reservation_t>> {
    ffi_value(None, || {
        let res = Reservation::at(addr, length).map_err(linux_failure)?;
        Ok(Some(Box::new(svmap_reservation_t { res })))
    })
}

/// Deletes a reservation: unmaps the window. Takes ownership; NULL is fine.
#[no_mangle]
pub extern "C" fn svmap_reservation_delete(res: Option<Box<svmap_reservation_t>>) {
    ffi_value((), || {
        drop(res);
        Ok(())
    })
}

/// The first address of the reservation (0 for NULL).
#[no_mangle]
pub extern "C" fn svmap_reservation_addr(res: Option<&svmap_reservation_t>) -> u64 {
    ffi_value(0, || Ok(handle(res, "res")?.res.addr()))
}

/// The reserved length in bytes (0 for NULL).
#[no_mangle]
pub extern "C" fn svmap_reservation_len(res: Option<&svmap_reservation_t>) -> u64 {
    ffi_value(0, || Ok(handle(res, "res")?.res.len()))
}

/// A heap over a new reservation of `length` bytes below `2^va_bits` (see
/// `svmap_reservation_new`). Returns an owned handle, or NULL with the last
/// error set. Free it with `svmap_heap_delete`.
#[no_mangle]
pub extern "C" fn svmap_heap_new(va_bits: u32, length: u64) -> Option<Box<svmap_heap_t>> {
    ffi_value(None, || {
        let heap = Heap::below_bits(va_bits, length).map_err(linux_failure)?;
        Ok(Some(Box::new(svmap_heap_t { heap })))
    })
}

/// A heap over the reservation `res`, whose ownership passes to the heap
/// (even on failure; do not delete `res` afterwards). NULL `res`: NULL with
/// `SVMAP_EINVAL`.
#[no_mangle]
pub extern "C" fn svmap_heap_new_in(
    res: Option<Box<svmap_reservation_t>>,
) -> Option<Box<svmap_heap_t>> {
    ffi_value(None, || {
        let r = handle(res, "res")?;
        Ok(Some(Box::new(svmap_heap_t {
            heap: Heap::new(r.res),
        })))
    })
}

/// Deletes a heap: unmaps its window and closes every buffer's memfd (every
/// pointer into it dangles). Takes ownership; NULL is fine.
#[no_mangle]
pub extern "C" fn svmap_heap_delete(heap: Option<Box<svmap_heap_t>>) {
    ffi_value((), || {
        drop(heap);
        Ok(())
    })
}

/// Allocates `length` bytes (rounded up to pages) aligned to `align` (a
/// power of two; 0 or less than a page: a page), zero-filled, readable and
/// writable, at the lowest free address of the heap, and writes the pointer
/// to `*out_ptr`. The pointer lies below the heap's `2^va_bits`.
/// `SVMAP_ENOMEM` when the heap has no room (or the process has too many
/// mappings), `SVMAP_EINVAL` for a zero length or a bad alignment.
///
/// # Safety
///
/// `out_ptr` is NULL (`SVMAP_EINVAL`) or valid for writing a `void *`.
#[no_mangle]
pub unsafe extern "C" fn svmap_heap_alloc(
    heap: Option<&mut svmap_heap_t>,
    length: u64,
    align: u64,
    out_ptr: *mut *mut c_void,
) -> svmap_status_t {
    ffi_status(|| {
        // SAFETY: the caller's contract for `out_ptr`.
        let out = unsafe { Out::new(out_ptr, "out_ptr") }?;
        let h = handle(heap, "heap")?;
        let align = if align == 0 { 1 } else { align };
        let p = h.heap.alloc(length, align).map_err(linux_failure)?;
        out.write(p.as_ptr().cast());
        Ok(())
    })
}

fn buffer_ptr(ptr: *mut c_void) -> Result<NonNull<u8>, Failure> {
    NonNull::new(ptr.cast()).ok_or_else(|| Failure::null("ptr"))
}

/// Frees the buffer that starts at `ptr`: its pages go back to the system
/// and the range stays reserved (accesses fault). `SVMAP_EINVAL` if `ptr`
/// does not start a live buffer of this heap. (`_dealloc` releases a
/// buffer inside the handle; `svmap_heap_delete` destroys the handle.)
#[no_mangle]
pub extern "C" fn svmap_heap_dealloc(
    heap: Option<&mut svmap_heap_t>,
    ptr: *mut c_void,
) -> svmap_status_t {
    ffi_status(|| {
        let h = handle(heap, "heap")?;
        h.heap.free(buffer_ptr(ptr)?).map_err(linux_failure)
    })
}

/// Writes the memfd behind the buffer that starts at `ptr` to `*out_fd`,
/// to pass to another process (which maps it `MAP_SHARED | MAP_FIXED` at
/// the same address). The heap keeps owning it: the descriptor is valid
/// until the buffer is deallocated or the heap freed; `dup` it to keep it.
/// `SVMAP_EINVAL` if `ptr` does not start a live buffer.
///
/// # Safety
///
/// `out_fd` is NULL (`SVMAP_EINVAL`) or valid for writing an `int`.
#[no_mangle]
pub unsafe extern "C" fn svmap_heap_memfd(
    heap: Option<&svmap_heap_t>,
    ptr: *mut c_void,
    out_fd: *mut c_int,
) -> svmap_status_t {
    ffi_status(|| {
        // SAFETY: the caller's contract for `out_fd`.
        let out = unsafe { Out::new(out_fd, "out_fd") }?;
        let h = handle(heap, "heap")?;
        let p = buffer_ptr(ptr)?;
        let fd = h.heap.memfd(p).ok_or_else(|| {
            Failure::inval(format!(
                "{:#x} is not the start of a live buffer",
                p.as_ptr() as u64
            ))
        })?;
        out.write(fd.as_raw_fd());
        Ok(())
    })
}

/// The first address of the heap's window (0 for NULL).
#[no_mangle]
pub extern "C" fn svmap_heap_addr(heap: Option<&svmap_heap_t>) -> u64 {
    ffi_value(0, || Ok(handle(heap, "heap")?.heap.reservation().addr()))
}

/// The length of the heap's window in bytes (0 for NULL).
#[no_mangle]
pub extern "C" fn svmap_heap_len(heap: Option<&svmap_heap_t>) -> u64 {
    ffi_value(0, || Ok(handle(heap, "heap")?.heap.reservation().len()))
}

/// The number of live buffers (0 for NULL).
#[no_mangle]
pub extern "C" fn svmap_heap_live_count(heap: Option<&svmap_heap_t>) -> usize {
    ffi_value(0, || Ok(handle(heap, "heap")?.heap.live()))
}

/// The bytes in live buffers, page rounded (0 for NULL).
#[no_mangle]
pub extern "C" fn svmap_heap_live_bytes(heap: Option<&svmap_heap_t>) -> u64 {
    ffi_value(0, || Ok(handle(heap, "heap")?.heap.live_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every way of running out of address space or map slots is
    /// `SVMAP_ENOMEM`, with the backend's message naming the cause; a
    /// malformed `/proc` file is `SVMAP_EIO`.
    #[test]
    fn out_of_memory_causes_are_enomem_and_keep_their_message() {
        let cases = [
            Error::AddressSpaceLimit {
                call: "mmap",
                len: 1 << 30,
                vm_size: 3 << 30,
                limit: 4 << 30,
            },
            Error::MapCountLimit {
                call: "mmap",
                vmas: 65_529,
                max_map_count: 65_530,
            },
        ];
        for e in cases {
            let text = e.to_string();
            let f = linux_failure(e);
            assert_eq!(f.status, SVMAP_ENOMEM, "{text}");
            assert_eq!(f.msg, text);
        }
        let f = linux_failure(Error::ProcessExited {
            pid: 1,
            lines_read: 3,
        });
        assert_eq!(f.status, SVMAP_EIO);
    }
}

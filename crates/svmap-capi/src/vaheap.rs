//! `svmap_vaheap_t`: an exact, address-ordered allocator of address ranges
//! (the core [`svmap_core::VaHeap`]), for a driver that manages a GPU
//! virtual address space of its own, as Mesa's `util_vma_heap` does.
//!
//! The heap knows only its free holes: the caller gives it free space
//! with `svmap_vaheap_dealloc` (the whole range to manage first, then
//! every range it gives back), takes ranges with `svmap_vaheap_alloc*`,
//! and everything that is not free counts as in use.
//!
//! Handles and the request are taken as raw pointers so that a NULL or
//! misaligned one is refused with `SVMAP_EINVAL` before it is read.

use std::mem::MaybeUninit;

use svmap_core::{FitRequest, HeapError, VaHeap};

use crate::space::{core_fit_request, fit_failure, nocross_failure, svmap_fit_request_t};
use crate::svmap_status_t::{self, *};
use crate::{check_range, ffi_status, ffi_value, Failure, FfiResult, Out};

/// An address heap: a set of disjoint free holes `[start, end)` of the
/// 64-bit address space (no floor, no guard gaps), with exact lowest- and
/// highest-first aligned allocation. Owned by the caller from
/// `svmap_vaheap_new` to `svmap_vaheap_delete`; not thread-safe.
#[derive(Debug, Default)]
pub struct svmap_vaheap_t {
    heap: VaHeap,
}

// A handle may move between threads (the header's rule): keep it `Send`.
const _: () = {
    const fn assert_send<T: Send>() {}
    assert_send::<svmap_vaheap_t>();
};

/// One free hole `[start, end)` of an address heap (`svmap_vaheap_holes`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct svmap_vaheap_hole_t {
    /// First free byte.
    pub start: u64,
    /// One past the last free byte.
    pub end: u64,
}

/// The status of a refused change of the free space: a double free (a
/// range that meets free space) is an invalid argument, as a dealloc of
/// an address that starts no allocation is elsewhere; an exact allocation
/// over a range in use is `SVMAP_EEXIST`, as an overlapping map is.
fn heap_failure(what: &str, e: HeapError) -> Failure {
    let status = match e {
        HeapError::EmptyRange { .. } | HeapError::AlreadyFree { .. } => SVMAP_EINVAL,
        HeapError::NotFree { .. } => SVMAP_EEXIST,
        HeapError::TooManyHoles => SVMAP_ENOMEM,
    };
    Failure::new(status, format!("{what}: {e}"))
}

/// Checks that the pointer argument `p` named `what` is neither NULL nor
/// misaligned for a `T` (`SVMAP_EINVAL`).
fn checked<T>(p: *const T, what: &str) -> FfiResult<()> {
    if p.is_null() {
        return Err(Failure::null(what));
    }
    if !p.is_aligned() {
        return Err(Failure::inval(format!("{what} is not aligned")));
    }
    Ok(())
}

/// The heap behind a handle, for reading.
///
/// # Safety
///
/// `heap` is NULL, misaligned, or a live handle from `svmap_vaheap_new`
/// that no other thread uses during the call.
unsafe fn heap_ref<'a>(heap: *const svmap_vaheap_t) -> FfiResult<&'a VaHeap> {
    checked(heap, "heap")?;
    // SAFETY: non-null and aligned (checked); the caller's contract: a live
    // handle that nothing writes during the call.
    Ok(&unsafe { &*heap }.heap)
}

/// The heap behind a handle, for changing.
///
/// # Safety
///
/// As [`heap_ref`], and nothing else reads the handle during the call.
unsafe fn heap_mut<'a>(heap: *mut svmap_vaheap_t) -> FfiResult<&'a mut VaHeap> {
    checked(heap, "heap")?;
    // SAFETY: non-null and aligned (checked); the caller's contract: a live
    // handle used by this call alone.
    Ok(&mut unsafe { &mut *heap }.heap)
}

/// The body of the entry points that search: checks `out_addr` and `req`
/// (as `svmap_space_find_fit` checks a request, but with no floor: the
/// heap's free space is exactly what the caller gave it), runs `f` on the
/// core request (it checks the handle and searches) inside the boundary,
/// and writes the address it returns.
///
/// # Safety
///
/// `req` is NULL, misaligned, or valid for reading one request;
/// `out_addr` is NULL, misaligned, or valid for writing a `uint64_t`.
unsafe fn fit_entry(
    req: *const svmap_fit_request_t,
    out_addr: *mut u64,
    f: impl FnOnce(&FitRequest) -> FfiResult<u64>,
) -> svmap_status_t {
    ffi_status(|| {
        // SAFETY: the caller's contract for `out_addr`.
        let out = unsafe { Out::new(out_addr, "out_addr") }?;
        checked(req, "req")?;
        // SAFETY: non-null and aligned (checked), readable (the contract).
        let fit = core_fit_request(unsafe { &*req })?;
        out.write(f(&fit)?);
        Ok(())
    })
}

/// A new heap with no free space: give it the range it manages with
/// `svmap_vaheap_dealloc`. Returns an owned handle (NULL only if a bug in
/// svmap was caught). Free it with `svmap_vaheap_delete`.
#[no_mangle]
pub extern "C" fn svmap_vaheap_new() -> Option<Box<svmap_vaheap_t>> {
    ffi_value(None, || Ok(Some(Box::default())))
}

/// Deletes a heap. Takes ownership; NULL is fine, a misaligned pointer is
/// left alone (the last error says so).
///
/// # Safety
///
/// `heap` is NULL, misaligned, or a handle from `svmap_vaheap_new` not
/// deleted yet.
#[no_mangle]
pub unsafe extern "C" fn svmap_vaheap_delete(heap: *mut svmap_vaheap_t) {
    ffi_value((), || {
        if heap.is_null() {
            return Ok(());
        }
        checked(heap, "heap")?;
        // SAFETY: aligned and non-null (checked); the pointer came from
        // `Box` in `svmap_vaheap_new` (the caller's contract) and is dropped
        // once.
        drop(unsafe { Box::from_raw(heap) });
        Ok(())
    })
}

/// Adds `[start, end)` to the free space, merging it with the holes it
/// touches: the range a new heap manages, and every range given back
/// (any range wholly in use: part of an allocation, or several adjacent
/// ones). `SVMAP_EINVAL` for an empty or inverted range or one that meets
/// free space (a double free); `SVMAP_ENOMEM` when the heap would need
/// more holes than it can hold. Nothing changes on an error.
///
/// # Safety
///
/// `heap` is NULL (`SVMAP_EINVAL`), misaligned (`SVMAP_EINVAL`) or a live
/// handle used by this thread alone.
#[no_mangle]
pub unsafe extern "C" fn svmap_vaheap_dealloc(
    heap: *mut svmap_vaheap_t,
    start: u64,
    end: u64,
) -> svmap_status_t {
    ffi_status(|| {
        // SAFETY: the caller's contract for `heap`.
        let h = unsafe { heap_mut(heap) }?;
        check_range(start, end)?;
        h.free(start, end).map_err(|e| heap_failure("dealloc", e))
    })
}

/// Takes exactly `[start, end)`, which must lie inside one free hole.
/// `SVMAP_EEXIST` if any of it is in use (not free), `SVMAP_EINVAL` for an
/// empty or inverted range, `SVMAP_ENOMEM` when the heap would need more
/// holes than it can hold. Nothing changes on an error.
///
/// # Safety
///
/// `heap` as for `svmap_vaheap_dealloc`.
#[no_mangle]
pub unsafe extern "C" fn svmap_vaheap_alloc_at(
    heap: *mut svmap_vaheap_t,
    start: u64,
    end: u64,
) -> svmap_status_t {
    ffi_status(|| {
        // SAFETY: the caller's contract for `heap`.
        let h = unsafe { heap_mut(heap) }?;
        check_range(start, end)?;
        h.alloc_at(start, end)
            .map_err(|e| heap_failure("alloc_at", e))
    })
}

/// The exact fit `req` in the heap's free space, without taking it: the
/// lowest (with `req->topdown`, highest) `addr` with `[addr, addr +
/// req->length)` inside `[req->low, req->high)` and inside one hole, and
/// `addr % req->align == req->align_offset % req->align`. The heap has no
/// floor and no guard gaps (`req->respect_guard_gaps` must be 0 or 1 and
/// changes nothing). Writes the address to `*out_addr`. `SVMAP_ENOMEM` if
/// nothing fits, `SVMAP_EINVAL` for a zero length, an alignment that is
/// not a power of two, an inverted window (`req->low > req->high`) or a
/// bool byte other than 0 or 1.
///
/// # Safety
///
/// `heap` as for `svmap_vaheap_dealloc` (read only); `req` is NULL or
/// misaligned (`SVMAP_EINVAL`) or valid for reading one request;
/// `out_addr` is NULL or misaligned (`SVMAP_EINVAL`) or valid for writing
/// a `uint64_t`.
#[no_mangle]
pub unsafe extern "C" fn svmap_vaheap_find_fit(
    heap: *const svmap_vaheap_t,
    req: *const svmap_fit_request_t,
    out_addr: *mut u64,
) -> svmap_status_t {
    // SAFETY: the caller's contracts for `heap`, `req` and `out_addr`.
    unsafe {
        fit_entry(req, out_addr, |fit| {
            heap_ref(heap)?
                .find_fit(fit)
                .map_err(|e| fit_failure("find_fit", e))
        })
    }
}

/// `svmap_vaheap_find_fit`, whose range must also not cross a multiple of
/// `boundary` (0: no constraint), with the rules of
/// `svmap_space_find_fit_nocross`: `SVMAP_EINVAL` besides
/// `svmap_vaheap_find_fit`'s cases for a boundary that is neither 0 nor a
/// power of two, or one that no range of the length fits in between two
/// multiples (`(align_offset mod min(align, boundary)) + length >
/// boundary`); `SVMAP_ENOMEM` if no range satisfies every rule.
///
/// # Safety
///
/// As for `svmap_vaheap_find_fit`.
#[no_mangle]
pub unsafe extern "C" fn svmap_vaheap_find_fit_nocross(
    heap: *const svmap_vaheap_t,
    req: *const svmap_fit_request_t,
    boundary: u64,
    out_addr: *mut u64,
) -> svmap_status_t {
    // SAFETY: the caller's contracts for `heap`, `req` and `out_addr`.
    unsafe {
        fit_entry(req, out_addr, |fit| {
            heap_ref(heap)?
                .find_fit_nocross(fit, boundary)
                .map_err(|e| nocross_failure("find_fit_nocross", e))
        })
    }
}

/// `svmap_vaheap_find_fit`, then takes the range found: an allocator's
/// whole `alloc`. Writes the start of the range `[*out_addr, *out_addr +
/// req->length)`; the statuses of `svmap_vaheap_find_fit`, and
/// `SVMAP_ENOMEM` when the heap would need more holes than it can hold.
/// Nothing changes on an error. Give the range back with
/// `svmap_vaheap_dealloc`.
///
/// # Safety
///
/// As for `svmap_vaheap_find_fit`, and `heap` is not read by anything else
/// during the call.
#[no_mangle]
pub unsafe extern "C" fn svmap_vaheap_alloc(
    heap: *mut svmap_vaheap_t,
    req: *const svmap_fit_request_t,
    out_addr: *mut u64,
) -> svmap_status_t {
    // SAFETY: the caller's contracts for `heap`, `req` and `out_addr`.
    unsafe {
        fit_entry(req, out_addr, |fit| {
            heap_mut(heap)?
                .alloc(fit)
                .map_err(|e| fit_failure("alloc", e))
        })
    }
}

/// `svmap_vaheap_find_fit_nocross`, then takes the range found, as
/// `svmap_vaheap_alloc` does; the statuses of
/// `svmap_vaheap_find_fit_nocross` (nothing changes on an error).
///
/// # Safety
///
/// As for `svmap_vaheap_alloc`.
#[no_mangle]
pub unsafe extern "C" fn svmap_vaheap_alloc_nocross(
    heap: *mut svmap_vaheap_t,
    req: *const svmap_fit_request_t,
    boundary: u64,
    out_addr: *mut u64,
) -> svmap_status_t {
    // SAFETY: the caller's contracts for `heap`, `req` and `out_addr`.
    unsafe {
        fit_entry(req, out_addr, |fit| {
            heap_mut(heap)?
                .alloc_nocross(fit, boundary)
                .map_err(|e| nocross_failure("alloc_nocross", e))
        })
    }
}

/// The number of free holes (0 for a NULL or misaligned handle, with the
/// last error set).
///
/// # Safety
///
/// `heap` as for `svmap_vaheap_find_fit`.
#[no_mangle]
pub unsafe extern "C" fn svmap_vaheap_hole_count(heap: *const svmap_vaheap_t) -> usize {
    // SAFETY: the caller's contract for `heap`.
    ffi_value(0, || Ok(unsafe { heap_ref(heap) }?.hole_count()))
}

/// The number of free bytes (0 for a NULL or misaligned handle, with the
/// last error set).
///
/// # Safety
///
/// `heap` as for `svmap_vaheap_find_fit`.
#[no_mangle]
pub unsafe extern "C" fn svmap_vaheap_free_bytes(heap: *const svmap_vaheap_t) -> u64 {
    // SAFETY: the caller's contract for `heap`.
    ffi_value(0, || Ok(unsafe { heap_ref(heap) }?.free_bytes()))
}

/// Copies the free holes out in address order: the first `min(capacity,
/// count)` holes into `out_holes[0..]`, and the number of holes `count`
/// into `*out_count` (more than `capacity` means the array was too short:
/// call again with `svmap_vaheap_hole_count()` entries). `out_holes` may be
/// NULL when `capacity` is 0. `SVMAP_EINVAL` for a NULL or misaligned
/// `out_count`, or a NULL, misaligned or overflowing (`capacity` entries
/// do not fit in the address space) `out_holes` with a non-zero
/// `capacity`; nothing is written then.
///
/// # Safety
///
/// `heap` as for `svmap_vaheap_find_fit`; `out_holes` is valid for writing
/// `capacity` entries (unless refused as above); `out_count` is valid for
/// writing a `size_t` (unless NULL or misaligned).
#[no_mangle]
pub unsafe extern "C" fn svmap_vaheap_holes(
    heap: *const svmap_vaheap_t,
    out_holes: *mut svmap_vaheap_hole_t,
    capacity: usize,
    out_count: *mut usize,
) -> svmap_status_t {
    ffi_status(|| {
        // SAFETY: the caller's contract for `out_count`.
        let count = unsafe { Out::new(out_count, "out_count") }?;
        // SAFETY: the caller's contract for `heap`.
        let h = unsafe { heap_ref(heap) }?;
        // SAFETY: the caller's contract for `out_holes`.
        let dst = unsafe { out_array(out_holes, capacity, "out_holes") }?;
        for (slot, (start, end)) in dst.iter_mut().zip(h.holes()) {
            slot.write(svmap_vaheap_hole_t { start, end });
        }
        count.write(h.hole_count());
        Ok(())
    })
}

/// The array `(p, n)` an entry point writes into, checked: empty for a
/// count of 0 (then `p` may be anything), else `p` not NULL, aligned, and
/// `n` entries within `isize::MAX` bytes (`SVMAP_EINVAL` naming `what`).
///
/// # Safety
///
/// Unless refused, `p` is valid for writing `n` entries that nothing else
/// uses while the slice lives.
unsafe fn out_array<'a, T>(p: *mut T, n: usize, what: &str) -> FfiResult<&'a mut [MaybeUninit<T>]> {
    if n == 0 {
        return Ok(&mut []);
    }
    if n > isize::MAX as usize / std::mem::size_of::<T>().max(1) {
        return Err(Failure::inval(format!(
            "{n} entries of {what} overflow the address space"
        )));
    }
    checked(p, what)?;
    // SAFETY: non-null and aligned (checked), `n` entries span at most
    // isize::MAX bytes (checked), and the caller guarantees that they are
    // writable and unshared; `MaybeUninit` asks nothing of their contents.
    Ok(unsafe { std::slice::from_raw_parts_mut(p.cast::<MaybeUninit<T>>(), n) })
}

/// Forgets all free space (the heap is then as new).
///
/// # Safety
///
/// `heap` as for `svmap_vaheap_dealloc`.
#[no_mangle]
pub unsafe extern "C" fn svmap_vaheap_clear(heap: *mut svmap_vaheap_t) -> svmap_status_t {
    ffi_status(|| {
        // SAFETY: the caller's contract for `heap`.
        unsafe { heap_mut(heap) }?.clear();
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use std::ffi::CStr;
    use std::ptr;

    use super::*;
    use crate::space::svmap_space_t;
    use crate::{
        svmap_last_error_message, svmap_space_config_default, svmap_space_config_t,
        svmap_space_delete, svmap_space_find_fit, svmap_space_find_fit_nocross, svmap_space_map,
        svmap_space_new,
    };

    fn last() -> String {
        // SAFETY: a NUL-terminated string of this thread, valid until its
        // next svmap call.
        unsafe { CStr::from_ptr(svmap_last_error_message()) }
            .to_str()
            .unwrap()
            .to_owned()
    }

    /// A heap as C holds it, with one safe method per entry point.
    struct Heap(*mut svmap_vaheap_t);

    impl Heap {
        fn new() -> Heap {
            Heap(Box::into_raw(svmap_vaheap_new().expect("a new heap")))
        }
        fn with(holes: &[(u64, u64)]) -> Heap {
            let h = Heap::new();
            for &(s, e) in holes {
                assert_eq!(h.dealloc(s, e), SVMAP_OK, "{}", last());
            }
            h
        }
        fn dealloc(&self, s: u64, e: u64) -> svmap_status_t {
            // SAFETY: a live handle.
            unsafe { svmap_vaheap_dealloc(self.0, s, e) }
        }
        fn alloc_at(&self, s: u64, e: u64) -> svmap_status_t {
            // SAFETY: a live handle.
            unsafe { svmap_vaheap_alloc_at(self.0, s, e) }
        }
        /// The status and the out-parameter, which starts as a sentinel.
        fn find(&self, r: &svmap_fit_request_t) -> (svmap_status_t, u64) {
            let mut a = SENTINEL;
            // SAFETY: a live handle, a valid request and out-parameter.
            (unsafe { svmap_vaheap_find_fit(self.0, r, &mut a) }, a)
        }
        fn find_nc(&self, r: &svmap_fit_request_t, b: u64) -> (svmap_status_t, u64) {
            let mut a = SENTINEL;
            // SAFETY: as `find`.
            (
                unsafe { svmap_vaheap_find_fit_nocross(self.0, r, b, &mut a) },
                a,
            )
        }
        fn alloc(&self, r: &svmap_fit_request_t) -> (svmap_status_t, u64) {
            let mut a = SENTINEL;
            // SAFETY: as `find`.
            (unsafe { svmap_vaheap_alloc(self.0, r, &mut a) }, a)
        }
        fn alloc_nc(&self, r: &svmap_fit_request_t, b: u64) -> (svmap_status_t, u64) {
            let mut a = SENTINEL;
            // SAFETY: as `find`.
            (
                unsafe { svmap_vaheap_alloc_nocross(self.0, r, b, &mut a) },
                a,
            )
        }
        fn count(&self) -> usize {
            // SAFETY: a live handle.
            unsafe { svmap_vaheap_hole_count(self.0) }
        }
        fn free_bytes(&self) -> u64 {
            // SAFETY: a live handle.
            unsafe { svmap_vaheap_free_bytes(self.0) }
        }
        fn holes(&self) -> Vec<(u64, u64)> {
            let mut v = vec![svmap_vaheap_hole_t::default(); self.count()];
            let mut n = usize::MAX;
            // SAFETY: a live handle; `v` holds `v.len()` writable entries.
            let st = unsafe { svmap_vaheap_holes(self.0, v.as_mut_ptr(), v.len(), &mut n) };
            assert_eq!(st, SVMAP_OK, "{}", last());
            assert_eq!(n, v.len());
            v.iter().map(|h| (h.start, h.end)).collect()
        }
        fn clear(&self) -> svmap_status_t {
            // SAFETY: a live handle.
            unsafe { svmap_vaheap_clear(self.0) }
        }
    }

    impl Drop for Heap {
        fn drop(&mut self) {
            // SAFETY: the handle from svmap_vaheap_new, deleted once.
            unsafe { svmap_vaheap_delete(self.0) }
        }
    }

    const SENTINEL: u64 = 0x5eed_5eed;

    fn req(length: u64, low: u64, high: u64, align: u64) -> svmap_fit_request_t {
        svmap_fit_request_t {
            length,
            low,
            high,
            align,
            ..Default::default()
        }
    }

    fn top(r: svmap_fit_request_t) -> svmap_fit_request_t {
        svmap_fit_request_t { topdown: true, ..r }
    }

    /// The bytes of the C request `r` with the byte at `offset` (a bool
    /// field) set to `v`, as C code that fills a struct with `memset` can
    /// leave it; only ever passed on as a pointer, never read as a Rust
    /// value.
    fn raw_request(r: svmap_fit_request_t, offset: usize, v: u8) -> [u64; 8] {
        const _: () = assert!(std::mem::size_of::<svmap_fit_request_t>() <= 64);
        let mut buf = [0u64; 8];
        // SAFETY: `buf` is aligned for a request and large enough (checked
        // above); `offset` is a field's offset inside it.
        unsafe {
            buf.as_mut_ptr().cast::<svmap_fit_request_t>().write(r);
            buf.as_mut_ptr().cast::<u8>().add(offset).write(v);
        }
        buf
    }

    const LO: u64 = 0x1_0000;
    const HI: u64 = 0x100_0000;

    #[test]
    fn lowest_and_highest_first_with_several_alignments_then_all_given_back() {
        let h = Heap::with(&[(LO, HI)]);
        assert_eq!((h.count(), h.free_bytes()), (1, HI - LO));
        let all = req(1, 0, u64::MAX, 1);
        // The lowest page, then the first 64 KiB multiple above it.
        assert_eq!(h.alloc(&req(0x1000, 0, u64::MAX, 0x1000)), (SVMAP_OK, LO));
        assert_eq!(
            h.alloc(&req(0x3000, 0, u64::MAX, 0x1_0000)),
            (SVMAP_OK, 0x2_0000)
        );
        // The highest 1 MiB multiple whose range ends by HI.
        let r = top(req(0x2000, 0, u64::MAX, 0x10_0000));
        assert_eq!(h.find(&r), (SVMAP_OK, 0xf0_0000));
        assert_eq!(h.alloc(&r), (SVMAP_OK, 0xf0_0000));
        // An offset: the lowest a with a % 0x4000 == 0x800.
        let mut r = req(0x100, 0, u64::MAX, 0x4000);
        r.align_offset = 0x800;
        assert_eq!(h.alloc(&r), (SVMAP_OK, 0x1_4800));
        let want = [
            (0x1_1000, 0x1_4800),
            (0x1_4900, 0x2_0000),
            (0x2_3000, 0xf0_0000),
            (0xf0_2000, HI),
        ];
        assert_eq!(h.holes(), want);
        let taken = 0x1000 + 0x3000 + 0x2000 + 0x100;
        assert_eq!(h.free_bytes(), HI - LO - taken);
        // find_fit takes nothing.
        assert_eq!(h.find(&all), (SVMAP_OK, 0x1_1000));
        assert_eq!(h.find(&top(all)), (SVMAP_OK, HI - 1));
        assert_eq!(h.holes(), want);
        // Giving back merges every hole again.
        for (s, e) in [
            (0x1_4800, 0x1_4900),
            (LO, 0x1_1000),
            (0xf0_0000, 0xf0_2000),
            (0x2_0000, 0x2_3000),
        ] {
            assert_eq!(h.dealloc(s, e), SVMAP_OK, "{}", last());
        }
        assert_eq!(h.holes(), [(LO, HI)]);
        assert_eq!(last(), "");
    }

    #[test]
    fn a_double_free_is_refused_and_changes_nothing() {
        let h = Heap::with(&[(LO, HI)]);
        assert_eq!(h.alloc_at(0x2_0000, 0x3_0000), SVMAP_OK);
        let before = h.holes();
        assert_eq!(before, [(LO, 0x2_0000), (0x3_0000, HI)]);
        // The whole hole again, a part of it, a range that overlaps its
        // start, one that covers the allocation and a piece of a hole.
        for (s, e) in [
            (LO, 0x2_0000),
            (0x1_8000, 0x1_9000),
            (0x1_f000, 0x2_1000),
            (0x2_0000, 0x3_0001),
        ] {
            assert_eq!(h.dealloc(s, e), SVMAP_EINVAL, "[{s:#x}, {e:#x})");
            assert!(
                last().contains("dealloc") && last().contains("free hole"),
                "{}",
                last()
            );
            assert_eq!(h.holes(), before);
        }
        // Empty and inverted ranges.
        assert_eq!(h.dealloc(0x2_0000, 0x2_0000), SVMAP_EINVAL);
        assert_eq!(h.dealloc(0x3_0000, 0x2_0000), SVMAP_EINVAL);
        assert!(last().contains("inverted"), "{}", last());
        assert_eq!(h.holes(), before);
        // A part of the allocation, then the rest: accepted, merged.
        assert_eq!(h.dealloc(0x2_8000, 0x3_0000), SVMAP_OK);
        assert_eq!(h.holes(), [(LO, 0x2_0000), (0x2_8000, HI)]);
        assert_eq!(h.dealloc(0x2_0000, 0x2_8000), SVMAP_OK);
        assert_eq!(h.holes(), [(LO, HI)]);
    }

    #[test]
    fn alloc_at_takes_exactly_a_free_range_or_nothing() {
        let h = Heap::with(&[(LO, 0x8_0000), (0x9_0000, HI)]);
        let before = h.holes();
        // In use: outside every hole, across a hole's end, across the gap
        // between two holes, below the heap's range.
        for (s, e) in [
            (0x8_0000, 0x9_0000),
            (0x7_f000, 0x8_1000),
            (0x7_0000, 0xa_0000),
            (0, LO + 0x1000),
        ] {
            assert_eq!(h.alloc_at(s, e), SVMAP_EEXIST, "[{s:#x}, {e:#x})");
            assert!(last().contains("alloc_at"), "{}", last());
            assert_eq!(h.holes(), before);
        }
        assert_eq!(h.alloc_at(0x4_0000, 0x4_0000), SVMAP_EINVAL);
        assert_eq!(h.alloc_at(0x4_1000, 0x4_0000), SVMAP_EINVAL);
        assert!(last().contains("inverted"), "{}", last());
        assert_eq!(h.holes(), before);
        // The middle of a hole splits it; a hole's whole range removes it.
        assert_eq!(h.alloc_at(0x4_0000, 0x5_0000), SVMAP_OK);
        assert_eq!(h.alloc_at(0x9_0000, HI), SVMAP_OK);
        assert_eq!(h.holes(), [(LO, 0x4_0000), (0x5_0000, 0x8_0000)]);
        // Taken twice: in use.
        assert_eq!(h.alloc_at(0x4_0000, 0x4_1000), SVMAP_EEXIST);
    }

    #[test]
    fn every_fit_error_has_its_status_and_writes_nothing() {
        let h = Heap::with(&[(LO, HI)]);
        let before = h.holes();
        let ok = req(0x1000, 0, u64::MAX, 0x1000);
        let mut inverted = ok;
        (inverted.low, inverted.high) = (0x5_0000, 0x4_0000);
        let cases = [
            (req(0, 0, u64::MAX, 1), SVMAP_EINVAL, "zero length"),
            (
                req(0x1000, 0, u64::MAX, 0),
                SVMAP_EINVAL,
                "not a power of two",
            ),
            (
                req(0x1000, 0, u64::MAX, 3),
                SVMAP_EINVAL,
                "not a power of two",
            ),
            (
                req(0x1000, 0, u64::MAX, 0x3000),
                SVMAP_EINVAL,
                "not a power of two",
            ),
            (inverted, SVMAP_EINVAL, "inverted window"),
            // Longer than the window, than the heap, than everything.
            (
                req(0x2000, 0x1_0000, 0x1_1000, 1),
                SVMAP_ENOMEM,
                "too short",
            ),
            (
                req(HI, 0, u64::MAX, 1),
                SVMAP_ENOMEM,
                "no aligned placement",
            ),
            (req(u64::MAX, 0, u64::MAX, 1), SVMAP_ENOMEM, ""),
            // A window outside the heap, an alignment beyond it.
            (
                req(0x1000, HI, u64::MAX, 1),
                SVMAP_ENOMEM,
                "no aligned placement",
            ),
            (req(0x1000, 0, u64::MAX, 1 << 63), SVMAP_ENOMEM, ""),
        ];
        for (r, st, msg) in cases {
            for r in [r, top(r)] {
                assert_eq!(h.find(&r), (st, SENTINEL), "{r:?}");
                assert!(last().contains(msg), "{r:?}: {}", last());
                assert_eq!(h.alloc(&r), (st, SENTINEL), "{r:?}");
                assert!(last().contains(msg), "{r:?}: {}", last());
                assert_eq!(h.find_nc(&r, 0), (st, SENTINEL), "{r:?}");
                assert_eq!(h.alloc_nc(&r, 0), (st, SENTINEL), "{r:?}");
                assert_eq!(h.holes(), before);
            }
        }
        // Bool bytes other than 0 and 1, as C can leave them.
        let bools = [
            (
                std::mem::offset_of!(svmap_fit_request_t, topdown),
                2,
                "req->topdown is 2",
            ),
            (
                std::mem::offset_of!(svmap_fit_request_t, respect_guard_gaps),
                0xff,
                "req->respect_guard_gaps is 255",
            ),
        ];
        for (offset, v, msg) in bools {
            let raw = raw_request(ok, offset, v);
            let rq = raw.as_ptr().cast::<svmap_fit_request_t>();
            let mut a = SENTINEL;
            // SAFETY: a live handle; `rq` points to a whole request (whose
            // bool byte the call reads as a byte); a valid out-parameter.
            let sts = unsafe {
                [
                    svmap_vaheap_find_fit(h.0, rq, &mut a),
                    svmap_vaheap_find_fit_nocross(h.0, rq, 0, &mut a),
                    svmap_vaheap_alloc(h.0, rq, &mut a),
                    svmap_vaheap_alloc_nocross(h.0, rq, 0, &mut a),
                ]
            };
            assert_eq!(sts, [SVMAP_EINVAL; 4], "{msg}");
            assert!(last().contains(msg), "{}", last());
            assert_eq!(a, SENTINEL);
            assert_eq!(h.holes(), before);
        }
        // The status names the call.
        assert_eq!(h.alloc(&req(0, 0, 1, 1)).0, SVMAP_EINVAL);
        assert!(last().starts_with("alloc: "), "{}", last());
        assert_eq!(h.find_nc(&req(0, 0, 1, 1), 0).0, SVMAP_EINVAL);
        assert!(last().starts_with("find_fit_nocross: "), "{}", last());
    }

    #[test]
    fn nocross_keeps_ranges_inside_one_block() {
        const B: u64 = 0x10_0000;
        // Lowest first, the plain fit crosses B; highest first, 2B.
        let h = Heap::with(&[(0xf_f000, 0x10_2000), (0x1f_e000, 0x20_1000)]);
        let r = req(0x2000, 0, u64::MAX, 0x1000);
        assert_eq!(h.find(&r), (SVMAP_OK, 0xf_f000));
        assert_eq!(h.find_nc(&r, 0), (SVMAP_OK, 0xf_f000));
        assert_eq!(h.find_nc(&r, B), (SVMAP_OK, B));
        assert_eq!(h.find(&top(r)), (SVMAP_OK, 0x1f_f000));
        assert_eq!(h.find_nc(&top(r), B), (SVMAP_OK, 0x1f_e000));
        // Boundaries: not a power of two, shorter than the length, too
        // short for the offset every aligned start has in its block.
        let cases = [
            (3 * 0x1000, "power of two"),
            (0x1000, "crosses every multiple"),
        ];
        for (b, msg) in cases {
            assert_eq!(h.find_nc(&r, b), (SVMAP_EINVAL, SENTINEL));
            assert!(last().contains(msg), "{}", last());
            assert_eq!(h.alloc_nc(&r, b), (SVMAP_EINVAL, SENTINEL));
        }
        let mut off = req(0x900, 0, u64::MAX, 0x1000);
        off.align_offset = 0x800;
        assert_eq!(h.find_nc(&off, 0x1000), (SVMAP_EINVAL, SENTINEL));
        // The first start 0x800 into a page whose range stays in a block of
        // 0x2000: 0xff800 would cross 0x100000.
        assert_eq!(h.find_nc(&off, 0x2000), (SVMAP_OK, 0x10_0800));
        assert_eq!(h.find_nc(&r, u64::MAX), (SVMAP_EINVAL, SENTINEL));
        assert_eq!(h.find_nc(&r, 1 << 63), (SVMAP_OK, 0xf_f000));
        // Taking both, then no range of 0x2000 is left that does not
        // cross B.
        assert_eq!(h.alloc_nc(&r, B), (SVMAP_OK, B));
        assert_eq!(h.alloc_nc(&top(r), B), (SVMAP_OK, 0x1f_e000));
        assert_eq!(
            h.holes(),
            [(0xf_f000, B), (0x20_0000, 0x20_1000)],
            "what is left"
        );
        assert_eq!(h.dealloc(0x10_0000, 0x10_2000), SVMAP_OK);
        assert_eq!(h.alloc_at(0x10_1000, 0x10_2000), SVMAP_OK);
        // [0xff000, 0x101000): the only 0x2000 there crosses B.
        assert_eq!(h.find(&r), (SVMAP_OK, 0xf_f000));
        assert_eq!(h.alloc_nc(&r, B), (SVMAP_ENOMEM, SENTINEL));
        assert!(last().starts_with("alloc_nocross: "), "{}", last());
    }

    #[test]
    fn the_whole_64_bit_range_and_huge_lengths() {
        let h = Heap::with(&[(0, u64::MAX)]);
        assert_eq!((h.count(), h.free_bytes()), (1, u64::MAX));
        // Nothing can be added past it, or over it.
        assert_eq!(h.dealloc(0, u64::MAX), SVMAP_EINVAL);
        // The one start of 2^63 bytes aligned to 2^63 that ends by
        // u64::MAX is 0, lowest or highest first.
        let r = req(1 << 63, 0, u64::MAX, 1 << 63);
        assert_eq!(h.find(&top(r)), (SVMAP_OK, 0));
        assert_eq!(h.find(&r), (SVMAP_OK, 0));
        // The last byte that can be free, then everything.
        assert_eq!(
            h.alloc(&top(req(1, 0, u64::MAX, 1))),
            (SVMAP_OK, u64::MAX - 1)
        );
        assert_eq!(h.holes(), [(0, u64::MAX - 1)]);
        assert_eq!(h.alloc(&req(u64::MAX - 1, 0, u64::MAX, 1)), (SVMAP_OK, 0));
        assert_eq!((h.count(), h.free_bytes()), (0, 0));
        assert_eq!(h.alloc(&req(1, 0, u64::MAX, 1)), (SVMAP_ENOMEM, SENTINEL));
        assert_eq!(h.dealloc(0, u64::MAX), SVMAP_OK);
        assert_eq!(h.alloc(&req(u64::MAX, 0, u64::MAX, 1)), (SVMAP_OK, 0));
        assert!(h.holes().is_empty());
    }

    #[test]
    fn clear_forgets_everything() {
        let h = Heap::with(&[(LO, 0x2_0000), (0x3_0000, HI)]);
        assert_eq!(h.clear(), SVMAP_OK);
        assert_eq!((h.count(), h.free_bytes()), (0, 0));
        assert!(h.holes().is_empty());
        assert_eq!(h.find(&req(1, 0, u64::MAX, 1)), (SVMAP_ENOMEM, SENTINEL));
        assert_eq!(h.dealloc(LO, HI), SVMAP_OK, "as new");
        assert_eq!(h.holes(), [(LO, HI)]);
    }

    #[test]
    fn holes_copies_out_what_fits_and_counts_all() {
        let h = Heap::with(&[(0x1000, 0x2000), (0x3000, 0x4000), (0x5000, 0x6000)]);
        let mut n = usize::MAX;
        // A count only.
        // SAFETY: a live handle; no entries to write.
        let st = unsafe { svmap_vaheap_holes(h.0, ptr::null_mut(), 0, &mut n) };
        assert_eq!((st, n), (SVMAP_OK, 3));
        // Two of three: the lowest two, the third slot untouched.
        let mark = svmap_vaheap_hole_t { start: 7, end: 7 };
        let mut v = [mark; 3];
        // SAFETY: a live handle; `v` has room for 2 entries (and more).
        let st = unsafe { svmap_vaheap_holes(h.0, v.as_mut_ptr(), 2, &mut n) };
        assert_eq!((st, n), (SVMAP_OK, 3));
        let want = |s, e| svmap_vaheap_hole_t { start: s, end: e };
        assert_eq!(v, [want(0x1000, 0x2000), want(0x3000, 0x4000), mark]);
        // More room than holes.
        let mut w = [mark; 5];
        // SAFETY: as above, room for 5.
        let st = unsafe { svmap_vaheap_holes(h.0, w.as_mut_ptr(), 5, &mut n) };
        assert_eq!((st, n), (SVMAP_OK, 3));
        assert_eq!(w[2], want(0x5000, 0x6000));
        assert_eq!(w[3..], [mark, mark]);

        // Refused, writing nothing: a NULL array with room, a misaligned
        // one, a capacity no array can have, NULL or misaligned count.
        let mut buf = [0u64; 5];
        let mis = buf.as_mut_ptr().cast::<u8>().wrapping_add(4);
        let mis = mis.cast::<svmap_vaheap_hole_t>();
        assert!(!mis.is_aligned());
        let mut n = usize::MAX;
        let refused: [(*mut svmap_vaheap_hole_t, usize, &str); 3] = [
            (ptr::null_mut(), 1, "out_holes is NULL"),
            (mis, 2, "out_holes is not aligned"),
            (w.as_mut_ptr(), usize::MAX, "overflow"),
        ];
        for (p, cap, msg) in refused {
            // SAFETY: a live handle; each array is refused before it is
            // written.
            let st = unsafe { svmap_vaheap_holes(h.0, p, cap, &mut n) };
            assert_eq!((st, n), (SVMAP_EINVAL, usize::MAX));
            assert!(last().contains(msg), "{}", last());
        }
        assert_eq!(buf, [0; 5]);
        assert_eq!(w[3..], [mark, mark]);
        let mut cbuf = [0u64; 2];
        let mis_n = cbuf
            .as_mut_ptr()
            .cast::<u8>()
            .wrapping_add(1)
            .cast::<usize>();
        for (p, msg) in [
            (ptr::null_mut(), "out_count is NULL"),
            (mis_n, "not aligned"),
        ] {
            let mut x = [mark; 3];
            // SAFETY: a live handle; the count pointer is refused first.
            let st = unsafe { svmap_vaheap_holes(h.0, x.as_mut_ptr(), 3, p) };
            assert_eq!(st, SVMAP_EINVAL);
            assert!(last().contains(msg), "{}", last());
            assert_eq!(x, [mark; 3]);
        }
        assert_eq!(cbuf, [0; 2]);
    }

    #[test]
    fn null_and_misaligned_handles_and_pointers_are_refused() {
        let h = Heap::with(&[(LO, HI)]);
        let before = h.holes();
        assert!(std::mem::align_of::<svmap_vaheap_t>() > 1);
        // A pointer one byte into the live heap: misaligned, never read.
        let mis = h.0.cast::<u8>().wrapping_add(1).cast::<svmap_vaheap_t>();
        let r = req(0x1000, 0, u64::MAX, 1);
        for (p, msg) in [
            (ptr::null_mut(), "heap is NULL"),
            (mis, "heap is not aligned"),
        ] {
            let mut a = SENTINEL;
            let mut n = 9usize;
            let mut v = [svmap_vaheap_hole_t::default(); 1];
            // SAFETY: each call refuses the NULL or misaligned handle
            // before reading it; the other pointers are valid.
            let sts = unsafe {
                [
                    svmap_vaheap_dealloc(p, 0x1000, 0x2000),
                    svmap_vaheap_alloc_at(p, LO, LO + 0x1000),
                    svmap_vaheap_find_fit(p, &r, &mut a),
                    svmap_vaheap_find_fit_nocross(p, &r, 0, &mut a),
                    svmap_vaheap_alloc(p, &r, &mut a),
                    svmap_vaheap_alloc_nocross(p, &r, 0, &mut a),
                    svmap_vaheap_holes(p, v.as_mut_ptr(), 1, &mut n),
                    svmap_vaheap_clear(p),
                ]
            };
            for st in sts {
                assert_eq!(st, SVMAP_EINVAL);
            }
            assert!(last().contains(msg), "{}", last());
            assert_eq!((a, n), (SENTINEL, 9));
            // SAFETY: refused before reading, as above.
            assert_eq!(unsafe { svmap_vaheap_hole_count(p) }, 0);
            assert!(last().contains(msg), "{}", last());
            // SAFETY: as above.
            assert_eq!(unsafe { svmap_vaheap_free_bytes(p) }, 0);
            assert!(last().contains(msg), "{}", last());
        }
        // Deleting NULL is fine; a misaligned pointer is left alone.
        // SAFETY: NULL, then a pointer refused before it is used.
        unsafe { svmap_vaheap_delete(ptr::null_mut()) };
        assert_eq!(last(), "");
        // SAFETY: as above.
        unsafe { svmap_vaheap_delete(mis) };
        assert!(last().contains("heap is not aligned"), "{}", last());
        assert_eq!(h.holes(), before, "the live heap is untouched");

        // NULL and misaligned requests and out-parameters.
        let mut buf = [0u64; 8];
        let mis_req = buf.as_mut_ptr().cast::<u8>().wrapping_add(4);
        let mis_req = mis_req.cast::<svmap_fit_request_t>();
        let mis_out = buf.as_mut_ptr().cast::<u8>().wrapping_add(1).cast::<u64>();
        let mut a = SENTINEL;
        let calls: [(*const svmap_fit_request_t, *mut u64, &str); 4] = [
            (ptr::null(), &mut a, "req is NULL"),
            (mis_req, &mut a, "req is not aligned"),
            (&r, ptr::null_mut(), "out_addr is NULL"),
            (&r, mis_out, "out_addr is not aligned"),
        ];
        for (rq, out, msg) in calls {
            // SAFETY: a live handle; the NULL or misaligned pointer is
            // refused before it is read or written.
            let sts = unsafe {
                [
                    svmap_vaheap_find_fit(h.0, rq, out),
                    svmap_vaheap_find_fit_nocross(h.0, rq, 0, out),
                    svmap_vaheap_alloc(h.0, rq, out),
                    svmap_vaheap_alloc_nocross(h.0, rq, 0, out),
                ]
            };
            assert_eq!(sts, [SVMAP_EINVAL; 4], "{msg}");
            assert!(last().contains(msg), "{}", last());
        }
        assert_eq!((a, buf), (SENTINEL, [0; 8]));
        assert_eq!(h.holes(), before, "nothing was allocated");
    }

    /// A space whose VMAs are the complement of `holes` in `[0, end)`, with
    /// no floor.
    fn complement_space(holes: &[(u64, u64)], end: u64) -> Box<svmap_space_t> {
        let mut cfg = std::mem::MaybeUninit::<svmap_space_config_t>::uninit();
        // SAFETY: a valid place for the configuration.
        let st = unsafe { svmap_space_config_default(cfg.as_mut_ptr()) };
        assert_eq!(st, SVMAP_OK);
        // SAFETY: initialised by the successful call.
        let mut cfg = unsafe { cfg.assume_init() };
        cfg.mmap_min_addr = 0;
        let mut s = svmap_space_new(Some(&cfg)).unwrap();
        let mut at = 0;
        for &(hs, he) in holes.iter().chain([(end, end)].iter()) {
            if hs > at {
                assert_eq!(svmap_space_map(Some(&mut s), at, hs, 0), SVMAP_OK);
            }
            at = he;
        }
        s
    }

    /// The heap answers every request as the space whose VMAs are its
    /// complement does (the promise of `VaHeap`'s documentation), with
    /// the same statuses.
    #[test]
    fn answers_equal_the_spaces_on_the_complement() {
        const END: u64 = 1 << 40;
        let holes = [
            (0x1000, 0x3000),
            (0x1_0000, 0x2_f000),
            (0x30_1000, 0x50_0000),
            (0xff_f000, 0x140_0000),
            (0x1_0000_0000, 0x1_0020_0000),
            (0x7f_0000_0000, 0x80_0001_0000),
        ];
        let h = Heap::with(&holes);
        let space = complement_space(&holes, END);
        let windows = [
            (0, END),
            (0x2000, 0x30_0000),
            (0x1_8000, 0x80_0000),
            (0x100_0000, 0x1_0010_0000),
            (0x80_0000_0000, END),
        ];
        let mut compared = 0;
        let mut outcomes = std::collections::BTreeMap::new();
        for (low, high) in windows {
            for length in [1, 0x1000, 0x1_f000, 0x20_0000, 0x1_0000_0000] {
                for align in [1, 0x1000, 0x1_0000, 0x20_0000, 1 << 32, 3] {
                    for offset in [0, 0x800, 0x1_0000] {
                        for topdown in [false, true] {
                            let r = svmap_fit_request_t {
                                length,
                                low,
                                high,
                                align,
                                align_offset: offset,
                                topdown,
                                respect_guard_gaps: false,
                            };
                            let mut a = SENTINEL;
                            // SAFETY: a live space, a valid request and
                            // out-parameter.
                            let st =
                                unsafe { svmap_space_find_fit(Some(&space), Some(&r), &mut a) };
                            assert_eq!(h.find(&r), (st, a), "{r:?}");
                            *outcomes.entry(st as u32).or_insert(0) += 1;
                            for b in [0x2000, 0x10_0000, 1 << 33] {
                                let mut a = SENTINEL;
                                // SAFETY: as above.
                                let st = unsafe {
                                    svmap_space_find_fit_nocross(Some(&space), Some(&r), b, &mut a)
                                };
                                assert_eq!(h.find_nc(&r, b), (st, a), "{r:?} boundary {b:#x}");
                            }
                            compared += 1;
                        }
                    }
                }
            }
        }
        assert_eq!(compared, 5 * 5 * 6 * 3 * 2);
        // Not vacuous: most answers are placements, many are "no room".
        let placed = outcomes.get(&(SVMAP_OK as u32)).copied().unwrap_or(0);
        let no_room = outcomes.get(&(SVMAP_ENOMEM as u32)).copied().unwrap_or(0);
        assert!(
            placed >= compared / 3 && no_room >= compared / 6,
            "{outcomes:?}"
        );
        svmap_space_delete(Some(space));
    }

    /// A seeded churn of allocations (every alignment class, offsets, both
    /// orders, boundaries) and frees: the heap places every range where
    /// the space on the complement does, and refuses where it does.
    #[test]
    fn churn_allocates_as_the_space_on_the_complement() {
        const LO: u64 = 0x1_0000;
        const HI: u64 = LO + (256 << 20);
        let h = Heap::with(&[(LO, HI)]);
        let mut space = complement_space(&[(LO, HI)], 1 << 40);
        let mut rng = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = move || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let mut live: Vec<(u64, u64)> = Vec::new();
        let (mut placed, mut refused) = (0, 0);
        for _ in 0..3000 {
            if !live.is_empty() && next() % 3 == 0 {
                let (s, e) = live.swap_remove((next() % live.len() as u64) as usize);
                assert_eq!(h.dealloc(s, e), SVMAP_OK, "{}", last());
                assert_eq!(crate::svmap_space_unmap(Some(&mut space), s, e), SVMAP_OK);
                continue;
            }
            let align = 1 << (next() % 23);
            let r = svmap_fit_request_t {
                length: 1 + next() % (4 << 20),
                low: LO + next() % 0x10_0000,
                high: HI - next() % 0x10_0000,
                align,
                align_offset: if next() % 4 == 0 { next() % align } else { 0 },
                topdown: next() % 2 == 0,
                respect_guard_gaps: false,
            };
            let boundary = [0, 1 << 22, 1 << 24][(next() % 3) as usize];
            let mut want = SENTINEL;
            // SAFETY: a live space, a valid request and out-parameter.
            let st = unsafe {
                crate::svmap_space_allocate_nocross(Some(&mut space), Some(&r), boundary, &mut want)
            };
            assert_eq!(h.alloc_nc(&r, boundary), (st, want), "{r:?} {boundary:#x}");
            if st == SVMAP_OK {
                live.push((want, want + r.length));
                placed += 1;
            } else {
                refused += 1;
            }
        }
        assert!(
            placed > 500 && refused > 50,
            "{placed} placed, {refused} refused"
        );
        let used: u64 = live.iter().map(|(s, e)| e - s).sum();
        assert_eq!(h.free_bytes(), HI - LO - used);
        for (s, e) in live {
            assert_eq!(h.dealloc(s, e), SVMAP_OK, "{}", last());
        }
        assert_eq!(h.holes(), [(LO, HI)]);
        svmap_space_delete(Some(space));
    }
}

//! # svmap-capi: the C ABI of svmap
//!
//! Builds `libsvmap.so` and `libsvmap.a`; `include/svmap.h` is generated
//! from this crate by cbindgen (`tests/header.rs` fails when it is out of
//! date; `SVMAP_BLESS=1 cargo test -p svmap-capi --test header` rewrites
//! it). The header's opening comment is the reference for the rules below;
//! it comes from `cbindgen.toml`.
//!
//! - Objects: [`svmap_space_t`] (an address space and the gap search),
//!   [`svmap_svm_t`] (SVM spaces and devices), [`svmap_reservation_t`] and
//!   [`svmap_heap_t`] (the real address space of this process),
//!   [`svmap_peer_t`] (a device peer process at identical addresses), and
//!   trace replay (`svmap_replay_file`, `svmap_replay_buffer`). Each is an
//!   opaque handle; functions are named `svmap_<object>_<verb>`.
//! - Ownership: `svmap_<object>_new*` returns an owned handle or NULL (then
//!   [`svmap_last_error_message`] says why); `svmap_<object>_delete` takes
//!   ownership back and accepts NULL.
//! - Errors: every fallible function returns [`svmap_status_t`]; the
//!   message of the last failure on the calling thread is
//!   [`svmap_last_error_message`].
//! - Threads: a handle is not thread-safe; different handles may be used
//!   from different threads at once, and a handle may move between threads.
//! - No panic crosses the boundary: every entry point runs inside
//!   [`std::panic::catch_unwind`] ([`ffi_call`]), and a panic becomes
//!   [`svmap_status_t::SVMAP_INTERNAL`] with the panic message.
//!
//! # Rust types at the boundary
//!
//! A nullable owned return is `Option<Box<T>>` (NULL is `None`); `_delete`
//! takes `Option<Box<T>>`. Handle and input-struct arguments are
//! `Option<&T>` / `Option<&mut T>`: NULL is checked and reported as
//! `SVMAP_EINVAL`, anything else must be a valid, unaliased pointer (the
//! caller's side of the contract). Out-parameters are raw `*mut T`, checked
//! for NULL before anything changes, and written once at the end. C enums
//! that come *in* are plain `uint32_t` with `#define`d values, validated
//! here, so that no out-of-range value can reach a Rust enum.
#![allow(unsafe_code)] // the FFI boundary: every block has a `// SAFETY:` comment
#![allow(non_camel_case_types)] // C names: `svmap_space_t`, `SVMAP_OK`

use std::cell::RefCell;
use std::ffi::{c_char, c_int, CStr, CString};
use std::panic::{self, AssertUnwindSafe};
use std::ptr::NonNull;

mod attr;
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzzing;
mod linux;
mod peer;
mod replay;
mod runtime;
mod sigpipe;
mod space;
mod svm;
mod vaheap;

pub use attr::*;
pub use linux::*;
pub use peer::*;
pub use replay::*;
pub use runtime::*;
pub use space::*;
pub use svm::*;
pub use vaheap::*;

/// The result of a call. `SVMAP_OK` is 0; every other value is a failure
/// (or, for `svmap_svm_device_access`, a device fault) and
/// `svmap_last_error_message()` describes it.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum svmap_status_t {
    /// Success.
    SVMAP_OK = 0,
    /// An argument is invalid: a NULL pointer, an empty or unaligned range,
    /// a bad alignment, an unknown flag or enum value, an address that does
    /// not start an allocation.
    SVMAP_EINVAL = 1,
    /// No room: no free range of that length in the window, or the process
    /// ran out of mappings.
    SVMAP_ENOMEM = 2,
    /// The range overlaps something already mapped, or the name is taken.
    SVMAP_EEXIST = 3,
    /// No such object: an unknown device name, a missing file.
    SVMAP_ENOENT = 4,
    /// The kernel refused (permission).
    SVMAP_EPERM = 5,
    /// An I/O or system-call failure not covered above.
    SVMAP_EIO = 6,
    /// CPU memory lies above the address limit of a device that must reach
    /// it (the early, clear error of an application that allocated above
    /// the limit).
    SVMAP_ABOVE_DEVICE_LIMIT = 7,
    /// `svmap_svm_device_access`: nothing is mapped there for the device.
    SVMAP_FAULT_UNMAPPED = 8,
    /// `svmap_svm_device_access`: mapped, but the CPU protection forbids
    /// the access.
    SVMAP_FAULT_PROTECTION = 9,
    /// `svmap_svm_device_access`: the address is at or above the device's
    /// `2^va_bits`.
    SVMAP_FAULT_OUT_OF_RANGE = 10,
    /// Trace replay: a bad line (the message names it) or a trace this
    /// build cannot run; the replay stopped there.
    SVMAP_EBADTRACE = 11,
    /// A bug in svmap (a panic was caught at the boundary). The handle the
    /// call was given may be inconsistent: only delete it.
    SVMAP_INTERNAL = 99,
}

use svmap_status_t::*;

/// A failed call: its status and the message for
/// [`svmap_last_error_message`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    /// The status the call returns.
    pub status: svmap_status_t,
    /// The message.
    pub msg: String,
}

impl Failure {
    /// A failure with this status and message.
    pub fn new(status: svmap_status_t, msg: impl Into<String>) -> Failure {
        Failure {
            status,
            msg: msg.into(),
        }
    }

    /// `SVMAP_EINVAL` with this message.
    pub fn inval(msg: impl Into<String>) -> Failure {
        Failure::new(SVMAP_EINVAL, msg)
    }

    /// `SVMAP_EINVAL` for a NULL argument named `what`.
    pub fn null(what: &str) -> Failure {
        Failure::inval(format!("{what} is NULL"))
    }
}

/// What entry points return inside [`ffi_call`].
pub type FfiResult<T> = Result<T, Failure>;

thread_local! {
    /// The message of the last failed call on this thread ("" after a
    /// successful one).
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

fn set_last_error(msg: &str) {
    // An interior NUL would cut the message: show it instead.
    let c = CString::new(msg.replace('\0', "\\0")).unwrap_or_default();
    let _ = LAST_ERROR.try_with(|e| *e.borrow_mut() = c);
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic with a non-string payload".to_owned()
    }
}

/// Runs the body of an entry point: clears the thread's last error, runs
/// `f` inside [`std::panic::catch_unwind`], and records the message of a
/// failure or of a caught panic (which becomes `SVMAP_INTERNAL`). Nothing
/// unwinds out of it.
pub fn ffi_call<T>(f: impl FnOnce() -> FfiResult<T>) -> Result<T, svmap_status_t> {
    set_last_error("");
    // The closure may leave a handle half-updated when it panics; the
    // SVMAP_INTERNAL documentation tells the caller to only delete it.
    match panic::catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(fail)) => {
            set_last_error(&fail.msg);
            Err(fail.status)
        }
        Err(payload) => {
            set_last_error(&format!(
                "internal error (a bug in svmap): panicked: {}",
                panic_message(&*payload)
            ));
            // A payload whose destructor panics must not escape either.
            let _ = panic::catch_unwind(AssertUnwindSafe(move || drop(payload)));
            Err(SVMAP_INTERNAL)
        }
    }
}

/// [`ffi_call`] for an entry point that returns a status.
pub fn ffi_status(f: impl FnOnce() -> FfiResult<()>) -> svmap_status_t {
    match ffi_call(f) {
        Ok(()) => SVMAP_OK,
        Err(s) => s,
    }
}

/// [`ffi_call`] for an entry point that returns a value, `fallback` on
/// failure.
pub fn ffi_value<T>(fallback: T, f: impl FnOnce() -> FfiResult<T>) -> T {
    ffi_call(f).unwrap_or(fallback)
}

/// A checked, non-null out-parameter, written once at the end of a call.
pub struct Out<T>(NonNull<T>);

impl<T> Out<T> {
    /// Checks `p` for NULL (`SVMAP_EINVAL` naming `what`).
    ///
    /// # Safety
    ///
    /// `p` is NULL or valid for an aligned write of a `T` for as long as the
    /// returned value lives (the out-parameter contract of the header).
    pub unsafe fn new(p: *mut T, what: &str) -> FfiResult<Out<T>> {
        let p = NonNull::new(p).ok_or_else(|| Failure::null(what))?;
        // A misaligned pointer is a caller bug that can be seen: an error,
        // not a misaligned write.
        if !p.is_aligned() {
            return Err(Failure::inval(format!("{what} is not aligned")));
        }
        Ok(Out(p))
    }

    /// Writes `v` (without reading or dropping the old contents).
    pub fn write(self, v: T) {
        // SAFETY: `Out::new`'s caller guaranteed that the non-null pointer
        // is valid for an aligned write of a `T` while `self` lives.
        unsafe { self.0.as_ptr().write(v) }
    }
}

/// Reads a NUL-terminated UTF-8 string argument named `what`.
///
/// # Safety
///
/// `p` is NULL or points to a NUL-terminated string that stays valid and
/// unchanged for `'a`.
pub unsafe fn c_str<'a>(p: *const c_char, what: &str) -> FfiResult<&'a str> {
    if p.is_null() {
        return Err(Failure::null(what));
    }
    // SAFETY: non-null, and the caller guarantees a NUL-terminated string
    // that lives for 'a.
    let s = unsafe { CStr::from_ptr(p) };
    s.to_str()
        .map_err(|_| Failure::inval(format!("{what} is not valid UTF-8")))
}

/// The `bool` field `b` of an input struct that C filled in, read as its
/// byte: 0 or 1, else `SVMAP_EINVAL` naming `what`. C code that fills a
/// struct with `memset` or from another language can leave any byte there,
/// and loading such a byte as a Rust `bool` would be undefined behaviour, so
/// the byte is read as a `u8` and checked first.
pub fn c_bool(b: &bool, what: &str) -> FfiResult<bool> {
    // SAFETY: `b` is a live, aligned, 1-byte place; reading it as a u8 (which
    // has no invalid values) never asserts that it holds a valid bool.
    let v = unsafe { std::ptr::from_ref(b).cast::<u8>().read() };
    match v {
        0 => Ok(false),
        1 => Ok(true),
        v => Err(Failure::inval(format!(
            "{what} is {v}, not a bool (0 or 1)"
        ))),
    }
}

/// A handle argument named `what`, or `SVMAP_EINVAL` for NULL.
pub fn handle<T>(h: Option<T>, what: &str) -> FfiResult<T> {
    h.ok_or_else(|| Failure::null(what))
}

/// Checks a `[start, end)` argument: `SVMAP_EINVAL` when `start > end` (an
/// inverted range). An empty range passes; the caller decides whether it
/// is an error.
pub fn check_range(start: u64, end: u64) -> FfiResult<()> {
    if start > end {
        return Err(Failure::inval(format!(
            "inverted range [{start:#x}, {end:#x}): start is above end"
        )));
    }
    Ok(())
}

/// The end of a `[start, start + length)` argument, or `SVMAP_EINVAL` when
/// it wraps past 2^64 (which would make it an inverted range).
pub fn range_end(start: u64, length: u64) -> FfiResult<u64> {
    start.checked_add(length).ok_or_else(|| {
        Failure::inval(format!(
            "range [{start:#x}, +{length:#x}) wraps past the end of the address space"
        ))
    })
}

/// Maps a Linux errno number to a status.
pub fn status_of_errno(errno: i32) -> svmap_status_t {
    match errno {
        12 => SVMAP_ENOMEM,
        17 => SVMAP_EEXIST,
        22 => SVMAP_EINVAL,
        2 => SVMAP_ENOENT,
        1 | 13 => SVMAP_EPERM,
        _ => SVMAP_EIO,
    }
}

/// The message of the last call on the calling thread that did not return
/// `SVMAP_OK` (or NULL / 0 for a `_new` or a value), or "" if the last call
/// succeeded. Never NULL. Every `svmap_*` call except this one,
/// `svmap_status_name` and `svmap_version` replaces it, so the string is
/// valid until the next such call on the same thread: copy it to keep it.
/// Each thread has its own.
#[no_mangle]
pub extern "C" fn svmap_last_error_message() -> *const c_char {
    LAST_ERROR
        .try_with(|e| e.borrow().as_ptr())
        .unwrap_or(c"".as_ptr())
}

/// The name of a status ("SVMAP_ENOMEM"), or "SVMAP_UNKNOWN" for a value
/// that is not one. A static string; never NULL.
#[no_mangle]
pub extern "C" fn svmap_status_name(status: c_int) -> *const c_char {
    let name: &'static CStr = match status {
        0 => c"SVMAP_OK",
        1 => c"SVMAP_EINVAL",
        2 => c"SVMAP_ENOMEM",
        3 => c"SVMAP_EEXIST",
        4 => c"SVMAP_ENOENT",
        5 => c"SVMAP_EPERM",
        6 => c"SVMAP_EIO",
        7 => c"SVMAP_ABOVE_DEVICE_LIMIT",
        8 => c"SVMAP_FAULT_UNMAPPED",
        9 => c"SVMAP_FAULT_PROTECTION",
        10 => c"SVMAP_FAULT_OUT_OF_RANGE",
        11 => c"SVMAP_EBADTRACE",
        99 => c"SVMAP_INTERNAL",
        _ => c"SVMAP_UNKNOWN",
    };
    name.as_ptr()
}

/// The library version ("0.1.0"). A static string; never NULL.
#[no_mangle]
pub extern "C" fn svmap_version() -> *const c_char {
    const V: &CStr =
        match CStr::from_bytes_with_nul(concat!(env!("CARGO_PKG_VERSION"), "\0").as_bytes()) {
            Ok(v) => v,
            Err(_) => panic!("the version has no NUL"),
        };
    V.as_ptr()
}

/// Test hook, debug builds only and not in the header: panics with `msg`
/// (NULL: a fixed message) inside the boundary, so tests can check that
/// the panic becomes `SVMAP_INTERNAL` and does not unwind into C.
///
/// # Safety
///
/// `msg` is NULL or a NUL-terminated string.
#[cfg(debug_assertions)]
#[no_mangle]
pub unsafe extern "C" fn svmap_debug_panic(msg: *const c_char) -> svmap_status_t {
    ffi_status(|| {
        let m = if msg.is_null() {
            "svmap_debug_panic".to_owned()
        } else {
            // SAFETY: non-null, and the caller passes a NUL-terminated string.
            unsafe { CStr::from_ptr(msg) }
                .to_string_lossy()
                .into_owned()
        };
        panic!("{m}");
    })
}

// Handles may move between threads (documented): keep them `Send`.
const _: () = {
    const fn assert_send<T: Send>() {}
    assert_send::<svmap_space_t>();
    assert_send::<svmap_svm_t>();
    assert_send::<svmap_reservation_t>();
    assert_send::<svmap_heap_t>();
    assert_send::<svmap_peer_t>();
};

#[cfg(test)]
mod tests {
    use super::*;

    fn last() -> String {
        // SAFETY: the pointer is a valid NUL-terminated string until the
        // next svmap call on this thread.
        unsafe { CStr::from_ptr(svmap_last_error_message()) }
            .to_str()
            .unwrap()
            .to_owned()
    }

    #[test]
    fn a_panic_becomes_internal_with_its_message() {
        let st = ffi_status(|| panic!("boom {}", 42));
        assert_eq!(st, SVMAP_INTERNAL);
        assert!(last().contains("boom 42"), "{}", last());
        // The next call clears it.
        assert_eq!(ffi_status(|| Ok(())), SVMAP_OK);
        assert_eq!(last(), "");
    }

    #[cfg(debug_assertions)]
    #[test]
    fn the_debug_hook_panics_inside_the_boundary() {
        // SAFETY: a NUL-terminated literal.
        let st = unsafe { svmap_debug_panic(c"hook".as_ptr()) };
        assert_eq!(st, SVMAP_INTERNAL);
        assert!(last().contains("panicked: hook"), "{}", last());
    }

    #[test]
    fn failures_set_the_thread_local_message() {
        let st = ffi_status(|| Err(Failure::inval("bad thing")));
        assert_eq!(st, SVMAP_EINVAL);
        assert_eq!(last(), "bad thing");
        let other = std::thread::spawn(last).join().unwrap();
        assert_eq!(other, "", "each thread has its own message");
        assert_eq!(ffi_value(7, || Err(Failure::inval("x\0y"))), 7);
        assert_eq!(last(), "x\\0y");
    }

    #[test]
    fn inverted_and_wrapping_ranges_are_invalid_arguments() {
        assert_eq!(check_range(2, 1).unwrap_err().status, SVMAP_EINVAL);
        assert!(check_range(1, 1).is_ok() && check_range(1, 2).is_ok());
        assert_eq!(range_end(u64::MAX, 1).unwrap_err().status, SVMAP_EINVAL);
        assert_eq!(range_end(u64::MAX - 1, 1), Ok(u64::MAX));

        let mut svm = svmap_svm_new(None);
        let mut dev = std::mem::MaybeUninit::uninit();
        // SAFETY: a valid place for the configuration; a static name.
        let st = unsafe { svmap_device_config_init(dev.as_mut_ptr(), c"gpu".as_ptr(), 40) };
        assert_eq!(st, SVMAP_OK);
        // SAFETY: initialised by the successful call.
        let dev = unsafe { dev.assume_init() };
        // SAFETY: `dev.name` is a static NUL-terminated string.
        let st = unsafe { svmap_svm_add_device(svm.as_deref_mut(), Some(&dev)) };
        assert_eq!(st, SVMAP_OK);
        let check = |s, e| {
            // SAFETY: a static NUL-terminated device name.
            unsafe { svmap_svm_check_addressable(svm.as_deref(), c"gpu".as_ptr(), s, e) }
        };
        assert_eq!(check(0x2000, 0x1000), SVMAP_EINVAL);
        assert!(last().contains("inverted"), "{}", last());
        assert_eq!(check(0x1000, 0x1000), SVMAP_OK);
        assert_eq!(check(0x1000, 1 << 41), SVMAP_ABOVE_DEVICE_LIMIT);
        let h = svm.as_deref_mut();
        assert_eq!(svmap_svm_cpu_unmap(h, 0x1000, !0xfff_u64), SVMAP_EINVAL);
        let h = svm.as_deref_mut();
        assert_eq!(
            svmap_svm_protect(h, 0x1000, !0xfff_u64, SVMAP_PROT_READ),
            SVMAP_EINVAL
        );
        svmap_svm_delete(svm);
    }

    #[test]
    fn status_names_match_the_enum() {
        for s in [
            SVMAP_OK,
            SVMAP_EINVAL,
            SVMAP_ENOMEM,
            SVMAP_EEXIST,
            SVMAP_ENOENT,
            SVMAP_EPERM,
            SVMAP_EIO,
            SVMAP_ABOVE_DEVICE_LIMIT,
            SVMAP_FAULT_UNMAPPED,
            SVMAP_FAULT_PROTECTION,
            SVMAP_FAULT_OUT_OF_RANGE,
            SVMAP_EBADTRACE,
            SVMAP_INTERNAL,
        ] {
            // SAFETY: static NUL-terminated strings.
            let name = unsafe { CStr::from_ptr(svmap_status_name(s as c_int)) };
            assert_eq!(name.to_str().unwrap(), format!("{s:?}"));
        }
        // SAFETY: as above.
        let v = unsafe { CStr::from_ptr(svmap_version()) };
        assert_eq!(v.to_str().unwrap(), env!("CARGO_PKG_VERSION"));
    }
}

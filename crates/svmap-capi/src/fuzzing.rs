//! Fuzzing of the C ABI's argument decoding.
//!
//! [`check`] turns a byte string into a sequence of calls of the
//! `extern "C"` functions, made from Rust the way a careless C caller would
//! make them: arbitrary integers, lengths, counts and addresses (drawn
//! often from the edges: 0, 1, page multiples, powers of two and their
//! neighbours, values near 2^64), unknown enum values, `bool` fields of
//! input structs holding any byte 0..=255, NULL handles, and NULL, valid
//! or misaligned pointers into buffers it owns. Lengths and counts that
//! come with a pointer either fit the buffer behind it or are too large to
//! be one (past `isize::MAX` bytes), so a call never reads memory that is
//! not there. (`bool` *parameters* are 0 or 1 only: a C caller cannot pass
//! anything else, the C language converts.)
//!
//! After each call it asserts what the header promises:
//!
//! - no panic reached the boundary (no `SVMAP_INTERNAL`, and nothing
//!   unwinds: a panic in an `extern "C"` function would abort);
//! - the status agrees with the last-error message (empty exactly after
//!   `SVMAP_OK`), and a `_new` or a getter given a NULL handle returns
//!   NULL or 0 with a message;
//! - an out-parameter is written only on success.
//!
//! Handles are deleted at the end, so [`check`] leaks nothing. The
//! cargo-fuzz target `capi_args` calls it (built with the `fuzzing`
//! feature):
//!
//! ```sh
//! cd fuzz && cargo fuzz run capi_args -s none -- -max_total_time=60
//! ```
//!
//! and `cargo test -p svmap-capi` runs it on pseudo-random inputs for
//! about two seconds.
//!
//! Real resources stay small: one reservation and one heap at a time, at
//! most 64 MiB of heap window, at most 16 live buffers. Device peers
//! (processes) and files are left out.

use std::ffi::{c_char, c_int, c_void, CStr};
use std::ptr;

use crate::svmap_status_t::{self, *};
use crate::*;

/// Values at the edges that the decoder picks often.
const EDGES: [u64; 24] = [
    0,
    1,
    2,
    7,
    8,
    0xfff,
    0x1000,
    0x1001,
    0x10000,
    0x1f_ffff,
    0x20_0000,
    0x20_1000,
    1 << 30,
    1 << 39,
    (1 << 40) - 0x1000,
    1 << 40,
    (1 << 47) - 0x1000,
    1 << 47,
    1 << 56,
    1 << 63,
    (1 << 63) + 0x1000,
    u64::MAX - 0x1fff,
    u64::MAX - 0xfff,
    u64::MAX,
];

/// Address widths around every limit the API has.
const BITS: [u32; 16] = [
    0,
    1,
    11,
    12,
    19,
    20,
    30,
    39,
    40,
    47,
    48,
    56,
    57,
    64,
    65,
    u32::MAX,
];

/// The bytes being decoded; past the end every read is 0.
struct Src<'a> {
    data: &'a [u8],
    at: usize,
}

impl Src<'_> {
    fn done(&self) -> bool {
        self.at >= self.data.len()
    }

    fn u8(&mut self) -> u8 {
        let b = self.data.get(self.at).copied().unwrap_or(0);
        self.at += 1;
        b
    }

    fn raw_u64(&mut self) -> u64 {
        (0..8).fold(0u64, |v, i| v | u64::from(self.u8()) << (8 * i))
    }

    /// An integer, usually one at an edge.
    fn u64(&mut self) -> u64 {
        let sel = self.u8();
        let b = self.u8();
        match sel % 8 {
            0 | 1 => EDGES[usize::from(b) % EDGES.len()],
            2 => u64::from(b) << 12,
            3 => 1u64 << (b % 64),
            4 => (1u64 << (b % 64)).wrapping_sub(u64::from(b >> 6)),
            5 => u64::MAX - (u64::from(b) << 12),
            6 => self.raw_u64() & !0xfff,
            _ => self.raw_u64(),
        }
    }

    /// A 32-bit value: a width, a small enum value, or anything.
    fn u32(&mut self) -> u32 {
        let sel = self.u8();
        let b = self.u8();
        match sel % 4 {
            0 | 1 => BITS[usize::from(b) % BITS.len()],
            2 => u32::from(b % 4),
            _ => self.raw_u64() as u32,
        }
    }

    /// An enum value: mostly a valid one (`0..n`), sometimes anything.
    fn enum_value(&mut self, n: u32) -> u32 {
        match self.u8() % 8 {
            0 => self.u32(),
            k => u32::from(k) % n,
        }
    }

    /// A `bool` parameter: 0 or 1.
    fn flag(&mut self) -> bool {
        self.u8() & 1 == 1
    }

    /// The byte of a `bool` field: 0 or 1 mostly, any byte sometimes.
    fn bool_byte(&mut self) -> u8 {
        match self.u8() {
            b @ 0..=191 => b & 1,
            _ => self.u8(),
        }
    }

    /// Whether a handle argument is NULL (1 in 16).
    fn null_handle(&mut self) -> bool {
        self.u8().is_multiple_of(16)
    }
}

/// How an out-parameter is passed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum OutKind {
    Null,
    Valid,
    Misaligned,
}

/// 64 bytes, aligned for anything, that out-parameters point into; filled
/// with a pattern so that a write shows.
#[repr(C, align(16))]
struct Slot([u8; 64]);

const PATTERN: u8 = 0xa5;

impl Slot {
    fn new() -> Slot {
        Slot([PATTERN; 64])
    }

    /// A pointer of the kind `k` into the slot, for a `T`.
    fn ptr<T>(&mut self, k: OutKind) -> *mut T {
        assert!(std::mem::size_of::<T>() < 64);
        match k {
            OutKind::Null => ptr::null_mut(),
            OutKind::Valid => self.0.as_mut_ptr().cast(),
            // SAFETY: offset 1 stays inside the 64-byte array.
            OutKind::Misaligned => unsafe { self.0.as_mut_ptr().add(1) }.cast(),
        }
    }

    fn untouched(&self) -> bool {
        self.0.iter().all(|&b| b == PATTERN)
    }
}

fn out_kind(src: &mut Src) -> OutKind {
    match src.u8() % 8 {
        0 => OutKind::Null,
        1 => OutKind::Misaligned,
        _ => OutKind::Valid,
    }
}

/// A NUL-terminated string argument (NULL for `None`), kept alive by its
/// owner across the call.
struct CArg(Option<Vec<u8>>);

impl CArg {
    fn ptr(&self) -> *const c_char {
        self.0.as_ref().map_or(ptr::null(), |v| v.as_ptr().cast())
    }
}

/// A string argument: NULL, one of `names`, a fixed one, or up to 12
/// arbitrary bytes (invalid UTF-8 and early NULs included).
fn c_arg(src: &mut Src, names: &[Vec<u8>]) -> CArg {
    let mut bytes = match src.u8() % 8 {
        0 => return CArg(None),
        1..=3 if !names.is_empty() => names[usize::from(src.u8()) % names.len()].clone(),
        4 => b"gpu".to_vec(),
        5 => Vec::new(),
        _ => (0..src.u8() % 13).map(|_| src.u8()).collect(),
    };
    bytes.push(0);
    CArg(Some(bytes))
}

/// The last-error message as bytes.
fn last_error() -> Vec<u8> {
    // SAFETY: never NULL; a NUL-terminated string valid until the next
    // svmap call on this thread, copied at once.
    unsafe { CStr::from_ptr(svmap_last_error_message()) }
        .to_bytes()
        .to_vec()
}

/// The checks after a call that returned `st`; `out` is the slot its
/// out-parameters pointed into.
fn after(what: &str, st: svmap_status_t, out: &Slot) {
    let msg = last_error();
    assert_ne!(
        st,
        SVMAP_INTERNAL,
        "{what}: a panic reached the boundary: {}",
        String::from_utf8_lossy(&msg)
    );
    if st == SVMAP_OK {
        assert!(
            msg.is_empty(),
            "{what}: SVMAP_OK with a message: {}",
            String::from_utf8_lossy(&msg)
        );
    } else {
        assert!(!msg.is_empty(), "{what}: {st:?} without a message");
        assert!(out.untouched(), "{what}: {st:?} wrote an out-parameter");
    }
}

/// After a getter: 0 with a message for a NULL handle, no message else.
fn after_getter(what: &str, was_null: bool, value: u64) {
    let msg = last_error();
    if was_null {
        assert_eq!(value, 0, "{what}(NULL)");
        assert!(!msg.is_empty(), "{what}(NULL) without a message");
    } else {
        assert!(msg.is_empty(), "{what}: {}", String::from_utf8_lossy(&msg));
    }
}

/// After a `_new`: NULL exactly when there is a message.
fn after_new<T>(what: &str, h: &Option<Box<T>>) {
    let msg = last_error();
    match h {
        Some(_) => assert!(
            msg.is_empty(),
            "{what}: a handle and a message: {}",
            String::from_utf8_lossy(&msg)
        ),
        None => assert!(!msg.is_empty(), "{what}: NULL without a message"),
    }
}

/// Stores the byte `v` into a `bool` field, as C code filling the struct
/// with `memset` or from another language can. The struct is then only
/// passed by pointer, as a C caller passes it; the library reads such
/// fields as bytes (`c_bool`).
fn poke_bool(field: &mut bool, v: u8) {
    // SAFETY: a 1-byte, aligned, writable place. The value may not be a
    // valid bool afterwards; nothing in this module reads it as one.
    unsafe { ptr::from_mut(field).cast::<u8>().write(v) }
}

/// An input struct argument: NULL, or a pointer to `v`.
fn opt<'a, T>(src: &mut Src, v: &'a T) -> Option<&'a T> {
    (!src.u8().is_multiple_of(16)).then_some(v)
}

/// The open handles and what they hold.
struct State {
    space: Option<Box<svmap_space_t>>,
    svm: Option<Box<svmap_svm_t>>,
    /// Names of the devices added to `svm` (NUL not included).
    devices: Vec<Vec<u8>>,
    /// SVM ranges allocated in `svm`.
    ranges: Vec<u64>,
    res: Option<Box<svmap_reservation_t>>,
    heap: Option<Box<svmap_heap_t>>,
    /// Live buffers of `heap`.
    buffers: Vec<*mut c_void>,
    /// A descriptor open for writing on /dev/null, and the write end of a
    /// pipe whose read end is closed.
    null_fd: c_int,
    broken_pipe: c_int,
}

/// The heap window a fuzz input may ask for, at most.
const MAX_HEAP: u64 = 64 << 20;

/// A reservation length: at most 1 GiB, or one that no reservation can
/// have (2^63 and above). Reserving most of the address space would make
/// the allocations of everything else in this process fail.
fn reservation_len(len: u64) -> u64 {
    if len <= 1 << 30 || len >= 1 << 63 {
        len
    } else {
        len & ((1 << 30) - 1)
    }
}

// The input structs are filled in place and then only passed by pointer:
// a `bool` field may hold any byte, and such a struct is never copied.

/// A space configuration: the defaults with one field changed, or every
/// field arbitrary.
fn space_config(src: &mut Src, c: &mut svmap_space_config_t) {
    let any = svmap_space_config_t {
        task_size: src.u64(),
        mmap_min_addr: src.u64(),
        stack_guard_gap: src.u64(),
        layout: src.enum_value(2),
        mmap_base: src.u64(),
        thp_align: false,
    };
    if src.u8().is_multiple_of(2) {
        *c = any;
    } else {
        // SAFETY: `c` is a valid place for the configuration.
        let st = unsafe { svmap_space_config_default(c) };
        assert_eq!(st, SVMAP_OK);
        match src.u8() % 5 {
            0 => c.task_size = any.task_size,
            1 => c.mmap_min_addr = any.mmap_min_addr,
            2 => c.stack_guard_gap = any.stack_guard_gap,
            3 => c.layout = any.layout,
            _ => c.mmap_base = any.mmap_base,
        }
    }
    poke_bool(&mut c.thp_align, src.bool_byte());
}

const NO_CONFIG: svmap_space_config_t = svmap_space_config_t {
    task_size: 0,
    mmap_min_addr: 0,
    stack_guard_gap: 0,
    layout: 0,
    mmap_base: 0,
    thp_align: false,
};

fn info(src: &mut Src) -> svmap_unmapped_area_info_t {
    svmap_unmapped_area_info_t {
        flags: src.enum_value(2),
        length: src.u64(),
        low_limit: src.u64(),
        high_limit: src.u64(),
        align_mask: src.u64(),
        align_offset: src.u64(),
        start_gap: src.u64(),
    }
}

fn fit(src: &mut Src, f: &mut svmap_fit_request_t) {
    *f = svmap_fit_request_t {
        length: src.u64(),
        low: src.u64(),
        high: src.u64(),
        align: src.u64(),
        align_offset: src.u64(),
        topdown: false,
        respect_guard_gaps: false,
    };
    poke_bool(&mut f.topdown, src.bool_byte());
    poke_bool(&mut f.respect_guard_gaps, src.bool_byte());
}

fn mmap_req(src: &mut Src, r: &mut svmap_mmap_request_t) {
    *r = svmap_mmap_request_t {
        length: src.u64(),
        hint: src.u64(),
        fixed: src.enum_value(3),
        growsdown: false,
        map32bit: false,
    };
    poke_bool(&mut r.growsdown, src.bool_byte());
    poke_bool(&mut r.map32bit, src.bool_byte());
}

/// An address argument: one the state knows (an SVM range, a heap buffer,
/// inside a window) or any.
fn addr(src: &mut Src, st: &State) -> u64 {
    match src.u8() % 4 {
        0 if !st.ranges.is_empty() => {
            st.ranges[usize::from(src.u8()) % st.ranges.len()] + (u64::from(src.u8() % 3) << 12)
        }
        1 if !st.buffers.is_empty() => st.buffers[usize::from(src.u8()) % st.buffers.len()] as u64,
        _ => src.u64(),
    }
}

impl State {
    fn new() -> State {
        // SAFETY: a NUL-terminated path and plain flags.
        let null_fd =
            unsafe { libc::open(c"/dev/null".as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC) };
        assert!(null_fd >= 0, "open /dev/null");
        let mut fds = [0; 2];
        // SAFETY: room for the two descriptors.
        assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
        // SAFETY: our own read end, closed once.
        unsafe { libc::close(fds[0]) };
        // A space and an SVM space with a 40-bit device "gpu" to start
        // with, so that calls find something to work on.
        let space = svmap_space_new(None);
        let mut svm = svmap_svm_new(None);
        let mut dev = svmap_device_config_t {
            name: ptr::null(),
            va_bits: 0,
            base: 0,
            page_size: 0,
            mirror: 0,
            populate: 0,
            tlb_entries: 0,
        };
        // SAFETY: `dev` is a valid place; the name is a static string.
        let st = unsafe { svmap_device_config_init(&mut dev, c"gpu".as_ptr(), 40) };
        assert_eq!(st, SVMAP_OK);
        // SAFETY: `dev.name` is a static NUL-terminated string.
        let st = unsafe { svmap_svm_add_device(svm.as_deref_mut(), Some(&dev)) };
        assert_eq!(st, SVMAP_OK);
        assert!(space.is_some() && svm.is_some());
        State {
            space,
            svm,
            devices: vec![b"gpu".to_vec()],
            ranges: Vec::new(),
            res: None,
            heap: None,
            buffers: Vec::new(),
            null_fd,
            broken_pipe: fds[1],
        }
    }

    /// A descriptor argument: -1, an invalid one, /dev/null or the broken
    /// pipe.
    fn fd(&self, src: &mut Src) -> c_int {
        match src.u8() % 8 {
            0..=2 => -1,
            3 => self.null_fd,
            4 => self.broken_pipe,
            5 => -2,
            6 => c_int::MIN,
            // Well above anything this process has open.
            _ => 1 << 20,
        }
    }

    fn space_ref(&mut self, src: &mut Src) -> Option<&mut svmap_space_t> {
        if src.null_handle() {
            None
        } else {
            self.space.as_deref_mut()
        }
    }

    fn svm_ref(&mut self, src: &mut Src) -> Option<&mut svmap_svm_t> {
        if src.null_handle() {
            None
        } else {
            self.svm.as_deref_mut()
        }
    }

    fn heap_ref(&mut self, src: &mut Src) -> Option<&mut svmap_heap_t> {
        if src.null_handle() {
            None
        } else {
            self.heap.as_deref_mut()
        }
    }

    /// One call, chosen and filled in by the bytes.
    fn step(&mut self, src: &mut Src) {
        let mut out = Slot::new();
        match src.u8() % 32 {
            0 => {
                let mut c = NO_CONFIG;
                space_config(src, &mut c);
                let h = svmap_space_new(opt(src, &c));
                after_new("svmap_space_new", &h);
                if h.is_some() {
                    svmap_space_delete(self.space.take());
                    self.space = h;
                }
            }
            1 => {
                let (start, end, flags) = (src.u64(), src.u64(), src.enum_value(4));
                let st = svmap_space_map(self.space_ref(src), start, end, flags);
                after("svmap_space_map", st, &out);
            }
            2 => {
                let (start, end) = (src.u64(), src.u64());
                let st = svmap_space_unmap(self.space_ref(src), start, end);
                after("svmap_space_unmap", st, &out);
            }
            3 => {
                let i = info(src);
                let k = out_kind(src);
                let h = self.space_ref(src).map(|s| &*s);
                // SAFETY: `out` is NULL, or points into `out` (aligned or
                // not, the library checks) with room for a u64.
                let st = unsafe { svmap_space_unmapped_area(h, opt(src, &i), out.ptr(k)) };
                after("svmap_space_unmapped_area", st, &out);
            }
            4 | 5 => {
                let mut f = svmap_fit_request_t::default();
                fit(src, &mut f);
                let k = out_kind(src);
                let allocate = src.u8().is_multiple_of(2);
                let fp = opt(src, &f);
                let h = self.space_ref(src);
                // SAFETY: as above.
                let st = unsafe {
                    if allocate {
                        svmap_space_allocate(h, fp, out.ptr(k))
                    } else {
                        svmap_space_find_fit(h.map(|s| &*s), fp, out.ptr(k))
                    }
                };
                after("svmap_space_find_fit/allocate", st, &out);
            }
            6 => {
                let mut r = svmap_mmap_request_t::default();
                mmap_req(src, &mut r);
                let k = out_kind(src);
                let rp = opt(src, &r);
                // SAFETY: as above.
                let st = unsafe { svmap_space_mmap(self.space_ref(src), rp, out.ptr(k)) };
                after("svmap_space_mmap", st, &out);
            }
            7 => {
                let (a, len) = (src.u64(), src.u64());
                let st = svmap_space_munmap(self.space_ref(src), a, len);
                after("svmap_space_munmap", st, &out);
            }
            8 => {
                let a = src.u64();
                let k = out_kind(src);
                let h = self.space_ref(src).map(|s| &*s);
                // SAFETY: as above, room for an svmap_vma_t.
                let st = unsafe { svmap_space_find_vma(h, a, out.ptr(k)) };
                after("svmap_space_find_vma", st, &out);
            }
            9 => {
                let h = self.space_ref(src).map(|s| &*s);
                let was_null = h.is_none();
                let n = svmap_space_vma_count(h);
                after_getter("svmap_space_vma_count", was_null, n as u64);
            }
            10 => {
                let mut c = NO_CONFIG;
                space_config(src, &mut c);
                let h = svmap_svm_new(opt(src, &c));
                after_new("svmap_svm_new", &h);
                if h.is_some() {
                    svmap_svm_delete(self.svm.take());
                    self.svm = h;
                    self.devices.clear();
                    self.ranges.clear();
                }
            }
            11 | 12 => self.add_device(src, &mut out),
            13 => {
                let name = c_arg(src, &self.devices);
                let (start, end, cpu) = (src.u64(), src.u64(), src.enum_value(2));
                // SAFETY: `name` is NULL or NUL-terminated, alive.
                let st =
                    unsafe { svmap_svm_device_map(self.svm_ref(src), name.ptr(), start, end, cpu) };
                after("svmap_svm_device_map", st, &out);
            }
            14 | 15 => self.svm_alloc(src, &mut out),
            16 => {
                let a = addr(src, self);
                let st = svmap_svm_dealloc(self.svm_ref(src), a);
                after("svmap_svm_dealloc", st, &out);
                if st == SVMAP_OK {
                    self.ranges.retain(|&r| r != a);
                }
            }
            17 => {
                let (a, len, prot) = (addr(src, self), src.u64(), src.enum_value(3));
                let st = svmap_svm_protect(self.svm_ref(src), a, len, prot);
                after("svmap_svm_protect", st, &out);
            }
            18 => {
                let name = c_arg(src, &self.devices);
                let (a, write) = (addr(src, self), src.flag());
                let h = self.svm_ref(src).map(|s| &*s);
                // SAFETY: `name` is NULL or NUL-terminated, alive.
                let st = unsafe { svmap_svm_device_access(h, name.ptr(), a, write) };
                // A device fault is a status with a message too.
                after("svmap_svm_device_access", st, &out);
            }
            19 => {
                let (start, end, gd) = (src.u64(), src.u64(), src.flag());
                let st = svmap_svm_cpu_map(self.svm_ref(src), start, end, gd);
                after("svmap_svm_cpu_map", st, &out);
            }
            20 => {
                let (a, len) = (addr(src, self), src.u64());
                let st = svmap_svm_cpu_unmap(self.svm_ref(src), a, len);
                after("svmap_svm_cpu_unmap", st, &out);
            }
            21 => {
                let mut r = svmap_mmap_request_t::default();
                mmap_req(src, &mut r);
                let k = out_kind(src);
                let rp = opt(src, &r);
                // SAFETY: as above.
                let st = unsafe { svmap_svm_cpu_mmap(self.svm_ref(src), rp, out.ptr(k)) };
                after("svmap_svm_cpu_mmap", st, &out);
            }
            22 => {
                let i = info(src);
                let k = out_kind(src);
                let ip = opt(src, &i);
                let h = self.svm_ref(src).map(|s| &*s);
                // SAFETY: as above.
                let st = unsafe { svmap_svm_find(h, ip, out.ptr(k)) };
                after("svmap_svm_find", st, &out);
            }
            23 => {
                let name = c_arg(src, &self.devices);
                let (start, end) = (addr(src, self), src.u64());
                let h = self.svm_ref(src).map(|s| &*s);
                // SAFETY: `name` is NULL or NUL-terminated, alive.
                let st = unsafe { svmap_svm_check_addressable(h, name.ptr(), start, end) };
                after("svmap_svm_check_addressable", st, &out);
            }
            24 => {
                let h = self.svm_ref(src).map(|s| &*s);
                let was_null = h.is_none();
                let n = svmap_svm_device_count(h) as u64 + svmap_svm_range_count(h) as u64;
                after_getter("svmap_svm_*_count", was_null, n);
            }
            25 => self.replay(src, &mut out),
            26 => {
                let v = src.raw_u64() as c_int;
                // SAFETY: a static NUL-terminated string, never NULL.
                let name = unsafe { CStr::from_ptr(svmap_status_name(v)) };
                assert!(name.to_bytes().starts_with(b"SVMAP_"));
            }
            27 => {
                let k = out_kind(src);
                let name = c_arg(src, &self.devices);
                let bits = src.u32();
                // SAFETY: `out` as above, room for an svmap_device_config_t.
                let st = unsafe { svmap_device_config_init(out.ptr(k), name.ptr(), bits) };
                after("svmap_device_config_init", st, &out);
            }
            28 => {
                let (bits, len) = (src.u32(), reservation_len(src.u64()));
                let r = if src.u8().is_multiple_of(2) {
                    svmap_reservation_new(bits, len)
                } else {
                    svmap_reservation_new_at(src.u64(), len)
                };
                after_new("svmap_reservation_new*", &r);
                let n = svmap_reservation_addr(r.as_deref()) | svmap_reservation_len(r.as_deref());
                after_getter("svmap_reservation_addr/len", r.is_none(), n);
                svmap_reservation_delete(self.res.take());
                self.res = r;
            }
            29 => {
                // A heap over the reservation (which it takes) or a new one.
                let h = if src.u8().is_multiple_of(2) {
                    let r = if src.null_handle() {
                        svmap_reservation_delete(self.res.take());
                        None
                    } else {
                        self.res.take()
                    };
                    if svmap_reservation_len(r.as_deref()) > MAX_HEAP {
                        svmap_reservation_delete(r);
                        return;
                    }
                    svmap_heap_new_in(r)
                } else {
                    // Mostly a width and a size that work.
                    let bits = if src.u8().is_multiple_of(2) {
                        40
                    } else {
                        src.u32()
                    };
                    let len = match src.u8() % 4 {
                        0 => src.u64(),
                        _ => u64::from(src.u8()) << 16,
                    };
                    svmap_heap_new(bits, len % (MAX_HEAP + 0x1000))
                };
                after_new("svmap_heap_new*", &h);
                if h.is_some() {
                    self.buffers.clear();
                    svmap_heap_delete(self.heap.take());
                    self.heap = h;
                }
            }
            30 => self.heap_call(src, &mut out),
            _ => {
                let h = self.heap_ref(src).map(|s| &*s);
                let was_null = h.is_none();
                let n = svmap_heap_addr(h)
                    | svmap_heap_len(h)
                    | svmap_heap_live_count(h) as u64
                    | svmap_heap_live_bytes(h);
                after_getter("svmap_heap_*", was_null, n);
            }
        }
    }

    fn add_device(&mut self, src: &mut Src, out: &mut Slot) {
        let name = c_arg(src, &self.devices);
        let mut c = svmap_device_config_t {
            name: name.ptr(),
            va_bits: 40,
            base: 0,
            page_size: 0x1000,
            mirror: 0,
            populate: 0,
            tlb_entries: 64,
        };
        // Each field changed with probability 1/4.
        for field in 0..6 {
            if !src.u8().is_multiple_of(4) {
                continue;
            }
            match field {
                0 => c.va_bits = src.u32(),
                1 => c.base = src.u64(),
                2 => c.page_size = src.u64(),
                3 => c.mirror = src.enum_value(2),
                4 => c.populate = src.enum_value(2),
                _ => c.tlb_entries = src.u32(),
            }
        }
        let cp = opt(src, &c);
        // SAFETY: `c.name` is NULL or NUL-terminated and alive (`name`).
        let st = unsafe { svmap_svm_add_device(self.svm_ref(src), cp) };
        after("svmap_svm_add_device", st, out);
        if st == SVMAP_OK {
            let mut n = name.0.expect("a device was added under a NULL name");
            n.pop();
            self.devices.push(n);
        }
    }

    fn svm_alloc(&mut self, src: &mut Src, out: &mut Slot) {
        let names: Vec<CArg> = (0..src.u8() % 4)
            .map(|_| c_arg(src, &self.devices))
            .collect();
        // The pointer array, in a buffer one pointer longer so that a
        // misaligned pointer still lies inside it.
        let mut array: Vec<*const c_char> = names.iter().map(CArg::ptr).collect();
        array.push(ptr::null());
        let n = match src.u8() % 8 {
            0 => usize::MAX,
            1 => isize::MAX as usize / std::mem::size_of::<*const c_char>() + 1,
            k => usize::from(k) % (names.len() + 1),
        };
        let p: *const *const c_char = match src.u8() % 8 {
            0 => ptr::null(),
            // SAFETY: one byte into the array's allocation (at least one
            // pointer long).
            1 => unsafe { array.as_ptr().cast::<u8>().add(1) }.cast(),
            _ => array.as_ptr(),
        };
        let (len, align, topdown) = (src.u64(), src.u64(), src.flag());
        let k = out_kind(src);
        // SAFETY: `p` is NULL, or points into `array` (aligned or not) with
        // at least `n` pointers behind it when `n` is not past isize::MAX
        // bytes (those counts are refused before anything is read); each is
        // NULL or a live NUL-terminated string. `out` as above.
        let st =
            unsafe { svmap_svm_alloc(self.svm_ref(src), len, align, p, n, topdown, out.ptr(k)) };
        after("svmap_svm_alloc", st, out);
        if st == SVMAP_OK && k == OutKind::Valid {
            let a = u64::from_ne_bytes(out.0[..8].try_into().expect("8 bytes"));
            self.ranges.push(a);
        }
    }

    fn replay(&mut self, src: &mut Src, out: &mut Slot) {
        let text: Vec<u8> = match src.u8() % 4 {
            0 => b"{\"op\": \"mmap\", \"length\": \"0x1000\"}\n".to_vec(),
            1 => b"{\"op\": \"reset\"}\n{\"op\": \"map\", \"start\": \"0x10000\", \"end\": \"0x20000\", \"expect\": {\"err\": \"EEXIST\"}}\n".to_vec(),
            _ => (0..src.u8() % 64).map(|_| src.u8()).collect(),
        };
        let len = match src.u8() % 8 {
            0 => usize::MAX,
            1 => 1 << 63,
            k => text.len() * usize::from(k) / 7,
        };
        let data: *const c_char = if src.u8().is_multiple_of(8) {
            ptr::null()
        } else {
            text.as_ptr().cast()
        };
        let (check, out_fd, err_fd) = (src.flag(), self.fd(src), self.fd(src));
        let k = out_kind(src);
        // SAFETY: `data` is NULL or `text` with `len` at most its length
        // (or past isize::MAX, refused before anything is read); the
        // descriptors are -1, open for writing, or checked and refused;
        // `out` as above.
        let st = unsafe { svmap_replay_buffer(data, len, check, out_fd, err_fd, out.ptr(k)) };
        after("svmap_replay_buffer", st, out);
    }

    fn heap_call(&mut self, src: &mut Src, out: &mut Slot) {
        match src.u8() % 3 {
            0 => {
                if self.buffers.len() >= 16 {
                    return;
                }
                let (len, align) = (src.u64(), src.u64());
                let k = out_kind(src);
                // SAFETY: `out` as above, room for a pointer.
                let st = unsafe { svmap_heap_alloc(self.heap_ref(src), len, align, out.ptr(k)) };
                after("svmap_heap_alloc", st, out);
                if st == SVMAP_OK && k == OutKind::Valid {
                    let p = usize::from_ne_bytes(out.0[..8].try_into().expect("8 bytes"));
                    self.buffers.push(p as *mut c_void);
                }
            }
            1 => {
                let p = addr(src, self) as *mut c_void;
                let st = svmap_heap_dealloc(self.heap_ref(src), p);
                after("svmap_heap_dealloc", st, out);
                if st == SVMAP_OK {
                    self.buffers.retain(|&b| b != p);
                }
            }
            _ => {
                let p = addr(src, self) as *mut c_void;
                let k = out_kind(src);
                let h = self.heap_ref(src).map(|s| &*s);
                // SAFETY: `out` as above, room for an int.
                let st = unsafe { svmap_heap_memfd(h, p, out.ptr(k)) };
                after("svmap_heap_memfd", st, out);
            }
        }
    }
}

impl Drop for State {
    fn drop(&mut self) {
        svmap_space_delete(self.space.take());
        svmap_svm_delete(self.svm.take());
        svmap_heap_delete(self.heap.take());
        svmap_reservation_delete(self.res.take());
        // SAFETY: our own descriptors, closed once.
        unsafe {
            libc::close(self.null_fd);
            libc::close(self.broken_pipe);
        }
    }
}

/// Decodes `data` into calls of the C ABI and checks each (see the module
/// documentation); panics at the first broken promise.
pub fn check(data: &[u8]) {
    let mut src = Src { data, at: 0 };
    let mut state = State::new();
    // At most 256 calls an input.
    for _ in 0..256 {
        if src.done() {
            break;
        }
        state.step(&mut src);
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    /// xorshift64*: pseudo-random bytes, reproducible from the seed.
    struct Gen(u64);

    impl Gen {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
    }

    /// Open descriptors of this process.
    fn fds() -> usize {
        std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count())
    }

    /// [`super::check`] on pseudo-random inputs for about two seconds
    /// (bounded by time and by count).
    #[test]
    fn argument_decoding_for_two_seconds() {
        let budget = Duration::from_secs(2);
        let mut g = Gen(0x9e37_79b9_7f4a_7c15);
        let start = Instant::now();
        let fds_before = fds();
        let mut inputs = 0u64;
        while inputs < 200_000 && (inputs < 32 || start.elapsed() < budget) {
            let len = (g.next() % 2048) as usize;
            let data: Vec<u8> = (0..len).map(|_| g.next() as u8).collect();
            if let Err(e) = std::panic::catch_unwind(|| super::check(&data)) {
                let msg = e
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| e.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                    .unwrap_or_default();
                panic!("input #{inputs} {data:02x?}:\n{msg}");
            }
            inputs += 1;
        }
        eprintln!(
            "argument_decoding_for_two_seconds: {inputs} inputs in {:.2?}",
            start.elapsed()
        );
        assert!(inputs >= 32);
        // Other tests of this binary may open descriptors meanwhile, but
        // none keeps one: a leak per input would show as hundreds.
        assert!(fds() < fds_before + 16, "{} -> {}", fds_before, fds());
    }
}

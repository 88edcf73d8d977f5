//! The runtime's C entry points (`svmap_runtime_*`) under many random
//! calls, made from Rust the way a careless C caller would: lengths,
//! addresses and counts from the edges, NULL out-parameters, unknown
//! device names and enums, frees of live, freed and made-up addresses,
//! and two devices whose callbacks fail now and then with garbage codes.
//!
//! After every call: no panic reached the boundary (never
//! `SVMAP_INTERNAL`), the last-error message is empty exactly after
//! `SVMAP_OK`, an out-parameter is written only on success, and the
//! outcome agrees with a model of the live ranges (an allocation lands
//! clear of every live range and device-only region and below every
//! limit of its devices, a free succeeds only for a live start, a free
//! whose invalidation failed leaves the range live). The devices check
//! the order of their calls as they are made (no map over a range they
//! hold, unmap and protect only after an invalidation of what they hold,
//! nothing at or above the limit).

#![allow(unsafe_code)]

use std::collections::BTreeMap;
use std::ffi::{c_char, c_int, c_void, CStr};
use std::ptr;

use svmap::*;

const PAGE: u64 = 0x1000;

/// A small deterministic generator (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn chance(&mut self, one_in: u64) -> bool {
        self.below(one_in) == 0
    }
}

#[derive(Default)]
struct Dev {
    limit: u64,
    /// Ranges mapped on the device: start -> (end, invalidated since),
    /// disjoint.
    held: BTreeMap<u64, (u64, bool)>,
    /// What the next map, invalidate, protect and map_region return.
    rc: [c_int; 4],
    violations: Vec<String>,
    calls: u64,
}

const MAP: usize = 0;
const INVALIDATE: usize = 1;
const PROTECT: usize = 2;
const REGION: usize = 3;

impl Dev {
    /// Splits the held range that contains `x` strictly inside, so that
    /// `x` is a boundary.
    fn split_at(&mut self, x: u64) {
        if let Some((&s, &(e, inv))) = self.held.range(..x).next_back() {
            if e > x {
                self.held.insert(s, (x, inv));
                self.held.insert(x, (e, inv));
            }
        }
    }

    /// The held ranges inside `[s, e)`, split at `s` and `e`.
    fn pieces(&mut self, s: u64, e: u64) -> Vec<u64> {
        self.split_at(s);
        self.split_at(e);
        self.held.range(s..e).map(|(&x, _)| x).collect()
    }

    fn check(&mut self, op: &str, s: u64, e: u64) {
        self.calls += 1;
        if s >= e || e > self.limit || !s.is_multiple_of(PAGE) || !e.is_multiple_of(PAGE) {
            self.violations
                .push(format!("{op} [{s:#x}, {e:#x}) past the limit or odd"));
        }
    }
}

/// # Safety
///
/// `u` points to a live `Dev` that nothing else uses during the call.
unsafe fn dev<'a>(u: *mut c_void) -> &'a mut Dev {
    // SAFETY: the tests pass a pointer to a `Dev` they own.
    unsafe { &mut *u.cast::<Dev>() }
}

unsafe extern "C" fn d_map(u: *mut c_void, s: u64, e: u64) -> c_int {
    // SAFETY: `u` is the `Dev` of the ops.
    let d = unsafe { dev(u) };
    d.check("map", s, e);
    if d.rc[MAP] != 0 {
        return d.rc[MAP];
    }
    if !d.pieces(s, e).is_empty() {
        d.violations
            .push(format!("map [{s:#x}, {e:#x}) over a held range"));
    }
    d.held.insert(s, (e, false));
    0
}

unsafe extern "C" fn d_invalidate(u: *mut c_void, s: u64, e: u64) -> c_int {
    // SAFETY: as in `d_map`.
    let d = unsafe { dev(u) };
    d.check("invalidate", s, e);
    if d.rc[INVALIDATE] != 0 {
        return d.rc[INVALIDATE];
    }
    for x in d.pieces(s, e) {
        if let Some(v) = d.held.get_mut(&x) {
            v.1 = true;
        }
    }
    0
}

unsafe extern "C" fn d_protect(u: *mut c_void, s: u64, e: u64, _p: svmap_prot_t) -> c_int {
    // SAFETY: as in `d_map`.
    let d = unsafe { dev(u) };
    d.check("protect", s, e);
    let ps = d.pieces(s, e);
    if ps.iter().any(|x| !d.held[x].1) {
        d.violations
            .push(format!("protect [{s:#x}, {e:#x}) without an invalidation"));
    }
    // The range is in use again after the protection change.
    for x in ps {
        if let Some(v) = d.held.get_mut(&x) {
            v.1 = false;
        }
    }
    d.rc[PROTECT]
}

unsafe extern "C" fn d_unmap(u: *mut c_void, s: u64, e: u64) -> c_int {
    // SAFETY: as in `d_map`.
    let d = unsafe { dev(u) };
    d.check("unmap", s, e);
    // A page the device still uses must have been invalidated first. (A
    // page it no longer holds may be unmapped again: a free that failed on
    // another device is retried on every device.)
    let ps = d.pieces(s, e);
    if ps.iter().any(|x| !d.held[x].1) {
        d.violations
            .push(format!("unmap [{s:#x}, {e:#x}) without an invalidation"));
    }
    for x in ps {
        d.held.remove(&x);
    }
    0
}

unsafe extern "C" fn d_region(u: *mut c_void, s: u64, e: u64) -> c_int {
    // SAFETY: as in `d_map`.
    let d = unsafe { dev(u) };
    d.check("map_region", s, e);
    d.rc[REGION]
}

fn last_error() -> String {
    // SAFETY: the library returns a NUL-terminated string that lives until
    // the next call on this thread.
    unsafe { CStr::from_ptr(svmap_last_error_message()) }
        .to_string_lossy()
        .into_owned()
}

/// The statuses a runtime call may return: every one but `SVMAP_INTERNAL`
/// (a panic) and the fault and trace codes.
fn check_status(
    seen: &mut BTreeMap<(&'static str, i32), u64>,
    call: &'static str,
    st: svmap_status_t,
) {
    *seen.entry((call, st as i32)).or_default() += 1;
    let msg = last_error();
    assert!(
        matches!(
            st,
            svmap_status_t::SVMAP_OK
                | svmap_status_t::SVMAP_EINVAL
                | svmap_status_t::SVMAP_ENOMEM
                | svmap_status_t::SVMAP_EEXIST
                | svmap_status_t::SVMAP_ENOENT
                | svmap_status_t::SVMAP_EPERM
                | svmap_status_t::SVMAP_EIO
                | svmap_status_t::SVMAP_ABOVE_DEVICE_LIMIT
        ),
        "{call}: {st:?}: {msg}"
    );
    assert_eq!(
        st == svmap_status_t::SVMAP_OK,
        msg.is_empty(),
        "{call}: {st:?} with message {msg:?}"
    );
}

const GARBAGE: [c_int; 5] = [-1, 1, 42, c_int::MIN, c_int::MAX];

const EDGE_LENGTHS: [u64; 10] = [
    0,
    1,
    PAGE - 1,
    PAGE,
    PAGE + 1,
    0x20_0000,
    1 << 40,
    u64::MAX - PAGE + 1,
    u64::MAX,
    0x7fff_ffff_f000,
];

fn overlaps(m: &BTreeMap<u64, u64>, s: u64, e: u64) -> bool {
    m.range(..e).any(|(_, &me)| me > s)
}

fn run(seed: u64, ops: usize) {
    let mut rng = Rng(seed | 1);
    let mut devs = [
        Dev {
            limit: 1 << 40,
            ..Dev::default()
        },
        Dev {
            limit: 1 << 44,
            ..Dev::default()
        },
    ];
    let rt = svmap_runtime_new(false).map_or(ptr::null_mut(), Box::into_raw);
    assert!(!rt.is_null(), "{}", last_error());
    let names = [c"a", c"b", c"nope"];
    for (i, d) in devs.iter_mut().enumerate() {
        let mut cfg = std::mem::MaybeUninit::<svmap_device_config_t>::uninit();
        let bits = if i == 0 { 40 } else { 44 };
        // SAFETY: `cfg` is valid for one write; the name is a C string
        // that lives for the whole test.
        unsafe {
            assert_eq!(
                svmap_device_config_init(cfg.as_mut_ptr(), names[i].as_ptr(), bits),
                svmap_status_t::SVMAP_OK
            );
        }
        // SAFETY: initialised just above.
        let cfg = unsafe { cfg.assume_init() };
        let ops = svmap_device_ops_t {
            user: ptr::from_mut(d).cast(),
            map: Some(d_map),
            invalidate: Some(d_invalidate),
            protect: Some(d_protect),
            unmap: Some(d_unmap),
            map_region: Some(d_region),
        };
        // SAFETY: live handle, valid config and callbacks; `devs` outlives
        // the runtime.
        let st = unsafe { svmap_runtime_add_device(rt, Some(&cfg), Some(&ops)) };
        assert_eq!(st, svmap_status_t::SVMAP_OK, "{}", last_error());
    }
    // start -> end of every live SVM range, and the regions.
    let mut live: BTreeMap<u64, u64> = BTreeMap::new();
    let mut regions: BTreeMap<u64, u64> = BTreeMap::new();
    let mut freed: Vec<u64> = Vec::new();
    let mut seen = BTreeMap::new();
    let set_rc = |devs: &mut [Dev; 2], which: usize, rc: c_int, d: usize| {
        for x in devs.iter_mut() {
            x.rc = [0; 4];
        }
        devs[d].rc[which] = rc;
    };
    for step in 0..ops {
        let what = rng.below(6);
        // Some address to act on: a live start, a freed one, inside a live
        // range, or made up.
        let addr = {
            let starts: Vec<u64> = live.keys().copied().collect();
            match rng.below(5) {
                0 | 1 if !starts.is_empty() => starts[rng.below(starts.len() as u64) as usize],
                2 if !freed.is_empty() => freed[rng.below(freed.len() as u64) as usize],
                3 if !starts.is_empty() => {
                    starts[rng.below(starts.len() as u64) as usize] + PAGE * rng.below(3)
                }
                _ => match rng.below(3) {
                    0 => EDGE_LENGTHS[rng.below(10) as usize],
                    1 => rng.below(1 << 44) & !(PAGE - 1),
                    _ => rng.next(),
                },
            }
        };
        let devsel: (Vec<*const c_char>, bool) = match rng.below(6) {
            0 => (vec![names[0].as_ptr()], true),
            1 => (vec![names[1].as_ptr()], true),
            2 => (vec![names[2].as_ptr()], false),
            3 => (vec![names[0].as_ptr(), ptr::null()], false),
            _ => (vec![names[0].as_ptr(), names[1].as_ptr()], true),
        };
        let fail = rng.chance(5);
        let rc = GARBAGE[rng.below(5) as usize];
        let d = rng.below(2) as usize;
        match what {
            0 | 1 => {
                let len = if rng.chance(4) {
                    EDGE_LENGTHS[rng.below(10) as usize]
                } else {
                    PAGE * (1 + rng.below(64))
                };
                set_rc(&mut devs, MAP, if fail { rc } else { 0 }, d);
                let mut out = 0xdead_beef_u64;
                let out_p: *mut u64 = if rng.chance(20) {
                    ptr::null_mut()
                } else {
                    &mut out
                };
                let n = if rng.chance(30) {
                    usize::MAX
                } else {
                    devsel.0.len()
                };
                // SAFETY: live handle; names valid C strings (or NULL
                // entries, which are refused); `n` is the array's length
                // or too large to be one (refused before reading).
                let st = unsafe { svmap_runtime_alloc(rt, len, devsel.0.as_ptr(), n, out_p) };
                check_status(&mut seen, "alloc", st);
                if st == svmap_status_t::SVMAP_OK {
                    assert!(devsel.1 && !out_p.is_null() && n != usize::MAX);
                    let end = out + len.next_multiple_of(PAGE);
                    assert!(!overlaps(&live, out, end), "{out:#x} over a live range");
                    assert!(!overlaps(&regions, out, end), "{out:#x} over a region");
                    let limit = if devsel.0[0] == names[0].as_ptr() {
                        1u64 << 40
                    } else {
                        1 << 44
                    };
                    assert!(end <= limit, "[{out:#x}, {end:#x}) past {limit:#x}");
                    // SAFETY: a live read-write SVM range of the runtime.
                    unsafe {
                        ptr::write_volatile(out as *mut u64, step as u64);
                        assert_eq!(ptr::read_volatile(out as *const u64), step as u64);
                    }
                    live.insert(out, end);
                    freed.retain(|&f| f < out || f >= end);
                } else {
                    assert_eq!(out, 0xdead_beef, "out written on failure");
                }
            }
            2 => {
                set_rc(&mut devs, INVALIDATE, if fail { rc } else { 0 }, d);
                // SAFETY: live handle.
                let st = unsafe { svmap_runtime_free(rt, addr) };
                check_status(&mut seen, "free", st);
                let was_live = live.contains_key(&addr);
                match st {
                    svmap_status_t::SVMAP_OK => {
                        assert!(was_live, "freed {addr:#x}, not a live start");
                        live.remove(&addr);
                        freed.push(addr);
                    }
                    svmap_status_t::SVMAP_EIO => {
                        assert!(was_live && fail, "{}", last_error());
                    }
                    _ => assert!(!was_live, "live {addr:#x}: {}", last_error()),
                }
            }
            3 => {
                let len = if rng.chance(3) {
                    EDGE_LENGTHS[rng.below(10) as usize]
                } else {
                    PAGE * (1 + rng.below(4))
                };
                let prot = rng.below(5) as svmap_prot_t;
                let which = if rng.chance(2) { INVALIDATE } else { PROTECT };
                set_rc(&mut devs, which, if fail { rc } else { 0 }, d);
                // SAFETY: live handle.
                let st = unsafe { svmap_runtime_protect(rt, addr, len, prot) };
                check_status(&mut seen, "protect", st);
                if st == svmap_status_t::SVMAP_OK {
                    assert!(prot <= 2);
                }
                // Back to read-write where that works, so that the CPU
                // writes above stay valid.
                set_rc(&mut devs, MAP, 0, 0);
                // SAFETY: live handle.
                let st = unsafe { svmap_runtime_protect(rt, addr, len, SVMAP_PROT_READ_WRITE) };
                check_status(&mut seen, "protect back", st);
            }
            4 => {
                let len = PAGE * (1 + rng.below(16));
                let (s, e) = if rng.chance(4) {
                    (addr, addr.wrapping_add(len))
                } else {
                    let s = (rng.below(1 << 40) & !(PAGE - 1)).max(1 << 20);
                    (s, s + len)
                };
                let policy = rng.below(4) as svmap_cpu_policy_t;
                set_rc(&mut devs, REGION, if fail { rc } else { 0 }, d);
                let name = names[rng.below(3) as usize].as_ptr();
                // SAFETY: live handle, a C string.
                let st = unsafe { svmap_runtime_device_map(rt, name, s, e, policy) };
                check_status(&mut seen, "device_map", st);
                match st {
                    svmap_status_t::SVMAP_OK | svmap_status_t::SVMAP_EIO => {
                        assert!(!overlaps(&live, s, e), "region over a live range");
                        regions.insert(s, e);
                    }
                    _ => {}
                }
            }
            _ => {
                let (mut fd, mut off, mut len) = (-1, 7u64, 7u64);
                let null = rng.chance(10);
                // SAFETY: live handle; out-parameters valid or NULL.
                let st = unsafe {
                    svmap_runtime_buffer_fd(
                        rt,
                        addr,
                        if null { ptr::null_mut() } else { &mut fd },
                        &mut off,
                        &mut len,
                    )
                };
                check_status(&mut seen, "buffer_fd", st);
                let inside = live
                    .range(..=addr)
                    .next_back()
                    .is_some_and(|(_, &e)| addr < e);
                if st == svmap_status_t::SVMAP_OK {
                    assert!(inside && !null && fd >= 0);
                } else {
                    assert_eq!((off, len), (7, 7));
                    assert!(null || !inside, "{addr:#x}: {}", last_error());
                }
            }
        }
        for (i, x) in devs.iter().enumerate() {
            assert!(x.violations.is_empty(), "device {i}: {:?}", x.violations);
        }
    }
    // Everything left frees cleanly, and the devices hold nothing after.
    set_rc(&mut devs, MAP, 0, 0);
    for &a in live.keys() {
        // SAFETY: live handle.
        let st = unsafe { svmap_runtime_free(rt, a) };
        assert_eq!(st, svmap_status_t::SVMAP_OK, "{a:#x}: {}", last_error());
    }
    for (i, x) in devs.iter().enumerate() {
        assert!(x.violations.is_empty(), "device {i}: {:?}", x.violations);
        assert!(x.held.is_empty(), "device {i} holds {:x?}", x.held);
        assert!(x.calls > 0);
    }
    // SAFETY: the handle from svmap_runtime_new, deleted once.
    unsafe { svmap_runtime_delete(rt) };
    // The run reached the outcomes that matter.
    use svmap_status_t::*;
    for want in [
        ("alloc", SVMAP_OK),
        ("alloc", SVMAP_EIO),
        ("alloc", SVMAP_EINVAL),
        ("alloc", SVMAP_ENOENT),
        ("free", SVMAP_OK),
        ("free", SVMAP_EIO),
        ("free", SVMAP_EINVAL),
        ("protect", SVMAP_OK),
        ("protect", SVMAP_EIO),
        ("device_map", SVMAP_OK),
        ("device_map", SVMAP_EIO),
        ("buffer_fd", SVMAP_OK),
        ("buffer_fd", SVMAP_ENOENT),
    ] {
        assert!(
            seen.contains_key(&(want.0, want.1 as i32)),
            "seed {seed:#x}: never {want:?}: {seen:?}"
        );
    }
}

#[test]
fn random_calls_keep_every_promise() {
    for seed in [1, 0x5eed, 0xdead_beef_cafe] {
        run(seed, 3000);
    }
}

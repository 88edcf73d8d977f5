//! `libsvmap_fence.so`: an `LD_PRELOAD` library that fences off the address
//! space above `2^N` before `main()`, so that an unmodified program's later
//! mappings (malloc arenas, `mmap`, thread stacks, `dlopen`ed libraries) land
//! below a device's VA limit.
//!
//! ```text
//!  0        2^N                                                         TASK_SIZE
//!  |  free  |##[prog][brk]####[libs]##[vdso]######|room|[stack]###########|
//!   kernel        ^ "#": PROT_NONE|MAP_NORESERVE|MAP_FIXED_NOREPLACE, one per hole
//!   places        |room|: RLIMIT_STACK + 1 MiB guard gap left free below the
//!   here                 main stack so it can still grow
//! ```
//!
//! The constructor (an `.init_array` entry) runs after the loader has mapped
//! the program and its libraries and before `main`:
//!
//! 1. reads `SVMAP_FENCE_VA_BITS` (no variable: does nothing);
//! 2. reads `/proc/self/maps` with raw `open`/`read` into a static buffer
//!    (no heap allocation: malloc is not to be touched before the fence is
//!    up, or its first `brk` arena would land above the limit);
//! 3. reports everything already above `2^N` (program, libraries, vDSO,
//!    stack, an existing `[heap]`): that memory cannot be moved;
//! 4. reserves every free hole in `[2^N, TASK_SIZE)` except the stack's room
//!    to grow (`RLIMIT_STACK` plus the guard gap below the start of
//!    `[stack]`: the rule of `svmap_core::fence_plan`, shared with
//!    `svmap_linux::fence::Fence`, which computes it without allocating).
//!    That includes the space after the program break, so `brk`
//!    fails and glibc's malloc falls back to `mmap`, which the kernel now
//!    places below `2^N`. `MAP_FIXED_NOREPLACE` never replaces a mapping;
//!    a hole that changed meanwhile (`EEXIST`) is retried on a fresh read;
//! 5. reports what it could not cover. A fence that is not complete is
//!    never silent: its `uncovered` and `error` lines always reach stderr,
//!    and the process exits with status 125 before `main` unless
//!    `SVMAP_FENCE_ALLOW_PARTIAL=1` (then a warning, and the program runs).
//!
//! The report goes to stderr when `SVMAP_FENCE_VERBOSE=1` and is appended to
//! the file named by `SVMAP_FENCE_REPORT` if that is set, one
//! `svmap-fence[PID]: ...` line per fact: `va_bits=`, `above <maps line>`,
//! `stack-room A-B`, `reserved A-B`, `uncovered A-B errno=E`, and a final
//! `done reserved=N bytes=B uncovered=U`. The variables are inherited, so
//! every program the command execs is fenced and reports too.
//!
//! System calls go through `rustix`, whose calls here (`open`, `read`,
//! `write`, `mmap`, `munmap`, `getrlimit`, `getpid`) allocate nothing: a
//! path is a `&CStr`, passed through as it is, and an errno is a number,
//! printed as one. `libc` remains for `getenv`: reading the
//! environment is not a system call, and rustix has no allocation-free way
//! to do it (`std::env::var_os` allocates); and for `_exit` when the fence
//! is incomplete (rustix has it only in its experimental runtime module).
#![allow(unsafe_code)]

use core::cell::UnsafeCell;
use core::ffi::{c_void, CStr};
use core::fmt::{self, Write};
use core::sync::atomic::{AtomicBool, Ordering};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use rustix::fs::{Mode, OFlags};
use rustix::io::Errno;
use rustix::mm::{MapFlags, ProtFlags};

use svmap_core::fence_plan::{self, FenceParams, FenceStep, FenceVma};

const PAGE: u64 = 4096;
/// The kernel's default `stack_guard_gap` (256 pages).
const STACK_GUARD_GAP: u64 = 256 * PAGE;
/// Room for the text of `/proc/self/maps` at start-up (about 100 bytes per
/// VMA; a process has a few hundred VMAs before `main`).
const MAPS_BUF: usize = 1 << 20;
/// Most VMAs handled.
const MAX_VMAS: usize = 8192;
/// Rounds of read-and-reserve when holes change meanwhile.
const ROUNDS: usize = 4;

#[derive(Clone, Copy)]
struct Vma {
    start: u64,
    end: u64,
    /// Offsets of the line in the buffer, for the report.
    line: (u32, u32),
    stack: bool,
}

struct State {
    buf: [u8; MAPS_BUF],
    len: usize,
    vmas: [Vma; MAX_VMAS],
    n: usize,
}

struct Global(UnsafeCell<State>);

// SAFETY: the state is reached only through `take_state`, which hands out
// its one `&mut` at most once per process (guarded by `TAKEN`), so no two
// threads, and no two calls, ever share it.
unsafe impl Sync for Global {}

/// Set by the first `take_state`. The loader runs the constructor once, on
/// one thread, before `main`; but a program may also `dlopen` the library
/// (after a `dlclose`, again), so "once" is enforced, not assumed.
static TAKEN: AtomicBool = AtomicBool::new(false);

/// The state, the first time only.
fn take_state() -> Option<&'static mut State> {
    if TAKEN.swap(true, Ordering::AcqRel) {
        return None;
    }
    // SAFETY: `TAKEN` was false, so this is the only reference ever made to
    // the state, and it lives in a static.
    Some(unsafe { &mut *STATE.0.get() })
}

static STATE: Global = Global(UnsafeCell::new(State {
    buf: [0; MAPS_BUF],
    len: 0,
    vmas: [Vma {
        start: 0,
        end: 0,
        line: (0, 0),
        stack: false,
    }; MAX_VMAS],
    n: 0,
}));

#[used]
#[link_section = ".init_array"]
static FENCE_INIT: extern "C" fn() = fence_init;

/// A line writer over a stack buffer, sent to up to two file descriptors.
struct Out<'a> {
    fds: [Option<BorrowedFd<'a>>; 2],
    buf: [u8; 512],
    len: usize,
}

impl Write for Out<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for &b in s.as_bytes() {
            if self.len == self.buf.len() {
                self.flush();
            }
            self.buf[self.len] = b;
            self.len += 1;
        }
        Ok(())
    }
}

impl Out<'_> {
    fn flush(&mut self) {
        for fd in self.fds.iter().flatten() {
            let mut off = 0;
            while off < self.len {
                match rustix::io::write(fd, &self.buf[off..self.len]) {
                    Ok(0) => break,
                    Ok(n) => off += n,
                    Err(Errno::INTR) => {}
                    Err(_) => break,
                }
            }
        }
        self.len = 0;
    }

    fn line(&mut self, args: fmt::Arguments<'_>) {
        self.emit(args);
    }

    /// A line that reaches standard error even when not verbose: a failure
    /// to fence is never silent.
    fn loud(&mut self, args: fmt::Arguments<'_>) {
        let saved = self.fds[0];
        self.fds[0] = Some(rustix::stdio::stderr());
        self.emit(args);
        self.fds[0] = saved;
    }

    fn emit(&mut self, args: fmt::Arguments<'_>) {
        if self.fds.iter().all(Option::is_none) {
            return;
        }
        let pid = rustix::process::getpid().as_raw_nonzero();
        let _ = write!(self, "svmap-fence[{pid}]: ");
        let _ = self.write_fmt(args);
        let _ = self.write_str("\n");
        self.flush();
    }
}

/// `getenv(name)` (libc: see the crate header).
fn env(name: &CStr) -> Option<&'static CStr> {
    // SAFETY: getenv with a NUL-terminated name; before main nobody calls
    // setenv concurrently. The result points into the environment block,
    // which lives as long as the process unless modified; the constructor
    // uses it only while it runs.
    let p = unsafe { libc::getenv(name.as_ptr()) };
    if p.is_null() {
        return None;
    }
    // SAFETY: getenv returned a valid NUL-terminated string, which lives in
    // the environment block (see above).
    Some(unsafe { CStr::from_ptr(p) })
}

fn parse_dec(s: &[u8]) -> Option<u64> {
    if s.is_empty() {
        return None;
    }
    let mut v = 0u64;
    for &c in s {
        if !c.is_ascii_digit() {
            return None;
        }
        v = v.checked_mul(10)?.checked_add((c - b'0') as u64)?;
    }
    Some(v)
}

fn parse_hex(s: &[u8]) -> Option<u64> {
    if s.is_empty() || s.len() > 16 {
        return None;
    }
    let mut v = 0u64;
    for &c in s {
        v = v << 4 | (c as char).to_digit(16)? as u64;
    }
    Some(v)
}

/// Reads `/proc/self/maps` into the state and parses it. False if the file
/// could not be read.
fn read_maps(st: &mut State) -> bool {
    st.len = 0;
    st.n = 0;
    let Ok(fd) = rustix::fs::open(
        c"/proc/self/maps",
        OFlags::RDONLY | OFlags::CLOEXEC,
        Mode::empty(),
    ) else {
        return false;
    };
    while st.len < MAPS_BUF {
        match rustix::io::read(&fd, &mut st.buf[st.len..]) {
            Ok(0) => break,
            Ok(n) => st.len += n,
            Err(Errno::INTR) => {}
            Err(_) => break,
        }
    }
    drop(fd);
    let mut pos = 0;
    while pos < st.len && st.n < MAX_VMAS {
        let Some(nl) = st.buf[pos..st.len].iter().position(|&c| c == b'\n') else {
            break; // a cut line at the end of a full buffer
        };
        let line = &st.buf[pos..pos + nl];
        let dash = line.iter().position(|&c| c == b'-');
        let sp = line.iter().position(|&c| c == b' ');
        if let (Some(d), Some(s)) = (dash, sp) {
            if let (Some(a), Some(b)) = (parse_hex(&line[..d]), parse_hex(&line[d + 1..s])) {
                st.vmas[st.n] = Vma {
                    start: a,
                    end: b,
                    line: (pos as u32, (pos + nl) as u32),
                    stack: line.ends_with(b"[stack]"),
                };
                st.n += 1;
            }
        }
        pos += nl + 1;
    }
    true
}

/// `mmap(addr, len, PROT_NONE, MAP_PRIVATE|MAP_ANONYMOUS|MAP_NORESERVE|
/// MAP_FIXED_NOREPLACE)`; a result at another address (a kernel before 4.17
/// takes the flag as a hint) is unmapped again and reported as `EEXIST`.
fn reserve(addr: u64, len: u64) -> Result<(), Errno> {
    // SAFETY: MAP_FIXED_NOREPLACE never replaces an existing mapping, and a
    // new PROT_NONE mapping is memory that no code can touch.
    let p = unsafe {
        rustix::mm::mmap_anonymous(
            addr as usize as *mut c_void,
            len as usize,
            ProtFlags::empty(),
            MapFlags::PRIVATE | MapFlags::NORESERVE | MapFlags::FIXED_NOREPLACE,
        )
    }?;
    if p as usize as u64 != addr {
        // SAFETY: `p` is the mapping just created by this call, known to
        // nothing else.
        let _ = unsafe { rustix::mm::munmap(p, len as usize) };
        return Err(Errno::EXIST);
    }
    Ok(())
}

/// The top of the user range: `2^56 - PAGE` with 5-level paging, else
/// `2^47 - PAGE` (a fixed map at `2^47` is `ENOMEM` beyond `TASK_SIZE`).
/// A mapping the call placed elsewhere means the flag was taken as a hint
/// (a kernel before 4.17, or an emulator such as valgrind, which places
/// it where it likes): that proves nothing, and the answer is `2^47`,
/// where the kernel's top-down placement starts either way. Only the
/// kernel's `EEXIST` (something is mapped at `2^47`) proves 5-level paging.
fn task_size() -> u64 {
    let at = 1u64 << 47;
    // SAFETY: MAP_FIXED_NOREPLACE never replaces an existing mapping, and a
    // new PROT_NONE mapping is memory that no code can touch.
    let r = unsafe {
        rustix::mm::mmap_anonymous(
            at as usize as *mut c_void,
            PAGE as usize,
            ProtFlags::empty(),
            MapFlags::PRIVATE | MapFlags::NORESERVE | MapFlags::FIXED_NOREPLACE,
        )
    };
    match r {
        Ok(p) => {
            // SAFETY: `p` is the page just mapped by this call, PROT_NONE
            // and known to nothing else.
            let _ = unsafe { rustix::mm::munmap(p, PAGE as usize) };
            if p as usize as u64 == at {
                (1 << 56) - PAGE
            } else {
                at - PAGE
            }
        }
        Err(Errno::EXIST) => (1 << 56) - PAGE,
        Err(_) => at - PAGE,
    }
}

/// The soft `RLIMIT_STACK`; `None` if unlimited.
fn stack_rlimit() -> Option<u64> {
    rustix::process::getrlimit(rustix::process::Resource::Stack).current
}

struct Hex(u64);
impl fmt::Display for Hex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#x}", self.0)
    }
}

extern "C" fn fence_init() {
    let Some(bits) = env(c"SVMAP_FENCE_VA_BITS") else {
        return;
    };
    let verbose = env(c"SVMAP_FENCE_VERBOSE").map(CStr::to_bytes) == Some(b"1");
    let report_fd: Option<OwnedFd> = match env(c"SVMAP_FENCE_REPORT") {
        Some(path) if !path.is_empty() => rustix::fs::open(
            path,
            OFlags::WRONLY | OFlags::CREATE | OFlags::APPEND | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o644),
        )
        .ok(),
        _ => None,
    };
    let mut out = Out {
        fds: [
            verbose.then(rustix::stdio::stderr),
            report_fd.as_ref().map(|fd| fd.as_fd()),
        ],
        buf: [0; 512],
        len: 0,
    };
    let ok = if under_valgrind() {
        // Valgrind places the program's mappings itself, and memcheck
        // tracks every byte of a reservation: a fence of TiBs here takes
        // minutes and keeps nothing below the limit.
        out.loud(format_args!(
            "error: this process runs under valgrind, which places its mappings itself: \
             the preload fence cannot work here; fence valgrind instead \
             (svmap run --va-bits N -- valgrind PROG, without --preload)"
        ));
        false
    } else {
        run(bits.to_bytes(), &mut out)
    };
    let allow_partial = env(c"SVMAP_FENCE_ALLOW_PARTIAL").map(CStr::to_bytes) == Some(b"1");
    if !ok {
        if allow_partial {
            out.loud(format_args!(
                "warning: the fence is incomplete; running on (partial fences allowed)"
            ));
        } else {
            out.loud(format_args!(
                "error: the fence is incomplete; exiting with status 125 \
                 (svmap run --allow-partial, or SVMAP_FENCE_ALLOW_PARTIAL=1, runs on)"
            ));
            drop(report_fd);
            // SAFETY: _exit ends the process at once, before main; nothing
            // of the program has run that would need its exit handlers.
            unsafe { libc::_exit(125) };
        }
    }
    // The report descriptor closes when `report_fd` drops.
}

/// The process is a valgrind client: valgrind preloads its
/// `vgpreload_<tool>-<arch>.so` into every program it runs.
fn under_valgrind() -> bool {
    env(c"LD_PRELOAD").is_some_and(|p| {
        p.to_bytes()
            .windows(b"vgpreload_".len())
            .any(|w| w == b"vgpreload_")
    })
}

/// Fences this process; false if some part could not be fenced.
fn run(bits: &[u8], out: &mut Out<'_>) -> bool {
    let bits = match parse_dec(bits) {
        Some(b @ 20..=56) => b as u32,
        _ => {
            out.loud(format_args!(
                "error: SVMAP_FENCE_VA_BITS={:?} is not a number in 20..=56; no fence",
                core::str::from_utf8(bits).unwrap_or("?")
            ));
            return false;
        }
    };
    let limit = 1u64 << bits;
    let top = task_size();
    out.line(format_args!(
        "va_bits={bits} limit={} task_size={}",
        Hex(limit),
        Hex(top)
    ));
    if limit >= top {
        out.line(format_args!(
            "nothing to fence: the limit is above the user range"
        ));
        out.line(format_args!("done reserved=0 bytes=0x0 uncovered=0"));
        return true;
    }
    let params = FenceParams {
        limit,
        top,
        stack_rlimit: stack_rlimit(),
        stack_guard_gap: STACK_GUARD_GAP,
        page_size: PAGE,
    };
    let Some(st) = take_state() else {
        out.line(format_args!("error: the fence already ran in this process"));
        return true;
    };
    let (mut reserved, mut bytes, mut uncovered) = (0u64, 0u64, 0u64);
    for round in 0..ROUNDS {
        if !read_maps(st) {
            out.loud(format_args!("error: cannot read /proc/self/maps; no fence"));
            return false;
        }
        if st.len == MAPS_BUF || st.n == MAX_VMAS {
            out.loud(format_args!(
                "warning: /proc/self/maps larger than the buffer; fencing what was read"
            ));
        }
        if round == 0 {
            for v in &st.vmas[..st.n] {
                if v.end > limit && v.start < top {
                    let text = &st.buf[v.line.0 as usize..v.line.1 as usize];
                    out.line(format_args!(
                        "above {}",
                        core::str::from_utf8(text).unwrap_or("(non-UTF-8 line)")
                    ));
                }
            }
        }
        let mut raced = false;
        let vmas = st.vmas[..st.n].iter().map(|v| FenceVma {
            start: v.start,
            end: v.end,
            grows_down: v.stack,
        });
        for step in fence_plan::plan(vmas, params) {
            let (hole_start, hole_end) = match step {
                FenceStep::StackRoom { start, end } => {
                    if round == 0 {
                        out.line(format_args!(
                            "stack-room {}-{} left free for the main stack to grow",
                            Hex(start),
                            Hex(end)
                        ));
                    }
                    continue;
                }
                FenceStep::Reserve { start, end } => (start, end),
            };
            let len = hole_end - hole_start;
            match reserve(hole_start, len) {
                Ok(()) => {
                    reserved += 1;
                    bytes += len;
                    out.line(format_args!(
                        "reserved {}-{}",
                        Hex(hole_start),
                        Hex(hole_end)
                    ));
                }
                Err(Errno::EXIST) if round + 1 < ROUNDS => raced = true,
                Err(e) => {
                    let e = e.raw_os_error();
                    uncovered += 1;
                    out.loud(format_args!(
                        "uncovered {}-{} errno={e}",
                        Hex(hole_start),
                        Hex(hole_end)
                    ));
                }
            }
        }
        if !raced {
            break;
        }
    }
    out.line(format_args!(
        "done reserved={reserved} bytes={} uncovered={uncovered}",
        Hex(bytes)
    ));
    uncovered == 0
}

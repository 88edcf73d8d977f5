//! The fence from the first instruction: `svmap run` starts the program
//! under `ptrace`, and at every exec of it or of any of its descendants
//! reserves the free address space at and above `2^N` in the new image
//! before the image runs one instruction, so that the loader, library
//! constructors, static executables (Go, `-static`) and everything after
//! them map below `2^N`.
//!
//! How a reservation gets into the tracee (x86-64): at the stop after the
//! exec, the launcher saves the registers and the word at the instruction
//! pointer, writes a `syscall` instruction (`0f 05`) there, and for each
//! hole of the plan ([`svmap_core::fence_plan`], the rule the preload
//! library and [`crate::fence::Fence`] use too, on the new image's
//! `/proc/PID/maps`) sets the registers to
//! `mmap(hole, len, PROT_NONE, MAP_PRIVATE|MAP_ANONYMOUS|MAP_NORESERVE|
//! MAP_FIXED_NOREPLACE, -1, 0)` and single-steps. Then it puts the word and
//! the registers back and lets the image run. The tracee is stopped
//! throughout, so nothing races the plan.
//!
//! The launcher stays attached (`PTRACE_O_TRACEFORK|TRACEVFORK|TRACECLONE|
//! TRACEEXEC`, `EXITKILL`) and waits for every traced process, as `strace
//! -f` does; it stops a process only at forks, execs and signal deliveries.
//! A traced program cannot itself be traced (a debugger run under
//! `svmap run` must use the preload method). Signals sent to the launcher
//! are forwarded to the program; job-control stops are not honoured while
//! traced (the process is resumed).
//!
//! The main stack's room (the hard `RLIMIT_STACK`, or `--stack-room`, below
//! the stack; with an unlimited hard limit everything the kernel left free
//! below the stack at exec) is reserved as well, except the guard gap just
//! below the stack, which the kernel's searches never use. When the stack
//! faults in the reserved room (`SIGSEGV` with the address there, within
//! the soft limit), the launcher unmaps the room from one guard gap below
//! the faulting page up, through a `syscall` instruction already in the
//! process (the vDSO's), and lets the instruction run again: the stack
//! grows, and no `mmap` ever lands in its room, even when the space below
//! the limit is full. The signal reaches the program only for a real
//! overflow.
//!
//! The legacy layout (personality `ADDR_COMPAT_LAYOUT`, `setarch -L`)
//! searches bottom-up from `TASK_SIZE / 3` and never below: an image with
//! it is executed again (`execve("/proc/self/exe")` with the arguments and
//! environment on its stack) without the flag, in the default layout.
//!
//! Where `ptrace` is not permitted (`EPERM`: a seccomp policy, Yama, or the
//! launcher is itself traced with fork following), the launcher says so and
//! falls back to the preload library.

use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Write};
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, ExitStatus};

use svmap_core::fence_plan::{self, FenceParams, FenceStep, FenceVma};

use crate::error::Error;
use crate::maps::{self, Kind, Target};
use crate::reserve::STACK_GUARD_GAP;
use crate::sys::PAGE;
use crate::trace_sys::{self as ts, Regs};

/// Where the fence's report lines go: standard error when verbose, and the
/// report file if one was given. Errors and warnings always reach standard
/// error.
pub(crate) struct Reporter {
    pub(crate) verbose: bool,
    pub(crate) file: Option<File>,
}

impl Reporter {
    fn line(&mut self, pid: i32, msg: &str) {
        let text = format!("svmap-fence[{pid}]: {msg}\n");
        let loud = msg.starts_with("error") || msg.starts_with("warning");
        if self.verbose || loud {
            let _ = io::stderr().write_all(text.as_bytes());
        }
        if let Some(f) = &mut self.file {
            let _ = f.write_all(text.as_bytes());
        }
    }
}

/// What the launcher needs to fence each image.
pub(crate) struct TraceOptions {
    pub(crate) va_bits: u32,
    /// A failure to fence is a warning, not the end of the run.
    pub(crate) allow_partial: bool,
    /// The room kept for the main stack below its start (`None`: the hard
    /// `RLIMIT_STACK` of the process; unlimited keeps the whole hole).
    pub(crate) stack_room: Option<u64>,
}

const OPTIONS: i32 = libc::PTRACE_O_TRACESYSGOOD
    | libc::PTRACE_O_TRACEEXEC
    | libc::PTRACE_O_TRACEFORK
    | libc::PTRACE_O_TRACEVFORK
    | libc::PTRACE_O_TRACECLONE
    | libc::PTRACE_O_EXITKILL;

const MAP_FLAGS: u64 =
    (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE | libc::MAP_FIXED_NOREPLACE)
        as u64;

/// How a traced run ended.
pub(crate) enum Traced {
    /// Ran to the end (the root's status); `failed`: some image could not
    /// be fenced and was killed.
    Done { status: ExitStatus, failed: bool },
    /// `ptrace` is not permitted here: run the command another way.
    NotPermitted(io::Error),
}

/// Runs `cmd args...` under the tracer, fencing every image.
pub(crate) fn run_traced<S: AsRef<OsStr>>(
    opts: &TraceOptions,
    rep: &mut Reporter,
    cmd: &OsStr,
    args: &[S],
) -> Result<Traced, Error> {
    let mut c = Command::new(cmd);
    c.args(args);
    ts::trace_me_on_spawn(&mut c);
    let name = cmd.to_string_lossy().into_owned();
    let child = match c.spawn() {
        Ok(ch) => ch,
        Err(e) if matches!(e.raw_os_error(), Some(libc::EPERM) | Some(libc::ENOSYS)) => {
            return Ok(Traced::NotPermitted(e));
        }
        Err(source) => return Err(Error::Spawn { cmd: name, source }),
    };
    let root = child.id() as i32;
    ts::forward_signals_to(root);
    let result = trace_loop(opts, rep, root);
    ts::forward_signals_to(0);
    result
}

fn io_err(what: &str, source: io::Error) -> Error {
    Error::Io {
        path: what.into(),
        source,
    }
}

/// The main stack's room in one process: one `PROT_NONE` reservation
/// `[floor, top)` below the stack's guard gap, which only the stack gets:
/// when the stack faults in it, the launcher unmaps the part from a guard
/// gap below the faulting page up to `top`, and the kernel grows the stack
/// there. The kernel's own searches never use the room (it is mapped), nor
/// the guard gap below the stack (`vm_start_gap`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Room {
    floor: u64,
    top: u64,
    /// The end of the main stack: its size is measured from there.
    stack_end: u64,
}

/// What fencing a new image did.
enum Fenced {
    /// The image runs; `false`: it was not completely fenced (and was
    /// killed unless partial fences are allowed).
    Done(bool),
    /// The image was executed again, in the default layout; it is at the
    /// exec event stop of that new exec.
    ReExecuted,
    /// The image cannot be fenced and runs unfenced (partial fences
    /// allowed): it is let go, untraced, with what it starts (a sanitizer's
    /// leak checker, for one, cannot run traced).
    LetGo,
}

fn trace_loop(opts: &TraceOptions, rep: &mut Reporter, root: i32) -> Result<Traced, Error> {
    let mut root_status = None;
    let mut failed = false;
    // Processes whose first stop (the SIGSTOP of a new traced task) was seen.
    let mut started: HashSet<i32> = HashSet::new();
    // Processes that exec'd and run to the exec's system-call exit, where
    // the registers can be set.
    let mut exec_pending: HashSet<i32> = HashSet::new();
    // The stack room of each process, by thread-group id.
    let mut rooms: HashMap<i32, Room> = HashMap::new();
    // The first stop: SIGTRAP after the root's exec (the return value is
    // already in the registers there).
    match ts::wait_for(root).map_err(|e| io_err("waitpid", e))? {
        Some((_, st)) if st.stop_signal() == Some(libc::SIGTRAP) => {}
        Some((_, st)) if st.exited() => {
            return Ok(Traced::Done {
                status: ExitStatus::from_raw(st.raw()),
                failed: false,
            })
        }
        other => {
            return Err(io_err(
                "ptrace",
                io::Error::other(format!("unexpected first stop {other:?}")),
            ))
        }
    }
    started.insert(root);
    ts::set_options(root, OPTIONS).map_err(|e| io_err("PTRACE_SETOPTIONS", e))?;
    let mut deferred = Vec::new();
    match fence_or_kill(opts, rep, root, &mut deferred, &mut rooms) {
        Fenced::Done(ok) => {
            failed |= !ok;
            resume(root, &deferred);
        }
        Fenced::ReExecuted => {
            exec_pending.insert(root);
            resume_to_syscall(root, &deferred);
        }
        Fenced::LetGo => {
            failed = true;
            let _ = ts::detach(root, 0);
        }
    }
    while let Some((pid, st)) = ts::wait_any().map_err(|e| io_err("waitpid", e))? {
        if st.exited() {
            started.remove(&pid);
            exec_pending.remove(&pid);
            rooms.remove(&pid);
            if pid == root {
                root_status = Some(ExitStatus::from_raw(st.raw()));
            }
            continue;
        }
        let Some(sig) = st.stop_signal() else {
            continue;
        };
        let event = st.event();
        if event == libc::PTRACE_EVENT_EXEC {
            // A thread other than the leader exec'd: its old pid is gone.
            if let Ok(former) = ts::event_msg(pid) {
                if former as i32 != pid {
                    started.remove(&(former as i32));
                    rooms.remove(&(former as i32));
                }
            }
            rooms.remove(&pid);
            exec_pending.insert(pid);
            let _ = ts::to_syscall(pid, 0);
            continue;
        }
        if sig == libc::SIGTRAP | 0x80 {
            let mut deferred = Vec::new();
            if exec_pending.remove(&pid) {
                match fence_or_kill(opts, rep, pid, &mut deferred, &mut rooms) {
                    Fenced::Done(ok) => failed |= !ok,
                    Fenced::ReExecuted => {
                        exec_pending.insert(pid);
                        resume_to_syscall(pid, &deferred);
                        continue;
                    }
                    Fenced::LetGo => {
                        failed = true;
                        started.remove(&pid);
                        let _ = ts::detach(pid, 0);
                        continue;
                    }
                }
            }
            resume(pid, &deferred);
            continue;
        }
        if event != 0 {
            // Fork, vfork, clone: the new task reports its own first stop.
            // A new process (not a thread) has its parent's layout, room
            // included.
            if !rooms.is_empty() {
                if let Ok(child) = ts::event_msg(pid) {
                    let (parent, child) = (tgid(pid), child as i32);
                    if event != libc::PTRACE_EVENT_CLONE || tgid(child) != parent {
                        if let Some(r) = rooms.get(&parent).copied() {
                            rooms.insert(child, r);
                        }
                    }
                }
            }
            let _ = ts::cont(pid, 0);
            continue;
        }
        if sig == libc::SIGSTOP && started.insert(pid) {
            let _ = ts::cont(pid, 0);
            continue;
        }
        if matches!(
            sig,
            libc::SIGSTOP | libc::SIGTSTP | libc::SIGTTIN | libc::SIGTTOU
        ) && ts::is_group_stop(pid)
        {
            let _ = ts::cont(pid, 0);
            continue;
        }
        if sig == libc::SIGSEGV && !rooms.is_empty() {
            let mut deferred = Vec::new();
            if grow_stack(rep, pid, &mut rooms, &mut deferred) {
                // The faulting instruction runs again, now with room.
                resume(pid, &deferred);
                continue;
            }
        }
        let _ = ts::cont(pid, sig);
    }
    let status = root_status.unwrap_or_else(|| ExitStatus::from_raw(0));
    Ok(Traced::Done { status, failed })
}

fn resume(pid: i32, deferred: &[i32]) {
    let first = deferred.first().copied().unwrap_or(0);
    let _ = ts::cont(pid, first);
    for &s in deferred.iter().skip(1) {
        ts::kill(pid, s);
    }
}

/// Like [`resume`], to the next system-call stop (after a re-exec: the
/// exec's system-call exit, where the new image is fenced).
fn resume_to_syscall(pid: i32, deferred: &[i32]) {
    let _ = ts::to_syscall(pid, 0);
    for &s in deferred {
        ts::kill(pid, s);
    }
}

/// The thread-group id of task `tid` (`tid` itself if unknown).
fn tgid(tid: i32) -> i32 {
    std::fs::read_to_string(format!("/proc/{tid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Tgid:"))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(tid)
}

/// Gives the main stack the part of its room it faulted in, if the
/// `SIGSEGV` that stopped `pid` is such a fault and the kernel will let the
/// stack grow there (its size stays within the soft `RLIMIT_STACK`). True
/// if the signal is to be suppressed.
fn grow_stack(
    rep: &mut Reporter,
    pid: i32,
    rooms: &mut HashMap<i32, Room>,
    deferred: &mut Vec<i32>,
) -> bool {
    let Ok((libc::SIGSEGV, _, addr)) = ts::fault_info(pid) else {
        return false;
    };
    let group = tgid(pid);
    let Some(room) = rooms.get(&group).copied() else {
        return false;
    };
    if !(room.floor..room.top).contains(&addr) {
        return false;
    }
    let page = addr & !(PAGE - 1);
    // Beyond the soft limit the kernel refuses the growth anyway: a real
    // stack overflow, and the room stays as it is.
    if let Ok((Some(soft), _)) = ts::stack_rlimit_of(pid) {
        if room.stack_end.saturating_sub(page) > soft {
            return false;
        }
    }
    let low = page.saturating_sub(STACK_GUARD_GAP).max(room.floor);
    match release(pid, low, room.top, deferred) {
        Ok(()) => {
            rep.line(
                pid,
                &format!(
                    "stack-grow {low:#x}-{:#x} released to the main stack",
                    room.top
                ),
            );
            if let Some(r) = rooms.get_mut(&group) {
                r.top = low;
            }
            true
        }
        Err(why) => {
            rep.line(
                pid,
                &format!("warning: the main stack cannot grow into its room: {why}"),
            );
            false
        }
    }
}

/// Unmaps `[lo, hi)` of the room in the stopped `pid` (another thread of
/// the process may be running: the `syscall` instruction used is one that
/// is already there, in the vDSO or the program's text, not written over
/// code another thread may run). Refuses if anything but `PROT_NONE`
/// anonymous memory lies there: the program mapped over its room itself.
fn release(pid: i32, lo: u64, hi: u64, deferred: &mut Vec<i32>) -> Result<(), String> {
    let view = maps::read_view_fast(Target::Pid(pid as u32)).map_err(|e| e.to_string())?;
    let mut at = lo;
    for e in view.entries.iter().filter(|e| e.end > lo && e.start < hi) {
        // A reservation that starts at the program break is named [heap].
        let reserved = matches!(e.kind(), Kind::Anonymous | Kind::Heap)
            && !e.perms.read
            && !e.perms.write
            && !e.perms.exec
            && e.start <= at;
        if !reserved {
            return Err(format!("{} lies in it", maps_line(e)));
        }
        at = e.end;
    }
    if at < hi {
        return Err(format!("{at:#x}-{hi:#x} is no longer reserved"));
    }
    let gadget = find_syscall_instruction(pid, &view).ok_or("no syscall instruction found")?;
    let regs = ts::get_regs(pid).map_err(|e| e.to_string())?;
    let mut inj = Injector::at_existing(pid, regs, gadget);
    let r = inj.syscall(libc::SYS_munmap as u64, [lo, hi - lo, 0, 0, 0, 0], deferred);
    let restored = inj.restore();
    let r = r.map_err(|e| e.to_string())?;
    restored.map_err(|e| e.to_string())?;
    if r != 0 {
        return Err(format!("munmap failed with errno {}", -r));
    }
    Ok(())
}

/// The address of a `syscall` instruction (`0f 05`) in an executable
/// mapping of `pid`: the vDSO first, then the program's and libraries'
/// text.
fn find_syscall_instruction(pid: i32, view: &maps::View) -> Option<u64> {
    use std::os::unix::fs::FileExt;
    let mem = File::open(format!("/proc/{pid}/mem")).ok()?;
    let mut candidates: Vec<&maps::MapsEntry> = view
        .entries
        .iter()
        .filter(|e| e.perms.exec && e.kind() != Kind::Vsyscall)
        .collect();
    candidates.sort_by_key(|e| e.kind() != Kind::Vdso);
    for e in candidates {
        let len = e.len().min(1 << 20) as usize;
        let mut buf = vec![0u8; len];
        let Ok(n) = mem.read_at(&mut buf, e.start) else {
            continue;
        };
        if let Some(i) = buf[..n].windows(2).position(|w| w == [0x0f, 0x05]) {
            return Some(e.start + i as u64);
        }
    }
    None
}

/// Fences the new image of `pid`; on failure (unless partial fences are
/// allowed) says so and kills it.
fn fence_or_kill(
    opts: &TraceOptions,
    rep: &mut Reporter,
    pid: i32,
    deferred: &mut Vec<i32>,
    rooms: &mut HashMap<i32, Room>,
) -> Fenced {
    match fence_image(opts, rep, pid, deferred) {
        Ok(Image::ReExecuted) => Fenced::ReExecuted,
        Ok(Image::Fenced { uncovered: 0, room }) => {
            if let Some(r) = room {
                rooms.insert(pid, r);
            }
            Fenced::Done(true)
        }
        Ok(Image::Fenced { uncovered, room }) => {
            if opts.allow_partial {
                if let Some(r) = room {
                    rooms.insert(pid, r);
                }
                rep.line(
                    pid,
                    &format!(
                        "warning: {uncovered} hole(s) above the limit are not fenced \
                         (--allow-partial): later mappings may land above 2^{}",
                        opts.va_bits
                    ),
                );
            } else {
                rep.line(
                    pid,
                    &format!(
                        "error: {uncovered} hole(s) above the limit could not be fenced; \
                         the process is killed (--allow-partial runs it anyway)"
                    ),
                );
                ts::kill(pid, libc::SIGKILL);
            }
            Fenced::Done(false)
        }
        Ok(Image::Refused(why)) => {
            if opts.allow_partial {
                rep.line(
                    pid,
                    &format!(
                        "warning: {why}; it runs unfenced and untraced, with what it \
                         starts (--allow-partial)"
                    ),
                );
                return Fenced::LetGo;
            } else {
                rep.line(
                    pid,
                    &format!(
                        "error: {why}; the process is killed (--allow-partial runs it unfenced)"
                    ),
                );
                ts::kill(pid, libc::SIGKILL);
            }
            Fenced::Done(false)
        }
        Err(e) => {
            rep.line(pid, &format!("error: cannot fence the new image: {e}"));
            if !opts.allow_partial {
                ts::kill(pid, libc::SIGKILL);
            }
            Fenced::Done(false)
        }
    }
}

/// What [`fence_image`] did.
enum Image {
    /// Reserved what it could: `uncovered` holes are not fenced.
    Fenced { uncovered: u64, room: Option<Room> },
    /// The image was executed again in the default layout.
    ReExecuted,
    /// The image cannot be fenced, for the reason given; nothing was
    /// reserved.
    Refused(String),
}

/// The line of a maps entry, for the report.
fn maps_line(e: &maps::MapsEntry) -> String {
    format!("{:x}-{:x} {} {}", e.start, e.end, e.perms, e.name_lossy())
}

/// The personality flag that selects the legacy (bottom-up) layout.
const ADDR_COMPAT_LAYOUT: u64 = 0x020_0000;

/// The personality of `pid` (`/proc/PID/personality`, readable by its
/// tracer).
fn personality_of(pid: i32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/personality")).ok()?;
    u64::from_str_radix(s.trim(), 16).ok()
}

/// `vm.legacy_va_layout` is set: every new image gets the legacy layout.
fn legacy_sysctl() -> bool {
    std::fs::read_to_string("/proc/sys/vm/legacy_va_layout")
        .map(|s| s.trim() != "0")
        .unwrap_or(false)
}

/// Reserves the plan's holes in the stopped image of `pid`.
fn fence_image(
    opts: &TraceOptions,
    rep: &mut Reporter,
    pid: i32,
    deferred: &mut Vec<i32>,
) -> Result<Image, Error> {
    let regs = ts::get_regs(pid).map_err(|e| io_err("PTRACE_GETREGS", e))?;
    let limit = 1u64 << opts.va_bits;
    if regs.cs != 0x33 {
        // A 32-bit image: its whole space is below 2^32.
        rep.line(pid, "32-bit image: every address is below 2^32");
        return Ok(Image::Fenced {
            uncovered: if limit >= 1 << 32 { 0 } else { 1 },
            room: None,
        });
    }
    let top = crate::fence::user_top();
    rep.line(
        pid,
        &format!(
            "va_bits={} limit={limit:#x} task_size={top:#x} method=ptrace",
            opts.va_bits
        ),
    );
    if limit >= top {
        rep.line(pid, "nothing to fence: the limit is above the user range");
        rep.line(pid, "done reserved=0 bytes=0x0 uncovered=0");
        return Ok(Image::Fenced {
            uncovered: 0,
            room: None,
        });
    }
    let exe = format!("/proc/{pid}/exe");
    if let Some(s) = crate::fence::sanitizer_of(std::path::Path::new(&exe)) {
        if limit < s.needs {
            let name = std::fs::read_link(&exe).unwrap_or_else(|_| exe.clone().into());
            return Ok(Image::Refused(crate::fence::sanitizer_refusal(
                &name,
                &s,
                opts.va_bits,
            )));
        }
    }
    // The legacy layout places mappings bottom-up from TASK_SIZE / 3 and
    // never looks below: behind a fence every mapping would fail.
    if legacy_sysctl() {
        return Ok(Image::Refused(
            "the legacy layout is on for the whole system (vm.legacy_va_layout=1): \
             the kernel places mappings bottom-up from TASK_SIZE/3, above the limit, \
             and never below it"
                .into(),
        ));
    }
    if let Some(p) = personality_of(pid).filter(|p| p & ADDR_COMPAT_LAYOUT != 0) {
        rep.line(
            pid,
            "warning: the legacy layout (personality ADDR_COMPAT_LAYOUT, setarch -L) \
             places mappings bottom-up from TASK_SIZE/3, above the limit; the program is \
             executed again in the default layout",
        );
        re_exec(pid, regs, p & !ADDR_COMPAT_LAYOUT, deferred)?;
        return Ok(Image::ReExecuted);
    }
    let view = maps::read_view_fast(Target::Pid(pid as u32))?;
    for e in view.entries.iter().filter(|e| e.end > limit) {
        rep.line(pid, &format!("above {}", maps_line(e)));
    }
    let stack_rlimit = match opts.stack_room {
        Some(r) => Some(r),
        None => {
            ts::stack_rlimit_of(pid)
                .map_err(|e| io_err("prlimit", e))?
                .1
        }
    };
    let params = FenceParams {
        limit,
        top,
        stack_rlimit,
        stack_guard_gap: STACK_GUARD_GAP,
        page_size: PAGE,
    };
    let vmas = view.entries.iter().map(|e| FenceVma {
        start: e.start,
        end: e.end,
        grows_down: e.kind() == Kind::Stack || e.growsdown,
    });
    let main_stack = view
        .entries
        .iter()
        .find(|e| e.kind() == Kind::Stack)
        .map(|e| (e.start, e.end));
    let steps: Vec<FenceStep> = fence_plan::plan(vmas, params).collect();
    let mut inj = Injector::patched(pid, regs)?;
    let (mut reserved, mut bytes, mut uncovered) = (0u64, 0u64, 0u64);
    let mut room = None;
    let mut result = Ok(());
    for step in steps {
        // The room of the main stack is reserved too, down from its guard
        // gap, and given to the stack as it grows; that of any other
        // grows-down VMA is left free.
        let (start, end) = match step {
            FenceStep::StackRoom { start, end } => {
                rep.line(
                    pid,
                    &format!("stack-room {start:#x}-{end:#x} kept for the main stack to grow"),
                );
                match main_stack {
                    Some((s, e)) if s == end && start + STACK_GUARD_GAP < end => {
                        room = Some(Room {
                            floor: start,
                            top: end - STACK_GUARD_GAP,
                            stack_end: e,
                        });
                        (start, end - STACK_GUARD_GAP)
                    }
                    _ => continue,
                }
            }
            FenceStep::Reserve { start, end } => (start, end),
        };
        match inj.syscall(
            libc::SYS_mmap as u64,
            [
                start,
                end - start,
                libc::PROT_NONE as u64,
                MAP_FLAGS,
                u64::MAX,
                0,
            ],
            deferred,
        ) {
            Ok(r) if r == start as i64 => {
                reserved += 1;
                bytes += end - start;
                rep.line(pid, &format!("reserved {start:#x}-{end:#x}"));
            }
            Ok(r) => {
                if r >= 0 {
                    // A kernel that took the flag as a hint mapped
                    // elsewhere: undo it.
                    let _ = inj.syscall(
                        libc::SYS_munmap as u64,
                        [r as u64, end - start, 0, 0, 0, 0],
                        deferred,
                    );
                }
                let errno = if r < 0 { -r } else { libc::EEXIST as i64 };
                if room.is_some_and(|x| x.floor == start) {
                    room = None;
                }
                uncovered += 1;
                rep.line(pid, &format!("uncovered {start:#x}-{end:#x} errno={errno}"));
            }
            Err(e) => {
                result = Err(e);
                break;
            }
        }
    }
    let restored = inj.restore();
    result?;
    restored?;
    rep.line(
        pid,
        &format!("done reserved={reserved} bytes={bytes:#x} uncovered={uncovered}"),
    );
    Ok(Image::Fenced { uncovered, room })
}

/// Executes the stopped new image of `pid` again (`execve("/proc/self/exe")`
/// with the same arguments and environment, which lie on its stack) under
/// the personality `persona`. On success `pid` is at the exec event stop of
/// the new exec.
fn re_exec(pid: i32, regs: Regs, persona: u64, deferred: &mut Vec<i32>) -> Result<(), Error> {
    let mut inj = Injector::patched(pid, regs)?;
    let r = exec_again(pid, &mut inj, persona, deferred);
    if !matches!(r, Ok(EXECED)) {
        // The old image still runs: put its code and registers back.
        let _ = inj.restore();
    }
    match r {
        Ok(EXECED) => Ok(()),
        Ok(e) => Err(io_err(
            "re-exec",
            io::Error::other(format!("execve(/proc/self/exe) failed with errno {}", -e)),
        )),
        Err(e) => Err(e),
    }
}

/// The system calls of [`re_exec`]: [`EXECED`] or the failed `execve`'s
/// result.
fn exec_again(
    pid: i32,
    inj: &mut Injector,
    persona: u64,
    deferred: &mut Vec<i32>,
) -> Result<i64, Error> {
    let r = inj.syscall(
        libc::SYS_personality as u64,
        [persona, 0, 0, 0, 0, 0],
        deferred,
    )?;
    if r < 0 {
        return Err(io_err(
            "personality",
            io::Error::from_raw_os_error((-r) as i32),
        ));
    }
    // At the exec stop the stack holds argc, argv[], NULL, envp[], NULL.
    let sp = inj.saved.rsp;
    let argc = ts::peek(pid, sp).map_err(|e| io_err("PTRACE_PEEKDATA", e))?;
    let argv = sp + 8;
    let envp = argv + 8 * (argc + 1);
    // The path, written below the stack pointer (inside the stack VMA,
    // which the kernel set up with room below the arguments).
    let path = (sp - 512) & !15;
    for (i, w) in b"/proc/self/exe\0\0".chunks(8).enumerate() {
        let mut word = [0u8; 8];
        word.copy_from_slice(w);
        ts::poke(pid, path + 8 * i as u64, u64::from_le_bytes(word))
            .map_err(|e| io_err("PTRACE_POKEDATA", e))?;
    }
    inj.syscall(
        libc::SYS_execve as u64,
        [path, argv, envp, 0, 0, 0],
        deferred,
    )
}

/// What [`Injector::syscall`] returns when the call was an `execve` that
/// succeeded (the tracee is at its exec event stop).
const EXECED: i64 = i64::MIN;

/// Runs system calls in a stopped tracee: sets the registers and
/// single-steps a `syscall` instruction, then puts the registers back.
struct Injector {
    pid: i32,
    saved: Regs,
    /// The address of the `syscall` instruction.
    at: u64,
    /// The aligned word written over to hold it and its original contents
    /// (`None`: an instruction that was already there).
    patch: Option<(u64, u64)>,
}

impl Injector {
    /// Writes a `syscall` instruction over the word at the stopped
    /// instruction pointer (safe only while no other thread of the process
    /// runs, as at an exec stop).
    fn patched(pid: i32, saved: Regs) -> Result<Injector, Error> {
        let at = saved.rip;
        // The 8-byte word that holds the two instruction bytes, within one
        // page: aligned down unless the bytes would cross its end.
        let word_addr = if at % 8 <= 6 { at & !7 } else { at - 6 };
        let word = ts::peek(pid, word_addr).map_err(|e| io_err("PTRACE_PEEKTEXT", e))?;
        let shift = (at - word_addr) * 8;
        let patched = (word & !(0xffffu64 << shift)) | (0x050fu64 << shift);
        ts::poke(pid, word_addr, patched).map_err(|e| io_err("PTRACE_POKETEXT", e))?;
        Ok(Injector {
            pid,
            saved,
            at,
            patch: Some((word_addr, word)),
        })
    }

    /// Uses the `syscall` instruction at `at`, which is already there.
    fn at_existing(pid: i32, saved: Regs, at: u64) -> Injector {
        Injector {
            pid,
            saved,
            at,
            patch: None,
        }
    }

    /// Runs system call `nr` with `args` in the tracee and returns its raw
    /// result (`-errno` on failure; [`EXECED`] for an `execve` that
    /// succeeded). Signals that arrive meanwhile are held in `deferred`.
    fn syscall(&mut self, nr: u64, args: [u64; 6], deferred: &mut Vec<i32>) -> Result<i64, Error> {
        let mut r = self.saved;
        r.rax = nr;
        r.orig_rax = u64::MAX;
        r.rdi = args[0];
        r.rsi = args[1];
        r.rdx = args[2];
        r.r10 = args[3];
        r.r8 = args[4];
        r.r9 = args[5];
        r.rip = self.at;
        let e = |w: &str, x| io_err(w, x);
        let gone = || Error::ProcessExited {
            pid: self.pid as u32,
            lines_read: 0,
        };
        loop {
            ts::set_regs(self.pid, &r).map_err(|x| e("PTRACE_SETREGS", x))?;
            ts::single_step(self.pid).map_err(|x| e("PTRACE_SINGLESTEP", x))?;
            let Some((_, st)) = ts::wait_for(self.pid).map_err(|x| e("waitpid", x))? else {
                return Err(gone());
            };
            if st.exited() {
                return Err(gone());
            }
            if st.event() == libc::PTRACE_EVENT_EXEC {
                return Ok(EXECED);
            }
            let now = ts::get_regs(self.pid).map_err(|x| e("PTRACE_GETREGS", x))?;
            if now.rip == self.at + 2 {
                return Ok(now.rax as i64);
            }
            // A signal stopped it before the instruction ran: hold the
            // signal and step again.
            if let Some(s) = st.stop_signal().filter(|&s| s != libc::SIGTRAP) {
                deferred.push(s);
            }
        }
    }

    /// Puts the original word and registers back.
    fn restore(&self) -> Result<(), Error> {
        if let Some((addr, word)) = self.patch {
            ts::poke(self.pid, addr, word).map_err(|e| io_err("PTRACE_POKETEXT", e))?;
        }
        ts::set_regs(self.pid, &self.saved).map_err(|e| io_err("PTRACE_SETREGS", e))
    }
}

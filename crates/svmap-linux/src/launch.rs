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
//! Where `ptrace` is not permitted (`EPERM`: a seccomp policy, Yama, or the
//! launcher is itself traced with fork following), the launcher says so and
//! falls back to the preload library.

use std::collections::HashSet;
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

fn trace_loop(opts: &TraceOptions, rep: &mut Reporter, root: i32) -> Result<Traced, Error> {
    let mut root_status = None;
    let mut failed = false;
    // Processes whose first stop (the SIGSTOP of a new traced task) was seen.
    let mut started: HashSet<i32> = HashSet::new();
    // Processes that exec'd and run to the exec's system-call exit, where
    // the registers can be set.
    let mut exec_pending: HashSet<i32> = HashSet::new();
    // The first stop: SIGTRAP after the root's exec (the return value is
    // already in the registers there).
    match ts::wait(root).map_err(|e| io_err("waitpid", e))? {
        Some((_, st)) if st.stop_signal() == Some(libc::SIGTRAP) => {}
        Some((_, st)) if st.exited() => {
            return Ok(Traced::Done {
                status: ExitStatus::from_raw(st.0),
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
    if !fence_or_kill(opts, rep, root, &mut deferred) {
        failed = true;
    }
    resume(root, &deferred);
    while let Some((pid, st)) = ts::wait(-1).map_err(|e| io_err("waitpid", e))? {
        if st.exited() {
            started.remove(&pid);
            exec_pending.remove(&pid);
            if pid == root {
                root_status = Some(ExitStatus::from_raw(st.0));
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
                }
            }
            exec_pending.insert(pid);
            let _ = ts::to_syscall(pid, 0);
            continue;
        }
        if sig == libc::SIGTRAP | 0x80 {
            let mut deferred = Vec::new();
            if exec_pending.remove(&pid) && !fence_or_kill(opts, rep, pid, &mut deferred) {
                failed = true;
            }
            resume(pid, &deferred);
            continue;
        }
        if event != 0 {
            // Fork, vfork, clone: the new task reports its own first stop.
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

/// Fences the new image of `pid`; on failure (unless partial fences are
/// allowed) says so and kills it. False if the image was not fully fenced.
fn fence_or_kill(
    opts: &TraceOptions,
    rep: &mut Reporter,
    pid: i32,
    deferred: &mut Vec<i32>,
) -> bool {
    match fence_image(opts, rep, pid, deferred) {
        Ok(0) => true,
        Ok(uncovered) => {
            if opts.allow_partial {
                rep.line(
                    pid,
                    &format!(
                        "warning: {uncovered} hole(s) above the limit are not fenced \
                         (--allow-partial): later mappings may land above 2^{}",
                        opts.va_bits
                    ),
                );
                false
            } else {
                rep.line(
                    pid,
                    &format!(
                        "error: {uncovered} hole(s) above the limit could not be fenced; \
                         the process is killed (--allow-partial runs it anyway)"
                    ),
                );
                ts::kill(pid, libc::SIGKILL);
                false
            }
        }
        Err(e) => {
            rep.line(pid, &format!("error: cannot fence the new image: {e}"));
            if !opts.allow_partial {
                ts::kill(pid, libc::SIGKILL);
            }
            false
        }
    }
}

/// The line of a maps entry, for the report.
fn maps_line(e: &maps::MapsEntry) -> String {
    format!("{:x}-{:x} {} {}", e.start, e.end, e.perms, e.name_lossy())
}

/// Reserves the plan's holes in the stopped image of `pid`; returns the
/// number of holes it could not reserve.
fn fence_image(
    opts: &TraceOptions,
    rep: &mut Reporter,
    pid: i32,
    deferred: &mut Vec<i32>,
) -> Result<u64, Error> {
    let regs = ts::get_regs(pid).map_err(|e| io_err("PTRACE_GETREGS", e))?;
    let limit = 1u64 << opts.va_bits;
    if regs.cs != 0x33 {
        // A 32-bit image: its whole space is below 2^32.
        rep.line(pid, "32-bit image: every address is below 2^32");
        return Ok(if limit >= 1 << 32 { 0 } else { 1 });
    }
    let top = (1u64 << crate::probe::user_va_bits()) - PAGE;
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
        return Ok(0);
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
    let steps: Vec<FenceStep> = fence_plan::plan(vmas, params).collect();
    let mut inj = Injector::new(pid, regs)?;
    let (mut reserved, mut bytes, mut uncovered) = (0u64, 0u64, 0u64);
    let mut result = Ok(());
    for step in steps {
        match step {
            FenceStep::StackRoom { start, end } => rep.line(
                pid,
                &format!("stack-room {start:#x}-{end:#x} left free for the main stack to grow"),
            ),
            FenceStep::Reserve { start, end } => {
                match inj.mmap_reserve(start, end - start, deferred) {
                    Ok(0) => {
                        reserved += 1;
                        bytes += end - start;
                        rep.line(pid, &format!("reserved {start:#x}-{end:#x}"));
                    }
                    Ok(errno) => {
                        uncovered += 1;
                        rep.line(pid, &format!("uncovered {start:#x}-{end:#x} errno={errno}"));
                    }
                    Err(e) => {
                        result = Err(e);
                        break;
                    }
                }
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
    Ok(uncovered)
}

/// A `syscall` instruction written over the word at the stopped
/// instruction pointer, with the saved registers to put back.
struct Injector {
    pid: i32,
    saved: Regs,
    /// The address of the `syscall` instruction.
    at: u64,
    /// The aligned word holding it, and its original contents.
    word_addr: u64,
    word: u64,
}

impl Injector {
    fn new(pid: i32, saved: Regs) -> Result<Injector, Error> {
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
            word_addr,
            word,
        })
    }

    /// Runs the reserving `mmap` in the tracee: 0 on success, else the
    /// errno. Signals that arrive meanwhile are held in `deferred`.
    fn mmap_reserve(&mut self, addr: u64, len: u64, deferred: &mut Vec<i32>) -> Result<i32, Error> {
        let mut r = self.saved;
        r.rax = libc::SYS_mmap as u64;
        r.orig_rax = u64::MAX;
        r.rdi = addr;
        r.rsi = len;
        r.rdx = libc::PROT_NONE as u64;
        r.r10 = MAP_FLAGS;
        r.r8 = u64::MAX;
        r.r9 = 0;
        r.rip = self.at;
        let e = |w: &str, x| io_err(w, x);
        loop {
            ts::set_regs(self.pid, &r).map_err(|x| e("PTRACE_SETREGS", x))?;
            ts::single_step(self.pid).map_err(|x| e("PTRACE_SINGLESTEP", x))?;
            match ts::wait(self.pid).map_err(|x| e("waitpid", x))? {
                Some((_, st)) if st.exited() => {
                    return Err(Error::ProcessExited {
                        pid: self.pid as u32,
                        lines_read: 0,
                    })
                }
                Some((_, st)) => {
                    let now = ts::get_regs(self.pid).map_err(|x| e("PTRACE_GETREGS", x))?;
                    if now.rip == self.at + 2 {
                        let ret = now.rax as i64;
                        if (-4095..0).contains(&ret) {
                            return Ok((-ret) as i32);
                        }
                        if now.rax != addr {
                            // A kernel that took the flag as a hint mapped
                            // elsewhere: undo it.
                            let mut u = self.saved;
                            u.rax = libc::SYS_munmap as u64;
                            u.orig_rax = u64::MAX;
                            u.rdi = now.rax;
                            u.rsi = len;
                            u.rip = self.at;
                            ts::set_regs(self.pid, &u).map_err(|x| e("PTRACE_SETREGS", x))?;
                            ts::single_step(self.pid).map_err(|x| e("PTRACE_SINGLESTEP", x))?;
                            let _ = ts::wait(self.pid);
                            return Ok(libc::EEXIST);
                        }
                        return Ok(0);
                    }
                    // A signal stopped it before the instruction ran: hold
                    // the signal and step again.
                    if let Some(s) = st.stop_signal().filter(|&s| s != libc::SIGTRAP) {
                        deferred.push(s);
                    }
                }
                None => {
                    return Err(Error::ProcessExited {
                        pid: self.pid as u32,
                        lines_read: 0,
                    })
                }
            }
        }
    }

    /// Puts the original word and registers back.
    fn restore(&self) -> Result<(), Error> {
        ts::poke(self.pid, self.word_addr, self.word).map_err(|e| io_err("PTRACE_POKETEXT", e))?;
        ts::set_regs(self.pid, &self.saved).map_err(|e| io_err("PTRACE_SETREGS", e))
    }
}

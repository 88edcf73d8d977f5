//! The system calls of the launcher ([`crate::launch`]): `ptrace`,
//! `waitpid`, `prlimit`, `kill` and the signal handlers that forward
//! signals to the launched program. rustix has no `ptrace` and no
//! `sigaction`, so these go through `libc`; every unsafe block is here,
//! with a `// SAFETY:` comment. Everything exported is safe.
//!
//! x86-64 only (the register layout is `libc::user_regs_struct`).

#![allow(unsafe_code)]

use std::io;
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::sync::atomic::{AtomicI32, Ordering};

/// The registers of a stopped tracee.
pub(crate) type Regs = libc::user_regs_struct;

fn check(r: libc::c_long) -> io::Result<libc::c_long> {
    if r == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// Makes the child of `cmd` a tracee of this process (`PTRACE_TRACEME`
/// between `fork` and `execve`): it stops with `SIGTRAP` right after the
/// exec, before the new image's first instruction. If the request fails
/// (`EPERM`: ptrace not permitted here, or this process is itself traced
/// with fork following), `spawn` fails with that error.
pub(crate) fn trace_me_on_spawn(cmd: &mut Command) {
    // SAFETY: the closure runs in the child between fork and exec; it
    // calls only ptrace, which is async-signal-safe, and allocates nothing
    // unless it fails (io::Error::last_os_error does not allocate).
    unsafe {
        cmd.pre_exec(|| {
            let r = libc::ptrace(
                libc::PTRACE_TRACEME,
                0,
                std::ptr::null_mut::<libc::c_void>(),
                std::ptr::null_mut::<libc::c_void>(),
            );
            check(r).map(|_| ())
        });
    }
}

/// The child of `cmd` receives `SIGKILL` when this thread exits
/// (`PR_SET_PDEATHSIG`), so that killing the launcher does not leave the
/// program running on its own.
pub(crate) fn kill_with_parent_on_spawn(cmd: &mut Command) {
    // SAFETY: the closure runs in the child between fork and exec and calls
    // only prctl, which is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            let r = libc::prctl(
                libc::PR_SET_PDEATHSIG,
                libc::SIGKILL as libc::c_ulong,
                0,
                0,
                0,
            );
            check(r as libc::c_long).map(|_| ())
        });
    }
}

fn ptrace(req: libc::c_uint, pid: i32, addr: u64, data: u64) -> io::Result<libc::c_long> {
    // SAFETY: the requests used here either take plain numbers or a pointer
    // to a value of the type the caller passes (see each wrapper); a pid
    // that is not our stopped tracee fails with ESRCH.
    check(unsafe {
        libc::ptrace(
            req,
            pid,
            addr as *mut libc::c_void,
            data as *mut libc::c_void,
        )
    })
}

/// `PTRACE_SETOPTIONS`.
pub(crate) fn set_options(pid: i32, opts: i32) -> io::Result<()> {
    ptrace(libc::PTRACE_SETOPTIONS, pid, 0, opts as u64).map(|_| ())
}

/// `PTRACE_CONT` with a signal to deliver (0: none).
pub(crate) fn cont(pid: i32, sig: i32) -> io::Result<()> {
    ptrace(libc::PTRACE_CONT, pid, 0, sig as u64).map(|_| ())
}

/// `PTRACE_SYSCALL`: run to the next system-call stop.
pub(crate) fn to_syscall(pid: i32, sig: i32) -> io::Result<()> {
    ptrace(libc::PTRACE_SYSCALL, pid, 0, sig as u64).map(|_| ())
}

/// `PTRACE_DETACH`: the stopped tracee runs on, untraced.
pub(crate) fn detach(pid: i32, sig: i32) -> io::Result<()> {
    ptrace(libc::PTRACE_DETACH, pid, 0, sig as u64).map(|_| ())
}

/// `PTRACE_SINGLESTEP`.
pub(crate) fn single_step(pid: i32) -> io::Result<()> {
    ptrace(libc::PTRACE_SINGLESTEP, pid, 0, 0).map(|_| ())
}

/// `PTRACE_GETEVENTMSG`.
pub(crate) fn event_msg(pid: i32) -> io::Result<u64> {
    let mut v: libc::c_ulong = 0;
    // SAFETY: GETEVENTMSG writes one unsigned long through the pointer.
    check(unsafe {
        libc::ptrace(
            libc::PTRACE_GETEVENTMSG,
            pid,
            std::ptr::null_mut::<libc::c_void>(),
            &mut v as *mut libc::c_ulong,
        )
    })?;
    Ok(v)
}

/// True if the stop of `pid` is a group stop rather than the delivery of a
/// signal (`PTRACE_GETSIGINFO` fails with `EINVAL` on a group stop).
pub(crate) fn is_group_stop(pid: i32) -> bool {
    // SAFETY: siginfo_t is plain data; all zeroes is a valid value.
    let mut si: libc::siginfo_t = unsafe { std::mem::zeroed() };
    // SAFETY: GETSIGINFO writes one siginfo_t through the pointer.
    let r = unsafe {
        libc::ptrace(
            libc::PTRACE_GETSIGINFO,
            pid,
            std::ptr::null_mut::<libc::c_void>(),
            &mut si as *mut libc::siginfo_t,
        )
    };
    r == -1 && io::Error::last_os_error().raw_os_error() == Some(libc::EINVAL)
}

/// The signal number, `si_code` and fault address (`si_addr`; 0 for a
/// signal that has none) of the signal-delivery stop of `pid`.
pub(crate) fn fault_info(pid: i32) -> io::Result<(i32, i32, u64)> {
    // SAFETY: siginfo_t is plain data; all zeroes is a valid value.
    let mut si: libc::siginfo_t = unsafe { std::mem::zeroed() };
    // SAFETY: GETSIGINFO writes one siginfo_t through the pointer.
    check(unsafe {
        libc::ptrace(
            libc::PTRACE_GETSIGINFO,
            pid,
            std::ptr::null_mut::<libc::c_void>(),
            &mut si as *mut libc::siginfo_t,
        )
    })?;
    let addr = if matches!(si.si_signo, libc::SIGSEGV | libc::SIGBUS) {
        // SAFETY: for SIGSEGV and SIGBUS the kernel fills the fault
        // address of the union (si_addr); reading it is reading an integer.
        unsafe { si.si_addr() as u64 }
    } else {
        0
    };
    Ok((si.si_signo, si.si_code, addr))
}

/// `PTRACE_GETREGS`.
pub(crate) fn get_regs(pid: i32) -> io::Result<Regs> {
    // SAFETY: user_regs_struct is plain integers; all zeroes is valid.
    let mut r: Regs = unsafe { std::mem::zeroed() };
    // SAFETY: GETREGS writes one user_regs_struct through the pointer.
    check(unsafe {
        libc::ptrace(
            libc::PTRACE_GETREGS,
            pid,
            std::ptr::null_mut::<libc::c_void>(),
            &mut r as *mut Regs,
        )
    })?;
    Ok(r)
}

/// `PTRACE_SETREGS`.
pub(crate) fn set_regs(pid: i32, r: &Regs) -> io::Result<()> {
    // SAFETY: SETREGS reads one user_regs_struct through the pointer.
    check(unsafe {
        libc::ptrace(
            libc::PTRACE_SETREGS,
            pid,
            std::ptr::null_mut::<libc::c_void>(),
            r as *const Regs,
        )
    })
    .map(|_| ())
}

/// `PTRACE_PEEKTEXT`: the word at `addr` in the tracee.
pub(crate) fn peek(pid: i32, addr: u64) -> io::Result<u64> {
    // PEEKTEXT returns the word; -1 is a valid word, so errno tells.
    // SAFETY: errno is this thread's; PEEKTEXT takes plain numbers.
    unsafe { *libc::__errno_location() = 0 };
    // SAFETY: as above.
    let v = unsafe {
        libc::ptrace(
            libc::PTRACE_PEEKTEXT,
            pid,
            addr as *mut libc::c_void,
            std::ptr::null_mut::<libc::c_void>(),
        )
    };
    // SAFETY: reads this thread's errno.
    if v == -1 && unsafe { *libc::__errno_location() } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(v as u64)
}

/// `PTRACE_POKETEXT`: writes the word at `addr` in the tracee (also into
/// read-only text, as a debugger does).
pub(crate) fn poke(pid: i32, addr: u64, word: u64) -> io::Result<()> {
    ptrace(libc::PTRACE_POKETEXT, pid, addr, word).map(|_| ())
}

/// What `waitpid` reported.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct WaitStatus(pub(crate) i32);

impl WaitStatus {
    pub(crate) fn exited(self) -> bool {
        libc::WIFEXITED(self.0) || libc::WIFSIGNALED(self.0)
    }
    pub(crate) fn stop_signal(self) -> Option<i32> {
        libc::WIFSTOPPED(self.0).then(|| libc::WSTOPSIG(self.0))
    }
    /// The `PTRACE_EVENT_*` of a ptrace event stop (0: none).
    pub(crate) fn event(self) -> i32 {
        (self.0 >> 16) & 0xff
    }
}

/// `waitpid(pid, __WALL | __WNOTHREAD)` (`pid` -1: any tracee or child of
/// the calling thread; `__WNOTHREAD` leaves the children other threads of
/// a host process started alone), retried when a forwarded signal
/// interrupts it. `Ok(None)`: no child left (`ECHILD`).
pub(crate) fn wait(pid: i32) -> io::Result<Option<(i32, WaitStatus)>> {
    loop {
        let mut st = 0;
        // SAFETY: waitpid writes one int through the pointer.
        let r = unsafe { libc::waitpid(pid, &mut st, libc::__WALL | libc::__WNOTHREAD) };
        if r >= 0 {
            return Ok(Some((r, WaitStatus(st))));
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::ECHILD) => return Ok(None),
            _ => return Err(e),
        }
    }
}

/// `kill(pid, sig)`; errors ignored (the process may be gone).
pub(crate) fn kill(pid: i32, sig: i32) {
    // SAFETY: kill takes plain numbers.
    unsafe { libc::kill(pid, sig) };
}

/// The `(soft, hard)` `RLIMIT_STACK` of process `pid`; `None` for
/// unlimited.
pub(crate) fn stack_rlimit_of(pid: i32) -> io::Result<(Option<u64>, Option<u64>)> {
    let mut old = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: prlimit with a NULL new limit only writes the old one
    // through the valid pointer.
    let r = unsafe { libc::prlimit(pid, libc::RLIMIT_STACK, std::ptr::null(), &mut old) };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    let f = |v: libc::rlim_t| (v != libc::RLIM_INFINITY).then_some(v);
    Ok((f(old.rlim_cur), f(old.rlim_max)))
}

/// The process the forwarding handlers send to (0: none).
static FORWARD_TO: AtomicI32 = AtomicI32::new(0);

/// Signals forwarded to the launched program.
pub(crate) const FORWARDED: [i32; 8] = [
    libc::SIGTERM,
    libc::SIGINT,
    libc::SIGHUP,
    libc::SIGQUIT,
    libc::SIGUSR1,
    libc::SIGUSR2,
    libc::SIGALRM,
    libc::SIGWINCH,
];

extern "C" fn forward(sig: libc::c_int, info: *mut libc::siginfo_t, _ctx: *mut libc::c_void) {
    // A signal the kernel sent to the terminal's process group (Ctrl-C,
    // hangup) reached the program too: forwarding it would deliver it twice.
    // SAFETY: the kernel passes a valid siginfo_t to an SA_SIGINFO handler.
    if !info.is_null() && unsafe { (*info).si_code } == libc::SI_KERNEL {
        return;
    }
    let pid = FORWARD_TO.load(Ordering::Relaxed);
    if pid > 0 {
        // SAFETY: kill is async-signal-safe and takes plain numbers.
        unsafe { libc::kill(pid, sig) };
    }
}

/// From now on, the signals of [`FORWARDED`] that this process receives
/// from another process are sent on to `pid` (once the handlers are in,
/// they stay; [`forward_signals_to`] with 0 stops the forwarding).
pub(crate) fn forward_signals_to(pid: i32) {
    FORWARD_TO.store(pid, Ordering::Relaxed);
    if pid == 0 {
        return;
    }
    for &sig in &FORWARDED {
        // SAFETY: sigaction is plain data; zeroes are a valid empty mask.
        let mut sa: libc::sigaction = unsafe { std::mem::zeroed() };
        let handler: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) = forward;
        sa.sa_sigaction = handler as usize;
        // No SA_RESTART: waitpid returns EINTR and is retried by `wait`.
        sa.sa_flags = libc::SA_SIGINFO;
        // SAFETY: installs a handler that only calls async-signal-safe
        // functions; the old action is not needed.
        unsafe {
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(sig, &sa, std::ptr::null_mut());
        }
    }
}

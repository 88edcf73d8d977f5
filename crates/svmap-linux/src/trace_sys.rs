//! The system calls of the launcher ([`crate::launch`]) and of the
//! preload fence's parent ([`crate::fence`]): `ptrace`, `waitpid`,
//! `prlimit`, `kill`, `prctl(PR_SET_PDEATHSIG)` and the handlers that
//! forward signals to the launched program. Everything exported is safe.
//!
//! Calls go through `rustix` where rustix has them: `waitpid`, `kill` of a
//! named signal and `prctl(PR_SET_PDEATHSIG)`. `libc` remains for:
//!
//! - `ptrace` (every request): rustix has no ptrace.
//! - `__errno_location` around `PTRACE_PEEKTEXT`: the glibc wrapper returns
//!   the word read, so -1 is a valid answer and only a cleared-then-set
//!   errno tells an error apart.
//! - `prlimit` in [`stack_rlimit_of`]: rustix's `prlimit` always installs
//!   a new limit, and its `getrlimit` reads only the calling process; reading
//!   another process's limit needs `prlimit` with a NULL new limit.
//! - `kill` of a signal number that is not a named signal (real-time
//!   signals a tracee received): rustix's `Signal` can be made from such a
//!   number only unsafely, and not at all for the numbers glibc reserves.
//! - `sigaction` and `sigemptyset` in [`forward_signals_to`]: rustix has no
//!   signal-handler API outside its unstable `runtime` feature.
//!
//! (The `waitpid` flags `__WALL` and `__WNOTHREAD`, which rustix's
//! `WaitOptions` does not name, are passed to rustix as raw bits; the
//! `PTRACE_*`, `SIG*` and errno constants and the `siginfo_t` and
//! `user_regs_struct` layouts also come from `libc`: constants and types,
//! not calls.)
//!
//! x86-64 only (the register layout is `libc::user_regs_struct`).

#![allow(unsafe_code)]

use std::io;
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::sync::atomic::{AtomicI32, Ordering};

use rustix::process::{Pid, Signal, WaitOptions};

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
    // SAFETY:
    // 1. The closure runs in the child between fork and exec; it calls only
    //    ptrace, which is async-signal-safe, and allocates nothing unless it
    //    fails (io::Error::last_os_error does not allocate).
    // 2. PTRACE_TRACEME ignores its address and data arguments, so the null
    //    pointers are never read.
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
    // SAFETY: the closure runs in the child between fork and exec; it makes
    // one prctl system call, which is async-signal-safe, and allocates
    // nothing (an Errno becomes an io::Error without allocating).
    unsafe {
        cmd.pre_exec(|| {
            rustix::process::set_parent_process_death_signal(Some(Signal::KILL))
                .map_err(io::Error::from)
        });
    }
}

fn ptrace(req: libc::c_uint, pid: i32, addr: u64, data: u64) -> io::Result<libc::c_long> {
    // SAFETY: the requests passed here take plain numbers in `addr` and
    // `data` and dereference neither (see each wrapper); a pid that is not
    // our stopped tracee fails with ESRCH.
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
    // SAFETY: GETEVENTMSG writes one unsigned long through the pointer,
    // which points to `v`.
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

/// `PTRACE_GETSIGINFO` into a zeroed `siginfo_t`; `Err` with the errno.
fn sig_info(pid: i32) -> io::Result<libc::siginfo_t> {
    // SAFETY: siginfo_t is plain data; all zeroes is a valid value.
    let mut si: libc::siginfo_t = unsafe { std::mem::zeroed() };
    // SAFETY: GETSIGINFO writes one siginfo_t through the pointer, which
    // points to `si`.
    check(unsafe {
        libc::ptrace(
            libc::PTRACE_GETSIGINFO,
            pid,
            std::ptr::null_mut::<libc::c_void>(),
            &mut si as *mut libc::siginfo_t,
        )
    })?;
    Ok(si)
}

/// True if the stop of `pid` is a group stop rather than the delivery of a
/// signal (`PTRACE_GETSIGINFO` fails with `EINVAL` on a group stop).
pub(crate) fn is_group_stop(pid: i32) -> bool {
    matches!(sig_info(pid), Err(e) if e.raw_os_error() == Some(libc::EINVAL))
}

/// The signal number, `si_code` and fault address (`si_addr`; 0 for a
/// signal that has none) of the signal-delivery stop of `pid`.
pub(crate) fn fault_info(pid: i32) -> io::Result<(i32, i32, u64)> {
    let si = sig_info(pid)?;
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
    // SAFETY: GETREGS writes one user_regs_struct through the pointer,
    // which points to `r`.
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
    // SAFETY: SETREGS reads one user_regs_struct through the pointer, which
    // points to `*r`.
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
    // SAFETY: __errno_location returns a valid pointer to this thread's
    // errno.
    unsafe { *libc::__errno_location() = 0 };
    // SAFETY: PEEKTEXT takes plain numbers (the tracee address is not
    // dereferenced here) and returns the word.
    let v = unsafe {
        libc::ptrace(
            libc::PTRACE_PEEKTEXT,
            pid,
            addr as *mut libc::c_void,
            std::ptr::null_mut::<libc::c_void>(),
        )
    };
    // SAFETY: as for the write above: this thread's errno.
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
#[derive(Clone, Copy, Debug)]
pub(crate) struct WaitStatus(rustix::process::WaitStatus);

impl WaitStatus {
    /// The raw status word, as `ExitStatus::from_raw` takes it.
    pub(crate) fn raw(self) -> i32 {
        self.0.as_raw()
    }
    /// The task exited or was killed by a signal.
    pub(crate) fn exited(self) -> bool {
        self.0.exited() || self.0.signaled()
    }
    /// The signal of a stop (`SIGTRAP | 0x80` for a system-call stop).
    pub(crate) fn stop_signal(self) -> Option<i32> {
        self.0.stopping_signal()
    }
    /// The `PTRACE_EVENT_*` of a ptrace event stop (0: none).
    pub(crate) fn event(self) -> i32 {
        (self.raw() >> 16) & 0xff
    }
}

/// `__WALL | __WNOTHREAD`: tracees that are threads too, and only the
/// children of the calling thread (`__WNOTHREAD` leaves the children other
/// threads of a host process started alone). rustix's `WaitOptions` does
/// not name these bits; it passes them on as given.
const WAIT_FLAGS: WaitOptions =
    WaitOptions::from_bits_retain((libc::__WALL | libc::__WNOTHREAD) as u32);

/// `waitpid(-1, __WALL | __WNOTHREAD)` (any tracee or child of the calling
/// thread), retried when a forwarded signal interrupts it. `Ok(None)`: no
/// child left (`ECHILD`).
pub(crate) fn wait_any() -> io::Result<Option<(i32, WaitStatus)>> {
    wait_retrying(|| rustix::process::wait(WAIT_FLAGS))
}

/// `waitpid(pid, __WALL | __WNOTHREAD)` for the tracee or child `pid`
/// (which must be positive; anything else is `EINVAL`), retried when a
/// forwarded signal interrupts it. `Ok(None)`: no such child (`ECHILD`).
pub(crate) fn wait_for(pid: i32) -> io::Result<Option<(i32, WaitStatus)>> {
    let pid = pid_of(pid).ok_or_else(|| io::Error::from_raw_os_error(libc::EINVAL))?;
    wait_retrying(|| rustix::process::waitpid(Some(pid), WAIT_FLAGS))
}

fn wait_retrying(
    mut call: impl FnMut() -> rustix::io::Result<Option<(Pid, rustix::process::WaitStatus)>>,
) -> io::Result<Option<(i32, WaitStatus)>> {
    loop {
        match call() {
            Ok(Some((pid, st))) => return Ok(Some((pid.as_raw_nonzero().get(), WaitStatus(st)))),
            // Only WNOHANG reports no change; it is not among the flags.
            Ok(None) => continue,
            Err(rustix::io::Errno::INTR) => continue,
            Err(rustix::io::Errno::CHILD) => return Ok(None),
            Err(e) => return Err(e.into()),
        }
    }
}

/// `pid` as a rustix `Pid` if it names one process (positive).
fn pid_of(pid: i32) -> Option<Pid> {
    if pid > 0 {
        Pid::from_raw(pid)
    } else {
        None
    }
}

/// `kill(pid, sig)` for a positive `pid`; errors ignored (the process may
/// be gone).
pub(crate) fn kill(pid: i32, sig: i32) {
    let Some(target) = pid_of(pid) else {
        return;
    };
    match Signal::from_named_raw(sig) {
        Some(s) => {
            let _ = rustix::process::kill_process(target, s);
        }
        None => {
            // SAFETY: kill takes plain numbers and touches no memory of
            // this process; the signal goes to the tracee `pid`.
            unsafe { libc::kill(pid, sig) };
        }
    }
}

/// The `(soft, hard)` `RLIMIT_STACK` of process `pid`; `None` for
/// unlimited.
pub(crate) fn stack_rlimit_of(pid: i32) -> io::Result<(Option<u64>, Option<u64>)> {
    let mut old = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: prlimit with a NULL new limit only writes the old one
    // through the pointer, which points to `old`.
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
pub(crate) const FORWARDED: [Signal; 8] = [
    Signal::TERM,
    Signal::INT,
    Signal::HUP,
    Signal::QUIT,
    Signal::USR1,
    Signal::USR2,
    Signal::ALARM,
    Signal::WINCH,
];

extern "C" fn forward(sig: libc::c_int, info: *mut libc::siginfo_t, _ctx: *mut libc::c_void) {
    // A signal the kernel sent to the terminal's process group (Ctrl-C,
    // hangup) reached the program too: forwarding it would deliver it twice.
    // SAFETY: the kernel passes a valid siginfo_t to an SA_SIGINFO handler.
    if !info.is_null() && unsafe { (*info).si_code } == libc::SI_KERNEL {
        return;
    }
    let pid = FORWARD_TO.load(Ordering::Relaxed);
    // The handler is installed only for FORWARDED, all named signals; the
    // kill is one system call, async-signal-safe.
    if let (Some(target), Some(s)) = (pid_of(pid), Signal::from_named_raw(sig)) {
        let _ = rustix::process::kill_process(target, s);
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
    for sig in FORWARDED {
        // SAFETY: sigaction is plain data; zeroes are a valid empty mask.
        let mut sa: libc::sigaction = unsafe { std::mem::zeroed() };
        let handler: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) = forward;
        sa.sa_sigaction = handler as usize;
        // No SA_RESTART: waitpid returns EINTR and is retried by `wait_*`.
        sa.sa_flags = libc::SA_SIGINFO;
        // SAFETY:
        // 1. sigemptyset writes only the mask inside `sa`.
        // 2. The handler calls only async-signal-safe code (an atomic load
        //    and the kill system call) and matches the SA_SIGINFO signature.
        // 3. The old action is not asked for (NULL), so nothing else is
        //    written.
        unsafe {
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(sig.as_raw(), &sa, std::ptr::null_mut());
        }
    }
}

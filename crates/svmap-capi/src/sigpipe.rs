//! Writing into a pipe or socket whose reader has gone without dying of
//! `SIGPIPE`.
//!
//! A Rust program ignores `SIGPIPE` from the start, but a C host usually
//! keeps the default action, which ends the process at the first write
//! into a pipe nobody reads any more. The header promises `SVMAP_EIO`
//! there instead. `MSG_NOSIGNAL` exists for sockets only, so the calls
//! that write to a caller's descriptor block `SIGPIPE` in the calling
//! thread for their duration ([`SigpipeBlocked`]): the write then fails
//! with `EPIPE`, the `SIGPIPE` the kernel raised stays pending, and it is
//! taken off again before the thread's old mask comes back. The process's
//! signal dispositions are never touched, and other threads are not
//! affected.
//!
//! rustix offers signal masks only as raw kernel calls meant for libc
//! implementations, so these few calls go through libc.

use std::mem::MaybeUninit;
use std::ptr;

/// The set holding `SIGPIPE` alone.
fn sigpipe_set() -> libc::sigset_t {
    let mut set = MaybeUninit::<libc::sigset_t>::uninit();
    // SAFETY: sigemptyset initialises the whole set it is given, a valid
    // place for a sigset_t; sigaddset then adds a valid signal number to
    // that initialised set (it cannot fail for SIGPIPE).
    unsafe {
        libc::sigemptyset(set.as_mut_ptr());
        libc::sigaddset(set.as_mut_ptr(), libc::SIGPIPE);
        set.assume_init()
    }
}

/// Whether `SIGPIPE` is pending for the calling thread or the process.
fn sigpipe_pending() -> bool {
    let mut pending = MaybeUninit::<libc::sigset_t>::uninit();
    // SAFETY: sigpending writes a whole sigset_t into the valid place it is
    // given, and returns 0 when it did.
    if unsafe { libc::sigpending(pending.as_mut_ptr()) } != 0 {
        return false;
    }
    // SAFETY: initialised by the successful sigpending above; sigismember
    // only reads it.
    unsafe { libc::sigismember(pending.as_ptr(), libc::SIGPIPE) == 1 }
}

/// While this lives, `SIGPIPE` is blocked in the calling thread. Dropping
/// it takes back a `SIGPIPE` that became pending meanwhile (one that was
/// pending already is left for the caller) and restores the thread's
/// signal mask. Create and drop it on the same thread.
pub(crate) struct SigpipeBlocked {
    /// The thread's mask before; `None` when blocking failed (nothing to
    /// undo then).
    old: Option<libc::sigset_t>,
    /// `SIGPIPE` was pending before: not ours to take.
    was_pending: bool,
    /// Not `Send`: the mask belongs to the thread that created it.
    _thread: std::marker::PhantomData<*const ()>,
}

impl SigpipeBlocked {
    /// Blocks `SIGPIPE` in the calling thread.
    pub(crate) fn new() -> SigpipeBlocked {
        let was_pending = sigpipe_pending();
        let set = sigpipe_set();
        let mut old = MaybeUninit::<libc::sigset_t>::uninit();
        // SAFETY: `set` is an initialised sigset_t and `old` a valid place
        // for one, which pthread_sigmask fills when it returns 0.
        let rc = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, old.as_mut_ptr()) };
        SigpipeBlocked {
            // SAFETY: written by the successful call (rc == 0).
            old: (rc == 0).then(|| unsafe { old.assume_init() }),
            was_pending,
            _thread: std::marker::PhantomData,
        }
    }
}

impl Drop for SigpipeBlocked {
    fn drop(&mut self) {
        let Some(old) = self.old else {
            return;
        };
        if !self.was_pending && sigpipe_pending() {
            let set = sigpipe_set();
            let zero = libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            };
            // SAFETY: `set` is an initialised sigset_t, the info pointer
            // may be NULL, and `zero` is a valid timespec: the call takes
            // the pending SIGPIPE (blocked here, so it cannot have been
            // delivered) without waiting.
            unsafe { libc::sigtimedwait(&set, ptr::null_mut(), &zero) };
        }
        // SAFETY: `old` is the initialised mask pthread_sigmask returned on
        // this thread; the old-mask pointer may be NULL.
        unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &old, ptr::null_mut()) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether SIGPIPE is in the calling thread's mask.
    fn blocked() -> bool {
        let mut cur = MaybeUninit::<libc::sigset_t>::uninit();
        // SAFETY: a NULL new set only reads the mask into `cur`.
        let r = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, ptr::null(), cur.as_mut_ptr()) };
        assert_eq!(r, 0);
        // SAFETY: initialised by the call above.
        unsafe { libc::sigismember(cur.as_ptr(), libc::SIGPIPE) == 1 }
    }

    #[test]
    fn a_write_into_a_closed_pipe_leaves_no_signal_and_the_old_mask() {
        use std::io::Write;
        use std::os::fd::OwnedFd;
        let (r, w): (OwnedFd, OwnedFd) = {
            let mut fds = [0; 2];
            // SAFETY: `fds` has room for the two descriptors pipe writes.
            assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
            // SAFETY: both descriptors are fresh and owned by nobody else.
            unsafe {
                use std::os::fd::FromRawFd;
                (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1]))
            }
        };
        drop(r);
        assert!(!blocked());
        let mut f = std::fs::File::from(w);
        {
            let _guard = SigpipeBlocked::new();
            assert!(blocked());
            let e = f.write(b"x").unwrap_err();
            assert_eq!(e.raw_os_error(), Some(libc::EPIPE));
            // The kernel raised SIGPIPE; blocked, it is pending now.
            assert!(sigpipe_pending());
        }
        assert!(!blocked(), "the mask is restored");
        assert!(!sigpipe_pending(), "the SIGPIPE of the write was taken");
    }
}

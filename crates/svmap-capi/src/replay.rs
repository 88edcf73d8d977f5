//! Trace replay (`docs/trace-format.md`, the `svmap replay` command) from
//! a file or a buffer, through [`svmap_trace::replay`].

use std::ffi::{c_char, c_int, CStr, OsStr};
use std::fs::File;
use std::io::{self, BufReader, BufWriter, Write};
use std::mem::ManuallyDrop;
use std::os::fd::FromRawFd;
use std::os::unix::ffi::OsStrExt;

use svmap_trace::{ReplayError, Summary};

use crate::svmap_status_t::{self, *};
use crate::{ffi_status, Failure, FfiResult, Out};

/// The summary of a replay that ran to its end.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct svmap_replay_summary_t {
    /// Operation lines run.
    pub ops: u64,
    /// Result lines written.
    pub results: u64,
    /// `expect` fields compared (only with `check`).
    pub checked: u64,
    /// Of those, the ones that did not match.
    pub mismatches: u64,
    /// What `svmap replay` exits with: 0 (ran; with `check`, everything
    /// matched) or 1 (with `check`, a mismatch). A bad line, which
    /// `svmap replay` exits 2 for, is `SVMAP_EBADTRACE` here.
    pub exit_status: i32,
}

/// Where the result lines (or the mismatch notes) go: a borrowed file
/// descriptor, or nowhere for -1.
enum Sink {
    Fd(ManuallyDrop<File>),
    Null,
}

impl Sink {
    /// # Safety
    ///
    /// `fd` is -1 or an open descriptor, writable, for the life of the sink.
    unsafe fn new(fd: c_int, what: &str) -> FfiResult<Sink> {
        match fd {
            -1 => Ok(Sink::Null),
            fd if fd < 0 => Err(Failure::inval(format!("{what} is {fd}"))),
            fd => {
                // A closed or read-only descriptor is the caller's mistake
                // that can be seen: say so instead of wrapping a File around
                // a number that is not (or not writably) open.
                svmap_linux::sys::check_writable_fd(fd).map_err(|e| {
                    Failure::inval(format!("{what} {fd} is not open for writing: {e}"))
                })?;
                // SAFETY: `fd` is open for writing (checked) and, by the
                // caller's contract, stays open while the sink lives;
                // ManuallyDrop never closes it (the caller keeps owning it).
                Ok(Sink::Fd(ManuallyDrop::new(unsafe {
                    File::from_raw_fd(fd)
                })))
            }
        }
    }
}

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Sink::Fd(f) => (&**f).write(buf),
            Sink::Null => Ok(buf.len()),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Sink::Fd(f) => (&**f).flush(),
            Sink::Null => Ok(()),
        }
    }
}

fn run(
    input: impl io::BufRead,
    check: bool,
    out_fd: c_int,
    err_fd: c_int,
    out: Out<svmap_replay_summary_t>,
) -> FfiResult<()> {
    // A reader that has gone makes the writes fail with EPIPE (SVMAP_EIO)
    // instead of killing a host that keeps SIGPIPE's default action.
    // Declared first, so that it is dropped after the writer's last flush.
    let _sigpipe = crate::sigpipe::SigpipeBlocked::new();
    // SAFETY: the caller's contract for `out_fd` and `err_fd`.
    let (out_sink, mut err_sink) =
        unsafe { (Sink::new(out_fd, "out_fd")?, Sink::new(err_fd, "err_fd")?) };
    let mut w = BufWriter::with_capacity(1 << 16, out_sink);
    let result = svmap_trace::replay(input, &mut w, &mut err_sink, check);
    // Lines written before a bad line stay valid: flush them either way.
    let flushed = w.flush();
    let s: Summary = result.map_err(|e| match e {
        ReplayError::BadLine { .. } => Failure::new(SVMAP_EBADTRACE, e.to_string()),
        ReplayError::Read(_) | ReplayError::Write(_) => Failure::new(SVMAP_EIO, e.to_string()),
    })?;
    flushed.map_err(|e| Failure::new(SVMAP_EIO, format!("error writing the results: {e}")))?;
    out.write(svmap_replay_summary_t {
        ops: s.ops,
        results: s.results,
        checked: s.checked,
        mismatches: s.mismatches,
        exit_status: s.exit_status(check),
    });
    Ok(())
}

/// Replays the trace file at `path` (`docs/trace-format.md`) as `svmap
/// replay [--check] FILE` does, on a fresh SVM space: one JSON line per
/// result and then the summary line go to `out_fd`, notes about mismatches
/// of operations that print no line to `err_fd` (-1: discard; the
/// descriptors stay open and the caller's). With `check`, results are
/// compared with the lines' `expect` fields. Writes the counts and the exit status to `*out`.
/// `SVMAP_EBADTRACE` for a bad line (the message is `line N: ...`; result
/// lines before it were written), `SVMAP_ENOENT` / `SVMAP_EPERM` /
/// `SVMAP_EIO` when the file cannot be read, `SVMAP_EIO` when a descriptor
/// cannot be written (a pipe whose reader has gone: `SIGPIPE` is blocked
/// in the calling thread during the call and the one the write raised is
/// taken back, so the process lives on whatever its `SIGPIPE` action).
///
/// # Safety
///
/// `path` is NULL (`SVMAP_EINVAL`) or a NUL-terminated string; `out_fd`
/// and `err_fd` are -1 or descriptors open for writing during the call;
/// `out` is NULL (`SVMAP_EINVAL`) or valid for writing one
/// `svmap_replay_summary_t`.
#[no_mangle]
pub unsafe extern "C" fn svmap_replay_file(
    path: *const c_char,
    check: bool,
    out_fd: c_int,
    err_fd: c_int,
    out: *mut svmap_replay_summary_t,
) -> svmap_status_t {
    ffi_status(|| {
        // SAFETY: the caller's contract for `out`.
        let out = unsafe { Out::new(out, "out") }?;
        if path.is_null() {
            return Err(Failure::null("path"));
        }
        // SAFETY: non-null, and the caller passes a NUL-terminated string.
        let path = OsStr::from_bytes(unsafe { CStr::from_ptr(path) }.to_bytes());
        let file = File::open(path).map_err(|e| {
            Failure::new(
                crate::status_of_errno(e.raw_os_error().unwrap_or(0)),
                format!("cannot open {}: {e}", path.to_string_lossy()),
            )
        })?;
        run(
            BufReader::with_capacity(1 << 16, file),
            check,
            out_fd,
            err_fd,
            out,
        )
    })
}

/// [`svmap_replay_file`] on the `len` bytes at `data` (a whole trace: lines
/// separated by newlines; need not be NUL-terminated).
///
/// # Safety
///
/// `data` is NULL (only with `len == 0`) or valid for reading `len` bytes
/// during the call; `out_fd`, `err_fd` and `out` as for
/// `svmap_replay_file`.
#[no_mangle]
pub unsafe extern "C" fn svmap_replay_buffer(
    data: *const c_char,
    len: usize,
    check: bool,
    out_fd: c_int,
    err_fd: c_int,
    out: *mut svmap_replay_summary_t,
) -> svmap_status_t {
    ffi_status(|| {
        // SAFETY: the caller's contract for `out`.
        let out = unsafe { Out::new(out, "out") }?;
        let bytes: &[u8] = if len == 0 {
            &[]
        } else if data.is_null() {
            return Err(Failure::null("data"));
        } else if len > isize::MAX as usize {
            // `slice::from_raw_parts` requires len <= isize::MAX.
            return Err(Failure::inval(format!(
                "len {len:#x} overflows the address space"
            )));
        } else {
            // SAFETY: non-null, `len` <= isize::MAX (checked), u8 needs no
            // alignment, and the caller guarantees `len` readable bytes that
            // do not change during the call.
            unsafe { std::slice::from_raw_parts(data.cast::<u8>(), len) }
        };
        run(bytes, check, out_fd, err_fd, out)
    })
}

//! # svmap-trace
//!
//! The trace format (`docs/trace-format.md`) and its replay, as a library that every
//! front end shares: the `svmap replay` command, the C ABI, tests.
//!
//! - [`trace`]: the strict parser of one line ([`trace::parse_line`]) into
//!   an [`trace::Entry`] (an [`trace::Op`] and its optional `expect`).
//! - [`replay_with`]: the streaming driver over any [`Executor`]; it owns
//!   the output lines, `expect` checks, the summary and bad-line detection.
//! - [`SvmExecutor`]: every trace operation (address-space and SVM) on
//!   [`svmap_svm::SvmSpace`]; [`CpuExecutor`]: the address-space operations
//!   only, on the core [`svmap_core::linux::Mm`].
//! - [`replay`] and [`replay_status`]: the whole of `svmap replay` in one
//!   call, with [`SvmExecutor`].
//! - [`fuzzing`]: the check the fuzz target and the random test run on
//!   arbitrary bytes.
//!
//! # Bounds
//!
//! Hostile input gets a bad line (exit status 2), never unbounded time or
//! memory: a line holds at most [`MAX_LINE_LEN`] bytes, and the driver
//! never buffers more of one; parsing a line is linear in its length; a
//! message quotes at most [`MAX_QUOTED`] bytes of any value; the device
//! sizes a trace gives are checked (see [`svmap_svm`]'s bounds) and device
//! page tables and TLBs cost memory only for what they hold.
//!
//! ```
//! let trace = b"{\"op\": \"mmap\", \"length\": \"0x1000\", \"expect\": {\"addr\": \"0x7ffff7ffe000\"}}\n";
//! let (mut out, mut err) = (Vec::new(), Vec::new());
//! let summary = svmap_trace::replay(&trace[..], &mut out, &mut err, true).unwrap();
//! assert_eq!((summary.ops, summary.checked, summary.mismatches), (1, 1, 0));
//! assert_eq!(summary.exit_status(true), svmap_trace::EXIT_OK);
//! assert_eq!(
//!     String::from_utf8(out).unwrap(),
//!     "{\"line\": 1, \"op\": \"mmap\", \"addr\": \"0x7ffff7ffe000\"}\n\
//!      {\"summary\": {\"ops\": 1, \"results\": 1, \"checked\": 1, \"mismatches\": 0}}\n"
//! );
//! ```

use std::io::{BufRead, Write};

mod exec;
pub mod fuzzing;
mod replay;
pub mod trace;

pub use exec::{CpuExecutor, SvmExecutor};
pub use replay::{
    exit_status, replay_with, ExecError, Executor, ReplayError, Summary, EXIT_BAD, EXIT_MISMATCH,
    EXIT_OK,
};
pub use trace::{MAX_LINE_LEN, MAX_QUOTED};

/// Runs the trace `input` with a fresh [`SvmExecutor`] (every trace
/// operation), writing one JSON line per result and the summary line to
/// `out` (buffer it; it is not flushed). With `check`, compares results
/// with `expect` fields; mismatch notes for operations that printed no line
/// go to `err`. On a bad line or an I/O error it returns the error without
/// printing it (its `Display` is the message, `line N: ...` for a bad
/// line). [`exit_status`] maps the result to 0, 1 or 2.
pub fn replay<R: BufRead, W: Write + ?Sized>(
    input: R,
    out: &mut W,
    err: &mut dyn Write,
    check: bool,
) -> Result<Summary, ReplayError> {
    replay_with(input, out, err, &mut SvmExecutor::default(), check)
}

/// [`replay`], then the rest of what `svmap replay` does: prints the error
/// (if any) on `err` as one line, flushes `out`, and returns the exit
/// status (0: ran, and with `check` every result matched; 1: a mismatch;
/// 2: a bad line or an I/O error). A closed pipe on `out` is status 2 with
/// no message.
pub fn replay_status<R: BufRead, W: Write + ?Sized>(
    input: R,
    out: &mut W,
    err: &mut dyn Write,
    check: bool,
) -> i32 {
    let result = replay(input, out, err, check);
    // Results printed before a bad line stay valid: flush them either way.
    let flushed = out.flush().map_err(ReplayError::Write);
    let result = result.and_then(|s| flushed.map(|()| s));
    if let Err(e) = &result {
        if !e.is_broken_pipe() {
            let _ = writeln!(err, "{e}");
        }
    }
    exit_status(&result, check)
}

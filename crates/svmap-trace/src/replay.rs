//! The streaming replay driver: one line at a time from a `BufRead`, results
//! through the caller's (buffered) writer, nothing kept per line.
//!
//! The driver owns parsing, the check that every device a line names was
//! defined, `expect` comparisons, the output lines and the counters; an
//! [`Executor`] owns the address spaces and runs each parsed [`Op`].

use std::fmt;
use std::io::{self, BufRead, Write};

use crate::trace::{parse_line, quote, too_long, Op, OpKind, Outcome, MAX_LINE_LEN};

/// Exit status: the trace ran and (with `check`) every checked result matched.
pub const EXIT_OK: i32 = 0;
/// Exit status: with `check`, at least one result did not match its `expect`.
pub const EXIT_MISMATCH: i32 = 1;
/// Exit status: a bad line, or an error reading the trace or writing the
/// results (no summary line was written).
pub const EXIT_BAD: i32 = 2;

/// The counters of the summary line.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    /// Operation lines run.
    pub ops: u64,
    /// Result lines printed.
    pub results: u64,
    /// `expect` fields compared (only with `check`).
    pub checked: u64,
    /// Of those, the ones that did not match.
    pub mismatches: u64,
}

impl Summary {
    /// The exit status of a replay that ran to its end: [`EXIT_MISMATCH`]
    /// when `check` is on and something mismatched, else [`EXIT_OK`].
    pub fn exit_status(&self, check: bool) -> i32 {
        if check && self.mismatches > 0 {
            EXIT_MISMATCH
        } else {
            EXIT_OK
        }
    }

    /// The summary line a replay prints last (without a newline).
    pub fn json_line(&self) -> String {
        format!(
            "{{\"summary\": {{\"ops\": {}, \"results\": {}, \"checked\": {}, \"mismatches\": {}}}}}",
            self.ops, self.results, self.checked, self.mismatches
        )
    }
}

/// Why a replay stopped before its end. No summary line was written; the
/// exit status is [`EXIT_BAD`].
#[derive(Debug)]
pub enum ReplayError {
    /// A bad line (`docs/trace-format.md`), or an operation the executor cannot run.
    BadLine {
        /// The line number (from 1, counting every line).
        line: u64,
        /// What is wrong, without the `line N: ` prefix.
        msg: String,
    },
    /// Reading the trace failed.
    Read(io::Error),
    /// Writing the results failed.
    Write(io::Error),
}

impl ReplayError {
    /// The exit status: always [`EXIT_BAD`].
    pub fn exit_status(&self) -> i32 {
        EXIT_BAD
    }

    /// A write to a closed pipe (`svmap replay t | head`): the reader's
    /// choice, usually not worth a message.
    pub fn is_broken_pipe(&self) -> bool {
        matches!(self, ReplayError::Write(e) if e.kind() == io::ErrorKind::BrokenPipe)
    }
}

impl fmt::Display for ReplayError {
    /// `line N: what is wrong` for a bad line (the exact message `svmap
    /// replay` prints on standard error).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReplayError::BadLine { line, msg } => write!(f, "line {line}: {msg}"),
            ReplayError::Read(e) => write!(f, "error reading the trace: {e}"),
            ReplayError::Write(e) => write!(f, "error writing the results: {e}"),
        }
    }
}

impl std::error::Error for ReplayError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ReplayError::BadLine { .. } => None,
            ReplayError::Read(e) | ReplayError::Write(e) => Some(e),
        }
    }
}

/// The exit status of a replay's result: 0, 1 (a mismatch
/// with `check`) or 2 (a bad line or an I/O error).
pub fn exit_status(result: &Result<Summary, ReplayError>, check: bool) -> i32 {
    match result {
        Ok(s) => s.exit_status(check),
        Err(e) => e.exit_status(),
    }
}

/// Why an executor did not run an operation; the driver turns it into a
/// [`ReplayError::BadLine`] with this message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ExecError {
    /// The operation belongs to the SVM layer, which this executor lacks
    /// ([`crate::CpuExecutor`]).
    NeedsSvm(OpKind),
    /// The input is what the trace format calls a bad line, found only when the
    /// operation ran (the parser catches every such case it can).
    BadLine(String),
}

impl fmt::Display for ExecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExecError::NeedsSvm(k) => write!(
                f,
                "op \"{}\" needs the SVM layer, which this executor does not have",
                k.name()
            ),
            ExecError::BadLine(msg) => f.write_str(msg),
        }
    }
}

impl std::error::Error for ExecError {}

/// Runs parsed operations. The replay driver owns parsing, output,
/// `expect` checks and counting; an executor owns the address spaces.
pub trait Executor {
    /// Runs `op`: `Ok(None)` for an operation that prints no line (a
    /// successful `map`, `reset`, `unmap`, `device`, `device_map`),
    /// `Ok(Some(result))` otherwise.
    fn execute(&mut self, op: &Op) -> Result<Option<Outcome>, ExecError>;

    /// Whether a `device` operation has defined `name` since the last
    /// `reset`. The driver rejects a line naming any other device as bad.
    fn has_device(&self, name: &str) -> bool;
}

impl<E: Executor + ?Sized> Executor for &mut E {
    fn execute(&mut self, op: &Op) -> Result<Option<Outcome>, ExecError> {
        (**self).execute(op)
    }

    fn has_device(&self, name: &str) -> bool {
        (**self).has_device(name)
    }
}

impl<E: Executor + ?Sized> Executor for Box<E> {
    fn execute(&mut self, op: &Op) -> Result<Option<Outcome>, ExecError> {
        (**self).execute(op)
    }

    fn has_device(&self, name: &str) -> bool {
        (**self).has_device(name)
    }
}

/// Runs the trace `input` through `exec`, writing result lines and the
/// summary line to `out` (which should be buffered; it is not flushed).
/// With `check`, compares results with `expect` fields; an `expect` on an
/// operation that printed no line is reported on `err` as
/// `line N: mismatch: ...`. Returns the summary counters, or why it stopped
/// early (then no summary line is written, and nothing is written to `err`
/// about it: the caller prints the error).
pub fn replay_with<R, W, E>(
    mut input: R,
    out: &mut W,
    err: &mut dyn Write,
    exec: &mut E,
    check: bool,
) -> Result<Summary, ReplayError>
where
    R: BufRead,
    W: Write + ?Sized,
    E: Executor + ?Sized,
{
    let mut sum = Summary::default();
    let mut buf = Vec::with_capacity(256);
    let mut line: u64 = 0;
    loop {
        buf.clear();
        let read = read_line(&mut input, &mut buf).map_err(ReplayError::Read)?;
        if read == LineRead::Eof {
            break;
        }
        line += 1;
        let stop = |msg: String| ReplayError::BadLine { line, msg };
        if read == LineRead::TooLong {
            return Err(stop(too_long().0));
        }
        let text = std::str::from_utf8(&buf)
            .map_err(|e| stop(format!("not valid UTF-8 (byte {})", e.valid_up_to() + 1)))?;
        // Blank lines and comments; a `#` after leading blanks counts too.
        let trimmed = text.trim_ascii_start();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let entry = parse_line(text).map_err(|e| stop(e.0))?;
        if let Some(name) = entry.op.device_refs().iter().find(|n| !exec.has_device(n)) {
            return Err(stop(format!(
                "device {} was never defined (since the last reset)",
                quote(name)
            )));
        }
        let result = exec.execute(&entry.op).map_err(|e| stop(e.to_string()))?;
        sum.ops += 1;

        let expected = match entry.expect {
            Some(e) if check => {
                sum.checked += 1;
                if result == Some(e) {
                    None
                } else {
                    sum.mismatches += 1;
                    Some(e)
                }
            }
            _ => None,
        };
        let name = entry.op.kind().name();
        match (result, expected) {
            (Some(r), None) => writeln!(out, "{{\"line\": {line}, \"op\": \"{name}\", {r}}}")
                .map_err(ReplayError::Write)?,
            (Some(r), Some(e)) => writeln!(
                out,
                "{{\"line\": {line}, \"op\": \"{name}\", {r}, \"expected\": {{{e}}}}}"
            )
            .map_err(ReplayError::Write)?,
            (None, Some(e)) => {
                // A diagnostic only: a failing stderr must not stop the run.
                let _ = writeln!(
                    err,
                    "line {line}: mismatch: op \"{name}\" succeeded with no result, but expected {{{e}}}"
                );
            }
            (None, None) => {}
        }
        if result.is_some() {
            sum.results += 1;
        }
    }
    writeln!(out, "{}", sum.json_line()).map_err(ReplayError::Write)?;
    Ok(sum)
}

/// What [`read_line`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum LineRead {
    /// The end of the input, with nothing read.
    Eof,
    /// A line (with its newline, unless it is the last one and has none).
    Line,
    /// A line of more than [`MAX_LINE_LEN`] bytes before its newline: `buf`
    /// holds its first `MAX_LINE_LEN + 1` bytes, the rest is unread.
    TooLong,
}

/// Reads one line into `buf` (which the caller cleared), but never more
/// than [`MAX_LINE_LEN`] + 1 bytes of it: memory stays bounded whatever the
/// input (`/dev/zero`, a file without newlines).
fn read_line<R: BufRead + ?Sized>(input: &mut R, buf: &mut Vec<u8>) -> io::Result<LineRead> {
    loop {
        let avail = match input.fill_buf() {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if avail.is_empty() {
            return Ok(if buf.is_empty() {
                LineRead::Eof
            } else {
                LineRead::Line
            });
        }
        // Bytes of the line (newline excluded) that may still come.
        let room = MAX_LINE_LEN + 1 - buf.len();
        match avail.iter().position(|&b| b == b'\n') {
            Some(i) if i < room => {
                buf.extend_from_slice(&avail[..=i]);
                input.consume(i + 1);
                return Ok(LineRead::Line);
            }
            _ => {
                let take = avail.len().min(room);
                buf.extend_from_slice(&avail[..take]);
                input.consume(take);
                if buf.len() > MAX_LINE_LEN {
                    return Ok(LineRead::TooLong);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reader that hands out at most `chunk` bytes per `fill_buf`.
    struct Chunked<'a> {
        data: &'a [u8],
        chunk: usize,
    }

    impl io::Read for Chunked<'_> {
        fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
            let n = out.len().min(self.chunk).min(self.data.len());
            out[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            Ok(n)
        }
    }

    impl BufRead for Chunked<'_> {
        fn fill_buf(&mut self) -> io::Result<&[u8]> {
            let n = self.chunk.min(self.data.len());
            Ok(&self.data[..n])
        }
        fn consume(&mut self, n: usize) {
            self.data = &self.data[n..];
        }
    }

    fn lines(data: &[u8], chunk: usize) -> Vec<(LineRead, usize)> {
        let mut r = Chunked { data, chunk };
        let mut out = Vec::new();
        let mut buf = Vec::new();
        loop {
            buf.clear();
            let k = read_line(&mut r, &mut buf).unwrap();
            out.push((k, buf.len()));
            if k != LineRead::Line {
                return out;
            }
        }
    }

    #[test]
    fn line_reading_is_bounded_and_exact() {
        use LineRead::*;
        let max = MAX_LINE_LEN;
        for chunk in [1, 7, 4096, 1 << 20] {
            // Lines of exactly the limit (with and without a newline) pass.
            let mut d = vec![b'a'; max];
            d.push(b'\n');
            d.extend_from_slice(b"x\n");
            d.extend(vec![b'b'; max]);
            assert_eq!(
                lines(&d, chunk),
                [(Line, max + 1), (Line, 2), (Line, max), (Eof, 0)],
                "chunk {chunk}"
            );
            // One byte more is too long, with or without a newline after.
            let mut d = vec![b'a'; max + 1];
            d.push(b'\n');
            assert_eq!(lines(&d, chunk), [(TooLong, max + 1)], "chunk {chunk}");
            let d = vec![0u8; 3 * max];
            assert_eq!(lines(&d, chunk), [(TooLong, max + 1)], "chunk {chunk}");
        }
        assert_eq!(lines(b"", 3), [(Eof, 0)]);
        assert_eq!(lines(b"\n\n", 3), [(Line, 1), (Line, 1), (Eof, 0)]);
    }
}

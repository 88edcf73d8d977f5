//! `svmap replay [--check] FILE|-`: runs a trace (`TRACE.md`) and prints
//! one JSON line per result, then a summary.
//!
//! The driver ([`replay`]) streams: one line at a time from a `BufRead`,
//! results through the caller's buffered writer, nothing kept per line. It
//! runs each operation through an [`Executor`]. This build has
//! [`CpuExecutor`], which runs the CPU address-space operations on
//! [`svmap_core::linux::Mm`] and stops at the first SVM operation; the SVM
//! layer plugs in as another executor that handles every [`Op`].

use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, Write};

use svmap_core::linux::{Errno, Mm, MmConfig};
use svmap_core::MapError;

use crate::trace::{parse_line, Op, OpKind, Outcome};

/// Help text of `svmap replay`.
pub const HELP: &str = r##"svmap replay: run an address-space trace

Usage: svmap replay [--check] FILE|-

Reads the trace FILE (standard input for "-"): one JSON operation per line,
in the trace format of TRACE.md. Runs it on a simulated x86-64 Linux address
space and prints, in input order, one JSON line for every operation that has
a result, then a summary line:

  {"line": 7, "op": "mmap", "addr": "0x7ffff7efd000"}
  {"line": 9, "op": "find", "err": "ENOMEM"}
  {"summary": {"ops": 15, "results": 9, "checked": 0, "mismatches": 0}}

Lines are numbered from 1; blank lines and lines starting with "#" are
skipped but counted. Numbers are JSON strings holding decimal ("4096") or
hex with a lower-case "0x" prefix ("0x7ffff7fff000"; the digits may be of
either case), or plain JSON integers up to 2^53.

Options:
  --check      compare each result with the line's "expect" field; a
               mismatch adds "expected" to that result line (an "expect" on
               an operation that printed no line, such as a successful
               "map", is a mismatch too, reported on standard error)
  -h, --help   print this help
  --           end of options (a FILE named like an option follows)

Exit status:
  0  the trace ran; with --check, every checked result matched
  1  with --check, at least one result did not match its "expect"
  2  a bad line (the message "line N: ..." names it on standard error and
     no summary is printed), an operation this build cannot run yet (the
     SVM operations), or a usage or I/O error

Examples:
  svmap replay trace.jsonl
  svmap replay --check examples/address-space.jsonl
  echo '{"op": "mmap", "length": "0x1000"}' | svmap replay -
"##;

/// Runs `svmap replay` with the arguments after `replay`; returns the exit
/// status.
pub fn run(args: &[String]) -> i32 {
    let mut check = false;
    let mut file: Option<&str> = None;
    let mut options_done = false;
    for arg in args {
        match arg.as_str() {
            "--check" if !options_done => check = true,
            "-h" | "--help" if !options_done => {
                print!("{HELP}");
                return 0;
            }
            "--" if !options_done => options_done = true,
            a if !options_done && a.starts_with('-') && a != "-" => {
                return usage_error(&format!("unknown option {a:?}"));
            }
            a => {
                if let Some(first) = file {
                    return usage_error(&format!("one trace at a time: got {first:?} and {a:?}"));
                }
                file = Some(a);
            }
        }
    }
    let Some(file) = file else {
        return usage_error("missing the trace FILE (or \"-\" for standard input)");
    };

    let input: Box<dyn BufRead> = if file == "-" {
        Box::new(io::stdin().lock())
    } else {
        match File::open(file) {
            Ok(f) => Box::new(BufReader::with_capacity(1 << 16, f)),
            Err(e) => {
                eprintln!("svmap replay: cannot open {file:?}: {e}");
                return 2;
            }
        }
    };
    let stdout = io::stdout();
    let mut out = BufWriter::with_capacity(1 << 16, stdout.lock());
    let mut exec = CpuExecutor::default();
    let result = replay(input, &mut out, &mut exec, check);
    // Results printed before a bad line stay valid: flush them either way.
    let flushed = out.flush();
    match (result, flushed) {
        (Ok(summary), Ok(())) => i32::from(check && summary.mismatches > 0),
        (Err(Stop::Line { line, msg }), _) => {
            eprintln!("line {line}: {msg}");
            2
        }
        (Err(Stop::Read(e)), _) => {
            let name = if file == "-" { "standard input" } else { file };
            eprintln!("svmap replay: error reading {name}: {e}");
            2
        }
        (Err(Stop::Write(e)), _) | (Ok(_), Err(e)) => {
            // A closed pipe (`svmap replay t | head`) is the reader's choice.
            if e.kind() != io::ErrorKind::BrokenPipe {
                eprintln!("svmap replay: error writing the results: {e}");
            }
            2
        }
    }
}

fn usage_error(msg: &str) -> i32 {
    eprintln!(
        "svmap replay: {msg}\nUsage: svmap replay [--check] FILE|-  (see svmap replay --help)"
    );
    2
}

/// The counters of the summary line.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    /// Operation lines run.
    pub ops: u64,
    /// Result lines printed.
    pub results: u64,
    /// `expect` fields compared (only with `--check`).
    pub checked: u64,
    /// Of those, the ones that did not match.
    pub mismatches: u64,
}

/// Why a replay stopped before its end. No summary is printed.
#[derive(Debug)]
pub enum Stop {
    /// A bad line, or an operation the executor cannot run: `line N: msg`.
    Line {
        /// The line number (from 1).
        line: u64,
        /// What is wrong.
        msg: String,
    },
    /// Reading the trace failed.
    Read(io::Error),
    /// Writing the results failed.
    Write(io::Error),
}

/// Why an executor did not run an operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExecError {
    /// The operation belongs to the SVM layer, which this executor lacks.
    NeedsSvm(OpKind),
}

impl std::fmt::Display for ExecError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExecError::NeedsSvm(k) => write!(
                f,
                "op \"{}\" needs the SVM layer, which this build does not have yet",
                k.name()
            ),
        }
    }
}

/// Runs parsed operations. The replay driver owns parsing, output,
/// `expect` checks and counting; an executor owns the address spaces.
pub trait Executor {
    /// Runs `op`: `Ok(None)` for an operation that prints no line (a
    /// successful `map`, `reset`, `unmap`, ...), `Ok(Some(result))`
    /// otherwise.
    fn execute(&mut self, op: &Op) -> Result<Option<Outcome>, ExecError>;

    /// Whether a `device` operation has defined `name` since the last
    /// `reset`. The driver rejects a line naming any other device as bad.
    fn has_device(&self, name: &str) -> bool;
}

/// The CPU address space of `TRACE.md` (`reset`, `map`, `unmap`, `find`,
/// `mmap`) on [`Mm`]; it has no devices and runs no SVM operation.
#[derive(Clone, Debug)]
pub struct CpuExecutor {
    mm: Mm,
}

impl Default for CpuExecutor {
    /// Operations before the first `reset` run on the defaults.
    fn default() -> Self {
        CpuExecutor {
            mm: Mm::new(MmConfig::default()),
        }
    }
}

impl Executor for CpuExecutor {
    fn execute(&mut self, op: &Op) -> Result<Option<Outcome>, ExecError> {
        Ok(match *op {
            Op::Reset(cfg) => {
                self.mm = Mm::new(cfg);
                None
            }
            Op::Map { start, end, flags } => match self.mm.space_mut().insert(start, end, flags) {
                Ok(()) => None,
                Err(MapError::Overlap { .. }) => Some(Outcome::Err(Errno::EEXIST)),
                // Not reached: parsing guarantees `end > start`.
                Err(MapError::EmptyRange { .. }) => Some(Outcome::Err(Errno::EINVAL)),
                // The map already holds 2^32 - 2 VMAs: no room, as in mmap.
                Err(MapError::TooManyVmas) => Some(Outcome::Err(Errno::ENOMEM)),
            },
            Op::Unmap { start, length } => {
                // A range running past 2^64 ends there: no VMA ends above
                // u64::MAX. It can fail only when the map already holds
                // 2^32 - 2 VMAs; `unmap` has no result to report that in.
                let _ = self
                    .mm
                    .space_mut()
                    .unmap(start, start.saturating_add(length));
                None
            }
            Op::Find(ref info) => Some(match self.mm.find(info) {
                Ok(addr) => Outcome::Addr(addr),
                Err(_) => Outcome::Err(Errno::ENOMEM),
            }),
            Op::Mmap(ref req) => Some(match self.mm.mmap(req) {
                Ok(addr) => Outcome::Addr(addr),
                Err(e) => Outcome::Err(e),
            }),
            Op::Svm(ref svm) => return Err(ExecError::NeedsSvm(svm.kind())),
        })
    }

    fn has_device(&self, _name: &str) -> bool {
        false
    }
}

/// Runs the trace `input` through `exec`, writing result lines and the
/// summary line to `out` (which should be buffered). With `check`, compares
/// results with `expect` fields. Returns the summary counters, or why it
/// stopped early (then no summary line is written).
pub fn replay<R: BufRead, W: Write, E: Executor>(
    mut input: R,
    out: &mut W,
    exec: &mut E,
    check: bool,
) -> Result<Summary, Stop> {
    let mut sum = Summary::default();
    let mut buf = Vec::with_capacity(256);
    let mut line: u64 = 0;
    loop {
        buf.clear();
        if input.read_until(b'\n', &mut buf).map_err(Stop::Read)? == 0 {
            break;
        }
        line += 1;
        let stop = |msg: String| Stop::Line { line, msg };
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
                serde_json::to_string(name).unwrap_or_default()
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
            (Some(r), None) => {
                writeln!(out, "{{\"line\": {line}, \"op\": \"{name}\", {r}}}").map_err(Stop::Write)?
            }
            (Some(r), Some(e)) => writeln!(
                out,
                "{{\"line\": {line}, \"op\": \"{name}\", {r}, \"expected\": {{{e}}}}}"
            )
            .map_err(Stop::Write)?,
            (None, Some(e)) => eprintln!(
                "line {line}: mismatch: op \"{name}\" succeeded with no result, but expected {{{e}}}"
            ),
            (None, None) => {}
        }
        if result.is_some() {
            sum.results += 1;
        }
    }
    writeln!(
        out,
        "{{\"summary\": {{\"ops\": {}, \"results\": {}, \"checked\": {}, \"mismatches\": {}}}}}",
        sum.ops, sum.results, sum.checked, sum.mismatches
    )
    .map_err(Stop::Write)?;
    Ok(sum)
}

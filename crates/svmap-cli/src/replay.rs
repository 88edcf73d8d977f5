//! `svmap replay [--check] FILE|-`: runs a trace (`docs/trace-format.md`) and prints
//! one JSON line per result, then a summary. A thin wrapper over
//! [`svmap_trace::replay`], which streams the trace through an
//! [`svmap_trace::SvmExecutor`] (every operation, address-space and SVM).

use std::ffi::OsString;
use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, Write};

use svmap_trace::ReplayError;

use crate::args::{self, Arg, Stop};

/// Help text of `svmap replay`.
pub const HELP: &str = r##"svmap replay: run an address-space trace

Usage: svmap replay [--check] FILE|-

Reads the trace FILE (standard input for "-"): one JSON operation per line,
in the trace format of docs/trace-format.md. Runs it on a simulated x86-64 Linux address
space and its SVM devices (every op: reset, map, unmap, find, mmap, device,
device_map, svm_alloc, svm_free, protect, device_access) and prints, in
input order, one JSON line for every operation that has a result, then a
summary line:

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
     no summary is printed), or a usage or I/O error

Examples:
  svmap replay trace.jsonl
  svmap replay --check examples/address-space.jsonl
  svmap replay --check examples/svm.jsonl
  echo '{"op": "mmap", "length": "0x1000"}' | svmap replay -
"##;

/// The arguments after `replay`: `--check` and the trace FILE ("-" for
/// standard input).
fn parse(args: &[OsString]) -> Result<(bool, OsString), Stop> {
    let mut check = false;
    let mut file: Option<OsString> = None;
    let mut p = args::parser(args);
    while let Some(arg) = p.next()? {
        match arg {
            Arg::Long("check") => check = true,
            Arg::Short('h') | Arg::Long("help") => return Err(Stop::Help),
            Arg::Value(a) => {
                if let Some(first) = &file {
                    return Err(Stop::Usage(format!(
                        "one trace at a time: got {first:?} and {a:?}"
                    )));
                }
                file = Some(a);
            }
            other => return Err(args::unknown(other)),
        }
    }
    let file = file.ok_or_else(|| {
        Stop::Usage("missing the trace FILE (or \"-\" for standard input)".to_owned())
    })?;
    Ok((check, file))
}

/// Runs `svmap replay` with the arguments after `replay`; returns the exit
/// status.
pub fn run(args: &[OsString]) -> i32 {
    let (check, file) = match parse(args) {
        Ok(v) => v,
        Err(Stop::Help) => {
            print!("{HELP}");
            return 0;
        }
        Err(Stop::Usage(m)) => return usage_error(&m),
    };

    let (input, size): (Box<dyn BufRead>, Option<u64>) = if file == "-" {
        (Box::new(io::stdin().lock()), None)
    } else {
        match File::open(&file) {
            Ok(f) => {
                let size = f.metadata().ok().map(|m| m.len());
                (Box::new(BufReader::with_capacity(1 << 16, f)), size)
            }
            Err(e) => {
                eprintln!("svmap replay: cannot open {file:?}: {e}");
                return 2;
            }
        }
    };
    // A progress line for long traces, on a terminal only.
    let input: Box<dyn BufRead> = if crate::progress::enabled() {
        Box::new(crate::progress::ProgressReader::new(input, "replay", size))
    } else {
        input
    };
    let stdout = io::stdout();
    let mut out = BufWriter::with_capacity(1 << 16, stdout.lock());
    let stderr = io::stderr();
    let mut err = stderr.lock();
    let result = svmap_trace::replay(input, &mut out, &mut err, check);
    // Results printed before a bad line stay valid: flush them either way.
    let flushed = out.flush();
    match (result, flushed) {
        (Ok(summary), Ok(())) => summary.exit_status(check),
        (Err(e @ ReplayError::BadLine { .. }), _) => {
            let _ = writeln!(err, "{e}");
            e.exit_status()
        }
        (Err(ReplayError::Read(e)), _) => {
            let name = if file == "-" {
                "standard input".into()
            } else {
                file.to_string_lossy()
            };
            let _ = writeln!(err, "svmap replay: error reading {name}: {e}");
            svmap_trace::EXIT_BAD
        }
        (Err(ReplayError::Write(e)), _) | (Ok(_), Err(e)) => {
            // A closed pipe (`svmap replay t | head`) is the reader's choice.
            if e.kind() != io::ErrorKind::BrokenPipe {
                let _ = writeln!(err, "svmap replay: error writing the results: {e}");
            }
            svmap_trace::EXIT_BAD
        }
    }
}

fn usage_error(msg: &str) -> i32 {
    eprintln!(
        "svmap replay: {msg}\nUsage: svmap replay [--check] FILE|-  (see svmap replay --help)"
    );
    2
}

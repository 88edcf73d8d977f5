//! `svmap kernel-trace`: record the running kernel's mmap answers as a trace.

use std::ffi::OsString;
use std::fs::File;
use std::io::{self, Write};
use std::path::PathBuf;

use svmap_ktrace::kernel_trace::{self, Config, Layout};

use crate::args::{self, Arg, Stop};

const USAGE: &str = "\
usage: svmap kernel-trace --layout {8m,1g,unlimited,legacy} --seed N --ops N [-o FILE]

Runs a seeded random sequence of anonymous mmap/munmap calls in a fresh process without
address randomisation (personality ADDR_NO_RANDOMIZE, plus ADDR_COMPAT_LAYOUT for legacy)
and writes what the kernel answered as a trace (docs/trace-format.md) with `expect` fields, for
`svmap replay --check`. Linux x86-64 with 4-level paging only.

  --layout L   8m, 1g, unlimited: top-down with that RLIMIT_STACK;
               legacy: bottom-up (ADDR_COMPAT_LAYOUT), 8 MiB stack
  --seed N     seed of the operation sequence
  --ops N      number of mmap operations to record
  -o FILE      write the trace to FILE (default: standard output)
  -h, --help   show this text

A summary (counts of addresses, ENOMEM, EINVAL, EEXIST per request kind) goes to stderr.

Examples:
  svmap kernel-trace --layout 8m --seed 1 --ops 3000 -o kernel-8m-seed1.jsonl
  svmap kernel-trace --layout legacy --seed 7 --ops 10000 | svmap replay --check -

Exit status: 0 recorded; 1 the kernel refused the set-up (personality, rlimit) or a
system call failed; 2 a usage error.
";

/// Parsed command line.
struct Options {
    config: Config,
    output: Option<PathBuf>,
}

/// `Ok(None)` means help was asked for.
fn parse(args: &[OsString]) -> Result<Option<Options>, String> {
    match parse_options(args) {
        Ok(o) => Ok(Some(o)),
        Err(Stop::Help) => Ok(None),
        Err(Stop::Usage(m)) => Err(m),
    }
}

fn parse_options(args: &[OsString]) -> Result<Options, Stop> {
    let (mut layout, mut seed, mut ops, mut output) = (None, None, None, None);
    let mut p = args::parser(args);
    while let Some(arg) = p.next()? {
        match arg {
            Arg::Short('h') | Arg::Long("help") => return Err(Stop::Help),
            Arg::Long("layout") => {
                let v = args::text("--layout", args::value(&mut p, "--layout", "a value")?)?;
                layout = Some(Layout::from_name(&v).ok_or_else(|| {
                    format!("unknown layout {v:?} (expected 8m, 1g, unlimited or legacy)")
                })?);
            }
            Arg::Long("seed") => {
                let v = args::text("--seed", args::value(&mut p, "--seed", "a value")?)?;
                seed = Some(parse_number("--seed", &v)?);
            }
            Arg::Long("ops") => {
                let v = args::text("--ops", args::value(&mut p, "--ops", "a value")?)?;
                ops = Some(parse_number("--ops", &v)?);
            }
            Arg::Short('o') | Arg::Long("output") => {
                output = Some(PathBuf::from(args::value(&mut p, "-o", "a value")?));
            }
            other => return Err(args::unknown(other)),
        }
    }
    Ok(Options {
        config: Config {
            layout: layout.ok_or("--layout is required".to_owned())?,
            seed: seed.ok_or("--seed is required".to_owned())?,
            ops: ops.ok_or("--ops is required".to_owned())?,
        },
        output,
    })
}

fn parse_number(name: &str, text: &str) -> Result<u64, String> {
    let parsed = match text.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => text.parse(),
    };
    parsed.map_err(|_| format!("{name}: {text:?} is not a number"))
}

/// Runs `svmap kernel-trace`; `args` are the arguments after `kernel-trace`. Returns the exit
/// status: 0 on success, 1 when recording failed, 2 for a bad command line.
///
/// The command re-executes itself (`/proc/self/exe kernel-trace ARGS`) in a process with the
/// layout asked for, and that process records.
pub fn run(args: &[OsString]) -> i32 {
    let options = match parse(args) {
        Ok(Some(options)) => options,
        Ok(None) => {
            print!("{USAGE}");
            return 0;
        }
        Err(message) => {
            eprintln!("svmap kernel-trace: {message}\n\n{USAGE}");
            return 2;
        }
    };
    if kernel_trace::is_recorder_child() {
        return record(&options);
    }
    let child_args: Vec<OsString> = std::iter::once(OsString::from("kernel-trace"))
        .chain(args.iter().cloned())
        .collect();
    match kernel_trace::spawn_recorder(options.config.layout, &child_args) {
        Ok(status) => status.code().unwrap_or_else(|| {
            eprintln!("svmap kernel-trace: the recorder process died: {status}");
            1
        }),
        Err(e) => {
            eprintln!("svmap kernel-trace: {e}");
            1
        }
    }
}

/// The re-executed process: record to the output.
fn record(options: &Options) -> i32 {
    let out: Box<dyn Write> = match &options.output {
        Some(path) => match File::create(path) {
            Ok(file) => Box::new(file),
            Err(e) => {
                eprintln!("svmap kernel-trace: cannot create {}: {e}", path.display());
                return 1;
            }
        },
        None => Box::new(io::stdout()),
    };
    match kernel_trace::record(&options.config, out) {
        Ok(stats) => {
            eprint!("{stats}");
            0
        }
        Err(e) => {
            eprintln!("svmap kernel-trace: {e}");
            1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(args: &[&str]) -> Vec<OsString> {
        args.iter().map(OsString::from).collect()
    }

    #[test]
    fn parses_all_options() {
        let o = parse(&strings(&[
            "--layout", "legacy", "--seed", "0x10", "--ops", "5", "-o", "f",
        ]))
        .unwrap()
        .unwrap();
        assert_eq!(o.config.layout, Layout::Legacy);
        assert_eq!((o.config.seed, o.config.ops), (16, 5));
        assert_eq!(o.output, Some(PathBuf::from("f")));
    }

    #[test]
    fn rejects_bad_command_lines() {
        assert!(parse(&strings(&["--layout", "2m", "--seed", "1", "--ops", "1"])).is_err());
        assert!(parse(&strings(&["--layout", "8m", "--seed", "1"])).is_err());
        assert!(parse(&strings(&["--layout", "8m", "--seed", "x", "--ops", "1"])).is_err());
        assert!(parse(&strings(&["--layout"])).is_err());
        assert!(parse(&strings(&["--help"])).unwrap().is_none());
    }
}

//! The svmap command-line tool.
//!
//! `main` collects the arguments and dispatches on the subcommand; each
//! subcommand module has `run(&[OsString]) -> i32` taking the arguments
//! after its name and returning the exit status. Arguments stay
//! [`OsString`] until a subcommand needs text ([`args`]).

mod args;
mod bench_cmd;
mod demo_cmd;
mod inspect_cmd;
mod kernel_trace_cmd;
mod migrate_cmd;
mod peer_cmd;
mod progress;
mod replay;
mod run_cmd;

use std::ffi::OsString;
use std::process::ExitCode;

use args::Arg;

/// The subcommands and their one-line summaries, for the usage text.
const COMMANDS: &[(&str, &str)] = &[
    (
        "demo",
        "the whole SVM story with a device peer process, in seconds (no GPU)",
    ),
    (
        "migrate-demo",
        "a range prefetched to a device process comes back on real CPU faults",
    ),
    (
        "replay",
        "run an address-space trace (docs/trace-format.md) and print its results",
    ),
    (
        "run",
        "run a program with its later mappings fenced below 2^N",
    ),
    (
        "inspect",
        "show a process's address space as a device with N bits sees it",
    ),
    (
        "kernel-trace",
        "record the running kernel's mmap answers as a trace",
    ),
    (
        "bench",
        "measure svmap's own map on the churn workload (--json)",
    ),
    (
        "device-peer",
        "serve as the device peer process (started by svmap itself)",
    ),
];

fn usage() -> String {
    let mut s = String::from(
        "svmap: address space for shared virtual memory (CPU and devices at the same addresses)\n\n\
         Usage: svmap COMMAND [ARGS...]\n\nCommands:\n",
    );
    for (name, summary) in COMMANDS {
        s.push_str(&format!("  {name:<14}{summary}\n"));
    }
    s.push_str(
        "\nOptions:\n  -h, --help     print this help (svmap COMMAND --help: help on COMMAND)\n  \
         -V, --version  print the version\n\n\
         Examples:\n  svmap demo\n  svmap replay --check trace.jsonl\n  \
         svmap run --va-bits 40 -- python3 app.py\n  \
         svmap inspect self --va-bits 40 --json\n  svmap replay --help\n\n\
         Exit status: 0 success; 1 a check failed (replay) or a process could not be read\n\
         (inspect); 2 a usage error or bad input; svmap run exits with the program's own\n\
         status (see svmap run --help).\n",
    );
    s
}

fn main() -> ExitCode {
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    let code = run(&args);
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}

/// Dispatches on the subcommand; `args` are the arguments after the
/// program name.
fn run(args: &[OsString]) -> i32 {
    let mut p = args::parser(args);
    let first = match p.next() {
        Ok(Some(a)) => a,
        Ok(None) => {
            eprint!("{}", usage());
            return 2;
        }
        Err(e) => return usage_error(&args::message(e)),
    };
    // Everything after the subcommand (or after --help), untouched.
    let cmd = match first {
        Arg::Value(cmd) => Some(cmd),
        Arg::Short('h') | Arg::Long("help") => None,
        Arg::Short('V') | Arg::Long("version") => {
            if let Err(e) = p.raw_args() {
                return usage_error(&args::message(e));
            }
            println!("svmap {}", env!("CARGO_PKG_VERSION"));
            return 0;
        }
        other => return usage_error(&args::message(other.unexpected())),
    };
    let rest: Vec<OsString> = match p.raw_args() {
        Ok(r) => r.collect(),
        Err(e) => return usage_error(&args::message(e)),
    };
    match cmd.as_ref().map(|c| c.to_str()) {
        Some(Some("demo")) => demo_cmd::run(&rest),
        Some(Some("replay")) => replay::run(&rest),
        Some(Some("kernel-trace")) => kernel_trace_cmd::run(&rest),
        Some(Some("run")) => run_cmd::run(&rest),
        Some(Some("inspect")) => inspect_cmd::run(&rest),
        Some(Some("device-peer")) => peer_cmd::run(&rest),
        Some(Some("bench")) => bench_cmd::run(&rest),
        Some(Some("migrate-demo")) => migrate_cmd::run(&rest),
        // `svmap help [COMMAND]`, `svmap --help [COMMAND]`.
        None | Some(Some("help")) => match rest.first().and_then(|c| c.to_str()) {
            Some(c) if COMMANDS.iter().any(|(n, _)| *n == c) => {
                run(&[OsString::from(c), OsString::from("--help")])
            }
            _ => {
                print!("{}", usage());
                0
            }
        },
        Some(_) => {
            let other = cmd.unwrap_or_default();
            eprint!("svmap: unknown command {other:?}\n\n{}", usage());
            2
        }
    }
}

/// A usage error before the subcommand: the message and the usage text on
/// standard error, exit status 2.
fn usage_error(msg: &str) -> i32 {
    eprint!("svmap: {msg}\n\n{}", usage());
    2
}

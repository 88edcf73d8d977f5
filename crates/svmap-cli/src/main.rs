//! The svmap command-line tool.
//!
//! `main` collects the arguments and dispatches on the subcommand; each
//! subcommand module has `run(&[String]) -> i32` taking the arguments after
//! its name and returning the exit status.

mod args;
mod bench_cmd;
mod demo_cmd;
mod inspect_cmd;
mod kernel_trace_cmd;
mod peer_cmd;
mod progress;
mod replay;
mod run_cmd;

use std::process::ExitCode;

/// Counts live heap bytes for `svmap bench` (an atomic add per allocation;
/// otherwise the system allocator).
#[global_allocator]
static ALLOC: svmap_bench::count_alloc::Counting = svmap_bench::count_alloc::Counting;

/// The subcommands and their one-line summaries, for the usage text.
const COMMANDS: &[(&str, &str)] = &[
    (
        "demo",
        "the whole SVM story with a device peer process, in seconds (no GPU)",
    ),
    (
        "replay",
        "run an address-space trace (TRACE.md) and print its results",
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
    let mut args = Vec::new();
    for (i, a) in std::env::args_os().enumerate() {
        match a.into_string() {
            Ok(s) => args.push(s),
            Err(a) => {
                eprintln!("svmap: argument {i} is not valid UTF-8: {a:?}");
                return ExitCode::from(2);
            }
        }
    }
    let code = run(&args);
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}

/// Dispatches on the subcommand; `args[0]` is the program name.
fn run(args: &[String]) -> i32 {
    let rest = args.get(2..).unwrap_or(&[]);
    match args.get(1).map(String::as_str) {
        Some("demo") => demo_cmd::run(rest),
        Some("replay") => replay::run(rest),
        Some("kernel-trace") => kernel_trace_cmd::run(rest),
        Some("run") => run_cmd::run(rest),
        Some("inspect") => inspect_cmd::run(rest),
        Some("device-peer") => peer_cmd::run(rest),
        Some("bench") => bench_cmd::run(rest),
        Some("-h" | "--help" | "help") => match rest.first().map(String::as_str) {
            Some(cmd) if COMMANDS.iter().any(|(n, _)| *n == cmd) => {
                run(&[args[0].clone(), cmd.to_owned(), "--help".to_owned()])
            }
            _ => {
                print!("{}", usage());
                0
            }
        },
        Some("-V" | "--version") => {
            println!("svmap {}", env!("CARGO_PKG_VERSION"));
            0
        }
        None => {
            eprint!("{}", usage());
            2
        }
        Some(other) => {
            eprint!("svmap: unknown command {other:?}\n\n{}", usage());
            2
        }
    }
}

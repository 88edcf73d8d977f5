//! `svmap inspect [PID|self] --va-bits N [--json]`: a process's address
//! space as a device with N address bits sees it ([`svmap_linux::inspect`]
//! builds the report; [`svmap_cli::render`] and [`svmap_cli::demo`] show it).

use std::ffi::OsString;
use std::path::PathBuf;

use svmap_cli::{demo, render};
use svmap_linux::inspect;
use svmap_linux::maps::Target;

use crate::args::{self, Arg, Stop};

/// Help text of `svmap inspect`.
pub const HELP: &str = r##"svmap inspect: a process's address space as a device sees it

Usage: svmap inspect [PID|self] --va-bits N [--json] [--svg FILE]

Reads /proc/PID/maps (and smaps, for grows-down stacks) and reports every
VMA with its visibility to a device with N address bits (visible: below
2^N; partial: crosses it; invisible: above), the largest free windows
below 2^N (outside stack guard gaps), how fragmented the free space is, and
how much is mapped above the limit. Without PID (or with "self") it
inspects the svmap process itself.

Options:
  --va-bits N   the device's address bits, 12..=64 (required)
  --json        one JSON object instead of text: pid, va_bits, limit, floor,
                free_bytes, free_holes, mapped_above_bytes (reservations not
                counted), reserved_above_bytes (PROT_NONE reservations
                such as the fence's: no memory), fragmentation,
                largest_free [{start, end, bytes}], vmas and beyond_user
                [{start, end, perms, growsdown, visibility, name, reserved}];
                addresses are "0x..." strings
  --svg FILE    also write a picture of the address space (SVG): the
                device window, every VMA, what lies above the limit
                (unreachable), the largest free windows
  -h, --help    print this help

Exit status:
  0  the report was printed
  1  the process could not be read (gone, or another user's without
     permission), or the picture could not be written
  2  a usage error

Examples:
  svmap inspect self --va-bits 40
  svmap inspect 1234 --va-bits 44 --json
  svmap inspect self --va-bits 40 --svg space.svg
  svmap inspect $(pidof my-gpu-app) --va-bits 47
"##;

/// What `svmap inspect` was asked for.
struct Options {
    target: Target,
    va_bits: u32,
    json: bool,
    svg: Option<PathBuf>,
}

/// The arguments after `inspect`.
fn parse(args: &[OsString]) -> Result<Options, Stop> {
    let mut target: Option<Target> = None;
    let mut va_bits: Option<u32> = None;
    let mut json = false;
    let mut svg: Option<PathBuf> = None;
    let mut p = args::parser(args);
    while let Some(arg) = p.next()? {
        match arg {
            Arg::Short('h') | Arg::Long("help") => return Err(Stop::Help),
            Arg::Long("json") => json = true,
            Arg::Long("svg") => svg = Some(args::value(&mut p, "--svg", "a file name")?.into()),
            Arg::Long("va-bits") => {
                let v = args::value(&mut p, "--va-bits", "a number of bits")?;
                va_bits = Some(args::number_in(
                    "--va-bits",
                    v,
                    12..=64,
                    "a number of address bits",
                )?);
            }
            Arg::Value(a) => {
                if target.is_some() {
                    return Err(Stop::Usage(format!(
                        "one process at a time (extra argument {a:?})"
                    )));
                }
                let not_a_pid = || {
                    Stop::Usage(format!(
                        "{a:?} is not a process id (a positive number) or \"self\""
                    ))
                };
                target = Some(match a.to_str().ok_or_else(not_a_pid)? {
                    "self" => Target::SelfProcess,
                    p => match p.parse::<u32>() {
                        Ok(pid) if pid > 0 => Target::Pid(pid),
                        _ => return Err(not_a_pid()),
                    },
                });
            }
            other => return Err(args::unknown(other)),
        }
    }
    let va_bits = va_bits.ok_or_else(|| Stop::Usage("missing --va-bits N".to_owned()))?;
    Ok(Options {
        target: target.unwrap_or(Target::SelfProcess),
        va_bits,
        json,
        svg,
    })
}

/// Runs `svmap inspect` with the arguments after `inspect`; returns the exit
/// status.
pub fn run(args: &[OsString]) -> i32 {
    let Options {
        target,
        va_bits,
        json,
        svg,
    } = match parse(args) {
        Ok(o) => o,
        Err(Stop::Help) => {
            print!("{HELP}");
            return 0;
        }
        Err(Stop::Usage(m)) => return usage_error(&m),
    };
    match inspect::report(target, va_bits) {
        Ok(r) => {
            if json {
                println!("{}", render::inspect_json(&r));
            } else {
                print!("{}", render::inspect_text(&r));
            }
            if let Some(path) = svg {
                if let Err(e) = std::fs::write(&path, demo::inspect_svg(&r)) {
                    eprintln!(
                        "svmap inspect: cannot write the picture to {}: {e}",
                        path.display()
                    );
                    return 1;
                }
            }
            0
        }
        Err(e) => {
            eprintln!("svmap inspect: {e}");
            1
        }
    }
}

fn usage_error(msg: &str) -> i32 {
    eprintln!("svmap inspect: {msg}\nUsage: svmap inspect [PID|self] --va-bits N [--json] [--svg FILE]  (see svmap inspect --help)");
    2
}

//! `svmap inspect [PID|self] --va-bits N [--json]`: a process's address
//! space as a device with N address bits sees it ([`svmap_linux::inspect`]).

use svmap_linux::inspect;
use svmap_linux::maps::Target;

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
                free_bytes, free_holes, mapped_above_bytes, fragmentation,
                largest_free [{start, end, bytes}], vmas and beyond_user
                [{start, end, perms, growsdown, visibility, name}];
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

/// Runs `svmap inspect` with the arguments after `inspect`; returns the exit
/// status.
pub fn run(args: &[String]) -> i32 {
    let mut target: Option<Target> = None;
    let mut va_bits: Option<u32> = None;
    let mut json = false;
    let mut svg: Option<String> = None;
    let mut i = 0;
    while i < args.len() {
        let a = args[i].as_str();
        let (name, inline) = crate::args::split_option(a);
        match name {
            "-h" | "--help" => {
                print!("{HELP}");
                return 0;
            }
            "--json" if inline.is_none() => json = true,
            "--svg" => match crate::args::option_value(args, &mut i, inline) {
                Some(v) => svg = Some(v),
                None => return usage_error("--svg needs a file name"),
            },
            "--va-bits" => {
                let Some(v) = crate::args::option_value(args, &mut i, inline) else {
                    return usage_error("--va-bits needs a number of bits");
                };
                match v.parse::<u32>() {
                    Ok(n) if (12..=64).contains(&n) => va_bits = Some(n),
                    _ => {
                        return usage_error(&format!(
                            "--va-bits {v:?}: expected a number of address bits in 12..=64"
                        ))
                    }
                }
            }
            _ if a.starts_with('-') => return usage_error(&format!("unknown option {a:?}")),
            _ => {
                if target.is_some() {
                    return usage_error(&format!("one process at a time (extra argument {a:?})"));
                }
                target = Some(match a {
                    "self" => Target::SelfProcess,
                    p => match p.parse::<u32>() {
                        Ok(pid) if pid > 0 => Target::Pid(pid),
                        _ => {
                            return usage_error(&format!(
                                "{p:?} is not a process id (a positive number) or \"self\""
                            ))
                        }
                    },
                });
            }
        }
        i += 1;
    }
    let Some(va_bits) = va_bits else {
        return usage_error("missing --va-bits N");
    };
    match inspect::report(target.unwrap_or(Target::SelfProcess), va_bits) {
        Ok(r) => {
            if json {
                println!("{}", r.to_json());
            } else {
                print!("{r}");
            }
            if let Some(path) = svg {
                if let Err(e) = std::fs::write(&path, svmap_linux::demo::inspect_svg(&r)) {
                    eprintln!("svmap inspect: cannot write the picture to {path}: {e}");
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

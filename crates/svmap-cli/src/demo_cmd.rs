//! `svmap demo [--va-bits N] [--second-va-bits M] [--buffers N] [--svg PATH]
//! [--json]`: the SVM runtime on this machine ([`svmap_cli::demo`]).

use std::ffi::OsString;
use std::path::PathBuf;

use svmap_cli::demo::{self, DemoOptions};

use crate::args::{self, Arg, Stop};

/// Help text of `svmap demo`.
pub const HELP: &str = r##"svmap demo: the CPU and two devices at identical addresses, in well under a second

Usage: svmap demo [--va-bits N] [--second-va-bits M] [--buffers N] [--svg PATH] [--json]

Runs on any Linux machine, no GPU needed: the SVM runtime (the engine on
this process's memory) with two device processes (svmap device-peer, found
next to this executable), each hosting a device MMU model. It
  (a) inspects its own address space against the first device's limit 2^N,
  (b) seeds the engine with this process's mappings and starts the device
      processes (N and M address bits),
  (c) allocates SVM buffers for both devices: the CPU writes them and both
      device processes read the same bytes at the identical addresses,
  (d) builds a 100000-node pointer-linked list on the CPU that both devices
      walk through their MMUs (count and checksum compared),
  (e) sets up one device-only region per CPU policy: a forked child that
      touches the fault region dies with SIGSEGV; the CPU reads zeros from
      the dummy-page region while its device keeps its own data there,
  (f) frees a buffer: both devices invalidate it first, and their next
      access faults,
  (g) shows that memory allocated before the devices were set up (above
      2^N in the top-down layout) is refused with a clear error, and
  (h) writes an SVG picture of the three address spaces.

Options:
  --va-bits N          the first device's address bits, 30..=56 (default 40)
  --second-va-bits M   the second device's address bits, 30..=56 (default 44)
  --buffers N          SVM buffers to spread the list over, 2..=256 (default 8)
  --svg PATH           where to write the picture (default ./svmap-demo.svg)
  --json               one JSON object instead of the text account
  -h, --help           print this help

Exit status:
  0  every step had the expected outcome
  1  a step failed (the message names the step and the cause, e.g. the
     address-space limit of ulimit -v) or had an unexpected outcome
  2  a usage error

Examples:
  svmap demo
  svmap demo --va-bits 44 --second-va-bits 47 --buffers 16 --svg /tmp/spaces.svg
  svmap demo --json
"##;

fn usage_error(msg: &str) -> i32 {
    eprintln!("svmap demo: {msg}\n\nUsage: svmap demo [--va-bits N] [--second-va-bits M] [--buffers N] [--svg PATH] [--json]\nTry 'svmap demo --help'.");
    2
}

/// Parses the arguments after `demo`: the options, or the exit status to
/// return at once (help or a usage error).
pub fn parse(args: &[OsString]) -> Result<DemoOptions, i32> {
    match parse_options(args) {
        Ok(o) => Ok(o),
        Err(Stop::Help) => {
            print!("{HELP}");
            Err(0)
        }
        Err(Stop::Usage(m)) => Err(usage_error(&m)),
    }
}

fn parse_options(args: &[OsString]) -> Result<DemoOptions, Stop> {
    let mut o = DemoOptions::default();
    let mut p = args::parser(args);
    while let Some(arg) = p.next()? {
        match arg {
            Arg::Short('h') | Arg::Long("help") => return Err(Stop::Help),
            Arg::Long("json") => o.json = true,
            Arg::Long("va-bits") => {
                let v = args::value(&mut p, "--va-bits", "a number of bits")?;
                o.va_bits = args::number_in("--va-bits", v, 30..=56, "a number of address bits")?;
            }
            Arg::Long("second-va-bits") => {
                let v = args::value(&mut p, "--second-va-bits", "a number of bits")?;
                o.second_va_bits =
                    args::number_in("--second-va-bits", v, 30..=56, "a number of address bits")?;
            }
            Arg::Long("buffers") => {
                let v = args::value(&mut p, "--buffers", "a count")?;
                o.buffers = args::number_in("--buffers", v, 2..=256, "a count")?;
            }
            Arg::Long("svg") => {
                let v = args::value(&mut p, "--svg", "a path")?;
                if v.is_empty() {
                    return Err(Stop::Usage("--svg needs a non-empty path".to_owned()));
                }
                o.svg = Some(PathBuf::from(v));
            }
            other => return Err(args::unknown(other)),
        }
    }
    Ok(o)
}

/// Writes `text` and a newline to stdout; a failure (a reader that went
/// away: `EPIPE`) is reported on stderr, not a panic. Whether it worked.
fn print(text: &str) -> bool {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match writeln!(out, "{text}").and_then(|()| out.flush()) {
        Ok(()) => true,
        Err(e) => {
            eprintln!("svmap demo: writing the report: {e}");
            false
        }
    }
}

/// Runs `svmap demo` with the arguments after `demo`; returns the exit
/// status.
pub fn run(args: &[OsString]) -> i32 {
    let opts = match parse(args) {
        Ok(o) => o,
        Err(code) => return code,
    };
    match demo::run(&opts) {
        Ok(r) => {
            let text = if opts.json {
                r.to_json().to_string()
            } else {
                r.to_string()
            };
            if !print(&text) {
                return 1;
            }
            if r.ok() {
                0
            } else {
                1
            }
        }
        Err(e) => {
            if opts.json {
                let j = serde_json::json!({
                    "ok": false,
                    "failed_step": e.step,
                    "error": e.to_string()
                });
                print(&j.to_string());
            }
            eprintln!("svmap demo: {e}");
            1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<OsString> {
        a.iter().map(OsString::from).collect()
    }

    #[test]
    fn parses_options() {
        assert_eq!(parse(&[]).unwrap(), DemoOptions::default());
        let o = parse(&args(&[
            "--va-bits",
            "44",
            "--second-va-bits=47",
            "--buffers=16",
            "--svg",
            "x.svg",
            "--json",
        ]))
        .unwrap();
        assert_eq!(
            o,
            DemoOptions {
                va_bits: 44,
                second_va_bits: 47,
                buffers: 16,
                svg: Some(PathBuf::from("x.svg")),
                json: true
            }
        );
        for bad in [
            &["--va-bits"][..],
            &["--va-bits", "12"],
            &["--second-va-bits", "57"],
            &["--buffers", "1"],
            &["--svg", ""],
            &["--frobnicate"],
            &["--json=1"],
        ] {
            assert_eq!(parse(&args(bad)), Err(2), "{bad:?}");
        }
        assert_eq!(parse(&args(&["--help"])), Err(0));
    }
}

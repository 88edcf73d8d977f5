//! `svmap demo [--va-bits N] [--buffers N] [--svg PATH] [--json]`: the whole
//! SVM story on this machine ([`svmap_cli::demo`]).

use std::ffi::OsString;
use std::path::PathBuf;

use svmap_cli::demo::{self, DemoOptions};

use crate::args::{self, Arg, Stop};

/// Help text of `svmap demo`.
pub const HELP: &str = r##"svmap demo: CPU and a device at identical addresses, in a few seconds

Usage: svmap demo [--va-bits N] [--buffers N] [--svg PATH] [--json]

Runs on any Linux machine, no GPU needed. It
  (a) inspects its own address space against a device with N address bits,
  (b) starts a device peer process (svmap device-peer, found next to this
      executable) and reserves a window free in both processes below 2^N,
  (c) allocates SVM buffers at identical addresses in both,
  (d) builds a 100000-node pointer-linked list on the CPU side that the
      device walks through its MMU (count and checksum compared),
  (e) frees a buffer and shows that the device's next access faults,
  (f) shows that memory allocated before the device was set up (above 2^N
      in the top-down layout) is refused with a clear error, and
  (g) writes an SVG picture of both address spaces.

Options:
  --va-bits N   the device's address bits, 30..=56 (default 40; the demo
                reserves a 256 MiB window below 2^N)
  --buffers N   SVM buffers to spread the list over, 2..=256 (default 8)
  --svg PATH    where to write the picture (default ./svmap-demo.svg)
  --json        one JSON object instead of the text account
  -h, --help    print this help

Exit status:
  0  every step had the expected outcome
  1  a step failed (the message names the step and the cause, e.g. the
     address-space limit of ulimit -v) or had an unexpected outcome
  2  a usage error

Examples:
  svmap demo
  svmap demo --va-bits 44 --buffers 16 --svg /tmp/spaces.svg
  svmap demo --json
"##;

fn usage_error(msg: &str) -> i32 {
    eprintln!("svmap demo: {msg}\n\nUsage: svmap demo [--va-bits N] [--buffers N] [--svg PATH] [--json]\nTry 'svmap demo --help'.");
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

/// Runs `svmap demo` with the arguments after `demo`; returns the exit
/// status.
pub fn run(args: &[OsString]) -> i32 {
    let opts = match parse(args) {
        Ok(o) => o,
        Err(code) => return code,
    };
    match demo::run(&opts) {
        Ok(r) => {
            if opts.json {
                println!("{}", r.to_json());
            } else {
                println!("{r}");
            }
            if r.ok() {
                0
            } else {
                1
            }
        }
        Err(e) => {
            if opts.json {
                println!(
                    "{}",
                    serde_json::json!({
                        "ok": false,
                        "failed_step": e.step,
                        "error": e.to_string()
                    })
                );
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
                buffers: 16,
                svg: Some(PathBuf::from("x.svg")),
                json: true
            }
        );
        for bad in [
            &["--va-bits"][..],
            &["--va-bits", "12"],
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

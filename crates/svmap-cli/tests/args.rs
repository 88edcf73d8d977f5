//! The command line of every subcommand, through the built binary: help
//! texts, usage errors (exit 2, a message naming the argument), and
//! arguments that are not UTF-8.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::process::{Command, Output};

fn svmap<I, S>(args: I) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    Command::new(env!("CARGO_BIN_EXE_svmap"))
        .args(args)
        .env_remove("SVMAP_PEER_FD")
        .output()
        .expect("run svmap")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Bytes that are not UTF-8: a lone continuation byte, 0xff, an
/// unfinished sequence, a space and a quote.
const NOT_UTF8: &[u8] = b"a\x80b\xff\xfe c\xe2\x82 'q\"";

#[test]
fn run_passes_arguments_that_are_not_utf8_unchanged() {
    let arg = OsStr::from_bytes(NOT_UTF8);
    // After `--`, and without it.
    for dash in [true, false] {
        let mut args: Vec<&OsStr> = ["run", "--va-bits", "40"].map(OsStr::new).to_vec();
        if dash {
            args.push(OsStr::new("--"));
        }
        args.extend(["/bin/sh", "-c", "printf %s \"$1\"", "x"].map(OsStr::new));
        args.push(arg);
        let o = svmap(&args);
        assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
        assert_eq!(o.stdout, NOT_UTF8, "the bytes the program got");
    }
    // A command name that is not UTF-8 reaches exec as it is: not found.
    let o = svmap([
        OsStr::new("run"),
        OsStr::new("--va-bits=40"),
        OsStr::from_bytes(b"/nonexistent/\xff"),
    ]);
    assert_eq!(o.status.code(), Some(127), "{}", text(&o.stderr));
}

#[test]
fn file_names_that_are_not_utf8_work() {
    let dir = std::env::temp_dir().join(format!("svmap-args-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut name = dir.clone().into_os_string();
    name.push("/trace-");
    name.push(OsStr::from_bytes(b"\xff\xfe.jsonl"));
    std::fs::write(&name, "{\"op\": \"mmap\", \"length\": \"0x1000\"}\n").unwrap();
    let o = svmap([OsStr::new("replay"), &name]);
    let mut report = dir.into_os_string();
    report.push("/report-");
    report.push(OsStr::from_bytes(b"\x80.log"));
    let r = svmap([
        OsStr::new("run"),
        OsStr::new("--va-bits"),
        OsStr::new("40"),
        OsStr::new("--report"),
        &report,
        OsStr::new("true"),
    ]);
    let log = std::fs::read_to_string(&report);
    std::fs::remove_dir_all(std::path::Path::new(&name).parent().unwrap()).unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert!(
        text(&o.stdout).contains("\"summary\""),
        "{}",
        text(&o.stdout)
    );
    assert_eq!(r.status.code(), Some(0), "{}", text(&r.stderr));
    assert!(log.expect("the report").contains("svmap-fence["));
}

#[test]
fn values_that_must_be_text_refuse_other_bytes() {
    let bad = OsString::from_vec(b"4\xff".to_vec());
    for (cmd, opt) in [
        (&["run"][..], "--va-bits"),
        (&["inspect", "self"][..], "--va-bits"),
        (&["demo"][..], "--va-bits"),
        (
            &["kernel-trace", "--seed", "1", "--ops", "1"][..],
            "--layout",
        ),
        (&["bench", "churn"][..], "--live"),
    ] {
        let mut args: Vec<OsString> = cmd.iter().map(OsString::from).collect();
        args.push(opt.into());
        args.push(bad.clone());
        let o = svmap(&args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", text(&o.stderr));
        assert!(
            text(&o.stderr).contains(opt),
            "{args:?}: {}",
            text(&o.stderr)
        );
        assert!(o.stdout.is_empty(), "{args:?}");
    }
    // A process id.
    let o = svmap([
        OsStr::new("inspect"),
        OsStr::from_bytes(b"1\xff"),
        OsStr::new("--va-bits=40"),
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        text(&o.stderr).contains("process id"),
        "{}",
        text(&o.stderr)
    );
    // An unknown command.
    let o = svmap([OsStr::from_bytes(b"re\xffplay")]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o.stderr).contains("unknown command"));
}

/// Every subcommand: an unknown option, a flag given a value and an
/// option missing its value are usage errors (exit 2) whose message names
/// the argument, with nothing on standard output.
#[test]
fn usage_errors_exit_2_and_name_the_argument() {
    let cases: &[(&[&str], &str)] = &[
        (
            &["replay", "--frobnicate", "t.jsonl"],
            "unknown option \"--frobnicate\"",
        ),
        (
            &["replay", "--check=yes", "t.jsonl"],
            "--check takes no value",
        ),
        (&["replay", "-x", "t.jsonl"], "unknown option \"-x\""),
        (
            &["run", "--frobnicate", "--va-bits", "40", "true"],
            "unknown option",
        ),
        (
            &["run", "--verbose=1", "--va-bits", "40", "true"],
            "--verbose takes no value",
        ),
        (
            &["run", "--va-bits", "40", "--report"],
            "--report needs a FILE",
        ),
        (&["run", "--va-bits=99", "true"], "20..=56"),
        (
            &["inspect", "--va-bits", "40", "--bogus"],
            "unknown option \"--bogus\"",
        ),
        (
            &["inspect", "--va-bits", "40", "--json=1"],
            "--json takes no value",
        ),
        (
            &["inspect", "--va-bits", "40", "--svg"],
            "--svg needs a file name",
        ),
        (&["demo", "--frobnicate"], "unknown option \"--frobnicate\""),
        (&["demo", "extra"], "unexpected argument \"extra\""),
        (&["demo", "--buffers", "1"], "2..=256"),
        (&["demo", "--svg="], "non-empty"),
        (
            &["bench", "churn", "--live", "10", "--frobnicate"],
            "unknown option",
        ),
        (
            &["bench", "churn", "--live"],
            "--live needs a positive count",
        ),
        (
            &["bench", "churn", "--live", "10", "--json=1"],
            "--json takes no value",
        ),
        (&["bench", "nope"], "unknown benchmark"),
        (
            &["kernel-trace", "--frobnicate"],
            "unknown option \"--frobnicate\"",
        ),
        (
            &["kernel-trace", "--layout", "8m", "--seed", "1", "--ops"],
            "--ops needs a value",
        ),
        (
            &[
                "kernel-trace",
                "--layout",
                "2m",
                "--seed",
                "1",
                "--ops",
                "1",
            ],
            "unknown layout",
        ),
        (
            &["device-peer", "--frobnicate"],
            "unknown option \"--frobnicate\"",
        ),
        (&["device-peer", "extra"], "unexpected argument"),
        (&["--frobnicate"], "unknown option"),
        (&["--help=x"], "--help takes no value"),
    ];
    for (args, fragment) in cases {
        let o = svmap(*args);
        let err = text(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
        assert!(
            err.contains(fragment),
            "{args:?}: {err:?} lacks {fragment:?}"
        );
        assert!(o.stdout.is_empty(), "{args:?}: {}", text(&o.stdout));
    }
}

/// `COMMAND --help`, `COMMAND -h` and `help COMMAND` print the same help,
/// with its usage line, examples and exit statuses, and exit 0.
#[test]
fn every_subcommand_prints_its_help() {
    for (cmd, usage) in [
        ("replay", "Usage: svmap replay"),
        ("run", "Usage: svmap run"),
        ("inspect", "Usage: svmap inspect"),
        ("demo", "Usage: svmap demo"),
        ("bench", "Usage: svmap bench churn"),
        ("kernel-trace", "usage: svmap kernel-trace"),
        ("device-peer", "Usage: svmap device-peer"),
    ] {
        let mut texts = Vec::new();
        for args in [[cmd, "--help"], [cmd, "-h"], ["help", cmd], ["--help", cmd]] {
            let o = svmap(args);
            assert_eq!(o.status.code(), Some(0), "{args:?}: {}", text(&o.stderr));
            let h = text(&o.stdout);
            for s in [usage, "Example", "Exit status"] {
                assert!(h.contains(s), "{args:?} lacks {s:?}:\n{h}");
            }
            texts.push(h);
        }
        assert!(
            texts.windows(2).all(|w| w[0] == w[1]),
            "{cmd}: the help differs"
        );
    }
    // Options may come in any order and in both forms.
    let o = svmap(["inspect", "--json", "--va-bits=40", "self"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("JSON");
    assert_eq!(v["va_bits"], 40);
    let o = svmap(["--version"]);
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(
        text(&o.stdout),
        format!("svmap {}\n", env!("CARGO_PKG_VERSION"))
    );
}

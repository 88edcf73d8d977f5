//! `svmap run` (the fence on a real, unmodified program) and `svmap inspect`,
//! through the built binary.

use std::path::PathBuf;
use std::process::{Command, Output};

const LIMIT_40: u64 = 1 << 40;

fn svmap() -> Command {
    Command::new(env!("CARGO_BIN_EXE_svmap"))
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("svmap-cli-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// `(start, end, perms, name)` of each line of a maps file.
fn parse_maps(maps: &str) -> Vec<(u64, u64, String, String)> {
    maps.lines()
        .filter_map(|l| {
            let mut f = l.splitn(6, ' ');
            let range = f.next()?;
            let perms = f.next()?.to_owned();
            let name = f.nth(3).unwrap_or("").trim().to_owned();
            let (a, b) = range.split_once('-')?;
            Some((
                u64::from_str_radix(a, 16).ok()?,
                u64::from_str_radix(b, 16).ok()?,
                perms,
                name,
            ))
        })
        .collect()
}

fn python3() -> bool {
    Command::new("python3")
        .arg("-c")
        .arg("pass")
        .status()
        .is_ok_and(|s| s.success())
}

/// Allocates several hundred MiB in many objects, then prints its own maps
/// as they were at start and at the end, separated by a marker line.
const SCRIPT: &str = r#"
import mmap, sys
start = open('/proc/self/maps').read()
blocks = [bytearray(1 << 20) for _ in range(300)]
small = [str(i) * 8 for i in range(200000)]
m = mmap.mmap(-1, 64 << 20)
m[-1:] = b'x'
for b in blocks[::7]:
    b[-1] = 1
end = open('/proc/self/maps').read()
sys.stdout.write(start + '=====\n' + end)
sys.exit(3)
"#;

#[test]
fn run_fences_python_below_2_40() {
    if !python3() {
        eprintln!("skipped: no python3");
        return;
    }
    let dir = scratch("run");
    let report = dir.join("fence.log");
    // From another working directory: the fence library is found relative
    // to the svmap executable.
    let out = svmap()
        .current_dir(&dir)
        .args(["run", "--va-bits", "40", "--report"])
        .arg(&report)
        .args(["--", "python3", "-c", SCRIPT])
        .output()
        .unwrap();
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(3), "stderr: {}", text(&out.stderr));
    let (start, end) = stdout.split_once("=====\n").expect("both maps");
    let log = std::fs::read_to_string(&report).expect("the fence wrote a report");
    std::fs::remove_dir_all(&dir).unwrap();
    let reports = svmap_linux::fence::parse_report(&log);
    let r = reports.first().expect("a report for python3");
    assert!(r.done, "{log}");
    assert!(!r.reserved_ranges.is_empty(), "{log}");
    let before: Vec<(u64, u64)> = parse_maps(start).iter().map(|m| (m.0, m.1)).collect();
    let mut new_anon = 0;
    let mut anon_bytes = 0;
    for (s, e, perms, name) in parse_maps(end) {
        let anonymous = name.is_empty() || name.starts_with("[anon") || name == "[heap]";
        if !anonymous || before.contains(&(s, e)) {
            continue;
        }
        // Created after start. Above the limit only the fence's own
        // PROT_NONE reservations may lie (what remains of them).
        if e > LIMIT_40 {
            assert!(
                perms.starts_with("---")
                    && r.reserved_ranges.iter().any(|&(a, b)| a <= s && e <= b),
                "{s:#x}-{e:#x} {perms} {name:?} lies above 2^40\nfence report:\n{log}"
            );
        } else {
            new_anon += 1;
            anon_bytes += e - s;
        }
    }
    assert!(new_anon > 0);
    assert!(
        anon_bytes >= 300 << 20,
        "only {anon_bytes:#x} new bytes below 2^40"
    );
    // Every anonymous mapping above the limit at start is named in the
    // report as already there, or is a fence reservation.
    for (s, e, perms, name) in parse_maps(start) {
        if e > LIMIT_40
            && (name.is_empty() || name.starts_with("[anon"))
            && !perms.starts_with("---")
        {
            let hex = format!("{s:x}-{e:x}");
            assert!(
                r.above.iter().any(|l| l.contains(&hex)),
                "{hex} {name:?} above 2^40 at start is not in the report:\n{log}"
            );
        }
    }
}

#[test]
fn run_exit_statuses() {
    let run = |args: &[&str]| -> Output { svmap().arg("run").args(args).output().unwrap() };
    let o = run(&["--va-bits", "40", "--", "sh", "-c", "exit 7"]);
    assert_eq!(o.status.code(), Some(7), "{}", text(&o.stderr));
    let o = run(&["--va-bits=44", "sh", "-c", "kill -9 $$"]);
    assert_eq!(o.status.code(), Some(128 + 9));
    let o = run(&[
        "--va-bits",
        "40",
        "--",
        "/nonexistent/svmap-no-such-program",
    ]);
    assert_eq!(o.status.code(), Some(127));
    assert!(
        text(&o.stderr).contains("cannot run"),
        "{}",
        text(&o.stderr)
    );
    let o = run(&[
        "--va-bits",
        "40",
        "--fence-lib",
        "/nonexistent/lib.so",
        "--",
        "true",
    ]);
    assert_eq!(o.status.code(), Some(125), "{}", text(&o.stderr));
    for (args, fragment) in [
        (&["--", "true"][..], "--va-bits"),
        (&["--va-bits", "12", "--", "true"][..], "20..=56"),
        (&["--va-bits", "forty", "true"][..], "20..=56"),
        (&["--va-bits", "40"][..], "missing the command"),
        (&["--va-bits"][..], "needs"),
        (
            &["--frobnicate", "--va-bits", "40", "true"][..],
            "unknown option",
        ),
    ] {
        let o = run(args);
        assert_eq!(o.status.code(), Some(2), "{args:?}");
        assert!(
            text(&o.stderr).contains(fragment),
            "{args:?}: {}",
            text(&o.stderr)
        );
    }
    // --verbose: the report on stderr, and the child's output untouched.
    let o = run(&["--va-bits", "40", "--verbose", "--", "echo", "hello"]);
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(text(&o.stdout), "hello\n");
    assert!(
        text(&o.stderr).contains("svmap-fence["),
        "{}",
        text(&o.stderr)
    );
}

#[test]
fn inspect_self_json_lists_vmas() {
    let o = svmap()
        .args(["inspect", "self", "--va-bits", "40", "--json"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("JSON");
    assert_eq!(v["va_bits"], 40);
    assert_eq!(v["limit"], "0x10000000000");
    let vmas = v["vmas"].as_array().unwrap();
    assert!(vmas.len() >= 5, "{vmas:?}");
    let hex = |s: &serde_json::Value| u64::from_str_radix(&s.as_str().unwrap()[2..], 16).unwrap();
    for m in vmas {
        let (s, e) = (hex(&m["start"]), hex(&m["end"]));
        assert!(s < e);
        let want = if e <= LIMIT_40 {
            "visible"
        } else if s >= LIMIT_40 {
            "invisible"
        } else {
            "partial"
        };
        assert_eq!(m["visibility"], want, "{m}");
    }
    // The svmap binary itself is among them.
    assert!(vmas
        .iter()
        .any(|m| m["name"].as_str().unwrap_or("").ends_with("/svmap")));
    assert!(v["largest_free"].as_array().is_some_and(|l| !l.is_empty()));

    // Text form, and another process by pid.
    let mut child = Command::new("sleep").arg("5").spawn().unwrap();
    // Wait until the child has finished execve (right after spawn its maps
    // may still be the half-built image: only the stack).
    let maps = format!("/proc/{}/maps", child.id());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while !std::fs::read_to_string(&maps).is_ok_and(|m| m.contains("sleep"))
        && std::time::Instant::now() < deadline
    {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let o = svmap()
        .args(["inspect", &child.id().to_string(), "--va-bits=47"])
        .output()
        .unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert!(text(&o.stdout).contains("sleep"), "{}", text(&o.stdout));
}

#[test]
fn inspect_errors() {
    for (args, code, fragment) in [
        (&["inspect"][..], 2, "--va-bits"),
        (&["inspect", "self", "--va-bits", "65"][..], 2, "12..=64"),
        (&["inspect", "abc", "--va-bits", "40"][..], 2, "process id"),
        (
            &["inspect", "1", "2", "--va-bits", "40"][..],
            2,
            "one process",
        ),
        (
            &["inspect", "--va-bits", "40", "--bogus"][..],
            2,
            "unknown option",
        ),
        (
            &["inspect", "999999999", "--va-bits", "40"][..],
            1,
            "svmap inspect:",
        ),
    ] {
        let o = svmap().args(args).output().unwrap();
        assert_eq!(o.status.code(), Some(code), "{args:?}: {}", text(&o.stderr));
        assert!(o.stdout.is_empty());
        assert!(
            text(&o.stderr).contains(fragment),
            "{args:?}: {}",
            text(&o.stderr)
        );
    }
}

#[test]
fn every_subcommand_has_complete_help() {
    for cmd in ["replay", "run", "inspect"] {
        for args in [vec![cmd, "--help"], vec!["help", cmd]] {
            let o = svmap().args(&args).output().unwrap();
            assert_eq!(o.status.code(), Some(0), "{args:?}");
            let h = text(&o.stdout);
            for s in ["Usage: svmap", "Examples", "Exit status", cmd] {
                assert!(h.contains(s), "{args:?} lacks {s:?}");
            }
        }
    }
    let o = svmap().arg("--help").output().unwrap();
    let h = text(&o.stdout);
    for s in [
        "replay",
        "run",
        "inspect",
        "kernel-trace",
        "Examples",
        "Exit status",
    ] {
        assert!(h.contains(s), "svmap --help lacks {s:?}");
    }
}

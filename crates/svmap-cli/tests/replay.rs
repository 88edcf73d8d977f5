//! `svmap replay`: the built binary against the trace format of `docs/trace-format.md`.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

/// What one run of the binary did.
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn lines(&self) -> Vec<&str> {
        self.stdout.lines().collect()
    }

    /// The summary line's counters: (ops, results, checked, mismatches).
    fn summary(&self) -> (u64, u64, u64, u64) {
        let last = self.stdout.lines().last().unwrap_or_else(|| {
            panic!("no output at all; stderr: {}", self.stderr);
        });
        let v: serde_json::Value = serde_json::from_str(last)
            .unwrap_or_else(|e| panic!("summary line {last:?} is not JSON: {e}"));
        let s = &v["summary"];
        let n = |k: &str| {
            s[k].as_u64()
                .unwrap_or_else(|| panic!("summary line {last:?} lacks {k:?}"))
        };
        (n("ops"), n("results"), n("checked"), n("mismatches"))
    }

    fn has_summary(&self) -> bool {
        self.stdout.contains("\"summary\"")
    }
}

fn svmap() -> Command {
    Command::new(env!("CARGO_BIN_EXE_svmap"))
}

fn finish(cmd: &mut Command, input: Option<&str>) -> Run {
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    cmd.stdin(if input.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    });
    let mut child = cmd.spawn().expect("run the svmap binary");
    // Feed standard input from a thread, so that a large input and a large
    // output cannot block each other.
    let feeder = input.map(|text| {
        let mut stdin = child.stdin.take().expect("piped stdin");
        let text = text.to_owned();
        std::thread::spawn(move || {
            // The binary may stop early (a bad line) and close the pipe.
            let _ = stdin.write_all(text.as_bytes());
        })
    });
    let out = child.wait_with_output().expect("wait for svmap");
    if let Some(f) = feeder {
        f.join().expect("stdin feeder");
    }
    Run {
        code: out.status.code().expect("svmap exited by a signal"),
        stdout: String::from_utf8(out.stdout).expect("stdout is UTF-8"),
        stderr: String::from_utf8(out.stderr).expect("stderr is UTF-8"),
    }
}

/// `svmap ARGS` with no input.
fn run(args: &[&str]) -> Run {
    finish(svmap().args(args), None)
}

/// `svmap replay [EXTRA] -` with `trace` on standard input.
fn replay(extra: &[&str], trace: &str) -> Run {
    finish(svmap().arg("replay").args(extra).arg("-"), Some(trace))
}

/// `<workspace>/tests/data/example-NAME`: the small example traces that
/// `docs/trace-format.md` walks through.
fn example(name: &str) -> PathBuf {
    let path = data(&format!("example-{name}"));
    assert!(path.is_file(), "missing example trace {}", path.display());
    path
}

#[test]
fn address_space_example_replays_with_no_mismatch() {
    let path = example("address-space.jsonl");
    let text = std::fs::read_to_string(&path).unwrap();
    let r = finish(svmap().arg("replay").arg("--check").arg(&path), None);
    assert_eq!(r.code, 0, "stdout:\n{}\nstderr:\n{}", r.stdout, r.stderr);
    assert_eq!(r.stderr, "");
    let expects = text.lines().filter(|l| l.contains("\"expect\"")).count() as u64;
    let ops = text
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
        .count() as u64;
    let (o, results, checked, mismatches) = r.summary();
    assert_eq!((o, checked, mismatches), (ops, expects, 0));
    assert_eq!(results as usize, r.lines().len() - 1);
    assert!(!r.stdout.contains("expected"));
    // Every result line is a well-formed result of its input line.
    let input: Vec<&str> = text.lines().collect();
    for l in &r.lines()[..r.lines().len() - 1] {
        let v: serde_json::Value = serde_json::from_str(l).unwrap();
        let n = v["line"].as_u64().unwrap() as usize;
        let src: serde_json::Value = serde_json::from_str(input[n - 1]).unwrap();
        assert_eq!(v["op"], src["op"], "{l}");
        assert_eq!(v.as_object().unwrap().len(), 3, "{l}");
    }
    // Without --check the same trace runs, checks nothing and exits 0.
    let r = finish(svmap().arg("replay").arg(&path), None);
    assert_eq!(r.code, 0);
    let (o2, results2, checked2, mismatches2) = r.summary();
    assert_eq!((o2, results2, checked2, mismatches2), (ops, results, 0, 0));
}

/// `<workspace>/tests/data/NAME`.
fn data(name: &str) -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest
        .ancestors()
        .nth(2)
        .unwrap()
        .join("tests/data")
        .join(name)
}

/// `svmap replay --check PATH` exits 0 with no mismatch and checks every
/// `expect` of the file; returns the run.
fn check_clean(path: &std::path::Path) -> Run {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let r = finish(svmap().arg("replay").arg("--check").arg(path), None);
    assert_eq!(
        r.code,
        0,
        "{}: stdout:\n{}\nstderr:\n{}",
        path.display(),
        r.stdout,
        r.stderr
    );
    assert_eq!(r.stderr, "", "{}", path.display());
    let expects = text.lines().filter(|l| l.contains("\"expect\"")).count() as u64;
    let (_, results, checked, mismatches) = r.summary();
    assert_eq!((checked, mismatches), (expects, 0), "{}", path.display());
    assert!(checked > 0, "{} checks nothing", path.display());
    assert_eq!(results as usize, r.lines().len() - 1);
    assert!(!r.stdout.contains("expected"));
    r
}

#[test]
fn svm_example_replays_with_no_mismatch() {
    let r = check_clean(&example("svm.jsonl"));
    assert_eq!(r.summary(), (18, 12, 12, 0));
}

#[test]
fn svm_scenario_traces_replay_with_no_mismatch() {
    let names = ["svm-scenarios.jsonl", "svm-errors.jsonl"];
    for name in names {
        check_clean(&data(name));
    }
    // Together they produce every kind of result of every SVM op.
    let mut seen = std::collections::BTreeSet::new();
    for name in names {
        let r = finish(svmap().arg("replay").arg(data(name)), None);
        for l in &r.lines()[..r.lines().len() - 1] {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            let o = v.as_object().unwrap();
            let kind = o
                .keys()
                .find(|k| *k != "line" && *k != "op")
                .unwrap()
                .clone();
            let detail = match kind.as_str() {
                "err" | "fault" => o[&kind].as_str().unwrap().to_owned(),
                _ => String::new(),
            };
            seen.insert(
                format!("{} {kind} {detail}", o["op"].as_str().unwrap())
                    .trim_end()
                    .to_owned(),
            );
        }
    }
    for want in [
        "device err EEXIST",
        "device err EINVAL",
        "device_map err EEXIST",
        "device_map err EINVAL",
        "svm_alloc addr",
        "svm_alloc err EINVAL",
        "svm_alloc err ENOMEM",
        "svm_free ok",
        "svm_free err EINVAL",
        "protect ok",
        "protect err ENOMEM",
        "device_access ok",
        "device_access fault unmapped",
        "device_access fault protection",
        "device_access fault out_of_range",
    ] {
        assert!(seen.contains(want), "no {want:?} in {seen:?}");
    }
}

#[test]
fn kernel_traces_replay_with_no_mismatch() {
    let dir = data("");
    let mut n = 0;
    for e in std::fs::read_dir(&dir).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        if name.starts_with("kernel-") && name.ends_with(".jsonl") {
            check_clean(&p);
            n += 1;
        }
    }
    assert!(n >= 4, "only {n} kernel traces under {}", dir.display());
}

#[test]
fn output_lines_are_exact() {
    let trace = concat!(
        "{\"op\": \"mmap\", \"length\": \"0x1000\"}\n",
        "{\"op\": \"mmap\", \"length\": \"0\"}\n",
        "{\"op\": \"map\", \"start\": \"0x10000\", \"end\": \"0x20000\"}\n",
        "{\"op\": \"map\", \"start\": \"0x1f000\", \"end\": \"0x21000\"}\n",
        "{\"op\": \"find\", \"length\": \"0x1000\", \"low_limit\": \"0\", \"high_limit\": \"0x40000\"}\n",
        "{\"op\": \"find\", \"length\": \"0x1000\", \"low_limit\": \"0\", \"high_limit\": \"0x10000\"}\n",
        "{\"op\": \"mmap\", \"length\": \"0x1000\", \"hint\": \"0x10000\", \"fixed\": \"noreplace\"}\n",
    );
    let r = replay(&[], trace);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(
        r.stdout,
        concat!(
            "{\"line\": 1, \"op\": \"mmap\", \"addr\": \"0x7ffff7ffe000\"}\n",
            "{\"line\": 2, \"op\": \"mmap\", \"err\": \"EINVAL\"}\n",
            "{\"line\": 4, \"op\": \"map\", \"err\": \"EEXIST\"}\n",
            "{\"line\": 5, \"op\": \"find\", \"addr\": \"0x20000\"}\n",
            "{\"line\": 6, \"op\": \"find\", \"err\": \"ENOMEM\"}\n",
            "{\"line\": 7, \"op\": \"mmap\", \"err\": \"EEXIST\"}\n",
            "{\"summary\": {\"ops\": 7, \"results\": 6, \"checked\": 0, \"mismatches\": 0}}\n",
        )
    );
}

#[test]
fn find_answers_enomem_for_what_cannot_be_answered() {
    let cases = [
        // zero length
        r#"{"op": "find", "length": "0", "low_limit": "0x10000", "high_limit": "0x100000"}"#,
        // low_limit >= high_limit
        r#"{"op": "find", "length": "0x1000", "low_limit": "0x100000", "high_limit": "0x100000"}"#,
        r#"{"op": "find", "length": "0x1000", "low_limit": "0x200000", "high_limit": "0x100000"}"#,
        // high_limit 0
        r#"{"op": "find", "length": "0x1000", "low_limit": "0", "high_limit": "0"}"#,
        // length + align_mask + start_gap wraps
        r#"{"op": "find", "length": "0x1000", "low_limit": "0", "high_limit": "0xffffffffffffffff", "align_mask": "0xfffffffffffff000"}"#,
        r#"{"op": "find", "length": "0x1000", "low_limit": "0", "high_limit": "0xffffffffffffffff", "start_gap": "0xfffffffffffff000", "topdown": true}"#,
        // the floor is max(low_limit, mmap_min_addr)
        r#"{"op": "find", "length": "0x1000", "low_limit": "0", "high_limit": "0x10000"}"#,
    ];
    for c in cases {
        let r = replay(&["--check"], &format!("{{\"op\": \"reset\"}}\n{c}\n"));
        assert_eq!(r.code, 0, "{c}: {}", r.stderr);
        assert_eq!(
            r.lines()[0],
            r#"{"line": 2, "op": "find", "err": "ENOMEM"}"#,
            "{c}"
        );
    }
}

#[test]
fn reset_fields_and_defaults() {
    let cases = [
        // Legacy layout: bottom-up from the legacy base.
        (
            r#"{"op": "reset", "layout": "legacy"}"#,
            "0x1000",
            "0x2aaaaaaab000",
        ),
        // mmap_base is the top of the top-down search.
        (
            r#"{"op": "reset", "mmap_base": "0x40000000"}"#,
            "0x1000",
            "0x3ffff000",
        ),
        // THP alignment of 2 MiB multiples, and without it.
        (
            r#"{"op": "reset", "mmap_base": "0x40001000"}"#,
            "0x200000",
            "0x3fe00000",
        ),
        (
            r#"{"op": "reset", "mmap_base": "0x40001000", "thp_align": false}"#,
            "0x200000",
            "0x3fe01000",
        ),
        // Every field at once, as decimal strings and JSON integers.
        (
            r#"{"op": "reset", "task_size": "140737488351232", "mmap_min_addr": 0, "stack_guard_gap": 1048576, "layout": "topdown", "mmap_base": 1073741824, "page_size": 4096, "thp_align": true}"#,
            "4096",
            "0x3ffff000",
        ),
    ];
    for (reset, length, addr) in cases {
        let trace = format!(
            "{reset}\n{{\"op\": \"mmap\", \"length\": \"{length}\", \"expect\": {{\"addr\": \"{addr}\"}}}}\n"
        );
        let r = replay(&["--check"], &trace);
        assert_eq!(r.code, 0, "{reset}: {}\n{}", r.stdout, r.stderr);
        assert_eq!(r.summary(), (2, 1, 1, 0), "{reset}");
    }
    // A reset drops the mappings; before the first reset the defaults hold.
    let trace = concat!(
        "{\"op\": \"mmap\", \"length\": \"0x1000\", \"expect\": {\"addr\": \"0x7ffff7ffe000\"}}\n",
        "{\"op\": \"reset\", \"mmap_min_addr\": \"0\"}\n",
        "{\"op\": \"mmap\", \"length\": \"0x1000\", \"expect\": {\"addr\": \"0x7ffff7ffe000\"}}\n",
        "{\"op\": \"find\", \"length\": \"0x1000\", \"low_limit\": \"0\", \"high_limit\": \"0x10000\", \"expect\": {\"addr\": \"0x0\"}}\n",
    );
    let r = replay(&["--check"], trace);
    assert_eq!(r.code, 0, "{}", r.stdout);
    assert_eq!(r.summary(), (4, 3, 3, 0));
}

#[test]
fn map_unmap_and_mmap_forms() {
    let trace = concat!(
        // growsdown puts a guard gap below the VMA for the search.
        "{\"op\": \"map\", \"start\": \"0x7ff000000000\", \"end\": \"0x7ff000100000\", \"flags\": \"growsdown\"}\n",
        "{\"op\": \"find\", \"length\": \"0x1000\", \"low_limit\": \"0x10000\", \"high_limit\": \"0x7ff000000000\", \"topdown\": true, \"expect\": {\"addr\": \"0x7fefffeff000\"}}\n",
        "{\"op\": \"map\", \"start\": \"0x10000\", \"end\": \"0x20000\", \"flags\": \"growsup\"}\n",
        // unmap splits, and unmapping nothing is fine.
        "{\"op\": \"unmap\", \"start\": \"0x14000\", \"length\": \"0x1000\"}\n",
        "{\"op\": \"unmap\", \"start\": \"0x900000000\", \"length\": \"0x1000\"}\n",
        "{\"op\": \"find\", \"length\": \"0x1000\", \"low_limit\": \"0x10000\", \"high_limit\": \"0x20000\", \"expect\": {\"addr\": \"0x14000\"}}\n",
        // A range reaching 2^64 is fine for map's neighbours and unmap.
        "{\"op\": \"map\", \"start\": \"0xffffffffffffe000\", \"end\": \"0xfffffffffffff000\"}\n",
        "{\"op\": \"unmap\", \"start\": \"0xffffffffffffe000\", \"length\": \"0x2000\"}\n",
        "{\"op\": \"map\", \"start\": \"0xffffffffffffe000\", \"end\": \"0xfffffffffffff000\"}\n",
        // fixed replaces what is there; map32bit and growsdown are accepted.
        "{\"op\": \"mmap\", \"length\": \"0x2000\", \"hint\": \"0x1f000\", \"fixed\": \"fixed\", \"expect\": {\"addr\": \"0x1f000\"}}\n",
        "{\"op\": \"mmap\", \"length\": \"0x1000\", \"hint\": \"0x1f001\", \"fixed\": \"fixed\", \"expect\": {\"err\": \"EINVAL\"}}\n",
        "{\"op\": \"mmap\", \"length\": \"0x1000\", \"map32bit\": true, \"expect\": {\"addr\": \"0x40000000\"}}\n",
        "{\"op\": \"mmap\", \"length\": \"0x1000\", \"growsdown\": true, \"fixed\": \"no\", \"expect\": {\"addr\": \"0x7ffff7ffe000\"}}\n",
        "{\"op\": \"mmap\", \"length\": \"0x800000000000\", \"expect\": {\"err\": \"ENOMEM\"}}\n",
    );
    let r = replay(&["--check"], trace);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert_eq!(r.summary(), (14, 7, 7, 0), "{}", r.stdout);
}

#[test]
fn numbers_in_every_accepted_form_are_equal() {
    for n in [
        "\"0x1000\"",
        "\"0X1000\"".replace('X', "x").as_str(),
        "\"0x00001000\"",
        "\"4096\"",
        "4096",
    ] {
        let trace = format!(
            "{{\"op\": \"find\", \"length\": {n}, \"low_limit\": \"0x30000\", \"high_limit\": \"0x40000\", \"expect\": {{\"addr\": \"0x30000\"}}}}\n"
        );
        let r = replay(&["--check"], &trace);
        assert_eq!(r.code, 0, "{n}: {}", r.stderr);
    }
    // Hex digits in either case; expect addresses compare as numbers.
    let trace = r#"{"op": "find", "length": "0x1000", "low_limit": "0xABC000", "high_limit": "0xabd000", "expect": {"addr": "0x0000ABC000"}}"#;
    let r = replay(&["--check"], trace);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(
        r.lines()[0],
        r#"{"line": 1, "op": "find", "addr": "0xabc000"}"#
    );
    // 2^53 itself is a valid JSON integer.
    let trace = r#"{"op": "find", "length": 4096, "low_limit": 9007199254736896, "high_limit": 9007199254740992}"#;
    let r = replay(&[], trace);
    assert_eq!(
        r.lines()[0],
        r#"{"line": 1, "op": "find", "addr": "0x1ffffffffff000"}"#
    );
}

#[test]
fn blank_and_comment_lines_are_skipped_but_counted() {
    let trace = "\n   \n# a comment\n  # an indented comment\r\n{\"op\": \"mmap\", \"length\": \"0x1000\"}\r\n\n#\n{\"op\": \"mmap\", \"length\": \"0x1000\"}";
    let r = replay(&[], trace);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(
        r.lines(),
        [
            r#"{"line": 5, "op": "mmap", "addr": "0x7ffff7ffe000"}"#,
            r#"{"line": 8, "op": "mmap", "addr": "0x7ffff7ffd000"}"#,
            r#"{"summary": {"ops": 2, "results": 2, "checked": 0, "mismatches": 0}}"#,
        ]
    );
    // An empty trace still has a summary.
    let r = replay(&["--check"], "");
    assert_eq!(r.code, 0);
    assert_eq!(r.summary(), (0, 0, 0, 0));
}

#[test]
fn mismatch_exits_1_and_shows_expected() {
    let trace = concat!(
        "{\"op\": \"mmap\", \"length\": \"0x1000\", \"expect\": {\"addr\": \"0x1000\"}}\n",
        "{\"op\": \"mmap\", \"length\": \"0x1000\", \"expect\": {\"addr\": \"0x7ffff7ffd000\"}}\n",
        "{\"op\": \"mmap\", \"length\": \"0\", \"expect\": {\"err\": \"ENOMEM\"}}\n",
        "{\"op\": \"find\", \"length\": \"0x1000\", \"low_limit\": \"0\", \"high_limit\": \"0x1000\", \"expect\": {\"ok\": true}}\n",
    );
    let r = replay(&["--check"], trace);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert_eq!(
        r.lines(),
        [
            r#"{"line": 1, "op": "mmap", "addr": "0x7ffff7ffe000", "expected": {"addr": "0x1000"}}"#,
            r#"{"line": 2, "op": "mmap", "addr": "0x7ffff7ffd000"}"#,
            r#"{"line": 3, "op": "mmap", "err": "EINVAL", "expected": {"err": "ENOMEM"}}"#,
            r#"{"line": 4, "op": "find", "err": "ENOMEM", "expected": {"ok": true}}"#,
            r#"{"summary": {"ops": 4, "results": 4, "checked": 4, "mismatches": 3}}"#,
        ]
    );
    // Without --check nothing is compared and the status is 0.
    let r = replay(&[], trace);
    assert_eq!(r.code, 0);
    assert!(!r.stdout.contains("expected"));
    assert_eq!(r.summary(), (4, 4, 0, 0));
}

#[test]
fn expect_on_a_successful_map_is_checked_and_mismatched() {
    let trace = concat!(
        "{\"op\": \"map\", \"start\": \"0x10000\", \"end\": \"0x20000\", \"expect\": {\"err\": \"EEXIST\"}}\n",
        "{\"op\": \"map\", \"start\": \"0x10000\", \"end\": \"0x20000\", \"expect\": {\"err\": \"EEXIST\"}}\n",
    );
    let r = replay(&["--check"], trace);
    assert_eq!(r.code, 1);
    assert_eq!(
        r.lines(),
        [
            r#"{"line": 2, "op": "map", "err": "EEXIST"}"#,
            r#"{"summary": {"ops": 2, "results": 1, "checked": 2, "mismatches": 1}}"#,
        ]
    );
    assert!(r.stderr.starts_with("line 1: "), "{}", r.stderr);
    let r = replay(&[], trace);
    assert_eq!(r.code, 0);
    assert_eq!(r.summary(), (2, 1, 0, 0));
}

/// Bad lines: each one is line 4 of a trace that has already printed a
/// result; replay stops there with exit 2, no summary, and a message
/// naming line 4 and (a fragment of) what is wrong.
#[test]
fn bad_lines_stop_with_exit_2() {
    let table: &[(&str, &str)] = &[
        // invalid JSON
        (r#"{"op": "map", "start": "0x1000""#, "invalid JSON"),
        (r#"{"op": "mmap", "length": "0x1000"} x"#, "invalid JSON"),
        (r#"{op: "reset"}"#, "invalid JSON"),
        ("[1, 2]", "JSON object"),
        ("\"reset\"", "JSON object"),
        // unknown op, missing op
        (r#"{"op": "mmap2", "length": "0x1000"}"#, "unknown op"),
        (r#"{"length": "0x1000"}"#, "\"op\""),
        (r#"{"op": null}"#, "\"op\""),
        // missing, unknown or repeated fields
        (r#"{"op": "mmap"}"#, "\"length\""),
        (r#"{"op": "map", "start": "0x1000"}"#, "\"end\""),
        (
            r#"{"op": "find", "length": "0x1000", "low_limit": "0"}"#,
            "\"high_limit\"",
        ),
        (
            r#"{"op": "mmap", "length": "0x1000", "flags": "growsdown"}"#,
            "unknown field \"flags\"",
        ),
        (r#"{"op": "reset", "Layout": "legacy"}"#, "unknown field"),
        (
            r#"{"op": "mmap", "length": "0x1000", "length": "0x2000"}"#,
            "twice",
        ),
        // wrong JSON types
        (r#"{"op": "mmap", "length": true}"#, "\"length\""),
        (r#"{"op": "mmap", "length": null}"#, "\"length\""),
        (r#"{"op": "mmap", "length": ["0x1000"]}"#, "\"length\""),
        (
            r#"{"op": "mmap", "length": "0x1000", "growsdown": "true"}"#,
            "\"growsdown\"",
        ),
        (
            r#"{"op": "mmap", "length": "0x1000", "fixed": true}"#,
            "\"fixed\"",
        ),
        (
            r#"{"op": "find", "length": "0x1000", "low_limit": "0", "high_limit": "0x1000", "topdown": 1}"#,
            "\"topdown\"",
        ),
        (r#"{"op": "reset", "thp_align": "false"}"#, "\"thp_align\""),
        // enum values not listed
        (r#"{"op": "reset", "layout": "bottomup"}"#, "\"layout\""),
        (
            r#"{"op": "mmap", "length": "0x1000", "fixed": "yes"}"#,
            "\"fixed\"",
        ),
        (
            r#"{"op": "map", "start": "0x1000", "end": "0x2000", "flags": "stack"}"#,
            "\"flags\"",
        ),
        // numbers: too large, above 2^53, negative, fractional, not numbers
        (
            r#"{"op": "mmap", "length": "0x10000000000000000"}"#,
            "64 bits",
        ),
        (
            r#"{"op": "mmap", "length": "18446744073709551616"}"#,
            "64 bits",
        ),
        (r#"{"op": "mmap", "length": 9007199254740993}"#, "2^53"),
        (
            r#"{"op": "mmap", "length": 18446744073709551616}"#,
            "\"length\"",
        ),
        (r#"{"op": "mmap", "length": -4096}"#, "negative"),
        (r#"{"op": "mmap", "length": 4096.5}"#, "not an integer"),
        (r#"{"op": "mmap", "length": 4096.0}"#, "not an integer"),
        (r#"{"op": "mmap", "length": 4e3}"#, "not an integer"),
        (r#"{"op": "mmap", "length": "0X1000"}"#, "not a number"),
        (r#"{"op": "mmap", "length": "0x"}"#, "not a number"),
        (r#"{"op": "mmap", "length": ""}"#, "not a number"),
        (r#"{"op": "mmap", "length": "-4096"}"#, "not a number"),
        (r#"{"op": "mmap", "length": "+4096"}"#, "not a number"),
        (r#"{"op": "mmap", "length": " 4096"}"#, "not a number"),
        (r#"{"op": "mmap", "length": "4k"}"#, "not a number"),
        (r#"{"op": "mmap", "length": "0x1g"}"#, "not a number"),
        // map ranges
        (
            r#"{"op": "map", "start": "0x2000", "end": "0x2000"}"#,
            "above",
        ),
        (
            r#"{"op": "map", "start": "0x3000", "end": "0x2000"}"#,
            "above",
        ),
        (
            r#"{"op": "map", "start": "0x1800", "end": "0x2000"}"#,
            "aligned",
        ),
        (
            r#"{"op": "map", "start": "0x1000", "end": "0x2800"}"#,
            "aligned",
        ),
        // unmap and protect ranges
        (
            r#"{"op": "unmap", "start": "0x1800", "length": "0x1000"}"#,
            "aligned",
        ),
        (r#"{"op": "unmap", "start": "0x1000", "length": "0"}"#, "0"),
        (
            r#"{"op": "unmap", "start": "0x1000", "length": "0x800"}"#,
            "aligned",
        ),
        (
            r#"{"op": "protect", "start": "0x1800", "length": "0x1000", "prot": "r"}"#,
            "aligned",
        ),
        (
            r#"{"op": "protect", "start": "0x1000", "length": "0", "prot": "r"}"#,
            "0",
        ),
        (
            r#"{"op": "protect", "start": "0x1000", "length": "0x1000", "prot": "x"}"#,
            "\"prot\"",
        ),
        (
            r#"{"op": "protect", "start": "0x1000", "length": "0x1000"}"#,
            "\"prot\"",
        ),
        // align and device page sizes; va_bits
        (
            r#"{"op": "svm_alloc", "length": "0x1000", "align": "0x3000"}"#,
            "power of two",
        ),
        (
            r#"{"op": "svm_alloc", "length": "0x1000", "align": "0"}"#,
            "power of two",
        ),
        (
            r#"{"op": "device", "name": "g", "va_bits": 40, "page_size": "0x3000"}"#,
            "power of two",
        ),
        (
            r#"{"op": "device", "name": "g", "va_bits": 40, "page_size": "0x800"}"#,
            "power of two",
        ),
        (r#"{"op": "device", "name": "g", "va_bits": 11}"#, "12..=64"),
        (r#"{"op": "device", "name": "g", "va_bits": 65}"#, "12..=64"),
        (r#"{"op": "device", "name": "g", "va_bits": -1}"#, "12..=64"),
        (
            r#"{"op": "device", "name": "g", "va_bits": "40"}"#,
            "\"va_bits\"",
        ),
        (r#"{"op": "device", "name": "g"}"#, "\"va_bits\""),
        (r#"{"op": "device", "va_bits": 40}"#, "\"name\""),
        (r#"{"op": "device", "name": 7, "va_bits": 40}"#, "\"name\""),
        (
            r#"{"op": "device", "name": "g", "va_bits": 40, "mirror": "all"}"#,
            "\"mirror\"",
        ),
        (
            r#"{"op": "device_map", "device": "g", "start": "0x1000", "end": "0x2000", "cpu": "zero"}"#,
            "\"cpu\"",
        ),
        (
            r#"{"op": "svm_alloc", "length": "0x1000", "devices": "g"}"#,
            "\"devices\"",
        ),
        (
            r#"{"op": "svm_alloc", "length": "0x1000", "devices": [1]}"#,
            "\"devices\"",
        ),
        (
            r#"{"op": "svm_alloc", "length": "0x1000", "topdown": "yes"}"#,
            "\"topdown\"",
        ),
        (r#"{"op": "svm_free"}"#, "\"addr\""),
        (
            r#"{"op": "device_access", "device": "g", "addr": "0x1000"}"#,
            "\"write\"",
        ),
        // devices never defined
        (
            r#"{"op": "device_map", "device": "g", "start": "0x1000", "end": "0x2000"}"#,
            "never defined",
        ),
        (
            r#"{"op": "svm_alloc", "length": "0x1000", "devices": ["g"]}"#,
            "never defined",
        ),
        (
            r#"{"op": "device_access", "device": "g", "addr": "0x1000", "write": false}"#,
            "never defined",
        ),
        // expect where there is never a result, and malformed expects
        (
            r#"{"op": "reset", "expect": {"ok": true}}"#,
            "never has a result",
        ),
        (
            r#"{"op": "unmap", "start": "0x1000", "length": "0x1000", "expect": {"ok": true}}"#,
            "never has a result",
        ),
        (
            r#"{"op": "mmap", "length": "0x1000", "expect": {}}"#,
            "exactly one",
        ),
        (
            r#"{"op": "mmap", "length": "0x1000", "expect": {"addr": "0x1000", "err": "ENOMEM"}}"#,
            "exactly one",
        ),
        (
            r#"{"op": "mmap", "length": "0x1000", "expect": {"address": "0x1000"}}"#,
            "\"address\"",
        ),
        (
            r#"{"op": "mmap", "length": "0x1000", "expect": {"addr": "0x1000", "addr": "0x2000"}}"#,
            "twice",
        ),
        (
            r#"{"op": "mmap", "length": "0x1000", "expect": "0x1000"}"#,
            "\"expect\"",
        ),
        (
            r#"{"op": "mmap", "length": "0x1000", "expect": {"addr": -1}}"#,
            "negative",
        ),
        (
            r#"{"op": "mmap", "length": "0x1000", "expect": {"err": 12}}"#,
            "\"err\"",
        ),
        (
            r#"{"op": "mmap", "length": "0x1000", "expect": {"err": "ENOTANERRNO"}}"#,
            "\"err\"",
        ),
        (
            r#"{"op": "mmap", "length": "0x1000", "expect": {"ok": false}}"#,
            "\"ok\"",
        ),
        (
            r#"{"op": "mmap", "length": "0x1000", "expect": {"fault": "segv"}}"#,
            "\"fault\"",
        ),
        // reset accepts only 4 KiB pages
        (r#"{"op": "reset", "page_size": "0x2000"}"#, "page_size"),
        (r#"{"op": "reset", "page_size": "0x200000"}"#, "page_size"),
    ];
    for (bad, fragment) in table {
        let trace = format!(
            "{{\"op\": \"mmap\", \"length\": \"0x1000\"}}\n# comment\n\n{bad}\n{{\"op\": \"mmap\", \"length\": \"0x1000\"}}\n"
        );
        for extra in [&[][..], &["--check"][..]] {
            let r = replay(extra, &trace);
            assert_eq!(r.code, 2, "{bad}: exit {} stderr {}", r.code, r.stderr);
            assert!(!r.has_summary(), "{bad}: printed a summary:\n{}", r.stdout);
            // Results before the bad line are printed; none after it.
            assert_eq!(r.lines().len(), 1, "{bad}: {}", r.stdout);
            assert!(
                r.stderr.starts_with("line 4: "),
                "{bad}: the message does not name line 4: {}",
                r.stderr
            );
            assert_eq!(r.stderr.lines().count(), 1, "{bad}: {}", r.stderr);
            assert!(
                r.stderr.contains(fragment),
                "{bad}: the message {:?} does not mention {fragment:?}",
                r.stderr
            );
        }
    }
}

#[test]
fn invalid_utf8_is_a_bad_line() {
    let mut cmd = svmap();
    cmd.args(["replay", "-"]);
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"{\"op\": \"reset\"}\n{\"op\": \"\xff\"}\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
    assert!(String::from_utf8_lossy(&out.stderr).starts_with("line 2: "));
}

#[test]
fn well_formed_svm_ops_run() {
    for (line, want) in [
        (
            r#"{"op": "device", "name": "gpu", "va_bits": 40, "base": "0x1000", "page_size": "0x10000", "mirror": "system", "expect": {"err": "EEXIST"}}"#,
            None,
        ),
        (
            r#"{"op": "svm_alloc", "length": "0x1000", "align": "0x200000", "devices": [], "topdown": false, "expect": {"addr": "0x200000"}}"#,
            Some(r#"{"line": 2, "op": "svm_alloc", "addr": "0x200000"}"#),
        ),
        (
            r#"{"op": "svm_alloc", "length": "0x1000"}"#,
            Some(r#"{"line": 2, "op": "svm_alloc", "addr": "0x7fffffffe000"}"#),
        ),
        (
            r#"{"op": "svm_free", "addr": "0x1000", "expect": {"err": "EINVAL"}}"#,
            Some(r#"{"line": 2, "op": "svm_free", "err": "EINVAL"}"#),
        ),
        (
            r#"{"op": "protect", "start": "0x1000", "length": "0x1000", "prot": "none", "expect": {"err": "ENOMEM"}}"#,
            Some(r#"{"line": 2, "op": "protect", "err": "ENOMEM"}"#),
        ),
    ] {
        let r = replay(&["--check"], &format!("{{\"op\": \"reset\"}}\n{line}\n"));
        match want {
            // A `device` that succeeds prints nothing; its expect mismatches.
            None => {
                assert_eq!(r.code, 1, "{line}: {}", r.stderr);
                assert_eq!(r.summary(), (2, 0, 1, 1));
                assert!(
                    r.stderr.starts_with("line 2: mismatch: op \"device\""),
                    "{}",
                    r.stderr
                );
            }
            Some(out) => {
                assert_eq!(r.code, 0, "{line}: {}", r.stderr);
                assert_eq!(r.lines()[0], out);
            }
        }
    }
}

#[test]
fn a_large_trace_streams_through_stdin() {
    // 1,000,000 lines in an optimised build; fewer in a debug build so the
    // test stays quick. Every block of 10 lines holds 7 operations, 4 with
    // a result, all checked.
    let lines: usize = if cfg!(debug_assertions) {
        200_000
    } else {
        1_000_000
    };
    let block = concat!(
        "{\"op\": \"mmap\", \"length\": \"0x1000\", \"hint\": \"0x200000000\", \"fixed\": \"fixed\", \"expect\": {\"addr\": \"0x200000000\"}}\n",
        "{\"op\": \"find\", \"length\": \"0x1000\", \"low_limit\": \"0x200000000\", \"high_limit\": \"0x200002000\", \"expect\": {\"addr\": \"0x200001000\"}}\n",
        "{\"op\": \"map\", \"start\": \"0x300000000\", \"end\": \"0x300001000\"}\n",
        "# a comment\n",
        "{\"op\": \"map\", \"start\": \"0x300000000\", \"end\": \"0x300002000\", \"expect\": {\"err\": \"EEXIST\"}}\n",
        "\n",
        "{\"op\": \"unmap\", \"start\": \"0x200000000\", \"length\": \"0x1000\"}\n",
        "{\"op\": \"unmap\", \"start\": \"0x300000000\", \"length\": \"0x1000\"}\n",
        "{\"op\": \"mmap\", \"length\": \"0x1000\", \"hint\": \"0x300000000\", \"expect\": {\"addr\": \"0x300000000\"}}\n",
        "{\"op\": \"unmap\", \"start\": \"0x300000000\", \"length\": \"0x1000\"}\n",
    );
    assert_eq!(block.lines().count(), 10);
    let blocks = lines / 10;
    let trace = block.repeat(blocks);
    let r = replay(&["--check"], &trace);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let n = blocks as u64;
    assert_eq!(r.summary(), (8 * n, 4 * n, 4 * n, 0));
    // The last result line is the mmap of the last block.
    let out = r.lines();
    assert_eq!(
        out[out.len() - 2],
        format!(
            "{{\"line\": {}, \"op\": \"mmap\", \"addr\": \"0x300000000\"}}",
            lines - 1
        )
    );
}

#[test]
fn arguments_and_help() {
    let r = run(&["replay", "--help"]);
    assert_eq!(r.code, 0);
    for s in ["--check", "Exit status", "Examples", "svmap replay"] {
        assert!(r.stdout.contains(s), "replay --help lacks {s:?}");
    }
    for args in [&["--help"][..], &["help"][..], &["-h"][..]] {
        let r = run(args);
        assert_eq!(r.code, 0);
        assert!(r.stdout.contains("replay"), "{}", r.stdout);
    }
    let r = run(&["help", "replay"]);
    assert_eq!(r.code, 0);
    assert!(r.stdout.contains("Exit status"));

    let usage_errors: &[(&[&str], &str)] = &[
        (&[], "Usage"),
        (&["frobnicate"], "unknown command"),
        (&["replay"], "missing"),
        (&["replay", "--check"], "missing"),
        (&["replay", "--chek", "x.jsonl"], "unknown option"),
        (&["replay", "a.jsonl", "b.jsonl"], "one trace"),
        (&["replay", "/nonexistent/svmap/trace.jsonl"], "cannot open"),
        (&["replay", "/"], "error reading"),
    ];
    for (args, fragment) in usage_errors {
        let r = run(args);
        assert_eq!(r.code, 2, "{args:?}");
        assert!(r.stdout.is_empty(), "{args:?}: {}", r.stdout);
        assert!(
            r.stderr.contains(fragment),
            "{args:?}: {:?} lacks {fragment:?}",
            r.stderr
        );
    }
}

#[test]
fn a_file_argument_and_double_dash() {
    let dir = std::env::temp_dir().join(format!("svmap-replay-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("-odd-name.jsonl");
    std::fs::write(&path, "{\"op\": \"mmap\", \"length\": \"0x1000\"}\n").unwrap();
    let r = finish(
        svmap()
            .current_dir(&dir)
            .args(["replay", "--check", "--", "-odd-name.jsonl"]),
        None,
    );
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.summary(), (1, 1, 0, 0));
}

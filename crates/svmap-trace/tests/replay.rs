//! The library API of `svmap-trace`: every trace under `tests/data/` (the
//! kernel recordings, the SVM scenarios and the two examples of
//! `docs/trace-format.md`) replays with no mismatch; the two executors agree on the
//! address-space operations; exit statuses and messages.

use std::path::{Path, PathBuf};

use svmap_svm::Populate;
use svmap_trace::{
    exit_status, replay, replay_status, replay_with, CpuExecutor, Executor, ReplayError, Summary,
    SvmExecutor, EXIT_BAD, EXIT_MISMATCH, EXIT_OK,
};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("the crate lies two levels below the workspace")
        .to_path_buf()
}

/// `(name, text)` of every `tests/data/<prefix>*.jsonl`.
fn traces(prefix: &str) -> Vec<(String, String)> {
    let dir = workspace().join("tests/data");
    let mut v: Vec<(String, String)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let n = p.file_name().unwrap().to_string_lossy();
            n.starts_with(prefix) && n.ends_with(".jsonl")
        })
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read_to_string(&p).unwrap())
        })
        .collect();
    v.sort();
    v
}

fn example(name: &str) -> String {
    let p = workspace()
        .join("tests/data")
        .join(format!("example-{name}"));
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn expects(text: &str) -> u64 {
    text.lines().filter(|l| l.contains("\"expect\"")).count() as u64
}

/// Runs `text` through `exec` with `--check`; returns (summary, stdout).
fn run_with<E: Executor>(exec: &mut E, text: &str) -> (Summary, String) {
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let s = replay_with(text.as_bytes(), &mut out, &mut err, exec, true)
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(err.is_empty(), "{}", String::from_utf8_lossy(&err));
    (s, String::from_utf8(out).unwrap())
}

fn assert_clean(name: &str, s: Summary, out: &str, text: &str) {
    assert_eq!(
        s.mismatches,
        0,
        "{name}:\n{}",
        out.lines()
            .filter(|l| l.contains("expected"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert_eq!(s.checked, expects(text), "{name}");
    assert!(s.checked > 0, "{name} checks nothing");
}

#[test]
fn svm_traces_replay_with_no_mismatch_in_both_populate_modes() {
    let mut all = traces("svm-");
    assert!(all.len() >= 2, "tests/data/svm-*.jsonl: {all:?}");
    all.push(("example-svm.jsonl".into(), example("svm.jsonl")));
    for (name, text) in &all {
        for populate in [Populate::OnFault, Populate::AtAlloc] {
            // A tiny TLB so that evictions happen; every step checked.
            let mut exec = SvmExecutor::new(populate)
                .with_tlb_entries(2)
                .with_invariant_checks();
            let (s, out) = run_with(&mut exec, text);
            assert_clean(name, s, &out, text);
        }
    }
}

#[test]
fn kernel_traces_replay_with_no_mismatch_and_both_executors_agree() {
    let mut all = traces("kernel-");
    assert!(all.len() >= 4, "tests/data/kernel-*.jsonl");
    all.push((
        "example-address-space.jsonl".into(),
        example("address-space.jsonl"),
    ));
    for (name, text) in &all {
        let (s, out) = run_with(&mut SvmExecutor::default(), text);
        assert_clean(name, s, &out, text);
        let (s2, out2) = run_with(&mut CpuExecutor::default(), text);
        assert_eq!((s, &out), (s2, &out2), "{name}: the executors differ");
    }
}

#[test]
fn address_space_ops_agree_after_devices_exist() {
    // The same address-space trace, once plain and once after a device
    // (which switches the SVM space to keeping its cover maps), gives the
    // same results.
    let (_, text) = traces("kernel-").into_iter().next().unwrap();
    // The device goes right after the first reset (which sets the layout).
    let mut with_dev = String::new();
    let mut added = false;
    for l in text.lines() {
        with_dev.push_str(l);
        with_dev.push('\n');
        if !added && l.contains("\"reset\"") {
            with_dev.push_str("{\"op\": \"device\", \"name\": \"g\", \"va_bits\": 47}\n");
            added = true;
        }
    }
    assert!(added);
    let plain = text;
    let strip = |out: &str| -> Vec<String> {
        out.lines()
            .filter(|l| !l.contains("summary"))
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                let mut v = v.as_object().unwrap().clone();
                v.remove("line");
                serde_json::to_string(&v).unwrap()
            })
            .collect()
    };
    let mut a = SvmExecutor::default();
    let (_, out_a) = run_with(&mut a, &plain);
    let mut b = SvmExecutor::default().with_invariant_checks();
    let (_, out_b) = run_with(&mut b, &with_dev);
    let (sa, sb) = (strip(&out_a), strip(&out_b));
    assert_eq!(sa.len(), sb.len());
    for (i, (x, y)) in sa.iter().zip(&sb).enumerate() {
        assert_eq!(x, y, "result {i}");
    }
    assert!(!out_b.contains("expected"));
    assert_eq!(b.space().devices().len(), 1);
}

#[test]
fn exit_statuses_and_messages() {
    let ok =
        "{\"op\": \"mmap\", \"length\": \"0x1000\", \"expect\": {\"addr\": \"0x7ffff7ffe000\"}}\n";
    let bad_expect =
        "{\"op\": \"mmap\", \"length\": \"0x1000\", \"expect\": {\"addr\": \"0x1000\"}}\n";
    let (mut out, mut err) = (Vec::new(), Vec::new());
    assert_eq!(
        replay_status(ok.as_bytes(), &mut out, &mut err, true),
        EXIT_OK
    );
    assert!(err.is_empty());
    out.clear();
    assert_eq!(
        replay_status(bad_expect.as_bytes(), &mut out, &mut err, true),
        EXIT_MISMATCH
    );
    assert!(String::from_utf8(out.clone())
        .unwrap()
        .contains("\"expected\": {\"addr\": \"0x1000\"}"));
    out.clear();
    // Without check, a wrong expect is not compared.
    assert_eq!(
        replay_status(bad_expect.as_bytes(), &mut out, &mut err, false),
        EXIT_OK
    );
    assert!(err.is_empty());

    // A device that was never defined is a bad line: line 2, no summary.
    out.clear();
    let undefined = "{\"op\": \"reset\"}\n{\"op\": \"device_access\", \"device\": \"g\", \"addr\": \"0x1000\", \"write\": false}\n";
    assert_eq!(
        replay_status(undefined.as_bytes(), &mut out, &mut err, true),
        EXIT_BAD
    );
    assert!(out.is_empty());
    let msg = String::from_utf8(std::mem::take(&mut err)).unwrap();
    assert_eq!(
        msg,
        "line 2: device \"g\" was never defined (since the last reset)\n"
    );

    // reset forgets devices.
    let forgotten = "{\"op\": \"device\", \"name\": \"g\", \"va_bits\": 40}\n{\"op\": \"reset\"}\n{\"op\": \"svm_alloc\", \"length\": \"0x1000\", \"devices\": [\"g\"]}\n";
    let r = replay(forgotten.as_bytes(), &mut out, &mut err, false);
    match &r {
        Err(ReplayError::BadLine { line: 3, msg }) => assert!(msg.contains("never defined")),
        other => panic!("{other:?}"),
    }
    assert_eq!(exit_status(&r, false), EXIT_BAD);

    // An expect on an operation that printed no line is a mismatch, noted on err.
    out.clear();
    let map = "{\"op\": \"device\", \"name\": \"g\", \"va_bits\": 40, \"expect\": {\"err\": \"EEXIST\"}}\n";
    let s = replay(map.as_bytes(), &mut out, &mut err, true).unwrap();
    assert_eq!((s.ops, s.results, s.checked, s.mismatches), (1, 0, 1, 1));
    assert_eq!(s.exit_status(true), EXIT_MISMATCH);
    assert!(String::from_utf8(err)
        .unwrap()
        .starts_with("line 1: mismatch: op \"device\""));
}

#[test]
fn the_cpu_executor_stops_at_svm_ops() {
    let t = "{\"op\": \"reset\"}\n{\"op\": \"svm_alloc\", \"length\": \"0x1000\"}\n";
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let r = replay_with(
        t.as_bytes(),
        &mut out,
        &mut err,
        &mut CpuExecutor::default(),
        false,
    );
    match r {
        Err(ReplayError::BadLine { line: 2, msg }) => assert!(msg.contains("SVM layer"), "{msg}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn results_of_every_svm_op_print_exactly() {
    let t = concat!(
        "{\"op\": \"device\", \"name\": \"g\", \"va_bits\": 40}\n",
        "{\"op\": \"device_map\", \"device\": \"g\", \"start\": \"0xfff0000000\", \"end\": \"0x10000000000\"}\n",
        "{\"op\": \"device_map\", \"device\": \"g\", \"start\": \"0xfff0000000\", \"end\": \"0xfff0001000\"}\n",
        "{\"op\": \"svm_alloc\", \"length\": \"0x1000\", \"devices\": [\"g\"]}\n",
        "{\"op\": \"protect\", \"start\": \"0xffeffff000\", \"length\": \"0x1000\", \"prot\": \"r\"}\n",
        "{\"op\": \"device_access\", \"device\": \"g\", \"addr\": \"0xffeffff000\", \"write\": true}\n",
        "{\"op\": \"svm_free\", \"addr\": \"0xffeffff000\"}\n",
        "{\"op\": \"device\", \"name\": \"g\", \"va_bits\": 40}\n",
    );
    let (mut out, mut err) = (Vec::new(), Vec::new());
    replay(t.as_bytes(), &mut out, &mut err, false).unwrap();
    assert_eq!(
        String::from_utf8(out).unwrap(),
        concat!(
            "{\"line\": 3, \"op\": \"device_map\", \"err\": \"EEXIST\"}\n",
            "{\"line\": 4, \"op\": \"svm_alloc\", \"addr\": \"0xffeffff000\"}\n",
            "{\"line\": 5, \"op\": \"protect\", \"ok\": true}\n",
            "{\"line\": 6, \"op\": \"device_access\", \"fault\": \"protection\"}\n",
            "{\"line\": 7, \"op\": \"svm_free\", \"ok\": true}\n",
            "{\"line\": 8, \"op\": \"device\", \"err\": \"EEXIST\"}\n",
            "{\"summary\": {\"ops\": 8, \"results\": 6, \"checked\": 0, \"mismatches\": 0}}\n",
        )
    );
}

/// The fenced code blocks of `docs/trace-format.md`, in order.
fn doc_blocks() -> Vec<(String, String)> {
    let p = workspace().join("docs/trace-format.md");
    let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    let mut blocks = Vec::new();
    let mut before = String::new();
    let mut cur: Option<String> = None;
    for line in text.lines() {
        match (&mut cur, line.starts_with("```")) {
            (None, true) => cur = Some(String::new()),
            (Some(b), true) => {
                blocks.push((before.clone(), std::mem::take(b)));
                cur = None;
            }
            (Some(b), false) => {
                b.push_str(line);
                b.push('\n');
            }
            (None, false) if !line.trim().is_empty() => before = line.to_string(),
            (None, false) => {}
        }
    }
    assert!(cur.is_none(), "an unclosed code block in {}", p.display());
    blocks
}

#[test]
fn the_worked_example_of_the_format_document_prints_what_it_says() {
    let blocks = doc_blocks();
    let find = |intro: &str| {
        blocks
            .iter()
            .find(|(b, _)| b.starts_with(intro))
            .map(|(_, t)| t.clone())
            .unwrap_or_else(|| panic!("no code block after {intro:?} in docs/trace-format.md"))
    };
    let trace = find("A short trace and its output");
    let printed = find("`svmap replay --check` prints");
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let s = replay(trace.as_bytes(), &mut out, &mut err, true).unwrap();
    assert_eq!(String::from_utf8(out).unwrap(), printed);
    assert!(err.is_empty());
    assert!(s.checked > 0);
}

#[test]
fn every_operation_line_of_the_format_document_parses() {
    let mut n = 0;
    for (_, block) in doc_blocks() {
        for line in block.lines().filter(|l| l.starts_with("{\"op\"")) {
            svmap_trace::trace::parse_line(line).unwrap_or_else(|e| panic!("{line}: {e}"));
            n += 1;
        }
    }
    assert!(n >= 20, "only {n} operation lines in docs/trace-format.md");
}

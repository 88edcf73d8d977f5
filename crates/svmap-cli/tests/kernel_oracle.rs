//! The running kernel as the oracle: `svmap kernel-trace` records what the kernel answers to
//! 10 000 random anonymous `mmap` calls in each of the four layouts, and
//! `svmap replay --check` must predict every answer. The traces recorded earlier under
//! `tests/data/` must replay without a mismatch too.
#![cfg(target_os = "linux")]

use std::path::{Path, PathBuf};
use std::process::Command;

/// `mmap` operations recorded per layout.
const OPS: u64 = 10_000;

fn svmap() -> Command {
    Command::new(env!("CARGO_BIN_EXE_svmap"))
}

/// Counts from replay's summary line.
struct Summary {
    checked: u64,
    mismatches: u64,
}

/// Runs `svmap replay --check path`; fails the test unless it exits 0 with no mismatch.
fn replay_check(path: &Path) -> Summary {
    let out = svmap()
        .args(["replay", "--check"])
        .arg(path)
        .output()
        .expect("run svmap replay");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let summary_line = stdout
        .lines()
        .rev()
        .find(|l| l.starts_with("{\"summary\""))
        .unwrap_or_else(|| {
            panic!(
                "replay --check {} printed no summary ({}):\n{stderr}",
                path.display(),
                out.status
            )
        });
    let json: serde_json::Value = serde_json::from_str(summary_line).expect("summary is JSON");
    let count = |key: &str| json["summary"][key].as_u64().expect("summary count");
    let summary = Summary {
        checked: count("checked"),
        mismatches: count("mismatches"),
    };
    let first_mismatches: Vec<&str> = stdout
        .lines()
        .filter(|l| l.contains("\"expected\""))
        .take(10)
        .collect();
    assert!(
        out.status.success() && summary.mismatches == 0,
        "replay --check {} ({}): {summary_line}\nfirst mismatches:\n{}\n{stderr}",
        path.display(),
        out.status,
        first_mismatches.join("\n")
    );
    summary
}

/// Records `OPS` mmap answers of the kernel in `layout` and checks replay against them.
fn record_and_check(layout: &str, seed: u64) {
    let path: PathBuf = std::env::temp_dir().join(format!(
        "svmap-kernel-oracle-{layout}-{}.jsonl",
        std::process::id()
    ));
    let out = svmap()
        .args(["kernel-trace", "--layout", layout])
        .args(["--seed", &seed.to_string(), "--ops", &OPS.to_string(), "-o"])
        .arg(&path)
        .output()
        .expect("run svmap kernel-trace");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "svmap kernel-trace --layout {layout} --seed {seed} failed ({}):\n{stderr}",
        out.status
    );
    assert!(
        stderr.contains(&format!("kernel-trace: mmap {OPS} ops:")),
        "unexpected kernel-trace summary:\n{stderr}"
    );
    let summary = replay_check(&path);
    assert!(
        summary.checked >= OPS,
        "replay checked only {} results of {} (layout {layout})",
        summary.checked,
        path.display()
    );
    std::fs::remove_file(&path).ok();
}

#[test]
fn kernel_oracle_stack_8m() {
    record_and_check("8m", 2);
}

#[test]
fn kernel_oracle_stack_1g() {
    record_and_check("1g", 3);
}

#[test]
fn kernel_oracle_stack_unlimited() {
    record_and_check("unlimited", 4);
}

#[test]
fn kernel_oracle_legacy() {
    record_and_check("legacy", 5);
}

#[test]
fn recorded_traces_replay_without_mismatches() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/data");
    let mut traces: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|entry| entry.expect("directory entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
        .collect();
    traces.sort();
    assert!(!traces.is_empty(), "no *.jsonl traces in {}", dir.display());
    for path in traces {
        let summary = replay_check(&path);
        assert!(summary.checked > 0, "{} checked nothing", path.display());
    }
}

//! `svmap bench churn --json`: one JSON line that other tools read.

use std::process::Command;

#[test]
fn churn_json_has_the_fields_tools_read() {
    let out = Command::new(env!("CARGO_BIN_EXE_svmap"))
        .args([
            "bench", "churn", "--live", "1000", "--align", "2m", "--quick", "--json",
        ])
        .env("CI", "1")
        .output()
        .expect("run svmap bench");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).expect("utf-8");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 1, "one JSON line: {stdout}");
    let v: serde_json::Value = serde_json::from_str(lines[0]).expect("valid JSON");
    assert_eq!(v["impl"], "svmap");
    assert_eq!(v["n"], 1000);
    assert_eq!(v["align"], 2 << 20);
    assert_eq!(v["order"], "lowest");
    let ns = v["ns_per_pair"].as_f64().expect("ns_per_pair");
    let bytes = v["bytes_per_range"].as_f64().expect("bytes_per_range");
    assert!(ns > 0.0 && ns.is_finite(), "{ns}");
    // The map of 1000 ranges holds at least their starts and ends.
    assert!((16.0..1000.0).contains(&bytes), "{bytes}");
    // Every 2 MiB-aligned search examines one candidate hole.
    assert_eq!(v["holes_per_search"].as_f64(), Some(1.0));
}

#[test]
fn churn_refuses_bad_arguments() {
    for args in [
        &["bench", "churn"][..],
        &["bench", "churn", "--live", "0"],
        &["bench", "churn", "--live", "10", "--align", "3000"],
        &[
            "bench",
            "churn",
            "--live",
            "1000",
            "--align",
            "35184372088832",
        ],
        &["bench", "churn", "--live", "1", "--align", "0x800000000000"],
        &["bench", "churn", "--live", "2e7", "--align", "4m"],
        &["bench", "churn", "--live", "1e8"],
        &["bench", "churn", "--live", "1e40"],
        &["bench", "nope"],
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_svmap"))
            .args(args)
            .output()
            .expect("run svmap bench");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.starts_with("svmap bench: "), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        // The message names the option at fault.
        if let Some(opt) = args.iter().rev().find(|a| a.starts_with("--")) {
            assert!(err.contains(opt), "{args:?}: {err}");
        }
    }
}

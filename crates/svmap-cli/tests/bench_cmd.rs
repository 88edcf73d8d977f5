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

/// `svmap bench svm --json` with `devices` device processes.
fn svm_json(devices: &str) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_svmap"))
        .args([
            "bench",
            "svm",
            "--live",
            "200",
            "--steps",
            "300",
            "--devices",
            devices,
            "--json",
        ])
        .env("CI", "1")
        .output()
        .expect("run svmap bench svm");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).expect("utf-8");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 1, "one JSON line: {stdout}");
    serde_json::from_str(lines[0]).expect("valid JSON")
}

fn num(v: &serde_json::Value, k: &str) -> f64 {
    v[k].as_f64()
        .unwrap_or_else(|| panic!("{k} missing in {v}"))
}

#[test]
fn svm_json_reports_pairs_calls_and_memory_given_back() {
    for devices in [0u64, 1] {
        let v = svm_json(&devices.to_string());
        assert_eq!(v["live"], 200);
        assert_eq!(v["steps"], 300);
        assert_eq!(v["devices"], devices);
        assert_eq!(
            v["device_bits"].as_array().map(Vec::len),
            Some(devices as usize)
        );
        for k in [
            "ns_per_pair",
            "mmap_ns_per_pair",
            "memfd_ns_per_pair",
            "heap_ns_per_pair",
            "ratio_vs_mmap",
        ] {
            let x = num(&v, k);
            assert!(x > 0.0 && x.is_finite(), "{k} = {x}");
        }
        // The baselines' calls by construction.
        assert_eq!(num(&v, "mmap_syscalls_per_pair"), 2.0);
        assert_eq!(num(&v, "memfd_syscalls_per_pair"), 5.0);
        assert_eq!(num(&v, "heap_syscalls_per_pair"), 6.0);
        assert_eq!(v["mmap_live"], 200);
        // Without devices a pair costs at most one punch; with one, every
        // free is at least one request and its answer on the socket.
        let calls = num(&v, "syscalls_per_pair");
        let dev = num(&v, "device_syscalls_per_pair");
        if devices == 0 {
            assert!(calls <= 1.0, "{calls}");
            assert_eq!(dev, 0.0);
        } else {
            assert!(dev >= 2.0, "{dev}");
            assert!(calls >= dev, "{calls} < {dev}");
        }
        // The touched pages were shared memory, and all of it went back.
        let start = num(&v, "rss_shmem_start_kib");
        let peak = num(&v, "rss_shmem_peak_kib");
        let after = num(&v, "rss_shmem_after_free_kib");
        assert!(peak >= start + 200.0 * 4.0, "{start} -> {peak}");
        assert!(after <= start + start / 100.0, "{start} -> {after}");
    }
}

#[test]
fn svm_refuses_bad_arguments() {
    for (args, needle) in [
        (&["bench", "svm"][..], "--live N is required"),
        (&["bench", "svm", "--live", "2e6"], "1..=1e6"),
        (&["bench", "svm", "--live", "10", "--devices", "9"], "0..=8"),
        (&["bench", "svm", "--live", "10", "--steps", "0"], "1..=1e7"),
        (
            &["bench", "svm", "--live", "10", "--devices"],
            "--devices needs",
        ),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_svmap"))
            .args(args)
            .output()
            .expect("run svmap bench svm");
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(needle), "{args:?}: {err}");
    }
}

//! `svmap migrate-demo`: a range prefetched to a device process comes back
//! on real CPU faults, with the counts it prints; `svmap bench migrate`
//! refuses arguments it does not know.

use std::process::Command;

#[test]
fn migrate_demo_moves_every_granule_and_back() {
    let out = Command::new(env!("CARGO_BIN_EXE_svmap"))
        .arg("migrate-demo")
        .output()
        .expect("run svmap migrate-demo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Four 2 MiB granules go to the device and come back on four faults.
    assert!(
        stdout.contains("4 granules, 8388608 bytes moved to the device"),
        "{stdout}"
    );
    assert!(stdout.contains("now lives on device 0"), "{stdout}");
    assert!(
        stdout.contains("4 page faults, 4 granules and 8388608 bytes moved back"),
        "{stdout}"
    );
    assert!(stdout.contains("all sums match"), "{stdout}");
}

#[test]
fn migrate_commands_refuse_extra_arguments() {
    for args in [&["migrate-demo", "--bogus"][..], &["bench", "migrate", "x"]] {
        let out = Command::new(env!("CARGO_BIN_EXE_svmap"))
            .args(args)
            .output()
            .expect("run svmap");
        assert_eq!(out.status.code(), Some(2), "{args:?}");
    }
}

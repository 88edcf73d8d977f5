//! `svmap migrate-demo` (a range prefetched to a device process and read
//! back by the CPU through real page faults) and `svmap bench migrate`
//! (migration throughput and fault latency; docs/PERFORMANCE.md).

use std::ffi::OsString;

use svmap_runtime::migrate_bench;

use crate::args::{self, Arg};

/// Help text of `svmap migrate-demo`.
pub const HELP: &str = r#"svmap migrate-demo: page migration between this process and a device process

Usage: svmap migrate-demo

Starts one device process (a 40-bit device), allocates an 8 MiB SVM range
(four 2 MiB granules), writes it with the CPU, prefetches it to the device
(the pages leave this process: the device keeps them in its own memory and
the memfd is punched), lets the device sum it, then reads it with the CPU:
every granule comes back on a real page fault (userfaultfd). Prints the
fault and byte counts and checks that every sum matches.

Options:
  -h, --help   this help

Exit status: 0 every check held; 1 a check failed or migration is not
available here (userfaultfd refused); 2 usage error.
"#;

fn parse_none(args: &[OsString], help: &str) -> Result<(), i32> {
    let mut p = args::parser(args);
    match p.next() {
        Ok(None) => Ok(()),
        Ok(Some(Arg::Short('h') | Arg::Long("help"))) => {
            print!("{help}");
            Err(0)
        }
        Ok(Some(other)) => {
            eprintln!("svmap: {}", args::message(other.unexpected()));
            Err(2)
        }
        Err(e) => {
            eprintln!("svmap: {}", args::message(e));
            Err(2)
        }
    }
}

/// `svmap migrate-demo`.
pub fn run(args: &[OsString]) -> i32 {
    if let Err(rc) = parse_none(args, HELP) {
        return rc;
    }
    let r = match migrate_bench::demo(&svmap_peer::device_peer_command) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("svmap migrate-demo: {e}");
            return 1;
        }
    };
    let (a, e) = r.range;
    let p = r.after_prefetch;
    let q = r.after_read;
    println!("svmap migrate-demo: an 8 MiB SVM range [{a:#x}, {e:#x}) in 2 MiB granules, one device process");
    println!("(a) the CPU wrote it: sum {:#018x}", r.cpu_sum);
    println!(
        "(b) prefetched to the device in {:.2} ms: {} granules, {} bytes moved to the device; the first page now lives on {}",
        r.times.0.as_secs_f64() * 1e3,
        p.to_device,
        p.bytes_to_device,
        match r.location_after_prefetch {
            svmap_svm::Location::System => "system memory".to_string(),
            svmap_svm::Location::Device(d) => format!("device {d}"),
        }
    );
    println!(
        "(c) the device summed it from its own memory: {:#018x}",
        r.device_sum
    );
    println!(
        "(d) the CPU read it again in {:.2} ms: {} page faults, {} granules and {} bytes moved back: sum {:#018x}",
        r.times.1.as_secs_f64() * 1e3,
        q.cpu_faults - p.cpu_faults,
        q.to_system - p.to_system,
        q.bytes_to_system - p.bytes_to_system,
        r.cpu_sum_after
    );
    let ok = r.device_sum == r.cpu_sum
        && r.cpu_sum_after == r.cpu_sum
        && p.to_device == 4
        && q.cpu_faults == 4
        && q.bytes_to_system == 8 << 20;
    println!(
        "{}",
        if ok {
            "all sums match; every granule went to the device and came back on a CPU fault"
        } else {
            "MISMATCH: a sum or a count is not what it should be"
        }
    );
    if ok {
        0
    } else {
        1
    }
}

/// `svmap bench migrate` (after the word `migrate`).
pub fn bench(args: &[OsString]) -> i32 {
    if let Err(rc) = parse_none(args, crate::bench_cmd::HELP) {
        return rc;
    }
    let rows = match migrate_bench::bench(&svmap_peer::device_peer_command) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("svmap bench migrate: {e}");
            return 1;
        }
    };
    println!("| granule | bytes | to device | to system | memcpy | CPU fault + migrate back, per granule | first touch of fresh anonymous memory, per granule |");
    println!("| --- | --- | --- | --- | --- | --- | --- |");
    for r in rows {
        println!(
            "| {} KiB | {} MiB | {:.2} GB/s | {:.2} GB/s | {:.2} GB/s | {:.1} us ({} faults) | {:.1} us |",
            r.granule >> 10,
            r.bytes >> 20,
            r.to_device_bps / 1e9,
            r.to_system_bps / 1e9,
            r.memcpy_bps / 1e9,
            r.fault_migrate.as_secs_f64() * 1e6,
            r.faults,
            r.anon_fault.as_secs_f64() * 1e6,
        );
    }
    0
}

//! `svmap demo` as a library call (`svmap_cli::demo`): every step's
//! outcome, the time, and the picture. Both device processes are this test
//! binary itself, re-executed to run only `peer_role` (as in the `svmap-peer`
//! crate's `tests/peer.rs`).

use std::process::{Command, Stdio};
use std::time::Instant;

use svmap_cli::demo::{self, DemoOptions, LIST_NODES};
use svmap_linux::inspect;
use svmap_linux::maps::Target;
use svmap_peer::{device, FAILPOINT_ENV, PEER_FD_ENV};
use svmap_runtime::Touch;
use svmap_svm::Fault;
use svmap_viz::{hex, xml};

#[test]
fn peer_role() {
    if std::env::var_os(PEER_FD_ENV).is_some() {
        std::process::exit(device::serve_from_env());
    }
}

/// One demo at a time: each seeds its engine with this process's
/// mappings, and the other's buffers would appear behind its back.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn peer_command() -> Command {
    let mut c = Command::new(std::env::current_exe().unwrap());
    c.args([
        "--exact",
        "peer_role",
        "--nocapture",
        "--test-threads=1",
        "-q",
    ])
    .stdout(Stdio::null())
    .env_remove(FAILPOINT_ENV);
    c
}

#[test]
fn the_whole_story() {
    let _one = serial();
    let dir = std::env::temp_dir().join(format!("svmap-demo-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let svg_path = dir.join("demo.svg");
    let opts = DemoOptions {
        svg: Some(svg_path.clone()),
        ..DemoOptions::default()
    };
    let t = Instant::now();
    let r = demo::run_with(&opts, peer_command).unwrap_or_else(|e| panic!("{e}"));
    let took = t.elapsed();
    println!("{r}\n{}", r.to_json());
    // The demo's own clock runs inside ours (no speed check: CI is loaded).
    assert!(r.total <= took, "{:?} > {took:?}", r.total);
    let limit = 1u64 << 40;
    assert_eq!((r.va_bits, r.limit), (40, limit));

    // (a)
    assert!(r.inspect.vmas > 5);
    assert!(r.inspect.largest_free.0 < r.inspect.largest_free.1);
    assert!(r.inspect.largest_free.1 <= limit);
    // (b) two device processes of 40 and 44 bits, neither of them us.
    let devs = &r.devices.devices;
    let bits: Vec<u32> = devs.iter().map(|d| d.va_bits).collect();
    assert_eq!(bits, [40, 44]);
    assert_ne!(devs[0].pid, devs[1].pid);
    assert!(devs.iter().all(|d| d.pid != std::process::id()));
    assert!(r.devices.seeded_vmas > 5);
    // (c) below both limits, disjoint, the same sum on every side.
    assert_eq!(r.buffers.buffers.len(), 8);
    assert!(r.buffers.identical_in_devices);
    let mut sorted = r.buffers.buffers.clone();
    sorted.sort_unstable();
    for w in sorted.windows(2) {
        assert!(w[0].1 <= w[1].0, "{:x?} overlap", w);
    }
    for &(s, e) in &r.buffers.buffers {
        assert!(s < e && e <= limit, "[{s:#x}, {e:#x})");
        assert!((e - s) * 8 >= LIST_NODES * 16);
    }
    assert_eq!(r.buffers.device_sums.len(), 2);
    assert!(r.buffers.matches(), "{:?}", r.buffers);
    assert_ne!(r.buffers.cpu_sum, 0);
    // (d) both devices walk the whole list.
    assert!(r.list.matches(), "{:?}", r.list);
    assert_eq!(r.list.walks.len(), 2);
    for w in &r.list.walks {
        assert_eq!((w.count, w.checksum), (LIST_NODES, r.list.cpu_checksum));
        assert!(w.tlb_hits + w.page_walks >= 2 * LIST_NODES, "{w:?}");
        assert!(w.tlb_misses > 0);
    }
    // (e) the regions: a forked child dies of SIGSEGV on the fault region
    // and on a write to the dummy page; the CPU reads zeros where the
    // device keeps non-zero data of its own.
    let g = &r.regions;
    assert_eq!(g.fault_touch, Touch::Signal(demo::SIGSEGV));
    assert_eq!(g.dummy_write_touch, Touch::Signal(demo::SIGSEGV));
    assert_eq!(g.dummy_cpu_sum, 0);
    assert_ne!(g.device_wrote, 0);
    assert_eq!(g.device_read, g.device_wrote);
    assert!(g.other_device_faults);
    assert!(g.fault.1 <= limit && g.dummy.1 <= limit);
    for &(s, e) in &r.buffers.buffers {
        for reg in [g.fault, g.dummy] {
            assert!(e <= reg.0 || reg.1 <= s, "region {reg:x?} on a buffer");
        }
    }
    assert!(g.ok());
    // (f) node 1 is the first word of the freed buffer: both devices fault
    // there, and both counted an invalidation.
    assert_eq!(r.free.buffer, r.buffers.buffers[1]);
    assert_eq!(r.free.faults.len(), 2);
    for f in &r.free.faults {
        assert_eq!(*f, Some((Fault::Unmapped, r.free.buffer.0)));
    }
    assert!(r.free.invalidations.iter().all(|&n| n >= 1));
    // (g) the early Vec lies above 2^40 in the top-down layout and is
    // refused with a message naming the range and the limit.
    let (s, e) = r.above.range;
    if s >= limit {
        let msg = r.above.refused.as_deref().expect("refused");
        assert!(msg.contains(&format!("{s:#x}")), "{msg}");
        assert!(msg.contains(&format!("{e:#x}")), "{msg}");
        assert!(msg.contains(&format!("{limit:#x}")), "{msg}");
        assert!(r.above.vmas_above >= 1);
    } else {
        println!("legacy layout: the early Vec is below the limit ({s:#x})");
    }
    assert!(r.ok());

    // (h) the picture: the CPU and both devices.
    let (path, n) = r.svg.clone().expect("a picture");
    assert_eq!(path, svg_path);
    let svg = std::fs::read_to_string(&svg_path).unwrap();
    assert_eq!(svg.len(), n);
    xml::check(&svg).unwrap_or_else(|e| panic!("{e}"));
    for (i, &(s, e)) in r.buffers.buffers.iter().enumerate() {
        let t = format!("[{}, {})", hex(s), hex(e));
        assert!(svg.contains(&t), "buffer {i} {t}");
    }
    for needle in [
        "buffer 1: freed",
        "early Vec",
        "device limit 2^40",
        "device limit 2^44",
        "fault region",
        "dummy-page region",
        "device-only region: device memory",
    ] {
        assert!(svg.contains(needle), "{needle}");
    }
    for d in devs {
        assert!(svg.contains(&format!("process {}", d.pid)), "{d:?}");
    }

    // The JSON is one object with the outcome.
    let j = r.to_json();
    let text = j.to_string();
    assert!(text.starts_with("{\"ok\":true,"), "{text}");
    assert_eq!(j["free"]["faults"][0]["fault"], "unmapped", "{text}");
    assert_eq!(
        j["free"]["faults"][1]["addr"],
        format!("{:#x}", r.free.buffer.0)
    );
    assert_eq!(j["buffers"]["count"], 8);
    assert_eq!(j["list"]["walks"][1]["count"], LIST_NODES);
    assert_eq!(j["regions"]["fault_touch"]["signal"], demo::SIGSEGV);
    assert_eq!(j["devices"]["list"][1]["va_bits"], 44);

    if let Some(keep) = std::env::var_os("SVMAP_DEMO_KEEP") {
        std::fs::copy(&svg_path, std::path::Path::new(&keep).join("demo.svg")).unwrap();
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The steps' checks fail when their evidence is wrong.
#[test]
fn the_checks_catch_wrong_outcomes() {
    let _one = serial();
    let opts = DemoOptions {
        svg: None,
        buffers: 2,
        ..DemoOptions::default()
    };
    let r = demo::run_with(&opts, peer_command).unwrap_or_else(|e| panic!("{e}"));
    assert!(r.ok(), "{r}");
    let mut bad = r.clone();
    bad.buffers.device_sums[1] ^= 1;
    assert!(!bad.ok() && bad.to_string().contains("DIFFERENT sums"));
    let mut bad = r.clone();
    bad.list.walks[0].checksum ^= 1;
    assert!(!bad.ok() && bad.to_string().contains("MISMATCH"));
    let mut bad = r.clone();
    bad.regions.fault_touch = Touch::Completed;
    assert!(!bad.ok());
    let mut bad = r.clone();
    bad.regions.dummy_cpu_sum = 1;
    assert!(!bad.ok() && bad.to_string().contains("NOT zeros"));
    let mut bad = r.clone();
    bad.free.faults[1] = None;
    assert!(!bad.ok() && bad.to_string().contains("gpu1 did NOT fault"));
    let mut bad = r.clone();
    bad.buffers.identical_in_devices = false;
    assert!(!bad.ok() && bad.to_string().contains("SOME STEPS FAILED"));
}

#[test]
fn bad_options_are_refused() {
    for o in [
        DemoOptions {
            va_bits: 12,
            ..DemoOptions::default()
        },
        DemoOptions {
            buffers: 1,
            ..DemoOptions::default()
        },
        DemoOptions {
            second_va_bits: 57,
            ..DemoOptions::default()
        },
    ] {
        let e = demo::run_with(&o, peer_command).unwrap_err();
        assert_eq!(e.step, "options");
    }
}

#[test]
fn inspect_picture_is_well_formed() {
    let rep = inspect::report(Target::SelfProcess, 40).unwrap();
    let svg = demo::inspect_svg(&rep);
    xml::check(&svg).unwrap_or_else(|e| panic!("{e}"));
    assert!(svg.contains("device limit 2^40"));
    assert!(svg.contains("free window #1"));
    assert!(svg.contains(&format!("process {}", rep.pid)));
}

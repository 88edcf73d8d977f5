//! `svmap demo` as a library call (`svmap_cli::demo`): every step's
//! outcome, the time, and the picture. The device peer is this test binary
//! itself, re-executed to run only `peer_role` (as in the `svmap-peer`
//! crate's `tests/peer.rs`).

use std::process::{Command, Stdio};
use std::time::Instant;

use svmap_cli::demo::{self, DemoOptions, LIST_NODES};
use svmap_linux::inspect;
use svmap_linux::maps::Target;
use svmap_peer::{device, FAILPOINT_ENV, PEER_FD_ENV};
use svmap_svm::Fault;
use svmap_viz::{hex, xml};

#[test]
fn peer_role() {
    if std::env::var_os(PEER_FD_ENV).is_some() {
        std::process::exit(device::serve_from_env());
    }
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
fn the_whole_story_in_under_ten_seconds() {
    let dir = std::env::temp_dir().join(format!("svmap-demo-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let svg_path = dir.join("demo.svg");
    let opts = DemoOptions {
        svg: Some(svg_path.clone()),
        ..DemoOptions::default()
    };
    let t = Instant::now();
    let r = demo::run_with(&opts, peer_command()).unwrap_or_else(|e| panic!("{e}"));
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
    // (b) the window is below the limit.
    let (ws, we) = r.peer.window;
    assert!(ws < we && we <= limit, "{ws:#x}..{we:#x}");
    assert_ne!(r.peer.pid, std::process::id());
    // (c)
    assert_eq!(r.buffers.buffers.len(), 8);
    assert!(r.buffers.identical_in_peer);
    for b in &r.buffers.buffers {
        assert!(b.addr >= ws && b.end() <= we);
        assert!(b.len * 8 >= LIST_NODES * 16);
    }
    // (d)
    assert!(r.list.matches(), "{:?}", r.list);
    assert_eq!(r.list.device_count, LIST_NODES);
    assert!(
        r.list.tlb_hits + r.list.page_walks >= 2 * LIST_NODES,
        "{:?}",
        r.list
    );
    assert!(r.list.tlb_misses > 0);
    // (e) node 1 is the first word of the freed buffer.
    assert_eq!(r.free.buffer, r.buffers.buffers[1]);
    assert_eq!(r.free.fault, Some((Fault::Unmapped, r.free.buffer.addr)));
    assert!(r.free.invalidations >= 1);
    // (f) the early Vec lies above 2^40 in the top-down layout and is
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
    assert_eq!(r.peer_exit, "exit code 0");

    // (g) the picture.
    let (path, n) = r.svg.clone().expect("a picture");
    assert_eq!(path, svg_path);
    let svg = std::fs::read_to_string(&svg_path).unwrap();
    assert_eq!(svg.len(), n);
    xml::check(&svg).unwrap_or_else(|e| panic!("{e}"));
    for (i, b) in r.buffers.buffers.iter().enumerate() {
        let t = format!("[{}, {})", hex(b.addr), hex(b.end()));
        assert!(svg.contains(&t), "buffer {i} {t}");
    }
    assert!(svg.contains("buffer 1: freed"));
    assert!(svg.contains("early Vec"));
    assert!(svg.contains("device limit 2^40"));
    assert!(svg.contains("SVM window (reserved in both)"));

    // The JSON is one object with the outcome.
    let j = r.to_json();
    let text = j.to_string();
    assert!(text.starts_with("{\"ok\":true,"), "{text}");
    assert_eq!(j["free"]["fault"], "unmapped", "{text}");
    assert_eq!(j["free"]["addr"], format!("{:#x}", r.free.buffer.addr));
    assert_eq!(j["buffers"]["count"], 8);
    assert_eq!(j["list"]["device_count"], LIST_NODES);
    assert_eq!(j["peer_exit"], "exit code 0");

    if let Some(keep) = std::env::var_os("SVMAP_DEMO_KEEP") {
        std::fs::copy(&svg_path, std::path::Path::new(&keep).join("demo.svg")).unwrap();
    }
    std::fs::remove_dir_all(&dir).unwrap();
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
    ] {
        let e = demo::run_with(&o, peer_command()).unwrap_err();
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

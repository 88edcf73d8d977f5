//! The runtime's window reserved at start-up ([`svmap_runtime::start`]):
//! after it, the application's own mappings land outside the window while
//! every SVM range lands inside it, with the engine never told about the
//! application's mappings (no `/proc` read); a window that cannot be had is
//! a typed error naming why.

use svmap_linux::reserve::Reservation;
use svmap_runtime::{start, LinuxCpu, StartConfig, StartError, DEFAULT_WINDOW_CAP};
use svmap_svm::{DeviceConfig, EngineError, ModelDevice, SvmError};

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

/// The tests of this file map and reserve in one process, and the first
/// one reads where `mmap(NULL)` goes: they take turns, so that no other
/// test's mapping lands between its probe and its start-up.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn inside(pieces: &[(u64, u64)], s: u64, e: u64) -> bool {
    pieces.iter().any(|&(a, b)| a <= s && e <= b)
}

fn overlaps(pieces: &[(u64, u64)], s: u64, e: u64) -> bool {
    pieces.iter().any(|&(a, b)| a < e && s < b)
}

/// A device as wide as the CPU: its window is where the application's
/// `mmap(NULL)` goes. Once the window is reserved, a burst of the
/// application's mappings lands outside it, and SVM ranges chosen by an
/// engine that never heard of those mappings land inside it without a
/// collision.
#[test]
fn the_application_maps_outside_the_window_and_svm_ranges_inside() {
    let _one = serial();
    // Where the application's mappings go before start-up: a large
    // allocation is an mmap(NULL) (above glibc's largest mmap threshold).
    let probe_len = 48 * MIB as usize;
    let probe = vec![0u8; probe_len];
    let p = probe.as_ptr() as u64;
    drop(probe);
    let cfg0 = StartConfig::default();
    let high = cfg0.mm.task_size & !0xfff;
    assert!(p < high, "mmap(NULL) lies below task_size");
    // A window from 1 GiB below the probe up to the top.
    let len = high - ((p & !(GIB - 1)) - GIB);
    let cfg = StartConfig {
        window: Some(len),
        ..cfg0
    };
    let started = start(
        &cfg,
        LinuxCpu::new(false),
        vec![(DeviceConfig::new("wide", 47), ModelDevice)],
    )
    .unwrap();
    let mut engine = started.engine;
    let pieces = started.window.reserved.clone();
    let cut = high - len;
    assert!(!pieces.is_empty());
    assert!(pieces.iter().all(|&(s, e)| cut <= s && e <= high));
    // Where the probe was is reserved now: without the reservation the
    // application's next mapping would have gone there.
    assert!(
        inside(&pieces, p, p + probe_len as u64),
        "probe {p:#x} not in {pieces:#x?}"
    );
    // The application maps a burst (its own mmap(NULL) calls).
    let burst: Vec<Vec<u8>> = (0..16).map(|_| vec![0u8; probe_len]).collect();
    for b in &burst {
        let s = b.as_ptr() as u64;
        assert!(
            !overlaps(&pieces, s, s + probe_len as u64),
            "the application's mapping {s:#x} landed in the window"
        );
    }
    // SVM ranges: every one inside the reservation, no refresh needed
    // (the engine's plain svm_alloc, which reads no /proc file).
    let mut live = Vec::new();
    for k in 0..32u64 {
        let size = (k % 5 + 1) * 0x10000;
        let a = engine.svm_alloc(size, None, &["wide"], false).unwrap();
        assert!(inside(&pieces, a, a + size), "{a:#x} outside the window");
        engine.cpu_backend_mut().write_u64(a, k + 1).unwrap();
        live.push((a, k + 1));
    }
    for &(a, v) in &live {
        assert_eq!(engine.cpu_backend().read_u64(a).unwrap(), v);
        engine.svm_free(a).unwrap();
    }
    drop(burst);
}

/// Devices of 40 and 44 bits: the default window is the top of the common
/// window below 2^40, [`DEFAULT_WINDOW_CAP`] bytes of it, and ranges for
/// either device or both are carved from it.
#[test]
fn the_default_window_lies_below_the_lowest_limit() {
    let _one = serial();
    let started = start(
        &StartConfig::default(),
        LinuxCpu::new(false),
        vec![
            (DeviceConfig::new("gpu40", 40), ModelDevice),
            (DeviceConfig::new("gpu44", 44), ModelDevice),
        ],
    )
    .unwrap();
    let w = &started.window;
    assert_eq!(w.end, 1 << 40);
    let pieces = w.reserved.clone();
    let cut = (1u64 << 40) - DEFAULT_WINDOW_CAP;
    assert!(pieces.iter().all(|&(s, e)| cut <= s && e <= 1 << 40));
    let held = w.reserved_bytes();
    assert!(held > 0 && held <= DEFAULT_WINDOW_CAP, "{held:#x}");
    let mut engine = started.engine;
    for set in [&["gpu40"][..], &["gpu44"], &["gpu40", "gpu44"]] {
        let a = engine.svm_alloc(2 * MIB, None, set, false).unwrap();
        assert!(inside(&pieces, a, a + 2 * MIB), "{set:?}: {a:#x}");
        engine.svm_free(a).unwrap();
    }
}

/// Start-ups that cannot have their window: each a typed error that says
/// why, derived from the request.
#[test]
fn a_window_that_cannot_be_had_is_a_typed_error() {
    let _one = serial();
    let cfg = StartConfig::default();
    let floor = cfg.mm.mmap_min_addr;
    let no_devs: Vec<(DeviceConfig, ModelDevice)> = Vec::new();
    assert!(matches!(
        start(&cfg, LinuxCpu::new(false), no_devs),
        Err(StartError::NoDevices)
    ));
    // A 12-bit device ends below mmap_min_addr: no common window.
    match start(
        &cfg,
        LinuxCpu::new(false),
        vec![(DeviceConfig::new("tiny", 12), ModelDevice)],
    ) {
        Err(StartError::NoCommonWindow { floor: f, limit }) => {
            assert_eq!((f, limit), (floor, 1 << 12))
        }
        other => panic!("{other:?}"),
    }
    // More than the common window has.
    let big = StartConfig {
        window: Some(1 << 41),
        ..cfg.clone()
    };
    match start(
        &big,
        LinuxCpu::new(false),
        vec![(DeviceConfig::new("gpu40", 40), ModelDevice)],
    ) {
        Err(e @ StartError::WindowSize { .. }) => {
            let StartError::WindowSize {
                requested,
                available,
            } = e
            else {
                unreachable!()
            };
            assert_eq!((requested, available), (1 << 41, (1 << 40) - floor));
            assert!(StartError::WindowSize {
                requested,
                available
            }
            .to_string()
            .contains("common window"));
        }
        other => panic!("{other:?}"),
    }
    // The window is already taken (a reservation of this process covers
    // it): the space has no free part to reserve.
    let top = 1u64 << 36;
    let taken = Reservation::at(top - 64 * MIB, 64 * MIB).unwrap();
    let small = StartConfig {
        window: Some(64 * MIB),
        ..cfg
    };
    match start(
        &small,
        LinuxCpu::new(false),
        vec![(DeviceConfig::new("gpu36", 36), ModelDevice)],
    ) {
        Err(StartError::Window(EngineError::Svm(SvmError::WindowFull { start, end }))) => {
            assert_eq!((start, end), (top - 64 * MIB, top))
        }
        other => panic!("{other:?}"),
    }
    drop(taken);
}

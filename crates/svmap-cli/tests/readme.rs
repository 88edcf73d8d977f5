//! What the README promises, checked: its examples on real memory run (the
//! README shows exactly the bodies of `real_memory_example` and
//! `runtime_example` between the markers), and the public types it calls
//! thread safe are `Send + Sync`.

use std::error::Error;

#[test]
#[allow(unsafe_code)]
fn real_memory_example() -> Result<(), Box<dyn Error>> {
    // README BEGIN
    use svmap_linux::heap::Heap;
    use svmap_linux::reserve::{Reservation, ReserveRequest};

    // 64 MiB of this process's address space below 2^40, reserved with
    // MAP_FIXED_NOREPLACE | MAP_NORESERVE and PROT_NONE: no memory yet, and
    // out of the guard gap below the stack.
    let res = Reservation::reserve(&ReserveRequest::below_bits(40, 64 << 20)?)?;
    let (low, high) = (res.addr(), res.end());
    assert!(high <= 1 << 40 && high - low == 64 << 20);
    // A heap in it: every buffer is a sealed memfd mapped at its address,
    // which a device process can map at the same address.
    let mut heap = Heap::new(res);
    let buf = heap.alloc(1 << 20, 2 << 20)?; // 1 MiB, 2 MiB aligned
    let addr = buf.as_ptr() as u64;
    assert!(low <= addr && addr + (1 << 20) <= high && addr.is_multiple_of(2 << 20));
    // SAFETY: `buf` is a live, zero-filled, read-write buffer of 1 MiB that
    // nothing else uses until `free` below.
    let bytes = unsafe { std::slice::from_raw_parts_mut(buf.as_ptr(), 1 << 20) };
    assert!(bytes.iter().all(|&b| b == 0));
    bytes[..5].copy_from_slice(b"hello");
    // Free: the memory goes back to the system; the range stays reserved.
    heap.free(buf)?;
    // README END
    Ok(())
}

/// Serves as the device process of `runtime_example` when this test
/// binary is run again with `SVMAP_PEER_FD` set (and does nothing in a
/// normal test run).
#[test]
fn peer_role() {
    if std::env::var_os(svmap_peer::PEER_FD_ENV).is_some() {
        std::process::exit(svmap_peer::device::serve_from_env());
    }
}

/// The command that starts a device process: in the `svmap` binary,
/// `svmap_peer::device_peer_command()`; here, this test binary running
/// only `peer_role`.
fn device_process() -> std::process::Command {
    let mut c = std::process::Command::new(std::env::current_exe().unwrap());
    c.args([
        "--exact",
        "peer_role",
        "--nocapture",
        "--test-threads=1",
        "-q",
    ])
    .stdout(std::process::Stdio::null());
    c
}

#[test]
fn heap_example() -> Result<(), Box<dyn Error>> {
    // README HEAP BEGIN
    use svmap_core::{FitRequest, HeapError, VaHeap};

    // A GPU's 48-bit VA heap as a driver keeps it: all free but the first page.
    let mut heap = VaHeap::with_free(0x1000, 1 << 48)?;
    let req = |length: u64, align: u64, topdown: bool| FitRequest {
        length,
        low: 0,
        high: 1 << 48,
        align,
        align_offset: 0,
        topdown,
        respect_guard_gaps: false,
    };
    let a = heap.alloc(&req(0x3000, 0x1000, false))?; // lowest first
    let b = heap.alloc(&req(0x2000, 0x1000, false))?;
    assert_eq!((a, b), (0x1000, 0x4000));
    // 12 KiB that must not cross a 16 KiB boundary: 0x6000 would, so 0x8000.
    let c = heap.alloc_nocross(&req(0x3000, 0x1000, false), 0x4000)?;
    assert_eq!(c, 0x8000);
    // The exact 2 MiB-aligned fit, and the highest page.
    assert_eq!(heap.alloc(&req(0x200000, 0x200000, false))?, 0x200000);
    assert_eq!(heap.alloc(&req(0x1000, 0x1000, true))?, (1 << 48) - 0x1000);
    // A free merges with its neighbours; a double free changes nothing.
    heap.free(b, b + 0x2000)?;
    let again = heap.free(b, b + 0x2000);
    assert!(matches!(again, Err(HeapError::AlreadyFree { .. })));
    assert_eq!(heap.holes().next(), Some((0x4000, 0x8000)));
    // README HEAP END
    Ok(())
}

#[test]
fn runtime_example() -> Result<(), Box<dyn Error>> {
    // README RUNTIME BEGIN
    use svmap_peer::PeerConfig;
    use svmap_runtime::{seed_from_self, svm_alloc, LinuxCpu, PeerDevice};
    use svmap_svm::{DeviceConfig, Engine, Prot};

    // The engine on this process: it decides every address; the Linux CPU
    // backend carries the decisions out (MAP_FIXED_NOREPLACE mappings of
    // memfds; it never maps over anything it does not own).
    let cpu = LinuxCpu::new(false);
    let heaps = cpu.directory(); // the memfds, for the device processes
    let mut engine: Engine<LinuxCpu, PeerDevice> = Engine::new(Default::default(), cpu);
    seed_from_self(&mut engine)?; // this process's mappings (/proc/self/maps)
                                  // A device process hosting a device with a 40-bit MMU.
    let dev = PeerDevice::spawn(device_process(), &PeerConfig::new(40, 1), heaps)?;
    engine.add_device_with(DeviceConfig::new("gpu0", 40), dev)?;
    // 1 MiB at the same address here and in the device process, below 2^40
    // (svm_alloc refreshes from /proc/self/maps once if a mapping made since
    // the seeding is in the way).
    let a = svm_alloc(&mut engine, 1 << 20, None, &["gpu0"], false)?;
    assert!(a + (1 << 20) <= 1 << 40);
    engine.cpu_backend_mut().write_u64(a + 8, 42)?; // a checked CPU store
    let device = &mut engine.device_backends_mut()[0];
    assert_eq!(device.peer().sum_u64(a, 16)?, 42); // the device reads it at `a`
                                                   // Read-only for everyone: the device is invalidated first.
    engine.protect(a, 1 << 20, Prot::Read)?;
    assert!(engine.cpu_backend_mut().write_u64(a, 1).is_err());
    // Free: the device invalidates and acknowledges, then the memory goes
    // back; the device's next access faults.
    engine.svm_free(a)?;
    assert!(engine.device_backends_mut()[0]
        .peer()
        .sum_u64(a, 8)
        .is_err());
    // README RUNTIME END
    Ok(())
}

/// The lines of this file between the README markers `tag`, without the
/// function's indentation.
fn example_body_of(tag: &str) -> String {
    let src = include_str!("readme.rs");
    let open = format!("// README {tag}BEGIN\n");
    let begin = src.find(&open).expect("begin marker") + open.len();
    let end = src[begin..]
        .find(&format!("    // README {tag}END"))
        .expect("end marker")
        + begin;
    src[begin..end]
        .lines()
        .map(|l| l.strip_prefix("    ").unwrap_or(l))
        .map(|l| format!("{l}\n"))
        .collect()
}

fn example_body() -> String {
    example_body_of("")
}

#[test]
fn the_readme_shows_the_example_that_runs() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../README.md");
    let readme =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let body = example_body();
    assert!(body.contains("Heap::new"), "{body}");
    assert!(
        readme.contains(&format!("```rust\n{body}```\n")),
        "README.md does not show this example verbatim in a ```rust block:\n{body}"
    );
    let body = example_body_of("HEAP ");
    assert!(body.contains("VaHeap::with_free"), "{body}");
    assert!(
        readme.contains(&format!("```rust\n{body}```\n")),
        "README.md does not show the heap example verbatim in a ```rust block:\n{body}"
    );
    let body = example_body_of("RUNTIME ");
    assert!(body.contains("PeerDevice::spawn"), "{body}");
    assert!(
        readme.contains(&format!("```rust\n{body}```\n")),
        "README.md does not show the runtime example verbatim in a ```rust block:\n{body}"
    );
}

fn send_sync<T: Send + Sync>() {}

#[test]
fn public_types_are_send_and_sync() {
    // A compile-time check: this file does not build if one is not.
    send_sync::<svmap_core::AddressMap>();
    send_sync::<svmap_core::VaHeap>();
    send_sync::<svmap_core::linux::Mm>();
    send_sync::<svmap_linux::reserve::Reservation>();
    send_sync::<svmap_linux::heap::Heap>();
    send_sync::<svmap_peer::Peer>();
    send_sync::<svmap_linux::fence::Fence>();
    send_sync::<svmap_linux::maps::View>();
    send_sync::<svmap_linux::error::Error>();
    send_sync::<svmap_trace::SvmExecutor>();
    send_sync::<svmap_trace::CpuExecutor>();
    send_sync::<svmap_trace::ReplayError>();
    // The SVM space, reached through the executor (this crate does not
    // depend on svmap-svm directly).
    fn space_of<T: Send + Sync>(_: &T) {}
    space_of(svmap_trace::SvmExecutor::default().space());
}

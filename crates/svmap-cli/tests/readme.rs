//! What the README promises, checked: its example on real memory runs (the
//! README shows exactly the body of `real_memory_example` between the
//! markers), and the public types it calls thread safe are `Send + Sync`.

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

/// The lines of this file between the README markers, without the
/// function's indentation.
fn example_body() -> String {
    let src = include_str!("readme.rs");
    let begin = src.find("// README BEGIN\n").expect("begin marker") + "// README BEGIN\n".len();
    let end = src[begin..].find("    // README END").expect("end marker") + begin;
    src[begin..end]
        .lines()
        .map(|l| l.strip_prefix("    ").unwrap_or(l))
        .map(|l| format!("{l}\n"))
        .collect()
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
}

fn send_sync<T: Send + Sync>() {}

#[test]
fn public_types_are_send_and_sync() {
    // A compile-time check: this file does not build if one is not.
    send_sync::<svmap_core::AddressMap>();
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

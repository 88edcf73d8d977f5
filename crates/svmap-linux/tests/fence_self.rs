//! `Fence::install`: the fence as a library call, in a child process (the
//! fence changes the whole process, so it runs in a re-executed copy of this
//! test binary, never in the multi-threaded test harness itself).

use std::collections::HashSet;
use std::process::Command;

use svmap_linux::fence::Fence;
use svmap_linux::maps::{read_view, Target};

const ROLE: &str = "SVMAP_TEST_FENCE_SELF_CHILD";
const VA_BITS: u32 = 40;

/// The child: fence itself, allocate in many ways, check where it all went.
fn child() {
    let before: HashSet<(u64, u64)> = read_view(Target::SelfProcess)
        .expect("maps before")
        .entries
        .iter()
        .map(|e| (e.start, e.end))
        .collect();
    let fence = Fence::install(VA_BITS).expect("install the fence");
    assert!(
        fence.uncovered.is_empty(),
        "uncovered: {:x?}",
        fence.uncovered
    );
    assert!(
        fence.reserved_bytes() > 1 << 40,
        "reserved only {:#x}",
        fence.reserved_bytes()
    );
    let limit = fence.limit;
    // A large buffer (malloc uses mmap), many small objects (brk must fail
    // after the fence, so malloc maps arenas), and a thread (its stack).
    let big = vec![1u8; 200 << 20];
    let small: Vec<Box<[u64; 8]>> = (0..200_000).map(|i| Box::new([i; 8])).collect();
    let handle = std::thread::spawn(|| {
        let v = vec![7u8; 8 << 20];
        v.iter().map(|&b| b as u64).sum::<u64>()
    });
    let sum = handle.join().expect("thread");
    assert_eq!(sum, 7 * (8 << 20));
    // What may lie above the limit: the fence's own pieces and whatever was
    // mapped before it (the kernel merges a piece with an adjacent
    // PROT_NONE mapping, so compare coverage, not exact ranges).
    let mut allowed: Vec<(u64, u64)> = fence.pieces();
    allowed.extend(before.iter().copied());
    allowed.sort_unstable();
    let covered = |mut s: u64, e: u64| {
        for &(a, b) in &allowed {
            if a <= s && s < b {
                s = b;
            }
            if s >= e {
                return true;
            }
        }
        s >= e
    };
    let after = read_view(Target::SelfProcess).expect("maps after");
    let mut new_below = 0;
    for e in &after.entries {
        if before.contains(&(e.start, e.end)) {
            continue;
        }
        if e.end <= limit {
            new_below += 1;
            continue;
        }
        assert!(
            covered(e.start.max(limit), e.end),
            "new mapping [{:#x}, {:#x}) {} lies above 2^{VA_BITS}",
            e.start,
            e.end,
            e.name_lossy()
        );
    }
    assert!(
        new_below >= 2,
        "the allocations made no new mappings ({new_below})"
    );
    assert_eq!(big[big.len() - 1], 1);
    assert_eq!(small[199_999][7], 199_999);
    drop(fence);
    println!("fence-self-ok {new_below}");
}

#[test]
fn fence_install_keeps_later_allocations_below_the_limit() {
    if std::env::var_os(ROLE).is_some() {
        child();
        return;
    }
    let exe = std::env::current_exe().expect("test binary");
    let out = Command::new(exe)
        .args([
            "--exact",
            "fence_install_keeps_later_allocations_below_the_limit",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(ROLE, "1")
        .output()
        .expect("run the child");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("fence-self-ok"),
        "child failed: {}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
}

#[test]
fn fence_rejects_bad_widths() {
    assert!(Fence::install(8).is_err());
    assert!(Fence::install(64).is_err());
}

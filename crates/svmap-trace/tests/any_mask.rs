//! `find` takes any `align_mask`, as the kernel's `vm_unmapped_area()`
//! does: a mask that is not `2^k - 1` replays without a panic (or a debug
//! assertion) and answers the kernel's arithmetic.

use svmap_trace::{replay_status, EXIT_OK};

#[test]
fn find_with_a_non_contiguous_mask_answers_the_kernels_arithmetic() {
    // One VMA at [0x400000, 0x401000). Bottom-up from 0x401000:
    // gap = 0x401000 + ((0 - 0x401000) & 0x5000) = 0x401000 + 0x5000.
    // Top-down below 0x800000: gap = 0x7ff000 - (0x7ff000 & 0x5000)
    // = 0x7ff000 - 0x5000. Neither is congruent to 0 under the mask. A mask
    // near 2^64 pads past 2^64: ENOMEM. Mask 0x1001, offset 1, top-down:
    // 0x7ff000 - ((0x7ff000 - 1) & 0x1001) = 0x7ff000 - 1, not page aligned.
    let trace = r#"{"op": "reset"}
{"op": "map", "start": "0x400000", "end": "0x401000"}
{"op": "find", "length": "0x1000", "low_limit": "0x401000", "high_limit": "0x800000", "align_mask": "0x5000", "expect": {"addr": "0x406000"}}
{"op": "find", "length": "0x1000", "low_limit": "0x401000", "high_limit": "0x800000", "align_mask": "0x5000", "topdown": true, "expect": {"addr": "0x7fa000"}}
{"op": "find", "length": "0x1000", "low_limit": "0x401000", "high_limit": "0x800000", "align_mask": "0xffffffffffff5001", "align_offset": "0x3", "expect": {"err": "ENOMEM"}}
{"op": "find", "length": "0x1000", "low_limit": "0x10000", "high_limit": "0x800000", "align_mask": "0x1001", "align_offset": "0x1", "topdown": true, "expect": {"addr": "0x7fefff"}}
"#;
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let status = replay_status(trace.as_bytes(), &mut out, &mut err, true);
    let out = String::from_utf8_lossy(&out);
    assert_eq!(
        status,
        EXIT_OK,
        "stdout:\n{out}\nstderr:\n{}",
        String::from_utf8_lossy(&err)
    );
    assert!(out.contains("\"checked\": 4, \"mismatches\": 0"), "{out}");
}

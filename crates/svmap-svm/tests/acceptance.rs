//! The acceptance test: the SVM example of `docs/trace-format.md` and the
//! scenario traces under `tests/data/`, run through the library in both
//! populate modes.

mod common;

use common::run_trace;
use svmap_svm::Populate;

fn check(name: &str, text: &str, min_checked: usize) {
    for populate in [Populate::OnFault, Populate::AtAlloc] {
        let (checked, mismatches) = run_trace(text, populate);
        assert!(
            mismatches.is_empty(),
            "{name} ({populate:?}):\n{}",
            mismatches.join("\n")
        );
        assert!(
            checked >= min_checked,
            "{name}: only {checked} expects checked"
        );
    }
}

#[test]
fn shared_example_svm() {
    check("svm.jsonl", include_str!("data/svm.jsonl"), 12);
}

#[test]
fn scenarios() {
    check("scenarios.jsonl", include_str!("data/scenarios.jsonl"), 10);
}

//! The whole trace path on arbitrary bytes: the parser, the replay driver,
//! both executors and the SVM layer with its device mirrors. Bytes that
//! start like a trace line are replayed as they are; other bytes drive a
//! generator of mostly well-formed lines (see `svmap_trace::fuzzing`). A
//! broken invariant, a mirror that disagrees with the rules, executors that
//! disagree, an overlong message or a panic is a crash.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    svmap_trace::fuzzing::check(data);
});

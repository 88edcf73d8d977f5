//! The C ABI's argument decoding: the bytes decode into calls of the
//! `extern "C"` functions with arbitrary integers, lengths, counts, NULL,
//! valid and misaligned pointers, unknown enum values and `bool` fields
//! holding any byte (see `svmap::fuzzing`, the C ABI crate's module); a
//! panic that reaches the boundary, a status that disagrees with the
//! last-error message, or an out-parameter written by a failing call is a
//! crash.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    svmap::fuzzing::check(data);
});

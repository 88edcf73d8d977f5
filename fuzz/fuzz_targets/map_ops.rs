//! Differential fuzzing of `AddressMap` (and `Mm<AddressMap>`) against the
//! reference `ModelMap`: the bytes decode into a process configuration and
//! a list of map, search, fit, lookup, mmap and munmap operations (see
//! `svmap_core::fuzzing`), and any disagreement or core panic is a crash.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    svmap_core::fuzzing::check(data);
});

#![no_main]
//! Fuzz target `sops_file`: see `rewrap::fuzz::sops_file`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| rewrap::fuzz::sops_file(data));

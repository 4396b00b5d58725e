#![no_main]
//! Fuzz target `policy_file`: see `rewrap::fuzz::policy_file`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| rewrap::fuzz::policy_file(data));

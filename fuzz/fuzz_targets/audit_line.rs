#![no_main]
//! Fuzz target `audit_line`: see `rewrap::fuzz::audit_line`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| rewrap::fuzz::audit_line(data));

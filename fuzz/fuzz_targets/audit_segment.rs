#![no_main]
//! Fuzz target `audit_segment`: see `rewrap::fuzz::audit_segment`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| rewrap::fuzz::audit_segment(data));

#![no_main]
//! Fuzz target `envelope_header`: see `rewrap::fuzz::envelope_header`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| rewrap::fuzz::envelope_header(data));

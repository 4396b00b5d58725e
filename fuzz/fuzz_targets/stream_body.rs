#![no_main]
//! Fuzz target `stream_body`: see `rewrap::fuzz::stream_body`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| rewrap::fuzz::stream_body(data));

#![no_main]
//! Fuzz target `sigv4_request`: see `rewrap::fuzz::sigv4_request`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| rewrap::fuzz::sigv4_request(data));

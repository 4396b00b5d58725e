#![no_main]
//! Fuzz target `sigv4_authorization`: see `rewrap::fuzz::sigv4_authorization`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| rewrap::fuzz::sigv4_authorization(data));

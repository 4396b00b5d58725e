#![no_main]
//! Fuzz target `key_object`: see `rewrap::fuzz::key_object`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| rewrap::fuzz::key_object(data));

#![no_main]
//! Fuzz target `checkpoint`: see `rewrap::fuzz::checkpoint`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| rewrap::fuzz::checkpoint(data));

#![no_main]
//! Fuzz target `object_header`: see `rewrap::fuzz::object_header`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| rewrap::fuzz::object_header(data));

#![no_main]
//! Fuzz target `kms_request`: see `rewrap::fuzz::kms_request`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| rewrap::fuzz::kms_request(data));

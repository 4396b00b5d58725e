#![no_main]
//! Fuzz target `ciphertext_blob`: see `rewrap::fuzz::ciphertext_blob`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| rewrap::fuzz::ciphertext_blob(data));

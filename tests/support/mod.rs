//! The one test harness, shared by every integration test (each test crate
//! uses a different part of it):
//!
//! - [`cli`]: a keystore in a temporary folder driven through the real
//!   `rewrap` binary, as users drive it;
//! - [`library`]: the same keystore driven in process, one `LocalSession`
//!   per principal;
//! - [`hsm`]: a SoftHSM2 token per test, and `rewrap serve` to reach it;
//! - [`objects`]: object stores (moto S3 on loopback, `file://`), and a
//!   keystore with the role principals and two keys for the object tests.
#![allow(dead_code)] // reason: each test crate uses a different part of the harness

pub(crate) mod cli;
pub(crate) mod hsm;
pub(crate) mod library;
pub(crate) mod objects;

use std::path::PathBuf;

/// The repository root (the shipped `policies/` live there).
pub(crate) fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

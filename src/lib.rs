//! rewrap: a key-management service with AWS KMS semantics and a
//! role-separated re-encryption batch worker.
//!
//! Data flows one way: CLI / server -> [`service`] (policy check + audit
//! record around each operation) -> [`keystore`]. The re-wrap [`worker`]
//! talks to a KMS only through the [`kms::Kms`] trait, so a local session
//! ([`service::LocalSession`]) and a remote one ([`client::RemoteKms`]) are
//! interchangeable.
//!
//! Every KMS operation and policy action is declared once, in the
//! [`operation`] table; the `Operation` enum, the `Kms` trait's methods,
//! JSON dispatch, the server's thread choice and the in-process forwarder
//! are generated from it.
//!
//! This library acts on no process-wide state: the `rewrap` binary
//! (`src/main.rs`, `src/cli/`) owns the command line, the allocator, the
//! open-file limit and the progress bar.
//!
//! Words: a *ciphertext blob* ([`ciphertext_blob`]) is what Encrypt returns;
//! an *object store* ([`objstore`]) holds objects; *key-material rotation*
//! adds a version to a key; *re-wrapping* ([`worker`]) puts an envelope's
//! data key under a new key or version.

pub mod api;
pub mod audit;
pub mod ciphertext_blob;
pub mod client;
pub mod envelope;
pub mod error;
pub mod files;
#[doc(hidden)]
pub mod fuzz;
pub mod hsm;
pub mod keystore;
pub mod kms;
pub mod objstore;
pub mod operation;
pub mod policy;
pub mod root;
pub mod secret;
pub mod server;
pub mod service;
pub mod sigv4;
pub mod sops;
pub mod stream;
pub mod worker;

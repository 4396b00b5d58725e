//! rewrap: a key-management service with AWS KMS semantics and a
//! role-separated re-encryption batch worker.
//!
//! Data flows one way: CLI / server -> [`service`] (policy check + audit) ->
//! [`keystore`]. Workers talk to a KMS only through the [`kms::Kms`] trait.

pub mod api;
pub mod audit;
pub mod ciphertext_blob;
pub mod client;
pub mod envelope;
pub mod error;
pub mod files;
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
pub mod stream;
pub mod worker;

//! Envelopes in object stores: S3 and S3-compatible stores (MinIO, Ceph),
//! Azure Blob Storage, Google Cloud Storage and local folders, by URL.
//!
//! An envelope in an object store is two objects side by side (see
//! `docs/OBJECT_STORES.md`):
//!
//! ```text
//! <prefix>/<name>               body: the STREAM chunks and end record
//! <prefix>/<name>.rewrap-key    key object: header (immutable part) || slot 0 || slot 1
//! ```
//!
//! The key object holds exactly the bytes that precede the body in a file
//! envelope ([`crate::envelope`]), so `key object || body` *is* a file
//! envelope. Re-wrapping rewrites only key objects, with conditional puts
//! (ETag match), and never reads or writes a body.
//!
//! This module knows how to reach objects; the re-wrap worker's view of a
//! location (listing, shards, checkpoints) is [`crate::worker::Source`].
//!
//! # API (sync: each call enters the location's own tokio runtime; do not
//! call from inside an async context)
//!
//! - [`is_object_url`]: does a CLI argument name an object-store location?
//! - [`open_location`]`(url, &`[`ObjectStoreOptions`]`)` -> [`ObjectLocation`]
//!   (`s3://bucket/prefix`, `az://container/prefix`, `gs://bucket/prefix`,
//!   `file:///path`); no request is made until it is used.
//! - [`encrypt_object`]`(kms, src, &loc, name, &EncryptOptions)`: streams
//!   `src` into a new object (multipart above [`ObjectStoreOptions::part_size`]).
//! - [`decrypt_object`]`(kms, &loc, name, dst, &DecryptOptions)`: streams the
//!   plaintext of an object into `dst`, verifying each chunk first.
//! - `read_key_object` / `put_key_object_if_unchanged`: the key object
//!   read and compare-and-swap the re-wrap worker builds on.
//!
//! Errors are [`ObjectStoreError`]s; a run that cannot start (bad URL,
//! missing bucket, bad credentials) fails before it touches anything.

mod key_object;
mod location;
mod transfer;

pub use key_object::KeyObjectVersion;
pub(crate) use key_object::{put_key_object_if_unchanged, read_key_object};
pub use location::{is_object_url, open_location, ObjectLocation, ObjectStoreOptions};
pub use transfer::{decrypt_object, encrypt_object};

use crate::envelope::EnvelopeError;
use crate::error::KmsError;
use crate::files::FileError;

/// Suffix of the key object beside each body object.
pub(crate) const KEY_SUFFIX: &str = ".rewrap-key";

/// Why an object-store operation failed. Messages never contain key or
/// plaintext bytes (nor credentials).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ObjectStoreError {
    /// The location URL is malformed or names an unsupported scheme.
    #[error("invalid location: {0}")]
    InvalidUrl(String),
    /// The bucket or container does not exist.
    #[error("bucket or container not found: {0}")]
    BucketNotFound(String),
    /// The store refused the credentials or the request.
    #[error("access denied by the store (check credentials and permissions): {0}")]
    AccessDenied(String),
    /// An object does not exist.
    #[error("object not found: {0}")]
    NotFound(String),
    /// The object to create exists already.
    #[error("object already exists: {0}")]
    AlreadyExists(String),
    /// A conditional write lost against another writer.
    #[error("changed concurrently: {0}")]
    Conflict(String),
    /// Any other store failure (after retries).
    #[error("store error: {0}")]
    Store(String),
    /// A local file of a `file://` store could not be read or written.
    #[error("store error: {what}: {source}")]
    Io {
        /// The file or folder.
        what: String,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The envelope is malformed or did not authenticate.
    #[error("{0}")]
    Format(#[from] EnvelopeError),
    /// The KMS refused or failed.
    #[error("{0}")]
    Kms(#[from] KmsError),
    /// The envelope's encryption context is not the expected one.
    #[error("encryption context mismatch: {0}")]
    ContextMismatch(String),
    /// The request is not possible (bad name, ...).
    #[error("{0}")]
    Usage(String),
}

impl ObjectStoreError {
    /// A short, stable name of the failure: the AWS error name for KMS
    /// failures, the envelope error name for format failures, else the
    /// variant's name.
    pub fn kind(&self) -> String {
        match self {
            ObjectStoreError::InvalidUrl(_) => "InvalidUrl".into(),
            ObjectStoreError::BucketNotFound(_) => "BucketNotFound".into(),
            ObjectStoreError::AccessDenied(_) => "AccessDenied".into(),
            ObjectStoreError::NotFound(_) => "NotFound".into(),
            ObjectStoreError::AlreadyExists(_) => "AlreadyExists".into(),
            ObjectStoreError::Conflict(_) => "Conflict".into(),
            ObjectStoreError::Store(_) | ObjectStoreError::Io { .. } => "Store".into(),
            ObjectStoreError::Format(e) => e.kind().into(),
            ObjectStoreError::Kms(e) => e.code.as_str().into(),
            ObjectStoreError::ContextMismatch(_) => "ContextMismatch".into(),
            ObjectStoreError::Usage(_) => "Usage".into(),
        }
    }

    /// An I/O failure on a local file of a `file://` store.
    pub(crate) fn io(what: impl std::fmt::Display, source: std::io::Error) -> ObjectStoreError {
        ObjectStoreError::Io {
            what: what.to_string(),
            source,
        }
    }

    /// Classifies an `object_store` error about `what`.
    pub(crate) fn from_store(what: &str, e: object_store::Error) -> ObjectStoreError {
        use object_store::Error as E;
        let text = e.to_string();
        if text.contains("NoSuchBucket")
            || text.contains("ContainerNotFound")
            || text.contains("bucket does not exist")
        {
            return ObjectStoreError::BucketNotFound(format!("{what}: {text}"));
        }
        // Listing errors arrive as `Generic` with the HTTP status and the
        // store's error code in the text.
        let refused = [
            "InvalidAccessKeyId",
            "SignatureDoesNotMatch",
            "AuthenticationFailed",
            "AuthorizationFailure",
            "403 Forbidden",
            "401 Unauthorized",
        ];
        if refused.iter().any(|r| text.contains(r)) {
            return ObjectStoreError::AccessDenied(format!("{what}: {text}"));
        }
        match e {
            E::NotFound { .. } => ObjectStoreError::NotFound(what.to_string()),
            E::AlreadyExists { .. } => ObjectStoreError::AlreadyExists(what.to_string()),
            E::Precondition { .. } | E::NotModified { .. } => {
                ObjectStoreError::Conflict(what.to_string())
            }
            E::PermissionDenied { .. } | E::Unauthenticated { .. } => {
                ObjectStoreError::AccessDenied(format!("{what}: {text}"))
            }
            _ => ObjectStoreError::Store(format!("{what}: {text}")),
        }
    }
}

impl From<FileError> for ObjectStoreError {
    fn from(e: FileError) -> ObjectStoreError {
        match e {
            FileError::Format(e) => ObjectStoreError::Format(e),
            FileError::Kms(e) => ObjectStoreError::Kms(e),
            FileError::ContextMismatch(m) => ObjectStoreError::ContextMismatch(m),
            other => ObjectStoreError::Usage(other.to_string()),
        }
    }
}

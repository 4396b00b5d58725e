//! Envelopes in blob stores: S3 and S3-compatible stores (MinIO, Ceph),
//! Azure Blob Storage, Google Cloud Storage and local folders, by URL.
//!
//! A blob is two objects side by side (see `docs/BLOBSTORE.md`):
//!
//! ```text
//! <prefix>/<name>               body: the STREAM chunks and end record
//! <prefix>/<name>.rewrap-key    key object: header (immutable part) || slot 0 || slot 1
//! ```
//!
//! The key object holds exactly the bytes that precede the body in a file
//! envelope ([`crate::envelope`]), so `key object || body` *is* a file
//! envelope. Rotation rewrites only key objects, with conditional puts
//! (ETag match), and never reads or writes a body.
//!
//! # API (sync: each call enters the location's own tokio runtime; do not
//! call from inside an async context)
//!
//! - [`is_blob_url`]: does a CLI argument name a blob store location?
//! - [`open_location`]`(url, &`[`BlobOptions`]`)` -> [`BlobLocation`]
//!   (`s3://bucket/prefix`, `az://container/prefix`, `gs://bucket/prefix`,
//!   `file:///path`); no request is made until it is used.
//! - [`encrypt_object`]`(kms, src, &loc, name, &EncryptOptions)`: streams
//!   `src` into a new blob (multipart above [`BlobOptions::part_size`]).
//! - [`decrypt_object`]`(kms, &loc, name, dst, &DecryptOptions)`: streams the
//!   plaintext of a blob into `dst`, verifying each chunk first.
//! - [`rotate_location`]`(kms, &loc, &RotateOptions, &`[`BlobRotateOptions`]`)`:
//!   the [`crate::rotate`] pipeline over every key object under the prefix
//!   (this shard, after the checkpoint) -> [`BlobRotationReport`].
//! - [`inventory_location`]: the [`crate::rotate::inventory`] of a prefix.
//! - [`BlobArgs`]: `--checkpoint`, `--shard I/N`, `--s3-endpoint`,
//!   `--concurrency` for the `rotate` and `inventory` commands.
//!
//! Wiring a command (sketch):
//!
//! ```text
//! if blobstore::is_blob_url(&path) {
//!     let loc = blobstore::open_location(&path, &args.blob.options())?;     // exit 2 on error
//!     let r = blobstore::rotate_location(&kms, &loc, &rotate_opts, &args.blob.rotate_options())?;
//!     r.summary().record(home)?;   // <home>/inventory/, as for file trees
//!     print_json(&r); exit(r.exit_code())
//! }
//! ```
//!
//! Errors are [`BlobError`]s; a run that cannot start (bad URL, missing
//! bucket, bad credentials, unusable checkpoint) fails before it touches
//! anything, per-object failures are counted in the report (exit code 1).

mod location;
mod progress;
mod store;
mod transfer;

pub use location::{is_blob_url, open_location, BlobLocation, BlobOptions};
pub use progress::{Checkpoint, Shard};
pub use store::{BlobEnvelopeStore, BlobItem, BlobVersion};
pub use transfer::{decrypt_object, encrypt_object};

use crate::envelope::EnvelopeError;
use crate::error::KmsError;
use crate::files::FileError;
use crate::kms::Kms;
use crate::rotate::{Inventory, InventorySummary, RotateOptions, RotationReport};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// Suffix of the key object beside each body object.
pub const KEY_SUFFIX: &str = ".rewrap-key";
/// Default number of objects rotated at once.
pub const DEFAULT_CONCURRENCY: usize = 16;
/// Default number of fully processed objects between two checkpoint writes.
pub const DEFAULT_CHECKPOINT_EVERY: u64 = 1000;

/// Why a blob-store operation failed. Messages never contain key or
/// plaintext bytes (nor credentials).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BlobError {
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
    /// The blob to create exists already.
    #[error("object already exists: {0}")]
    AlreadyExists(String),
    /// A conditional write lost against another writer.
    #[error("changed concurrently: {0}")]
    Conflict(String),
    /// Any other store failure (after retries).
    #[error("store error: {0}")]
    Store(String),
    /// The envelope is malformed or did not authenticate.
    #[error("{0}")]
    Format(#[from] EnvelopeError),
    /// The KMS refused or failed.
    #[error("{0}")]
    Kms(#[from] KmsError),
    /// The envelope's encryption context is not the expected one.
    #[error("encryption context mismatch: {0}")]
    ContextMismatch(String),
    /// The checkpoint file is unusable or cannot be written.
    #[error("checkpoint: {0}")]
    Checkpoint(String),
    /// The request is not possible (bad shard, bad name, ...).
    #[error("{0}")]
    Usage(String),
}

impl BlobError {
    /// A short, stable name of the failure: the AWS error name for KMS
    /// failures, the envelope error name for format failures, else the
    /// variant's name.
    pub fn name(&self) -> String {
        match self {
            BlobError::InvalidUrl(_) => "InvalidUrl".into(),
            BlobError::BucketNotFound(_) => "BucketNotFound".into(),
            BlobError::AccessDenied(_) => "AccessDenied".into(),
            BlobError::NotFound(_) => "NotFound".into(),
            BlobError::AlreadyExists(_) => "AlreadyExists".into(),
            BlobError::Conflict(_) => "Conflict".into(),
            BlobError::Store(_) => "Store".into(),
            BlobError::Format(e) => e.name().into(),
            BlobError::Kms(e) => e.code.as_str().into(),
            BlobError::ContextMismatch(_) => "ContextMismatch".into(),
            BlobError::Checkpoint(_) => "Checkpoint".into(),
            BlobError::Usage(_) => "Usage".into(),
        }
    }

    /// Classifies an `object_store` error about `what`.
    pub(crate) fn from_store(what: &str, e: object_store::Error) -> BlobError {
        use object_store::Error as E;
        let text = e.to_string();
        if text.contains("NoSuchBucket")
            || text.contains("ContainerNotFound")
            || text.contains("bucket does not exist")
        {
            return BlobError::BucketNotFound(format!("{what}: {text}"));
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
            return BlobError::AccessDenied(format!("{what}: {text}"));
        }
        match e {
            E::NotFound { .. } => BlobError::NotFound(what.to_string()),
            E::AlreadyExists { .. } => BlobError::AlreadyExists(what.to_string()),
            E::Precondition { .. } | E::NotModified { .. } => BlobError::Conflict(what.to_string()),
            E::PermissionDenied { .. } | E::Unauthenticated { .. } => {
                BlobError::AccessDenied(format!("{what}: {text}"))
            }
            _ => BlobError::Store(format!("{what}: {text}")),
        }
    }
}

impl From<FileError> for BlobError {
    fn from(e: FileError) -> BlobError {
        match e {
            FileError::Format(e) => BlobError::Format(e),
            FileError::Kms(e) => BlobError::Kms(e),
            FileError::ContextMismatch(m) => BlobError::ContextMismatch(m),
            other => BlobError::Usage(other.to_string()),
        }
    }
}

/// How a rotation or inventory walks a location.
#[derive(Debug, Clone)]
pub struct BlobRotateOptions {
    /// Record progress in this file and resume from it (see
    /// [`Checkpoint`]).
    pub checkpoint: Option<PathBuf>,
    /// Fully processed objects between two checkpoint writes.
    pub checkpoint_every: u64,
    /// Take only this share of the objects.
    pub shard: Option<Shard>,
    /// Objects in flight at once (worker threads of the pipeline).
    pub concurrency: usize,
}

impl Default for BlobRotateOptions {
    fn default() -> BlobRotateOptions {
        BlobRotateOptions {
            checkpoint: None,
            checkpoint_every: DEFAULT_CHECKPOINT_EVERY,
            shard: None,
            concurrency: DEFAULT_CONCURRENCY,
        }
    }
}

/// Blob-store flags of the `rotate` and `inventory` commands (flatten into
/// their arguments). `inventory` uses only `--shard`, `--s3-endpoint` and
/// `--concurrency`.
#[derive(Debug, Clone, clap::Args)]
pub struct BlobArgs {
    /// Record progress in FILE every --checkpoint-every objects and resume
    /// from it (blob-store locations only).
    #[arg(long, value_name = "FILE")]
    pub checkpoint: Option<PathBuf>,
    /// Objects between two checkpoint writes.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_CHECKPOINT_EVERY)]
    pub checkpoint_every: u64,
    /// Take only shard I of N (0-based) of the objects, by hash of the name.
    #[arg(long, value_name = "I/N")]
    pub shard: Option<Shard>,
    /// S3 endpoint URL (MinIO, Ceph, ...); default AWS_ENDPOINT_URL_S3 or
    /// AWS_ENDPOINT_URL, else AWS.
    #[arg(long, value_name = "URL")]
    pub s3_endpoint: Option<String>,
    /// Objects in flight at once.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_CONCURRENCY)]
    pub concurrency: usize,
}

impl Default for BlobArgs {
    fn default() -> BlobArgs {
        BlobArgs {
            checkpoint: None,
            checkpoint_every: DEFAULT_CHECKPOINT_EVERY,
            shard: None,
            s3_endpoint: None,
            concurrency: DEFAULT_CONCURRENCY,
        }
    }
}

impl BlobArgs {
    /// The options to open a location with.
    pub fn options(&self) -> BlobOptions {
        BlobOptions {
            s3_endpoint: self.s3_endpoint.clone(),
            ..BlobOptions::default()
        }
    }

    /// The options of a rotation or inventory run.
    pub fn rotate_options(&self) -> BlobRotateOptions {
        BlobRotateOptions {
            checkpoint: self.checkpoint.clone(),
            checkpoint_every: self.checkpoint_every.max(1),
            shard: self.shard,
            concurrency: self.concurrency.max(1),
        }
    }
}

/// What a rotation over a blob-store location did: the same report as for
/// file trees (flattened in JSON), plus what only blob stores have.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct BlobRotationReport {
    /// The pipeline's report (counts, per-key tables, failures).
    #[serde(flatten)]
    pub report: RotationReport,
    /// The location rotated.
    pub location: String,
    /// The shard taken (`I/N`), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shard: Option<String>,
    /// Conditional key-object writes refused because another writer changed
    /// the key object first. The pipeline re-read each and decided again,
    /// so the other writer's newer key object was kept.
    pub conflicts: u64,
    /// The run resumed after this object (from the checkpoint).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resumed_after: Option<String>,
    /// Objects the checkpoint already counted as done before this run.
    pub resumed_objects: u64,
}

impl BlobRotationReport {
    /// The process exit code: 0 all done, 1 some objects failed.
    pub fn exit_code(&self) -> i32 {
        self.report.exit_code()
    }

    /// The inventory summary of the state after the run (for
    /// [`InventorySummary::record`]).
    pub fn summary(&self) -> InventorySummary {
        InventorySummary {
            roots: vec![self.location.clone()],
            seen_at: self.report.finished_at.clone(),
            recorded_by: "rotate".into(),
            keys: self.report.after.clone(),
        }
    }
}

/// Rotates every blob under `loc` (this shard, after the checkpoint) with
/// the one [`crate::rotate::rotate`] pipeline. Errors only when the run
/// cannot start; per-object failures are in the report. A dry run neither
/// reads nor writes the checkpoint.
pub fn rotate_location(
    kms: &dyn Kms,
    loc: &BlobLocation,
    opts: &RotateOptions,
    blob: &BlobRotateOptions,
) -> Result<BlobRotationReport, BlobError> {
    loc.probe()?;
    // A dry run changes nothing, so it must not move a checkpoint either.
    let tracker = if opts.dry_run {
        progress::Tracker::disabled()
    } else {
        progress::Tracker::start(loc, blob)?
    };
    let store = BlobEnvelopeStore::new(loc);
    let items = progress::list_items(loc, blob.shard, &tracker);
    let mut opts = opts.clone();
    opts.jobs = blob.concurrency.max(1);
    // Each conditional put is durable on return (commit is a no-op), so a
    // batch only delays the moment an object counts as done for the
    // checkpoint.
    opts.batch = 1;
    // One object from its read to its conditional put at a time per worker:
    // batching ReEncrypt calls would only widen the window in which another
    // writer makes the put conflict (and the network, not the audit group
    // commit, is what an object costs).
    opts.kms_batch = 1;
    let report = crate::rotate::rotate(kms, &store, items, &opts)?;
    tracker.finish()?;
    Ok(BlobRotationReport {
        report,
        location: loc.url().to_string(),
        shard: blob.shard.map(|s| s.to_string()),
        conflicts: store.conflicts(),
        resumed_after: tracker.resumed_after(),
        resumed_objects: tracker.resumed_objects(),
    })
}

/// Counts the blobs under `loc` (this shard) per key and key version, with
/// [`crate::rotate::inventory`]. Checkpoints are not used (an inventory
/// only reads).
pub fn inventory_location(
    kms: Option<&dyn Kms>,
    loc: &BlobLocation,
    stale_against: Option<&str>,
    blob: &BlobRotateOptions,
) -> Result<Inventory, BlobError> {
    loc.probe()?;
    let tracker = progress::Tracker::disabled();
    let store = BlobEnvelopeStore::new(loc);
    let items = progress::list_items(loc, blob.shard, &tracker);
    let mut inv =
        crate::rotate::inventory(kms, &store, items, stale_against, blob.concurrency.max(1))?;
    inv.roots = vec![loc.url().to_string()];
    Ok(inv)
}

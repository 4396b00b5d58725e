//! The tamper-evident audit trail: one JSON line per KMS operation attempt.
//!
//! Every attempt, allowed or denied, is appended to `<keystore>/audit.log` as
//! one [`AuditRecord`] serialized on one line. The records form a hash chain:
//!
//! - `seq` starts at 1 and grows by exactly 1 per line;
//! - `prev_hash` is the `hash` of the previous record (64 `0`s for the first);
//! - `hash` is the lowercase hex SHA-256 of the record's *canonical
//!   serialization*: `serde_json::to_vec` of the record with `hash` set to
//!   `""`. Fields appear in the struct's declaration order, `hash` last, with
//!   no whitespace, so the canonical form is exactly the stored line with the
//!   hash value cut out (`..."hash":""}`).
//!
//! The stored line is the canonical serialization with `hash` filled in, plus
//! `\n`. [`verify`] is strict: a line must be byte-for-byte the canonical
//! serialization of the record it parses to, so the SHA-256 covers every byte
//! of the line, not just the parsed values.
//!
//! # What the chain detects
//!
//! [`verify`] walks the file and reports the first changed, removed,
//! inserted or reordered record as [`AuditError::Tampered`], naming the line.
//! The chain is unkeyed: someone who can rewrite the whole file from some
//! record on, or cut records off its end, is not detected by the chain alone.
//! A trail inside a keystore therefore has a sealed checkpoint
//! (`checkpoint.rs`): the `seq` and `hash` of the last record, sealed under
//! the root key and rewritten with every group commit. [`verify_sealed`]
//! compares the end of the trail with it and reports records cut off the
//! end as [`AuditError::Truncated`]; a writer that finds such a cut appends
//! an `AuditTrailCut` record before its own (it never chains over a cut
//! silently), which verify reports as tampering.
//!
//! # Crashes and the torn final line
//!
//! [`AuditLog::append`] writes the complete line with one `write_all` on an
//! `O_APPEND` file before it returns, so a crash loses at most the records of
//! operations still in flight. (Inside a [`defer_durability`] scope a durable
//! append is queued instead, and the scope's [`Durability`] writes and syncs
//! it before the operation's result may be handed out: see
//! `group_commit.rs`. A crash then also loses only records whose
//! operations have not answered.) A crash in the middle of that write can leave a
//! *torn* final line: bytes with no trailing `\n`. The choice made here:
//!
//! - [`verify`] does not count a torn final line and does not fail on it; it
//!   reports it in [`VerifySummary::truncated_final_record`] (shown as
//!   "truncated final record"). [`verify_sealed`] fails if the checkpoint
//!   says the torn record was committed (someone deleted its newline). A
//!   torn line that is *not* last cannot come from a crash and is reported
//!   as [`AuditError::Malformed`].
//! - Opening a handle leaves the file as found. The first append, under the
//!   exclusive file lock, repairs the tail: a complete record that only lost
//!   its `\n` gets it back, anything else is cut off. Either way it appends a
//!   `RepairAuditTail` record (who, when, how many bytes, which `seq`) before
//!   its own and says so on stderr; [`VerifySummary::repairs`] lists them.
//!
//! If the last *complete* line cannot be parsed, the appender refuses to
//! append ([`AuditError::Malformed`]) rather than start a chain it cannot link:
//! the audit trail fails closed and the operator must look at the file.
//!
//! # The usage index
//!
//! The group commit also feeds the per-key usage index (`usage.rs`): which
//! envelopes each key wrapped last and when each key was last used, which the
//! KMS's deletion interlock and DescribeKey read (`AuditLog::key_usage`).
//!
//! # Several writers
//!
//! One [`AuditLog`] is shared by all threads of a process (it is
//! `Send + Sync`, an internal mutex orders appends). Several processes (the
//! CLI and the server) may append to the same file: each append takes an
//! exclusive `flock` on the file, and if the file length is not what this
//! handle last wrote, re-reads the last line to learn the current `seq` and
//! `hash` before appending. Readers ([`verify`], [`report`]) take no lock; an
//! append in progress looks to them like a torn final line.
//!
//! A segment close renames the active file away (see `segment.rs`): after
//! taking the lock, a writer checks that its file is still the one at the
//! trail's path (same device and inode) and otherwise syncs what it wrote
//! to the old one and opens the new one, so no record lands in a retired
//! file and its group commit syncs the file it writes.
//!
//! A write costs one JSON serialization into a reused buffer and one
//! SHA-256 per record, and four syscalls: `flock`, `fstat`, one `write`,
//! unlock; in a keystore, also one AES-GCM seal of 128 bytes and one
//! `pwrite` of the checkpoint. A direct append is one write; the server's
//! deferred appends share one write per group commit. The tail of the
//! file is re-read only when another writer appended in between.
//!
//! # Durable before answered
//!
//! A keystore's trail is opened durable ([`AuditOptions::durable`]): an
//! append returns only once its records are on stable storage, so no key
//! use is answered whose record a power loss could take back (no audit, no
//! answer). The `fdatasync` is a group commit shared by concurrent appends:
//! one runs at a time, outside the chain's lock, and covers every write
//! made before it started; an append whose write came after the running
//! sync started waits for the next one, which it may run itself. N
//! concurrent requests therefore cost about two syncs, not N. A failed
//! write or sync fails the append (and so the operation); after a failed
//! sync the handle fails every later durable append, since the kernel may
//! have dropped the pages the sync did not reach.
//!
//! # No secrets
//!
//! A record has no field for plaintext, data keys, secrets or ciphertext: it
//! names keys by ARN and key-material version, and carries only the
//! encryption context (which AWS KMS also logs in the clear).
//!
//! # Modules
//!
//! - `record`: the record and its canonical line, which the hash covers;
//! - `writer`: [`AuditLog`], the append handle and its group commit;
//! - `read`: the lock-free line reader and [`read_records`];
//! - `verify`: [`verify`], the walk along the chain;
//! - `report`: [`report`];
//! - `usage`: the per-key usage index the group commit keeps;
//! - `checkpoint`: the sealed checkpoint of the end of the trail.

mod checkpoint;
mod digest;
mod export;
mod group_commit;
pub mod html;
mod read;
mod record;
mod report;
mod retention;
mod segment;
mod usage;
mod verify;
mod writer;

pub use checkpoint::Checkpoint;
pub use digest::{read_public_keys, Digest, DigestSegment, DigestSummary, PUBLIC_KEYS_FILE};
pub use export::{export, ExportReport};
pub use group_commit::{defer_durability, defer_sync, Durability};
pub use read::read_records;
pub use record::{
    check_object, decode_object_header, encode_object_header, object_name, AuditKey, AuditRecord,
    DECISION_ALLOW, DECISION_DENY, GENESIS_HASH, MAX_OBJECT, OBJECT_HEADER, OUTCOME_SUCCESS,
};
pub use report::{
    activity, clip, key_id_of, report, Activity, DeniedAttempt, ReportFilter, UsageReport,
    UsageRow, DENIED_KEPT, NO_KEY, TABLE_WIDTH,
};
pub use retention::Pruned;
pub use segment::SegmentHeader;
pub use usage::KeyUsage;
pub use verify::{verify, verify_offline, verify_sealed, VerifySummary};
pub use writer::{AuditLog, AuditOptions};
// A move of the keystore's root (crate::root::relocate) seals these again.
pub(crate) use checkpoint::reseal as reseal_checkpoint;
pub(crate) use digest::reseal_signing_keys;
pub(crate) use segment::fuzz as fuzz_segment;

use crate::error::{ErrorCode, KmsError};
use std::io;
use std::path::{Path, PathBuf};

/// When the writer closes the active file into a segment: the `[audit]`
/// table of the keystore's `config.toml`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuditConfig {
    /// Close the active file once it holds at least this many bytes.
    pub segment_max_bytes: u64,
    /// Close the active file once its first record is this many seconds old.
    pub segment_max_age_secs: u64,
    /// Write a signed digest when the last one is this many seconds old
    /// (and at every segment close).
    pub digest_interval_secs: u64,
    /// Closed segments older than this many days may be removed (`rewrap
    /// audit prune`) once exported and listed by a digest; none: keep all.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retention_days: Option<u64>,
}

impl Default for AuditConfig {
    fn default() -> AuditConfig {
        AuditConfig {
            segment_max_bytes: 64 << 20,
            segment_max_age_secs: 24 * 60 * 60,
            digest_interval_secs: 60 * 60,
            retention_days: None,
        }
    }
}

/// Failures of the audit trail.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuditError {
    /// Reading or writing the audit file failed.
    #[error("audit log {}: {source}", path.display())]
    Io {
        /// The audit file.
        path: PathBuf,
        /// The operating system's error.
        source: io::Error,
    },
    /// The chain is broken: a record was changed, removed, inserted or reordered.
    #[error("record {line}: {problem}")]
    Tampered {
        /// 1-based line number of the first record that does not fit.
        line: u64,
        /// The `seq` that record claims.
        seq: u64,
        /// What is wrong, e.g. `hash mismatch (record changed)`.
        problem: String,
    },
    /// Records were cut off the end of the trail: the sealed checkpoint
    /// names more records than the file holds.
    #[error("{problem}")]
    Truncated {
        /// Complete records found.
        records: u64,
        /// Records the checkpoint says were committed.
        expected: u64,
        /// What was found.
        problem: String,
    },
    /// The sealed checkpoint does not authenticate: it was changed or
    /// replaced (perhaps to hide records cut off the end).
    #[error("{problem}")]
    Checkpoint {
        /// What is wrong with it.
        problem: String,
    },
    /// A line is not an audit record at all.
    #[error("line {line}: {problem}")]
    Malformed {
        /// 1-based line number.
        line: u64,
        /// What is wrong with it.
        problem: String,
    },
}

/// An audit failure fails the operation: nothing is done unaudited.
impl From<AuditError> for KmsError {
    fn from(e: AuditError) -> KmsError {
        KmsError::new(ErrorCode::Internal, format!("audit log: {e}"))
    }
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> AuditError + '_ {
    move |source| AuditError::Io {
        path: path.to_path_buf(),
        source,
    }
}

#[cfg(test)]
mod tests;

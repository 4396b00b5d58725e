//! What a re-wrap run reports (counts, per-key tables, failures), and the
//! one way reports and other small JSON files reach the disk.

use super::failure::{Failure, FailureKind};
use super::pool::Merge;
use super::tree::LeftAlone;
use crate::envelope::Slot;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

/// Counts for one source key version.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct VersionCounts {
    /// Envelopes seen under this key version.
    pub seen: u64,
    /// Of those, re-wrapped.
    pub rotated: u64,
    /// Of those, that a dry run would re-wrap.
    #[serde(default)]
    pub would_rotate: u64,
    /// Of those, already current.
    pub already_current: u64,
    /// Of those, skipped because the key is not in `--from`.
    pub other_key: u64,
    /// Of those, failed.
    pub failed: u64,
}

/// What a re-wrap run did, for `--report` and the exit code, whatever the
/// [`super::Source`]. The fields after `failures` describe object-store
/// runs only and are absent for file trees.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct RewrapReport {
    /// ARN of the target key.
    pub target_key: String,
    /// Newest key-material version of the target key (0 when unknown).
    pub target_version: u32,
    /// True when nothing was written.
    pub dry_run: bool,
    /// When the run started (RFC 3339).
    pub started_at: String,
    /// When the run finished (RFC 3339).
    pub finished_at: String,
    /// Items looked at.
    pub scanned: u64,
    /// Envelopes re-wrapped (new slot durable, old slot wiped); 0 in a dry
    /// run.
    pub rotated: u64,
    /// Dry run: envelopes that would be re-wrapped (their source key and
    /// version passed a ReEncrypt probe).
    #[serde(default)]
    pub would_rotate: u64,
    /// Envelopes already under the newest version of the target key
    /// (including those whose stale slot this run only had to wipe).
    pub already_current: u64,
    /// Envelopes under a key not named by `--from`.
    pub other_key: u64,
    /// Items that are not envelopes (left untouched).
    pub not_envelope: u64,
    /// Items that failed (see `failures`).
    pub failed: u64,
    /// Items taken up but left as they were because the run stopped early
    /// or was interrupted (each still opens with its old or its new slot;
    /// a later run finishes them).
    #[serde(default)]
    pub unfinished: u64,
    /// Symbolic links and special files inside the tree, left alone.
    #[serde(flatten)]
    pub left_alone: LeftAlone,
    /// The run stopped before the end: `--max-failures` reached, or a
    /// systematic failure (see `stop_reason`).
    #[serde(default)]
    pub stopped_early: bool,
    /// Why the run stopped early.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_reason: Option<String>,
    /// The run was interrupted (SIGINT / SIGTERM): the batch in flight was
    /// finished, the items not yet taken up are not counted.
    #[serde(default)]
    pub interrupted: bool,
    /// Per source key ARN, per key-material version: counts.
    pub by_source: BTreeMap<String, BTreeMap<String, VersionCounts>>,
    /// Per key ARN, per version: envelopes as they are after the run.
    pub after: BTreeMap<String, BTreeMap<String, u64>>,
    /// Every failure with its kind and reason.
    pub failures: Vec<Failure>,
    /// Dry run: every envelope with its current key, alias and version, and
    /// what a real run would do to it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub listing: Vec<Listed>,
    /// The object-store location re-wrapped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    /// The shard taken (`I/N`), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shard: Option<String>,
    /// Conditional key-object writes refused because another writer changed
    /// the key object first. The pipeline re-read each and decided again,
    /// so the other writer's newer key object was kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conflicts: Option<u64>,
    /// The run resumed after this object (from the checkpoint).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resumed_after: Option<String>,
    /// Objects the checkpoint already counted as done before this run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resumed_objects: Option<u64>,
    /// Every SOPS file met, with its format and what was done to its KMS
    /// entries (also counted in `rotated`, `already_current`, ...).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sops: Vec<super::SopsReported>,
}

/// One envelope in a dry run's listing.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Listed {
    /// The item (path or object URL).
    pub path: String,
    /// ARN of the key its active slot is under.
    pub key_arn: String,
    /// The aliases of that key the caller may list (empty if none or not
    /// allowed).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<String>,
    /// Key-material version of the active slot.
    pub key_version: u32,
    /// `would_rotate`, `already_current` or `other_key`.
    pub action: String,
}

impl RewrapReport {
    /// The process exit code of a batch command: 0 all done, 1 some items
    /// failed, 2 stopped early, 3 interrupted.
    pub fn exit_code(&self) -> i32 {
        if self.interrupted {
            3
        } else if self.stopped_early {
            2
        } else {
            i32::from(self.failed > 0)
        }
    }

    pub(super) fn source(&mut self, slot: &Slot) -> &mut VersionCounts {
        self.by_source
            .entry(slot.key_arn.clone())
            .or_default()
            .entry(slot.key_version.to_string())
            .or_default()
    }

    pub(super) fn after(&mut self, arn: &str, version: u32) {
        *self
            .after
            .entry(arn.to_string())
            .or_default()
            .entry(version.to_string())
            .or_default() += 1;
    }

    /// Counts a failure (and, when the active slot is known, where it was).
    pub(super) fn fail(&mut self, failure: Failure, slot: Option<&Slot>) {
        self.failed += 1;
        if let Some(s) = slot {
            self.source(s).failed += 1;
            self.after(&s.key_arn, s.key_version);
        }
        self.failures.push(failure);
    }
}

impl Merge for RewrapReport {
    fn merge(&mut self, other: RewrapReport) {
        self.scanned += other.scanned;
        self.rotated += other.rotated;
        self.already_current += other.already_current;
        self.other_key += other.other_key;
        self.not_envelope += other.not_envelope;
        self.would_rotate += other.would_rotate;
        self.failed += other.failed;
        self.unfinished += other.unfinished;
        self.left_alone.merge(other.left_alone);
        self.listing.extend(other.listing);
        self.sops.extend(other.sops);
        for (arn, versions) in other.by_source {
            let mine = self.by_source.entry(arn).or_default();
            for (v, c) in versions {
                let m = mine.entry(v).or_default();
                m.seen += c.seen;
                m.rotated += c.rotated;
                m.would_rotate += c.would_rotate;
                m.already_current += c.already_current;
                m.other_key += c.other_key;
                m.failed += c.failed;
            }
        }
        for (arn, versions) in other.after {
            let mine = self.after.entry(arn).or_default();
            for (v, n) in versions {
                *mine.entry(v).or_default() += n;
            }
        }
        self.failures.extend(other.failures);
    }

    fn worker_panicked(&mut self) {
        self.fail(worker_panicked(), None);
    }
}

/// The failure recorded for a worker thread that panicked.
pub(super) fn worker_panicked() -> Failure {
    Failure {
        path: "<worker>".into(),
        kind: FailureKind::Internal,
        error: "a worker thread panicked".into(),
    }
}

/// Writes `value` as pretty JSON to `path` crash-safely: a temporary file
/// in the same folder, fsync, rename over `path`, fsync of the folder. A
/// bare file name (`r.json`) is written in the current folder.
pub fn write_json<T: Serialize + ?Sized>(path: &Path, value: &T) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(crate::files::TEMP_PREFIX)
        .suffix(".tmp")
        .tempfile_in(dir)?;
    serde_json::to_writer_pretty(tmp.as_file_mut(), value)?;
    tmp.as_file_mut().flush()?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    std::fs::File::open(dir)?.sync_all()
}

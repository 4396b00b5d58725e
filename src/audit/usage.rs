//! The per-key usage index: which envelopes' data keys each key (version)
//! wrapped last, and when each key was last used for cryptography.
//!
//! The index is a function of the audit records: every successful
//! GenerateDataKey and ReEncrypt carries `rewrap:file-id` in its (destination)
//! encryption context, so the record says "file F is now wrapped under key K,
//! version V". A file re-wrapped under another key leaves the old key's set.
//! Because the records *are* the index's input, the index is updated in the
//! same group commit as the audit lines, under the same `flock`, and after a
//! crash it is rebuilt by replaying the records the saved snapshot does not
//! cover: it can never say less than the trail does.
//!
//! The snapshot (`usage.index` beside the audit file) only saves the replay
//! of the whole trail on open. It names the offset, `seq` and `hash` of the
//! last record it covers; a snapshot that does not fit the trail (the trail
//! was cut or rewritten, or the snapshot is stale) is ignored and the index
//! is rebuilt from the first record.

use super::record::{AuditRecord, OUTCOME_SUCCESS};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};

/// The encryption-context key of the file id (see [`crate::envelope`]).
const FILE_ID: &str = crate::envelope::FILE_ID_CONTEXT_KEY;

/// What the index knows of one key.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyUsage {
    /// Envelopes (file ids) whose data key this key wrapped last.
    pub envelopes: u64,
    /// Those envelopes per key-material version.
    pub versions: BTreeMap<u32, u64>,
    /// The last attempt of a cryptographic operation (RFC 3339 UTC, milliseconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_used: Option<String>,
}

/// The index: file id -> key and version, and per-key totals.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct UsageIndex {
    /// file id -> (key ARN, key-material version) that wrapped it last.
    files: HashMap<String, (String, u32)>,
    /// key ARN -> usage.
    keys: HashMap<String, KeyUsage>,
}

impl UsageIndex {
    /// Takes one record into account. Only successful operations count.
    ///
    /// Every attempt of a cryptographic operation counts as a use of its
    /// keys, allowed or not: a denied call still shows someone depends on the
    /// key, which is what matters before disabling or deleting it. Only a
    /// successful GenerateDataKey or ReEncrypt moves a file.
    pub(crate) fn apply(&mut self, record: &AuditRecord) {
        let wrapped = match record.operation.as_str() {
            "Encrypt" | "Decrypt" => None,
            "GenerateDataKey" | "GenerateDataKeyWithoutPlaintext" => {
                record.keys.first().zip(record.encryption_context.as_ref())
            }
            "ReEncrypt" => record
                .keys
                .get(1)
                .zip(record.destination_encryption_context.as_ref()),
            _ => return,
        };
        for key in &record.keys {
            let usage = self.keys.entry(key.arn.clone()).or_default();
            if usage
                .last_used
                .as_deref()
                .is_none_or(|t| t < record.time.as_str())
            {
                usage.last_used = Some(record.time.clone());
            }
        }
        if record.outcome != OUTCOME_SUCCESS {
            return;
        }
        if let Some((key, context)) = wrapped {
            if let Some(file) = context.get(FILE_ID) {
                self.place(file, &key.arn, key.version.unwrap_or(0));
            }
        }
    }

    /// Records that `file` is now wrapped under `arn` version `version`.
    fn place(&mut self, file: &str, arn: &str, version: u32) {
        let new = (arn.to_string(), version);
        if let Some(old) = self.files.insert(file.to_string(), new) {
            if let Some(usage) = self.keys.get_mut(&old.0) {
                usage.envelopes = usage.envelopes.saturating_sub(1);
                if let Some(n) = usage.versions.get_mut(&old.1) {
                    *n = n.saturating_sub(1);
                    if *n == 0 {
                        usage.versions.remove(&old.1);
                    }
                }
            }
        }
        let usage = self.keys.entry(arn.to_string()).or_default();
        usage.envelopes += 1;
        *usage.versions.entry(version).or_default() += 1;
    }

    /// What the index knows of the key `arn`.
    pub(crate) fn key(&self, arn: &str) -> KeyUsage {
        self.keys.get(arn).cloned().unwrap_or_default()
    }
}

/// An index the writer derives from the records and saves beside the trail.
pub(super) trait Index: Default + Serialize + serde::de::DeserializeOwned {
    /// The snapshot's file name, beside the audit file.
    const FILE: &'static str;
    /// Takes one record into account.
    fn take(&mut self, record: &AuditRecord);
}

impl Index for UsageIndex {
    const FILE: &'static str = "usage.index";
    fn take(&mut self, record: &AuditRecord) {
        self.apply(record);
    }
}

/// When each key was last used for cryptography: what DescribeKey needs,
/// small (one entry per key), so every writer keeps it and a fresh process
/// reads it instead of the trail or the per-envelope [`UsageIndex`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct LastUsed {
    keys: HashMap<String, String>,
}

impl LastUsed {
    /// The last use of the key `arn` (RFC 3339 UTC, milliseconds).
    pub(crate) fn key(&self, arn: &str) -> Option<String> {
        self.keys.get(arn).cloned()
    }
}

impl Index for LastUsed {
    const FILE: &'static str = "usage.last";
    fn take(&mut self, record: &AuditRecord) {
        if !is_cryptography(record) {
            return;
        }
        for key in &record.keys {
            let last = self.keys.entry(key.arn.clone()).or_default();
            if last.as_str() < record.time.as_str() {
                last.clone_from(&record.time);
            }
        }
    }
}

/// Whether the record is an attempt of a cryptographic operation (a use
/// of its keys, allowed or not).
fn is_cryptography(record: &AuditRecord) -> bool {
    matches!(
        record.operation.as_str(),
        "Encrypt" | "Decrypt" | "GenerateDataKey" | "GenerateDataKeyWithoutPlaintext" | "ReEncrypt"
    )
}

/// The saved index and the end of the trail it covers.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(super) struct Snapshot<I> {
    /// Byte offset in the active file just after the last record covered.
    pub(super) offset: u64,
    /// `seq` of the last record covered (0 for none).
    pub(super) seq: u64,
    /// `hash` of the last record covered.
    pub(super) hash: String,
    /// The index.
    pub(super) index: I,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::AuditKey;

    fn record(op: &str, keys: &[(&str, u32)], file: &str, time: &str) -> AuditRecord {
        let ctx: BTreeMap<String, String> = [(FILE_ID.to_string(), file.to_string())].into();
        AuditRecord {
            time: time.into(),
            operation: op.into(),
            outcome: OUTCOME_SUCCESS.into(),
            keys: keys
                .iter()
                .map(|(arn, v)| AuditKey {
                    arn: (*arn).into(),
                    version: Some(*v),
                })
                .collect(),
            encryption_context: Some(ctx.clone()),
            destination_encryption_context: (op == "ReEncrypt").then_some(ctx),
            ..AuditRecord::default()
        }
    }

    #[test]
    fn a_file_moved_to_another_key_leaves_the_old_keys_set() {
        let mut index = UsageIndex::default();
        index.apply(&record(
            "GenerateDataKey",
            &[("old", 1)],
            "f1",
            "2026-01-01T00:00:00.000Z",
        ));
        index.apply(&record(
            "GenerateDataKey",
            &[("old", 2)],
            "f2",
            "2026-01-02T00:00:00.000Z",
        ));
        assert_eq!(index.key("old").envelopes, 2);
        index.apply(&record(
            "ReEncrypt",
            &[("old", 1), ("new", 1)],
            "f1",
            "2026-01-03T00:00:00.000Z",
        ));
        let old = index.key("old");
        assert_eq!(old.envelopes, 1);
        assert_eq!(old.versions, BTreeMap::from([(2, 1)]));
        assert_eq!(old.last_used.as_deref(), Some("2026-01-03T00:00:00.000Z"));
        assert_eq!(index.key("new").envelopes, 1);
        let mut failed = record(
            "ReEncrypt",
            &[("old", 2), ("new", 1)],
            "f2",
            "2026-01-04T00:00:00.000Z",
        );
        failed.outcome = "AccessDeniedException".into();
        index.apply(&failed);
        assert_eq!(index.key("old").envelopes, 1);
        let old = index.key("old");
        assert_eq!(old.last_used.as_deref(), Some("2026-01-04T00:00:00.000Z"));
        assert_eq!(index.key("nothing"), KeyUsage::default());
    }
}

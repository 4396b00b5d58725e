//! The inventory: what keys and key versions wrap the envelopes of a
//! source. Reads headers only, on the same worker pool as re-wrapping.

use super::failure::Failure;
use super::pool::{feed_chunk, run_workers, worker_count, Merge};
use super::report::worker_panicked;
use super::store::{EnvelopeStore, ItemError, StoreError};
use super::target::Target;
use crate::envelope::{Slot, SlotState};
use crate::error::KmsError;
use crate::kms::Kms;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Envelopes under one key, as an inventory counts them.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct KeyInventory {
    /// Envelopes whose active slot is under this key.
    pub envelopes: u64,
    /// Per key-material version ("0" = unknown): envelopes.
    pub versions: BTreeMap<String, u64>,
    /// The oldest wrap time among them (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oldest_wrap: Option<String>,
    /// The oldest wrap time, seconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oldest_wrap_unix: Option<i64>,
}

/// What `rewrap inventory` found: envelopes per key and version.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Inventory {
    /// The roots walked.
    pub roots: Vec<String>,
    /// When (RFC 3339).
    pub seen_at: String,
    /// Items looked at.
    pub scanned: u64,
    /// Envelopes with a usable active slot.
    pub envelopes: u64,
    /// Items that are not envelopes.
    pub not_envelope: u64,
    /// Envelopes whose header or slots are unusable, and unreadable items.
    pub failed: u64,
    /// Per key ARN.
    pub keys: BTreeMap<String, KeyInventory>,
    /// The key staleness is measured against (ARN), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stale_against: Option<String>,
    /// Its newest key-material version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stale_against_version: Option<u32>,
    /// Envelopes not under the newest version of `stale_against`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stale: Option<u64>,
    /// Envelopes that still hold a valid old slot (an interrupted re-wrap).
    pub stale_slots: u64,
    /// Symbolic links inside the tree, left alone (see `links`).
    #[serde(default)]
    pub skipped_links: u64,
    /// Their paths.
    #[serde(default)]
    pub links: Vec<String>,
    /// Every failure with its reason.
    pub failures: Vec<Failure>,
    /// SOPS files (not counted in `envelopes` or `not_envelope`), per
    /// format (`sops-yaml`, ...).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub sops_formats: BTreeMap<String, u64>,
    /// Per key ARN: SOPS files with a KMS entry under it.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub sops_keys: BTreeMap<String, u64>,
}

impl Merge for Inventory {
    fn merge(&mut self, o: Self) {
        self.scanned += o.scanned;
        self.envelopes += o.envelopes;
        self.not_envelope += o.not_envelope;
        self.failed += o.failed;
        self.stale_slots += o.stale_slots;
        self.stale = match (self.stale, o.stale) {
            (None, None) => None,
            (a, b) => Some(a.unwrap_or(0) + b.unwrap_or(0)),
        };
        for (arn, k) in o.keys {
            let mine = self.keys.entry(arn).or_default();
            mine.envelopes += k.envelopes;
            for (v, n) in k.versions {
                *mine.versions.entry(v).or_default() += n;
            }
            if let Some(t) = k.oldest_wrap_unix {
                if mine.oldest_wrap_unix.is_none_or(|m| t < m) {
                    mine.oldest_wrap_unix = Some(t);
                    mine.oldest_wrap = k.oldest_wrap;
                }
            }
        }
        self.failures.extend(o.failures);
        for (k, n) in o.sops_formats {
            *self.sops_formats.entry(k).or_default() += n;
        }
        for (k, n) in o.sops_keys {
            *self.sops_keys.entry(k).or_default() += n;
        }
    }
    fn worker_panicked(&mut self) {
        self.failed += 1;
        self.failures.push(worker_panicked());
    }
}

impl Inventory {
    /// An item that is not an envelope: a SOPS file, or `not_envelope`.
    fn count_sops<S: EnvelopeStore>(&mut self, store: &S, item: Option<S::Item>, name: &str) {
        let found = item.map_or(Ok(None), |i| super::sops::read_sops(store, &i, name));
        match found {
            Ok(Some(file)) => {
                *self
                    .sops_formats
                    .entry(file.format.name().into())
                    .or_default() += 1;
                let mut arns: Vec<&str> =
                    file.entries.iter().map(|e| e.arn.value.as_str()).collect();
                arns.sort_unstable();
                arns.dedup();
                for arn in arns {
                    *self.sops_keys.entry(arn.to_string()).or_default() += 1;
                }
            }
            Ok(None) => self.not_envelope += 1,
            Err(f) => {
                self.failed += 1;
                self.failures.push(f);
            }
        }
    }

    fn count(&mut self, slot: &Slot) {
        self.envelopes += 1;
        let k = self.keys.entry(slot.key_arn.clone()).or_default();
        k.envelopes += 1;
        *k.versions.entry(slot.key_version.to_string()).or_default() += 1;
        if k.oldest_wrap_unix.is_none_or(|t| slot.wrapped_at < t) {
            k.oldest_wrap_unix = Some(slot.wrapped_at);
            k.oldest_wrap =
                chrono::DateTime::from_timestamp(slot.wrapped_at, 0).map(|d| d.to_rfc3339());
        }
    }
}

/// Counts envelopes per key and version of the items `store` yields. With
/// `stale_against` (a key the caller may describe), also counts envelopes
/// not under its newest version. Reads headers only; needs no KMS rights
/// otherwise. [`super::inventory`] runs this over a [`super::Source`].
pub fn inventory_items<S, I>(
    kms: Option<&dyn Kms>,
    store: &S,
    items: I,
    stale_against: Option<&str>,
    jobs: usize,
) -> Result<Inventory, KmsError>
where
    S: EnvelopeStore,
    I: Iterator<Item = Result<S::Item, ItemError>> + Send,
{
    let target = match (kms, stale_against) {
        (Some(kms), Some(key)) => Some(Target::resolve(kms, key)?),
        (None, Some(_)) => {
            return Err(KmsError::validation(
                "measuring staleness needs a KMS to describe the key",
            ))
        }
        _ => None,
    };
    let jobs = worker_count(jobs);
    let mut inv: Inventory = run_workers(jobs, feed_chunk(store, jobs), items, |feed| {
        let mut inv = Inventory {
            stale: target.as_ref().map(|_| 0),
            ..Default::default()
        };
        for item in feed {
            inv.scanned += 1;
            let (name, r, item): (_, Result<_, StoreError>, _) = match item {
                Ok(item) => (store.display(&item), store.read_header(&item), Some(item)),
                Err(e) => (e.location, Err(e.error), None),
            };
            let parsed = match r {
                Ok(None) => {
                    inv.count_sops(store, item, &name);
                    continue;
                }
                Ok(Some((parsed, _))) => parsed,
                Err(e) => {
                    inv.failed += 1;
                    inv.failures.push(Failure::new(name, &e));
                    continue;
                }
            };
            match parsed.slots.active() {
                Ok((active, slot)) => {
                    inv.count(slot);
                    if matches!(parsed.slots.0[1 - active], SlotState::Valid(_)) {
                        inv.stale_slots += 1;
                    }
                    if let (Some(t), Some(stale)) = (&target, inv.stale.as_mut()) {
                        *stale += u64::from(!t.is_current(slot));
                    }
                }
                Err(e) => {
                    inv.failed += 1;
                    inv.failures.push(Failure::new(name, &e));
                }
            }
        }
        inv
    });
    if let Some(t) = &target {
        let (arn, v) = t.snapshot();
        inv.stale_against = Some(arn);
        inv.stale_against_version = Some(v);
    }
    inv.seen_at = chrono::Utc::now().to_rfc3339();
    inv.failures.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(inv)
}

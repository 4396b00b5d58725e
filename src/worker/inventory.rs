//! The inventory: what keys and key versions wrap the envelopes of a
//! source. Reads headers only, on the same worker pool as re-wrapping.

use super::failure::Failure;
use super::pool::{feed_chunk, run_workers, worker_count, Merge};
use super::report::worker_panicked;
use super::store::{EnvelopeStore, ItemError, StoreError};
use super::target::Target;
use super::tree::LeftAlone;
use crate::envelope::{Slot, SlotState};
use crate::error::KmsError;
use crate::kms::Kms;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

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
    /// With a listing (`--list`): envelopes listed as stale.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stale_listed: Option<u64>,
    /// Symbolic links and special files inside the tree, left alone.
    #[serde(flatten)]
    pub left_alone: LeftAlone,
    /// Every failure with its reason.
    pub failures: Vec<Failure>,
    /// SOPS files (not counted in `envelopes` or `not_envelope`), per
    /// format (`sops-yaml`, ...).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub sops_formats: BTreeMap<String, u64>,
    /// Per key ARN: SOPS files with a KMS entry under it.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub sops_keys: BTreeMap<String, u64>,
    /// With `stale_against`: SOPS files a rotation to it would re-wrap (a
    /// KMS entry in a group without one under its newest version), per
    /// format; they count in `stale` too.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub sops_stale_formats: BTreeMap<String, u64>,
    /// Per key ARN: SOPS files with an entry under it that such a rotation
    /// would re-wrap.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub sops_stale_keys: BTreeMap<String, u64>,
}

/// The sum of two optional counts; `None` only when both are.
fn add_counts(a: Option<u64>, b: Option<u64>) -> Option<u64> {
    match (a, b) {
        (None, None) => None,
        (a, b) => Some(a.unwrap_or(0) + b.unwrap_or(0)),
    }
}

impl Merge for Inventory {
    fn merge(&mut self, o: Self) {
        self.scanned += o.scanned;
        self.envelopes += o.envelopes;
        self.not_envelope += o.not_envelope;
        self.failed += o.failed;
        self.stale_slots += o.stale_slots;
        self.stale = add_counts(self.stale, o.stale);
        self.stale_listed = add_counts(self.stale_listed, o.stale_listed);
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
        for (k, n) in o.sops_stale_formats {
            *self.sops_stale_formats.entry(k).or_default() += n;
        }
        for (k, n) in o.sops_stale_keys {
            *self.sops_stale_keys.entry(k).or_default() += n;
        }
    }
    fn worker_panicked(&mut self) {
        self.failed += 1;
        self.failures.push(worker_panicked());
    }
}

impl Inventory {
    /// An item that is not an envelope: a SOPS file, or `not_envelope`.
    fn count_sops<S: EnvelopeStore>(
        &mut self,
        store: &S,
        item: Option<S::Item>,
        name: &str,
        target: Option<&Target>,
        lister: Option<&Lister<'_>>,
    ) {
        let found = item.map_or(Ok(None), |i| super::sops::read_sops(store, &i, name));
        match found {
            Ok(Some(file)) => {
                self.count_stale_sops(&file, name, target, lister);
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

    /// A SOPS file's staleness: against the target as `rotate --to` would
    /// decide its entries, and each entry listed (`--list`).
    fn count_stale_sops(
        &mut self,
        file: &crate::sops::SopsFile,
        name: &str,
        target: Option<&Target>,
        lister: Option<&Lister<'_>>,
    ) {
        let rewrap: Option<Vec<bool>> = target.map(|t| {
            super::sops::plan(file, t, &super::target::FromFilter::any())
                .into_iter()
                .map(|a| a == super::sops::EntryAction::Rewrap)
                .collect()
        });
        if let Some(rewrap) = &rewrap {
            let mut arns: Vec<&str> = file
                .entries
                .iter()
                .zip(rewrap)
                .filter(|(_, r)| **r)
                .map(|(e, _)| e.arn.value.as_str())
                .collect();
            arns.sort_unstable();
            arns.dedup();
            if !arns.is_empty() {
                *self.stale.get_or_insert(0) += 1;
                let format = file.format.name().to_string();
                *self.sops_stale_formats.entry(format).or_default() += 1;
                for arn in arns {
                    *self.sops_stale_keys.entry(arn.to_string()).or_default() += 1;
                }
            }
        }
        if let (Some(l), Some(n)) = (lister, self.stale_listed.as_mut()) {
            for (i, entry) in file.entries.iter().enumerate() {
                let stale = rewrap.as_ref().map(|r| r[i]);
                *n += u64::from(l.list_sops(name, file.format, entry, stale));
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

/// One envelope, as `rewrap inventory --list` streams it (one JSON line each).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ListedEnvelope {
    /// The file path, or the object's URL.
    pub path: String,
    /// ARN of the key its active slot is under.
    pub key_arn: String,
    /// That key's alias names, as far as the caller may list them.
    pub aliases: Vec<String>,
    /// Key-material version of the active slot (0: unknown).
    pub key_version: u32,
    /// When the active slot was wrapped (RFC 3339), if the slot says.
    pub wrapped_at: Option<String>,
    /// Not under the newest version of the target (`--stale-against`), or
    /// without one, of its own key; `None` when that version is unknown
    /// (the caller may not describe the key).
    pub stale: Option<bool>,
    /// For a KMS entry of a SOPS file (one line each): the file's format
    /// (`sops-yaml`, ...); `wrapped_at` is then the entry's `created_at`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
    /// For a KMS entry of a SOPS file: the entry (`kms__list_0`,
    /// `key_groups__list_1__map_kms__list_0`). For a rotation to
    /// `--stale-against`, an entry is stale when the rotation would
    /// re-wrap it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entry: Option<String>,
}

/// What an inventory needs to list each envelope: alias names and the
/// newest version of each key (described once, on first sight), and where
/// the lines go.
pub struct Lister<'a> {
    kms: &'a dyn Kms,
    aliases: HashMap<String, Vec<String>>,
    newest: Mutex<HashMap<String, Option<u32>>>,
    sink: &'a (dyn Fn(&ListedEnvelope) + Sync),
}

impl<'a> Lister<'a> {
    /// A lister asking `kms` for alias names (ListAliases, once) and key
    /// versions (DescribeKey, once per key), sending each envelope to `sink`.
    pub fn new(kms: &'a dyn Kms, sink: &'a (dyn Fn(&ListedEnvelope) + Sync)) -> Lister<'a> {
        Lister {
            kms,
            aliases: super::rewrap::aliases_by_key(kms),
            newest: Mutex::new(HashMap::new()),
            sink,
        }
    }

    /// The newest key-material version of `arn` (0: the KMS does not
    /// count versions), or `None` if it cannot be described.
    fn newest_version(&self, arn: &str) -> Option<u32> {
        let mut known = self
            .newest
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *known.entry(arn.to_string()).or_insert_with(|| {
            self.kms
                .describe_key(&crate::api::KeyIdRequest {
                    key_id: arn.to_string(),
                    grant_tokens: None,
                })
                .ok()
                .map(|r| r.key_metadata.key_material_versions)
        })
    }

    fn list(&self, path: String, slot: &Slot, target: Option<&Target>) -> bool {
        let stale = match target {
            Some(t) => Some(!t.is_current(slot)),
            None => self.behind_its_key(slot),
        };
        let wrapped_at = (slot.wrapped_at > 0)
            .then(|| chrono::DateTime::from_timestamp(slot.wrapped_at, 0))
            .flatten()
            .map(|d| d.to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
        self.emit(ListedEnvelope {
            path,
            key_arn: slot.key_arn.clone(),
            key_version: slot.key_version,
            wrapped_at,
            stale,
            ..Default::default()
        })
    }

    /// One KMS entry of a SOPS file; `stale` as decided against the target,
    /// if any.
    fn list_sops(
        &self,
        path: &str,
        format: crate::sops::Format,
        entry: &crate::sops::KmsEntry,
        stale: Option<bool>,
    ) -> bool {
        let slot = super::sops::slot_of(entry);
        self.emit(ListedEnvelope {
            path: path.to_string(),
            stale: stale.or_else(|| self.behind_its_key(&slot)),
            key_arn: slot.key_arn,
            key_version: slot.key_version,
            wrapped_at: entry.created_at.as_ref().map(|c| c.value.clone()),
            format: Some(format.name().into()),
            entry: Some(entry.name()),
            ..Default::default()
        })
    }

    /// Under an older version than its key's newest.
    fn behind_its_key(&self, slot: &Slot) -> Option<bool> {
        self.newest_version(&slot.key_arn)
            .map(|newest| newest != 0 && slot.key_version < newest)
    }

    /// Sends `listed` (with its key's alias names) to the sink; true when
    /// it is stale.
    fn emit(&self, mut listed: ListedEnvelope) -> bool {
        let arn = &listed.key_arn;
        let id = arn.rsplit('/').next().unwrap_or(arn);
        listed.aliases = self.aliases.get(id).cloned().unwrap_or_default();
        listed.aliases.sort();
        (self.sink)(&listed);
        listed.stale == Some(true)
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
    listed_inventory_items(kms, store, items, stale_against, jobs, None)
}

/// [`inventory_items`] that also hands every envelope to `lister` as it is
/// read (one pipeline for trees and object stores: `inventory --list`).
/// Then `stale_listed` counts envelopes not under their key's newest version.
pub fn listed_inventory_items<S, I>(
    kms: Option<&dyn Kms>,
    store: &S,
    items: I,
    stale_against: Option<&str>,
    jobs: usize,
    lister: Option<&Lister<'_>>,
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
            stale_listed: lister.map(|_| 0),
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
                    inv.count_sops(store, item, &name, target.as_ref(), lister);
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
                    if let (Some(l), Some(n)) = (lister, inv.stale_listed.as_mut()) {
                        *n += u64::from(l.list(name, slot, target.as_ref()));
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

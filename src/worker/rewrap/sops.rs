//! The re-wrap protocol for SOPS files, in the same workers, batches and
//! report as envelopes (see [`crate::worker`]'s `sops.rs` for the steps and
//! which entries are re-wrapped).

use super::{Run, MAX_ATTEMPTS};
use crate::api::{CiphertextBlob, ReEncryptRequest};
use crate::envelope::Slot;
use crate::sops::KmsEntry;
use crate::worker::failure::Failure;
use crate::worker::report::RewrapReport;
use crate::worker::sops::{plan, slot_of, EntryAction, SopsReported, Staged, Whole};
use crate::worker::store::{EnvelopeStore, StoreError};
use crate::worker::WholeStore;

/// What became of an item that is not an envelope.
pub(super) enum Handled {
    /// Not a SOPS file either.
    NotSops,
    /// Counted in the report (decided, or failed).
    Counted,
    /// Waiting for its batch's ReEncrypt call.
    Queued,
}

/// A SOPS file read and decided, waiting for its batch's ReEncrypt call
/// ([`Run::rewrap_sops`]): SOPS files share the ReEncrypt batches (and so
/// the audit group commits) of envelopes, `kms_batch` entries a call.
pub(super) struct SopsReady<I> {
    item: I,
    attempts: u32,
    name: String,
    read: Whole,
    reported: SopsReported,
    /// The first entry re-wrapped, as it was (for the per-key tables).
    source: Slot,
    /// Where each entry to re-wrap is, and its ReEncrypt request.
    entries: Vec<(KmsEntry, ReEncryptRequest)>,
}

/// What became of a SOPS file after its ReEncrypt batch.
enum Staging<I> {
    Staged(Box<SopsPending>),
    Counted,
    /// Changed since it was read: read and decide again.
    Again(I, u32),
}

/// A SOPS file whose new version is staged.
pub(super) struct SopsPending {
    staged: Staged,
    reported: SopsReported,
    /// The first entry re-wrapped, as it was (for the per-key tables).
    source: Slot,
}

impl<S: EnvelopeStore> Run<'_, S> {
    /// Reads and decides `item` if it is a SOPS file: counts it, or queues
    /// it for its batch's ReEncrypt call.
    pub(super) fn sops_item(
        &self,
        item: S::Item,
        attempts: u32,
        queue: &mut Vec<SopsReady<S::Item>>,
        report: &mut RewrapReport,
    ) -> Handled {
        let Some(store) = self.store.whole() else {
            return Handled::NotSops;
        };
        let name = self.store.display(&item);
        let read = match store.read_whole(&item) {
            Ok(Some(read)) => read,
            Ok(None) => return Handled::NotSops,
            Err(e) => {
                report.fail(Failure::new(name, &e), None);
                return Handled::Counted;
            }
        };
        match self.sops_decide(item, attempts, name, read, report) {
            Some(ready) => {
                queue.push(ready);
                Handled::Queued
            }
            None => Handled::Counted,
        }
    }

    /// Parses and plans a file read whole: `None` when counted (not a SOPS
    /// file counts as `not_envelope`).
    fn sops_decide(
        &self,
        item: S::Item,
        attempts: u32,
        name: String,
        read: Whole,
        report: &mut RewrapReport,
    ) -> Option<SopsReady<S::Item>> {
        let file = match crate::sops::parse(&read.bytes) {
            Ok(Some(file)) => file,
            Ok(None) => {
                report.not_envelope += 1;
                return None;
            }
            Err(e) => {
                report.fail(Failure::new(name, &e), None);
                return None;
            }
        };
        let actions = plan(&file, &self.target, &self.from);
        let count = |a| actions.iter().filter(|&&x| x == a).count() as u32;
        let mut reported = SopsReported {
            path: name.clone(),
            format: file.format.name().into(),
            action: String::new(),
            rewrapped: count(EntryAction::Rewrap),
            current: count(EntryAction::Current),
            redundant: count(EntryAction::Redundant),
            other_key: count(EntryAction::OtherKey),
        };
        let first_entry = file.entries.first().map(slot_of);
        let rewrap: Vec<KmsEntry> = file
            .entries
            .into_iter()
            .zip(&actions)
            .filter(|(_, a)| **a == EntryAction::Rewrap)
            .map(|(e, _)| e)
            .collect();
        let Some(first) = rewrap.first() else {
            let current = reported.current + reported.redundant > 0;
            if current {
                reported.action = "already_current".into();
                report.already_current += 1;
            } else {
                reported.action = "other_key".into();
                report.other_key += 1;
            }
            if let Some(s) = first_entry {
                let c = report.source(&s);
                c.seen += 1;
                if current {
                    c.already_current += 1;
                } else {
                    c.other_key += 1;
                }
                report.after(&s.key_arn, s.key_version);
            }
            report.sops.push(reported);
            return None;
        };
        let source = slot_of(first);
        if self.opts.dry_run {
            // The rights the real run needs, probed as for envelopes (once
            // per source key version).
            for entry in &rewrap {
                let ctx = (!entry.context.is_empty()).then(|| entry.context.clone());
                if let Err(e) = self.probe(&item, ctx, &slot_of(entry)) {
                    self.judge(&e);
                    report.source(&source).seen += 1;
                    report.fail(Failure::new(name, &e), Some(&source));
                    reported.action = "failed".into();
                    report.sops.push(reported);
                    return None;
                }
            }
            reported.action = "would_rotate".into();
            report.would_rotate += 1;
            report.source(&source).seen += 1;
            report.source(&source).would_rotate += 1;
            let (arn, v) = self.target.snapshot();
            report.after(&arn, v);
            report.sops.push(reported);
            return None;
        }
        let object = crate::audit::object_name(&name);
        let entries = rewrap
            .into_iter()
            .map(|e| {
                let ctx = (!e.context.is_empty()).then(|| e.context.clone());
                let request = ReEncryptRequest {
                    ciphertext_blob: CiphertextBlob(e.blob()),
                    source_encryption_context: ctx.clone(),
                    destination_key_id: self.target.destination(),
                    destination_encryption_context: ctx,
                    grant_tokens: self.grant_tokens(),
                    object: Some(object.clone()),
                    ..Default::default()
                };
                (e, request)
            })
            .collect();
        Some(SopsReady {
            item,
            attempts,
            name,
            read,
            reported,
            source,
            entries,
        })
    }

    /// Entries of the queued SOPS files (what their ReEncrypt batch holds).
    pub(super) fn sops_entries(queue: &[SopsReady<S::Item>]) -> usize {
        queue.iter().map(|r| r.entries.len()).sum()
    }

    /// One ReEncrypt batch for the queued SOPS files, then each file's new
    /// version staged (a file changed since it was read is read again).
    pub(super) fn rewrap_sops(
        &self,
        ready: &mut Vec<SopsReady<S::Item>>,
        pending: &mut Vec<SopsPending>,
        retry: &mut Vec<(S::Item, u32)>,
        report: &mut RewrapReport,
    ) {
        let Some(store) = self.store.whole() else {
            return;
        };
        if ready.is_empty() {
            return;
        }
        let ready = std::mem::take(ready);
        let requests: Vec<ReEncryptRequest> = ready
            .iter()
            .flat_map(|r| r.entries.iter().map(|(_, q)| q.clone()))
            .collect();
        let mut responses = self.kms.re_encrypt_many(&requests).into_iter();
        let now = crate::sops::now_rfc3339();
        for r in ready {
            let answers: Vec<_> = (0..r.entries.len())
                .map(|_| {
                    responses.next().unwrap_or_else(|| {
                        Err(crate::error::KmsError::internal(
                            "the KMS answered fewer requests than asked",
                        ))
                    })
                })
                .collect();
            match self.sops_stage(store, r, answers, &now, report) {
                Staging::Staged(p) => pending.push(*p),
                Staging::Counted => self.tick(1),
                Staging::Again(item, attempts) => retry.push((item, attempts)),
            }
        }
    }

    /// Writes the new `arn`, `enc` and `created_at` values of one file and
    /// stages it.
    fn sops_stage(
        &self,
        store: &dyn WholeStore<S::Item>,
        r: SopsReady<S::Item>,
        answers: Vec<Result<crate::api::ReEncryptResponse, crate::error::KmsError>>,
        now: &str,
        report: &mut RewrapReport,
    ) -> Staging<S::Item> {
        let SopsReady {
            item,
            attempts,
            name,
            read,
            mut reported,
            source,
            entries,
        } = r;
        let mut fail = |failure: Failure, reported: &mut SopsReported| {
            report.source(&source).seen += 1;
            report.fail(failure, Some(&source));
            reported.action = "failed".into();
            report.sops.push(std::mem::take(reported));
        };
        let mut edits = Vec::with_capacity(3 * entries.len());
        for ((entry, _), answer) in entries.iter().zip(answers) {
            let resp = match answer {
                Ok(resp) => resp,
                Err(e) => {
                    self.judge(&e);
                    fail(Failure::new(name.clone(), &e), &mut reported);
                    return Staging::Counted;
                }
            };
            let version =
                crate::ciphertext_blob::peek(&resp.ciphertext_blob.0).map_or(0, |b| b.key_version);
            self.target.learn(&resp.key_id, version);
            let enc = {
                use base64::Engine;
                base64::engine::general_purpose::STANDARD.encode(&resp.ciphertext_blob.0)
            };
            if !crate::sops::safe_value(&resp.key_id) || !crate::sops::safe_value(&enc) {
                let e =
                    crate::error::KmsError::internal("the KMS answered a key id SOPS cannot hold");
                fail(Failure::new(name.clone(), &e), &mut reported);
                return Staging::Counted;
            }
            edits.push((entry.arn.span.clone(), resp.key_id));
            edits.push((entry.enc.span.clone(), enc));
            if let Some(c) = &entry.created_at {
                edits.push((c.span.clone(), now.to_string()));
            }
        }
        let bytes = crate::sops::rewrite(&read.bytes, &edits);
        match store.stage_whole(&item, read, &bytes) {
            Ok(staged) => Staging::Staged(Box::new(SopsPending {
                staged,
                reported,
                source,
            })),
            Err(StoreError::Conflict(_)) if attempts < MAX_ATTEMPTS => {
                Staging::Again(item, attempts + 1)
            }
            Err(e) => {
                fail(Failure::new(name.clone(), &e), &mut reported);
                Staging::Counted
            }
        }
    }

    /// The group commit of a worker's staged SOPS files.
    pub(super) fn flush_sops(&self, queue: &mut Vec<SopsPending>, report: &mut RewrapReport) {
        let Some(store) = self.store.whole() else {
            return;
        };
        if queue.is_empty() {
            return;
        }
        let batch = std::mem::take(queue);
        let n = batch.len() as u64;
        let mut rest = Vec::with_capacity(batch.len());
        let staged: Vec<Staged> = batch
            .into_iter()
            .map(|p| {
                rest.push((p.reported, p.source));
                p.staged
            })
            .collect();
        let (arn, version) = self.target.snapshot();
        for ((mut reported, source), result) in rest.into_iter().zip(store.commit_whole(staged)) {
            report.source(&source).seen += 1;
            match result {
                Ok(()) => {
                    reported.action = "rotated".into();
                    report.rotated += 1;
                    report.source(&source).rotated += 1;
                    report.after(&arn, version);
                }
                Err(e) => {
                    reported.action = "failed".into();
                    report.fail(Failure::new(reported.path.clone(), &e), Some(&source));
                }
            }
            report.sops.push(reported);
        }
        self.tick(n);
    }
}

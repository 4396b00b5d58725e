//! The re-wrap protocol for SOPS files, in the same workers, batches and
//! report as envelopes (see [`crate::worker`]'s `sops.rs` for the steps and
//! which entries are re-wrapped).

use super::{Run, MAX_ATTEMPTS};
use crate::api::{CiphertextBlob, ReEncryptRequest};
use crate::envelope::Slot;
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
    /// Staged, waiting for its group commit.
    Queued,
}

/// A SOPS file whose new version is staged.
pub(super) struct SopsPending {
    staged: Staged,
    reported: SopsReported,
    /// The first entry re-wrapped, as it was (for the per-key tables).
    source: Slot,
}

impl<S: EnvelopeStore> Run<'_, S> {
    /// Re-wraps `item` if it is a SOPS file: counts it, or queues it for
    /// the group commit ([`Run::flush_sops`]).
    pub(super) fn sops_item(
        &self,
        item: &S::Item,
        queue: &mut Vec<SopsPending>,
        report: &mut RewrapReport,
    ) -> Handled {
        let Some(store) = self.store.whole() else {
            return Handled::NotSops;
        };
        let name = self.store.display(item);
        let mut attempts = 1;
        loop {
            let read = match store.read_whole(item) {
                Ok(Some(read)) => read,
                Ok(None) => return Handled::NotSops,
                Err(e) => {
                    report.fail(Failure::new(name, &e), None);
                    return Handled::Counted;
                }
            };
            match self.sops_once(store, item, &name, read, report) {
                Ok(Some(pending)) => {
                    queue.push(pending);
                    return Handled::Queued;
                }
                Ok(None) => return Handled::Counted,
                Err(StoreError::Conflict(_)) if attempts < MAX_ATTEMPTS => attempts += 1,
                Err(e) => {
                    report.fail(Failure::new(name, &e), None);
                    return Handled::Counted;
                }
            }
        }
    }

    /// One attempt: decide, ReEncrypt, stage. `Ok(None)`: counted (not a
    /// SOPS file counts as `Handled::NotSops` through `not_sops`).
    fn sops_once(
        &self,
        store: &dyn WholeStore<S::Item>,
        item: &S::Item,
        name: &str,
        read: Whole,
        report: &mut RewrapReport,
    ) -> Result<Option<SopsPending>, StoreError> {
        let file = match crate::sops::parse(&read.bytes) {
            Ok(Some(file)) => file,
            Ok(None) => {
                report.not_envelope += 1;
                return Ok(None);
            }
            Err(e) => {
                report.fail(Failure::new(name, &e), None);
                return Ok(None);
            }
        };
        let actions = plan(&file, &self.target, &self.from);
        let count = |a| actions.iter().filter(|&&x| x == a).count() as u32;
        let mut reported = SopsReported {
            path: name.to_string(),
            format: file.format.name().into(),
            action: String::new(),
            rewrapped: count(EntryAction::Rewrap),
            current: count(EntryAction::Current),
            redundant: count(EntryAction::Redundant),
            other_key: count(EntryAction::OtherKey),
        };
        let rewrap: Vec<_> = file
            .entries
            .iter()
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
            if let Some(s) = file.entries.first().map(slot_of) {
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
            return Ok(None);
        };
        let source = slot_of(first);
        if self.opts.dry_run {
            // The rights the real run needs, probed as for envelopes (once
            // per source key version).
            for entry in &rewrap {
                let ctx = (!entry.context.is_empty()).then(|| entry.context.clone());
                if let Err(e) = self.probe(item, ctx, &slot_of(entry)) {
                    self.judge(&e);
                    report.source(&source).seen += 1;
                    report.fail(Failure::new(name, &e), Some(&source));
                    reported.action = "failed".into();
                    report.sops.push(reported);
                    return Ok(None);
                }
            }
            reported.action = "would_rotate".into();
            report.would_rotate += 1;
            report.source(&source).seen += 1;
            report.source(&source).would_rotate += 1;
            let (arn, v) = self.target.snapshot();
            report.after(&arn, v);
            report.sops.push(reported);
            return Ok(None);
        }
        let requests: Vec<ReEncryptRequest> = rewrap
            .iter()
            .map(|e| {
                let ctx = (!e.context.is_empty()).then(|| e.context.clone());
                ReEncryptRequest {
                    ciphertext_blob: CiphertextBlob(e.blob()),
                    source_encryption_context: ctx.clone(),
                    destination_key_id: self.target.destination(),
                    destination_encryption_context: ctx,
                    grant_tokens: self.grant_tokens(),
                    object: Some(crate::audit::object_name(name)),
                    ..Default::default()
                }
            })
            .collect();
        let now = crate::sops::now_rfc3339();
        let mut edits = Vec::with_capacity(3 * rewrap.len());
        let responses = self.kms.re_encrypt_many(&requests);
        for (entry, response) in rewrap.iter().zip(responses) {
            let resp = match response {
                Ok(resp) => resp,
                Err(e) => {
                    self.judge(&e);
                    report.source(&source).seen += 1;
                    report.fail(Failure::new(name, &e), Some(&source));
                    reported.action = "failed".into();
                    report.sops.push(reported);
                    return Ok(None);
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
                report.fail(Failure::new(name, &e), Some(&source));
                reported.action = "failed".into();
                report.sops.push(reported);
                return Ok(None);
            }
            edits.push((entry.arn.span.clone(), resp.key_id));
            edits.push((entry.enc.span.clone(), enc));
            if let Some(c) = &entry.created_at {
                edits.push((c.span.clone(), now.clone()));
            }
        }
        let bytes = crate::sops::rewrite(&read.bytes, &edits);
        let staged = store.stage_whole(item, read, &bytes)?;
        Ok(Some(SopsPending {
            staged,
            reported,
            source,
        }))
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

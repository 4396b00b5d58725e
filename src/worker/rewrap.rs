//! The crash-safe re-wrap protocol, written once for every
//! [`EnvelopeStore`]: re-wrap envelope data keys under the newest version of
//! a target key through the KMS ReEncrypt operation.
//!
//! Per envelope, in this order (each step is a function below):
//!
//! 1. read header and slots ([`Run::decide`]); the active slot is the valid
//!    one with the highest sequence number;
//! 2. if the active slot is not under the newest version of the target key,
//!    ReEncrypt its wrapped key ([`Run::rewrap`]: source context =
//!    destination context = the envelope's context) and write the result
//!    into the *other* slot with sequence + 1 ([`Run::write_new_slot`]),
//!    compare-and-swap against what step 1 read;
//! 3. group commit ([`Run::flush`]): make a batch of such writes durable at
//!    once;
//! 4. wipe the old slot (all zeros, [`Run::wipe`]), so the retired key can
//!    no longer open the envelope, compare-and-swap against what step 2
//!    wrote;
//! 5. group commit again; only now is the envelope reported as re-wrapped.
//!
//! A crash between any two steps leaves an envelope that opens with its old
//! or its new slot; a re-run sees "active slot current, stale slot still
//! present" and finishes with steps 3 to 5. The data key never leaves the
//! KMS: the worker only handles wrapped keys, so a principal allowed
//! ReEncrypt and nothing else can run it.
//!
//! Where envelopes live (locks, `O_NOATIME`, `syncfs`, conditional puts) is
//! the store's business ([`super::FileStore`],
//! [`super::ObjectEnvelopeStore`]); how items reach the workers is
//! [`super::pool`]'s.

use super::failure::Failure;
use super::pool::{feed_chunk, run_workers, worker_count, Cursor};
use super::report::RewrapReport;
use super::store::{EnvelopeStore, ItemError, StoreError};
use super::target::{FromFilter, Target};
use super::RewrapOptions;
use crate::api::{ReEncryptRequest, ReEncryptResponse};
use crate::envelope::{Header, Slot, SlotState, SlotWrapping, EMPTY_SLOT};
use crate::error::{ErrorCode, KmsError};
use crate::kms::Kms;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

// SOPS files: the same workers, batches and report (see `rewrap/sops.rs`).
mod sops;

/// Re-wraps every envelope `items` yields from `store`. Errors only when the
/// run cannot start (the target key cannot be resolved); per-item failures
/// are in the report. [`super::rewrap`] runs this over a
/// [`super::Source`]; call it directly for a store of your own.
pub fn rewrap_items<S, I>(
    kms: &dyn Kms,
    store: &S,
    items: I,
    opts: &RewrapOptions,
) -> Result<RewrapReport, KmsError>
where
    S: EnvelopeStore,
    I: Iterator<Item = Result<S::Item, ItemError>> + Send,
{
    let started = chrono::Utc::now();
    let target = Target::resolve(kms, &opts.to)?;
    target.check_usable()?;
    let run = Run {
        kms,
        store,
        target,
        from: FromFilter::resolve(kms, &opts.from)?,
        opts,
        done: AtomicU64::new(0),
        stop: Stop::default(),
        probed: Mutex::new(HashMap::new()),
        aliases: if opts.dry_run {
            aliases_by_key(kms)
        } else {
            HashMap::new()
        },
    };
    if let Some(p) = &opts.progress.0 {
        if opts.expected_items > 0 {
            p.expect(opts.expected_items);
        }
    }
    let jobs = worker_count(opts.jobs);
    let chunk = feed_chunk(store, jobs);
    let mut report = run_workers(jobs, chunk, items, |feed| run.worker(feed));
    if let Some(p) = &opts.progress.0 {
        p.finish();
    }
    let (arn, version) = run.target.snapshot();
    report.target_key = arn;
    report.target_version = version;
    report.dry_run = opts.dry_run;
    report.stopped_early = run.stop.stopped.load(Ordering::Acquire);
    report.stop_reason = run
        .stop
        .reason
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .take();
    report.interrupted = run.stop.interrupted.load(Ordering::Acquire);
    report.listing.sort_by(|a, b| a.path.cmp(&b.path));
    report.sops.sort_by(|a, b| a.path.cmp(&b.path));
    report.started_at = started.to_rfc3339();
    report.finished_at = chrono::Utc::now().to_rfc3339();
    report.failures.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(report)
}

/// What step 2 did to one item.
struct Written<V> {
    version: V,
    wipe: usize,
    source: Slot,
    written: Slot,
    /// True when this run re-wrapped it (false: only a stale slot to wipe).
    rotated: bool,
}

/// A decided item waiting for its group commit.
struct Pending<S: EnvelopeStore> {
    item: S::Item,
    w: Written<S::Version>,
}

/// What step 1 read of an envelope whose active slot needs a ReEncrypt.
struct Rewrap<V> {
    header: Header,
    /// As read (and locked, for stores that lock).
    version: V,
    /// Index of the active slot.
    active: usize,
    /// The active slot.
    slot: Slot,
}

/// An envelope waiting for its batch's ReEncrypt call.
struct Ready<S: EnvelopeStore> {
    item: S::Item,
    attempts: u32,
    read: Rewrap<S::Version>,
}

enum Decision<S: EnvelopeStore> {
    NotEnvelope,
    Current(Slot),
    OtherKey(Slot),
    WouldRotate(Slot),
    /// Needs a ReEncrypt of its active slot.
    Rewrap(Rewrap<S::Version>),
    Write(Written<S::Version>),
}

/// One worker's items between steps.
struct Queues<S: EnvelopeStore> {
    /// Waiting for their batch's ReEncrypt (step 2).
    ready: Vec<Ready<S>>,
    /// New slot written, waiting for the group commit (steps 3 to 5).
    pending: Vec<Pending<S>>,
    /// Changed under us: to be read and decided again, with the attempts
    /// made so far.
    retry: Vec<(S::Item, u32)>,
    /// Locked by another writer when we came to them: done last, each after
    /// releasing everything we hold (see [`Run::handle`]).
    busy: Vec<(S::Item, u32)>,
    /// SOPS files waiting for their batch's ReEncrypt.
    sops_ready: Vec<sops::SopsReady<S::Item>>,
    /// SOPS files staged, waiting for their group commit.
    sops: Vec<sops::SopsPending>,
}

/// Reads and decisions of one item before it is given up as changing
/// under us too often.
const MAX_ATTEMPTS: u32 = 4;

/// Everything the workers share.
struct Run<'a, S: EnvelopeStore> {
    kms: &'a dyn Kms,
    store: &'a S,
    target: Target,
    from: FromFilter,
    opts: &'a RewrapOptions,
    done: AtomicU64,
    stop: Stop,
    /// Dry run: (source key ARN, version) pairs probed with a ReEncrypt:
    /// `None` passed, `Some` a refusal every envelope there would meet.
    probed: Mutex<HashMap<(String, u32), Option<KmsError>>>,
    /// Dry run: key ARN -> alias names, for the listing.
    aliases: HashMap<String, Vec<String>>,
}

/// Why and whether the workers stop before the input is done.
#[derive(Default)]
struct Stop {
    /// Stopped early: `--max-failures` reached or a systematic failure.
    stopped: AtomicBool,
    /// A worker left its input because of an [`super::Interrupt`].
    interrupted: AtomicBool,
    reason: Mutex<Option<String>>,
    /// Failures of all workers so far.
    failures: AtomicU64,
}

impl Stop {
    /// Stops the run; the first reason given is kept.
    fn halt(&self, reason: String) {
        let mut r = self
            .reason
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if r.is_none() {
            *r = Some(reason);
        }
        self.stopped.store(true, Ordering::Release);
    }
}

/// Key id -> its alias names, as far as the caller may list them (a dry
/// run's listing names them; no right to list means no names).
pub fn aliases_by_key(kms: &dyn Kms) -> HashMap<String, Vec<String>> {
    let mut out: HashMap<String, Vec<String>> = HashMap::new();
    let mut marker = None;
    for _ in 0..100 {
        let Ok(page) = kms.list_aliases(&crate::api::ListRequest {
            marker: marker.take(),
            ..Default::default()
        }) else {
            break;
        };
        for a in page.aliases {
            if let Some(id) = a.target_key_id {
                out.entry(id).or_default().push(a.alias_name);
            }
        }
        match page.next_marker {
            Some(m) if page.truncated => marker = Some(m),
            _ => break,
        }
    }
    out
}

/// Why step 1 or 2 failed for one item.
enum Cause {
    Store(StoreError),
    Kms(KmsError),
}

type Decided<S> = Result<Decision<S>, (Cause, Option<Slot>)>;

impl Cause {
    fn failure(&self, path: String) -> Failure {
        match self {
            Cause::Store(e) => Failure::new(path, e),
            Cause::Kms(e) => Failure::new(path, e),
        }
    }
}

fn store_err(slot: Option<&Slot>) -> impl FnOnce(StoreError) -> (Cause, Option<Slot>) + '_ {
    move |e| (Cause::Store(e), slot.cloned())
}

impl<S: EnvelopeStore> Run<'_, S> {
    fn worker(&self, feed: &mut Cursor<'_, Result<S::Item, ItemError>>) -> RewrapReport {
        let mut report = RewrapReport::default();
        let mut q = Queues {
            ready: Vec::new(),
            pending: Vec::new(),
            retry: Vec::new(),
            busy: Vec::new(),
            sops_ready: Vec::new(),
            sops: Vec::new(),
        };
        let mut counted = 0;
        loop {
            if self.halted(&report, &mut counted) {
                self.leave(&mut q, &mut report);
                break;
            }
            let (item, attempts) = match q.retry.pop() {
                Some(again) => again,
                None => match feed.next() {
                    Some(Ok(item)) => {
                        report.scanned += 1;
                        (item, 1)
                    }
                    Some(Err(e)) => {
                        report.scanned += 1;
                        report.fail(Failure::new(e.location, &e.error), None);
                        self.tick(1);
                        continue;
                    }
                    None if !q.ready.is_empty()
                        || !q.pending.is_empty()
                        || !q.sops_ready.is_empty()
                        || !q.sops.is_empty() =>
                    {
                        // The input is done: finish what is in flight (which
                        // may give items to read again).
                        self.release(&mut q, &mut report);
                        continue;
                    }
                    None => match q.busy.pop() {
                        // Holding nothing now, wait for the locked ones.
                        Some((item, attempts)) => {
                            self.handle(item, attempts, true, &mut q, &mut report);
                            continue;
                        }
                        None => break,
                    },
                },
            };
            self.handle(item, attempts, false, &mut q, &mut report);
            if q.ready.len() >= self.opts.kms_batch.max(1) {
                self.rewrap(&mut q, &mut report);
            }
            if Self::sops_entries(&q.sops_ready) >= self.opts.kms_batch.max(1) {
                self.rewrap_sops(&mut q.sops_ready, &mut q.sops, &mut q.retry, &mut report);
            }
            if q.pending.len() >= self.opts.batch.max(1) {
                self.flush(&mut q.pending, &mut report);
            }
            if q.sops.len() >= self.opts.batch.max(1) {
                self.flush_sops(&mut q.sops, &mut report);
            }
        }
        report
    }

    /// True when this worker must take no new item: the run was
    /// interrupted, stopped early, or its failures reached `max_failures`.
    fn halted(&self, report: &RewrapReport, counted: &mut u64) -> bool {
        let new = report.failed - *counted;
        *counted = report.failed;
        let total = self.stop.failures.fetch_add(new, Ordering::AcqRel) + new;
        let max = self.opts.max_failures;
        if max > 0 && total >= max {
            self.stop.halt(format!(
                "{total} items failed: the limit is {max} (--max-failures)"
            ));
        }
        if self.stop.stopped.load(Ordering::Acquire) {
            return true;
        }
        if self.opts.interrupt.is_requested() {
            self.stop.interrupted.store(true, Ordering::Release);
            return true;
        }
        false
    }

    /// Stops this worker: the batch whose new slots are written is taken
    /// through its group commits and wipes; items only read (and locked)
    /// are released untouched and counted as unfinished.
    fn leave(&self, q: &mut Queues<S>, report: &mut RewrapReport) {
        self.flush(&mut q.pending, report);
        self.flush_sops(&mut q.sops, report);
        report.unfinished +=
            (q.ready.len() + q.sops_ready.len() + q.retry.len() + q.busy.len()) as u64;
        q.ready.clear();
        q.sops_ready.clear();
        q.retry.clear();
        q.busy.clear();
    }

    /// Stops the run when `e` will fail every other item too: the KMS
    /// refuses the caller, or the target key cannot be used (a disabled
    /// source key fails only its own envelopes).
    fn judge(&self, e: &KmsError) {
        match super::failure::FailureKind::from(e) {
            super::failure::FailureKind::AccessDenied => self.stop.halt(format!(
                "the KMS refused the caller ({}): {}; every other item would fail the same way",
                e.code, e.message
            )),
            super::failure::FailureKind::KeyState => {
                if let Err(why) = self.target.check_usable_now(self.kms) {
                    self.stop.halt(why.message);
                }
            }
            _ => {}
        }
    }

    /// Dry run: one ReEncrypt per (source key, version), result discarded,
    /// so that a right the real run would miss fails the dry run too. The
    /// lock is held over the call: workers meeting the same key version
    /// wait for its one probe instead of each making their own.
    fn probe(
        &self,
        item: &S::Item,
        ctx: Option<crate::api::EncryptionContext>,
        slot: &Slot,
    ) -> Result<(), KmsError> {
        let seen = (slot.key_arn.clone(), slot.key_version);
        let mut probed = self
            .probed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match probed.get(&seen) {
            Some(None) => return Ok(()),
            Some(Some(refused)) => return Err(refused.clone()),
            None => {}
        }
        // A described target needs nothing learned from the answer: the
        // probe is a DryRun (rights and key states checked, no key used).
        let dry_run = self.target.is_described().then_some(true);
        let resp = self.kms.re_encrypt(&ReEncryptRequest {
            dry_run,
            ..self.slot_request(ctx, slot, item)
        });
        match resp {
            Err(e) if dry_run.is_some() && e.code == ErrorCode::DryRunOperation => {
                probed.insert(seen, None);
                Ok(())
            }
            Ok(resp) => {
                let version = crate::ciphertext_blob::peek(&resp.ciphertext_blob.0)
                    .map_or(0, |b| b.key_version);
                self.target.learn(&resp.key_id, version);
                probed.insert(seen, None);
                Ok(())
            }
            Err(e) => {
                // A refusal of the caller or of the key holds for every
                // envelope under this key version; anything else (this
                // envelope's own wrapped key) is probed again on the next.
                let kind = super::failure::FailureKind::from(&e);
                if matches!(
                    kind,
                    super::failure::FailureKind::AccessDenied
                        | super::failure::FailureKind::KeyState
                ) {
                    probed.insert(seen, Some(e.clone()));
                }
                Err(e)
            }
        }
    }

    /// The ReEncrypt of `slot` of an envelope with `header` to the target,
    /// under the envelope's context. A slot wrapped offline under an RSA
    /// public key names its key and algorithm instead of a source context
    /// (RSA-OAEP takes none); the result is an ordinary slot.
    fn re_encrypt_request(&self, header: &Header, slot: &Slot, item: &S::Item) -> ReEncryptRequest {
        self.slot_request(Some(header.kms_context()), slot, item)
    }

    /// The ReEncrypt of `slot` (of an envelope or a SOPS entry, for
    /// `item`) to the target under `ctx`.
    fn slot_request(
        &self,
        ctx: Option<crate::api::EncryptionContext>,
        slot: &Slot,
        item: &S::Item,
    ) -> ReEncryptRequest {
        let offline = slot.wrapping.rsa_algorithm();
        ReEncryptRequest {
            ciphertext_blob: crate::api::CiphertextBlob(slot.wrapped_key.clone()),
            source_encryption_context: if offline.is_none() { ctx.clone() } else { None },
            source_key_id: offline.map(|_| slot.key_arn.clone()),
            source_encryption_algorithm: offline.map(str::to_string),
            destination_key_id: self.target.destination(),
            destination_encryption_context: ctx,
            grant_tokens: self.grant_tokens(),
            object: Some(self.object(item)),
            ..Default::default()
        }
    }

    /// The item as the audit records of its key uses name it.
    fn object(&self, item: &S::Item) -> String {
        crate::audit::object_name(&self.store.display(item))
    }

    /// The run's grant tokens as a request member (`None` without any).
    fn grant_tokens(&self) -> Option<Vec<String>> {
        (!self.opts.grant_tokens.is_empty()).then(|| self.opts.grant_tokens.clone())
    }

    /// A dry run's listing entry.
    fn list(&self, report: &mut RewrapReport, item: &S::Item, slot: &Slot, action: &str) {
        if !self.opts.dry_run {
            return;
        }
        let id = slot.key_arn.rsplit('/').next().unwrap_or(&slot.key_arn);
        report.listing.push(super::report::Listed {
            path: self.store.display(item),
            key_arn: slot.key_arn.clone(),
            aliases: self.aliases.get(id).cloned().unwrap_or_default(),
            key_version: slot.key_version,
            action: action.into(),
        });
    }

    fn tick(&self, n: u64) {
        self.done.fetch_add(n, Ordering::Relaxed);
        if let Some(p) = &self.opts.progress.0 {
            p.advance(n);
        }
    }

    /// Takes every item in flight through to its end, releasing every lock
    /// this worker holds.
    fn release(&self, q: &mut Queues<S>, report: &mut RewrapReport) {
        self.rewrap(q, report);
        self.rewrap_sops(&mut q.sops_ready, &mut q.sops, &mut q.retry, report);
        self.flush(&mut q.pending, report);
        self.flush_sops(&mut q.sops, report);
    }

    /// Step 1 for one item: read it and decide.
    ///
    /// An item locked by another writer is put aside (`wait` false) and
    /// taken up again once the input is done, with `wait`: then this worker
    /// first finishes everything it holds, so it holds no lock while it
    /// waits, and no two workers can wait for each other.
    fn handle(
        &self,
        item: S::Item,
        mut attempts: u32,
        wait: bool,
        q: &mut Queues<S>,
        report: &mut RewrapReport,
    ) {
        if wait {
            self.release(q, report);
        }
        // A conflict means someone else wrote while we read: read again
        // and decide again.
        let decision = loop {
            match self.decide(&item, wait) {
                Err((Cause::Store(StoreError::Busy), _)) if !wait => {
                    q.busy.push((item, attempts));
                    return;
                }
                Err((Cause::Store(StoreError::Conflict(_)), _)) if attempts < MAX_ATTEMPTS => {
                    attempts += 1;
                }
                other => break other,
            }
        };
        self.settle(item, attempts, decision, q, report);
    }

    /// Counts a decided item, or queues it for its next step.
    fn settle(
        &self,
        item: S::Item,
        attempts: u32,
        decision: Decided<S>,
        q: &mut Queues<S>,
        report: &mut RewrapReport,
    ) {
        match decision {
            Ok(Decision::NotEnvelope) => {
                match self.sops_item(item, attempts, &mut q.sops_ready, report) {
                    sops::Handled::NotSops => report.not_envelope += 1,
                    sops::Handled::Counted => {}
                    sops::Handled::Queued => return,
                }
            }
            Ok(Decision::Current(slot)) => {
                self.list(report, &item, &slot, "already_current");
                report.already_current += 1;
                report.source(&slot).seen += 1;
                report.source(&slot).already_current += 1;
                report.after(&slot.key_arn, slot.key_version);
            }
            Ok(Decision::OtherKey(slot)) => {
                self.list(report, &item, &slot, "other_key");
                report.other_key += 1;
                report.source(&slot).seen += 1;
                report.source(&slot).other_key += 1;
                report.after(&slot.key_arn, slot.key_version);
            }
            Ok(Decision::WouldRotate(slot)) => {
                self.list(report, &item, &slot, "would_rotate");
                report.would_rotate += 1;
                report.source(&slot).seen += 1;
                report.source(&slot).would_rotate += 1;
                let (arn, v) = self.target.snapshot();
                report.after(&arn, v);
            }
            Ok(Decision::Rewrap(read)) => {
                q.ready.push(Ready {
                    item,
                    attempts,
                    read,
                });
                return;
            }
            Ok(Decision::Write(w)) => {
                q.pending.push(Pending { item, w });
                return;
            }
            Err((e, slot)) => {
                if let Cause::Kms(k) = &e {
                    self.judge(k);
                }
                if let Some(s) = &slot {
                    report.source(s).seen += 1;
                }
                report.fail(e.failure(self.store.display(&item)), slot.as_ref());
            }
        }
        self.tick(1);
    }

    /// Step 1 for one item: what it needs.
    fn decide(&self, item: &S::Item, wait: bool) -> Decided<S> {
        let read = if self.opts.dry_run {
            self.store.read_header(item)
        } else {
            self.store.read_for_update(item, wait)
        };
        let Some((parsed, version)) = read.map_err(store_err(None))? else {
            return Ok(Decision::NotEnvelope);
        };
        let (active, slot) = parsed
            .slots
            .active()
            .map_err(|e| store_err(None)(StoreError::Format(e)))?;
        let slot = slot.clone();
        let other = 1 - active;
        if !self.from.admits(&slot.key_arn) && !self.target.is_current(&slot) {
            return Ok(Decision::OtherKey(slot));
        }
        let stale_other = matches!(parsed.slots.0[other], SlotState::Valid(_));
        if self.target.is_current(&slot) {
            if !stale_other || self.opts.dry_run {
                return Ok(Decision::Current(slot));
            }
            // An interrupted earlier run: the new slot is in place, the old
            // one still has to be wiped (after a commit, see `flush`).
            return Ok(Decision::Write(Written {
                version,
                wipe: other,
                source: slot.clone(),
                written: slot,
                rotated: false,
            }));
        }
        if self.opts.dry_run {
            self.probe(item, Some(parsed.header.kms_context()), &slot)
                .map_err(|e| (Cause::Kms(e), Some(slot.clone())))?;
            return Ok(Decision::WouldRotate(slot));
        }
        Ok(Decision::Rewrap(Rewrap {
            header: parsed.header,
            version,
            active,
            slot,
        }))
    }

    /// Step 2 for the ready items: one ReEncrypt batch, then each new slot
    /// written into the inactive slot.
    fn rewrap(&self, q: &mut Queues<S>, report: &mut RewrapReport) {
        if q.ready.is_empty() {
            return;
        }
        let ready = std::mem::take(&mut q.ready);
        let requests: Vec<ReEncryptRequest> = ready
            .iter()
            .map(|r| self.re_encrypt_request(&r.read.header, &r.read.slot, &r.item))
            .collect();
        let mut responses = self.kms.re_encrypt_many(&requests).into_iter();
        for r in ready {
            let response = responses.next().unwrap_or_else(|| {
                Err(KmsError::internal(
                    "the KMS answered fewer requests than asked",
                ))
            });
            let (item, attempts) = (r.item, r.attempts);
            let decision = self.write_new_slot(&item, r.read, response);
            match decision {
                Err((Cause::Store(StoreError::Conflict(_)), _)) if attempts < MAX_ATTEMPTS => {
                    q.retry.push((item, attempts + 1));
                }
                decision => self.settle(item, attempts, decision, q, report),
            }
        }
    }

    /// Step 2 for one item: the re-wrapped key goes into the inactive slot
    /// with sequence + 1 (and, where writes are atomic, the old slot is
    /// wiped in the same write).
    fn write_new_slot(
        &self,
        item: &S::Item,
        read: Rewrap<S::Version>,
        response: Result<ReEncryptResponse, KmsError>,
    ) -> Decided<S> {
        let Rewrap {
            version,
            active,
            slot,
            ..
        } = read;
        let resp = response.map_err(|e| (Cause::Kms(e), Some(slot.clone())))?;
        let key_version =
            crate::ciphertext_blob::peek(&resp.ciphertext_blob.0).map_or(0, |b| b.key_version);
        self.target.learn(&resp.key_id, key_version);
        let new = Slot {
            sequence: slot.sequence + 1,
            wrapped_at: chrono::Utc::now().timestamp(),
            key_version,
            key_arn: resp.key_id,
            wrapped_key: resp.ciphertext_blob.0,
            wrapping: SlotWrapping::Kms,
        };
        if new.key_arn == slot.key_arn && new.key_version == slot.key_version && new.key_version > 0
        {
            return Ok(Decision::Current(slot));
        }
        let bytes = new
            .encode()
            .map_err(|e| store_err(Some(&slot))(StoreError::Format(e)))?;
        let mut writes = vec![(1 - active, &bytes)];
        if self.store.atomic_writes() {
            writes.push((active, &EMPTY_SLOT));
        }
        let version = self
            .store
            .write_slots(item, &writes, &version)
            .map_err(store_err(Some(&slot)))?;
        Ok(Decision::Write(Written {
            version,
            wipe: active,
            source: slot,
            written: new,
            rotated: true,
        }))
    }

    /// Steps 3 to 5 for a batch.
    fn flush(&self, pending: &mut Vec<Pending<S>>, report: &mut RewrapReport) {
        if pending.is_empty() {
            return;
        }
        let batch: Vec<Pending<S>> = std::mem::take(pending);
        let n = batch.len() as u64;
        let versions: Vec<&S::Version> = batch.iter().map(|p| &p.w.version).collect();
        if let Err(e) = self.store.commit(&versions) {
            for p in &batch {
                let name = self.store.display(&p.item);
                report.source(&p.w.source).seen += 1;
                let failure = Failure {
                    path: name,
                    kind: (&e).into(),
                    error: format!("group commit failed: {e}"),
                };
                report.fail(failure, Some(&p.w.source));
            }
            self.tick(n);
            return;
        }
        let mut wiped = Vec::with_capacity(batch.len());
        for p in batch {
            if self.store.atomic_writes() && p.w.rotated {
                wiped.push((p, Ok(None)));
                continue;
            }
            let r = self.wipe(&p).map(Some);
            wiped.push((p, r));
        }
        let versions: Vec<&S::Version> = wiped
            .iter()
            .filter_map(|(_, r)| r.as_ref().ok().and_then(Option::as_ref))
            .collect();
        let commit = self.store.commit(&versions);
        for (p, r) in &wiped {
            let name = self.store.display(&p.item);
            let failure = |e: &StoreError, error: String| Failure {
                path: name.clone(),
                kind: e.into(),
                error,
            };
            let error = match (r, &commit) {
                (Ok(_), Ok(())) => None,
                (Err(e), _) => Some(failure(
                    e,
                    format!("new key slot written, old slot not wiped: {e}"),
                )),
                (_, Err(e)) => Some(failure(e, format!("group commit of the wipe failed: {e}"))),
            };
            let counts = report.source(&p.w.source);
            counts.seen += 1;
            match error {
                None if p.w.rotated => {
                    counts.rotated += 1;
                    report.rotated += 1;
                }
                None => {
                    counts.already_current += 1;
                    report.already_current += 1;
                }
                Some(failure) => {
                    counts.failed += 1;
                    report.failed += 1;
                    report.failures.push(failure);
                }
            }
            report.after(&p.w.written.key_arn, p.w.written.key_version);
        }
        self.tick(n);
    }

    /// Step 4 for one item, re-reading on conflict: another run may have
    /// wiped the old slot already, which is success.
    fn wipe(&self, p: &Pending<S>) -> Result<S::Version, StoreError> {
        let mut expected = None;
        for _ in 0..4 {
            let v = expected.as_ref().unwrap_or(&p.w.version);
            match self
                .store
                .write_slots(&p.item, &[(p.w.wipe, &EMPTY_SLOT)], v)
            {
                Ok(v) => return Ok(v),
                Err(StoreError::Conflict(why)) => {
                    let Some((parsed, v)) = self.store.read_header(&p.item)? else {
                        return Err(StoreError::Conflict(why));
                    };
                    let (active, slot) = parsed.slots.active()?;
                    if *slot != p.w.written {
                        return Err(StoreError::Conflict(
                            "the envelope was rewritten by another writer during rotation".into(),
                        ));
                    }
                    if !matches!(parsed.slots.0[1 - active], SlotState::Valid(_)) {
                        return Ok(v);
                    }
                    expected = Some(v);
                }
                Err(e) => return Err(e),
            }
        }
        Err(StoreError::Conflict("too many concurrent writers".into()))
    }
}

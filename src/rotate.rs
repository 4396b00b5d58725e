//! The rotation pipeline: re-wrap envelope data keys under the newest version
//! of a target key, through the KMS ReEncrypt operation, and the inventory of
//! what keys wrap which envelopes.
//!
//! One pipeline, several sources. A source of envelopes implements
//! [`EnvelopeStore`] (read the header, compare-and-swap slot writes, group
//! commit); [`FileStore`] is the file-tree source, a blob-store source plugs
//! in the same way. [`rotate`] holds the per-envelope decision, the
//! ReEncrypt call and the crash-safe slot protocol, written once:
//!
//! 1. read header and slots; the active slot is the valid one with the
//!    highest sequence number;
//! 2. if the active slot is not under the newest version of the target key,
//!    ReEncrypt its blob (source context = destination context = the
//!    envelope's context) and write the result into the *other* slot with
//!    sequence + 1, compare-and-swap against what step 1 read;
//! 3. group commit: make a batch of such writes durable at once;
//! 4. wipe the old slot (all zeros), so the retired key can no longer open
//!    the file, compare-and-swap against what step 2 wrote;
//! 5. group commit again; only now is the file reported as rotated.
//!
//! A crash between any two steps leaves a file that opens with its old or
//! its new slot; a re-run sees "active slot current, stale slot still
//! present" and finishes with steps 3 to 5. The data key never leaves the
//! KMS: the worker only handles wrapped blobs, so a principal allowed
//! ReEncrypt and nothing else can run it.

use crate::api::{KeyIdRequest, ReEncryptRequest};
use crate::envelope::{
    EnvelopeError, Header, ParsedHeader, Slot, SlotState, EMPTY_SLOT, FIXED_LEN, MAGIC, SLOT_SIZE,
};
use crate::error::{ErrorCode, KmsError};
use crate::kms::Kms;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs::File;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, RwLock};

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The item changed since it was read (another writer, or it was
    /// replaced): the write was not made. The pipeline re-reads and decides
    /// again.
    #[error("changed concurrently: {0}")]
    Conflict(String),
    /// The item looks like an envelope but its header is unusable.
    #[error("{0}")]
    Format(#[from] EnvelopeError),
    /// The storage failed; the text says how.
    #[error("{0}")]
    Io(String),
    /// Another writer holds the item's lock. The pipeline puts the item
    /// aside and asks again, waiting, once it holds no lock itself.
    #[error("locked by another writer")]
    Busy,
}

/// A source of envelopes the rotation pipeline can re-wrap in place.
///
/// Implementations: [`FileStore`] (files on a local file system); a blob
/// store (S3 and the like) implements the same four methods, with the ETag
/// as its [`EnvelopeStore::Version`], conditional puts for
/// [`EnvelopeStore::write_slots`], and [`EnvelopeStore::atomic_writes`]
/// returning true.
///
/// Contract the pipeline relies on:
/// - `read_header` never modifies anything; `Ok(None)` means "not an
///   envelope" (wrong magic), which is counted and left untouched.
/// - `write_slots` writes only the named slots, only if the item is still
///   exactly as `expected` says (else [`StoreError::Conflict`] and no
///   write), and returns the version that now describes the item.
/// - a write need not be durable until `commit` returns for its version
///   (unless `atomic_writes`, where each `write_slots` is atomic and durable
///   on return); `commit` makes every write before it durable.
pub trait EnvelopeStore: Send + Sync {
    /// One envelope location (a path, an object key).
    type Item: Send;
    /// What a read or write saw, for compare-and-swap: for files the open
    /// file, its inode and the slot bytes; for objects an ETag.
    type Version: Send;

    /// How the item is named in reports.
    fn display(&self, item: &Self::Item) -> String;

    /// Reads the header and both slots; `Ok(None)` if not an envelope.
    fn read_header(
        &self,
        item: &Self::Item,
    ) -> Result<Option<(ParsedHeader, Self::Version)>, StoreError>;

    /// [`EnvelopeStore::read_header`] before writes: a store that locks
    /// items takes the lock here and holds it as long as the returned
    /// version lives. Without `wait` it returns [`StoreError::Busy`]
    /// instead of waiting for another writer's lock.
    fn read_for_update(
        &self,
        item: &Self::Item,
        wait: bool,
    ) -> Result<Option<(ParsedHeader, Self::Version)>, StoreError> {
        let _ = wait;
        self.read_header(item)
    }

    /// Writes `(slot index, slot bytes)` pairs if the item is still as
    /// `expected`; returns the new version.
    fn write_slots(
        &self,
        item: &Self::Item,
        writes: &[(usize, &[u8; SLOT_SIZE])],
        expected: &Self::Version,
    ) -> Result<Self::Version, StoreError>;

    /// Group commit: makes the writes that produced `written` durable.
    fn commit(&self, written: &[&Self::Version]) -> Result<(), StoreError>;

    /// True when each `write_slots` call is atomic and durable on return
    /// (object stores): the pipeline then writes the new slot and wipes the
    /// old one in a single call.
    fn atomic_writes(&self) -> bool {
        false
    }

    /// How many items a worker takes from the walker at once. One (the
    /// default) for stores whose items each wait on the network, which need
    /// them spread over all workers, and whose checkpoints advance over the
    /// listed items in order; more for local stores bound by the CPU.
    fn feed_chunk(&self) -> usize {
        1
    }
}

/// An item a source could not even list (walk error, permission denied).
#[derive(Debug, Clone)]
pub struct ItemError {
    /// Where.
    pub location: String,
    /// Why.
    pub error: String,
}

/// How to rotate.
#[derive(Debug, Clone)]
pub struct RotateOptions {
    /// The target key: id, ARN, alias name or alias ARN.
    pub to: String,
    /// If not empty, only envelopes whose active slot is under one of these
    /// keys are rotated; others are counted as `other_key`.
    pub from: Vec<String>,
    /// Decide and report, write nothing.
    pub dry_run: bool,
    /// Worker threads (0: two per core, as workers mostly wait on I/O or a
    /// remote KMS).
    pub jobs: usize,
    /// Envelopes per group commit.
    pub batch: usize,
    /// Envelopes per ReEncrypt batch ([`Kms::re_encrypt_many`]; the
    /// in-process KMS writes their audit records in one group commit).
    pub kms_batch: usize,
    /// Show a progress bar on stderr.
    pub progress: bool,
    /// Expected number of items, for the progress bar's ETA (0: unknown).
    pub expected_items: u64,
}

impl RotateOptions {
    /// Options for rotating to `to` with defaults.
    pub fn new(to: impl Into<String>) -> RotateOptions {
        RotateOptions {
            to: to.into(),
            from: Vec::new(),
            dry_run: false,
            jobs: 0,
            batch: 256,
            kms_batch: 64,
            progress: false,
            expected_items: 0,
        }
    }
}

/// Counts for one source key version.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct VersionCounts {
    /// Envelopes seen under this key version.
    pub seen: u64,
    /// Of those, rotated (or, in a dry run, that would be rotated).
    pub rotated: u64,
    /// Of those, already current.
    pub already_current: u64,
    /// Of those, skipped because the key is not in `--from`.
    pub other_key: u64,
    /// Of those, failed.
    pub failed: u64,
}

/// One item that failed, and why.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Failure {
    /// The item (path or object key).
    pub path: String,
    /// Why; never contains key or plaintext bytes.
    pub error: String,
}

/// What a rotation run did, for `--report` and the exit code. The same type
/// serves every [`EnvelopeStore`].
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct RotationReport {
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
    /// Envelopes re-wrapped (new slot durable, old slot wiped). In a dry
    /// run: envelopes that would be.
    pub rotated: u64,
    /// Envelopes already under the newest version of the target key
    /// (including those whose stale slot this run only had to wipe).
    pub already_current: u64,
    /// Envelopes under a key not named by `--from`.
    pub other_key: u64,
    /// Items that are not envelopes (left untouched).
    pub not_envelope: u64,
    /// Items that failed (see `failures`).
    pub failed: u64,
    /// Per source key ARN, per key-material version: counts.
    pub by_source: BTreeMap<String, BTreeMap<String, VersionCounts>>,
    /// Per key ARN, per version: envelopes as they are after the run.
    pub after: BTreeMap<String, BTreeMap<String, u64>>,
    /// Every failure with its reason.
    pub failures: Vec<Failure>,
}

impl RotationReport {
    /// The process exit code: 0 all done, 1 some items failed.
    pub fn exit_code(&self) -> i32 {
        i32::from(self.failed > 0)
    }

    fn source(&mut self, slot: &Slot) -> &mut VersionCounts {
        self.by_source
            .entry(slot.key_arn.clone())
            .or_default()
            .entry(slot.key_version.to_string())
            .or_default()
    }

    fn after(&mut self, arn: &str, version: u32) {
        *self
            .after
            .entry(arn.to_string())
            .or_default()
            .entry(version.to_string())
            .or_default() += 1;
    }

    fn fail(&mut self, path: String, error: String, slot: Option<&Slot>) {
        self.failed += 1;
        if let Some(s) = slot {
            self.source(s).failed += 1;
            self.after(&s.key_arn, s.key_version);
        }
        self.failures.push(Failure { path, error });
    }

    fn merge(&mut self, other: RotationReport) {
        self.scanned += other.scanned;
        self.rotated += other.rotated;
        self.already_current += other.already_current;
        self.other_key += other.other_key;
        self.not_envelope += other.not_envelope;
        self.failed += other.failed;
        for (arn, versions) in other.by_source {
            let mine = self.by_source.entry(arn).or_default();
            for (v, c) in versions {
                let m = mine.entry(v).or_default();
                m.seen += c.seen;
                m.rotated += c.rotated;
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
}

/// The target key as resolved by DescribeKey, or learned from ReEncrypt
/// responses when the caller may not describe it.
struct Target {
    requested: String,
    known: RwLock<Option<(String, String, u32)>>,
}

impl Target {
    fn resolve(kms: &dyn Kms, requested: &str) -> Result<Target, KmsError> {
        let known = match kms.describe_key(&KeyIdRequest {
            key_id: requested.to_string(),
            grant_tokens: None,
        }) {
            Ok(r) => {
                let m = r.key_metadata;
                Some((m.arn, m.key_id, m.key_material_versions))
            }
            Err(e) if e.code == ErrorCode::AccessDenied => None,
            Err(e) => return Err(e),
        };
        Ok(Target {
            requested: requested.to_string(),
            known: RwLock::new(known),
        })
    }

    fn destination(&self) -> String {
        match &*self.known.read().unwrap_or_else(|p| p.into_inner()) {
            Some((arn, _, _)) => arn.clone(),
            None => self.requested.clone(),
        }
    }

    /// True when `slot` is under the newest known version of the target.
    fn is_current(&self, slot: &Slot) -> bool {
        match &*self.known.read().unwrap_or_else(|p| p.into_inner()) {
            Some((arn, id, version)) => {
                (slot.key_arn == *arn || slot.key_arn == *id)
                    && (*version == 0 || slot.key_version >= *version)
            }
            None => false,
        }
    }

    fn learn(&self, arn: &str, version: u32) {
        let mut k = self.known.write().unwrap_or_else(|p| p.into_inner());
        let newer = match &*k {
            Some((a, _, v)) => a != arn || version > *v,
            None => true,
        };
        if newer {
            let id = arn.rsplit('/').next().unwrap_or(arn).to_string();
            *k = Some((arn.to_string(), id, version));
        }
    }

    fn snapshot(&self) -> (String, u32) {
        match &*self.known.read().unwrap_or_else(|p| p.into_inner()) {
            Some((arn, _, v)) => (arn.clone(), *v),
            None => (self.requested.clone(), 0),
        }
    }
}

/// Matches a slot's key ARN against the `--from` keys (ARNs or key ids).
struct FromFilter(Vec<String>);

impl FromFilter {
    fn resolve(kms: &dyn Kms, keys: &[String]) -> Result<FromFilter, KmsError> {
        let mut out = Vec::new();
        for k in keys {
            match kms.describe_key(&KeyIdRequest {
                key_id: k.clone(),
                grant_tokens: None,
            }) {
                Ok(r) => out.push(r.key_metadata.arn),
                Err(e) if e.code == ErrorCode::AccessDenied && !k.starts_with("alias/") => {
                    out.push(k.clone())
                }
                Err(e) => return Err(e),
            }
        }
        Ok(FromFilter(out))
    }

    fn admits(&self, arn: &str) -> bool {
        self.0.is_empty()
            || self
                .0
                .iter()
                .any(|k| k == arn || arn.rsplit('/').next() == Some(k.as_str()))
    }
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

type Decided<S> = Result<Decision<S>, (StoreError, Option<Slot>)>;

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
    opts: &'a RotateOptions,
    done: AtomicU64,
    bar: Option<indicatif::ProgressBar>,
}

/// Rotates every envelope `items` yields. Errors only when the run cannot
/// start (the target key cannot be resolved); per-item failures are in the
/// report.
pub fn rotate<S, I>(
    kms: &dyn Kms,
    store: &S,
    items: I,
    opts: &RotateOptions,
) -> Result<RotationReport, KmsError>
where
    S: EnvelopeStore,
    I: Iterator<Item = Result<S::Item, ItemError>> + Send,
{
    let started = chrono::Utc::now();
    let run = Run {
        kms,
        store,
        target: Target::resolve(kms, &opts.to)?,
        from: FromFilter::resolve(kms, &opts.from)?,
        opts,
        done: AtomicU64::new(0),
        bar: opts.progress.then(|| progress_bar(opts.expected_items)),
    };
    let jobs = worker_count(opts.jobs);
    let chunk = feed_chunk(store, jobs);
    let mut report = run_workers(jobs, chunk, items, |feed| run.worker(feed));
    if let Some(bar) = &run.bar {
        bar.finish_and_clear();
    }
    let (arn, version) = run.target.snapshot();
    report.target_key = arn;
    report.target_version = version;
    report.dry_run = opts.dry_run;
    report.started_at = started.to_rfc3339();
    report.finished_at = chrono::Utc::now().to_rfc3339();
    report.failures.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(report)
}

fn worker_count(jobs: usize) -> usize {
    if jobs > 0 {
        return jobs;
    }
    std::thread::available_parallelism().map_or(2, |n| n.get() * 2)
}

/// Per-worker results that add up.
trait Merge: Default {
    fn merge(&mut self, other: Self);
    fn worker_panicked(&mut self);
}

impl Merge for RotationReport {
    fn merge(&mut self, other: Self) {
        RotationReport::merge(self, other)
    }
    fn worker_panicked(&mut self) {
        self.fail("<worker>".into(), "a worker thread panicked".into(), None);
    }
}

/// Items travel from the walker to the workers in chunks of up to this many:
/// one queue operation (and at most one wake-up) per chunk instead of per
/// item. The walker sends a shorter chunk whenever the queue is empty, so
/// idle workers are never kept waiting for a chunk to fill.
const FEED_CHUNK: usize = 64;

/// The largest chunk for `jobs` workers of `store`: the store's chunk when
/// the workers are about as many as the cores; single items when there are
/// many more workers than cores, which wait on a remote KMS and need every
/// item spread out.
fn feed_chunk<S: EnvelopeStore>(store: &S, jobs: usize) -> usize {
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    if jobs > 2 * cores {
        1
    } else {
        store.feed_chunk().max(1)
    }
}

/// The workers' end of the queue from the walker.
struct Feed<T> {
    rx: Mutex<std::sync::mpsc::Receiver<Vec<T>>>,
    /// Chunks sent and not yet taken.
    queued: std::sync::atomic::AtomicUsize,
}

/// One worker's place in the [`Feed`]: the rest of the chunk it took.
struct Cursor<'a, T> {
    feed: &'a Feed<T>,
    chunk: std::vec::IntoIter<T>,
}

impl<T> Iterator for Cursor<'_, T> {
    type Item = T;

    fn next(&mut self) -> Option<T> {
        loop {
            if let Some(item) = self.chunk.next() {
                return Some(item);
            }
            let rx = self.feed.rx.lock().unwrap_or_else(|p| p.into_inner());
            self.chunk = rx.recv().ok()?.into_iter();
            self.feed.queued.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// Feeds `items` through a bounded queue, in chunks of up to `max` items, to
/// `jobs` workers; merges their results.
fn run_workers<T, I, R, W>(jobs: usize, max: usize, items: I, worker: W) -> R
where
    T: Send,
    I: Iterator<Item = Result<T, ItemError>> + Send,
    R: Merge + Send,
    W: Fn(&mut Cursor<'_, Result<T, ItemError>>) -> R + Sync,
{
    let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<Result<T, ItemError>>>(16);
    let feed = Feed {
        rx: Mutex::new(rx),
        queued: Default::default(),
    };
    std::thread::scope(|s| {
        let feed = &feed;
        s.spawn(move || {
            let mut chunk = Vec::with_capacity(max);
            for item in items {
                chunk.push(item);
                if chunk.len() >= max || feed.queued.load(Ordering::Acquire) == 0 {
                    let full = std::mem::replace(&mut chunk, Vec::with_capacity(max));
                    feed.queued.fetch_add(1, Ordering::AcqRel);
                    if tx.send(full).is_err() {
                        return;
                    }
                }
            }
            if !chunk.is_empty() {
                feed.queued.fetch_add(1, Ordering::AcqRel);
                let _ = tx.send(chunk);
            }
        });
        let handles: Vec<_> = (0..jobs)
            .map(|_| {
                s.spawn(|| {
                    worker(&mut Cursor {
                        feed,
                        chunk: Vec::new().into_iter(),
                    })
                })
            })
            .collect();
        let mut total = R::default();
        for h in handles {
            match h.join() {
                Ok(r) => total.merge(r),
                Err(_) => total.worker_panicked(),
            }
        }
        total
    })
}

impl<S: EnvelopeStore> Run<'_, S> {
    fn worker(&self, feed: &mut Cursor<'_, Result<S::Item, ItemError>>) -> RotationReport {
        let mut report = RotationReport::default();
        let mut q = Queues {
            ready: Vec::new(),
            pending: Vec::new(),
            retry: Vec::new(),
            busy: Vec::new(),
        };
        loop {
            let (item, attempts) = match q.retry.pop() {
                Some(again) => again,
                None => match feed.next() {
                    Some(Ok(item)) => {
                        report.scanned += 1;
                        (item, 1)
                    }
                    Some(Err(e)) => {
                        report.scanned += 1;
                        report.fail(e.location, e.error, None);
                        self.tick(1);
                        continue;
                    }
                    None if !q.ready.is_empty() || !q.pending.is_empty() => {
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
            if q.pending.len() >= self.opts.batch.max(1) {
                self.flush(&mut q.pending, &mut report);
            }
        }
        report
    }

    fn tick(&self, n: u64) {
        self.done.fetch_add(n, Ordering::Relaxed);
        if let Some(bar) = &self.bar {
            bar.inc(n);
        }
    }

    /// Takes every item in flight through to its end, releasing every lock
    /// this worker holds.
    fn release(&self, q: &mut Queues<S>, report: &mut RotationReport) {
        self.rewrap(q, report);
        self.flush(&mut q.pending, report);
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
        report: &mut RotationReport,
    ) {
        if wait {
            self.release(q, report);
        }
        // A conflict means someone else wrote while we read: read again
        // and decide again.
        let decision = loop {
            match self.decide(&item, wait) {
                Err((StoreError::Busy, _)) if !wait => {
                    q.busy.push((item, attempts));
                    return;
                }
                Err((StoreError::Conflict(_), _)) if attempts < MAX_ATTEMPTS => attempts += 1,
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
        report: &mut RotationReport,
    ) {
        match decision {
            Ok(Decision::NotEnvelope) => report.not_envelope += 1,
            Ok(Decision::Current(slot)) => {
                report.already_current += 1;
                report.source(&slot).seen += 1;
                report.source(&slot).already_current += 1;
                report.after(&slot.key_arn, slot.key_version);
            }
            Ok(Decision::OtherKey(slot)) => {
                report.other_key += 1;
                report.source(&slot).seen += 1;
                report.source(&slot).other_key += 1;
                report.after(&slot.key_arn, slot.key_version);
            }
            Ok(Decision::WouldRotate(slot)) => {
                report.rotated += 1;
                report.source(&slot).seen += 1;
                report.source(&slot).rotated += 1;
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
                if let Some(s) = &slot {
                    report.source(s).seen += 1;
                }
                report.fail(self.store.display(&item), e.to_string(), slot.as_ref());
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
        let Some((parsed, version)) = read.map_err(|e| (e, None))? else {
            return Ok(Decision::NotEnvelope);
        };
        let (active, slot) = parsed
            .slots
            .active()
            .map_err(|e| (StoreError::Format(e), None))?;
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
    fn rewrap(&self, q: &mut Queues<S>, report: &mut RotationReport) {
        if q.ready.is_empty() {
            return;
        }
        let ready = std::mem::take(&mut q.ready);
        let requests: Vec<ReEncryptRequest> = ready
            .iter()
            .map(|r| {
                let ctx = r.read.header.kms_context();
                ReEncryptRequest {
                    ciphertext_blob: crate::api::Blob(r.read.slot.wrapped_key.clone()),
                    source_encryption_context: Some(ctx.clone()),
                    destination_key_id: self.target.destination(),
                    destination_encryption_context: Some(ctx),
                    ..Default::default()
                }
            })
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
                Err((StoreError::Conflict(_), _)) if attempts < MAX_ATTEMPTS => {
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
        response: Result<crate::api::ReEncryptResponse, KmsError>,
    ) -> Decided<S> {
        let Rewrap {
            version,
            active,
            slot,
            ..
        } = read;
        let resp = response.map_err(|e| (StoreError::Io(e.to_string()), Some(slot.clone())))?;
        let key_version = crate::blob::peek(&resp.ciphertext_blob.0).map_or(0, |b| b.key_version);
        self.target.learn(&resp.key_id, key_version);
        let new = Slot {
            sequence: slot.sequence + 1,
            wrapped_at: chrono::Utc::now().timestamp(),
            key_version,
            key_arn: resp.key_id,
            wrapped_key: resp.ciphertext_blob.0,
        };
        if new.key_arn == slot.key_arn && new.key_version == slot.key_version && new.key_version > 0
        {
            return Ok(Decision::Current(slot));
        }
        let bytes = new
            .encode()
            .map_err(|e| (StoreError::Format(e), Some(slot.clone())))?;
        let mut writes = vec![(1 - active, &bytes)];
        if self.store.atomic_writes() {
            writes.push((active, &EMPTY_SLOT));
        }
        let version = self
            .store
            .write_slots(item, &writes, &version)
            .map_err(|e| (e, Some(slot.clone())))?;
        Ok(Decision::Write(Written {
            version,
            wipe: active,
            source: slot,
            written: new,
            rotated: true,
        }))
    }

    /// Steps 3 to 5 for a batch.
    fn flush(&self, pending: &mut Vec<Pending<S>>, report: &mut RotationReport) {
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
                report.fail(name, format!("group commit failed: {e}"), Some(&p.w.source));
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
            let error = match (r, &commit) {
                (Ok(_), Ok(())) => None,
                (Err(e), _) => Some(format!("new key slot written, old slot not wiped: {e}")),
                (_, Err(e)) => Some(format!("group commit of the wipe failed: {e}")),
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
                Some(error) => {
                    counts.failed += 1;
                    report.failed += 1;
                    report.failures.push(Failure { path: name, error });
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

fn progress_bar(len: u64) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::with_draw_target(
        Some(len).filter(|&n| n > 0),
        indicatif::ProgressDrawTarget::stderr(),
    );
    let style = indicatif::ProgressStyle::with_template(
        "{spinner} {pos}/{len} files  {per_sec}  ETA {eta}  [{elapsed_precise}]",
    )
    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
    bar.set_style(style);
    bar
}

/// Envelopes as files on a local file system: the file-tree source.
///
/// Files are opened with `O_NOATIME` where the caller owns them (reading a
/// header for rotation or inventory is not an access by a user). Reads use
/// one positioned read of the header.
///
/// Rotation ([`EnvelopeStore::read_for_update`]) takes an exclusive
/// `flock` on the file before reading and holds it until the version is
/// dropped, that is until the old slot is wiped: no other rotation can
/// write the slots in between, so a write needs no re-read. The new slot's
/// write still checks that the path names the inode that was read, so a
/// file replaced by a rename is read again. Plain `write_slots` on an
/// unlocked version takes the lock for a compare-and-swap (same inode, same
/// slot bytes as read). `commit` is one `syncfs` per file system touched
/// (falling back to `fdatasync` per file where `syncfs` fails).
#[derive(Debug, Clone, Default)]
pub struct FileStore {
    /// Open files read-only (dry runs, inventory): writes then fail.
    pub read_only: bool,
}

/// What [`FileStore`] saw of a file: the open file, its identity and slots.
#[derive(Debug)]
pub struct FileVersion {
    file: std::sync::Arc<File>,
    /// This handle holds the file's `flock` (taken before the read).
    locked: bool,
    dev: u64,
    ino: u64,
    slots_offset: u64,
    slots: Vec<u8>,
}

/// Bytes read at once for a header (most headers and both slots fit).
const HEADER_READ: usize = 4096;

impl FileStore {
    fn io(path: &Path, what: &str, e: std::io::Error) -> StoreError {
        StoreError::Io(format!("{what} {}: {e}", path.display()))
    }

    /// Opens `path` without updating its access time where allowed
    /// (`O_NOATIME` needs the file's owner or `CAP_FOWNER`).
    fn open(&self, path: &Path) -> Result<File, StoreError> {
        use std::os::unix::fs::OpenOptionsExt;
        let mut opts = std::fs::OpenOptions::new();
        opts.read(true).write(!self.read_only);
        let noatime = rustix::fs::OFlags::NOATIME.bits() as i32;
        match opts.clone().custom_flags(noatime).open(path) {
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => opts.open(path),
            r => r,
        }
        .map_err(|e| FileStore::io(path, "cannot open", e))
    }

    /// Reads the header and slots of the open `file`.
    fn read_open(
        &self,
        path: &Path,
        file: File,
        locked: bool,
    ) -> Result<Option<(ParsedHeader, FileVersion)>, StoreError> {
        let meta = file
            .metadata()
            .map_err(|e| FileStore::io(path, "cannot stat", e))?;
        let mut buf = vec![0u8; HEADER_READ];
        let n =
            read_at_full(&file, &mut buf, 0).map_err(|e| FileStore::io(path, "cannot read", e))?;
        if n < MAGIC.len() || buf[..MAGIC.len()] != MAGIC {
            return Ok(None);
        }
        let need = Header::encoded_len_from_prefix(&buf[..n.min(FIXED_LEN)])? + 2 * SLOT_SIZE;
        if need > n && n == HEADER_READ {
            buf.resize(need, 0);
            let more = read_at_full(&file, &mut buf[n..], n as u64)
                .map_err(|e| FileStore::io(path, "cannot read", e))?;
            buf.truncate(n + more);
        } else {
            buf.truncate(n);
        }
        let parsed = ParsedHeader::parse(&buf)?;
        let slots_offset = parsed.header.slot_offset(0);
        let slots = buf[slots_offset as usize..slots_offset as usize + 2 * SLOT_SIZE].to_vec();
        let version = FileVersion {
            file: std::sync::Arc::new(file),
            locked,
            dev: meta.dev(),
            ino: meta.ino(),
            slots_offset,
            slots,
        };
        Ok(Some((parsed, version)))
    }
}

impl EnvelopeStore for FileStore {
    type Item = PathBuf;
    type Version = FileVersion;

    fn display(&self, item: &PathBuf) -> String {
        item.display().to_string()
    }

    fn read_header(
        &self,
        path: &PathBuf,
    ) -> Result<Option<(ParsedHeader, FileVersion)>, StoreError> {
        let file = self.open(path)?;
        self.read_open(path, file, false)
    }

    fn read_for_update(
        &self,
        path: &PathBuf,
        wait: bool,
    ) -> Result<Option<(ParsedHeader, FileVersion)>, StoreError> {
        let file = self.open(path)?;
        if self.read_only {
            return self.read_open(path, file, false);
        }
        if wait {
            file.lock()
                .map_err(|e| FileStore::io(path, "cannot lock", e))?;
        } else {
            match file.try_lock() {
                Ok(()) => {}
                Err(std::fs::TryLockError::WouldBlock) => return Err(StoreError::Busy),
                Err(std::fs::TryLockError::Error(e)) => {
                    return Err(FileStore::io(path, "cannot lock", e))
                }
            }
        }
        self.read_open(path, file, true)
    }

    fn write_slots(
        &self,
        path: &PathBuf,
        writes: &[(usize, &[u8; SLOT_SIZE])],
        expected: &FileVersion,
    ) -> Result<FileVersion, StoreError> {
        let file = std::sync::Arc::clone(&expected.file);
        if !expected.locked {
            file.lock()
                .map_err(|e| FileStore::io(path, "cannot lock", e))?;
        }
        let result = compare_and_write(path, &file, writes, expected);
        if !expected.locked {
            let _ = file.unlock();
        }
        let slots = result?;
        Ok(FileVersion {
            file,
            locked: expected.locked,
            dev: expected.dev,
            ino: expected.ino,
            slots_offset: expected.slots_offset,
            slots,
        })
    }

    fn feed_chunk(&self) -> usize {
        FEED_CHUNK
    }

    fn commit(&self, written: &[&FileVersion]) -> Result<(), StoreError> {
        let mut synced: Vec<u64> = Vec::new();
        for v in written {
            if synced.contains(&v.dev) {
                continue;
            }
            if rustix::fs::syncfs(&v.file).is_err() {
                // No syncfs here (or it failed): fall back to one fdatasync
                // per file, which reports the error per file.
                for w in written {
                    rustix::fs::fdatasync(&w.file)
                        .map_err(|e| StoreError::Io(format!("fdatasync failed: {e}")))?;
                }
                return Ok(());
            }
            synced.push(v.dev);
        }
        Ok(())
    }
}

/// Under the lock: same inode at the path, same slot bytes, then write.
///
/// A write that only wipes slots skips the path check: it touches the
/// inode whose new slot this run wrote, whatever the path now names, and
/// the slot comparison still guards against other writers of that inode.
/// A version that has held the lock since its read skips the slot
/// comparison: no writer that takes the lock can have changed them.
fn compare_and_write(
    path: &Path,
    file: &File,
    writes: &[(usize, &[u8; SLOT_SIZE])],
    expected: &FileVersion,
) -> Result<Vec<u8>, StoreError> {
    let wipe_only = writes.iter().all(|(_, b)| **b == EMPTY_SLOT);
    if !wipe_only {
        let now =
            std::fs::symlink_metadata(path).map_err(|e| FileStore::io(path, "cannot stat", e))?;
        if now.dev() != expected.dev || now.ino() != expected.ino {
            return Err(StoreError::Conflict("the file was replaced".into()));
        }
    }
    let mut slots = expected.slots.clone();
    if !expected.locked {
        let n = read_at_full(file, &mut slots, expected.slots_offset)
            .map_err(|e| FileStore::io(path, "cannot read", e))?;
        if n != slots.len() || slots != expected.slots {
            return Err(StoreError::Conflict("the key slots changed".into()));
        }
    }
    for (index, bytes) in writes {
        let at = expected.slots_offset + (*index * SLOT_SIZE) as u64;
        file.write_all_at(&bytes[..], at)
            .map_err(|e| FileStore::io(path, "cannot write", e))?;
        slots[index * SLOT_SIZE..(index + 1) * SLOT_SIZE].copy_from_slice(&bytes[..]);
    }
    Ok(slots)
}

fn read_at_full(file: &File, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match file.read_at(&mut buf[n..], offset + n as u64) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Makes a file-tree rotation fit the open-file limit: each worker holds an
/// open (and locked) file for every envelope between its read and its
/// wipe, up to `kms_batch + batch` of them. Raises the soft `RLIMIT_NOFILE`
/// to the hard limit, then shrinks `batch` (and if need be `kms_batch`)
/// until every worker's files fit with room to spare. Returns the limit.
pub fn fit_open_files(opts: &mut RotateOptions) -> u64 {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current < limit.maximum {
        limit.current = limit.maximum;
        let _ = setrlimit(Resource::Nofile, limit);
    }
    let open = getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX);
    // Descriptors for everything else: the walker, the audit log, the
    // keystore, sockets to a KMS.
    const SPARE: u64 = 128;
    let jobs = worker_count(opts.jobs) as u64;
    let per_worker = (open.saturating_sub(SPARE) / jobs).max(2) as usize;
    if opts.kms_batch + opts.batch > per_worker {
        opts.kms_batch = opts.kms_batch.min(per_worker / 4).max(1);
        opts.batch = (per_worker - opts.kms_batch).max(1);
    }
    open
}

/// Walks `roots` lazily (depth first, no list of the tree in memory) and
/// yields every regular file; symbolic links are followed only if asked.
/// Temporary files of [`crate::files`] are skipped.
pub fn walk_files(
    roots: &[PathBuf],
    follow_links: bool,
) -> impl Iterator<Item = Result<PathBuf, ItemError>> + Send {
    let roots = roots.to_vec();
    roots.into_iter().flat_map(move |root| {
        walkdir::WalkDir::new(root)
            .follow_links(follow_links)
            .into_iter()
            .filter_entry(|e| {
                !e.file_name()
                    .to_string_lossy()
                    .starts_with(crate::files::TEMP_PREFIX)
            })
            .filter_map(|entry| match entry {
                Ok(e) if e.file_type().is_file() => Some(Ok(e.into_path())),
                Ok(_) => None,
                Err(e) => Some(Err(ItemError {
                    location: e
                        .path()
                        .map_or_else(String::new, |p| p.display().to_string()),
                    error: format!("cannot walk: {e}"),
                })),
            })
    })
}

/// Counts the regular files under `roots` (for the progress bar's ETA).
pub fn count_files(roots: &[PathBuf], follow_links: bool) -> u64 {
    walk_files(roots, follow_links).count() as u64
}

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
    /// Envelopes that still hold a valid old slot (an interrupted rotation).
    pub stale_slots: u64,
    /// Every failure with its reason.
    pub failures: Vec<Failure>,
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
    }
    fn worker_panicked(&mut self) {
        self.failed += 1;
        self.failures.push(Failure {
            path: "<worker>".into(),
            error: "a worker thread panicked".into(),
        });
    }
}

impl Inventory {
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

/// Counts envelopes per key and version. With `stale_against` (a key the
/// caller may describe), also counts envelopes not under its newest
/// version. Reads headers only; needs no KMS rights otherwise.
pub fn inventory<S, I>(
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
            let (name, r) = match item {
                Ok(item) => (store.display(&item), store.read_header(&item)),
                Err(e) => (e.location, Err(StoreError::Io(e.error))),
            };
            let parsed = match r {
                Ok(None) => {
                    inv.not_envelope += 1;
                    continue;
                }
                Ok(Some((parsed, _))) => parsed,
                Err(e) => {
                    inv.failed += 1;
                    inv.failures.push(Failure {
                        path: name,
                        error: e.to_string(),
                    });
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
                    inv.failures.push(Failure {
                        path: name,
                        error: e.to_string(),
                    });
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

/// What rotation and inventory runs leave in `<home>/inventory/`: one file
/// per set of roots (a later run over the same roots replaces it).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct InventorySummary {
    /// The roots walked.
    pub roots: Vec<String>,
    /// When (RFC 3339).
    pub seen_at: String,
    /// `inventory` or `rotate`.
    pub recorded_by: String,
    /// Per key ARN, per version: envelopes.
    pub keys: BTreeMap<String, BTreeMap<String, u64>>,
}

impl InventorySummary {
    /// The summary of an inventory run.
    pub fn from_inventory(inv: &Inventory) -> InventorySummary {
        InventorySummary {
            roots: inv.roots.clone(),
            seen_at: inv.seen_at.clone(),
            recorded_by: "inventory".into(),
            keys: inv
                .keys
                .iter()
                .map(|(k, v)| (k.clone(), v.versions.clone()))
                .collect(),
        }
    }

    /// The summary of a rotation run (the state after it).
    pub fn from_rotation(roots: &[PathBuf], report: &RotationReport) -> InventorySummary {
        InventorySummary {
            roots: canonical_roots(roots),
            seen_at: report.finished_at.clone(),
            recorded_by: "rotate".into(),
            keys: report.after.clone(),
        }
    }

    /// Writes the summary into `<home>/inventory/` (atomically).
    pub fn record(&self, home: &Path) -> std::io::Result<PathBuf> {
        use sha2::{Digest, Sha256};
        let dir = home.join("inventory");
        std::fs::create_dir_all(&dir)?;
        let id = Sha256::digest(self.roots.join("\n").as_bytes());
        let path = dir.join(format!("{}.json", hex::encode(&id[..8])));
        let mut tmp = tempfile::NamedTempFile::new_in(&dir)?;
        serde_json::to_writer_pretty(tmp.as_file_mut(), self)?;
        tmp.as_file().sync_all()?;
        tmp.persist(&path).map_err(|e| e.error)?;
        Ok(path)
    }
}

/// The roots as absolute paths, sorted: the identity of a summary.
pub fn canonical_roots(roots: &[PathBuf]) -> Vec<String> {
    let mut out: Vec<String> = roots
        .iter()
        .map(|r| {
            std::fs::canonicalize(r)
                .unwrap_or_else(|_| r.clone())
                .display()
                .to_string()
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

/// How many envelopes the summaries in `<home>/inventory/` last saw under
/// `key` (an ARN or a key id): for warnings before disabling or deleting a
/// key. Unreadable summaries are ignored; 0 when there are none.
///
/// Summaries of nested roots (`/data` and, later, `/data/a`) are not added
/// up twice: a summary counts as the larger of its own figure and the sum
/// of the summaries directly inside it, whichever of them is newer. The
/// figure may overstate (a stale outer summary wins over newer inner ones)
/// but never misses envelopes a summary saw, which is the safe side for a
/// warning before disabling a key.
pub fn known_envelopes_for_key(home: &Path, key_arn_or_id: &str) -> u64 {
    let Ok(dir) = std::fs::read_dir(home.join("inventory")) else {
        return 0;
    };
    let mut found: Vec<(Vec<String>, u64)> = Vec::new();
    for entry in dir.flatten() {
        let path = entry.path();
        if path.extension().and_then(|e| e.to_str()) != Some("json") {
            continue;
        }
        let Ok(text) = std::fs::read(&path) else {
            continue;
        };
        let Ok(summary) = serde_json::from_slice::<InventorySummary>(&text) else {
            continue;
        };
        let count = summary
            .keys
            .iter()
            .filter(|(arn, _)| {
                *arn == key_arn_or_id || arn.rsplit('/').next() == Some(key_arn_or_id)
            })
            .map(|(_, versions)| versions.values().sum::<u64>())
            .sum();
        found.push((summary.roots, count));
    }
    nested_total(&found)
}

/// The total of `(roots, count)` summaries, nested ones counted once (see
/// [`known_envelopes_for_key`]).
fn nested_total(summaries: &[(Vec<String>, u64)]) -> u64 {
    let within = |inner: &str, outer: &str| Path::new(inner).starts_with(Path::new(outer));
    // `a` covers `b`: every root of `b` lies in a root of `a`, and not the
    // other way round (equal root sets are one summary file).
    let covers = |a: usize, b: usize| {
        let all_in = |x: usize, y: usize| {
            summaries[y]
                .0
                .iter()
                .all(|r| summaries[x].0.iter().any(|o| within(r, o)))
        };
        a != b && all_in(a, b) && !all_in(b, a)
    };
    let n = summaries.len();
    // Immediate children: covered by `s`, and by nothing else `s` covers.
    let children = |s: usize| -> Vec<usize> {
        (0..n)
            .filter(|&c| covers(s, c) && !(0..n).any(|m| covers(s, m) && covers(m, c)))
            .collect()
    };
    fn value(s: usize, counts: &[(Vec<String>, u64)], kids: &dyn Fn(usize) -> Vec<usize>) -> u64 {
        let inner: u64 = kids(s).into_iter().map(|c| value(c, counts, kids)).sum();
        counts[s].1.max(inner)
    }
    (0..n)
        .filter(|&s| !(0..n).any(|o| covers(o, s)))
        .map(|s| value(s, summaries, &children))
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(roots: &[&str], count: u64) -> (Vec<String>, u64) {
        (roots.iter().map(|r| r.to_string()).collect(), count)
    }

    #[test]
    fn nested_summaries_are_counted_once() {
        // Disjoint roots add up.
        assert_eq!(nested_total(&[s(&["/a"], 3), s(&["/b"], 4)]), 7);
        // A newer inner summary does not add to the outer one.
        assert_eq!(
            nested_total(&[s(&["/data"], 100), s(&["/data/x"], 30)]),
            100
        );
        // Inner summaries that saw more than a stale outer one win.
        assert_eq!(
            nested_total(&[s(&["/data"], 10), s(&["/data/x"], 30), s(&["/data/y"], 40)]),
            70
        );
        // Two levels deep, and a sibling path that only shares a prefix.
        assert_eq!(
            nested_total(&[
                s(&["/d"], 5),
                s(&["/d/x"], 8),
                s(&["/d/x/y"], 9),
                s(&["/dx"], 1)
            ]),
            10
        );
        // A multi-root summary covering a single-root one.
        assert_eq!(nested_total(&[s(&["/a", "/b"], 6), s(&["/b/c"], 2)]), 6);
        assert_eq!(nested_total(&[]), 0);
    }
}

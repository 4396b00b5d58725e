//! Encrypting or decrypting every file of a tree (`encrypt-file -r`,
//! `decrypt-file -r`): the same walk and worker pool as re-wrapping, and
//! its group commit: each file is written to a temporary file beside its
//! destination, a batch of them is made durable with one `syncfs`, then
//! each is renamed into place (and the renames made durable with another).
//! A crash leaves each destination as it was or complete.

use super::failure::{Failure, FailureKind};
use super::pool::{run_workers, Merge};
use super::report::worker_panicked;
use super::tree::{walk_tree, LeftAlone, Links};
use crate::audit::{self, Durability};
use crate::error::KmsError;
use crate::files::{
    commit_staged, decrypt_staged, encrypt_staged, is_envelope_file, open_walked, DecryptOptions,
    EncryptOptions, FileError, Output, Staged,
};
use crate::kms::Kms;
use serde::Serialize;
use std::path::{Path, PathBuf};

/// What to do to every file of a tree.
#[derive(Debug, Clone)]
pub enum TreeOp {
    /// Encrypt plain files; envelopes are skipped.
    Encrypt(EncryptOptions),
    /// Decrypt envelopes; other files are skipped.
    Decrypt(DecryptOptions),
}

/// Options of a tree operation.
#[derive(Debug, Clone, Default)]
pub struct TreeOptions {
    /// Follow symbolic links.
    pub follow_links: bool,
    /// Worker threads (0: one per core, as each file keeps a core busy).
    pub jobs: usize,
    /// Set from outside to stop after the files in flight (see
    /// [`super::Interrupt`]).
    pub interrupt: super::Interrupt,
    /// Told of the run's progress, if set (counted first when set).
    pub progress: super::Watcher,
    /// Stop the run (report `stopped_early`) once this many files failed
    /// (0: never); the files in flight finish.
    pub max_failures: u64,
    /// Files per group commit and worker (0: [`DEFAULT_TREE_BATCH`]): each
    /// is written to a temporary file beside its destination, the batch
    /// made durable with one `syncfs`, then each renamed into place.
    pub batch: usize,
}

/// Counts of a tree operation.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct TreeReport {
    /// Files encrypted or decrypted.
    pub done: u64,
    /// Files left alone (already envelopes when encrypting, not envelopes
    /// when decrypting).
    pub skipped: u64,
    /// Files that failed, with the kind and reason.
    pub failed: Vec<Failure>,
    /// Symbolic links and special files inside the tree, left alone.
    #[serde(flatten)]
    pub left_alone: LeftAlone,
    /// The run was interrupted (SIGINT / SIGTERM) after the files in
    /// flight; files not yet taken up are as they were.
    pub interrupted: bool,
    /// The run stopped early: the KMS refused the caller before any file
    /// was done (every other file would be refused too).
    pub stopped_early: bool,
    /// Why it stopped early.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stop_reason: Option<String>,
}

impl TreeReport {
    /// The process exit code: 0 all done, 1 some files failed, 3
    /// interrupted.
    pub fn exit_code(&self) -> i32 {
        if self.interrupted {
            3
        } else if self.stopped_early {
            2
        } else {
            i32::from(!self.failed.is_empty())
        }
    }
}

impl Merge for TreeReport {
    fn merge(&mut self, other: TreeReport) {
        self.done += other.done;
        self.skipped += other.skipped;
        self.failed.extend(other.failed);
        self.interrupted |= other.interrupted;
    }

    fn worker_panicked(&mut self) {
        self.failed.push(worker_panicked());
    }
}

/// Encrypts or decrypts every regular file under `root`, in parallel, in
/// place or into `out_root` (same relative paths). One bad file never stops
/// the walk; the report lists it.
pub fn transform_tree(
    kms: &dyn Kms,
    op: &TreeOp,
    root: &Path,
    out_root: Option<&Path>,
    opts: &TreeOptions,
) -> TreeReport {
    let jobs = match opts.jobs {
        0 => std::thread::available_parallelism().map_or(2, std::num::NonZero::get),
        n => n,
    };
    let roots = [root.to_path_buf()];
    if let Some(p) = &opts.progress.0 {
        p.expect(super::count_files(&roots, opts.follow_links));
    }
    let links = Links::default();
    let items = walk_tree(&roots, opts.follow_links, &links);
    let batch = match opts.batch {
        0 => DEFAULT_TREE_BATCH,
        n => n,
    };
    // One file per hand-out: files differ in size by orders of magnitude,
    // and a chunk of large ones would keep one worker busy alone.
    let stop: std::sync::Mutex<Option<String>> = std::sync::Mutex::new(None);
    let started = std::sync::atomic::AtomicBool::new(false);
    let failures = std::sync::atomic::AtomicU64::new(0);
    let stopped = || {
        stop.lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .is_some()
    };
    let mut report = run_workers(jobs, 1, items, |feed| {
        let mut report = TreeReport::default();
        let mut staged = Vec::new();
        let mut staged_bytes = 0;
        let mut pending = Durability::default();
        let mut counted = 0u64;
        loop {
            if opts.interrupt.is_requested() {
                report.interrupted = true;
                break;
            }
            if stopped() {
                break;
            }
            let Some(item) = feed.next() else { break };
            if let Some(p) = &opts.progress.0 {
                p.advance(1);
            }
            let path = match item {
                Ok(path) => path,
                Err(e) => {
                    report.failed.push(Failure::new(e.location, &e.error));
                    continue;
                }
            };
            // A file is published only at the batch's commit, so the
            // record of its key use needs to be durable only then: one
            // fdatasync per batch instead of one per file. A decrypted
            // file's plaintext is on disk once staged, so its Decrypt
            // record is written before (it survives a kill -9 beside the
            // staged file) and only its sync waits for the commit; an
            // encrypted file's GenerateDataKey record is queued.
            let one = || transform_one(kms, op, opts.follow_links, root, &path, out_root);
            let (result, durability) = match op {
                TreeOp::Encrypt(_) => audit::defer_durability(one),
                TreeOp::Decrypt(_) => audit::defer_sync(one),
            };
            pending.absorb(durability);
            match result {
                Ok(Some(s)) => {
                    started.store(true, std::sync::atomic::Ordering::Release);
                    staged_bytes += s.bytes;
                    staged.push(s);
                }
                Ok(None) => report.skipped += 1,
                Err(e) => {
                    // Refused before any file was done: the caller lacks
                    // the right altogether, not for this file's context.
                    if let FileError::Kms(k) = &e {
                        let denied = FailureKind::from(k) == FailureKind::AccessDenied;
                        if denied && !started.load(std::sync::atomic::Ordering::Acquire) {
                            let mut r = stop
                                .lock()
                                .unwrap_or_else(std::sync::PoisonError::into_inner);
                            r.get_or_insert_with(|| {
                                format!(
                                    "the KMS refused the caller ({}) before any file was done: {}",
                                    k.code, k.message
                                )
                            });
                        }
                    }
                    report
                        .failed
                        .push(Failure::new(path.display().to_string(), &e));
                }
            }
            let failed = report.failed.len() as u64 - counted;
            counted += failed;
            let total = failures.fetch_add(failed, std::sync::atomic::Ordering::AcqRel) + failed;
            if opts.max_failures > 0 && total >= opts.max_failures {
                let mut r = stop
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                r.get_or_insert_with(|| {
                    format!(
                        "{total} files failed: the limit is {} (--max-failures)",
                        opts.max_failures
                    )
                });
            }
            if staged.len() >= batch || staged_bytes >= BATCH_BYTES {
                commit(
                    std::mem::take(&mut staged),
                    std::mem::take(&mut pending),
                    &mut report,
                );
                staged_bytes = 0;
            }
        }
        commit(staged, pending, &mut report);
        report
    });
    if let Some(p) = &opts.progress.0 {
        p.finish();
    }
    report.left_alone = links.take();
    report.stop_reason = stop
        .into_inner()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    report.stopped_early = report.stop_reason.is_some();
    report.failed.sort_by(|a, b| a.path.cmp(&b.path));
    report
}

/// Plaintext bytes staged by one worker before a group commit, whatever
/// the batch size: large files are not held back in bulk.
const BATCH_BYTES: u64 = 64 << 20;

/// Default of [`TreeOptions::batch`].
pub const DEFAULT_TREE_BATCH: usize = 64;

/// The group commit of one worker's staged files, once the audit records
/// of their key uses are durable (if they cannot be, no file is published).
fn commit(staged: Vec<Staged>, durability: Durability, report: &mut TreeReport) {
    if let Err(e) = durability.wait_blocking() {
        let e = FileError::Kms(KmsError::internal(format!(
            "cannot write the audit trail: {e}"
        )));
        for s in staged {
            report
                .failed
                .push(Failure::new(s.destination().display().to_string(), &e));
        }
        return;
    }
    for (dest, r) in commit_staged(staged) {
        match r {
            Ok(()) => report.done += 1,
            Err(e) => report
                .failed
                .push(Failure::new(dest.display().to_string(), &e)),
        }
    }
}

/// One file, staged for the group commit; `Ok(None)` when it is left alone.
fn transform_one(
    kms: &dyn Kms,
    op: &TreeOp,
    follow_links: bool,
    root: &Path,
    path: &Path,
    out_root: Option<&Path>,
) -> Result<Option<Staged>, FileError> {
    let mut src = open_walked(path, follow_links, out_root.is_none())?;
    let envelope = is_envelope_file(&mut src).map_err(|source| FileError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let dest = out_root
        .map(|out| destination(root, path, out))
        .transpose()?;
    let output = dest.as_deref().map_or(Output::InPlace, Output::To);
    match op {
        TreeOp::Encrypt(_) if envelope => return Ok(None),
        TreeOp::Decrypt(_) if !envelope => return Ok(None),
        _ => {}
    }
    // The key use's audit record names the envelope, as rotation names it
    // (the path as walked): the one a data key lives in, written here when
    // encrypting, read when decrypting.
    Ok(Some(match op {
        TreeOp::Encrypt(enc) => {
            let envelope = dest.as_deref().unwrap_or(path);
            let enc = EncryptOptions {
                object: Some(audit::object_name(&envelope.display().to_string())),
                ..enc.clone()
            };
            encrypt_staged(kms, &enc, path, src, output)?
        }
        TreeOp::Decrypt(dec) => {
            let dec = DecryptOptions {
                object: Some(audit::object_name(&path.display().to_string())),
                ..dec.clone()
            };
            decrypt_staged(kms, &dec, path, src, output)?
        }
    }))
}

/// Where `path` (under `root`) goes under `out`; creates its folder.
fn destination(root: &Path, path: &Path, out: &Path) -> Result<PathBuf, FileError> {
    let dest = out.join(path.strip_prefix(root).unwrap_or(path));
    if let Some(parent) = dest.parent() {
        std::fs::create_dir_all(parent).map_err(|source| FileError::Io {
            path: parent.to_path_buf(),
            source,
        })?;
    }
    Ok(dest)
}

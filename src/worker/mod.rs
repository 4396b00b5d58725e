//! The re-wrap worker: re-wraps envelope data keys under the newest version
//! of a target key (KMS ReEncrypt only), counts what keys wrap which
//! envelopes, and encrypts or decrypts whole trees.
//!
//! One pipeline, two sources. A [`Source`] is a file tree (roots) or an
//! object-store location (with a shard and a checkpoint); [`rewrap`] and
//! [`inventory`] take either and return one [`RewrapReport`] or
//! [`Inventory`].
//!
//! | module | owns |
//! |---|---|
//! | `mod.rs` | [`Source`], [`RewrapOptions`], [`StartError`], the entry points |
//! | `rewrap.rs` | the crash-safe protocol ([`rewrap_items`]): read, ReEncrypt, write new slot, group commit, wipe old slot, group commit |
//! | `target.rs` | the target key (and `--from` keys) as the protocol compares slots with them |
//! | `store.rs` | the [`EnvelopeStore`] seam between the protocol and where envelopes live |
//! | `pool.rs` | the walker feed and worker threads every job runs on |
//! | `tree.rs` | the file-tree store ([`FileStore`]: locks, `O_NOATIME`, `syncfs`) and [`walk_files`] |
//! | `objects.rs` | the object-store store ([`ObjectEnvelopeStore`]) and its listing |
//! | `checkpoint.rs` | [`Shard`]s and the [`Checkpoint`] of object-store runs |
//! | `report.rs` | [`RewrapReport`] and [`write_json`], the one writer of reports |
//! | `failure.rs` | [`FailureKind`]: every failure classified in one place |
//! | `inventory.rs` | [`Inventory`], and [`ListedEnvelope`]: one line per envelope (`inventory --list`) |
//! | `summary.rs` | [`InventorySummary`]: inventories on disk, read back by the KMS commands |
//! | `sops.rs`, `rewrap/sops.rs` | SOPS files as items: which KMS entries to re-wrap, [`WholeStore`] (read whole, stage, group commit, rename), their protocol steps |
//! | `sops_objects.rs` | SOPS files in object stores: the second pass of an object-store run (plain objects, conditional puts) |
//! | `transform.rs` | [`transform_tree`]: `encrypt-file -r` / `decrypt-file -r` on the same pool |

mod checkpoint;
mod failure;
mod inventory;
mod objects;
mod pool;
mod report;
mod rewrap;
mod sops;
mod sops_objects;
mod store;
mod summary;
mod target;
mod transform;
mod tree;

pub use checkpoint::{Checkpoint, Shard};
pub use failure::{Failure, FailureKind};
pub use inventory::{
    inventory_items, listed_inventory_items, Inventory, KeyInventory, ListedEnvelope, Lister,
};
pub use objects::{ObjectEnvelopeStore, ObjectItem};
pub use report::{write_json, Listed, RewrapReport, VersionCounts};
pub use rewrap::{aliases_by_key, rewrap_items};
pub use sops::{SopsReported, Staged, Whole, WholeStore};
pub use sops_objects::SopsObject;
pub use store::{EnvelopeStore, ItemError, StoreError};
pub use summary::{canonical_roots, known_envelopes_for_key, read_summaries, InventorySummary};
pub use transform::{transform_tree, TreeOp, TreeOptions, TreeReport, DEFAULT_TREE_BATCH};
pub(crate) use tree::count_files;
pub use tree::{walk_files, walk_tree, FileStore, FileVersion, LeftAlone, Links, LOCK_WAIT};

use crate::error::KmsError;
use crate::kms::Kms;
use crate::objstore::{ObjectLocation, ObjectStoreError};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Where the envelopes of a run are.
#[derive(Debug, Clone)]
pub enum Source<'a> {
    /// Every regular file under these roots (envelope files).
    Tree {
        /// Files or folders.
        roots: Vec<PathBuf>,
        /// Follow symbolic links while walking.
        follow_links: bool,
    },
    /// Every key object under an object-store location.
    Objects {
        /// The location (bucket or container and prefix).
        location: &'a ObjectLocation,
        /// Shard, checkpoint and concurrency.
        walk: ObjectWalkOptions,
    },
}

impl Source<'_> {
    /// What the source is, as inventory summaries name it: the roots as
    /// absolute paths, or the location URL.
    pub fn roots(&self) -> Vec<String> {
        match self {
            Source::Tree { roots, .. } => canonical_roots(roots),
            Source::Objects { location, .. } => vec![location.url().to_string()],
        }
    }
}

/// Default number of objects re-wrapped at once.
pub const DEFAULT_CONCURRENCY: usize = 16;
/// Default number of fully processed objects between two checkpoint writes.
pub const DEFAULT_CHECKPOINT_EVERY: u64 = 1000;

/// How a re-wrap or inventory walks an object-store location.
#[derive(Debug, Clone)]
pub struct ObjectWalkOptions {
    /// Record progress in this file and resume from it (see
    /// [`Checkpoint`]).
    pub checkpoint: Option<PathBuf>,
    /// Fully processed objects between two checkpoint writes.
    pub checkpoint_every: u64,
    /// Take only this share of the objects.
    pub shard: Option<Shard>,
    /// Objects in flight at once (worker threads of the pipeline).
    pub concurrency: usize,
}

impl Default for ObjectWalkOptions {
    fn default() -> ObjectWalkOptions {
        ObjectWalkOptions {
            checkpoint: None,
            checkpoint_every: DEFAULT_CHECKPOINT_EVERY,
            shard: None,
            concurrency: DEFAULT_CONCURRENCY,
        }
    }
}

/// Watches a run: the CLI draws a progress bar with it; an embedder may
/// count, log or ignore. Called from worker threads.
pub trait Progress: Send + Sync {
    /// The run expects about `items` items (called at most once, before
    /// any [`Progress::advance`]; not called when the count is unknown).
    fn expect(&self, items: u64);
    /// `n` more items are done.
    fn advance(&self, n: u64);
    /// The run is over.
    fn finish(&self);
}

/// A [`Progress`] watcher in [`RewrapOptions`] (`Debug` shows only whether
/// one is set).
#[derive(Clone, Default)]
pub struct Watcher(pub Option<Arc<dyn Progress>>);

impl std::fmt::Debug for Watcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "Watcher(set)"
        } else {
            "Watcher(none)"
        })
    }
}

/// A request to stop a run early from outside (SIGINT / SIGTERM in the
/// CLI): workers take no new item, finish the batch in flight (its group
/// commits and wipes), and the run returns a partial report marked
/// `interrupted`. Clones share one flag.
#[derive(Debug, Clone, Default)]
pub struct Interrupt(Arc<AtomicBool>);

impl Interrupt {
    /// Asks the run to stop.
    pub fn request(&self) {
        self.0.store(true, Ordering::Release);
    }

    /// True once [`Interrupt::request`] was called.
    pub fn is_requested(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

/// Default of [`RewrapOptions::max_failures`]: failed items after which a
/// run stops (`--max-failures`).
pub const DEFAULT_MAX_FAILURES: u64 = 100;

/// How to re-wrap.
#[derive(Debug, Clone)]
pub struct RewrapOptions {
    /// The target key: id, ARN, alias name or alias ARN.
    pub to: String,
    /// If not empty, only envelopes whose active slot is under one of these
    /// keys are re-wrapped; others are counted as `other_key`.
    pub from: Vec<String>,
    /// Decide and report, write nothing.
    pub dry_run: bool,
    /// Worker threads (0: two per core, as workers mostly wait on I/O or a
    /// remote KMS). Object-store sources take their concurrency instead.
    pub jobs: usize,
    /// Envelopes per group commit.
    pub batch: usize,
    /// Envelopes per ReEncrypt batch ([`Kms::re_encrypt_many`]; the
    /// in-process KMS writes their audit records in one group commit).
    pub kms_batch: usize,
    /// File descriptors the process may hold: a file-tree run shrinks its
    /// batches to fit them (see [`RewrapOptions::fit_open_files`]). `None`:
    /// batches as given.
    pub open_files: Option<u64>,
    /// Told of the run's progress, if set.
    pub progress: Watcher,
    /// Expected number of items, for the progress watcher (0: unknown; a
    /// file tree is then counted first when a watcher is set).
    pub expected_items: u64,
    /// Stop the run (report `stopped_early`) once this many items failed
    /// (0: never). A systematic failure (the KMS refuses the caller, or the
    /// target key is disabled or pending deletion) stops it at once.
    pub max_failures: u64,
    /// Set from outside to stop the run gracefully (see [`Interrupt`]).
    pub interrupt: Interrupt,
    /// Grant tokens sent with every ReEncrypt (`rotate --grant-token`): a
    /// job running under a grant (issue 15).
    pub grant_tokens: Vec<String>,
}

impl RewrapOptions {
    /// Options for re-wrapping to `to` with defaults.
    pub fn new(to: impl Into<String>) -> RewrapOptions {
        RewrapOptions {
            to: to.into(),
            from: Vec::new(),
            dry_run: false,
            jobs: 0,
            batch: 256,
            kms_batch: 64,
            open_files: None,
            progress: Watcher::default(),
            expected_items: 0,
            max_failures: DEFAULT_MAX_FAILURES,
            interrupt: Interrupt::default(),
            grant_tokens: Vec::new(),
        }
    }
}

/// Why a run could not start. Per-item failures are in the report instead.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The KMS refused to describe the target or `--from` keys.
    #[error("{0}")]
    Kms(#[from] KmsError),
    /// The object store is unreachable, the bucket missing, the
    /// credentials refused.
    #[error("{0}")]
    ObjectStore(#[from] ObjectStoreError),
    /// The checkpoint file is unusable or cannot be written.
    #[error("checkpoint: {0}")]
    Checkpoint(String),
    /// The request is not possible (e.g. a checkpoint for a local folder).
    #[error("{0}")]
    Usage(String),
}

impl StartError {
    /// A short, stable name: the AWS error name for KMS failures, the
    /// object-store error's name, else the variant's name.
    pub fn kind(&self) -> String {
        match self {
            StartError::Kms(e) => e.code.as_str().into(),
            StartError::ObjectStore(e) => e.kind(),
            StartError::Checkpoint(_) => "Checkpoint".into(),
            StartError::Usage(_) => "Usage".into(),
        }
    }
}

/// Re-wraps every envelope of `source` under the newest version of
/// `opts.to`. Errors only when the run cannot start; per-item failures are
/// in the report (with the object-store fields set for object sources). A
/// dry run neither reads nor writes a checkpoint.
pub fn rewrap(
    kms: &dyn Kms,
    source: &Source<'_>,
    opts: &RewrapOptions,
) -> Result<RewrapReport, StartError> {
    match source {
        Source::Tree {
            roots,
            follow_links,
        } => {
            let mut opts = opts.clone();
            if let Some(limit) = opts.open_files {
                opts.fit_open_files(limit);
            }
            if opts.progress.0.is_some() && opts.expected_items == 0 {
                opts.expected_items = count_files(roots, *follow_links);
            }
            let store = FileStore {
                read_only: opts.dry_run,
                follow_links: *follow_links,
            };
            let links = Links::default();
            let items = walk_tree(roots, *follow_links, &links);
            let mut report = rewrap_items(kms, &store, items, &opts)?;
            report.left_alone = links.take();
            Ok(report)
        }
        Source::Objects { location, walk } => rewrap_objects(kms, location, walk, opts),
    }
}

fn rewrap_objects(
    kms: &dyn Kms,
    loc: &ObjectLocation,
    walk: &ObjectWalkOptions,
    opts: &RewrapOptions,
) -> Result<RewrapReport, StartError> {
    loc.probe()?;
    // A dry run changes nothing, so it must not move a checkpoint either.
    let tracker = if opts.dry_run {
        checkpoint::Tracker::disabled()
    } else {
        checkpoint::Tracker::start(loc, walk)?
    };
    let store = ObjectEnvelopeStore::new(loc);
    let items = objects::list_items(loc, walk.shard, &tracker);
    let mut opts = opts.clone();
    opts.jobs = walk.concurrency.max(1);
    // Each conditional put is durable on return (commit is a no-op), so a
    // batch only delays the moment an object counts as done for the
    // checkpoint.
    opts.batch = 1;
    // One object from its read to its conditional put at a time per worker:
    // batching ReEncrypt calls would only widen the window in which another
    // writer makes the put conflict (and the network, not the audit group
    // commit, is what an object costs).
    opts.kms_batch = 1;
    let mut report = rewrap_items(kms, &store, items, &opts)?;
    tracker.finish()?;
    if !report.stopped_early && !report.interrupted {
        let sops = sops_objects::rewrap(kms, loc, walk.shard, &opts)?;
        report.stopped_early = sops.stopped_early;
        report.stop_reason.clone_from(&sops.stop_reason);
        report.interrupted = sops.interrupted;
        pool::Merge::merge(&mut report, sops);
    }
    report.location = Some(loc.url().to_string());
    report.shard = walk.shard.map(|s| s.to_string());
    report.conflicts = Some(store.conflicts());
    report.resumed_after = tracker.resumed_after();
    report.resumed_objects = Some(tracker.resumed_objects());
    Ok(report)
}

/// Counts the envelopes of `source` per key and key version (see
/// [`inventory_items`]); `jobs` worker threads for a tree, the walk's
/// concurrency for an object store. Checkpoints are not used (an inventory
/// only reads). The inventory's `roots` name the source.
pub fn inventory(
    kms: Option<&dyn Kms>,
    source: &Source<'_>,
    stale_against: Option<&str>,
    jobs: usize,
) -> Result<Inventory, StartError> {
    listed_inventory(kms, source, stale_against, jobs, None)
}

/// [`inventory`] that hands every envelope to `lister` as it is read
/// (`inventory --list`), whatever the source.
pub fn listed_inventory(
    kms: Option<&dyn Kms>,
    source: &Source<'_>,
    stale_against: Option<&str>,
    jobs: usize,
    lister: Option<&Lister<'_>>,
) -> Result<Inventory, StartError> {
    let mut inv = match source {
        Source::Tree {
            roots,
            follow_links,
        } => {
            let store = FileStore {
                read_only: true,
                follow_links: *follow_links,
            };
            let links = Links::default();
            let items = walk_tree(roots, *follow_links, &links);
            let mut inv = listed_inventory_items(kms, &store, items, stale_against, jobs, lister)?;
            inv.left_alone = links.take();
            inv
        }
        Source::Objects { location, walk } => {
            location.probe()?;
            let store = ObjectEnvelopeStore::new(location);
            let items = objects::list_items(location, walk.shard, &checkpoint::Tracker::disabled());
            let jobs = walk.concurrency.max(1);
            let mut inv = listed_inventory_items(kms, &store, items, stale_against, jobs, lister)?;
            pool::Merge::merge(
                &mut inv,
                sops_objects::inventory(location, walk.shard, jobs)?,
            );
            inv
        }
    };
    inv.roots = source.roots();
    Ok(inv)
}

//! The append handle: group commit under an exclusive `flock`, resync with
//! other writers, and repair of a torn final line.

use super::checkpoint::{Checkpoint, Checkpointer};
use super::digest;
use super::group_commit::{self, GroupSync, WriteQueue};
use super::record::{
    encode_line, parse_record, AuditRecord, DECISION_ALLOW, GENESIS_HASH, OUTCOME_SUCCESS,
};
use super::retention::{self, Pruned};
use super::segment::{self, Part, SegmentHeader};
use super::usage::{Index, KeyUsage, LastUsed, Snapshot, UsageIndex};
use super::{io_error, AuditError};
use crate::root::RootKey;
use chrono::{SecondsFormat, Utc};
use fs4::fs_std::FileExt;
use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::sync::{Mutex, MutexGuard};

/// First read size when looking for the last line of the file.
pub(super) const TAIL_WINDOW: u64 = 4096;

/// How to open an [`AuditLog`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AuditOptions {
    /// A record is on stable storage (`fdatasync`) before `append` returns:
    /// it survives a power loss once the caller can act on it. Concurrent
    /// appends share one `fdatasync` (see `AuditLog::append_all`). Off by
    /// default; a keystore's trail is always opened durable.
    pub durable: bool,
    /// When to close the active file into a segment.
    pub segments: super::AuditConfig,
}

/// The file and what this handle knows about the end of its chain.
struct ChainState {
    file: File,
    chain: Chain,
    /// The usage index, loaded on first use (see `usage.rs`).
    usage: Option<Usage<UsageIndex>>,
    /// When each key was last used: kept by every writer, loaded on the
    /// first append or DescribeKey.
    last_used: Option<Usage<LastUsed>>,
    /// The sealed checkpoint, for a trail inside a keystore.
    checkpoint: Option<Checkpointer>,
    /// Trail bytes read by `key_usage` (see [`AuditLog::usage_reads`]).
    usage_reads: u64,
}

/// An index and the end of the trail it has taken in.
struct Usage<I> {
    covered: Snapshot<I>,
    /// Records taken in since the snapshot was last saved.
    unsaved: u64,
}

/// Save the usage index after this many records (the trail is the truth;
/// the snapshot only shortens the replay of a later process).
const SAVE_USAGE_EVERY: u64 = 4096;

/// What this handle knows about the end of the chain.
struct Chain {
    /// Reused for every line, so an append does not allocate it again.
    buf: Vec<u8>,
    /// File length after this handle's last write; `None` forces a re-read.
    end: Option<u64>,
    seq: u64,
    last_hash: String,
    repaired_torn_bytes: u64,
    /// When the first record of the active file was written.
    started: Started,
    /// After a failed close, do not try again before the file is this long.
    close_backoff: u64,
    /// When the last signed digest was written (Unix seconds); `None`
    /// until learned.
    last_digest: Option<i64>,
}

/// When the active file's first record was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Started {
    /// Not learned yet (read from the file when needed).
    Unknown,
    /// Unix seconds of the first record; `None` for an empty file.
    At(Option<i64>),
}

/// An append handle on an audit file; share one per process.
pub struct AuditLog {
    inner: Arc<Inner>,
}

/// The handle's state, shared with its group commit's syncer thread (which
/// writes the queue of deferred appends, see `group_commit.rs`).
struct Inner {
    path: PathBuf,
    durable: bool,
    segments: super::AuditConfig,
    /// The keystore's root key, which seals the digest-signing keys; no
    /// digests without it.
    root: Option<Arc<dyn RootKey>>,
    state: Mutex<ChainState>,
    sync: Arc<GroupSync>,
    /// Seals retired files in the background (started on first use).
    sealer: Mutex<Option<Sealer>>,
    /// A file was sealed since the last digest: the next append (or the
    /// handle's drop) writes one, listing the new segment.
    digest_wanted: Arc<AtomicBool>,
}

/// The thread that seals the trail's retired files (see `segment.rs`), so
/// no append waits for a compression.
struct Sealer {
    wake: std::sync::mpsc::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // The retired files this handle made are sealed before it goes.
        let sealer = self
            .sealer
            .get_mut()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(Sealer { wake, thread }) = sealer {
            drop(wake);
            let _ = thread.join();
        }
        let mut state = self.lock_state();
        // Appends no one waited for (their scope's `Durability` was dropped)
        // are written all the same.
        if self.write_queue_locked(&mut state) {
            let _ = state.file.sync_data();
        }
        if self.digest_wanted.load(Ordering::SeqCst) {
            let _ = self.digest_at_end(&mut state);
        }
        self.sync.close();
        // Best effort: a later process replays what the snapshots miss.
        if let Some(usage) = state.usage.as_ref().filter(|u| u.unsaved > 0) {
            let _ = save_usage(&self.path, &usage.covered);
        }
        if let Some(last) = state.last_used.as_ref().filter(|u| u.unsaved > 0) {
            let _ = save_usage(&self.path, &last.covered);
        }
    }
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog")
            .field("path", &self.inner.path)
            .field("durable", &self.inner.durable)
            .finish_non_exhaustive()
    }
}

/// Releases the exclusive `flock` on the audit file (taken by
/// [`Inner::lock_active`]) when dropped.
struct FileLock<'a>(&'a File);

impl Drop for FileLock<'_> {
    fn drop(&mut self) {
        // Closing the file releases the lock too; nothing useful to do on error.
        let _ = FileExt::unlock(self.0);
    }
}

impl AuditLog {
    /// Opens (or creates, with mode 0600) the audit file at `path`.
    pub fn open(path: &Path) -> Result<AuditLog, AuditError> {
        AuditLog::open_with(path, AuditOptions::default())
    }

    /// Opens (or creates, with mode 0600) the audit file with `options`.
    ///
    /// Reads the last record to learn where the chain ends, and truncates a
    /// torn final line left by a crashed writer (see the module doc).
    pub fn open_with(path: &Path, options: AuditOptions) -> Result<AuditLog, AuditError> {
        AuditLog::open_in_keystore(path, options, None)
    }

    /// Opens the audit file of a keystore: with `root`, every group commit
    /// also rewrites the sealed checkpoint (`audit.checkpoint` beside the
    /// file) with the `seq` and `hash` of the last record, so cutting
    /// records off the end is detected ([`super::verify_sealed`]).
    ///
    /// A torn final line is left alone until the first append, so that
    /// `audit verify` sees the file as it was found.
    pub(crate) fn open_in_keystore(
        path: &Path,
        options: AuditOptions,
        root: Option<Arc<dyn RootKey>>,
    ) -> Result<AuditLog, AuditError> {
        let file = open_active(path)?;
        let sync = GroupSync::new(file.try_clone().map_err(io_error(path))?, path);
        let inner = Arc::new(Inner {
            path: path.to_path_buf(),
            durable: options.durable,
            segments: options.segments,
            root: root.clone(),
            sync,
            sealer: Mutex::new(None),
            digest_wanted: Arc::new(AtomicBool::new(false)),
            state: Mutex::new(ChainState {
                file,
                chain: Chain {
                    buf: Vec::with_capacity(1024),
                    end: None,
                    seq: 0,
                    last_hash: GENESIS_HASH.to_string(),
                    repaired_torn_bytes: 0,
                    started: Started::Unknown,
                    close_backoff: 0,
                    last_digest: None,
                },
                usage: None,
                last_used: None,
                checkpoint: root.map(|root| Checkpointer::new(path, root)),
                usage_reads: 0,
            }),
        });
        let writer: std::sync::Weak<dyn WriteQueue> = Arc::downgrade(&inner) as _;
        inner.sync.set_writer(writer);
        let log = AuditLog { inner };
        {
            let mut state = log.inner.lock_state();
            log.inner.lock_active(&mut state)?;
            let ChainState { file, chain, .. } = &mut *state;
            let _lock = FileLock(file);
            // Fails closed on a last line that is not a record. The first
            // append re-reads the tail anyway (`end` is `None`), repairs it
            // and compares it with the checkpoint.
            let tail = read_tail(file, &log.inner.path)?;
            chain.seq = tail.seq;
            chain.last_hash = tail.hash;
        }
        // Files a crashed writer retired and never sealed.
        if !segment::retired(path)?.is_empty() {
            log.inner.wake_sealer();
        }
        Ok(log)
    }

    /// The audit file's path.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Appends `record` as the next line of the chain.
    ///
    /// Fills `seq`, `prev_hash`, `hash`, and `time` if it is empty. The line is
    /// in the file (not necessarily on disk, unless opened `durable`) when
    /// this returns `Ok`.
    pub fn append(&self, record: AuditRecord) -> Result<(), AuditError> {
        self.append_all(vec![record])
    }

    /// Appends `records`, in order, as the next lines of the chain, with one
    /// lock and one write for all of them: the group commit of a batch of
    /// key uses. Each record is its own line, exactly as
    /// [`AuditLog::append`] would have written it.
    ///
    /// If `durable`, returns only once the records are on stable storage,
    /// with one `fdatasync` shared by every append that wrote while the
    /// previous one ran (see [`GroupSync`]). An error means the records may
    /// be lost: the caller must not answer the request. Inside a
    /// [`super::defer_durability`] scope a durable append only queues the
    /// records (the scope's `Durability` writes and syncs them).
    pub(crate) fn append_all(&self, records: Vec<AuditRecord>) -> Result<(), AuditError> {
        if records.is_empty() {
            return Ok(());
        }
        let inner = &self.inner;
        let records = if inner.durable {
            match group_commit::defer(&inner.sync, records) {
                Ok(()) => return Ok(()),
                Err(records) => records,
            }
        } else {
            records
        };
        if inner.durable && !group_commit::in_sync_scope() {
            return group_commit::append_blocking(&inner.sync, records);
        }
        let ticket = {
            let mut state = inner.lock_state();
            inner.write_with_queue(&mut state, records)?
        };
        if inner.durable && !group_commit::defer_written(&inner.sync, ticket) {
            inner.sync.wait(ticket)?;
        }
        Ok(())
    }

    /// Closes the active file into a segment now, whatever its size or age
    /// (a no-op on an empty active file); returns the segment's header.
    ///
    /// Unlike a close by size or age, which leaves the sealing to a
    /// background thread, this seals the segment (and any retired file
    /// before it) before it returns, and writes a digest listing it.
    pub fn close_segment(&self) -> Result<Option<SegmentHeader>, AuditError> {
        let mut state = self.inner.lock_state();
        self.inner.write_queue_locked(&mut state);
        self.inner.lock_active(&mut state)?;
        let retired = self.inner.retire_now(&mut state)?;
        let Some(retired) = retired else {
            return Ok(None);
        };
        drop(state);
        // Every retired file, this one last: the background sealer may be
        // at one of them (the lock on each keeps the two apart).
        for file in segment::retired(&self.inner.path)? {
            segment::seal(&self.inner.path, &file)?;
            if file == retired {
                break;
            }
        }
        let header = segment::sealed_header(&self.inner.path, &retired)?;
        let mut state = self.inner.lock_state();
        self.inner.digest_at_end(&mut state)?;
        Ok(Some(header))
    }
}

impl Inner {
    /// The part of [`AuditLog::close_segment`] under the locks (the caller
    /// took the file lock with [`Inner::lock_active`]): learns the end of
    /// the chain, brings the indexes there and retires the active file.
    /// Returns the retired file's path.
    fn retire_now(&self, state: &mut ChainState) -> Result<Option<PathBuf>, AuditError> {
        let retired = {
            let ChainState {
                file,
                chain,
                usage,
                last_used,
                ..
            } = &mut *state;
            let _lock = FileLock(file);
            self.retire_locked(file, chain, last_used, usage)?
        };
        Ok(retired.map(|(new, target)| {
            self.install(state, new);
            target
        }))
    }

    fn retire_locked(
        &self,
        file: &File,
        chain: &mut Chain,
        last_used: &mut Option<Usage<LastUsed>>,
        usage: &mut Option<Usage<UsageIndex>>,
    ) -> Result<Option<(File, PathBuf)>, AuditError> {
        let path = &self.path;
        let len = file.metadata().map_err(io_error(path))?.len();
        if chain.end != Some(len) {
            // Another writer appended: learn the end (no repair here; the
            // next append repairs a torn tail and records it).
            let tail = read_tail(file, path)?;
            if tail.torn_bytes > 0 {
                return Err(AuditError::Malformed {
                    line: 0,
                    problem: "the active file ends in a torn record; append once to repair it before closing".into(),
                });
            }
            chain.end = Some(tail.end);
            chain.seq = tail.seq;
            chain.last_hash = tail.hash;
            chain.started = Started::Unknown;
        }
        let end = (
            chain.end.unwrap_or(len),
            chain.seq,
            chain.last_hash.as_str(),
        );
        let last_used = last_used.get_or_insert_with(|| load_usage(path));
        catch_up(file, path, last_used, end)?;
        if let Some(usage) = usage.as_mut() {
            catch_up(file, path, usage, end)?;
        }
        retire(file, path, chain, last_used, usage.as_mut())
    }

    /// Makes `new` (the new active file, after a retire) the file this
    /// handle writes and its group commit syncs. On failure the next lock
    /// finds the handle's file retired and opens the new one anyway.
    fn install(&self, state: &mut ChainState, new: File) {
        match new.try_clone() {
            Ok(dup) => {
                self.sync.set_file(dup);
                state.file = new;
            }
            Err(e) => eprintln!(
                "rewrap: audit trail {}: cannot use the new active file yet ({e})",
                self.path.display()
            ),
        }
    }

    /// Takes the exclusive lock on the active file, first replacing this
    /// handle's file if another writer retired it (renamed it into
    /// `audit.segments/`): every write goes to the file at the trail's
    /// path. Release it with a [`FileLock`].
    fn lock_active(&self, state: &mut ChainState) -> Result<(), AuditError> {
        loop {
            FileExt::lock_exclusive(&state.file).map_err(io_error(&self.path))?;
            if is_active(&state.file, &self.path)? {
                return Ok(());
            }
            let _ = FileExt::unlock(&state.file);
            // This handle's writes to the retired file are made durable
            // before its group commit syncs only the new file.
            state.file.sync_data().map_err(io_error(&self.path))?;
            let new = open_active(&self.path)?;
            self.sync
                .set_file(new.try_clone().map_err(io_error(&self.path))?);
            state.file = new;
            state.chain.end = None;
            state.chain.started = Started::Unknown;
        }
    }

    /// Starts the sealer thread if it is not running, and wakes it.
    fn wake_sealer(&self) {
        let mut sealer = self
            .sealer
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(running) = sealer.as_ref() {
            if !running.thread.is_finished() && running.wake.send(()).is_ok() {
                return;
            }
        }
        let (wake, woken) = std::sync::mpsc::channel::<()>();
        let path = self.path.clone();
        let wanted = Arc::clone(&self.digest_wanted);
        let thread = std::thread::Builder::new()
            .name("rewrap-audit-seal".into())
            .spawn(move || {
                // Sealing can wait; requests cannot: the thread runs at a
                // lower priority (nice 10), best effort.
                #[cfg(target_os = "linux")]
                let _ = rustix::process::setpriority_process(Some(rustix::thread::gettid()), 10);
                while woken.recv().is_ok() {
                    while woken.try_recv().is_ok() {}
                    seal_retired(&path, &wanted);
                }
            });
        match thread {
            Ok(thread) => {
                let _ = wake.send(());
                *sealer = Some(Sealer { wake, thread });
            }
            // The retired files stay readable; the next close tries again.
            Err(e) => eprintln!(
                "rewrap: audit trail {}: cannot start the sealer ({e})",
                self.path.display()
            ),
        }
    }

    /// Writes a digest signed at the current end of the trail (a keystore's
    /// trail only): after a segment was sealed.
    fn digest_at_end(&self, state: &mut ChainState) -> Result<(), AuditError> {
        let Some(root) = &self.root else {
            return Ok(());
        };
        self.digest_wanted.store(false, Ordering::SeqCst);
        self.lock_active(state)?;
        let ChainState { file, chain, .. } = &mut *state;
        let _lock = FileLock(file);
        let tail = read_tail(file, &self.path)?;
        if tail.seq == 0 {
            return Ok(());
        }
        file.sync_data().map_err(io_error(&self.path))?;
        digest::write_next(&self.path, root.as_ref(), (tail.seq, &tail.hash))?;
        chain.last_digest = Some(Utc::now().timestamp());
        Ok(())
    }
}

impl AuditLog {
    /// Adds a new audit-signing key (the old ones are kept, their public
    /// keys still listed) and writes a digest signed with it; returns every
    /// public key, oldest first.
    pub(crate) fn rotate_signing_key(&self) -> Result<Vec<String>, AuditError> {
        let Some(root) = &self.inner.root else {
            return Err(AuditError::Checkpoint {
                problem: "only a keystore's trail has signing keys".into(),
            });
        };
        let mut state = self.inner.lock_state();
        self.inner.write_queue_locked(&mut state);
        self.inner.lock_active(&mut state)?;
        let ChainState { file, chain, .. } = &mut *state;
        let _lock = FileLock(file);
        let public = digest::rotate_signing_key(&self.inner.path, root.as_ref())?;
        let tail = read_tail(file, &self.inner.path)?;
        file.sync_data().map_err(io_error(&self.inner.path))?;
        digest::write_next(&self.inner.path, root.as_ref(), (tail.seq, &tail.hash))?;
        chain.last_digest = Some(Utc::now().timestamp());
        Ok(public)
    }

    /// Removes the closed segments past `retention` that were exported and
    /// are listed by a digest (see `retention.rs`): first a digest signed
    /// saying so, then the files. The caller records the removal.
    pub(crate) fn prune(&self, retention: std::time::Duration) -> Result<Pruned, AuditError> {
        let Some(root) = &self.inner.root else {
            return Err(AuditError::Checkpoint {
                problem: "only a keystore's trail has retention".into(),
            });
        };
        let mut state = self.inner.lock_state();
        self.inner.write_queue_locked(&mut state);
        self.inner.lock_active(&mut state)?;
        let ChainState { file, chain, .. } = &mut *state;
        let _lock = FileLock(file);
        let gone = retention::removable(&self.inner.path, retention, std::time::SystemTime::now())?;
        let Some((_, last)) = gone.last() else {
            return Ok(Pruned::default());
        };
        let (through_seq, through_hash) = (last.last_seq(), last.last_hash.clone());
        let tail = read_tail(file, &self.inner.path)?;
        file.sync_data().map_err(io_error(&self.inner.path))?;
        digest::write_next_pruning(
            &self.inner.path,
            root.as_ref(),
            (tail.seq, &tail.hash),
            Some((through_seq, &through_hash)),
        )?;
        chain.last_digest = Some(Utc::now().timestamp());
        let mut segments = Vec::new();
        for (path, _) in &gone {
            std::fs::remove_file(path).map_err(io_error(path))?;
            segments.push(
                path.file_name()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .into_owned(),
            );
        }
        let dir = segment::segments_dir(&self.inner.path);
        File::open(&dir)
            .and_then(|d| d.sync_all())
            .map_err(io_error(&dir))?;
        Ok(Pruned {
            segments,
            through_seq,
            through_hash,
        })
    }

    /// The public keys that verify this trail's digests, oldest first
    /// (creating the first signing key if there is none yet).
    pub(crate) fn public_keys(&self) -> Result<Vec<String>, AuditError> {
        let Some(root) = &self.inner.root else {
            return Ok(Vec::new());
        };
        let keys = digest::keystore_public_keys(&self.inner.path, root.as_ref())?;
        if keys.is_empty() {
            return self.rotate_signing_key();
        }
        Ok(keys)
    }

    /// `fdatasync` calls this handle has made for durable appends.
    #[cfg(test)]
    pub(crate) fn syncs(&self) -> u64 {
        self.inner.sync.syncs()
    }

    /// Flushes every appended record to stable storage (`fdatasync`).
    pub fn sync(&self) -> Result<(), AuditError> {
        let mut state = self.inner.lock_state();
        self.inner.write_queue_locked(&mut state);
        state.file.sync_data().map_err(io_error(&self.inner.path))
    }

    /// What the usage index knows of the key `arn`, with every record any
    /// process has appended so far taken in.
    pub(crate) fn key_usage(&self, arn: &str) -> Result<KeyUsage, AuditError> {
        let mut state = self.inner.lock_state();
        self.inner.write_queue_locked(&mut state);
        self.inner.lock_active(&mut state)?;
        let ChainState {
            file,
            usage,
            usage_reads,
            ..
        } = &mut *state;
        let _lock = FileLock(file);
        let tail = read_tail(file, &self.inner.path)?;
        let usage = match usage {
            Some(usage) => usage,
            None => usage.insert(load_usage(&self.inner.path)),
        };
        let replayed = catch_up(
            file,
            &self.inner.path,
            usage,
            (tail.end, tail.seq, &tail.hash),
        )?;
        *usage_reads += tail.read + replayed;
        Ok(usage.covered.index.key(arn))
    }

    /// When the key `arn` was last used for cryptography (RFC 3339 UTC),
    /// with every record any process has appended so far taken in: reads
    /// the small last-used index and the records its snapshot misses, not
    /// the trail nor the per-envelope index (DescribeKey's cost).
    pub(crate) fn last_used(&self, arn: &str) -> Result<Option<String>, AuditError> {
        let mut state = self.inner.lock_state();
        self.inner.write_queue_locked(&mut state);
        self.inner.lock_active(&mut state)?;
        let ChainState {
            file,
            last_used,
            usage_reads,
            ..
        } = &mut *state;
        let _lock = FileLock(file);
        let tail = read_tail(file, &self.inner.path)?;
        let last_used = last_used.get_or_insert_with(|| load_usage(&self.inner.path));
        let replayed = catch_up(
            file,
            &self.inner.path,
            last_used,
            (tail.end, tail.seq, &tail.hash),
        )?;
        *usage_reads += tail.read + replayed;
        Ok(last_used.covered.index.key(arn))
    }

    /// Bytes of the trail [`AuditLog::key_usage`] has read so far (its
    /// tail, and the records the saved usage index did not cover): what a
    /// DescribeKey costs besides the index itself.
    #[cfg(test)]
    pub(crate) fn usage_reads(&self) -> u64 {
        self.inner.lock_state().usage_reads
    }

    /// Bytes of torn final lines (left by crashed writers) this handle has
    /// truncated away so far. Non-zero means a writer crashed mid-append.
    pub fn repaired_torn_bytes(&self) -> u64 {
        self.inner.lock_state().chain.repaired_torn_bytes
    }
}

impl WriteQueue for Inner {
    fn write_queue(&self) {
        let mut state = self.lock_state();
        self.write_queue_locked(&mut state);
    }
}

impl Inner {
    /// Writes the records (the caller holds the state lock; this takes the
    /// file lock) and returns the group-commit ticket of the write.
    fn write_locked(
        &self,
        state: &mut ChainState,
        records: Vec<AuditRecord>,
    ) -> Result<u64, AuditError> {
        self.lock_active(state)?;
        let (ticket, retired) = self.write_active(state, records)?;
        if let Some((new, _)) = retired {
            self.install(state, new);
            self.wake_sealer();
        }
        Ok(ticket)
    }

    /// [`Inner::write_locked`] under the file lock; also retires the
    /// active file when it is due, returning the new one.
    fn write_active(
        &self,
        state: &mut ChainState,
        records: Vec<AuditRecord>,
    ) -> Result<(u64, Option<(File, PathBuf)>), AuditError> {
        let ChainState {
            file,
            chain,
            usage,
            last_used,
            checkpoint,
            ..
        } = state;
        let _lock = FileLock(file);
        let mut len = file.metadata().map_err(io_error(&self.path))?.len();
        let mut notes = Vec::new();
        if chain.end != Some(len) {
            chain.started = Started::Unknown;
            if let Some(repair) = resync(file, &self.path, chain)? {
                notes.push(repair.record(&self.path, &records[0]));
            }
            len = chain.end.expect("resync sets the end");
            if let Some(cut) = checkpoint
                .as_ref()
                .and_then(|cp| cp.check(chain.seq, &chain.last_hash))
            {
                eprintln!(
                    "rewrap: audit trail {}: {cut}; recording it before appending",
                    self.path.display()
                );
                notes.push(note_record(&records[0], "AuditTrailCut", cut.parameters()));
            }
            if chain.seq > 0 && checkpoint.as_ref().is_some_and(|cp| !cp.exists()) {
                // Deleted, or a trail older than checkpoints: either way it is
                // said in the trail, since nothing can check the end before.
                eprintln!(
                    "rewrap: audit trail {}: the sealed checkpoint is missing after record {}; \
                     recording it and starting a new one",
                    self.path.display(),
                    chain.seq
                );
                let params = BTreeMap::from([
                    ("FoundSeq".to_string(), chain.seq.to_string()),
                    ("ProcessId".to_string(), std::process::id().to_string()),
                ]);
                notes.push(note_record(&records[0], "AuditCheckpointMissing", params));
            }
        }
        // Every writer keeps the last-used index, so its snapshot stays
        // within SAVE_USAGE_EVERY records of the end of the trail and a
        // fresh process's DescribeKey replays only those, however long the
        // trail. The per-envelope index only where it was loaded.
        let last_used = last_used.get_or_insert_with(|| load_usage(&self.path));
        let end_before = (len, chain.seq, chain.last_hash.as_str());
        catch_up(file, &self.path, last_used, end_before)?;
        if let Some(usage) = usage.as_mut() {
            catch_up(file, &self.path, usage, end_before)?;
        }
        if self.digest_due(chain) {
            // The records before this append, made durable first: a digest
            // never signs what a power loss could take back.
            file.sync_data().map_err(io_error(&self.path))?;
            self.write_digest(chain);
        }
        let records: Vec<AuditRecord> = notes.into_iter().chain(records).collect();
        // Until the write succeeds the end of the chain is unknown; a failed
        // or partial write makes the next append re-read (and repair) the tail.
        chain.end = None;
        chain.buf.clear();
        let mut seq = chain.seq;
        let mut last_hash = chain.last_hash.clone();
        let mut written = Vec::with_capacity(records.len());
        for mut record in records {
            seq += 1;
            record.seq = seq;
            if record.time.is_empty() {
                record.time = now_rfc3339();
            }
            record.prev_hash = std::mem::take(&mut last_hash);
            record.hash.clear();
            last_hash = encode_line(&record, &mut chain.buf);
            record.hash.clone_from(&last_hash);
            written.push(record);
        }
        (&*file)
            .write_all(&chain.buf)
            .map_err(io_error(&self.path))?;
        // Taken under the state lock, so tickets follow the order of writes.
        let ticket = self.sync.ticket();
        let end = len + chain.buf.len() as u64;
        if len == 0 {
            chain.started = Started::At(unix_secs(&written[0].time));
        }
        chain.end = Some(end);
        chain.seq = seq;
        chain.last_hash.clone_from(&last_hash);
        if let Some(cp) = checkpoint.as_mut() {
            cp.write(&Checkpoint {
                seq,
                hash: last_hash.clone(),
            })?;
        }
        advance(&self.path, last_used, &written, end);
        if let Some(usage) = usage.as_mut() {
            advance(&self.path, usage, &written, end);
        }
        let mut retired = None;
        if self.segment_due(file, chain, end) {
            // The records are written (and the caller will make them
            // durable): a failed close leaves them in the active file,
            // says so, and is tried again later.
            match retire(file, &self.path, chain, last_used, usage.as_mut()) {
                Ok(new) => retired = new,
                Err(e) => {
                    eprintln!(
                        "rewrap: audit trail {}: closing the segment failed ({e}); the records stay in the active file",
                        self.path.display()
                    );
                    chain.close_backoff = end + (self.segments.segment_max_bytes / 8).max(1);
                }
            }
        }
        Ok((ticket, retired))
    }

    /// Writes the queued records, then `records`, with one write; resolves
    /// the queued batches with its outcome. The caller holds the state lock.
    fn write_with_queue(
        &self,
        state: &mut ChainState,
        records: Vec<AuditRecord>,
    ) -> Result<u64, AuditError> {
        let queued = self.sync.take_queue();
        if queued.is_empty() {
            return self.write_locked(state, records);
        }
        self.write_batches(state, queued, records)
    }

    /// Writes the queued records, if any (see [`Inner::write_with_queue`]);
    /// a failure reaches their waiters through their batches. Whether
    /// there were any.
    fn write_queue_locked(&self, state: &mut ChainState) -> bool {
        let queued = self.sync.take_queue();
        if queued.is_empty() {
            return false;
        }
        let _ = self.write_batches(state, queued, Vec::new());
        true
    }

    /// Writes `queued` (oldest first) and then `records` with one write,
    /// and resolves the queued batches with its outcome.
    fn write_batches(
        &self,
        state: &mut ChainState,
        queued: Vec<group_commit::Queued>,
        records: Vec<AuditRecord>,
    ) -> Result<u64, AuditError> {
        let mut all: Vec<AuditRecord> = Vec::new();
        let mut batches = Vec::with_capacity(queued.len());
        for q in queued {
            all.extend(q.records);
            batches.push(q.batch);
        }
        all.extend(records);
        let result = self.write_locked(state, all);
        let outcome = match &result {
            Ok(ticket) => Ok(*ticket),
            Err(e) => Err(group_commit::WriteFailure::of(e)),
        };
        for batch in batches {
            batch.resolve(outcome.clone());
        }
        result
    }

    /// Whether the active file (now `end` bytes long) is to be closed.
    fn segment_due(&self, file: &File, chain: &mut Chain, end: u64) -> bool {
        if end == 0 || end < chain.close_backoff {
            return false;
        }
        if end >= self.segments.segment_max_bytes {
            return true;
        }
        if chain.started == Started::Unknown {
            chain.started = Started::At(first_record_time(file, &self.path));
        }
        let Started::At(started) = chain.started else {
            return false;
        };
        let age = started.map_or(0, |t| Utc::now().timestamp().saturating_sub(t));
        age >= 0 && age as u64 >= self.segments.segment_max_age_secs
    }

    /// Whether a periodic digest is due (in a keystore, with records).
    fn digest_due(&self, chain: &mut Chain) -> bool {
        if self.root.is_none() || chain.seq == 0 {
            return false;
        }
        if self.digest_wanted.swap(false, Ordering::SeqCst) {
            // A segment was sealed since the last digest.
            return true;
        }
        let last = *chain
            .last_digest
            .get_or_insert_with(|| digest::last_time(&self.path).unwrap_or(0));
        let age = Utc::now().timestamp().saturating_sub(last);
        age >= 0 && age as u64 >= self.segments.digest_interval_secs
    }

    /// Writes a signed digest of the trail up to the end of `chain`
    /// (creating the signing key the first time). A failure is said on
    /// stderr and tried again at the next append: the records themselves
    /// are written, and verify reports a trail whose digests fall behind.
    fn write_digest(&self, chain: &mut Chain) {
        let Some(root) = &self.root else { return };
        chain.last_digest = Some(Utc::now().timestamp());
        if let Err(e) = digest::write_next(&self.path, root.as_ref(), (chain.seq, &chain.last_hash))
        {
            chain.last_digest = Some(0);
            eprintln!(
                "rewrap: audit trail {}: writing the signed digest failed: {e}",
                self.path.display()
            );
        }
    }

    /// Locks the chain state; after a panic in another thread, re-reads the
    /// file instead of trusting what that thread left behind.
    fn lock_state(&self) -> MutexGuard<'_, ChainState> {
        match self.state.lock() {
            Ok(guard) => guard,
            Err(poisoned) => {
                self.state.clear_poison();
                let mut guard = poisoned.into_inner();
                guard.chain.end = None;
                guard
            }
        }
    }
}

/// Retires the active file (see `segment.rs`): syncs it, renames it into
/// `audit.segments/` under the `seq` of its first record the closed parts
/// lack, and opens a new, empty active file, which it returns with the
/// retired file's path. An active file holding only records the closed
/// parts already have (left by a close a crash interrupted) is emptied
/// instead, and `None` returned. The caller holds the file lock, and
/// `chain` and the indexes are at the end of the active file.
///
/// Crash safety: the records are on stable storage before the rename, and
/// the rename is one step; a crash before the new active file exists
/// leaves none, and the next writer creates it. Readers take a retired
/// file as part of the trail until its sealed segment replaces it.
fn retire(
    file: &File,
    path: &Path,
    chain: &mut Chain,
    last_used: &mut Usage<LastUsed>,
    usage: Option<&mut Usage<UsageIndex>>,
) -> Result<Option<(File, PathBuf)>, AuditError> {
    let end = chain.end.expect("the caller knows the end");
    let (closed_seq, closed_hash) = closed_end(path)?.unwrap_or((0, GENESIS_HASH.to_string()));
    let first = first_record_after(file, path, end, closed_seq)?;
    let retired = if let Some(first) = first {
        {
            if first.seq != closed_seq + 1 || first.prev_hash != closed_hash {
                // A broken chain is left where `audit verify` names the line.
                return Err(AuditError::Malformed {
                    line: 0,
                    problem: format!(
                        "not closing a segment: record {} does not follow record {closed_seq}",
                        first.seq
                    ),
                });
            }
            file.sync_data().map_err(io_error(path))?;
            let dir = segment::segments_dir(path);
            std::fs::create_dir_all(&dir).map_err(io_error(&dir))?;
            let target = segment::retired_path(path, first.seq);
            std::fs::rename(path, &target).map_err(io_error(path))?;
            sync_dir(&dir)?;
            let new = open_active(path)?;
            sync_dir(path.parent().unwrap_or(Path::new(".")))?;
            Some((new, target))
        }
    } else {
        file.set_len(0).map_err(io_error(path))?;
        None
    };
    chain.end = Some(0);
    chain.started = Started::At(None);
    chain.close_backoff = 0;
    // Saved at offset 0 now, so other writers' snapshots (at offsets of
    // the old active file) are replaced by these instead of rebuilt.
    restart(path, last_used);
    if let Some(usage) = usage {
        restart(path, usage);
    }
    Ok(retired)
}

/// The first record of the active file (of its first `end` bytes) with a
/// `seq` past `closed_seq`.
fn first_record_after(
    file: &File,
    path: &Path,
    end: u64,
    closed_seq: u64,
) -> Result<Option<AuditRecord>, AuditError> {
    use std::io::BufRead;
    let mut reader = file;
    reader.seek(SeekFrom::Start(0)).map_err(io_error(path))?;
    let mut lines = std::io::BufReader::new(reader.take(end));
    let mut line = Vec::with_capacity(1024);
    let mut number = 0;
    loop {
        line.clear();
        let n = lines.read_until(b'\n', &mut line).map_err(io_error(path))?;
        if n == 0 || line.last() != Some(&b'\n') {
            return Ok(None);
        }
        number += 1;
        let record = parse_record(number, &line[..n - 1])?;
        if record.seq > closed_seq {
            return Ok(Some(record));
        }
    }
}

/// Opens (or creates, with mode 0600) the active file at `path`.
fn open_active(path: &Path) -> Result<File, AuditError> {
    let mut open = OpenOptions::new();
    open.read(true).append(true).create(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        open.mode(0o600);
    }
    open.open(path).map_err(io_error(path))
}

/// Whether `file` is the one at `path` (not a retired one).
fn is_active(file: &File, path: &Path) -> Result<bool, AuditError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let mine = file.metadata().map_err(io_error(path))?;
        match std::fs::metadata(path) {
            Ok(there) => Ok(mine.dev() == there.dev() && mine.ino() == there.ino()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(io_error(path)(e)),
        }
    }
    #[cfg(not(unix))]
    {
        let _ = (file, path);
        Ok(true)
    }
}

fn sync_dir(dir: &Path) -> Result<(), AuditError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_error(dir))
}

/// The sealer's work: seals every retired file of the trail, oldest first
/// (see [`segment::seal`]), and
/// stops at the first that fails, so sealed segments stay a prefix of the
/// trail. Sets `digest_wanted` when it sealed one.
fn seal_retired(path: &Path, digest_wanted: &AtomicBool) {
    let retired = match segment::retired(path) {
        Ok(retired) => retired,
        Err(e) => {
            eprintln!(
                "rewrap: audit trail {}: cannot list retired files ({e})",
                path.display()
            );
            return;
        }
    };
    for file in retired {
        match segment::seal(path, &file) {
            Ok(Some(_)) => digest_wanted.store(true, Ordering::SeqCst),
            Ok(None) => {}
            Err(AuditError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            }
            Err(e) => {
                eprintln!(
                    "rewrap: audit trail {}: sealing {} failed ({e}); its records stay readable where they are",
                    path.display(),
                    file.display()
                );
                return;
            }
        }
    }
}

/// Where the closed part of the trail ends (`seq`, hash): the last closed
/// segment, or, when retention removed them all, the last removed record.
fn closed_end(path: &Path) -> Result<Option<(u64, String)>, AuditError> {
    for part in segment::parts(path)?.into_iter().rev() {
        match part {
            Part::Sealed(seg) => {
                let h = segment::SegmentReader::open(&seg)?.header().clone();
                return Ok(Some((h.last_seq(), h.last_hash)));
            }
            Part::Retired(retired, file) => {
                if file.metadata().map_err(io_error(&retired))?.len() == 0 {
                    continue;
                }
                let tail = read_tail(&file, &retired)?;
                return Ok(Some((tail.seq, tail.hash)));
            }
        }
    }
    digest::pruned(path)
}

/// The time of the first record of the active file (Unix seconds), if any.
fn first_record_time(file: &File, path: &Path) -> Option<i64> {
    #[derive(serde::Deserialize)]
    struct TimeOnly {
        time: String,
    }
    let len = file.metadata().ok()?.len();
    let bytes = read_range(file, path, 0, len.min(TAIL_WINDOW)).ok()?;
    let line = bytes.split(|&b| b == b'\n').next()?;
    let first: TimeOnly = serde_json::from_slice(line).ok()?;
    unix_secs(&first.time)
}

fn unix_secs(time: &str) -> Option<i64> {
    chrono::DateTime::parse_from_rfc3339(time)
        .ok()
        .map(|t| t.timestamp())
}

/// Learns `seq` and `hash` of the last complete line and repairs a torn
/// tail: a complete record that only lost its `\n` gets it back, anything
/// else is cut off. Either way the repair is returned, to be recorded in the
/// trail itself and said on stderr: it is never silent.
/// The caller holds the exclusive file lock.
fn resync(file: &File, path: &Path, chain: &mut Chain) -> Result<Option<Repair>, AuditError> {
    let tail = read_tail(file, path)?;
    let mut repair = None;
    chain.end = Some(tail.end);
    chain.seq = tail.seq;
    chain.last_hash.clone_from(&tail.hash);
    if tail.torn_bytes > 0 {
        let torn = read_range(file, path, tail.end, tail.end + tail.torn_bytes)?;
        chain.repaired_torn_bytes += tail.torn_bytes;
        if let Some(record) = whole_record(&torn, tail.seq, &tail.hash) {
            (&*file).write_all(b"\n").map_err(io_error(path))?;
            chain.end = Some(tail.end + tail.torn_bytes + 1);
            chain.seq = record.seq;
            chain.last_hash = record.hash;
            repair = Some(Repair {
                bytes: tail.torn_bytes,
                action: "newline restored",
                seq: record.seq,
            });
        } else {
            file.set_len(tail.end).map_err(io_error(path))?;
            repair = Some(Repair {
                bytes: tail.torn_bytes,
                action: "truncated",
                seq: tail.seq + 1,
            });
        }
    }
    Ok(repair)
}

/// `bytes` as the complete, correctly chained record after `seq`/`hash`.
fn whole_record(bytes: &[u8], seq: u64, hash: &str) -> Option<AuditRecord> {
    let mut record: AuditRecord = serde_json::from_slice(bytes).ok()?;
    let claimed = std::mem::take(&mut record.hash);
    let mut buf = Vec::with_capacity(bytes.len() + 1);
    let computed = encode_line(&record, &mut buf);
    let fits = computed == claimed
        && buf[..buf.len() - 1] == *bytes
        && record.seq == seq + 1
        && record.prev_hash == hash;
    record.hash = claimed;
    fits.then_some(record)
}

/// A repaired torn tail.
struct Repair {
    bytes: u64,
    action: &'static str,
    /// The `seq` of the record that was torn.
    seq: u64,
}

impl Repair {
    /// The record of the repair, made by the caller of the append that
    /// found it; also said on stderr.
    fn record(&self, path: &Path, by: &AuditRecord) -> AuditRecord {
        eprintln!(
            "rewrap: audit trail {}: the final record (seq {}) was torn ({} bytes without a newline): {}; \
             recorded in the trail as RepairAuditTail",
            path.display(),
            self.seq,
            self.bytes,
            self.action
        );
        let params = BTreeMap::from([
            ("Action".to_string(), self.action.to_string()),
            ("TornBytes".to_string(), self.bytes.to_string()),
            ("TornSeq".to_string(), self.seq.to_string()),
            ("ProcessId".to_string(), std::process::id().to_string()),
        ]);
        note_record(by, "RepairAuditTail", params)
    }
}

/// A record the writer adds on its own (a repair, a cut it found), made in
/// the name of the caller whose append found it.
fn note_record(by: &AuditRecord, operation: &str, params: BTreeMap<String, String>) -> AuditRecord {
    AuditRecord {
        request_id: by.request_id.clone(),
        principal: by.principal.clone(),
        operation: operation.to_string(),
        decision: DECISION_ALLOW.into(),
        decided_by: "audit writer".into(),
        outcome: OUTCOME_SUCCESS.into(),
        source_ip: by.source_ip.clone(),
        user_agent: by.user_agent.clone(),
        access_key_id: by.access_key_id.clone(),
        request_parameters: Some(params),
        ..AuditRecord::default()
    }
}

/// Takes the records just written (ending at `end`) into `usage`, and saves
/// its snapshot every [`SAVE_USAGE_EVERY`] records.
fn advance<I: Index>(path: &Path, usage: &mut Usage<I>, written: &[AuditRecord], end: u64) {
    for record in written {
        usage.covered.index.take(record);
    }
    if let Some(last) = written.last() {
        usage.covered.seq = last.seq;
        usage.covered.hash.clone_from(&last.hash);
    }
    usage.covered.offset = end;
    usage.unsaved += written.len() as u64;
    if usage.unsaved >= SAVE_USAGE_EVERY && save_usage(path, &usage.covered).is_ok() {
        usage.unsaved = 0;
    }
}

/// After a close: the same index, at offset 0 of the emptied active file.
fn restart<I: Index>(path: &Path, usage: &mut Usage<I>) {
    usage.covered.offset = 0;
    if save_usage(path, &usage.covered).is_ok() {
        usage.unsaved = 0;
    }
}

/// An index's snapshot file, beside the audit file.
fn usage_path<I: Index>(path: &Path) -> PathBuf {
    path.with_file_name(I::FILE)
}

/// The saved index, or an empty one (replayed from the first record).
fn load_usage<I: Index>(path: &Path) -> Usage<I> {
    let covered = std::fs::read(usage_path::<I>(path))
        .ok()
        .and_then(|bytes| serde_json::from_slice::<Snapshot<I>>(&bytes).ok())
        .unwrap_or_else(empty_snapshot);
    Usage {
        covered,
        unsaved: 0,
    }
}

fn empty_snapshot<I: Index>() -> Snapshot<I> {
    Snapshot {
        offset: 0,
        seq: 0,
        hash: GENESIS_HASH.to_string(),
        index: I::default(),
    }
}

fn save_usage<I: Index>(path: &Path, covered: &Snapshot<I>) -> Result<(), AuditError> {
    let bytes = serde_json::to_vec(covered).map_err(|e| AuditError::Malformed {
        line: 0,
        problem: format!("usage index: {e}"),
    })?;
    let target = usage_path::<I>(path);
    crate::keystore::write_atomic(&target, &bytes).map_err(|e| AuditError::Io {
        path: target,
        source: std::io::Error::other(e.to_string()),
    })
}

/// Takes in the records between what `usage` covers and `end`. If they do
/// not chain onto it (the trail was cut or rewritten, or the snapshot is
/// not of this trail), the index is rebuilt from the first record. Returns
/// the bytes of the trail it read.
fn catch_up<I: Index>(
    file: &File,
    path: &Path,
    usage: &mut Usage<I>,
    end: (u64, u64, &str),
) -> Result<u64, AuditError> {
    let (end, seq, hash) = end;
    let covered = &usage.covered;
    if covered.offset == end && covered.seq == seq && covered.hash == hash {
        return Ok(0);
    }
    let mut read = 0;
    if covered.offset < end {
        let before = covered.seq;
        read += end - covered.offset;
        let mut next = std::mem::take(&mut usage.covered);
        if replay(file, path, &mut next, end, true)? && next.seq == seq && next.hash == hash {
            usage.unsaved += next.seq - before;
            usage.covered = next;
            return Ok(read);
        }
    }
    // A snapshot saved by another writer (one that closed a segment saves
    // one at offset 0) may fit where this one did not.
    let saved = load_usage::<I>(path).covered;
    if saved.offset <= end && saved.seq <= seq {
        let mut next = saved;
        read += end - next.offset;
        if replay(file, path, &mut next, end, true)? && next.seq == seq && next.hash == hash {
            usage.unsaved = 1;
            usage.covered = next;
            return Ok(read);
        }
    }
    let mut next = empty_snapshot();
    read += replay_segments(path, &mut next)?;
    replay(file, path, &mut next, end, false)?;
    usage.unsaved = next.seq.max(1);
    usage.covered = next;
    Ok(read + end)
}

/// Applies the records of every closed segment to `into` (from empty);
/// returns the compressed bytes read.
fn replay_segments<I: Index>(path: &Path, into: &mut Snapshot<I>) -> Result<u64, AuditError> {
    let mut read = 0;
    for part in segment::parts(path)? {
        match part {
            Part::Sealed(seg) => {
                read += std::fs::metadata(&seg).map_or(0, |m| m.len());
                let mut reader = segment::SegmentReader::open(&seg)?;
                while let Some(record) = reader.next_record()? {
                    if record.seq <= into.seq {
                        continue;
                    }
                    into.index.take(&record);
                    into.seq = record.seq;
                    into.hash = record.hash;
                }
            }
            Part::Retired(retired, file) => {
                let len = file.metadata().map_err(io_error(&retired))?.len();
                read += len;
                let offset = std::mem::replace(&mut into.offset, 0);
                // Strict: skips the records before it already taken in; a
                // broken chain is `audit verify`'s to report.
                replay(&file, &retired, into, len, true)?;
                into.offset = offset;
            }
        }
    }
    Ok(read)
}

/// Applies the complete records in `[into.offset, end)` to `into`. With
/// `strict`, returns `false` (leaving `into` half-applied) as soon as a record
/// does not chain onto the one before; without, takes in every record.
fn replay<I: Index>(
    file: &File,
    path: &Path,
    into: &mut Snapshot<I>,
    end: u64,
    strict: bool,
) -> Result<bool, AuditError> {
    use std::io::BufRead;
    let mut reader = file;
    reader
        .seek(SeekFrom::Start(into.offset))
        .map_err(io_error(path))?;
    let mut lines = std::io::BufReader::with_capacity(256 * 1024, reader.take(end - into.offset));
    let mut line = Vec::with_capacity(1024);
    loop {
        line.clear();
        let n = lines.read_until(b'\n', &mut line).map_err(io_error(path))?;
        if n == 0 || line.last() != Some(&b'\n') {
            return Ok(true);
        }
        let Ok(record) = serde_json::from_slice::<AuditRecord>(&line[..n - 1]) else {
            if strict {
                return Ok(false);
            }
            into.offset += n as u64;
            continue;
        };
        if strict && record.seq <= into.seq {
            // Already in a closed segment (a close interrupted by a crash).
            into.offset += n as u64;
            continue;
        }
        if strict && (record.seq != into.seq + 1 || record.prev_hash != into.hash) {
            return Ok(false);
        }
        into.index.take(&record);
        into.offset += n as u64;
        into.seq = record.seq;
        into.hash = record.hash;
    }
}

/// Now, as the audit log writes times.
fn now_rfc3339() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Where the chain ends, as read from the file.
struct Tail {
    /// Length of the file without its torn tail.
    end: u64,
    seq: u64,
    hash: String,
    torn_bytes: u64,
    /// Bytes read from the file to find the last line.
    read: u64,
}

/// Reads backwards from the end of the file to its last complete line.
fn read_tail(file: &File, path: &Path) -> Result<Tail, AuditError> {
    let len = file.metadata().map_err(io_error(path))?.len();
    let mut window = TAIL_WINDOW;
    let mut read = 0;
    loop {
        let start = len.saturating_sub(window);
        let bytes = read_range(file, path, start, len)?;
        read += bytes.len() as u64;
        let complete = match bytes.iter().rposition(|&b| b == b'\n') {
            Some(i) => i + 1,
            None if start == 0 => 0,
            None => {
                window *= 2;
                continue;
            }
        };
        let torn_bytes = bytes.len() as u64 - complete as u64;
        let end = start + complete as u64;
        if complete == 0 {
            // An empty active file continues the last closed segment.
            let (seq, hash) = closed_end(path)?.unwrap_or_else(|| (0, GENESIS_HASH.to_string()));
            return Ok(Tail {
                end,
                seq,
                hash,
                torn_bytes,
                read,
            });
        }
        let line_end = complete - 1;
        let line_start = match bytes[..line_end].iter().rposition(|&b| b == b'\n') {
            Some(i) => i + 1,
            None if start == 0 => 0,
            None => {
                window *= 2;
                continue;
            }
        };
        let last: AuditRecord = match serde_json::from_slice(&bytes[line_start..line_end]) {
            Ok(record) => record,
            Err(e) => {
                let line = count_lines(file, path, start + line_start as u64)? + 1;
                return Err(AuditError::Malformed {
                    line,
                    problem: format!(
                        "last record is not an audit record ({e}); refusing to append"
                    ),
                });
            }
        };
        return Ok(Tail {
            end,
            seq: last.seq,
            hash: last.hash,
            torn_bytes,
            read,
        });
    }
}

fn read_range(file: &File, path: &Path, start: u64, end: u64) -> Result<Vec<u8>, AuditError> {
    let mut reader = file;
    let mut bytes = vec![0u8; (end - start) as usize];
    reader
        .seek(SeekFrom::Start(start))
        .and_then(|_| reader.read_exact(&mut bytes))
        .map_err(io_error(path))?;
    Ok(bytes)
}

/// Number of `\n` in the first `upto` bytes of the file (error path only).
fn count_lines(file: &File, path: &Path, upto: u64) -> Result<u64, AuditError> {
    let mut reader = file;
    reader.seek(SeekFrom::Start(0)).map_err(io_error(path))?;
    let mut lines = 0u64;
    let mut chunk = vec![0u8; 64 * 1024];
    let mut remaining = upto;
    while remaining > 0 {
        let want = remaining.min(chunk.len() as u64) as usize;
        let n = reader.read(&mut chunk[..want]).map_err(io_error(path))?;
        if n == 0 {
            break;
        }
        lines += chunk[..n].iter().filter(|&&b| b == b'\n').count() as u64;
        remaining -= n as u64;
    }
    Ok(lines)
}

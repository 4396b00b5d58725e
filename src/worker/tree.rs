//! The file-tree store: envelopes as files on a local file system, and the
//! walk that lists them. Owns the file-system details of the re-wrap
//! protocol: `flock` locking, `O_NOATIME` reads, and `syncfs` group
//! commits.

use super::pool::{worker_count, FEED_CHUNK};
use super::store::{EnvelopeStore, ItemError, StoreError};
use super::RewrapOptions;
use crate::envelope::{Header, ParsedHeader, EMPTY_SLOT, FIXED_LEN, MAGIC, SLOT_SIZE};
use serde::{Deserialize, Serialize};
use std::fs::File;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long a file-tree run waits for another writer's lock on an envelope
/// (after putting it aside once) before it reports the file as `Busy`.
pub const LOCK_WAIT: Duration = Duration::from_secs(10);

/// Envelopes as files on a local file system: the file-tree store.
///
/// Files are opened with `O_NOATIME` where the caller owns them (reading a
/// header for a re-wrap or an inventory is not an access by a user). Reads use
/// one positioned read of the header.
///
/// Re-wrapping ([`EnvelopeStore::read_for_update`]) takes an exclusive
/// `flock` on the file before reading and holds it until the version is
/// dropped, that is until the old slot is wiped: no other re-wrap can
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
    /// The walk followed symbolic links: a path may name a link, and the
    /// "same file" check before a write compares the link's target
    /// (`stat`), not the link (`lstat`).
    pub follow_links: bool,
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
        StoreError::io(format!("{what} {}", path.display()), e)
    }

    /// Opens `path` without updating its access time where allowed
    /// (`O_NOATIME` needs the file's owner or `CAP_FOWNER`), and without
    /// blocking: the walker saw a regular file, but it may have been swapped
    /// for a FIFO since, whose plain open would wait for a writer forever.
    /// Unless links are followed, a link swapped in is not followed either
    /// (`O_NOFOLLOW`): it is a conflict, as is anything but a regular file,
    /// which [`FileStore::read_open`] refuses.
    pub(super) fn open(&self, path: &Path) -> Result<File, StoreError> {
        use rustix::fs::OFlags;
        use std::os::unix::fs::OpenOptionsExt;
        let mut opts = std::fs::OpenOptions::new();
        opts.read(true).write(!self.read_only);
        let mut flags = OFlags::NONBLOCK;
        if !self.follow_links {
            flags |= OFlags::NOFOLLOW;
        }
        let noatime = OFlags::NOATIME.bits() as i32;
        match opts
            .clone()
            .custom_flags(flags.bits() as i32 | noatime)
            .open(path)
        {
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                opts.custom_flags(flags.bits() as i32).open(path)
            }
            r => r,
        }
        .map_err(|e| {
            let replaced = e.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error())
                || e.kind() == std::io::ErrorKind::IsADirectory;
            if replaced {
                StoreError::Conflict(format!(
                    "{}: not a regular file now (replaced while the tree was walked)",
                    path.display()
                ))
            } else {
                FileStore::io(path, "cannot open", e)
            }
        })
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
        if !meta.is_file() {
            return Err(StoreError::Conflict(format!(
                "{}: not a regular file now (replaced while the tree was walked)",
                path.display()
            )));
        }
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
        // Anyone who can read an envelope can flock it: wait for another
        // writer at most LOCK_WAIT, then report the file as busy.
        let deadline = std::time::Instant::now() + if wait { LOCK_WAIT } else { Duration::ZERO };
        let mut pause = Duration::from_millis(5);
        loop {
            match file.try_lock() {
                Ok(()) => break,
                Err(std::fs::TryLockError::WouldBlock) => {
                    let now = std::time::Instant::now();
                    if now >= deadline {
                        return Err(StoreError::Busy);
                    }
                    std::thread::sleep(pause.min(deadline - now));
                    pause = (pause * 2).min(Duration::from_millis(200));
                }
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
        let result = compare_and_write(self.follow_links, path, &file, writes, expected);
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

    fn whole(&self) -> Option<&dyn super::WholeStore<PathBuf>> {
        Some(self)
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
                        .map_err(|e| StoreError::io("fdatasync failed", e.into()))?;
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
    follow_links: bool,
    path: &Path,
    file: &File,
    writes: &[(usize, &[u8; SLOT_SIZE])],
    expected: &FileVersion,
) -> Result<Vec<u8>, StoreError> {
    let wipe_only = writes.iter().all(|(_, b)| **b == EMPTY_SLOT);
    if !wipe_only {
        let now = if follow_links {
            std::fs::metadata(path)
        } else {
            std::fs::symlink_metadata(path)
        }
        .map_err(|e| FileStore::io(path, "cannot stat", e))?;
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

pub(super) fn read_at_full(file: &File, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
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

impl RewrapOptions {
    /// Makes a file-tree run fit `open_files` descriptors (the process's
    /// `RLIMIT_NOFILE`, which the caller may have raised): each worker holds
    /// an open (and locked) file for every envelope between its read and its
    /// wipe, up to `kms_batch + batch` of them. Shrinks `batch` (and if need
    /// be `kms_batch`) until every worker's files fit with room to spare.
    pub fn fit_open_files(&mut self, open_files: u64) {
        // Descriptors for everything else: the walker, the audit log, the
        // keystore, sockets to a KMS.
        const SPARE: u64 = 128;
        let jobs = worker_count(self.jobs) as u64;
        let per_worker = (open_files.saturating_sub(SPARE) / jobs).max(2) as usize;
        if self.kms_batch + self.batch > per_worker {
            self.kms_batch = self.kms_batch.min(per_worker / 4).max(1);
            self.batch = (per_worker - self.kms_batch).max(1);
        }
    }
}

/// Walks `roots` lazily (depth first, no list of the tree in memory) and
/// yields every regular file (see [`walk_tree`]; links it skips are not
/// recorded).
pub fn walk_files(
    roots: &[PathBuf],
    follow_links: bool,
) -> impl Iterator<Item = Result<PathBuf, ItemError>> + Send {
    walk_tree(roots, follow_links, &Links::default())
}

/// What a walk of a tree left alone, each with its named outcome: symbolic
/// links (not followed unless asked) and special files (FIFOs, sockets,
/// devices: never opened, so a FIFO cannot block the run).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeftAlone {
    /// Symbolic links inside the tree, left alone (see `links`; followed
    /// with `--follow-symlinks`).
    #[serde(default)]
    pub skipped_links: u64,
    /// Their paths, sorted.
    #[serde(default)]
    pub links: Vec<String>,
    /// FIFOs, sockets and devices inside the tree, never opened.
    #[serde(default)]
    pub skipped_special: u64,
    /// Their paths, sorted.
    #[serde(default)]
    pub special: Vec<String>,
}

impl LeftAlone {
    /// Adds another walk's (a shard's) entries.
    pub fn merge(&mut self, other: LeftAlone) {
        self.skipped_links += other.skipped_links;
        self.links.extend(other.links);
        self.skipped_special += other.skipped_special;
        self.special.extend(other.special);
    }
}

/// Collects, while a walk runs on several threads, what it left alone.
#[derive(Debug, Clone, Default)]
pub struct Links(std::sync::Arc<std::sync::Mutex<LeftAlone>>);

impl Links {
    fn lock(&self) -> std::sync::MutexGuard<'_, LeftAlone> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn push_link(&self, path: &Path) {
        self.lock().links.push(path.display().to_string());
    }

    fn push_special(&self, path: &Path) {
        self.lock().special.push(path.display().to_string());
    }

    /// What was left alone so far, sorted and counted.
    pub fn take(&self) -> LeftAlone {
        let mut v = std::mem::take(&mut *self.lock());
        v.links.sort();
        v.special.sort();
        v.skipped_links = v.links.len() as u64;
        v.skipped_special = v.special.len() as u64;
        v
    }
}

/// Walks `roots` lazily (depth first, no list of the tree in memory) and
/// yields every regular file. Temporary files of [`crate::files`] are
/// skipped.
///
/// Symbolic links, as `find -H` treats them: a root that is a link is
/// followed (to a file or a folder); links inside the tree are recorded in
/// `links` and left alone, unless `follow_links`: then a link to a regular
/// file or a folder is followed wherever it leads (a loop is reported as a
/// failure by the walker), a link to anything else (FIFO, device, socket)
/// is skipped like such files are, and a dangling link is recorded in
/// `links`. FIFOs, sockets and devices are recorded in `links` as special
/// files, never opened.
pub fn walk_tree(
    roots: &[PathBuf],
    follow_links: bool,
    links: &Links,
) -> impl Iterator<Item = Result<PathBuf, ItemError>> + Send {
    let roots: Vec<PathBuf> = roots.iter().map(|r| resolve_root(r)).collect();
    let links = links.clone();
    roots.into_iter().flat_map(move |root| {
        let links = links.clone();
        walkdir::WalkDir::new(root)
            .follow_links(follow_links)
            .follow_root_links(true)
            .into_iter()
            .filter_entry(|e| {
                !e.file_name()
                    .to_string_lossy()
                    .starts_with(crate::files::TEMP_PREFIX)
            })
            .filter_map(move |entry| match entry {
                Ok(e) if e.file_type().is_file() => Some(Ok(e.into_path())),
                Ok(e) if e.path_is_symlink() && !follow_links => {
                    links.push_link(e.path());
                    None
                }
                Ok(e) if e.file_type().is_dir() => None,
                Ok(e) => {
                    links.push_special(e.path());
                    None
                }
                Err(e) if dangling(&e) => {
                    links.push_link(e.path().unwrap_or(Path::new("")));
                    None
                }
                Err(e) => Some(Err(walk_error(e))),
            })
    })
}

/// A root that is a link to something other than a folder is walked as
/// its target, so that the store's "same file" check compares the file
/// that is written (a link to a folder keeps its name: the paths under it
/// are not links themselves).
fn resolve_root(root: &Path) -> PathBuf {
    let is_link = std::fs::symlink_metadata(root).is_ok_and(|m| m.file_type().is_symlink());
    if is_link && !root.is_dir() {
        if let Ok(target) = std::fs::canonicalize(root) {
            return target;
        }
    }
    root.to_path_buf()
}

/// A followed link whose target does not exist.
fn dangling(e: &walkdir::Error) -> bool {
    e.io_error()
        .is_some_and(|io| io.kind() == std::io::ErrorKind::NotFound)
        && e.path()
            .is_some_and(|p| std::fs::symlink_metadata(p).is_ok_and(|m| m.file_type().is_symlink()))
}

/// Counts the regular files under `roots` (for the progress bar's ETA).
pub(crate) fn count_files(roots: &[PathBuf], follow_links: bool) -> u64 {
    walk_files(roots, follow_links).count() as u64
}

/// A walk error as an item error, keeping the OS error's kind (the walker's
/// text names the path).
fn walk_error(e: walkdir::Error) -> ItemError {
    let location = e
        .path()
        .map_or_else(String::new, |p| p.display().to_string());
    let kind = e
        .io_error()
        .map_or(std::io::ErrorKind::Other, std::io::Error::kind);
    ItemError {
        location,
        error: StoreError::io("cannot walk", std::io::Error::new(kind, e)),
    }
}

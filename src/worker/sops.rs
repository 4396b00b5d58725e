//! SOPS files ([`crate::sops`]) as items of the re-wrap pipeline: the plan
//! for one file (which KMS entries to re-wrap), the [`WholeStore`] seam
//! through which a store reads a file whole and replaces it whole, and the
//! file tree's implementation of it.
//!
//! Per SOPS file (driven by `rewrap/sops.rs`, in the worker's loop):
//!
//! 1. read the file whole (at most [`crate::sops::MAX_SIZE`] bytes) and
//!    find its KMS entries ([`plan`]);
//! 2. ReEncrypt each entry to re-wrap, with the entry's own encryption
//!    context as source and destination context (the entries of several
//!    files in one batch of `kms_batch` requests, as for envelopes: one
//!    audit group commit per batch, each record naming its file), and
//!    write the new `arn`, `enc` and `created_at` values into a copy of the
//!    bytes;
//! 3. stage ([`WholeStore::stage_whole`]): take the file's lock, check that
//!    it is still as read, write the copy to a temporary file beside it;
//! 4. group commit ([`WholeStore::commit_whole`]): one `syncfs` for the
//!    batch, then per file: check again that it is as read (a file changed
//!    since is put aside, reported as `Conflict`, never overwritten), rename
//!    the temporary file over it; one more `syncfs`.
//!
//! A `kill -9` at any instant leaves the old file (and perhaps a
//! `.rewrap-tmp-*` file beside it, which walks skip) or the new one, and
//! both decrypt: the data key, values and MAC are the same. Which entries
//! are re-wrapped (per key group, or the top-level `kms` list):
//!
//! - an entry under the newest version of the target key is kept;
//! - an entry under a key that is not a source (`--from` given and not
//!   naming it) is left as it is, and so are all other master keys (age,
//!   PGP, other clouds), which the codecs do not even read;
//! - the first entry under a source key is re-wrapped to the target, in
//!   place, unless its group already has an entry under the target: a group
//!   gets the target once, never twice. The other source entries of that
//!   group are left as they are and reported as `redundant`: SOPS opens the
//!   file with the target entry (it tries each entry of a group in turn), and
//!   removing an entry would change the file's structure, which rewrap does
//!   not do (`sops updatekeys`, by someone with decrypt rights, removes
//!   them).

use super::failure::FailureKind;
use super::store::StoreError;
use super::target::{FromFilter, Target};
use super::tree::FileStore;
use crate::envelope::Slot;
use crate::sops::{KmsEntry, SopsError, SopsFile};
use serde::{Deserialize, Serialize};
use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A file read whole, and what the store needs to replace it only if it
/// is still as read.
pub struct Whole {
    /// The bytes as read.
    pub bytes: Vec<u8>,
    pub(super) seen: Seen,
}

/// What a whole read saw, to replace the item only if it is still so.
pub(super) enum Seen {
    /// The open file (locked from staging on) and its identity.
    File { file: Arc<File>, dev: u64, ino: u64 },
    /// The object's ETag / version.
    Object(object_store::UpdateVersion),
}

/// A new version of a file, written beside it, waiting for its group
/// commit.
pub struct Staged {
    pub(super) whole: Whole,
    pub(super) dest: Dest,
}

/// Where a staged version is.
pub(super) enum Dest {
    /// In a temporary file beside the file, renamed over it at the commit.
    File {
        path: PathBuf,
        temp: tempfile::NamedTempFile,
    },
    /// Already put (a conditional put is durable on return).
    Put,
}

/// Reading and replacing whole items, for SOPS files. A store that does not
/// offer it (`EnvelopeStore::whole` returns `None`) counts SOPS files as
/// `not_envelope`.
pub trait WholeStore<I>: Send + Sync {
    /// The item's bytes, if it is small enough to be a SOPS file
    /// ([`crate::sops::MAX_SIZE`]); `Ok(None)` otherwise.
    fn read_whole(&self, item: &I) -> Result<Option<Whole>, StoreError>;

    /// Takes the item's lock (bounded wait, then [`StoreError::Busy`]),
    /// checks it is still as `read` ([`StoreError::Conflict`] otherwise)
    /// and stages `bytes` as its new content.
    fn stage_whole(&self, item: &I, read: Whole, bytes: &[u8]) -> Result<Staged, StoreError>;

    /// Group commit of staged items: makes them durable, then puts each in
    /// place if the item is still as read. One result per staged item, in
    /// order.
    fn commit_whole(&self, staged: Vec<Staged>) -> Vec<Result<(), StoreError>>;
}

impl WholeStore<PathBuf> for FileStore {
    fn read_whole(&self, path: &PathBuf) -> Result<Option<Whole>, StoreError> {
        let file = self.open_for_whole(path)?;
        let meta = file
            .metadata()
            .map_err(|e| StoreError::io(format!("cannot stat {}", path.display()), e))?;
        if !meta.is_file() || meta.len() > crate::sops::MAX_SIZE {
            return Ok(None);
        }
        let bytes = read_all(&file, path)?;
        Ok(Some(Whole {
            bytes,
            seen: Seen::File {
                file: Arc::new(file),
                dev: meta.dev(),
                ino: meta.ino(),
            },
        }))
    }

    fn stage_whole(&self, path: &PathBuf, read: Whole, bytes: &[u8]) -> Result<Staged, StoreError> {
        let Seen::File { file, .. } = &read.seen else {
            return Err(StoreError::Conflict("read as an object".into()));
        };
        lock(file, path)?;
        unchanged(self.follow_links, path, &read)?;
        let io = |what: &str, e| StoreError::io(format!("{what} {}", path.display()), e);
        let dir = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        let mut temp = tempfile::Builder::new()
            .prefix(crate::files::TEMP_PREFIX)
            .suffix(".tmp")
            .tempfile_in(dir)
            .map_err(|e| io("cannot create a temporary file beside", e))?;
        let meta = file.metadata().map_err(|e| io("cannot stat", e))?;
        std::io::Write::write_all(&mut temp, bytes).map_err(|e| io("cannot write beside", e))?;
        temp.as_file()
            .set_permissions(meta.permissions())
            .map_err(|e| io("cannot set permissions beside", e))?;
        // Keep the owner where the caller may (root); otherwise the file
        // becomes the caller's, as any editor would leave it.
        let _ = std::os::unix::fs::fchown(temp.as_file(), Some(meta.uid()), Some(meta.gid()));
        Ok(Staged {
            whole: read,
            dest: Dest::File {
                path: path.clone(),
                temp,
            },
        })
    }

    fn commit_whole(&self, staged: Vec<Staged>) -> Vec<Result<(), StoreError>> {
        let temps: Vec<&File> = staged
            .iter()
            .filter_map(|s| match &s.dest {
                Dest::File { temp, .. } => Some(temp.as_file()),
                Dest::Put => None,
            })
            .collect();
        if let Err(e) = sync(&temps) {
            let why = e.to_string();
            return staged
                .iter()
                .map(|_| Err(StoreError::io(why.clone(), std::io::Error::other("sync"))))
                .collect();
        }
        let mut placed = Vec::with_capacity(staged.len());
        let mut held = Vec::with_capacity(staged.len());
        for s in staged {
            let Dest::File { path, temp } = s.dest else {
                placed.push(Ok(()));
                continue;
            };
            let r = unchanged(self.follow_links, &path, &s.whole).and_then(|()| {
                temp.persist(&path).map(drop).map_err(|e| {
                    StoreError::io(format!("cannot rename over {}", path.display()), e.error)
                })
            });
            if let Seen::File { file, .. } = s.whole.seen {
                held.push(file);
            }
            placed.push(r);
        }
        // The renames durable too, before the locks go (with `held`).
        let files: Vec<&File> = held.iter().map(|f| &**f).collect();
        if let Err(e) = sync(&files) {
            for r in placed.iter_mut().filter(|r| r.is_ok()) {
                *r = Err(StoreError::io(
                    "new version in place, sync failed",
                    std::io::Error::other(e.to_string()),
                ));
            }
        }
        placed
    }
}

impl FileStore {
    /// Opens a file for a whole read (no access-time update where allowed,
    /// never blocking on a FIFO).
    fn open_for_whole(&self, path: &Path) -> Result<File, StoreError> {
        let read_only = FileStore {
            read_only: true,
            follow_links: self.follow_links,
        };
        read_only.open(path)
    }
}

/// `syncfs` on the file system of each file (they are all in one walk), or
/// `fdatasync` of each where `syncfs` fails.
fn sync(files: &[&File]) -> Result<(), StoreError> {
    let mut synced: Vec<u64> = Vec::new();
    for f in files {
        let dev = f.metadata().map_or(0, |m| m.dev());
        if synced.contains(&dev) {
            continue;
        }
        if rustix::fs::syncfs(f).is_err() {
            for g in files {
                rustix::fs::fdatasync(g)
                    .map_err(|e| StoreError::io("fdatasync failed", e.into()))?;
            }
            return Ok(());
        }
        synced.push(dev);
    }
    Ok(())
}

/// The file's exclusive `flock`, waiting at most
/// [`super::LOCK_WAIT`] for another re-wrap.
fn lock(file: &File, path: &Path) -> Result<(), StoreError> {
    let deadline = std::time::Instant::now() + super::LOCK_WAIT;
    let mut pause = std::time::Duration::from_millis(5);
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(()),
            Err(std::fs::TryLockError::WouldBlock) => {
                let now = std::time::Instant::now();
                if now >= deadline {
                    return Err(StoreError::Busy);
                }
                std::thread::sleep(pause.min(deadline - now));
                pause = (pause * 2).min(std::time::Duration::from_millis(200));
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(StoreError::io(format!("cannot lock {}", path.display()), e))
            }
        }
    }
}

/// The path still names the inode read, and its bytes are still the ones
/// read: editors write in place or rename a new file over the old one.
fn unchanged(follow_links: bool, path: &Path, read: &Whole) -> Result<(), StoreError> {
    let Seen::File { file, dev, ino } = &read.seen else {
        return Err(StoreError::Conflict("read as an object".into()));
    };
    let now = if follow_links {
        std::fs::metadata(path)
    } else {
        std::fs::symlink_metadata(path)
    };
    let same = now.is_ok_and(|m| m.dev() == *dev && m.ino() == *ino);
    if !same || read_all(file, path)? != read.bytes {
        return Err(StoreError::Conflict(
            "the SOPS file changed since it was read: put aside, not overwritten".into(),
        ));
    }
    Ok(())
}

/// The whole file (which is at most `MAX_SIZE` bytes when read; a file
/// growing past it reads as changed).
fn read_all(file: &File, path: &Path) -> Result<Vec<u8>, StoreError> {
    let limit = crate::sops::MAX_SIZE as usize + 1;
    // Its size as stat says, and one byte to see it did not grow: a zeroed
    // 64 KiB buffer per read was 4% of a rotation of small files.
    let size = file.metadata().map_or(64 << 10, |m| m.len() as usize + 1);
    let mut buf = vec![0u8; size.clamp(1, limit)];
    let mut n = 0;
    loop {
        if n == buf.len() {
            if buf.len() >= limit {
                break;
            }
            buf.resize((buf.len() * 2).min(limit), 0);
        }
        let k = super::tree::read_at_full(file, &mut buf[n..], n as u64)
            .map_err(|e| StoreError::io(format!("cannot read {}", path.display()), e))?;
        if k == 0 {
            break;
        }
        n += k;
    }
    buf.truncate(n);
    Ok(buf)
}

/// One SOPS file in a re-wrap report.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct SopsReported {
    /// The file (path or object URL).
    pub path: String,
    /// `sops-yaml`, `sops-json`, `sops-dotenv`, `sops-ini` or
    /// `sops-binary`.
    pub format: String,
    /// `rotated`, `would_rotate`, `already_current`, `other_key` or
    /// `failed`.
    pub action: String,
    /// KMS entries re-wrapped to the target (or that a dry run would).
    pub rewrapped: u32,
    /// KMS entries already under the newest version of the target.
    pub current: u32,
    /// KMS entries under a source key left as they are because their group
    /// already has an entry under the target.
    pub redundant: u32,
    /// KMS entries under keys that are not sources, left as they are.
    pub other_key: u32,
}

/// What to do with one KMS entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum EntryAction {
    Current,
    OtherKey,
    Redundant,
    Rewrap,
}

/// The entry as a key slot, for the report's per-key tables and the
/// target's "is current" test.
pub(super) fn slot_of(entry: &KmsEntry) -> Slot {
    let blob = entry.blob();
    let key_version = crate::ciphertext_blob::peek(&blob).map_or(0, |b| b.key_version);
    Slot {
        sequence: 0,
        wrapped_at: 0,
        key_version,
        key_arn: entry.arn.value.clone(),
        wrapped_key: blob,
        wrapping: crate::envelope::SlotWrapping::Kms,
    }
}

/// Decides each entry of `file` (see the module docs).
pub(super) fn plan(file: &SopsFile, target: &Target, from: &FromFilter) -> Vec<EntryAction> {
    let slots: Vec<Slot> = file.entries.iter().map(slot_of).collect();
    let mut has_target: Vec<Option<usize>> = file
        .entries
        .iter()
        .zip(&slots)
        .filter(|(_, s)| target.is_current(s))
        .map(|(e, _)| e.group)
        .collect();
    file.entries
        .iter()
        .zip(&slots)
        .map(|(e, s)| {
            if target.is_current(s) {
                EntryAction::Current
            } else if !from.admits(&s.key_arn) {
                EntryAction::OtherKey
            } else if has_target.contains(&e.group) {
                EntryAction::Redundant
            } else {
                has_target.push(e.group);
                EntryAction::Rewrap
            }
        })
        .collect()
}

impl From<&SopsError> for FailureKind {
    fn from(_: &SopsError) -> FailureKind {
        FailureKind::CorruptEnvelope
    }
}

/// Reads `item` as a SOPS file (for the inventory): `Ok(None)` when it is
/// not one or the store reads no whole items.
pub(super) fn read_sops<S: super::EnvelopeStore>(
    store: &S,
    item: &S::Item,
    name: &str,
) -> Result<Option<SopsFile>, super::Failure> {
    let Some(whole) = store.whole() else {
        return Ok(None);
    };
    let read = match whole.read_whole(item) {
        Ok(Some(read)) => read,
        Ok(None) => return Ok(None),
        Err(e) => return Err(super::Failure::new(name, &e)),
    };
    crate::sops::parse(&read.bytes).map_err(|e| super::Failure::new(name, &e))
}

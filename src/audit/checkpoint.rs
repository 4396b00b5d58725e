//! The sealed checkpoint: the `seq` and `hash` of the last record, sealed
//! under the keystore's root key and rewritten with every group commit, so
//! that cutting records off the end of the trail is detected.
//!
//! The hash chain alone cannot tell a trail whose last records were deleted
//! from one that simply ends there. The checkpoint (`audit.checkpoint`
//! beside the trail) can: it is written under the trail's exclusive lock
//! right after the records, and only a holder of the root key can make one.
//!
//! ```text
//! offset  size  field
//! 0       12    AES-GCM nonce      (the root key's seal)
//! 12      128   sealed plaintext:  JSON {"seq":N,"hash":"<hex>"} padded with spaces
//! 140     16    AES-GCM tag
//! ```
//!
//! The additional authenticated data is `rewrap audit checkpoint v1`. The
//! file has a fixed length: it is first put in place whole (a temporary
//! file linked to its name, so a writer killed at any instant leaves none or
//! a whole one), then rewritten in place with one `pwrite`.
//! The checkpoint itself is never synced, and the trail is synced only by a
//! durable handle's group commit, after the checkpoint's `pwrite`: after a
//! power loss the checkpoint can name records the disk lost (records no
//! request was answered for, in a durable trail), which the next append
//! records as `AuditTrailCut` and verify reports: a loss is never hidden.

use super::{io_error, AuditError};
use crate::root::RootKey;
use serde::{Deserialize, Serialize};
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::Arc;

const AAD: &[u8] = b"rewrap audit checkpoint v1";
/// The padded plaintext length: room for any `seq` and a 64-digit hash.
const PLAIN_LEN: usize = 128;

/// The end of the trail as last committed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// `seq` of the last record.
    pub seq: u64,
    /// `hash` of the last record.
    pub hash: String,
}

/// A trail that ends before its checkpoint, or ends differently.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Cut {
    pub(super) found_seq: u64,
    pub(super) checkpoint: Checkpoint,
    /// Why the checkpoint could not be read, if that is the problem.
    pub(super) problem: Option<String>,
}

impl std::fmt::Display for Cut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(problem) = &self.problem {
            write!(f, "{problem}")
        } else if self.found_seq < self.checkpoint.seq {
            write!(
                f,
                "the trail ends at record {} but the sealed checkpoint records {}: the last {} record(s) were removed",
                self.found_seq,
                self.checkpoint.seq,
                self.checkpoint.seq - self.found_seq
            )
        } else {
            write!(
                f,
                "record {} does not have the hash the sealed checkpoint records (the end of the trail was rewritten)",
                self.checkpoint.seq
            )
        }
    }
}

impl Cut {
    pub(super) fn parameters(&self) -> std::collections::BTreeMap<String, String> {
        let mut params = std::collections::BTreeMap::from([
            ("CheckpointSeq".to_string(), self.checkpoint.seq.to_string()),
            ("CheckpointHash".to_string(), self.checkpoint.hash.clone()),
            ("FoundSeq".to_string(), self.found_seq.to_string()),
            ("ProcessId".to_string(), std::process::id().to_string()),
        ]);
        if let Some(problem) = &self.problem {
            params.insert("Problem".to_string(), problem.clone());
        }
        params
    }
}

/// Writes and checks the checkpoint of one trail.
pub(super) struct Checkpointer {
    path: PathBuf,
    root: Arc<dyn RootKey>,
    file: Option<File>,
}

/// The checkpoint file of the trail at `trail`.
pub(super) fn checkpoint_path(trail: &Path) -> PathBuf {
    trail.with_file_name("audit.checkpoint")
}

impl Checkpointer {
    pub(super) fn new(trail: &Path, root: Arc<dyn RootKey>) -> Checkpointer {
        Checkpointer {
            path: checkpoint_path(trail),
            root,
            file: None,
        }
    }

    /// Whether the checkpoint file exists.
    pub(super) fn exists(&self) -> bool {
        self.path.exists()
    }

    /// Rewrites the checkpoint. The caller holds the trail's lock.
    pub(super) fn write(&mut self, cp: &Checkpoint) -> Result<(), AuditError> {
        use std::os::unix::fs::FileExt;
        let mut plain = serde_json::to_vec(cp).expect("a checkpoint serializes");
        plain.resize(PLAIN_LEN, b' ');
        let sealed = self.root.seal(AAD, &plain).map_err(|e| AuditError::Io {
            path: self.path.clone(),
            source: std::io::Error::other(e.to_string()),
        })?;
        let file = match &mut self.file {
            Some(f) => f,
            None => self.file.insert(open_or_create(&self.path, &sealed)?),
        };
        file.write_all_at(&sealed, 0).map_err(io_error(&self.path))
    }

    /// Compares the end of the trail with the checkpoint; `None` if they
    /// agree, if the trail goes on past it (a writer died between its
    /// records and the checkpoint), or if there is no checkpoint yet.
    ///
    /// A checkpoint that does not authenticate (forged, or replaced to hide
    /// a cut) is reported as a cut from an unknown end (`seq` 0 in the
    /// parameters, the reason in `Problem`): it is never overwritten silently.
    pub(super) fn check(&self, seq: u64, hash: &str) -> Option<Cut> {
        let checkpoint = match read(&self.path, self.root.as_ref()) {
            Ok(cp) => cp?,
            Err(e) => {
                return Some(Cut {
                    found_seq: seq,
                    checkpoint: Checkpoint {
                        seq: 0,
                        hash: String::new(),
                    },
                    problem: Some(e.to_string()),
                })
            }
        };
        let cut = checkpoint.seq > seq || (checkpoint.seq == seq && checkpoint.hash != hash);
        cut.then_some(Cut {
            found_seq: seq,
            checkpoint,
            problem: None,
        })
    }
}

/// Opens the checkpoint at `path` for rewriting; if there is none, puts
/// one holding `sealed` in place whole (written to a temporary file in the
/// same folder, then linked to `path`), so that a writer killed at any
/// instant never leaves an empty or short checkpoint, which would read as
/// a forged one. Rewrites are one `pwrite` of the whole fixed length.
fn open_or_create(path: &Path, sealed: &[u8]) -> Result<File, AuditError> {
    use std::io::Write;
    match open_rw(path) {
        Err(AuditError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {}
        other => return other,
    }
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut temp = tempfile::Builder::new()
        .prefix(".audit.checkpoint.")
        .tempfile_in(dir)
        .map_err(io_error(path))?;
    temp.write_all(sealed).map_err(io_error(path))?;
    match temp.persist_noclobber(path) {
        Ok(file) => Ok(file),
        // Another writer put its own in place meanwhile: rewrite that one.
        Err(e) if e.error.kind() == std::io::ErrorKind::AlreadyExists => open_rw(path),
        Err(e) => Err(io_error(path)(e.error)),
    }
}

fn open_rw(path: &Path) -> Result<File, AuditError> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(io_error(path))
}

/// The checkpoint of the trail at `trail` sealed under `to` instead of
/// `from` (a move of the keystore's root); `None` if there is none.
pub(crate) fn reseal(
    trail: &Path,
    from: &dyn RootKey,
    to: &dyn RootKey,
) -> Result<Option<Vec<u8>>, AuditError> {
    let path = checkpoint_path(trail);
    let Some(cp) = read(&path, from)? else {
        return Ok(None);
    };
    let mut plain = serde_json::to_vec(&cp).expect("a checkpoint serializes");
    plain.resize(PLAIN_LEN, b' ');
    to.seal(AAD, &plain).map(Some).map_err(|e| AuditError::Io {
        path,
        source: std::io::Error::other(e.to_string()),
    })
}

/// Reads and unseals the checkpoint at `path`; `Ok(None)` if there is none.
pub(super) fn read(path: &Path, root: &dyn RootKey) -> Result<Option<Checkpoint>, AuditError> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_error(path)(e)),
    };
    let forged = || {
        AuditError::Checkpoint {
        problem: format!(
            "the sealed checkpoint {} does not authenticate (changed, or not made with this keystore's root key)",
            path.display()
        ),
    }
    };
    let plain = root.unseal(AAD, &bytes).map_err(|_| forged())?;
    serde_json::from_slice(plain.expose().trim_ascii_end())
        .map(Some)
        .map_err(|_| forged())
}

//! Moving a keystore from one root to another (`rewrap root move --to
//! ROOT`): everything sealed by the root (the keystore state, the
//! audit-signing keys, the audit checkpoint) is sealed again under the new
//! root. Key material does not change, so every ciphertext and envelope
//! made before the move still opens after it.
//!
//! # Crash safety
//! ```text
//! 1. root.next/           new root's file (root.key, root.uri or root.passphrase),
//!                         keystore.sealed, audit.signing, audit.checkpoint sealed
//!                         under it, and MANIFEST (the root file's name); each
//!                         file and the folder fsynced
//! 2. rename root.next -> root.moving, fsync the keystore folder   <- the switch
//! 3. rename each sealed file of root.moving over the old one; remove the old
//!    root's file; rename the new root's file in; fsync; remove MANIFEST and
//!    root.moving
//! ```
//! All of it under the keystore's exclusive lock and the audit trail's lock.
//! A `kill -9` before step 2 leaves the old root in force (`root.next` is
//! debris the next move removes); from step 2 on, the new one: whoever opens
//! the keystore next finishes step 3 first ([`finish_move`], idempotent).
//! Processes that had the keystore open before the move (`rewrap serve`)
//! hold the old root: restart them after it.

use super::{create, RootKey, RootKeyError, RootSpec, ROOT_FILES};
use crate::keystore::{Keystore, KeystoreError};
use std::fs::{self, File};
use std::io;
use std::path::Path;
use std::sync::Arc;

const STAGING: &str = "root.next";
const MOVING: &str = "root.moving";
const MANIFEST: &str = "MANIFEST";
/// The files sealed by the root, beside the root's own file.
const SEALED_FILES: [&str; 3] = ["keystore.sealed", "audit.signing", "audit.checkpoint"];

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> KeystoreError + '_ {
    move |source| KeystoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn sync_folder(dir: &Path) -> Result<(), KeystoreError> {
    File::open(dir)
        .and_then(|f| f.sync_all())
        .map_err(io_error(dir))
}

/// Whether a move was switched but not finished.
pub(crate) fn move_pending(dir: &Path) -> bool {
    dir.join(MOVING).exists()
}

/// Seals everything `store` has sealed under its root again under the root
/// `to` names, and switches the keystore to it; returns the new root.
pub fn relocate(store: &Keystore, to: &RootSpec) -> Result<Arc<dyn RootKey>, KeystoreError> {
    let dir = store.dir();
    let staging = dir.join(STAGING);
    match fs::remove_dir_all(&staging) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_error(&staging)(e)),
    }
    {
        use std::os::unix::fs::DirBuilderExt;
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&staging)
            .map_err(io_error(&staging))?;
    }
    let moved = stage_and_switch(store, &staging, to);
    if moved.is_err() && !move_pending(dir) {
        // Not switched: the old root stays in force and nothing is left behind.
        let _ = fs::remove_dir_all(&staging);
    }
    moved
}

/// Steps 1 to 3 of a move (see the module docs), `staging` made empty.
fn stage_and_switch(
    store: &Keystore,
    staging: &Path,
    to: &RootSpec,
) -> Result<Arc<dyn RootKey>, KeystoreError> {
    let dir = store.dir();
    let new_root = create(staging, to).map_err(|e| named_in(dir, staging, e))?;
    let root_file = ROOT_FILES
        .iter()
        .find(|f| staging.join(f).exists())
        .expect("create wrote the root's file");
    let _audit_lock = lock_audit(&dir.join("audit.log"))?;
    let old_root = store.root_key();
    store.with_resealed(new_root.as_ref(), |sealed| {
        super::write_new(&staging.join(SEALED_FILES[0]), &sealed)?;
        reseal_audit(dir, staging, old_root.as_ref(), new_root.as_ref())?;
        super::write_new(&staging.join(MANIFEST), root_file.as_bytes())?;
        sync_folder(staging)?;
        let moving = dir.join(MOVING);
        fs::rename(staging, &moving).map_err(io_error(&moving))?;
        sync_folder(dir)?;
        finish_move(dir)
    })?;
    Ok(new_root)
}

/// `e` naming the new root's file where the move puts it, not in `staging`.
fn named_in(dir: &Path, staging: &Path, e: RootKeyError) -> RootKeyError {
    let moved = |path: std::path::PathBuf| match path.strip_prefix(staging) {
        Ok(name) => dir.join(name),
        Err(_) => path,
    };
    match e {
        RootKeyError::Io { path, source } => RootKeyError::Io {
            path: moved(path),
            source,
        },
        RootKeyError::Invalid { path, problem } => RootKeyError::Invalid {
            path: moved(path),
            problem,
        },
        other => other,
    }
}

/// The audit trail's sealed files under `to`, into `staging`.
fn reseal_audit(
    dir: &Path,
    staging: &Path,
    from: &dyn RootKey,
    to: &dyn RootKey,
) -> Result<(), KeystoreError> {
    let trail = dir.join("audit.log");
    let audit = |e: crate::audit::AuditError| KeystoreError::Io {
        path: trail.clone(),
        source: io::Error::other(e.to_string()),
    };
    if let Some(bytes) = crate::audit::reseal_signing_keys(&trail, from, to).map_err(audit)? {
        super::write_new(&staging.join(SEALED_FILES[1]), &bytes)?;
    }
    if let Some(bytes) = crate::audit::reseal_checkpoint(&trail, from, to).map_err(audit)? {
        super::write_new(&staging.join(SEALED_FILES[2]), &bytes)?;
    }
    Ok(())
}

/// Holds the audit trail's exclusive lock (writers wait) while the move runs.
fn lock_audit(trail: &Path) -> Result<Option<File>, KeystoreError> {
    use fs4::fs_std::FileExt;
    let file = match fs::OpenOptions::new().append(true).open(trail) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_error(trail)(e)),
    };
    file.lock_exclusive().map_err(io_error(trail))?;
    Ok(Some(file))
}

/// Step 3 of a switched move (see the module docs); safe to repeat after a
/// crash at any point of it. The caller holds the keystore's exclusive lock.
pub(crate) fn finish_move(dir: &Path) -> Result<(), KeystoreError> {
    let moving = dir.join(MOVING);
    let manifest = moving.join(MANIFEST);
    let root_file = match fs::read_to_string(&manifest) {
        Ok(name) => name,
        // Removed last but one: only the empty folder is left.
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return fs::remove_dir_all(&moving).map_err(io_error(&moving));
        }
        Err(e) => return Err(io_error(&manifest)(e)),
    };
    if !ROOT_FILES.contains(&root_file.as_str()) {
        return Err(KeystoreError::RootKey(RootKeyError::Invalid {
            path: manifest,
            problem: format!("names no root file ({root_file:?})"),
        }));
    }
    for name in SEALED_FILES {
        rename_if_there(&moving.join(name), &dir.join(name))?;
    }
    for old in ROOT_FILES.iter().filter(|f| **f != root_file) {
        match fs::remove_file(dir.join(old)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_error(&dir.join(old))(e)),
        }
    }
    rename_if_there(&moving.join(&root_file), &dir.join(&root_file))?;
    sync_folder(dir)?;
    fs::remove_file(&manifest).map_err(io_error(&manifest))?;
    fs::remove_dir(&moving).map_err(io_error(&moving))?;
    sync_folder(dir)
}

fn rename_if_there(from: &Path, to: &Path) -> Result<(), KeystoreError> {
    match fs::rename(from, to) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_error(to)(e)),
    }
}

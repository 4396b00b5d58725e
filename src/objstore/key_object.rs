//! Key objects: the strict read and the compare-and-swap write that
//! re-wrapping an object-store envelope needs (conditional puts on ETag or
//! version; a file lock and a rename for `file://` stores).

use super::{ObjectLocation, ObjectStoreError};
use crate::envelope::{EnvelopeError, ParsedHeader, MAGIC};
use object_store::path::Path as ObjectPath;
use object_store::{PutMode, PutOptions, PutPayload, UpdateVersion};
use std::io::{Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// Largest key object read (the largest header and both slots, rounded up):
/// anything bigger is not a key object this code wrote.
const MAX_KEY_OBJECT: u64 = 16 * 1024;

/// What a read or write of a key object saw: its ETag / version and bytes.
#[derive(Debug, Clone)]
pub struct KeyObjectVersion {
    update: UpdateVersion,
    bytes: Vec<u8>,
}

impl KeyObjectVersion {
    /// The key object's bytes as read or written.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The key object's bytes as read or written.
    pub fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }

    /// The ETag the store gave this version, if any.
    pub fn e_tag(&self) -> Option<&str> {
        self.update.e_tag.as_deref()
    }
}

/// Reads and strictly parses a key object: `Ok(None)` if it does not start
/// with the envelope magic.
pub(crate) fn read_key_object(
    loc: &ObjectLocation,
    path: &ObjectPath,
) -> Result<Option<(ParsedHeader, KeyObjectVersion)>, ObjectStoreError> {
    let what = path.as_ref();
    let (bytes, update) = loc
        .block_on(async {
            let got = loc.store.get(path).await?;
            let update = UpdateVersion {
                e_tag: got.meta.e_tag.clone(),
                version: got.meta.version.clone(),
            };
            if got.meta.size > MAX_KEY_OBJECT {
                return Ok((None, update));
            }
            Ok((Some(got.bytes().await?.to_vec()), update))
        })
        .map_err(|e: object_store::Error| ObjectStoreError::from_store(what, e))?;
    let Some(bytes) = bytes else {
        return Err(EnvelopeError::CorruptHeader("key object too large").into());
    };
    if bytes.len() < MAGIC.len() || bytes[..MAGIC.len()] != MAGIC {
        return Ok(None);
    }
    let parsed = ParsedHeader::parse(&bytes)?;
    if bytes.len() != parsed.total_len() {
        return Err(EnvelopeError::CorruptHeader("key object has trailing bytes").into());
    }
    Ok(Some((parsed, KeyObjectVersion { update, bytes })))
}

/// Puts `bytes` at `path` if the object is still as `expected` says;
/// returns the new version. [`ObjectStoreError::Conflict`] when it is not.
pub(crate) fn put_key_object_if_unchanged(
    loc: &ObjectLocation,
    path: &ObjectPath,
    bytes: Vec<u8>,
    expected: &KeyObjectVersion,
) -> Result<KeyObjectVersion, ObjectStoreError> {
    if let Some(local) = &loc.local {
        let file = local
            .path_to_filesystem(path)
            .map_err(|e| ObjectStoreError::from_store(path.as_ref(), e))?;
        local_compare_and_swap(&file, &expected.bytes, &bytes)?;
        let update = UpdateVersion {
            e_tag: None,
            version: None,
        };
        return Ok(KeyObjectVersion { update, bytes });
    }
    let opts = PutOptions {
        mode: PutMode::Update(expected.update.clone()),
        ..Default::default()
    };
    let payload = PutPayload::from(bytes.clone());
    let r = loc
        .block_on(loc.store.put_opts(path, payload, opts))
        .map_err(|e| match e {
            // The key object vanished since it was read: also a conflict.
            object_store::Error::NotFound { .. } => ObjectStoreError::Conflict(path.to_string()),
            e => ObjectStoreError::from_store(path.as_ref(), e),
        })?;
    let update = UpdateVersion {
        e_tag: r.e_tag,
        version: r.version,
    };
    Ok(KeyObjectVersion { update, bytes })
}

/// The conditional update object_store's local store lacks: under an
/// exclusive lock on the file, check that the path still names the locked
/// file and that it holds `expected`, then replace it by a synced temporary
/// file (rename). A writer that waited for the lock then sees another inode
/// at the path and reports a conflict.
fn local_compare_and_swap(
    file: &Path,
    expected: &[u8],
    new: &[u8],
) -> Result<(), ObjectStoreError> {
    let what = file.display().to_string();
    let io = |e: std::io::Error| ObjectStoreError::io(&what, e);
    let mut f = match std::fs::File::open(file) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(ObjectStoreError::Conflict(what.clone()))
        }
        Err(e) => return Err(io(e)),
    };
    f.lock().map_err(io)?;
    let now = std::fs::metadata(file).map_err(io)?;
    if now.ino() != f.metadata().map_err(io)?.ino() {
        return Err(ObjectStoreError::Conflict(what));
    }
    let mut current = Vec::with_capacity(expected.len());
    f.read_to_end(&mut current).map_err(io)?;
    if current != expected {
        return Err(ObjectStoreError::Conflict(what));
    }
    let dir = file.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::Builder::new()
        .prefix(crate::files::TEMP_PREFIX)
        .tempfile_in(dir)
        .map_err(io)?;
    tmp.write_all(new).map_err(io)?;
    tmp.as_file().sync_all().map_err(io)?;
    tmp.persist(file).map_err(|e| io(e.error))?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io)?;
    Ok(())
}

//! The blob-store source of the rotation pipeline: an [`EnvelopeStore`]
//! over key objects, with conditional puts as compare-and-swap.

use super::progress::Ticket;
use super::{BlobError, BlobLocation};
use crate::envelope::{EnvelopeError, ParsedHeader, MAGIC, SLOT_SIZE};
use crate::rotate::{EnvelopeStore, StoreError};
use object_store::path::Path as ObjectPath;
use object_store::{PutMode, PutOptions, PutPayload, UpdateVersion};
use std::io::{Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

/// Largest key object read (the largest header and both slots, rounded up):
/// anything bigger is not a key object this code wrote.
const MAX_KEY_OBJECT: u64 = 16 * 1024;

/// One blob as the pipeline sees it: its name and the path of its key
/// object. Dropping it tells the checkpoint that the pipeline is done with
/// it.
pub struct BlobItem {
    /// The blob name, relative to the location's prefix.
    pub name: String,
    path: ObjectPath,
    _ticket: Option<Ticket>,
}

impl BlobItem {
    pub(crate) fn new(name: String, path: ObjectPath, ticket: Option<Ticket>) -> BlobItem {
        BlobItem {
            name,
            path,
            _ticket: ticket,
        }
    }
}

/// What a read or write of a key object saw: its ETag / version and bytes.
#[derive(Debug, Clone)]
pub struct BlobVersion {
    update: UpdateVersion,
    bytes: Vec<u8>,
}

/// Key objects under one location as an [`EnvelopeStore`]. Each
/// `write_slots` is one conditional put of the whole (small) key object, so
/// writes are atomic and durable on return and the pipeline writes the new
/// slot and wipes the old one at once. Bodies are never read or written.
pub struct BlobEnvelopeStore<'a> {
    loc: &'a BlobLocation,
    conflicts: AtomicU64,
}

impl<'a> BlobEnvelopeStore<'a> {
    /// The key objects of `loc`.
    pub fn new(loc: &'a BlobLocation) -> BlobEnvelopeStore<'a> {
        BlobEnvelopeStore {
            loc,
            conflicts: AtomicU64::new(0),
        }
    }

    /// Conditional writes refused so far because another writer was first.
    pub fn conflicts(&self) -> u64 {
        self.conflicts.load(Ordering::Relaxed)
    }

    fn store_error(&self, item: &BlobItem, e: BlobError) -> StoreError {
        match e {
            BlobError::Conflict(_) => {
                self.conflicts.fetch_add(1, Ordering::Relaxed);
                StoreError::Conflict(format!(
                    "{}: the key object changed since it was read",
                    self.display(item)
                ))
            }
            BlobError::Format(e) => StoreError::Format(e),
            other => StoreError::Io(other.to_string()),
        }
    }
}

/// Reads and strictly parses a key object: `Ok(None)` if it does not start
/// with the envelope magic.
pub(crate) fn read_key_object(
    loc: &BlobLocation,
    path: &ObjectPath,
) -> Result<Option<(ParsedHeader, BlobVersion)>, BlobError> {
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
        .map_err(|e: object_store::Error| BlobError::from_store(what, e))?;
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
    Ok(Some((parsed, BlobVersion { update, bytes })))
}

/// Puts `bytes` at `path` if the object is still as `expected` says;
/// returns the new version. [`BlobError::Conflict`] when it is not.
fn put_if_unchanged(
    loc: &BlobLocation,
    path: &ObjectPath,
    bytes: Vec<u8>,
    expected: &BlobVersion,
) -> Result<BlobVersion, BlobError> {
    if let Some(local) = &loc.local {
        let file = local
            .path_to_filesystem(path)
            .map_err(|e| BlobError::from_store(path.as_ref(), e))?;
        local_compare_and_swap(&file, &expected.bytes, &bytes)?;
        let update = UpdateVersion {
            e_tag: None,
            version: None,
        };
        return Ok(BlobVersion { update, bytes });
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
            object_store::Error::NotFound { .. } => BlobError::Conflict(path.to_string()),
            e => BlobError::from_store(path.as_ref(), e),
        })?;
    let update = UpdateVersion {
        e_tag: r.e_tag,
        version: r.version,
    };
    Ok(BlobVersion { update, bytes })
}

impl EnvelopeStore for BlobEnvelopeStore<'_> {
    type Item = BlobItem;
    type Version = BlobVersion;

    fn display(&self, item: &BlobItem) -> String {
        self.loc.display_name(&item.name)
    }

    fn read_header(
        &self,
        item: &BlobItem,
    ) -> Result<Option<(ParsedHeader, BlobVersion)>, StoreError> {
        read_key_object(self.loc, &item.path).map_err(|e| match e {
            BlobError::Format(e) => StoreError::Format(e),
            e => StoreError::Io(format!("{}: {e}", self.display(item))),
        })
    }

    fn write_slots(
        &self,
        item: &BlobItem,
        writes: &[(usize, &[u8; SLOT_SIZE])],
        expected: &BlobVersion,
    ) -> Result<BlobVersion, StoreError> {
        let mut bytes = expected.bytes.clone();
        let parsed = ParsedHeader::parse(&bytes).map_err(StoreError::Format)?;
        for (index, slot) in writes {
            let at = parsed.header.slot_offset(*index) as usize;
            bytes[at..at + SLOT_SIZE].copy_from_slice(&slot[..]);
        }
        put_if_unchanged(self.loc, &item.path, bytes, expected)
            .map_err(|e| self.store_error(item, e))
    }

    fn commit(&self, _written: &[&BlobVersion]) -> Result<(), StoreError> {
        // Every conditional put is durable when it returns.
        Ok(())
    }

    fn atomic_writes(&self) -> bool {
        true
    }
}

/// The conditional update object_store's local store lacks: under an
/// exclusive lock on the file, check that the path still names the locked
/// file and that it holds `expected`, then replace it by a synced temporary
/// file (rename). A writer that waited for the lock then sees another inode
/// at the path and reports a conflict.
fn local_compare_and_swap(file: &Path, expected: &[u8], new: &[u8]) -> Result<(), BlobError> {
    let what = file.display().to_string();
    let io = |e: std::io::Error| BlobError::Store(format!("{what}: {e}"));
    let mut f = match std::fs::File::open(file) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(BlobError::Conflict(what.clone()))
        }
        Err(e) => return Err(io(e)),
    };
    f.lock().map_err(io)?;
    let now = std::fs::metadata(file).map_err(io)?;
    if now.ino() != f.metadata().map_err(io)?.ino() {
        return Err(BlobError::Conflict(what));
    }
    let mut current = Vec::with_capacity(expected.len());
    f.read_to_end(&mut current).map_err(io)?;
    if current != expected {
        return Err(BlobError::Conflict(what));
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

impl BlobVersion {
    /// The key object's bytes as read or written.
    pub fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }

    /// The ETag the store gave this version, if any.
    pub fn e_tag(&self) -> Option<&str> {
        self.update.e_tag.as_deref()
    }
}

//! The seam between the re-wrap protocol and where envelopes live: the
//! [`EnvelopeStore`] trait (read, compare-and-swap slot writes, group
//! commit) and its errors.

use crate::envelope::{EnvelopeError, ParsedHeader, SLOT_SIZE};
use crate::objstore::ObjectStoreError;

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
    /// The local storage failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done, and to what.
        context: String,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The object store failed.
    #[error("{context}: {source}")]
    Object {
        /// The object (or what was being done).
        context: String,
        /// What the store said (boxed: items in flight carry their errors).
        source: Box<ObjectStoreError>,
    },
    /// Another writer holds the item's lock. The pipeline puts the item
    /// aside and asks again, waiting, once it holds no lock itself.
    #[error("locked by another writer")]
    Busy,
}

impl StoreError {
    /// An I/O failure while doing `context`.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> StoreError {
        StoreError::Io {
            context: context.into(),
            source,
        }
    }
}

/// An item a source could not even list (walk error, permission denied).
#[derive(Debug)]
pub struct ItemError {
    /// Where.
    pub location: String,
    /// Why.
    pub error: StoreError,
}

/// A source of envelopes the re-wrap pipeline can re-wrap in place.
///
/// Implementations: [`super::FileStore`] (files on a local file system)
/// and [`super::ObjectEnvelopeStore`] (key objects in an object store, with
/// the ETag as its [`EnvelopeStore::Version`], conditional puts for
/// [`EnvelopeStore::write_slots`], and [`EnvelopeStore::atomic_writes`]
/// returning true).
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
    /// instead of waiting for another writer's lock; with `wait` it waits a
    /// bounded time (for files, [`crate::worker::LOCK_WAIT`]) and then
    /// returns [`StoreError::Busy`]: a lock held forever never stalls a run.
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

    /// Whole-item reads and replacements, for SOPS files
    /// ([`super::WholeStore`]); `None` (the default): SOPS files are
    /// counted as `not_envelope`.
    fn whole(&self) -> Option<&dyn super::WholeStore<Self::Item>> {
        None
    }
}

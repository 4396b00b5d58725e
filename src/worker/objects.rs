//! The object-store source of the worker: key objects under a location as
//! an [`EnvelopeStore`] (conditional puts as compare-and-swap), and the
//! listing that feeds them to the pool, by shard and after the checkpoint.

use super::checkpoint::{Shard, Ticket, Tracker};
use super::store::{EnvelopeStore, ItemError, StoreError};
use crate::envelope::{ParsedHeader, SLOT_SIZE};
use crate::objstore::{
    put_key_object_if_unchanged, read_key_object, KeyObjectVersion, ObjectLocation,
    ObjectStoreError, KEY_SUFFIX,
};
use futures::StreamExt;
use object_store::path::Path as ObjectPath;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// One object as the pipeline sees it: its name and the path of its key
/// object. Dropping it tells the checkpoint that the pipeline is done with
/// it.
pub struct ObjectItem {
    /// The object name, relative to the location's prefix.
    pub name: String,
    path: ObjectPath,
    _ticket: Option<Ticket>,
}

/// Key objects under one location as an [`EnvelopeStore`]. Each
/// `write_slots` is one conditional put of the whole (small) key object, so
/// writes are atomic and durable on return and the pipeline writes the new
/// slot and wipes the old one at once. Bodies are never read or written.
pub struct ObjectEnvelopeStore<'a> {
    loc: &'a ObjectLocation,
    conflicts: AtomicU64,
}

impl<'a> ObjectEnvelopeStore<'a> {
    /// The key objects of `loc`.
    pub fn new(loc: &'a ObjectLocation) -> ObjectEnvelopeStore<'a> {
        ObjectEnvelopeStore {
            loc,
            conflicts: AtomicU64::new(0),
        }
    }

    /// Conditional writes refused so far because another writer was first.
    pub fn conflicts(&self) -> u64 {
        self.conflicts.load(Ordering::Relaxed)
    }

    fn store_error(&self, item: &ObjectItem, e: ObjectStoreError) -> StoreError {
        match e {
            ObjectStoreError::Conflict(_) => {
                self.conflicts.fetch_add(1, Ordering::Relaxed);
                StoreError::Conflict(format!(
                    "{}: the key object changed since it was read",
                    self.display(item)
                ))
            }
            ObjectStoreError::Format(e) => StoreError::Format(e),
            source => StoreError::Object {
                context: self.display(item),
                source: Box::new(source),
            },
        }
    }
}

impl EnvelopeStore for ObjectEnvelopeStore<'_> {
    type Item = ObjectItem;
    type Version = KeyObjectVersion;

    fn display(&self, item: &ObjectItem) -> String {
        self.loc.display_name(&item.name)
    }

    fn read_header(
        &self,
        item: &ObjectItem,
    ) -> Result<Option<(ParsedHeader, KeyObjectVersion)>, StoreError> {
        read_key_object(self.loc, &item.path).map_err(|e| match e {
            ObjectStoreError::Format(e) => StoreError::Format(e),
            source => StoreError::Object {
                context: self.display(item),
                source: Box::new(source),
            },
        })
    }

    fn write_slots(
        &self,
        item: &ObjectItem,
        writes: &[(usize, &[u8; SLOT_SIZE])],
        expected: &KeyObjectVersion,
    ) -> Result<KeyObjectVersion, StoreError> {
        let mut bytes = expected.bytes().to_vec();
        let parsed = ParsedHeader::parse(&bytes).map_err(StoreError::Format)?;
        for (index, slot) in writes {
            let at = parsed.header.slot_offset(*index) as usize;
            bytes[at..at + SLOT_SIZE].copy_from_slice(&slot[..]);
        }
        put_key_object_if_unchanged(self.loc, &item.path, bytes, expected)
            .map_err(|e| self.store_error(item, e))
    }

    fn commit(&self, _written: &[&KeyObjectVersion]) -> Result<(), StoreError> {
        // Every conditional put is durable when it returns.
        Ok(())
    }

    fn atomic_writes(&self) -> bool {
        true
    }
}

/// Lists the key objects under `loc` (after the checkpoint, in this shard)
/// as pipeline items, lazily: a task on the location's runtime pages
/// through the listing into a bounded queue.
pub(crate) fn list_items(
    loc: &ObjectLocation,
    shard: Option<Shard>,
    tracker: &Tracker,
) -> impl Iterator<Item = Result<ObjectItem, ItemError>> + Send {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Result<(String, ObjectPath), ItemError>>(1024);
    let store = Arc::clone(&loc.store);
    let prefix = (!loc.prefix.as_ref().is_empty()).then(|| loc.prefix.clone());
    let offset = tracker.offset().map(ObjectPath::from);
    let url = loc.url().to_string();
    let names = NameOf {
        prefix: loc.prefix.as_ref().to_string(),
    };
    let listing_tracker = tracker.clone();
    loc.rt.spawn(async move {
        let mut listing = match &offset {
            Some(o) => store.list_with_offset(prefix.as_ref(), o),
            None => store.list(prefix.as_ref()),
        };
        while let Some(meta) = listing.next().await {
            let item = match meta {
                Ok(meta) => {
                    let Some(name) = names.name(&meta.location) else {
                        continue;
                    };
                    if !shard.is_none_or(|s| s.admits(&name)) {
                        continue;
                    }
                    Ok((name, meta.location))
                }
                Err(e) => {
                    listing_tracker.listing_failed();
                    Err(ItemError {
                        location: url.clone(),
                        error: StoreError::Object {
                            context: "listing failed".into(),
                            source: Box::new(ObjectStoreError::from_store(&url, e)),
                        },
                    })
                }
            };
            let stop = item.is_err();
            if tx.send(item).await.is_err() || stop {
                break;
            }
        }
    });
    let tracker = tracker.clone();
    std::iter::from_fn(move || rx.blocking_recv()).map(move |r| {
        r.map(|(name, path)| {
            let ticket = tracker.ticket(path.as_ref());
            ObjectItem {
                name,
                path,
                _ticket: ticket,
            }
        })
    })
}

/// Object names of key-object paths under a prefix.
struct NameOf {
    prefix: String,
}

impl NameOf {
    fn name(&self, path: &ObjectPath) -> Option<String> {
        let body = path.as_ref().strip_suffix(KEY_SUFFIX)?;
        let rel = if self.prefix.is_empty() {
            body
        } else {
            body.strip_prefix(&self.prefix)?.strip_prefix('/')?
        };
        (!rel.is_empty()).then(|| rel.to_string())
    }
}

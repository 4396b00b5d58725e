//! SOPS files in object stores: a second pass of an object-store run over
//! the objects that are neither key objects nor envelope bodies, each read
//! whole and, if it is a SOPS file, replaced by one conditional put (on the
//! ETag / version it was read with; a `file://` location is a folder of
//! files and takes the file tree's temporary file, group commit and rename).
//!
//! The pass ignores the checkpoint (it re-reads every candidate each run;
//! SOPS objects already under the target cost one GET and no write) and
//! counts only SOPS objects: plain objects that turn out not to be SOPS
//! files are not added to `scanned` or `not_envelope`, which for object
//! stores count key objects.

use super::checkpoint::Shard;
use super::sops::{Dest, Seen, Staged, Whole, WholeStore};
use super::store::{EnvelopeStore, ItemError, StoreError};
use super::tree::FileStore;
use super::{RewrapOptions, RewrapReport};
use crate::envelope::{ParsedHeader, SLOT_SIZE};
use crate::kms::Kms;
use crate::objstore::{ObjectLocation, ObjectStoreError, KEY_SUFFIX};
use futures::StreamExt;
use object_store::path::Path as ObjectPath;
use object_store::{PutMode, PutOptions, PutPayload, UpdateVersion};
use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::Arc;

/// A plain object that may be a SOPS file.
pub struct SopsObject {
    name: String,
    path: ObjectPath,
}

/// The plain objects of a location as a store the pipeline can run over:
/// no envelope headers, whole reads and conditional puts.
struct SopsObjectStore<'a> {
    loc: &'a ObjectLocation,
    files: FileStore,
}

/// Candidates whose key object may still come in the listing, at most.
const PENDING: usize = 4096;

/// The SOPS pass of an object-store re-wrap (see the module docs).
pub(super) fn rewrap(
    kms: &dyn Kms,
    loc: &ObjectLocation,
    shard: Option<Shard>,
    opts: &RewrapOptions,
) -> Result<RewrapReport, crate::error::KmsError> {
    let store = SopsObjectStore {
        loc,
        files: FileStore {
            read_only: opts.dry_run,
            follow_links: false,
        },
    };
    let mut opts = opts.clone();
    opts.expected_items = 0;
    let mut report = super::rewrap_items(kms, &store, list(loc, shard), &opts)?;
    report.scanned -= report.not_envelope;
    report.not_envelope = 0;
    Ok(report)
}

/// The SOPS pass of an object-store inventory.
pub(super) fn inventory(
    loc: &ObjectLocation,
    shard: Option<Shard>,
    jobs: usize,
) -> Result<super::Inventory, crate::error::KmsError> {
    let store = SopsObjectStore {
        loc,
        files: FileStore {
            read_only: true,
            follow_links: false,
        },
    };
    let mut inv = super::inventory_items(None, &store, list(loc, shard), None, jobs)?;
    inv.scanned -= inv.not_envelope;
    inv.not_envelope = 0;
    Ok(inv)
}

/// Lists the objects under `loc` that are not key objects, not bodies of
/// envelopes (a body's key object follows it in the listing, a few names
/// later at most, and removes it from the pending candidates) and at most
/// [`crate::sops::MAX_SIZE`] bytes.
fn list(
    loc: &ObjectLocation,
    shard: Option<Shard>,
) -> impl Iterator<Item = Result<SopsObject, ItemError>> + Send {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Result<SopsObject, ItemError>>(1024);
    let store = Arc::clone(&loc.store);
    let prefix = (!loc.prefix.as_ref().is_empty()).then(|| loc.prefix.clone());
    let base = loc.prefix.as_ref().to_string();
    let url = loc.url().to_string();
    loc.rt.spawn(async move {
        let mut listing = store.list(prefix.as_ref());
        let mut pending: VecDeque<(ObjectPath, String)> = VecDeque::new();
        while let Some(meta) = listing.next().await {
            let meta = match meta {
                Ok(meta) => meta,
                Err(e) => {
                    let _ = tx
                        .send(Err(ItemError {
                            location: url.clone(),
                            error: StoreError::Object {
                                context: "listing failed".into(),
                                source: Box::new(ObjectStoreError::from_store(&url, e)),
                            },
                        }))
                        .await;
                    return;
                }
            };
            let p = meta.location.as_ref().to_string();
            let mut ready = Vec::new();
            while pending
                .front()
                .is_some_and(|(c, _)| p.as_str() > format!("{c}{KEY_SUFFIX}").as_str())
            {
                ready.extend(pending.pop_front());
            }
            if let Some(body) = p.strip_suffix(KEY_SUFFIX) {
                pending.retain(|(c, _)| c.as_ref() != body);
            } else if meta.size <= crate::sops::MAX_SIZE && meta.size > 0 {
                let rel = if base.is_empty() {
                    Some(p.as_str())
                } else {
                    p.strip_prefix(&base).and_then(|r| r.strip_prefix('/'))
                };
                if let Some(name) = rel.filter(|n| shard.is_none_or(|s| s.admits(n))) {
                    pending.push_back((meta.location.clone(), name.to_string()));
                }
                if pending.len() > PENDING {
                    ready.extend(pending.pop_front());
                }
            }
            for (path, name) in ready {
                if tx.send(Ok(SopsObject { name, path })).await.is_err() {
                    return;
                }
            }
        }
        for (path, name) in pending {
            if tx.send(Ok(SopsObject { name, path })).await.is_err() {
                return;
            }
        }
    });
    std::iter::from_fn(move || rx.blocking_recv())
}

impl SopsObjectStore<'_> {
    /// The file behind `item` in a `file://` location.
    fn local_path(&self, item: &SopsObject) -> Option<Result<PathBuf, StoreError>> {
        let local = self.loc.local.as_ref()?;
        Some(
            local
                .path_to_filesystem(&item.path)
                .map_err(|e| self.error(item, ObjectStoreError::from_store(item.path.as_ref(), e))),
        )
    }

    fn error(&self, item: &SopsObject, e: ObjectStoreError) -> StoreError {
        match e {
            ObjectStoreError::Conflict(_) => StoreError::Conflict(format!(
                "{}: the object changed since it was read: put aside, not overwritten",
                self.display(item)
            )),
            source => StoreError::Object {
                context: self.display(item),
                source: Box::new(source),
            },
        }
    }
}

impl EnvelopeStore for SopsObjectStore<'_> {
    type Item = SopsObject;
    type Version = ();

    fn display(&self, item: &SopsObject) -> String {
        self.loc.display_name(&item.name)
    }

    fn read_header(&self, _: &SopsObject) -> Result<Option<(ParsedHeader, ())>, StoreError> {
        Ok(None)
    }

    fn write_slots(
        &self,
        item: &SopsObject,
        _: &[(usize, &[u8; SLOT_SIZE])],
        (): &(),
    ) -> Result<(), StoreError> {
        Err(StoreError::Conflict(format!(
            "{}: not an envelope",
            self.display(item)
        )))
    }

    fn commit(&self, _: &[&()]) -> Result<(), StoreError> {
        Ok(())
    }

    fn whole(&self) -> Option<&dyn WholeStore<SopsObject>> {
        Some(self)
    }
}

impl WholeStore<SopsObject> for SopsObjectStore<'_> {
    fn read_whole(&self, item: &SopsObject) -> Result<Option<Whole>, StoreError> {
        if let Some(path) = self.local_path(item) {
            return self.files.read_whole(&path?);
        }
        let got = self
            .loc
            .block_on(async {
                let got = self.loc.store.get(&item.path).await?;
                let update = UpdateVersion {
                    e_tag: got.meta.e_tag.clone(),
                    version: got.meta.version.clone(),
                };
                if got.meta.size > crate::sops::MAX_SIZE {
                    return Ok(None);
                }
                Ok(Some((got.bytes().await?.to_vec(), update)))
            })
            .map_err(|e: object_store::Error| {
                self.error(item, ObjectStoreError::from_store(item.path.as_ref(), e))
            })?;
        Ok(got.map(|(bytes, update)| Whole {
            bytes,
            seen: Seen::Object(update),
        }))
    }

    fn stage_whole(
        &self,
        item: &SopsObject,
        read: Whole,
        bytes: &[u8],
    ) -> Result<Staged, StoreError> {
        if let Some(path) = self.local_path(item) {
            return self.files.stage_whole(&path?, read, bytes);
        }
        let Seen::Object(update) = &read.seen else {
            return Err(StoreError::Conflict("read as a file".into()));
        };
        let opts = PutOptions {
            mode: PutMode::Update(update.clone()),
            ..Default::default()
        };
        let payload = PutPayload::from(bytes.to_vec());
        self.loc
            .block_on(self.loc.store.put_opts(&item.path, payload, opts))
            .map_err(|e| match e {
                object_store::Error::NotFound { .. } => {
                    self.error(item, ObjectStoreError::Conflict(item.path.to_string()))
                }
                e => self.error(item, ObjectStoreError::from_store(item.path.as_ref(), e)),
            })?;
        Ok(Staged {
            whole: read,
            dest: Dest::Put,
        })
    }

    fn commit_whole(&self, staged: Vec<Staged>) -> Vec<Result<(), StoreError>> {
        // Puts are durable on return; files take the tree's group commit.
        if self.loc.local.is_some() {
            return self.files.commit_whole(staged);
        }
        staged.iter().map(|_| Ok(())).collect()
    }
}

//! Shards of an object-store location, and the checkpoint that lets a
//! killed run over it resume.
//!
//! Stores list keys in lexicographic order (S3, Azure, GCS). Each listed
//! key object gets a sequence number; the pipeline drops a
//! [`super::ObjectItem`] (and with it its [`Ticket`]) when
//! it is done with it (counted in the report), and the [`Tracker`] advances
//! a watermark over the sequence numbers of finished items. Every N
//! finished items the key at the watermark is written to the checkpoint
//! file (temporary file, fsync, rename): every key up to it is done. On
//! resume the listing starts after it. At most N + the objects in flight
//! are redone after a kill (re-wrapping them again finds them current).

use super::report::write_json;
use super::{ObjectWalkOptions, StartError};
use crate::objstore::ObjectLocation;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::{BTreeSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// One share of the objects of a location: shard `index` of `count`
/// (0-based). An object belongs to shard `h mod count`, where `h` is the
/// first 8 bytes (big-endian) of the SHA-256 of its object name: every worker
/// computes the same split with no coordination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    /// This shard, `0 ..= count - 1`.
    pub index: u32,
    /// Number of shards, at least 1.
    pub count: u32,
}

impl Shard {
    /// True when object `name` belongs to this shard.
    pub(crate) fn admits(self, name: &str) -> bool {
        let h = Sha256::digest(name.as_bytes());
        let mut first = [0u8; 8];
        first.copy_from_slice(&h[..8]);
        u64::from_be_bytes(first) % u64::from(self.count) == u64::from(self.index)
    }
}

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl std::str::FromStr for Shard {
    type Err = String;

    /// Parses `I/N` with `0 <= I < N`.
    fn from_str(s: &str) -> Result<Shard, String> {
        let bad = || format!("{s:?} is not a shard I/N with 0 <= I < N");
        let (i, n) = s.split_once('/').ok_or_else(bad)?;
        let index: u32 = i.trim().parse().map_err(|_| bad())?;
        let count: u32 = n.trim().parse().map_err(|_| bad())?;
        if count == 0 || index >= count {
            return Err(bad());
        }
        Ok(Shard { index, count })
    }
}

/// The checkpoint file's content (JSON).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Checkpoint {
    /// Format of this file, 1.
    pub format: u32,
    /// The location URL of the run.
    pub location: String,
    /// The shard of the run (`I/N`), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shard: Option<String>,
    /// Every key object up to and including this store path (in listing
    /// order) is done.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_key: Option<String>,
    /// Objects done up to `last_key`, over all runs of this pass.
    pub objects: u64,
    /// True when the pass finished: the next run starts a new pass.
    pub complete: bool,
    /// When this was written (RFC 3339).
    pub updated_at: String,
}

impl Checkpoint {
    /// Reads the checkpoint at `path`; `Ok(None)` if there is none.
    pub fn load(path: &Path) -> Result<Option<Checkpoint>, StartError> {
        let text = match std::fs::read(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(StartError::Checkpoint(format!("{}: {e}", path.display()))),
        };
        let cp: Checkpoint = serde_json::from_slice(&text).map_err(|e| {
            StartError::Checkpoint(format!("{}: not a checkpoint: {e}", path.display()))
        })?;
        if cp.format != 1 {
            return Err(StartError::Checkpoint(format!(
                "{}: unsupported format {}",
                path.display(),
                cp.format
            )));
        }
        Ok(Some(cp))
    }

    /// Writes the checkpoint atomically (temporary file, fsync, rename,
    /// fsync of the folder).
    pub(crate) fn save(&self, path: &Path) -> Result<(), StartError> {
        write_json(path, self)
            .map_err(|e| StartError::Checkpoint(format!("{}: {e}", path.display())))
    }
}

/// Watermark state: which listed items are done.
#[derive(Default)]
struct Marks {
    /// Sequence number of the next listed item.
    next_seq: u64,
    /// Every item below this sequence number is done.
    watermark: u64,
    /// Done items at or above the watermark.
    done: BTreeSet<u64>,
    /// Store paths of listed items not yet below the watermark, in order.
    keys: VecDeque<String>,
    /// The checkpoint as it will next be written.
    cp: Checkpoint,
    /// Items passed since the last write.
    since_save: u64,
    /// The first write error, reported at the end of the run.
    error: Option<String>,
    /// The listing stopped on an error: the pass is not complete.
    listing_failed: bool,
}

struct TrackerInner {
    path: PathBuf,
    every: u64,
    marks: Mutex<Marks>,
    resumed_after: Option<String>,
    resumed_objects: u64,
}

/// Follows which items are done and writes the checkpoint. Disabled (no
/// checkpoint file) it does nothing.
#[derive(Clone)]
pub(crate) struct Tracker(Option<Arc<TrackerInner>>);

/// Held by a listed item; dropping it marks the item done.
pub(crate) struct Ticket {
    tracker: Arc<TrackerInner>,
    seq: u64,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        // An item dropped while a worker unwinds was not processed.
        if std::thread::panicking() {
            return;
        }
        self.tracker.done(self.seq);
    }
}

impl Tracker {
    /// A tracker that records nothing.
    pub(crate) fn disabled() -> Tracker {
        Tracker(None)
    }

    /// Loads (or starts) the checkpoint of a run over `loc`.
    pub(crate) fn start(
        loc: &ObjectLocation,
        opts: &ObjectWalkOptions,
    ) -> Result<Tracker, StartError> {
        let Some(path) = &opts.checkpoint else {
            return Ok(Tracker(None));
        };
        if loc.local.is_some() {
            return Err(StartError::Usage(
                "--checkpoint needs a store that lists in key order (s3, az, gs); \
                 local folders do not"
                    .into(),
            ));
        }
        let shard = opts.shard.map(|s| s.to_string());
        let fresh = Checkpoint {
            format: 1,
            location: loc.url().to_string(),
            shard: shard.clone(),
            ..Default::default()
        };
        let cp = match Checkpoint::load(path)? {
            Some(cp) if cp.location != fresh.location || cp.shard != shard => {
                return Err(StartError::Checkpoint(format!(
                    "{} belongs to a run over {} shard {}, not {} shard {}",
                    path.display(),
                    cp.location,
                    cp.shard.as_deref().unwrap_or("-"),
                    fresh.location,
                    shard.as_deref().unwrap_or("-"),
                )))
            }
            Some(cp) if !cp.complete => cp,
            _ => fresh,
        };
        // Fail now, not after an hour, if the checkpoint cannot be written.
        cp.save(path)?;
        Ok(Tracker(Some(Arc::new(TrackerInner {
            path: path.clone(),
            every: opts.checkpoint_every.max(1),
            resumed_after: cp.last_key.clone(),
            resumed_objects: cp.objects,
            marks: Mutex::new(Marks {
                cp,
                ..Default::default()
            }),
        }))))
    }

    /// The store path the listing starts after.
    pub(super) fn offset(&self) -> Option<String> {
        self.0.as_ref().and_then(|t| t.resumed_after.clone())
    }

    /// A ticket for the next listed item.
    pub(super) fn ticket(&self, key: &str) -> Option<Ticket> {
        let t = self.0.as_ref()?;
        let mut m = t.lock();
        let seq = m.next_seq;
        m.next_seq += 1;
        m.keys.push_back(key.to_string());
        Some(Ticket {
            tracker: Arc::clone(t),
            seq,
        })
    }

    /// The listing failed midway: a later run must resume, not restart.
    pub(super) fn listing_failed(&self) {
        if let Some(t) = &self.0 {
            t.lock().listing_failed = true;
        }
    }

    /// Where the run resumed (from the checkpoint), if it did.
    pub(crate) fn resumed_after(&self) -> Option<String> {
        self.offset()
    }

    /// Objects done before this run, per the checkpoint.
    pub(crate) fn resumed_objects(&self) -> u64 {
        self.0.as_ref().map_or(0, |t| t.resumed_objects)
    }

    /// Marks the pass complete (all items done) and writes the checkpoint.
    pub(crate) fn finish(&self) -> Result<(), StartError> {
        let Some(t) = &self.0 else { return Ok(()) };
        let mut m = t.lock();
        if let Some(e) = m.error.take() {
            return Err(StartError::Checkpoint(e));
        }
        m.cp.complete = m.keys.is_empty() && !m.listing_failed;
        m.cp.updated_at = chrono::Utc::now().to_rfc3339();
        m.cp.save(&t.path)
    }
}

impl TrackerInner {
    fn lock(&self) -> std::sync::MutexGuard<'_, Marks> {
        self.marks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn done(&self, seq: u64) {
        let mut m = self.lock();
        m.done.insert(seq);
        let mut advanced = false;
        loop {
            let w = m.watermark;
            if !m.done.remove(&w) {
                break;
            }
            m.watermark += 1;
            m.since_save += 1;
            m.cp.objects += 1;
            m.cp.last_key = m.keys.pop_front();
            advanced = true;
        }
        if advanced && m.since_save >= self.every {
            m.since_save = 0;
            m.cp.updated_at = chrono::Utc::now().to_rfc3339();
            if let Err(e) = m.cp.save(&self.path) {
                m.error.get_or_insert(e.to_string());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_parses_and_splits_names_without_overlap() {
        assert_eq!("2/5".parse::<Shard>(), Ok(Shard { index: 2, count: 5 }));
        for bad in ["5/5", "1/0", "x/2", "3", "-1/2"] {
            assert!(bad.parse::<Shard>().is_err(), "{bad}");
        }
        let shards: Vec<Shard> = (0..4).map(|i| Shard { index: i, count: 4 }).collect();
        let mut per = [0u32; 4];
        for n in 0..1000 {
            let name = format!("obj-{n}");
            let owners: Vec<usize> = (0..4).filter(|&i| shards[i].admits(&name)).collect();
            assert_eq!(owners.len(), 1, "{name}");
            per[owners[0]] += 1;
        }
        assert!(per.iter().all(|&c| c > 200), "{per:?}");
    }

    #[test]
    fn watermark_advances_only_over_contiguous_done_items() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cp.json");
        let inner = Arc::new(TrackerInner {
            path: path.clone(),
            every: 2,
            marks: Mutex::new(Marks {
                cp: Checkpoint {
                    format: 1,
                    ..Default::default()
                },
                ..Default::default()
            }),
            resumed_after: None,
            resumed_objects: 0,
        });
        let t = Tracker(Some(Arc::clone(&inner)));
        let a = t.ticket("p/a.rewrap-key").unwrap();
        let b = t.ticket("p/b.rewrap-key").unwrap();
        let c = t.ticket("p/c.rewrap-key").unwrap();
        drop(b);
        drop(c);
        assert_eq!(inner.lock().cp.last_key, None);
        assert!(!path.exists());
        drop(a);
        let cp = Checkpoint::load(&path).unwrap().unwrap();
        assert_eq!(cp.last_key.as_deref(), Some("p/c.rewrap-key"));
        assert_eq!(cp.objects, 3);
    }
}

//! Retention: the oldest closed segments removed once they are past the
//! retention, exported, and listed by a signed digest, and the removal
//! itself signed and recorded.
//!
//! Only a prefix of the segments is removed (the chain left starts at the
//! first kept segment). The removal is vouched for by a signed digest whose
//! `pruned_through` / `pruned_hash` name the last removed record: verify
//! accepts a trail that starts after record 1 only where a trusted digest
//! says so, with the hash the first kept segment chains onto. The caller
//! (the service) also appends a `PruneAuditTrail` record naming what went.

use super::{digest, export, segment, AuditError};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// What a retention run removed.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Pruned {
    /// Segment files removed, in order.
    pub segments: Vec<String>,
    /// `seq` of the last record removed (0: none).
    pub through_seq: u64,
    /// Its hash.
    pub through_hash: String,
}

/// The segments that may go: a prefix of the closed segments, each older
/// than `retention` (by the time it was closed), exported at least once, and
/// listed by a digest.
pub(super) fn removable(
    active: &Path,
    retention: Duration,
    now: SystemTime,
) -> Result<Vec<(PathBuf, segment::SegmentHeader)>, AuditError> {
    let exported = export::exported_anywhere(active)?;
    let digested = digest::segments_listed(active)?;
    let mut out = Vec::new();
    for path in segment::list(active)? {
        let name = path
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        let closed = std::fs::metadata(&path)
            .and_then(|m| m.modified())
            .map_err(super::io_error(&path))?;
        let old_enough = now.duration_since(closed).is_ok_and(|age| age >= retention);
        if !old_enough
            || !exported.contains(&format!("{}/{name}", segment::SEGMENTS_DIR))
            || !digested.contains(&name)
        {
            break;
        }
        let header = segment::SegmentReader::open(&path)?.header().clone();
        out.push((path, header));
    }
    Ok(out)
}

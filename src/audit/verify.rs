//! Walking the file and checking every record and every link of the chain.

use super::checkpoint::{self, Checkpoint, Cut};
use super::digest;
use super::read::{Line, Lines};
use super::record::{encode_line, parse_record, AuditRecord, GENESIS_HASH};
use super::segment::{self, Part, SegmentHeader, SegmentReader};
use super::AuditError;
use crate::root::RootKey;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// The result of a successful [`verify`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VerifySummary {
    /// Number of complete records; all of them chain correctly.
    pub records: u64,
    /// `hash` of the last record ([`GENESIS_HASH`] for an empty log). Keep it
    /// out of the log writer's reach to detect later truncation or rewrites.
    pub last_hash: String,
    /// Length in bytes of a torn final line (a crashed or in-progress append),
    /// if there is one. It is not counted in `records`.
    pub truncated_final_record: Option<u64>,
    /// `seq` of each `RepairAuditTail` record: a torn final line some
    /// writer repaired (the record says who, when and how).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub repairs: Vec<u64>,
    /// `seq` of each `AuditCheckpointMissing` record: a writer found no
    /// sealed checkpoint (deleted, or a trail older than checkpoints), so
    /// the end of the trail before that record could not be checked.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub checkpoint_missing: Vec<u64>,
    /// Whether the end of the trail was checked against the sealed
    /// checkpoint ([`verify_sealed`]).
    pub checkpoint_checked: bool,
    /// Closed segments walked before the active file.
    #[serde(skip_serializing_if = "is_zero")]
    pub segments: u64,
    /// Signed digests checked (signature, chain, segments, records).
    #[serde(skip_serializing_if = "is_zero")]
    pub digests: u64,
    /// Records in closed segments.
    #[serde(skip)]
    pub closed_records: u64,
}

#[allow(clippy::trivially_copy_pass_by_ref)] // serde's skip_serializing_if passes a reference
fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl std::fmt::Display for VerifySummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} records, chain intact, last hash {}",
            self.records, self.last_hash
        )?;
        if let Some(bytes) = self.truncated_final_record {
            write!(
                f,
                "; truncated final record ({bytes} bytes, never acknowledged)"
            )?;
        }
        if !self.repairs.is_empty() {
            write!(
                f,
                "; {} torn final record(s) repaired by a writer (RepairAuditTail at seq {})",
                self.repairs.len(),
                self.repairs
                    .iter()
                    .map(u64::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            )?;
        }
        if !self.checkpoint_missing.is_empty() {
            write!(
                f,
                "; the sealed checkpoint was missing before record(s) {} (deleted, or a trail older than checkpoints)",
                self.checkpoint_missing
                    .iter()
                    .map(u64::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            )?;
        }
        if self.segments > 0 {
            write!(f, "; {} closed segment(s)", self.segments)?;
        }
        if self.checkpoint_checked {
            write!(f, "; end matches the sealed checkpoint")?;
        }
        if self.digests > 0 {
            write!(f, "; {} signed digest(s) verified", self.digests)?;
        }
        Ok(())
    }
}

/// Where a record belongs in the chain, from the records before it.
struct Expected {
    seq: u64,
    prev_hash: String,
}

/// Walks the audit file and checks every record and every link of the chain.
///
/// Returns [`AuditError::Tampered`] for the first record that was changed or
/// does not follow its predecessor, [`AuditError::Malformed`] for a line that
/// is not a record. A torn final line is not an error (see the module doc).
pub fn verify(path: &Path) -> Result<VerifySummary, AuditError> {
    walk(path, None, &BTreeSet::new()).map(|(summary, _)| summary)
}

/// Verifies a copy of a trail (the folder `dir` holding `audit.segments/`,
/// `audit.digests/` and perhaps `audit.log`, e.g. an export) with only the
/// audit-signing public keys `trusted` (hex): records, segments, and the
/// signed digests, which must cover every closed segment. No keystore.
pub fn verify_offline(dir: &Path, trusted: &[String]) -> Result<VerifySummary, AuditError> {
    let active = dir.join("audit.log");
    let (mut summary, hashes) = walk(&active, None, &digest_seqs(&active)?)?;
    let checked = digest::verify_digests(
        &active,
        trusted,
        &|seq| hashes.get(&seq).cloned(),
        summary.records,
        false,
    )?;
    if checked.digests == 0 {
        return Err(AuditError::Checkpoint {
            problem: format!(
                "{}: no signed digest: nothing vouches for this copy",
                dir.display()
            ),
        });
    }
    if checked.segments_through < summary.closed_records {
        return Err(AuditError::Checkpoint {
            problem: format!(
                "records {} to {} are in closed segments no signed digest lists",
                checked.segments_through + 1,
                summary.closed_records
            ),
        });
    }
    summary.digests = checked.digests;
    Ok(summary)
}

/// The `seq` of each digest's last record: where the walk keeps hashes.
fn digest_seqs(active: &Path) -> Result<BTreeSet<u64>, AuditError> {
    let mut seqs = BTreeSet::new();
    for path in digest::list(active)? {
        if let Ok(bytes) = std::fs::read(&path) {
            if let Ok(d) = serde_json::from_slice::<digest::Digest>(&bytes) {
                seqs.insert(d.last_seq);
            }
        }
    }
    Ok(seqs)
}

/// [`verify`], and the end of the trail against its sealed checkpoint
/// (`audit.checkpoint` beside it, sealed under `root`): records cut off the
/// end, or a committed final record that lost its newline, are
/// [`AuditError::Truncated`]; a record where a writer found such a cut is
/// [`AuditError::Tampered`]. Without a checkpoint file this is [`verify`].
pub fn verify_sealed(path: &Path, root: &dyn RootKey) -> Result<VerifySummary, AuditError> {
    let cp = checkpoint::read(&checkpoint::checkpoint_path(path), root)?;
    let (mut summary, hashes) = walk(path, cp.as_ref(), &digest_seqs(path)?)?;
    let trusted = digest::keystore_public_keys(path, root)?;
    summary.digests = digest::verify_digests(
        path,
        &trusted,
        &|seq| hashes.get(&seq).cloned(),
        summary.records,
        true,
    )?
    .digests;
    let Some(cp) = cp else {
        return Ok(summary);
    };
    if summary.records < cp.seq {
        let cut = Cut {
            found_seq: summary.records,
            checkpoint: cp.clone(),
            problem: None,
        };
        let problem = if summary.truncated_final_record.is_some() && summary.records + 1 == cp.seq {
            format!(
                "record {} lost its final newline after it was committed (the sealed checkpoint records it): the trail was cut",
                cp.seq
            )
        } else {
            cut.to_string()
        };
        return Err(AuditError::Truncated {
            records: summary.records,
            expected: cp.seq,
            problem,
        });
    }
    summary.checkpoint_checked = true;
    Ok(summary)
}

/// The walk; also returns the hashes of the records whose `seq` is in `wanted`.
fn walk(
    path: &Path,
    cp: Option<&Checkpoint>,
    wanted: &BTreeSet<u64>,
) -> Result<(VerifySummary, BTreeMap<u64, String>), AuditError> {
    let mut found = Found {
        wanted: wanted.clone(),
        ..Found::default()
    };
    let mut expected = Expected {
        seq: 1,
        prev_hash: GENESIS_HASH.to_string(),
    };
    // Records removed by retention: the trail starts after them (the
    // digest that says so is checked by `verify_digests`).
    let pruned = digest::pruned(path)?;
    if let Some((seq, hash)) = &pruned {
        expected = Expected {
            seq: seq + 1,
            prev_hash: hash.clone(),
        };
    }
    let pruned_through = pruned.map_or(0, |p| p.0);
    found.closed_records = pruned_through;
    // The active file first: a close after this leaves these records in
    // the file read here, and the parts listed next may hold them too
    // (read once: a record already walked is skipped).
    let active = match std::fs::File::open(path) {
        Ok(file) => Some(file),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(super::io_error(path)(e)),
    };
    let parts = segment::parts(path)?;
    let any_parts = !parts.is_empty();
    for part in parts {
        let (seg, file) = match part {
            Part::Sealed(seg) => (seg, None),
            Part::Retired(retired, file) => (retired, Some(file)),
        };
        if let Some(file) = file {
            let mut lines = Lines::from_file(file, &seg);
            if let Some(torn) = walk_lines(&mut lines, Some(&seg), &mut found, &mut expected, cp)? {
                return Err(AuditError::Malformed {
                    line: 0,
                    problem: format!(
                        "retired file {}: ends in a torn line of {torn} bytes (file truncated)",
                        seg.display()
                    ),
                });
            }
            continue;
        }
        let mut reader = SegmentReader::open(&seg)?;
        if reader.header().last_seq() <= pruned_through {
            continue;
        }
        if let Some(problem) = segment_gap(reader.header(), &expected) {
            let h = reader.header();
            return Err(AuditError::Tampered {
                line: h.first_seq,
                seq: h.first_seq,
                problem: format!("segment {}: {problem}", seg.display()),
            });
        }
        while let Some(record) = reader.next_record()? {
            let tampered = |problem: String| AuditError::Tampered {
                line: record.seq,
                seq: record.seq,
                problem: format!("segment {}: {problem}", seg.display()),
            };
            if let Some(problem) = found.note(&record, cp) {
                return Err(tampered(problem));
            }
            expected = Expected {
                seq: record.seq + 1,
                prev_hash: record.hash,
            };
        }
        found.segments += 1;
        found.closed_records = expected.seq - 1;
    }
    let Some(active) = active else {
        if any_parts {
            // A copy of the closed segments only (an export).
            return Ok(found.summary(expected, None));
        }
        return Err(super::io_error(path)(std::io::Error::from(
            std::io::ErrorKind::NotFound,
        )));
    };
    let mut lines = Lines::from_file(active, path);
    let torn = walk_lines(&mut lines, None, &mut found, &mut expected, cp)?;
    Ok(found.summary(expected, torn))
}

/// Walks the records of an active or retired file (`retired` names the
/// latter, for messages), continuing the chain at `expected`. Records the
/// walk already has (left in both places by a close a crash interrupted)
/// are skipped, and must be the very same records. Returns the length of
/// a torn final line, if any.
fn walk_lines(
    lines: &mut Lines,
    retired: Option<&Path>,
    found: &mut Found,
    expected: &mut Expected,
    cp: Option<&Checkpoint>,
) -> Result<Option<u64>, AuditError> {
    let closed = (expected.seq - 1, expected.prev_hash.clone());
    let mut overlap = closed.0 > 0;
    let mut buf = Vec::with_capacity(1024);
    loop {
        let (line, bytes) = match lines.next_line()? {
            Line::Complete(line, bytes) => (line, bytes),
            Line::Torn(bytes) => return Ok(Some(bytes)),
            Line::End => return Ok(None),
        };
        let mut record = parse_record(line, bytes)?;
        let problem = record_problem(&mut record, bytes, &mut buf);
        let tampered = |problem: String| AuditError::Tampered {
            line,
            seq: record.seq,
            problem: match retired {
                Some(file) => format!("retired file {}: {problem}", file.display()),
                None => problem,
            },
        };
        if let Some(problem) = problem {
            return Err(tampered(problem.to_string()));
        }
        if overlap && record.seq <= closed.0 {
            // A close interrupted by a crash left records the part before
            // holds; they must be the very same records.
            if record.seq == closed.0 && record.hash != closed.1 {
                return Err(tampered(format!(
                    "record {} is not the one the last closed segment holds (record changed)",
                    record.seq
                )));
            }
            continue;
        }
        overlap = false;
        if record.seq != expected.seq {
            let problem = seq_problem(lines, record.seq, expected.seq)?;
            return Err(tampered(problem));
        }
        if record.prev_hash != expected.prev_hash {
            return Err(tampered(if record.seq == 1 {
                "prev_hash is not the genesis hash (records removed before it)".to_string()
            } else {
                format!(
                    "prev_hash does not match record {} (record removed, inserted or reordered)",
                    record.seq - 1
                )
            }));
        }
        if let Some(problem) = found.note(&record, cp) {
            return Err(tampered(problem));
        }
        *expected = Expected {
            seq: record.seq + 1,
            prev_hash: record.hash,
        };
    }
}

/// Why a closed segment with `header` does not continue the trail before it.
fn segment_gap(header: &SegmentHeader, expected: &Expected) -> Option<String> {
    let before = expected.seq - 1;
    if header.first_seq > expected.seq {
        return Some(format!(
            "starts at record {} but the trail before it ends at record {before}: records {} to {} are missing (segment removed)",
            header.first_seq,
            expected.seq,
            header.first_seq - 1
        ));
    }
    if header.first_seq < expected.seq {
        return Some(format!(
            "starts at record {} but the trail before it already ends at record {before} (segment inserted or reordered)",
            header.first_seq
        ));
    }
    (header.prev_hash != expected.prev_hash).then(|| {
        format!(
            "does not chain onto record {before} (segment replaced, or records before it changed)"
        )
    })
}

/// What the walk found besides the chain itself.
#[derive(Default)]
struct Found {
    repairs: Vec<u64>,
    missing: Vec<u64>,
    segments: u64,
    closed_records: u64,
    wanted: BTreeSet<u64>,
    hashes: BTreeMap<u64, String>,
}

impl Found {
    /// Notes a record the writer added on its own; returns the problem if it
    /// says the trail was cut, or if it contradicts the checkpoint.
    fn note(&mut self, record: &AuditRecord, cp: Option<&Checkpoint>) -> Option<String> {
        if self.wanted.contains(&record.seq) {
            self.hashes.insert(record.seq, record.hash.clone());
        }
        if let Some(cp) = cp.filter(|cp| cp.seq == record.seq && cp.hash != record.hash) {
            let cut = Cut {
                found_seq: record.seq,
                checkpoint: cp.clone(),
                problem: None,
            };
            return Some(cut.to_string());
        }
        match record.operation.as_str() {
            "AuditTrailCut" => {
                let p = record.request_parameters.clone().unwrap_or_default();
                let get = |k: &str| p.get(k).map_or("?", String::as_str).to_string();
                if let Some(problem) = p.get("Problem") {
                    return Some(format!(
                        "a writer found the sealed checkpoint unreadable here, after record {}: {problem} (pid {})",
                        get("FoundSeq"),
                        get("ProcessId")
                    ));
                }
                return Some(format!(
                    "a writer found the trail cut here: it ended at record {} but the sealed checkpoint recorded {} (pid {})",
                    get("FoundSeq"),
                    get("CheckpointSeq"),
                    get("ProcessId")
                ));
            }
            "RepairAuditTail" => self.repairs.push(record.seq),
            "AuditCheckpointMissing" => self.missing.push(record.seq),
            _ => {}
        }
        None
    }

    fn summary(
        self,
        expected: Expected,
        torn: Option<u64>,
    ) -> (VerifySummary, BTreeMap<u64, String>) {
        let summary = VerifySummary {
            records: expected.seq - 1,
            last_hash: expected.prev_hash,
            truncated_final_record: torn,
            repairs: self.repairs,
            checkpoint_missing: self.missing,
            checkpoint_checked: false,
            segments: self.segments,
            digests: 0,
            closed_records: self.closed_records,
        };
        (summary, self.hashes)
    }
}

/// Checks a record against its own hash and its line against the canonical form.
/// `record.hash` is taken out for the canonical serialization and put back.
fn record_problem(
    record: &mut AuditRecord,
    line: &[u8],
    buf: &mut Vec<u8>,
) -> Option<&'static str> {
    let claimed = std::mem::take(&mut record.hash);
    buf.clear();
    let hash = encode_line(record, buf);
    record.hash = claimed;
    if hash != record.hash {
        return Some("hash mismatch (record changed)");
    }
    if buf[..buf.len() - 1] != *line {
        return Some("line is not the canonical serialization of its record (record changed)");
    }
    None
}

/// Says why `seq` is not `expected`; looks ahead to tell a removal from a
/// reordering.
fn seq_problem(lines: &mut Lines, seq: u64, expected: u64) -> Result<String, AuditError> {
    let after = if expected == 1 {
        "the start of the log".to_string()
    } else {
        (expected - 1).to_string()
    };
    if seq < expected {
        return Ok(format!(
            "seq {seq} follows {after} (record inserted or reordered)"
        ));
    }
    #[derive(Deserialize)]
    struct SeqOnly {
        seq: u64,
    }
    let mut missing_found_later = false;
    while let Line::Complete(_, bytes) = lines.next_line()? {
        if let Ok(later) = serde_json::from_slice::<SeqOnly>(bytes) {
            if (expected..seq).contains(&later.seq) {
                missing_found_later = true;
                break;
            }
        }
    }
    Ok(if missing_found_later {
        format!("seq {seq} follows {after} (records reordered)")
    } else {
        format!("seq {seq} follows {after} (records removed)")
    })
}

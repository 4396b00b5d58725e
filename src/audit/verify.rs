//! Walking the file and checking every record and every link of the chain.

use super::checkpoint::{self, Checkpoint, Cut};
use super::read::{Line, Lines};
use super::record::{encode_line, parse_record, AuditRecord, GENESIS_HASH};
use super::AuditError;
use crate::root::RootKey;
use serde::{Deserialize, Serialize};
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
        if self.checkpoint_checked {
            write!(f, "; end matches the sealed checkpoint")?;
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
    walk(path, None)
}

/// [`verify`], and the end of the trail against its sealed checkpoint
/// (`audit.checkpoint` beside it, sealed under `root`): records cut off the
/// end, or a committed final record that lost its newline, are
/// [`AuditError::Truncated`]; a record where a writer found such a cut is
/// [`AuditError::Tampered`]. Without a checkpoint file this is [`verify`].
pub fn verify_sealed(path: &Path, root: &dyn RootKey) -> Result<VerifySummary, AuditError> {
    let cp = checkpoint::read(&checkpoint::checkpoint_path(path), root)?;
    let mut summary = walk(path, cp.as_ref())?;
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

fn walk(path: &Path, cp: Option<&Checkpoint>) -> Result<VerifySummary, AuditError> {
    let mut lines = Lines::open(path)?;
    let mut repairs = Vec::new();
    let mut missing = Vec::new();
    let mut expected = Expected {
        seq: 1,
        prev_hash: GENESIS_HASH.to_string(),
    };
    let mut buf = Vec::with_capacity(1024);
    loop {
        let (line, bytes) = match lines.next_line()? {
            Line::Complete(line, bytes) => (line, bytes),
            Line::Torn(bytes) => {
                return Ok(summary(expected, Some(bytes), repairs, missing));
            }
            Line::End => return Ok(summary(expected, None, repairs, missing)),
        };
        let mut record = parse_record(line, bytes)?;
        let problem = record_problem(&mut record, bytes, &mut buf);
        let tampered = |problem: String| AuditError::Tampered {
            line,
            seq: record.seq,
            problem,
        };
        if let Some(problem) = problem {
            return Err(tampered(problem.to_string()));
        }
        if record.seq != expected.seq {
            let problem = seq_problem(&mut lines, line, record.seq, expected.seq)?;
            return Err(tampered(problem));
        }
        if record.prev_hash != expected.prev_hash {
            return Err(tampered(if line == 1 {
                "prev_hash is not the genesis hash (records removed before it)".to_string()
            } else {
                format!(
                    "prev_hash does not match record {} (record removed, inserted or reordered)",
                    line - 1
                )
            }));
        }
        if let Some(cp) = cp.filter(|cp| cp.seq == record.seq && cp.hash != record.hash) {
            let cut = Cut {
                found_seq: record.seq,
                checkpoint: cp.clone(),
                problem: None,
            };
            return Err(tampered(cut.to_string()));
        }
        match record.operation.as_str() {
            "AuditTrailCut" => {
                let p = record.request_parameters.clone().unwrap_or_default();
                let get = |k: &str| p.get(k).map_or("?", String::as_str).to_string();
                if let Some(problem) = p.get("Problem") {
                    return Err(tampered(format!(
                        "a writer found the sealed checkpoint unreadable here, after record {}: {problem} (pid {})",
                        get("FoundSeq"),
                        get("ProcessId")
                    )));
                }
                return Err(tampered(format!(
                    "a writer found the trail cut here: it ended at record {} but the sealed checkpoint recorded {} (pid {})",
                    get("FoundSeq"),
                    get("CheckpointSeq"),
                    get("ProcessId")
                )));
            }
            "RepairAuditTail" => repairs.push(record.seq),
            "AuditCheckpointMissing" => missing.push(record.seq),
            _ => {}
        }
        expected = Expected {
            seq: record.seq + 1,
            prev_hash: record.hash,
        };
    }
}

fn summary(
    expected: Expected,
    torn: Option<u64>,
    repairs: Vec<u64>,
    checkpoint_missing: Vec<u64>,
) -> VerifySummary {
    VerifySummary {
        records: expected.seq - 1,
        last_hash: expected.prev_hash,
        truncated_final_record: torn,
        repairs,
        checkpoint_missing,
        checkpoint_checked: false,
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
fn seq_problem(
    lines: &mut Lines,
    line: u64,
    seq: u64,
    expected: u64,
) -> Result<String, AuditError> {
    let after = if line == 1 {
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

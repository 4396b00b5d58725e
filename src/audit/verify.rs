//! Walking the file and checking every record and every link of the chain.

use super::read::{Line, Lines};
use super::record::{encode_line, parse_record, AuditRecord, GENESIS_HASH};
use super::AuditError;
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
    let mut lines = Lines::open(path)?;
    let mut expected = Expected {
        seq: 1,
        prev_hash: GENESIS_HASH.to_string(),
    };
    let mut buf = Vec::with_capacity(1024);
    loop {
        let (line, bytes) = match lines.next_line()? {
            Line::Complete(line, bytes) => (line, bytes),
            Line::Torn(bytes) => {
                return Ok(summary(expected, Some(bytes)));
            }
            Line::End => return Ok(summary(expected, None)),
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
        expected = Expected {
            seq: record.seq + 1,
            prev_hash: record.hash,
        };
    }
}

fn summary(expected: Expected, torn: Option<u64>) -> VerifySummary {
    VerifySummary {
        records: expected.seq - 1,
        last_hash: expected.prev_hash,
        truncated_final_record: torn,
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

//! The tamper-evident audit trail: one JSON line per KMS operation attempt.
//!
//! Every attempt, allowed or denied, is appended to `<keystore>/audit.log` as
//! one [`AuditRecord`] serialized on one line. The records form a hash chain:
//!
//! - `seq` starts at 1 and grows by exactly 1 per line;
//! - `prev_hash` is the `hash` of the previous record (64 `0`s for the first);
//! - `hash` is the lowercase hex SHA-256 of the record's *canonical
//!   serialization*: `serde_json::to_vec` of the record with `hash` set to
//!   `""`. Fields appear in the struct's declaration order, `hash` last, with
//!   no whitespace, so the canonical form is exactly the stored line with the
//!   hash value cut out (`..."hash":""}`).
//!
//! The stored line is the canonical serialization with `hash` filled in, plus
//! `\n`. [`verify`] is strict: a line must be byte-for-byte the canonical
//! serialization of the record it parses to, so the SHA-256 covers every byte
//! of the line, not just the parsed values.
//!
//! # What the chain detects
//!
//! [`verify`] walks the file and reports the first changed, removed,
//! inserted or reordered record as [`AuditError::Tampered`], naming the line.
//! The chain is unkeyed: someone who can rewrite the whole file from some
//! record on, or cut records off its end, is not detected by the chain alone.
//! To catch that, keep [`VerifySummary::last_hash`] (and the record count)
//! somewhere the writer of the log cannot change, and compare later.
//!
//! # Crashes and the torn final line
//!
//! [`AuditLog::append`] writes the complete line with one `write_all` on an
//! `O_APPEND` file before it returns, so a crash loses at most the records of
//! operations still in flight. A crash in the middle of that write can leave a
//! *torn* final line: bytes with no trailing `\n`. Such a record was never
//! acknowledged to anyone. The choice made here:
//!
//! - [`verify`] does not count a torn final line and does not fail on it; it
//!   reports it in [`VerifySummary::truncated_final_record`] (shown as
//!   "truncated final record"). A torn line that is *not* last cannot come
//!   from a crash and is reported as [`AuditError::Malformed`].
//! - The appender, under the exclusive file lock, truncates a torn tail away
//!   before chaining the next record onto the last complete one, and counts
//!   the bytes it removed in [`AuditLog::repaired_torn_bytes`] so the service
//!   can log that it happened.
//!
//! If the last *complete* line cannot be parsed, the appender refuses to
//! append ([`AuditError::Malformed`]) rather than start a chain it cannot link:
//! the audit trail fails closed and the operator must look at the file.
//!
//! # Several writers
//!
//! One [`AuditLog`] is shared by all threads of a process (it is
//! `Send + Sync`, an internal mutex orders appends). Several processes (the
//! CLI and the server) may append to the same file: each append takes an
//! exclusive `flock` on the file, and if the file length is not what this
//! handle last wrote, re-reads the last line to learn the current `seq` and
//! `hash` before appending. Readers ([`verify`], [`report`]) take no lock; an
//! append in progress looks to them like a torn final line.
//!
//! An append costs one JSON serialization into a reused buffer, one SHA-256,
//! and four syscalls: `flock`, `fstat`, one `write`, unlock. The tail of the
//! file is re-read only when another writer appended in between.
//!
//! # No secrets
//!
//! A record has no field for plaintext, data keys, secrets or ciphertext: it
//! names keys by ARN and key-material version, and carries only the
//! encryption context (which AWS KMS also logs in the clear).

use crate::error::{ErrorCode, KmsError};
use chrono::{DateTime, SecondsFormat, Utc};
use fs4::fs_std::FileExt;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

/// The `prev_hash` of the first record.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// `decision` of an attempt the policy allowed.
pub const DECISION_ALLOW: &str = "Allow";
/// `decision` of an attempt the policy denied.
pub const DECISION_DENY: &str = "Deny";
/// `outcome` of an operation that succeeded.
pub const OUTCOME_SUCCESS: &str = "Success";

/// The tail of every canonical serialization: `hash` is the last field.
const EMPTY_HASH_TAIL: &[u8] = br#","hash":""}"#;

/// First read size when looking for the last line of the file.
const TAIL_WINDOW: u64 = 4096;

/// A key an operation used: its ARN and, where known, the key-material version.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct AuditKey {
    /// The key ARN.
    pub arn: String,
    /// The key-material version used, if the operation used key material.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub version: Option<u32>,
}

/// One operation attempt, as one line of the audit log.
///
/// Build it with the operation's fields and `..Default::default()`;
/// [`AuditLog::append`] fills `seq`, `prev_hash`, `hash` and (if empty) `time`.
/// Field order is part of the hash definition: do not reorder.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct AuditRecord {
    /// Position in the log, 1-based, consecutive.
    pub seq: u64,
    /// When the attempt was recorded, RFC 3339 UTC with milliseconds.
    pub time: String,
    /// The request id (a UUID) returned to the caller.
    pub request_id: String,
    /// The authenticated principal (or what it claimed to be, if denied).
    pub principal: String,
    /// The AWS operation name, e.g. `ReEncrypt`.
    pub operation: String,
    /// The keys used: source then destination for `ReEncrypt`.
    pub keys: Vec<AuditKey>,
    /// The encryption context of the request, if any.
    pub encryption_context: Option<BTreeMap<String, String>>,
    /// The destination encryption context of a `ReEncrypt`, if any.
    pub destination_encryption_context: Option<BTreeMap<String, String>>,
    /// [`DECISION_ALLOW`] or [`DECISION_DENY`].
    pub decision: String,
    /// The policy file and statement that decided.
    pub decided_by: String,
    /// [`OUTCOME_SUCCESS`] or the AWS error name, e.g. `AccessDeniedException`.
    pub outcome: String,
    /// The caller's IP address, for requests that came over the network.
    pub source_ip: Option<String>,
    /// The caller's user agent, if it sent one.
    pub user_agent: Option<String>,
    /// The `hash` of the previous record, or [`GENESIS_HASH`].
    pub prev_hash: String,
    /// Hex SHA-256 of this record's canonical serialization (see module doc).
    pub hash: String,
}

/// Failures of the audit trail.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuditError {
    /// Reading or writing the audit file failed.
    #[error("audit log {}: {source}", path.display())]
    Io {
        /// The audit file.
        path: PathBuf,
        /// The operating system's error.
        source: io::Error,
    },
    /// The chain is broken: a record was changed, removed, inserted or reordered.
    #[error("record {line}: {problem}")]
    Tampered {
        /// 1-based line number of the first record that does not fit.
        line: u64,
        /// The `seq` that record claims.
        seq: u64,
        /// What is wrong, e.g. `hash mismatch (record changed)`.
        problem: String,
    },
    /// A line is not an audit record at all.
    #[error("line {line}: {problem}")]
    Malformed {
        /// 1-based line number.
        line: u64,
        /// What is wrong with it.
        problem: String,
    },
}

/// An audit failure fails the operation: nothing is done unaudited.
impl From<AuditError> for KmsError {
    fn from(e: AuditError) -> KmsError {
        KmsError::new(ErrorCode::Internal, format!("audit log: {e}"))
    }
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> AuditError + '_ {
    move |source| AuditError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// How to open an [`AuditLog`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AuditOptions {
    /// `fdatasync` after every append: a record survives a power loss once
    /// `append` returns. Off by default; call [`AuditLog::sync`] instead.
    pub durable: bool,
}

/// The file and what this handle knows about the end of its chain.
struct ChainState {
    file: File,
    chain: Chain,
}

/// What this handle knows about the end of the chain.
struct Chain {
    /// Reused for every line, so an append does not allocate it again.
    buf: Vec<u8>,
    /// File length after this handle's last write; `None` forces a re-read.
    end: Option<u64>,
    seq: u64,
    last_hash: String,
    repaired_torn_bytes: u64,
}

/// An append handle on an audit file; share one per process.
pub struct AuditLog {
    path: PathBuf,
    durable: bool,
    state: Mutex<ChainState>,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog")
            .field("path", &self.path)
            .field("durable", &self.durable)
            .finish_non_exhaustive()
    }
}

/// Holds the exclusive `flock` on the audit file until dropped.
struct FileLock<'a>(&'a File);

impl<'a> FileLock<'a> {
    fn acquire(file: &'a File, path: &Path) -> Result<FileLock<'a>, AuditError> {
        FileExt::lock_exclusive(file).map_err(io_error(path))?;
        Ok(FileLock(file))
    }
}

impl Drop for FileLock<'_> {
    fn drop(&mut self) {
        // Closing the file releases the lock too; nothing useful to do on error.
        let _ = FileExt::unlock(self.0);
    }
}

impl AuditLog {
    /// Opens (or creates, with mode 0600) the audit file at `path`.
    pub fn open(path: &Path) -> Result<AuditLog, AuditError> {
        AuditLog::open_with(path, AuditOptions::default())
    }

    /// Opens (or creates, with mode 0600) the audit file with `options`.
    ///
    /// Reads the last record to learn where the chain ends, and truncates a
    /// torn final line left by a crashed writer (see the module doc).
    pub fn open_with(path: &Path, options: AuditOptions) -> Result<AuditLog, AuditError> {
        let mut open = OpenOptions::new();
        open.read(true).append(true).create(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            open.mode(0o600);
        }
        let file = open.open(path).map_err(io_error(path))?;
        let log = AuditLog {
            path: path.to_path_buf(),
            durable: options.durable,
            state: Mutex::new(ChainState {
                file,
                chain: Chain {
                    buf: Vec::with_capacity(1024),
                    end: None,
                    seq: 0,
                    last_hash: GENESIS_HASH.to_string(),
                    repaired_torn_bytes: 0,
                },
            }),
        };
        {
            let mut state = log.lock_state();
            let ChainState { file, chain } = &mut *state;
            let _lock = FileLock::acquire(file, &log.path)?;
            resync(file, &log.path, chain)?;
        }
        Ok(log)
    }

    /// The audit file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends `record` as the next line of the chain.
    ///
    /// Fills `seq`, `prev_hash`, `hash`, and `time` if it is empty. The line is
    /// in the file (not necessarily on disk, unless opened `durable`) when
    /// this returns `Ok`.
    pub fn append(&self, record: AuditRecord) -> Result<(), AuditError> {
        self.append_all(vec![record])
    }

    /// Appends `records`, in order, as the next lines of the chain, with one
    /// lock, one write and (if `durable`) one sync for all of them: the
    /// group commit of a batch of key uses. Each record is its own line,
    /// exactly as [`AuditLog::append`] would have written it.
    pub fn append_all(&self, records: Vec<AuditRecord>) -> Result<(), AuditError> {
        if records.is_empty() {
            return Ok(());
        }
        let mut state = self.lock_state();
        let ChainState { file, chain } = &mut *state;
        let _lock = FileLock::acquire(file, &self.path)?;
        let len = file.metadata().map_err(io_error(&self.path))?.len();
        if chain.end != Some(len) {
            resync(file, &self.path, chain)?;
        }
        // Until the write succeeds the end of the chain is unknown; a failed
        // or partial write makes the next append re-read (and repair) the tail.
        chain.end = None;
        chain.buf.clear();
        let mut seq = chain.seq;
        let mut last_hash = chain.last_hash.clone();
        for mut record in records {
            seq += 1;
            record.seq = seq;
            if record.time.is_empty() {
                record.time = now_rfc3339();
            }
            record.prev_hash = std::mem::take(&mut last_hash);
            record.hash.clear();
            last_hash = encode_line(&record, &mut chain.buf);
        }
        (&*file)
            .write_all(&chain.buf)
            .map_err(io_error(&self.path))?;
        if self.durable {
            file.sync_data().map_err(io_error(&self.path))?;
        }
        chain.end = Some(len + chain.buf.len() as u64);
        chain.seq = seq;
        chain.last_hash = last_hash;
        Ok(())
    }

    /// Flushes every appended record to stable storage (`fdatasync`).
    pub fn sync(&self) -> Result<(), AuditError> {
        let state = self.lock_state();
        state.file.sync_data().map_err(io_error(&self.path))
    }

    /// Bytes of torn final lines (left by crashed writers) this handle has
    /// truncated away so far. Non-zero means a writer crashed mid-append.
    pub fn repaired_torn_bytes(&self) -> u64 {
        self.lock_state().chain.repaired_torn_bytes
    }

    /// Locks the chain state; after a panic in another thread, re-reads the
    /// file instead of trusting what that thread left behind.
    fn lock_state(&self) -> MutexGuard<'_, ChainState> {
        match self.state.lock() {
            Ok(guard) => guard,
            Err(poisoned) => {
                self.state.clear_poison();
                let mut guard = poisoned.into_inner();
                guard.chain.end = None;
                guard
            }
        }
    }
}

/// Learns `seq` and `hash` of the last complete line; truncates a torn tail.
/// The caller holds the exclusive file lock.
fn resync(file: &File, path: &Path, chain: &mut Chain) -> Result<(), AuditError> {
    let tail = read_tail(file, path)?;
    if tail.torn_bytes > 0 {
        file.set_len(tail.end).map_err(io_error(path))?;
        chain.repaired_torn_bytes += tail.torn_bytes;
    }
    chain.end = Some(tail.end);
    chain.seq = tail.seq;
    chain.last_hash = tail.hash;
    Ok(())
}

/// Now, as the audit log writes times.
fn now_rfc3339() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Appends the stored line of `record` (whose `hash` must be empty) to
/// `buf`, newline included, and returns the hash it filled in.
fn encode_line(record: &AuditRecord, buf: &mut Vec<u8>) -> String {
    debug_assert!(record.hash.is_empty());
    let start = buf.len();
    serde_json::to_writer(&mut *buf, record).expect("an audit record always serializes");
    debug_assert!(buf.ends_with(EMPTY_HASH_TAIL));
    let digest = Sha256::digest(&buf[start..]);
    let mut hex_hash = [0u8; 64];
    hex::encode_to_slice(digest, &mut hex_hash).expect("64 hex digits for 32 bytes");
    // Replace the closing `"}` of `"hash":""}` with `<hex>"}` and a newline.
    buf.truncate(buf.len() - 2);
    buf.extend_from_slice(&hex_hash);
    buf.extend_from_slice(b"\"}\n");
    String::from_utf8(hex_hash.to_vec()).expect("hex is ASCII")
}

/// Where the chain ends, as read from the file.
struct Tail {
    /// Length of the file without its torn tail.
    end: u64,
    seq: u64,
    hash: String,
    torn_bytes: u64,
}

/// Reads backwards from the end of the file to its last complete line.
fn read_tail(file: &File, path: &Path) -> Result<Tail, AuditError> {
    let len = file.metadata().map_err(io_error(path))?.len();
    let mut window = TAIL_WINDOW;
    loop {
        let start = len.saturating_sub(window);
        let bytes = read_range(file, path, start, len)?;
        let complete = match bytes.iter().rposition(|&b| b == b'\n') {
            Some(i) => i + 1,
            None if start == 0 => 0,
            None => {
                window *= 2;
                continue;
            }
        };
        let torn_bytes = bytes.len() as u64 - complete as u64;
        let end = start + complete as u64;
        if complete == 0 {
            return Ok(Tail {
                end,
                seq: 0,
                hash: GENESIS_HASH.to_string(),
                torn_bytes,
            });
        }
        let line_end = complete - 1;
        let line_start = match bytes[..line_end].iter().rposition(|&b| b == b'\n') {
            Some(i) => i + 1,
            None if start == 0 => 0,
            None => {
                window *= 2;
                continue;
            }
        };
        let last: AuditRecord = match serde_json::from_slice(&bytes[line_start..line_end]) {
            Ok(record) => record,
            Err(e) => {
                let line = count_lines(file, path, start + line_start as u64)? + 1;
                return Err(AuditError::Malformed {
                    line,
                    problem: format!(
                        "last record is not an audit record ({e}); refusing to append"
                    ),
                });
            }
        };
        return Ok(Tail {
            end,
            seq: last.seq,
            hash: last.hash,
            torn_bytes,
        });
    }
}

fn read_range(file: &File, path: &Path, start: u64, end: u64) -> Result<Vec<u8>, AuditError> {
    let mut reader = file;
    let mut bytes = vec![0u8; (end - start) as usize];
    reader
        .seek(SeekFrom::Start(start))
        .and_then(|_| reader.read_exact(&mut bytes))
        .map_err(io_error(path))?;
    Ok(bytes)
}

/// Number of `\n` in the first `upto` bytes of the file (error path only).
fn count_lines(file: &File, path: &Path, upto: u64) -> Result<u64, AuditError> {
    let mut reader = file;
    reader.seek(SeekFrom::Start(0)).map_err(io_error(path))?;
    let mut lines = 0u64;
    let mut chunk = vec![0u8; 64 * 1024];
    let mut remaining = upto;
    while remaining > 0 {
        let want = remaining.min(chunk.len() as u64) as usize;
        let n = reader.read(&mut chunk[..want]).map_err(io_error(path))?;
        if n == 0 {
            break;
        }
        lines += chunk[..n].iter().filter(|&&b| b == b'\n').count() as u64;
        remaining -= n as u64;
    }
    Ok(lines)
}

/// The lines of an audit file, read without a lock.
struct Lines {
    reader: BufReader<File>,
    path: PathBuf,
    line: u64,
    buf: Vec<u8>,
}

/// One line, without its `\n`.
enum Line<'a> {
    Complete(u64, &'a [u8]),
    /// The last bytes of the file, with no `\n`: a torn final line.
    Torn(u64),
    End,
}

impl Lines {
    fn open(path: &Path) -> Result<Lines, AuditError> {
        let file = File::open(path).map_err(io_error(path))?;
        Ok(Lines {
            reader: BufReader::with_capacity(256 * 1024, file),
            path: path.to_path_buf(),
            line: 0,
            buf: Vec::with_capacity(1024),
        })
    }

    fn next_line(&mut self) -> Result<Line<'_>, AuditError> {
        self.buf.clear();
        let n = self
            .reader
            .read_until(b'\n', &mut self.buf)
            .map_err(io_error(&self.path))?;
        if n == 0 {
            return Ok(Line::End);
        }
        self.line += 1;
        match self.buf.split_last() {
            Some((b'\n', line)) => Ok(Line::Complete(self.line, line)),
            _ => Ok(Line::Torn(n as u64)),
        }
    }

    /// Calls `visit` with every complete record; ignores a torn final line.
    fn for_each_record(
        path: &Path,
        mut visit: impl FnMut(u64, AuditRecord) -> Result<(), AuditError>,
    ) -> Result<(), AuditError> {
        let mut lines = Lines::open(path)?;
        loop {
            match lines.next_line()? {
                Line::Complete(line, bytes) => visit(line, parse_record(line, bytes)?)?,
                Line::Torn(_) | Line::End => return Ok(()),
            }
        }
    }
}

fn parse_record(line: u64, bytes: &[u8]) -> Result<AuditRecord, AuditError> {
    serde_json::from_slice(bytes).map_err(|e| AuditError::Malformed {
        line,
        problem: format!("not an audit record: {e}"),
    })
}

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

/// Every complete record of the audit file, in file order; a torn final line
/// is skipped. Does not verify the chain (use [`verify`]).
pub fn read_records(path: &Path) -> Result<Vec<AuditRecord>, AuditError> {
    let mut records = Vec::new();
    Lines::for_each_record(path, |_, record| {
        records.push(record);
        Ok(())
    })?;
    Ok(records)
}

/// Which records a [`report`] counts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReportFilter {
    /// Only records at or after this time.
    pub since: Option<DateTime<Utc>>,
    /// Only this key: a full ARN, or a suffix after its last `/` or `:`
    /// (the key id, or `key/<id>`).
    pub key: Option<String>,
    /// Only this principal (exact match).
    pub principal: Option<String>,
}

impl ReportFilter {
    fn matches_key(&self, arn: &str) -> bool {
        match &self.key {
            None => true,
            Some(key) => {
                arn == key
                    || arn
                        .strip_suffix(key.as_str())
                        .is_some_and(|head| head.ends_with('/') || head.ends_with(':'))
            }
        }
    }
}

/// The key column of operations that name no key (`ListKeys`, ...).
pub const NO_KEY: &str = "-";

/// Usage of one key by one principal through one operation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UsageRow {
    /// Key ARN, or [`NO_KEY`].
    pub key: String,
    /// The principal.
    pub principal: String,
    /// The AWS operation name.
    pub operation: String,
    /// Attempts, allowed or denied.
    pub count: u64,
    /// Attempts the policy denied.
    pub denied: u64,
    /// Allowed attempts that failed (outcome not `Success`).
    pub errors: u64,
    /// The latest attempt.
    pub last_used: DateTime<Utc>,
}

/// Usage per (key, principal, operation), sorted by those three.
///
/// A `ReEncrypt` counts once for its source key and once for its destination
/// key (once if they are the same key).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct UsageReport {
    /// One row per (key, principal, operation).
    pub rows: Vec<UsageRow>,
}

impl UsageReport {
    /// The report as a table with aligned columns, one row per line.
    pub fn to_table(&self) -> String {
        let header = [
            "KEY",
            "PRINCIPAL",
            "OPERATION",
            "COUNT",
            "DENIED",
            "ERRORS",
            "LAST USED",
        ];
        let cells: Vec<[String; 7]> = self
            .rows
            .iter()
            .map(|r| {
                [
                    r.key.clone(),
                    r.principal.clone(),
                    r.operation.clone(),
                    r.count.to_string(),
                    r.denied.to_string(),
                    r.errors.to_string(),
                    r.last_used.to_rfc3339_opts(SecondsFormat::Millis, true),
                ]
            })
            .collect();
        let mut widths = header.map(str::len);
        for row in &cells {
            for (width, cell) in widths.iter_mut().zip(row) {
                *width = (*width).max(cell.chars().count());
            }
        }
        let mut out = String::new();
        let header = header.map(str::to_string);
        for row in std::iter::once(&header).chain(&cells) {
            let mut line = String::new();
            for (i, cell) in row.iter().enumerate() {
                let pad = widths[i] - cell.chars().count();
                if i > 0 {
                    line.push_str("  ");
                }
                // Counts are right-aligned, text left-aligned.
                if (3..6).contains(&i) {
                    line.extend(std::iter::repeat_n(' ', pad));
                    line.push_str(cell);
                } else {
                    line.push_str(cell);
                    line.extend(std::iter::repeat_n(' ', pad));
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

fn record_time(line: u64, record: &AuditRecord) -> Result<DateTime<Utc>, AuditError> {
    DateTime::parse_from_rfc3339(&record.time)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| AuditError::Malformed {
            line,
            problem: format!("time {:?} is not RFC 3339: {e}", record.time),
        })
}

/// The distinct key ARNs of a record, or [`NO_KEY`] if it names none.
fn distinct_keys(record: &AuditRecord) -> Vec<&str> {
    let mut keys: Vec<&str> = Vec::with_capacity(2);
    for key in &record.keys {
        if !keys.contains(&key.arn.as_str()) {
            keys.push(&key.arn);
        }
    }
    if keys.is_empty() {
        keys.push(NO_KEY);
    }
    keys
}

/// Summarises the audit file per (key, principal, operation).
///
/// Reads every complete record (it does not verify the chain; use
/// [`verify`]). With a key filter, operations that name no key are left out.
pub fn report(path: &Path, filter: &ReportFilter) -> Result<UsageReport, AuditError> {
    let mut groups: BTreeMap<(String, String, String), UsageRow> = BTreeMap::new();
    Lines::for_each_record(path, |line, record| {
        if filter
            .principal
            .as_ref()
            .is_some_and(|p| *p != record.principal)
        {
            return Ok(());
        }
        let time = record_time(line, &record)?;
        if filter.since.is_some_and(|since| time < since) {
            return Ok(());
        }
        let denied = record.decision == DECISION_DENY;
        let failed = !denied && record.outcome != OUTCOME_SUCCESS;
        for key in distinct_keys(&record) {
            if filter.key.is_some() && (key == NO_KEY || !filter.matches_key(key)) {
                continue;
            }
            let group = (
                key.to_string(),
                record.principal.clone(),
                record.operation.clone(),
            );
            let row = groups.entry(group).or_insert_with(|| UsageRow {
                key: key.to_string(),
                principal: record.principal.clone(),
                operation: record.operation.clone(),
                count: 0,
                denied: 0,
                errors: 0,
                last_used: time,
            });
            row.count += 1;
            row.denied += u64::from(denied);
            row.errors += u64::from(failed);
            row.last_used = row.last_used.max(time);
        }
        Ok(())
    })?;
    Ok(UsageReport {
        rows: groups.into_values().collect(),
    })
}

/// The latest attempt (allowed or denied, successful or not) on each key ARN.
///
/// Attempts count, not only successes: a denied call still shows someone
/// depends on the key, which is what matters before disabling or deleting it.
pub fn last_use_by_key(path: &Path) -> Result<HashMap<String, DateTime<Utc>>, AuditError> {
    let mut last: HashMap<String, DateTime<Utc>> = HashMap::new();
    Lines::for_each_record(path, |line, record| {
        let time = record_time(line, &record)?;
        for key in &record.keys {
            last.entry(key.arn.clone())
                .and_modify(|t| *t = (*t).max(time))
                .or_insert(time);
        }
        Ok(())
    })?;
    Ok(last)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    const KEY_A: &str =
        "arn:aws:kms:us-east-1:111122223333:key/aaaaaaaa-0000-0000-0000-000000000001";
    const KEY_B: &str =
        "arn:aws:kms:us-east-1:111122223333:key/bbbbbbbb-0000-0000-0000-000000000002";

    fn record(principal: &str, operation: &str, keys: &[&str]) -> AuditRecord {
        AuditRecord {
            request_id: uuid::Uuid::new_v4().to_string(),
            principal: principal.to_string(),
            operation: operation.to_string(),
            keys: keys
                .iter()
                .map(|arn| AuditKey {
                    arn: arn.to_string(),
                    version: Some(1),
                })
                .collect(),
            decision: DECISION_ALLOW.to_string(),
            decided_by: "policy.json#AllowApp".to_string(),
            outcome: OUTCOME_SUCCESS.to_string(),
            ..Default::default()
        }
    }

    fn log_with(dir: &Path, n: u64) -> PathBuf {
        let path = dir.join("audit.log");
        let log = AuditLog::open(&path).unwrap();
        for i in 0..n {
            log.append(record(&format!("app{}", i % 3), "Encrypt", &[KEY_A]))
                .unwrap();
        }
        path
    }

    fn lines(path: &Path) -> Vec<String> {
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect()
    }

    fn write_lines(path: &Path, lines: &[String]) {
        let mut text = lines.join("\n");
        text.push('\n');
        std::fs::write(path, text).unwrap();
    }

    fn tampered(path: &Path) -> (u64, u64, String) {
        match verify(path) {
            Err(AuditError::Tampered { line, seq, problem }) => (line, seq, problem),
            other => panic!("expected Tampered, got {other:?}"),
        }
    }

    /// A forged line: valid own hash, chained to `prev_hash`.
    fn forged_line(seq: u64, prev_hash: &str) -> String {
        let mut forged = record("mallory", "Decrypt", &[KEY_A]);
        forged.seq = seq;
        forged.time = "2025-01-01T00:00:00.000Z".to_string();
        forged.prev_hash = prev_hash.to_string();
        let mut buf = Vec::new();
        encode_line(&forged, &mut buf);
        String::from_utf8(buf).unwrap().trim_end().to_string()
    }

    #[test]
    fn canonical_line_and_hash_are_pinned() {
        let mut rec = record("alice", "ReEncrypt", &[KEY_A]);
        rec.request_id = "5f0c7c4e-1b6a-4d8e-9a59-1f2e3d4c5b6a".to_string();
        rec.time = "2025-01-02T03:04:05.678Z".to_string();
        rec.keys.push(AuditKey {
            arn: KEY_B.to_string(),
            version: None,
        });
        rec.encryption_context = Some(BTreeMap::from([("app".to_string(), "x".to_string())]));
        rec.seq = 1;
        rec.prev_hash = GENESIS_HASH.to_string();
        let mut buf = Vec::new();
        let hash = encode_line(&rec, &mut buf);
        let expected_prefix = format!(
            concat!(
                r#"{{"seq":1,"time":"2025-01-02T03:04:05.678Z","request_id":"5f0c7c4e-1b6a-4d8e-9a59-1f2e3d4c5b6a","#,
                r#""principal":"alice","operation":"ReEncrypt","keys":[{{"arn":"{}","version":1}},{{"arn":"{}"}}],"#,
                r#""encryption_context":{{"app":"x"}},"destination_encryption_context":null,"decision":"Allow","#,
                r#""decided_by":"policy.json#AllowApp","outcome":"Success","source_ip":null,"user_agent":null,"#,
                r#""prev_hash":"{}","hash":""#
            ),
            KEY_A, KEY_B, GENESIS_HASH
        );
        let canonical = format!("{expected_prefix}\"}}");
        assert_eq!(hash, hex::encode(Sha256::digest(canonical.as_bytes())));
        assert_eq!(
            String::from_utf8(buf).unwrap(),
            format!("{expected_prefix}{hash}\"}}\n")
        );
    }

    #[test]
    fn appended_records_verify_with_exact_count_and_chain() {
        let dir = tempfile::tempdir().unwrap();
        let path = log_with(dir.path(), 25);
        let summary = verify(&path).unwrap();
        assert_eq!(summary.records, 25);
        assert_eq!(summary.truncated_final_record, None);
        let records = read_records(&path).unwrap();
        assert_eq!(records.len(), 25);
        assert_eq!(records[0].prev_hash, GENESIS_HASH);
        for (i, rec) in records.iter().enumerate() {
            assert_eq!(rec.seq, i as u64 + 1);
            assert_eq!(rec.hash.len(), 64);
            assert_eq!(rec.time.len(), "2025-01-02T03:04:05.678Z".len());
            assert!(rec.time.ends_with('Z'));
            DateTime::parse_from_rfc3339(&rec.time).unwrap();
            if i > 0 {
                assert_eq!(rec.prev_hash, records[i - 1].hash);
            }
        }
        assert_eq!(summary.last_hash, records[24].hash);
    }

    #[test]
    fn a_group_commit_writes_each_record_as_its_own_chained_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let log = AuditLog::open(&path).unwrap();
        log.append(record("alice", "Encrypt", &[KEY_A])).unwrap();
        let batch = (0..3)
            .map(|i| record(&format!("p{i}"), "ReEncrypt", &[KEY_A]))
            .collect();
        log.append_all(batch).unwrap();
        log.append_all(Vec::new()).unwrap();
        log.append(record("bob", "Decrypt", &[KEY_A])).unwrap();
        assert_eq!(verify(&path).unwrap().records, 5);
        let records = read_records(&path).unwrap();
        let who: Vec<_> = records.iter().map(|r| r.principal.as_str()).collect();
        assert_eq!(who, ["alice", "p0", "p1", "p2", "bob"]);
        for (i, r) in records.iter().enumerate() {
            assert_eq!(r.seq, i as u64 + 1);
            if i > 0 {
                assert_eq!(r.prev_hash, records[i - 1].hash);
            }
        }
        // Exactly one line per record.
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 5);
    }

    #[test]
    fn reopening_continues_the_chain() {
        let dir = tempfile::tempdir().unwrap();
        let path = log_with(dir.path(), 3);
        let log = AuditLog::open(&path).unwrap();
        log.append(record("bob", "Decrypt", &[KEY_B])).unwrap();
        assert_eq!(verify(&path).unwrap().records, 4);
        assert_eq!(read_records(&path).unwrap()[3].seq, 4);
    }

    #[test]
    fn empty_log_verifies_to_genesis() {
        let dir = tempfile::tempdir().unwrap();
        let path = log_with(dir.path(), 0);
        let summary = verify(&path).unwrap();
        assert_eq!(summary.records, 0);
        assert_eq!(summary.last_hash, GENESIS_HASH);
    }

    #[test]
    fn changed_field_names_the_record() {
        let dir = tempfile::tempdir().unwrap();
        let path = log_with(dir.path(), 10);
        let mut all = lines(&path);
        assert!(all[6].contains(r#""principal":"app0""#));
        all[6] = all[6].replace(r#""principal":"app0""#, r#""principal":"app1""#);
        write_lines(&path, &all);
        let (line, seq, problem) = tampered(&path);
        assert_eq!((line, seq), (7, 7));
        assert_eq!(problem, "hash mismatch (record changed)");
        assert_eq!(
            verify(&path).unwrap_err().to_string(),
            "record 7: hash mismatch (record changed)"
        );
    }

    #[test]
    fn changed_hash_field_is_a_hash_mismatch() {
        let dir = tempfile::tempdir().unwrap();
        let path = log_with(dir.path(), 5);
        let mut all = lines(&path);
        let records = read_records(&path).unwrap();
        let mut bad = records[2].hash.clone().into_bytes();
        bad[0] = if bad[0] == b'0' { b'1' } else { b'0' };
        all[2] = all[2].replace(&records[2].hash, std::str::from_utf8(&bad).unwrap());
        write_lines(&path, &all);
        assert_eq!(
            tampered(&path),
            (3, 3, "hash mismatch (record changed)".to_string())
        );
    }

    #[test]
    fn non_canonical_line_is_a_change() {
        let dir = tempfile::tempdir().unwrap();
        let path = log_with(dir.path(), 5);
        let mut all = lines(&path);
        all[3] = all[3].replacen(r#""seq":4,"#, r#""seq": 4,"#, 1);
        write_lines(&path, &all);
        assert_eq!(
            tampered(&path),
            (
                4,
                4,
                "line is not the canonical serialization of its record (record changed)"
                    .to_string()
            )
        );
    }

    #[test]
    fn removed_record_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = log_with(dir.path(), 10);
        let mut all = lines(&path);
        all.remove(7); // seq 8
        write_lines(&path, &all);
        assert_eq!(
            verify(&path).unwrap_err().to_string(),
            "record 8: seq 9 follows 7 (records removed)"
        );
        assert_eq!(tampered(&path).1, 9);
    }

    #[test]
    fn removed_records_at_the_start_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = log_with(dir.path(), 5);
        let mut all = lines(&path);
        all.drain(0..2);
        write_lines(&path, &all);
        assert_eq!(
            tampered(&path),
            (
                1,
                3,
                "seq 3 follows the start of the log (records removed)".to_string()
            )
        );
    }

    #[test]
    fn swapped_records_are_a_reordering() {
        let dir = tempfile::tempdir().unwrap();
        let path = log_with(dir.path(), 10);
        let mut all = lines(&path);
        all.swap(4, 5);
        write_lines(&path, &all);
        assert_eq!(
            tampered(&path),
            (5, 6, "seq 6 follows 4 (records reordered)".to_string())
        );
    }

    #[test]
    fn forged_line_with_wrong_chain_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = log_with(dir.path(), 10);
        let mut all = lines(&path);
        // Own hash correct, seq plausible, prev_hash wrong; later lines renumbered
        // would not help the forger: the chain breaks here already.
        all.insert(5, forged_line(6, &"ab".repeat(32)));
        write_lines(&path, &all);
        assert_eq!(
            verify(&path).unwrap_err().to_string(),
            "record 6: prev_hash does not match record 5 (record removed, inserted or reordered)"
        );
    }

    #[test]
    fn perfectly_chained_forged_line_breaks_its_successor() {
        let dir = tempfile::tempdir().unwrap();
        let path = log_with(dir.path(), 10);
        let records = read_records(&path).unwrap();
        let mut all = lines(&path);
        all.insert(5, forged_line(6, &records[4].hash));
        write_lines(&path, &all);
        assert_eq!(
            tampered(&path),
            (
                7,
                6,
                "seq 6 follows 6 (record inserted or reordered)".to_string()
            )
        );
    }

    #[test]
    fn wrong_genesis_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        write_lines(&path, &[forged_line(1, &"cd".repeat(32))]);
        assert_eq!(
            tampered(&path),
            (
                1,
                1,
                "prev_hash is not the genesis hash (records removed before it)".to_string()
            )
        );
    }

    fn append_torn_tail(path: &Path) -> u64 {
        let torn = br#"{"seq":4,"time":"2025-01-02T03:04:05.678Z","request_"#;
        let mut file = OpenOptions::new().append(true).open(path).unwrap();
        file.write_all(torn).unwrap();
        torn.len() as u64
    }

    #[test]
    fn torn_final_line_is_reported_and_repaired_by_the_appender() {
        let dir = tempfile::tempdir().unwrap();
        let path = log_with(dir.path(), 3);
        let torn = append_torn_tail(&path);
        let summary = verify(&path).unwrap();
        assert_eq!(summary.records, 3);
        assert_eq!(summary.truncated_final_record, Some(torn));
        assert!(summary.to_string().contains("truncated final record"));
        assert_eq!(read_records(&path).unwrap().len(), 3);

        let log = AuditLog::open(&path).unwrap();
        assert_eq!(log.repaired_torn_bytes(), torn);
        log.append(record("bob", "Decrypt", &[KEY_A])).unwrap();
        let summary = verify(&path).unwrap();
        assert_eq!(summary.records, 4);
        assert_eq!(summary.truncated_final_record, None);
    }

    #[test]
    fn torn_tail_written_behind_an_open_handle_is_repaired_on_append() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let log = AuditLog::open(&path).unwrap();
        log.append(record("bob", "Decrypt", &[KEY_A])).unwrap();
        let torn = append_torn_tail(&path);
        log.append(record("bob", "Decrypt", &[KEY_A])).unwrap();
        assert_eq!(log.repaired_torn_bytes(), torn);
        assert_eq!(verify(&path).unwrap().records, 2);
    }

    #[test]
    fn torn_only_line_is_truncated_to_an_empty_log() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        std::fs::write(&path, b"{\"seq\":1,\"ti").unwrap();
        assert_eq!(verify(&path).unwrap().truncated_final_record, Some(12));
        let log = AuditLog::open(&path).unwrap();
        log.append(record("bob", "Decrypt", &[KEY_A])).unwrap();
        let records = read_records(&path).unwrap();
        assert_eq!(records.len(), 1);
        assert_eq!(records[0].seq, 1);
        assert_eq!(records[0].prev_hash, GENESIS_HASH);
    }

    #[test]
    fn torn_line_that_is_not_last_is_malformed() {
        let dir = tempfile::tempdir().unwrap();
        let path = log_with(dir.path(), 3);
        append_torn_tail(&path);
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(b"\n")
            .unwrap();
        match verify(&path) {
            Err(AuditError::Malformed { line, problem }) => {
                assert_eq!(line, 4);
                assert!(problem.starts_with("not an audit record"), "{problem}");
            }
            other => panic!("expected Malformed, got {other:?}"),
        }
    }

    #[test]
    fn malformed_last_line_makes_the_appender_fail_closed() {
        let dir = tempfile::tempdir().unwrap();
        let path = log_with(dir.path(), 3);
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(b"garbage\n")
            .unwrap();
        match AuditLog::open(&path) {
            Err(AuditError::Malformed { line, problem }) => {
                assert_eq!(line, 4);
                assert!(problem.contains("refusing to append"), "{problem}");
            }
            other => panic!("expected Malformed, got {other:?}"),
        }
    }

    #[test]
    fn long_records_and_long_torn_tails_are_found_past_the_first_window() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let big: BTreeMap<String, String> = (0..400)
            .map(|i| (format!("k{i:04}"), "v".repeat(20)))
            .collect();
        {
            let log = AuditLog::open(&path).unwrap();
            for _ in 0..2 {
                let mut rec = record("bob", "Encrypt", &[KEY_A]);
                rec.encryption_context = Some(big.clone());
                log.append(rec).unwrap();
            }
        }
        let torn = vec![b'x'; 3 * TAIL_WINDOW as usize];
        OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(&torn)
            .unwrap();
        let log = AuditLog::open(&path).unwrap();
        assert_eq!(log.repaired_torn_bytes(), torn.len() as u64);
        log.append(record("bob", "Encrypt", &[KEY_A])).unwrap();
        assert_eq!(verify(&path).unwrap().records, 3);
    }

    #[test]
    fn two_handles_interleaving_still_chain() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let cli = AuditLog::open(&path).unwrap();
        let server = AuditLog::open(&path).unwrap();
        for i in 0..20 {
            let log = if i % 3 == 0 { &cli } else { &server };
            log.append(record("app", "Encrypt", &[KEY_A])).unwrap();
        }
        assert_eq!(verify(&path).unwrap().records, 20);
    }

    #[test]
    fn concurrent_handles_in_threads_still_chain() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        std::thread::scope(|s| {
            for t in 0..4 {
                let path = &path;
                s.spawn(move || {
                    let log = AuditLog::open(path).unwrap();
                    for _ in 0..250 {
                        log.append(record(&format!("proc{t}"), "Encrypt", &[KEY_A]))
                            .unwrap();
                    }
                });
            }
        });
        assert_eq!(verify(&path).unwrap().records, 1000);
    }

    #[test]
    fn eight_threads_share_one_handle() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let log = Arc::new(AuditLog::open(&path).unwrap());
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let log = Arc::clone(&log);
                std::thread::spawn(move || {
                    for _ in 0..500 {
                        log.append(record(&format!("t{t}"), "ReEncrypt", &[KEY_A, KEY_B]))
                            .unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(verify(&path).unwrap().records, 4000);
        let report = report(&path, &ReportFilter::default()).unwrap();
        assert_eq!(report.rows.len(), 16);
        assert!(report.rows.iter().all(|r| r.count == 500));
    }

    #[test]
    fn durable_log_appends_and_syncs() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let log = AuditLog::open_with(&path, AuditOptions { durable: true }).unwrap();
        log.append(record("bob", "Encrypt", &[KEY_A])).unwrap();
        log.sync().unwrap();
        assert_eq!(verify(&path).unwrap().records, 1);
        assert_eq!(log.path(), path.as_path());
    }

    #[cfg(unix)]
    #[test]
    fn new_log_is_private_to_its_owner() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = log_with(dir.path(), 1);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn missing_file_is_an_io_error_with_its_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nope.log");
        match verify(&path) {
            Err(AuditError::Io { path: p, source }) => {
                assert_eq!(p, path);
                assert_eq!(source.kind(), io::ErrorKind::NotFound);
            }
            other => panic!("expected Io, got {other:?}"),
        }
        let missing_dir = dir.path().join("no/such/dir/audit.log");
        assert!(matches!(
            AuditLog::open(&missing_dir),
            Err(AuditError::Io { .. })
        ));
    }

    #[test]
    fn audit_failure_fails_the_operation_as_internal() {
        let e = AuditError::Malformed {
            line: 3,
            problem: "x".to_string(),
        };
        let kms: KmsError = e.into();
        assert_eq!(kms.code, ErrorCode::Internal);
        assert_eq!(kms.message, "audit log: line 3: x");
    }

    #[test]
    fn audit_log_is_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<AuditLog>();
    }

    /// Adding a field to the record must be reviewed: none may carry
    /// plaintext, data keys, secrets or ciphertext.
    #[test]
    fn record_fields_are_the_reviewed_set() {
        let json = serde_json::to_value(AuditRecord::default()).unwrap();
        let fields: Vec<&str> = json
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        let mut expected = vec![
            "seq",
            "time",
            "request_id",
            "principal",
            "operation",
            "keys",
            "encryption_context",
            "destination_encryption_context",
            "decision",
            "decided_by",
            "outcome",
            "source_ip",
            "user_agent",
            "prev_hash",
            "hash",
        ];
        expected.sort_unstable();
        let mut fields = fields;
        fields.sort_unstable();
        assert_eq!(fields, expected);
        let key = serde_json::to_value(AuditKey {
            arn: KEY_A.to_string(),
            version: Some(2),
        })
        .unwrap();
        let mut key_fields: Vec<&String> = key.as_object().unwrap().keys().collect();
        key_fields.sort_unstable();
        assert_eq!(key_fields, ["arn", "version"]);
    }

    fn at(rec: AuditRecord, time: &str) -> AuditRecord {
        AuditRecord {
            time: time.to_string(),
            ..rec
        }
    }

    fn denied(rec: AuditRecord) -> AuditRecord {
        AuditRecord {
            decision: DECISION_DENY.to_string(),
            decided_by: "policy.json#implicit-deny".to_string(),
            outcome: ErrorCode::AccessDenied.as_str().to_string(),
            ..rec
        }
    }

    fn failed(rec: AuditRecord) -> AuditRecord {
        AuditRecord {
            outcome: ErrorCode::InvalidCiphertext.as_str().to_string(),
            ..rec
        }
    }

    fn report_log(dir: &Path) -> PathBuf {
        let path = dir.join("audit.log");
        let log = AuditLog::open(&path).unwrap();
        let t1 = "2025-01-01T10:00:00.000Z";
        let t2 = "2025-01-02T10:00:00.000Z";
        let t3 = "2025-01-03T10:00:00.000Z";
        for rec in [
            at(record("alice", "Encrypt", &[KEY_A]), t1),
            at(record("alice", "Encrypt", &[KEY_A]), t2),
            at(denied(record("alice", "Encrypt", &[KEY_A])), t3),
            at(failed(record("alice", "Decrypt", &[KEY_A])), t2),
            at(record("bob", "ReEncrypt", &[KEY_A, KEY_B]), t3),
            at(record("bob", "ReEncrypt", &[KEY_B, KEY_B]), t1),
            at(denied(record("mallory", "Decrypt", &[KEY_B])), t2),
            at(record("alice", "ListKeys", &[]), t1),
        ] {
            log.append(rec).unwrap();
        }
        path
    }

    fn row(key: &str, principal: &str, op: &str, counts: [u64; 3], last: &str) -> UsageRow {
        UsageRow {
            key: key.to_string(),
            principal: principal.to_string(),
            operation: op.to_string(),
            count: counts[0],
            denied: counts[1],
            errors: counts[2],
            last_used: DateTime::parse_from_rfc3339(last)
                .unwrap()
                .with_timezone(&Utc),
        }
    }

    #[test]
    fn report_counts_per_key_principal_and_operation() {
        let dir = tempfile::tempdir().unwrap();
        let path = report_log(dir.path());
        let report = report(&path, &ReportFilter::default()).unwrap();
        assert_eq!(
            report.rows,
            vec![
                row(
                    NO_KEY,
                    "alice",
                    "ListKeys",
                    [1, 0, 0],
                    "2025-01-01T10:00:00Z"
                ),
                row(KEY_A, "alice", "Decrypt", [1, 0, 1], "2025-01-02T10:00:00Z"),
                row(KEY_A, "alice", "Encrypt", [3, 1, 0], "2025-01-03T10:00:00Z"),
                row(KEY_A, "bob", "ReEncrypt", [1, 0, 0], "2025-01-03T10:00:00Z"),
                row(KEY_B, "bob", "ReEncrypt", [2, 0, 0], "2025-01-03T10:00:00Z"),
                row(
                    KEY_B,
                    "mallory",
                    "Decrypt",
                    [1, 1, 0],
                    "2025-01-02T10:00:00Z"
                ),
            ]
        );
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["rows"][2]["last_used"], "2025-01-03T10:00:00Z");
        assert_eq!(json["rows"][2]["denied"], 1);
    }

    #[test]
    fn report_filters_by_time_key_and_principal() {
        let dir = tempfile::tempdir().unwrap();
        let path = report_log(dir.path());
        let since = DateTime::parse_from_rfc3339("2025-01-02T10:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let r = report(
            &path,
            &ReportFilter {
                since: Some(since),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(
            r.rows,
            vec![
                row(KEY_A, "alice", "Decrypt", [1, 0, 1], "2025-01-02T10:00:00Z"),
                row(KEY_A, "alice", "Encrypt", [2, 1, 0], "2025-01-03T10:00:00Z"),
                row(KEY_A, "bob", "ReEncrypt", [1, 0, 0], "2025-01-03T10:00:00Z"),
                row(KEY_B, "bob", "ReEncrypt", [1, 0, 0], "2025-01-03T10:00:00Z"),
                row(
                    KEY_B,
                    "mallory",
                    "Decrypt",
                    [1, 1, 0],
                    "2025-01-02T10:00:00Z"
                ),
            ]
        );

        let key_b_only = vec![
            row(KEY_B, "bob", "ReEncrypt", [2, 0, 0], "2025-01-03T10:00:00Z"),
            row(
                KEY_B,
                "mallory",
                "Decrypt",
                [1, 1, 0],
                "2025-01-02T10:00:00Z",
            ),
        ];
        for key in [
            KEY_B,
            "bbbbbbbb-0000-0000-0000-000000000002",
            "key/bbbbbbbb-0000-0000-0000-000000000002",
        ] {
            let filter = ReportFilter {
                key: Some(key.to_string()),
                ..Default::default()
            };
            assert_eq!(report(&path, &filter).unwrap().rows, key_b_only, "{key}");
        }
        let partial_id = ReportFilter {
            key: Some("0000-000000000002".to_string()),
            ..Default::default()
        };
        assert_eq!(report(&path, &partial_id).unwrap().rows, vec![]);

        let bob = ReportFilter {
            principal: Some("bob".to_string()),
            key: Some(KEY_A.to_string()),
            ..Default::default()
        };
        assert_eq!(
            report(&path, &bob).unwrap().rows,
            vec![row(
                KEY_A,
                "bob",
                "ReEncrypt",
                [1, 0, 0],
                "2025-01-03T10:00:00Z"
            )]
        );
    }

    #[test]
    fn report_table_is_aligned() {
        let report = UsageReport {
            rows: vec![
                row("k1", "alice", "Encrypt", [12, 1, 0], "2025-01-03T10:00:00Z"),
                row(
                    NO_KEY,
                    "bob",
                    "ListKeys",
                    [3, 0, 2],
                    "2025-01-01T10:00:00.5Z",
                ),
            ],
        };
        assert_eq!(
            report.to_table(),
            concat!(
                "KEY  PRINCIPAL  OPERATION  COUNT  DENIED  ERRORS  LAST USED\n",
                "k1   alice      Encrypt       12       1       0  2025-01-03T10:00:00.000Z\n",
                "-    bob        ListKeys       3       0       2  2025-01-01T10:00:00.500Z\n",
            )
        );
    }

    #[test]
    fn report_rejects_a_bad_time() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        AuditLog::open(&path)
            .unwrap()
            .append(at(record("bob", "Encrypt", &[KEY_A]), "yesterday"))
            .unwrap();
        assert!(matches!(
            report(&path, &ReportFilter::default()),
            Err(AuditError::Malformed { line: 1, .. })
        ));
    }

    #[test]
    fn last_use_counts_every_attempt_per_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = report_log(dir.path());
        let last = last_use_by_key(&path).unwrap();
        let t = |s: &str| DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc);
        assert_eq!(
            last,
            HashMap::from([
                (KEY_A.to_string(), t("2025-01-03T10:00:00Z")),
                (KEY_B.to_string(), t("2025-01-03T10:00:00Z")),
            ])
        );
    }
}

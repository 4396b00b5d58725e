//! The append handle: group commit under an exclusive `flock`, resync with
//! other writers, and repair of a torn final line.

use super::checkpoint::{Checkpoint, Checkpointer};
use super::record::{encode_line, AuditRecord, DECISION_ALLOW, GENESIS_HASH, OUTCOME_SUCCESS};
use super::usage::{KeyUsage, Snapshot};
use super::{io_error, AuditError};
use crate::root::RootKey;
use chrono::{SecondsFormat, Utc};
use fs4::fs_std::FileExt;
use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::{Mutex, MutexGuard};

/// First read size when looking for the last line of the file.
pub(super) const TAIL_WINDOW: u64 = 4096;

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
    /// The usage index, loaded on first use (see `usage.rs`).
    usage: Option<Usage>,
    /// The sealed checkpoint, for a trail inside a keystore.
    checkpoint: Option<Checkpointer>,
}

/// The usage index and the end of the trail it has taken in.
struct Usage {
    covered: Snapshot,
    /// Records taken in since the snapshot was last saved.
    unsaved: u64,
}

/// Save the usage index after this many records (the trail is the truth;
/// the snapshot only shortens the replay of a later process).
const SAVE_USAGE_EVERY: u64 = 4096;

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

impl Drop for AuditLog {
    fn drop(&mut self) {
        let state = self.lock_state();
        if let Some(usage) = state.usage.as_ref().filter(|u| u.unsaved > 0) {
            // Best effort: a later process replays what the snapshot misses.
            let _ = save_usage(&self.path, &usage.covered);
        }
    }
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
    pub(crate) fn open_with(path: &Path, options: AuditOptions) -> Result<AuditLog, AuditError> {
        AuditLog::open_in_keystore(path, options, None)
    }

    /// Opens the audit file of a keystore: with `root`, every group commit
    /// also rewrites the sealed checkpoint (`audit.checkpoint` beside the
    /// file) with the `seq` and `hash` of the last record, so cutting
    /// records off the end is detected ([`super::verify_sealed`]).
    ///
    /// A torn final line is left alone until the first append, so that
    /// `audit verify` sees the file as it was found.
    pub(crate) fn open_in_keystore(
        path: &Path,
        options: AuditOptions,
        root: Option<Arc<dyn RootKey>>,
    ) -> Result<AuditLog, AuditError> {
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
                usage: None,
                checkpoint: root.map(|root| Checkpointer::new(path, root)),
            }),
        };
        {
            let mut state = log.lock_state();
            let ChainState { file, chain, .. } = &mut *state;
            let _lock = FileLock::acquire(file, &log.path)?;
            // Fails closed on a last line that is not a record. The first
            // append re-reads the tail anyway (`end` is `None`), repairs it
            // and compares it with the checkpoint.
            let tail = read_tail(file, &log.path)?;
            chain.seq = tail.seq;
            chain.last_hash = tail.hash;
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
    pub(crate) fn append_all(&self, records: Vec<AuditRecord>) -> Result<(), AuditError> {
        if records.is_empty() {
            return Ok(());
        }
        let mut state = self.lock_state();
        let ChainState {
            file,
            chain,
            usage,
            checkpoint,
        } = &mut *state;
        let _lock = FileLock::acquire(file, &self.path)?;
        let mut len = file.metadata().map_err(io_error(&self.path))?.len();
        let mut notes = Vec::new();
        if chain.end != Some(len) {
            if let Some(repair) = resync(file, &self.path, chain)? {
                notes.push(repair.record(&self.path, &records[0]));
            }
            len = chain.end.expect("resync sets the end");
            if let Some(cut) = checkpoint
                .as_ref()
                .and_then(|cp| cp.check(chain.seq, &chain.last_hash))
            {
                eprintln!(
                    "rewrap: audit trail {}: {cut}; recording it before appending",
                    self.path.display()
                );
                notes.push(note_record(&records[0], "AuditTrailCut", cut.parameters()));
            }
            if chain.seq > 0 && checkpoint.as_ref().is_some_and(|cp| !cp.exists()) {
                // Deleted, or a trail older than checkpoints: either way it is
                // said in the trail, since nothing can check the end before.
                eprintln!(
                    "rewrap: audit trail {}: the sealed checkpoint is missing after record {}; \
                     recording it and starting a new one",
                    self.path.display(),
                    chain.seq
                );
                let params = BTreeMap::from([
                    ("FoundSeq".to_string(), chain.seq.to_string()),
                    ("ProcessId".to_string(), std::process::id().to_string()),
                ]);
                notes.push(note_record(&records[0], "AuditCheckpointMissing", params));
            }
        }
        if let Some(usage) = usage.as_mut() {
            catch_up(file, &self.path, usage, (len, chain.seq, &chain.last_hash))?;
        }
        let records: Vec<AuditRecord> = notes.into_iter().chain(records).collect();
        // Until the write succeeds the end of the chain is unknown; a failed
        // or partial write makes the next append re-read (and repair) the tail.
        chain.end = None;
        chain.buf.clear();
        let mut seq = chain.seq;
        let mut last_hash = chain.last_hash.clone();
        let mut written = Vec::with_capacity(records.len());
        for mut record in records {
            seq += 1;
            record.seq = seq;
            if record.time.is_empty() {
                record.time = now_rfc3339();
            }
            record.prev_hash = std::mem::take(&mut last_hash);
            record.hash.clear();
            last_hash = encode_line(&record, &mut chain.buf);
            written.push(record);
        }
        (&*file)
            .write_all(&chain.buf)
            .map_err(io_error(&self.path))?;
        if self.durable {
            file.sync_data().map_err(io_error(&self.path))?;
        }
        let end = len + chain.buf.len() as u64;
        chain.end = Some(end);
        chain.seq = seq;
        chain.last_hash.clone_from(&last_hash);
        if let Some(cp) = checkpoint.as_mut() {
            cp.write(&Checkpoint {
                seq,
                hash: last_hash.clone(),
            })?;
        }
        if let Some(usage) = usage.as_mut() {
            for record in &written {
                usage.covered.index.apply(record);
            }
            usage.covered.offset = end;
            usage.covered.seq = seq;
            usage.covered.hash = last_hash;
            usage.unsaved += written.len() as u64;
            if usage.unsaved >= SAVE_USAGE_EVERY && save_usage(&self.path, &usage.covered).is_ok() {
                usage.unsaved = 0;
            }
        }
        Ok(())
    }

    /// Flushes every appended record to stable storage (`fdatasync`).
    pub fn sync(&self) -> Result<(), AuditError> {
        let state = self.lock_state();
        state.file.sync_data().map_err(io_error(&self.path))
    }

    /// What the usage index knows of the key `arn`, with every record any
    /// process has appended so far taken in.
    pub(crate) fn key_usage(&self, arn: &str) -> Result<KeyUsage, AuditError> {
        let mut state = self.lock_state();
        let ChainState { file, usage, .. } = &mut *state;
        let _lock = FileLock::acquire(file, &self.path)?;
        let tail = read_tail(file, &self.path)?;
        let usage = match usage {
            Some(usage) => usage,
            None => usage.insert(load_usage(&self.path)),
        };
        catch_up(file, &self.path, usage, (tail.end, tail.seq, &tail.hash))?;
        Ok(usage.covered.index.key(arn))
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

/// Learns `seq` and `hash` of the last complete line and repairs a torn
/// tail: a complete record that only lost its `\n` gets it back, anything
/// else is cut off. Either way the repair is returned, to be recorded in the
/// trail itself and said on stderr: it is never silent.
/// The caller holds the exclusive file lock.
fn resync(file: &File, path: &Path, chain: &mut Chain) -> Result<Option<Repair>, AuditError> {
    let tail = read_tail(file, path)?;
    let mut repair = None;
    chain.end = Some(tail.end);
    chain.seq = tail.seq;
    chain.last_hash.clone_from(&tail.hash);
    if tail.torn_bytes > 0 {
        let torn = read_range(file, path, tail.end, tail.end + tail.torn_bytes)?;
        chain.repaired_torn_bytes += tail.torn_bytes;
        if let Some(record) = whole_record(&torn, tail.seq, &tail.hash) {
            (&*file).write_all(b"\n").map_err(io_error(path))?;
            chain.end = Some(tail.end + tail.torn_bytes + 1);
            chain.seq = record.seq;
            chain.last_hash = record.hash;
            repair = Some(Repair {
                bytes: tail.torn_bytes,
                action: "newline restored",
                seq: record.seq,
            });
        } else {
            file.set_len(tail.end).map_err(io_error(path))?;
            repair = Some(Repair {
                bytes: tail.torn_bytes,
                action: "truncated",
                seq: tail.seq + 1,
            });
        }
    }
    Ok(repair)
}

/// `bytes` as the complete, correctly chained record after `seq`/`hash`.
fn whole_record(bytes: &[u8], seq: u64, hash: &str) -> Option<AuditRecord> {
    let mut record: AuditRecord = serde_json::from_slice(bytes).ok()?;
    let claimed = std::mem::take(&mut record.hash);
    let mut buf = Vec::with_capacity(bytes.len() + 1);
    let computed = encode_line(&record, &mut buf);
    let fits = computed == claimed
        && buf[..buf.len() - 1] == *bytes
        && record.seq == seq + 1
        && record.prev_hash == hash;
    record.hash = claimed;
    fits.then_some(record)
}

/// A repaired torn tail.
struct Repair {
    bytes: u64,
    action: &'static str,
    /// The `seq` of the record that was torn.
    seq: u64,
}

impl Repair {
    /// The record of the repair, made by the caller of the append that
    /// found it; also said on stderr.
    fn record(&self, path: &Path, by: &AuditRecord) -> AuditRecord {
        eprintln!(
            "rewrap: audit trail {}: the final record (seq {}) was torn ({} bytes without a newline): {}; \
             recorded in the trail as RepairAuditTail",
            path.display(),
            self.seq,
            self.bytes,
            self.action
        );
        let params = BTreeMap::from([
            ("Action".to_string(), self.action.to_string()),
            ("TornBytes".to_string(), self.bytes.to_string()),
            ("TornSeq".to_string(), self.seq.to_string()),
            ("ProcessId".to_string(), std::process::id().to_string()),
        ]);
        note_record(by, "RepairAuditTail", params)
    }
}

/// A record the writer adds on its own (a repair, a cut it found), made in
/// the name of the caller whose append found it.
fn note_record(by: &AuditRecord, operation: &str, params: BTreeMap<String, String>) -> AuditRecord {
    AuditRecord {
        request_id: by.request_id.clone(),
        principal: by.principal.clone(),
        operation: operation.to_string(),
        decision: DECISION_ALLOW.into(),
        decided_by: "audit writer".into(),
        outcome: OUTCOME_SUCCESS.into(),
        source_ip: by.source_ip.clone(),
        user_agent: by.user_agent.clone(),
        access_key_id: by.access_key_id.clone(),
        request_parameters: Some(params),
        ..AuditRecord::default()
    }
}

/// The usage snapshot's file, beside the audit file.
fn usage_path(path: &Path) -> PathBuf {
    path.with_file_name("usage.index")
}

/// The saved usage index, or an empty one (replayed from the first record).
fn load_usage(path: &Path) -> Usage {
    let covered = std::fs::read(usage_path(path))
        .ok()
        .and_then(|bytes| serde_json::from_slice::<Snapshot>(&bytes).ok())
        .unwrap_or_else(empty_snapshot);
    Usage {
        covered,
        unsaved: 0,
    }
}

fn empty_snapshot() -> Snapshot {
    Snapshot {
        hash: GENESIS_HASH.to_string(),
        ..Snapshot::default()
    }
}

fn save_usage(path: &Path, covered: &Snapshot) -> Result<(), AuditError> {
    let bytes = serde_json::to_vec(covered).map_err(|e| AuditError::Malformed {
        line: 0,
        problem: format!("usage index: {e}"),
    })?;
    let target = usage_path(path);
    crate::keystore::write_atomic(&target, &bytes).map_err(|e| AuditError::Io {
        path: target,
        source: std::io::Error::other(e.to_string()),
    })
}

/// Takes in the records between what `usage` covers and `end`. If they do
/// not chain onto it (the trail was cut or rewritten, or the snapshot is
/// not of this trail), the index is rebuilt from the first record.
fn catch_up(
    file: &File,
    path: &Path,
    usage: &mut Usage,
    end: (u64, u64, &str),
) -> Result<(), AuditError> {
    let (end, seq, hash) = end;
    let covered = &usage.covered;
    if covered.offset == end && covered.seq == seq && covered.hash == hash {
        return Ok(());
    }
    if covered.offset < end {
        let before = covered.seq;
        let mut next = std::mem::take(&mut usage.covered);
        if replay(file, path, &mut next, end, true)? && next.seq == seq && next.hash == hash {
            usage.unsaved += next.seq - before;
            usage.covered = next;
            return Ok(());
        }
    }
    let mut next = empty_snapshot();
    replay(file, path, &mut next, end, false)?;
    usage.unsaved = next.seq.max(1);
    usage.covered = next;
    Ok(())
}

/// Applies the complete records in `[into.offset, end)` to `into`. With
/// `strict`, returns `false` (leaving `into` half-applied) as soon as a record
/// does not chain onto the one before; without, takes in every record.
fn replay(
    file: &File,
    path: &Path,
    into: &mut Snapshot,
    end: u64,
    strict: bool,
) -> Result<bool, AuditError> {
    use std::io::BufRead;
    let mut reader = file;
    reader
        .seek(SeekFrom::Start(into.offset))
        .map_err(io_error(path))?;
    let mut lines = std::io::BufReader::with_capacity(256 * 1024, reader.take(end - into.offset));
    let mut line = Vec::with_capacity(1024);
    loop {
        line.clear();
        let n = lines.read_until(b'\n', &mut line).map_err(io_error(path))?;
        if n == 0 || line.last() != Some(&b'\n') {
            return Ok(true);
        }
        let Ok(record) = serde_json::from_slice::<AuditRecord>(&line[..n - 1]) else {
            if strict {
                return Ok(false);
            }
            into.offset += n as u64;
            continue;
        };
        if strict && (record.seq != into.seq + 1 || record.prev_hash != into.hash) {
            return Ok(false);
        }
        into.index.apply(&record);
        into.offset += n as u64;
        into.seq = record.seq;
        into.hash = record.hash;
    }
}

/// Now, as the audit log writes times.
fn now_rfc3339() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true)
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

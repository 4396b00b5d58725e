//! The append handle: group commit under an exclusive `flock`, resync with
//! other writers, and repair of a torn final line.

use super::record::{encode_line, AuditRecord, GENESIS_HASH};
use super::{io_error, AuditError};
use chrono::{SecondsFormat, Utc};
use fs4::fs_std::FileExt;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
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
    pub(crate) fn open_with(path: &Path, options: AuditOptions) -> Result<AuditLog, AuditError> {
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
    pub(crate) fn append_all(&self, records: Vec<AuditRecord>) -> Result<(), AuditError> {
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

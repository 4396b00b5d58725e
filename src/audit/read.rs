//! Reading the audit file without a lock, line by line.

use super::record::{parse_record, AuditRecord};
use super::segment::{self, Part};
use super::{io_error, AuditError};
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

/// The lines of an audit file, read without a lock.
pub(super) struct Lines {
    reader: BufReader<File>,
    path: PathBuf,
    line: u64,
    buf: Vec<u8>,
}

/// One line, without its `\n`.
pub(super) enum Line<'a> {
    Complete(u64, &'a [u8]),
    /// The last bytes of the file, with no `\n`: a torn final line.
    Torn(u64),
    End,
}

impl Lines {
    /// The lines of `file`, opened from `path` (named in errors).
    pub(super) fn from_file(file: File, path: &Path) -> Lines {
        Lines {
            reader: BufReader::with_capacity(256 * 1024, file),
            path: path.to_path_buf(),
            line: 0,
            buf: Vec::with_capacity(1024),
        }
    }

    pub(super) fn next_line(&mut self) -> Result<Line<'_>, AuditError> {
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

    /// Calls `visit` with every complete record of the trail: those of the
    /// closed parts, sealed segments and retired files (with their `seq`
    /// as line number), then those of the active file `path` (with their
    /// line number) that no closed part holds; ignores a torn final line.
    pub(super) fn for_each_record(
        path: &Path,
        mut visit: impl FnMut(u64, AuditRecord) -> Result<(), AuditError>,
    ) -> Result<(), AuditError> {
        // The active file first: a close after this leaves its records in
        // the file opened here, and perhaps in a part listed next too.
        // None: a crash between retiring it and creating the new one.
        let active = match File::open(path) {
            Ok(file) => Some(file),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(io_error(path)(e)),
        };
        let mut closed_end = 0;
        for part in segment::parts(path)? {
            match part {
                Part::Sealed(seg) => {
                    let mut reader = segment::SegmentReader::open(&seg)?;
                    while let Some(record) = reader.next_record()? {
                        if record.seq > closed_end {
                            closed_end = record.seq;
                            visit(record.seq, record)?;
                        }
                    }
                }
                Part::Retired(retired, file) => {
                    let mut lines = Lines::from_file(file, &retired);
                    while let Line::Complete(line, bytes) = lines.next_line()? {
                        let record = parse_record(line, bytes)?;
                        if record.seq > closed_end {
                            closed_end = record.seq;
                            visit(record.seq, record)?;
                        }
                    }
                }
            }
        }
        let Some(active) = active else {
            return Ok(());
        };
        let mut lines = Lines::from_file(active, path);
        loop {
            match lines.next_line()? {
                Line::Complete(line, bytes) => {
                    let record = parse_record(line, bytes)?;
                    if record.seq > closed_end || closed_end == 0 {
                        visit(line, record)?;
                    }
                }
                Line::Torn(_) | Line::End => return Ok(()),
            }
        }
    }
}

/// Every complete record of the trail (closed segments, then the active
/// file `path`), in order; a torn final line is skipped. Does not verify the chain (use [`verify`](super::verify())).
pub fn read_records(path: &Path) -> Result<Vec<AuditRecord>, AuditError> {
    let mut records = Vec::new();
    Lines::for_each_record(path, |_, record| {
        records.push(record);
        Ok(())
    })?;
    Ok(records)
}

//! Closed segments: a stretch of the chain, compacted and compressed.
//!
//! The trail is the closed segments in `seq` order (`audit.segments/`
//! beside the active file), then the active file `audit.log` (JSON lines,
//! see the module doc of `audit`). When the active file reaches the
//! segment size (or its first record the segment age), the writer closes
//! it: its records become one closed segment and the active file starts
//! empty, the chain running on across the boundary (the first record of
//! the new active file has the last segment's last hash as `prev_hash`).
//!
//! Closing is two steps, so that no append waits for a compression. Under
//! the writers' lock the active file is only *retired*: synced, renamed
//! into `audit.segments/<first seq, 20 digits>.log` (the same JSON lines,
//! see [`Part::Retired`]) and replaced by a new empty active file. Then,
//! without any lock, a sealer (a background thread of the writer, or the
//! caller of an explicit close) compacts and compresses the retired file
//! into the sealed segment below, syncs it, and only then removes the
//! retired file. Readers take the trail as the sealed and retired parts in
//! `seq` order, then the active file; a crash at any instant leaves every
//! record in a retired file, a sealed segment, or both (readers skip a
//! record already read), so nothing is lost and nothing is read twice.
//!
//! A closed (sealed) segment is named after its first `seq`,
//! `audit.segments/<first seq, 20 digits>.seg`:
//!
//! ```text
//! offset  size  field
//! 0       8     magic "RWAUDSG1"
//! 8       ...   raw DEFLATE stream of the body
//! ```
//!
//! The body is JSON lines, one [`Entry`] each: first the header (first
//! `seq`, `prev_hash` of the first record, record count, hash of the last
//! record), then string and context declarations and records in order.
//! A record names its principal, operation, keys, decision, outcome and
//! caller fields by the id of a string declared once before in the segment
//! (ids count from 0 in declaration order), and its encryption contexts by
//! the id of a declared context. `seq` and `prev_hash` are implicit (they
//! follow from the header), and of `hash` only the first
//! [`SHORT_HASH`] hex digits are kept: a reader rebuilds every record,
//! recomputes its canonical line and hash, and checks the short hash
//! (naming the record that was changed) and, at the end, the full hash of
//! the last record in the header. A record decodes to exactly the
//! [`AuditRecord`] that was appended, so its hash, and so the chain, is the
//! one the active file had.
//!
//! Test vectors: `tests/vectors/audit_segment/` (a valid segment using
//! every field, with its records and body, and damaged ones with the exact
//! error each must give), read by the unit tests of `audit`.

use super::record::{encode_line, AuditKey, AuditRecord};
use super::AuditError;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, Read, Seek, Write};
use std::path::{Path, PathBuf};

/// The first bytes of a closed segment.
pub(super) const MAGIC: &[u8; 8] = b"RWAUDSG1";
/// Hex digits of each record's hash kept in a closed segment.
pub(super) const SHORT_HASH: usize = 8;
/// The folder of closed segments, beside the active file.
pub(super) const SEGMENTS_DIR: &str = "audit.segments";
/// The extension of a sealed segment.
const SEALED_EXT: &str = "seg";
/// The extension of a retired active file waiting to be sealed.
const RETIRED_EXT: &str = "log";

/// The header of a closed segment: where it sits in the chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SegmentHeader {
    /// `seq` of the first record.
    pub first_seq: u64,
    /// `prev_hash` of the first record.
    pub prev_hash: String,
    /// Number of records.
    pub records: u64,
    /// `hash` of the last record.
    pub last_hash: String,
}

impl SegmentHeader {
    /// `seq` of the last record.
    pub fn last_seq(&self) -> u64 {
        self.first_seq + self.records - 1
    }
}

/// One line of a segment body.
#[derive(Debug, Serialize, Deserialize)]
enum Entry {
    #[serde(rename = "H")]
    Header(SegmentHeader),
    /// Declares the next string id.
    #[serde(rename = "s")]
    Str(String),
    /// Declares the next context id.
    #[serde(rename = "c")]
    Context(BTreeMap<String, String>),
    #[serde(rename = "r")]
    Record(Compact),
}

/// A record with its repeated values replaced by ids.
#[derive(Debug, Serialize, Deserialize)]
struct Compact {
    h: String,
    t: String,
    i: String,
    p: u32,
    o: u32,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    k: Vec<(u32, Option<u32>)>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ec: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    dc: Option<u32>,
    d: u32,
    b: u32,
    r: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ip: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ua: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ak: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    rp: Option<BTreeMap<String, String>>,
    /// [`AuditRecord::object`] (each distinct, so not declared).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ob: Option<String>,
}

/// [`Entry::Record`] as the sealer writes it: the same JSON, borrowing
/// the record's values instead of copying them.
#[derive(Serialize)]
enum EntryRef<'a> {
    #[serde(rename = "r")]
    Record(CompactRef<'a>),
}

/// [`Compact`], borrowed (the field attributes must stay the same).
#[derive(Serialize)]
struct CompactRef<'a> {
    h: &'a str,
    t: &'a str,
    i: &'a str,
    p: u32,
    o: u32,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    k: Vec<(u32, Option<u32>)>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ec: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    dc: Option<u32>,
    d: u32,
    b: u32,
    r: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    ip: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ua: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ak: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    rp: Option<&'a BTreeMap<String, String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ob: Option<&'a str>,
}

/// Bytes of body gathered before they go to the compressor.
const BODY_CHUNK: usize = 64 * 1024;

/// Ids of declared values, declaring each on first use. A table that
/// reaches [`MAX_DECLARED`] entries is forgotten (ids keep counting), so a
/// trail of distinct values (each rotated file's own context) costs the
/// sealer bounded memory; a value met again after that is declared again.
struct Declared {
    limit: usize,
    strings: HashMap<String, u32>,
    next_string: u32,
    contexts: HashMap<BTreeMap<String, String>, u32>,
    next_context: u32,
}

/// Entries of a [`Declared`] table kept before it is forgotten.
pub(super) const MAX_DECLARED: usize = 1 << 16;

fn line(out: &mut Vec<u8>, entry: &Entry) {
    serde_json::to_writer(&mut *out, entry).expect("a segment entry serializes");
    out.push(b'\n');
}

impl Declared {
    fn string(&mut self, out: &mut Vec<u8>, s: &str) -> u32 {
        if let Some(&id) = self.strings.get(s) {
            return id;
        }
        if self.strings.len() >= self.limit {
            self.strings.clear();
        }
        line(out, &Entry::Str(s.to_string()));
        let id = self.next_string;
        self.next_string += 1;
        self.strings.insert(s.to_string(), id);
        id
    }

    fn context(&mut self, out: &mut Vec<u8>, c: BTreeMap<String, String>) -> u32 {
        if let Some(&id) = self.contexts.get(&c) {
            return id;
        }
        if self.contexts.len() >= self.limit {
            self.contexts.clear();
        }
        let entry = Entry::Context(c);
        line(out, &entry);
        let Entry::Context(c) = entry else {
            unreachable!("built as a context just above")
        };
        let id = self.next_context;
        self.next_context += 1;
        self.contexts.insert(c, id);
        id
    }
}

/// Writes a closed segment's bytes: the header, then records given one at
/// a time (taken by value, so their contexts move into the declarations).
/// Entries go through a small buffer into the compressor, so the body (a
/// few tens of MB for a full segment) is never held whole.
pub(super) struct SegmentWriter {
    deflate: flate2::write::DeflateEncoder<Vec<u8>>,
    body: Vec<u8>,
    ids: Declared,
}

impl SegmentWriter {
    /// A segment whose records the header describes; the caller must push
    /// exactly those records, a consecutive, chained stretch of the trail.
    pub(super) fn new(header: SegmentHeader) -> Self {
        Self::with_limit(header, MAX_DECLARED)
    }

    /// [`SegmentWriter::new`], forgetting its declarations every `limit`.
    pub(super) fn with_limit(header: SegmentHeader, limit: usize) -> Self {
        // Level 1 (fastest): on a 44 MB segment body, 1.5 % larger than
        // level 6 in a sixth of the time (sealing runs beside the requests).
        let deflate =
            flate2::write::DeflateEncoder::new(MAGIC.to_vec(), flate2::Compression::fast());
        let mut body = Vec::with_capacity(2 * BODY_CHUNK);
        line(&mut body, &Entry::Header(header));
        SegmentWriter {
            deflate,
            body,
            ids: Declared {
                limit,
                strings: HashMap::new(),
                next_string: 0,
                contexts: HashMap::new(),
                next_context: 0,
            },
        }
    }

    pub(super) fn push(&mut self, mut r: AuditRecord) {
        let (ids, body) = (&mut self.ids, &mut self.body);
        let mut opt = |s: &Option<String>| s.as_deref().map(|s| ids.string(body, s));
        let (ip, ua, ak) = (opt(&r.source_ip), opt(&r.user_agent), opt(&r.access_key_id));
        let compact = CompactRef {
            h: r.hash.get(..SHORT_HASH).unwrap_or(&r.hash),
            t: &r.time,
            i: &r.request_id,
            p: ids.string(body, &r.principal),
            o: ids.string(body, &r.operation),
            k: r.keys
                .iter()
                .map(|k| (ids.string(body, &k.arn), k.version))
                .collect(),
            ec: r.encryption_context.take().map(|c| ids.context(body, c)),
            dc: r
                .destination_encryption_context
                .take()
                .map(|c| ids.context(body, c)),
            d: ids.string(body, &r.decision),
            b: ids.string(body, &r.decided_by),
            r: ids.string(body, &r.outcome),
            ip,
            ua,
            ak,
            rp: r.request_parameters.as_ref(),
            ob: r.object.as_deref(),
        };
        serde_json::to_writer(&mut *body, &EntryRef::Record(compact))
            .expect("a segment entry serializes");
        body.push(b'\n');
        if body.len() >= BODY_CHUNK {
            self.deflate.write_all(body).expect("writing to memory");
            body.clear();
        }
    }

    /// The segment's bytes.
    pub(super) fn finish(mut self) -> Vec<u8> {
        self.deflate
            .write_all(&self.body)
            .expect("writing to memory");
        self.deflate.finish().expect("writing to memory")
    }
}

/// The bytes of a closed segment holding `records`, which must be a
/// consecutive, chained stretch of the trail (as the active file holds them).
pub(super) fn encode(records: &[AuditRecord], limit: usize) -> Vec<u8> {
    let (first, last) = (
        records.first().expect("a segment has records"),
        records.last().expect("a segment has records"),
    );
    let mut writer = SegmentWriter::with_limit(
        SegmentHeader {
            first_seq: first.seq,
            prev_hash: first.prev_hash.clone(),
            records: records.len() as u64,
            last_hash: last.hash.clone(),
        },
        limit,
    );
    for r in records {
        writer.push(r.clone());
    }
    writer.finish()
}

/// Reads a closed segment: its header, then each record, rebuilt and
/// checked against its short hash and the chain.
pub(super) struct SegmentReader {
    path: PathBuf,
    lines: std::io::BufReader<flate2::read::DeflateDecoder<std::io::BufReader<std::fs::File>>>,
    header: SegmentHeader,
    strings: Vec<String>,
    contexts: Vec<BTreeMap<String, String>>,
    next_seq: u64,
    prev_hash: String,
    buf: Vec<u8>,
    canonical: Vec<u8>,
}

impl SegmentReader {
    /// Opens the segment at `path` and reads its header.
    pub(super) fn open(path: &Path) -> Result<SegmentReader, AuditError> {
        let file = std::fs::File::open(path).map_err(super::io_error(path))?;
        let mut raw = std::io::BufReader::new(file);
        let mut magic = [0u8; 8];
        raw.read_exact(&mut magic)
            .map_err(|_| malformed(path, 0, "shorter than its magic"))?;
        if &magic != MAGIC {
            return Err(malformed(path, 0, "not a closed audit segment (bad magic)"));
        }
        let mut lines = std::io::BufReader::new(flate2::read::DeflateDecoder::new(raw));
        let mut buf = Vec::with_capacity(1024);
        let header = match read_entry(path, &mut lines, &mut buf, 0)? {
            Some(Entry::Header(h)) if h.records > 0 && h.first_seq > 0 => h,
            _ => return Err(malformed(path, 0, "no segment header")),
        };
        Ok(SegmentReader {
            path: path.to_path_buf(),
            lines,
            next_seq: header.first_seq,
            prev_hash: header.prev_hash.clone(),
            header,
            strings: Vec::new(),
            contexts: Vec::new(),
            buf,
            canonical: Vec::with_capacity(1024),
        })
    }

    /// Where the segment sits in the chain, as its header says.
    pub(super) fn header(&self) -> &SegmentHeader {
        &self.header
    }

    /// The next record, or `None` after the last one (whose hash was then
    /// checked against the header).
    pub(super) fn next_record(&mut self) -> Result<Option<AuditRecord>, AuditError> {
        loop {
            let seq = self.next_seq;
            let entry = read_entry(&self.path, &mut self.lines, &mut self.buf, seq)?;
            let compact = match entry {
                None => return self.finish(),
                Some(Entry::Str(s)) => {
                    self.strings.push(s);
                    continue;
                }
                Some(Entry::Context(c)) => {
                    self.contexts.push(c);
                    continue;
                }
                Some(Entry::Header(_)) => {
                    return Err(malformed(&self.path, seq, "a second header"))
                }
                Some(Entry::Record(c)) => c,
            };
            if seq > self.header.last_seq() {
                return Err(
                    self.tampered(seq, "more records than its header says (record inserted)")
                );
            }
            let mut record = self.rebuild(seq, compact)?;
            let short = std::mem::take(&mut record.hash);
            self.canonical.clear();
            record.hash = encode_line(&record, &mut self.canonical);
            if !record.hash.starts_with(&short) || short.len() != SHORT_HASH {
                return Err(self.tampered(
                    seq,
                    "hash mismatch (record changed, removed, inserted or reordered)",
                ));
            }
            self.next_seq += 1;
            self.prev_hash.clone_from(&record.hash);
            return Ok(Some(record));
        }
    }

    fn finish(&mut self) -> Result<Option<AuditRecord>, AuditError> {
        let h = &self.header;
        if self.next_seq != h.first_seq + h.records {
            return Err(AuditError::Truncated {
                records: self.next_seq - h.first_seq,
                expected: h.records,
                problem: format!(
                    "segment {} ends at record {} but its header says it holds records {} to {} (records removed or segment truncated)",
                    self.path.display(),
                    self.next_seq - 1,
                    h.first_seq,
                    h.last_seq()
                ),
            });
        }
        if self.prev_hash != h.last_hash {
            return Err(self.tampered(
                h.last_seq(),
                "the last record's hash is not the one the segment header says (a record was changed)",
            ));
        }
        Ok(None)
    }

    fn rebuild(&self, seq: u64, c: Compact) -> Result<AuditRecord, AuditError> {
        let s = |id: u32| {
            self.strings
                .get(id as usize)
                .cloned()
                .ok_or_else(|| malformed(&self.path, seq, "names an undeclared string"))
        };
        let ctx = |id: Option<u32>| {
            id.map(|id| {
                self.contexts
                    .get(id as usize)
                    .cloned()
                    .ok_or_else(|| malformed(&self.path, seq, "names an undeclared context"))
            })
            .transpose()
        };
        let opt = |id: Option<u32>| id.map(s).transpose();
        Ok(AuditRecord {
            seq,
            time: c.t,
            request_id: c.i,
            principal: s(c.p)?,
            operation: s(c.o)?,
            keys: c
                .k
                .into_iter()
                .map(|(arn, version)| {
                    Ok(AuditKey {
                        arn: s(arn)?,
                        version,
                    })
                })
                .collect::<Result<_, AuditError>>()?,
            encryption_context: ctx(c.ec)?,
            destination_encryption_context: ctx(c.dc)?,
            decision: s(c.d)?,
            decided_by: s(c.b)?,
            outcome: s(c.r)?,
            source_ip: opt(c.ip)?,
            user_agent: opt(c.ua)?,
            access_key_id: opt(c.ak)?,
            request_parameters: c.rp,
            object: c.ob,
            prev_hash: self.prev_hash.clone(),
            hash: c.h,
        })
    }

    fn tampered(&self, seq: u64, problem: &str) -> AuditError {
        AuditError::Tampered {
            line: seq,
            seq,
            problem: format!("segment {}: {problem}", self.path.display()),
        }
    }
}

/// Every record of the closed segment at `path`, read and checked as
/// every reader reads it.
pub(super) fn read_all(path: &Path) -> Result<Vec<AuditRecord>, AuditError> {
    let mut reader = SegmentReader::open(path)?;
    let mut records = Vec::new();
    while let Some(record) = reader.next_record()? {
        records.push(record);
    }
    Ok(records)
}

/// The fuzz entry point of the closed-segment reader (see
/// `crate::fuzz::audit_segment`): `data` is a whole segment file if it
/// starts with the magic, else a segment body, compressed here as the
/// sealer compresses it. Reading must end in records or an error, never a
/// panic; what reads back re-encodes (at a small declaration limit, so
/// declarations repeat) into a segment that reads back the same records.
pub(crate) fn fuzz(data: &[u8]) {
    thread_local! {
        static DIR: tempfile::TempDir = tempfile::tempdir().expect("a temporary folder");
    }
    let file = if data.starts_with(MAGIC) {
        data.to_vec()
    } else {
        let mut file = MAGIC.to_vec();
        let mut deflate =
            flate2::write::DeflateEncoder::new(&mut file, flate2::Compression::fast());
        deflate.write_all(data).expect("writes to memory");
        deflate.finish().expect("writes to memory");
        file
    };
    DIR.with(|dir| {
        let path = dir.path().join("fuzz.seg");
        std::fs::write(&path, &file).expect("writes");
        let Ok(records) = read_all(&path) else {
            return;
        };
        assert!(!records.is_empty(), "a segment that reads has records");
        std::fs::write(&path, encode(&records, 2)).expect("writes");
        let again = read_all(&path).expect("a segment encoded from records reads back");
        assert_eq!(again, records, "records change in a re-encoded segment");
    });
}

fn malformed(path: &Path, seq: u64, problem: &str) -> AuditError {
    AuditError::Malformed {
        line: seq,
        problem: format!("segment {}: {problem}", path.display()),
    }
}

/// The next entry of a segment body; `None` at its end.
fn read_entry(
    path: &Path,
    lines: &mut impl BufRead,
    buf: &mut Vec<u8>,
    seq: u64,
) -> Result<Option<Entry>, AuditError> {
    buf.clear();
    let n = lines.read_until(b'\n', buf).map_err(|e| {
        malformed(
            path,
            seq,
            &format!("cannot decompress ({e}): segment truncated or changed"),
        )
    })?;
    if n == 0 {
        return Ok(None);
    }
    if buf.last() != Some(&b'\n') {
        return Err(malformed(
            path,
            seq,
            "ends in the middle of an entry (segment truncated)",
        ));
    }
    serde_json::from_slice(&buf[..n - 1])
        .map(Some)
        .map_err(|e| malformed(path, seq, &format!("not a segment entry ({e})")))
}

/// The folder of closed segments of the trail whose active file is `active`.
pub(super) fn segments_dir(active: &Path) -> PathBuf {
    active.with_file_name(SEGMENTS_DIR)
}

/// The file of the closed segment starting at `first_seq`.
pub(super) fn segment_path(active: &Path, first_seq: u64) -> PathBuf {
    segments_dir(active).join(format!("{first_seq:020}.{SEALED_EXT}"))
}

/// The file a retired active file whose first record is `first_seq` is
/// renamed to.
pub(super) fn retired_path(active: &Path, first_seq: u64) -> PathBuf {
    segments_dir(active).join(format!("{first_seq:020}.{RETIRED_EXT}"))
}

/// The `seq` a segment or retired file named `name` starts at, if `name`
/// is one with extension `ext`.
fn first_seq_of(name: &str, ext: &str) -> Option<u64> {
    let stem = name.strip_suffix(ext)?.strip_suffix('.')?;
    (stem.len() == 20 && stem.bytes().all(|b| b.is_ascii_digit()))
        .then(|| stem.parse().ok())
        .flatten()
}

/// The files of `audit.segments/` with extension `ext`, by first `seq`.
fn list_ext(active: &Path, ext: &str) -> Result<Vec<(u64, PathBuf)>, AuditError> {
    let dir = segments_dir(active);
    let entries = match std::fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(super::io_error(&dir)(e)),
    };
    let mut found = Vec::new();
    for entry in entries {
        let entry = entry.map_err(super::io_error(&dir))?;
        if let Some(seq) = first_seq_of(&entry.file_name().to_string_lossy(), ext) {
            found.push((seq, entry.path()));
        }
    }
    found.sort();
    Ok(found)
}

/// The sealed segments of the trail, in `seq` order: what digests list,
/// export copies and retention removes.
pub(super) fn list(active: &Path) -> Result<Vec<PathBuf>, AuditError> {
    Ok(list_ext(active, SEALED_EXT)?
        .into_iter()
        .map(|(_, path)| path)
        .collect())
}

/// One closed part of the trail.
pub(super) enum Part {
    /// A sealed segment (compacted and compressed, see the module doc).
    Sealed(PathBuf),
    /// A retired active file, not sealed yet: JSON lines exactly as the
    /// active file had them, opened when the trail was listed (so a sealer
    /// removing it meanwhile takes nothing away). Its name says its first
    /// `seq`; lines before it are records a sealed segment already holds
    /// (left by a close a crash interrupted), which readers skip.
    Retired(PathBuf, std::fs::File),
}

/// The closed parts of the trail in `seq` order: sealed segments and
/// retired files (a retired file whose sealed segment exists too is left
/// out). Lists the retired files (opening them) before the sealed
/// segments, so a file sealed meanwhile is found in one or the other.
pub(super) fn parts(active: &Path) -> Result<Vec<Part>, AuditError> {
    let mut retired = Vec::new();
    for (seq, path) in list_ext(active, RETIRED_EXT)? {
        match std::fs::File::open(&path) {
            Ok(file) => retired.push((seq, Part::Retired(path, file))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(super::io_error(&path)(e)),
        }
    }
    let sealed = list_ext(active, SEALED_EXT)?;
    let sealed_seqs: std::collections::BTreeSet<u64> = sealed.iter().map(|(s, _)| *s).collect();
    let mut all: Vec<(u64, Part)> = sealed
        .into_iter()
        .map(|(seq, path)| (seq, Part::Sealed(path)))
        .chain(
            retired
                .into_iter()
                .filter(|(seq, _)| !sealed_seqs.contains(seq)),
        )
        .collect();
    all.sort_by_key(|(seq, _)| *seq);
    Ok(all.into_iter().map(|(_, part)| part).collect())
}

/// The retired files waiting to be sealed, oldest first.
pub(super) fn retired(active: &Path) -> Result<Vec<PathBuf>, AuditError> {
    Ok(list_ext(active, RETIRED_EXT)?
        .into_iter()
        .map(|(_, path)| path)
        .collect())
}

/// Seals the retired file at `retired`: its records (from its first
/// `seq`, as its name says) become a sealed segment, written beside its
/// final name (`<first seq>.seg.partial`), synced and renamed, and then
/// the retired file is removed. Returns the header, or `None` if another
/// sealer got there first.
///
/// Two sealers (two processes) never race: each holds an exclusive lock
/// on the retired file while it seals it, so a `.partial` file found then
/// is one a crashed sealer left, and is replaced.
///
/// The records are checked to be one chain starting at the first `seq`;
/// a retired file that is not is left as it is, for `audit verify` to
/// name the record.
pub(super) fn seal(active: &Path, retired: &Path) -> Result<Option<SegmentHeader>, AuditError> {
    use fs4::fs_std::FileExt;
    let name = retired.file_name().unwrap_or_default().to_string_lossy();
    let Some(first_seq) = first_seq_of(&name, RETIRED_EXT) else {
        return Err(malformed(retired, 0, "not a retired audit file"));
    };
    let file = match std::fs::File::open(retired) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(super::io_error(retired)(e)),
    };
    FileExt::lock_exclusive(&file).map_err(super::io_error(retired))?;
    let target = segment_path(active, first_seq);
    if !retired.exists() {
        return Ok(None);
    }
    if target.exists() {
        // Sealed by a sealer that crashed before removing the retired file.
        remove_and_sync(active, retired)?;
        return Ok(None);
    }
    // Two passes over the file (it no longer changes: retired, and locked),
    // so that neither it nor its records are held whole: the first finds
    // the last record (the header comes first in a segment), the second
    // checks and compacts each record into the segment.
    let (mut last, mut last_number) = (Vec::new(), 0u64);
    each_line(&file, retired, |number, line| {
        if line.last() != Some(&b'\n') {
            return Err(malformed(retired, 0, "ends in a torn line; left unsealed"));
        }
        if line.len() > 1 {
            last.clear();
            last.extend_from_slice(line);
            last_number = number;
        }
        Ok(())
    })?;
    if last.is_empty() {
        remove_and_sync(active, retired)?;
        return Ok(None);
    }
    let last = super::record::parse_record(last_number, &last[..last.len() - 1])?;
    let not_one_chain = |seq| {
        malformed(
            retired,
            seq,
            "not one chain (record changed, removed, inserted or reordered); left unsealed",
        )
    };
    let mut writer: Option<SegmentWriter> = None;
    let (mut expected, mut prev_hash, mut first_prev_hash) = (first_seq, String::new(), None);
    each_line(&file, retired, |number, line| {
        let Some(text) = line.strip_suffix(b"\n").filter(|t| !t.is_empty()) else {
            return Ok(());
        };
        let record = super::record::parse_record(number, text)?;
        if record.seq < first_seq {
            return Ok(());
        }
        if record.seq != expected || (expected != first_seq && record.prev_hash != prev_hash) {
            return Err(not_one_chain(record.seq));
        }
        if !line_hash_matches(text, &record.hash) {
            return Err(malformed(
                retired,
                record.seq,
                "hash mismatch (record changed); left unsealed",
            ));
        }
        expected = record.seq + 1;
        prev_hash.clone_from(&record.hash);
        let writer = writer.get_or_insert_with(|| {
            first_prev_hash = Some(record.prev_hash.clone());
            SegmentWriter::new(SegmentHeader {
                first_seq,
                prev_hash: record.prev_hash.clone(),
                records: last.seq.saturating_sub(first_seq) + 1,
                last_hash: last.hash.clone(),
            })
        });
        writer.push(record);
        Ok(())
    })?;
    let header = match (writer, first_prev_hash) {
        (Some(writer), Some(first_prev_hash)) => {
            if expected != last.seq + 1 || prev_hash != last.hash {
                return Err(not_one_chain(expected));
            }
            write_sealed(&target, &writer.finish())?;
            Some(SegmentHeader {
                first_seq,
                prev_hash: first_prev_hash,
                records: expected - first_seq,
                last_hash: prev_hash,
            })
        }
        _ => None,
    };
    remove_and_sync(active, retired)?;
    Ok(header)
}

/// Calls `f` with each line of `file` (from its start, newline included;
/// the last may lack it) and its 1-based number, through one buffer.
fn each_line(
    file: &std::fs::File,
    path: &Path,
    mut f: impl FnMut(u64, &[u8]) -> Result<(), AuditError>,
) -> Result<(), AuditError> {
    let mut reader = file;
    reader
        .seek(std::io::SeekFrom::Start(0))
        .map_err(super::io_error(path))?;
    let mut lines = std::io::BufReader::with_capacity(1 << 20, reader);
    let mut line = Vec::with_capacity(4096);
    let mut number = 0u64;
    loop {
        line.clear();
        let n = lines
            .read_until(b'\n', &mut line)
            .map_err(super::io_error(path))?;
        if n == 0 {
            return Ok(());
        }
        number += 1;
        f(number, &line)?;
    }
}

/// Whether `line` (a stored line, newline removed) hashes to `hash`, the
/// hash it holds: the SHA-256 of the line with its `hash` value emptied (its
/// canonical bytes when the writer wrote it; a line changed into another
/// form with a matching hash is caught by every later reader, which
/// rebuilds the canonical line). Hashes the stored bytes, so the sealer
/// need not serialize each record again.
fn line_hash_matches(line: &[u8], hash: &str) -> bool {
    use sha2::{Digest, Sha256};
    const TAIL: &[u8] = b"\"}";
    let Some(rest) = line.strip_suffix(TAIL) else {
        return false;
    };
    let Some(head) = rest.strip_suffix(hash.as_bytes()) else {
        return false;
    };
    if hash.len() != 64 || !head.ends_with(b",\"hash\":\"") {
        return false;
    }
    let digest = Sha256::new()
        .chain_update(head)
        .chain_update(TAIL)
        .finalize();
    let mut hex_hash = [0u8; 64];
    hex::encode_to_slice(digest, &mut hex_hash).expect("64 hex digits for 32 bytes");
    hex_hash == hash.as_bytes()
}

/// The header of the sealed segment the retired file `retired` became.
pub(super) fn sealed_header(active: &Path, retired: &Path) -> Result<SegmentHeader, AuditError> {
    let name = retired.file_name().unwrap_or_default().to_string_lossy();
    let Some(first_seq) = first_seq_of(&name, RETIRED_EXT) else {
        return Err(malformed(retired, 0, "not a retired audit file"));
    };
    Ok(SegmentReader::open(&segment_path(active, first_seq))?
        .header()
        .clone())
}

/// Writes a sealed segment: to `<target>.partial` (replacing one a crashed
/// sealer left; never through a link), synced, then renamed into place
/// and the folder synced. The caller holds the retired file's lock.
fn write_sealed(target: &Path, bytes: &[u8]) -> Result<(), AuditError> {
    let partial = target.with_extension(format!("{SEALED_EXT}.partial"));
    let mut open = std::fs::OpenOptions::new();
    open.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        open.mode(0o600);
    }
    let mut file = match open.open(&partial) {
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            std::fs::remove_file(&partial).map_err(super::io_error(&partial))?;
            open.open(&partial)
        }
        other => other,
    }
    .map_err(super::io_error(&partial))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(super::io_error(&partial))?;
    std::fs::rename(&partial, target).map_err(super::io_error(target))?;
    sync_dir(target.parent().unwrap_or(Path::new(".")))
}

/// Removes a sealed retired file and syncs the folder.
fn remove_and_sync(active: &Path, retired: &Path) -> Result<(), AuditError> {
    match std::fs::remove_file(retired) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(super::io_error(retired)(e)),
    }
    sync_dir(&segments_dir(active))
}

fn sync_dir(dir: &Path) -> Result<(), AuditError> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(super::io_error(dir))
}

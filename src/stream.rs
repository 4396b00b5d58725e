//! STREAM chunked AES-256-GCM: the body of an envelope, in constant memory.
//!
//! The plaintext is cut into chunks of the header's chunk size (the last one
//! may be shorter, and is empty only for an empty plaintext). Chunk `i` is
//! sealed with AES-256-GCM under the file's data key with
//!
//! ```text
//! nonce = nonce_prefix (7 bytes) || i (u32, big-endian) || last (1 byte: 1 on the final chunk, else 0)
//! aad   = the header's immutable part (magic .. header checksum)
//! ```
//!
//! and written as `ciphertext || tag (16 bytes)`. After the final chunk comes
//! an 8-byte end record, `L (u32, big-endian) || "REND"`, where `L` is the
//! final chunk's plaintext length. The end record is not secret and not
//! authenticated itself; it only lets the reader find the final chunk's end
//! so that appended bytes are reported as trailing data instead of a
//! generic authentication failure. (The final chunk authenticates only at
//! its true length, so a forged `L` cannot make anything verify.)
//!
//! The reader works in one pass and never searches: each chunk position is
//! opened once as a non-final chunk, and the final chunk once at the length
//! its end record names when the stream ends right after it. Only when it
//! does not (appended bytes, damage) are earlier end records tried, at most
//! [`MAX_FINAL_CANDIDATES`] of them. So the work is at most one open per
//! chunk plus `1 + MAX_FINAL_CANDIDATES` of the final one, whatever a
//! hostile body holds (issue 12 finding 1: trying every look-alike end
//! record was quadratic in the chunk size). The format is unchanged
//! (version 1); `docs/FORMAT.md` says why. [`decrypt_measured`] counts the
//! opens for tests.
//!
//! This is the STREAM construction of Hoang, Reyhanitabar, Rogaway and Vizár
//! (as in Tink and age): the counter in the nonce detects reordering and
//! dropped chunks, the last-chunk flag detects truncation at a chunk
//! boundary, the per-file data key and AAD detect chunks swapped between
//! files.

use crate::envelope::{read_full, EnvelopeError, Header};
use crate::secret::Secret;
use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
use std::io::{Read, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use zeroize::Zeroizing;

/// Bytes of the GCM tag after each chunk.
pub const TAG_LEN: usize = 16;
/// Bytes of the end record after the final chunk.
pub const END_RECORD_LEN: usize = 8;
pub(crate) const END_MAGIC: [u8; 4] = *b"REND";

/// The per-file cipher: the data key and the header it is bound to.
///
/// The bulk AES-256-GCM is AWS-LC's (through `aws-lc-rs`): about 7 GB/s per
/// core here against under 1 GB/s for the portable `aes-gcm` crate, which
/// the small KMS blobs keep using. AWS-LC keeps the expanded key in memory
/// it allocated itself and wipes (`OPENSSL_cleanse`) when the key is
/// dropped, so the key schedule is zeroized like the rest of our secrets.
pub struct ChunkCipher<'h> {
    aead: LessSafeKey,
    header: &'h Header,
    work: Option<&'h OpenWork>,
}

/// The AES-GCM work a reader did: how many chunk opens it tried and how
/// many sealed bytes they covered. Tests assert on it (work done, not
/// seconds) to show that decryption is linear in the envelope's size.
#[doc(hidden)]
#[derive(Debug, Default)]
pub struct OpenWork {
    opens: AtomicU64,
    bytes: AtomicU64,
}

impl OpenWork {
    /// AES-GCM opens tried (successful or not).
    pub fn opens(&self) -> u64 {
        self.opens.load(Ordering::Relaxed)
    }

    /// Sealed bytes (ciphertext and tag) passed to those opens.
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }
}

impl<'h> ChunkCipher<'h> {
    /// A cipher for the body of the envelope with `header`, under `data_key`
    /// (32 bytes).
    pub fn new(data_key: &Secret, header: &'h Header) -> Result<ChunkCipher<'h>, EnvelopeError> {
        let key = UnboundKey::new(&AES_256_GCM, data_key.expose())
            .map_err(|_| EnvelopeError::InvalidParameter("the data key is not 32 bytes".into()))?;
        Ok(ChunkCipher {
            aead: LessSafeKey::new(key),
            header,
            work: None,
        })
    }

    fn nonce(&self, index: u64, last: bool) -> Result<Nonce, EnvelopeError> {
        let counter = u32::try_from(index).map_err(|_| EnvelopeError::TooManyChunks)?;
        let mut n = [0u8; 12];
        n[..7].copy_from_slice(&self.header.nonce_prefix());
        n[7..11].copy_from_slice(&counter.to_be_bytes());
        n[11] = u8::from(last);
        Ok(Nonce::assume_unique_for_key(n))
    }

    /// Seals chunk `index` in place; returns its tag.
    pub fn seal(
        &self,
        index: u64,
        last: bool,
        buf: &mut [u8],
    ) -> Result<[u8; TAG_LEN], EnvelopeError> {
        let nonce = self.nonce(index, last)?;
        let tag = self
            .aead
            .seal_in_place_separate_tag(nonce, Aad::from(self.header.as_bytes()), buf)
            .map_err(|_| EnvelopeError::InvalidParameter("chunk too large".into()))?;
        let mut out = [0u8; TAG_LEN];
        out.copy_from_slice(tag.as_ref());
        Ok(out)
    }

    /// Opens chunk `index` (`sealed` is `ciphertext || tag`) into
    /// `plaintext`, which must be at least `sealed.len() - 16` bytes; returns
    /// the plaintext length. `sealed` is never changed, so on failure the
    /// caller may try another interpretation of the same bytes.
    pub fn open(
        &self,
        index: u64,
        last: bool,
        sealed: &[u8],
        plaintext: &mut [u8],
    ) -> Result<usize, EnvelopeError> {
        if sealed.len() < TAG_LEN || plaintext.len() < sealed.len() - TAG_LEN {
            return Err(EnvelopeError::ChunkAuth(index));
        }
        let nonce = self.nonce(index, last)?;
        if let Some(work) = self.work {
            work.opens.fetch_add(1, Ordering::Relaxed);
            work.bytes.fetch_add(sealed.len() as u64, Ordering::Relaxed);
        }
        let (ct, tag) = sealed.split_at(sealed.len() - TAG_LEN);
        let out = &mut plaintext[..ct.len()];
        self.aead
            .open_separate_gather(nonce, Aad::from(self.header.as_bytes()), ct, tag, out)
            .map_err(|_| EnvelopeError::ChunkAuth(index))?;
        Ok(ct.len())
    }
}

/// Most chunks per batch (1 MiB of plaintext at the default chunk size): a
/// batch is read, sealed or opened in parallel, and written as one unit.
const BATCH: usize = 16;

/// Most plaintext bytes per batch: with large chunks a batch holds fewer of
/// them, so the reader's memory stays a few times this whatever chunk size
/// a (possibly hostile) header declares.
const BATCH_BYTES: usize = 4 * 1024 * 1024;

/// Chunks per batch for `chunk`-byte chunks: 1 ..= [`BATCH`].
fn batch_chunks(chunk: usize) -> usize {
    (BATCH_BYTES / chunk).clamp(1, BATCH)
}

/// At most this many final-chunk lengths are tried when the stream does not
/// end with a consistent end record (looking for appended bytes).
pub const MAX_FINAL_CANDIDATES: usize = 4;

/// One batch of plaintext read into a buffer: chunk `j` lies at
/// `j * stride` with room for its tag after it.
struct Batch {
    /// Index of the batch's first chunk.
    index: u64,
    /// Plaintext length of each chunk.
    lens: Vec<usize>,
    /// The batch's last chunk is the final chunk.
    last: bool,
}

impl Batch {
    /// Bytes of the sealed batch, from its start.
    fn sealed_len(&self, stride: usize) -> usize {
        let count = self.lens.len();
        (count - 1) * stride + self.lens[count - 1] + TAG_LEN
    }
}

/// Encrypts all of `input` as an envelope body onto `output`; returns the
/// number of plaintext bytes. Memory: three batches.
///
/// A three-stage pipeline: while the pool seals batch `k` (its chunks in
/// parallel), this thread writes batch `k - 1` and reads batch `k + 1`, so
/// the copies in and out of the kernel overlap the encryption.
pub fn encrypt<R: Read + ?Sized, W: Write + ?Sized>(
    data_key: &Secret,
    header: &Header,
    input: &mut R,
    output: &mut W,
) -> Result<u64, EnvelopeError> {
    let cipher = ChunkCipher::new(data_key, header)?;
    let chunk = header.chunk_size() as usize;
    let stride = chunk + TAG_LEN;
    let mut chunker = Chunker {
        input,
        chunk,
        stride,
        carry: None,
    };
    // The first chunk alone first: a small file needs no batch buffers.
    let mut first = Zeroizing::new(vec![0u8; stride]);
    let head = chunker.batch(&mut first, 0, 1)?;
    if head.last {
        seal_batch(&cipher, &head, &mut first, stride)?;
        output.write_all(&first[..head.sealed_len(stride)])?;
        return finish_body(output, &head);
    }
    let batch = batch_chunks(chunk);
    let buffer = || Zeroizing::new(vec![0u8; batch * stride]);
    let (mut sealing, mut writing, mut reading) = (buffer(), buffer(), buffer());
    sealing[..chunk].copy_from_slice(&first[..chunk]);
    drop(first);
    let mut cur = chunker.fill(&mut sealing, head, batch)?;
    let mut prev: Option<Batch> = None;
    let mut total = 0u64;
    loop {
        let mut sealed = Ok(());
        let (wrote, next) = rayon::in_place_scope(|s| {
            let (cipher, cur, buf, sealed) = (&cipher, &cur, &mut sealing, &mut sealed);
            s.spawn(move |_| *sealed = seal_batch(cipher, cur, buf, stride));
            let wrote = match &prev {
                Some(p) => output.write_all(&writing[..p.sealed_len(stride)]),
                None => Ok(()),
            };
            let next_index = cur.index + cur.lens.len() as u64;
            let next = (!cur.last && wrote.is_ok())
                .then(|| chunker.batch(&mut reading, next_index, batch));
            (wrote, next)
        });
        wrote?;
        sealed?;
        total += cur.lens.iter().map(|&n| n as u64).sum::<u64>();
        let Some(next) = next else {
            output.write_all(&sealing[..cur.sealed_len(stride)])?;
            finish_body(output, &cur)?;
            return Ok(total);
        };
        // The sealed batch is written next; the batch just read is sealed
        // next; the written buffer is free to read into.
        std::mem::swap(&mut writing, &mut sealing);
        std::mem::swap(&mut sealing, &mut reading);
        prev = Some(std::mem::replace(&mut cur, next?));
    }
}

/// Writes the end record after the final batch; returns the plaintext
/// length of that batch.
fn finish_body<W: Write + ?Sized>(output: &mut W, last: &Batch) -> Result<u64, EnvelopeError> {
    let n = last.lens[last.lens.len() - 1] as u32;
    output.write_all(&n.to_be_bytes())?;
    output.write_all(&END_MAGIC)?;
    Ok(last.lens.iter().map(|&n| n as u64).sum())
}

/// Seals every chunk of `batch` in place in `buf`, in parallel, each tag
/// right after its chunk.
fn seal_batch(
    cipher: &ChunkCipher<'_>,
    batch: &Batch,
    buf: &mut [u8],
    stride: usize,
) -> Result<(), EnvelopeError> {
    use rayon::prelude::*;
    let count = batch.lens.len();
    buf[..count * stride]
        .par_chunks_mut(stride)
        .zip(batch.lens.par_iter())
        .enumerate()
        .try_for_each(|(j, (c, &n))| {
            let final_chunk = batch.last && j + 1 == count;
            let tag = cipher.seal(batch.index + j as u64, final_chunk, &mut c[..n])?;
            c[n..n + TAG_LEN].copy_from_slice(&tag);
            Ok(())
        })
}

/// Cuts the plaintext into chunks, batch by batch. It peeks one byte past
/// every full batch (kept in `carry`) to know whether the batch's last
/// chunk is the final one.
struct Chunker<'a, R: ?Sized> {
    input: &'a mut R,
    chunk: usize,
    stride: usize,
    carry: Option<u8>,
}

impl<R: Read + ?Sized> Chunker<'_, R> {
    /// Reads chunks into `buf` until it holds `max` of them; `batch` says
    /// which chunks it already holds (its `lens`) and where it starts.
    fn fill(
        &mut self,
        buf: &mut [u8],
        mut batch: Batch,
        max: usize,
    ) -> Result<Batch, EnvelopeError> {
        let chunk = self.chunk;
        for j in batch.lens.len()..max {
            let slot = &mut buf[j * self.stride..j * self.stride + chunk];
            let mut n = 0;
            if let Some(b) = self.carry.take() {
                slot[0] = b;
                n = 1;
            }
            n += read_full(self.input, &mut slot[n..])?;
            if n == 0 && (j > 0 || batch.index > 0) {
                // The previous chunk was full and final (a batch after the
                // first always starts with the carried byte).
                batch.last = true;
                return Ok(batch);
            }
            batch.lens.push(n);
            if n < chunk {
                batch.last = true;
                return Ok(batch);
            }
        }
        let mut one = Zeroizing::new([0u8; 1]);
        if read_full(self.input, &mut one[..])? == 0 {
            batch.last = true;
            return Ok(batch);
        }
        self.carry = Some(one[0]);
        Ok(batch)
    }

    /// A new batch starting at chunk `index`, read into `buf`.
    fn batch(&mut self, buf: &mut [u8], index: u64, max: usize) -> Result<Batch, EnvelopeError> {
        let empty = Batch {
            index,
            lens: Vec::with_capacity(max),
            last: false,
        };
        self.fill(buf, empty, max)
    }
}

/// Decrypts an envelope body from `input` onto `output`; returns the number
/// of plaintext bytes. Each chunk is verified before it is written, so
/// `output` only ever receives authenticated plaintext (but on an error it
/// may have received the chunks before the bad one). Chunks are opened in
/// parallel, a batch (at most 16 chunks, at most 4 MiB unless one chunk is
/// larger) at a time. Memory: two batches.
pub fn decrypt<R: Read + ?Sized, W: Write + ?Sized>(
    data_key: &Secret,
    header: &Header,
    input: &mut R,
    output: &mut W,
) -> Result<u64, EnvelopeError> {
    let cipher = ChunkCipher::new(data_key, header)?;
    decrypt_with(&cipher, input, output)
}

/// [`decrypt`], counting the AES-GCM work into `work` (for tests).
#[doc(hidden)]
pub fn decrypt_measured<R: Read + ?Sized, W: Write + ?Sized>(
    data_key: &Secret,
    header: &Header,
    input: &mut R,
    output: &mut W,
    work: &OpenWork,
) -> Result<u64, EnvelopeError> {
    let mut cipher = ChunkCipher::new(data_key, header)?;
    cipher.work = Some(work);
    decrypt_with(&cipher, input, output)
}

fn decrypt_with<R: Read + ?Sized, W: Write + ?Sized>(
    cipher: &ChunkCipher<'_>,
    input: &mut R,
    output: &mut W,
) -> Result<u64, EnvelopeError> {
    use rayon::prelude::*;
    let header = cipher.header;
    let chunk = header.chunk_size() as usize;
    let full = chunk + TAG_LEN;
    // Every full chunk is followed by at least an end record, so a chunk is
    // tried as a non-final one only when that much follows it. A body that
    // ends before that is opened without batch buffers.
    let mut buf = vec![0u8; full + END_RECORD_LEN];
    let mut have = read_full(input, &mut buf)?;
    if have < buf.len() {
        let mut plain = Zeroizing::new(vec![0u8; have]);
        let len = finish(cipher, 0, &buf[..have], true, input, &mut plain)?;
        output.write_all(&plain[..len])?;
        return Ok(len as u64);
    }
    let batch = batch_chunks(chunk);
    buf.resize(batch * full + END_RECORD_LEN, 0);
    let mut plain = Zeroizing::new(vec![0u8; batch * full]);
    let mut index = 0u64;
    let mut total = 0u64;
    loop {
        have += read_full(input, &mut buf[have..])?;
        let eof = have < buf.len();
        let candidates = (0..batch)
            .take_while(|j| (j + 1) * full + END_RECORD_LEN <= have)
            .count();
        let opened: Vec<bool> = buf[..candidates * full]
            .par_chunks(full)
            .zip(plain[..candidates * chunk].par_chunks_mut(chunk))
            .enumerate()
            .map(|(j, (sealed, out))| cipher.open(index + j as u64, false, sealed, out).is_ok())
            .collect();
        let good = opened.iter().take_while(|&&ok| ok).count();
        output.write_all(&plain[..good * chunk])?;
        total += (good * chunk) as u64;
        index += good as u64;
        let rest = good * full;
        if good == batch {
            buf.copy_within(rest..have, 0);
            have -= rest;
            continue;
        }
        // Chunk `index` is not a valid non-final chunk (or too little
        // follows it to be one): it must be the final chunk.
        let tail_eof = eof && have - rest < full + END_RECORD_LEN;
        let len = finish(cipher, index, &buf[rest..have], tail_eof, input, &mut plain)?;
        output.write_all(&plain[..len])?;
        return Ok(total + len as u64);
    }
}

/// `buf` holds what remains of the body from chunk `index` on (all of it
/// when `eof`), and it is not a non-final chunk: it must be the final chunk
/// and its end record. Opens it into `plain`; returns its plaintext length.
fn finish<R: Read + ?Sized>(
    cipher: &ChunkCipher<'_>,
    index: u64,
    buf: &[u8],
    eof: bool,
    input: &mut R,
    plain: &mut [u8],
) -> Result<usize, EnvelopeError> {
    let have = buf.len();
    if eof && have == 0 {
        return Err(EnvelopeError::Truncated);
    }
    if eof {
        if let Some(l) = end_record_len(buf, have) {
            return cipher.open(index, true, &buf[..l + TAG_LEN], plain);
        }
    }
    // Not a well-placed end record: look for the final chunk further in.
    if let Some(l) = find_final(cipher, index, buf, plain) {
        let mut probe = [0u8; 1];
        if l + TAG_LEN + END_RECORD_LEN < have || read_full(input, &mut probe)? > 0 {
            return Err(EnvelopeError::TrailingData);
        }
        return Ok(l);
    }
    let full = cipher.header.chunk_size() as usize + TAG_LEN;
    if !eof {
        // A full chunk that is neither a valid non-final nor a final chunk.
        return Err(EnvelopeError::ChunkAuth(index));
    }
    if have >= full && cipher.open(index, false, &buf[..full], plain).is_ok() {
        // A valid non-final chunk and then the stream ends.
        return Err(EnvelopeError::Truncated);
    }
    if have > full {
        return Err(EnvelopeError::ChunkAuth(index));
    }
    Err(EnvelopeError::Truncated)
}

/// If `buf[..end]` ends with an end record consistent with its length,
/// the final chunk's plaintext length.
fn end_record_len(buf: &[u8], end: usize) -> Option<usize> {
    if end < TAG_LEN + END_RECORD_LEN || buf[end - 4..end] != END_MAGIC {
        return None;
    }
    let l = u32::from_be_bytes(buf[end - 8..end - 4].try_into().ok()?) as usize;
    (l + TAG_LEN + END_RECORD_LEN == end).then_some(l)
}

/// Finds a final chunk followed by its end record at the start of `buf`
/// (opening it into `plain` on success); returns its plaintext length.
///
/// Only the first [`MAX_FINAL_CANDIDATES`] lengths whose end record is
/// consistent are opened: a hostile body can plant a look-alike end record
/// every 8 bytes, and opening each would make the work quadratic in the
/// chunk size. A genuine envelope with bytes appended has its real end
/// record first (a look-alike inside random ciphertext has probability
/// 2^-64 per position), so the bound costs nothing but hostile input.
fn find_final(cipher: &ChunkCipher<'_>, index: u64, buf: &[u8], plain: &mut [u8]) -> Option<usize> {
    let chunk = cipher.header.chunk_size() as usize;
    let max = chunk.min(buf.len().checked_sub(TAG_LEN + END_RECORD_LEN)?);
    (0..=max)
        .filter(|&l| end_record_len(buf, l + TAG_LEN + END_RECORD_LEN).is_some())
        .take(MAX_FINAL_CANDIDATES)
        .find(|&l| cipher.open(index, true, &buf[..l + TAG_LEN], plain).is_ok())
}

/// Size of the body for `plaintext_len` bytes of plaintext in `chunk`-byte
/// chunks (tags and end record included).
pub fn body_len(plaintext_len: u64, chunk: u32) -> u64 {
    let chunk = u64::from(chunk);
    let chunks = if plaintext_len == 0 {
        1
    } else {
        plaintext_len.div_ceil(chunk)
    };
    plaintext_len + chunks * TAG_LEN as u64 + END_RECORD_LEN as u64
}

#[cfg(test)]
mod tests;

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
//! This is the STREAM construction of Hoang, Reyhanitabar, Rogaway and Vizár
//! (as in Tink and age): the counter in the nonce detects reordering and
//! dropped chunks, the last-chunk flag detects truncation at a chunk
//! boundary, the per-file data key and AAD detect chunks swapped between
//! files.

use crate::envelope::{read_full, EnvelopeError, Header};
use crate::secret::Secret;
use aes_gcm::aead::AeadInPlace;
use aes_gcm::{Aes256Gcm, KeyInit, Nonce, Tag};
use std::io::{Read, Write};
use zeroize::Zeroizing;

/// Bytes of the GCM tag after each chunk.
pub const TAG_LEN: usize = 16;
/// Bytes of the end record after the final chunk.
pub const END_RECORD_LEN: usize = 8;
const END_MAGIC: [u8; 4] = *b"REND";

/// The per-file cipher: the data key and the header it is bound to.
pub struct ChunkCipher<'h> {
    aead: Aes256Gcm,
    header: &'h Header,
}

impl<'h> ChunkCipher<'h> {
    /// A cipher for the body of the envelope with `header`, under `data_key`
    /// (32 bytes).
    pub fn new(data_key: &Secret, header: &'h Header) -> Result<ChunkCipher<'h>, EnvelopeError> {
        let aead = Aes256Gcm::new_from_slice(data_key.expose())
            .map_err(|_| EnvelopeError::InvalidParameter("the data key is not 32 bytes".into()))?;
        Ok(ChunkCipher { aead, header })
    }

    fn nonce(
        &self,
        index: u64,
        last: bool,
    ) -> Result<Nonce<aes_gcm::aead::consts::U12>, EnvelopeError> {
        let counter = u32::try_from(index).map_err(|_| EnvelopeError::TooManyChunks)?;
        let mut n = [0u8; 12];
        n[..7].copy_from_slice(&self.header.nonce_prefix());
        n[7..11].copy_from_slice(&counter.to_be_bytes());
        n[11] = u8::from(last);
        Ok(n.into())
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
            .encrypt_in_place_detached(&nonce, self.header.as_bytes(), buf)
            .map_err(|_| EnvelopeError::InvalidParameter("chunk too large".into()))?;
        Ok(tag.into())
    }

    /// Opens chunk `index` (`ciphertext || tag`) in place; on success the
    /// first `len - 16` bytes are the plaintext. On failure `sealed` is left
    /// unchanged, so the caller may try another interpretation.
    pub fn open(&self, index: u64, last: bool, sealed: &mut [u8]) -> Result<(), EnvelopeError> {
        if sealed.len() < TAG_LEN {
            return Err(EnvelopeError::ChunkAuth(index));
        }
        let nonce = self.nonce(index, last)?;
        let (ct, tag) = sealed.split_at_mut(sealed.len() - TAG_LEN);
        let tag = Tag::clone_from_slice(tag);
        self.aead
            .decrypt_in_place_detached(&nonce, self.header.as_bytes(), ct, &tag)
            .map_err(|_| EnvelopeError::ChunkAuth(index))
    }
}

/// Chunks sealed in parallel per batch (1 MiB of plaintext at the default
/// chunk size): encryption uses every core, memory stays bounded.
const BATCH: usize = 16;

/// Encrypts all of `input` as an envelope body onto `output`; returns the
/// number of plaintext bytes. Memory: [`BATCH`] chunks.
pub fn encrypt<R: Read + ?Sized, W: Write + ?Sized>(
    data_key: &Secret,
    header: &Header,
    input: &mut R,
    output: &mut W,
) -> Result<u64, EnvelopeError> {
    use rayon::prelude::*;
    let cipher = ChunkCipher::new(data_key, header)?;
    let chunk = header.chunk_size() as usize;
    let stride = chunk + TAG_LEN;
    // Chunk j of a batch is read into buf[j * stride..][..chunk]; its tag
    // goes right after it, so the batch is written as it lies.
    let mut buf = Zeroizing::new(vec![0u8; BATCH * stride]);
    let mut carry: Option<u8> = None;
    let mut index = 0u64;
    let mut total = 0u64;
    loop {
        let (lens, last) = fill_batch(input, &mut buf, chunk, stride, &mut carry, index)?;
        let count = lens.len();
        buf[..count * stride]
            .par_chunks_mut(stride)
            .zip(lens.par_iter())
            .enumerate()
            .try_for_each(|(j, (c, &n))| {
                let final_chunk = last && j + 1 == count;
                let tag = cipher.seal(index + j as u64, final_chunk, &mut c[..n])?;
                c[n..n + TAG_LEN].copy_from_slice(&tag);
                Ok::<(), EnvelopeError>(())
            })?;
        // Only the batch's last chunk can be short: one write per batch.
        let end = (count - 1) * stride + lens[count - 1] + TAG_LEN;
        output.write_all(&buf[..end])?;
        total += lens.iter().map(|&n| n as u64).sum::<u64>();
        if last {
            let n = lens[count - 1] as u32;
            output.write_all(&n.to_be_bytes())?;
            output.write_all(&END_MAGIC)?;
            return Ok(total);
        }
        index += count as u64;
    }
}

/// Reads up to [`BATCH`] chunks; returns their plaintext lengths and
/// whether the last of them is the final chunk. A full batch peeks one byte
/// ahead (kept in `carry`) to know whether its last chunk is final.
fn fill_batch<R: Read + ?Sized>(
    input: &mut R,
    buf: &mut [u8],
    chunk: usize,
    stride: usize,
    carry: &mut Option<u8>,
    index: u64,
) -> Result<(Vec<usize>, bool), EnvelopeError> {
    let mut lens = Vec::with_capacity(BATCH);
    for j in 0..BATCH {
        let slot = &mut buf[j * stride..j * stride + chunk];
        let mut n = 0;
        if let Some(b) = carry.take() {
            slot[0] = b;
            n = 1;
        }
        n += read_full(input, &mut slot[n..])?;
        if n == 0 && (j > 0 || index > 0) {
            // The previous chunk of this batch was full and final (a new
            // batch always starts with the carried byte).
            return Ok((lens, true));
        }
        lens.push(n);
        if n < chunk {
            return Ok((lens, true));
        }
    }
    let mut one = [0u8; 1];
    if read_full(input, &mut one)? == 0 {
        return Ok((lens, true));
    }
    *carry = Some(one[0]);
    Ok((lens, false))
}

/// Decrypts an envelope body from `input` onto `output`; returns the number
/// of plaintext bytes. Each chunk is verified before it is written, so
/// `output` only ever receives authenticated plaintext (but on an error it
/// may have received the chunks before the bad one). Memory: one chunk.
pub fn decrypt<R: Read + ?Sized, W: Write + ?Sized>(
    data_key: &Secret,
    header: &Header,
    input: &mut R,
    output: &mut W,
) -> Result<u64, EnvelopeError> {
    let cipher = ChunkCipher::new(data_key, header)?;
    let chunk = header.chunk_size() as usize;
    let full = chunk + TAG_LEN;
    let mut buf = Zeroizing::new(vec![0u8; full + END_RECORD_LEN]);
    let mut have = 0usize;
    let mut index = 0u64;
    let mut total = 0u64;
    loop {
        have += read_full(input, &mut buf[have..])?;
        let eof = have < buf.len();
        if !eof && cipher.open(index, false, &mut buf[..full]).is_ok() {
            output.write_all(&buf[..chunk])?;
            total += chunk as u64;
            buf.copy_within(full..full + END_RECORD_LEN, 0);
            have = END_RECORD_LEN;
            index += 1;
            continue;
        }
        let len = finish(&cipher, index, &mut buf[..have], eof, input)?;
        output.write_all(&buf[..len])?;
        return Ok(total + len as u64);
    }
}

/// The buffer holds what remains of the body from chunk `index` on (all of
/// it when `eof`), and it is not a non-final chunk: it must be the final
/// chunk and its end record. Returns the final plaintext length.
fn finish<R: Read + ?Sized>(
    cipher: &ChunkCipher<'_>,
    index: u64,
    buf: &mut [u8],
    eof: bool,
    input: &mut R,
) -> Result<usize, EnvelopeError> {
    let have = buf.len();
    if eof && have == 0 {
        return Err(EnvelopeError::Truncated);
    }
    if eof {
        if let Some(l) = end_record_len(buf, have) {
            cipher.open(index, true, &mut buf[..l + TAG_LEN])?;
            return Ok(l);
        }
    }
    // Not a well-placed end record: look for the final chunk further in.
    if let Some(l) = find_final(cipher, index, buf) {
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
    if have >= full && cipher.open(index, false, &mut buf[..full]).is_ok() {
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
/// (decrypting it in place on success); returns its plaintext length.
fn find_final(cipher: &ChunkCipher<'_>, index: u64, buf: &mut [u8]) -> Option<usize> {
    let chunk = cipher.header.chunk_size() as usize;
    let max = chunk.min(buf.len().checked_sub(TAG_LEN + END_RECORD_LEN)?);
    (0..=max).find(|&l| {
        end_record_len(buf, l + TAG_LEN + END_RECORD_LEN).is_some()
            && cipher.open(index, true, &mut buf[..l + TAG_LEN]).is_ok()
    })
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
mod tests {
    use super::*;
    use crate::api::EncryptionContext;

    const CHUNK: u32 = 64;

    fn setup() -> (Secret, Header) {
        (
            Secret::random(32),
            Header::new(CHUNK, EncryptionContext::new()).unwrap(),
        )
    }

    fn seal(key: &Secret, h: &Header, pt: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        encrypt(key, h, &mut &pt[..], &mut out).unwrap();
        assert_eq!(out.len() as u64, body_len(pt.len() as u64, h.chunk_size()));
        out
    }

    fn open(key: &Secret, h: &Header, ct: &[u8]) -> Result<Vec<u8>, EnvelopeError> {
        let mut out = Vec::new();
        decrypt(key, h, &mut &ct[..], &mut out)?;
        Ok(out)
    }

    #[test]
    fn round_trips_at_chunk_boundaries() {
        let (key, h) = setup();
        for n in [
            0usize, 1, 63, 64, 65, 127, 128, 129, 1000, 1023, 1024, 1025, 2048, 3000,
        ] {
            let pt: Vec<u8> = (0..n).map(|i| i as u8).collect();
            let ct = seal(&key, &h, &pt);
            assert_eq!(open(&key, &h, &ct).unwrap(), pt, "size {n}");
        }
    }

    #[test]
    fn detects_truncation_at_every_length() {
        let (key, h) = setup();
        let pt = vec![5u8; 200];
        let ct = seal(&key, &h, &pt);
        for cut in 0..ct.len() {
            let err = open(&key, &h, &ct[..cut]).unwrap_err();
            assert!(
                matches!(err, EnvelopeError::Truncated | EnvelopeError::ChunkAuth(_)),
                "cut {cut}: {err}"
            );
        }
        // At a chunk boundary it is always the specific truncation error.
        let err = open(&key, &h, &ct[..80]).unwrap_err();
        assert!(matches!(err, EnvelopeError::Truncated), "{err}");
        let err = open(&key, &h, &ct[..0]).unwrap_err();
        assert!(matches!(err, EnvelopeError::Truncated), "{err}");
    }

    #[test]
    fn detects_trailing_data() {
        let (key, h) = setup();
        for n in [0usize, 10, 64, 100] {
            let pt = vec![9u8; n];
            for extra in [1usize, 7, 8, 100, 1000] {
                let mut ct = seal(&key, &h, &pt);
                ct.extend(std::iter::repeat_n(0xAA, extra));
                let err = open(&key, &h, &ct).unwrap_err();
                assert!(
                    matches!(err, EnvelopeError::TrailingData),
                    "{n}+{extra}: {err}"
                );
            }
        }
    }

    #[test]
    fn detects_flipped_bits_reordering_and_wrong_key() {
        let (key, h) = setup();
        let pt = vec![1u8; 200];
        let ct = seal(&key, &h, &pt);
        let mut bad = ct.clone();
        bad[100] ^= 1;
        assert!(matches!(
            open(&key, &h, &bad),
            Err(EnvelopeError::ChunkAuth(1))
        ));
        let mut swapped = ct.clone();
        let (a, b) = swapped.split_at_mut(80);
        a.swap_with_slice(&mut b[..80]);
        assert!(matches!(
            open(&key, &h, &swapped),
            Err(EnvelopeError::ChunkAuth(0))
        ));
        assert!(matches!(
            open(&Secret::random(32), &h, &ct),
            Err(EnvelopeError::ChunkAuth(0))
        ));
        let other = Header::new(CHUNK, EncryptionContext::new()).unwrap();
        assert!(matches!(
            open(&key, &other, &ct),
            Err(EnvelopeError::ChunkAuth(0))
        ));
    }
}

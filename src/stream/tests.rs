//! Unit tests of `crate::stream`.

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

/// Bytes that are no envelope body but hold an end-record look-alike every
/// 8 bytes, `l (u32) || "REND"` right after where a final chunk of `l`
/// bytes would end, for every `l` up to the chunk size: the shape that made
/// the old reader try about `chunk / 8` final-chunk lengths (issue 12
/// finding 1).
fn decoy_body(chunk: usize, len: usize) -> Vec<u8> {
    let mut b = vec![0x5Au8; len];
    let mut l = 0;
    while l <= chunk && l + TAG_LEN + END_RECORD_LEN <= len {
        b[l + TAG_LEN..l + TAG_LEN + 4].copy_from_slice(&(l as u32).to_be_bytes());
        b[l + TAG_LEN + 4..l + TAG_LEN + END_RECORD_LEN].copy_from_slice(&END_MAGIC);
        l += 8;
    }
    b
}

/// Opens `body` counting the work; returns the error kind and the work.
fn measured(chunk: u32, body: &[u8]) -> (&'static str, OpenWork) {
    let key = Secret::random(32);
    let h = Header::new(chunk, EncryptionContext::new()).unwrap();
    let work = OpenWork::default();
    let err = decrypt_measured(&key, &h, &mut &body[..], &mut std::io::sink(), &work)
        .expect_err("a decoy body must not open");
    (err.kind(), work)
}

/// The work bound: every chunk position opened at most once as a non-final
/// chunk, once as the final chunk at the length its end record names, and
/// at most `MAX_FINAL_CANDIDATES` more lengths when looking for appended
/// bytes.
fn assert_linear(chunk: u32, body_len: usize, work: &OpenWork) {
    let full = u64::from(chunk) + TAG_LEN as u64;
    let positions = body_len as u64 / full + 1;
    let max_opens = positions + 1 + MAX_FINAL_CANDIDATES as u64;
    assert!(
        work.opens() <= max_opens,
        "{} opens, bound {max_opens}",
        work.opens()
    );
    let max_bytes = body_len as u64 + (2 + MAX_FINAL_CANDIDATES as u64) * full;
    assert!(
        work.bytes() <= max_bytes,
        "{} bytes opened, bound {max_bytes}",
        work.bytes()
    );
}

#[test]
fn quadratic_decrypt_end_record_decoys_cost_a_bounded_number_of_opens() {
    let chunk = 64 * 1024;
    let full = chunk as usize + TAG_LEN;
    // All of the body shorter than one chunk and an end record (the
    // reader's small-body path), then longer than three (the batch path).
    for len in [full + END_RECORD_LEN - 1, 3 * full + 100] {
        let body = decoy_body(chunk as usize, len);
        let (kind, work) = measured(chunk, &body);
        assert_eq!(kind, "ChunkAuth", "body of {len} bytes");
        assert_linear(chunk, len, &work);
    }
}

#[test]
fn quadratic_decrypt_a_16_mib_chunk_decoy_envelope_does_linear_work() {
    let chunk = crate::envelope::MAX_CHUNK_SIZE;
    let len = chunk as usize + TAG_LEN + END_RECORD_LEN - 1;
    let body = decoy_body(chunk as usize, len);
    let (kind, work) = measured(chunk, &body);
    assert_eq!(kind, "ChunkAuth");
    assert_linear(chunk, len, &work);
}

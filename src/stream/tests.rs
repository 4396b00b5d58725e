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

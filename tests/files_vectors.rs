//! Envelope test vectors (`tests/vectors/envelope/*.json`): each says what
//! must happen when the envelope is opened with the given data key.
//!
//! The wrapped key in the vectors' slots is a placeholder: the data key is
//! given in the clear (`data_key_hex`), so the vectors test the header,
//! slot and STREAM codecs without a KMS. Regenerate with
//! `cargo test --test files_vectors -- --ignored regenerate`.

use rewrap::api::EncryptionContext;
use rewrap::envelope::{
    EnvelopeError, Header, ParsedHeader, Slot, SlotWrapping, EMPTY_SLOT, MAX_CHUNK_SIZE, SLOT_SIZE,
};
use rewrap::secret::Secret;
use serde::{Deserialize, Serialize};
use sha2::Digest;
use std::path::PathBuf;

#[derive(Debug, Serialize, Deserialize)]
struct Vector {
    description: String,
    data_key_hex: String,
    envelope_hex: String,
    /// `ok`, or the name of the expected error (`EnvelopeError::name`).
    expect: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    plaintext_hex: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    active_slot: Option<usize>,
}

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/vectors/envelope")
}

fn open(v: &Vector) -> Result<(usize, Vec<u8>), EnvelopeError> {
    let key = Secret::new(hex::decode(&v.data_key_hex).unwrap());
    let bytes = hex::decode(&v.envelope_hex).unwrap();
    let mut input = &bytes[..];
    let parsed = ParsedHeader::read_from(&mut input)?;
    let (active, _) = parsed.slots.active()?;
    let mut out = Vec::new();
    rewrap::stream::decrypt(&key, &parsed.header, &mut input, &mut out)?;
    Ok((active, out))
}

#[test]
fn every_vector_does_what_it_says() {
    let mut count = 0;
    for entry in std::fs::read_dir(dir()).unwrap() {
        let path = entry.unwrap().path();
        let v: Vector = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        match (open(&v), v.expect.as_str()) {
            (Ok((active, pt)), "ok") => {
                assert_eq!(Some(hex::encode(pt)), v.plaintext_hex, "{path:?}");
                assert_eq!(Some(active), v.active_slot, "{path:?}");
            }
            (Err(e), want) => assert_eq!(e.kind(), want, "{path:?}: {e}"),
            (Ok(_), want) => panic!("{path:?}: opened, expected {want}"),
        }
        count += 1;
    }
    assert_eq!(count, vectors().len(), "a vector file is missing or extra");
}

#[test]
fn the_encoder_reproduces_every_valid_vector() {
    for (name, v) in vectors() {
        let stored: Vector =
            serde_json::from_slice(&std::fs::read(dir().join(format!("{name}.json"))).unwrap())
                .unwrap();
        assert_eq!(stored.envelope_hex, v.envelope_hex, "{name}");
    }
}

#[test]
#[ignore = "writes tests/vectors/envelope/"]
fn regenerate() {
    std::fs::create_dir_all(dir()).unwrap();
    for (name, v) in vectors() {
        let text = serde_json::to_string_pretty(&v).unwrap() + "\n";
        std::fs::write(dir().join(format!("{name}.json")), text).unwrap();
    }
}

const ARN: &str = "arn:aws:kms:us-east-1:111122223333:key/00000000-0000-4000-8000-000000000001";
const KEY: [u8; 32] = [0x42; 32];

fn slot(seq: u64, version: u32) -> [u8; SLOT_SIZE] {
    wrapped_slot(seq, version, SlotWrapping::Kms)
}

fn wrapped_slot(seq: u64, version: u32, wrapping: SlotWrapping) -> [u8; SLOT_SIZE] {
    Slot {
        sequence: seq,
        wrapped_at: 1_767_225_600 + seq as i64,
        key_version: version,
        key_arn: ARN.into(),
        wrapped_key: b"placeholder: the data key is data_key_hex".to_vec(),
        wrapping,
    }
    .encode()
    .unwrap()
}

#[allow(clippy::large_types_passed_by_value)] // reason: each vector builds its slots inline
fn build(chunk: u32, ctx: &[(&str, &str)], plain: &[u8], slots: [[u8; SLOT_SIZE]; 2]) -> Vec<u8> {
    let ctx: EncryptionContext = ctx
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let file_id = uuid::Uuid::from_u128(0x0123_4567_89ab_4cde_8f01_2345_6789_abcd);
    let h = Header::with_ids(chunk, file_id, [1, 2, 3, 4, 5, 6, 7], ctx).unwrap();
    let mut out = h.as_bytes().to_vec();
    out.extend_from_slice(&slots[0]);
    out.extend_from_slice(&slots[1]);
    rewrap::stream::encrypt(&Secret::from_slice(&KEY), &h, &mut &plain[..], &mut out).unwrap();
    out
}

/// `len` bytes holding `l (u32) || "REND"` where a final chunk of `l`
/// bytes would end, for every `l` in 0, 8, .. up to `chunk`.
fn end_record_decoys(chunk: usize, len: usize) -> Vec<u8> {
    let mut b = vec![0x5Au8; len];
    let mut l = 0;
    while l <= chunk && l + 24 <= len {
        b[l + 16..l + 20].copy_from_slice(&(l as u32).to_be_bytes());
        b[l + 20..l + 24].copy_from_slice(b"REND");
        l += 8;
    }
    b
}

fn plain(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 7 % 251) as u8).collect()
}

fn vector(
    description: &str,
    env: Vec<u8>,
    expect: &str,
    pt: Option<&[u8]>,
    active: Option<usize>,
) -> Vector {
    Vector {
        description: description.into(),
        data_key_hex: hex::encode(KEY),
        envelope_hex: hex::encode(env),
        expect: expect.into(),
        plaintext_hex: pt.map(hex::encode),
        active_slot: active,
    }
}

/// Every vector, by file name.
fn vectors() -> Vec<(&'static str, Vector)> {
    let one = [slot(1, 1), EMPTY_SLOT];
    let ok = |n: usize| build(64, &[], &plain(n), one);
    let body = |e: &Vec<u8>| e.len() - rewrap::stream::body_len(130, 64) as usize;
    let base = ok(130);
    let b = body(&base);
    let mut v = vec![
        (
            "ok-empty",
            vector(
                "empty plaintext: one empty final chunk",
                ok(0),
                "ok",
                Some(&[]),
                Some(0),
            ),
        ),
        (
            "ok-1-byte",
            vector("one byte", ok(1), "ok", Some(&plain(1)), Some(0)),
        ),
        (
            "ok-2-full-chunks",
            vector(
                "exactly two chunks of 64 bytes; the second is final",
                ok(128),
                "ok",
                Some(&plain(128)),
                Some(0),
            ),
        ),
        (
            "ok-3-chunks",
            vector(
                "130 bytes: 64 + 64 + 2",
                base.clone(),
                "ok",
                Some(&plain(130)),
                Some(0),
            ),
        ),
        (
            "ok-context",
            vector(
                "user context purpose=app-data in the header",
                build(64, &[("purpose", "app-data")], &plain(10), one),
                "ok",
                Some(&plain(10)),
                Some(0),
            ),
        ),
        (
            "ok-rotated",
            vector(
                "after a rotation: slot 0 wiped, slot 1 active with sequence 2",
                build(64, &[], &plain(10), [EMPTY_SLOT, slot(2, 2)]),
                "ok",
                Some(&plain(10)),
                Some(1),
            ),
        ),
        (
            "ok-both-slots-valid",
            vector(
                "interrupted rotation: both slots valid, the higher sequence (slot 1) wins",
                build(64, &[], &plain(10), [slot(1, 1), slot(2, 2)]),
                "ok",
                Some(&plain(10)),
                Some(1),
            ),
        ),
    ];
    // Issue 15: a slot wrapped offline under an RSA public key ("OAP2"),
    // and the same envelope after its rotation to an ordinary slot.
    let offline = wrapped_slot(1, 0, SlotWrapping::RsaOaepSha256);
    v.push((
        "ok-offline-rsa-slot",
        vector(
            "slot 0 wrapped offline with RSAES_OAEP_SHA_256 (slot magic OAP2), no context",
            build(64, &[], &plain(10), [offline, EMPTY_SLOT]),
            "ok",
            Some(&plain(10)),
            Some(0),
        ),
    ));
    v.push((
        "ok-rotated-from-offline",
        vector(
            "interrupted rotation of an offline slot: OAP2 slot 0, SLOT slot 1 with sequence 2 wins",
            build(64, &[], &plain(10), [offline, slot(2, 1)]),
            "ok",
            Some(&plain(10)),
            Some(1),
        ),
    ));
    let mut unknown = offline;
    unknown[0..4].copy_from_slice(b"OAP9");
    let sum = sha2::Sha256::digest(&unknown[..SLOT_SIZE - 32]);
    unknown[SLOT_SIZE - 32..].copy_from_slice(&sum);
    v.push((
        "err-unknown-slot-magic",
        vector(
            "slot 0 with an unknown slot magic (OAP9, checksum recomputed), slot 1 empty",
            build(64, &[], &plain(10), [unknown, EMPTY_SLOT]),
            "CorruptHeader",
            None,
            None,
        ),
    ));
    let mut torn = slot(2, 2);
    torn[512..].fill(0);
    v.push((
        "ok-torn-slot",
        vector(
            "torn write of slot 1 (only its first 512 bytes): slot 0 is used",
            build(64, &[], &plain(10), [slot(1, 1), torn]),
            "ok",
            Some(&plain(10)),
            Some(0),
        ),
    ));
    let mut e = base.clone();
    e[0] = b'X';
    v.push((
        "err-bad-magic",
        vector("first byte changed", e, "NotEnvelope", None, None),
    ));
    let mut e = base.clone();
    e[9] = 2;
    v.push((
        "err-version",
        vector("format version 2", e, "UnsupportedVersion", None, None),
    ));
    let mut e = base.clone();
    e[20] ^= 1;
    v.push((
        "err-header-checksum",
        vector("a file-id bit flipped", e, "CorruptHeader", None, None),
    ));
    let mut e = base.clone();
    let s0 = b - 2 * SLOT_SIZE;
    e[s0 + 30] ^= 1;
    v.push((
        "err-no-valid-slot",
        vector(
            "slot 0 corrupt, slot 1 empty",
            e,
            "CorruptHeader",
            None,
            None,
        ),
    ));
    let mut e = base.clone();
    e[b + 80 + 3] ^= 1;
    v.push((
        "err-chunk-1",
        vector("a bit of chunk 1 flipped", e, "ChunkAuth", None, None),
    ));
    let mut e = base.clone();
    e.truncate(b + 2 * 80);
    v.push((
        "err-truncated",
        vector("cut after chunk 1 (not final)", e, "Truncated", None, None),
    ));
    let mut e = base.clone();
    e.extend_from_slice(b"garbage");
    v.push((
        "err-trailing",
        vector("bytes after the end record", e, "TrailingData", None, None),
    ));
    let mut e = base.clone();
    let (x, y) = e[b..].split_at_mut(80);
    x.swap_with_slice(&mut y[..80]);
    v.push((
        "err-reordered",
        vector("chunks 0 and 1 swapped", e, "ChunkAuth", None, None),
    ));
    let mut e = base.clone();
    let h = b - 2 * SLOT_SIZE;
    e[12..16].copy_from_slice(&(MAX_CHUNK_SIZE + 1).to_be_bytes());
    let sum = sha2::Sha256::digest(&e[..h - 32]);
    e[h - 32..h].copy_from_slice(&sum);
    v.push((
        "err-chunk-size",
        vector(
            "chunk size 16 MiB + 1 (header checksum recomputed): refused when the header is parsed",
            e,
            "ChunkSizeOutOfRange",
            None,
            None,
        ),
    ));
    v.push((
        "ok-max-chunk-size",
        vector(
            "chunk size 16 MiB, the largest: 130 bytes in one final chunk",
            build(MAX_CHUNK_SIZE, &[], &plain(130), one),
            "ok",
            Some(&plain(130)),
            Some(0),
        ),
    ));
    let mut e = base[..b].to_vec();
    e.extend_from_slice(&end_record_decoys(64, 64 + 16 + 8 - 1));
    v.push((
        "err-end-record-decoys",
        vector(
            "a body holding an end-record look-alike every 8 bytes (issue 12 finding 1): \
             the reader opens a bounded number of final-chunk lengths and fails",
            e,
            "ChunkAuth",
            None,
            None,
        ),
    ));
    let mut e = base.clone();
    e.extend_from_slice(&end_record_decoys(64, 200));
    v.push((
        "err-trailing-decoys",
        vector(
            "a valid envelope followed by end-record look-alikes: the real end record comes \
             first, so it is trailing data",
            e,
            "TrailingData",
            None,
            None,
        ),
    ));
    let mut e = base;
    let n = e.len();
    e[n - 5] ^= 1;
    v.push((
        "err-end-record",
        vector("end record length changed", e, "Truncated", None, None),
    ));
    v
}

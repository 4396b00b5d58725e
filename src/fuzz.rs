//! Fuzz entry points: one function per parser of untrusted bytes, called by
//! the cargo-fuzz targets in `fuzz/` and by `tests/fuzz_corpora.rs`, which
//! replays every corpus file and crash case on stable Rust.
//!
//! Each entry point must return normally on any input: a panic is a finding.
//! Where a serializer exists, the entry point also checks the round trip
//! (what parses re-encodes to the same bytes, or `parse(serialize(x)) == x`)
//! and asserts on it. Not part of the API.

use crate::api::EncryptionContext;
use crate::ciphertext_blob::{self, BlobHeader};
use crate::envelope::{Header, ParsedHeader, Slot, SlotState, MAGIC, SLOT_SIZE};
use crate::error::{KmsError, Result};
use crate::kms::Kms;
use crate::operation::Operation;
use crate::secret::Secret;
use crate::sigv4;
use crate::stream;
use std::sync::Mutex;

/// A fuzz entry point.
pub type Target = fn(&[u8]);

/// Every target: its name (the `fuzz/fuzz_targets/<name>.rs` file and the
/// `fuzz/corpus/<name>/` folder) and its entry point.
pub const TARGETS: &[(&str, Target)] = &[
    ("envelope_header", envelope_header),
    ("stream_body", stream_body),
    ("ciphertext_blob", ciphertext_blob),
    ("sigv4_authorization", sigv4_authorization),
    ("sigv4_request", sigv4_request),
    ("kms_request", kms_request),
    ("audit_line", audit_line),
    ("audit_segment", audit_segment),
    ("policy_file", policy_file),
    ("key_object", key_object),
    ("checkpoint", checkpoint),
    ("sops_file", sops_file),
    ("object_header", object_header),
];

/// Envelope header and slots: strict parsing, and what parses re-encodes
/// to exactly the same bytes (the codec accepts only canonical input).
pub fn envelope_header(data: &[u8]) {
    let Ok(parsed) = ParsedHeader::parse(data) else {
        return;
    };
    let h = &parsed.header;
    let again = Header::with_ids(
        h.chunk_size(),
        h.file_id(),
        h.nonce_prefix(),
        h.user_context().clone(),
    )
    .expect("a parsed header has valid fields");
    assert_eq!(
        again.as_bytes(),
        h.as_bytes(),
        "header re-encodes differently"
    );
    assert_eq!(Header::parse(h.as_bytes()).ok().as_ref(), Some(h));
    for (i, state) in parsed.slots.0.iter().enumerate() {
        let at = h.len() + i * SLOT_SIZE;
        let bytes = &data[at..at + SLOT_SIZE];
        match state {
            SlotState::Valid(slot) => {
                let encoded = slot.encode().expect("a valid slot encodes");
                assert_eq!(&encoded[..], bytes, "slot {i} re-encodes differently");
                assert_eq!(Slot::decode(&encoded), SlotState::Valid(slot.clone()));
            }
            SlotState::Empty => assert!(bytes.iter().all(|&b| b == 0)),
            SlotState::Corrupt => {}
        }
    }
    let _ = parsed.slots.active();
}

/// The fixed header and data key the body targets decrypt under: chunk
/// size 64, so small inputs span several chunks.
fn body_header() -> (Secret, Header) {
    let file_id = uuid::Uuid::from_u128(0x0123_4567_89ab_4cde_8f01_2345_6789_abcd);
    let h = Header::with_ids(64, file_id, [1, 2, 3, 4, 5, 6, 7], EncryptionContext::new())
        .expect("a valid header");
    (Secret::from_slice(&[0x42; 32]), h)
}

/// The STREAM body reader: any bytes as a body, with a bound on the
/// AES-GCM work (linear, issue 12 finding 1); a body that opens re-encrypts
/// to exactly the same bytes (header and key fixed, so sealing is
/// deterministic); and the input as a plaintext round-trips.
pub fn stream_body(data: &[u8]) {
    let (key, h) = body_header();
    let work = stream::OpenWork::default();
    let mut plain = Vec::new();
    let opened = stream::decrypt_measured(&key, &h, &mut &data[..], &mut plain, &work);
    let full = 64 + stream::TAG_LEN as u64;
    let bound = data.len() as u64 / full + 2 + stream::MAX_FINAL_CANDIDATES as u64;
    assert!(
        work.opens() <= bound,
        "{} opens for {} bytes",
        work.opens(),
        data.len()
    );
    if opened.is_ok() {
        let mut again = Vec::new();
        stream::encrypt(&key, &h, &mut &plain[..], &mut again).expect("encrypts");
        assert_eq!(
            again, data,
            "an accepted body is not what the encoder writes"
        );
    }
    let mut sealed = Vec::new();
    stream::encrypt(&key, &h, &mut &data[..], &mut sealed).expect("encrypts");
    let mut back = Vec::new();
    stream::decrypt(&key, &h, &mut &sealed[..], &mut back).expect("decrypts its own output");
    assert_eq!(back, data);
}

/// The KMS ciphertext blob: `peek` and `open` on any bytes; a blob sealed
/// from the input opens to it and peeks to its header.
pub fn ciphertext_blob(data: &[u8]) {
    let key = Secret::from_slice(&[0x24; 32]);
    let peeked = ciphertext_blob::peek(data);
    if let Ok(plain) = ciphertext_blob::open(&key, data, None) {
        let header = peeked.expect("an opened blob peeks");
        let mut nonce = [0u8; 12];
        nonce.copy_from_slice(&data[22..34]);
        let again = ciphertext_blob::seal_with_nonce(&key, header, None, plain.expose(), nonce)
            .expect("seals");
        assert_eq!(
            again, data,
            "an accepted blob is not what the encoder writes"
        );
    }
    let header = BlobHeader {
        key_id: uuid::Uuid::from_u128(7),
        key_version: 1 + u32::from(data.first().copied().unwrap_or(0)),
    };
    let context: EncryptionContext =
        [("k".to_string(), String::from_utf8_lossy(data).into_owned())].into();
    if let Ok(blob) = ciphertext_blob::seal_with_nonce(&key, header, Some(&context), data, [9; 12])
    {
        assert_eq!(ciphertext_blob::peek(&blob), Some(header));
        let back = ciphertext_blob::open(&key, &blob, Some(&context)).expect("opens its own blob");
        assert_eq!(back.expose(), data);
        assert!(ciphertext_blob::open(&key, &blob, None).is_err());
    }
}

/// The `Authorization` header parser on any text.
pub fn sigv4_authorization(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(auth) = sigv4::parse_authorization(text) {
        assert!(!auth.access_key_id.is_empty() && !auth.signature.is_empty());
        let again = format!(
            "AWS4-HMAC-SHA256 Credential={}/{}/{}/{}/aws4_request, SignedHeaders={}, Signature={}",
            auth.access_key_id,
            auth.date,
            auth.region,
            auth.service,
            auth.signed_headers.join(";"),
            auth.signature
        );
        if !auth.signed_headers.iter().any(|h| h.contains([',', ' '])) {
            assert_eq!(
                sigv4::parse_authorization(&again).ok(),
                Some(auth),
                "the parsed header does not re-parse to itself"
            );
        }
    }
}

const FUZZ_AKID: &str = "AKIAFUZZFUZZFUZZFUZZ";

fn fuzz_lookup(id: &str) -> Result<(String, Secret)> {
    if id == FUZZ_AKID {
        Ok(("fuzzer".into(), Secret::from_slice(b"fuzz secret")))
    } else {
        Err(KmsError::new(
            crate::error::ErrorCode::UnrecognizedClient,
            "unknown",
        ))
    }
}

/// A request head as text: a first line `path?query`, then `name: value`
/// lines, a blank line and the body. Checks the server's pre-body checks
/// and SigV4 verification on it as sent, then signs its headers and
/// verifies that: what `sign` produces, `verify` must accept.
pub fn sigv4_request(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let (head, body) = text.split_once("\n\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let target = lines.next().unwrap_or("/");
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let headers: Vec<(&str, &str)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim(), v))
        .collect();
    let req = sigv4::RequestParts {
        method: "POST",
        path,
        query,
        headers: &headers,
    };
    let now = chrono::DateTime::from_timestamp(1_767_225_600, 0).expect("a valid time");
    let _ = sigv4::verify(&req, body.as_bytes(), "kms", now, fuzz_lookup);
    let mut map = hyper::HeaderMap::new();
    for (n, v) in &headers {
        if let (Ok(n), Ok(v)) = (
            hyper::header::HeaderName::from_bytes(n.as_bytes()),
            hyper::header::HeaderValue::from_str(v),
        ) {
            map.append(n, v);
        }
    }
    let _ = crate::server::precheck(&map, now, fuzz_lookup);
    // Sign what a client could send: header names that are tokens, values
    // without control characters, no headers that `sign` adds itself.
    let mut signable: Vec<(&str, &str)> = headers
        .iter()
        .filter(|(n, v)| {
            !n.is_empty()
                && n.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !v.bytes().any(|b| b.is_ascii_control())
                && ![
                    "authorization",
                    "x-amz-date",
                    "x-amz-content-sha256",
                    "x-amz-security-token",
                ]
                .contains(&n.to_ascii_lowercase().as_str())
        })
        .copied()
        .collect();
    // The headers the server requires to be signed.
    for (name, value) in [
        ("host", "kms.fuzz"),
        ("x-amz-target", "TrentService.ListKeys"),
    ] {
        if !signable.iter().any(|(n, _)| n.eq_ignore_ascii_case(name)) {
            signable.push((name, value));
        }
    }
    let path = if path.starts_with('/') { path } else { "/" };
    let req = sigv4::RequestParts {
        method: "POST",
        path,
        query,
        headers: &signable,
    };
    let creds = sigv4::Credentials {
        access_key_id: FUZZ_AKID.into(),
        secret_access_key: Secret::from_slice(b"fuzz secret"),
        session_token: None,
    };
    let mut all = signable.clone();
    let added = sigv4::sign(&req, body.as_bytes(), &creds, "us-east-1", "kms", now);
    all.extend(added.iter().map(|(n, v)| (*n, v.as_str())));
    let signed = sigv4::RequestParts {
        headers: &all,
        ..req
    };
    let verified = sigv4::verify(&signed, body.as_bytes(), "kms", now, fuzz_lookup);
    assert!(
        verified.is_ok(),
        "a request signed by sign() does not verify: {verified:?}"
    );
}

/// A [`Kms`] that records the JSON request it is called with and fails.
struct Recorder(Mutex<Option<Vec<u8>>>);

impl Kms for Recorder {
    fn call(&self, _op: Operation, request: &[u8]) -> Result<Secret> {
        *self.0.lock().expect("not poisoned") = Some(request.to_vec());
        Err(KmsError::internal("recorded"))
    }
}

/// The JSON request body of every operation (the first byte picks the
/// operation), through [`crate::kms::dispatch`] as the server runs it: a
/// body that parses serializes to JSON that parses back to the same request
/// (checked as: serializing twice gives the same bytes).
pub fn kms_request(data: &[u8]) {
    let Some((&pick, body)) = data.split_first() else {
        return;
    };
    let op = Operation::ALL[usize::from(pick) % Operation::ALL.len()];
    let recorder = Recorder(Mutex::new(None));
    let _ = crate::kms::dispatch(&recorder, op, body);
    let Some(first) = recorder.0.lock().expect("not poisoned").take() else {
        return;
    };
    let _ = crate::kms::dispatch(&recorder, op, &first);
    let second = recorder
        .0
        .lock()
        .expect("not poisoned")
        .take()
        .expect("a serialized request parses again");
    assert_eq!(
        String::from_utf8_lossy(&first),
        String::from_utf8_lossy(&second),
        "{op:?}: the request does not survive a JSON round trip"
    );
}

/// An audit log: any bytes as the file, through the real reader.
pub fn audit_line(data: &[u8]) {
    thread_local! {
        static DIR: tempfile::TempDir = tempfile::tempdir().expect("a temporary folder");
    }
    DIR.with(|dir| {
        let path = dir.path().join("audit.log");
        std::fs::write(&path, data).expect("writes");
        let _ = crate::audit::read_records(&path);
    });
}

/// A closed audit segment (`audit.segments/*.seg`), a file anyone with
/// write access to the trail's folder can replace: a whole file when the
/// input starts with the segment magic, else a segment body that the
/// entry point compresses. The reader gives records or an error, never a
/// panic, and its records re-encode into a segment that reads back the
/// same (see `audit::segment`).
pub fn audit_segment(data: &[u8]) {
    crate::audit::fuzz_segment(data);
}

/// A policy file: any text through the TOML policy loader.
pub fn policy_file(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = crate::policy::PolicySet::from_toml("fuzz.toml", text);
    }
}

/// An object-store key object: the rules `read_key_object` applies (not an
/// envelope without the magic; header and slots, strictly; nothing after
/// them), then the header round trip.
pub fn key_object(data: &[u8]) {
    if data.len() < MAGIC.len() || data[..MAGIC.len()] != MAGIC {
        return;
    }
    if let Ok(parsed) = ParsedHeader::parse(data) {
        if data.len() == parsed.total_len() {
            envelope_header(data);
        }
    }
}

/// A rotation checkpoint file (JSON): what parses serializes and parses
/// back to the same value.
pub fn checkpoint(data: &[u8]) {
    use crate::worker::Checkpoint;
    let Ok(cp) = serde_json::from_slice::<Checkpoint>(data) else {
        return;
    };
    let text = serde_json::to_vec(&cp).expect("serializes");
    let back: Checkpoint = serde_json::from_slice(&text).expect("parses its own output");
    assert_eq!(back, cp);
}

/// SOPS files: the scanners never panic, every span lies inside the input,
/// and writing new values into the `arn`, `enc` and `created_at` spans
/// gives a file that reads back with the same entries and the new values.
pub fn sops_file(data: &[u8]) {
    let Ok(Some(file)) = crate::sops::parse(data) else {
        return;
    };
    let mut edits = Vec::new();
    for e in &file.entries {
        edits.push((e.arn.span.clone(), "arn:aws:kms:r:1:key/k".to_string()));
        edits.push((e.enc.span.clone(), "QUJD".to_string()));
        if let Some(c) = &e.created_at {
            edits.push((c.span.clone(), crate::sops::now_rfc3339()));
        }
    }
    let mut spans: Vec<_> = edits.iter().map(|(r, _)| r.clone()).collect();
    spans.sort_by_key(|r| r.start);
    for pair in spans.windows(2) {
        assert!(pair[0].end <= pair[1].start, "overlapping spans");
    }
    assert!(spans
        .iter()
        .all(|r| r.start <= r.end && r.end <= data.len()));
    let out = crate::sops::rewrite(data, &edits);
    let again = crate::sops::parse(&out)
        .expect("a rewritten SOPS file parses")
        .expect("a rewritten SOPS file is still one");
    assert_eq!(again.format, file.format);
    let ids = |f: &crate::sops::SopsFile| -> Vec<(Option<usize>, usize)> {
        f.entries.iter().map(|e| (e.group, e.index)).collect()
    };
    assert_eq!(ids(&again), ids(&file));
    for e in &again.entries {
        assert_eq!(e.arn.value, "arn:aws:kms:r:1:key/k");
        assert_eq!(e.enc.value, "QUJD");
    }
}

/// The `x-rewrap-object` header's value as the server decodes it
/// ([`crate::audit::decode_object_header`]): what decodes is an object
/// name an audit record may hold, and the encoder gives it back. Any input
/// that is UTF-8 also goes through [`crate::audit::object_name`] (what the
/// worker names its files with), whose every non-empty output must encode
/// to a header that decodes back to it: any file name travels.
pub fn object_header(data: &[u8]) {
    use crate::audit::{check_object, decode_object_header, encode_object_header, object_name};
    let round_trip = |object: &str| {
        let header = encode_object_header(object);
        assert!(
            header.bytes().all(|b| b.is_ascii_graphic()),
            "{header:?} is not a header value"
        );
        assert_eq!(
            decode_object_header(header.as_bytes()).as_deref(),
            Ok(object),
            "does not survive the header"
        );
    };
    if let Ok(object) = decode_object_header(data) {
        assert_eq!(check_object(&object), Ok(()));
        round_trip(&object);
    }
    if let Ok(name) = std::str::from_utf8(data) {
        let object = object_name(name);
        if !name.is_empty() {
            assert_eq!(check_object(&object), Ok(()), "{name:?} names no object");
            round_trip(&object);
        }
    }
}

//! Audit-trail size and DescribeKey cost, run only by `cargo bench --bench
//! audit_size` (issue 14).
//!
//! 1. Bytes per ReEncrypt record: `REWRAP_BENCH_RECORDS` (100,000)
//!    ReEncrypt calls through the in-process service, in batches of 1000
//!    (`re_encrypt_many`, as the rotation worker calls it), each with its
//!    own `rewrap:file-id` destination context as a rotation's are. Not a
//!    real rotation of 100,000 files (too slow for a bench on a shared
//!    machine); the records are the same shape. Baseline, same run: the
//!    active file in the JSON-lines format (the only format before
//!    segments). Measured: the closed segment the same records become.
//!    Goal: at most 100 bytes per record.
//! 2. DescribeKey in a fresh service (a fresh process's cost: open the
//!    keystore and the trail, read the usage index, answer), on a keystore
//!    with the trail of part 1 against one with an empty trail, in
//!    alternating rounds. Goal: a ratio near 1 (the trail is not scanned).

use rewrap::api::{CreateKeyRequest, EncryptRequest, KeyIdRequest, ReEncryptRequest};
use rewrap::kms::Kms;
use rewrap::secret::Secret;
use rewrap::service::{Caller, KmsService};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

fn setting(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

const FILE_ID: &str = "rewrap:file-id";

/// A keystore with two keys; returns the service, the owner and the keys.
fn keystore(home: &Path) -> (std::sync::Arc<KmsService>, Caller, String, String) {
    let owner = KmsService::init(home).unwrap();
    let service = KmsService::open(home, None).unwrap();
    let caller = Caller {
        principal: owner.principal_name,
        ..Default::default()
    };
    let session = service.session(caller.clone());
    let key = || {
        session
            .create_key(&CreateKeyRequest::default())
            .unwrap()
            .key_metadata
            .key_id
    };
    let (from, to) = (key(), key());
    (service, caller, from, to)
}

fn file_context(id: uuid::Uuid) -> BTreeMap<String, String> {
    BTreeMap::from([(FILE_ID.to_string(), id.hyphenated().to_string())])
}

/// Appends `n` ReEncrypt records; returns the bytes of the active file.
fn re_encrypt_records(
    service: &std::sync::Arc<KmsService>,
    caller: &Caller,
    keys: (&str, &str),
    n: usize,
) {
    let session = service.session(caller.clone());
    let source = file_context(uuid::Uuid::new_v4());
    let blob = session
        .encrypt(&EncryptRequest {
            key_id: keys.0.to_string(),
            plaintext: Secret::random(32),
            encryption_context: Some(source.clone()),
            ..Default::default()
        })
        .unwrap()
        .ciphertext_blob;
    let mut done = 0;
    while done < n {
        let batch: Vec<ReEncryptRequest> = (0..(n - done).min(1000))
            .map(|_| ReEncryptRequest {
                ciphertext_blob: blob.clone(),
                source_encryption_context: Some(source.clone()),
                destination_key_id: keys.1.to_string(),
                destination_encryption_context: Some(file_context(uuid::Uuid::new_v4())),
                ..Default::default()
            })
            .collect();
        for result in session.re_encrypt_many(&batch) {
            result.unwrap();
        }
        done += batch.len();
    }
}

/// Seconds for one DescribeKey in a freshly opened service.
fn fresh_describe_key(home: &Path, caller: &Caller, key: &str) -> f64 {
    let started = Instant::now();
    let service = KmsService::open(home, None).unwrap();
    service
        .session(caller.clone())
        .describe_key(&KeyIdRequest {
            key_id: key.to_string(),
            ..Default::default()
        })
        .unwrap();
    started.elapsed().as_secs_f64()
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let n = setting("REWRAP_BENCH_RECORDS", 100_000) as usize;
    let dir = tempfile::tempdir().unwrap();
    let large = dir.path().join("large");
    let (service, caller, from, to) = keystore(&large);
    // Everything before the ReEncrypt records goes into a first segment,
    // so the measured segment holds the ReEncrypt records only.
    service.close_audit_segment().unwrap();
    let started = Instant::now();
    re_encrypt_records(&service, &caller, (&from, &to), n);
    let secs = started.elapsed().as_secs_f64();
    let active = service.audit_path();
    let json_bytes = std::fs::metadata(&active).unwrap().len();
    let header = service.close_audit_segment().unwrap().unwrap();
    let segment = active
        .with_file_name("audit.segments")
        .join(format!("{:020}.seg", header.first_seq));
    let segment_bytes = std::fs::metadata(&segment).unwrap().len();
    let records = header.records as f64;
    println!(
        "Audit trail size, {} ReEncrypt records through the service ({:.0} records/s, durable):",
        header.records,
        records / secs
    );
    println!(
        "  JSON lines (the format before segments): {:>12} bytes, {:>7.1} bytes/record",
        json_bytes,
        json_bytes as f64 / records
    );
    println!(
        "  closed segment (compact + DEFLATE):      {:>12} bytes, {:>7.1} bytes/record (goal <= 100)",
        segment_bytes,
        segment_bytes as f64 / records
    );
    println!(
        "  ratio segment / JSON lines: {:.3}",
        segment_bytes as f64 / json_bytes as f64
    );
    drop(service);

    let empty = dir.path().join("empty");
    let (empty_service, empty_caller, empty_key, _) = keystore(&empty);
    drop(empty_service);
    let rounds = setting("REWRAP_BENCH_ROUNDS", 20).max(1);
    let (mut e, mut l) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        e.push(fresh_describe_key(&empty, &empty_caller, &empty_key));
        l.push(fresh_describe_key(&large, &caller, &from));
    }
    e.sort_by(f64::total_cmp);
    l.sort_by(f64::total_cmp);
    let (e, l) = (e[e.len() / 2], l[l.len() / 2]);
    println!("DescribeKey in a fresh service, median of {rounds} alternating rounds:");
    println!("  empty trail:                         {:>8.3} ms", e * 1e3);
    println!(
        "  trail of {:>7} records (closed):    {:>8.3} ms",
        header.records,
        l * 1e3
    );
    println!("  ratio large / empty: {:.2} (goal: about 1)", l / e);
}

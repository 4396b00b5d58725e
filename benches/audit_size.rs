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
//!    The records span several segments (each closed at the shipped
//!    `segment_max_bytes`, 64 MiB of JSON lines): every segment they
//!    made is counted, and the baseline is the same records as JSON lines.
//! 2. DescribeKey in a fresh service (a fresh process's cost: open the
//!    keystore and the trail, read the usage index, answer), on a keystore
//!    whose trail holds `REWRAP_BENCH_TRAIL_BYTES` (1 GB) of records as
//!    JSON lines (part 1's records, then more of the same) against one
//!    with an empty trail, in alternating rounds. Goal: a ratio near 1
//!    (the trail is not scanned).

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

/// The closed segment files of the trail at `active`, by name.
fn segments(active: &Path) -> Vec<std::path::PathBuf> {
    let dir = active.with_file_name("audit.segments");
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .map(|d| d.map(|e| e.unwrap().path()).collect())
        .unwrap_or_default();
    files.retain(|p| p.extension().is_some_and(|e| e == "seg"));
    files.sort();
    files
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let n = setting("REWRAP_BENCH_RECORDS", 100_000) as usize;
    let trail_bytes = setting("REWRAP_BENCH_TRAIL_BYTES", 1_000_000_000);
    let dir = tempfile::tempdir().unwrap();
    let large = dir.path().join("large");
    let (service, caller, from, to) = keystore(&large);
    let active = service.audit_path();
    // Everything before the ReEncrypt records goes into a first segment,
    // so the measured segments hold the ReEncrypt records only.
    service.close_audit_segment().unwrap();
    let before = segments(&active);
    let first_seq = rewrap::audit::read_records(&active)
        .unwrap()
        .last()
        .map_or(1, |r| r.seq + 1);
    let started = Instant::now();
    re_encrypt_records(&service, &caller, (&from, &to), n);
    let secs = started.elapsed().as_secs_f64();
    service.close_audit_segment().unwrap();
    let made: Vec<_> = segments(&active)
        .into_iter()
        .filter(|p| !before.contains(p))
        .collect();
    let segment_bytes: u64 = made
        .iter()
        .map(|p| std::fs::metadata(p).unwrap().len())
        .sum();
    let (mut records, mut json_bytes) = (0u64, 0u64);
    for record in rewrap::audit::read_records(&active).unwrap() {
        if record.seq >= first_seq {
            records += 1;
            json_bytes += serde_json::to_vec(&record).unwrap().len() as u64 + 1;
        }
    }
    let per_record = json_bytes as f64 / records as f64;
    println!(
        "Audit trail size, {records} ReEncrypt records through the service ({:.0} records/s, durable), {} segments:",
        records as f64 / secs,
        made.len()
    );
    println!(
        "  JSON lines (the format before segments): {json_bytes:>12} bytes, {per_record:>7.1} bytes/record"
    );
    println!(
        "  closed segments (compact + DEFLATE):     {:>12} bytes, {:>7.1} bytes/record (goal <= 100)",
        segment_bytes,
        segment_bytes as f64 / records as f64
    );
    println!(
        "  ratio segments / JSON lines: {:.3}",
        segment_bytes as f64 / json_bytes as f64
    );
    // Part 2: grow the trail to `trail_bytes` of JSON lines.
    let more = ((trail_bytes as f64 / per_record) as u64).saturating_sub(records) as usize;
    let started = Instant::now();
    re_encrypt_records(&service, &caller, (&from, &to), more);
    let total = records + more as u64;
    let on_disk: u64 = segments(&active)
        .iter()
        .chain([&active])
        .map(|p| std::fs::metadata(p).unwrap().len())
        .sum();
    println!(
        "Grew the trail to {total} records, {:.2} GB as JSON lines ({:.0} MB on disk), in {:.0} s",
        total as f64 * per_record / 1e9,
        on_disk as f64 / 1e6,
        started.elapsed().as_secs_f64()
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
    println!(
        "  empty trail:                                  {:>8.3} ms",
        e * 1e3
    );
    println!(
        "  trail of {total:>8} records ({:.2} GB as JSON): {:>8.3} ms",
        total as f64 * per_record / 1e9,
        l * 1e3
    );
    println!("  ratio large / empty: {:.2} (goal: about 1)", l / e);
}

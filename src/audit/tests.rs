//! Unit tests of `crate::audit`.

use super::record::encode_line;
use super::writer::TAIL_WINDOW;
use super::*;
use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::io::{BufReader, Write};
use std::path::Path;
use std::sync::Arc;

const KEY_A: &str = "arn:aws:kms:us-east-1:111122223333:key/aaaaaaaa-0000-0000-0000-000000000001";
const KEY_B: &str = "arn:aws:kms:us-east-1:111122223333:key/bbbbbbbb-0000-0000-0000-000000000002";

const DURABLE: AuditOptions = AuditOptions {
    durable: true,
    segments: AuditConfig {
        segment_max_bytes: 64 << 20,
        segment_max_age_secs: 24 * 60 * 60,
        digest_interval_secs: 60 * 60,
        retention_days: None,
    },
};

fn record(principal: &str, operation: &str, keys: &[&str]) -> AuditRecord {
    AuditRecord {
        request_id: uuid::Uuid::new_v4().to_string(),
        principal: principal.to_string(),
        operation: operation.to_string(),
        keys: keys
            .iter()
            .map(|arn| AuditKey {
                arn: arn.to_string(),
                version: Some(1),
            })
            .collect(),
        decision: DECISION_ALLOW.to_string(),
        decided_by: "policy.json#AllowApp".to_string(),
        outcome: OUTCOME_SUCCESS.to_string(),
        ..Default::default()
    }
}

fn log_with(dir: &Path, n: u64) -> PathBuf {
    let path = dir.join("audit.log");
    let log = AuditLog::open(&path).unwrap();
    for i in 0..n {
        log.append(record(&format!("app{}", i % 3), "Encrypt", &[KEY_A]))
            .unwrap();
    }
    path
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

fn write_lines(path: &Path, lines: &[String]) {
    let mut text = lines.join("\n");
    text.push('\n');
    std::fs::write(path, text).unwrap();
}

fn tampered(path: &Path) -> (u64, u64, String) {
    match verify(path) {
        Err(AuditError::Tampered { line, seq, problem }) => (line, seq, problem),
        other => panic!("expected Tampered, got {other:?}"),
    }
}

/// A forged line: valid own hash, chained to `prev_hash`.
fn forged_line(seq: u64, prev_hash: &str) -> String {
    let mut forged = record("mallory", "Decrypt", &[KEY_A]);
    forged.seq = seq;
    forged.time = "2025-01-01T00:00:00.000Z".to_string();
    forged.prev_hash = prev_hash.to_string();
    let mut buf = Vec::new();
    encode_line(&forged, &mut buf);
    String::from_utf8(buf).unwrap().trim_end().to_string()
}

#[test]
fn canonical_line_and_hash_are_pinned() {
    let mut rec = record("alice", "ReEncrypt", &[KEY_A]);
    rec.request_id = "5f0c7c4e-1b6a-4d8e-9a59-1f2e3d4c5b6a".to_string();
    rec.time = "2025-01-02T03:04:05.678Z".to_string();
    rec.keys.push(AuditKey {
        arn: KEY_B.to_string(),
        version: None,
    });
    rec.encryption_context = Some(BTreeMap::from([("app".to_string(), "x".to_string())]));
    rec.seq = 1;
    rec.prev_hash = GENESIS_HASH.to_string();
    let mut buf = Vec::new();
    let hash = encode_line(&rec, &mut buf);
    let expected_prefix = format!(
        concat!(
            r#"{{"seq":1,"time":"2025-01-02T03:04:05.678Z","request_id":"5f0c7c4e-1b6a-4d8e-9a59-1f2e3d4c5b6a","#,
            r#""principal":"alice","operation":"ReEncrypt","keys":[{{"arn":"{}","version":1}},{{"arn":"{}"}}],"#,
            r#""encryption_context":{{"app":"x"}},"destination_encryption_context":null,"decision":"Allow","#,
            r#""decided_by":"policy.json#AllowApp","outcome":"Success","source_ip":null,"user_agent":null,"#,
            r#""prev_hash":"{}","hash":""#
        ),
        KEY_A, KEY_B, GENESIS_HASH
    );
    let canonical = format!("{expected_prefix}\"}}");
    assert_eq!(hash, hex::encode(Sha256::digest(canonical.as_bytes())));
    assert_eq!(
        String::from_utf8(buf).unwrap(),
        format!("{expected_prefix}{hash}\"}}\n")
    );
}

#[test]
fn appended_records_verify_with_exact_count_and_chain() {
    let dir = tempfile::tempdir().unwrap();
    let path = log_with(dir.path(), 25);
    let summary = verify(&path).unwrap();
    assert_eq!(summary.records, 25);
    assert_eq!(summary.truncated_final_record, None);
    let records = read_records(&path).unwrap();
    assert_eq!(records.len(), 25);
    assert_eq!(records[0].prev_hash, GENESIS_HASH);
    for (i, rec) in records.iter().enumerate() {
        assert_eq!(rec.seq, i as u64 + 1);
        assert_eq!(rec.hash.len(), 64);
        assert_eq!(rec.time.len(), "2025-01-02T03:04:05.678Z".len());
        assert!(rec.time.ends_with('Z'));
        DateTime::parse_from_rfc3339(&rec.time).unwrap();
        if i > 0 {
            assert_eq!(rec.prev_hash, records[i - 1].hash);
        }
    }
    assert_eq!(summary.last_hash, records[24].hash);
}

#[test]
fn a_group_commit_writes_each_record_as_its_own_chained_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    let log = AuditLog::open(&path).unwrap();
    log.append(record("alice", "Encrypt", &[KEY_A])).unwrap();
    let batch = (0..3)
        .map(|i| record(&format!("p{i}"), "ReEncrypt", &[KEY_A]))
        .collect();
    log.append_all(batch).unwrap();
    log.append_all(Vec::new()).unwrap();
    log.append(record("bob", "Decrypt", &[KEY_A])).unwrap();
    assert_eq!(verify(&path).unwrap().records, 5);
    let records = read_records(&path).unwrap();
    let who: Vec<_> = records.iter().map(|r| r.principal.as_str()).collect();
    assert_eq!(who, ["alice", "p0", "p1", "p2", "bob"]);
    for (i, r) in records.iter().enumerate() {
        assert_eq!(r.seq, i as u64 + 1);
        if i > 0 {
            assert_eq!(r.prev_hash, records[i - 1].hash);
        }
    }
    // Exactly one line per record.
    let text = std::fs::read_to_string(&path).unwrap();
    assert_eq!(text.lines().count(), 5);
}

#[test]
fn reopening_continues_the_chain() {
    let dir = tempfile::tempdir().unwrap();
    let path = log_with(dir.path(), 3);
    let log = AuditLog::open(&path).unwrap();
    log.append(record("bob", "Decrypt", &[KEY_B])).unwrap();
    assert_eq!(verify(&path).unwrap().records, 4);
    assert_eq!(read_records(&path).unwrap()[3].seq, 4);
}

#[test]
fn empty_log_verifies_to_genesis() {
    let dir = tempfile::tempdir().unwrap();
    let path = log_with(dir.path(), 0);
    let summary = verify(&path).unwrap();
    assert_eq!(summary.records, 0);
    assert_eq!(summary.last_hash, GENESIS_HASH);
}

#[test]
fn changed_field_names_the_record() {
    let dir = tempfile::tempdir().unwrap();
    let path = log_with(dir.path(), 10);
    let mut all = lines(&path);
    assert!(all[6].contains(r#""principal":"app0""#));
    all[6] = all[6].replace(r#""principal":"app0""#, r#""principal":"app1""#);
    write_lines(&path, &all);
    let (line, seq, problem) = tampered(&path);
    assert_eq!((line, seq), (7, 7));
    assert_eq!(problem, "hash mismatch (record changed)");
    assert_eq!(
        verify(&path).unwrap_err().to_string(),
        "record 7: hash mismatch (record changed)"
    );
}

#[test]
fn changed_hash_field_is_a_hash_mismatch() {
    let dir = tempfile::tempdir().unwrap();
    let path = log_with(dir.path(), 5);
    let mut all = lines(&path);
    let records = read_records(&path).unwrap();
    let mut bad = records[2].hash.clone().into_bytes();
    bad[0] = if bad[0] == b'0' { b'1' } else { b'0' };
    all[2] = all[2].replace(&records[2].hash, std::str::from_utf8(&bad).unwrap());
    write_lines(&path, &all);
    assert_eq!(
        tampered(&path),
        (3, 3, "hash mismatch (record changed)".to_string())
    );
}

#[test]
fn non_canonical_line_is_a_change() {
    let dir = tempfile::tempdir().unwrap();
    let path = log_with(dir.path(), 5);
    let mut all = lines(&path);
    all[3] = all[3].replacen(r#""seq":4,"#, r#""seq": 4,"#, 1);
    write_lines(&path, &all);
    assert_eq!(
        tampered(&path),
        (
            4,
            4,
            "line is not the canonical serialization of its record (record changed)".to_string()
        )
    );
}

#[test]
fn removed_record_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = log_with(dir.path(), 10);
    let mut all = lines(&path);
    all.remove(7); // seq 8
    write_lines(&path, &all);
    assert_eq!(
        verify(&path).unwrap_err().to_string(),
        "record 8: seq 9 follows 7 (records removed)"
    );
    assert_eq!(tampered(&path).1, 9);
}

#[test]
fn removed_records_at_the_start_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = log_with(dir.path(), 5);
    let mut all = lines(&path);
    all.drain(0..2);
    write_lines(&path, &all);
    assert_eq!(
        tampered(&path),
        (
            1,
            3,
            "seq 3 follows the start of the log (records removed)".to_string()
        )
    );
}

#[test]
fn swapped_records_are_a_reordering() {
    let dir = tempfile::tempdir().unwrap();
    let path = log_with(dir.path(), 10);
    let mut all = lines(&path);
    all.swap(4, 5);
    write_lines(&path, &all);
    assert_eq!(
        tampered(&path),
        (5, 6, "seq 6 follows 4 (records reordered)".to_string())
    );
}

#[test]
fn forged_line_with_wrong_chain_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = log_with(dir.path(), 10);
    let mut all = lines(&path);
    // Own hash correct, seq plausible, prev_hash wrong; later lines renumbered
    // would not help the forger: the chain breaks here already.
    all.insert(5, forged_line(6, &"ab".repeat(32)));
    write_lines(&path, &all);
    assert_eq!(
        verify(&path).unwrap_err().to_string(),
        "record 6: prev_hash does not match record 5 (record removed, inserted or reordered)"
    );
}

#[test]
fn perfectly_chained_forged_line_breaks_its_successor() {
    let dir = tempfile::tempdir().unwrap();
    let path = log_with(dir.path(), 10);
    let records = read_records(&path).unwrap();
    let mut all = lines(&path);
    all.insert(5, forged_line(6, &records[4].hash));
    write_lines(&path, &all);
    assert_eq!(
        tampered(&path),
        (
            7,
            6,
            "seq 6 follows 6 (record inserted or reordered)".to_string()
        )
    );
}

#[test]
fn wrong_genesis_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    write_lines(&path, &[forged_line(1, &"cd".repeat(32))]);
    assert_eq!(
        tampered(&path),
        (
            1,
            1,
            "prev_hash is not the genesis hash (records removed before it)".to_string()
        )
    );
}

fn append_torn_tail(path: &Path) -> u64 {
    let torn = br#"{"seq":4,"time":"2025-01-02T03:04:05.678Z","request_"#;
    let mut file = OpenOptions::new().append(true).open(path).unwrap();
    file.write_all(torn).unwrap();
    torn.len() as u64
}

#[test]
fn torn_final_line_is_reported_and_repaired_by_the_appender() {
    let dir = tempfile::tempdir().unwrap();
    let path = log_with(dir.path(), 3);
    let torn = append_torn_tail(&path);
    let summary = verify(&path).unwrap();
    assert_eq!(summary.records, 3);
    assert_eq!(summary.truncated_final_record, Some(torn));
    assert!(summary.to_string().contains("truncated final record"));
    assert_eq!(read_records(&path).unwrap().len(), 3);

    // Opening leaves the file as found (so `audit verify` sees it); the
    // first append repairs it and records the repair before its own record.
    let log = AuditLog::open(&path).unwrap();
    assert_eq!(log.repaired_torn_bytes(), 0);
    assert_eq!(verify(&path).unwrap().truncated_final_record, Some(torn));
    log.append(record("bob", "Decrypt", &[KEY_A])).unwrap();
    assert_eq!(log.repaired_torn_bytes(), torn);
    let summary = verify(&path).unwrap();
    assert_eq!(summary.records, 5);
    assert_eq!(summary.truncated_final_record, None);
    assert_eq!(summary.repairs, [4]);
    let records = read_records(&path).unwrap();
    assert_eq!(records[3].operation, "RepairAuditTail");
    assert_eq!(records[3].principal, "bob");
    let params = records[3].request_parameters.clone().unwrap();
    assert_eq!(params["Action"], "truncated");
    assert_eq!(params["TornBytes"], torn.to_string());
    assert_eq!(params["TornSeq"], "4");
    assert_eq!(records[4].operation, "Decrypt");
}

#[test]
fn a_complete_final_record_that_lost_its_newline_gets_it_back() {
    let dir = tempfile::tempdir().unwrap();
    let path = log_with(dir.path(), 3);
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() - 1]).unwrap();
    let log = AuditLog::open(&path).unwrap();
    log.append(record("bob", "Decrypt", &[KEY_A])).unwrap();
    let records = read_records(&path).unwrap();
    let ops: Vec<&str> = records.iter().map(|r| r.operation.as_str()).collect();
    assert_eq!(ops[3..], ["RepairAuditTail", "Decrypt"]);
    assert_eq!(
        records[3].request_parameters.as_ref().unwrap()["Action"],
        "newline restored"
    );
    assert_eq!(verify(&path).unwrap().records, 5);
}

#[test]
fn torn_tail_written_behind_an_open_handle_is_repaired_on_append() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    let log = AuditLog::open(&path).unwrap();
    log.append(record("bob", "Decrypt", &[KEY_A])).unwrap();
    let torn = append_torn_tail(&path);
    log.append(record("bob", "Decrypt", &[KEY_A])).unwrap();
    assert_eq!(log.repaired_torn_bytes(), torn);
    assert_eq!(verify(&path).unwrap().records, 3);
}

#[test]
fn torn_only_line_is_truncated_to_an_empty_log() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    std::fs::write(&path, b"{\"seq\":1,\"ti").unwrap();
    assert_eq!(verify(&path).unwrap().truncated_final_record, Some(12));
    let log = AuditLog::open(&path).unwrap();
    log.append(record("bob", "Decrypt", &[KEY_A])).unwrap();
    let records = read_records(&path).unwrap();
    assert_eq!(records.len(), 2);
    assert_eq!(records[0].seq, 1);
    assert_eq!(records[0].operation, "RepairAuditTail");
    assert_eq!(records[0].prev_hash, GENESIS_HASH);
}

#[test]
fn torn_line_that_is_not_last_is_malformed() {
    let dir = tempfile::tempdir().unwrap();
    let path = log_with(dir.path(), 3);
    append_torn_tail(&path);
    OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap()
        .write_all(b"\n")
        .unwrap();
    match verify(&path) {
        Err(AuditError::Malformed { line, problem }) => {
            assert_eq!(line, 4);
            assert!(problem.starts_with("not an audit record"), "{problem}");
        }
        other => panic!("expected Malformed, got {other:?}"),
    }
}

#[test]
fn malformed_last_line_makes_the_appender_fail_closed() {
    let dir = tempfile::tempdir().unwrap();
    let path = log_with(dir.path(), 3);
    OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap()
        .write_all(b"garbage\n")
        .unwrap();
    match AuditLog::open(&path) {
        Err(AuditError::Malformed { line, problem }) => {
            assert_eq!(line, 4);
            assert!(problem.contains("refusing to append"), "{problem}");
        }
        other => panic!("expected Malformed, got {other:?}"),
    }
}

#[test]
fn long_records_and_long_torn_tails_are_found_past_the_first_window() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    let big: BTreeMap<String, String> = (0..400)
        .map(|i| (format!("k{i:04}"), "v".repeat(20)))
        .collect();
    {
        let log = AuditLog::open(&path).unwrap();
        for _ in 0..2 {
            let mut rec = record("bob", "Encrypt", &[KEY_A]);
            rec.encryption_context = Some(big.clone());
            log.append(rec).unwrap();
        }
    }
    let torn = vec![b'x'; 3 * TAIL_WINDOW as usize];
    OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap()
        .write_all(&torn)
        .unwrap();
    let log = AuditLog::open(&path).unwrap();
    log.append(record("bob", "Encrypt", &[KEY_A])).unwrap();
    assert_eq!(log.repaired_torn_bytes(), torn.len() as u64);
    assert_eq!(verify(&path).unwrap().records, 4);
}

#[test]
fn two_handles_interleaving_still_chain() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    let cli = AuditLog::open(&path).unwrap();
    let server = AuditLog::open(&path).unwrap();
    for i in 0..20 {
        let log = if i % 3 == 0 { &cli } else { &server };
        log.append(record("app", "Encrypt", &[KEY_A])).unwrap();
    }
    assert_eq!(verify(&path).unwrap().records, 20);
}

#[test]
fn concurrent_handles_in_threads_still_chain() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    std::thread::scope(|s| {
        for t in 0..4 {
            let path = &path;
            s.spawn(move || {
                let log = AuditLog::open(path).unwrap();
                for _ in 0..250 {
                    log.append(record(&format!("proc{t}"), "Encrypt", &[KEY_A]))
                        .unwrap();
                }
            });
        }
    });
    assert_eq!(verify(&path).unwrap().records, 1000);
}

#[test]
fn eight_threads_share_one_handle() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    let log = Arc::new(AuditLog::open(&path).unwrap());
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let log = Arc::clone(&log);
            std::thread::spawn(move || {
                for _ in 0..500 {
                    log.append(record(&format!("t{t}"), "ReEncrypt", &[KEY_A, KEY_B]))
                        .unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(verify(&path).unwrap().records, 4000);
    let report = report(&path, &ReportFilter::default()).unwrap();
    assert_eq!(report.rows.len(), 16);
    assert!(report.rows.iter().all(|r| r.count == 500));
}

#[test]
fn durable_log_appends_and_syncs() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    let log = AuditLog::open_with(&path, DURABLE).unwrap();
    assert_eq!(log.syncs(), 0);
    log.append(record("bob", "Encrypt", &[KEY_A])).unwrap();
    // Alone, each append runs its own fdatasync before it returns.
    assert_eq!(log.syncs(), 1);
    log.append_all(vec![
        record("bob", "Encrypt", &[KEY_A]),
        record("bob", "Decrypt", &[KEY_A]),
    ])
    .unwrap();
    assert_eq!(log.syncs(), 2, "a batch is one group commit, one sync");
    log.sync().unwrap();
    assert_eq!(verify(&path).unwrap().records, 3);
    assert_eq!(log.path(), path.as_path());
}

#[test]
fn a_log_that_is_not_durable_never_syncs_on_append() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    let log = AuditLog::open(&path).unwrap();
    log.append(record("bob", "Encrypt", &[KEY_A])).unwrap();
    assert_eq!(log.syncs(), 0);
}

/// Concurrent durable appends share syncs: every append returns only after
/// a sync that started after its write, and 8 threads of 200 appends need
/// fewer syncs than appends whenever two of them overlap. The count of
/// syncs depends on scheduling, so the test asserts the bounds that hold
/// under any schedule, and that the records are all there and chained.
#[test]
fn concurrent_durable_appends_share_a_group_commit() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    let log = Arc::new(AuditLog::open_with(&path, DURABLE).unwrap());
    let barrier = Arc::new(std::sync::Barrier::new(8));
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let (log, barrier) = (Arc::clone(&log), Arc::clone(&barrier));
            std::thread::spawn(move || {
                barrier.wait();
                for _ in 0..200 {
                    log.append(record(&format!("t{t}"), "ReEncrypt", &[KEY_A, KEY_B]))
                        .unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(verify(&path).unwrap().records, 1600);
    let syncs = log.syncs();
    assert!(
        (1..=1600).contains(&syncs),
        "{syncs} syncs for 1600 appends"
    );
}

/// The server's connection tasks: an append inside `defer_durability` is
/// queued, and written and synced only when its `Durability` is awaited,
/// which does not block the thread; appends outside a scope (the CLI, the
/// blocking pool) still write and sync before they return, after the
/// queue, so the trail keeps the order of the appends.
#[test]
fn deferred_appends_are_synced_when_awaited_and_scopes_do_not_leak() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    let log = Arc::new(AuditLog::open_with(&path, DURABLE).unwrap());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let append = |log: &AuditLog| log.append(record("p", "ReEncrypt", &[KEY_A])).unwrap();

    let ((), durability) = defer_durability(|| append(&log));
    assert!(!durability.is_empty());
    assert_eq!(verify(&path).unwrap().records, 0, "queued, not written");
    assert_eq!(log.syncs(), 0, "not synced before the wait");
    rt.block_on(durability.wait()).unwrap();
    assert_eq!(verify(&path).unwrap().records, 1);
    assert_eq!(log.syncs(), 1);

    // Outside a scope the append writes and syncs itself, after what a
    // scope queued before it.
    let ((), queued) = defer_durability(|| {
        log.append(record("first", "Decrypt", &[KEY_A])).unwrap();
    });
    log.append(record("second", "Decrypt", &[KEY_A])).unwrap();
    assert_eq!(log.syncs(), 2);
    let principals: Vec<String> = read_records(&path)
        .unwrap()
        .into_iter()
        .map(|r| r.principal)
        .collect();
    assert_eq!(principals, ["p", "first", "second"]);
    queued.wait_blocking().unwrap();
    assert_eq!(
        log.syncs(),
        2,
        "the direct append wrote the queued record with its own, and synced both"
    );

    // A Durability dropped without a wait still gets its record written.
    drop(defer_durability(|| append(&log)));
    log.sync().unwrap();
    assert_eq!(verify(&path).unwrap().records, 4);

    // A panic inside a scope, and a nested scope, leave no scope behind.
    let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        defer_durability(|| {
            append(&log);
            panic!("inside the scope");
        })
    }));
    assert!(panicked.is_err());
    let ((), outer) = defer_durability(|| {
        let ((), inner) = defer_durability(|| append(&log));
        inner.wait_blocking().unwrap();
    });
    assert!(
        outer.is_empty(),
        "the inner scope's append is not the outer's"
    );
    let synced = log.syncs();
    append(&log);
    assert_eq!(log.syncs(), synced + 1, "no scope left on this thread");
    let before = verify(&path).unwrap().records;

    // 64 tasks on 2 threads, each awaiting its own records.
    rt.block_on(async {
        let tasks: Vec<_> = (0..64)
            .map(|_| {
                let log = Arc::clone(&log);
                tokio::spawn(async move {
                    for _ in 0..20 {
                        let ((), d) = defer_durability(|| append(&log));
                        d.wait().await.unwrap();
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
    });
    assert_eq!(verify(&path).unwrap().records, before + 64 * 20);

    // defer_sync (tree decryption): written at once, synced at the wait.
    let syncs_before = log.syncs();
    let ((), durability) = defer_sync(|| append(&log));
    assert_eq!(
        verify(&path).unwrap().records,
        before + 64 * 20 + 1,
        "written at once"
    );
    assert_eq!(log.syncs(), syncs_before, "not synced before the wait");
    durability.wait_blocking().unwrap();
    assert_eq!(log.syncs(), syncs_before + 1);
    assert!(
        log.syncs() < synced + 1 + 64 * 20,
        "{} syncs for {} awaited appends",
        log.syncs() - synced - 1,
        64 * 20
    );
}

/// Trail bytes a fresh handle reads to answer `last_used` (DescribeKey's
/// last-used date) after `n` records were appended by another handle that
/// never asked for usage itself (a CLI `encrypt`, a rotation).
fn usage_reads_after(n: u64) -> (u64, u64, Option<String>) {
    let dir = tempfile::tempdir().unwrap();
    let path = log_with(dir.path(), n);
    let fresh = AuditLog::open(&path).unwrap();
    let last = fresh.last_used(KEY_A).unwrap();
    let len = std::fs::metadata(&path).unwrap().len();
    (fresh.usage_reads(), len, last)
}

/// Issue 14: a fresh process's DescribeKey does not scan the trail. Every
/// writer keeps the last-used index and saves it, so the reader reads the
/// trail's last line and nothing else, for 10 records as for 5000.
#[test]
fn key_usage_in_a_fresh_handle_reads_the_tail_not_the_trail() {
    let (small, small_len, last) = usage_reads_after(10);
    assert!(last.is_some(), "the index knows KEY_A was used");
    assert_eq!(small, small_len.min(TAIL_WINDOW));
    let (large, large_len, last) = usage_reads_after(5000);
    assert!(last.is_some());
    assert!(large_len > 200 * TAIL_WINDOW, "{large_len} bytes");
    assert_eq!(large, TAIL_WINDOW, "read {large} of {large_len} bytes");
}

/// Without a saved index (deleted, or a trail older than it), the first
/// reader replays the whole trail once and saves it; the next reads the
/// tail only.
#[test]
fn a_missing_usage_index_is_rebuilt_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = log_with(dir.path(), 100);
    std::fs::remove_file(path.with_file_name("usage.last")).unwrap();
    let len = std::fs::metadata(&path).unwrap().len();
    let first = AuditLog::open(&path).unwrap();
    first.last_used(KEY_A).unwrap();
    assert_eq!(first.usage_reads(), len.min(TAIL_WINDOW) + len);
    drop(first);
    let second = AuditLog::open(&path).unwrap();
    second.last_used(KEY_A).unwrap();
    assert_eq!(second.usage_reads(), len.min(TAIL_WINDOW));
}

/// A write that fails (here: the file is `/dev/full`, a full disk) fails
/// the append: the caller gets the error, never a silent success.
#[cfg(target_os = "linux")]
#[test]
fn a_full_disk_fails_the_append_with_its_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    std::os::unix::fs::symlink("/dev/full", &path).unwrap();
    let log = AuditLog::open_with(&path, DURABLE).unwrap();
    match log.append(record("bob", "Decrypt", &[KEY_A])) {
        Err(AuditError::Io { path: p, source }) => {
            assert_eq!(p, path);
            assert_eq!(source.raw_os_error(), Some(28), "ENOSPC: {source}");
        }
        other => panic!("expected Io, got {other:?}"),
    }
    assert_eq!(log.syncs(), 0, "nothing written, nothing to sync");
}

#[cfg(unix)]
#[test]
fn new_log_is_private_to_its_owner() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = log_with(dir.path(), 1);
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
}

#[test]
fn missing_file_is_an_io_error_with_its_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nope.log");
    match verify(&path) {
        Err(AuditError::Io { path: p, source }) => {
            assert_eq!(p, path);
            assert_eq!(source.kind(), io::ErrorKind::NotFound);
        }
        other => panic!("expected Io, got {other:?}"),
    }
    let missing_dir = dir.path().join("no/such/dir/audit.log");
    assert!(matches!(
        AuditLog::open(&missing_dir),
        Err(AuditError::Io { .. })
    ));
}

#[test]
fn audit_failure_fails_the_operation_as_internal() {
    let e = AuditError::Malformed {
        line: 3,
        problem: "x".to_string(),
    };
    let kms: KmsError = e.into();
    assert_eq!(kms.code, ErrorCode::Internal);
    assert_eq!(kms.message, "audit log: line 3: x");
}

#[test]
fn audit_log_is_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<AuditLog>();
}

/// Adding a field to the record must be reviewed: none may carry
/// plaintext, data keys, secrets or ciphertext.
#[test]
fn record_fields_are_the_reviewed_set() {
    let json = serde_json::to_value(AuditRecord::default()).unwrap();
    let fields: Vec<&str> = json
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    let mut expected = vec![
        "seq",
        "time",
        "request_id",
        "principal",
        "operation",
        "keys",
        "encryption_context",
        "destination_encryption_context",
        "decision",
        "decided_by",
        "outcome",
        "source_ip",
        "user_agent",
        "prev_hash",
        "hash",
    ];
    expected.sort_unstable();
    let mut fields = fields;
    fields.sort_unstable();
    assert_eq!(fields, expected);
    let key = serde_json::to_value(AuditKey {
        arn: KEY_A.to_string(),
        version: Some(2),
    })
    .unwrap();
    let mut key_fields: Vec<&String> = key.as_object().unwrap().keys().collect();
    key_fields.sort_unstable();
    assert_eq!(key_fields, ["arn", "version"]);
}

fn at(rec: AuditRecord, time: &str) -> AuditRecord {
    AuditRecord {
        time: time.to_string(),
        ..rec
    }
}

fn denied(rec: AuditRecord) -> AuditRecord {
    AuditRecord {
        decision: DECISION_DENY.to_string(),
        decided_by: "policy.json#implicit-deny".to_string(),
        outcome: ErrorCode::AccessDenied.as_str().to_string(),
        ..rec
    }
}

fn failed(rec: AuditRecord) -> AuditRecord {
    AuditRecord {
        outcome: ErrorCode::InvalidCiphertext.as_str().to_string(),
        ..rec
    }
}

fn report_log(dir: &Path) -> PathBuf {
    let path = dir.join("audit.log");
    let log = AuditLog::open(&path).unwrap();
    let t1 = "2025-01-01T10:00:00.000Z";
    let t2 = "2025-01-02T10:00:00.000Z";
    let t3 = "2025-01-03T10:00:00.000Z";
    for rec in [
        at(record("alice", "Encrypt", &[KEY_A]), t1),
        at(record("alice", "Encrypt", &[KEY_A]), t2),
        at(denied(record("alice", "Encrypt", &[KEY_A])), t3),
        at(failed(record("alice", "Decrypt", &[KEY_A])), t2),
        at(record("bob", "ReEncrypt", &[KEY_A, KEY_B]), t3),
        at(record("bob", "ReEncrypt", &[KEY_B, KEY_B]), t1),
        at(denied(record("mallory", "Decrypt", &[KEY_B])), t2),
        at(record("alice", "ListKeys", &[]), t1),
    ] {
        log.append(rec).unwrap();
    }
    path
}

fn row(key: &str, principal: &str, op: &str, counts: [u64; 3], last: &str) -> UsageRow {
    UsageRow {
        key: key.to_string(),
        principal: principal.to_string(),
        operation: op.to_string(),
        count: counts[0],
        denied: counts[1],
        errors: counts[2],
        last_used: DateTime::parse_from_rfc3339(last)
            .unwrap()
            .with_timezone(&Utc),
    }
}

#[test]
fn report_counts_per_key_principal_and_operation() {
    let dir = tempfile::tempdir().unwrap();
    let path = report_log(dir.path());
    let report = report(&path, &ReportFilter::default()).unwrap();
    assert_eq!(
        report.rows,
        vec![
            row(
                NO_KEY,
                "alice",
                "ListKeys",
                [1, 0, 0],
                "2025-01-01T10:00:00Z"
            ),
            row(KEY_A, "alice", "Decrypt", [1, 0, 1], "2025-01-02T10:00:00Z"),
            row(KEY_A, "alice", "Encrypt", [3, 1, 0], "2025-01-03T10:00:00Z"),
            row(KEY_A, "bob", "ReEncrypt", [1, 0, 0], "2025-01-03T10:00:00Z"),
            row(KEY_B, "bob", "ReEncrypt", [2, 0, 0], "2025-01-03T10:00:00Z"),
            row(
                KEY_B,
                "mallory",
                "Decrypt",
                [1, 1, 0],
                "2025-01-02T10:00:00Z"
            ),
        ]
    );
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["rows"][2]["last_used"], "2025-01-03T10:00:00Z");
    assert_eq!(json["rows"][2]["denied"], 1);
}

#[test]
fn report_filters_by_time_key_and_principal() {
    let dir = tempfile::tempdir().unwrap();
    let path = report_log(dir.path());
    let since = DateTime::parse_from_rfc3339("2025-01-02T10:00:00Z")
        .unwrap()
        .with_timezone(&Utc);
    let r = report(
        &path,
        &ReportFilter {
            since: Some(since),
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(
        r.rows,
        vec![
            row(KEY_A, "alice", "Decrypt", [1, 0, 1], "2025-01-02T10:00:00Z"),
            row(KEY_A, "alice", "Encrypt", [2, 1, 0], "2025-01-03T10:00:00Z"),
            row(KEY_A, "bob", "ReEncrypt", [1, 0, 0], "2025-01-03T10:00:00Z"),
            row(KEY_B, "bob", "ReEncrypt", [1, 0, 0], "2025-01-03T10:00:00Z"),
            row(
                KEY_B,
                "mallory",
                "Decrypt",
                [1, 1, 0],
                "2025-01-02T10:00:00Z"
            ),
        ]
    );

    let key_b_only = vec![
        row(KEY_B, "bob", "ReEncrypt", [2, 0, 0], "2025-01-03T10:00:00Z"),
        row(
            KEY_B,
            "mallory",
            "Decrypt",
            [1, 1, 0],
            "2025-01-02T10:00:00Z",
        ),
    ];
    for key in [
        KEY_B,
        "bbbbbbbb-0000-0000-0000-000000000002",
        "key/bbbbbbbb-0000-0000-0000-000000000002",
    ] {
        let filter = ReportFilter {
            key: Some(key.to_string()),
            ..Default::default()
        };
        assert_eq!(report(&path, &filter).unwrap().rows, key_b_only, "{key}");
    }
    let partial_id = ReportFilter {
        key: Some("0000-000000000002".to_string()),
        ..Default::default()
    };
    assert_eq!(report(&path, &partial_id).unwrap().rows, vec![]);

    let bob = ReportFilter {
        principal: Some("bob".to_string()),
        key: Some(KEY_A.to_string()),
        ..Default::default()
    };
    assert_eq!(
        report(&path, &bob).unwrap().rows,
        vec![row(
            KEY_A,
            "bob",
            "ReEncrypt",
            [1, 0, 0],
            "2025-01-03T10:00:00Z"
        )]
    );
}

#[test]
fn report_table_is_aligned() {
    let mut report = UsageReport {
        rows: vec![
            row(
                NO_KEY,
                "bob",
                "ListKeys",
                [3, 0, 2],
                "2025-01-01T10:00:00.5Z",
            ),
            row(
                KEY_A,
                "alice",
                "Encrypt",
                [12, 1, 0],
                "2025-01-03T10:00:00Z",
            ),
            row(
                KEY_A,
                "a-principal-with-a-very-long-name",
                "GenerateDataKeyWithoutPlaintext",
                [1_234_567, 0, 0],
                "2025-01-03T10:59:59Z",
            ),
        ],
        ..UsageReport::default()
    };
    let aliases = [(
        "aaaaaaaa-0000-0000-0000-000000000001".to_string(),
        vec!["alias/b".to_string(), "alias/app-data-2027".to_string()],
    )];
    report.name_aliases(&aliases.into_iter().collect());
    let table = report.to_table();
    assert_eq!(
        table,
        concat!(
            "  PRINCIPAL             OPERATION                           USES  DENIED  ERRORS  LAST USED (UTC)\n",
            "no key\n",
            "  bob                   ListKeys                               3       0       2  2025-01-01 10:00\n",
            "key aaaaaaaa-0000-0000-0000-000000000001  alias/app-data-2027, alias/b\n",
            "  alice                 Encrypt                               12       1       0  2025-01-03 10:00\n",
            "  a-principal-with-a-\u{2026}  GenerateDataKeyWithoutPlaintext  1234567       0       0  2025-01-03 10:59\n",
        )
    );
    assert!(
        table.lines().all(|l| l.chars().count() <= TABLE_WIDTH),
        "{table}"
    );
}

#[test]
fn report_rejects_a_bad_time() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    AuditLog::open(&path)
        .unwrap()
        .append(at(record("bob", "Encrypt", &[KEY_A]), "yesterday"))
        .unwrap();
    assert!(matches!(
        report(&path, &ReportFilter::default()),
        Err(AuditError::Malformed { line: 1, .. })
    ));
}

/// A successful wrap of `file`'s data key under `key` (GenerateDataKey), or
/// its re-wrap from `from` (ReEncrypt).
fn wrap(file: &str, key: &str, from: Option<&str>) -> AuditRecord {
    let ctx: BTreeMap<String, String> = [("rewrap:file-id".to_string(), file.to_string())].into();
    let (op, keys) = match from {
        None => ("GenerateDataKey", vec![key]),
        Some(from) => ("ReEncrypt", vec![from, key]),
    };
    let mut r = record("writer", op, &keys);
    r.encryption_context = Some(ctx.clone());
    r.destination_encryption_context = from.map(|_| ctx);
    r
}

#[test]
fn the_usage_index_survives_processes_and_stale_or_forged_snapshots() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    {
        let log = AuditLog::open(&path).unwrap();
        log.append_all(vec![wrap("f1", KEY_A, None), wrap("f2", KEY_A, None)])
            .unwrap();
        assert_eq!(log.key_usage(KEY_A).unwrap().envelopes, 2);
        // Dropped: the snapshot is saved.
    }
    assert!(dir.path().join("usage.index").exists());
    {
        // A process that never reads the index appends behind the snapshot.
        let other = AuditLog::open(&path).unwrap();
        other.append(wrap("f1", KEY_B, Some(KEY_A))).unwrap();
    }
    let log = AuditLog::open(&path).unwrap();
    assert_eq!(log.key_usage(KEY_A).unwrap().envelopes, 1);
    assert_eq!(log.key_usage(KEY_B).unwrap().envelopes, 1);
    drop(log);

    // A snapshot that claims nothing is wrapped, but does not fit the
    // trail, is ignored: the index is rebuilt from the records.
    std::fs::write(
        dir.path().join("usage.index"),
        br#"{"offset":0,"seq":0,"hash":"00","index":{"files":{},"keys":{}}}"#,
    )
    .unwrap();
    let log = AuditLog::open(&path).unwrap();
    assert_eq!(log.key_usage(KEY_A).unwrap().envelopes, 1);
    std::fs::write(dir.path().join("usage.index"), b"garbage").unwrap();
    let log = AuditLog::open(&path).unwrap();
    assert_eq!(log.key_usage(KEY_B).unwrap().envelopes, 1);
    assert_eq!(
        log.key_usage(KEY_B).unwrap().versions,
        BTreeMap::from([(1, 1)])
    );
}

// Segments (issue 14).

fn segmented_options(bytes: u64) -> AuditOptions {
    AuditOptions {
        durable: false,
        segments: AuditConfig {
            segment_max_bytes: bytes,
            ..AuditConfig::default()
        },
    }
}

/// Every field survives the compaction: the records read back from closed
/// segments are exactly those appended, and the chain runs across them.
#[test]
fn records_read_back_from_closed_segments_are_the_appended_ones() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    let log = AuditLog::open_with(&path, segmented_options(3000)).unwrap();
    let ctx = BTreeMap::from([("rewrap:file-id".to_string(), "f-1".to_string())]);
    for i in 0..40u32 {
        let mut r = record(&format!("app{}", i % 3), "ReEncrypt", &[KEY_A, KEY_B]);
        r.encryption_context = Some(ctx.clone());
        r.destination_encryption_context = Some(ctx.clone());
        r.source_ip = (i % 2 == 0).then(|| "10.0.0.1".to_string());
        r.user_agent = Some("aws-cli/2".to_string());
        r.access_key_id = (i % 5 == 0).then(|| "AKIAEXAMPLE".to_string());
        r.request_parameters =
            (i % 7 == 0).then(|| BTreeMap::from([("Force".into(), "true".into())]));
        log.append(r).unwrap();
    }
    // Closes by size leave the sealing to the handle's sealer thread,
    // which the handle joins when it is dropped.
    drop(log);
    let segments = std::fs::read_dir(dir.path().join("audit.segments"))
        .unwrap()
        .count();
    assert!(segments >= 3, "{segments} segments");
    let records = read_records(&path).unwrap();
    assert_eq!(records.len(), 40);
    assert_eq!(
        records.iter().map(|r| r.seq).collect::<Vec<_>>(),
        (1..=40).collect::<Vec<_>>()
    );
    for pair in records.windows(2) {
        assert_eq!(pair[1].prev_hash, pair[0].hash);
    }
    assert_eq!(records[5].source_ip, None);
    assert_eq!(records[10].access_key_id.as_deref(), Some("AKIAEXAMPLE"));
    assert_eq!(
        records[14].request_parameters.as_ref().unwrap()["Force"],
        "true"
    );
    assert_eq!(records[3].destination_encryption_context, Some(ctx.clone()));
    let summary = verify(&path).unwrap();
    assert_eq!(summary.records, 40);
    assert_eq!(summary.segments as usize, segments);
    // The usage index, rebuilt from nothing, reads the segments too.
    std::fs::remove_file(dir.path().join("usage.last")).unwrap();
    let fresh = AuditLog::open(&path).unwrap();
    assert!(fresh.last_used(KEY_B).unwrap().is_some());
}

/// A close interrupted after the segment was written and before the active
/// file was emptied leaves the records in both places: readers count them
/// once and the next append goes on from the end.
#[test]
fn an_interrupted_close_counts_its_records_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    let log = AuditLog::open(&path).unwrap();
    for _ in 0..5 {
        log.append(record("bob", "Encrypt", &[KEY_A])).unwrap();
    }
    let active = std::fs::read(&path).unwrap();
    log.close_segment().unwrap().unwrap();
    drop(log);
    std::fs::write(&path, &active).unwrap();
    assert_eq!(verify(&path).unwrap().records, 5);
    assert_eq!(read_records(&path).unwrap().len(), 5);
    let log = AuditLog::open(&path).unwrap();
    log.append(record("bob", "Decrypt", &[KEY_A])).unwrap();
    let summary = verify(&path).unwrap();
    assert_eq!((summary.records, summary.segments), (6, 1));
    let header = log.close_segment().unwrap().unwrap();
    assert_eq!((header.first_seq, header.records), (6, 1));
    assert_eq!(verify(&path).unwrap().records, 6);
}

// The object a key use is for (issue 16).

/// A record without an object serializes as before the field existed (so
/// old trails verify unchanged); one with it ends with `"object"` just
/// before the chain fields, and both survive a closed segment.
#[test]
fn the_object_field_is_absent_when_unset_and_survives_a_closed_segment() {
    let mut line = Vec::new();
    let plain = AuditRecord {
        seq: 1,
        prev_hash: GENESIS_HASH.into(),
        ..record("bob", "ReEncrypt", &[KEY_A])
    };
    encode_line(&plain, &mut line);
    assert!(!String::from_utf8_lossy(&line).contains("object"));
    line.clear();
    let named = AuditRecord {
        object: Some("/srv/conf/db.enc.yaml".into()),
        ..plain
    };
    encode_line(&named, &mut line);
    let text = String::from_utf8(line).unwrap();
    assert!(
        text.contains(&format!(
            r#""object":"/srv/conf/db.enc.yaml","prev_hash":"{GENESIS_HASH}""#
        )),
        "{text}"
    );

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    let log = AuditLog::open_with(&path, segmented_options(1 << 20)).unwrap();
    for i in 0..6 {
        let mut r = record("rotator", "ReEncrypt", &[KEY_A, KEY_B]);
        r.object = (i % 2 == 0).then(|| format!("s3://bucket/conf/{i}.enc.json"));
        log.append(r).unwrap();
    }
    let active = read_records(&path).unwrap();
    log.close_segment().unwrap().unwrap();
    assert_eq!(std::fs::metadata(&path).unwrap().len(), 0);
    let compacted = read_records(&path).unwrap();
    assert_eq!(compacted, active);
    assert_eq!(
        compacted
            .iter()
            .map(|r| r.object.clone())
            .collect::<Vec<_>>(),
        [
            Some("s3://bucket/conf/0.enc.json".to_string()),
            None,
            Some("s3://bucket/conf/2.enc.json".to_string()),
            None,
            Some("s3://bucket/conf/4.enc.json".to_string()),
            None,
        ]
    );
    assert_eq!(verify(&path).unwrap().records, 6);
}

#[test]
fn object_names_escape_control_characters_and_keep_the_end_of_long_names() {
    assert_eq!(object_name("a\nb\u{7f}.yaml"), "a\\u{a}b\\u{7f}.yaml");
    assert_eq!(check_object(&object_name("a\nb")), Ok(()));
    let long = format!("/{}/secret.yaml", "d".repeat(5000));
    let named = object_name(&long);
    assert_eq!(named.len(), MAX_OBJECT);
    assert!(named.starts_with("...d") && named.ends_with("d/secret.yaml"));
    assert_eq!(check_object(&named), Ok(()));
    assert_eq!(check_object(""), Err("is empty"));
    assert_eq!(check_object("a\rb"), Err("holds a control character"));
    assert_eq!(
        check_object(&"x".repeat(MAX_OBJECT + 1)),
        Err("is longer than 4096 bytes")
    );
}

#[test]
fn object_headers_round_trip_and_refuse_what_a_record_cannot_hold() {
    let name = "/srv/ä b%/db.enc.yaml";
    let header = encode_object_header(name);
    assert_eq!(header, "/srv/%C3%A4%20b%25/db.enc.yaml");
    assert_eq!(decode_object_header(header.as_bytes()).as_deref(), Ok(name));
    assert_eq!(
        decode_object_header(b"a%0Ab"),
        Err("holds a control character")
    );
    assert_eq!(decode_object_header(b"a%FFb"), Err("is not UTF-8"));
    assert_eq!(
        decode_object_header(b"a%4"),
        Err("has a truncated %-escape")
    );
    assert_eq!(decode_object_header(b"a%zzb"), Err("has a bad %-escape"));
    assert_eq!(decode_object_header(b""), Err("is empty"));
}

/// The state a crash leaves between retiring the active file and sealing
/// it: records only in `audit.segments/<first seq>.log`, no active file.
/// Readers take the retired file as part of the trail, the next append
/// chains onto it, and the next handle seals it into the same records.
#[test]
fn a_retired_file_not_yet_sealed_is_part_of_the_trail() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    let log = AuditLog::open_with(&path, segmented_options(1500)).unwrap();
    for _ in 0..7 {
        log.append(record("bob", "Encrypt", &[KEY_A])).unwrap();
    }
    drop(log);
    // Two more in the active file, which is not due to close.
    let log = AuditLog::open_with(&path, segmented_options(1 << 20)).unwrap();
    for _ in 0..2 {
        log.append(record("bob", "Encrypt", &[KEY_A])).unwrap();
    }
    drop(log);
    let segments = dir.path().join("audit.segments");
    let sealed = |ext: &str| {
        let mut names: Vec<String> = std::fs::read_dir(&segments)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(ext))
            .collect();
        names.sort();
        names
    };
    let closed = sealed(".seg");
    assert!(closed.len() >= 2, "{closed:?}");
    let before = read_records(&path).unwrap();
    assert_eq!(before.len(), 9);
    // Crash after the rename of the active file: its records are in the
    // retired file, and there is no active file.
    let last_sealed = segments.join(closed.last().unwrap());
    let active_seq = before
        .iter()
        .map(|r| r.seq)
        .filter(|&seq| seq > segment_last_seq(&last_sealed))
        .min();
    let retired_name = match active_seq {
        Some(seq) => {
            let name = format!("{seq:020}.log");
            std::fs::rename(&path, segments.join(&name)).unwrap();
            name
        }
        None => panic!("the active file holds no record"),
    };
    assert!(!path.exists());
    assert_eq!(sealed(".log"), vec![retired_name.clone()]);
    assert_eq!(verify(&path).unwrap().records, 9);
    assert_eq!(read_records(&path).unwrap(), before);
    assert_eq!(read_records_of_parts(&path), 9);
    let log = AuditLog::open_with(&path, segmented_options(1 << 20)).unwrap();
    log.append(record("carol", "Decrypt", &[KEY_B])).unwrap();
    assert!(log.last_used(KEY_A).unwrap().is_some());
    drop(log);
    let after = read_records(&path).unwrap();
    assert_eq!(after.len(), 10);
    assert_eq!(after[..9], before[..]);
    assert_eq!(after[9].prev_hash, before[8].hash);
    assert_eq!(verify(&path).unwrap().records, 10);
    // The new handle sealed the retired file.
    assert_eq!(sealed(".log"), Vec::<String>::new());
    assert_eq!(sealed(".seg").len(), closed.len() + 1);
}

fn segment_last_seq(path: &Path) -> u64 {
    segment::SegmentReader::open(path)
        .unwrap()
        .header()
        .last_seq()
}

/// Records of the closed parts (sealed and retired), read as the usage
/// index's rebuild reads them.
fn read_records_of_parts(path: &Path) -> usize {
    let mut n = 0;
    for part in segment::parts(path).unwrap() {
        match part {
            segment::Part::Sealed(seg) => {
                let mut reader = segment::SegmentReader::open(&seg).unwrap();
                while reader.next_record().unwrap().is_some() {
                    n += 1;
                }
            }
            segment::Part::Retired(_, file) => {
                use std::io::BufRead;
                n += BufReader::new(file).lines().count();
            }
        }
    }
    n
}

/// A retired file holding records 1..=5 of a trail (the active file
/// renamed, as a close leaves it before sealing), and its lines.
fn retired_trail(dir: &Path) -> (PathBuf, PathBuf, Vec<String>) {
    let path = log_with(dir, 5);
    let segments = dir.join(segment::SEGMENTS_DIR);
    std::fs::create_dir_all(&segments).unwrap();
    let retired = segments.join(format!("{:020}.log", 1));
    let text = lines(&path);
    std::fs::rename(&path, &retired).unwrap();
    (path, retired, text)
}

/// The sealer refuses a retired file that is not the chain the writer
/// wrote, naming why, and leaves it as it is with no sealed segment; an
/// untouched one seals into exactly its records.
#[test]
fn the_sealer_leaves_a_changed_retired_file_unsealed_and_says_why() {
    let changed_field = |lines: &mut Vec<String>| {
        lines[2] = lines[2].replace("\"app2\"", "\"app9\"");
    };
    let removed = |lines: &mut Vec<String>| {
        lines.remove(3);
    };
    let rehashed = |lines: &mut Vec<String>| {
        // A line re-hashed after a change: its own hash holds, the next
        // record's prev_hash does not.
        let mut rec: AuditRecord = serde_json::from_str(&lines[1]).unwrap();
        rec.principal = "mallory".into();
        rec.hash.clear();
        let mut buf = Vec::new();
        encode_line(&rec, &mut buf);
        lines[1] = String::from_utf8(buf).unwrap().trim_end().to_string();
    };
    let non_canonical = |lines: &mut Vec<String>| {
        lines[0] = lines[0].replacen("{\"seq\"", "{ \"seq\"", 1);
    };
    type Change = Box<dyn Fn(&mut Vec<String>)>;
    let cases: [(Change, u64, &str); 4] = [
        (
            Box::new(changed_field),
            3,
            "hash mismatch (record changed); left unsealed",
        ),
        (
            Box::new(removed),
            5,
            "not one chain (record changed, removed, inserted or reordered); left unsealed",
        ),
        (
            Box::new(rehashed),
            3,
            "not one chain (record changed, removed, inserted or reordered); left unsealed",
        ),
        (
            Box::new(non_canonical),
            1,
            "hash mismatch (record changed); left unsealed",
        ),
    ];
    for (change, seq, problem) in cases {
        let dir = tempfile::tempdir().unwrap();
        let (path, retired, mut text) = retired_trail(dir.path());
        change(&mut text);
        write_lines(&retired, &text);
        let before = std::fs::read(&retired).unwrap();
        match segment::seal(&path, &retired) {
            Err(AuditError::Malformed { line, problem: p }) => {
                assert_eq!(line, seq, "{p}");
                assert_eq!(
                    p,
                    format!("segment {}: {problem}", retired.display()),
                    "seq {seq}"
                );
            }
            other => panic!("expected Malformed, got {other:?}"),
        }
        assert_eq!(std::fs::read(&retired).unwrap(), before);
        assert!(!retired.with_extension("seg").exists());
    }
    // A torn last line.
    let dir = tempfile::tempdir().unwrap();
    let (path, retired, text) = retired_trail(dir.path());
    let mut bytes = (text.join("\n") + "\n").into_bytes();
    bytes.extend_from_slice(b"{\"seq\":6,\"ti");
    std::fs::write(&retired, &bytes).unwrap();
    match segment::seal(&path, &retired) {
        Err(AuditError::Malformed { line: 0, problem }) => assert_eq!(
            problem,
            format!(
                "segment {}: ends in a torn line; left unsealed",
                retired.display()
            )
        ),
        other => panic!("expected Malformed, got {other:?}"),
    }
    assert_eq!(std::fs::read(&retired).unwrap(), bytes);
    // Untouched: sealed, the retired file removed, the same records.
    let dir = tempfile::tempdir().unwrap();
    let (path, retired, text) = retired_trail(dir.path());
    let header = segment::seal(&path, &retired).unwrap().unwrap();
    let last: AuditRecord = serde_json::from_str(&text[4]).unwrap();
    assert_eq!((header.first_seq, header.records), (1, 5));
    assert_eq!(header.last_hash, last.hash);
    assert_eq!(header.prev_hash, GENESIS_HASH);
    assert!(!retired.exists());
    let records = read_records(&path).unwrap();
    let expected: Vec<AuditRecord> = text
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(records, expected);
}

/// A segment whose distinct values outgrow the declaration tables (each
/// record its own context, as a rotation's are) forgets them and declares
/// again: every record reads back as appended, the repeated string
/// included, and the declarations are bounded.
#[test]
fn a_segment_past_its_declaration_limit_reads_back_every_record() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    let log = AuditLog::open(&path).unwrap();
    for i in 0..25u32 {
        let mut r = record(&format!("app{}", i % 2), "ReEncrypt", &[KEY_A, KEY_B]);
        r.destination_encryption_context = Some(BTreeMap::from([(
            "rewrap:file-id".to_string(),
            format!("f-{i}"),
        )]));
        r.encryption_context = Some(BTreeMap::from([("app".to_string(), "x".to_string())]));
        log.append(r).unwrap();
    }
    drop(log);
    let records: Vec<AuditRecord> = lines(&path)
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let seg = dir.path().join("one.seg");
    let bytes = segment::encode(&records, 4);
    std::fs::write(&seg, &bytes).unwrap();
    assert_eq!(segment::read_all(&seg).unwrap(), records);
    // Count the declarations in the body.
    use std::io::Read;
    let mut body = String::new();
    flate2::read::DeflateDecoder::new(&bytes[segment::MAGIC.len()..])
        .read_to_string(&mut body)
        .unwrap();
    let count = |prefix: &str| body.lines().filter(|l| l.starts_with(prefix)).count();
    // 25 distinct file-id contexts, the shared one, and the shared one
    // again after each of the 7 times a full table (4) is forgotten while
    // records remain (at the file ids of records 3, 6, ..., 21; at 24
    // no record follows).
    assert_eq!(count("{\"c\":"), 25 + 1 + 7);
    assert_eq!(count("{\"r\":"), 25);
}

// Closed-segment test vectors (`tests/vectors/audit_segment/*.json`).
// Regenerate with `cargo test --lib -- --ignored regenerate_segment_vectors`.

/// One segment vector: the segment's bytes and what reading them must do.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct SegmentVector {
    description: String,
    segment_hex: String,
    /// `ok`, or the `AuditError` variant reading must end in.
    expect: String,
    /// The error's message, with the segment's path written `<segment>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    message: Option<String>,
    /// For `ok`: the records, as the active file held them (JSON lines).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    records: Vec<String>,
    /// For `ok`: the decompressed body (the compact JSON lines), which the
    /// encoder must reproduce.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    body: Option<String>,
}

fn segment_vectors_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/vectors/audit_segment")
}

/// Records 7 to 10 of a trail, chained, using every field: two keys with
/// versions, both contexts, caller fields, request parameters, an object,
/// a denial, a repeated context and a record without keys.
fn vector_records() -> Vec<AuditRecord> {
    let ctx = BTreeMap::from([("app".to_string(), "billing".to_string())]);
    let mut a = record("rotator", "ReEncrypt", &[KEY_A, KEY_B]);
    a.keys[1].version = Some(3);
    a.encryption_context = Some(ctx.clone());
    a.destination_encryption_context = Some(BTreeMap::from([(
        "rewrap:file-id".to_string(),
        "f-0001".to_string(),
    )]));
    a.source_ip = Some("10.0.0.7".into());
    a.user_agent = Some("aws-cli/2.17 \"quoted\"".into());
    a.access_key_id = Some("AKIAVECTOR0000000001".into());
    a.object = Some("s3://bucket/dir/naïve file.env".into());
    let mut b = denied(record("rotator", "Decrypt", &[KEY_A]));
    b.request_parameters = Some(BTreeMap::from([("DryRun".into(), "true".into())]));
    b.encryption_context = Some(ctx.clone());
    b.source_ip = Some("10.0.0.7".into());
    let mut c = record("auditor", "ReEncrypt", &[KEY_A, KEY_B]);
    c.encryption_context = Some(ctx);
    let mut d = record("admin", "CreateKey", &[]);
    d.keys.clear();
    let mut records = vec![a, b, c, d];
    let mut prev = "ab".repeat(32);
    for (i, r) in records.iter_mut().enumerate() {
        r.seq = 7 + i as u64;
        r.time = format!("2026-11-30T12:00:0{i}.000Z");
        r.request_id = format!("00000000-0000-4000-8000-00000000000{i}");
        r.prev_hash = prev.clone();
        r.hash.clear();
        let mut line = Vec::new();
        r.hash = encode_line(r, &mut line);
        prev = r.hash.clone();
    }
    records
}

fn deflate(body: &str) -> Vec<u8> {
    let mut out = segment::MAGIC.to_vec();
    let mut enc = flate2::write::DeflateEncoder::new(&mut out, flate2::Compression::fast());
    enc.write_all(body.as_bytes()).unwrap();
    enc.finish().unwrap();
    out
}

fn inflate(bytes: &[u8]) -> String {
    use std::io::Read;
    let mut body = String::new();
    flate2::read::DeflateDecoder::new(&bytes[segment::MAGIC.len()..])
        .read_to_string(&mut body)
        .unwrap();
    body
}

fn segment_vectors() -> Vec<(&'static str, SegmentVector)> {
    let records = vector_records();
    let bytes = segment::encode(&records, segment::MAX_DECLARED);
    let body = inflate(&bytes);
    let lines: Vec<String> = body.lines().map(str::to_string).collect();
    let with = |f: &dyn Fn(&mut Vec<String>)| {
        let mut l = lines.clone();
        f(&mut l);
        deflate(&(l.join("\n") + "\n"))
    };
    let record_line = |l: &Vec<String>, seq: u64| {
        l.iter()
            .enumerate()
            .filter(|(_, s)| s.starts_with("{\"r\":"))
            .nth((seq - 7) as usize)
            .map(|(i, _)| i)
            .unwrap()
    };
    let err = |description: &str, bytes: Vec<u8>| SegmentVector {
        description: description.into(),
        segment_hex: hex::encode(bytes),
        expect: String::new(),
        message: None,
        records: Vec::new(),
        body: None,
    };
    let mut bad_magic = bytes.clone();
    bad_magic[0] = b'X';
    vec![
        (
            "ok-all-fields",
            SegmentVector {
                description: "records 7 to 10 using every field; a denial, a repeated context, a record without keys".into(),
                segment_hex: hex::encode(&bytes),
                expect: "ok".into(),
                message: None,
                records: records
                    .iter()
                    .map(|r| serde_json::to_string(r).unwrap())
                    .collect(),
                body: Some(body.clone()),
            },
        ),
        ("err-bad-magic", err("the magic's first byte changed", bad_magic)),
        (
            "err-changed-record",
            err(
                "record 8's time changed in the body",
                with(&|l| {
                    let i = record_line(l, 8);
                    l[i] = l[i].replace("12:00:01", "12:00:09");
                }),
            ),
        ),
        (
            "err-removed-record",
            err(
                "record 9 removed from the body",
                with(&|l| {
                    let i = record_line(l, 9);
                    l.remove(i);
                }),
            ),
        ),
        (
            "err-last-record-removed",
            err(
                "record 10 removed from the end of the body",
                with(&|l| {
                    let i = record_line(l, 10);
                    l.remove(i);
                }),
            ),
        ),
        (
            "err-undeclared-string",
            err(
                "record 7 names string id 99, never declared",
                with(&|l| {
                    let i = record_line(l, 7);
                    l[i] = l[i].replacen("\"p\":", "\"p\":99,\"_\":", 1);
                }),
            ),
        ),
        (
            "err-truncated-stream",
            err(
                "the compressed stream cut in half",
                bytes[..bytes.len() / 2].to_vec(),
            ),
        ),
    ]
}

/// Reads a segment vector's bytes as a segment file: its records, or the
/// error's variant name and message (the path written `<segment>`).
fn read_segment_vector(v: &SegmentVector) -> Result<Vec<AuditRecord>, (String, String)> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("00000000000000000007.seg");
    std::fs::write(&path, hex::decode(&v.segment_hex).unwrap()).unwrap();
    segment::read_all(&path).map_err(|e| {
        let kind = match &e {
            AuditError::Io { .. } => "Io",
            AuditError::Tampered { .. } => "Tampered",
            AuditError::Truncated { .. } => "Truncated",
            AuditError::Checkpoint { .. } => "Checkpoint",
            AuditError::Malformed { .. } => "Malformed",
        };
        let message = e
            .to_string()
            .replace(&path.display().to_string(), "<segment>");
        (kind.to_string(), message)
    })
}

#[test]
#[ignore = "writes tests/vectors/audit_segment/"]
fn regenerate_segment_vectors() {
    std::fs::create_dir_all(segment_vectors_dir()).unwrap();
    for (name, mut v) in segment_vectors() {
        if v.expect != "ok" {
            let (kind, message) = read_segment_vector(&v).expect_err(name);
            v.expect = kind;
            v.message = Some(message);
        }
        let mut text = serde_json::to_string_pretty(&v).unwrap();
        text.push('\n');
        std::fs::write(segment_vectors_dir().join(format!("{name}.json")), text).unwrap();
    }
}

/// Every stored segment vector reads as it says: the records of the valid
/// one exactly (so a segment sealed by an earlier build still reads), the
/// exact error of each damaged one.
#[test]
fn every_segment_vector_does_what_it_says() {
    let mut count = 0;
    for entry in std::fs::read_dir(segment_vectors_dir()).unwrap() {
        let path = entry.unwrap().path();
        let v: SegmentVector = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        match (read_segment_vector(&v), v.expect.as_str()) {
            (Ok(records), "ok") => {
                let lines: Vec<String> = records
                    .iter()
                    .map(|r| serde_json::to_string(r).unwrap())
                    .collect();
                assert_eq!(lines, v.records, "{path:?}");
            }
            (Err((kind, message)), want) => {
                assert_eq!(kind, want, "{path:?}: {message}");
                assert_eq!(Some(message), v.message, "{path:?}");
            }
            (Ok(_), want) => panic!("{path:?}: read, expected {want}"),
        }
        count += 1;
    }
    assert_eq!(
        count,
        segment_vectors().len(),
        "a vector file is missing or extra"
    );
}

/// The encoder writes the stored body (the compact format) for the stored
/// records, and reading the valid vector gives records whose hashes chain
/// from its header (the compressed bytes may differ between DEFLATE
/// implementations and levels; the body may not).
#[test]
fn the_segment_encoder_reproduces_the_vector_body() {
    let stored: SegmentVector = serde_json::from_slice(
        &std::fs::read(segment_vectors_dir().join("ok-all-fields.json")).unwrap(),
    )
    .unwrap();
    let records: Vec<AuditRecord> = stored
        .records
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(records, vector_records());
    let bytes = segment::encode(&records, segment::MAX_DECLARED);
    assert_eq!(Some(inflate(&bytes)), stored.body);
    assert_eq!(
        inflate(&hex::decode(&stored.segment_hex).unwrap()),
        stored.body.unwrap()
    );
}

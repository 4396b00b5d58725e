//! Several real processes append to one audit file; the chain stays intact,
//! also while they close segments (retire the active file under each
//! other's feet) and when one of them is killed with SIGKILL mid-run.
//!
//! The test binary re-executes itself: the children run the ignored
//! `child_appender` test, which appends through its own `AuditLog`.

use rewrap::audit::{
    read_records, verify, AuditConfig, AuditKey, AuditLog, AuditOptions, AuditRecord,
};
use std::path::Path;
use std::process::{Command, Stdio};

const CHILD_LOG_ENV: &str = "REWRAP_AUDIT_TEST_CHILD_LOG";
const CHILD_NAME_ENV: &str = "REWRAP_AUDIT_TEST_CHILD_NAME";
const CHILD_SEGMENT_ENV: &str = "REWRAP_AUDIT_TEST_CHILD_SEGMENT_BYTES";
const CHILD_COUNT_ENV: &str = "REWRAP_AUDIT_TEST_CHILD_COUNT";
const PER_PROCESS: usize = 2000;

fn options(segment_max_bytes: Option<u64>) -> AuditOptions {
    AuditOptions {
        durable: false,
        segments: AuditConfig {
            segment_max_bytes: segment_max_bytes
                .unwrap_or(AuditConfig::default().segment_max_bytes),
            ..AuditConfig::default()
        },
    }
}

fn append_many(path: &Path, principal: &str, segment_max_bytes: Option<u64>, count: usize) {
    let log = AuditLog::open_with(path, options(segment_max_bytes)).unwrap();
    for _ in 0..count {
        log.append(AuditRecord {
            request_id: "00000000-0000-4000-8000-000000000000".to_string(),
            principal: principal.to_string(),
            operation: "Encrypt".to_string(),
            keys: vec![AuditKey {
                arn: "arn:aws:kms:us-east-1:111122223333:key/k".to_string(),
                version: Some(1),
            }],
            decision: "Allow".to_string(),
            decided_by: "policy.json#Allow".to_string(),
            outcome: "Success".to_string(),
            ..Default::default()
        })
        .unwrap();
    }
}

#[test]
#[ignore = "helper: run in child processes by three_processes_append_to_one_chain"]
fn child_appender() {
    let path = std::env::var(CHILD_LOG_ENV).expect("run only as a child");
    let name = std::env::var(CHILD_NAME_ENV).expect("run only as a child");
    let segment = std::env::var(CHILD_SEGMENT_ENV)
        .ok()
        .map(|s| s.parse().unwrap());
    let count = std::env::var(CHILD_COUNT_ENV).map_or(PER_PROCESS, |s| s.parse().unwrap());
    append_many(Path::new(&path), &name, segment, count);
}

fn spawn_child(
    path: &Path,
    name: &str,
    segment_max_bytes: Option<u64>,
    count: usize,
) -> std::process::Child {
    let mut command = Command::new(std::env::current_exe().unwrap());
    command
        .args(["--ignored", "--exact", "child_appender", "--test-threads=1"])
        .env(CHILD_LOG_ENV, path)
        .env(CHILD_NAME_ENV, name)
        .env(CHILD_COUNT_ENV, count.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(bytes) = segment_max_bytes {
        command.env(CHILD_SEGMENT_ENV, bytes.to_string());
    }
    command.spawn().unwrap()
}

#[test]
fn three_processes_append_to_one_chain() {
    three_processes(None);
}

/// Segments of 64 KiB: about 40 closes while three processes append, each
/// close renaming the active file the others are about to write to.
#[test]
fn three_processes_append_to_one_chain_across_segment_closes() {
    let dir = three_processes(Some(64 << 10));
    let segments = dir.path().join("audit.segments");
    let names: Vec<String> = std::fs::read_dir(&segments)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    // Every process sealed what it retired before it exited.
    assert!(
        names
            .iter()
            .all(|n| Path::new(n).extension() == Some("seg".as_ref())),
        "{names:?}"
    );
    assert!(names.len() >= 20, "{} segments", names.len());
}

fn three_processes(segment_max_bytes: Option<u64>) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    let children: Vec<_> = ["child1", "child2"]
        .iter()
        .map(|name| spawn_child(&path, name, segment_max_bytes, PER_PROCESS))
        .collect();
    append_many(&path, "parent", segment_max_bytes, PER_PROCESS);
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "child failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let summary = verify(&path).unwrap();
    assert_eq!(summary.records, 3 * PER_PROCESS as u64);
    assert_eq!(summary.truncated_final_record, None);
    let records = read_records(&path).unwrap();
    for name in ["parent", "child1", "child2"] {
        let count = records.iter().filter(|r| r.principal == name).count();
        assert_eq!(count, PER_PROCESS, "{name}");
    }
    dir
}

/// A writer killed with SIGKILL at any instant (mid-append, mid-close,
/// mid-seal) leaves a trail that verifies, with every record the others
/// appended; the next writer goes on, and seals what the dead one retired.
#[test]
fn a_writer_killed_while_closing_segments_loses_no_one_elses_record() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    let segment = Some(16 << 10);
    let survivor = spawn_child(&path, "survivor", segment, PER_PROCESS);
    for round in 0..6u64 {
        let mut victim = spawn_child(&path, "victim", segment, 1_000_000);
        std::thread::sleep(std::time::Duration::from_millis(150 + 37 * round));
        victim.kill().unwrap();
        victim.wait().unwrap();
        let summary = verify(&path).unwrap();
        assert!(summary.records > 0, "round {round}");
    }
    let out = survivor.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "survivor failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    append_many(&path, "last", segment, 10);
    let summary = verify(&path).unwrap();
    let records = read_records(&path).unwrap();
    assert_eq!(summary.records, records.len() as u64);
    let count = |name: &str| records.iter().filter(|r| r.principal == name).count();
    assert_eq!(count("survivor"), PER_PROCESS);
    assert_eq!(count("last"), 10);
    assert!(count("victim") > 0);
    // "last" sealed every file the victims retired and never sealed.
    let left: Vec<String> = std::fs::read_dir(dir.path().join("audit.segments"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| Path::new(n).extension() != Some("seg".as_ref()))
        .collect();
    assert_eq!(left, Vec::<String>::new());
}

//! Several real processes append to one audit file; the chain stays intact.
//!
//! The test binary re-executes itself: the children run the ignored
//! `child_appender` test, which appends through its own `AuditLog`.

use rewrap::audit::{read_records, verify, AuditKey, AuditLog, AuditRecord};
use std::path::Path;
use std::process::{Command, Stdio};

const CHILD_LOG_ENV: &str = "REWRAP_AUDIT_TEST_CHILD_LOG";
const CHILD_NAME_ENV: &str = "REWRAP_AUDIT_TEST_CHILD_NAME";
const PER_PROCESS: usize = 2000;

fn append_many(path: &Path, principal: &str) {
    let log = AuditLog::open(path).unwrap();
    for _ in 0..PER_PROCESS {
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
    append_many(Path::new(&path), &name);
}

#[test]
fn three_processes_append_to_one_chain() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    let exe = std::env::current_exe().unwrap();
    let children: Vec<_> = ["child1", "child2"]
        .iter()
        .map(|name| {
            Command::new(&exe)
                .args(["--ignored", "--exact", "child_appender", "--test-threads=1"])
                .env(CHILD_LOG_ENV, &path)
                .env(CHILD_NAME_ENV, name)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    append_many(&path, "parent");
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
}

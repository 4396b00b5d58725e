//! The deletion interlock lives in the KMS (issue 11, finding 4): DisableKey
//! and ScheduleKeyDeletion of a key that still wraps envelopes' data keys
//! are refused for every client (the AWS CLI against `rewrap serve`,
//! `rewrap --endpoint-url`, local mode) unless forced with the rewrap
//! extension field `Force`, and a forced call is on the audit record.
//!
//! Before the fix, `aws kms schedule-key-deletion` against `rewrap serve`
//! scheduled the deletion of such a key with no warning (exit 0).

mod support;

use std::process::Output;
use support::cli::*;

/// The AWS CLI of the test virtual environment, as `who`, against `url`.
fn aws(who: &Creds, url: &str, args: &[&str]) -> Output {
    aws_tool("aws", who)
        .args(["kms", "--endpoint-url", url])
        .args(args)
        .output()
        .unwrap()
}

/// Encrypts `n` files under `key` into `data/` (local mode, as the owner).
fn seal_files(env: &Env, key: &str, n: usize) {
    std::fs::create_dir_all(env.path("data")).unwrap();
    for i in 0..n {
        let plain = env.path(&format!("plain-{i}"));
        std::fs::write(&plain, vec![b'p'; 100 + i]).unwrap();
        let out = env.path(&format!("data/f{i}"));
        let o = env.run(
            &env.owner,
            &[
                "encrypt-file",
                "--key-id",
                key,
                "--context",
                "purpose=app-data",
                plain.to_str().unwrap(),
                "-o",
                out.to_str().unwrap(),
            ],
        );
        assert!(o.status.success(), "{}", stderr(&o));
    }
}

fn arn(env: &Env, key: &str) -> String {
    let v = env.ok(&env.owner, &["describe-key", "--key-id", key]);
    v["KeyMetadata"]["Arn"].as_str().unwrap().to_string()
}

/// The refusal every client gets, as the AWS CLI prints it.
fn refusal(arn: &str, n: usize, operation: &str) -> String {
    let verb = if operation == "DisableKey" {
        "disable it"
    } else {
        "schedule its deletion"
    };
    format!(
        "An error occurred (KMSInvalidStateException) when calling the {operation} operation: \
         {arn} still wraps the data keys of {n} envelope(s) (as this KMS last wrapped them); \
         re-wrap them under another key first (rewrap rotate --to KEY), or {verb} anyway \
         with Force (rewrap: --force)"
    )
}

fn key_state(env: &Env, key: &str) -> String {
    let v = env.ok(&env.owner, &["describe-key", "--key-id", key]);
    v["KeyMetadata"]["KeyState"].as_str().unwrap().to_string()
}

fn last_record(env: &Env) -> serde_json::Value {
    let log = env.audit_log();
    serde_json::from_str(log.lines().last().unwrap()).unwrap()
}

#[test]
fn aws_cli_cannot_schedule_deletion_of_a_key_that_still_wraps_envelopes() {
    let env = Env::new();
    let old = env.key("old");
    let new = env.key("new");
    let old_arn = arn(&env, &old);
    let new_arn = arn(&env, &new);
    seal_files(&env, &old, 3);
    let server = env.serve();

    // The AWS CLI knows nothing of rewrap's interlock: the KMS refuses.
    let o = aws(
        &env.owner,
        &server.url,
        &[
            "schedule-key-deletion",
            "--key-id",
            &old,
            "--pending-window-in-days",
            "7",
        ],
    );
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains(&refusal(&old_arn, 3, "ScheduleKeyDeletion")),
        "{}",
        stderr(&o)
    );
    let o = aws(&env.owner, &server.url, &["disable-key", "--key-id", &old]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains(&refusal(&old_arn, 3, "DisableKey")));
    let refused = last_record(&env);
    assert_eq!(refused["operation"], "DisableKey");
    assert_eq!(refused["outcome"], "KMSInvalidStateException");
    assert_eq!(refused["request_parameters"]["EnvelopesWrapped"], "3");

    // rewrap's own client, remote and local: the same refusal, exit 254.
    let remote = |args: &[&str]| {
        let mut all = vec!["--endpoint-url", server.url.as_str()];
        all.extend_from_slice(args);
        env.run(&env.owner, &all)
    };
    let o = remote(&["schedule-key-deletion", "--key-id", &old]);
    assert_eq!(o.status.code(), Some(254), "{}", stderr(&o));
    assert!(stderr(&o).contains(&refusal(&old_arn, 3, "ScheduleKeyDeletion")));
    let o = env.run(&env.owner, &["disable-key", "--key-id", &old]);
    assert_eq!(o.status.code(), Some(254), "{}", stderr(&o));
    assert!(stderr(&o).contains(&refusal(&old_arn, 3, "DisableKey")));
    assert_eq!(key_state(&env, &old), "Enabled");

    // The rotator moves every envelope to the new key (through the server):
    // the old key wraps nothing any more, the new one wraps all three.
    let o = remote(&["rotate", "--to", &new, "--report", "r.json", "data"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let o = aws(&env.owner, &server.url, &["disable-key", "--key-id", &new]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains(&refusal(&new_arn, 3, "DisableKey")));
    let o = aws(
        &env.owner,
        &server.url,
        &[
            "schedule-key-deletion",
            "--key-id",
            &old,
            "--pending-window-in-days",
            "7",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(key_state(&env, &old), "PendingDeletion");

    // Forced: allowed, and the audit record says so, with the count.
    let o = remote(&["disable-key", "--key-id", &new, "--force"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let forced = last_record(&env);
    assert_eq!(key_state(&env, &new), "Disabled");
    assert_eq!(forced["operation"], "DisableKey");
    assert_eq!(forced["outcome"], "Success");
    assert_eq!(forced["access_key_id"], env.owner.id.as_str());
    assert_eq!(
        forced["request_parameters"],
        serde_json::json!({"EnvelopesWrapped": "3", "Force": "true"})
    );
}

#[test]
fn describe_key_last_used_date_comes_from_the_usage_index() {
    let env = Env::new();
    let key = env.key("k");
    let fresh = env.ok(&env.owner, &["describe-key", "--key-id", &key]);
    assert_eq!(fresh["KeyMetadata"].get("LastUsedDate"), None);
    seal_files(&env, &key, 1);
    let used = env.ok(&env.owner, &["describe-key", "--key-id", &key]);
    let last = used["KeyMetadata"]["LastUsedDate"].as_f64().unwrap();
    let record = env
        .audit_log()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .rfind(|r| r["operation"] == "GenerateDataKey")
        .unwrap();
    let t = chrono::DateTime::parse_from_rfc3339(record["time"].as_str().unwrap()).unwrap();
    // Both are whole milliseconds: compare them as such.
    assert_eq!((last * 1000.0).round() as i64, t.timestamp_millis());
    // The index survives the process: a snapshot or a replay of the trail.
    // DescribeKey reads the small last-used index (issue 14), not usage.index.
    assert!(env.home.join("usage.last").exists());
}

//! Complete and truncation-evident audit records (issue 11, finding 6),
//! through the real binary and, for refused requests, the AWS CLI and
//! botocore against `rewrap serve`.
//!
//! Before the fix: deleting the last record left `audit verify` content
//! (exit 0); deleting only the final newline made it a "never acknowledged"
//! record that the next append erased without a word; `audit verify`
//! appended its own record before verifying; a request with a bad signature,
//! an unknown access key or a malformed signed body left no record; alias
//! and principal records did not name their targets.

mod support;

use std::path::PathBuf;
use std::process::{Command, Output};
use support::cli::*;

fn records(env: &Env) -> Vec<serde_json::Value> {
    env.audit_log()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn operations(env: &Env) -> Vec<String> {
    records(env)
        .iter()
        .map(|r| r["operation"].as_str().unwrap().to_string())
        .collect()
}

fn audit_path(env: &Env) -> PathBuf {
    env.home.join("audit.log")
}

/// A keystore with a few records.
fn busy_env() -> Env {
    let env = Env::new();
    let key = env.key("k");
    for _ in 0..2 {
        env.ok(
            &env.owner,
            &["encrypt", "--key-id", &key, "--plaintext", "aGVsbG8="],
        );
    }
    env
}

fn verify(env: &Env) -> Output {
    env.run(&env.owner, &["audit", "verify"])
}

#[test]
fn audit_verify_appends_nothing_before_it_has_verified() {
    let env = busy_env();
    let before = records(&env).len();
    let o = verify(&env);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(
        stdout(&o).starts_with(&format!("ok: {before} records, chain intact")),
        "{}",
        stdout(&o)
    );
    let after = operations(&env);
    assert_eq!(after.len(), before + 1);
    assert_eq!(after[before], "ReadAuditTrail");
}

#[test]
fn deleting_the_last_record_is_detected() {
    let env = busy_env();
    let log = env.audit_log();
    let n = log.lines().count();
    let last_start = log[..log.len() - 1].rfind('\n').unwrap() + 1;
    let cut = &log[..last_start];
    std::fs::write(audit_path(&env), cut).unwrap();

    let o = verify(&env);
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    let want = format!(
        "rewrap: audit trail {} FAILED verification: the trail ends at record {} but the \
         sealed checkpoint records {n}: the last 1 record(s) were removed",
        audit_path(&env).display(),
        n - 1
    );
    let err = stderr(&o);
    assert!(err.lines().any(|l| l == want), "{err}");
    // The next append (verify's own record) does not paper over the cut:
    // it records it first, and verify keeps failing.
    let ops = operations(&env);
    assert_eq!(ops[n - 1..], ["AuditTrailCut", "ReadAuditTrail"]);
    let o = verify(&env);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains(&format!(
            "record {n}: a writer found the trail cut here: it ended at record {} but the sealed \
             checkpoint recorded {n}",
            n - 1
        )),
        "{}",
        stderr(&o)
    );
}

#[test]
fn a_deleted_final_newline_is_reported_and_repaired_loudly() {
    let env = busy_env();
    let mut log = env.audit_log().into_bytes();
    let n = log.iter().filter(|&&b| b == b'\n').count();
    assert_eq!(log.pop(), Some(b'\n'));
    std::fs::write(audit_path(&env), &log).unwrap();

    let o = verify(&env);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    let want = format!(
        "rewrap: audit trail {} FAILED verification: record {n} lost its final newline after \
         it was committed (the sealed checkpoint records it): the trail was cut",
        audit_path(&env).display()
    );
    assert!(err.lines().any(|l| l == want), "{err}");
    // Verify's own record repaired the tail, said so on stderr and in the
    // trail, by whom and when.
    assert!(
        err.contains(&format!(
            "the final record (seq {n}) was torn ({} bytes without a newline): newline restored; \
             recorded in the trail as RepairAuditTail",
            log.len()
                - log[..log.len() - 1]
                    .iter()
                    .rposition(|&b| b == b'\n')
                    .unwrap()
                - 1
        )),
        "{err}"
    );
    let all = records(&env);
    let repair = &all[n];
    assert_eq!(repair["operation"], "RepairAuditTail");
    assert_eq!(repair["principal"], "owner");
    assert_eq!(repair["request_parameters"]["Action"], "newline restored");
    assert_eq!(repair["request_parameters"]["TornSeq"], n.to_string());
    assert!(!repair["time"].as_str().unwrap().is_empty());
    assert_eq!(all[n + 1]["operation"], "ReadAuditTrail");

    let o = verify(&env);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(
        stderr(&o).contains(&format!(
            "writers repaired 1 torn final record(s); see the RepairAuditTail records (seq [{}])",
            n + 1
        )),
        "{}",
        stderr(&o)
    );
}

#[test]
fn alias_and_principal_records_name_their_targets() {
    let env = Env::new();
    let a = env.key("a");
    let b = env.key("b");
    env.ok(
        &env.owner,
        &[
            "create-alias",
            "--alias-name",
            "alias/app",
            "--target-key-id",
            &a,
        ],
    );
    env.ok(
        &env.owner,
        &[
            "update-alias",
            "--alias-name",
            "alias/app",
            "--target-key-id",
            &b,
        ],
    );
    env.ok(&env.owner, &["delete-alias", "--alias-name", "alias/app"]);
    let bob = env.principal("bob");
    let second = env.ok(
        &env.owner,
        &["create-access-key", "--principal-name", "bob"],
    );
    let second = second["AccessKeyId"].as_str().unwrap().to_string();
    env.ok(
        &env.owner,
        &[
            "delete-access-key",
            "--principal-name",
            "bob",
            "--access-key-id",
            &second,
        ],
    );
    env.ok(&env.owner, &["delete-principal", "--principal-name", "bob"]);

    let params: Vec<(String, serde_json::Value)> = records(&env)
        .into_iter()
        .filter(|r| {
            r["operation"].as_str().unwrap().contains("Alias")
                || r["operation"].as_str().unwrap().contains("Principal")
                || r["operation"].as_str().unwrap().contains("AccessKey")
        })
        .map(|r| {
            (
                r["operation"].as_str().unwrap().to_string(),
                r["request_parameters"].clone(),
            )
        })
        .collect();
    let arn = |k: &str| {
        let v = env.ok(&env.owner, &["describe-key", "--key-id", k]);
        v["KeyMetadata"]["KeyId"].as_str().unwrap().to_string()
    };
    assert_eq!(
        params,
        vec![
            (
                "CreateAlias".into(),
                serde_json::json!({"AliasName": "alias/app", "TargetKeyId": arn(&a)})
            ),
            (
                "UpdateAlias".into(),
                serde_json::json!({"AliasName": "alias/app", "TargetKeyId": arn(&b)})
            ),
            (
                "DeleteAlias".into(),
                serde_json::json!({"AliasName": "alias/app"})
            ),
            (
                "CreatePrincipal".into(),
                serde_json::json!({"PrincipalName": "bob", "AccessKeyId": bob.id})
            ),
            (
                "CreateAccessKey".into(),
                serde_json::json!({"PrincipalName": "bob", "AccessKeyId": second})
            ),
            (
                "DeleteAccessKey".into(),
                serde_json::json!({"PrincipalName": "bob", "AccessKeyId": second})
            ),
            (
                "DeletePrincipal".into(),
                serde_json::json!({"PrincipalName": "bob"})
            ),
        ]
    );
}

fn venv_bin(tool: &str) -> PathBuf {
    let venv =
        std::env::var_os("REWRAP_TEST_VENV").map_or_else(|| repo().join(".venv"), PathBuf::from);
    let path = venv.join("bin").join(tool);
    assert!(
        path.exists(),
        "{tool} is missing from the test virtual environment {}: run scripts/test",
        venv.display()
    );
    path
}

fn aws(id: &str, secret: &str, url: &str, args: &[&str]) -> Output {
    Command::new(venv_bin("aws"))
        .args(["kms", "--endpoint-url", url])
        .args(args)
        .env("AWS_ACCESS_KEY_ID", id)
        .env("AWS_SECRET_ACCESS_KEY", secret)
        .env("AWS_DEFAULT_REGION", "us-east-1")
        .env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
        .env("AWS_MAX_ATTEMPTS", "1")
        .env_remove("AWS_SESSION_TOKEN")
        .env_remove("AWS_PROFILE")
        .output()
        .unwrap()
}

/// Sends a correctly signed request whose JSON body does not parse.
const MALFORMED: &str = r#"
import os, sys, urllib.request
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
url = sys.argv[1]
req = AWSRequest(method="POST", url=url, data=b'{"KeyId": ',
                 headers={"X-Amz-Target": "TrentService.DescribeKey",
                          "Content-Type": "application/x-amz-json-1.1"})
SigV4Auth(Credentials(os.environ["ID"], os.environ["SECRET"]), "kms", "us-east-1").add_auth(req)
r = urllib.request.Request(url, data=req.body, headers=dict(req.headers), method="POST")
try:
    urllib.request.urlopen(r)
except urllib.error.HTTPError as e:
    print(e.code, e.read().decode())
"#;

#[test]
fn requests_refused_before_any_operation_leave_records() {
    let env = Env::new();
    let server = Server::from_command(env.command(&env.owner), &[]);
    let last = || records(&env).pop().unwrap();

    // A wrong secret: the signature does not verify.
    let o = aws(&env.owner.id, "not-the-secret", &server.url, &["list-keys"]);
    assert!(!o.status.success());
    let r = last();
    assert_eq!(r["operation"], "ListKeys");
    assert_eq!(r["outcome"], "InvalidSignatureException");
    assert_eq!(r["decision"], "Deny");
    assert_eq!(r["access_key_id"], env.owner.id.as_str());
    assert_eq!(r["principal"], "owner");
    assert_eq!(r["source_ip"], "127.0.0.1");

    // An access key nobody has.
    let o = aws("AKIAUNKNOWN000000000", "x", &server.url, &["list-keys"]);
    assert!(!o.status.success());
    let r = last();
    assert_eq!(r["outcome"], "UnrecognizedClientException");
    assert_eq!(r["access_key_id"], "AKIAUNKNOWN000000000");
    assert_eq!(r["principal"], "");

    // A key that does not exist (the policy allows the owner: NotFound).
    let o = aws(
        &env.owner.id,
        &env.owner.secret,
        &server.url,
        &[
            "describe-key",
            "--key-id",
            "00000000-0000-4000-8000-000000000000",
        ],
    );
    assert!(!o.status.success());
    let r = last();
    assert_eq!(r["operation"], "DescribeKey");
    assert_eq!(r["outcome"], "NotFoundException");
    assert_eq!(r["access_key_id"], env.owner.id.as_str());

    // Signed, but the body is not JSON.
    let o = Command::new(venv_bin("python"))
        .args(["-c", MALFORMED, &server.url])
        .env("ID", &env.owner.id)
        .env("SECRET", &env.owner.secret)
        .output()
        .unwrap();
    assert!(
        stdout(&o).starts_with("400 "),
        "{}{}",
        stdout(&o),
        stderr(&o)
    );
    let r = last();
    assert_eq!(r["operation"], "DescribeKey");
    assert_eq!(r["outcome"], "SerializationException");
    assert_eq!(r["principal"], "owner");
    assert_eq!(r["access_key_id"], env.owner.id.as_str());

    // All of it verifies.
    drop(server);
    let o = verify(&env);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
}

#[test]
fn the_auditor_verifies_and_reports_through_the_endpoint() {
    let env = busy_env();
    let auditor = env.principal("auditor");
    let admin = env.principal("key-admin");
    let server = Server::from_command(env.command(&env.owner), &[]);
    let remote = |who: &Creds, args: &[&str]| {
        let mut all = vec!["--endpoint-url", server.url.as_str()];
        all.extend_from_slice(args);
        env.run(who, &all)
    };

    let n = records(&env).len();
    let o = remote(&auditor, &["audit", "verify"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(
        stdout(&o).starts_with(&format!("ok: {n} records, chain intact, last hash ")),
        "{}",
        stdout(&o)
    );
    assert!(stdout(&o).contains("; end matches the sealed checkpoint"));
    let last = records(&env).pop().unwrap();
    assert_eq!(last["operation"], "VerifyAuditTrail");
    assert_eq!(last["principal"], "auditor");

    let o = remote(
        &auditor,
        &[
            "--output",
            "json",
            "audit",
            "report",
            "--principal",
            "owner",
        ],
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let encrypt: Vec<&serde_json::Value> = report["rows"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["operation"] == "Encrypt")
        .collect();
    assert_eq!(encrypt.len(), 1, "{report:#}");
    assert_eq!(encrypt[0]["count"], 2);

    // Paged on the wire: one row per page.
    let page = remote(&auditor, &["get-audit-report", "--limit", "1"]);
    let page: serde_json::Value = json(&page);
    assert_eq!(page["Rows"].as_array().unwrap().len(), 1);
    assert_eq!(page["Truncated"], true);
    assert_eq!(page["NextMarker"], "1");

    // Without the audit right: refused, and on record.
    let o = remote(&admin, &["audit", "verify"]);
    assert_aws_error(&o, "AccessDeniedException", "VerifyAuditTrail");

    // A cut trail is reported through the endpoint too.
    let log = env.audit_log();
    let last_start = log[..log.len() - 1].rfind('\n').unwrap() + 1;
    let kept = log[..last_start].lines().count();
    std::fs::write(audit_path(&env), &log[..last_start]).unwrap();
    let o = remote(&auditor, &["audit", "verify"]);
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    assert!(
        stderr(&o).contains(&format!(
            "rewrap: audit trail of {} FAILED verification: the trail ends at record {kept} but \
             the sealed checkpoint records {}: the last 1 record(s) were removed",
            server.url,
            kept + 1
        )),
        "{}",
        stderr(&o)
    );
}

#[test]
fn a_replaced_checkpoint_is_reported_not_overwritten() {
    let env = busy_env();
    let log = env.audit_log();
    let last_start = log[..log.len() - 1].rfind('\n').unwrap() + 1;
    let kept = log[..last_start].lines().count();
    std::fs::write(audit_path(&env), &log[..last_start]).unwrap();
    std::fs::write(env.home.join("audit.checkpoint"), vec![0u8; 156]).unwrap();

    let want = format!(
        "the sealed checkpoint {} does not authenticate (changed, or not made with this \
         keystore's root key)",
        env.home.join("audit.checkpoint").display()
    );
    let o = verify(&env);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains(&format!("FAILED verification: {want}")),
        "{}",
        stderr(&o)
    );
    // The next writer (verify's own record) records the forgery before it
    // writes a fresh checkpoint, so the trail keeps saying so.
    let o = verify(&env);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains(&format!(
            "record {}: a writer found the sealed checkpoint unreadable here, after record {kept}: {want}",
            kept + 1
        )),
        "{}",
        stderr(&o)
    );
}

#[test]
fn a_deleted_checkpoint_is_said_in_the_trail() {
    let env = busy_env();
    let n = records(&env).len();
    std::fs::remove_file(env.home.join("audit.checkpoint")).unwrap();
    env.ok(&env.owner, &["list-keys"]);
    let ops = operations(&env);
    assert_eq!(ops[n..], ["AuditCheckpointMissing", "ListKeys"]);
    let o = verify(&env);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(
        stdout(&o).contains(&format!(
            "; the sealed checkpoint was missing before record(s) {} (deleted, or a trail older \
             than checkpoints); end matches the sealed checkpoint",
            n + 1
        )),
        "{}",
        stdout(&o)
    );
}

/// Replaces the trail with `/dev/full`: every write to it fails with
/// ENOSPC, as on a full disk (the test runs as any user, root included).
fn fill_the_disk_under_the_trail(env: &Env) {
    std::fs::remove_file(audit_path(env)).unwrap();
    std::os::unix::fs::symlink("/dev/full", audit_path(env)).unwrap();
}

const NO_SPACE: &str = "cannot write the audit trail: audit log ";

/// No audit, no answer (issue 14): when the record of a key use cannot be
/// written, the CLI fails the operation and prints no ciphertext.
#[test]
fn the_cli_refuses_a_key_use_it_cannot_record() {
    let env = busy_env();
    let key = env.key("k2");
    fill_the_disk_under_the_trail(&env);
    let o = env.run(
        &env.owner,
        &["encrypt", "--key-id", &key, "--plaintext", "aGVsbG8="],
    );
    assert_aws_error(&o, "KMSInternalException", "Encrypt");
    assert!(stderr(&o).contains(NO_SPACE), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("No space left on device (os error 28)"),
        "{}",
        stderr(&o)
    );
    assert_eq!(stdout(&o), "", "no ciphertext without its record");
}

/// The server's version of the same rule: a Decrypt whose record cannot be
/// written returns an error, not the plaintext.
#[test]
fn the_server_refuses_a_decrypt_it_cannot_record() {
    let env = busy_env();
    let key = env.key("k2");
    let blob = env.ok(
        &env.owner,
        &["encrypt", "--key-id", &key, "--plaintext", "c2VjcmV0IQ=="],
    )["CiphertextBlob"]
        .as_str()
        .unwrap()
        .to_string();
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(blob)
        .unwrap();
    std::fs::write(env.path("ct.bin"), bytes).unwrap();
    fill_the_disk_under_the_trail(&env);
    let server = Server::from_command(env.command(&env.owner), &[]);
    let o = env.run(
        &env.owner,
        &[
            "--endpoint-url",
            &server.url,
            "decrypt",
            "--ciphertext-blob",
            "fileb://ct.bin",
        ],
    );
    assert_aws_error(&o, "KMSInternalException", "Decrypt");
    assert!(stderr(&o).contains(NO_SPACE), "{}", stderr(&o));
    assert!(!stdout(&o).contains("c2VjcmV0IQ=="), "{}", stdout(&o));
    assert_eq!(stdout(&o), "");
}

/// A tree encryption makes its GenerateDataKey records durable once per
/// batch, before the batch's files are renamed into place: when the records
/// cannot be written, no encrypted file is published and the plain files
/// are untouched.
#[test]
fn a_tree_encryption_publishes_no_file_whose_key_use_it_cannot_record() {
    let env = busy_env();
    let key = env.key("k2");
    let tree = env.path("tree");
    std::fs::create_dir_all(tree.join("sub")).unwrap();
    let files = ["a.txt", "b.txt", "sub/c.txt"];
    for f in files {
        std::fs::write(tree.join(f), format!("plain {f}")).unwrap();
    }
    fill_the_disk_under_the_trail(&env);
    let out = env.path("out");
    let o = env.run(
        &env.owner,
        &[
            "encrypt-file",
            "-r",
            "--key-id",
            &key,
            tree.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
        ],
    );
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(report["done"], 0, "{report}");
    let failed = report["failed"].as_array().unwrap();
    assert_eq!(failed.len(), 3, "{report}");
    for f in failed {
        assert_eq!(f["kind"], "Internal", "{report}");
        let error = f["error"].as_str().unwrap();
        assert!(
            error.starts_with(&format!("KMSInternalException: {NO_SPACE}")),
            "{report}"
        );
    }
    let published: Vec<_> = walkdir::WalkDir::new(&out)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file())
        .map(|e| e.path().to_path_buf())
        .collect();
    assert_eq!(published, Vec::<PathBuf>::new());
    for f in files {
        assert_eq!(
            std::fs::read_to_string(tree.join(f)).unwrap(),
            format!("plain {f}")
        );
    }
}

/// The first checkpoint is put in place whole (a temporary file linked into
/// place), so a writer killed while making it never leaves an empty or
/// short one that the next writer would take for a forgery: after the
/// first records the checkpoint has its full length and owner-only mode,
/// and no temporary file is left beside it.
#[test]
fn the_first_checkpoint_appears_whole_and_private() {
    use std::os::unix::fs::PermissionsExt;
    let env = busy_env();
    let meta = std::fs::metadata(env.home.join("audit.checkpoint")).unwrap();
    assert_eq!(meta.len(), 156);
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    let leftovers: Vec<String> = std::fs::read_dir(&env.home)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".audit.checkpoint."))
        .collect();
    assert_eq!(leftovers, Vec::<String>::new());
    let o = verify(&env);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
}

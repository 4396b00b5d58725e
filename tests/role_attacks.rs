//! The attacks of issue 11 ("Role separation that holds"), each replayed
//! through the real binary with the shipped policies and, where the server
//! is the boundary, through the AWS CLI against `rewrap serve`: each must now
//! be refused with an exact error.
//!
//! The Python tools come from `REWRAP_TEST_VENV` (set by `scripts/test`; else
//! `.venv` in the crate). A test whose tool is missing fails and says how to
//! install it: it never skips.

mod support;

use std::path::PathBuf;
use std::process::{Command, Output};
use support::cli::*;

const HR_SECRET: &[u8] = b"salary review: confidential\n";

/// rewrap's refusal: exit code 254 and the AWS CLI's message for `code`.
fn assert_refused(out: &Output, code: &str, operation: &str, message: &str) {
    assert_aws_error(out, code, operation);
    let err = stderr(out);
    assert!(err.contains(message), "want {message:?} in stderr: {err}");
}

/// The AWS CLI v1's refusal: exit code 255 and its message for `code`.
fn assert_aws_cli_refused(out: &Output, code: &str, operation: &str, message: &str) {
    let err = stderr(out);
    assert_eq!(out.status.code(), Some(255), "stderr: {err}");
    let want = format!("An error occurred ({code}) when calling the {operation} operation: ");
    assert!(err.contains(&want), "want {want:?} in stderr: {err}");
    assert!(err.contains(message), "want {message:?} in stderr: {err}");
}

/// Writes a ciphertext of `HR_SECRET` made by the application writer with
/// `purpose=hr` under `key` to `hr.enc`, and checks the reader cannot read it.
fn hr_ciphertext(env: &Env, writer: &Creds, reader: &Creds, key: &str) {
    write(&env.path("hr.txt"), HR_SECRET);
    let v = env.ok(
        writer,
        &[
            "encrypt",
            "--key-id",
            key,
            "--plaintext",
            "fileb://hr.txt",
            "--encryption-context",
            "purpose=hr",
        ],
    );
    use base64::Engine;
    let blob = base64::engine::general_purpose::STANDARD
        .decode(v["CiphertextBlob"].as_str().unwrap())
        .unwrap();
    write(&env.path("hr.enc"), &blob);
    let out = env.run(
        reader,
        &[
            "decrypt",
            "--ciphertext-blob",
            "fileb://hr.enc",
            "--encryption-context",
            "purpose=hr",
        ],
    );
    assert_aws_error(&out, "AccessDeniedException", "Decrypt");
}

const LAUNDERING_REFUSED: &str = "principal 'storage-rotator' is not authorized to perform \
     kms:ReEncryptFrom on resource arn:aws:kms:us-east-1:111122223333:key/";
const SAME_CONTEXT_DENY: &str =
    "storage-rotator.toml#2 (rotator-no-context-change) (rewrap:ReEncryptSameContext = false)";

#[test]
fn rotator_cannot_launder_hr_data_into_the_app_context_locally_issue_11_finding_1() {
    let env = Env::new();
    let key = env.key("app data");
    let writer = env.principal("app-writer");
    let reader = env.principal("app-reader");
    let rotator = env.principal("storage-rotator");
    hr_ciphertext(&env, &writer, &reader, &key);

    // The attack: re-encrypt the HR ciphertext with the app-data context.
    let out = env.run(
        &rotator,
        &[
            "re-encrypt",
            "--ciphertext-blob",
            "fileb://hr.enc",
            "--source-encryption-context",
            "purpose=hr",
            "--destination-key-id",
            &key,
            "--destination-encryption-context",
            "purpose=app-data",
        ],
    );
    assert_refused(
        &out,
        "AccessDeniedException",
        "ReEncrypt",
        LAUNDERING_REFUSED,
    );
    assert!(stderr(&out).contains(SAME_CONTEXT_DENY), "{}", stderr(&out));
    assert_eq!(stdout(&out), "");
    // The refusal is on record with the statement and condition that decided.
    let log = env.audit_log();
    let record: serde_json::Value = log
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .rfind(|r| r["operation"] == "ReEncrypt")
        .unwrap();
    assert_eq!(record["outcome"], "AccessDeniedException");
    assert_eq!(record["decided_by"], SAME_CONTEXT_DENY);
    assert_eq!(
        record["destination_encryption_context"]["purpose"],
        "app-data"
    );

    // Dropping the context is a change of context too.
    let out = env.run(
        &rotator,
        &[
            "re-encrypt",
            "--ciphertext-blob",
            "fileb://hr.enc",
            "--source-encryption-context",
            "purpose=hr",
            "--destination-key-id",
            &key,
        ],
    );
    assert_refused(
        &out,
        "AccessDeniedException",
        "ReEncrypt",
        SAME_CONTEXT_DENY,
    );

    // What rotation needs still works: same context, other key; and the
    // result is still HR data, still refused to the reader.
    let key2 = env.key("app data 2027");
    let v = env.ok(
        &rotator,
        &[
            "re-encrypt",
            "--ciphertext-blob",
            "fileb://hr.enc",
            "--source-encryption-context",
            "purpose=hr",
            "--destination-key-id",
            &key2,
            "--destination-encryption-context",
            "purpose=hr",
            "--query",
            "CiphertextBlob",
        ],
    );
    use base64::Engine;
    let blob = base64::engine::general_purpose::STANDARD
        .decode(v.as_str().unwrap_or_default())
        .unwrap_or_default();
    assert!(!blob.is_empty(), "{v}");
    write(&env.path("hr2.enc"), &blob);
    for ctx in ["purpose=hr", "purpose=app-data"] {
        let out = env.run(
            &reader,
            &[
                "decrypt",
                "--ciphertext-blob",
                "fileb://hr2.enc",
                "--encryption-context",
                ctx,
            ],
        );
        assert_eq!(out.status.code(), Some(254), "{ctx}: {}", stderr(&out));
    }
}

#[test]
fn policy_check_shows_the_condition_that_decided() {
    let env = Env::new();
    let key = env.key("k");
    let check = |dest: &str| {
        env.run(
            &env.owner,
            &[
                "policy",
                "check",
                "--principal",
                "storage-rotator",
                "--action",
                "kms:ReEncryptFrom",
                "--key",
                &key,
                "--context",
                "purpose=hr",
                "--destination-context",
                dest,
            ],
        )
    };
    let out = check("purpose=app-data");
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        v,
        serde_json::json!({
            "Decision": "deny",
            "DecidedBy": "storage-rotator.toml#2 (rotator-no-context-change)",
            "Condition": "rewrap:ReEncryptSameContext = false",
        })
    );
    let out = check("purpose=hr");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        v,
        serde_json::json!({
            "Decision": "allow",
            "DecidedBy": "storage-rotator.toml#4 (rotator-reencrypt)",
            "Condition": "rewrap:ReEncryptSameContext = true",
        })
    );
    // Asking needs rewrap:CheckPolicy (audit or administer): the writer has neither.
    let writer = env.principal("app-writer");
    let out = env.run(
        &writer,
        &[
            "policy",
            "check",
            "--principal",
            "app-writer",
            "--action",
            "kms:Decrypt",
        ],
    );
    assert_refused(
        &out,
        "AccessDeniedException",
        "CheckPolicy",
        "principal 'app-writer' is not authorized to perform rewrap:CheckPolicy on resource *",
    );
}

// ------------------------------------------------------------ the server

/// The virtual environment with the AWS CLI; panics with the fix if absent.
fn venv() -> PathBuf {
    let dir =
        std::env::var_os("REWRAP_TEST_VENV").map_or_else(|| repo().join(".venv"), PathBuf::from);
    assert!(
        dir.join("bin/aws").exists(),
        "aws is missing from the test virtual environment {}: run scripts/test, or \
         python3 -m venv .venv && .venv/bin/pip install -r tests/requirements.txt",
        dir.display()
    );
    dir
}

/// `aws kms ARGS --endpoint-url URL` as `who`, isolated from the machine's AWS settings.
fn aws(env: &Env, server: &Server, who: &Creds, args: &[&str]) -> Output {
    let venv = venv();
    let path = format!(
        "{}:{}",
        venv.join("bin").display(),
        std::env::var("PATH").unwrap_or_default()
    );
    Command::new(venv.join("bin/aws"))
        .arg("kms")
        .args(args)
        .args(["--endpoint-url", &server.url, "--output", "json"])
        .current_dir(env.dir.path())
        .env("PATH", path)
        .env("AWS_ACCESS_KEY_ID", &who.id)
        .env("AWS_SECRET_ACCESS_KEY", &who.secret)
        .env("AWS_DEFAULT_REGION", "us-east-1")
        .env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
        .env_remove("AWS_SESSION_TOKEN")
        .env_remove("AWS_PROFILE")
        .env_remove("AWS_CA_BUNDLE")
        .output()
        .unwrap()
}

/// `rewrap --endpoint-url URL ARGS` as `who`, with no keystore in reach.
fn remote(env: &Env, server: &Server, who: &Creds, args: &[&str]) -> Output {
    let mut c = env.command(who);
    c.env_remove("REWRAP_HOME")
        .env_remove("REWRAP_POLICIES")
        .env("REWRAP_HOME", env.path("no-keystore-here"))
        .args(["--endpoint-url", &server.url])
        .args(args);
    c.output().unwrap()
}

#[test]
fn rotator_cannot_launder_hr_data_through_the_aws_cli_nor_admin_delete_the_owner_remotely() {
    let env = Env::new();
    let key = env.key("app data");
    let writer = env.principal("app-writer");
    let reader = env.principal("app-reader");
    let rotator = env.principal("storage-rotator");
    hr_ciphertext(&env, &writer, &reader, &key);
    let server = env.serve();

    let out = aws(
        &env,
        &server,
        &rotator,
        &[
            "re-encrypt",
            "--ciphertext-blob",
            "fileb://hr.enc",
            "--source-encryption-context",
            "purpose=hr",
            "--destination-key-id",
            &key,
            "--destination-encryption-context",
            "purpose=app-data",
        ],
    );
    assert_aws_cli_refused(
        &out,
        "AccessDeniedException",
        "ReEncrypt",
        LAUNDERING_REFUSED,
    );
    assert_eq!(stdout(&out), "");
    // The context-preserving ReEncrypt rotation needs is allowed.
    let out = aws(
        &env,
        &server,
        &rotator,
        &[
            "re-encrypt",
            "--ciphertext-blob",
            "fileb://hr.enc",
            "--source-encryption-context",
            "purpose=hr",
            "--destination-key-id",
            &key,
            "--destination-encryption-context",
            "purpose=hr",
            "--query",
            "KeyId",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains(&key), "{}", stdout(&out));

    // policy check over --endpoint-url, for a principal with the audit right.
    let auditor = env.principal("auditor");
    let out = remote(
        &env,
        &server,
        &auditor,
        &[
            "policy",
            "check",
            "--principal",
            "storage-rotator",
            "--action",
            "kms:ReEncryptTo",
            "--key",
            &key,
            "--context",
            "purpose=hr",
            "--destination-context",
            "purpose=app-data",
        ],
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        v["DecidedBy"],
        "storage-rotator.toml#2 (rotator-no-context-change)"
    );
    assert_eq!(v["Condition"], "rewrap:ReEncryptSameContext = false");
    // ... and refused to one without it.
    let out = remote(
        &env,
        &server,
        &rotator,
        &[
            "policy",
            "check",
            "--principal",
            "storage-rotator",
            "--action",
            "kms:Decrypt",
        ],
    );
    assert_refused(
        &out,
        "AccessDeniedException",
        "CheckPolicy",
        "principal 'storage-rotator' is not authorized to perform rewrap:CheckPolicy",
    );

    // Finding 2 across the server: key-admin cannot delete the owner's key.
    let admin = env.principal("key-admin");
    let out = remote(
        &env,
        &server,
        &admin,
        &[
            "delete-access-key",
            "--principal-name",
            "owner",
            "--access-key-id",
            &env.owner.id,
        ],
    );
    assert_refused(
        &out,
        "AccessDeniedException",
        "DeleteAccessKey",
        KEY_ADMIN_MAY_NOT_DELETE_OWNER,
    );
}

// ------------------------------------------------ finding 2: principals

const KEY_ADMIN_MAY_NOT_DELETE_OWNER: &str =
    "principal 'key-admin' may not delete 'owner' or its access keys: only the owner may";

#[test]
fn key_admin_cannot_delete_the_owner_its_access_key_or_the_auditor_issue_11_finding_2() {
    let env = Env::new();
    let admin = env.principal("key-admin");
    let auditor = env.principal("auditor");
    let owner_key = env.owner.id.clone();

    let out = env.run(
        &admin,
        &[
            "delete-access-key",
            "--principal-name",
            "owner",
            "--access-key-id",
            &owner_key,
        ],
    );
    assert_refused(
        &out,
        "AccessDeniedException",
        "DeleteAccessKey",
        KEY_ADMIN_MAY_NOT_DELETE_OWNER,
    );
    let out = env.run(&admin, &["delete-principal", "--principal-name", "owner"]);
    assert_refused(
        &out,
        "AccessDeniedException",
        "DeletePrincipal",
        KEY_ADMIN_MAY_NOT_DELETE_OWNER,
    );
    let coverage = "principal 'key-admin' may not delete 'auditor' or its access keys: the \
                    policies allow 'auditor' actions that 'key-admin' does not hold on every key";
    let out = env.run(&admin, &["delete-principal", "--principal-name", "auditor"]);
    assert_refused(&out, "AccessDeniedException", "DeletePrincipal", coverage);
    let out = env.run(
        &admin,
        &[
            "delete-access-key",
            "--principal-name",
            "auditor",
            "--access-key-id",
            &auditor.id,
        ],
    );
    assert_refused(&out, "AccessDeniedException", "DeleteAccessKey", coverage);

    // Nothing changed: the owner, its key and the auditor still work.
    let v = env.ok(&env.owner, &["list-principals"]);
    let names: Vec<&str> = v["Principals"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["PrincipalName"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["auditor", "key-admin", "owner"]);
    env.ok(&auditor, &["list-keys"]);

    // What key-admin may still do: delete a principal with no rights beyond
    // its own, and its own access keys.
    env.principal("temp-contractor");
    env.ok(
        &admin,
        &["delete-principal", "--principal-name", "temp-contractor"],
    );
    let second = env.ok(
        &admin,
        &["create-access-key", "--principal-name", "key-admin"],
    );
    env.ok(
        &admin,
        &[
            "delete-access-key",
            "--principal-name",
            "key-admin",
            "--access-key-id",
            second["AccessKeyId"].as_str().unwrap(),
        ],
    );
    // The owner, who holds every right, may delete the auditor.
    env.ok(
        &env.owner,
        &["delete-principal", "--principal-name", "auditor"],
    );
}

#[test]
fn the_last_principal_with_every_right_cannot_be_removed_issue_11_finding_2() {
    let env = Env::new();
    let last = "no principal with every right and an access key would remain (owner is the \
                last): create another first";
    let out = env.run(
        &env.owner,
        &[
            "delete-access-key",
            "--principal-name",
            "owner",
            "--access-key-id",
            &env.owner.id,
        ],
    );
    assert_refused(&out, "KMSInvalidStateException", "DeleteAccessKey", last);
    let out = env.run(
        &env.owner,
        &["delete-principal", "--principal-name", "owner"],
    );
    assert_refused(&out, "KMSInvalidStateException", "DeletePrincipal", last);
    env.ok(&env.owner, &["list-keys"]);

    // With a second principal holding every right, the owner may go, by itself.
    write(
        &env.home.join("policies/root2.toml"),
        b"[[statement]]\neffect = \"allow\"\nprincipals = [\"root2\"]\nactions = [\"*\"]\nresources = [\"*\"]\n",
    );
    let root2 = env.principal("root2");
    let out = env.run(&root2, &["delete-principal", "--principal-name", "owner"]);
    assert_refused(
        &out,
        "AccessDeniedException",
        "DeletePrincipal",
        "principal 'root2' may not delete 'owner' or its access keys: only the owner may",
    );
    env.ok(
        &env.owner,
        &["delete-principal", "--principal-name", "owner"],
    );
    let out = env.run(
        &root2,
        &[
            "delete-access-key",
            "--principal-name",
            "root2",
            "--access-key-id",
            &root2.id,
        ],
    );
    assert_refused(
        &out,
        "KMSInvalidStateException",
        "DeleteAccessKey",
        "no principal with every right and an access key would remain (root2 is the last)",
    );
}

// ---------------------------------------------------- finding 3: aliases

/// A reader allowed on `alias/app-data` and denied on `alias/hr`, by alias name.
const ALIAS_READER_POLICY: &[u8] = br#"[[statement]]
sid = "reader-app-data"
effect = "allow"
principals = ["alias-reader"]
actions = ["decrypt"]
resources = ["alias/app-data"]

[[statement]]
sid = "reader-not-hr"
effect = "deny"
principals = ["alias-reader"]
actions = ["decrypt"]
resources = ["alias/hr"]
"#;

fn key_arn(id: &str) -> String {
    format!("arn:aws:kms:us-east-1:111122223333:key/{id}")
}

#[test]
fn key_admin_cannot_move_alias_grants_to_the_hr_key_issue_11_finding_3() {
    let env = Env::new();
    write(
        &env.home.join("policies/alias-reader.toml"),
        ALIAS_READER_POLICY,
    );
    let app_key = env.key("app data");
    let hr_key = env.key("hr");
    for (alias, key) in [("alias/app-data", &app_key), ("alias/hr", &hr_key)] {
        env.ok(
            &env.owner,
            &[
                "create-alias",
                "--alias-name",
                alias,
                "--target-key-id",
                key,
            ],
        );
    }
    let writer = env.principal("app-writer");
    let reader = env.principal("alias-reader");
    let admin = env.principal("key-admin");
    write(&env.path("hr.txt"), HR_SECRET);
    let v = env.ok(
        &writer,
        &[
            "encrypt",
            "--key-id",
            "alias/hr",
            "--plaintext",
            "fileb://hr.txt",
        ],
    );
    use base64::Engine;
    let blob = base64::engine::general_purpose::STANDARD
        .decode(v["CiphertextBlob"].as_str().unwrap())
        .unwrap();
    write(&env.path("hr.enc"), &blob);
    let decrypt = || env.run(&reader, &["decrypt", "--ciphertext-blob", "fileb://hr.enc"]);
    assert_aws_error(&decrypt(), "AccessDeniedException", "Decrypt");

    // Step 1 of the attack: re-point alias/app-data at the HR key.
    let out = env.run(
        &admin,
        &[
            "update-alias",
            "--alias-name",
            "alias/app-data",
            "--target-key-id",
            &hr_key,
        ],
    );
    assert_refused(
        &out,
        "AccessDeniedException",
        "UpdateAlias",
        &format!(
            "principal 'key-admin' may not move alias/app-data onto {}: statement \
             alias-reader.toml#1 (reader-app-data) would then allow kms:Decrypt on it, which \
             'key-admin' does not hold on every key",
            key_arn(&hr_key)
        ),
    );
    // Step 2: delete alias/hr, which the deny names.
    let out = env.run(&admin, &["delete-alias", "--alias-name", "alias/hr"]);
    assert_refused(
        &out,
        "AccessDeniedException",
        "DeleteAlias",
        &format!(
            "principal 'key-admin' may not take alias/hr off {}: statement \
             alias-reader.toml#2 (reader-not-hr) would then no longer deny kms:Decrypt on it, \
             which 'key-admin' does not hold on every key",
            key_arn(&hr_key)
        ),
    );
    // A new alias the allow names, on the HR key: refused too.
    env.ok(
        &env.owner,
        &["delete-alias", "--alias-name", "alias/app-data"],
    );
    let out = env.run(
        &admin,
        &[
            "create-alias",
            "--alias-name",
            "alias/app-data",
            "--target-key-id",
            &hr_key,
        ],
    );
    assert_aws_error(&out, "AccessDeniedException", "CreateAlias");
    assert_aws_error(&decrypt(), "AccessDeniedException", "Decrypt");

    // Alias work that widens nothing still goes: aliases no statement names,
    // and re-creating alias/app-data on the app key (as it was).
    env.ok(
        &admin,
        &[
            "create-alias",
            "--alias-name",
            "alias/hr-archive",
            "--target-key-id",
            &hr_key,
        ],
    );
    env.ok(
        &admin,
        &[
            "update-alias",
            "--alias-name",
            "alias/hr-archive",
            "--target-key-id",
            &app_key,
        ],
    );
    env.ok(
        &admin,
        &["delete-alias", "--alias-name", "alias/hr-archive"],
    );
    // The owner holds every right, so it may move grants.
    env.ok(
        &env.owner,
        &[
            "create-alias",
            "--alias-name",
            "alias/app-data",
            "--target-key-id",
            &app_key,
        ],
    );

    // The same attack through the AWS CLI against rewrap serve.
    let server = env.serve();
    let out = aws(
        &env,
        &server,
        &admin,
        &[
            "update-alias",
            "--alias-name",
            "alias/app-data",
            "--target-key-id",
            &hr_key,
        ],
    );
    assert_aws_cli_refused(
        &out,
        "AccessDeniedException",
        "UpdateAlias",
        "statement alias-reader.toml#1 (reader-app-data) would then allow kms:Decrypt on it",
    );
    let out = aws(
        &env,
        &server,
        &admin,
        &["delete-alias", "--alias-name", "alias/hr"],
    );
    assert_aws_cli_refused(
        &out,
        "AccessDeniedException",
        "DeleteAlias",
        "statement alias-reader.toml#2 (reader-not-hr) would then no longer deny kms:Decrypt",
    );
    let out = aws(
        &env,
        &server,
        &reader,
        &["decrypt", "--ciphertext-blob", "fileb://hr.enc"],
    );
    assert_aws_cli_refused(
        &out,
        "AccessDeniedException",
        "Decrypt",
        "principal 'alias-reader' is not authorized to perform kms:Decrypt",
    );
}

/// The property behind finding 3, over many alias moves: whatever sequence
/// of CreateAlias / UpdateAlias / DeleteAlias key-admin (administer only)
/// makes, no principal's cryptographic access to any key ever widens.
#[test]
fn no_alias_move_by_key_admin_ever_widens_cryptographic_access() {
    use rewrap::api::{AliasRequest, CheckPolicyRequest, DeleteAliasRequest};
    use rewrap::kms::Kms;
    use support::library;
    let env = library::Env::new();
    std::fs::write(
        env.home.join("policies/aliases.toml"),
        br#"[[statement]]
effect = "allow"
principals = ["r1"]
actions = ["decrypt"]
resources = ["alias/a"]
[[statement]]
effect = "allow"
principals = ["r2"]
actions = ["encrypt", "kms:ReEncrypt*"]
resources = ["alias/b*", "arn:aws:kms:*:*:alias/c"]
[[statement]]
effect = "deny"
principals = ["r*"]
actions = ["decrypt", "kms:Encrypt"]
resources = ["alias/*-restricted"]
[[statement]]
effect = "allow"
principals = ["r3"]
actions = ["decrypt"]
resources = ["*"]
[[statement]]
effect = "deny"
principals = ["r3"]
actions = ["decrypt"]
resources = ["alias/c"]
"#,
    )
    .unwrap();
    env.service.reload_policies().unwrap();
    let keys: Vec<String> = (0..3).map(|i| env.key(&format!("k{i}"))).collect();
    let aliases = [
        "alias/a",
        "alias/b1",
        "alias/c",
        "alias/x-restricted",
        "alias/z",
    ];
    for (i, alias) in aliases.iter().enumerate() {
        env.owner
            .create_alias(&AliasRequest {
                alias_name: alias.to_string(),
                target_key_id: keys[i % 3].clone(),
            })
            .unwrap();
    }
    let admin = env.principal("key-admin");
    let actions = [
        "kms:Encrypt",
        "kms:Decrypt",
        "kms:ReEncryptFrom",
        "kms:ReEncryptTo",
        "kms:GenerateDataKey",
    ];
    let access = || -> Vec<bool> {
        let mut v = Vec::new();
        for p in ["r1", "r2", "r3"] {
            for k in &keys {
                for a in actions {
                    let d = env
                        .service
                        .explain(&CheckPolicyRequest {
                            principal_name: p.into(),
                            action: a.into(),
                            key_id: Some(k.clone()),
                            ..Default::default()
                        })
                        .unwrap();
                    v.push(d.allowed);
                }
            }
        }
        v
    };
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut next = |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed % n) as usize
    };
    let (mut done, mut refused) = (0, 0);
    let mut before = access();
    for step in 0..150 {
        let alias = aliases[next(aliases.len() as u64)].to_string();
        let key = keys[next(3)].clone();
        let what = next(3);
        let result = match what {
            0 => admin.create_alias(&AliasRequest {
                alias_name: alias.clone(),
                target_key_id: key,
            }),
            1 => admin.update_alias(&AliasRequest {
                alias_name: alias.clone(),
                target_key_id: key,
            }),
            _ => admin.delete_alias(&DeleteAliasRequest {
                alias_name: alias.clone(),
            }),
        };
        match &result {
            Ok(_) => done += 1,
            Err(e) if e.code.as_str() == "AccessDeniedException" => refused += 1,
            Err(_) => {} // NotFound / AlreadyExists: nothing changed
        }
        let after = access();
        let widened: Vec<usize> = (0..after.len())
            .filter(|&i| after[i] && !before[i])
            .collect();
        assert!(
            widened.is_empty(),
            "step {step}: op {what} on {alias} widened access {widened:?}"
        );
        before = after;
    }
    // The walk did both: moves that widen nothing went through, the others were refused.
    assert!(
        done >= 10 && refused >= 10,
        "done {done}, refused {refused}"
    );
}

//! Tags, DryRun and grants (issue 15): through boto3 and the AWS CLI
//! against `rewrap serve`, through the `rewrap` binary, and a rotation job
//! that runs under a grant retired at its end.

mod support;

use support::cli::{assert_aws_error, aws_tool, json, stderr, stdout, Creds, Env};

/// An explicit deny of decrypt for `grantee-denied`: a grant must not beat it.
const DENY_POLICY: &str = r#"
[[statement]]
sid = "never-decrypt"
effect = "deny"
principals = ["grantee-denied"]
actions = ["decrypt"]
resources = ["*"]
"#;

/// Decrypt for `tag-reader` on keys tagged team = hr only.
const TAG_POLICY: &str = r#"
[[statement]]
sid = "hr-keys"
effect = "allow"
principals = ["tag-reader"]
actions = ["decrypt"]
resources = ["*"]
[statement.condition]
resource_tags = { team = "hr" }
"#;

fn with_policy(name: &str, text: &str) -> Env {
    let env = Env::new();
    std::fs::write(env.home.join("policies").join(name), text).unwrap();
    env
}

fn audit_records(env: &Env) -> Vec<serde_json::Value> {
    env.audit_log()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn boto3_tags_dry_runs_and_grants_with_exact_codes() {
    let env = with_policy("deny.toml", DENY_POLICY);
    let reader = env.principal("app-reader");
    let grantee = env.principal("grantee-job");
    let denied = env.principal("grantee-denied");
    let server = env.serve();
    let mut py = aws_tool("python", &env.owner);
    py.arg(support::repo().join("tests/py/boto3_tags_grants.py"))
        .env("REWRAP_URL", &server.url);
    for (who, c) in [
        ("OWNER", &env.owner),
        ("READER", &reader),
        ("GRANTEE", &grantee),
        ("DENIED", &denied),
    ] {
        py.env(format!("{who}_KEY_ID"), &c.id)
            .env(format!("{who}_SECRET"), &c.secret);
    }
    let out = py.output().unwrap();
    assert!(
        out.status.success(),
        "boto3_tags_grants.py failed:\n{}\n{}",
        stdout(&out),
        stderr(&out)
    );
    assert!(
        stdout(&out).contains("ALL CHECKS PASSED 60"),
        "{}",
        stdout(&out)
    );
    let records = audit_records(&env);
    // Dry runs are on record: their outcome, and the DryRun parameter.
    let dry: Vec<&str> = records
        .iter()
        .filter(|r| r["request_parameters"]["DryRun"] == "true")
        .map(|r| r["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(dry.len(), 8, "{dry:?}");
    assert!(
        dry.iter().all(|o| *o == "DryRunOperationException"),
        "{dry:?}"
    );
    // Grant changes are on record with the grant id; a use under a grant
    // says the grant decided.
    let created: Vec<&serde_json::Value> = records
        .iter()
        .filter(|r| r["operation"] == "CreateGrant" && r["outcome"] == "Success")
        .collect();
    assert_eq!(created.len(), 5);
    assert!(created.iter().all(|r| r["request_parameters"]["GrantId"]
        .as_str()
        .is_some_and(|id| id.len() == 64)));
    let by_grant = records
        .iter()
        .find(|r| {
            r["operation"] == "Decrypt"
                && r["principal"] == "grantee-job"
                && r["outcome"] == "Success"
        })
        .expect("the grantee's Decrypt is on record");
    assert!(
        by_grant["decided_by"]
            .as_str()
            .unwrap()
            .starts_with("grant "),
        "{by_grant}"
    );
}

#[test]
fn aws_cli_tags_and_grants() {
    let env = Env::new();
    let grantee = env.principal("grantee-job");
    let key = env.key("cli");
    let server = env.serve();
    let aws = |who: &Creds, args: &[&str]| {
        aws_tool("aws", who)
            .args(["kms", "--endpoint-url", &server.url, "--output", "json"])
            .args(args)
            .output()
            .unwrap()
    };
    let out = aws(
        &env.owner,
        &[
            "tag-resource",
            "--key-id",
            &key,
            "--tags",
            "TagKey=team,TagValue=hr",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let tags = json(&aws(&env.owner, &["list-resource-tags", "--key-id", &key]));
    assert_eq!(
        tags["Tags"],
        serde_json::json!([{"TagKey": "team", "TagValue": "hr"}])
    );
    let out = aws(
        &env.owner,
        &[
            "tag-resource",
            "--key-id",
            &key,
            "--tags",
            "TagKey=aws:x,TagValue=y",
        ],
    );
    // AWS CLI v1 exits 255 on a service error.
    assert_eq!(out.status.code(), Some(255), "{}", stderr(&out));
    assert!(
        stderr(&out)
            .contains("An error occurred (TagException) when calling the TagResource operation"),
        "{}",
        stderr(&out)
    );
    let grant = json(&aws(
        &env.owner,
        &[
            "create-grant",
            "--key-id",
            &key,
            "--grantee-principal",
            "grantee-job",
            "--operations",
            "Encrypt",
            "Decrypt",
            "--retiring-principal",
            "grantee-job",
        ],
    ));
    let token = grant["GrantToken"].as_str().unwrap();
    // A fixed start, never `-`: command lines take the token as a value.
    assert!(token.starts_with("RWGT"), "{token}");
    assert_eq!(token.len(), 68, "{token}");
    let listed = json(&aws(&env.owner, &["list-grants", "--key-id", &key]));
    assert_eq!(listed["Grants"][0]["GrantId"], grant["GrantId"]);
    assert_eq!(
        listed["Grants"][0]["Operations"],
        serde_json::json!(["Encrypt", "Decrypt"])
    );
    let enc = aws(
        &grantee,
        &[
            "encrypt",
            "--key-id",
            &key,
            "--plaintext",
            "aGk=",
            "--grant-tokens",
            token,
        ],
    );
    assert!(enc.status.success(), "{}", stderr(&enc));
    let out = aws(&grantee, &["retire-grant", "--grant-token", token]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = aws(
        &grantee,
        &["encrypt", "--key-id", &key, "--plaintext", "aGk="],
    );
    assert_eq!(out.status.code(), Some(255));
    assert!(
        stderr(&out).contains("(AccessDeniedException) when calling the Encrypt operation"),
        "{}",
        stderr(&out)
    );
    let out = aws(
        &env.owner,
        &[
            "revoke-grant",
            "--key-id",
            &key,
            "--grant-id",
            &"f".repeat(64),
        ],
    );
    assert_eq!(out.status.code(), Some(255));
    assert!(
        stderr(&out).contains("(NotFoundException) when calling the RevokeGrant operation"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn rewrap_cli_tags_and_access_that_follows_them() {
    let env = with_policy("tags.toml", TAG_POLICY);
    let reader = env.principal("tag-reader");
    let key = env.key("tagged");
    let blob = env.path("secret.enc");
    let enc = env.ok(
        &env.owner,
        &["encrypt", "--key-id", &key, "--plaintext", "tagged secret"],
    );
    use base64::Engine;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(enc["CiphertextBlob"].as_str().unwrap())
        .unwrap();
    std::fs::write(&blob, bytes).unwrap();
    let blob_arg = format!("fileb://{}", blob.display());
    let decrypt = || env.run(&reader, &["decrypt", "--ciphertext-blob", &blob_arg]);
    assert_aws_error(&decrypt(), "AccessDeniedException", "Decrypt");
    assert!(stderr(&decrypt()).contains("aws:ResourceTag/team = \"hr\" not met"));
    env.ok(
        &env.owner,
        &[
            "tag-resource",
            "--key-id",
            &key,
            "--tags",
            "team=hr,env=prod",
        ],
    );
    let out = decrypt();
    assert_eq!(
        json(&out)["KeyId"].as_str().unwrap().rsplit('/').next(),
        Some(key.as_str())
    );
    let tags = env.ok(&env.owner, &["list-resource-tags", "--key-id", &key]);
    assert_eq!(
        tags["Tags"],
        serde_json::json!([{"TagKey": "env", "TagValue": "prod"}, {"TagKey": "team", "TagValue": "hr"}])
    );
    env.ok(
        &env.owner,
        &["untag-resource", "--key-id", &key, "--tag-keys", "team"],
    );
    assert_aws_error(&decrypt(), "AccessDeniedException", "Decrypt");
    // Tagging is administration: the reader may not tag its way in.
    let out = env.run(
        &reader,
        &["tag-resource", "--key-id", &key, "--tags", "team=hr"],
    );
    assert_aws_error(&out, "AccessDeniedException", "TagResource");
    let long = format!("{}=x", "k".repeat(129));
    let out = env.run(
        &env.owner,
        &["tag-resource", "--key-id", &key, "--tags", &long],
    );
    assert_aws_error(&out, "ValidationException", "TagResource");
    assert!(
        stderr(&out).contains(
            "1 validation error detected: Value at 'tags.1.member.tagKey' failed to satisfy \
             constraint: Member must have length less than or equal to 128"
        ),
        "{}",
        stderr(&out)
    );
    let out = env.run(&env.owner, &["create-key", "--tags", "aws:team=hr"]);
    assert_aws_error(&out, "TagException", "CreateKey");
    assert_eq!(
        env.ok(&env.owner, &["list-resource-tags", "--key-id", &key])["Tags"],
        serde_json::json!([{"TagKey": "env", "TagValue": "prod"}])
    );
    // A key pending deletion takes no tags.
    env.ok(
        &env.owner,
        &[
            "schedule-key-deletion",
            "--key-id",
            &key,
            "--pending-window-in-days",
            "7",
        ],
    );
    let out = env.run(
        &env.owner,
        &["tag-resource", "--key-id", &key, "--tags", "a=b"],
    );
    assert_aws_error(&out, "KMSInvalidStateException", "TagResource");
    // `policy check` sees the tags too.
    let out = env.run(
        &env.owner,
        &[
            "policy",
            "check",
            "--principal",
            "tag-reader",
            "--action",
            "kms:Decrypt",
            "--key-id",
            &key,
        ],
    );
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
}

/// Envelopes under `key` in a fresh folder `name`.
fn envelopes(env: &Env, key: &str, name: &str, n: usize) -> std::path::PathBuf {
    let dir = env.path(name);
    std::fs::create_dir_all(&dir).unwrap();
    for i in 0..n {
        std::fs::write(dir.join(format!("f{i}")), format!("body {i}")).unwrap();
    }
    let out = env.run(
        &env.owner,
        &[
            "encrypt-file",
            "--key-id",
            key,
            "--encryption-context",
            "purpose=app-data",
            "-r",
            "--in-place",
            dir.to_str().unwrap(),
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    dir
}

#[test]
fn a_rotation_job_runs_under_a_grant_retired_at_its_end() {
    let env = Env::new();
    let job = env.principal("nightly-rotation");
    let old = env.key("old");
    let new = env.key("new");
    let server = env.serve();
    let remote = |who: &Creds, args: &[&str]| {
        env.command(who)
            .args(["--endpoint-url", &server.url])
            .args(args)
            .output()
            .unwrap()
    };
    let first = envelopes(&env, &old, "first", 3);
    // rotate --dry-run on a remote KMS: DryRun ReEncrypts, no key used.
    let out = remote(
        &env.owner,
        &["rotate", "--dry-run", "--to", &new, first.to_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let re_encrypts: Vec<String> = audit_records(&env)
        .iter()
        .filter(|r| r["operation"] == "ReEncrypt")
        .map(|r| r["outcome"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(re_encrypts, ["DryRunOperationException"]);
    // The job principal has no policy statement: only its grants.
    let grant = |key: &str, ops: &[&str]| {
        let mut args = vec![
            "create-grant",
            "--key-id",
            key,
            "--grantee-principal",
            "nightly-rotation",
            "--retiring-principal",
            "nightly-rotation",
            "--constraints",
            r#"{"EncryptionContextSubset":{"purpose":"app-data"}}"#,
            "--operations",
        ];
        args.extend_from_slice(ops);
        env.ok(&env.owner, &args)["GrantToken"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let from = grant(&old, &["ReEncryptFrom"]);
    let to = grant(&new, &["ReEncryptTo", "DescribeKey"]);
    let rotate = |dir: &std::path::Path, tokens: &[&str]| {
        let mut args = vec!["rotate", "--to", &new, "--no-progress"];
        for t in tokens {
            args.extend_from_slice(&["--grant-token", t]);
        }
        args.push(dir.to_str().unwrap());
        remote(&job, &args)
    };
    let out = rotate(&first, &[&from, &to]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    // The job retires its target grant at its end; the owner revokes the
    // source grant.
    let out = remote(&job, &["retire-grant", "--grant-token", &to]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let from_id = env.ok(&env.owner, &["list-grants", "--key-id", &old])["Grants"][0]["GrantId"]
        .as_str()
        .unwrap()
        .to_string();
    env.ok(
        &env.owner,
        &["revoke-grant", "--key-id", &old, "--grant-id", &from_id],
    );
    // A run with the revoked grant's token stops at once (exit 2): the
    // token is refused, whatever the policies say.
    let second = envelopes(&env, &old, "second", 2);
    let out = rotate(&second, &[&from]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(
            "the KMS refused the caller (InvalidGrantTokenException): The request was rejected \
             because the specified grant token is not valid."
        ),
        "{}",
        stderr(&out)
    );
    // ... so does one with the retired grant's token, and the owner's own
    // rights do not make a dead token acceptable.
    let out = rotate(&second, &[&to]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("InvalidGrantTokenException"),
        "{}",
        stderr(&out)
    );
    let out = remote(
        &env.owner,
        &[
            "rotate",
            "--to",
            &new,
            "--no-progress",
            "--grant-token",
            &from,
            second.to_str().unwrap(),
        ],
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("InvalidGrantTokenException"),
        "{}",
        stderr(&out)
    );
    // Each envelope of the first run was re-wrapped under the grants.
    let granted: Vec<String> = audit_records(&env)
        .iter()
        .filter(|r| r["operation"] == "ReEncrypt" && r["principal"] == "nightly-rotation")
        .map(|r| {
            format!(
                "{} {}",
                r["outcome"].as_str().unwrap(),
                r["decided_by"].as_str().unwrap().starts_with("grant ")
            )
        })
        .collect();
    // ... and after the grants were retired or revoked, each attempt was
    // refused for its token, before any policy decision.
    let (first_run, later_runs) = granted.split_at(3);
    assert_eq!(first_run, ["Success true"; 3]);
    assert!(!later_runs.is_empty());
    assert!(
        later_runs
            .iter()
            .all(|o| o == "InvalidGrantTokenException false"),
        "{later_runs:?}"
    );
}

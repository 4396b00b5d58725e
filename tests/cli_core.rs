//! The key service core through the real binary: the lesson commands, every
//! error name, the shipped roles, the audit trail and the keystore's safety.

mod support;

use std::process::Command;
use support::cli::*;

#[test]
fn lesson_commands_round_trip_the_secret() {
    let env = Env::new();
    let script = r#"
set -euo pipefail
KEYID=$(rewrap create-key --description "LA KMS DEMO CMK" --output text --query KeyMetadata.KeyId)
rewrap create-alias --target-key-id $KEYID --alias-name "alias/lakmsdemo" --region us-east-1
echo "this is a secret message" > topsecret.txt
rewrap encrypt --key-id $KEYID --plaintext file://topsecret.txt --output text --query CiphertextBlob | base64 --decode > topsecret.encrypted
rewrap decrypt --ciphertext-blob fileb://topsecret.encrypted --output text --query Plaintext | base64 --decode
rewrap generate-data-key --key-id $KEYID --key-spec AES_256 > datakey.json
rewrap encrypt --key-id alias/lakmsdemo --plaintext file://topsecret.txt --output text --query CiphertextBlob | base64 --decode > viaalias.encrypted
rewrap decrypt --ciphertext-blob fileb://viaalias.encrypted --output text --query Plaintext | base64 --decode
"#;
    let bindir = std::path::Path::new(bin()).parent().unwrap().to_path_buf();
    let path = format!("{}:{}", bindir.display(), std::env::var("PATH").unwrap());
    let out = env
        .command(&env.owner)
        .env("PATH", path)
        .args(["--version"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let out = Command::new("bash")
        .arg("-c")
        .arg(script)
        .current_dir(env.dir.path())
        .env(
            "PATH",
            format!("{}:{}", bindir.display(), std::env::var("PATH").unwrap()),
        )
        .env("REWRAP_HOME", &env.home)
        .env("REWRAP_ACCESS_KEY_ID", &env.owner.id)
        .env("REWRAP_SECRET_ACCESS_KEY", &env.owner.secret)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        "this is a secret message\nthis is a secret message\n"
    );
    let dk: serde_json::Value =
        serde_json::from_slice(&std::fs::read(env.path("datakey.json")).unwrap()).unwrap();
    use base64::Engine;
    let plain = base64::engine::general_purpose::STANDARD
        .decode(dk["Plaintext"].as_str().unwrap())
        .unwrap();
    assert_eq!(plain.len(), 32);
    let blob = base64::engine::general_purpose::STANDARD
        .decode(dk["CiphertextBlob"].as_str().unwrap())
        .unwrap();
    assert_eq!(blob.len(), 32 + 50);
    assert!(dk["KeyId"]
        .as_str()
        .unwrap()
        .starts_with("arn:aws:kms:us-east-1:111122223333:key/"));
}

#[test]
fn every_error_name_is_reachable_from_the_cli() {
    let env = Env::new();
    let o = &env.owner;
    let key = env.key("errors");
    let other = env.key("other");
    std::fs::write(env.path("p.txt"), b"hello").unwrap();
    let ct = env.run(
        o,
        &[
            "encrypt",
            "--key-id",
            &key,
            "--plaintext",
            "fileb://p.txt",
            "--output",
            "text",
            "--query",
            "CiphertextBlob",
        ],
    );
    use base64::Engine;
    let blob = base64::engine::general_purpose::STANDARD
        .decode(stdout(&ct).trim())
        .unwrap();
    std::fs::write(env.path("ct.bin"), &blob).unwrap();

    // NotFoundException
    let missing = "11111111-2222-3333-4444-555555555555";
    assert_aws_error(
        &env.run(o, &["describe-key", "--key-id", missing]),
        "NotFoundException",
        "DescribeKey",
    );
    // IncorrectKeyException
    let out = env.run(
        o,
        &[
            "decrypt",
            "--ciphertext-blob",
            "fileb://ct.bin",
            "--key-id",
            &other,
        ],
    );
    assert_aws_error(&out, "IncorrectKeyException", "Decrypt");
    // InvalidCiphertextException: tampered, truncated, wrong context
    let mut bad = blob.clone();
    bad[40] ^= 1;
    std::fs::write(env.path("bad.bin"), &bad).unwrap();
    assert_aws_error(
        &env.run(o, &["decrypt", "--ciphertext-blob", "fileb://bad.bin"]),
        "InvalidCiphertextException",
        "Decrypt",
    );
    std::fs::write(env.path("short.bin"), &blob[..20]).unwrap();
    assert_aws_error(
        &env.run(o, &["decrypt", "--ciphertext-blob", "fileb://short.bin"]),
        "InvalidCiphertextException",
        "Decrypt",
    );
    let out = env.run(
        o,
        &[
            "decrypt",
            "--ciphertext-blob",
            "fileb://ct.bin",
            "--encryption-context",
            "a=b",
        ],
    );
    assert_aws_error(&out, "InvalidCiphertextException", "Decrypt");
    // ValidationException: 4097 bytes
    std::fs::write(env.path("big.bin"), vec![7u8; 4097]).unwrap();
    let out = env.run(
        o,
        &[
            "encrypt",
            "--key-id",
            &key,
            "--plaintext",
            "fileb://big.bin",
        ],
    );
    assert_aws_error(&out, "ValidationException", "Encrypt");
    assert!(stderr(&out).contains(
        "1 validation error detected: Value at 'plaintext' failed to satisfy constraint: \
         Member must have length less than or equal to 4096"
    ));
    assert!(stderr(&out).contains("envelope encryption"));
    std::fs::write(env.path("max.bin"), vec![7u8; 4096]).unwrap();
    assert!(env
        .run(
            o,
            &[
                "encrypt",
                "--key-id",
                &key,
                "--plaintext",
                "fileb://max.bin"
            ]
        )
        .status
        .success());
    // AlreadyExistsException, InvalidAliasNameException
    env.ok(
        o,
        &[
            "create-alias",
            "--alias-name",
            "alias/x",
            "--target-key-id",
            &key,
        ],
    );
    assert_aws_error(
        &env.run(
            o,
            &[
                "create-alias",
                "--alias-name",
                "alias/x",
                "--target-key-id",
                &key,
            ],
        ),
        "AlreadyExistsException",
        "CreateAlias",
    );
    assert_aws_error(
        &env.run(
            o,
            &[
                "create-alias",
                "--alias-name",
                "alias/aws/x",
                "--target-key-id",
                &key,
            ],
        ),
        "InvalidAliasNameException",
        "CreateAlias",
    );
    assert_aws_error(
        &env.run(
            o,
            &[
                "create-alias",
                "--alias-name",
                "noprefix",
                "--target-key-id",
                &key,
            ],
        ),
        "ValidationException",
        "CreateAlias",
    );
    // LimitExceededException: 11 grant tokens
    let tokens: Vec<String> = (0..11).map(|i| format!("t{i}")).collect();
    let mut args = vec![
        "encrypt",
        "--key-id",
        key.as_str(),
        "--plaintext",
        "x",
        "--grant-tokens",
    ];
    args.extend(tokens.iter().map(String::as_str));
    assert_aws_error(&env.run(o, &args), "LimitExceededException", "Encrypt");
    // InvalidMarkerException
    assert_aws_error(
        &env.run(o, &["list-keys", "--marker", "zzz"]),
        "InvalidMarkerException",
        "ListKeys",
    );
    // DisabledException
    env.run(o, &["disable-key", "--key-id", &other]);
    assert_aws_error(
        &env.run(o, &["encrypt", "--key-id", &other, "--plaintext", "x"]),
        "DisabledException",
        "Encrypt",
    );
    // KMSInvalidStateException
    env.ok(
        o,
        &[
            "schedule-key-deletion",
            "--key-id",
            &key,
            "--pending-window-in-days",
            "7",
        ],
    );
    assert_aws_error(
        &env.run(o, &["decrypt", "--ciphertext-blob", "fileb://ct.bin"]),
        "KMSInvalidStateException",
        "Decrypt",
    );
    assert_aws_error(
        &env.run(
            o,
            &[
                "schedule-key-deletion",
                "--key-id",
                &other,
                "--pending-window-in-days",
                "6",
            ],
        ),
        "ValidationException",
        "ScheduleKeyDeletion",
    );
    // AccessDeniedException
    let writer = env.principal("app-writer");
    assert_aws_error(
        &env.run(&writer, &["decrypt", "--ciphertext-blob", "fileb://ct.bin"]),
        "AccessDeniedException",
        "Decrypt",
    );
    // InvalidArnException
    assert_aws_error(
        &env.run(o, &["describe-key", "--key-id", "arn:aws:s3:::bucket"]),
        "InvalidArnException",
        "DescribeKey",
    );
}

#[test]
fn bad_credentials_are_refused_before_anything_happens() {
    let env = Env::new();
    let wrong = Creds {
        secret: "not-the-secret".into(),
        ..env.owner.clone()
    };
    let out = env.run(&wrong, &["create-key"]);
    assert_eq!(out.status.code(), Some(253));
    assert!(
        stderr(&out).contains("UnrecognizedClientException"),
        "{}",
        stderr(&out)
    );
    let unknown = Creds {
        id: "RWAKNOSUCHKEY0000000".into(),
        ..env.owner.clone()
    };
    let out = env.run(&unknown, &["list-keys"]);
    assert_eq!(out.status.code(), Some(253));
    assert!(stderr(&out).contains("unknown access key id"));
    let out = env
        .command(&env.owner)
        .env_remove("REWRAP_ACCESS_KEY_ID")
        .args(["list-keys"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(253));
    assert!(stderr(&out).contains("Unable to locate credentials"));
    // Nothing was created or even recorded as a key use.
    let keys = env.ok(&env.owner, &["list-keys"]);
    assert_eq!(keys["Keys"].as_array().unwrap().len(), 0);
}

#[test]
fn shared_credentials_file_profile_works() {
    let env = Env::new();
    let creds = env.path("credentials");
    std::fs::write(
        &creds,
        format!(
            "[default]\naws_access_key_id = nope\naws_secret_access_key = nope\n\n[ops]\naws_access_key_id = {}\naws_secret_access_key = {}\n",
            env.owner.id, env.owner.secret
        ),
    )
    .unwrap();
    let out = env
        .command(&env.owner)
        .env_remove("REWRAP_ACCESS_KEY_ID")
        .env_remove("REWRAP_SECRET_ACCESS_KEY")
        .env("AWS_SHARED_CREDENTIALS_FILE", &creds)
        .args(["--profile", "ops", "list-keys"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn shipped_roles_can_do_exactly_their_part() {
    let env = Env::new();
    let o = &env.owner;
    let key = env.key("app data");
    env.ok(
        o,
        &[
            "create-alias",
            "--alias-name",
            "alias/app-data",
            "--target-key-id",
            &key,
        ],
    );
    let key2 = env.key("next");
    let admin = env.principal("key-admin");
    let writer = env.principal("app-writer");
    let reader = env.principal("app-reader");
    let rotator = env.principal("storage-rotator");
    let auditor = env.principal("auditor");
    let ctx = "purpose=app-data";

    // Writer: encrypt and data keys, nothing else.
    let ct = env.ok(
        &writer,
        &[
            "encrypt",
            "--key-id",
            "alias/app-data",
            "--plaintext",
            "secret",
            "--encryption-context",
            ctx,
        ],
    );
    use base64::Engine;
    let blob = base64::engine::general_purpose::STANDARD
        .decode(ct["CiphertextBlob"].as_str().unwrap())
        .unwrap();
    std::fs::write(env.path("ct.bin"), &blob).unwrap();
    env.ok(
        &writer,
        &[
            "generate-data-key",
            "--key-id",
            &key,
            "--key-spec",
            "AES_256",
            "--encryption-context",
            ctx,
        ],
    );
    assert_aws_error(
        &env.run(
            &writer,
            &[
                "decrypt",
                "--ciphertext-blob",
                "fileb://ct.bin",
                "--encryption-context",
                ctx,
            ],
        ),
        "AccessDeniedException",
        "Decrypt",
    );
    assert_aws_error(
        &env.run(&writer, &["create-key"]),
        "AccessDeniedException",
        "CreateKey",
    );

    // Reader: decrypt only with the right context.
    let out = env.ok(
        &reader,
        &[
            "decrypt",
            "--ciphertext-blob",
            "fileb://ct.bin",
            "--encryption-context",
            ctx,
        ],
    );
    assert_eq!(out["Plaintext"], "c2VjcmV0");
    assert_aws_error(
        &env.run(&reader, &["decrypt", "--ciphertext-blob", "fileb://ct.bin"]),
        "AccessDeniedException",
        "Decrypt",
    );
    assert_aws_error(
        &env.run(
            &reader,
            &[
                "encrypt",
                "--key-id",
                &key,
                "--plaintext",
                "x",
                "--encryption-context",
                ctx,
            ],
        ),
        "AccessDeniedException",
        "Encrypt",
    );

    // Rotator: re-encrypt only; never plaintext.
    let re = env.ok(
        &rotator,
        &[
            "re-encrypt",
            "--ciphertext-blob",
            "fileb://ct.bin",
            "--source-encryption-context",
            ctx,
            "--destination-key-id",
            &key2,
            "--destination-encryption-context",
            ctx,
        ],
    );
    assert!(re.get("Plaintext").is_none());
    assert!(re["KeyId"].as_str().unwrap().ends_with(&key2));
    let blob2 = base64::engine::general_purpose::STANDARD
        .decode(re["CiphertextBlob"].as_str().unwrap())
        .unwrap();
    std::fs::write(env.path("ct2.bin"), &blob2).unwrap();
    assert_aws_error(
        &env.run(
            &rotator,
            &[
                "decrypt",
                "--ciphertext-blob",
                "fileb://ct2.bin",
                "--encryption-context",
                ctx,
            ],
        ),
        "AccessDeniedException",
        "Decrypt",
    );
    assert_aws_error(
        &env.run(
            &rotator,
            &[
                "generate-data-key",
                "--key-id",
                &key,
                "--key-spec",
                "AES_256",
            ],
        ),
        "AccessDeniedException",
        "GenerateDataKey",
    );
    let out = env.ok(
        &reader,
        &[
            "decrypt",
            "--ciphertext-blob",
            "fileb://ct2.bin",
            "--encryption-context",
            ctx,
        ],
    );
    assert_eq!(out["Plaintext"], "c2VjcmV0");

    // Key admin: lifecycle, no cryptography.
    let made = env.ok(&admin, &["create-key", "--description", "by admin"]);
    let made = made["KeyMetadata"]["KeyId"].as_str().unwrap().to_string();
    env.ok(&admin, &["enable-key-rotation", "--key-id", &made]);
    env.ok(&admin, &["rotate-key-on-demand", "--key-id", &made]);
    assert_aws_error(
        &env.run(&admin, &["encrypt", "--key-id", &made, "--plaintext", "x"]),
        "AccessDeniedException",
        "Encrypt",
    );
    assert_aws_error(
        &env.run(
            &admin,
            &[
                "decrypt",
                "--ciphertext-blob",
                "fileb://ct.bin",
                "--encryption-context",
                ctx,
            ],
        ),
        "AccessDeniedException",
        "Decrypt",
    );

    // Auditor: describe, list and read the audit trail; nothing else.
    env.ok(&auditor, &["describe-key", "--key-id", &key]);
    env.ok(&auditor, &["list-keys"]);
    let out = env.run(&auditor, &["audit", "verify"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_aws_error(
        &env.run(&auditor, &["create-key"]),
        "AccessDeniedException",
        "CreateKey",
    );
    assert_aws_error(
        &env.run(&auditor, &["encrypt", "--key-id", &key, "--plaintext", "x"]),
        "AccessDeniedException",
        "Encrypt",
    );
    let out = env.run(&writer, &["audit", "verify"]);
    assert_aws_error(&out, "AccessDeniedException", "ReadAuditTrail");
}

#[test]
fn rotation_keeps_old_versions_for_decrypt() {
    let env = Env::new();
    let o = &env.owner;
    let key = env.key("rotating");

    let ct1 = env.run(
        o,
        &[
            "encrypt",
            "--key-id",
            &key,
            "--plaintext",
            "one",
            "--output",
            "text",
            "--query",
            "CiphertextBlob",
        ],
    );
    use base64::Engine;
    let blob1 = base64::engine::general_purpose::STANDARD
        .decode(stdout(&ct1).trim())
        .unwrap();
    env.ok(o, &["rotate-key-on-demand", "--key-id", &key]);
    let rotations = env.ok(o, &["list-key-rotations", "--key-id", &key]);
    assert_eq!(rotations["Rotations"].as_array().unwrap().len(), 1);
    assert_eq!(rotations["Rotations"][0]["RotationType"], "ON_DEMAND");
    let ct2 = env.run(
        o,
        &[
            "encrypt",
            "--key-id",
            &key,
            "--plaintext",
            "two",
            "--output",
            "text",
            "--query",
            "CiphertextBlob",
        ],
    );
    let blob2 = base64::engine::general_purpose::STANDARD
        .decode(stdout(&ct2).trim())
        .unwrap();
    assert_eq!(u32::from_be_bytes(blob1[18..22].try_into().unwrap()), 1);
    assert_eq!(u32::from_be_bytes(blob2[18..22].try_into().unwrap()), 2);
    std::fs::write(env.path("1.bin"), &blob1).unwrap();
    let out = env.ok(o, &["decrypt", "--ciphertext-blob", "fileb://1.bin"]);
    assert_eq!(out["Plaintext"], "b25l");
    let status = env.ok(
        o,
        &[
            "enable-key-rotation",
            "--key-id",
            &key,
            "--rotation-period-in-days",
            "90",
        ],
    );
    assert_eq!(status, serde_json::Value::Null);
    let st = env.ok(o, &["get-key-rotation-status", "--key-id", &key]);
    assert_eq!(st["KeyRotationEnabled"], true);
    assert_eq!(st["RotationPeriodInDays"], 90);
    assert_aws_error(
        &env.run(
            o,
            &[
                "enable-key-rotation",
                "--key-id",
                &key,
                "--rotation-period-in-days",
                "89",
            ],
        ),
        "ValidationException",
        "EnableKeyRotation",
    );
    let d = env.ok(o, &["describe-key", "--key-id", &key]);
    assert_eq!(d["KeyMetadata"]["KeyMaterialVersions"], 2);
    assert!(
        d["KeyMetadata"]["LastUsedDate"].as_f64().is_some(),
        "DescribeKey shows the last use"
    );
}

#[test]
fn audit_trail_holds_no_secrets_and_detects_tampering() {
    let env = Env::new();
    let o = &env.owner;
    let key = env.key("audit");
    let plaintext = "PLAINTEXT-MARKER-7f3a9c";
    let out = env.ok(
        o,
        &[
            "encrypt",
            "--key-id",
            &key,
            "--plaintext",
            plaintext,
            "--encryption-context",
            "file=a.txt",
        ],
    );
    let ct = out["CiphertextBlob"].as_str().unwrap().to_string();
    let dk = env.ok(
        o,
        &[
            "generate-data-key",
            "--key-id",
            &key,
            "--key-spec",
            "AES_256",
        ],
    );
    let dk_plain = dk["Plaintext"].as_str().unwrap().to_string();
    let writer = env.principal("app-writer");
    env.run(&writer, &["list-keys"]);
    let log = env.audit_log();
    assert!(!log.contains(plaintext));
    assert!(
        !log.contains("UExBSU5URVhULU1BUktFUi03ZjNhOWM"),
        "base64 of the plaintext"
    );
    assert!(!log.contains(&dk_plain));
    assert!(!log.contains(&ct));
    assert!(!log.contains(&env.owner.secret));
    assert!(!log.contains(&writer.secret));
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let enc = lines.iter().find(|r| r["operation"] == "Encrypt").unwrap();
    assert_eq!(enc["decision"], "Allow");
    assert_eq!(enc["outcome"], "Success");
    assert_eq!(enc["encryption_context"]["file"], "a.txt");
    assert_eq!(enc["keys"][0]["version"], 1);
    let denied = lines
        .iter()
        .find(|r| r["operation"] == "ListKeys" && r["principal"] == "app-writer")
        .unwrap();
    assert_eq!(denied["decision"], "Deny");
    assert_eq!(denied["outcome"], "AccessDeniedException");
    assert_eq!(denied["decided_by"], "implicit deny: no statement allows");

    let out = env.run(o, &["audit", "verify"]);
    assert!(out.status.success());
    let n = lines.len(); // reading the trail is recorded only after it was verified
    assert!(
        stdout(&out).starts_with(&format!("ok: {n} records")),
        "{}",
        stdout(&out)
    );
    let report = env.ok(o, &["audit", "report", "--principal", "app-writer"]);
    let text = report.to_string();
    assert!(text.contains("ListKeys"), "{text}");

    // Change one record: verification fails and names it.
    let path = env.home.join("audit.log");
    let tampered = log.replacen(
        "\"principal\":\"app-writer\"",
        "\"principal\":\"app-writex\"",
        1,
    );
    std::fs::write(&path, tampered).unwrap();
    let out = env
        .command(o)
        .args(["audit", "verify", "--file"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("FAILED verification"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn bad_policy_file_refuses_to_run_naming_file_and_line() {
    let env = Env::new();
    let dir = env.path("bad-policies");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(
        dir.join("typo.toml"),
        "[[statement]]\neffect = \"allow\"\nprincipals = [\"x\"]\nactions = [\"kms:Decrypy\"]\nresources = [\"*\"]\n",
    )
    .unwrap();
    let out = env
        .command(&env.owner)
        .env("REWRAP_POLICIES", &dir)
        .args(["list-keys"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(253));
    let err = stderr(&out);
    assert!(err.contains("typo.toml"), "{err}");
    assert!(err.contains("line 4"), "{err}");
    assert!(err.contains("kms:Decrypy"), "{err}");
}

#[test]
fn policy_check_explains_the_decision() {
    let env = Env::new();
    let key = env.key("explained");
    let out = env.run(
        &env.owner,
        &[
            "policy",
            "check",
            "--principal",
            "storage-rotator",
            "--action",
            "kms:Decrypt",
            "--key",
            &key,
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["Decision"], "deny");
    assert_eq!(
        v["DecidedBy"],
        "storage-rotator.toml#1 (rotator-no-plaintext)"
    );
    let out = env.run(
        &env.owner,
        &[
            "policy",
            "check",
            "--principal",
            "app-reader",
            "--action",
            "kms:Decrypt",
            "--key",
            &key,
            "--context",
            "purpose=app-data",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["DecidedBy"], "app-reader.toml#1 (reader-decrypt)");
}

#[test]
fn tampered_keystore_is_reported_and_left_alone() {
    let env = Env::new();
    env.key("k");
    let path = env.home.join("keystore.sealed");
    let mut bytes = std::fs::read(&path).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    std::fs::write(&path, &bytes).unwrap();
    let out = env.run(&env.owner, &["create-key"]);
    assert_eq!(out.status.code(), Some(253));
    assert!(
        stderr(&out).contains("is corrupt or was tampered with (authentication failed)"),
        "{}",
        stderr(&out)
    );
    assert_eq!(std::fs::read(&path).unwrap(), bytes);
}

#[test]
fn concurrent_processes_never_lose_updates() {
    let env = Env::new();
    let children: Vec<_> = (0..4)
        .map(|_| {
            env.command(&env.owner)
                .args(["create-key", "--description", "parallel"])
                .stdout(std::process::Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    let more: Vec<_> = (0..4)
        .map(|i| {
            env.command(&env.owner)
                .args(["create-principal", "--principal-name", &format!("p{i}")])
                .stdout(std::process::Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    for mut c in children.into_iter().chain(more) {
        assert!(c.wait().unwrap().success());
    }
    let keys = env.ok(&env.owner, &["list-keys"]);
    assert_eq!(keys["Keys"].as_array().unwrap().len(), 4);
    let principals = env.ok(&env.owner, &["list-principals"]);
    assert_eq!(principals["Principals"].as_array().unwrap().len(), 5);
}

#[test]
fn keystore_survives_kill_9_during_updates() {
    let env = Env::new();
    let mut rng_state = 0x2545_F491_4F6C_DD1D_u64;
    for round in 0..12 {
        let mut child = env
            .command(&env.owner)
            .args(["create-key", "--description", "crash"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        rng_state ^= rng_state << 13;
        rng_state ^= rng_state >> 7;
        rng_state ^= rng_state << 17;
        std::thread::sleep(std::time::Duration::from_micros(rng_state % 20_000));
        let _ = child.kill();
        let _ = child.wait();
        let out = env.run(&env.owner, &["list-keys"]);
        assert!(out.status.success(), "round {round}: {}", stderr(&out));
    }
    let out = env.run(&env.owner, &["audit", "verify"]);
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn principals_are_managed_by_administrators_only() {
    let env = Env::new();
    let admin = env.principal("key-admin");
    let writer = env.principal("app-writer");
    assert_aws_error(
        &env.run(&writer, &["create-principal", "--principal-name", "evil"]),
        "AccessDeniedException",
        "CreatePrincipal",
    );
    // The key admin may make principals that the policies give nothing...
    let made = env.ok(&admin, &["create-principal", "--principal-name", "ops-2"]);
    assert_eq!(made["PrincipalName"], "ops-2");
    env.ok(&admin, &["create-access-key", "--principal-name", "ops-2"]);
    assert_aws_error(
        &env.run(&admin, &["create-access-key", "--principal-name", "ops-2"]),
        "LimitExceededException",
        "CreateAccessKey",
    );
    assert_aws_error(
        &env.run(&admin, &["create-principal", "--principal-name", "ops-2"]),
        "AlreadyExistsException",
        "CreatePrincipal",
    );
    // ...but never credentials that would give it rights it lacks (decrypt).
    let out = env.run(
        &admin,
        &["create-principal", "--principal-name", "app-reader"],
    );
    assert_aws_error(&out, "AccessDeniedException", "CreatePrincipal");
    assert!(stderr(&out).contains("may not obtain credentials of 'app-reader'"));
    let reader = env.principal("app-reader");
    assert_aws_error(
        &env.run(
            &admin,
            &["create-access-key", "--principal-name", "app-reader"],
        ),
        "AccessDeniedException",
        "CreateAccessKey",
    );
    let listed = env.ok(&admin, &["list-principals"]);
    let names: Vec<&str> = listed["Principals"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["PrincipalName"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["app-reader", "app-writer", "key-admin", "ops-2", "owner"]
    );
    assert_eq!(reader.name, "app-reader");
    assert_aws_error(
        &env.run(
            &admin,
            &["delete-principal", "--principal-name", "key-admin"],
        ),
        "ValidationException",
        "DeletePrincipal",
    );
    // Deleting needs the same coverage as creating (issue 11 finding 2).
    assert_aws_error(
        &env.run(
            &admin,
            &["delete-principal", "--principal-name", "app-writer"],
        ),
        "AccessDeniedException",
        "DeletePrincipal",
    );
    env.ok(
        &env.owner,
        &["delete-principal", "--principal-name", "app-writer"],
    );
    let out = env.run(&writer, &["list-keys"]);
    assert_eq!(
        out.status.code(),
        Some(253),
        "a deleted principal's key stops working"
    );
}

/// A credentials file with one profile per principal given.
fn credentials_file(env: &Env, principals: &[&Creds]) -> std::path::PathBuf {
    let path = env.path("credentials");
    let text: Vec<String> = principals
        .iter()
        .map(|c| {
            format!(
                "[{}]\naws_access_key_id = {}\naws_secret_access_key = {}\n",
                c.name, c.id, c.secret
            )
        })
        .collect();
    std::fs::write(&path, text.join("\n")).unwrap();
    path
}

/// Issue 10 observation 6: with the owner's `REWRAP_*` variables exported,
/// `--profile storage-rotator` acted as the owner. An explicit profile wins,
/// as in the AWS CLI; `AWS_PROFILE` does not win over key variables.
#[test]
fn an_explicit_profile_wins_over_the_owners_key_variables() {
    let env = Env::new();
    let key = env.key("profiles");
    let rotator = env.principal("storage-rotator");
    let creds = credentials_file(&env, &[&rotator]);
    let v = env.ok(
        &env.owner,
        &["encrypt", "--key-id", &key, "--plaintext", "secret"],
    );
    let blob = env.path("blob.bin");
    {
        use base64::Engine as _;
        let b64 = v["CiphertextBlob"].as_str().unwrap();
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap();
        std::fs::write(&blob, bytes).unwrap();
    }
    let blob_arg = format!("fileb://{}", blob.display());
    // The owner's variables stay exported in every command below.
    let as_owner_env = |args: &[&str]| {
        env.command(&env.owner)
            .env("AWS_SHARED_CREDENTIALS_FILE", &creds)
            .args(args)
            .output()
            .unwrap()
    };
    let out = as_owner_env(&[
        "--profile",
        "storage-rotator",
        "decrypt",
        "--ciphertext-blob",
        &blob_arg,
    ]);
    assert_eq!(out.status.code(), Some(254), "{}", stderr(&out));
    assert_eq!(
        stderr(&out),
        format!(
            "\nAn error occurred (AccessDeniedException) when calling the Decrypt operation: \
             principal 'storage-rotator' is not authorized to perform kms:Decrypt on resource \
             arn:aws:kms:us-east-1:111122223333:key/{key}\n"
        )
    );
    // Without --profile the variables act (the owner may decrypt).
    let out = as_owner_env(&["decrypt", "--ciphertext-blob", &blob_arg]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    // whoami says who and from where.
    let who = json(&as_owner_env(&["--profile", "storage-rotator", "whoami"]));
    assert_eq!(
        who,
        serde_json::json!({
            "Principal": "storage-rotator",
            "Arn": "arn:aws:iam::111122223333:user/storage-rotator",
            "Account": "111122223333",
            "AccessKeyId": rotator.id,
            "Credentials": format!("--profile storage-rotator in {}", creds.display()),
            "Keystore": env.home.display().to_string(),
        })
    );
    let out = env
        .command(&env.owner)
        .env("AWS_SHARED_CREDENTIALS_FILE", &creds)
        .env("AWS_PROFILE", "storage-rotator")
        .args([
            "whoami",
            "--query",
            "[Principal, Credentials]",
            "--output",
            "text",
        ])
        .output()
        .unwrap();
    assert_eq!(
        stdout(&out),
        "owner\tenvironment variables REWRAP_ACCESS_KEY_ID and REWRAP_SECRET_ACCESS_KEY\n"
    );
    let out = env
        .command(&env.owner)
        .env_remove("REWRAP_ACCESS_KEY_ID")
        .env_remove("REWRAP_SECRET_ACCESS_KEY")
        .env("AWS_SHARED_CREDENTIALS_FILE", &creds)
        .env("AWS_PROFILE", "storage-rotator")
        .args([
            "whoami",
            "--query",
            "[Principal, Credentials]",
            "--output",
            "text",
        ])
        .output()
        .unwrap();
    assert_eq!(
        stdout(&out),
        format!(
            "storage-rotator\tAWS_PROFILE=storage-rotator in {}\n",
            creds.display()
        )
    );
    // A named profile that is not in the file is refused, not replaced by the variables.
    let out = as_owner_env(&["--profile", "nobody", "whoami"]);
    assert_eq!(out.status.code(), Some(253));
    assert_eq!(
        stderr(&out),
        format!(
            "rewrap: Unable to locate credentials: profile [nobody] in {}: no such profile\n",
            creds.display()
        )
    );
}

/// `whoami` against a server: the principal is what the server says
/// (GetCallerIdentity: no policy right needed, audited as allowed).
#[test]
fn whoami_against_a_server_reports_what_the_server_says() {
    let env = Env::new();
    let rotator = env.principal("storage-rotator");
    let auditor = env.principal("auditor");
    let creds = credentials_file(&env, &[&rotator, &auditor]);
    let server = env.serve();
    for who in [&rotator, &auditor] {
        let out = env
            .command(&env.owner)
            .env("AWS_SHARED_CREDENTIALS_FILE", &creds)
            .args([
                "--endpoint-url",
                &server.url,
                "--profile",
                &who.name,
                "whoami",
            ])
            .output()
            .unwrap();
        assert_eq!(
            json(&out),
            serde_json::json!({
                "Principal": who.name,
                "Arn": format!("arn:aws:iam::111122223333:user/{}", who.name),
                "Account": "111122223333",
                "AccessKeyId": who.id,
                "Credentials": format!("--profile {} in {}", who.name, creds.display()),
                "Endpoint": server.url,
            })
        );
    }
    // A wrong secret is refused by the server: credentials, 253.
    let wrong = Creds {
        secret: "not-the-secret".into(),
        ..rotator.clone()
    };
    let out = env.run(&wrong, &["--endpoint-url", &server.url, "whoami"]);
    assert_eq!(out.status.code(), Some(253), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(
            "An error occurred (InvalidSignatureException) when calling the GetCallerIdentity operation: "
        ),
        "{}",
        stderr(&out)
    );
    drop(server);
    let records: Vec<serde_json::Value> = env
        .audit_log()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|r: &serde_json::Value| r["operation"] == "GetCallerIdentity")
        .collect();
    let seen: Vec<(&str, &str, &str, &str)> = records
        .iter()
        .map(|r| {
            (
                r["principal"].as_str().unwrap(),
                r["decision"].as_str().unwrap(),
                r["decided_by"].as_str().unwrap(),
                r["outcome"].as_str().unwrap(),
            )
        })
        .collect();
    let by = "authenticated caller (no policy action)";
    assert_eq!(
        seen,
        [
            ("storage-rotator", "Allow", by, "Success"),
            ("auditor", "Allow", by, "Success"),
            // The wrong secret is refused before any operation runs, and
            // recorded (issue 11 finding 6).
            (
                "storage-rotator",
                "Deny",
                "request refused before authorization",
                "InvalidSignatureException"
            ),
        ]
    );
}

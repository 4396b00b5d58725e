//! Every command that takes a key accepts its alias name and alias ARN, and
//! an unknown alias is `NotFoundException` (exit 254; 2 for batch
//! commands), never an empty result (issue 14: `audit report --key
//! alias/app-data-2027` printed an empty table and exited 0).
//!
//! One table: each key-taking flag of the CLI (`--key-id`, `--target-key-id`,
//! `--destination-key-id`, `--source-key-id`, `--destination-key`, `--to`,
//! `--from`, `--stale-against`; `--target-key-id` of CreateAlias and
//! UpdateAlias refuses aliases, as in AWS) with `@`, replaced once by the alias name
//! and once by the alias ARN, then by an unknown alias. `$` stands for a
//! second key's alias (the one disabled and scheduled for deletion), `%`
//! for the pass number (files a pass creates).

mod support;

use support::cli::{stderr, stdout, Env};

const ALIAS: &str = "alias/app-data-2027";

/// One key-taking command line; `@` stands for the key name.
struct Row {
    args: &'static [&'static str],
    /// The exit code for an unknown alias.
    unknown: i32,
    /// The operation named in the unknown alias's error message.
    operation: &'static str,
}

const fn row(args: &'static [&'static str], unknown: i32, operation: &'static str) -> Row {
    Row {
        args,
        unknown,
        operation,
    }
}

const ROWS: &[Row] = &[
    row(&["describe-key", "--key-id", "@"], 254, "DescribeKey"),
    row(
        &[
            "update-key-description",
            "--key-id",
            "@",
            "--description",
            "d",
        ],
        254,
        "UpdateKeyDescription",
    ),
    row(&["enable-key", "--key-id", "@"], 254, "EnableKey"),
    row(&["disable-key", "--key-id", "$"], 254, "DisableKey"),
    row(
        &[
            "schedule-key-deletion",
            "--key-id",
            "$",
            "--pending-window-in-days",
            "7",
        ],
        254,
        "ScheduleKeyDeletion",
    ),
    row(
        &["cancel-key-deletion", "--key-id", "$"],
        254,
        "CancelKeyDeletion",
    ),
    row(&["enable-key", "--key-id", "$"], 254, "EnableKey"),
    row(
        &["enable-key-rotation", "--key-id", "@"],
        254,
        "EnableKeyRotation",
    ),
    row(
        &["disable-key-rotation", "--key-id", "@"],
        254,
        "DisableKeyRotation",
    ),
    row(
        &["get-key-rotation-status", "--key-id", "@"],
        254,
        "GetKeyRotationStatus",
    ),
    row(
        &["rotate-key-on-demand", "--key-id", "@"],
        254,
        "RotateKeyOnDemand",
    ),
    row(
        &["list-key-rotations", "--key-id", "@"],
        254,
        "ListKeyRotations",
    ),
    row(&["get-key-policy", "--key-id", "@"], 254, "GetKeyPolicy"),
    row(
        &["list-key-policies", "--key-id", "@"],
        254,
        "ListKeyPolicies",
    ),
    row(&["list-aliases", "--key-id", "@"], 254, "ListAliases"),
    row(
        &["encrypt", "--key-id", "@", "--plaintext", "hello"],
        254,
        "Encrypt",
    ),
    row(
        &[
            "generate-data-key",
            "--key-id",
            "@",
            "--key-spec",
            "AES_256",
        ],
        254,
        "GenerateDataKey",
    ),
    row(
        &[
            "generate-data-key-without-plaintext",
            "--key-id",
            "@",
            "--key-spec",
            "AES_256",
        ],
        254,
        "GenerateDataKeyWithoutPlaintext",
    ),
    row(
        &[
            "decrypt",
            "--ciphertext-blob",
            "fileb://blob",
            "--key-id",
            "@",
        ],
        254,
        "Decrypt",
    ),
    row(
        &[
            "re-encrypt",
            "--ciphertext-blob",
            "fileb://blob",
            "--source-key-id",
            "@",
            "--destination-key-id",
            "@",
        ],
        254,
        "ReEncrypt",
    ),
    row(
        &[
            "encrypt-file",
            "--key-id",
            "@",
            "plain.txt",
            "-o",
            "out-%.rwp",
        ],
        254,
        "",
    ),
    row(
        &["decrypt-file", "--key-id", "@", "data/a.rwp", "-o", "-"],
        254,
        "",
    ),
    row(
        &[
            "policy",
            "check",
            "--principal",
            "owner",
            "--action",
            "kms:ReEncryptTo",
            "--key-id",
            "@",
            "--destination-key",
            "@",
        ],
        254,
        "CheckPolicy",
    ),
    row(&["audit", "report", "--key-id", "@"], 254, "DescribeKey"),
    row(&["policy", "report", "--key-id", "@"], 254, "CheckPolicy"),
    row(&["rotate", "--to", "@", "--from", "@", "data"], 2, ""),
    row(&["inventory", "--stale-against", "@", "data"], 2, ""),
    row(
        &["inventory", "--list", "--stale-against", "@", "data"],
        2,
        "",
    ),
];

/// The row's arguments with `@` and `$` replaced by `key` and `spare`, `%`
/// by `pass`.
fn with_key(args: &[&str], key: &str, spare: &str, pass: usize) -> Vec<String> {
    args.iter()
        .map(|a| match *a {
            "@" => key.to_string(),
            "$" => spare.to_string(),
            a => a.replace('%', &pass.to_string()),
        })
        .collect()
}

#[test]
fn every_key_flag_takes_alias_names_and_arns_and_refuses_unknown_aliases() {
    let env = Env::new();
    let o = &env.owner;
    let key = env.key("app data 2027");
    env.ok(
        o,
        &[
            "create-alias",
            "--alias-name",
            ALIAS,
            "--target-key-id",
            &key,
        ],
    );
    let spare = env.key("spare");
    env.ok(
        o,
        &[
            "create-alias",
            "--alias-name",
            "alias/spare",
            "--target-key-id",
            &spare,
        ],
    );
    let meta = env.ok(o, &["describe-key", "--key-id", &key]);
    let arn = meta["KeyMetadata"]["Arn"].as_str().unwrap().to_string();
    let alias_arn = arn.replace(&format!("key/{key}"), ALIAS);
    let region_account = arn.split(":key/").next().unwrap().to_string();
    std::fs::write(env.path("plain.txt"), b"plain").unwrap();
    std::fs::create_dir_all(env.path("data")).unwrap();
    env.ok(
        o,
        &[
            "encrypt-file",
            "--key-id",
            &key,
            "plain.txt",
            "-o",
            "data/a.rwp",
        ],
    );
    let blob = env.ok(o, &["encrypt", "--key-id", &key, "--plaintext", "x"]);
    let blob = base64_decode(blob["CiphertextBlob"].as_str().unwrap());
    std::fs::write(env.path("blob"), blob).unwrap();

    let spare_arn = alias_arn.replace(ALIAS, "alias/spare");
    let mut wrong = Vec::new();
    let known = [(ALIAS, "alias/spare"), (&alias_arn, &spare_arn)];
    for (pass, (name, spare)) in known.into_iter().enumerate() {
        for r in ROWS {
            let args = with_key(r.args, name, spare, pass);
            let out = env.command(o).args(&args).output().unwrap();
            if out.status.code() != Some(0) {
                wrong.push(format!(
                    "rewrap {}: want exit 0, got {:?}: {}",
                    args.join(" "),
                    out.status.code(),
                    stderr(&out)
                ));
            }
        }
    }
    let unknown = format!("{region_account}:alias/no-such-alias");
    for (pass, name) in ["alias/no-such-alias", unknown.as_str()]
        .into_iter()
        .enumerate()
    {
        for r in ROWS {
            let args = with_key(r.args, name, name, pass + 2);
            let out = env.command(o).args(&args).output().unwrap();
            let err = stderr(&out);
            let named = err.contains("NotFoundException")
                && (r.operation.is_empty()
                    || err.contains(&format!(
                        "An error occurred (NotFoundException) when calling the {} operation: ",
                        r.operation
                    )));
            let ok = out.status.code() == Some(r.unknown)
                && named
                && err.contains("no-such-alias")
                && stdout(&out).is_empty();
            if !ok {
                wrong.push(format!(
                    "rewrap {}: want exit {} and NotFoundException from {}, got {:?}\nstdout: {}\nstderr: {err}",
                    args.join(" "),
                    r.unknown,
                    r.operation,
                    out.status.code(),
                    stdout(&out)
                ));
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n\n"));

    // As in AWS KMS, an alias may not point at an alias: CreateAlias and
    // UpdateAlias take a key id or key ARN as TargetKeyId.
    for op in ["create-alias", "update-alias"] {
        let args = [op, "--alias-name", "alias/x", "--target-key-id", ALIAS];
        let out = env.run(o, &args);
        assert_eq!(out.status.code(), Some(254), "{}", stderr(&out));
        assert!(
            stderr(&out).contains("(ValidationException)")
                && stderr(&out).contains("TargetKeyId must be a key id or key ARN, not an alias"),
            "{}",
            stderr(&out)
        );
    }
}

/// The regression of issue 14: the report by alias has the key's rows,
/// exactly those of the report by key id.
#[test]
fn audit_report_by_alias_is_the_report_by_key_id() {
    let env = Env::new();
    let o = &env.owner;
    let key = env.key("k");
    let other = env.key("other");
    env.ok(
        o,
        &[
            "create-alias",
            "--alias-name",
            ALIAS,
            "--target-key-id",
            &key,
        ],
    );
    for _ in 0..3 {
        env.ok(o, &["encrypt", "--key-id", ALIAS, "--plaintext", "x"]);
    }
    env.ok(o, &["encrypt", "--key-id", &other, "--plaintext", "x"]);
    // The report by alias records its DescribeKey before it reads: the
    // report by id, made after it, sees the same records.
    let by_alias = env.ok(o, &["audit", "report", "--key-id", ALIAS]);
    let by_id = env.ok(o, &["audit", "report", "--key-id", &key]);
    let rows = by_alias["rows"].as_array().unwrap();
    let encrypts: Vec<u64> = rows
        .iter()
        .filter(|r| r["operation"] == "Encrypt")
        .map(|r| r["count"].as_u64().unwrap())
        .collect();
    assert_eq!(encrypts, vec![3]);
    assert!(rows
        .iter()
        .all(|r| r["key"].as_str().unwrap().ends_with(&key)));
    assert_eq!(by_alias["rows"], by_id["rows"]);
    assert_eq!(by_alias["key_aliases"].as_object().unwrap().len(), 1);

    // The table: the key id and its alias on one line, no ARN, 100 columns.
    let out = env.run(
        o,
        &["audit", "report", "--key-id", ALIAS, "--output", "text"],
    );
    let table = stdout(&out);
    assert!(
        table.lines().any(|l| l == format!("key {key}  {ALIAS}")),
        "{table}"
    );
    assert!(!table.contains("arn:aws:kms"), "{table}");
    assert!(table.lines().all(|l| l.chars().count() <= 100), "{table}");
}

fn base64_decode(text: &str) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .unwrap()
}

/// GetAuditReport itself (what `rewrap serve` answers, for clients that
/// send an alias) resolves an alias in the service: the key's rows, or
/// NotFoundException for an unknown alias.
#[test]
fn get_audit_report_resolves_aliases_in_the_service() {
    use rewrap::api::{AliasRequest, AuditReportRequest};
    use rewrap::error::ErrorCode;
    use rewrap::kms::Kms;
    let env = support::library::Env::new();
    let arn = env.key("k");
    env.key("other");
    env.owner
        .create_alias(&AliasRequest {
            alias_name: ALIAS.into(),
            target_key_id: arn.clone(),
        })
        .unwrap();
    let report = |key: &str| {
        env.owner.get_audit_report(&AuditReportRequest {
            key_id: Some(key.into()),
            ..Default::default()
        })
    };
    let rows = report(ALIAS).unwrap().rows;
    let ops: Vec<&str> = rows.iter().map(|r| r.operation.as_str()).collect();
    assert_eq!(ops, ["CreateAlias", "CreateKey"]);
    assert!(rows.iter().all(|r| r.key == arn));
    let e = report("alias/no-such-alias").unwrap_err();
    assert_eq!(e.code, ErrorCode::NotFound);
    assert!(e.message.contains("alias/no-such-alias"), "{}", e.message);
}

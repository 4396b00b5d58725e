//! `rewrap policy report`: effective permissions per key and principal,
//! from every policy file, against the shipped role policies and against
//! hand-written tricky ones (principal and resource globs, a deny that
//! overrides an allow, conditional allows and denies, a principal glob
//! matching several principals), as JSON, a table and CSV.

mod support;

use serde_json::Value;
use support::cli::{stderr, stdout, Creds, Env};

/// (principal, permission, access, actions, conditions, allowed_by, denied_by).
type Row = (
    String,
    String,
    String,
    Vec<String>,
    Vec<String>,
    Vec<String>,
    Vec<String>,
);

fn rows(report: &Value) -> Vec<Row> {
    let strings = |v: &Value| -> Vec<String> { serde_json::from_value(v.clone()).unwrap() };
    report["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["principal"].as_str().unwrap().to_string(),
                r["permission"].as_str().unwrap().to_string(),
                r["access"].as_str().unwrap().to_string(),
                strings(&r["actions"]),
                strings(&r["conditions"]),
                strings(&r["allowed_by"]),
                strings(&r["denied_by"]),
            )
        })
        .collect()
}

fn s(list: &[&str]) -> Vec<String> {
    list.iter().map(ToString::to_string).collect()
}

fn row(
    principal: &str,
    permission: &str,
    access: &str,
    actions: &[&str],
    conditions: &[&str],
    allowed_by: &[&str],
    denied_by: &[&str],
) -> Row {
    (
        principal.into(),
        permission.into(),
        access.into(),
        s(actions),
        s(conditions),
        s(allowed_by),
        s(denied_by),
    )
}

const ADMINISTER: &[&str] = &[
    "kms:CreateKey",
    "kms:DescribeKey",
    "kms:ListKeys",
    "kms:ListAliases",
    "kms:UpdateKeyDescription",
    "kms:EnableKey",
    "kms:DisableKey",
    "kms:ScheduleKeyDeletion",
    "kms:CancelKeyDeletion",
    "kms:CreateAlias",
    "kms:UpdateAlias",
    "kms:DeleteAlias",
    "kms:EnableKeyRotation",
    "kms:DisableKeyRotation",
    "kms:GetKeyRotationStatus",
    "kms:RotateKeyOnDemand",
    "kms:ListKeyRotations",
    "kms:GetKeyPolicy",
    "kms:ListKeyPolicies",
    "kms:CreatePrincipal",
    "kms:DeletePrincipal",
    "kms:ListPrincipals",
    "kms:CreateAccessKey",
    "kms:DeleteAccessKey",
    "rewrap:CheckPolicy",
    "kms:CreateCustomKeyStore",
    "kms:DescribeCustomKeyStores",
    "kms:ConnectCustomKeyStore",
    "kms:DisconnectCustomKeyStore",
    "kms:UpdateCustomKeyStore",
    "kms:DeleteCustomKeyStore",
    "kms:TagResource",
    "kms:UntagResource",
    "kms:ListResourceTags",
    "kms:CreateGrant",
    "kms:ListGrants",
    "kms:ListRetirableGrants",
    "kms:RetireGrant",
    "kms:RevokeGrant",
    "kms:GetParametersForImport",
    "kms:ImportKeyMaterial",
    "kms:DeleteImportedKeyMaterial",
];
/// The audit group's reads after `rewrap:CheckPolicy` (tags and grants).
const AUDIT_TAIL: &[&str] = &[
    "kms:ListResourceTags",
    "kms:ListGrants",
    "kms:ListRetirableGrants",
];
/// The sign group (the owner holds it all; `GetPublicKey` is in encrypt too).
const SIGN: &[&str] = &[
    "kms:Sign",
    "kms:Verify",
    "kms:GenerateMac",
    "kms:VerifyMac",
    "kms:GetPublicKey",
];
const AUDIT_READS: &[&str] = &[
    "kms:DescribeKey",
    "kms:ListKeys",
    "kms:ListAliases",
    "kms:GetKeyRotationStatus",
    "kms:ListKeyRotations",
    "kms:GetKeyPolicy",
    "kms:ListKeyPolicies",
];
const ENCRYPT: &[&str] = &[
    "kms:Encrypt",
    "kms:GenerateDataKey",
    "kms:GenerateDataKeyWithoutPlaintext",
    "kms:GenerateDataKeyPair",
    "kms:GenerateDataKeyPairWithoutPlaintext",
    "kms:GetPublicKey",
];
const OWNER: &str = "owner.toml#1 (owner-all)";

/// The owner's five rows: everything, from owner.toml.
fn owner_rows() -> Vec<Row> {
    let audit: Vec<&str> = AUDIT_READS
        .iter()
        .copied()
        .chain(["rewrap:ReadAuditTrail", "rewrap:CheckPolicy"])
        .chain(AUDIT_TAIL.iter().copied())
        .collect();
    vec![
        row(
            "owner",
            "administer",
            "allow",
            ADMINISTER,
            &[],
            &[OWNER],
            &[],
        ),
        row("owner", "encrypt", "allow", ENCRYPT, &[], &[OWNER], &[]),
        row(
            "owner",
            "decrypt",
            "allow",
            &["kms:Decrypt"],
            &[],
            &[OWNER],
            &[],
        ),
        row(
            "owner",
            "re-encrypt",
            "allow",
            &["kms:ReEncryptFrom", "kms:ReEncryptTo"],
            &[],
            &[OWNER],
            &[],
        ),
        row("owner", "audit", "allow", &audit, &[], &[OWNER], &[]),
        row("owner", "sign", "allow", SIGN, &[], &[OWNER], &[]),
    ]
}

fn roles(env: &Env) -> Vec<Creds> {
    [
        "app-reader",
        "app-writer",
        "auditor",
        "key-admin",
        "storage-rotator",
    ]
    .into_iter()
    .map(|p| env.principal(p))
    .collect()
}

#[test]
fn shipped_role_policies_give_exact_rows() {
    let env = Env::new();
    let o = &env.owner;
    let roles = roles(&env);
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
    let excluded = env.key("excluded");
    env.ok(
        o,
        &[
            "create-alias",
            "--alias-name",
            "alias/not-a-rotation-target/x",
            "--target-key-id",
            &excluded,
        ],
    );
    let auditor = &roles[2];
    let report = env.ok(
        auditor,
        &[
            "policy",
            "report",
            "--key-id",
            "alias/app-data",
            "--format",
            "json",
        ],
    );
    let arn = env.ok(o, &["describe-key", "--key-id", &key])["KeyMetadata"]["Arn"].clone();
    assert!(report["rows"]
        .as_array()
        .unwrap()
        .iter()
        .all(|r| r["key"] == arn));
    assert!(report["rows"]
        .as_array()
        .unwrap()
        .iter()
        .all(|r| r["aliases"] == serde_json::json!(["alias/app-data"])));

    let reader = "app-reader.toml#1 (reader-decrypt)";
    let writer = "app-writer.toml#1 (writer-encrypt)";
    let auditor_read = "auditor.toml#1 (auditor-read)";
    let admin = "key-admin.toml#1 (admin-lifecycle)";
    let no_plaintext = "storage-rotator.toml#1 (rotator-no-plaintext)";
    let no_context_change =
        "storage-rotator.toml#2 (rotator-no-context-change) when rewrap:ReEncryptSameContext = false";
    let reencrypt = "storage-rotator.toml#4 (rotator-reencrypt)";
    let describe = "storage-rotator.toml#5 (rotator-describe)";
    let auditor_admin: Vec<&str> = AUDIT_READS
        .iter()
        .copied()
        .chain(["rewrap:CheckPolicy"])
        .chain(AUDIT_TAIL.iter().copied())
        .collect();
    let auditor_all: Vec<&str> = AUDIT_READS
        .iter()
        .copied()
        .chain(["rewrap:ReadAuditTrail", "rewrap:CheckPolicy"])
        .chain(AUDIT_TAIL.iter().copied())
        .collect();
    let admin_audit = auditor_admin.clone();
    let mut want =
        vec![
        row(
            "app-reader",
            "decrypt",
            "conditional",
            &["kms:Decrypt"],
            &["app-reader.toml#1 (reader-decrypt): kms:EncryptionContext:purpose = \"app-data\""],
            &[reader],
            &[],
        ),
        row("app-writer", "administer", "partial", &["kms:DescribeKey"], &[], &[writer], &[]),
        row("app-writer", "encrypt", "allow", ENCRYPT, &[], &[writer], &[]),
        row("app-writer", "audit", "partial", &["kms:DescribeKey"], &[], &[writer], &[]),
        row("app-writer", "sign", "partial", &["kms:GetPublicKey"], &[], &[writer], &[]),
        row("auditor", "administer", "partial", &auditor_admin, &[], &[auditor_read], &[]),
        row("auditor", "audit", "allow", &auditor_all, &[], &[auditor_read], &[]),
        row("key-admin", "administer", "allow", ADMINISTER, &[], &[admin], &[]),
        row("key-admin", "audit", "partial", &admin_audit, &[], &[admin], &[]),
    ];
    want.extend(owner_rows());
    want.extend([
        row(
            "storage-rotator",
            "administer",
            "partial",
            &["kms:DescribeKey", "kms:ListAliases"],
            &[],
            &[describe],
            &[],
        ),
        row(
            "storage-rotator",
            "encrypt",
            "denied",
            &[],
            &[],
            &[],
            &[no_plaintext],
        ),
        row(
            "storage-rotator",
            "decrypt",
            "denied",
            &[],
            &[],
            &[],
            &[no_plaintext],
        ),
        row(
            "storage-rotator",
            "re-encrypt",
            "conditional",
            &["kms:ReEncryptFrom", "kms:ReEncryptTo"],
            &["storage-rotator.toml#4 (rotator-reencrypt): rewrap:ReEncryptSameContext = true"],
            &[reencrypt],
            &[no_context_change],
        ),
        row(
            "storage-rotator",
            "audit",
            "partial",
            &["kms:DescribeKey", "kms:ListAliases"],
            &[],
            &[describe],
            &[],
        ),
    ]);
    assert_eq!(rows(&report), want);

    // On a key under alias/not-a-rotation-target/, the unconditional deny
    // of ReEncryptTo overrides the rotator's allow: only ReEncryptFrom left.
    let report = env.ok(
        auditor,
        &[
            "policy", "report", "--key-id", &excluded, "--format", "json",
        ],
    );
    let rotator_reencrypt: Vec<Row> = rows(&report)
        .into_iter()
        .filter(|r| r.0 == "storage-rotator" && r.1 == "re-encrypt")
        .collect();
    assert_eq!(
        rotator_reencrypt,
        vec![row(
            "storage-rotator",
            "re-encrypt",
            "partial",
            &["kms:ReEncryptFrom"],
            &["storage-rotator.toml#4 (rotator-reencrypt): rewrap:ReEncryptSameContext = true"],
            &[reencrypt],
            &[
                no_context_change,
                "storage-rotator.toml#3 (rotator-no-excluded-target)"
            ],
        )]
    );

    // Every key: both keys' rows, in one report.
    let all = env.ok(auditor, &["policy", "report", "--format", "json"]);
    assert_eq!(all["rows"].as_array().unwrap().len(), 2 * want.len());

    // Only principals allowed rewrap:CheckPolicy may ask.
    let out = env.run(&roles[0], &["policy", "report"]);
    assert_eq!(out.status.code(), Some(254), "{}", stderr(&out));
    assert!(stderr(&out).contains("(AccessDeniedException) when calling the CheckPolicy operation"));
}

const TRICKY: &str = r#"
[[statement]]
sid = "apps-encrypt"
effect = "allow"
principals = ["app-*"]
actions = ["encrypt"]
resources = ["alias/team-*"]

[[statement]]
sid = "no-legacy"
effect = "deny"
principals = ["*"]
actions = ["kms:GenerateDataKey*"]
resources = ["alias/team-legacy"]

[[statement]]
sid = "ops-decrypt-ticketed"
effect = "allow"
principals = ["ops"]
actions = ["decrypt"]
resources = ["*"]
[statement.condition]
context_keys_required = ["ticket"]

[[statement]]
sid = "ops-no-prod"
effect = "deny"
principals = ["ops"]
actions = ["kms:Decrypt"]
resources = ["alias/team-prod"]
[statement.condition]
context_equals = { stage = "prod" }
"#;

#[test]
fn tricky_policies_globs_denies_and_conditions() {
    let env = Env::new();
    let o = &env.owner;
    for p in ["app-one", "app-two", "ops"] {
        env.principal(p);
    }
    let prod = env.key("prod");
    let legacy = env.key("legacy");
    let plain = env.key("plain");
    env.ok(
        o,
        &[
            "create-alias",
            "--alias-name",
            "alias/team-prod",
            "--target-key-id",
            &prod,
        ],
    );
    env.ok(
        o,
        &[
            "create-alias",
            "--alias-name",
            "alias/team-legacy",
            "--target-key-id",
            &legacy,
        ],
    );
    let dir = env.path("tricky");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("tricky.toml"), TRICKY).unwrap();
    let report = |key: &str, format: &str| {
        env.command(o)
            .env("REWRAP_POLICIES", &dir)
            .args(["policy", "report", "--key-id", key, "--format", format])
            .output()
            .unwrap()
    };
    let json = |key: &str| {
        let out = report(key, "json");
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        rows(&serde_json::from_slice(&out.stdout).unwrap())
    };
    let apps = "tricky.toml#1 (apps-encrypt)";
    let ops_allow = "tricky.toml#3 (ops-decrypt-ticketed)";
    let ops_condition =
        "tricky.toml#3 (ops-decrypt-ticketed): kms:EncryptionContextKeys includes \"ticket\"";
    let no_legacy = "tricky.toml#2 (no-legacy)";
    let ops_decrypt = |denied_by: &[&str]| {
        row(
            "ops",
            "decrypt",
            "conditional",
            &["kms:Decrypt"],
            &[ops_condition],
            &[ops_allow],
            denied_by,
        )
    };

    // The principal glob app-* gives both apps encrypt on alias/team-*;
    // the conditional deny on prod restricts ops' conditional decrypt.
    let mut want = vec![
        row("app-one", "encrypt", "allow", ENCRYPT, &[], &[apps], &[]),
        row(
            "app-one",
            "sign",
            "partial",
            &["kms:GetPublicKey"],
            &[],
            &[apps],
            &[],
        ),
        row("app-two", "encrypt", "allow", ENCRYPT, &[], &[apps], &[]),
        row(
            "app-two",
            "sign",
            "partial",
            &["kms:GetPublicKey"],
            &[],
            &[apps],
            &[],
        ),
        ops_decrypt(&["tricky.toml#4 (ops-no-prod) when kms:EncryptionContext:stage = \"prod\""]),
    ];
    want.extend(owner_rows());
    assert_eq!(json("alias/team-prod"), want);

    // The deny on GenerateDataKey* (principal "*") overrides every allow
    // of it (GenerateDataKeyPair* included) on alias/team-legacy: Encrypt and
    // GetPublicKey are left, even to the owner.
    let got = json("alias/team-legacy");
    let encrypt_rows: Vec<Row> = got.iter().filter(|r| r.1 == "encrypt").cloned().collect();
    assert_eq!(
        encrypt_rows,
        vec![
            row(
                "app-one",
                "encrypt",
                "partial",
                &["kms:Encrypt", "kms:GetPublicKey"],
                &[],
                &[apps],
                &[no_legacy]
            ),
            row(
                "app-two",
                "encrypt",
                "partial",
                &["kms:Encrypt", "kms:GetPublicKey"],
                &[],
                &[apps],
                &[no_legacy]
            ),
            row("ops", "encrypt", "denied", &[], &[], &[], &[no_legacy]),
            row(
                "owner",
                "encrypt",
                "partial",
                &["kms:Encrypt", "kms:GetPublicKey"],
                &[],
                &[OWNER],
                &[no_legacy]
            ),
        ]
    );
    assert!(got.contains(&ops_decrypt(&[])));

    // A key no resource glob names: the apps have nothing on it.
    let got = json(&plain);
    assert!(
        got.iter().all(|r| r.0 == "owner" || r.0 == "ops"),
        "{got:?}"
    );
    assert!(got.contains(&ops_decrypt(&[])));

    // CSV: a header, one line per row, fields with commas or quotes quoted.
    let out = report("alias/team-prod", "csv");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let csv = stdout(&out);
    let lines: Vec<&str> = csv.split("\r\n").filter(|l| !l.is_empty()).collect();
    assert_eq!(
        lines[0],
        "key,aliases,principal,permission,access,actions,conditions,allowed_by,denied_by"
    );
    assert_eq!(lines.len(), 1 + want.len());
    let ops = lines.iter().find(|l| l.contains(",ops,decrypt,")).unwrap();
    assert!(
        ops.ends_with(
            ",ops,decrypt,conditional,kms:Decrypt,\"tricky.toml#3 (ops-decrypt-ticketed): \
             kms:EncryptionContextKeys includes \"\"ticket\"\"\",tricky.toml#3 (ops-decrypt-ticketed),\
             \"tricky.toml#4 (ops-no-prod) when kms:EncryptionContext:stage = \"\"prod\"\"\""
        ),
        "{ops}"
    );

    // The table: one line per key, then one per row, aligned.
    let out = report("alias/team-prod", "table");
    let table = stdout(&out);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(
        lines[0].split_whitespace().collect::<Vec<_>>(),
        ["PRINCIPAL", "PERMISSION", "ACCESS", "DETAIL"]
    );
    assert_eq!(lines[1], format!("key {prod}  alias/team-prod"));
    assert_eq!(lines.len(), 2 + want.len());
    let detail = lines[0].find("DETAIL").unwrap();
    let ops_line = lines
        .iter()
        .find(|l| l.trim_start().starts_with("ops"))
        .unwrap();
    assert_eq!(
        &ops_line[detail..],
        "if tricky.toml#3 (ops-decrypt-ticketed): kms:EncryptionContextKeys includes \"ticket\"; \
         denied by tricky.toml#4 (ops-no-prod) when kms:EncryptionContext:stage = \"prod\""
    );
}

/// An explicit deny of decrypt for `grant-denied`: its grant must not beat it.
const DENY_DECRYPT: &str = r#"
[[statement]]
sid = "no-decrypt"
effect = "deny"
principals = ["grant-denied"]
actions = ["decrypt"]
resources = ["*"]
"#;

#[test]
fn grants_give_their_grantees_rows_named_after_the_grant() {
    let env = Env::new();
    let o = &env.owner;
    for p in ["grant-job", "grant-reader", "grant-denied"] {
        env.principal(p);
    }
    std::fs::write(env.home.join("policies").join("deny.toml"), DENY_DECRYPT).unwrap();
    let key = env.key("granted");
    let other = env.key("not granted");
    let grant = |grantee: &str, ops: &[&str], extra: &[&str]| {
        let mut args = vec![
            "create-grant",
            "--key-id",
            &key,
            "--grantee-principal",
            grantee,
        ];
        args.extend_from_slice(extra);
        args.push("--operations");
        args.extend_from_slice(ops);
        env.ok(o, &args)["GrantId"].as_str().unwrap().to_string()
    };
    let job = grant(
        "grant-job",
        &["ReEncryptFrom", "ReEncryptTo", "DescribeKey"],
        &[
            "--name",
            "nightly",
            "--constraints",
            r#"{"EncryptionContextSubset":{"purpose":"app-data"}}"#,
        ],
    );
    let reader = grant("grant-reader", &["Decrypt"], &[]);
    let denied = grant("grant-denied", &["Decrypt"], &[]);
    let report = |key: &str| {
        env.ok(
            o,
            &["policy", "report", "--key-id", key, "--format", "json"],
        )
    };
    let granted_rows = |report: &Value| -> Vec<Row> {
        rows(report)
            .into_iter()
            .filter(|r| r.0.starts_with("grant-"))
            .collect()
    };
    let job_label = format!("grant {job} (nightly)");
    let job_condition =
        format!("{job_label}: EncryptionContextSubset {{\"purpose\": \"app-data\"}}");
    let reader_label = format!("grant {reader}");
    let got = report(&key);
    assert_eq!(
        granted_rows(&got),
        vec![
            row(
                "grant-denied",
                "decrypt",
                "denied",
                &[],
                &[],
                &[],
                &["deny.toml#1 (no-decrypt)"]
            ),
            // Constraints bind the cryptographic operations only.
            row(
                "grant-job",
                "administer",
                "partial",
                &["kms:DescribeKey"],
                &[],
                &[&job_label],
                &[]
            ),
            row(
                "grant-job",
                "re-encrypt",
                "conditional",
                &["kms:ReEncryptFrom", "kms:ReEncryptTo"],
                &[&job_condition],
                &[&job_label],
                &[]
            ),
            row(
                "grant-job",
                "audit",
                "partial",
                &["kms:DescribeKey"],
                &[],
                &[&job_label],
                &[]
            ),
            row(
                "grant-reader",
                "decrypt",
                "allow",
                &["kms:Decrypt"],
                &[],
                &[&reader_label],
                &[]
            ),
        ]
    );
    // Every grant in force is listed beside the rows, by grant id.
    let arn = env.ok(o, &["describe-key", "--key-id", &key])["KeyMetadata"]["Arn"].clone();
    let mut want = vec![
        serde_json::json!({"key": arn, "grant_id": job, "name": "nightly", "grantee": "grant-job",
            "operations": ["ReEncryptFrom", "ReEncryptTo", "DescribeKey"],
            "constraints": "EncryptionContextSubset {\"purpose\": \"app-data\"}"}),
        serde_json::json!({"key": arn, "grant_id": reader, "name": null, "grantee": "grant-reader",
            "operations": ["Decrypt"], "constraints": null}),
        serde_json::json!({"key": arn, "grant_id": denied, "name": null, "grantee": "grant-denied",
            "operations": ["Decrypt"], "constraints": null}),
    ];
    want.sort_by(|a, b| a["grant_id"].as_str().cmp(&b["grant_id"].as_str()));
    assert_eq!(got["grants"], Value::Array(want.clone()));
    // Another key: no grant, so only the policy's deny is left.
    let got = report(&other);
    assert_eq!(
        granted_rows(&got),
        vec![row(
            "grant-denied",
            "decrypt",
            "denied",
            &[],
            &[],
            &[],
            &["deny.toml#1 (no-decrypt)"]
        )]
    );
    assert_eq!(got["grants"], serde_json::json!([]));
    // The table lists the grants below the key's rows.
    let out = env.run(
        o,
        &["policy", "report", "--key-id", &key, "--format", "table"],
    );
    let table = stdout(&out);
    let tail: Vec<&str> = table.lines().rev().take(3).collect();
    let want_lines: Vec<String> = want
        .iter()
        .map(|g| {
            let id = g["grant_id"].as_str().unwrap();
            if id == job {
                format!(
                    "  {job_label} to grant-job: ReEncryptFrom, ReEncryptTo, DescribeKey if \
                     EncryptionContextSubset {{\"purpose\": \"app-data\"}}"
                )
            } else {
                format!(
                    "  grant {id} to {}: Decrypt",
                    g["grantee"].as_str().unwrap()
                )
            }
        })
        .rev()
        .collect();
    assert_eq!(
        tail,
        want_lines.iter().map(String::as_str).collect::<Vec<_>>()
    );
    // A revoked grant gives nothing any more, and is not listed.
    env.ok(
        o,
        &["revoke-grant", "--key-id", &key, "--grant-id", &reader],
    );
    let got = report(&key);
    assert!(got["rows"]
        .as_array()
        .unwrap()
        .iter()
        .all(|r| r["principal"] != "grant-reader"));
    let listed: Vec<&str> = got["grants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["grantee"].as_str().unwrap())
        .collect();
    assert_eq!(listed.len(), 2);
    assert!(!listed.contains(&"grant-reader"), "{listed:?}");
}

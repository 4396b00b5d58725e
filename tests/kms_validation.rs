//! Request validation errors as AWS KMS gives them (issue 15): one table of
//! request -> HTTP status, `__type` and message prefix, sent through
//! `rewrap serve` signed like any SDK request, covering every operation's
//! required members; then the SigV4 refusals of a JSON-protocol service.

mod support;

use rewrap::api::Operation;
use rewrap::secret::Secret;
use rewrap::sigv4::{self, Credentials};
use std::io::{Read, Write};
use support::cli::{Creds, Env};

/// The answer to one request: HTTP status, `__type`, message.
#[derive(Debug)]
struct Answer {
    status: u16,
    kind: String,
    message: String,
}

/// Sends `body` to `op` signed with `who`'s key for `region` at `at`;
/// `edit` may change the signed headers before sending.
fn send(
    addr: &str,
    who: &Creds,
    op: &str,
    body: &str,
    region: &str,
    at: chrono::DateTime<chrono::Utc>,
    edit: impl FnOnce(&mut Vec<(String, String)>),
) -> Answer {
    let target = format!("TrentService.{op}");
    let base = [
        ("host", addr),
        ("content-type", "application/x-amz-json-1.1"),
        ("x-amz-target", target.as_str()),
    ];
    let parts = sigv4::RequestParts {
        method: "POST",
        path: "/",
        query: "",
        headers: &base,
    };
    let creds = Credentials {
        access_key_id: who.id.clone(),
        secret_access_key: Secret::from_slice(who.secret.as_bytes()),
        session_token: None,
    };
    let mut headers: Vec<(String, String)> = base
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect();
    for (n, v) in sigv4::sign(&parts, body.as_bytes(), &creds, region, "kms", at) {
        headers.push((n.to_string(), v));
    }
    edit(&mut headers);
    let mut request = format!(
        "POST / HTTP/1.1\r\ncontent-length: {}\r\nconnection: close\r\n",
        body.len()
    );
    for (n, v) in &headers {
        request.push_str(&format!("{n}: {v}\r\n"));
    }
    request.push_str("\r\n");
    request.push_str(body);
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let status = out[9..12].parse().unwrap();
    let json: serde_json::Value =
        serde_json::from_str(out.split("\r\n\r\n").nth(1).unwrap_or("")).unwrap_or_default();
    Answer {
        status,
        kind: json["__type"].as_str().unwrap_or_default().to_string(),
        message: json["message"].as_str().unwrap_or_default().to_string(),
    }
}

const NULL: &str = "failed to satisfy constraint: Member must not be null";

/// Operations without a required member: any well-formed body is valid.
const NO_REQUIRED_MEMBER: &[&str] = &["ListPrincipals", "GetCallerIdentity", "VerifyAuditTrail"];

#[test]
fn validation_errors_of_every_operation_as_aws_gives_them() {
    let env = Env::new();
    let key = env.key("validation");
    let server = env.serve();
    let addr = server.url.trim_start_matches("http://").to_string();
    let v1 = "1 validation error detected: ";
    let null = |member: &str| format!("{v1}Value null at '{member}' {NULL}");
    let empty = |member: &str| {
        format!("{v1}Value '' at '{member}' failed to satisfy constraint: Member must have length greater than or equal to 1")
    };
    let int = |member: &str, v: i64, word: &str, bound: i64| {
        format!("{v1}Value '{v}' at '{member}' failed to satisfy constraint: Member must have value {word} than or equal to {bound}")
    };
    let long_description = format!(r#"{{"Description": "{}"}}"#, "d".repeat(8193));
    let long_alias = format!(
        r#"{{"AliasName": "alias/{}", "TargetKeyId": "{key}"}}"#,
        "a".repeat(251)
    );
    let k = |body: &str| body.replace("KEY", &key);
    // (operation, request body, expected message prefix); every row is a
    // ValidationException with HTTP 400 and changes nothing.
    let rows: Vec<(&str, String, String)> = vec![
        ("CreateKey", long_description, format!("{v1}Value at 'description' failed to satisfy constraint: Member must have length less than or equal to 8192")),
        ("DescribeKey", "{}".into(), null("keyId")),
        ("DescribeKey", r#"{"KeyId": ""}"#.into(), empty("keyId")),
        ("ListKeys", r#"{"Limit": 0}"#.into(), int("limit", 0, "greater", 1)),
        ("ListKeys", r#"{"Limit": 1001}"#.into(), int("limit", 1001, "less", 1000)),
        ("UpdateKeyDescription", k(r#"{"KeyId": "KEY"}"#), null("description")),
        ("EnableKey", "{}".into(), null("keyId")),
        ("DisableKey", "{}".into(), null("keyId")),
        ("ScheduleKeyDeletion", k(r#"{"KeyId": "KEY", "PendingWindowInDays": 6}"#), int("pendingWindowInDays", 6, "greater", 7)),
        ("ScheduleKeyDeletion", k(r#"{"KeyId": "KEY", "PendingWindowInDays": 31}"#), int("pendingWindowInDays", 31, "less", 30)),
        ("CancelKeyDeletion", r#"{"KeyId": ""}"#.into(), empty("keyId")),
        ("CreateAlias", k(r#"{"AliasName": "noprefix", "TargetKeyId": "KEY"}"#), format!("{v1}Value 'noprefix' at 'aliasName' failed to satisfy constraint: Member must satisfy regular expression pattern")),
        ("CreateAlias", k(r#"{"AliasName": "alias/bad name", "TargetKeyId": "KEY"}"#), format!("{v1}Value 'alias/bad name' at 'aliasName'")),
        ("CreateAlias", long_alias, format!("{v1}Value at 'aliasName' failed to satisfy constraint: Member must have length less than or equal to 256")),
        ("CreateAlias", k(r#"{"TargetKeyId": "KEY"}"#), null("aliasName")),
        ("CreateAlias", r#"{"AliasName": "alias/x", "TargetKeyId": ""}"#.into(), empty("targetKeyId")),
        ("UpdateAlias", r#"{"AliasName": "alias/x", "TargetKeyId": ""}"#.into(), empty("targetKeyId")),
        ("CreateKey", r#"{"Origin": "ELSEWHERE"}"#.into(), format!("{v1}Value 'ELSEWHERE' at 'origin' failed to satisfy constraint: Member must satisfy enum value set: [AWS_KMS, EXTERNAL, AWS_CLOUDHSM, EXTERNAL_KEY_STORE]")),
        ("CreateKey", r#"{"KeySpec": "AES_512"}"#.into(), format!("{v1}Value 'AES_512' at 'keySpec' failed to satisfy constraint: Member must satisfy enum value set: [")),
        ("UpdateAlias", k(r#"{"AliasName": "alias/", "TargetKeyId": "KEY"}"#), format!("{v1}Value 'alias/' at 'aliasName'")),
        ("DeleteAlias", "{}".into(), null("aliasName")),
        ("ListAliases", r#"{"Limit": 0}"#.into(), int("limit", 0, "greater", 1)),
        ("EnableKeyRotation", k(r#"{"KeyId": "KEY", "RotationPeriodInDays": 89}"#), int("rotationPeriodInDays", 89, "greater", 90)),
        ("DisableKeyRotation", "{}".into(), null("keyId")),
        ("GetKeyRotationStatus", "{}".into(), null("keyId")),
        ("RotateKeyOnDemand", "{}".into(), null("keyId")),
        ("ListKeyRotations", "{}".into(), null("keyId")),
        ("Encrypt", k(r#"{"KeyId": "KEY"}"#), null("plaintext")),
        ("Encrypt", k(r#"{"KeyId": "KEY", "Plaintext": ""}"#), format!("{v1}Value at 'plaintext' failed to satisfy constraint: Member must have length greater than or equal to 1")),
        ("Encrypt", r#"{"Plaintext": "aGk="}"#.into(), null("keyId")),
        ("Decrypt", "{}".into(), null("ciphertextBlob")),
        ("ReEncrypt", r#"{"CiphertextBlob": "AAAA"}"#.into(), null("destinationKeyId")),
        ("ReEncrypt", r#"{"CiphertextBlob": "AAAA", "DestinationKeyId": ""}"#.into(), empty("destinationKeyId")),
        ("ReEncrypt", r#"{"CiphertextBlob": "AAAA", "DestinationKeyId": "", "SourceEncryptionAlgorithm": "RSAES_OAEP_SHA_256"}"#.into(), empty("destinationKeyId")),
        ("GenerateDataKey", "{}".into(), null("keyId")),
        ("GenerateDataKey", k(r#"{"KeyId": "KEY", "NumberOfBytes": 0}"#), int("numberOfBytes", 0, "greater", 1)),
        ("GenerateDataKeyWithoutPlaintext", k(r#"{"KeyId": "KEY", "NumberOfBytes": 1025}"#), int("numberOfBytes", 1025, "less", 1024)),
        ("GenerateRandom", r#"{"NumberOfBytes": 0}"#.into(), int("numberOfBytes", 0, "greater", 1)),
        ("GetKeyPolicy", "{}".into(), null("keyId")),
        ("ListKeyPolicies", "{}".into(), null("keyId")),
        ("CreatePrincipal", "{}".into(), null("principalName")),
        ("DeletePrincipal", "{}".into(), null("principalName")),
        ("CreateAccessKey", "{}".into(), null("principalName")),
        ("DeleteAccessKey", r#"{"PrincipalName": "owner"}"#.into(), null("accessKeyId")),
        ("CheckPolicy", r#"{"Action": "kms:Decrypt"}"#.into(), null("principalName")),
        ("GetAuditReport", r#"{"Limit": 0}"#.into(), int("limit", 0, "greater", 1)),
        ("TagResource", k(r#"{"KeyId": "KEY"}"#), null("tags")),
        ("TagResource", r#"{"KeyId": "", "Tags": []}"#.into(), empty("keyId")),
        ("TagResource", k(&format!(r#"{{"KeyId": "KEY", "Tags": [{{"TagKey": "a", "TagValue": ""}}, {{"TagKey": "{}", "TagValue": "x"}}]}}"#, "k".repeat(129))), format!("{v1}Value at 'tags.2.member.tagKey' failed to satisfy constraint: Member must have length less than or equal to 128")),
        ("TagResource", k(r#"{"KeyId": "KEY", "Tags": [{"TagKey": "", "TagValue": "x"}]}"#), empty("tags.1.member.tagKey")),
        ("CreateKey", format!(r#"{{"Tags": [{{"TagKey": "big", "TagValue": "{}"}}]}}"#, "v".repeat(257)), format!("{v1}Value at 'tags.1.member.tagValue' failed to satisfy constraint: Member must have length less than or equal to 256")),
        ("UntagResource", k(r#"{"KeyId": "KEY", "TagKeys": ["ok", ""]}"#), empty("tagKeys.2.member")),
        ("UntagResource", k(r#"{"KeyId": "KEY", "TagKeys": []}"#), format!("{v1}Value '[]' at 'tagKeys' failed to satisfy constraint: Member must have length greater than or equal to 1")),
        ("ListResourceTags", "{}".into(), null("keyId")),
        ("CreateGrant", k(r#"{"KeyId": "KEY", "Operations": ["Decrypt"]}"#), null("granteePrincipal")),
        ("CreateGrant", k(r#"{"KeyId": "KEY", "GranteePrincipal": "owner", "Operations": []}"#), format!("{v1}Value '[]' at 'operations'")),
        ("CreateGrant", k(r#"{"KeyId": "KEY", "GranteePrincipal": "owner", "Operations": ["Decrypt"], "Name": "a b"}"#), format!("{v1}Value 'a b' at 'name' failed to satisfy constraint: Member must satisfy regular expression pattern: ^[a-zA-Z0-9:/_-]+$")),
        ("ListGrants", "{}".into(), null("keyId")),
        ("ListRetirableGrants", "{}".into(), null("retiringPrincipal")),
        ("RetireGrant", r#"{"GrantToken": ""}"#.into(), empty("grantToken")),
        ("RevokeGrant", k(r#"{"KeyId": "KEY"}"#), null("grantId")),
        ("CreateCustomKeyStore", "{}".into(), null("customKeyStoreName")),
        ("DescribeCustomKeyStores", r#"{"Limit": 0}"#.into(), int("limit", 0, "greater", 1)),
        ("ConnectCustomKeyStore", "{}".into(), null("customKeyStoreId")),
        ("DisconnectCustomKeyStore", "{}".into(), null("customKeyStoreId")),
        ("UpdateCustomKeyStore", "{}".into(), null("customKeyStoreId")),
        ("DeleteCustomKeyStore", "{}".into(), null("customKeyStoreId")),
        ("Sign", "{}".into(), null("keyId")),
        ("Verify", "{}".into(), null("keyId")),
        ("GetPublicKey", "{}".into(), null("keyId")),
        ("GenerateMac", "{}".into(), null("keyId")),
        ("VerifyMac", "{}".into(), null("keyId")),
        ("GenerateDataKeyPair", "{}".into(), null("keyId")),
        ("GenerateDataKeyPairWithoutPlaintext", "{}".into(), null("keyId")),
        ("GetParametersForImport", "{}".into(), null("keyId")),
        ("ImportKeyMaterial", "{}".into(), null("keyId")),
        ("DeleteImportedKeyMaterial", "{}".into(), null("keyId")),
    ];
    let now = chrono::Utc::now();
    let mut wrong = Vec::new();
    for (op, body, prefix) in &rows {
        let a = send(&addr, &env.owner, op, body, "us-east-1", now, |_| {});
        if (a.status, a.kind.as_str()) != (400, "ValidationException")
            || !a.message.starts_with(prefix.as_str())
        {
            wrong.push(format!(
                "{op} {body:.80}: got {a:?}, want 400 ValidationException {prefix:?}"
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} rows differ:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
    // Every operation with a required member has a row.
    let missing: Vec<&str> = Operation::ALL
        .iter()
        .map(|op| op.name())
        .filter(|name| {
            !NO_REQUIRED_MEMBER.contains(name) && !rows.iter().any(|(op, _, _)| op == name)
        })
        .collect();
    assert_eq!(missing, Vec::<&str>::new(), "operations without a row");
    // Nothing was created or changed by the refused requests.
    let keys = env.ok(&env.owner, &["list-keys"]);
    assert_eq!(keys["Keys"].as_array().unwrap().len(), 1);
    let aliases = env.ok(&env.owner, &["list-aliases"]);
    assert_eq!(aliases["Aliases"], serde_json::json!([]));
    let state = env.ok(&env.owner, &["describe-key", "--key-id", &key]);
    assert_eq!(state["KeyMetadata"]["KeyState"], "Enabled");
    assert_eq!(state["KeyMetadata"]["Description"], "validation");
}

#[test]
fn sigv4_refusals_as_a_json_protocol_service_gives_them() {
    let env = Env::new();
    let server = env.serve();
    let addr = server.url.trim_start_matches("http://").to_string();
    let now = chrono::Utc::now();
    let ok = send(
        &addr,
        &env.owner,
        "ListKeys",
        "{}",
        "us-east-1",
        now,
        |_| {},
    );
    assert_eq!((ok.status, ok.kind.as_str()), (200, ""), "{ok:?}");
    let refusals = [
        (
            "no Signature part",
            send(&addr, &env.owner, "ListKeys", "{}", "us-east-1", now, |h| {
                for (n, v) in h.iter_mut() {
                    if n == "authorization" {
                        *v = v.split(", Signature=").next().unwrap().to_string();
                    }
                }
            }),
            "IncompleteSignatureException",
            "Authorization header requires Signature parameter".to_string(),
        ),
        (
            "signed 20 minutes ago",
            send(
                &addr,
                &env.owner,
                "ListKeys",
                "{}",
                "us-east-1",
                now - chrono::Duration::minutes(20),
                |_| {},
            ),
            "InvalidSignatureException",
            format!(
                "Signature expired: {} is now earlier than ",
                sigv4::amz_date(now - chrono::Duration::minutes(20))
            ),
        ),
        (
            "signed 20 minutes ahead",
            send(
                &addr,
                &env.owner,
                "ListKeys",
                "{}",
                "us-east-1",
                now + chrono::Duration::minutes(20),
                |_| {},
            ),
            "InvalidSignatureException",
            format!(
                "Signature not yet current: {} is still later than ",
                sigv4::amz_date(now + chrono::Duration::minutes(20))
            ),
        ),
        (
            "scoped to another region",
            send(
                &addr,
                &env.owner,
                "ListKeys",
                "{}",
                "eu-west-1",
                now,
                |_| {},
            ),
            "InvalidSignatureException",
            "Credential should be scoped to a valid region: 'us-east-1', not 'eu-west-1'"
                .to_string(),
        ),
    ];
    for (what, answer, kind, prefix) in refusals {
        assert_eq!(
            (answer.status, answer.kind.as_str()),
            (400, kind),
            "{what}: {answer:?}"
        );
        assert!(
            answer.message.starts_with(&prefix),
            "{what}: {answer:?}, want {prefix:?}"
        );
    }
    // Each refusal is on record, none ran.
    let audit = env.audit_log();
    let outcomes: Vec<String> = audit
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["outcome"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(
        outcomes,
        [
            "Success",
            "IncompleteSignatureException",
            "InvalidSignatureException",
            "InvalidSignatureException",
            "InvalidSignatureException"
        ]
    );
}

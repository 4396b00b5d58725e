//! `rewrap serve` end to end: the real binary on 127.0.0.1:0, driven by the
//! AWS CLI and boto3 from the test virtual environment, by rewrap's own
//! remote client, and by raw HTTP for the refusals.
//!
//! The Python tools come from `REWRAP_TEST_VENV` (set by `scripts/test`; else
//! `.venv` in the crate). A test whose tool is missing fails and says how to
//! install it: it never skips.

mod support;

use rewrap::api::*;
use rewrap::client::RemoteKms;
use rewrap::error::ErrorCode;
use rewrap::kms::Kms;
use rewrap::secret::Secret;
use rewrap::sigv4::{self, Credentials};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};
use support::cli::Server;

const BIN: &str = env!("CARGO_BIN_EXE_rewrap");

fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The virtual environment with awscli, boto3 and moto; panics with the fix if absent.
fn venv() -> PathBuf {
    let dir = std::env::var_os("REWRAP_TEST_VENV")
        .map_or_else(|| manifest_dir().join(".venv"), PathBuf::from);
    for tool in ["python", "aws"] {
        assert!(
            dir.join("bin").join(tool).exists(),
            "{tool} is missing from the test virtual environment {}: run scripts/test, or \
             python3 -m venv .venv && .venv/bin/pip install -r tests/requirements.txt",
            dir.display()
        );
    }
    dir
}

/// A keystore with its owner's credentials.
struct Keystore {
    home: tempfile::TempDir,
    owner: (String, String),
}

fn keystore() -> Keystore {
    let home = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .arg("--keystore")
        .arg(home.path())
        .arg("init")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "init: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let owner = (
        v["AccessKeyId"].as_str().unwrap().to_string(),
        v["SecretAccessKey"].as_str().unwrap().to_string(),
    );
    Keystore { home, owner }
}

fn remote(url: &str, creds: &(String, String)) -> RemoteKms {
    RemoteKms::new(
        url,
        "us-east-1",
        Credentials {
            access_key_id: creds.0.clone(),
            secret_access_key: Secret::from_slice(creds.1.as_bytes()),
            session_token: None,
        },
        None,
    )
    .unwrap()
}

fn principal(kms: &RemoteKms, name: &str) -> (String, String) {
    let r = kms
        .create_principal(&PrincipalRequest {
            principal_name: name.into(),
        })
        .unwrap();
    (
        r.access_key_id,
        String::from_utf8(r.secret_access_key.expose().to_vec()).unwrap(),
    )
}

/// Runs `cmd` with AWS settings isolated from the machine's.
fn aws_env<'a>(cmd: &'a mut Command, creds: &(String, String)) -> &'a mut Command {
    cmd.env("AWS_ACCESS_KEY_ID", &creds.0)
        .env("AWS_SECRET_ACCESS_KEY", &creds.1)
        .env("AWS_DEFAULT_REGION", "us-east-1")
        .env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
        .env_remove("AWS_SESSION_TOKEN")
        .env_remove("AWS_PROFILE")
        .env_remove("AWS_CA_BUNDLE")
}

fn must(out: Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed ({}):\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn aws_cli_lesson_commands_round_trip_a_secret() {
    let venv = venv();
    let ks = keystore();
    let server = Server::start(ks.home.path(), &[]);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("topsecret.txt"), "my lesson secret\n").unwrap();
    // The lesson's commands, verbatim but for --endpoint-url.
    let script = r#"
set -euo pipefail
E="--endpoint-url $REWRAP_URL"
KEYID=$(aws kms create-key $E --description "LA KMS DEMO CMK" --output text --query KeyMetadata.KeyId)
aws kms create-alias $E --target-key-id $KEYID --alias-name "alias/lakmsdemo" --region us-east-1
aws kms encrypt $E --key-id $KEYID --plaintext file://topsecret.txt --output text --query CiphertextBlob | base64 --decode > topsecret.encrypted
aws kms decrypt $E --ciphertext-blob fileb://topsecret.encrypted --output text --query Plaintext | base64 --decode > topsecret.decrypted
aws kms generate-data-key $E --key-id $KEYID --key-spec AES_256 > datakey.json
aws kms encrypt $E --key-id alias/lakmsdemo --plaintext file://topsecret.txt --output text --query KeyId
"#;
    let path = format!(
        "{}:{}",
        venv.join("bin").display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = aws_env(&mut Command::new("bash"), &ks.owner)
        .arg("-c")
        .arg(script)
        .current_dir(dir.path())
        .env("PATH", path)
        .env("REWRAP_URL", &server.url)
        .output()
        .unwrap();
    let stdout = must(out, "the AWS CLI lesson");
    assert!(stdout.trim().starts_with("arn:aws:kms:"), "{stdout}");
    let decrypted = std::fs::read_to_string(dir.path().join("topsecret.decrypted")).unwrap();
    assert_eq!(decrypted, "my lesson secret\n");
    let encrypted = std::fs::read(dir.path().join("topsecret.encrypted")).unwrap();
    assert!(!encrypted.windows(6).any(|w| w == b"lesson"));
    let dk: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("datakey.json")).unwrap()).unwrap();
    use base64::Engine;
    let plain = base64::engine::general_purpose::STANDARD
        .decode(dk["Plaintext"].as_str().unwrap())
        .unwrap();
    assert_eq!(plain.len(), 32);
}

#[test]
fn boto3_calls_every_operation_with_exact_error_codes() {
    let venv = venv();
    let ks = keystore();
    let server = Server::start(ks.home.path(), &[]);
    let reader = principal(&remote(&server.url, &ks.owner), "app-reader");
    let out = aws_env(&mut Command::new(venv.join("bin/python")), &ks.owner)
        .arg(manifest_dir().join("tests/py/boto3_all_operations.py"))
        .env("REWRAP_URL", &server.url)
        .env("OWNER_KEY_ID", &ks.owner.0)
        .env("OWNER_SECRET", &ks.owner.1)
        .env("READER_KEY_ID", &reader.0)
        .env("READER_SECRET", &reader.1)
        .output()
        .unwrap();
    let stdout = must(out, "boto3_all_operations.py");
    assert!(stdout.contains("ALL CHECKS PASSED 42"), "{stdout}");
    // The audit trail names the caller's address and boto3's user agent.
    let audit = std::fs::read_to_string(ks.home.path().join("audit.log")).unwrap();
    let line = audit
        .lines()
        .find(|l| l.contains("\"Encrypt\"") && l.contains("Boto3"))
        .unwrap_or_else(|| panic!("no boto3 Encrypt record in the audit trail"));
    assert!(line.contains("127.0.0.1"), "{line}");
}

/// A raw HTTP exchange; returns (status, `__type`).
fn raw(addr: &str, headers: &[(String, String)], body: &[u8]) -> (u16, String) {
    let (status, kind, _) = exchange(addr, headers, body);
    (status, kind)
}

/// A raw HTTP exchange; returns (status, `__type`, `x-amzn-RequestId`).
fn exchange(addr: &str, headers: &[(String, String)], body: &[u8]) -> (u16, String, String) {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    let mut req = format!(
        "POST / HTTP/1.1\r\ncontent-length: {}\r\nconnection: close\r\n",
        body.len()
    );
    for (n, v) in headers {
        req.push_str(&format!("{n}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let status = out[9..12].parse().unwrap();
    let (head, json) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
    let kind = serde_json::from_str::<serde_json::Value>(json)
        .ok()
        .and_then(|v| v["__type"].as_str().map(str::to_string))
        .unwrap_or_default();
    let request_id = head
        .lines()
        .filter_map(|l| l.split_once(": "))
        .find(|(n, _)| n.eq_ignore_ascii_case("x-amzn-requestid"))
        .map(|(_, v)| v.to_string())
        .unwrap_or_default();
    (status, kind, request_id)
}

/// The request id a client is answered with (`x-amzn-RequestId`) is the
/// `request_id` of its audit record, for a request that ran and for one
/// refused before it ran: an auditor finds a client's request by the id
/// the client logged.
#[test]
fn the_request_id_answered_is_the_audit_records() {
    let ks = keystore();
    let server = Server::start(ks.home.path(), &[]);
    let addr = server.addr().to_string();
    let h = signed_headers(&addr, &ks.owner, b"{}", chrono::Utc::now());
    let (status, _, ran) = exchange(&addr, &h, b"{}");
    assert_eq!(status, 200);
    let (status, kind, refused) = exchange(&addr, &h, b"{ }");
    assert_eq!((status, kind.as_str()), (400, "InvalidSignatureException"));
    assert_eq!((ran.len(), refused.len()), (36, 36), "{ran} {refused}");
    assert_ne!(ran, refused);
    let audit = std::fs::read_to_string(ks.home.path().join("audit.log")).unwrap();
    let records: Vec<serde_json::Value> = audit
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let with = |id: &str| -> Vec<(String, String)> {
        records
            .iter()
            .filter(|r| r["request_id"] == id)
            .map(|r| {
                (
                    r["operation"].as_str().unwrap().to_string(),
                    r["outcome"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    };
    assert_eq!(
        with(&ran),
        [("ListKeys".into(), "Success".into())],
        "{audit}"
    );
    assert_eq!(
        with(&refused),
        [("ListKeys".into(), "InvalidSignatureException".into())],
        "{audit}"
    );
}

fn signed_headers(
    addr: &str,
    creds: &(String, String),
    body: &[u8],
    at: chrono::DateTime<chrono::Utc>,
) -> Vec<(String, String)> {
    let base = [
        ("host", addr),
        ("content-type", "application/x-amz-json-1.1"),
        ("x-amz-target", "TrentService.ListKeys"),
    ];
    let parts = sigv4::RequestParts {
        method: "POST",
        path: "/",
        query: "",
        headers: &base,
    };
    let c = Credentials {
        access_key_id: creds.0.clone(),
        secret_access_key: Secret::from_slice(creds.1.as_bytes()),
        session_token: None,
    };
    let mut out: Vec<(String, String)> = base
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect();
    for (n, v) in sigv4::sign(&parts, body, &c, "us-east-1", "kms", at) {
        out.push((n.to_string(), v));
    }
    out
}

#[test]
fn refusals_carry_aws_error_names_and_nothing_runs() {
    let ks = keystore();
    let server = Server::start(ks.home.path(), &[]);
    let addr = server.addr().to_string();
    let now = chrono::Utc::now();
    let h = signed_headers(&addr, &ks.owner, b"{}", now);
    assert_eq!(raw(&addr, &h, b"{}"), (200, String::new()));
    let unsigned: Vec<_> = h
        .iter()
        .filter(|(n, _)| n != "authorization")
        .cloned()
        .collect();
    assert_eq!(
        raw(&addr, &unsigned, b"{}"),
        (400, "MissingAuthenticationTokenException".into())
    );
    let mut partial = h.clone();
    for (n, v) in &mut partial {
        if n == "authorization" {
            *v = v.split(", Signature=").next().unwrap().to_string();
        }
    }
    assert_eq!(
        raw(&addr, &partial, b"{}"),
        (400, "IncompleteSignatureException".into())
    );
    assert_eq!(
        raw(&addr, &h, b"{ }"),
        (400, "InvalidSignatureException".into())
    );
    let old = signed_headers(&addr, &ks.owner, b"{}", now - chrono::Duration::minutes(16));
    assert_eq!(
        raw(&addr, &old, b"{}"),
        (400, "InvalidSignatureException".into())
    );
    let stranger = signed_headers(&addr, &("RWAKNOBODY".into(), "x".into()), b"{}", now);
    assert_eq!(
        raw(&addr, &stranger, b"{}"),
        (400, "UnrecognizedClientException".into())
    );
    let big = vec![b' '; 300 * 1024];
    let hb = signed_headers(&addr, &ks.owner, &big, now);
    assert_eq!(raw(&addr, &hb, &big), (413, "ValidationException".into()));
    let bad = br#"{"Limit": "many"}"#;
    let hs = signed_headers(&addr, &ks.owner, bad, now);
    assert_eq!(raw(&addr, &hs, bad), (400, "SerializationException".into()));
    // Only the one well-formed ListKeys ran; every refusal is on record
    // (issue 11 finding 6), denied, with its error name.
    let audit = std::fs::read_to_string(ks.home.path().join("audit.log")).unwrap_or_default();
    let records: Vec<serde_json::Value> = audit
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let ran = records.iter().filter(|r| r["outcome"] == "Success").count();
    assert_eq!(ran, 1, "{audit}");
    let mut refused: Vec<&str> = records
        .iter()
        .filter(|r| r["decision"] == "Deny")
        .map(|r| r["outcome"].as_str().unwrap())
        .collect();
    refused.sort_unstable();
    assert_eq!(
        refused,
        [
            "IncompleteSignatureException",
            "InvalidSignatureException",
            "InvalidSignatureException",
            "MissingAuthenticationTokenException",
            "SerializationException",
            "UnrecognizedClientException",
            "ValidationException",
        ],
        "{audit}"
    );
}

#[test]
fn plain_http_off_loopback_needs_the_explicit_flag() {
    let ks = keystore();
    let out = Command::new(BIN)
        .arg("--keystore")
        .arg(ks.home.path())
        .args(["serve", "--listen", "0.0.0.0:0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--insecure-http"), "{err}");
}

/// A test CA and a certificate for 127.0.0.1 it signed: (CA, cert, key).
fn test_pki(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let p = |name: &str| dir.join(name);
    let openssl = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl is needed to make test certificates");
        must(out, &format!("openssl {}", args[0]));
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let mut ca = vec!["req", "-x509", "-days", "1", "-subj", "/CN=rewrap test CA"];
    ca.extend(ec);
    ca.extend(["-keyout", "ca.key", "-out", "ca.pem"]);
    openssl(&ca);
    let mut csr = vec!["req", "-subj", "/CN=localhost"];
    csr.extend(ec);
    csr.extend(["-keyout", "key.pem", "-out", "leaf.csr"]);
    openssl(&csr);
    std::fs::write(
        p("leaf.ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n",
    )
    .unwrap();
    openssl(&[
        "x509",
        "-req",
        "-in",
        "leaf.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "1",
        "-extfile",
        "leaf.ext",
        "-out",
        "cert.pem",
    ]);
    (p("ca.pem"), p("cert.pem"), p("key.pem"))
}

#[test]
fn tls_serves_with_the_given_certificate_and_sigterm_stops_cleanly() {
    let ks = keystore();
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = test_pki(dir.path());
    let server = Server::start(
        ks.home.path(),
        &[
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ],
    );
    assert!(
        server.url.starts_with("https://127.0.0.1:"),
        "{}",
        server.url
    );
    let kms = RemoteKms::new(
        &server.url,
        "us-east-1",
        Credentials {
            access_key_id: ks.owner.0.clone(),
            secret_access_key: Secret::from_slice(ks.owner.1.as_bytes()),
            session_token: None,
        },
        Some(&ca),
    )
    .unwrap();
    let key = kms
        .create_key(&CreateKeyRequest::default())
        .unwrap()
        .key_metadata;
    let ct = kms
        .encrypt(&EncryptRequest {
            key_id: key.key_id.clone(),
            plaintext: Secret::from_slice(b"over tls"),
            ..Default::default()
        })
        .unwrap();
    let pt = kms
        .decrypt(&DecryptRequest {
            ciphertext_blob: ct.ciphertext_blob,
            ..Default::default()
        })
        .unwrap();
    assert_eq!(pt.plaintext.expose(), b"over tls");
    // Without the CA the client refuses the server.
    // The TLS handshake fails, so the KMS is never reached.
    let untrusting = remote(&server.url, &ks.owner);
    let err = untrusting.list_keys(&ListRequest::default()).unwrap_err();
    assert_eq!(err.code, ErrorCode::EndpointConnection, "{err:?}");
    assert!(err.message.contains("certificate"), "{}", err.message);
    assert!(server.terminate().success());
}

#[test]
fn automatic_rotation_adds_versions_while_serving() {
    let ks = keystore();
    let server = Server::start(ks.home.path(), &[]);
    let kms = remote(&server.url, &ks.owner);
    let key = kms
        .create_key(&CreateKeyRequest::default())
        .unwrap()
        .key_metadata
        .key_id;
    kms.enable_key_rotation(&EnableKeyRotationRequest {
        key_id: key.clone(),
        rotation_period_in_days: Some(90),
    })
    .unwrap();
    let rotations = |kms: &RemoteKms| {
        kms.list_key_rotations(&ListRequest {
            key_id: Some(key.clone()),
            ..Default::default()
        })
        .unwrap()
        .rotations
    };
    assert!(rotations(&kms).is_empty());
    assert!(server.terminate().success());
    // 91 days later (test-only clock), the background task rotates the key.
    let server = Server::start(
        ks.home.path(),
        &[
            "--debug-clock-offset-days",
            "91",
            "--rotation-check-interval",
            "1",
        ],
    );
    let kms = remote(&server.url, &ks.owner);
    let started = Instant::now();
    let found = loop {
        let r = rotations(&kms);
        if !r.is_empty() || started.elapsed() > Duration::from_secs(10) {
            break r;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].rotation_type, "AUTOMATIC");
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(rotations(&kms).len(), 1, "a key rotates once per period");
}

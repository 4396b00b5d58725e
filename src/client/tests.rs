//! Unit tests of `crate::client`.

use super::*;

#[test]
fn rewrap_variables_win_over_aws_ones() {
    let env = [
        ("REWRAP_ACCESS_KEY_ID", "RK"),
        ("REWRAP_SECRET_ACCESS_KEY", "rs"),
        ("AWS_ACCESS_KEY_ID", "AK"),
        ("AWS_SECRET_ACCESS_KEY", "as"),
    ];
    let c = resolve_credentials(&env, None).unwrap();
    assert_eq!(c.access_key_id, "RK");
    assert_eq!(c.secret_access_key.expose(), b"rs");
    assert_eq!(c.session_token, None);
}

#[test]
fn aws_variables_carry_the_session_token() {
    let env = [
        ("AWS_ACCESS_KEY_ID", "AK"),
        ("AWS_SECRET_ACCESS_KEY", "as"),
        ("AWS_SESSION_TOKEN", "tok"),
    ];
    let c = resolve_credentials(&env, None).unwrap();
    assert_eq!(c.access_key_id, "AK");
    assert_eq!(c.session_token.as_deref(), Some("tok"));
}

#[test]
fn half_a_pair_is_an_error() {
    let env = [("AWS_ACCESS_KEY_ID", "AK")];
    let e = resolve_credentials(&env, None).unwrap_err().to_string();
    assert!(e.contains("must be set together"), "{e}");
}

#[test]
fn the_shared_file_is_read_by_profile() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("credentials");
    std::fs::write(
        &path,
        "[default]\naws_access_key_id = D\naws_secret_access_key = ds\n\n\
         # rotator\n[rotator]\naws_access_key_id=R\naws_secret_access_key=rs\naws_session_token = t\n",
    )
    .unwrap();
    let file = path.to_str().unwrap();
    let env = [("AWS_SHARED_CREDENTIALS_FILE", file)];
    assert_eq!(resolve_credentials(&env, None).unwrap().access_key_id, "D");
    let r = resolve_credentials(&env, Some("rotator")).unwrap();
    assert_eq!(r.access_key_id, "R");
    assert_eq!(r.secret_access_key.expose(), b"rs");
    assert_eq!(r.session_token.as_deref(), Some("t"));
    let env = [
        ("AWS_SHARED_CREDENTIALS_FILE", file),
        ("AWS_PROFILE", "rotator"),
    ];
    assert_eq!(resolve_credentials(&env, None).unwrap().access_key_id, "R");
    let err = resolve_credentials(&env, Some("nobody")).unwrap_err();
    assert!(
        matches!(
            &err,
            ClientError::Profile { profile, problem: ProfileProblem::NotFound, .. } if profile == "nobody"
        ),
        "{err:?}"
    );
    // What the CLI prints: the error and its source, as anyhow chains them.
    let e = format!("{:#}", anyhow::Error::from(err));
    assert!(e.contains("profile [nobody] in "), "{e}");
    assert!(e.ends_with(": no such profile"), "{e}");
}

/// Issue 10 observation 6: with the owner's key variables exported,
/// `--profile storage-rotator` acted as the owner. The AWS CLI's order: an
/// explicit profile, then key variables, then `AWS_PROFILE` / `default`.
#[test]
fn an_explicit_profile_wins_over_key_variables_and_aws_profile_does_not() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("credentials");
    std::fs::write(
        &path,
        "[rotator]\naws_access_key_id = R\naws_secret_access_key = rs\n",
    )
    .unwrap();
    let file = path.to_str().unwrap();
    let env = [
        ("AWS_SHARED_CREDENTIALS_FILE", file),
        ("REWRAP_ACCESS_KEY_ID", "OWNER"),
        ("REWRAP_SECRET_ACCESS_KEY", "os"),
        ("AWS_PROFILE", "rotator"),
    ];
    let (c, source) = resolve_credentials_with_source(&env, Some("rotator")).unwrap();
    assert_eq!(c.access_key_id, "R");
    assert_eq!(source.to_string(), format!("--profile rotator in {file}"));
    let (c, source) = resolve_credentials_with_source(&env, None).unwrap();
    assert_eq!(c.access_key_id, "OWNER");
    assert_eq!(
        source.to_string(),
        "environment variables REWRAP_ACCESS_KEY_ID and REWRAP_SECRET_ACCESS_KEY"
    );
    let env = [
        ("AWS_SHARED_CREDENTIALS_FILE", file),
        ("AWS_PROFILE", "rotator"),
    ];
    let (c, source) = resolve_credentials_with_source(&env, None).unwrap();
    assert_eq!(c.access_key_id, "R");
    assert_eq!(source.to_string(), format!("AWS_PROFILE=rotator in {file}"));
    // A named profile in a missing file is an error naming the file, not a
    // fall-back to the key variables.
    let env = [
        ("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/credentials"),
        ("REWRAP_ACCESS_KEY_ID", "OWNER"),
        ("REWRAP_SECRET_ACCESS_KEY", "os"),
    ];
    let err = resolve_credentials(&env, Some("rotator")).unwrap_err();
    assert!(
        matches!(&err, ClientError::CredentialsFile { path, .. } if path.to_str() == Some("/nonexistent/credentials")),
        "{err:?}"
    );
}

#[test]
fn region_order() {
    let env = [
        ("AWS_REGION", "eu-west-1"),
        ("AWS_DEFAULT_REGION", "eu-west-2"),
    ];
    assert_eq!(resolve_region(&env, Some("ap-south-1")), "ap-south-1");
    assert_eq!(resolve_region(&env, None), "eu-west-1");
    assert_eq!(
        resolve_region(&[("AWS_DEFAULT_REGION", "eu-west-2")], None),
        "eu-west-2"
    );
    assert_eq!(resolve_region(&[("X", "y")], None), "us-east-1");
}

#[test]
fn aws_errors_map_to_codes() {
    let (e, name) = error_from_response(
        400,
        br#"{"__type":"com.amazonaws.kms#NotFoundException","message":"no key"}"#,
    );
    assert_eq!(
        (e.code, e.message.as_str(), name.as_str()),
        (ErrorCode::NotFound, "no key", "NotFoundException")
    );
    let (e, _) = error_from_response(
        400,
        br#"{"__type":"KMSInvalidStateException","Message":"pending"}"#,
    );
    assert_eq!(
        (e.code, e.message.as_str()),
        (ErrorCode::InvalidState, "pending")
    );
    let (e, name) =
        error_from_response(400, br#"{"__type":"ThrottlingException","message":"slow"}"#);
    // AWS's throttling keeps its kind, so the worker can tell it from a fault.
    assert_eq!(
        (e.code, name.as_str()),
        (ErrorCode::Throttling, "ThrottlingException")
    );
    assert_eq!(e.message, "slow");
    let (e, _) = error_from_response(500, br#"{"__type":"SomethingElse","message":"odd"}"#);
    assert_eq!(
        (e.code, e.message.as_str()),
        (ErrorCode::Internal, "SomethingElse: odd")
    );
    let (e, _) = error_from_response(502, b"<html>bad gateway</html>");
    assert_eq!(e.code, ErrorCode::Internal);
    assert!(e.message.contains("HTTP 502"));
}

#[test]
fn responses_of_other_kms_servers_get_aws_defaults() {
    // moto: KeyUsage and MultiRegion null, no EncryptionAlgorithm.
    let moto = br#"{"KeyMetadata": {"KeyId": "k", "KeyUsage": null, "MultiRegion": null, "Enabled": true}}"#;
    let out = normalize_response(Operation::DescribeKey, Secret::from_slice(moto)).unwrap();
    let v: serde_json::Value = serde_json::from_slice(out.expose()).unwrap();
    assert_eq!(v["KeyMetadata"]["KeyUsage"], "ENCRYPT_DECRYPT");
    assert_eq!(v["KeyMetadata"]["MultiRegion"], false);
    assert_eq!(v["KeyMetadata"]["KeyId"], "k");
    let out = normalize_response(
        Operation::ReEncrypt,
        Secret::from_slice(br#"{"CiphertextBlob": "AAEC", "KeyId": "b", "SourceKeyId": "a"}"#),
    )
    .unwrap();
    let r: crate::api::ReEncryptResponse = crate::kms::from_json(out.expose()).unwrap();
    assert_eq!(r.destination_encryption_algorithm, "SYMMETRIC_DEFAULT");
    assert_eq!(r.ciphertext_blob.0, [0, 1, 2]);
    // A complete response is passed through byte for byte.
    let full = br#"{"KeyId":"k","Plaintext":"AAEC","EncryptionAlgorithm":"SYMMETRIC_DEFAULT"}"#;
    let out = normalize_response(Operation::Decrypt, Secret::from_slice(full)).unwrap();
    assert_eq!(out.expose(), full);
}

#[test]
fn endpoints_must_be_http_urls() {
    let creds = || Credentials {
        access_key_id: "A".into(),
        secret_access_key: Secret::from_slice(b"s"),
        session_token: None,
    };
    assert!(RemoteKms::new("ftp://x", "us-east-1", creds(), None).is_err());
    assert!(RemoteKms::new("not a url", "us-east-1", creds(), None).is_err());
    let k = RemoteKms::new("http://127.0.0.1:9/", "us-east-1", creds(), None).unwrap();
    assert_eq!(k.host, "127.0.0.1:9");
    let k = RemoteKms::new(
        "https://kms.us-east-1.amazonaws.com",
        "us-east-1",
        creds(),
        None,
    )
    .unwrap();
    assert_eq!(k.host, "kms.us-east-1.amazonaws.com");
}

fn test_creds() -> Credentials {
    Credentials {
        access_key_id: "A".into(),
        secret_access_key: Secret::from_slice(b"s"),
        session_token: None,
    }
}

/// A one-thread HTTP endpoint on loopback that answers every connection
/// (at most `connections`) with `head` followed by `body_len` bytes of `{`.
fn fake_endpoint(head: String, body_len: usize, connections: usize) -> String {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for stream in listener.incoming().take(connections) {
            let Ok(mut s) = stream else { return };
            let mut request = [0u8; 4096];
            let _ = s.read(&mut request);
            let _ = s.write_all(head.as_bytes());
            let _ = s.write_all(&vec![b'{'; body_len]);
        }
    });
    url
}

#[test]
fn a_hostile_content_length_is_not_preallocated() {
    // 10^15 bytes declared, 16 sent, then the connection closes: before the
    // cap the client reserved the declared length and the process aborted.
    let head = "HTTP/1.1 200 OK\r\nContent-Length: 1000000000000000\r\n\r\n".to_string();
    let url = fake_endpoint(head, 16, MAX_ATTEMPTS as usize);
    let kms = RemoteKms::new(&url, "us-east-1", test_creds(), None).unwrap();
    let err = kms.call(Operation::ListKeys, b"{}").unwrap_err();
    assert_eq!(err.code, ErrorCode::EndpointConnection, "{err:?}");
}

#[test]
fn an_oversized_response_body_is_refused() {
    let len = MAX_RESPONSE_BYTES + 1;
    let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {len}\r\n\r\n");
    let url = fake_endpoint(head, len, 1);
    let kms = RemoteKms::new(&url, "us-east-1", test_creds(), None).unwrap();
    let err = kms.call(Operation::ListKeys, b"{}").unwrap_err();
    assert_eq!(err.code, ErrorCode::Internal);
    assert_eq!(
        err.message,
        format!("the KMS response is larger than {MAX_RESPONSE_BYTES} bytes")
    );
}

#[test]
fn an_unreachable_kms_is_an_endpoint_connection_error() {
    // Bind then drop: the port is closed when the client calls it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}/");
    let kms = RemoteKms::new(&url, "us-east-1", test_creds(), None).unwrap();
    let err = kms.call(Operation::ListKeys, b"{}").unwrap_err();
    assert_eq!(err.code, ErrorCode::EndpointConnection);
    assert_eq!(err.code.as_str(), "EndpointConnectionError");
    assert!(
        err.message
            .starts_with("cannot reach the KMS at 127.0.0.1: "),
        "{}",
        err.message
    );
}

//! Unit tests of `crate::sigv4`.

use super::*;

const AKID: &str = "AKIDEXAMPLE";
const SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";

fn creds() -> Credentials {
    Credentials {
        access_key_id: AKID.into(),
        secret_access_key: Secret::from_slice(SECRET.as_bytes()),
        session_token: None,
    }
}

fn now() -> DateTime<Utc> {
    parse_amz_date("20240102T030405Z").unwrap()
}

const BASE_HEADERS: &[(&str, &str)] = &[
    ("host", "kms.local:4000"),
    ("content-type", "application/x-amz-json-1.1"),
    ("x-amz-target", "TrentService.Encrypt"),
];

/// A KMS request signed at `now()`, as (header name, value) pairs.
fn signed(body: &[u8]) -> Vec<(String, String)> {
    let req = RequestParts {
        method: "POST",
        path: "/",
        query: "",
        headers: BASE_HEADERS,
    };
    let mut headers: Vec<(String, String)> = BASE_HEADERS
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect();
    for (n, v) in sign(&req, body, &creds(), "us-east-1", "kms", now()) {
        headers.push((n.to_string(), v));
    }
    headers
}

fn check(headers: &[(String, String)], body: &[u8], at: DateTime<Utc>) -> Result<Verified> {
    let pairs: Vec<(&str, &str)> = headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    let req = RequestParts {
        method: "POST",
        path: "/",
        query: "",
        headers: &pairs,
    };
    verify(&req, body, "kms", at, |id| {
        if id == AKID {
            Ok(("alice".into(), Secret::from_slice(SECRET.as_bytes())))
        } else {
            Err(KmsError::new(ErrorCode::UnrecognizedClient, "unknown"))
        }
    })
}

fn set(headers: &mut [(String, String)], name: &str, value: &str) {
    for (n, v) in headers.iter_mut() {
        if n == name {
            *v = value.to_string();
        }
    }
}

fn code(r: Result<Verified>) -> ErrorCode {
    r.unwrap_err().code
}

#[test]
fn a_signed_request_verifies() {
    let h = signed(b"{}");
    let v = check(&h, b"{}", now()).unwrap();
    assert_eq!(v.principal, "alice");
    assert_eq!(v.access_key_id, AKID);
}

#[test]
fn a_tampered_body_is_an_invalid_signature() {
    let h = signed(b"{\"KeyId\":\"a\"}");
    assert_eq!(
        code(check(&h, b"{\"KeyId\":\"b\"}", now())),
        ErrorCode::InvalidSignature
    );
    // Without the payload-hash header the recomputed hash still catches it.
    let h: Vec<_> = h
        .into_iter()
        .filter(|(n, _)| n != "x-amz-content-sha256")
        .collect();
    assert_eq!(
        code(check(&h, b"{\"KeyId\":\"b\"}", now())),
        ErrorCode::InvalidSignature
    );
}

#[test]
fn a_retargeted_request_is_an_invalid_signature() {
    let mut h = signed(b"{}");
    set(&mut h, "x-amz-target", "TrentService.Decrypt");
    assert_eq!(code(check(&h, b"{}", now())), ErrorCode::InvalidSignature);
}

#[test]
fn a_wrong_secret_is_an_invalid_signature() {
    let mut h = signed(b"{}");
    let auth = h
        .iter()
        .find(|(n, _)| n == "authorization")
        .unwrap()
        .1
        .clone();
    let flipped = format!(
        "{}{}",
        &auth[..auth.len() - 1],
        if auth.ends_with('0') { '1' } else { '0' }
    );
    set(&mut h, "authorization", &flipped);
    assert_eq!(code(check(&h, b"{}", now())), ErrorCode::InvalidSignature);
    let short = auth[..auth.len() - 2].to_string();
    set(&mut h, "authorization", &short);
    assert_eq!(code(check(&h, b"{}", now())), ErrorCode::InvalidSignature);
}

#[test]
fn an_unknown_access_key_is_an_unrecognized_client() {
    let mut h = signed(b"{}");
    let auth = h
        .iter()
        .find(|(n, _)| n == "authorization")
        .unwrap()
        .1
        .clone();
    set(&mut h, "authorization", &auth.replace(AKID, "AKIDOTHER"));
    assert_eq!(code(check(&h, b"{}", now())), ErrorCode::UnrecognizedClient);
}

#[test]
fn no_authorization_is_a_missing_token() {
    let h: Vec<_> = signed(b"{}")
        .into_iter()
        .filter(|(n, _)| n != "authorization")
        .collect();
    assert_eq!(
        code(check(&h, b"{}", now())),
        ErrorCode::MissingAuthenticationToken
    );
}

#[test]
fn malformed_authorizations_are_incomplete() {
    for bad in [
        "AWS4-HMAC-SHA256",
        "Basic dXNlcjpwYXNz",
        "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20240102/us-east-1/kms/aws4_request, SignedHeaders=host;x-amz-date;x-amz-target",
        "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20240102/kms/aws4_request, SignedHeaders=host;x-amz-date;x-amz-target, Signature=00",
        "AWS4-HMAC-SHA256 SignedHeaders=host, Signature=00",
    ] {
        let mut h = signed(b"{}");
        set(&mut h, "authorization", bad);
        assert_eq!(code(check(&h, b"{}", now())), ErrorCode::IncompleteSignature, "{bad}");
    }
    let h: Vec<_> = signed(b"{}")
        .into_iter()
        .filter(|(n, _)| n != "x-amz-date")
        .collect();
    assert_eq!(
        code(check(&h, b"{}", now())),
        ErrorCode::IncompleteSignature
    );
}

#[test]
fn a_request_16_minutes_off_is_expired_and_14_is_not() {
    let h = signed(b"{}");
    let m = chrono::Duration::minutes;
    // AWS's words: the request time, the edge of the window, the server time.
    let late = check(&h, b"{}", now() + m(16)).unwrap_err();
    assert_eq!(late.code, ErrorCode::InvalidSignature);
    assert_eq!(
        late.message,
        format!(
            "Signature expired: {} is now earlier than {} ({} - 15 min.)",
            amz_date(now()),
            amz_date(now() + m(1)),
            amz_date(now() + m(16))
        )
    );
    let early = check(&h, b"{}", now() - m(16)).unwrap_err();
    assert_eq!(early.code, ErrorCode::InvalidSignature);
    assert_eq!(
        early.message,
        format!(
            "Signature not yet current: {} is still later than {} ({} + 15 min.)",
            amz_date(now()),
            amz_date(now() - m(1)),
            amz_date(now() - m(16))
        )
    );
    assert!(check(&h, b"{}", now() + m(14)).is_ok());
    assert!(check(&h, b"{}", now() - m(14)).is_ok());
}

#[test]
fn a_signature_must_cover_host_date_and_target() {
    let req = RequestParts {
        method: "POST",
        path: "/",
        query: "",
        headers: &[("host", "kms.local:4000")],
    };
    let mut h: Vec<(String, String)> = vec![("host".into(), "kms.local:4000".into())];
    for (n, v) in sign(&req, b"{}", &creds(), "us-east-1", "kms", now()) {
        h.push((n.to_string(), v));
    }
    h.push(("x-amz-target".into(), "TrentService.Encrypt".into()));
    assert_eq!(code(check(&h, b"{}", now())), ErrorCode::InvalidSignature);
}

#[test]
fn another_service_scope_is_refused() {
    let req = RequestParts {
        method: "POST",
        path: "/",
        query: "",
        headers: BASE_HEADERS,
    };
    let mut h: Vec<(String, String)> = BASE_HEADERS
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect();
    for (n, v) in sign(&req, b"{}", &creds(), "us-east-1", "s3", now()) {
        h.push((n.to_string(), v));
    }
    assert_eq!(code(check(&h, b"{}", now())), ErrorCode::InvalidSignature);
}

#[test]
fn a_session_token_we_did_not_issue_is_unrecognized() {
    let mut c = creds();
    c.session_token = Some("token".into());
    let req = RequestParts {
        method: "POST",
        path: "/",
        query: "",
        headers: BASE_HEADERS,
    };
    let mut h: Vec<(String, String)> = BASE_HEADERS
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect();
    for (n, v) in sign(&req, b"{}", &c, "us-east-1", "kms", now()) {
        h.push((n.to_string(), v));
    }
    assert_eq!(code(check(&h, b"{}", now())), ErrorCode::UnrecognizedClient);
}

#[test]
fn encoding_follows_the_spec() {
    assert_eq!(uri_encode("a b/c~d*", true), "a%20b/c~d%2A");
    assert_eq!(uri_encode("a/b", false), "a%2Fb");
    assert_eq!(canonical_query("b=2&a=1&a=0"), "a=0&a=1&b=2");
    assert_eq!(canonical_query("x=a%20b"), "x=a%20b");
    assert_eq!(canonical_header_value("  a   b  c "), "a b c");
}

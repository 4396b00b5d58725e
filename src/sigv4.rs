//! AWS Signature Version 4: signing requests (the remote client) and verifying
//! them (the server), over one canonical-request builder so both sides agree.
//!
//! The algorithm, as AWS specifies it:
//!
//! ```text
//! CanonicalRequest = Method \n CanonicalURI \n CanonicalQuery \n
//!                    CanonicalHeaders \n SignedHeaders \n HexEncode(SHA256(Payload))
//! StringToSign     = "AWS4-HMAC-SHA256" \n AmzDate \n Scope \n HexEncode(SHA256(CanonicalRequest))
//! Scope            = Date "/" Region "/" Service "/aws4_request"
//! SigningKey       = HMAC(HMAC(HMAC(HMAC("AWS4" + Secret, Date), Region), Service), "aws4_request")
//! Signature        = HexEncode(HMAC(SigningKey, StringToSign))
//! ```
//!
//! Verification refuses, with the AWS error names, a missing signature
//! (`MissingAuthenticationTokenException`), a malformed one
//! (`IncompleteSignatureException`), an unknown access key
//! (`UnrecognizedClientException`), and a request time more than
//! `MAX_CLOCK_SKEW` away from the server's ("Signature expired: ..." or
//! "Signature not yet current: ...") or any mismatch
//! (`InvalidSignatureException`). Signatures are compared in constant
//! time. Nothing here logs or returns a secret, a signature or a body.

use crate::error::{ErrorCode, KmsError, Result};
use crate::secret::Secret;
use chrono::{DateTime, NaiveDateTime, TimeZone, Utc};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The only algorithm rewrap signs and accepts.
pub(crate) const ALGORITHM: &str = "AWS4-HMAC-SHA256";

/// How far a request's time may be from the server's clock, as AWS allows.
pub(crate) const MAX_CLOCK_SKEW: chrono::Duration = chrono::Duration::minutes(15);

/// The `x-amz-date` format.
const AMZ_DATE_FORMAT: &str = "%Y%m%dT%H%M%SZ";

/// Headers every signature must cover: without `x-amz-target` a captured
/// request could be replayed as another operation over the same body.
const REQUIRED_SIGNED_HEADERS: &[&str] = &["host", "x-amz-target"];

type HmacSha256 = Hmac<Sha256>;

/// An access key: the id, the secret and, for temporary credentials, a session token.
#[derive(Clone, Debug)]
pub struct Credentials {
    /// The access key id (not secret).
    pub access_key_id: String,
    /// The secret access key.
    pub secret_access_key: Secret,
    /// The session token of temporary credentials (sent as `x-amz-security-token`).
    pub session_token: Option<String>,
}

/// Lowercase hex SHA-256 of `data`.
pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC accepts keys of any length");
    mac.update(data);
    mac.finalize().into_bytes().into()
}

/// Derives the signing key of `secret` for one day, region and service.
pub(crate) fn signing_key(secret: &Secret, date: &str, region: &str, service: &str) -> Secret {
    let mut k_secret = Secret::new(Vec::with_capacity(4 + secret.len()));
    k_secret.expose_mut().extend_from_slice(b"AWS4");
    k_secret.expose_mut().extend_from_slice(secret.expose());
    let k_date = Secret::from_slice(&hmac(k_secret.expose(), date.as_bytes()));
    let k_region = Secret::from_slice(&hmac(k_date.expose(), region.as_bytes()));
    let k_service = Secret::from_slice(&hmac(k_region.expose(), service.as_bytes()));
    Secret::from_slice(&hmac(k_service.expose(), b"aws4_request"))
}

/// `URI-encode` as SigV4 defines it: every byte but the unreserved characters
/// `A-Z a-z 0-9 - _ . ~` is `%XX` (uppercase); `/` is kept when `keep_slash`.
pub(crate) fn uri_encode(input: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(input.len());
    for &b in input.as_bytes() {
        let unreserved = b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~');
        if unreserved || (keep_slash && b == b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn percent_decode(input: &str) -> String {
    let bytes = input.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex_pair = bytes.get(i + 1..i + 3).and_then(|h| {
            std::str::from_utf8(h)
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        });
        match (bytes[i], hex_pair) {
            (b'%', Some(v)) => {
                out.push(v);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The canonical URI of a request path (non-S3 services encode the path as sent).
pub(crate) fn canonical_uri(path: &str) -> String {
    if path.is_empty() {
        "/".to_string()
    } else {
        uri_encode(path, true)
    }
}

/// The canonical query string: parameters decoded, re-encoded and sorted.
pub(crate) fn canonical_query(query: &str) -> String {
    let mut pairs: Vec<(String, String)> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (
                uri_encode(&percent_decode(k), false),
                uri_encode(&percent_decode(v), false),
            )
        })
        .collect();
    pairs.sort();
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

/// A header value as SigV4 canonicalizes it: trimmed, inner runs of spaces collapsed.
fn canonical_header_value(value: &str) -> String {
    value.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The parts of an HTTP request that a signature covers.
#[derive(Debug, Clone, Copy)]
pub struct RequestParts<'a> {
    /// `GET`, `POST`, ...
    pub method: &'a str,
    /// The path as sent, still percent-encoded.
    pub path: &'a str,
    /// The query string as sent, without `?`.
    pub query: &'a str,
    /// Every header as `(name, value)`; names in any case, repeats allowed.
    pub headers: &'a [(&'a str, &'a str)],
}

/// Builds the canonical request over `signed_headers` (lowercase, sorted).
/// Errors if a signed header is absent from the request.
pub(crate) fn canonical_request(
    req: &RequestParts<'_>,
    signed_headers: &[String],
    payload_hash: &str,
) -> Result<String> {
    let mut out = String::with_capacity(512);
    out.push_str(req.method);
    out.push('\n');
    out.push_str(&canonical_uri(req.path));
    out.push('\n');
    out.push_str(&canonical_query(req.query));
    out.push('\n');
    for name in signed_headers {
        let values: Vec<String> = req
            .headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| canonical_header_value(v))
            .collect();
        if values.is_empty() {
            return Err(KmsError::new(
                ErrorCode::InvalidSignature,
                format!("The signed header '{name}' is not in the request"),
            ));
        }
        out.push_str(name);
        out.push(':');
        out.push_str(&values.join(","));
        out.push('\n');
    }
    out.push('\n');
    out.push_str(&signed_headers.join(";"));
    out.push('\n');
    out.push_str(payload_hash);
    Ok(out)
}

/// The string to sign of a canonical request.
pub(crate) fn string_to_sign(amz_date: &str, scope: &str, canonical_request: &str) -> String {
    format!(
        "{ALGORITHM}\n{amz_date}\n{scope}\n{}",
        sha256_hex(canonical_request.as_bytes())
    )
}

fn signature_bytes(key: &Secret, string_to_sign: &str) -> [u8; 32] {
    hmac(key.expose(), string_to_sign.as_bytes())
}

/// Formats `time` as `x-amz-date` (`20150830T123600Z`).
pub fn amz_date(time: DateTime<Utc>) -> String {
    time.format(AMZ_DATE_FORMAT).to_string()
}

/// The hex signature of a request over `signed_headers` (lowercase, sorted),
/// made at `amz_date` (`x-amz-date` text) with `secret` for `region` and `service`.
pub fn signature(
    req: &RequestParts<'_>,
    signed_headers: &[String],
    payload_hash: &str,
    secret: &Secret,
    amz_date: &str,
    region: &str,
    service: &str,
) -> Result<String> {
    let creq = canonical_request(req, signed_headers, payload_hash)?;
    let date = amz_date.get(..8).unwrap_or(amz_date);
    let scope = format!("{date}/{region}/{service}/aws4_request");
    let key = signing_key(secret, date, region, service);
    Ok(hex::encode(signature_bytes(
        &key,
        &string_to_sign(amz_date, &scope, &creq),
    )))
}

/// Signs a request: returns the headers to add (`x-amz-date`,
/// `x-amz-content-sha256`, `x-amz-security-token` when there is a session
/// token, and `authorization`). Every header of `req` is signed, so pass only
/// headers that reach the server unchanged (`host`, `content-type`, `x-amz-target`).
pub fn sign(
    req: &RequestParts<'_>,
    body: &[u8],
    creds: &Credentials,
    region: &str,
    service: &str,
    time: DateTime<Utc>,
) -> Vec<(&'static str, String)> {
    let date_time = amz_date(time);
    let payload_hash = sha256_hex(body);
    let mut added: Vec<(&'static str, String)> = vec![
        ("x-amz-date", date_time.clone()),
        ("x-amz-content-sha256", payload_hash.clone()),
    ];
    if let Some(token) = &creds.session_token {
        added.push(("x-amz-security-token", token.clone()));
    }
    let mut all: Vec<(&str, &str)> = req.headers.to_vec();
    all.extend(added.iter().map(|(n, v)| (*n, v.as_str())));
    let mut names: Vec<String> = all.iter().map(|(n, _)| n.to_ascii_lowercase()).collect();
    names.sort();
    names.dedup();
    let parts = RequestParts {
        headers: &all,
        ..*req
    };
    let signature = signature(
        &parts,
        &names,
        &payload_hash,
        &creds.secret_access_key,
        &date_time,
        region,
        service,
    )
    .expect("every signed header is taken from the request itself");
    let authorization = format!(
        "{ALGORITHM} Credential={}/{}/{region}/{service}/aws4_request, SignedHeaders={}, Signature={signature}",
        creds.access_key_id,
        &date_time[..8],
        names.join(";")
    );
    added.push(("authorization", authorization));
    added
}

/// The parts of an `Authorization: AWS4-HMAC-SHA256 ...` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authorization {
    /// The access key id of the credential.
    pub access_key_id: String,
    /// `YYYYMMDD` of the credential scope.
    pub date: String,
    /// Region of the credential scope.
    pub region: String,
    /// Service of the credential scope.
    pub service: String,
    /// Signed header names, lowercase, as listed.
    pub signed_headers: Vec<String>,
    /// The signature as sent (hex text).
    pub signature: String,
}

fn incomplete(message: impl Into<String>) -> KmsError {
    KmsError::new(ErrorCode::IncompleteSignature, message)
}

fn invalid(message: impl Into<String>) -> KmsError {
    KmsError::new(ErrorCode::InvalidSignature, message)
}

/// Parses an `Authorization` header. A header of another scheme, or one
/// missing `Credential`, `SignedHeaders` or `Signature`, is `IncompleteSignature`.
pub(crate) fn parse_authorization(header: &str) -> Result<Authorization> {
    let rest = header
        .strip_prefix(ALGORITHM)
        .filter(|r| r.starts_with(' '))
        .ok_or_else(|| {
            incomplete(format!(
                "Authorization header must use the {ALGORITHM} algorithm"
            ))
        })?;
    let (mut credential, mut signed, mut signature) = (None, None, None);
    for part in rest.split(',') {
        let part = part.trim();
        let (k, v) = part.split_once('=').unwrap_or((part, ""));
        match k {
            "Credential" => credential = Some(v),
            "SignedHeaders" => signed = Some(v),
            "Signature" => signature = Some(v),
            _ => {}
        }
    }
    let missing: Vec<&str> = [
        ("Credential", credential),
        ("SignedHeaders", signed),
        ("Signature", signature),
    ]
    .iter()
    .filter(|(_, v)| v.is_none_or(str::is_empty))
    .map(|(k, _)| *k)
    .collect();
    if !missing.is_empty() {
        return Err(incomplete(format!(
            "Authorization header requires {} parameter(s)",
            missing.join(", ")
        )));
    }
    let (credential, signed, signature) = (
        credential.unwrap_or_default(),
        signed.unwrap_or_default(),
        signature.unwrap_or_default(),
    );
    let scope: Vec<&str> = credential.split('/').collect();
    if scope.len() != 5 || scope.iter().any(|s| s.is_empty()) || scope[4] != "aws4_request" {
        return Err(incomplete(
            "Credential must have the form <access key id>/<date>/<region>/<service>/aws4_request",
        ));
    }
    Ok(Authorization {
        access_key_id: scope[0].to_string(),
        date: scope[1].to_string(),
        region: scope[2].to_string(),
        service: scope[3].to_string(),
        signed_headers: signed.split(';').map(str::to_ascii_lowercase).collect(),
        signature: signature.to_string(),
    })
}

/// Parses an `x-amz-date` value.
pub(crate) fn parse_amz_date(value: &str) -> Option<DateTime<Utc>> {
    NaiveDateTime::parse_from_str(value, AMZ_DATE_FORMAT)
        .ok()
        .map(|t| Utc.from_utc_datetime(&t))
}

fn header<'a>(req: &RequestParts<'a>, name: &str) -> Option<&'a str> {
    req.headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| *v)
}

/// A request whose signature verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// The principal the access key belongs to.
    pub principal: String,
    /// The access key id that signed.
    pub access_key_id: String,
}

/// Verifies the signature of `req` for `service`.
///
/// `lookup` maps an access key id to its principal and secret, or fails with
/// `UnrecognizedClientException`. `now` is the server's clock. The payload hash
/// is always computed from `body`; an `x-amz-content-sha256` header that
/// disagrees is refused.
pub fn verify<F>(
    req: &RequestParts<'_>,
    body: &[u8],
    service: &str,
    now: DateTime<Utc>,
    lookup: F,
) -> Result<Verified>
where
    F: FnOnce(&str) -> Result<(String, Secret)>,
{
    let header_value = header(req, "authorization").ok_or_else(|| {
        KmsError::new(
            ErrorCode::MissingAuthenticationToken,
            "Missing Authentication Token",
        )
    })?;
    verify_parsed(
        req,
        parse_authorization(header_value)?,
        body,
        service,
        now,
        lookup,
    )
}

/// [`verify`] of a request whose `Authorization` header the caller already
/// parsed (`auth`, from the same request).
pub(crate) fn verify_parsed<F>(
    req: &RequestParts<'_>,
    auth: Authorization,
    body: &[u8],
    service: &str,
    now: DateTime<Utc>,
    lookup: F,
) -> Result<Verified>
where
    F: FnOnce(&str) -> Result<(String, Secret)>,
{
    let date_text = header(req, "x-amz-date").ok_or_else(|| {
        incomplete("Authorization header requires existence of a 'X-Amz-Date' header")
    })?;
    let time = parse_amz_date(date_text)
        .ok_or_else(|| incomplete("X-Amz-Date must be in the ISO 8601 basic format"))?;
    check_scope(&auth, date_text, service)?;
    check_time(date_text, time, now)?;
    if header(req, "x-amz-security-token").is_some() {
        // rewrap issues no temporary credentials: a token is one we cannot honour.
        return Err(KmsError::new(
            ErrorCode::UnrecognizedClient,
            "The security token included in the request is invalid",
        ));
    }
    let payload_hash = sha256_hex(body);
    if let Some(claimed) = header(req, "x-amz-content-sha256") {
        if claimed != payload_hash {
            return Err(invalid(
                "The x-amz-content-sha256 header does not match the request body",
            ));
        }
    }
    let (principal, secret) = lookup(&auth.access_key_id)?;
    let creq = canonical_request(req, &auth.signed_headers, &payload_hash)?;
    let scope = format!(
        "{}/{}/{}/aws4_request",
        auth.date, auth.region, auth.service
    );
    let key = signing_key(&secret, &auth.date, &auth.region, &auth.service);
    let expected = signature_bytes(&key, &string_to_sign(date_text, &scope, &creq));
    let mut sent = [0u8; 32];
    let well_formed =
        auth.signature.len() == 64 && hex::decode_to_slice(&auth.signature, &mut sent).is_ok();
    if !(well_formed && bool::from(expected.ct_eq(&sent))) {
        return Err(invalid(
            "The request signature we calculated does not match the signature you provided",
        ));
    }
    Ok(Verified {
        principal,
        access_key_id: auth.access_key_id,
    })
}

/// A signature more than [`MAX_CLOCK_SKEW`] from `now` either way is
/// `InvalidSignatureException`, worded as AWS's JSON services word it.
pub(crate) fn check_time(date_text: &str, time: DateTime<Utc>, now: DateTime<Utc>) -> Result<()> {
    let minutes = MAX_CLOCK_SKEW.num_minutes();
    if now - time > MAX_CLOCK_SKEW {
        return Err(invalid(format!(
            "Signature expired: {date_text} is now earlier than {} ({} - {minutes} min.)",
            amz_date(now - MAX_CLOCK_SKEW),
            amz_date(now)
        )));
    }
    if time - now > MAX_CLOCK_SKEW {
        return Err(invalid(format!(
            "Signature not yet current: {date_text} is still later than {} ({} + {minutes} min.)",
            amz_date(now + MAX_CLOCK_SKEW),
            amz_date(now)
        )));
    }
    Ok(())
}

fn check_scope(auth: &Authorization, date_text: &str, service: &str) -> Result<()> {
    if auth.service != service {
        return Err(invalid(format!(
            "Credential should be scoped to correct service: '{service}'"
        )));
    }
    if !date_text.starts_with(&auth.date) || auth.date.len() != 8 {
        return Err(invalid(
            "Date in Credential scope does not match YYYYMMDD from X-Amz-Date",
        ));
    }
    let mut sorted = auth.signed_headers.clone();
    sorted.sort();
    sorted.dedup();
    if sorted != auth.signed_headers {
        return Err(incomplete(
            "SignedHeaders must be lowercase, sorted and unique",
        ));
    }
    for required in REQUIRED_SIGNED_HEADERS.iter().chain(["x-amz-date"].iter()) {
        if !auth.signed_headers.iter().any(|h| h == required) {
            return Err(invalid(format!(
                "'{required}' must be a signed header of the AWS Authorization"
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;

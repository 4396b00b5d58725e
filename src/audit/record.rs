//! One audit record and its canonical line: the bytes the hash chain covers.

use super::AuditError;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

/// The `prev_hash` of the first record.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// `decision` of an attempt the policy allowed.
pub const DECISION_ALLOW: &str = "Allow";
/// `decision` of an attempt the policy denied.
pub const DECISION_DENY: &str = "Deny";
/// `outcome` of an operation that succeeded.
pub const OUTCOME_SUCCESS: &str = "Success";

/// The tail of every canonical serialization: `hash` is the last field.
const EMPTY_HASH_TAIL: &[u8] = br#","hash":""}"#;

/// The request header naming [`AuditRecord::object`] (signed, percent-encoded
/// UTF-8; not an AWS header, so AWS clients never send it).
pub const OBJECT_HEADER: &str = "x-rewrap-object";

/// Longest [`AuditRecord::object`], in bytes (a path, `PATH_MAX`).
pub const MAX_OBJECT: usize = 4096;

/// `name` as an [`AuditRecord::object`]: control characters written as
/// `\u{..}` escapes, cut to [`MAX_OBJECT`] bytes keeping the end (the
/// file name) and marking the cut with a leading `...`.
pub fn object_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for c in name.chars() {
        if c.is_control() {
            out.extend(c.escape_unicode());
        } else {
            out.push(c);
        }
    }
    if out.len() > MAX_OBJECT {
        let mut cut = out.len() - (MAX_OBJECT - 3);
        while !out.is_char_boundary(cut) {
            cut += 1;
        }
        out = format!("...{}", &out[cut..]);
    }
    out
}

/// Why `object` cannot be an [`AuditRecord::object`], if it cannot: empty,
/// longer than [`MAX_OBJECT`] bytes, or holding a control character.
pub fn check_object(object: &str) -> Result<(), &'static str> {
    if object.is_empty() {
        Err("is empty")
    } else if object.len() > MAX_OBJECT {
        Err("is longer than 4096 bytes")
    } else if object.chars().any(char::is_control) {
        Err("holds a control character")
    } else {
        Ok(())
    }
}

/// `object` as the value of [`OBJECT_HEADER`]: every byte outside visible
/// ASCII, and `%`, as `%XX`, so any UTF-8 name travels in a header.
pub fn encode_object_header(object: &str) -> String {
    let mut out = String::with_capacity(object.len());
    for &b in object.as_bytes() {
        if b.is_ascii_graphic() && b != b'%' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The object an [`OBJECT_HEADER`] value names, checked as
/// [`check_object`] checks it; why not otherwise.
pub fn decode_object_header(value: &[u8]) -> Result<String, &'static str> {
    if value.len() > 3 * MAX_OBJECT {
        return Err("is longer than 4096 bytes");
    }
    let mut bytes = Vec::with_capacity(value.len());
    let mut i = 0;
    while i < value.len() {
        let b = value[i];
        if b == b'%' {
            let hex = value.get(i + 1..i + 3).ok_or("has a truncated %-escape")?;
            let hex = std::str::from_utf8(hex).map_err(|_| "has a bad %-escape")?;
            bytes.push(u8::from_str_radix(hex, 16).map_err(|_| "has a bad %-escape")?);
            i += 3;
        } else {
            bytes.push(b);
            i += 1;
        }
    }
    let object = String::from_utf8(bytes).map_err(|_| "is not UTF-8")?;
    check_object(&object)?;
    Ok(object)
}

/// A key an operation used: its ARN and, where known, the key-material version.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct AuditKey {
    /// The key ARN.
    pub arn: String,
    /// The key-material version used, if the operation used key material.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub version: Option<u32>,
}

/// One operation attempt, as one line of the audit log.
///
/// Build it with the operation's fields and `..Default::default()`;
/// [`AuditLog::append`](super::AuditLog::append) fills `seq`, `prev_hash`,
/// `hash` and (if empty) `time`.
/// Field order is part of the hash definition: do not reorder.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct AuditRecord {
    /// Position in the log, 1-based, consecutive.
    pub seq: u64,
    /// When the attempt was recorded, RFC 3339 UTC with milliseconds.
    pub time: String,
    /// The request id (a UUID) returned to the caller.
    pub request_id: String,
    /// The authenticated principal (or what it claimed to be, if denied).
    pub principal: String,
    /// The AWS operation name, e.g. `ReEncrypt`.
    pub operation: String,
    /// The keys used: source then destination for `ReEncrypt`.
    pub keys: Vec<AuditKey>,
    /// The encryption context of the request, if any.
    pub encryption_context: Option<BTreeMap<String, String>>,
    /// The destination encryption context of a `ReEncrypt`, if any.
    pub destination_encryption_context: Option<BTreeMap<String, String>>,
    /// [`DECISION_ALLOW`] or [`DECISION_DENY`].
    pub decision: String,
    /// The policy file and statement that decided.
    pub decided_by: String,
    /// [`OUTCOME_SUCCESS`] or the AWS error name, e.g. `AccessDeniedException`.
    pub outcome: String,
    /// The caller's IP address, for requests that came over the network.
    pub source_ip: Option<String>,
    /// The caller's user agent, if it sent one.
    pub user_agent: Option<String>,
    /// The access key id that signed the request, for requests that came
    /// over the network (also when it is unknown or its signature failed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_key_id: Option<String>,
    /// What the operation acted on besides keys: the alias name, the target
    /// principal and access key id, `Force`, a repair's details. Absent when
    /// empty, so records written before this field existed still verify.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_parameters: Option<BTreeMap<String, String>>,
    /// The object the caller says the key use is for (a file's path, an
    /// object's URL): the rotation worker names each item it re-wraps, as a
    /// SOPS file cannot name itself in its encryption context. Sent over the
    /// wire as the signed [`OBJECT_HEADER`]; absent for other callers, and
    /// then not serialized, so records written before this field existed
    /// still verify.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object: Option<String>,
    /// The `hash` of the previous record, or [`GENESIS_HASH`].
    pub prev_hash: String,
    /// Hex SHA-256 of this record's canonical serialization (see module doc).
    pub hash: String,
}

/// Appends the stored line of `record` (whose `hash` must be empty) to
/// `buf`, newline included, and returns the hash it filled in.
pub(super) fn encode_line(record: &AuditRecord, buf: &mut Vec<u8>) -> String {
    debug_assert!(record.hash.is_empty());
    let start = buf.len();
    serde_json::to_writer(&mut *buf, record).expect("an audit record always serializes");
    debug_assert!(buf.ends_with(EMPTY_HASH_TAIL));
    let digest = Sha256::digest(&buf[start..]);
    let mut hex_hash = [0u8; 64];
    hex::encode_to_slice(digest, &mut hex_hash).expect("64 hex digits for 32 bytes");
    // Replace the closing `"}` of `"hash":""}` with `<hex>"}` and a newline.
    buf.truncate(buf.len() - 2);
    buf.extend_from_slice(&hex_hash);
    buf.extend_from_slice(b"\"}\n");
    String::from_utf8(hex_hash.to_vec()).expect("hex is ASCII")
}

pub(super) fn parse_record(line: u64, bytes: &[u8]) -> Result<AuditRecord, AuditError> {
    serde_json::from_slice(bytes).map_err(|e| AuditError::Malformed {
        line,
        problem: format!("not an audit record: {e}"),
    })
}

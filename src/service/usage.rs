//! The deletion interlock (DisableKey and ScheduleKeyDeletion refuse a key
//! that still wraps envelopes' data keys), the last-use date of
//! DescribeKey, the audit parameters of a request, and the audit records of
//! requests refused before any operation ran.
//!
//! The interlock asks the audit trail's usage index (`audit/usage.rs`):
//! every GenerateDataKey and ReEncrypt of an envelope's data key carries
//! `rewrap:file-id`, so the KMS itself knows which files each key wrapped
//! last, whoever the client was. Deleting the file of an envelope does not
//! tell the KMS; such a key is disabled or deleted with `Force`.

use super::authz::{audit_failed, Trail};
use super::{Caller, KmsService};
use crate::api::Operation;
use crate::audit::{AuditRecord, DECISION_DENY};
use crate::error::{ErrorCode, KmsError, Result};
use std::collections::BTreeMap;

/// A request the server refused before running an operation: a failed or
/// missing signature, an unknown access key, an unknown operation, a wrong
/// content type, an unreadable body. Recorded in the audit trail all the
/// same.
#[derive(Debug, Clone, Default)]
pub struct RejectedRequest {
    /// The principal, when the access key is known.
    pub principal: Option<String>,
    /// The access key id the request claimed, if any.
    pub access_key_id: Option<String>,
    /// The peer address.
    pub source_ip: Option<String>,
    /// The `User-Agent` header.
    pub user_agent: Option<String>,
    /// The operation the request named, if it named a known one.
    pub operation: Option<String>,
    /// The AWS error name the request was answered with.
    pub error: String,
    /// The request id it was answered with (`x-amzn-RequestId`).
    pub request_id: String,
}

/// What the audit record of an operation on aliases, principals, access
/// keys or a key's deletion should name besides the keys: the request's
/// `AliasName`, `TargetKeyId`, `PrincipalName`, `AccessKeyId`, `Force` and
/// `PendingWindowInDays`. `None` for every other operation (no cost on the
/// cryptographic path).
pub(super) fn audit_parameters<T: serde::Serialize>(
    op: Operation,
    request: &T,
) -> Option<BTreeMap<String, String>> {
    use Operation as O;
    if !matches!(
        op,
        O::CreateAlias
            | O::UpdateAlias
            | O::DeleteAlias
            | O::CreatePrincipal
            | O::DeletePrincipal
            | O::CreateAccessKey
            | O::DeleteAccessKey
            | O::DisableKey
            | O::ScheduleKeyDeletion
    ) {
        return None;
    }
    let serde_json::Value::Object(fields) = serde_json::to_value(request).ok()? else {
        return None;
    };
    const NAMED: [&str; 6] = [
        "AliasName",
        "TargetKeyId",
        "PrincipalName",
        "AccessKeyId",
        "Force",
        "PendingWindowInDays",
    ];
    let params: BTreeMap<String, String> = fields
        .into_iter()
        .filter(|(k, _)| NAMED.contains(&k.as_str()))
        .map(|(k, v)| match v {
            serde_json::Value::String(s) => (k, s),
            other => (k, other.to_string()),
        })
        .collect();
    (!params.is_empty()).then_some(params)
}

impl KmsService {
    /// The deletion interlock: refuses (KMSInvalidStateException) to
    /// `verb` the key `arn` while the usage index says it still wraps the
    /// data key of some envelope, unless `force`. A forced use is recorded
    /// in the audit record with the count.
    pub(super) fn check_key_unused(
        &self,
        trail: &mut Trail,
        arn: &str,
        force: bool,
        verb: &str,
    ) -> Result<()> {
        let usage = self.audit.key_usage(arn).map_err(audit_failed)?;
        if usage.envelopes == 0 {
            return Ok(());
        }
        trail.param("EnvelopesWrapped", usage.envelopes.to_string());
        if force {
            return Ok(());
        }
        Err(KmsError::new(
            ErrorCode::InvalidState,
            format!(
                "{arn} still wraps the data keys of {} envelope(s) (as this KMS last wrapped them); \
                 re-wrap them under another key first (rewrap rotate --to KEY), or {verb} anyway \
                 with Force (rewrap: --force)",
                usage.envelopes
            ),
        ))
    }

    /// When the key `arn` was last used for cryptography, from the usage
    /// index (seconds since the Unix epoch).
    pub(super) fn last_used(&self, arn: &str) -> Option<f64> {
        // The small last-used index, not the per-envelope one (issue 14).
        let last = self.audit.last_used(arn).ok()??;
        let t = chrono::DateTime::parse_from_rfc3339(&last).ok()?;
        Some(t.timestamp_millis() as f64 / 1000.0)
    }

    /// Records a request the server refused before any operation ran. A
    /// failure to write it is reported on stderr: the request is refused
    /// anyway.
    pub fn audit_rejected(&self, r: &RejectedRequest) {
        let record = AuditRecord {
            request_id: r.request_id.clone(),
            principal: r.principal.clone().unwrap_or_default(),
            operation: r.operation.clone().unwrap_or_default(),
            decision: DECISION_DENY.into(),
            decided_by: "request refused before authorization".into(),
            outcome: r.error.clone(),
            source_ip: r.source_ip.clone(),
            user_agent: r.user_agent.clone(),
            access_key_id: r.access_key_id.clone(),
            ..AuditRecord::default()
        };
        if let Err(e) = self.audit.append(record) {
            eprintln!("rewrap: cannot record a refused request in the audit trail: {e}");
        }
    }

    /// Records a signed request whose body did not parse: the operation
    /// never ran, so it left no record of its own.
    pub(super) fn audit_malformed(&self, caller: &Caller, op: Operation, error: &KmsError) {
        let (record, _) = self.run_audited(caller, op.name(), 0, |_| Err::<(), _>(error.clone()));
        if let Err(e) = self.audit.append(record) {
            eprintln!("rewrap: cannot record a malformed request in the audit trail: {e}");
        }
    }
}

//! VerifyAuditTrail and GetAuditReport: the audit trail read through the
//! KMS (rewrap extensions), for principals with `rewrap:ReadAuditTrail`, so
//! an auditor needs no access to the keystore folder.
//!
//! Both check the policy, do their work and only then append their own
//! record, so a verification sees the trail as it found it.

use super::{page, Caller, KmsService};
use crate::api::{
    AuditReportRequest, AuditReportResponse, AuditReportRow, Empty, Operation,
    VerifyAuditTrailResponse,
};
use crate::audit::{AuditError, ReportFilter};
use crate::error::{KmsError, Result};
use crate::operation::Action;
use chrono::SecondsFormat;

impl KmsService {
    /// Closes the audit trail's active file into a segment now, whatever
    /// its size or age (an operator's or a benchmark's way to cut one);
    /// `None` if the active file was empty.
    pub fn close_audit_segment(
        &self,
    ) -> std::result::Result<Option<crate::audit::SegmentHeader>, AuditError> {
        self.audit.close_segment()
    }

    /// The audit-signing public keys, oldest first (hex), creating the
    /// first signing key if the trail has none yet.
    pub fn audit_public_keys(&self) -> std::result::Result<Vec<String>, AuditError> {
        self.audit.public_keys()
    }

    /// Adds a new audit-signing key (the old public keys stay listed) and
    /// signs a digest with it; returns every public key, oldest first.
    pub fn rotate_audit_signing_key(&self) -> std::result::Result<Vec<String>, AuditError> {
        self.audit.rotate_signing_key()
    }

    /// Copies the closed segments and signed digests to `location`
    /// (create-only puts; resumable).
    pub fn export_audit_trail(
        &self,
        location: &crate::objstore::ObjectLocation,
    ) -> std::result::Result<crate::audit::ExportReport, AuditError> {
        crate::audit::export(self.audit.path(), location)
    }

    /// Removes the closed segments older than `older_than_days` (default:
    /// the keystore's `retention_days`; none: nothing) that were exported
    /// and are listed by a signed digest; the removal is signed in a digest
    /// and recorded in the trail (`PruneAuditTrail`).
    pub fn prune_audit_trail(
        &self,
        caller: &Caller,
        older_than_days: Option<u64>,
    ) -> Result<crate::audit::Pruned> {
        self.audited_named(
            caller,
            "PruneAuditTrail",
            Action::ScheduleKeyDeletion.bit(),
            |trail| {
                self.authorize(
                    trail,
                    caller,
                    Action::ScheduleKeyDeletion,
                    &["*".into()],
                    None,
                )?;
                let Some(days) = older_than_days.or(self.config().audit.retention_days) else {
                    return Ok(crate::audit::Pruned::default());
                };
                let retention = std::time::Duration::from_secs(days.saturating_mul(86_400));
                let pruned = self
                    .audit
                    .prune(retention)
                    .map_err(|e| KmsError::internal(format!("audit trail: {e}")))?;
                trail.param("Segments", pruned.segments.join(","));
                trail.param("ThroughSeq", pruned.through_seq.to_string());
                trail.param("ThroughHash", pruned.through_hash.clone());
                Ok(pruned)
            },
        )
    }

    pub(super) fn verify_audit_trail(
        &self,
        caller: &Caller,
        _: &Empty,
    ) -> Result<VerifyAuditTrailResponse> {
        self.audited(caller, Operation::VerifyAuditTrail, |trail| {
            self.authorize(trail, caller, Action::ReadAuditTrail, &["*".into()], None)?;
            Ok(match self.verify_audit() {
                Ok(s) => VerifyAuditTrailResponse {
                    intact: true,
                    problem: None,
                    records: s.records,
                    last_hash: s.last_hash,
                    truncated_final_record: s.truncated_final_record,
                    repairs: s.repairs,
                    checkpoint_missing: s.checkpoint_missing,
                    checkpoint_checked: s.checkpoint_checked,
                },
                Err(
                    e @ (AuditError::Tampered { .. }
                    | AuditError::Truncated { .. }
                    | AuditError::Malformed { .. }),
                ) => VerifyAuditTrailResponse {
                    intact: false,
                    problem: Some(e.to_string()),
                    ..VerifyAuditTrailResponse::default()
                },
                Err(e) => return Err(KmsError::internal(format!("audit trail: {e}"))),
            })
        })
    }

    pub(super) fn get_audit_report(
        &self,
        caller: &Caller,
        r: &AuditReportRequest,
    ) -> Result<AuditReportResponse> {
        self.audited(caller, Operation::GetAuditReport, |trail| {
            self.authorize(trail, caller, Action::ReadAuditTrail, &["*".into()], None)?;
            let since = r
                .since
                .as_deref()
                .map(|s| {
                    chrono::DateTime::parse_from_rfc3339(s)
                        .map(|t| t.with_timezone(&chrono::Utc))
                        .map_err(|_| KmsError::validation(format!("Since {s:?} is not RFC 3339")))
                })
                .transpose()?;
            // An alias is resolved now (an unknown one is NotFound, never an
            // empty report); key ids and ARNs match even after purging.
            let key = match r.key_id.as_deref() {
                Some(name) if name.contains("alias/") => {
                    let snap = self.snapshot()?;
                    Some(self.key_arn(&self.lookup(&snap, name)?.id))
                }
                other => other.map(str::to_string),
            };
            let filter = ReportFilter {
                since,
                key,
                principal: r.principal_name.clone(),
            };
            let report = crate::audit::report(self.audit.path(), &filter)
                .map_err(|e| KmsError::internal(format!("audit trail: {e}")))?;
            let (rows, next_marker) = page(&report.rows, r.limit, &r.marker)?;
            Ok(AuditReportResponse {
                rows: rows
                    .into_iter()
                    .map(|u| AuditReportRow {
                        key: u.key,
                        principal: u.principal,
                        operation: u.operation,
                        count: u.count,
                        denied: u.denied,
                        errors: u.errors,
                        last_used: u.last_used.to_rfc3339_opts(SecondsFormat::Millis, true),
                    })
                    .collect(),
                truncated: next_marker.is_some(),
                next_marker,
            })
        })
    }
}

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

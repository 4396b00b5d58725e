//! Usage per key, principal and operation, and the last use of each key.

use super::read::Lines;
use super::record::{AuditRecord, DECISION_DENY, OUTCOME_SUCCESS};
use super::AuditError;
use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::Path;

/// Which records a [`report`] counts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReportFilter {
    /// Only records at or after this time.
    pub since: Option<DateTime<Utc>>,
    /// Only this key: a full ARN, or a suffix after its last `/` or `:`
    /// (the key id, or `key/<id>`).
    pub key: Option<String>,
    /// Only this principal (exact match).
    pub principal: Option<String>,
}

impl ReportFilter {
    fn matches_key(&self, arn: &str) -> bool {
        match &self.key {
            None => true,
            Some(key) => {
                arn == key
                    || arn
                        .strip_suffix(key.as_str())
                        .is_some_and(|head| head.ends_with('/') || head.ends_with(':'))
            }
        }
    }
}

/// The key column of operations that name no key (`ListKeys`, ...).
pub const NO_KEY: &str = "-";

/// Usage of one key by one principal through one operation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UsageRow {
    /// Key ARN, or [`NO_KEY`].
    pub key: String,
    /// The principal.
    pub principal: String,
    /// The AWS operation name.
    pub operation: String,
    /// Attempts, allowed or denied.
    pub count: u64,
    /// Attempts the policy denied.
    pub denied: u64,
    /// Allowed attempts that failed (outcome not `Success`).
    pub errors: u64,
    /// The latest attempt.
    pub last_used: DateTime<Utc>,
}

/// Usage per (key, principal, operation), sorted by those three.
///
/// A `ReEncrypt` counts once for its source key and once for its destination
/// key (once if they are the same key).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct UsageReport {
    /// One row per (key, principal, operation).
    pub rows: Vec<UsageRow>,
}

impl UsageReport {
    /// The report as a table with aligned columns, one row per line.
    pub fn to_table(&self) -> String {
        let header = [
            "KEY",
            "PRINCIPAL",
            "OPERATION",
            "COUNT",
            "DENIED",
            "ERRORS",
            "LAST USED",
        ];
        let cells: Vec<[String; 7]> = self
            .rows
            .iter()
            .map(|r| {
                [
                    r.key.clone(),
                    r.principal.clone(),
                    r.operation.clone(),
                    r.count.to_string(),
                    r.denied.to_string(),
                    r.errors.to_string(),
                    r.last_used.to_rfc3339_opts(SecondsFormat::Millis, true),
                ]
            })
            .collect();
        let mut widths = header.map(str::len);
        for row in &cells {
            for (width, cell) in widths.iter_mut().zip(row) {
                *width = (*width).max(cell.chars().count());
            }
        }
        let mut out = String::new();
        let header = header.map(str::to_string);
        for row in std::iter::once(&header).chain(&cells) {
            let mut line = String::new();
            for (i, cell) in row.iter().enumerate() {
                let pad = widths[i] - cell.chars().count();
                if i > 0 {
                    line.push_str("  ");
                }
                // Counts are right-aligned, text left-aligned.
                if (3..6).contains(&i) {
                    line.extend(std::iter::repeat_n(' ', pad));
                    line.push_str(cell);
                } else {
                    line.push_str(cell);
                    line.extend(std::iter::repeat_n(' ', pad));
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

fn record_time(line: u64, record: &AuditRecord) -> Result<DateTime<Utc>, AuditError> {
    DateTime::parse_from_rfc3339(&record.time)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| AuditError::Malformed {
            line,
            problem: format!("time {:?} is not RFC 3339: {e}", record.time),
        })
}

/// The distinct key ARNs of a record, or [`NO_KEY`] if it names none.
fn distinct_keys(record: &AuditRecord) -> Vec<&str> {
    let mut keys: Vec<&str> = Vec::with_capacity(2);
    for key in &record.keys {
        if !keys.contains(&key.arn.as_str()) {
            keys.push(&key.arn);
        }
    }
    if keys.is_empty() {
        keys.push(NO_KEY);
    }
    keys
}

/// Summarises the audit file per (key, principal, operation).
///
/// Reads every complete record (it does not verify the chain; use
/// [`verify`](super::verify())). With a key filter, operations that name no
/// key are left out.
pub fn report(path: &Path, filter: &ReportFilter) -> Result<UsageReport, AuditError> {
    let mut groups: BTreeMap<(String, String, String), UsageRow> = BTreeMap::new();
    Lines::for_each_record(path, |line, record| {
        if filter
            .principal
            .as_ref()
            .is_some_and(|p| *p != record.principal)
        {
            return Ok(());
        }
        let time = record_time(line, &record)?;
        if filter.since.is_some_and(|since| time < since) {
            return Ok(());
        }
        let denied = record.decision == DECISION_DENY;
        let failed = !denied && record.outcome != OUTCOME_SUCCESS;
        for key in distinct_keys(&record) {
            if filter.key.is_some() && (key == NO_KEY || !filter.matches_key(key)) {
                continue;
            }
            let group = (
                key.to_string(),
                record.principal.clone(),
                record.operation.clone(),
            );
            let row = groups.entry(group).or_insert_with(|| UsageRow {
                key: key.to_string(),
                principal: record.principal.clone(),
                operation: record.operation.clone(),
                count: 0,
                denied: 0,
                errors: 0,
                last_used: time,
            });
            row.count += 1;
            row.denied += u64::from(denied);
            row.errors += u64::from(failed);
            row.last_used = row.last_used.max(time);
        }
        Ok(())
    })?;
    Ok(UsageReport {
        rows: groups.into_values().collect(),
    })
}

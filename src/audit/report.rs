//! Usage per key, principal and operation, and the last use of each key.

use super::read::Lines;
use super::record::{AuditRecord, DECISION_DENY, OUTCOME_SUCCESS};
use super::AuditError;
use chrono::{DateTime, Utc};
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
    /// Key ARN -> its alias names, as far as the reader may list them
    /// (filled in by [`UsageReport::name_aliases`]).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub key_aliases: BTreeMap<String, Vec<String>>,
}

/// The widest line [`UsageReport::to_table`] prints, in characters.
pub const TABLE_WIDTH: usize = 100;
/// Principal names longer than this are cut in the table (JSON has them whole).
const PRINCIPAL_WIDTH: usize = 20;

/// The key id of a key ARN (`arn:...:key/<id>` -> `<id>`); other names as they are.
pub fn key_id_of(arn: &str) -> &str {
    arn.rsplit_once(":key/").map_or(arn, |(_, id)| id)
}

/// `text` cut to `width` characters, the last one an ellipsis when cut.
pub fn clip(text: &str, width: usize) -> String {
    if text.chars().count() <= width {
        return text.to_string();
    }
    let mut out: String = text.chars().take(width.saturating_sub(1)).collect();
    out.push('\u{2026}');
    out
}

impl UsageReport {
    /// Names each key's aliases: `by_key_id` maps a key id to its alias
    /// names (as ListAliases gives them).
    pub fn name_aliases(&mut self, by_key_id: &std::collections::HashMap<String, Vec<String>>) {
        for row in &self.rows {
            if let Some(names) = by_key_id.get(key_id_of(&row.key)) {
                let mut names = names.clone();
                names.sort();
                self.key_aliases.insert(row.key.clone(), names);
            }
        }
    }

    /// The report as a table that fits in [`TABLE_WIDTH`] columns: one line
    /// per key (its key id and alias names, not the 75-character ARN), then
    /// its rows indented, columns aligned, times to the minute (UTC).
    pub fn to_table(&self) -> String {
        let header = [
            "PRINCIPAL",
            "OPERATION",
            "USES",
            "DENIED",
            "ERRORS",
            "LAST USED (UTC)",
        ];
        let cells = |r: &UsageRow| {
            [
                clip(&r.principal, PRINCIPAL_WIDTH),
                r.operation.clone(),
                r.count.to_string(),
                r.denied.to_string(),
                r.errors.to_string(),
                r.last_used.format("%Y-%m-%d %H:%M").to_string(),
            ]
        };
        let mut widths = header.map(str::len);
        for row in self.rows.iter().map(cells) {
            for (width, cell) in widths.iter_mut().zip(&row) {
                *width = (*width).max(cell.chars().count());
            }
        }
        let line = |row: &[String; 6]| {
            let mut line = String::from("  ");
            for (i, cell) in row.iter().enumerate() {
                let pad = widths[i] - cell.chars().count();
                if i > 0 {
                    line.push_str("  ");
                }
                // Counts are right-aligned, text left-aligned.
                if (2..5).contains(&i) {
                    line.extend(std::iter::repeat_n(' ', pad));
                    line.push_str(cell);
                } else {
                    line.push_str(cell);
                    line.extend(std::iter::repeat_n(' ', pad));
                }
            }
            format!("{}\n", line.trim_end())
        };
        let mut out = line(&header.map(str::to_string));
        let mut current: Option<&str> = None;
        for row in &self.rows {
            if current != Some(row.key.as_str()) {
                current = Some(&row.key);
                out.push_str(&clip(&self.key_line(&row.key), TABLE_WIDTH));
                out.push('\n');
            }
            out.push_str(&line(&cells(row)));
        }
        out
    }

    /// `key <id>  alias/a, alias/b`, or `no key` for operations naming none.
    fn key_line(&self, arn: &str) -> String {
        if arn == NO_KEY {
            return "no key".to_string();
        }
        match self.key_aliases.get(arn) {
            Some(names) if !names.is_empty() => {
                format!("key {}  {}", key_id_of(arn), names.join(", "))
            }
            _ => format!("key {}", key_id_of(arn)),
        }
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

/// Calls `visit` with every record `filter` admits, its time and its keys
/// (each distinct key the filter admits, or [`NO_KEY`]).
fn for_each_admitted(
    path: &Path,
    filter: &ReportFilter,
    mut visit: impl FnMut(DateTime<Utc>, &AuditRecord, &[&str]),
) -> Result<(), AuditError> {
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
        let keys: Vec<&str> = distinct_keys(&record)
            .into_iter()
            .filter(|key| filter.key.is_none() || (*key != NO_KEY && filter.matches_key(key)))
            .collect();
        if !keys.is_empty() {
            visit(time, &record, &keys);
        }
        Ok(())
    })
}

/// Summarises the audit file per (key, principal, operation).
///
/// Reads every complete record (it does not verify the chain; use
/// [`verify`](super::verify())). With a key filter, operations that name no
/// key are left out.
pub fn report(path: &Path, filter: &ReportFilter) -> Result<UsageReport, AuditError> {
    let mut groups: BTreeMap<(String, String, String), UsageRow> = BTreeMap::new();
    for_each_admitted(path, filter, |time, record, keys| {
        let denied = record.decision == DECISION_DENY;
        let failed = !denied && record.outcome != OUTCOME_SUCCESS;
        for key in keys {
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
    })?;
    Ok(UsageReport {
        rows: groups.into_values().collect(),
        key_aliases: BTreeMap::new(),
    })
}

/// How many denied attempts [`activity`] keeps (the most recent).
pub const DENIED_KEPT: usize = 200;

/// One attempt the policy denied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeniedAttempt {
    /// When.
    pub time: DateTime<Utc>,
    /// Who (or who it claimed to be).
    pub principal: String,
    /// The AWS operation name.
    pub operation: String,
    /// The keys it named (ARNs; empty if none).
    pub keys: Vec<String>,
    /// The statement that denied, or why the deny was implicit.
    pub decided_by: String,
}

/// Key use over time and the denied attempts, as the HTML report draws them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Activity {
    /// (key ARN or [`NO_KEY`], operation, UTC day `YYYY-MM-DD`) -> attempts.
    pub per_day: BTreeMap<(String, String, String), u64>,
    /// The most recent denied attempts, at most [`DENIED_KEPT`], oldest first.
    pub denied: Vec<DeniedAttempt>,
    /// Every denied attempt the filter admits.
    pub denied_total: u64,
}

/// Key use per day and operation, and the denied attempts, of the records
/// `filter` admits (one pass; does not verify the chain).
pub fn activity(path: &Path, filter: &ReportFilter) -> Result<Activity, AuditError> {
    let mut out = Activity::default();
    let mut denied = std::collections::VecDeque::with_capacity(DENIED_KEPT);
    for_each_admitted(path, filter, |time, record, keys| {
        let day = time.format("%Y-%m-%d").to_string();
        for key in keys {
            let slot = (key.to_string(), record.operation.clone(), day.clone());
            *out.per_day.entry(slot).or_default() += 1;
        }
        if record.decision == DECISION_DENY {
            out.denied_total += 1;
            if denied.len() == DENIED_KEPT {
                denied.pop_front();
            }
            denied.push_back(DeniedAttempt {
                time,
                principal: record.principal.clone(),
                operation: record.operation.clone(),
                keys: record.keys.iter().map(|k| k.arn.clone()).collect(),
                decided_by: record.decided_by.clone(),
            });
        }
    })?;
    out.denied = denied.into();
    Ok(out)
}

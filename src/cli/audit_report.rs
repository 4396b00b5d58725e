//! `rewrap audit report`: usage per key, principal and operation, from the
//! keystore's trail, a copied trail (`--file`) or a KMS (`--endpoint-url`),
//! as a table, JSON or a self-contained HTML page.
//!
//! A key may be named any way a KMS command takes it: key id, key ARN,
//! alias name or alias ARN. An alias is resolved through the KMS
//! (DescribeKey), so an unknown alias is `NotFoundException` (exit 254),
//! never an empty report.

use super::{ConfigError, Context, OpError, UsageError};
use rewrap::api::{AuditReportRequest, KeyIdRequest};
use rewrap::audit::{self, ReportFilter, UsageReport};
use rewrap::kms::Kms;
use std::path::PathBuf;
use std::sync::Arc;

/// `rewrap audit report` arguments.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct ReportArgs {
    /// Only records at or after this time (RFC 3339 or YYYY-MM-DD).
    #[arg(long)]
    pub(crate) since: Option<String>,
    /// Only this key (key id, key ARN, alias name or alias ARN).
    #[arg(long = "key-id", alias = "key", value_name = "KEY")]
    pub(crate) key: Option<String>,
    /// Only this principal.
    #[arg(long)]
    pub(crate) principal: Option<String>,
    /// The audit file [default: <keystore>/audit.log].
    #[arg(long)]
    pub(crate) file: Option<PathBuf>,
    /// table or json [default: as --output], or html: one self-contained
    /// page (charts of key use over time, denied attempts, principals per
    /// key, stale envelopes from the last inventories, the verify result).
    #[arg(long, value_enum, value_name = "FORMAT")]
    pub(crate) format: Option<ReportFormat>,
    /// Write the report to FILE instead of stdout.
    #[arg(short = 'o', long = "out-file", value_name = "FILE")]
    pub(crate) out_file: Option<PathBuf>,
}

/// How `audit report` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum ReportFormat {
    /// Grouped by key, fits in 100 columns.
    Table,
    /// The rows as JSON (`--query` applies).
    Json,
    /// A self-contained HTML page (no network fetches, no scripts).
    Html,
}

/// What a report was read from, and with which rights.
struct Gathered {
    report: UsageReport,
    filter: ReportFilter,
    /// The local trail read (`None`: a remote KMS).
    path: Option<PathBuf>,
    /// The keystore's service, when the keystore's own trail was read.
    service: Option<Arc<rewrap::service::KmsService>>,
    kms: Option<Arc<dyn Kms>>,
}

/// Whether `key` names an alias (`alias/x` or an alias ARN).
pub(crate) fn names_alias(key: &str) -> bool {
    key.starts_with("alias/") || (key.starts_with("arn:") && key.contains(":alias/"))
}

/// The key ARN an alias points to (DescribeKey); other names as given
/// (a key id or ARN still matches after the key itself is gone).
pub(crate) fn resolve_key(kms: &dyn Kms, key: &str) -> anyhow::Result<String> {
    if !names_alias(key) {
        return Ok(key.to_string());
    }
    let described = kms
        .describe_key(&KeyIdRequest {
            key_id: key.to_string(),
            grant_tokens: None,
        })
        .map_err(|error| OpError {
            operation: "DescribeKey",
            error,
        })?;
    Ok(described.key_metadata.arn)
}

/// The usage report the arguments ask for, with alias names beside keys
/// (as far as the caller may list aliases).
fn gather(a: &ReportArgs, ctx: &Context) -> anyhow::Result<Gathered> {
    let since = a.since.as_deref().map(parse_since).transpose()?;
    // With --file the trail may be a copy read without any keystore: a KMS
    // is needed only to resolve an alias.
    let kms: Option<Arc<dyn Kms>> = match (&a.file, &a.key) {
        (Some(_), Some(k)) if !names_alias(k) => ctx.kms().ok(),
        (Some(_), None) => ctx.kms().ok(),
        _ => Some(ctx.kms()?),
    };
    let key = match (&a.key, &kms) {
        (Some(k), Some(kms)) => Some(resolve_key(&**kms, k)?),
        (k, _) => k.clone(),
    };
    let filter = ReportFilter {
        since,
        key,
        principal: a.principal.clone(),
    };
    let mut service = None;
    let mut path = None;
    let mut report = match (&a.file, &ctx.global.endpoint_url) {
        (Some(_), Some(_)) => {
            return Err(ConfigError(
                "--file reads a local trail; it cannot be used with --endpoint-url".into(),
            )
            .into())
        }
        (None, Some(_)) => {
            let kms = kms.as_deref().expect("a remote KMS");
            remote_report(kms, &filter)?
        }
        (file, None) => {
            let trail = if let Some(p) = file {
                p.clone()
            } else {
                let (s, p) = readable_trail(ctx)?;
                service = Some(s);
                p
            };
            let report = audit::report(&trail, &filter)?;
            path = Some(trail);
            report
        }
    };
    if let Some(kms) = &kms {
        let by_id = rewrap::worker::aliases_by_key(&**kms);
        report.name_aliases(&by_id);
    }
    Ok(Gathered {
        report,
        filter,
        path,
        service,
        kms,
    })
}

/// `rewrap audit report`: prints (or writes) the report as a table, JSON
/// or an HTML page.
pub(crate) fn run(a: &ReportArgs, ctx: &Context) -> anyhow::Result<i32> {
    let format = a
        .format
        .unwrap_or(if ctx.json_output() || ctx.global.query.is_some() {
            ReportFormat::Json
        } else {
            ReportFormat::Table
        });
    if format == ReportFormat::Html && ctx.global.endpoint_url.is_some() {
        return Err(UsageError(
            "--format html reads a local trail (the keystore's or --file), not --endpoint-url"
                .into(),
        )
        .into());
    }
    if let Some(out) = &a.out_file {
        super::batch::check_writable(out)
            .map_err(|e| UsageError(format!("cannot write {}: {e}", out.display())))?;
    }
    let g = gather(a, ctx)?;
    let text = match format {
        ReportFormat::Html => html_page(&g)?,
        ReportFormat::Table => g.report.to_table(),
        ReportFormat::Json if a.out_file.is_none() => {
            ctx.print_value(&serde_json::to_value(&g.report)?)?;
            return Ok(0);
        }
        ReportFormat::Json => serde_json::to_string_pretty(&g.report)? + "\n",
    };
    match &a.out_file {
        Some(out) => write_atomically(out, text.as_bytes())?,
        None => print!("{text}"),
    }
    Ok(0)
}

/// Writes `bytes` to `path` through a temporary file renamed into place.
fn write_atomically(path: &std::path::Path, bytes: &[u8]) -> anyhow::Result<()> {
    use anyhow::Context as _;
    use std::io::Write as _;
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => std::path::Path::new("."),
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(".rewrap-tmp-")
        .tempfile_in(dir)
        .with_context(|| format!("cannot write {}", path.display()))?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

/// The HTML page of a local trail: the usage report plus use over time,
/// denied attempts, the verify result and the last inventories.
fn html_page(g: &Gathered) -> anyhow::Result<String> {
    let path = g.path.as_ref().expect("a local trail");
    let activity = audit::activity(path, &g.filter)?;
    let verify = Some(
        match &g.service {
            Some(service) => service.verify_audit().map(|s| s.to_string()),
            None => audit::verify(path).map(|s| s.to_string()),
        }
        .map_err(|e| e.to_string()),
    );
    let inventories = match &g.service {
        Some(service) => inventory_shares(service.home(), g.kms.as_deref()),
        None => Vec::new(),
    };
    let mut scope = Vec::new();
    if let Some(k) = &g.filter.key {
        scope.push(format!("key {k}"));
    }
    if let Some(p) = &g.filter.principal {
        scope.push(format!("principal {p}"));
    }
    if let Some(t) = &g.filter.since {
        scope.push(format!("since {}", t.to_rfc3339()));
    }
    let page = audit::html::HtmlReport {
        trail: path.display().to_string(),
        generated_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        scope: if scope.is_empty() {
            "all records".into()
        } else {
            scope.join(", ")
        },
        verify,
        usage: &g.report,
        activity: &activity,
        inventories: &inventories,
    };
    Ok(page.render())
}

/// The last inventory of each set of roots, with the share of envelopes not
/// under their key's newest version (DescribeKey, once per key).
fn inventory_shares(
    home: &std::path::Path,
    kms: Option<&dyn Kms>,
) -> Vec<audit::html::InventoryShare> {
    let mut newest: std::collections::HashMap<String, Option<u32>> =
        std::collections::HashMap::new();
    let mut describe = |arn: &str| -> Option<u32> {
        *newest.entry(arn.to_string()).or_insert_with(|| {
            let kms = kms?;
            kms.describe_key(&KeyIdRequest {
                key_id: arn.to_string(),
                grant_tokens: None,
            })
            .ok()
            .map(|r| r.key_metadata.key_material_versions)
        })
    };
    rewrap::worker::read_summaries(home)
        .into_iter()
        .map(|s| audit::html::InventoryShare {
            keys: s
                .keys
                .iter()
                .map(|(arn, versions)| {
                    let envelopes = versions.values().sum();
                    let stale = describe(arn).map(|newest| {
                        versions
                            .iter()
                            .filter(|(v, _)| {
                                newest != 0 && v.parse::<u32>().is_ok_and(|v| v < newest)
                            })
                            .map(|(_, n)| n)
                            .sum()
                    });
                    audit::html::KeyShare {
                        key: arn.clone(),
                        envelopes,
                        stale,
                    }
                })
                .collect(),
            roots: s.roots,
            seen_at: s.seen_at,
            recorded_by: s.recorded_by,
        })
        .collect()
}

/// The keystore's service and its own trail, once the caller is known to
/// hold `rewrap:ReadAuditTrail`.
fn readable_trail(ctx: &Context) -> anyhow::Result<(Arc<rewrap::service::KmsService>, PathBuf)> {
    let (service, principal) = ctx.authenticated_service()?;
    service
        .with_access(&principal, rewrap::policy::Action::ReadAuditTrail, || ())
        .map_err(|error| OpError {
            operation: "ReadAuditTrail",
            error,
        })?;
    let path = service.audit_path();
    Ok((service, path))
}

/// The report of a remote KMS, read page by page (GetAuditReport).
fn remote_report(kms: &dyn Kms, filter: &ReportFilter) -> anyhow::Result<UsageReport> {
    let mut request = AuditReportRequest {
        since: filter
            .since
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
        key_id: filter.key.clone(),
        principal_name: filter.principal.clone(),
        limit: Some(1000),
        marker: None,
    };
    let mut rows = Vec::new();
    loop {
        let page = kms.get_audit_report(&request).map_err(|error| OpError {
            operation: "GetAuditReport",
            error,
        })?;
        rows.extend(page.rows);
        match page.next_marker {
            Some(m) => request.marker = Some(m),
            None => break,
        }
    }
    let rows = rows
        .into_iter()
        .map(|r| {
            Ok(audit::UsageRow {
                last_used: chrono::DateTime::parse_from_rfc3339(&r.last_used)?
                    .with_timezone(&chrono::Utc),
                key: r.key,
                principal: r.principal,
                operation: r.operation,
                count: r.count,
                denied: r.denied,
                errors: r.errors,
            })
        })
        .collect::<anyhow::Result<_>>()?;
    Ok(UsageReport {
        rows,
        ..UsageReport::default()
    })
}

/// `--since`: RFC 3339, or a day (midnight UTC).
pub(crate) fn parse_since(s: &str) -> anyhow::Result<chrono::DateTime<chrono::Utc>> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&chrono::Utc));
    }
    let day = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .map_err(|_| UsageError(format!("--since {s:?}: use RFC 3339 or YYYY-MM-DD")))?;
    Ok(day.and_hms_opt(0, 0, 0).expect("midnight").and_utc())
}

//! `rewrap policy report`: who holds administer / encrypt / decrypt /
//! re-encrypt / audit on each key, under which conditions, and which denies
//! override which allows, as a table, JSON or CSV. Read from the local
//! keystore and every policy folder it loads; needs `rewrap:CheckPolicy`.

use super::{ConfigError, Context, OpError};

/// How `policy report` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Format {
    /// Grouped by key, aligned columns.
    Table,
    /// The rows as JSON (`--query` applies).
    Json,
    /// RFC 4180 CSV with a header line.
    Csv,
}

/// `rewrap policy report` arguments.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct ReportArgs {
    /// Only this key (key id, key ARN, alias name or alias ARN).
    #[arg(long = "key-id", alias = "key", value_name = "KEY")]
    pub(crate) key: Option<String>,
    /// Output format [default: table, or json with --query].
    #[arg(long, value_enum, value_name = "FORMAT")]
    pub(crate) format: Option<Format>,
}

/// Runs `policy report`.
pub(crate) fn run(a: &ReportArgs, ctx: &Context) -> anyhow::Result<i32> {
    if ctx.global.endpoint_url.is_some() {
        return Err(ConfigError(
            "policy report reads the local keystore's policy files; it cannot be used with \
             --endpoint-url"
                .into(),
        )
        .into());
    }
    let (service, principal) = ctx.authenticated_service()?;
    let report = service
        .access_report(&principal, a.key.as_deref())
        .map_err(|error| OpError {
            operation: "CheckPolicy",
            error,
        })?;
    let format = a.format.unwrap_or(if ctx.global.query.is_some() {
        Format::Json
    } else {
        Format::Table
    });
    match format {
        Format::Json => ctx.print_value(&serde_json::to_value(&report)?)?,
        Format::Table => print!("{}", report.to_table()),
        Format::Csv => print!("{}", report.to_csv()),
    }
    Ok(0)
}

//! How the envelope commands report: each failure on stderr, the summary
//! on stdout through `--query` and `--output`, the inventory summary
//! recorded in the keystore folder, and the exit code 2 of a run that could
//! not start.

use super::Context;
use rewrap::kms::Kms;
use rewrap::worker::{Failure, InventorySummary};
use std::sync::Arc;

/// Prints every failure on stderr, one line each.
pub(crate) fn print_failures(failures: &[Failure]) {
    for f in failures {
        eprintln!("rewrap: {}: {}", f.path, f.error);
    }
}

/// Prints a command's summary with `--query` and `--output` applied.
pub(crate) fn print_summary<T: serde::Serialize>(ctx: &Context, summary: &T) -> anyhow::Result<()> {
    ctx.print_value(&serde_json::to_value(summary)?)
}

/// Records an inventory summary in `<home>/inventory/`; a failure is only
/// a warning (the run itself is done).
pub(crate) fn record_summary(ctx: &Context, summary: &InventorySummary) {
    if let Err(e) = summary.record(&ctx.home()) {
        eprintln!("rewrap: warning: cannot record the inventory summary: {e}");
    }
}

/// Prints a usage problem; exit code 2.
#[allow(clippy::unnecessary_wraps)] // reason: commands `return usage(..)` from functions returning anyhow::Result
pub(crate) fn usage(msg: &str) -> anyhow::Result<i32> {
    eprintln!("rewrap: {msg}");
    Ok(2)
}

/// The caller's KMS, or exit code 2 (the message printed).
pub(crate) fn kms_or_exit(ctx: &Context) -> Result<Arc<dyn Kms>, i32> {
    ctx.kms().map_err(|e| {
        eprintln!("rewrap: {e}");
        2
    })
}

//! How the envelope commands report: each failure on stderr, the summary
//! on stdout through `--query` and `--output`, the inventory summary
//! recorded in the keystore folder, and how a command that cannot start
//! ends (252 / 253 for single items, 2 for batch runs: see `cli::main`).

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

/// A usage problem: exit code 252, or 2 for a batch command (`cli::main`
/// prints it and picks the code).
pub(crate) fn usage(msg: &str) -> anyhow::Result<i32> {
    Err(super::UsageError(msg.to_string()).into())
}

/// The caller's KMS, or the exit code (the message printed): 2 for a batch
/// command, else 253 for credentials and configuration.
pub(crate) fn kms_or_exit(ctx: &Context) -> Result<Arc<dyn Kms>, i32> {
    ctx.kms().map_err(|e| {
        let code = super::report_error(&e);
        if ctx.batch {
            2
        } else {
            code
        }
    })
}

//! The `rotate` and `inventory` commands: one code path each, whatever the
//! PATH arguments name (file trees or an object-store location).
//!
//! Exit codes: 0 all done; 1 some items failed; 2 the run could not start
//! (no credentials, unknown target key, bad location, bad arguments).

use super::objects::{Located, ObjectStoreArgs};
use super::report::{kms_or_exit, print_failures, print_summary, record_summary, usage};
use super::Context;
use anyhow::Context as _;
use rewrap::worker::{self, Inventory, InventorySummary, RewrapOptions};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;

/// rotate arguments.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct RotateArgs {
    /// Target key: envelopes end up under its newest key-material version.
    #[arg(long, value_name = "KEY")]
    pub(crate) to: String,
    /// Only rotate envelopes currently under this key (repeatable).
    #[arg(long, value_name = "KEY")]
    pub(crate) from: Vec<String>,
    /// List what would change; write nothing.
    #[arg(long)]
    pub(crate) dry_run: bool,
    /// Write a JSON report to FILE.
    #[arg(long, value_name = "FILE")]
    pub(crate) report: Option<PathBuf>,
    /// Worker threads (0: two per core; more help with a remote KMS).
    #[arg(long, default_value_t = 0)]
    pub(crate) jobs: usize,
    /// Envelopes per group commit (one syncfs per batch).
    #[arg(long, default_value_t = 256)]
    pub(crate) batch: usize,
    /// Follow symbolic links.
    #[arg(long)]
    pub(crate) follow_symlinks: bool,
    /// Never show a progress bar.
    #[arg(long)]
    pub(crate) no_progress: bool,
    /// Object-store options (checkpoint, shard, endpoint, concurrency).
    #[command(flatten)]
    pub(crate) objects: ObjectStoreArgs,
    /// Files or folders, or one object-store location (s3://bucket/prefix, az://, gs://, file://).
    #[arg(required = true, value_name = "PATH")]
    pub(crate) paths: Vec<PathBuf>,
}

/// inventory arguments.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct InventoryArgs {
    /// Also count envelopes not under the newest version of this key.
    #[arg(long, value_name = "KEY")]
    pub(crate) stale_against: Option<String>,
    /// Worker threads (0: two per core).
    #[arg(long, default_value_t = 0)]
    pub(crate) jobs: usize,
    /// Follow symbolic links.
    #[arg(long)]
    pub(crate) follow_symlinks: bool,
    /// Object-store options (shard, endpoint, concurrency).
    #[command(flatten)]
    pub(crate) objects: ObjectStoreArgs,
    /// Files or folders, or one object-store location.
    #[arg(required = true, value_name = "PATH")]
    pub(crate) paths: Vec<PathBuf>,
}

/// `rewrap rotate --to KEY PATH...`
pub(crate) fn rotate(a: RotateArgs, ctx: &Context) -> anyhow::Result<i32> {
    let kms = match kms_or_exit(ctx) {
        Ok(k) => k,
        Err(code) => return Ok(code),
    };
    let located = match Located::open(&a.paths, a.follow_symlinks, &a.objects) {
        Ok(l) => l,
        Err(e) => return usage(&e),
    };
    let source = located.source();
    let remote = ctx.global.endpoint_url.is_some();
    let mut opts = RewrapOptions::new(&a.to);
    opts.from.clone_from(&a.from);
    opts.dry_run = a.dry_run;
    // A remote KMS answers slower than local disk: keep many requests in flight.
    opts.jobs = match (a.jobs, remote) {
        (0, true) => 32,
        (jobs, _) => jobs,
    };
    opts.batch = a.batch;
    if remote {
        // No group commit to gain from batching remote calls: each worker
        // keeps one call in flight and holds one file at that step.
        opts.kms_batch = 1;
    }
    opts.open_files = Some(raise_open_file_limit());
    if !a.no_progress && std::io::stderr().is_terminal() {
        opts.progress = worker::Watcher(Some(Arc::new(ProgressBar::new())));
    }
    let report = match worker::rewrap(&*kms, &source, &opts) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("rewrap: rotation could not start: {e}");
            return Ok(2);
        }
    };
    print_failures(&report.failures);
    if let Some(path) = &a.report {
        worker::write_json(path, &report)
            .with_context(|| format!("cannot write the report {}", path.display()))?;
    }
    if !a.dry_run {
        record_summary(ctx, &InventorySummary::from_rewrap(&source, &report));
    }
    let mut brief = serde_json::to_value(&report)?;
    if let Some(o) = brief.as_object_mut() {
        o.remove("failures");
        o.remove("after");
        if !ctx.json_output() && ctx.global.query.is_none() {
            // Nested tables do not fit one line of text.
            o.remove("by_source");
        }
    }
    print_summary(ctx, &brief)?;
    Ok(report.exit_code())
}

/// `rewrap inventory PATH...`
pub(crate) fn inventory(a: InventoryArgs, ctx: &Context) -> anyhow::Result<i32> {
    let kms = match &a.stale_against {
        Some(_) => match kms_or_exit(ctx) {
            Ok(k) => Some(k),
            Err(code) => return Ok(code),
        },
        None => None,
    };
    let located = match Located::open(&a.paths, a.follow_symlinks, &a.objects) {
        Ok(l) => l,
        Err(e) => return usage(&e),
    };
    let stale_against = a.stale_against.as_deref();
    let inv = match worker::inventory(kms.as_deref(), &located.source(), stale_against, a.jobs) {
        Ok(i) => i,
        Err(e) => {
            eprintln!("rewrap: inventory could not start: {e}");
            return Ok(2);
        }
    };
    record_summary(ctx, &InventorySummary::from_inventory(&inv));
    print_failures(&inv.failures);
    if ctx.json_output() || ctx.global.query.is_some() {
        print_summary(ctx, &inv)?;
    } else {
        print_inventory_table(&inv);
    }
    Ok(i32::from(inv.failed > 0))
}

fn print_inventory_table(inv: &Inventory) {
    println!("KEY\tVERSION\tENVELOPES\tOLDEST WRAP");
    for (arn, k) in &inv.keys {
        for (v, n) in &k.versions {
            println!(
                "{arn}\t{v}\t{n}\t{}",
                k.oldest_wrap.as_deref().unwrap_or("-")
            );
        }
    }
    println!(
        "total: {} envelopes, {} not envelopes, {} failed, {} with a stale slot",
        inv.envelopes, inv.not_envelope, inv.failed, inv.stale_slots
    );
    if let (Some(key), Some(stale)) = (&inv.stale_against, inv.stale) {
        println!("stale against {key}: {stale}");
    }
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit (a file-tree run holds
/// an open, locked file per envelope in flight); returns the limit now in
/// force, which the worker fits its batches to.
fn raise_open_file_limit() -> u64 {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current < limit.maximum {
        limit.current = limit.maximum;
        let _ = setrlimit(Resource::Nofile, limit);
    }
    getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX)
}

/// The progress bar on stderr: the worker's [`worker::Progress`] drawn with
/// indicatif.
struct ProgressBar(indicatif::ProgressBar);

impl ProgressBar {
    fn new() -> ProgressBar {
        let bar =
            indicatif::ProgressBar::with_draw_target(None, indicatif::ProgressDrawTarget::stderr());
        let style = indicatif::ProgressStyle::with_template(
            "{spinner} {pos}/{len} files  {per_sec}  ETA {eta}  [{elapsed_precise}]",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
        bar.set_style(style);
        ProgressBar(bar)
    }
}

impl worker::Progress for ProgressBar {
    fn expect(&self, items: u64) {
        self.0.set_length(items);
    }

    fn advance(&self, n: u64) {
        self.0.inc(n);
    }

    fn finish(&self) {
        self.0.finish_and_clear();
    }
}

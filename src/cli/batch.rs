//! The `rotate` and `inventory` commands: one code path each, whatever the
//! PATH arguments name (file trees or an object-store location).
//!
//! Exit codes: 0 all done; 1 some items failed; 2 the run did not start
//! (no credentials, unknown or disabled target key, bad location, a
//! `--report` path that cannot be written, bad arguments) or was stopped
//! early (`--max-failures` reached, or a failure every item would meet,
//! such as AccessDenied); 3 interrupted by SIGINT / SIGTERM (the batch in
//! flight finished, the partial report written with `"interrupted": true`).

use super::objects::{Located, ObjectStoreArgs};
use super::report::{kms_or_exit, print_failures, print_summary, record_summary, usage};
use super::Context;
use rewrap::worker::{self, Inventory, InventorySummary, RewrapOptions};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;

/// rotate arguments.
#[derive(Debug, Clone, clap::Args)]
#[allow(clippy::struct_excessive_bools)] // reason: clap flags, each its own switch
pub(crate) struct RotateArgs {
    /// Target key: envelopes end up under its newest key-material version.
    #[arg(long, value_name = "KEY")]
    pub(crate) to: String,
    /// Only rotate envelopes currently under this key (repeatable).
    #[arg(long, value_name = "KEY")]
    pub(crate) from: Vec<String>,
    /// Check and list what would change; write nothing. Makes one ReEncrypt
    /// per source key and version found (result discarded), so missing
    /// rights fail the dry run (exit 2) as they would fail the real run.
    #[arg(long)]
    pub(crate) dry_run: bool,
    /// With --dry-run: print every envelope with its key, alias, version
    /// and what a real run would do (the report always has this listing).
    #[arg(long, requires = "dry_run")]
    pub(crate) list: bool,
    /// Write a JSON report to FILE (checked writable before any item).
    #[arg(long, value_name = "FILE")]
    pub(crate) report: Option<PathBuf>,
    /// Stop the run (exit 2) once N items failed; 0 for no limit. A
    /// failure every item would meet (AccessDenied, a disabled target key)
    /// stops it after the first batch.
    #[arg(long, value_name = "N", default_value_t = worker::DEFAULT_MAX_FAILURES)]
    pub(crate) max_failures: u64,
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
    /// A grant token sent with every ReEncrypt (repeatable): a job running
    /// under a grant (`rewrap create-grant`, retired at its end).
    #[arg(long, value_name = "TOKEN")]
    pub(crate) grant_token: Vec<String>,
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
    /// Stream one JSON line per envelope on stdout (path or object URL, key
    /// ARN, alias names, key version, wrap time, stale or not: not under the
    /// newest version of --stale-against, or else of its own key); the
    /// summary goes to stderr. Needs credentials (DescribeKey, ListAliases).
    #[arg(long)]
    pub(crate) list: bool,
    /// With --list: only the stale envelopes (implies --list).
    #[arg(long)]
    pub(crate) stale_only: bool,
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
    if let Some(path) = &a.report {
        if let Err(e) = check_writable(path) {
            return usage(&format!("cannot write the report {}: {e}", path.display()));
        }
    }
    let source = located.source();
    let remote = ctx.global.endpoint_url.is_some();
    let mut opts = RewrapOptions::new(&a.to);
    opts.from.clone_from(&a.from);
    opts.dry_run = a.dry_run;
    opts.grant_tokens.clone_from(&a.grant_token);
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
    opts.max_failures = a.max_failures;
    on_signals(Some(&opts.interrupt));
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
    print_run_failures(&report.failures, report.stopped_early);
    if a.list {
        for l in &report.listing {
            println!(
                "{}\t{}\t{}\t{}\t{}",
                l.action,
                l.key_arn,
                if l.aliases.is_empty() {
                    "-".to_string()
                } else {
                    l.aliases.join(",")
                },
                l.key_version,
                l.path
            );
        }
    }
    let mut code = report.exit_code();
    if let Some(path) = &a.report {
        if let Err(e) = worker::write_json(path, &report) {
            eprintln!("rewrap: cannot write the report {}: {e}", path.display());
            code = code.max(1);
        }
    }
    if let Some(why) = &report.stop_reason {
        eprintln!("rewrap: stopped early: {why}");
    }
    if report.interrupted {
        eprintln!(
            "rewrap: interrupted: the batch in flight was finished; items not yet taken up \
             are left as they were (run again to finish)"
        );
    }
    if !a.dry_run {
        record_summary(ctx, &InventorySummary::from_rewrap(&source, &report));
    }
    let mut brief = serde_json::to_value(&report)?;
    if let Some(o) = brief.as_object_mut() {
        o.remove("failures");
        o.remove("after");
        o.remove("listing");
        o.remove("links");
        if !ctx.json_output() && ctx.global.query.is_none() {
            // Nested tables do not fit one line of text.
            o.remove("by_source");
        }
    }
    print_summary(ctx, &brief)?;
    Ok(code)
}

/// Prints a run's failures on stderr; after a stop, only the first and a
/// count (the report lists them all).
fn print_run_failures(failures: &[worker::Failure], stopped_early: bool) {
    if !stopped_early || failures.len() <= 1 {
        print_failures(failures);
        return;
    }
    print_failures(&failures[..1]);
    eprintln!(
        "rewrap: ... and {} more failures (the report lists them)",
        failures.len() - 1
    );
}

/// Preflight of an output file: its folder exists and takes a new file
/// (a temporary one, removed at once), and the path is not a folder.
pub(crate) fn check_writable(path: &std::path::Path) -> std::io::Result<()> {
    if path.is_dir() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::IsADirectory,
            "is a folder",
        ));
    }
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => std::path::Path::new("."),
    };
    tempfile::Builder::new()
        .prefix(".rewrap-tmp-")
        .tempfile_in(dir)
        .map(drop)
}

/// SIGINT / SIGTERM: the first asks the run to stop gracefully
/// (`interrupt`), a second ends the process at once with exit code 3 (safe:
/// every envelope opens with its old or its new slot at any moment, and
/// tree encryption renames only whole files into place). Without
/// `interrupt` the first signal ends the process at once, with exit code 3.
/// The handlers are in place when this returns.
pub(crate) fn on_signals(interrupt: Option<&worker::Interrupt>) {
    let interrupt = interrupt.cloned();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use tokio::signal::unix::{signal, SignalKind};
        let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
        else {
            return;
        };
        rt.block_on(async move {
            let (Ok(mut int), Ok(mut term)) = (
                signal(SignalKind::interrupt()),
                signal(SignalKind::terminate()),
            ) else {
                return;
            };
            let _ = ready_tx.send(());
            let mut seen = 0;
            loop {
                tokio::select! {
                    _ = int.recv() => {}
                    _ = term.recv() => {}
                }
                seen += 1;
                let Some(interrupt) = interrupt.as_ref().filter(|_| seen == 1) else {
                    eprintln!("rewrap: interrupted again: stopping at once");
                    std::process::exit(3);
                };
                eprintln!(
                    "rewrap: interrupted: finishing the batch in flight \
                     (signal again to stop at once)"
                );
                interrupt.request();
            }
        });
    });
    let _ = ready_rx.recv_timeout(std::time::Duration::from_secs(5));
}

/// `rewrap inventory PATH...`
pub(crate) fn inventory(a: InventoryArgs, ctx: &Context) -> anyhow::Result<i32> {
    let list = a.list || a.stale_only;
    // Staleness and a listing need the KMS; a plain count names aliases
    // when credentials are at hand, and needs none otherwise.
    let table = !list && !ctx.json_output() && ctx.global.query.is_none();
    let kms = if a.stale_against.is_some() || list {
        match kms_or_exit(ctx) {
            Ok(k) => Some(k),
            Err(code) => return Ok(code),
        }
    } else if table {
        ctx.kms().ok()
    } else {
        None
    };
    let located = match Located::open(&a.paths, a.follow_symlinks, &a.objects) {
        Ok(l) => l,
        Err(e) => return usage(&e),
    };
    // An inventory writes nothing but its summary at the end: on a signal
    // it stops at once, without one.
    on_signals(None);
    let stale_against = a.stale_against.as_deref();
    let stale_only = a.stale_only;
    let sink = move |e: &worker::ListedEnvelope| {
        if !stale_only || e.stale == Some(true) {
            print_json_line(e);
        }
    };
    let lister = match (&kms, list) {
        (Some(kms), true) => Some(worker::Lister::new(&**kms, &sink)),
        _ => None,
    };
    let inv = match worker::listed_inventory(
        kms.as_deref(),
        &located.source(),
        stale_against,
        a.jobs,
        lister.as_ref(),
    ) {
        Ok(i) => i,
        Err(e) => {
            eprintln!("rewrap: inventory could not start: {e}");
            return Ok(2);
        }
    };
    record_summary(ctx, &InventorySummary::from_inventory(&inv));
    print_failures(&inv.failures);
    if list {
        eprintln!("rewrap: {}", inventory_totals(&inv));
    } else if !table {
        print_summary(ctx, &inv)?;
    } else {
        let aliases = kms
            .as_deref()
            .map(worker::aliases_by_key)
            .unwrap_or_default();
        print!("{}", inventory_table(&inv, &aliases));
    }
    Ok(i32::from(inv.failed > 0))
}

/// One JSON line on stdout; a closed stdout ends the process quietly.
fn print_json_line<T: serde::Serialize>(value: &T) {
    use std::io::Write as _;
    let Ok(mut line) = serde_json::to_vec(value) else {
        return;
    };
    line.push(b'\n');
    let mut out = std::io::stdout().lock();
    if out.write_all(&line).is_err() {
        std::process::exit(super::EXIT_BROKEN_PIPE);
    }
}

/// The inventory as an aligned table: key id, alias names, version,
/// envelopes, oldest wrap; then the totals.
fn inventory_table(
    inv: &Inventory,
    aliases: &std::collections::HashMap<String, Vec<String>>,
) -> String {
    let header = ["KEY", "ALIASES", "VERSION", "ENVELOPES", "OLDEST WRAP"].map(str::to_string);
    let mut rows = vec![header];
    for (arn, k) in &inv.keys {
        let id = rewrap::audit::key_id_of(arn);
        let mut names = aliases.get(id).cloned().unwrap_or_default();
        names.sort();
        let names = if names.is_empty() {
            "-".to_string()
        } else {
            names.join(",")
        };
        for (v, n) in &k.versions {
            rows.push([
                id.to_string(),
                names.clone(),
                v.clone(),
                n.to_string(),
                k.oldest_wrap.clone().unwrap_or_else(|| "-".into()),
            ]);
        }
    }
    let mut widths = [0; 5];
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in &rows {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            let pad = widths[i] - cell.chars().count();
            if i > 0 {
                line.push_str("  ");
            }
            // Version and count right-aligned, text left-aligned.
            if i == 2 || i == 3 {
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
    out.push_str(&inventory_totals(inv));
    out.push('\n');
    out
}

/// The totals line of an inventory (and its staleness, if measured).
fn inventory_totals(inv: &Inventory) -> String {
    let mut out = format!(
        "total: {} envelopes, {} not envelopes, {} failed, {} with a stale slot, \
         {} symbolic links and {} special files left alone",
        inv.envelopes,
        inv.not_envelope,
        inv.failed,
        inv.stale_slots,
        inv.left_alone.skipped_links,
        inv.left_alone.skipped_special
    );
    if let Some(n) = inv.stale_listed {
        out.push_str(&format!(", {n} listed as stale"));
    }
    if let (Some(key), Some(stale)) = (&inv.stale_against, inv.stale) {
        out.push_str(&format!("\nstale against {key}: {stale}"));
    }
    out
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
pub(crate) struct ProgressBar(indicatif::ProgressBar);

impl ProgressBar {
    pub(crate) fn new() -> ProgressBar {
        let bar =
            indicatif::ProgressBar::with_draw_target(None, indicatif::ProgressDrawTarget::stderr());
        let style = indicatif::ProgressStyle::with_template(
            "{spinner} {human_pos}/{human_len} files  {rate}  ETA {eta}  [{elapsed_precise}]",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        // indicatif's {per_sec} prints fractions ("8,438.1765/s"): whole
        // files per second read better.
        .with_key(
            "rate",
            |state: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
                let _ = write!(w, "{}/s", grouped(state.per_sec() as u64));
            },
        );
        bar.set_style(style);
        ProgressBar(bar)
    }
}

/// `n` with thousands separators (`8,438`).
fn grouped(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
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

#[cfg(test)]
mod tests {
    #[test]
    fn rates_are_whole_and_grouped() {
        assert_eq!(super::grouped(0), "0");
        assert_eq!(super::grouped(999), "999");
        assert_eq!(super::grouped(8_438), "8,438");
        assert_eq!(super::grouped(16_800_123), "16,800,123");
    }
}

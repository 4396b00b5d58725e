//! Envelope commands: encrypt-file, decrypt-file, rotate, inventory,
//! inspect-envelope.
//!
//! Exit codes: 0 success; 1 the operation failed (single file) or some
//! files failed (trees, rotate, inventory); 2 the run could not start (no
//! credentials, unknown target key, bad arguments).

use super::Context;
use crate::api::EncryptionContext;
use crate::envelope::{ParsedHeader, SlotState, DEFAULT_CHUNK_SIZE};
use crate::files::{self, DecryptOptions, EncryptOptions, Output, TreeOp, TreeOptions};
use crate::kms::Kms;
use crate::rotate::{self, FileStore, InventorySummary, RotateOptions};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Envelope commands.
#[derive(Debug, clap::Subcommand)]
pub enum FileCommand {
    /// Encrypts a file, stdin, or a tree into envelopes (fresh data key per file).
    EncryptFile(EncryptArgs),
    /// Decrypts an envelope file, stdin, or a tree.
    DecryptFile(DecryptArgs),
    /// Re-wraps every envelope under PATH... to the newest version of a key (ReEncrypt only).
    Rotate(RotateArgs),
    /// Counts envelopes per key and key version under PATH...
    Inventory(InventoryArgs),
    /// Prints an envelope's header and key slots (no KMS call).
    InspectEnvelope(InspectArgs),
}

/// Where the output goes and how trees are walked.
#[derive(Debug, Clone, clap::Args)]
pub struct IoArgs {
    /// Input file or folder; `-` for stdin.
    #[arg(value_name = "INPUT")]
    pub input: PathBuf,
    /// Output file (or folder with --recursive); `-` for stdout.
    #[arg(
        short = 'o',
        long = "out",
        value_name = "PATH",
        conflicts_with = "in_place"
    )]
    pub out: Option<PathBuf>,
    /// Replace each input file by its result (crash-safe: temp file, fsync, rename).
    #[arg(long)]
    pub in_place: bool,
    /// INPUT is a folder: process every regular file under it, in parallel.
    #[arg(short, long)]
    pub recursive: bool,
    /// Worker threads for --recursive (0: one per core).
    #[arg(long, default_value_t = 0)]
    pub jobs: usize,
    /// Follow symbolic links when walking.
    #[arg(long)]
    pub follow_symlinks: bool,
}

/// encrypt-file arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct EncryptArgs {
    /// The KMS key that wraps the data keys (id, ARN, alias).
    #[arg(long, value_name = "KEY")]
    pub key_id: String,
    /// Encryption-context pair KEY=VALUE (repeatable), stored in the header.
    #[arg(long = "context", value_name = "KEY=VALUE", value_parser = parse_pair)]
    pub context: Vec<(String, String)>,
    /// Plaintext bytes per chunk.
    #[arg(long, default_value_t = DEFAULT_CHUNK_SIZE)]
    pub chunk_size: u32,
    /// Input, output and walking.
    #[command(flatten)]
    pub io: IoArgs,
}

/// decrypt-file arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct DecryptArgs {
    /// Refuse envelopes whose data key is not wrapped under this key.
    #[arg(long, value_name = "KEY")]
    pub key_id: Option<String>,
    /// Require the envelope's context to contain KEY=VALUE (repeatable).
    #[arg(long = "context", value_name = "KEY=VALUE", value_parser = parse_pair)]
    pub context: Vec<(String, String)>,
    /// Input, output and walking.
    #[command(flatten)]
    pub io: IoArgs,
}

/// rotate arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct RotateArgs {
    /// Target key: envelopes end up under its newest key-material version.
    #[arg(long, value_name = "KEY")]
    pub to: String,
    /// Only rotate envelopes currently under this key (repeatable).
    #[arg(long, value_name = "KEY")]
    pub from: Vec<String>,
    /// List what would change; write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Write a JSON report to FILE.
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,
    /// Worker threads (0: two per core; more help with a remote KMS).
    #[arg(long, default_value_t = 0)]
    pub jobs: usize,
    /// Envelopes per group commit (one syncfs per batch).
    #[arg(long, default_value_t = 256)]
    pub batch: usize,
    /// Follow symbolic links.
    #[arg(long)]
    pub follow_symlinks: bool,
    /// Never show a progress bar.
    #[arg(long)]
    pub no_progress: bool,
    /// Blob-store options (checkpoint, shard, endpoint, concurrency).
    #[command(flatten)]
    pub blob: crate::blobstore::BlobArgs,
    /// Files or folders, or one blob-store location (s3://bucket/prefix, az://, gs://, file://).
    #[arg(required = true, value_name = "PATH")]
    pub paths: Vec<PathBuf>,
}

/// inventory arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct InventoryArgs {
    /// Also count envelopes not under the newest version of this key.
    #[arg(long, value_name = "KEY")]
    pub stale_against: Option<String>,
    /// Worker threads (0: two per core).
    #[arg(long, default_value_t = 0)]
    pub jobs: usize,
    /// Follow symbolic links.
    #[arg(long)]
    pub follow_symlinks: bool,
    /// Blob-store options (shard, endpoint, concurrency).
    #[command(flatten)]
    pub blob: crate::blobstore::BlobArgs,
    /// Files or folders, or one blob-store location.
    #[arg(required = true, value_name = "PATH")]
    pub paths: Vec<PathBuf>,
}

/// inspect-envelope arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct InspectArgs {
    /// The envelope file.
    pub file: PathBuf,
}

fn parse_pair(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("expected KEY=VALUE, got {s:?}")),
    }
}

/// Runs one envelope command; returns the process exit code.
pub fn run(cmd: FileCommand, ctx: &Context) -> anyhow::Result<i32> {
    match cmd {
        FileCommand::EncryptFile(a) => encrypt(a, ctx),
        FileCommand::DecryptFile(a) => decrypt(a, ctx),
        FileCommand::Rotate(a) => rotate_cmd(a, ctx),
        FileCommand::Inventory(a) => inventory_cmd(a, ctx),
        FileCommand::InspectEnvelope(a) => inspect(a, ctx),
    }
}

fn kms_or_exit(ctx: &Context) -> Result<Arc<dyn Kms>, i32> {
    ctx.kms().map_err(|e| {
        eprintln!("rewrap: {e}");
        2
    })
}

fn encrypt(a: EncryptArgs, ctx: &Context) -> anyhow::Result<i32> {
    let opts = EncryptOptions {
        key_id: a.key_id,
        context: a.context.into_iter().collect(),
        chunk_size: a.chunk_size,
    };
    let kms = match kms_or_exit(ctx) {
        Ok(k) => k,
        Err(code) => return Ok(code),
    };
    if let Some(url) = a.io.out.as_ref().map(|o| o.to_string_lossy().into_owned()) {
        if crate::blobstore::is_blob_url(&url) && !a.io.recursive {
            return super::blob::encrypt_to(&*kms, &a.io.input, &url, &opts, ctx);
        }
    }
    if a.io.recursive {
        return tree(
            ctx,
            &*kms,
            TreeOp::Encrypt,
            Some(&opts),
            &DecryptOptions::default(),
            &a.io,
        );
    }
    single(ctx, &a.io, |input, output| match (input, output) {
        (None, None) => files::encrypt_stream(
            &*kms,
            &opts,
            &mut std::io::stdin().lock(),
            &mut std::io::stdout().lock(),
        ),
        (Some(i), None) => {
            files::encrypt_stream(&*kms, &opts, &mut open(i)?, &mut std::io::stdout().lock())
        }
        (None, Some(o)) => files::write_atomically(o, None, |out| {
            files::encrypt_stream(&*kms, &opts, &mut std::io::stdin().lock(), out)
        }),
        (Some(i), Some(o)) => files::encrypt_file(&*kms, &opts, i, out_of(i, o)),
    })
}

fn decrypt(a: DecryptArgs, ctx: &Context) -> anyhow::Result<i32> {
    let opts = DecryptOptions {
        key_id: a.key_id,
        expect_context: a.context.into_iter().collect::<EncryptionContext>(),
    };
    let kms = match kms_or_exit(ctx) {
        Ok(k) => k,
        Err(code) => return Ok(code),
    };
    let input = a.io.input.to_string_lossy().into_owned();
    if crate::blobstore::is_blob_url(&input) && !a.io.recursive {
        return super::blob::decrypt_from(&*kms, &input, a.io.out.as_deref(), &opts, ctx);
    }
    if a.io.recursive {
        return tree(ctx, &*kms, TreeOp::Decrypt, None, &opts, &a.io);
    }
    single(ctx, &a.io, |input, output| match (input, output) {
        (None, None) => files::decrypt_stream(
            &*kms,
            &opts,
            &mut std::io::stdin().lock(),
            &mut std::io::stdout().lock(),
        ),
        (Some(i), None) => {
            files::decrypt_stream(&*kms, &opts, &mut open(i)?, &mut std::io::stdout().lock())
        }
        (None, Some(o)) => files::write_atomically(o, None, |out| {
            files::decrypt_stream(&*kms, &opts, &mut std::io::stdin().lock(), out)
        }),
        (Some(i), Some(o)) => files::decrypt_file(&*kms, &opts, i, out_of(i, o)),
    })
}

fn open(path: &Path) -> files::Result<std::fs::File> {
    std::fs::File::open(path).map_err(|source| files::FileError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// `o == input` means in place.
fn out_of<'a>(input: &Path, o: &'a Path) -> Output<'a> {
    if o == input {
        Output::InPlace
    } else {
        Output::To(o)
    }
}

/// One file or stream: `f(input, output)` with `None` for stdin / stdout.
fn single(
    ctx: &Context,
    io: &IoArgs,
    f: impl FnOnce(Option<&Path>, Option<&Path>) -> files::Result<files::EnvelopeInfo>,
) -> anyhow::Result<i32> {
    let stdin = io.input.as_os_str() == "-";
    let input = (!stdin).then_some(io.input.as_path());
    let output = match (&io.out, io.in_place) {
        (_, true) if stdin => return usage("--in-place needs a file, not stdin"),
        (_, true) => Some(io.input.as_path()),
        (Some(o), false) if o.as_os_str() == "-" => None,
        (Some(o), false) => Some(o.as_path()),
        (None, false) if stdin => None,
        (None, false) => return usage("give --out PATH (or `-o -` for stdout) or --in-place"),
    };
    if let Some(i) = input {
        if i.is_dir() {
            return usage(&format!("{} is a folder: add --recursive", i.display()));
        }
    }
    if output.is_none() && std::io::stdout().is_terminal() && !stdin {
        // Binary or plaintext to a terminal is never what anyone wants.
        return usage("refusing to write to a terminal: redirect stdout or give --out");
    }
    let name = input.map_or_else(|| "<stdin>".to_string(), |p| p.display().to_string());
    match f(input, output) {
        Ok(info) => {
            if output.is_some() {
                let mut v = serde_json::to_value(&info)?;
                if let Some(o) = output {
                    v["output"] = o.display().to_string().into();
                }
                print_summary(ctx, &v)?;
            }
            Ok(0)
        }
        Err(e) => {
            eprintln!("rewrap: {name}: {e}");
            Ok(1)
        }
    }
}

fn usage(msg: &str) -> anyhow::Result<i32> {
    eprintln!("rewrap: {msg}");
    Ok(2)
}

fn print_summary(ctx: &Context, v: &serde_json::Value) -> anyhow::Result<()> {
    if ctx.json_output() {
        println!("{}", serde_json::to_string_pretty(v)?);
    } else if let Some(obj) = v.as_object() {
        let cells: Vec<String> = obj
            .values()
            .map(|x| x.as_str().map_or_else(|| x.to_string(), str::to_string))
            .collect();
        println!("{}", cells.join("\t"));
    }
    Ok(())
}

fn tree(
    ctx: &Context,
    kms: &dyn Kms,
    op: TreeOp,
    enc: Option<&EncryptOptions>,
    dec: &DecryptOptions,
    io: &IoArgs,
) -> anyhow::Result<i32> {
    if !io.input.is_dir() {
        return usage(&format!("{} is not a folder", io.input.display()));
    }
    let out_root = match (&io.out, io.in_place) {
        (_, true) => None,
        (Some(o), false) => Some(o.as_path()),
        (None, false) => return usage("give --out FOLDER or --in-place"),
    };
    let opts = TreeOptions {
        follow_links: io.follow_symlinks,
        jobs: io.jobs,
    };
    let report = match files::process_tree(kms, op, enc, dec, &io.input, out_root, &opts) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("rewrap: {e}");
            return Ok(2);
        }
    };
    for f in &report.failed {
        eprintln!("rewrap: {}: {}", f.path.display(), f.error);
    }
    print_summary(ctx, &serde_json::to_value(&report)?)?;
    Ok(i32::from(!report.failed.is_empty()))
}

fn rotate_cmd(a: RotateArgs, ctx: &Context) -> anyhow::Result<i32> {
    let kms = match kms_or_exit(ctx) {
        Ok(k) => k,
        Err(code) => return Ok(code),
    };
    let progress = !a.no_progress && std::io::stderr().is_terminal();
    let mut opts = RotateOptions::new(&a.to);
    opts.from = a.from.clone();
    opts.dry_run = a.dry_run;
    // A remote KMS answers slower than local disk: keep many requests in flight.
    opts.jobs = match (a.jobs, &ctx.global.endpoint_url) {
        (0, Some(_)) => 32,
        (jobs, _) => jobs,
    };
    opts.batch = a.batch;
    opts.progress = progress;
    if progress && matches!(super::blob::blob_url(&a.paths), Ok(None)) {
        opts.expected_items = rotate::count_files(&a.paths, a.follow_symlinks);
    }
    match super::blob::blob_url(&a.paths) {
        Ok(Some(url)) => return super::blob::rotate(&*kms, &url, &opts, &a, ctx),
        Ok(None) => {}
        Err(e) => {
            eprintln!("rewrap: {e}");
            return Ok(2);
        }
    }
    if ctx.global.endpoint_url.is_some() {
        // No group commit to gain from batching remote calls: each worker
        // keeps one call in flight and holds one file at that step.
        opts.kms_batch = 1;
    }
    rotate::fit_open_files(&mut opts);
    let store = FileStore {
        read_only: a.dry_run,
    };
    let items = rotate::walk_files(&a.paths, a.follow_symlinks);
    let report = match rotate::rotate(&*kms, &store, items, &opts) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("rewrap: rotation could not start: {e}");
            return Ok(2);
        }
    };
    for f in &report.failures {
        eprintln!("rewrap: {}: {}", f.path, f.error);
    }
    if let Some(path) = &a.report {
        let text = serde_json::to_vec_pretty(&report)?;
        files::write_atomically(path, None, |out| {
            out.write_all(&text).map_err(|source| files::FileError::Io {
                path: path.clone(),
                source,
            })
        })?;
    }
    if !a.dry_run {
        let summary = InventorySummary::from_rotation(&a.paths, &report);
        if let Err(e) = summary.record(&ctx.home()) {
            eprintln!("rewrap: warning: cannot record the inventory summary: {e}");
        }
    }
    let mut brief = serde_json::to_value(&report)?;
    if let Some(o) = brief.as_object_mut() {
        o.remove("failures");
        o.remove("after");
        if !ctx.json_output() {
            o.remove("by_source");
        }
    }
    print_summary(ctx, &brief)?;
    Ok(report.exit_code())
}

fn inventory_cmd(a: InventoryArgs, ctx: &Context) -> anyhow::Result<i32> {
    let kms = match &a.stale_against {
        Some(_) => match kms_or_exit(ctx) {
            Ok(k) => Some(k),
            Err(code) => return Ok(code),
        },
        None => None,
    };
    match super::blob::blob_url(&a.paths) {
        Ok(Some(url)) => return super::blob::inventory(kms.as_deref(), &url, &a, ctx),
        Ok(None) => {}
        Err(e) => {
            eprintln!("rewrap: {e}");
            return Ok(2);
        }
    }
    let store = FileStore { read_only: true };
    let items = rotate::walk_files(&a.paths, a.follow_symlinks);
    let inv = rotate::inventory(
        kms.as_deref(),
        &store,
        items,
        a.stale_against.as_deref(),
        a.jobs,
    );
    let mut inv = match inv {
        Ok(i) => i,
        Err(e) => {
            eprintln!("rewrap: inventory could not start: {e}");
            return Ok(2);
        }
    };
    inv.roots = rotate::canonical_roots(&a.paths);
    if let Err(e) = InventorySummary::from_inventory(&inv).record(&ctx.home()) {
        eprintln!("rewrap: warning: cannot record the inventory summary: {e}");
    }
    for f in &inv.failures {
        eprintln!("rewrap: {}: {}", f.path, f.error);
    }
    if ctx.json_output() {
        println!("{}", serde_json::to_string_pretty(&inv)?);
    } else {
        print_inventory_table(&inv);
    }
    Ok(i32::from(inv.failed > 0))
}

fn print_inventory_table(inv: &rotate::Inventory) {
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

fn inspect(a: InspectArgs, ctx: &Context) -> anyhow::Result<i32> {
    let parsed = match open(&a.file)
        .map_err(|e| e.to_string())
        .and_then(|mut f| ParsedHeader::read_from(&mut f).map_err(|e| e.to_string()))
    {
        Ok(p) => p,
        Err(e) => {
            eprintln!("rewrap: {}: {e}", a.file.display());
            return Ok(1);
        }
    };
    let slot = |s: &SlotState| match s {
        SlotState::Empty => serde_json::json!("empty"),
        SlotState::Corrupt => serde_json::json!("corrupt"),
        SlotState::Valid(s) => serde_json::json!({
            "sequence": s.sequence,
            "key_arn": s.key_arn,
            "key_version": s.key_version,
            "wrapped_at": chrono::DateTime::from_timestamp(s.wrapped_at, 0).map(|d| d.to_rfc3339()),
            "wrapped_key_bytes": s.wrapped_key.len(),
        }),
    };
    let h = &parsed.header;
    let v = serde_json::json!({
        "file_id": h.file_id().hyphenated().to_string(),
        "chunk_size": h.chunk_size(),
        "context": h.user_context(),
        "active_slot": parsed.slots.active().ok().map(|(i, _)| i),
        "slots": [slot(&parsed.slots.0[0]), slot(&parsed.slots.0[1])],
    });
    if ctx.json_output() {
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        println!("{v}");
    }
    Ok(0)
}

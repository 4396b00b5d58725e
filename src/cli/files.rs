//! Envelope commands: encrypt-file, decrypt-file, inspect-envelope (and
//! the dispatch of rotate and inventory, in [`super::batch`]).
//!
//! encrypt-file and decrypt-file have one code path each: their INPUT and
//! `--out` are resolved into two `End`s (stdin or stdout, a file, an
//! object), then one function moves the bytes between them. Trees go to
//! the worker's pool ([`worker::transform_tree`]).
//!
//! Exit codes: a single file or object as a KMS command (0, 252 bad
//! arguments, 253 credentials, 254 a KMS error, 255 anything else: the
//! failure is an `ItemError` whose code its kind decides); trees as batch
//! commands (0, 1 some files failed, 2 the run could not start).

use super::batch::{InventoryArgs, RotateArgs};
use super::objects::{open_object, ObjectRef};
use super::report::{kms_or_exit, print_failures, print_summary, usage};
use super::Context;
use rewrap::api::EncryptionContext;
use rewrap::envelope::{ParsedHeader, SlotState, DEFAULT_CHUNK_SIZE};
use rewrap::files::{self, DecryptOptions, EncryptOptions, EnvelopeInfo, FileError, Output};
use rewrap::kms::Kms;
use rewrap::objstore::{self, ObjectStoreError};
use rewrap::worker::{self, TreeOp, TreeOptions};
use std::io::{IsTerminal, Read};
use std::path::{Path, PathBuf};

/// Envelope commands.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum FileCommand {
    /// Encrypts a file, stdin, or a tree into envelopes (fresh data key per file).
    #[command(
        after_help = "Examples:\n  rewrap encrypt-file --key-id alias/app-data --encryption-context purpose=app-data report.pdf -o report.pdf.rwp\n  rewrap encrypt-file --key-id alias/app-data --encryption-context purpose=app-data -r --in-place data/\n  tar c data | rewrap encrypt-file --key-id alias/app-data - -o s3://bucket/backups/data.tar"
    )]
    EncryptFile(EncryptArgs),
    /// Decrypts an envelope file, stdin, or a tree.
    #[command(
        after_help = "Examples:\n  rewrap decrypt-file report.pdf.rwp -o report.pdf\n  rewrap decrypt-file --encryption-context purpose=app-data report.pdf.rwp -o - | less\n  rewrap decrypt-file -r data/ -o plain/"
    )]
    DecryptFile(DecryptArgs),
    /// Re-wraps every envelope under PATH... to the newest version of a key (ReEncrypt only).
    #[command(
        after_help = "Examples:\n  rewrap rotate --dry-run --to alias/app-data data/\n  rewrap --profile storage-rotator rotate --to alias/app-data --report report.json data/\n  rewrap rotate --to alias/app-data --checkpoint rotate.ckpt --shard 0/8 s3://bucket/backups"
    )]
    Rotate(RotateArgs),
    /// Counts envelopes per key and key version under PATH...
    #[command(
        after_help = "Examples:\n  rewrap inventory data/\n  rewrap inventory --stale-against alias/app-data --output text data/\n  rewrap inventory --query envelopes s3://bucket/backups"
    )]
    Inventory(InventoryArgs),
    /// Prints an envelope's header and key slots (no KMS call).
    #[command(
        after_help = "Examples:\n  rewrap inspect-envelope data/report.pdf\n  rewrap inspect-envelope data/report.pdf --query \"slots[*].key_arn\""
    )]
    InspectEnvelope(InspectArgs),
}

/// Where the output goes and how trees are walked.
#[derive(Debug, Clone, clap::Args)]
#[allow(clippy::struct_excessive_bools)] // reason: clap flags, each its own switch
pub(crate) struct IoArgs {
    /// Input file or folder; `-` for stdin.
    #[arg(value_name = "INPUT")]
    pub(crate) input: PathBuf,
    /// Output file (or folder with --recursive); `-` for stdout. Not to be
    /// confused with --output, the format of the summary.
    #[arg(
        short = 'o',
        long = "out-file",
        alias = "out",
        value_name = "PATH",
        conflicts_with = "in_place"
    )]
    pub(crate) out: Option<PathBuf>,
    /// Replace each input file by its result (crash-safe: temp file, fsync, rename).
    #[arg(long)]
    pub(crate) in_place: bool,
    /// INPUT is a folder: process every regular file under it, in parallel.
    #[arg(short, long)]
    pub(crate) recursive: bool,
    /// Worker threads for --recursive (0: one per core).
    #[arg(long, default_value_t = 0)]
    pub(crate) jobs: usize,
    /// With --recursive: stop the run (exit 2) once N files failed. The
    /// files in flight finish; the rest are left as they are. Default 0: no
    /// limit, every file gets its outcome in the report.
    #[arg(long, value_name = "N", default_value_t = 0, requires = "recursive")]
    pub(crate) max_failures: u64,
    /// Follow symbolic links inside the tree (a link named as INPUT is
    /// always followed). Without it they are counted and listed as left alone.
    #[arg(long)]
    pub(crate) follow_symlinks: bool,
    /// Replace an existing --out file (refused without it).
    #[arg(long)]
    pub(crate) force: bool,
    /// Never show a progress bar (--recursive).
    #[arg(long)]
    pub(crate) no_progress: bool,
}

/// encrypt-file arguments.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct EncryptArgs {
    /// The KMS key that wraps the data keys (id, ARN, alias).
    #[arg(long, value_name = "KEY")]
    pub(crate) key_id: String,
    /// Encryption-context pair KEY=VALUE (repeatable), stored in the header.
    #[arg(long = "encryption-context", alias = "context", value_name = "KEY=VALUE", value_parser = parse_pair)]
    pub(crate) context: Vec<(String, String)>,
    /// Plaintext bytes per chunk.
    #[arg(long, default_value_t = DEFAULT_CHUNK_SIZE)]
    pub(crate) chunk_size: u32,
    /// Input, output and walking.
    #[command(flatten)]
    pub(crate) io: IoArgs,
}

/// decrypt-file arguments.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct DecryptArgs {
    /// Refuse envelopes whose data key is not wrapped under this key.
    #[arg(long, value_name = "KEY")]
    pub(crate) key_id: Option<String>,
    /// Require the envelope's context to contain KEY=VALUE (repeatable).
    #[arg(long = "encryption-context", alias = "context", value_name = "KEY=VALUE", value_parser = parse_pair)]
    pub(crate) context: Vec<(String, String)>,
    /// Input, output and walking.
    #[command(flatten)]
    pub(crate) io: IoArgs,
}

/// inspect-envelope arguments.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct InspectArgs {
    /// The envelope file.
    pub(crate) file: PathBuf,
}

fn parse_pair(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("expected KEY=VALUE, got {s:?}")),
    }
}

/// Runs one envelope command; returns the process exit code.
pub(crate) fn run(cmd: FileCommand, ctx: &Context) -> anyhow::Result<i32> {
    match cmd {
        FileCommand::EncryptFile(a) => encrypt(a, ctx),
        FileCommand::DecryptFile(a) => decrypt(a, ctx),
        FileCommand::Rotate(a) => super::batch::rotate(a, ctx),
        FileCommand::Inventory(a) => super::batch::inventory(a, ctx),
        FileCommand::InspectEnvelope(a) => inspect(a, ctx),
    }
}

/// One end of encrypt-file or decrypt-file.
enum End<'a> {
    /// stdin (input) or stdout (output).
    Std,
    /// A local file (an output equal to the input means in place).
    File(&'a Path),
    /// An object in an object store.
    Object(ObjectRef),
}

impl End<'_> {
    /// How the end is named in messages.
    fn name(&self) -> String {
        match self {
            End::Std => "<stdin>".into(),
            End::File(p) => p.display().to_string(),
            End::Object(o) => o.url.clone(),
        }
    }
}

/// Why moving one envelope failed.
#[derive(Debug, thiserror::Error)]
enum OneError {
    #[error("{0}")]
    File(#[from] FileError),
    #[error("{0}")]
    Object(#[from] ObjectStoreError),
}

fn encrypt(a: EncryptArgs, ctx: &Context) -> anyhow::Result<i32> {
    let opts = EncryptOptions {
        key_id: a.key_id,
        context: a.context.into_iter().collect(),
        chunk_size: a.chunk_size,
        object: None,
    };
    let kms = match kms_or_exit(ctx) {
        Ok(k) => k,
        Err(code) => return Ok(code),
    };
    if a.io.recursive {
        return tree(ctx, &*kms, TreeOp::Encrypt(opts), &a.io);
    }
    let (input, output) = match ends(&a.io)? {
        Ok(ends) => ends,
        Err(code) => return Ok(code),
    };
    if matches!(input, End::Object(_)) {
        return usage("encrypt-file reads a file or stdin, not an object");
    }
    if let (End::File(i), End::File(o)) = (&input, &output) {
        if i == o && files::is_envelope(i).unwrap_or(false) {
            // As `encrypt-file -r` does: an envelope is never sealed twice.
            eprintln!(
                "rewrap: {}: already an envelope; left as it is",
                i.display()
            );
            return Ok(0);
        }
    }
    one(ctx, &input, &output, || {
        encrypt_one(&*kms, &opts, &input, &output)
    })
}

fn decrypt(a: DecryptArgs, ctx: &Context) -> anyhow::Result<i32> {
    let opts = DecryptOptions {
        key_id: a.key_id,
        expect_context: a.context.into_iter().collect::<EncryptionContext>(),
        object: None,
    };
    let kms = match kms_or_exit(ctx) {
        Ok(k) => k,
        Err(code) => return Ok(code),
    };
    if a.io.recursive {
        return tree(ctx, &*kms, TreeOp::Decrypt(opts), &a.io);
    }
    let (input, output) = match ends(&a.io)? {
        Ok(ends) => ends,
        Err(code) => return Ok(code),
    };
    if matches!(output, End::Object(_)) {
        return usage("decrypt-file writes a file or stdout, not an object");
    }
    one(ctx, &input, &output, || {
        decrypt_one(&*kms, &opts, &input, &output)
    })
}

/// Resolves INPUT and `--out` / `--in-place`; `Ok(Err(code))` on a usage
/// problem (printed).
fn ends(io: &IoArgs) -> anyhow::Result<Result<(End<'_>, End<'_>), i32>> {
    let stdin = io.input.as_os_str() == "-";
    let input_url = io.input.to_string_lossy();
    let input = if stdin {
        End::Std
    } else if objstore::is_object_url(&input_url) {
        match open_object(&input_url)? {
            Ok(o) => End::Object(o),
            Err(code) => return Ok(Err(code)),
        }
    } else {
        End::File(&io.input)
    };
    let output = match (&io.out, io.in_place, &input) {
        (_, true, End::File(i)) => End::File(i),
        (_, true, _) => return Ok(Err(usage("--in-place needs a file, not stdin")?)),
        (Some(o), false, _) if o.as_os_str() == "-" => End::Std,
        (Some(o), false, _) if objstore::is_object_url(&o.to_string_lossy()) => {
            match open_object(&o.to_string_lossy())? {
                Ok(o) => End::Object(o),
                Err(code) => return Ok(Err(code)),
            }
        }
        (Some(o), false, _) => End::File(o),
        (None, false, End::File(_)) => {
            return Ok(Err(usage(
                "give --out PATH (or `-o -` for stdout) or --in-place",
            )?))
        }
        (None, false, _) => End::Std,
    };
    if let (End::File(o), false, false) = (&output, io.in_place, io.force) {
        if *o != io.input.as_path() && std::fs::symlink_metadata(o).is_ok() {
            eprintln!("rewrap: {} exists: add --force to replace it", o.display());
            return Ok(Err(252));
        }
    }
    if let End::File(i) = input {
        if i.is_dir() {
            let msg = format!("{} is a folder: add --recursive", i.display());
            return Ok(Err(usage(&msg)?));
        }
        if matches!(output, End::Std) && std::io::stdout().is_terminal() {
            // Binary or plaintext to a terminal is never what anyone wants.
            let msg = "refusing to write to a terminal: redirect stdout or give --out";
            return Ok(Err(usage(msg)?));
        }
    }
    Ok(Ok((input, output)))
}

/// Runs `f` on one envelope and reports it: the summary when the output is
/// not stdout, else nothing; the error on stderr (exit code 1).
fn one(
    ctx: &Context,
    input: &End<'_>,
    output: &End<'_>,
    f: impl FnOnce() -> Result<EnvelopeInfo, OneError>,
) -> anyhow::Result<i32> {
    let name = match (input, output) {
        (_, End::Object(o)) => o.url.clone(),
        (i, _) => i.name(),
    };
    match f() {
        Ok(info) => {
            let mut v = serde_json::to_value(&info)?;
            match output {
                End::Std => return Ok(0),
                End::File(o) => v["output"] = o.display().to_string().into(),
                End::Object(_) => {}
            }
            print_summary(ctx, &v)?;
            Ok(0)
        }
        Err(e) => {
            let code = match &e {
                OneError::File(f) => super::file_error_code(f),
                OneError::Object(o) => super::object_error_code(o),
            };
            let message = e.to_string();
            Err(super::ItemError {
                name,
                message,
                code,
            }
            .into())
        }
    }
}

/// The bytes of a local input.
fn reader(input: &End<'_>) -> Result<Box<dyn Read>, FileError> {
    match input {
        End::File(i) => Ok(Box::new(open(i)?)),
        _ => Ok(Box::new(std::io::stdin().lock())),
    }
}

fn encrypt_one(
    kms: &dyn Kms,
    opts: &EncryptOptions,
    input: &End<'_>,
    output: &End<'_>,
) -> Result<EnvelopeInfo, OneError> {
    Ok(match (input, output) {
        (_, End::Object(o)) => {
            objstore::encrypt_object(kms, &mut reader(input)?, &o.location, &o.name, opts)?
        }
        (End::File(i), End::File(o)) => files::encrypt_file(kms, opts, i, out_of(i, o))?,
        (_, End::File(o)) => files::write_atomically(o, None, |out| {
            files::encrypt_stream(kms, opts, &mut reader(input)?, out)
        })?,
        (_, End::Std) => files::encrypt_stream(
            kms,
            opts,
            &mut reader(input)?,
            &mut std::io::stdout().lock(),
        )?,
    })
}

fn decrypt_one(
    kms: &dyn Kms,
    opts: &DecryptOptions,
    input: &End<'_>,
    output: &End<'_>,
) -> Result<EnvelopeInfo, OneError> {
    Ok(match (input, output) {
        (End::Object(o), End::File(path)) => {
            // Decrypt beside the target and rename only when every chunk verified.
            let mut object_err = None;
            let written = files::write_atomically(path, None, |w| {
                objstore::decrypt_object(kms, &o.location, &o.name, w, opts).map_err(|e| {
                    let message = e.to_string();
                    object_err = Some(e);
                    FileError::Io {
                        path: path.to_path_buf(),
                        source: std::io::Error::other(message),
                    }
                })
            });
            match (written, object_err) {
                (Ok(info), _) => info,
                (Err(_), Some(e)) => return Err(e.into()),
                (Err(e), None) => return Err(e.into()),
            }
        }
        (End::Object(o), _) => {
            let mut out = std::io::stdout().lock();
            objstore::decrypt_object(kms, &o.location, &o.name, &mut out, opts)?
        }
        (End::File(i), End::File(o)) => files::decrypt_file(kms, opts, i, out_of(i, o))?,
        (_, End::File(o)) => files::write_atomically(o, None, |out| {
            files::decrypt_stream(kms, opts, &mut reader(input)?, out)
        })?,
        (_, _) => files::decrypt_stream(
            kms,
            opts,
            &mut reader(input)?,
            &mut std::io::stdout().lock(),
        )?,
    })
}

fn open(path: &Path) -> files::Result<std::fs::File> {
    std::fs::File::open(path).map_err(|source| FileError::Io {
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

/// `encrypt-file -r` / `decrypt-file -r`: every file of a tree, on the
/// worker's pool.
fn tree(ctx: &Context, kms: &dyn Kms, op: TreeOp, io: &IoArgs) -> anyhow::Result<i32> {
    if !io.input.is_dir() {
        return usage(&format!("{} is not a folder", io.input.display()));
    }
    let out_root = match (&io.out, io.in_place) {
        (_, true) => None,
        (Some(o), false) => Some(o.as_path()),
        (None, false) => return usage("give --out FOLDER or --in-place"),
    };
    let mut opts = TreeOptions {
        follow_links: io.follow_symlinks,
        jobs: io.jobs,
        max_failures: io.max_failures,
        ..TreeOptions::default()
    };
    if !io.no_progress && std::io::stderr().is_terminal() {
        opts.progress =
            worker::Watcher(Some(std::sync::Arc::new(super::batch::ProgressBar::new())));
    }
    super::batch::on_signals(Some(&opts.interrupt));
    let report = worker::transform_tree(kms, &op, &io.input, out_root, &opts);
    if report.stopped_early && report.failed.len() > 1 {
        print_failures(&report.failed[..1]);
        eprintln!("rewrap: ... and {} more failures", report.failed.len() - 1);
    } else {
        print_failures(&report.failed);
    }
    if let Some(why) = &report.stop_reason {
        eprintln!("rewrap: stopped early: {why}");
    }
    if report.interrupted {
        eprintln!(
            "rewrap: interrupted: the files in flight were finished; the others are as they were"
        );
    }
    let mut brief = serde_json::to_value(&report)?;
    if let Some(o) = brief.as_object_mut() {
        if !ctx.json_output() && ctx.global.query.is_none() {
            // One line of text: the counts.
            o.remove("links");
            o.remove("failed");
        }
    }
    print_summary(ctx, &brief)?;
    Ok(report.exit_code())
}

fn inspect(a: InspectArgs, ctx: &Context) -> anyhow::Result<i32> {
    let parsed = match open(&a.file)
        .map_err(|e| e.to_string())
        .and_then(|mut f| ParsedHeader::read_from(&mut f).map_err(|e| e.to_string()))
    {
        Ok(p) => p,
        Err(message) => {
            let name = a.file.display().to_string();
            return Err(super::ItemError {
                name,
                message,
                code: 255,
            }
            .into());
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
    ctx.print_value(&v)?;
    Ok(0)
}

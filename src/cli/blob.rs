//! Blob-store locations (`s3://`, `az://`, `gs://`, `file://`) in the file
//! commands: the same rotation pipeline, report and exit codes as for trees.

use super::files::{InventoryArgs, RotateArgs};
use super::Context;
use crate::blobstore::{self, BlobLocation};
use crate::files::{DecryptOptions, EncryptOptions};
use crate::kms::Kms;
use crate::rotate::RotateOptions;
use std::path::Path;

/// The one blob URL among `paths`, if any; mixing one with anything else is
/// an error (exit code 2).
pub fn blob_url(paths: &[std::path::PathBuf]) -> Result<Option<String>, String> {
    let urls: Vec<String> = paths
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .filter(|p| blobstore::is_blob_url(p))
        .collect();
    match (urls.len(), paths.len()) {
        (0, _) => Ok(None),
        (1, 1) => Ok(urls.into_iter().next()),
        _ => Err(
            "give one blob-store location (s3://, az://, gs://, file://) and nothing else".into(),
        ),
    }
}

fn open(url: &str, args: &blobstore::BlobArgs) -> Result<BlobLocation, i32> {
    blobstore::open_location(url, &args.options()).map_err(|e| {
        eprintln!("rewrap: {url}: {e}");
        2
    })
}

/// `rewrap rotate --to KEY s3://bucket/prefix`.
pub fn rotate(
    kms: &dyn Kms,
    url: &str,
    opts: &RotateOptions,
    a: &RotateArgs,
    ctx: &Context,
) -> anyhow::Result<i32> {
    let loc = match open(url, &a.blob) {
        Ok(l) => l,
        Err(code) => return Ok(code),
    };
    let report = match blobstore::rotate_location(kms, &loc, opts, &a.blob.rotate_options()) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("rewrap: rotation could not start: {e}");
            return Ok(2);
        }
    };
    for f in &report.report.failures {
        eprintln!("rewrap: {}: {}", f.path, f.error);
    }
    if let Some(path) = &a.report {
        let text = serde_json::to_vec_pretty(&report)?;
        crate::keystore::write_atomic(path, &text).map_err(|e| anyhow::anyhow!(e.to_string()))?;
    }
    if !opts.dry_run {
        if let Err(e) = report.summary().record(&ctx.home()) {
            eprintln!("rewrap: warning: cannot record the inventory summary: {e}");
        }
    }
    let mut brief = serde_json::to_value(&report)?;
    if let Some(o) = brief.as_object_mut() {
        o.remove("failures");
        o.remove("after");
    }
    ctx.print_value(&brief)?;
    Ok(report.exit_code())
}

/// `rewrap inventory s3://bucket/prefix`.
pub fn inventory(
    kms: Option<&dyn Kms>,
    url: &str,
    a: &InventoryArgs,
    ctx: &Context,
) -> anyhow::Result<i32> {
    let loc = match open(url, &a.blob) {
        Ok(l) => l,
        Err(code) => return Ok(code),
    };
    let inv = match blobstore::inventory_location(
        kms,
        &loc,
        a.stale_against.as_deref(),
        &a.blob.rotate_options(),
    ) {
        Ok(i) => i,
        Err(e) => {
            eprintln!("rewrap: inventory could not start: {e}");
            return Ok(2);
        }
    };
    if let Err(e) = crate::rotate::InventorySummary::from_inventory(&inv).record(&ctx.home()) {
        eprintln!("rewrap: warning: cannot record the inventory summary: {e}");
    }
    for f in &inv.failures {
        eprintln!("rewrap: {}: {}", f.path, f.error);
    }
    ctx.print_value(&serde_json::to_value(&inv)?)?;
    Ok(i32::from(inv.failed > 0))
}

/// Splits `s3://bucket/prefix/name` into the location and the object name.
fn split_object(url: &str) -> anyhow::Result<(&str, &str)> {
    match url.rsplit_once('/') {
        Some((loc, name))
            if !name.is_empty()
                && loc.contains("://")
                && !loc.ends_with(':')
                && !loc.ends_with(":/") =>
        {
            Ok((loc, name))
        }
        _ => Err(super::ConfigError(format!(
            "{url}: name an object, e.g. s3://bucket/prefix/name"
        ))
        .into()),
    }
}

/// `rewrap encrypt-file INPUT -o s3://bucket/prefix/name`.
pub fn encrypt_to(
    kms: &dyn Kms,
    input: &Path,
    url: &str,
    opts: &EncryptOptions,
    ctx: &Context,
) -> anyhow::Result<i32> {
    let (loc_url, name) = split_object(url)?;
    let loc = match open(loc_url, &blobstore::BlobArgs::default()) {
        Ok(l) => l,
        Err(code) => return Ok(code),
    };
    let mut src: Box<dyn std::io::Read> = if input == Path::new("-") {
        Box::new(std::io::stdin().lock())
    } else {
        Box::new(
            std::fs::File::open(input).map_err(|e| anyhow::anyhow!("{}: {e}", input.display()))?,
        )
    };
    match blobstore::encrypt_object(kms, &mut src, &loc, name, opts) {
        Ok(info) => {
            ctx.print_value(&serde_json::to_value(&info)?)?;
            Ok(0)
        }
        Err(e) => {
            eprintln!("rewrap: {url}: {e}");
            Ok(1)
        }
    }
}

/// `rewrap decrypt-file s3://bucket/prefix/name -o OUTPUT`.
pub fn decrypt_from(
    kms: &dyn Kms,
    url: &str,
    out: Option<&Path>,
    opts: &DecryptOptions,
    ctx: &Context,
) -> anyhow::Result<i32> {
    let (loc_url, name) = split_object(url)?;
    let loc = match open(loc_url, &blobstore::BlobArgs::default()) {
        Ok(l) => l,
        Err(code) => return Ok(code),
    };
    let result = match out {
        None => blobstore::decrypt_object(kms, &loc, name, &mut std::io::stdout().lock(), opts),
        Some(p) if p == Path::new("-") => {
            blobstore::decrypt_object(kms, &loc, name, &mut std::io::stdout().lock(), opts)
        }
        Some(path) => {
            // Decrypt beside the target and rename only when every chunk verified.
            let mut blob_err = None;
            let written = crate::files::write_atomically(path, None, |w| {
                blobstore::decrypt_object(kms, &loc, name, w, opts).map_err(|e| {
                    let message = e.to_string();
                    blob_err = Some(e);
                    crate::files::FileError::Io {
                        path: path.to_path_buf(),
                        source: std::io::Error::other(message),
                    }
                })
            });
            match (written, blob_err) {
                (Ok(info), _) => Ok(info),
                (Err(_), Some(e)) => Err(e),
                (Err(e), None) => {
                    eprintln!("rewrap: {}: {e}", path.display());
                    return Ok(1);
                }
            }
        }
    };
    match result {
        Ok(info) => {
            if out.is_some_and(|p| p != Path::new("-")) {
                ctx.print_value(&serde_json::to_value(&info)?)?;
            }
            Ok(0)
        }
        Err(e) => {
            eprintln!("rewrap: {url}: {e}");
            Ok(1)
        }
    }
}

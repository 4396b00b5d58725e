//! Export: closed segments and signed digests copied to an object-store
//! location (`s3://`, `az://`, `gs://`, `file://`), so the trail leaves the
//! host.
//!
//! Objects are `<prefix>/audit.segments/<name>` and
//! `<prefix>/audit.digests/<name>`, the layout of the keystore folder, so a
//! downloaded copy verifies offline as it is (`audit verify --public-key`).
//! Every put is create-only (`PutMode::Create`): an export never overwrites.
//! An object that is already there with the same bytes counts as exported
//! (a resumed or repeated export); one with other bytes is an error, never
//! replaced. Segments go before the digests that list them, so a copy never
//! holds a digest whose segments are not there yet.
//!
//! What was exported where is kept in `audit.exported` beside the trail
//! (one `location<TAB>object` line each): retention removes only segments
//! exported there.

use super::{digest, segment, AuditError};
use crate::objstore::ObjectLocation;
use object_store::{path::Path as ObjectPath, PutMode, PutOptions, PutPayload};
use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};

/// The ledger of exported objects, beside the active file.
pub(super) const EXPORTED_FILE: &str = "audit.exported";

/// What one export did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct ExportReport {
    /// Objects put by this export, in order.
    pub uploaded: Vec<String>,
    /// Objects already there with the same bytes (a resumed export).
    pub already_there: u64,
}

/// Copies the closed segments, then the digests, of the trail whose active
/// file is `active` to `location`.
pub fn export(active: &Path, location: &ObjectLocation) -> Result<ExportReport, AuditError> {
    let mut files: Vec<(String, PathBuf)> = Vec::new();
    for seg in segment::list(active)? {
        files.push((object_name(segment::SEGMENTS_DIR, &seg), seg));
    }
    for d in digest::list(active)? {
        files.push((object_name(digest::DIGESTS_DIR, &d), d));
    }
    let mut report = ExportReport::default();
    let done = exported(active, location.url())?;
    for (name, file) in files {
        if done.contains(&name) {
            report.already_there += 1;
            continue;
        }
        let bytes = std::fs::read(&file).map_err(super::io_error(&file))?;
        if put_create_only(location, &name, bytes)? {
            report.uploaded.push(name.clone());
        } else {
            report.already_there += 1;
        }
        note_exported(active, location.url(), &name)?;
    }
    Ok(report)
}

fn object_name(dir: &str, file: &Path) -> String {
    format!(
        "{dir}/{}",
        file.file_name().unwrap_or_default().to_string_lossy()
    )
}

fn store_error(location: &ObjectLocation, name: &str, e: impl std::fmt::Display) -> AuditError {
    AuditError::Io {
        path: PathBuf::from(format!("{}/{name}", location.url())),
        source: std::io::Error::other(e.to_string()),
    }
}

/// Puts `bytes` at `name` unless an object is there; `Ok(false)` when the
/// same bytes are already there, an error when other bytes are.
fn put_create_only(
    location: &ObjectLocation,
    name: &str,
    bytes: Vec<u8>,
) -> Result<bool, AuditError> {
    let path = if location.prefix.as_ref().is_empty() {
        ObjectPath::from(name)
    } else {
        ObjectPath::from(format!("{}/{name}", location.prefix))
    };
    let opts = PutOptions {
        mode: PutMode::Create,
        ..PutOptions::default()
    };
    let put = location.block_on(location.store.put_opts(
        &path,
        PutPayload::from(bytes.clone()),
        opts,
    ));
    match put {
        Ok(_) => Ok(true),
        Err(object_store::Error::AlreadyExists { .. }) => {
            let there = location
                .block_on(async { location.store.get(&path).await?.bytes().await })
                .map_err(|e| store_error(location, name, e))?;
            if there.as_ref() == bytes.as_slice() {
                Ok(false)
            } else {
                Err(store_error(
                    location,
                    name,
                    "already there with other bytes: not overwritten (another trail exported here?)",
                ))
            }
        }
        Err(e) => Err(store_error(location, name, e)),
    }
}

/// The objects the ledger says were exported to `url`.
pub(super) fn exported(active: &Path, url: &str) -> Result<BTreeSet<String>, AuditError> {
    let path = active.with_file_name(EXPORTED_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeSet::new()),
        Err(e) => return Err(super::io_error(&path)(e)),
    };
    Ok(text
        .lines()
        .filter_map(|l| l.split_once('\t'))
        .filter(|(u, _)| *u == url)
        .map(|(_, name)| name.to_string())
        .collect())
}

/// Every object the ledger lists, whatever the location.
pub(super) fn exported_anywhere(active: &Path) -> Result<BTreeSet<String>, AuditError> {
    let path = active.with_file_name(EXPORTED_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => Ok(text
            .lines()
            .filter_map(|l| l.split_once('\t'))
            .map(|(_, name)| name.to_string())
            .collect()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BTreeSet::new()),
        Err(e) => Err(super::io_error(&path)(e)),
    }
}

fn note_exported(active: &Path, url: &str, name: &str) -> Result<(), AuditError> {
    let path = active.with_file_name(EXPORTED_FILE);
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(super::io_error(&path))?;
    writeln!(file, "{url}\t{name}")
        .and_then(|()| file.sync_data())
        .map_err(super::io_error(&path))
}

//! `rewrap audit public-key` and `rewrap audit verify --public-key FILE DIR`
//! (issue 14): the audit-signing public keys, and the offline verification
//! of a copied trail with nothing but them.

use super::Context;
use super::OpError;
use rewrap::audit;
use std::path::{Path, PathBuf};

/// The keystore's service and the caller's principal, authenticated.
fn authenticated(
    ctx: &Context,
) -> anyhow::Result<(std::sync::Arc<rewrap::service::KmsService>, String)> {
    let service = ctx.service()?;
    let creds = ctx.credentials()?;
    let principal = service
        .authenticate(&creds.access_key_id, creds.secret_access_key.expose())
        .map_err(|e| super::ConfigError(format!("{}: {}", e.code, e.message)))?;
    Ok((service, principal))
}

/// `rewrap audit public-key`.
#[derive(Debug, clap::Args)]
pub(crate) struct PublicKeyArgs {
    /// Add a new signing key first (the old public keys stay listed and
    /// keep verifying the digests they signed).
    #[arg(long)]
    rotate: bool,
}

/// Prints the trail's audit-signing public keys, oldest first, one hex key a
/// line: the file `audit verify --public-key` reads.
pub(crate) fn public_key(args: PublicKeyArgs, ctx: &Context) -> anyhow::Result<i32> {
    let (service, principal) = authenticated(ctx)?;
    let action = if args.rotate {
        rewrap::policy::Action::RotateKeyOnDemand
    } else {
        rewrap::policy::Action::ReadAuditTrail
    };
    let keys = service
        .with_access(&principal, action, || {
            if args.rotate {
                service.rotate_audit_signing_key()
            } else {
                service.audit_public_keys()
            }
        })
        .map_err(|error| OpError {
            operation: "ReadAuditTrail",
            error,
        })??;
    for key in keys {
        println!("{key}");
    }
    Ok(0)
}

/// `rewrap audit verify --public-key FILE [DIR]`: verifies the trail copied
/// to `dir` (default: the keystore folder) with only the public keys in
/// `keys_file`. Exit 0 intact, 1 not.
pub(crate) fn verify_offline(
    keys_file: &Path,
    dir: Option<PathBuf>,
    ctx: &Context,
) -> anyhow::Result<i32> {
    let dir = dir.unwrap_or_else(|| ctx.home());
    let trusted = match audit::read_public_keys(keys_file) {
        Ok(keys) if !keys.is_empty() => keys,
        Ok(_) => {
            return Err(super::UsageError(format!("{}: no public key", keys_file.display())).into())
        }
        Err(e) => return Err(super::UsageError(e.to_string()).into()),
    };
    match audit::verify_offline(&dir, &trusted) {
        Ok(summary) => {
            let mut value = serde_json::to_value(&summary)?;
            value["ok"] = true.into();
            value["path"] = dir.display().to_string().into();
            ctx.print_verdict(&format!("ok: {summary} ({})", dir.display()), &value)?;
            Ok(0)
        }
        Err(e) => {
            eprintln!(
                "rewrap: audit trail {} FAILED verification: {e}",
                dir.display()
            );
            Ok(1)
        }
    }
}

/// `rewrap audit export LOCATION`.
#[derive(Debug, clap::Args)]
pub(crate) struct ExportArgs {
    /// Where to: s3://bucket/prefix, az://container/prefix,
    /// gs://bucket/prefix or file:///path.
    location: String,
    /// S3 endpoint URL (an S3-compatible store) [default: AWS_ENDPOINT_URL_S3].
    #[arg(long, value_name = "URL")]
    s3_endpoint: Option<String>,
}

/// Copies the closed segments and signed digests to the location; prints
/// what was put and what was already there.
pub(crate) fn export(args: ExportArgs, ctx: &Context) -> anyhow::Result<i32> {
    if !rewrap::objstore::is_object_url(&args.location) {
        return Err(super::UsageError(format!(
            "{}: not an object-store location (s3://, az://, gs://, file://)",
            args.location
        ))
        .into());
    }
    let options = rewrap::objstore::ObjectStoreOptions {
        s3_endpoint: args.s3_endpoint.clone(),
        ..Default::default()
    };
    let location = rewrap::objstore::open_location(&args.location, &options)
        .map_err(|e| super::UsageError(e.to_string()))?;
    let (service, principal) = authenticated(ctx)?;
    let report = service
        .with_access(&principal, rewrap::policy::Action::ReadAuditTrail, || {
            service.export_audit_trail(&location)
        })
        .map_err(|error| OpError {
            operation: "ReadAuditTrail",
            error,
        })??;
    ctx.print_value(&serde_json::to_value(&report)?)?;
    Ok(0)
}

/// `rewrap audit prune`.
#[derive(Debug, clap::Args)]
pub(crate) struct PruneArgs {
    /// Remove closed segments older than this many days [default: the
    /// keystore's `[audit] retention_days`; unset: remove nothing].
    #[arg(long, value_name = "DAYS")]
    older_than_days: Option<u64>,
}

/// Applies the retention; prints what was removed.
pub(crate) fn prune(args: PruneArgs, ctx: &Context) -> anyhow::Result<i32> {
    let (service, principal) = authenticated(ctx)?;
    let caller = rewrap::service::Caller {
        principal,
        ..Default::default()
    };
    let pruned = service
        .prune_audit_trail(&caller, args.older_than_days)
        .map_err(|error| OpError {
            operation: "PruneAuditTrail",
            error,
        })?;
    ctx.print_value(&serde_json::to_value(&pruned)?)?;
    Ok(0)
}

//! Keystore set-up, policy and audit trail commands.

use super::{ConfigError, Context, OpError};
use clap::{Args, Subcommand};
use rewrap::api::CheckPolicyRequest;
use rewrap::audit;
use rewrap::kms::to_json;
use rewrap::policy::PolicySet;
use std::path::PathBuf;

/// `rewrap init`.
#[derive(Debug, Args)]
pub(crate) struct InitArgs {
    /// Region written into key ARNs.
    #[arg(long, default_value = "us-east-1")]
    pub(crate) arn_region: String,
    /// Account id written into key ARNs.
    #[arg(long, default_value = "111122223333")]
    pub(crate) account: String,
    /// The root key that seals the keystore: file (a new root.key, the default); an RFC 7512 URI,
    /// pkcs11:token=LABEL;object=NAME?module-path=PATH&pin-source=file:PATH (the key is generated if missing);
    /// or passphrase:file:PATH / passphrase:env:NAME / passphrase:prompt (Argon2id; the prompt asks twice
    /// on the terminal, and again whenever the keystore is opened).
    #[arg(long, value_name = "ROOT")]
    pub(crate) root: Option<String>,
    #[command(flatten)]
    pub(crate) kdf: KdfArgs,
}

/// The Argon2id cost of a passphrase root (recorded in root.passphrase).
#[derive(Debug, Args)]
pub(crate) struct KdfArgs {
    /// Argon2id memory of a passphrase root, KiB.
    #[arg(long, default_value_t = rewrap::root::KdfCost::default().memory_kib)]
    pub(crate) root_kdf_memory_kib: u32,
    /// Argon2id passes of a passphrase root.
    #[arg(long, default_value_t = rewrap::root::KdfCost::default().iterations)]
    pub(crate) root_kdf_iterations: u32,
}

impl KdfArgs {
    /// The root `text` names, with this cost for a passphrase root.
    pub(crate) fn root(
        &self,
        text: Option<&str>,
    ) -> Result<rewrap::root::RootSpec, super::UsageError> {
        let cost = rewrap::root::KdfCost {
            memory_kib: self.root_kdf_memory_kib,
            iterations: self.root_kdf_iterations,
            ..Default::default()
        };
        rewrap::root::RootSpec::parse(text.unwrap_or("file"), cost).map_err(super::UsageError)
    }
}

/// `rewrap policy ...`.
#[derive(Debug, Subcommand)]
pub(crate) enum PolicyCommand {
    /// Explains whether a principal may perform an action on a key, and which statement decided.
    #[command(
        after_help = "Examples:\n  rewrap policy check --principal storage-rotator --action kms:Decrypt --key-id alias/app-data\n  rewrap policy check --principal app-reader --action kms:Decrypt --key-id alias/app-data --encryption-context purpose=app-data\n\nExit code: 0 allowed, 1 denied."
    )]
    Check {
        /// Principal name.
        #[arg(long)]
        principal: String,
        /// Action, e.g. kms:Decrypt.
        #[arg(long)]
        action: String,
        /// Key id, ARN or alias; omit for account-level actions.
        #[arg(long = "key-id", alias = "key", value_name = "KEY")]
        key: Option<String>,
        /// Encryption context pair KEY=VALUE (repeatable); for ReEncrypt actions the source context.
        #[arg(
            long = "encryption-context",
            alias = "context",
            value_name = "KEY=VALUE"
        )]
        context: Vec<String>,
        /// For kms:ReEncryptFrom / kms:ReEncryptTo: the destination key [default: --key-id].
        #[arg(long)]
        destination_key: Option<String>,
        /// For ReEncrypt actions: a destination context pair KEY=VALUE (repeatable) [default: --encryption-context].
        #[arg(
            long = "destination-encryption-context",
            alias = "destination-context",
            value_name = "KEY=VALUE"
        )]
        destination_context: Vec<String>,
    },
    /// Parses every policy file of a folder and reports the first error.
    #[command(
        after_help = "Examples:\n  rewrap policy validate\n  rewrap policy validate ./policies"
    )]
    Validate {
        /// The folder [default: <keystore>/policies and --policies].
        dir: Option<PathBuf>,
    },
    /// Effective permissions: who holds administer / encrypt / decrypt / re-encrypt / audit on each key, under which conditions, and which denies override what.
    #[command(
        after_help = "Examples:\n  rewrap policy report\n  rewrap policy report --key-id alias/app-data --format csv > access.csv\n\nAccess: allow (every action of the group), conditional (only under the conditions shown),\npartial (only the actions shown), denied (a deny matches; none held)."
    )]
    Report(super::policy_report::ReportArgs),
}

/// `rewrap audit ...`.
#[derive(Debug, Subcommand)]
pub(crate) enum AuditCommand {
    /// Checks the hash chain of the audit trail; names the first changed, removed, inserted or reordered record.
    #[command(
        after_help = "Examples:\n  rewrap audit verify\n  rewrap audit verify --file /backup/audit.log\n\nExit code: 0 intact, 1 changed, truncated or reordered."
    )]
    Verify {
        /// The audit file [default: <keystore>/audit.log].
        #[arg(long, conflicts_with = "public_key")]
        file: Option<PathBuf>,
        /// Verify offline, with only these audit-signing public keys (the
        /// output of `rewrap audit public-key`), the trail copied to DIR.
        #[arg(long, value_name = "FILE")]
        public_key: Option<PathBuf>,
        /// With --public-key: the copied trail's folder [default: the keystore].
        #[arg(requires = "public_key")]
        dir: Option<PathBuf>,
    },
    /// Prints the audit-signing public keys (one hex key a line), for
    /// `audit verify --public-key`.
    PublicKey(super::audit::PublicKeyArgs),
    /// Copies the closed segments and signed digests to an object-store
    /// location (s3://, az://, gs://, file://); create-only, resumable.
    Export(super::audit::ExportArgs),
    /// Removes closed segments past the retention that were exported and
    /// are listed by a signed digest; the removal is signed and recorded.
    Prune(super::audit::PruneArgs),
    /// Summarises key use per key, principal and operation.
    #[command(
        after_help = "Examples:\n  rewrap audit report --since 2026-11-01\n  rewrap audit report --key-id alias/app-data --principal storage-rotator --output text"
    )]
    Report(super::audit_report::ReportArgs),
}

/// Creates the keystore and prints the owner's credentials.
pub(crate) fn init(args: InitArgs, ctx: &Context) -> anyhow::Result<i32> {
    let home = ctx.home();
    let config = rewrap::keystore::Config {
        region: args.arn_region,
        account: args.account,
        ..Default::default()
    };
    let root = args.kdf.root(args.root.as_deref())?;
    let existed = home.exists();
    let store =
        rewrap::keystore::Keystore::create_with_root(&home, config, &root).map_err(|e| {
            // A failed init leaves no folder it made (only an empty one can be here).
            if !existed {
                let _ = std::fs::remove_dir(&home);
            }
            super::root::keystore_error(e, "Init")
        })?;
    let creds = rewrap::service::KmsService::init_owner(store).map_err(|error| OpError {
        operation: "Init",
        error,
    })?;
    eprintln!(
        "Created keystore {}. The owner's secret access key is shown only now: store it safely.\n\
         Use it with: export REWRAP_HOME={} REWRAP_ACCESS_KEY_ID=... REWRAP_SECRET_ACCESS_KEY=...",
        home.display(),
        home.display()
    );
    let body = to_json(&creds).map_err(|e| anyhow::anyhow!(e.message))?;
    ctx.print_json(body.expose())?;
    Ok(0)
}

/// Runs a policy subcommand.
pub(crate) fn policy(cmd: PolicyCommand, ctx: &Context) -> anyhow::Result<i32> {
    match cmd {
        PolicyCommand::Report(a) => super::policy_report::run(&a, ctx),
        PolicyCommand::Validate { dir } => {
            let dirs = match dir {
                Some(d) => vec![d],
                None => std::iter::once(ctx.home().join("policies"))
                    .chain(ctx.extra_policies())
                    .collect(),
            };
            let mut total = 0;
            for d in &dirs {
                let set = PolicySet::load_dir(d).map_err(|e| ConfigError(e.to_string()))?;
                total += set.len();
            }
            let value = serde_json::json!({ "ok": true, "statements": total });
            ctx.print_verdict(&format!("ok: {total} statements"), &value)?;
            Ok(0)
        }
        PolicyCommand::Check {
            principal,
            action,
            key,
            context,
            destination_key,
            destination_context,
        } => {
            let pairs = |list: &[String]| {
                if list.is_empty() {
                    Ok(None)
                } else {
                    super::kms::context_arg(Some(&list.join(",")))
                }
            };
            // Through the KMS (local or --endpoint-url): the caller needs rewrap:CheckPolicy.
            let request = CheckPolicyRequest {
                principal_name: principal,
                action,
                key_id: key,
                encryption_context: pairs(&context)?,
                destination_key_id: destination_key,
                destination_encryption_context: pairs(&destination_context)?,
            };
            let kms = ctx.kms()?;
            let response = kms.check_policy(&request).map_err(|error| OpError {
                operation: "CheckPolicy",
                error,
            })?;
            ctx.print_value(&serde_json::to_value(&response)?)?;
            Ok(i32::from(response.decision != "allow"))
        }
    }
}

/// Runs an audit subcommand. Reading the trail needs `rewrap:ReadAuditTrail`.
///
/// `audit verify` of the keystore's own trail checks its end against the
/// sealed checkpoint too, and records its own use only after it verified.
pub(crate) fn audit(cmd: AuditCommand, ctx: &Context) -> anyhow::Result<i32> {
    let cmd = match cmd {
        AuditCommand::Report(a) => return super::audit_report::run(&a, ctx),
        AuditCommand::Verify {
            public_key: Some(keys),
            dir,
            ..
        } => return super::audit::verify_offline(&keys, dir, ctx),
        AuditCommand::PublicKey(args) => return super::audit::public_key(args, ctx),
        AuditCommand::Export(args) => return super::audit::export(args, ctx),
        AuditCommand::Prune(args) => return super::audit::prune(args, ctx),
        cmd @ AuditCommand::Verify { .. } => cmd,
    };
    if ctx.global.endpoint_url.is_some() {
        return remote_audit(cmd, ctx);
    }
    let file = match &cmd {
        AuditCommand::Verify { file, .. } => file.clone(),
        AuditCommand::Report(a) => a.file.clone(),
        AuditCommand::PublicKey(_) | AuditCommand::Export(_) | AuditCommand::Prune(_) => None,
    };
    let verify_only = matches!(cmd, AuditCommand::Verify { .. });
    let (path, verified) = if let Some(p) = file {
        let verified = verify_only.then(|| audit::verify(&p));
        (p, verified)
    } else {
        let service = ctx.service()?;
        let creds = ctx.credentials()?;
        let principal = service
            .authenticate(&creds.access_key_id, creds.secret_access_key.expose())
            .map_err(|e| ConfigError(format!("{}: {}", e.code, e.message)))?;
        let verified = service
            .with_access(&principal, rewrap::policy::Action::ReadAuditTrail, || {
                verify_only.then(|| service.verify_audit())
            })
            .map_err(|error| OpError {
                operation: "ReadAuditTrail",
                error,
            })?;
        (service.audit_path(), verified)
    };
    match cmd {
        AuditCommand::PublicKey(_) | AuditCommand::Export(_) | AuditCommand::Prune(_) => {
            unreachable!("handled before the keystore is opened")
        }
        AuditCommand::Verify { .. } => match verified.expect("verify ran") {
            Ok(summary) => {
                if !summary.repairs.is_empty() {
                    eprintln!(
                        "rewrap: audit trail {}: writers repaired {} torn final record(s); see the RepairAuditTail records (seq {:?})",
                        path.display(),
                        summary.repairs.len(),
                        summary.repairs
                    );
                }
                let mut value = serde_json::to_value(&summary)?;
                value["ok"] = true.into();
                value["path"] = path.display().to_string().into();
                ctx.print_verdict(&format!("ok: {summary} ({})", path.display()), &value)?;
                Ok(0)
            }
            Err(e) => {
                eprintln!(
                    "rewrap: audit trail {} FAILED verification: {e}",
                    path.display()
                );
                Ok(1)
            }
        },
        AuditCommand::Report(_) => unreachable!("reports returned above"),
    }
}

/// `rewrap --endpoint-url URL audit ...`: the same commands through the
/// KMS's VerifyAuditTrail and GetAuditReport (the report read page by page).
fn remote_audit(cmd: AuditCommand, ctx: &Context) -> anyhow::Result<i32> {
    use rewrap::api::Empty;
    let kms = ctx.kms()?;
    let op_error = |operation| move |error| OpError { operation, error };
    match cmd {
        AuditCommand::PublicKey(_)
        | AuditCommand::Export(_)
        | AuditCommand::Prune(_)
        | AuditCommand::Verify {
            public_key: Some(_),
            ..
        } => Err(ConfigError(
            "this audit command reads the local keystore; it cannot be used with --endpoint-url"
                .into(),
        )
        .into()),
        AuditCommand::Verify { file: Some(_), .. } => Err(ConfigError(
            "--file reads a local trail; it cannot be used with --endpoint-url".into(),
        )
        .into()),
        AuditCommand::Verify { file: None, .. } => {
            let v = kms
                .verify_audit_trail(&Empty {})
                .map_err(op_error("VerifyAuditTrail"))?;
            let url = ctx.global.endpoint_url.clone().unwrap_or_default();
            if let Some(problem) = &v.problem {
                eprintln!("rewrap: audit trail of {url} FAILED verification: {problem}");
                return Ok(1);
            }
            if !v.repairs.is_empty() {
                eprintln!(
                    "rewrap: audit trail of {url}: writers repaired {} torn final record(s); see the RepairAuditTail records (seq {:?})",
                    v.repairs.len(),
                    v.repairs
                );
            }
            if !v.checkpoint_missing.is_empty() {
                eprintln!(
                    "rewrap: audit trail of {url}: the sealed checkpoint was missing before record(s) {:?} (deleted, or a trail older than checkpoints)",
                    v.checkpoint_missing
                );
            }
            let value = serde_json::to_value(&v)?;
            let text = format!(
                "ok: {} records, chain intact, last hash {}{} ({url})",
                v.records,
                v.last_hash,
                if v.checkpoint_checked {
                    "; end matches the sealed checkpoint"
                } else {
                    ""
                }
            );
            ctx.print_verdict(&text, &value)?;
            Ok(0)
        }
        AuditCommand::Report(_) => unreachable!("reports do not come here"),
    }
}

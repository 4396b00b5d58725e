//! `rewrap root ...`: the keystore's root of trust.

use super::{ConfigError, Context, OpError};
use clap::Subcommand;
use rewrap::keystore::KeystoreError;
use rewrap::root::RootKeyError;
use rewrap::service::{MoveRootError, MOVE_ROOT};

/// `rewrap root ...`.
#[derive(Debug, Subcommand)]
pub(crate) enum RootCommand {
    /// Seals the keystore, the audit-signing keys and the audit checkpoint again under another root
    /// and switches to it; keys, ciphertexts and envelopes are unchanged. Restart `rewrap serve` after.
    /// Needs kms:ScheduleKeyDeletion on `*`; recorded in the audit trail as MoveRoot.
    #[command(
        after_help = "Examples:\n  rewrap root move --to passphrase:file:/etc/rewrap/passphrase\n  rewrap root move --to 'pkcs11:token=prod;object=rewrap-root?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=file:/etc/rewrap/hsm.pin'\n  rewrap root move --to file"
    )]
    Move {
        /// The new root: file, pkcs11:URI, passphrase:file:PATH, passphrase:env:NAME or passphrase:prompt (asked twice on the terminal).
        #[arg(long, value_name = "ROOT")]
        to: String,
        #[command(flatten)]
        kdf: super::admin::KdfArgs,
    },
}

/// Runs a root subcommand.
pub(crate) fn run(cmd: RootCommand, ctx: &Context) -> anyhow::Result<i32> {
    match cmd {
        RootCommand::Move { to, kdf } => {
            let spec = kdf.root(Some(&to))?;
            let (service, principal) = ctx.authenticated_service()?;
            let caller = rewrap::service::Caller {
                principal,
                user_agent: Some(format!("rewrap-cli/{}", env!("CARGO_PKG_VERSION"))),
                ..Default::default()
            };
            let moved = service.move_root(&caller, &spec).map_err(|e| match e {
                MoveRootError::Keystore(e) => keystore_error(e, MOVE_ROOT),
                MoveRootError::Kms(error) => OpError {
                    operation: MOVE_ROOT,
                    error,
                }
                .into(),
                other => other.into(),
            })?;
            let value = serde_json::json!({ "From": moved.from, "To": moved.to });
            ctx.print_verdict(&format!("moved: {} -> {}", moved.from, moved.to), &value)?;
            Ok(0)
        }
    }
}

/// The exit code of a keystore error of `init` (`operation` `Init`) or
/// `root move`, as the README's table has it: a root that cannot be made or
/// opened (a missing or unsafe module, token, PIN or passphrase; a wrong
/// PIN or passphrase; a secret file others can read) is configuration
/// (253); an existing keystore is `AlreadyExistsException` (254); I/O and
/// a root that fails to seal are anything else (255).
pub(crate) fn keystore_error(e: KeystoreError, operation: &'static str) -> anyhow::Error {
    match e {
        KeystoreError::RootKey(RootKeyError::Authentication) => e.into(),
        KeystoreError::RootKey(_) => ConfigError(e.to_string()).into(),
        KeystoreError::AlreadyExists { .. } => OpError {
            operation,
            error: e.into(),
        }
        .into(),
        _ => e.into(),
    }
}

//! `aws kms`-style subcommands for custom key stores (PKCS#11 tokens):
//! create, describe, connect, disconnect, update, delete.
//!
//! The user PIN is never an argument: `--pin-source` names a file
//! (`file:PATH`) or an environment variable (`env:NAME`) that the process
//! connecting to the token (this one, or `rewrap serve`) reads.

use super::kms::call;
use super::{Context, OpError};
use clap::Subcommand;
use rewrap::api::*;
use rewrap::error::{ErrorCode, KmsError};
use rewrap::kms::to_json;
use rewrap::secret::Secret;

/// Custom key store operations, named as in `aws kms`.
#[derive(Debug, Subcommand)]
#[allow(missing_docs)] // reason: clap shows the doc of each field as its help
pub(crate) enum CustomKeyStoreCommand {
    /// Records a custom key store: a PKCS#11 module, a token, and where its user PIN is read.
    #[command(
        after_help = "Examples:\n  rewrap create-custom-key-store --custom-key-store-name hsm1 \\\n      --pkcs11-module-path /usr/lib/softhsm/libsofthsm2.so --token-label rewrap \\\n      --pin-source file:/etc/rewrap/hsm1.pin\n  rewrap connect-custom-key-store --custom-key-store-id cks-..."
    )]
    CreateCustomKeyStore {
        #[arg(long)]
        custom_key_store_name: String,
        /// PKCS11 (the only type rewrap has).
        #[arg(long)]
        custom_key_store_type: Option<String>,
        /// The PKCS#11 module (shared library), an absolute path.
        #[arg(long)]
        pkcs11_module_path: String,
        /// The token's label (or give --token-serial).
        #[arg(
            long,
            conflicts_with = "token_serial",
            required_unless_present = "token_serial"
        )]
        token_label: Option<String>,
        /// The token's serial number.
        #[arg(long)]
        token_serial: Option<String>,
        /// Where the user PIN is read: file:PATH or env:NAME (never the PIN itself).
        #[arg(long)]
        pin_source: String,
    },
    /// Shows custom key stores and their connection states.
    #[command(
        after_help = "Examples:\n  rewrap describe-custom-key-stores\n  rewrap describe-custom-key-stores --custom-key-store-id cks-... --query 'CustomKeyStores[0].ConnectionState' --output text"
    )]
    DescribeCustomKeyStores {
        #[arg(long)]
        custom_key_store_id: Option<String>,
        #[arg(long)]
        custom_key_store_name: Option<String>,
        #[arg(long)]
        limit: Option<u32>,
        #[arg(long)]
        marker: Option<String>,
    },
    /// Logs in to a custom key store's token; exits 254 if the store ends FAILED.
    #[command(
        after_help = "Examples:\n  rewrap connect-custom-key-store --custom-key-store-id cks-..."
    )]
    ConnectCustomKeyStore {
        #[arg(long)]
        custom_key_store_id: String,
    },
    /// Disconnects a custom key store: its keys refuse cryptography until it is connected.
    #[command(
        after_help = "Examples:\n  rewrap disconnect-custom-key-store --custom-key-store-id cks-..."
    )]
    DisconnectCustomKeyStore {
        #[arg(long)]
        custom_key_store_id: String,
    },
    /// Renames a custom key store, or (disconnected) changes its module, token or PIN source.
    #[command(
        after_help = "Examples:\n  rewrap update-custom-key-store --custom-key-store-id cks-... --new-custom-key-store-name hsm-prod\n  rewrap update-custom-key-store --custom-key-store-id cks-... --pin-source env:HSM_PIN"
    )]
    UpdateCustomKeyStore {
        #[arg(long)]
        custom_key_store_id: String,
        #[arg(long)]
        new_custom_key_store_name: Option<String>,
        #[arg(long)]
        pkcs11_module_path: Option<String>,
        #[arg(long, conflicts_with = "token_serial")]
        token_label: Option<String>,
        #[arg(long)]
        token_serial: Option<String>,
        /// file:PATH or env:NAME.
        #[arg(long)]
        pin_source: Option<String>,
    },
    /// Deletes a disconnected custom key store that holds no keys.
    #[command(
        after_help = "Examples:\n  rewrap delete-custom-key-store --custom-key-store-id cks-..."
    )]
    DeleteCustomKeyStore {
        #[arg(long)]
        custom_key_store_id: String,
    },
}

fn request(cmd: &CustomKeyStoreCommand) -> (Operation, Result<Secret, KmsError>) {
    use CustomKeyStoreCommand as C;
    use Operation as O;
    let id = |id: &String| CustomKeyStoreIdRequest {
        custom_key_store_id: id.clone(),
    };
    match cmd {
        C::CreateCustomKeyStore {
            custom_key_store_name,
            custom_key_store_type,
            pkcs11_module_path,
            token_label,
            token_serial,
            pin_source,
        } => (
            O::CreateCustomKeyStore,
            to_json(&CreateCustomKeyStoreRequest {
                custom_key_store_name: custom_key_store_name.clone(),
                custom_key_store_type: custom_key_store_type.clone(),
                pkcs11_module_path: Some(pkcs11_module_path.clone()),
                token_label: token_label.clone(),
                token_serial: token_serial.clone(),
                pin_source: Some(pin_source.clone()),
                key_store_password: None,
            }),
        ),
        C::DescribeCustomKeyStores {
            custom_key_store_id,
            custom_key_store_name,
            limit,
            marker,
        } => (
            O::DescribeCustomKeyStores,
            to_json(&DescribeCustomKeyStoresRequest {
                custom_key_store_id: custom_key_store_id.clone(),
                custom_key_store_name: custom_key_store_name.clone(),
                limit: *limit,
                marker: marker.clone(),
            }),
        ),
        C::ConnectCustomKeyStore {
            custom_key_store_id,
        } => (O::ConnectCustomKeyStore, to_json(&id(custom_key_store_id))),
        C::DisconnectCustomKeyStore {
            custom_key_store_id,
        } => (
            O::DisconnectCustomKeyStore,
            to_json(&id(custom_key_store_id)),
        ),
        C::UpdateCustomKeyStore {
            custom_key_store_id,
            new_custom_key_store_name,
            pkcs11_module_path,
            token_label,
            token_serial,
            pin_source,
        } => (
            O::UpdateCustomKeyStore,
            to_json(&UpdateCustomKeyStoreRequest {
                custom_key_store_id: custom_key_store_id.clone(),
                new_custom_key_store_name: new_custom_key_store_name.clone(),
                pkcs11_module_path: pkcs11_module_path.clone(),
                token_label: token_label.clone(),
                token_serial: token_serial.clone(),
                pin_source: pin_source.clone(),
                key_store_password: None,
            }),
        ),
        C::DeleteCustomKeyStore {
            custom_key_store_id,
        } => (O::DeleteCustomKeyStore, to_json(&id(custom_key_store_id))),
    }
}

/// Runs one custom key store subcommand.
pub(crate) fn run(cmd: CustomKeyStoreCommand, ctx: &Context) -> anyhow::Result<i32> {
    let (op, body) = request(&cmd);
    let body = body.map_err(|e| anyhow::anyhow!(e.message))?;
    let kms = ctx.kms()?;
    let response = call(kms.as_ref(), op, &body)?;
    if let CustomKeyStoreCommand::ConnectCustomKeyStore {
        custom_key_store_id,
    } = &cmd
    {
        return connect_outcome(kms.as_ref(), custom_key_store_id);
    }
    if response.expose() != b"{}" {
        ctx.print_json(response.expose())?;
    }
    Ok(0)
}

/// ConnectCustomKeyStore succeeds when the attempt was made, as AWS's; the
/// CLI reads the state back so that a failed connection is an error here.
fn connect_outcome(kms: &dyn rewrap::kms::Kms, id: &str) -> anyhow::Result<i32> {
    let described = kms
        .describe_custom_key_stores(&DescribeCustomKeyStoresRequest {
            custom_key_store_id: Some(id.to_string()),
            ..Default::default()
        })
        .map_err(|error| OpError {
            operation: Operation::DescribeCustomKeyStores.name(),
            error,
        })?;
    let Some(store) = described.custom_key_stores.first() else {
        return Ok(0);
    };
    if store.connection_state == "FAILED" {
        return Err(OpError {
            operation: Operation::ConnectCustomKeyStore.name(),
            error: KmsError::new(
                ErrorCode::CustomKeyStoreInvalidState,
                format!(
                    "custom key store {id} is FAILED, ConnectionErrorCode {}: {}",
                    store
                        .connection_error_code
                        .as_deref()
                        .unwrap_or("INTERNAL_ERROR"),
                    store.connection_error_message.as_deref().unwrap_or("")
                ),
            ),
        }
        .into());
    }
    Ok(0)
}

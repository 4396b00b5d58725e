//! `aws kms`-style subcommands: each builds one request, calls the KMS and
//! prints the response.

use super::{Context, OpError};
use anyhow::Context as _;
use clap::Subcommand;
use rewrap::api::*;
use rewrap::kms::{to_json, Kms};
use rewrap::secret::Secret;

// Issue 15 part A: the tag and grant subcommands.
mod tags_grants;

/// KMS operations, named as in `aws kms`.
#[derive(Debug, Subcommand)]
#[allow(missing_docs)] // reason: clap shows the doc of each field as its help
pub(crate) enum KmsCommand {
    /// Creates a customer master key (AES-256 SYMMETRIC_DEFAULT unless --key-spec says otherwise).
    #[command(
        after_help = "Examples:\n  rewrap create-key --description \"app data 2027\"\n  rewrap create-key --description app-data --tags team=storage,env=prod --query KeyMetadata.KeyId --output text\n  rewrap create-key --key-spec ECC_NIST_P256 --key-usage SIGN_VERIFY\n  rewrap create-key --key-spec HMAC_256 --key-usage GENERATE_VERIFY_MAC\n  rewrap create-key --origin EXTERNAL   # then get-parameters-for-import, import-key-material"
    )]
    CreateKey {
        #[arg(long)]
        description: Option<String>,
        /// ENCRYPT_DECRYPT (default), SIGN_VERIFY or GENERATE_VERIFY_MAC.
        #[arg(long)]
        key_usage: Option<String>,
        /// SYMMETRIC_DEFAULT (default), RSA_2048/3072/4096, ECC_NIST_P256/P384/P521, ECC_SECG_P256K1, HMAC_224/256/384/512.
        #[arg(long)]
        key_spec: Option<String>,
        /// AWS_KMS (default), EXTERNAL (imported key material) or AWS_CLOUDHSM (with --custom-key-store-id: the key is generated in, and never leaves, the store's PKCS#11 token).
        #[arg(long)]
        origin: Option<String>,
        /// Tags as KEY=VALUE,...
        #[arg(long)]
        tags: Option<String>,
        #[arg(long)]
        custom_key_store_id: Option<String>,
    },
    /// Shows a key's metadata.
    #[command(
        after_help = "Examples:\n  rewrap describe-key --key-id alias/app-data\n  rewrap describe-key --key-id KEYID --query KeyMetadata.KeyState --output text"
    )]
    DescribeKey {
        #[arg(long)]
        key_id: String,
    },
    /// Replaces a key's description.
    #[command(
        after_help = "Examples:\n  rewrap update-key-description --key-id alias/app-data --description \"app data, 2027\""
    )]
    UpdateKeyDescription {
        #[arg(long)]
        key_id: String,
        #[arg(long)]
        description: String,
    },
    /// Lists keys.
    #[command(
        after_help = "Examples:\n  rewrap list-keys\n  rewrap list-keys --output text\n  rewrap list-keys --limit 10 --marker MARKER"
    )]
    ListKeys {
        #[arg(long)]
        limit: Option<u32>,
        #[arg(long)]
        marker: Option<String>,
    },
    /// Enables a key.
    #[command(after_help = "Examples:\n  rewrap enable-key --key-id alias/app-data")]
    EnableKey {
        #[arg(long)]
        key_id: String,
    },
    /// Disables a key; it refuses cryptographic operations until enabled.
    #[command(
        after_help = "Examples:\n  rewrap disable-key --key-id alias/app-data-2026\n  rewrap disable-key --key-id KEYID --force   # even if the last inventory saw envelopes under it"
    )]
    DisableKey {
        #[arg(long)]
        key_id: String,
        /// Disable even if the KMS's usage index says envelopes' data keys are still wrapped under the key (recorded in the audit trail).
        #[arg(long)]
        force: bool,
    },
    /// Schedules a key for deletion after 7 to 30 days.
    #[command(
        after_help = "Examples:\n  rewrap schedule-key-deletion --key-id KEYID --pending-window-in-days 30\n  rewrap inventory --stale-against alias/app-data data/   # check first: nothing must still need the key"
    )]
    ScheduleKeyDeletion {
        #[arg(long)]
        key_id: String,
        #[arg(long)]
        pending_window_in_days: Option<u32>,
        /// Schedule even if the KMS's usage index says envelopes' data keys are still wrapped under the key (recorded in the audit trail).
        #[arg(long)]
        force: bool,
    },
    /// Cancels a scheduled deletion; the key comes back disabled.
    #[command(
        after_help = "Examples:\n  rewrap cancel-key-deletion --key-id KEYID\n  rewrap enable-key --key-id KEYID   # the key comes back disabled"
    )]
    CancelKeyDeletion {
        #[arg(long)]
        key_id: String,
    },
    /// Creates an alias for a key.
    #[command(
        after_help = "Examples:\n  rewrap create-alias --alias-name alias/app-data --target-key-id KEYID"
    )]
    CreateAlias {
        #[arg(long)]
        alias_name: String,
        #[arg(long)]
        target_key_id: String,
    },
    /// Points an alias at another key.
    #[command(
        after_help = "Examples:\n  rewrap update-alias --alias-name alias/app-data --target-key-id NEWKEYID\n  rewrap rotate --to alias/app-data data/   # then re-wrap the envelopes"
    )]
    UpdateAlias {
        #[arg(long)]
        alias_name: String,
        #[arg(long)]
        target_key_id: String,
    },
    /// Deletes an alias.
    #[command(after_help = "Examples:\n  rewrap delete-alias --alias-name alias/old-name")]
    DeleteAlias {
        #[arg(long)]
        alias_name: String,
    },
    /// Lists aliases.
    #[command(
        after_help = "Examples:\n  rewrap list-aliases\n  rewrap list-aliases --key-id KEYID --output text"
    )]
    ListAliases {
        #[arg(long)]
        key_id: Option<String>,
        #[arg(long)]
        limit: Option<u32>,
        #[arg(long)]
        marker: Option<String>,
    },
    /// Turns on automatic rotation.
    #[command(
        after_help = "Examples:\n  rewrap enable-key-rotation --key-id alias/app-data\n  rewrap enable-key-rotation --key-id alias/app-data --rotation-period-in-days 90"
    )]
    EnableKeyRotation {
        #[arg(long)]
        key_id: String,
        #[arg(long)]
        rotation_period_in_days: Option<u32>,
    },
    /// Turns off automatic rotation.
    #[command(after_help = "Examples:\n  rewrap disable-key-rotation --key-id alias/app-data")]
    DisableKeyRotation {
        #[arg(long)]
        key_id: String,
    },
    /// Shows whether automatic rotation is on.
    #[command(after_help = "Examples:\n  rewrap get-key-rotation-status --key-id alias/app-data")]
    GetKeyRotationStatus {
        #[arg(long)]
        key_id: String,
    },
    /// Adds a new version of key material now.
    #[command(
        after_help = "Examples:\n  rewrap rotate-key-on-demand --key-id alias/app-data\n  rewrap rotate --to alias/app-data data/   # re-wrap envelopes under the new version"
    )]
    RotateKeyOnDemand {
        #[arg(long)]
        key_id: String,
    },
    /// Lists a key's rotations.
    #[command(after_help = "Examples:\n  rewrap list-key-rotations --key-id alias/app-data")]
    ListKeyRotations {
        #[arg(long)]
        key_id: String,
        #[arg(long)]
        limit: Option<u32>,
        #[arg(long)]
        marker: Option<String>,
    },
    /// Encrypts up to 4096 bytes.
    #[command(
        after_help = "Examples:\n  rewrap encrypt --key-id alias/app-data --plaintext fileb://secret.bin --encryption-context purpose=app-data\n  rewrap encrypt --key-id alias/app-data --plaintext \"short text\" --query CiphertextBlob --output text | base64 --decode > secret.enc"
    )]
    Encrypt {
        #[arg(long)]
        key_id: String,
        /// fileb://PATH, file://PATH or the text itself.
        #[arg(long)]
        plaintext: String,
        /// KEY=VALUE,... or JSON.
        #[arg(long)]
        encryption_context: Option<String>,
        #[arg(long, value_delimiter = ' ', num_args = 1..)]
        grant_tokens: Option<Vec<String>>,
        #[arg(long)]
        encryption_algorithm: Option<String>,
    },
    /// Decrypts a ciphertext blob; the blob names its key.
    #[command(
        after_help = "Examples:\n  rewrap decrypt --ciphertext-blob fileb://secret.enc --encryption-context purpose=app-data\n  rewrap decrypt --ciphertext-blob fileb://secret.enc --query Plaintext --output text | base64 --decode"
    )]
    Decrypt {
        /// fileb://PATH (raw bytes).
        #[arg(long)]
        ciphertext_blob: String,
        #[arg(long)]
        encryption_context: Option<String>,
        #[arg(long)]
        key_id: Option<String>,
        #[arg(long, value_delimiter = ' ', num_args = 1..)]
        grant_tokens: Option<Vec<String>>,
        #[arg(long)]
        encryption_algorithm: Option<String>,
    },
    /// Re-encrypts a blob under another key; the plaintext never leaves the KMS.
    #[command(
        after_help = "Examples:\n  rewrap re-encrypt --ciphertext-blob fileb://secret.enc --destination-key-id alias/app-data-2027\n  rewrap re-encrypt --ciphertext-blob fileb://secret.enc --source-encryption-context purpose=app-data --destination-key-id alias/app-data --destination-encryption-context purpose=app-data"
    )]
    ReEncrypt {
        #[arg(long)]
        ciphertext_blob: String,
        #[arg(long)]
        source_encryption_context: Option<String>,
        #[arg(long)]
        source_key_id: Option<String>,
        #[arg(long)]
        destination_key_id: String,
        #[arg(long)]
        destination_encryption_context: Option<String>,
    },
    /// Returns a data key in plaintext and wrapped under a key.
    #[command(
        after_help = "Examples:\n  rewrap generate-data-key --key-id alias/app-data --key-spec AES_256\n  rewrap generate-data-key --key-id alias/app-data --number-of-bytes 32 --encryption-context purpose=app-data"
    )]
    GenerateDataKey {
        #[arg(long)]
        key_id: String,
        #[arg(long)]
        key_spec: Option<String>,
        #[arg(long)]
        number_of_bytes: Option<u32>,
        #[arg(long)]
        encryption_context: Option<String>,
    },
    /// Returns a data key wrapped under a key, without its plaintext.
    #[command(
        after_help = "Examples:\n  rewrap generate-data-key-without-plaintext --key-id alias/app-data --key-spec AES_256"
    )]
    GenerateDataKeyWithoutPlaintext {
        #[arg(long)]
        key_id: String,
        #[arg(long)]
        key_spec: Option<String>,
        #[arg(long)]
        number_of_bytes: Option<u32>,
        #[arg(long)]
        encryption_context: Option<String>,
    },
    /// Returns random bytes.
    #[command(
        after_help = "Examples:\n  rewrap generate-random --number-of-bytes 32\n  rewrap generate-random --number-of-bytes 16 --query Plaintext --output text"
    )]
    GenerateRandom {
        #[arg(long)]
        number_of_bytes: Option<u32>,
    },
    /// Shows the policy statements that apply to a key.
    #[command(
        after_help = "Examples:\n  rewrap get-key-policy --key-id alias/app-data\n  rewrap get-key-policy --key-id alias/app-data --query Policy --output text"
    )]
    GetKeyPolicy {
        #[arg(long)]
        key_id: String,
        #[arg(long)]
        policy_name: Option<String>,
    },
    /// Lists a key's policy names.
    #[command(after_help = "Examples:\n  rewrap list-key-policies --key-id alias/app-data")]
    ListKeyPolicies {
        #[arg(long)]
        key_id: String,
    },
    /// Creates a principal with one access key (its rights come from policy files).
    #[command(
        after_help = "Examples:\n  rewrap create-principal --principal-name storage-rotator   # prints its access key once\n  rewrap policy check --principal storage-rotator --action kms:ReEncryptFrom --key-id alias/app-data"
    )]
    CreatePrincipal {
        #[arg(long)]
        principal_name: String,
    },
    /// Deletes a principal and its access keys.
    #[command(
        after_help = "Examples:\n  rewrap delete-principal --principal-name storage-rotator"
    )]
    DeletePrincipal {
        #[arg(long)]
        principal_name: String,
    },
    /// Lists principals.
    #[command(
        after_help = "Examples:\n  rewrap list-principals\n  rewrap list-principals --output text"
    )]
    ListPrincipals,
    /// Adds an access key to a principal (at most two).
    #[command(
        after_help = "Examples:\n  rewrap create-access-key --principal-name storage-rotator   # then delete the old one"
    )]
    CreateAccessKey {
        #[arg(long)]
        principal_name: String,
    },
    /// Deletes an access key.
    #[command(
        after_help = "Examples:\n  rewrap delete-access-key --principal-name storage-rotator --access-key-id RWAK..."
    )]
    DeleteAccessKey {
        #[arg(long)]
        principal_name: String,
        #[arg(long)]
        access_key_id: String,
    },
    /// Shows the principal the KMS authenticated (any caller; see also `whoami`).
    #[command(
        after_help = "Examples:\n  rewrap get-caller-identity\n  rewrap --profile storage-rotator get-caller-identity --query Principal --output text"
    )]
    GetCallerIdentity,
    /// Explains whether a principal may perform an action (as `rewrap policy check`).
    #[command(
        after_help = "Examples:\n  rewrap check-policy --principal-name app-reader --action kms:Decrypt --key-id alias/app-data --encryption-context purpose=app-data"
    )]
    CheckPolicy {
        #[arg(long)]
        principal_name: String,
        #[arg(long)]
        action: String,
        #[arg(long)]
        key_id: Option<String>,
        #[arg(long)]
        encryption_context: Option<String>,
        #[arg(long)]
        destination_key_id: Option<String>,
        #[arg(long)]
        destination_encryption_context: Option<String>,
    },
    /// Verifies the audit trail (hash chain and sealed checkpoint) in the KMS; needs rewrap:ReadAuditTrail.
    #[command(
        after_help = "Examples:\n  rewrap --profile auditor --endpoint-url https://kms.internal:8443 verify-audit-trail\n  rewrap audit verify   # the same, as a verdict (exit 0 intact, 1 not)"
    )]
    VerifyAuditTrail {},
    /// One page of the audit trail's usage report from the KMS; needs rewrap:ReadAuditTrail.
    #[command(
        after_help = "Examples:\n  rewrap get-audit-report --since 2026-11-01T00:00:00Z --limit 100\n  rewrap get-audit-report --key-id alias/app-data --marker NEXT_MARKER"
    )]
    GetAuditReport {
        #[arg(long)]
        since: Option<String>,
        #[arg(long)]
        key_id: Option<String>,
        #[arg(long)]
        principal_name: Option<String>,
        #[arg(long)]
        limit: Option<u32>,
        #[arg(long)]
        marker: Option<String>,
    },
    /// Tags and grants (issue 15).
    #[command(flatten)]
    TagsGrants(tags_grants::TagsGrantsCommand),
}

/// Reads a blob argument as the AWS CLI v1 does: `fileb://` raw bytes,
/// `file://` the file's contents, anything else the text itself.
pub(crate) fn blob_arg(arg: &str) -> anyhow::Result<Secret> {
    let path = arg
        .strip_prefix("fileb://")
        .or_else(|| arg.strip_prefix("file://"));
    match path {
        Some(path) => Ok(Secret::new(
            std::fs::read(path).with_context(|| format!("cannot read {path}"))?,
        )),
        None => Ok(Secret::from_slice(arg.as_bytes())),
    }
}

/// Parses `--encryption-context`: `k=v,k2=v2`, a JSON object, or `file://PATH` of either.
pub(crate) fn context_arg(arg: Option<&str>) -> anyhow::Result<Option<EncryptionContext>> {
    let Some(arg) = arg else { return Ok(None) };
    let text = match arg.strip_prefix("file://") {
        Some(path) => {
            std::fs::read_to_string(path).with_context(|| format!("cannot read {path}"))?
        }
        None => arg.to_string(),
    };
    let text = text.trim();
    if text.starts_with('{') {
        return serde_json::from_str(text).map(Some).map_err(|e| {
            super::ConfigError(format!(
                "--encryption-context is not a JSON object of strings: {e}"
            ))
            .into()
        });
    }
    let mut map = EncryptionContext::new();
    for pair in text.split(',').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').ok_or_else(|| {
            super::ConfigError(format!("--encryption-context: {pair:?} is not KEY=VALUE"))
        })?;
        map.insert(k.to_string(), v.to_string());
    }
    Ok(Some(map))
}

fn ciphertext_arg(arg: &str) -> anyhow::Result<CiphertextBlob> {
    Ok(CiphertextBlob(blob_arg(arg)?.expose().to_vec()))
}

fn tags_arg(arg: Option<&str>) -> anyhow::Result<Option<Vec<Tag>>> {
    Ok(context_arg(arg)?.map(|m| {
        m.into_iter()
            .map(|(tag_key, tag_value)| Tag { tag_key, tag_value })
            .collect()
    }))
}

/// Builds the request of a command as (operation, JSON body).
fn request(cmd: &KmsCommand) -> anyhow::Result<(Operation, Secret)> {
    use KmsCommand as C;
    use Operation as O;
    let key = |k: &String| KeyIdRequest {
        key_id: k.clone(),
        grant_tokens: None,
    };
    let list =
        |key_id: Option<&String>, limit: &Option<u32>, marker: &Option<String>| ListRequest {
            key_id: key_id.cloned(),
            limit: *limit,
            marker: marker.clone(),
        };
    let gdk =
        |key_id: &String, key_spec: &Option<String>, n: &Option<u32>, ctx: &Option<String>| {
            anyhow::Ok(GenerateDataKeyRequest {
                key_id: key_id.clone(),
                encryption_context: context_arg(ctx.as_deref())?,
                number_of_bytes: *n,
                key_spec: key_spec.clone(),
                grant_tokens: None,
                dry_run: None,
                object: None,
            })
        };
    let out = match cmd {
        C::TagsGrants(c) => tags_grants::request(c)?,
        C::CreateKey {
            description,
            key_usage,
            key_spec,
            origin,
            tags,
            custom_key_store_id,
        } => (
            O::CreateKey,
            to_json(&CreateKeyRequest {
                description: description.clone(),
                key_usage: key_usage.clone(),
                key_spec: key_spec.clone(),
                origin: origin.clone(),
                tags: tags_arg(tags.as_deref())?,
                custom_key_store_id: custom_key_store_id.clone(),
                ..Default::default()
            }),
        ),
        C::DescribeKey { key_id } => (O::DescribeKey, to_json(&key(key_id))),
        C::ListKeys { limit, marker } => (O::ListKeys, to_json(&list(None, limit, marker))),
        C::UpdateKeyDescription {
            key_id,
            description,
        } => (
            O::UpdateKeyDescription,
            to_json(&UpdateKeyDescriptionRequest {
                key_id: key_id.clone(),
                description: description.clone(),
            }),
        ),
        C::EnableKey { key_id } => (O::EnableKey, to_json(&key(key_id))),
        C::DisableKey { key_id, force } => (
            O::DisableKey,
            to_json(&DisableKeyRequest {
                key_id: key_id.clone(),
                force: force.then_some(true),
            }),
        ),
        C::ScheduleKeyDeletion {
            key_id,
            pending_window_in_days,
            force,
        } => (
            O::ScheduleKeyDeletion,
            to_json(&ScheduleKeyDeletionRequest {
                key_id: key_id.clone(),
                pending_window_in_days: *pending_window_in_days,
                force: force.then_some(true),
            }),
        ),
        C::CancelKeyDeletion { key_id } => (O::CancelKeyDeletion, to_json(&key(key_id))),
        C::CreateAlias {
            alias_name,
            target_key_id,
        }
        | C::UpdateAlias {
            alias_name,
            target_key_id,
        } => {
            let op = if matches!(cmd, C::CreateAlias { .. }) {
                O::CreateAlias
            } else {
                O::UpdateAlias
            };
            (
                op,
                to_json(&AliasRequest {
                    alias_name: alias_name.clone(),
                    target_key_id: target_key_id.clone(),
                }),
            )
        }
        C::DeleteAlias { alias_name } => (
            O::DeleteAlias,
            to_json(&DeleteAliasRequest {
                alias_name: alias_name.clone(),
            }),
        ),
        C::ListAliases {
            key_id,
            limit,
            marker,
        } => (
            O::ListAliases,
            to_json(&list(key_id.as_ref(), limit, marker)),
        ),
        C::EnableKeyRotation {
            key_id,
            rotation_period_in_days,
        } => (
            O::EnableKeyRotation,
            to_json(&EnableKeyRotationRequest {
                key_id: key_id.clone(),
                rotation_period_in_days: *rotation_period_in_days,
            }),
        ),
        C::DisableKeyRotation { key_id } => (O::DisableKeyRotation, to_json(&key(key_id))),
        C::GetKeyRotationStatus { key_id } => (O::GetKeyRotationStatus, to_json(&key(key_id))),
        C::RotateKeyOnDemand { key_id } => (O::RotateKeyOnDemand, to_json(&key(key_id))),
        C::ListKeyRotations {
            key_id,
            limit,
            marker,
        } => (
            O::ListKeyRotations,
            to_json(&list(Some(key_id), limit, marker)),
        ),
        C::Encrypt {
            key_id,
            plaintext,
            encryption_context,
            grant_tokens,
            encryption_algorithm,
        } => (
            O::Encrypt,
            to_json(&EncryptRequest {
                key_id: key_id.clone(),
                plaintext: blob_arg(plaintext)?,
                encryption_context: context_arg(encryption_context.as_deref())?,
                grant_tokens: grant_tokens.clone(),
                encryption_algorithm: encryption_algorithm.clone(),
                dry_run: None,
                object: None,
            }),
        ),
        C::Decrypt {
            ciphertext_blob,
            encryption_context,
            key_id,
            grant_tokens,
            encryption_algorithm,
        } => (
            O::Decrypt,
            to_json(&DecryptRequest {
                ciphertext_blob: ciphertext_arg(ciphertext_blob)?,
                encryption_context: context_arg(encryption_context.as_deref())?,
                key_id: key_id.clone(),
                grant_tokens: grant_tokens.clone(),
                encryption_algorithm: encryption_algorithm.clone(),
                dry_run: None,
                object: None,
            }),
        ),
        C::ReEncrypt {
            ciphertext_blob,
            source_encryption_context,
            source_key_id,
            destination_key_id,
            destination_encryption_context,
        } => (
            O::ReEncrypt,
            to_json(&ReEncryptRequest {
                ciphertext_blob: ciphertext_arg(ciphertext_blob)?,
                source_encryption_context: context_arg(source_encryption_context.as_deref())?,
                source_key_id: source_key_id.clone(),
                destination_key_id: destination_key_id.clone(),
                destination_encryption_context: context_arg(
                    destination_encryption_context.as_deref(),
                )?,
                ..Default::default()
            }),
        ),
        C::GenerateDataKey {
            key_id,
            key_spec,
            number_of_bytes,
            encryption_context,
        } => (
            O::GenerateDataKey,
            to_json(&gdk(key_id, key_spec, number_of_bytes, encryption_context)?),
        ),
        C::GenerateDataKeyWithoutPlaintext {
            key_id,
            key_spec,
            number_of_bytes,
            encryption_context,
        } => (
            O::GenerateDataKeyWithoutPlaintext,
            to_json(&gdk(key_id, key_spec, number_of_bytes, encryption_context)?),
        ),
        C::GenerateRandom { number_of_bytes } => (
            O::GenerateRandom,
            to_json(&GenerateRandomRequest {
                number_of_bytes: *number_of_bytes,
            }),
        ),
        C::GetKeyPolicy {
            key_id,
            policy_name,
        } => (
            O::GetKeyPolicy,
            to_json(&GetKeyPolicyRequest {
                key_id: key_id.clone(),
                policy_name: policy_name.clone(),
            }),
        ),
        C::ListKeyPolicies { key_id } => (
            O::ListKeyPolicies,
            to_json(&list(Some(key_id), &None, &None)),
        ),
        C::CreatePrincipal { principal_name } => {
            (O::CreatePrincipal, to_json(&principal(principal_name)))
        }
        C::DeletePrincipal { principal_name } => {
            (O::DeletePrincipal, to_json(&principal(principal_name)))
        }
        C::ListPrincipals => (O::ListPrincipals, to_json(&Empty {})),
        C::GetCallerIdentity => (O::GetCallerIdentity, to_json(&Empty {})),
        C::CreateAccessKey { principal_name } => {
            (O::CreateAccessKey, to_json(&principal(principal_name)))
        }
        C::DeleteAccessKey {
            principal_name,
            access_key_id,
        } => (
            O::DeleteAccessKey,
            to_json(&DeleteAccessKeyRequest {
                principal_name: principal_name.clone(),
                access_key_id: access_key_id.clone(),
            }),
        ),
        C::CheckPolicy {
            principal_name,
            action,
            key_id,
            encryption_context,
            destination_key_id,
            destination_encryption_context,
        } => (
            O::CheckPolicy,
            to_json(&CheckPolicyRequest {
                principal_name: principal_name.clone(),
                action: action.clone(),
                key_id: key_id.clone(),
                encryption_context: context_arg(encryption_context.as_deref())?,
                destination_key_id: destination_key_id.clone(),
                destination_encryption_context: context_arg(
                    destination_encryption_context.as_deref(),
                )?,
            }),
        ),
        C::VerifyAuditTrail {} => (O::VerifyAuditTrail, to_json(&Empty {})),
        C::GetAuditReport {
            since,
            key_id,
            principal_name,
            limit,
            marker,
        } => (
            O::GetAuditReport,
            to_json(&AuditReportRequest {
                since: since.clone(),
                key_id: key_id.clone(),
                principal_name: principal_name.clone(),
                limit: *limit,
                marker: marker.clone(),
            }),
        ),
    };
    let (op, body) = out;
    Ok((op, body.map_err(|e| anyhow::anyhow!(e.message))?))
}

fn principal(name: &str) -> PrincipalRequest {
    PrincipalRequest {
        principal_name: name.to_string(),
    }
}

/// Calls `op` and wraps a KMS error with the operation's name.
pub(crate) fn call(kms: &dyn Kms, op: Operation, body: &Secret) -> anyhow::Result<Secret> {
    kms.call(op, body.expose()).map_err(|error| {
        OpError {
            operation: op.name(),
            error,
        }
        .into()
    })
}

/// Runs one KMS subcommand.
pub(crate) fn run(cmd: KmsCommand, ctx: &Context) -> anyhow::Result<i32> {
    let (op, body) = request(&cmd)?;
    // DisableKey and ScheduleKeyDeletion are refused by the KMS itself
    // while the key still wraps envelopes (its usage index), for every
    // client; `--force` sends the rewrap extension field `Force`.
    let kms = ctx.kms()?;
    let response = call(kms.as_ref(), op, &body)?;
    if response.expose() != b"{}" {
        ctx.print_json(response.expose())?;
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    /// `ReEncrypt` -> `re-encrypt`, as clap names subcommands.
    fn kebab(name: &str) -> String {
        let mut out = String::new();
        for (i, c) in name.chars().enumerate() {
            if c.is_ascii_uppercase() && i > 0 {
                out.push('-');
            }
            out.push(c.to_ascii_lowercase());
        }
        out
    }

    #[test]
    fn every_operation_has_a_cli_command() {
        let cli = super::super::Cli::command();
        let missing: Vec<&str> = Operation::ALL
            .iter()
            .map(|op| op.name())
            .filter(|name| cli.find_subcommand(kebab(name)).is_none())
            .collect();
        assert_eq!(missing, Vec::<&str>::new());
        assert_eq!(
            kebab("GenerateDataKeyWithoutPlaintext"),
            "generate-data-key-without-plaintext"
        );
    }
}

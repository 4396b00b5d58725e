//! `aws kms`-style subcommands of asymmetric and HMAC keys (issue 15) and
//! imported key material (issue 13): each builds one request, calls the
//! KMS and prints the response, as `kms.rs` does for the others.

use super::kms::{blob_arg, call, context_arg};
use super::Context;
use clap::Subcommand;
use rewrap::api::*;
use rewrap::kms::to_json;
use rewrap::secret::Secret;

/// Asymmetric, HMAC and import operations, named as in `aws kms`.
#[derive(Debug, Subcommand)]
#[allow(missing_docs)] // reason: clap shows the doc of each field as its help
pub(crate) enum AsymmetricCommand {
    /// Signs a message (or its digest) with an asymmetric SIGN_VERIFY key.
    #[command(
        after_help = "Examples:\n  rewrap sign --key-id alias/release-signing --message fileb://release.tar.gz.sha256 --message-type DIGEST --signing-algorithm ECDSA_SHA_256\n  rewrap sign --key-id KEYID --message \"hello\" --signing-algorithm RSASSA_PSS_SHA_256 --query Signature --output text | base64 --decode > hello.sig"
    )]
    Sign {
        #[arg(long)]
        key_id: String,
        /// fileb://PATH, file://PATH or the text itself (at most 4096 bytes).
        #[arg(long)]
        message: String,
        /// RAW (default) or DIGEST.
        #[arg(long)]
        message_type: Option<String>,
        #[arg(long)]
        signing_algorithm: String,
    },
    /// Verifies a signature made with an asymmetric SIGN_VERIFY key.
    #[command(
        after_help = "Examples:\n  rewrap verify --key-id KEYID --message \"hello\" --signature fileb://hello.sig --signing-algorithm RSASSA_PSS_SHA_256"
    )]
    Verify {
        #[arg(long)]
        key_id: String,
        #[arg(long)]
        message: String,
        #[arg(long)]
        message_type: Option<String>,
        /// fileb://PATH (raw bytes).
        #[arg(long)]
        signature: String,
        #[arg(long)]
        signing_algorithm: String,
    },
    /// Shows an asymmetric key's public key (DER SubjectPublicKeyInfo, base64).
    #[command(
        after_help = "Examples:\n  rewrap get-public-key --key-id alias/release-signing --query PublicKey --output text | base64 --decode > public.der\n  openssl pkey -pubin -inform DER -in public.der -text -noout"
    )]
    GetPublicKey {
        #[arg(long)]
        key_id: String,
    },
    /// An HMAC of a message under a GENERATE_VERIFY_MAC key.
    #[command(
        after_help = "Examples:\n  rewrap generate-mac --key-id alias/tokens --message \"user=42\" --mac-algorithm HMAC_SHA_256"
    )]
    GenerateMac {
        #[arg(long)]
        key_id: String,
        #[arg(long)]
        message: String,
        #[arg(long)]
        mac_algorithm: String,
    },
    /// Verifies an HMAC made under a GENERATE_VERIFY_MAC key.
    #[command(
        after_help = "Examples:\n  rewrap verify-mac --key-id alias/tokens --message \"user=42\" --mac-algorithm HMAC_SHA_256 --mac fileb://token.mac"
    )]
    VerifyMac {
        #[arg(long)]
        key_id: String,
        #[arg(long)]
        message: String,
        #[arg(long)]
        mac_algorithm: String,
        /// fileb://PATH (raw bytes).
        #[arg(long)]
        mac: String,
    },
    /// A fresh key pair: the private key in plaintext and wrapped under a symmetric key.
    #[command(
        after_help = "Examples:\n  rewrap generate-data-key-pair --key-id alias/app-data --key-pair-spec ECC_NIST_P256 --encryption-context purpose=device"
    )]
    GenerateDataKeyPair {
        #[arg(long)]
        key_id: String,
        #[arg(long)]
        key_pair_spec: String,
        #[arg(long)]
        encryption_context: Option<String>,
    },
    /// A fresh key pair: the private key wrapped only, and the public key.
    #[command(
        after_help = "Examples:\n  rewrap generate-data-key-pair-without-plaintext --key-id alias/app-data --key-pair-spec RSA_2048"
    )]
    GenerateDataKeyPairWithoutPlaintext {
        #[arg(long)]
        key_id: String,
        #[arg(long)]
        key_pair_spec: String,
        #[arg(long)]
        encryption_context: Option<String>,
    },
    /// A wrapping public key and an import token (24 hours) for an EXTERNAL key.
    #[command(
        after_help = "Examples:\n  rewrap create-key --origin EXTERNAL --description byok\n  rewrap get-parameters-for-import --key-id KEYID --wrapping-algorithm RSAES_OAEP_SHA_256 --wrapping-key-spec RSA_2048"
    )]
    GetParametersForImport {
        #[arg(long)]
        key_id: String,
        #[arg(long)]
        wrapping_algorithm: String,
        #[arg(long)]
        wrapping_key_spec: String,
    },
    /// Imports key material wrapped under GetParametersForImport's public key.
    #[command(
        after_help = "Examples:\n  rewrap import-key-material --key-id KEYID --encrypted-key-material fileb://EncryptedKeyMaterial.bin --import-token fileb://ImportToken.bin --expiration-model KEY_MATERIAL_DOES_NOT_EXPIRE\n  rewrap import-key-material --key-id KEYID --encrypted-key-material fileb://EncryptedKeyMaterial.bin --import-token fileb://ImportToken.bin --valid-to 2027-06-01T00:00:00Z"
    )]
    ImportKeyMaterial {
        #[arg(long)]
        key_id: String,
        #[arg(long)]
        encrypted_key_material: String,
        #[arg(long)]
        import_token: String,
        /// KEY_MATERIAL_EXPIRES (default, needs --valid-to) or KEY_MATERIAL_DOES_NOT_EXPIRE.
        #[arg(long)]
        expiration_model: Option<String>,
        /// RFC 3339 time or seconds since the epoch.
        #[arg(long)]
        valid_to: Option<String>,
    },
    /// Deletes an EXTERNAL key's imported material (the key becomes PendingImport).
    #[command(after_help = "Examples:\n  rewrap delete-imported-key-material --key-id KEYID")]
    DeleteImportedKeyMaterial {
        #[arg(long)]
        key_id: String,
    },
}

fn blob(arg: &str) -> anyhow::Result<CiphertextBlob> {
    Ok(CiphertextBlob(blob_arg(arg)?.expose().to_vec()))
}

/// `--valid-to`: RFC 3339 or seconds since the epoch.
fn time_arg(arg: &str) -> anyhow::Result<f64> {
    if let Ok(secs) = arg.parse::<f64>() {
        return Ok(secs);
    }
    let t = chrono::DateTime::parse_from_rfc3339(arg).map_err(|e| {
        super::UsageError(format!(
            "--valid-to {arg:?} is neither RFC 3339 nor seconds since the epoch: {e}"
        ))
    })?;
    Ok(t.timestamp_millis() as f64 / 1000.0)
}

/// Builds the request of a command as (operation, JSON body).
fn request(cmd: &AsymmetricCommand) -> anyhow::Result<(Operation, Secret)> {
    use AsymmetricCommand as C;
    use Operation as O;
    let pair = |key_id: &String, spec: &String, ctx: &Option<String>| {
        anyhow::Ok(GenerateDataKeyPairRequest {
            key_id: key_id.clone(),
            key_pair_spec: spec.clone(),
            encryption_context: context_arg(ctx.as_deref())?,
            grant_tokens: None,
        })
    };
    let (op, body) = match cmd {
        C::Sign {
            key_id,
            message,
            message_type,
            signing_algorithm,
        } => (
            O::Sign,
            to_json(&SignRequest {
                key_id: key_id.clone(),
                message: blob_arg(message)?,
                message_type: message_type.clone(),
                signing_algorithm: signing_algorithm.clone(),
                grant_tokens: None,
            }),
        ),
        C::Verify {
            key_id,
            message,
            message_type,
            signature,
            signing_algorithm,
        } => (
            O::Verify,
            to_json(&VerifyRequest {
                key_id: key_id.clone(),
                message: blob_arg(message)?,
                message_type: message_type.clone(),
                signature: blob(signature)?,
                signing_algorithm: signing_algorithm.clone(),
                grant_tokens: None,
            }),
        ),
        C::GetPublicKey { key_id } => (
            O::GetPublicKey,
            to_json(&KeyIdRequest {
                key_id: key_id.clone(),
                grant_tokens: None,
            }),
        ),
        C::GenerateMac {
            key_id,
            message,
            mac_algorithm,
        } => (
            O::GenerateMac,
            to_json(&GenerateMacRequest {
                key_id: key_id.clone(),
                message: blob_arg(message)?,
                mac_algorithm: mac_algorithm.clone(),
                grant_tokens: None,
            }),
        ),
        C::VerifyMac {
            key_id,
            message,
            mac_algorithm,
            mac,
        } => (
            O::VerifyMac,
            to_json(&VerifyMacRequest {
                key_id: key_id.clone(),
                message: blob_arg(message)?,
                mac_algorithm: mac_algorithm.clone(),
                mac: blob(mac)?,
                grant_tokens: None,
            }),
        ),
        C::GenerateDataKeyPair {
            key_id,
            key_pair_spec,
            encryption_context,
        } => (
            O::GenerateDataKeyPair,
            to_json(&pair(key_id, key_pair_spec, encryption_context)?),
        ),
        C::GenerateDataKeyPairWithoutPlaintext {
            key_id,
            key_pair_spec,
            encryption_context,
        } => (
            O::GenerateDataKeyPairWithoutPlaintext,
            to_json(&pair(key_id, key_pair_spec, encryption_context)?),
        ),
        C::GetParametersForImport {
            key_id,
            wrapping_algorithm,
            wrapping_key_spec,
        } => (
            O::GetParametersForImport,
            to_json(&GetParametersForImportRequest {
                key_id: key_id.clone(),
                wrapping_algorithm: wrapping_algorithm.clone(),
                wrapping_key_spec: wrapping_key_spec.clone(),
            }),
        ),
        C::ImportKeyMaterial {
            key_id,
            encrypted_key_material,
            import_token,
            expiration_model,
            valid_to,
        } => (
            O::ImportKeyMaterial,
            to_json(&ImportKeyMaterialRequest {
                key_id: key_id.clone(),
                import_token: blob(import_token)?,
                encrypted_key_material: blob(encrypted_key_material)?,
                valid_to: valid_to.as_deref().map(time_arg).transpose()?,
                expiration_model: expiration_model.clone(),
            }),
        ),
        C::DeleteImportedKeyMaterial { key_id } => (
            O::DeleteImportedKeyMaterial,
            to_json(&KeyIdRequest {
                key_id: key_id.clone(),
                grant_tokens: None,
            }),
        ),
    };
    Ok((op, body.map_err(|e| anyhow::anyhow!(e.message))?))
}

/// Runs one command.
pub(crate) fn run(cmd: AsymmetricCommand, ctx: &Context) -> anyhow::Result<i32> {
    let (op, body) = request(&cmd)?;
    let kms = ctx.kms()?;
    let response = call(kms.as_ref(), op, &body)?;
    if response.expose() != b"{}" {
        ctx.print_json(response.expose())?;
    }
    Ok(0)
}

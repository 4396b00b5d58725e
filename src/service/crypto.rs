//! Cryptography: Encrypt, Decrypt, ReEncrypt (one or many), the data-key
//! operations and GenerateRandom, and finding the key a ciphertext blob
//! names.

use super::authz::{audit_failed, Trail};
use super::validation;
use super::{Caller, KmsService, Snapshot, MAX_PLAINTEXT, SYMMETRIC_DEFAULT};
use crate::api::{
    CiphertextBlob, DecryptRequest, DecryptResponse, EncryptRequest, EncryptResponse,
    EncryptionContext, GenerateDataKeyRequest, GenerateDataKeyResponse,
    GenerateDataKeyWithoutPlaintextResponse, GenerateRandomRequest, GenerateRandomResponse,
    Operation, ReEncryptRequest, ReEncryptResponse,
};
use crate::ciphertext_blob::{self, BlobHeader};
use crate::error::{ErrorCode, KmsError, Result};
use crate::keystore::{KeyRecord, KeyVersion};
use crate::operation::Action;
use crate::secret::Secret;

/// How an operation means to use the key a ciphertext blob names.
struct BlobUse<'a> {
    /// The key the caller says the blob is under (IncorrectKeyException if not).
    expected: Option<&'a str>,
    /// The policy action to check on that key.
    action: Action,
    /// The encryption context presented.
    context: Option<&'a EncryptionContext>,
}

fn check_algorithm(algorithm: &Option<String>) -> Result<()> {
    match algorithm.as_deref() {
        None | Some(SYMMETRIC_DEFAULT) => Ok(()),
        Some(other) => Err(KmsError::validation(format!(
            "encryption algorithm {other:?} is not supported; symmetric keys use SYMMETRIC_DEFAULT"
        ))),
    }
}

/// DryRun: authorization and key state were checked and passed; AWS
/// answers `DryRunOperationException` (HTTP 412) without using the key. The
/// audit record carries `DryRun` and that outcome.
fn stop_if_dry_run(trail: &mut Trail, dry_run: Option<bool>) -> Result<()> {
    if dry_run != Some(true) {
        return Ok(());
    }
    trail.param("DryRun", "true".into());
    Err(super::grants::dry_run())
}

impl KmsService {
    pub(super) fn seal_under(
        &self,
        key: &KeyRecord,
        context: Option<&EncryptionContext>,
        plain: &[u8],
    ) -> Result<Vec<u8>> {
        if let Some(store) = key.custom_key_store_id.as_deref() {
            return self.seal_in_token(key, store, context, plain);
        }
        super::keyspec::require_symmetric(key, &self.key_arn(&key.id))?;
        let v = key.current();
        ciphertext_blob::seal(
            &v.material,
            BlobHeader {
                key_id: key.id,
                key_version: v.version,
            },
            context,
            plain,
        )
    }

    /// Finds the key a blob names and checks `action` on it.
    fn blob_key<'s>(
        &self,
        trail: &mut Trail,
        caller: &Caller,
        snap: &'s Snapshot,
        ciphertext: &[u8],
        want: BlobUse<'_>,
    ) -> Result<(&'s KeyRecord, &'s KeyVersion)> {
        if ciphertext.len() > ciphertext_blob::MAX_BLOB {
            return Err(KmsError::validation(format!(
                "CiphertextBlob is {} bytes; at most {} are allowed",
                ciphertext.len(),
                ciphertext_blob::MAX_BLOB
            )));
        }
        let BlobUse {
            expected,
            action,
            context,
        } = want;
        let header = ciphertext_blob::peek(ciphertext).ok_or_else(KmsError::invalid_ciphertext)?;
        let key = self.authorized_key(
            trail,
            caller,
            snap,
            &header.key_id.to_string(),
            action,
            context,
        )?;
        trail.version(header.key_version);
        if let Some(expected) = expected {
            let named = self.lookup(snap, expected)?;
            if named.id != key.id {
                return Err(KmsError::new(
                    ErrorCode::IncorrectKey,
                    format!(
                        "The key ID in the request does not identify a CMK that can perform this operation: the ciphertext is under {}",
                        self.key_arn(&key.id)
                    ),
                ));
            }
        }
        self.usable(key)?;
        let version = key
            .version(header.key_version)
            .ok_or_else(KmsError::invalid_ciphertext)?;
        Ok((key, version))
    }

    pub(super) fn encrypt(&self, caller: &Caller, r: &EncryptRequest) -> Result<EncryptResponse> {
        if let Some(rsa) = super::asymmetric::rsa_oaep(&r.encryption_algorithm) {
            return self.encrypt_asymmetric(caller, r, rsa);
        }
        self.audited(caller, Operation::Encrypt, |trail| {
            trail.context.clone_from(&r.encryption_context);
            trail.object.clone_from(&r.object);
            self.check_grant_tokens(&r.grant_tokens)?;
            check_algorithm(&r.encryption_algorithm)?;
            let len = r.plaintext.len();
            validation::sensitive_length("plaintext", len, 1, MAX_PLAINTEXT).map_err(|e| {
                KmsError::validation(format!(
                    "{}. To encrypt more data, use a data key (GenerateDataKey) and envelope \
                     encryption, e.g. `rewrap encrypt-file`",
                    e.message
                ))
            })?;
            let snap = self.snapshot()?;
            let ctx = r.encryption_context.as_ref();
            let key = self.authorized_key(trail, caller, &snap, &r.key_id, Action::Encrypt, ctx)?;
            self.usable(key)?;
            trail.version(key.current().version);
            stop_if_dry_run(trail, r.dry_run)?;
            let ciphertext = self.seal_under(key, ctx, r.plaintext.expose())?;
            Ok(EncryptResponse {
                ciphertext_blob: CiphertextBlob(ciphertext),
                key_id: trail.keys[0].arn.clone(),
                encryption_algorithm: SYMMETRIC_DEFAULT.into(),
            })
        })
    }

    pub(super) fn decrypt(&self, caller: &Caller, r: &DecryptRequest) -> Result<DecryptResponse> {
        if let Some(rsa) = super::asymmetric::rsa_oaep(&r.encryption_algorithm) {
            return self.decrypt_asymmetric(caller, r, rsa);
        }
        self.audited(caller, Operation::Decrypt, |trail| {
            trail.context.clone_from(&r.encryption_context);
            trail.object.clone_from(&r.object);
            self.check_grant_tokens(&r.grant_tokens)?;
            check_algorithm(&r.encryption_algorithm)?;
            let snap = self.snapshot()?;
            let ctx = r.encryption_context.as_ref();
            let (key, version) = self.blob_key(
                trail,
                caller,
                &snap,
                &r.ciphertext_blob.0,
                BlobUse {
                    expected: r.key_id.as_deref(),
                    action: Action::Decrypt,
                    context: ctx,
                },
            )?;
            stop_if_dry_run(trail, r.dry_run)?;
            let plaintext = self.open_blob(key, version, &r.ciphertext_blob.0, ctx)?;
            Ok(DecryptResponse {
                key_id: trail.keys[0].arn.clone(),
                plaintext,
                encryption_algorithm: SYMMETRIC_DEFAULT.into(),
            })
        })
    }

    pub(super) fn re_encrypt(
        &self,
        caller: &Caller,
        r: &ReEncryptRequest,
    ) -> Result<ReEncryptResponse> {
        self.audited(caller, Operation::ReEncrypt, |trail| {
            self.re_encrypt_checked(trail, caller, r)
        })
    }

    /// ReEncrypt of each request, each checked and audited on its own (one
    /// ReEncrypt record per request), the records appended in one group
    /// commit. If the audit trail cannot be written, every request fails.
    pub(super) fn re_encrypt_many(
        &self,
        caller: &Caller,
        requests: &[ReEncryptRequest],
    ) -> Vec<Result<ReEncryptResponse>> {
        let op = Operation::ReEncrypt;
        let declared = Action::bits(op.actions());
        let (records, results): (Vec<_>, Vec<_>) = requests
            .iter()
            .map(|r| {
                self.run_audited(caller, op.name(), declared, |trail| {
                    self.re_encrypt_checked(trail, caller, r)
                })
            })
            .unzip();
        match self.audit.append_all(records) {
            Ok(()) => results,
            Err(e) => {
                let e = audit_failed(e);
                results.iter().map(|_| Err(e.clone())).collect()
            }
        }
    }

    fn re_encrypt_checked(
        &self,
        trail: &mut Trail,
        caller: &Caller,
        r: &ReEncryptRequest,
    ) -> Result<ReEncryptResponse> {
        trail.object.clone_from(&r.object);
        validation::key_id("destinationKeyId", &r.destination_key_id)?;
        if let Some(rsa) = super::asymmetric::rsa_oaep(&r.source_encryption_algorithm) {
            return self.re_encrypt_from_asymmetric(trail, caller, r, rsa);
        }
        {
            trail.context.clone_from(&r.source_encryption_context);
            trail
                .destination_context
                .clone_from(&r.destination_encryption_context);
            self.check_grant_tokens(&r.grant_tokens)?;
            check_algorithm(&r.source_encryption_algorithm)?;
            check_algorithm(&r.destination_encryption_algorithm)?;
            let snap = self.snapshot()?;
            let src_ctx = r.source_encryption_context.as_ref();
            let dst_ctx = r.destination_encryption_context.as_ref();
            // What the ReEncrypt conditions see (kms:ReEncryptOnSameKey).
            trail.same_key = ciphertext_blob::peek(&r.ciphertext_blob.0).is_some_and(|h| {
                self.lookup(&snap, &r.destination_key_id)
                    .is_ok_and(|d| d.id == h.key_id)
            });
            let (source, version) = self.blob_key(
                trail,
                caller,
                &snap,
                &r.ciphertext_blob.0,
                BlobUse {
                    expected: r.source_key_id.as_deref(),
                    action: Action::ReEncryptFrom,
                    context: src_ctx,
                },
            )?;
            let dest = self.re_encrypt_destination(trail, caller, &snap, r)?;
            // The plaintext lives only in this zeroizing buffer, for this call.
            let plaintext = self.open_blob(source, version, &r.ciphertext_blob.0, src_ctx)?;
            let ciphertext = self.seal_under(dest, dst_ctx, plaintext.expose())?;
            Ok(ReEncryptResponse {
                ciphertext_blob: CiphertextBlob(ciphertext),
                source_key_id: trail.keys[0].arn.clone(),
                key_id: trail.keys[1].arn.clone(),
                source_encryption_algorithm: SYMMETRIC_DEFAULT.into(),
                destination_encryption_algorithm: SYMMETRIC_DEFAULT.into(),
            })
        }
    }

    /// The destination key of a ReEncrypt (symmetric or RSA source alike):
    /// `kms:ReEncryptTo` checked under the destination context, the key
    /// usable, its version on record; a DryRun stops here.
    pub(super) fn re_encrypt_destination<'s>(
        &self,
        trail: &mut Trail,
        caller: &Caller,
        snap: &'s Snapshot,
        r: &ReEncryptRequest,
    ) -> Result<&'s KeyRecord> {
        let dst_ctx = r.destination_encryption_context.as_ref();
        let dest = self.authorized_key(
            trail,
            caller,
            snap,
            &r.destination_key_id,
            Action::ReEncryptTo,
            dst_ctx,
        )?;
        self.usable(dest)?;
        trail.version(dest.current().version);
        stop_if_dry_run(trail, r.dry_run)?;
        Ok(dest)
    }

    pub(super) fn generate_data_key(
        &self,
        caller: &Caller,
        r: &GenerateDataKeyRequest,
    ) -> Result<GenerateDataKeyResponse> {
        let (plaintext, e) = self.data_key(caller, Operation::GenerateDataKey, r)?;
        Ok(GenerateDataKeyResponse {
            ciphertext_blob: e.ciphertext_blob,
            plaintext,
            key_id: e.key_id,
        })
    }

    pub(super) fn generate_data_key_without_plaintext(
        &self,
        caller: &Caller,
        r: &GenerateDataKeyRequest,
    ) -> Result<GenerateDataKeyWithoutPlaintextResponse> {
        let op = Operation::GenerateDataKeyWithoutPlaintext;
        let (_, e) = self.data_key(caller, op, r)?;
        Ok(GenerateDataKeyWithoutPlaintextResponse {
            ciphertext_blob: e.ciphertext_blob,
            key_id: e.key_id,
        })
    }

    /// GenerateDataKey and GenerateDataKeyWithoutPlaintext: `op`'s one action
    /// on the key, a fresh key of the requested length, sealed under it.
    fn data_key(
        &self,
        caller: &Caller,
        op: Operation,
        r: &GenerateDataKeyRequest,
    ) -> Result<(Secret, EncryptResponse)> {
        let action = op.actions()[0];
        self.audited(caller, op, |trail| {
            trail.context.clone_from(&r.encryption_context);
            trail.object.clone_from(&r.object);
            self.check_grant_tokens(&r.grant_tokens)?;
            let len = match (r.key_spec.as_deref(), r.number_of_bytes) {
                (Some(_), Some(_)) => {
                    return Err(KmsError::validation(
                        "give KeySpec or NumberOfBytes, not both",
                    ))
                }
                (None, None) => {
                    return Err(KmsError::validation("KeySpec or NumberOfBytes is required"))
                }
                (Some("AES_256"), None) => 32,
                (Some("AES_128"), None) => 16,
                (Some(other), None) => {
                    return Err(KmsError::validation(format!(
                        "KeySpec {other:?} is not valid; use AES_256 or AES_128"
                    )))
                }
                (None, Some(n)) => {
                    validation::int_range("numberOfBytes", n.into(), 1, 1024)?;
                    n as usize
                }
            };
            let snap = self.snapshot()?;
            let ctx = r.encryption_context.as_ref();
            let key = self.authorized_key(trail, caller, &snap, &r.key_id, action, ctx)?;
            self.usable(key)?;
            trail.version(key.current().version);
            stop_if_dry_run(trail, r.dry_run)?;
            let data_key = Secret::random(len);
            let ciphertext = self.seal_under(key, ctx, data_key.expose())?;
            Ok((
                data_key,
                EncryptResponse {
                    ciphertext_blob: CiphertextBlob(ciphertext),
                    key_id: trail.keys[0].arn.clone(),
                    encryption_algorithm: SYMMETRIC_DEFAULT.into(),
                },
            ))
        })
    }

    pub(super) fn generate_random(
        &self,
        caller: &Caller,
        r: &GenerateRandomRequest,
    ) -> Result<GenerateRandomResponse> {
        self.audited(caller, Operation::GenerateRandom, |trail| {
            self.authorize(trail, caller, Action::GenerateRandom, &["*".into()], None)?;
            let n = r.number_of_bytes.unwrap_or(32);
            validation::int_range("numberOfBytes", n.into(), 1, 1024)?;
            Ok(GenerateRandomResponse {
                plaintext: Secret::random(n as usize),
            })
        })
    }
}

//! Imported key material (issue 13): keys with Origin `EXTERNAL`,
//! GetParametersForImport, ImportKeyMaterial, DeleteImportedKeyMaterial,
//! and the expiry of imported material.
//!
//! An `EXTERNAL` key is created without material (state `PendingImport`).
//! GetParametersForImport makes an RSA wrapping key pair (AWS-LC) and a
//! random import token, and keeps both in the sealed keystore with the
//! key for 24 hours; the caller wraps 32 bytes of AES-256 material under
//! the public key with RSA-OAEP (`openssl pkeyutl -encrypt ... -pkeyopt
//! rsa_padding_mode:oaep -pkeyopt rsa_oaep_md:sha256 -pkeyopt
//! rsa_mgf1_md:sha256`) and imports it with the token. A key takes only the
//! material it first received (a SHA-256 over the key id and the material
//! is kept to check re-imports). Material with `ValidTo` in the past is
//! treated as absent (state `PendingImport`) and purged at the next
//! keystore update.

use super::asymmetric::rsa_decrypt;
use super::keyspec::enum_error;
use super::{Caller, KmsService};
use crate::api::{
    CiphertextBlob, Empty, GetParametersForImportRequest, GetParametersForImportResponse,
    ImportKeyMaterialRequest, KeyIdRequest, KeyMetadataExtra, Operation,
};
use crate::error::{ErrorCode, KmsError, Result};
use crate::keystore::{ImportParameters, ImportRecord, KeyRecord, KeyState, KeyVersion, State};
use crate::secret::Secret;
use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::{digest, rsa};

/// The Origin of keys whose material is imported.
pub(super) const EXTERNAL: &str = "EXTERNAL";
/// How long an import token and its wrapping key are valid.
const TOKEN_LIFETIME: f64 = 24.0 * 3600.0;
const WRAPPING_ALGORITHMS: &[&str] = &["RSAES_OAEP_SHA_1", "RSAES_OAEP_SHA_256"];
const WRAPPING_KEY_SPECS: &[&str] = &["RSA_2048", "RSA_3072", "RSA_4096"];
const EXPIRES: &str = "KEY_MATERIAL_EXPIRES";
const DOES_NOT_EXPIRE: &str = "KEY_MATERIAL_DOES_NOT_EXPIRE";

/// The state a key is in at `now`: an `EXTERNAL` key without material, or
/// whose material has expired, is `PendingImport` (unless pending deletion).
pub(super) fn effective_state(key: &KeyRecord, now: f64) -> KeyState {
    let without_material = key.origin == EXTERNAL && (key.versions.is_empty() || expired(key, now));
    if without_material && key.state != KeyState::PendingDeletion {
        KeyState::PendingImport
    } else {
        key.state
    }
}

fn expired(key: &KeyRecord, now: f64) -> bool {
    key.import
        .as_ref()
        .and_then(|i| i.valid_to)
        .is_some_and(|t| t <= now)
}

/// Forgets imported material whose `ValidTo` has passed, as AWS deletes it.
pub(super) fn purge_expired_material(state: &mut State, now: f64) {
    for key in state.keys.values_mut().filter(|k| k.origin == EXTERNAL) {
        if expired(key, now) {
            forget_material(key);
        }
    }
}

fn forget_material(key: &mut KeyRecord) {
    key.versions.clear();
    if let Some(i) = key.import.as_mut() {
        i.valid_to = None;
        i.expiration_model = None;
    }
    if key.state != KeyState::PendingDeletion {
        key.state = KeyState::PendingImport;
    }
}

/// DescribeKey's ExpirationModel and ValidTo of an imported key.
pub(super) fn metadata_extra(key: &KeyRecord, extra: &mut KeyMetadataExtra) {
    if let Some(i) = key.import.as_ref().filter(|_| !key.versions.is_empty()) {
        extra.expiration_model.clone_from(&i.expiration_model);
        extra.valid_to = i.valid_to;
    }
}

/// SHA-256 over the key id and the material, hex: what a re-import is
/// compared with (the material itself is not kept after it is deleted).
fn material_digest(key: &KeyRecord, material: &[u8]) -> String {
    let mut ctx = digest::Context::new(&digest::SHA256);
    ctx.update(key.id.as_bytes());
    ctx.update(material);
    hex::encode(ctx.finish().as_ref())
}

impl KmsService {
    /// UnsupportedOperationException unless the key's Origin is EXTERNAL;
    /// KMSInvalidStateException when it is pending deletion.
    fn importable(&self, key: &KeyRecord) -> Result<()> {
        if key.origin != EXTERNAL {
            return Err(KmsError::new(
                ErrorCode::UnsupportedOperation,
                format!(
                    "{} has Origin {}: key material can be imported only into keys created \
                     with Origin EXTERNAL",
                    self.key_arn(&key.id),
                    key.origin
                ),
            ));
        }
        self.not_pending(key)
    }

    /// KMSInvalidStateException for EnableKey / DisableKey of a key without
    /// material, as AWS answers.
    pub(super) fn not_pending_import(&self, key: &KeyRecord) -> Result<()> {
        if effective_state(key, self.now()) == KeyState::PendingImport {
            return Err(KmsError::new(
                ErrorCode::InvalidState,
                format!("{} is pending import.", self.key_arn(&key.id)),
            ));
        }
        Ok(())
    }

    pub(super) fn get_parameters_for_import(
        &self,
        caller: &Caller,
        r: &GetParametersForImportRequest,
    ) -> Result<GetParametersForImportResponse> {
        let algorithm = r.wrapping_algorithm.as_str();
        if !WRAPPING_ALGORITHMS.contains(&algorithm) {
            return Err(enum_error(
                algorithm,
                "wrappingAlgorithm",
                WRAPPING_ALGORITHMS,
            ));
        }
        let size = match r.wrapping_key_spec.as_str() {
            "RSA_2048" => rsa::KeySize::Rsa2048,
            "RSA_3072" => rsa::KeySize::Rsa3072,
            "RSA_4096" => rsa::KeySize::Rsa4096,
            other => return Err(enum_error(other, "wrappingKeySpec", WRAPPING_KEY_SPECS)),
        };
        let op = Operation::GetParametersForImport;
        self.change_key(caller, op, &r.key_id, |key, now| {
            self.importable(key)?;
            let failed = |_| KmsError::internal("cannot generate the wrapping key");
            let wrapping = rsa::PrivateDecryptingKey::generate(size).map_err(failed)?;
            let public = wrapping.public_key().as_der().map_err(failed)?;
            let private = wrapping.as_der().map_err(failed)?;
            let token = Secret::random(32);
            let parameters = ImportParameters {
                token: hex::encode(token.expose()),
                wrapping_key: Secret::from_slice(private.as_ref()),
                wrapping_algorithm: algorithm.into(),
                valid_to: now + TOKEN_LIFETIME,
            };
            key.import
                .get_or_insert_with(ImportRecord::default)
                .parameters = Some(parameters);
            Ok(GetParametersForImportResponse {
                key_id: self.key_arn(&key.id),
                import_token: CiphertextBlob(token.expose().to_vec()),
                public_key: CiphertextBlob(public.as_ref().to_vec()),
                parameters_valid_to: now + TOKEN_LIFETIME,
            })
        })
    }

    pub(super) fn import_key_material(
        &self,
        caller: &Caller,
        r: &ImportKeyMaterialRequest,
    ) -> Result<Empty> {
        let model = r.expiration_model.as_deref().unwrap_or(EXPIRES);
        let valid_to = match (model, r.valid_to) {
            (EXPIRES, Some(t)) => Some(t),
            (EXPIRES, None) => {
                return Err(KmsError::validation(
                    "ValidTo is required when ExpirationModel is KEY_MATERIAL_EXPIRES",
                ))
            }
            (DOES_NOT_EXPIRE, None) => None,
            (DOES_NOT_EXPIRE, Some(_)) => return Err(KmsError::validation(
                "ValidTo must not be given when ExpirationModel is KEY_MATERIAL_DOES_NOT_EXPIRE",
            )),
            (other, _) => {
                return Err(enum_error(
                    other,
                    "expirationModel",
                    &[EXPIRES, DOES_NOT_EXPIRE],
                ))
            }
        };
        let op = Operation::ImportKeyMaterial;
        self.change_key(caller, op, &r.key_id, |key, now| {
            self.importable(key)?;
            if valid_to.is_some_and(|t| t <= now) {
                return Err(KmsError::validation("ValidTo must be in the future"));
            }
            let material = self.unwrap_material(key, r, now)?;
            let digest = material_digest(key, material.expose());
            let record = key.import.get_or_insert_with(ImportRecord::default);
            if record
                .material_digest
                .as_ref()
                .is_some_and(|d| *d != digest)
            {
                return Err(KmsError::new(
                    ErrorCode::IncorrectKeyMaterial,
                    "The key material is not the material previously imported into this key",
                ));
            }
            record.material_digest = Some(digest);
            record.expiration_model = Some(model.into());
            record.valid_to = valid_to;
            key.versions = vec![KeyVersion {
                version: 1,
                created: now,
                origin: "IMPORT".into(),
                material,
            }];
            if key.state == KeyState::PendingImport {
                key.state = KeyState::Enabled;
            }
            Ok(Empty {})
        })
    }

    /// The 32 bytes of AES-256 material `r` brings, unwrapped with the
    /// key's current import parameters.
    fn unwrap_material(
        &self,
        key: &KeyRecord,
        r: &ImportKeyMaterialRequest,
        now: f64,
    ) -> Result<Secret> {
        let parameters = key
            .import
            .as_ref()
            .and_then(|i| i.parameters.as_ref())
            .filter(|p| p.token == hex::encode(&r.import_token.0))
            .ok_or_else(|| {
                KmsError::new(
                    ErrorCode::InvalidImportToken,
                    "The import token is not the one GetParametersForImport last returned for this key",
                )
            })?;
        if parameters.valid_to <= now {
            return Err(KmsError::new(
                ErrorCode::ExpiredImportToken,
                "The import token has expired: call GetParametersForImport again",
            ));
        }
        let algorithm = match parameters.wrapping_algorithm.as_str() {
            "RSAES_OAEP_SHA_1" => &rsa::OAEP_SHA1_MGF1SHA1,
            _ => &rsa::OAEP_SHA256_MGF1SHA256,
        };
        let material = rsa_decrypt(
            parameters.wrapping_key.expose(),
            algorithm,
            &r.encrypted_key_material.0,
        )?;
        if material.len() != 32 {
            return Err(KmsError::new(
                ErrorCode::IncorrectKeyMaterial,
                format!(
                    "The key material is {} bytes; a SYMMETRIC_DEFAULT key takes 32 bytes (256 bits)",
                    material.len()
                ),
            ));
        }
        Ok(material)
    }

    pub(super) fn delete_imported_key_material(
        &self,
        caller: &Caller,
        r: &KeyIdRequest,
    ) -> Result<Empty> {
        let op = Operation::DeleteImportedKeyMaterial;
        self.change_key(caller, op, &r.key_id, |key, _| {
            self.importable(key)?;
            forget_material(key);
            Ok(Empty {})
        })
    }
}

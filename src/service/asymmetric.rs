//! Asymmetric keys (issue 15): Sign, Verify, GetPublicKey, RSA Encrypt /
//! Decrypt / ReEncrypt with `RSAES_OAEP_SHA_1` / `RSAES_OAEP_SHA_256`, and
//! GenerateDataKeyPair(WithoutPlaintext).
//!
//! An asymmetric key's material is the PKCS#8 DER of its private key (see
//! `keyspec.rs`); AWS-LC parses it once per process (`ParsedKeys`) and it
//! never leaves the service. Asymmetric ciphertexts are the raw RSA-OAEP output, as AWS
//! returns them, so data encrypted offline under the public key (`openssl
//! pkeyutl -encrypt`) decrypts here, and a data key wrapped that way can be
//! re-wrapped under a symmetric key by ReEncrypt (the rotator's path).

use super::authz::Trail;
use super::keyspec::{enum_error, require_usage, KeySpec, ENCRYPT_DECRYPT, KEY_SPECS, SIGN_VERIFY};
use super::{Caller, KmsService, Snapshot, MAX_PLAINTEXT, SYMMETRIC_DEFAULT};
use crate::api::{
    CiphertextBlob, DecryptRequest, DecryptResponse, EncryptRequest, EncryptResponse,
    GenerateDataKeyPairRequest, GenerateDataKeyPairResponse,
    GenerateDataKeyPairWithoutPlaintextResponse, GetPublicKeyResponse, KeyIdRequest, Operation,
    ReEncryptRequest, ReEncryptResponse, SignRequest, SignResponse, VerifyRequest, VerifyResponse,
};
use crate::error::{ErrorCode, KmsError, Result};
use crate::keystore::{KeyRecord, KeyVersion};
use crate::operation::Action;
use crate::secret::Secret;
use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{self, KeyPair as _, RsaEncoding, VerificationAlgorithm};
use aws_lc_rs::{digest, rsa};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use uuid::Uuid;

/// Every key pair spec GenerateDataKeyPair makes.
const KEY_PAIR_SPECS: &[&str] = &[
    "RSA_2048",
    "RSA_3072",
    "RSA_4096",
    "ECC_NIST_P256",
    "ECC_NIST_P384",
    "ECC_NIST_P521",
    "ECC_SECG_P256K1",
];
/// Largest signature Verify reads (an RSA-4096 signature is 512 bytes).
const MAX_SIGNATURE: usize = 6144;

/// The RSA-OAEP algorithm an `EncryptionAlgorithm` names, or `None` for
/// `SYMMETRIC_DEFAULT`, absent or unknown names (the symmetric path
/// validates those).
pub(super) fn rsa_oaep(algorithm: &Option<String>) -> Option<&'static rsa::OaepAlgorithm> {
    match algorithm.as_deref()? {
        "RSAES_OAEP_SHA_1" => Some(&rsa::OAEP_SHA1_MGF1SHA1),
        "RSAES_OAEP_SHA_256" => Some(&rsa::OAEP_SHA256_MGF1SHA256),
        _ => None,
    }
}

/// `MessageType`: `false` for RAW (the default), `true` for DIGEST.
fn is_digest(message_type: &Option<String>) -> Result<bool> {
    match message_type.as_deref() {
        None | Some("RAW") => Ok(false),
        Some("DIGEST") => Ok(true),
        Some(other) => Err(enum_error(other, "messageType", &["RAW", "DIGEST"])),
    }
}

/// The hash a signing algorithm names.
fn hash_of(algorithm: &str) -> &'static digest::Algorithm {
    if algorithm.ends_with("384") {
        &digest::SHA384
    } else if algorithm.ends_with("512") {
        &digest::SHA512
    } else {
        &digest::SHA256
    }
}

/// The message a Sign or Verify request brings, checked as AWS does: 1 to
/// 4096 bytes, and a DIGEST exactly as long as the algorithm's hash.
fn checked_message<'a>(message: &'a Secret, digest: bool, algorithm: &str) -> Result<Message<'a>> {
    let bytes = message.expose();
    if bytes.is_empty() || bytes.len() > MAX_PLAINTEXT {
        return Err(KmsError::validation(format!(
            "Message is {} bytes; it must be 1 to {MAX_PLAINTEXT} bytes (sign a digest, \
             MessageType DIGEST, for longer messages)",
            bytes.len()
        )));
    }
    if !digest {
        return Ok(Message::Raw(bytes));
    }
    digest::Digest::import_less_safe(bytes, hash_of(algorithm))
        .map(Message::Digest)
        .map_err(|_| {
            KmsError::validation(format!(
                "Digest is invalid length for algorithm {algorithm}: it is {} bytes",
                bytes.len()
            ))
        })
}

/// A message to sign or verify: raw bytes, or the digest of them.
enum Message<'a> {
    Raw(&'a [u8]),
    Digest(digest::Digest),
}

/// InvalidKeyUsageException unless `algorithm` is one of the key's.
fn check_signing_algorithm(spec: KeySpec, algorithm: &str, arn: &str) -> Result<()> {
    if spec.signing_algorithms().contains(&algorithm) {
        return Ok(());
    }
    let mut known: Vec<&str> = Vec::new();
    for name in KEY_SPECS.iter().flat_map(|s| s.signing_algorithms()) {
        if !known.contains(name) {
            known.push(name);
        }
    }
    if !known.contains(&algorithm) {
        return Err(enum_error(algorithm, "signingAlgorithm", &known));
    }
    Err(KmsError::new(
        ErrorCode::InvalidKeyUsage,
        format!(
            "Algorithm {algorithm} is incompatible with key spec {} of {arn}; it supports {}",
            spec.name(),
            spec.signing_algorithms().join(", ")
        ),
    ))
}

/// The RSA padding a signing algorithm names, for signing.
fn rsa_signing(algorithm: &str) -> &'static dyn RsaEncoding {
    match algorithm {
        "RSASSA_PSS_SHA_256" => &signature::RSA_PSS_SHA256,
        "RSASSA_PSS_SHA_384" => &signature::RSA_PSS_SHA384,
        "RSASSA_PSS_SHA_512" => &signature::RSA_PSS_SHA512,
        "RSASSA_PKCS1_V1_5_SHA_384" => &signature::RSA_PKCS1_SHA384,
        "RSASSA_PKCS1_V1_5_SHA_512" => &signature::RSA_PKCS1_SHA512,
        _ => &signature::RSA_PKCS1_SHA256,
    }
}

/// The verification algorithm of a key spec and signing algorithm.
fn verification(spec: KeySpec, algorithm: &str) -> &'static dyn VerificationAlgorithm {
    match (spec, algorithm) {
        (KeySpec::EccP256, _) => &signature::ECDSA_P256_SHA256_ASN1,
        (KeySpec::EccP384, _) => &signature::ECDSA_P384_SHA384_ASN1,
        (KeySpec::EccP521, _) => &signature::ECDSA_P521_SHA512_ASN1,
        (KeySpec::EccSecp256k1, _) => &signature::ECDSA_P256K1_SHA256_ASN1,
        (_, "RSASSA_PSS_SHA_256") => &signature::RSA_PSS_2048_8192_SHA256,
        (_, "RSASSA_PSS_SHA_384") => &signature::RSA_PSS_2048_8192_SHA384,
        (_, "RSASSA_PSS_SHA_512") => &signature::RSA_PSS_2048_8192_SHA512,
        (_, "RSASSA_PKCS1_V1_5_SHA_384") => &signature::RSA_PKCS1_2048_8192_SHA384,
        (_, "RSASSA_PKCS1_V1_5_SHA_512") => &signature::RSA_PKCS1_2048_8192_SHA512,
        _ => &signature::RSA_PKCS1_2048_8192_SHA256,
    }
}

/// A stored private key that does not parse: the keystore is damaged.
fn damaged(_: impl std::fmt::Debug) -> KmsError {
    KmsError::internal("the key's private key does not parse")
}

/// Parsed private keys of asymmetric keys, by key id and version: parsing
/// a PKCS#8 key (with AWS-LC's check of it) costs as much as an ECDSA
/// signature. An asymmetric key's material never changes (it is not
/// rotated or imported), so an entry never goes stale; the cache is
/// bounded, and AWS-LC wipes a private key when its last holder drops it.
#[derive(Default)]
pub(crate) struct ParsedKeys(Mutex<HashMap<(Uuid, u32), Arc<ParsedKey>>>);

/// Most keys [`ParsedKeys`] holds before it starts over.
const PARSED_KEYS: usize = 1024;

/// A signing key pair, parsed, and its public key: as DER, and parsed for
/// each of the spec's signing algorithms once one verifies with it (an RSA
/// public key's parse and Montgomery setup cost a fifth of a verification).
pub(crate) struct ParsedKey {
    signer: Signer,
    public_der: Vec<u8>,
    /// By the algorithm's place in [`KeySpec::signing_algorithms`].
    verifiers: Vec<OnceLock<signature::ParsedPublicKey>>,
}

enum Signer {
    Rsa(rsa::KeyPair),
    Ecdsa(signature::EcdsaKeyPair),
}

impl ParsedKeys {
    /// The parsed key of version `version` of `key`.
    fn get(&self, key: &KeyRecord, spec: KeySpec, version: &KeyVersion) -> Result<Arc<ParsedKey>> {
        let id = (key.id, version.version);
        if let Some(parsed) = self.0.lock().expect("parsed keys lock").get(&id) {
            return Ok(Arc::clone(parsed));
        }
        let private_key = version.material.expose();
        let parsed = Arc::new(if let Some(alg) = spec.ecdsa() {
            let pair = signature::EcdsaKeyPair::from_pkcs8(alg, private_key).map_err(damaged)?;
            let public_der = pair
                .public_key()
                .as_der()
                .map_err(damaged)?
                .as_ref()
                .to_vec();
            ParsedKey {
                signer: Signer::Ecdsa(pair),
                public_der,
                verifiers: verifiers(spec),
            }
        } else {
            let pair = rsa::KeyPair::from_pkcs8(private_key).map_err(damaged)?;
            let public_der = pair
                .public_key()
                .as_der()
                .map_err(damaged)?
                .as_ref()
                .to_vec();
            ParsedKey {
                signer: Signer::Rsa(pair),
                public_der,
                verifiers: verifiers(spec),
            }
        });
        let mut cache = self.0.lock().expect("parsed keys lock");
        if cache.len() >= PARSED_KEYS {
            cache.clear();
        }
        cache.insert(id, Arc::clone(&parsed));
        Ok(parsed)
    }
}

/// An empty verifier slot for each signing algorithm of `spec`.
fn verifiers(spec: KeySpec) -> Vec<OnceLock<signature::ParsedPublicKey>> {
    spec.signing_algorithms()
        .iter()
        .map(|_| OnceLock::new())
        .collect()
}

impl ParsedKey {
    /// Whether `sig` is a signature of `message` by this key with
    /// `algorithm` (one of the spec's: [`check_signing_algorithm`]).
    fn verify(
        &self,
        spec: KeySpec,
        algorithm: &str,
        message: &Message<'_>,
        sig: &[u8],
    ) -> Result<bool> {
        let slot = spec
            .signing_algorithms()
            .iter()
            .position(|a| *a == algorithm)
            .and_then(|i| self.verifiers.get(i))
            .ok_or_else(|| KmsError::internal("a signing algorithm the key spec does not have"))?;
        let key = if let Some(key) = slot.get() {
            key
        } else {
            let parsed =
                signature::ParsedPublicKey::new(verification(spec, algorithm), &self.public_der)
                    .map_err(damaged)?;
            slot.get_or_init(|| parsed)
        };
        Ok(match message {
            Message::Raw(m) => key.verify_sig(m, sig),
            Message::Digest(d) => key.verify_digest_sig(d, sig),
        }
        .is_ok())
    }

    /// Signs `message` with `algorithm` (one of the key's).
    fn sign(&self, algorithm: &str, message: &Message<'_>) -> Result<Vec<u8>> {
        let failed = |_| KmsError::internal("signing failed");
        match &self.signer {
            Signer::Ecdsa(pair) => {
                let sig = match message {
                    Message::Raw(m) => pair.sign(&SystemRandom::new(), m),
                    Message::Digest(d) => pair.sign_digest(d),
                }
                .map_err(failed)?;
                Ok(sig.as_ref().to_vec())
            }
            Signer::Rsa(pair) => {
                let mut sig = vec![0; pair.public_modulus_len()];
                let padding = rsa_signing(algorithm);
                match message {
                    Message::Raw(m) => pair.sign(padding, &SystemRandom::new(), m, &mut sig),
                    Message::Digest(d) => pair.sign_digest(padding, d, &mut sig),
                }
                .map_err(failed)?;
                Ok(sig)
            }
        }
    }
}

/// The DER SubjectPublicKeyInfo of a key's private key.
pub(super) fn public_key_der(spec: KeySpec, private_key: &[u8]) -> Result<Vec<u8>> {
    let der = if let Some(alg) = spec.ecdsa() {
        let pair = signature::EcdsaKeyPair::from_pkcs8(alg, private_key).map_err(damaged)?;
        pair.public_key().as_der().map_err(damaged)?
    } else {
        let pair = rsa::KeyPair::from_pkcs8(private_key).map_err(damaged)?;
        pair.public_key().as_der().map_err(damaged)?
    };
    Ok(der.as_ref().to_vec())
}

/// The RSA-OAEP encryption of `plain` under a key's public key; AWS's
/// plaintext limit (modulus bytes - 2 * hash bytes - 2) is a
/// ValidationException.
fn rsa_encrypt(
    private_key: &[u8],
    algorithm: &'static rsa::OaepAlgorithm,
    name: &str,
    plain: &[u8],
) -> Result<Vec<u8>> {
    let key = rsa::PrivateDecryptingKey::from_pkcs8(private_key).map_err(damaged)?;
    let public = rsa::OaepPublicEncryptingKey::new(key.public_key()).map_err(damaged)?;
    let max = public.max_plaintext_size(algorithm);
    if plain.is_empty() || plain.len() > max {
        return Err(KmsError::validation(format!(
            "Plaintext is {} bytes; {name} with a {}-bit RSA key takes 1 to {max} bytes",
            plain.len(),
            public.key_size_bits()
        )));
    }
    let mut out = vec![0; public.ciphertext_size()];
    let n = public
        .encrypt(algorithm, plain, &mut out, None)
        .map_err(|_| KmsError::internal("RSA-OAEP encryption failed"))?
        .len();
    out.truncate(n);
    Ok(out)
}

/// RSA-OAEP decryption; every failure is InvalidCiphertextException.
pub(super) fn rsa_decrypt(
    private_key: &[u8],
    algorithm: &'static rsa::OaepAlgorithm,
    ciphertext: &[u8],
) -> Result<Secret> {
    let key = rsa::PrivateDecryptingKey::from_pkcs8(private_key).map_err(damaged)?;
    let key = rsa::OaepPrivateDecryptingKey::new(key).map_err(damaged)?;
    let mut out = Secret::new(vec![0; key.min_output_size()]);
    let n = key
        .decrypt(algorithm, ciphertext, out.expose_mut(), None)
        .map_err(|_| KmsError::invalid_ciphertext())?
        .len();
    out.expose_mut().truncate(n);
    Ok(out)
}

/// The spec of an RSA ENCRYPT_DECRYPT key, or InvalidKeyUsageException.
fn rsa_encryption_key(key: &KeyRecord, arn: &str, operation: &str) -> Result<KeySpec> {
    let spec = require_usage(key, arn, ENCRYPT_DECRYPT, operation)?;
    if matches!(spec, KeySpec::Rsa(_)) {
        return Ok(spec);
    }
    Err(KmsError::new(
        ErrorCode::InvalidKeyUsage,
        format!(
            "{arn} has KeySpec {}: RSAES_OAEP_SHA_1 and RSAES_OAEP_SHA_256 need an RSA \
             ENCRYPT_DECRYPT key",
            spec.name()
        ),
    ))
}

/// ValidationException for an encryption context given with an RSA key.
fn no_context(context: &Option<crate::api::EncryptionContext>) -> Result<()> {
    match context {
        Some(c) if !c.is_empty() => Err(KmsError::validation(
            "EncryptionContext is not supported with asymmetric (RSAES_OAEP_*) encryption",
        )),
        _ => Ok(()),
    }
}

impl KmsService {
    pub(super) fn sign(&self, caller: &Caller, r: &SignRequest) -> Result<SignResponse> {
        self.audited(caller, Operation::Sign, |trail| {
            self.check_grant_tokens(&r.grant_tokens)?;
            let digest = is_digest(&r.message_type)?;
            let message = checked_message(&r.message, digest, &r.signing_algorithm)?;
            let snap = self.snapshot()?;
            let (key, spec) = self.signing_key(trail, caller, &snap, &r.key_id, Action::Sign)?;
            let arn = trail.keys[0].arn.clone();
            check_signing_algorithm(spec, &r.signing_algorithm, &arn)?;
            let version = key.current();
            trail.version(version.version);
            let parsed = self.parsed_keys.get(key, spec, version)?;
            let sig = parsed.sign(&r.signing_algorithm, &message)?;
            Ok(SignResponse {
                key_id: arn,
                signature: CiphertextBlob(sig),
                signing_algorithm: r.signing_algorithm.clone(),
            })
        })
    }

    pub(super) fn verify(&self, caller: &Caller, r: &VerifyRequest) -> Result<VerifyResponse> {
        self.audited(caller, Operation::Verify, |trail| {
            self.check_grant_tokens(&r.grant_tokens)?;
            let digest = is_digest(&r.message_type)?;
            let message = checked_message(&r.message, digest, &r.signing_algorithm)?;
            if r.signature.0.is_empty() || r.signature.0.len() > MAX_SIGNATURE {
                return Err(KmsError::validation(format!(
                    "Signature is {} bytes; it must be 1 to {MAX_SIGNATURE} bytes",
                    r.signature.0.len()
                )));
            }
            let snap = self.snapshot()?;
            let (key, spec) = self.signing_key(trail, caller, &snap, &r.key_id, Action::Verify)?;
            let arn = trail.keys[0].arn.clone();
            check_signing_algorithm(spec, &r.signing_algorithm, &arn)?;
            let version = key.current();
            trail.version(version.version);
            let parsed = self.parsed_keys.get(key, spec, version)?;
            let alg = &r.signing_algorithm;
            if !parsed.verify(spec, alg, &message, &r.signature.0)? {
                return Err(KmsError::new(
                    ErrorCode::KmsInvalidSignature,
                    "The signature is not valid for this key, message and signing algorithm",
                ));
            }
            Ok(VerifyResponse {
                key_id: arn,
                signature_valid: true,
                signing_algorithm: alg.clone(),
            })
        })
    }

    /// The usable SIGN_VERIFY key `name` names, `action` checked on it.
    fn signing_key<'s>(
        &self,
        trail: &mut Trail,
        caller: &Caller,
        snap: &'s Snapshot,
        name: &str,
        action: Action,
    ) -> Result<(&'s KeyRecord, KeySpec)> {
        let key = self.authorized_key(trail, caller, snap, name, action, None)?;
        self.usable(key)?;
        let op = action.name().trim_start_matches("kms:");
        let spec = require_usage(key, &trail.keys[0].arn, SIGN_VERIFY, op)?;
        Ok((key, spec))
    }

    pub(super) fn get_public_key(
        &self,
        caller: &Caller,
        r: &KeyIdRequest,
    ) -> Result<GetPublicKeyResponse> {
        self.audited(caller, Operation::GetPublicKey, |trail| {
            self.check_grant_tokens(&r.grant_tokens)?;
            let snap = self.snapshot()?;
            let key =
                self.authorized_key(trail, caller, &snap, &r.key_id, Action::GetPublicKey, None)?;
            self.usable(key)?;
            let arn = trail.keys[0].arn.clone();
            let spec = KeySpec::of(key)?;
            if !spec.is_asymmetric() {
                return Err(KmsError::new(
                    ErrorCode::UnsupportedOperation,
                    format!(
                        "{arn} is not an asymmetric key (KeySpec {}): it has no public key",
                        spec.name()
                    ),
                ));
            }
            let version = key.current();
            trail.version(version.version);
            let encrypts = key.key_usage == ENCRYPT_DECRYPT;
            let list = |names: &[&str]| Some(names.iter().map(ToString::to_string).collect());
            Ok(GetPublicKeyResponse {
                key_id: arn,
                public_key: CiphertextBlob(public_key_der(spec, version.material.expose())?),
                customer_master_key_spec: spec.name().into(),
                key_spec: spec.name().into(),
                key_usage: key.key_usage.clone(),
                encryption_algorithms: if encrypts {
                    list(super::keyspec::RSA_ENCRYPTION)
                } else {
                    None
                },
                signing_algorithms: if key.key_usage == SIGN_VERIFY {
                    list(spec.signing_algorithms())
                } else {
                    None
                },
            })
        })
    }

    /// Encrypt with `EncryptionAlgorithm` RSAES_OAEP_*: the raw RSA-OAEP
    /// ciphertext under the key's public key.
    pub(super) fn encrypt_asymmetric(
        &self,
        caller: &Caller,
        r: &EncryptRequest,
        algorithm: &'static rsa::OaepAlgorithm,
    ) -> Result<EncryptResponse> {
        self.audited(caller, Operation::Encrypt, |trail| {
            trail.object.clone_from(&r.object);
            self.check_grant_tokens(&r.grant_tokens)?;
            no_context(&r.encryption_context)?;
            let name = r.encryption_algorithm.clone().unwrap_or_default();
            let snap = self.snapshot()?;
            let key =
                self.authorized_key(trail, caller, &snap, &r.key_id, Action::Encrypt, None)?;
            self.usable(key)?;
            let arn = trail.keys[0].arn.clone();
            rsa_encryption_key(key, &arn, "Encrypt")?;
            let version = key.current();
            trail.version(version.version);
            let ciphertext = rsa_encrypt(
                version.material.expose(),
                algorithm,
                &name,
                r.plaintext.expose(),
            )?;
            Ok(EncryptResponse {
                ciphertext_blob: CiphertextBlob(ciphertext),
                key_id: arn,
                encryption_algorithm: name,
            })
        })
    }

    /// Decrypt with `EncryptionAlgorithm` RSAES_OAEP_*: needs the KeyId
    /// (a raw RSA-OAEP ciphertext does not name its key).
    pub(super) fn decrypt_asymmetric(
        &self,
        caller: &Caller,
        r: &DecryptRequest,
        algorithm: &'static rsa::OaepAlgorithm,
    ) -> Result<DecryptResponse> {
        self.audited(caller, Operation::Decrypt, |trail| {
            trail.object.clone_from(&r.object);
            self.check_grant_tokens(&r.grant_tokens)?;
            no_context(&r.encryption_context)?;
            let name = r.encryption_algorithm.clone().unwrap_or_default();
            let key_id = asymmetric_key_id(r.key_id.as_deref(), "KeyId")?;
            let snap = self.snapshot()?;
            let key = self.authorized_key(trail, caller, &snap, key_id, Action::Decrypt, None)?;
            self.usable(key)?;
            let arn = trail.keys[0].arn.clone();
            rsa_encryption_key(key, &arn, "Decrypt")?;
            let version = key.current();
            trail.version(version.version);
            let plaintext =
                rsa_decrypt(version.material.expose(), algorithm, &r.ciphertext_blob.0)?;
            Ok(DecryptResponse {
                key_id: arn,
                plaintext,
                encryption_algorithm: name,
            })
        })
    }

    /// ReEncrypt from an RSA-OAEP ciphertext (`SourceEncryptionAlgorithm`
    /// RSAES_OAEP_*, `SourceKeyId` required) to a symmetric destination key:
    /// how a data key wrapped offline under a downloaded public key is
    /// re-wrapped under a symmetric key.
    pub(super) fn re_encrypt_from_asymmetric(
        &self,
        trail: &mut Trail,
        caller: &Caller,
        r: &ReEncryptRequest,
        algorithm: &'static rsa::OaepAlgorithm,
    ) -> Result<ReEncryptResponse> {
        trail
            .destination_context
            .clone_from(&r.destination_encryption_context);
        trail.source_binds_no_context = true;
        self.check_grant_tokens(&r.grant_tokens)?;
        no_context(&r.source_encryption_context)?;
        if let Some(alg) = r
            .destination_encryption_algorithm
            .as_deref()
            .filter(|a| *a != SYMMETRIC_DEFAULT)
        {
            return Err(enum_error(
                alg,
                "destinationEncryptionAlgorithm",
                &[SYMMETRIC_DEFAULT],
            ));
        }
        let source_id = asymmetric_key_id(r.source_key_id.as_deref(), "SourceKeyId")?;
        let snap = self.snapshot()?;
        let dst_ctx = r.destination_encryption_context.as_ref();
        trail.same_key = self
            .lookup(&snap, source_id)
            .and_then(|s| Ok(s.id == self.lookup(&snap, &r.destination_key_id)?.id))
            .unwrap_or(false);
        let source =
            self.authorized_key(trail, caller, &snap, source_id, Action::ReEncryptFrom, None)?;
        self.usable(source)?;
        let source_arn = trail.keys[0].arn.clone();
        rsa_encryption_key(source, &source_arn, "ReEncrypt")?;
        let version = source.current();
        trail.version(version.version);
        let dest = self.re_encrypt_destination(trail, caller, &snap, r)?;
        // The plaintext lives only in this zeroizing buffer, for this call.
        let plaintext = rsa_decrypt(version.material.expose(), algorithm, &r.ciphertext_blob.0)?;
        let ciphertext = self.seal_under(dest, dst_ctx, plaintext.expose())?;
        Ok(ReEncryptResponse {
            ciphertext_blob: CiphertextBlob(ciphertext),
            source_key_id: source_arn,
            key_id: trail.keys[1].arn.clone(),
            source_encryption_algorithm: r.source_encryption_algorithm.clone().unwrap_or_default(),
            destination_encryption_algorithm: SYMMETRIC_DEFAULT.into(),
        })
    }

    pub(super) fn generate_data_key_pair(
        &self,
        caller: &Caller,
        r: &GenerateDataKeyPairRequest,
    ) -> Result<GenerateDataKeyPairResponse> {
        let op = Operation::GenerateDataKeyPair;
        let (private_key_plaintext, out) = self.data_key_pair(caller, op, r)?;
        Ok(GenerateDataKeyPairResponse {
            private_key_ciphertext_blob: out.private_key_ciphertext_blob,
            private_key_plaintext,
            public_key: out.public_key,
            key_id: out.key_id,
            key_pair_spec: out.key_pair_spec,
        })
    }

    pub(super) fn generate_data_key_pair_without_plaintext(
        &self,
        caller: &Caller,
        r: &GenerateDataKeyPairRequest,
    ) -> Result<GenerateDataKeyPairWithoutPlaintextResponse> {
        let op = Operation::GenerateDataKeyPairWithoutPlaintext;
        Ok(self.data_key_pair(caller, op, r)?.1)
    }

    /// A fresh key pair of `KeyPairSpec`, its private key (PKCS#8 DER)
    /// sealed under a symmetric key as a ciphertext blob.
    fn data_key_pair(
        &self,
        caller: &Caller,
        op: Operation,
        r: &GenerateDataKeyPairRequest,
    ) -> Result<(Secret, GenerateDataKeyPairWithoutPlaintextResponse)> {
        let action = op.actions()[0];
        self.audited(caller, op, |trail| {
            trail.context.clone_from(&r.encryption_context);
            self.check_grant_tokens(&r.grant_tokens)?;
            let spec = KeySpec::parse(&r.key_pair_spec)
                .filter(|s| s.is_asymmetric())
                .ok_or_else(|| enum_error(&r.key_pair_spec, "keyPairSpec", KEY_PAIR_SPECS))?;
            let snap = self.snapshot()?;
            let ctx = r.encryption_context.as_ref();
            let key = self.authorized_key(trail, caller, &snap, &r.key_id, action, ctx)?;
            self.usable(key)?;
            trail.version(key.current().version);
            let private = spec.generate()?;
            let public = public_key_der(spec, private.expose())?;
            let sealed = self.seal_under(key, ctx, private.expose())?;
            Ok((
                private,
                GenerateDataKeyPairWithoutPlaintextResponse {
                    private_key_ciphertext_blob: CiphertextBlob(sealed),
                    public_key: CiphertextBlob(public),
                    key_id: trail.keys[0].arn.clone(),
                    key_pair_spec: spec.name().into(),
                },
            ))
        })
    }
}

/// The key id an asymmetric decryption needs, or ValidationException.
fn asymmetric_key_id<'a>(key_id: Option<&'a str>, field: &str) -> Result<&'a str> {
    key_id.filter(|k| !k.is_empty()).ok_or_else(|| {
        KmsError::validation(format!(
            "{field} is required when the encryption algorithm is RSAES_OAEP_SHA_1 or \
             RSAES_OAEP_SHA_256: an RSA ciphertext does not name its key"
        ))
    })
}

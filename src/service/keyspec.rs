//! Key specs and key usages (issue 15): which KeySpec / KeyUsage pairs a
//! key may have, what each key's material is, how it is generated, and the
//! algorithms each spec offers, with AWS's names.
//!
//! | KeySpec | KeyUsage | material (`KeyVersion.material`) | algorithms |
//! | --- | --- | --- | --- |
//! | `SYMMETRIC_DEFAULT` | ENCRYPT_DECRYPT | 32 AES-256 bytes | SYMMETRIC_DEFAULT |
//! | `RSA_2048` / `_3072` / `_4096` | ENCRYPT_DECRYPT | PKCS#8 DER | RSAES_OAEP_SHA_1, RSAES_OAEP_SHA_256 |
//! | `RSA_2048` / `_3072` / `_4096` | SIGN_VERIFY | PKCS#8 DER | RSASSA_PSS_SHA_256/384/512, RSASSA_PKCS1_V1_5_SHA_256/384/512 |
//! | `ECC_NIST_P256` / `ECC_SECG_P256K1` | SIGN_VERIFY | PKCS#8 DER | ECDSA_SHA_256 |
//! | `ECC_NIST_P384` | SIGN_VERIFY | PKCS#8 DER | ECDSA_SHA_384 |
//! | `ECC_NIST_P521` | SIGN_VERIFY | PKCS#8 DER | ECDSA_SHA_512 |
//! | `HMAC_224` / `256` / `384` / `512` | GENERATE_VERIFY_MAC | 28 / 32 / 48 / 64 random bytes | HMAC_SHA_224/256/384/512 |
//!
//! All key generation is AWS-LC's (`aws-lc-rs`); nothing is hand-rolled.

use crate::api::{CreateKeyRequest, KeyMetadataExtra};
use crate::error::{ErrorCode, KmsError, Result};
use crate::keystore::{KeyRecord, KeyState, KeyVersion};
use crate::secret::Secret;
use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::{rsa, signature};

/// The symmetric default, `SYMMETRIC_DEFAULT`.
pub(crate) const SYMMETRIC: &str = "SYMMETRIC_DEFAULT";
/// AWS KeyUsage names.
pub(crate) const ENCRYPT_DECRYPT: &str = "ENCRYPT_DECRYPT";
/// Signing keys.
pub(crate) const SIGN_VERIFY: &str = "SIGN_VERIFY";
/// HMAC keys.
pub(crate) const GENERATE_VERIFY_MAC: &str = "GENERATE_VERIFY_MAC";
const USAGES: &[&str] = &[ENCRYPT_DECRYPT, SIGN_VERIFY, GENERATE_VERIFY_MAC];

/// RSA encryption algorithms, as AWS names them.
pub(crate) const RSA_ENCRYPTION: &[&str] = &["RSAES_OAEP_SHA_1", "RSAES_OAEP_SHA_256"];
const RSA_SIGNING: &[&str] = &[
    "RSASSA_PSS_SHA_256",
    "RSASSA_PSS_SHA_384",
    "RSASSA_PSS_SHA_512",
    "RSASSA_PKCS1_V1_5_SHA_256",
    "RSASSA_PKCS1_V1_5_SHA_384",
    "RSASSA_PKCS1_V1_5_SHA_512",
];

/// A KeySpec rewrap supports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeySpec {
    /// AES-256-GCM.
    Symmetric,
    /// RSA with a modulus of this many bits.
    Rsa(u32),
    /// NIST P-256.
    EccP256,
    /// NIST P-384.
    EccP384,
    /// NIST P-521.
    EccP521,
    /// secp256k1.
    EccSecp256k1,
    /// HMAC with SHA-2 of this many bits.
    Hmac(u32),
}

/// Every KeySpec, in AWS's order, for names and messages.
pub(crate) const KEY_SPECS: &[KeySpec] = &[
    KeySpec::Rsa(2048),
    KeySpec::Rsa(3072),
    KeySpec::Rsa(4096),
    KeySpec::EccP256,
    KeySpec::EccP384,
    KeySpec::EccP521,
    KeySpec::EccSecp256k1,
    KeySpec::Hmac(224),
    KeySpec::Hmac(256),
    KeySpec::Hmac(384),
    KeySpec::Hmac(512),
    KeySpec::Symmetric,
];

impl KeySpec {
    /// The AWS name.
    pub(crate) fn name(self) -> &'static str {
        match self {
            KeySpec::Symmetric => SYMMETRIC,
            KeySpec::Rsa(2048) => "RSA_2048",
            KeySpec::Rsa(3072) => "RSA_3072",
            KeySpec::Rsa(_) => "RSA_4096",
            KeySpec::EccP256 => "ECC_NIST_P256",
            KeySpec::EccP384 => "ECC_NIST_P384",
            KeySpec::EccP521 => "ECC_NIST_P521",
            KeySpec::EccSecp256k1 => "ECC_SECG_P256K1",
            KeySpec::Hmac(224) => "HMAC_224",
            KeySpec::Hmac(256) => "HMAC_256",
            KeySpec::Hmac(384) => "HMAC_384",
            KeySpec::Hmac(_) => "HMAC_512",
        }
    }

    /// Parses an AWS name.
    pub(crate) fn parse(name: &str) -> Option<KeySpec> {
        KEY_SPECS.iter().copied().find(|s| s.name() == name)
    }

    /// The spec of a stored key (a record written by this build always parses).
    pub(crate) fn of(key: &KeyRecord) -> Result<KeySpec> {
        KeySpec::parse(&key.key_spec).ok_or_else(|| {
            KmsError::internal(format!(
                "key {} has a KeySpec this build does not know",
                key.id
            ))
        })
    }

    /// The key usages AWS allows with this spec.
    fn usages(self) -> &'static [&'static str] {
        match self {
            KeySpec::Symmetric => &[ENCRYPT_DECRYPT],
            KeySpec::Rsa(_) => &[ENCRYPT_DECRYPT, SIGN_VERIFY],
            KeySpec::EccP256 | KeySpec::EccP384 | KeySpec::EccP521 | KeySpec::EccSecp256k1 => {
                &[SIGN_VERIFY]
            }
            KeySpec::Hmac(_) => &[GENERATE_VERIFY_MAC],
        }
    }

    /// Whether the key is an asymmetric key pair (RSA or ECC).
    pub(crate) fn is_asymmetric(self) -> bool {
        !matches!(self, KeySpec::Symmetric | KeySpec::Hmac(_))
    }

    /// The ECDSA signing algorithm of an ECC spec: its curve and the one
    /// hash AWS pairs with it.
    pub(crate) fn ecdsa(self) -> Option<&'static signature::EcdsaSigningAlgorithm> {
        match self {
            KeySpec::EccP256 => Some(&signature::ECDSA_P256_SHA256_ASN1_SIGNING),
            KeySpec::EccP384 => Some(&signature::ECDSA_P384_SHA384_ASN1_SIGNING),
            KeySpec::EccP521 => Some(&signature::ECDSA_P521_SHA512_ASN1_SIGNING),
            KeySpec::EccSecp256k1 => Some(&signature::ECDSA_P256K1_SHA256_ASN1_SIGNING),
            _ => None,
        }
    }

    /// New key material of this spec: 32 AES bytes, a private key as
    /// PKCS#8 DER, or HMAC key bytes (as long as the hash's output).
    pub(crate) fn generate(self) -> Result<Secret> {
        let failed = |_| KmsError::internal(format!("cannot generate a {} key", self.name()));
        match self {
            KeySpec::Symmetric => Ok(Secret::random(32)),
            KeySpec::Rsa(bits) => {
                let size = match bits {
                    2048 => rsa::KeySize::Rsa2048,
                    3072 => rsa::KeySize::Rsa3072,
                    _ => rsa::KeySize::Rsa4096,
                };
                let pair = rsa::KeyPair::generate(size).map_err(failed)?;
                let der = pair.as_der().map_err(failed)?;
                Ok(Secret::from_slice(der.as_ref()))
            }
            KeySpec::Hmac(bits) => Ok(Secret::random(bits as usize / 8)),
            ecc => {
                let alg = ecc.ecdsa().expect("an ECC spec");
                let pair = signature::EcdsaKeyPair::generate(alg).map_err(failed)?;
                let der = pair.to_pkcs8v1().map_err(failed)?;
                Ok(Secret::from_slice(der.as_ref()))
            }
        }
    }

    /// The signing algorithms of a SIGN_VERIFY key of this spec.
    pub(crate) fn signing_algorithms(self) -> &'static [&'static str] {
        match self {
            KeySpec::Rsa(_) => RSA_SIGNING,
            KeySpec::EccP256 | KeySpec::EccSecp256k1 => &["ECDSA_SHA_256"],
            KeySpec::EccP384 => &["ECDSA_SHA_384"],
            KeySpec::EccP521 => &["ECDSA_SHA_512"],
            _ => &[],
        }
    }

    /// The MAC algorithm of an HMAC spec.
    pub(crate) fn mac_algorithm(self) -> Option<&'static str> {
        match self {
            KeySpec::Hmac(224) => Some("HMAC_SHA_224"),
            KeySpec::Hmac(256) => Some("HMAC_SHA_256"),
            KeySpec::Hmac(384) => Some("HMAC_SHA_384"),
            KeySpec::Hmac(512) => Some("HMAC_SHA_512"),
            _ => None,
        }
    }
}

/// What CreateKey asked for, validated as AWS does.
#[derive(Debug, Clone, Copy)]
pub(crate) struct KeyChoice {
    /// The KeySpec.
    pub(crate) spec: KeySpec,
    /// The KeyUsage name.
    pub(crate) usage: &'static str,
    /// Origin `EXTERNAL`: no material until ImportKeyMaterial.
    pub(crate) external: bool,
}

impl KeyChoice {
    /// Validates CreateKey's KeySpec, CustomerMasterKeySpec, KeyUsage and
    /// Origin: unknown names and both spec fields at once are
    /// ValidationException (AWS's wording), a usage the spec does not allow
    /// is ValidationException, imported material for anything but a
    /// symmetric key is UnsupportedOperationException.
    pub(crate) fn from_request(r: &CreateKeyRequest) -> Result<KeyChoice> {
        if r.key_spec.is_some() && r.customer_master_key_spec.is_some() {
            return Err(KmsError::validation(
                "You cannot specify KeySpec and CustomerMasterKeySpec in the same request. \
                 CustomerMasterKeySpec is deprecated.",
            ));
        }
        let (field, spec) = match (&r.key_spec, &r.customer_master_key_spec) {
            (Some(s), _) => ("keySpec", s.as_str()),
            (None, Some(s)) => ("customerMasterKeySpec", s.as_str()),
            (None, None) => ("keySpec", SYMMETRIC),
        };
        let spec = KeySpec::parse(spec).ok_or_else(|| {
            let names: Vec<&str> = KEY_SPECS.iter().map(|s| s.name()).collect();
            enum_error(spec, field, &names)
        })?;
        let usage = r.key_usage.as_deref().unwrap_or(ENCRYPT_DECRYPT);
        let usage = USAGES
            .iter()
            .copied()
            .find(|u| *u == usage)
            .ok_or_else(|| enum_error(usage, "keyUsage", USAGES))?;
        if !spec.usages().contains(&usage) {
            return Err(KmsError::validation(format!(
                "KeyUsage {usage} is not compatible with KeySpec {}",
                spec.name()
            )));
        }
        let external = r.origin.as_deref() == Some("EXTERNAL");
        if external && spec != KeySpec::Symmetric {
            return Err(KmsError::new(
                ErrorCode::UnsupportedOperation,
                format!(
                    "rewrap imports symmetric key material only; KeySpec {} with Origin EXTERNAL is not supported",
                    spec.name()
                ),
            ));
        }
        Ok(KeyChoice {
            spec,
            usage,
            external,
        })
    }
}

impl KeyChoice {
    /// The key's first material, generated before the keystore is locked
    /// (an RSA-4096 key pair takes a while); `None` for imported material.
    pub(crate) fn first_material(&self) -> Result<Option<Secret>> {
        if self.external {
            return Ok(None);
        }
        self.spec.generate().map(Some)
    }

    /// The AWS Origin.
    pub(crate) fn origin(&self) -> &'static str {
        if self.external {
            "EXTERNAL"
        } else {
            "AWS_KMS"
        }
    }

    /// Installs the first material as version 1; an `EXTERNAL` key waits
    /// for ImportKeyMaterial in state `PendingImport`.
    pub(crate) fn install(&self, key: &mut KeyRecord, material: Option<Secret>, now: f64) {
        match material {
            Some(material) => key.versions.push(KeyVersion {
                version: 1,
                created: now,
                origin: "CREATE".into(),
                material,
            }),
            None => key.state = KeyState::PendingImport,
        }
    }
}

/// DescribeKey's EncryptionAlgorithms (empty when the key does not
/// encrypt) and its SigningAlgorithms, MacAlgorithms, ExpirationModel and
/// ValidTo.
pub(crate) fn algorithms(key: &KeyRecord) -> (Vec<String>, KeyMetadataExtra) {
    let owned = |names: &[&str]| names.iter().map(ToString::to_string).collect::<Vec<_>>();
    let spec = KeySpec::parse(&key.key_spec).unwrap_or(KeySpec::Symmetric);
    let mut extra = KeyMetadataExtra::default();
    super::import::metadata_extra(key, &mut extra);
    let encryption = match (spec, key.key_usage.as_str()) {
        (KeySpec::Symmetric, _) => owned(&[SYMMETRIC]),
        (KeySpec::Rsa(_), ENCRYPT_DECRYPT) => owned(RSA_ENCRYPTION),
        _ => Vec::new(),
    };
    if key.key_usage == SIGN_VERIFY {
        extra.signing_algorithms = Some(owned(spec.signing_algorithms()));
    }
    if let Some(mac) = spec.mac_algorithm() {
        extra.mac_algorithms = Some(owned(&[mac]));
    }
    (encryption, extra)
}

/// AWS's message for a value outside an enum.
pub(crate) fn enum_error(value: &str, field: &str, allowed: &[&str]) -> KmsError {
    KmsError::validation(format!(
        "1 validation error detected: Value '{value}' at '{field}' failed to satisfy constraint: \
         Member must satisfy enum value set: [{}]",
        allowed.join(", ")
    ))
}

/// The key's spec, or InvalidKeyUsageException unless the key has `usage`.
pub(crate) fn require_usage(
    key: &KeyRecord,
    arn: &str,
    usage: &str,
    operation: &str,
) -> Result<KeySpec> {
    let spec = KeySpec::of(key)?;
    if key.key_usage != usage {
        return Err(KmsError::new(
            ErrorCode::InvalidKeyUsage,
            format!(
                "{arn} key usage is {} which is not valid for {operation}.",
                key.key_usage
            ),
        ));
    }
    Ok(spec)
}

/// InvalidKeyUsageException unless the key is a symmetric encryption key:
/// the ciphertext-blob operations (Encrypt and Decrypt with
/// SYMMETRIC_DEFAULT, ReEncrypt, GenerateDataKey*) need one.
pub(crate) fn require_symmetric(key: &KeyRecord, arn: &str) -> Result<()> {
    if key.key_spec == SYMMETRIC && key.key_usage == ENCRYPT_DECRYPT {
        return Ok(());
    }
    Err(KmsError::new(
        ErrorCode::InvalidKeyUsage,
        format!(
            "{arn} has KeySpec {} and KeyUsage {}: this operation needs a SYMMETRIC_DEFAULT \
             ENCRYPT_DECRYPT key (asymmetric RSA encryption keys take EncryptionAlgorithm \
             RSAES_OAEP_SHA_1 or RSAES_OAEP_SHA_256)",
            key.key_spec, key.key_usage
        ),
    ))
}

/// UnsupportedOperationException for key-material rotation of keys AWS
/// does not rotate: asymmetric, HMAC and imported keys.
pub(crate) fn require_rotatable(key: &KeyRecord, arn: &str) -> Result<()> {
    if key.key_spec == SYMMETRIC && key.origin != "EXTERNAL" {
        return Ok(());
    }
    Err(KmsError::new(
        ErrorCode::UnsupportedOperation,
        format!(
            "{arn} cannot rotate its key material: automatic and on-demand rotation apply to \
             symmetric keys with Origin AWS_KMS only (this key has KeySpec {}, Origin {})",
            key.key_spec, key.origin
        ),
    ))
}

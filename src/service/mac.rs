//! HMAC keys (issue 15): GenerateMac and VerifyMac with GENERATE_VERIFY_MAC
//! keys (KeySpec HMAC_224 / 256 / 384 / 512), by AWS-LC's HMAC.

use super::keyspec::{enum_error, require_usage, KeySpec, GENERATE_VERIFY_MAC};
use super::{Caller, KmsService, Snapshot, MAX_PLAINTEXT};
use crate::api::{
    CiphertextBlob, GenerateMacRequest, GenerateMacResponse, Operation, VerifyMacRequest,
    VerifyMacResponse,
};
use crate::error::{ErrorCode, KmsError, Result};
use crate::keystore::KeyVersion;
use crate::operation::Action;
use crate::secret::Secret;
use aws_lc_rs::hmac;

const MAC_ALGORITHMS: &[&str] = &[
    "HMAC_SHA_224",
    "HMAC_SHA_256",
    "HMAC_SHA_384",
    "HMAC_SHA_512",
];

/// AWS-LC's HMAC of a key spec.
fn hmac_algorithm(spec: KeySpec) -> hmac::Algorithm {
    match spec {
        KeySpec::Hmac(224) => hmac::HMAC_SHA224,
        KeySpec::Hmac(384) => hmac::HMAC_SHA384,
        KeySpec::Hmac(512) => hmac::HMAC_SHA512,
        _ => hmac::HMAC_SHA256,
    }
}

/// ValidationException for an unknown algorithm or a message outside 1 to
/// 4096 bytes.
fn check_request(algorithm: &str, message: &Secret) -> Result<()> {
    if !MAC_ALGORITHMS.contains(&algorithm) {
        return Err(enum_error(algorithm, "macAlgorithm", MAC_ALGORITHMS));
    }
    let len = message.len();
    if len == 0 || len > MAX_PLAINTEXT {
        return Err(KmsError::validation(format!(
            "Message is {len} bytes; it must be 1 to {MAX_PLAINTEXT} bytes"
        )));
    }
    Ok(())
}

impl KmsService {
    /// The current version of the usable HMAC key `name` names, `action`
    /// checked on it and `algorithm` checked against its spec.
    fn mac_key<'s>(
        &self,
        trail: &mut super::authz::Trail,
        caller: &Caller,
        snap: &'s Snapshot,
        (name, algorithm): (&str, &str),
        action: Action,
    ) -> Result<(&'s KeyVersion, hmac::Key)> {
        let key = self.authorized_key(trail, caller, snap, name, action, None)?;
        self.usable(key)?;
        let arn = trail.keys[0].arn.clone();
        let op = action.name().trim_start_matches("kms:");
        let spec = require_usage(key, &arn, GENERATE_VERIFY_MAC, op)?;
        if spec.mac_algorithm() != Some(algorithm) {
            return Err(KmsError::new(
                ErrorCode::InvalidKeyUsage,
                format!(
                    "Algorithm {algorithm} is incompatible with key spec {} of {arn}",
                    spec.name()
                ),
            ));
        }
        let version = key.current();
        trail.version(version.version);
        let hmac_key = hmac::Key::new(hmac_algorithm(spec), version.material.expose());
        Ok((version, hmac_key))
    }

    pub(super) fn generate_mac(
        &self,
        caller: &Caller,
        r: &GenerateMacRequest,
    ) -> Result<GenerateMacResponse> {
        self.audited(caller, Operation::GenerateMac, |trail| {
            self.check_grant_tokens(&r.grant_tokens)?;
            check_request(&r.mac_algorithm, &r.message)?;
            let snap = self.snapshot()?;
            let names = (r.key_id.as_str(), r.mac_algorithm.as_str());
            let (_, key) = self.mac_key(trail, caller, &snap, names, Action::GenerateMac)?;
            let tag = hmac::sign(&key, r.message.expose());
            Ok(GenerateMacResponse {
                key_id: trail.keys[0].arn.clone(),
                mac: CiphertextBlob(tag.as_ref().to_vec()),
                mac_algorithm: r.mac_algorithm.clone(),
            })
        })
    }

    pub(super) fn verify_mac(
        &self,
        caller: &Caller,
        r: &VerifyMacRequest,
    ) -> Result<VerifyMacResponse> {
        self.audited(caller, Operation::VerifyMac, |trail| {
            self.check_grant_tokens(&r.grant_tokens)?;
            check_request(&r.mac_algorithm, &r.message)?;
            if r.mac.0.is_empty() || r.mac.0.len() > 6144 {
                return Err(KmsError::validation(format!(
                    "Mac is {} bytes; it must be 1 to 6144 bytes",
                    r.mac.0.len()
                )));
            }
            let snap = self.snapshot()?;
            let names = (r.key_id.as_str(), r.mac_algorithm.as_str());
            let (_, key) = self.mac_key(trail, caller, &snap, names, Action::VerifyMac)?;
            // Constant-time comparison inside AWS-LC.
            if hmac::verify(&key, r.message.expose(), &r.mac.0).is_err() {
                return Err(KmsError::new(
                    ErrorCode::KmsInvalidMac,
                    "The MAC is not valid for this key, message and MAC algorithm",
                ));
            }
            Ok(VerifyMacResponse {
                key_id: trail.keys[0].arn.clone(),
                mac_valid: true,
                mac_algorithm: r.mac_algorithm.clone(),
            })
        })
    }
}

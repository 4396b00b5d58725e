//! Which key envelopes are re-wrapped to (the target, resolved once and
//! learned from ReEncrypt answers when the caller may not describe it) and
//! which keys they may come from (`--from`).

use crate::api::KeyIdRequest;
use crate::envelope::Slot;
use crate::error::{ErrorCode, KmsError};
use crate::kms::Kms;
use std::sync::RwLock;

/// The target key as resolved by DescribeKey, or learned from ReEncrypt
/// responses when the caller may not describe it.
pub(super) struct Target {
    requested: String,
    known: RwLock<Option<(String, String, u32)>>,
    /// The key state DescribeKey reported (`None`: not described).
    state: Option<String>,
}

impl Target {
    pub(super) fn resolve(kms: &dyn Kms, requested: &str) -> Result<Target, KmsError> {
        let (known, state) = match describe(kms, requested) {
            Ok(Some(m)) => (
                Some((m.arn, m.key_id, m.key_material_versions)),
                Some(m.key_state),
            ),
            Ok(None) => (None, None),
            Err(e) => return Err(e),
        };
        Ok(Target {
            requested: requested.to_string(),
            known: RwLock::new(known),
            state,
        })
    }

    /// Preflight: the target key, as described when the run started, can
    /// take new wraps (enabled). A key the caller may not describe passes:
    /// its first ReEncrypt answers instead.
    pub(super) fn check_usable(&self) -> Result<(), KmsError> {
        match &self.state {
            Some(state) => usable(&self.destination(), state),
            None => Ok(()),
        }
    }

    /// Describes the target again (after a KeyState failure): `Err` with
    /// the reason when it is not enabled now.
    pub(super) fn check_usable_now(&self, kms: &dyn Kms) -> Result<(), KmsError> {
        match describe(kms, &self.destination()) {
            Ok(Some(m)) => usable(&m.arn, &m.key_state),
            Ok(None) | Err(_) => Ok(()),
        }
    }

    /// Whether DescribeKey resolved the target when the run started.
    pub(super) fn is_described(&self) -> bool {
        self.state.is_some()
    }

    pub(super) fn destination(&self) -> String {
        match &*self
            .known
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
        {
            Some((arn, _, _)) => arn.clone(),
            None => self.requested.clone(),
        }
    }

    /// True when `slot` is under the newest known version of the target.
    pub(super) fn is_current(&self, slot: &Slot) -> bool {
        match &*self
            .known
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
        {
            Some((arn, id, version)) => {
                (slot.key_arn == *arn || slot.key_arn == *id)
                    && (*version == 0 || slot.key_version >= *version)
            }
            None => false,
        }
    }

    pub(super) fn learn(&self, arn: &str, version: u32) {
        let mut k = self
            .known
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let newer = match &*k {
            Some((a, _, v)) => a != arn || version > *v,
            None => true,
        };
        if newer {
            let id = arn.rsplit('/').next().unwrap_or(arn).to_string();
            *k = Some((arn.to_string(), id, version));
        }
    }

    pub(super) fn snapshot(&self) -> (String, u32) {
        match &*self
            .known
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
        {
            Some((arn, _, v)) => (arn.clone(), *v),
            None => (self.requested.clone(), 0),
        }
    }
}

/// DescribeKey of `key`; `Ok(None)` when the caller may not describe it.
fn describe(kms: &dyn Kms, key: &str) -> Result<Option<crate::api::KeyMetadata>, KmsError> {
    match kms.describe_key(&KeyIdRequest {
        key_id: key.to_string(),
        grant_tokens: None,
    }) {
        Ok(r) => Ok(Some(r.key_metadata)),
        Err(e) if e.code == ErrorCode::AccessDenied => Ok(None),
        Err(e) => Err(e),
    }
}

/// A target key in `state` takes new wraps only when enabled; the error
/// is the one ReEncrypt would give.
fn usable(arn: &str, state: &str) -> Result<(), KmsError> {
    match state {
        "Enabled" => Ok(()),
        "Disabled" => Err(KmsError::new(
            ErrorCode::Disabled,
            format!("the target key {arn} is disabled"),
        )),
        other => Err(KmsError::new(
            ErrorCode::InvalidState,
            format!("the target key {arn} is {other}"),
        )),
    }
}

/// Matches a slot's key ARN against the `--from` keys (ARNs or key ids).
pub(super) struct FromFilter(Vec<String>);

impl FromFilter {
    pub(super) fn resolve(kms: &dyn Kms, keys: &[String]) -> Result<FromFilter, KmsError> {
        let mut out = Vec::new();
        for k in keys {
            match kms.describe_key(&KeyIdRequest {
                key_id: k.clone(),
                grant_tokens: None,
            }) {
                Ok(r) => out.push(r.key_metadata.arn),
                Err(e) if e.code == ErrorCode::AccessDenied && !k.starts_with("alias/") => {
                    out.push(k.clone());
                }
                Err(e) => return Err(e),
            }
        }
        Ok(FromFilter(out))
    }

    /// No `--from`: every key is a source.
    pub(super) fn any() -> FromFilter {
        FromFilter(Vec::new())
    }

    pub(super) fn admits(&self, arn: &str) -> bool {
        self.0.is_empty()
            || self
                .0
                .iter()
                .any(|k| k == arn || arn.rsplit('/').next() == Some(k.as_str()))
    }
}

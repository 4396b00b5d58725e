//! Key-material rotation: automatic rotation when due (`rotate_due_keys`),
//! EnableKeyRotation, DisableKeyRotation, GetKeyRotationStatus,
//! RotateKeyOnDemand and ListKeyRotations.

use super::{page, required_key_id, Caller, KmsService, DAY};
use crate::api::{
    Empty, EnableKeyRotationRequest, KeyIdRequest, KeyIdResponse, KeyRotationStatusResponse,
    ListKeyRotationsResponse, ListRequest, Operation, RotationEntry,
};
use crate::error::Result;
use crate::keystore::{KeyRecord, KeyState, KeyVersion, RotationConfig};
use crate::operation::Action;
use crate::secret::Secret;

impl KmsService {
    /// Adds a key version to every enabled key whose automatic rotation is
    /// due. Returns the ARNs of the keys rotated.
    pub fn rotate_due_keys(&self) -> Result<Vec<String>> {
        let now = self.now();
        let snap = self.snapshot()?;
        let due = |k: &KeyRecord| {
            k.state == KeyState::Enabled
                && k.rotation.as_ref().is_some_and(|r| r.next_rotation <= now)
        };
        if !snap.state.keys.values().any(due) {
            return Ok(Vec::new());
        }
        let rotated = self.mutate(|state, now| {
            let mut rotated = Vec::new();
            for key in state.keys.values_mut().filter(|k| due(k)) {
                // A key whose custom key store cannot be reached now stays
                // due and rotates on a later pass.
                if self.new_key_version(key, now, "AUTOMATIC").is_err() {
                    continue;
                }
                let r = key.rotation.as_mut().expect("due keys rotate");
                r.next_rotation = now + f64::from(r.period_days) * DAY;
                rotated.push(key.id);
            }
            Ok(rotated)
        })?;
        Ok(rotated.iter().map(|id| self.key_arn(id)).collect())
    }

    pub(super) fn enable_key_rotation(
        &self,
        caller: &Caller,
        r: &EnableKeyRotationRequest,
    ) -> Result<Empty> {
        let period = r.rotation_period_in_days.unwrap_or(365);
        let op = Operation::EnableKeyRotation;
        self.change_key(caller, op, &r.key_id, |key, now| {
            super::validation::int_range("rotationPeriodInDays", period.into(), 90, 2560)?;
            self.usable(key)?;
            super::keyspec::require_rotatable(key, &self.key_arn(&key.id))?;
            key.rotation = Some(RotationConfig {
                period_days: period,
                next_rotation: now + f64::from(period) * DAY,
            });
            Ok(Empty {})
        })
    }

    pub(super) fn disable_key_rotation(&self, caller: &Caller, r: &KeyIdRequest) -> Result<Empty> {
        let op = Operation::DisableKeyRotation;
        self.change_key(caller, op, &r.key_id, |key, _| {
            self.usable(key)?;
            key.rotation = None;
            Ok(Empty {})
        })
    }

    pub(super) fn get_key_rotation_status(
        &self,
        caller: &Caller,
        r: &KeyIdRequest,
    ) -> Result<KeyRotationStatusResponse> {
        self.audited(caller, Operation::GetKeyRotationStatus, |trail| {
            let snap = self.snapshot()?;
            let key = self.authorized_key(
                trail,
                caller,
                &snap,
                &r.key_id,
                Action::GetKeyRotationStatus,
                None,
            )?;
            self.not_pending(key)?;
            Ok(KeyRotationStatusResponse {
                key_id: self.key_arn(&key.id),
                key_rotation_enabled: key.rotation.is_some(),
                rotation_period_in_days: key.rotation.as_ref().map(|r| r.period_days),
                next_rotation_date: key.rotation.as_ref().map(|r| r.next_rotation),
                on_demand_rotation_start_date: None,
            })
        })
    }

    pub(super) fn rotate_key_on_demand(
        &self,
        caller: &Caller,
        r: &KeyIdRequest,
    ) -> Result<KeyIdResponse> {
        let op = Operation::RotateKeyOnDemand;
        self.change_key(caller, op, &r.key_id, |key, now| {
            self.usable(key)?;
            super::keyspec::require_rotatable(key, &self.key_arn(&key.id))?;
            self.new_key_version(key, now, "ON_DEMAND")?;
            Ok(KeyIdResponse {
                key_id: self.key_arn(&key.id),
            })
        })
    }

    pub(super) fn list_key_rotations(
        &self,
        caller: &Caller,
        r: &ListRequest,
    ) -> Result<ListKeyRotationsResponse> {
        self.audited(caller, Operation::ListKeyRotations, |trail| {
            let name = required_key_id(r)?;
            let snap = self.snapshot()?;
            let key =
                self.authorized_key(trail, caller, &snap, name, Action::ListKeyRotations, None)?;
            let all: Vec<RotationEntry> = key
                .versions
                .iter()
                .skip(1)
                .map(|v| RotationEntry {
                    key_id: self.key_arn(&key.id),
                    rotation_date: v.created,
                    rotation_type: v.origin.clone(),
                })
                .collect();
            let (rotations, next_marker) = page(&all, r.limit, &r.marker)?;
            Ok(ListKeyRotationsResponse {
                rotations,
                truncated: next_marker.is_some(),
                next_marker,
            })
        })
    }
}

pub(super) fn add_version(key: &mut KeyRecord, now: f64, origin: &str) {
    let version = key.versions.len() as u32 + 1;
    key.versions.push(KeyVersion {
        version,
        created: now,
        origin: origin.into(),
        material: Secret::random(32),
    });
}

//! Key lifecycle: CreateKey, DescribeKey, ListKeys, EnableKey, DisableKey,
//! ScheduleKeyDeletion, CancelKeyDeletion, key metadata, and the purge of
//! keys whose deletion date has passed.

use super::{page, Caller, KmsService, DAY};
use crate::api::{
    CreateKeyRequest, DisableKeyRequest, Empty, KeyIdRequest, KeyIdResponse, KeyListEntry,
    KeyMetadata, KeyMetadataResponse, ListKeysResponse, ListRequest, Operation,
    ScheduleKeyDeletionRequest, ScheduleKeyDeletionResponse, UpdateKeyDescriptionRequest,
};
use crate::error::{ErrorCode, KmsError, Result};
use crate::keystore::{KeyRecord, KeyState, State};
use crate::operation::Action;
use uuid::Uuid;

/// The Origin values of AWS's CreateKey (`EXTERNAL_KEY_STORE` is known but
/// not supported here: UnsupportedOperationException).
const ORIGINS: &[&str] = &["AWS_KMS", "EXTERNAL", "AWS_CLOUDHSM", "EXTERNAL_KEY_STORE"];

impl KmsService {
    fn metadata(&self, key: &KeyRecord) -> KeyMetadata {
        let c = self.keystore.config();
        let state = super::import::effective_state(key, self.now());
        let (encryption_algorithms, extra) = super::keyspec::algorithms(key);
        KeyMetadata {
            aws_account_id: c.account.clone(),
            key_id: key.id.to_string(),
            arn: self.key_arn(&key.id),
            creation_date: key.created,
            enabled: state == KeyState::Enabled,
            description: key.description.clone(),
            key_usage: key.key_usage.clone(),
            key_state: state.as_str().into(),
            deletion_date: key.deletion_date,
            pending_deletion_window_in_days: key.pending_window_days,
            origin: key.origin.clone(),
            key_manager: "CUSTOMER".into(),
            customer_master_key_spec: key.key_spec.clone(),
            key_spec: key.key_spec.clone(),
            encryption_algorithms,
            multi_region: false,
            key_material_versions: key.versions.len() as u32,
            // Filled in by DescribeKey only: it takes the usage index's lock.
            last_used_date: None,
            custom_key_store_id: key.custom_key_store_id.clone(),
            extra,
        }
    }

    pub(super) fn create_key(
        &self,
        caller: &Caller,
        r: &CreateKeyRequest,
    ) -> Result<KeyMetadataResponse> {
        self.audited(caller, Operation::CreateKey, |trail| {
            self.authorize(trail, caller, Action::CreateKey, &["*".into()], None)?;
            // KeySpec, KeyUsage and Origin EXTERNAL (issues 15, 13).
            let choice = super::keyspec::KeyChoice::from_request(r)?;
            let hsm_origin = super::custom_key_stores::AWS_CLOUDHSM;
            if let Some(origin) = r.origin.as_deref().filter(|o| !ORIGINS.contains(o)) {
                return Err(super::keyspec::enum_error(origin, "origin", ORIGINS));
            }
            if let Some(origin) = r
                .origin
                .as_deref()
                .filter(|o| !matches!(*o, "AWS_KMS" | "EXTERNAL") && *o != hsm_origin)
            {
                return Err(KmsError::new(
                    ErrorCode::UnsupportedOperation,
                    format!("Origin {origin} is not supported"),
                ));
            }
            let store =
                self.store_for_new_key(r.origin.as_deref(), r.custom_key_store_id.as_deref())?;
            if store.is_some() && choice.spec.name() != super::SYMMETRIC_DEFAULT {
                return Err(KmsError::validation(format!(
                    "KeySpec {} is not supported in a custom key store; its keys are \
                     SYMMETRIC_DEFAULT (AES-256-GCM in the token)",
                    choice.spec.name()
                )));
            }
            // An HSM key's material is generated in the token, never here.
            let first = if store.is_some() {
                None
            } else {
                choice.first_material()?
            };
            let description = r.description.clone().unwrap_or_default();
            check_description(&description)?;
            let mut tags = std::collections::BTreeMap::new();
            super::tags::apply_tags(&mut tags, r.tags.as_deref().unwrap_or_default())?;
            let key = self.mutate(|state, now| {
                let mut key = KeyRecord {
                    id: Uuid::new_v4(),
                    description,
                    created: now,
                    state: KeyState::Enabled,
                    deletion_date: None,
                    pending_window_days: None,
                    rotation: None,
                    versions: Vec::new(),
                    tags,
                    key_spec: choice.spec.name().into(),
                    key_usage: choice.usage.into(),
                    origin: if store.is_some() {
                        hsm_origin.into()
                    } else {
                        choice.origin().into()
                    },
                    import: None,
                    custom_key_store_id: store.as_ref().map(|(id, _)| id.clone()),
                };
                match &store {
                    Some((_, token)) => {
                        super::custom_key_stores::add_token_version(
                            token, &mut key, now, "CREATE",
                        )?;
                    }
                    None => choice.install(&mut key, first, now),
                }
                state.keys.insert(key.id, key.clone());
                Ok(key)
            })?;
            trail.key(self.key_arn(&key.id), Some(1));
            Ok(KeyMetadataResponse {
                key_metadata: self.metadata(&key),
            })
        })
    }

    pub(super) fn describe_key(
        &self,
        caller: &Caller,
        r: &KeyIdRequest,
    ) -> Result<KeyMetadataResponse> {
        self.audited(caller, Operation::DescribeKey, |trail| {
            self.check_grant_tokens(&r.grant_tokens)?;
            let snap = self.snapshot()?;
            let key =
                self.authorized_key(trail, caller, &snap, &r.key_id, Action::DescribeKey, None)?;
            let mut key_metadata = self.metadata(key);
            key_metadata.last_used_date = self.last_used(&key_metadata.arn);
            Ok(KeyMetadataResponse { key_metadata })
        })
    }

    pub(super) fn list_keys(&self, caller: &Caller, r: &ListRequest) -> Result<ListKeysResponse> {
        self.audited(caller, Operation::ListKeys, |trail| {
            self.authorize(trail, caller, Action::ListKeys, &["*".into()], None)?;
            let snap = self.snapshot()?;
            let now = self.now();
            let all: Vec<KeyListEntry> = snap
                .state
                .keys
                .values()
                .filter(|k| !is_past_deletion(k, now))
                .map(|k| KeyListEntry {
                    key_id: k.id.to_string(),
                    key_arn: self.key_arn(&k.id),
                })
                .collect();
            let (keys, next_marker) = page(&all, r.limit, &r.marker)?;
            Ok(ListKeysResponse {
                keys,
                truncated: next_marker.is_some(),
                next_marker,
            })
        })
    }

    /// Runs a state change on one key: checks `op`'s one action on it, then
    /// `change`.
    pub(super) fn change_key<R>(
        &self,
        caller: &Caller,
        op: Operation,
        key_id: &str,
        change: impl FnOnce(&mut KeyRecord, f64) -> Result<R>,
    ) -> Result<R> {
        self.change_key_guarded(caller, op, key_id, None, change)
    }

    /// [`KmsService::change_key`], and with `interlock` = `(force, verb)`,
    /// the deletion interlock between the policy check and the change.
    fn change_key_guarded<R>(
        &self,
        caller: &Caller,
        op: Operation,
        key_id: &str,
        interlock: Option<(bool, &str)>,
        change: impl FnOnce(&mut KeyRecord, f64) -> Result<R>,
    ) -> Result<R> {
        // Taken by the attempt that reaches the change (the body may be
        // asked twice: see `audited_named`).
        let change = std::cell::Cell::new(Some(change));
        self.audited(caller, op, |trail| {
            let snap = self.snapshot()?;
            let id = self
                .authorized_key(trail, caller, &snap, key_id, op.actions()[0], None)?
                .id;
            if let Some((force, verb)) = interlock {
                self.check_key_unused(trail, &self.key_arn(&id), force, verb)?;
            }
            self.mutate(|state, now| {
                let key = state
                    .keys
                    .get_mut(&id)
                    .ok_or_else(|| self.key_not_found(&id))?;
                let change = change.take().ok_or_else(|| self.key_not_found(&id))?;
                change(key, now)
            })
        })
    }

    pub(super) fn not_pending(&self, key: &KeyRecord) -> Result<()> {
        if key.state == KeyState::PendingDeletion {
            Err(KmsError::new(
                ErrorCode::InvalidState,
                format!("{} is pending deletion.", self.key_arn(&key.id)),
            ))
        } else {
            Ok(())
        }
    }

    pub(super) fn update_key_description(
        &self,
        caller: &Caller,
        r: &UpdateKeyDescriptionRequest,
    ) -> Result<Empty> {
        check_description(&r.description)?;
        self.change_key(
            caller,
            Operation::UpdateKeyDescription,
            &r.key_id,
            |key, _| {
                self.not_pending(key)?;
                key.description.clone_from(&r.description);
                Ok(Empty {})
            },
        )
    }

    pub(super) fn enable_key(&self, caller: &Caller, r: &KeyIdRequest) -> Result<Empty> {
        self.change_key(caller, Operation::EnableKey, &r.key_id, |key, _| {
            self.not_pending(key)?;
            self.not_pending_import(key)?;
            key.state = KeyState::Enabled;
            Ok(Empty {})
        })
    }

    pub(super) fn disable_key(&self, caller: &Caller, r: &DisableKeyRequest) -> Result<Empty> {
        let interlock = Some((r.force == Some(true), "disable it"));
        let op = Operation::DisableKey;
        self.change_key_guarded(caller, op, &r.key_id, interlock, |key, _| {
            self.not_pending(key)?;
            self.not_pending_import(key)?;
            key.state = KeyState::Disabled;
            Ok(Empty {})
        })
    }

    pub(super) fn schedule_key_deletion(
        &self,
        caller: &Caller,
        r: &ScheduleKeyDeletionRequest,
    ) -> Result<ScheduleKeyDeletionResponse> {
        let days = r.pending_window_in_days.unwrap_or(30);
        let op = Operation::ScheduleKeyDeletion;
        let interlock = Some((r.force == Some(true), "schedule its deletion"));
        self.change_key_guarded(caller, op, &r.key_id, interlock, |key, now| {
            super::validation::int_range("pendingWindowInDays", days.into(), 7, 30)?;
            self.not_pending(key)?;
            let when = now + f64::from(days) * DAY;
            key.state = KeyState::PendingDeletion;
            key.deletion_date = Some(when);
            key.pending_window_days = Some(days);
            Ok(ScheduleKeyDeletionResponse {
                key_id: self.key_arn(&key.id),
                deletion_date: when,
                key_state: key.state.as_str().into(),
                pending_window_in_days: days,
            })
        })
    }

    pub(super) fn cancel_key_deletion(
        &self,
        caller: &Caller,
        r: &KeyIdRequest,
    ) -> Result<KeyIdResponse> {
        let op = Operation::CancelKeyDeletion;
        self.change_key(caller, op, &r.key_id, |key, _| {
            if key.state != KeyState::PendingDeletion {
                return Err(KmsError::new(
                    ErrorCode::InvalidState,
                    format!("{} is not pending deletion.", self.key_arn(&key.id)),
                ));
            }
            // As in AWS: a key whose deletion is cancelled comes back disabled.
            key.state = KeyState::Disabled;
            key.deletion_date = None;
            key.pending_window_days = None;
            Ok(KeyIdResponse {
                key_id: self.key_arn(&key.id),
            })
        })
    }

    // ----- aliases -------------------------------------------------------
}

pub(super) fn is_past_deletion(key: &KeyRecord, now: f64) -> bool {
    key.state == KeyState::PendingDeletion && key.deletion_date.is_some_and(|d| d <= now)
}

/// Deletes for good the keys whose pending window has passed, and their aliases.
pub(super) fn purge_deleted(state: &mut State, now: f64) {
    let gone: Vec<Uuid> = state
        .keys
        .values()
        .filter(|k| is_past_deletion(k, now))
        .map(|k| k.id)
        .collect();
    super::custom_key_stores::queue_token_objects(state, &gone);
    for id in &gone {
        state.keys.remove(id);
    }
    state.aliases.retain(|_, a| !gone.contains(&a.target));
    state.grants.retain(|_, g| !gone.contains(&g.key));
    super::import::purge_expired_material(state, now);
}

/// AWS's limit on a key description.
fn check_description(description: &str) -> Result<()> {
    if description.chars().count() > 8192 {
        return Err(super::validation::too_long("description", 8192));
    }
    Ok(())
}

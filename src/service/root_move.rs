//! `rewrap root move`: the keystore moved to another root of trust
//! ([`crate::root::relocate`]), authorized and recorded as `MoveRoot`.
//!
//! The record names both roots by kind, a PKCS#11 URI (whose PIN is only
//! referenced) or where a passphrase is read, never a secret. It is
//! appended under the root in force when it is written, so the trail's
//! sealed checkpoint stays one the keystore can open: a refused or failed
//! move is recorded under the old root, a finished one under the new root,
//! durably, before the caller hears of success.

use super::{Caller, KmsService};
use crate::error::{ErrorCode, KmsError};
use crate::keystore::KeystoreError;
use crate::operation::Action;
use crate::root::RootSpec;
use std::sync::Arc;

/// The audit record's operation name.
pub const MOVE_ROOT: &str = "MoveRoot";
/// What a root move needs: the administrator's right to destroy every
/// key (`kms:ScheduleKeyDeletion` on `*`), as `rewrap audit prune`.
const MOVE_ROOT_ACTION: Action = Action::ScheduleKeyDeletion;

/// Why a root move failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MoveRootError {
    /// Refused by the policy, or its record could not be written.
    #[error(transparent)]
    Kms(#[from] KmsError),
    /// The new root could not be made or the keystore not sealed again.
    #[error(transparent)]
    Keystore(#[from] KeystoreError),
}

/// A finished root move.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RootMoved {
    /// The old root's description.
    pub from: String,
    /// The new root's description.
    pub to: String,
}

impl KmsService {
    /// Moves the keystore to the root `to` names, as `caller`, and records
    /// `MoveRoot`. Consumes the service: after a move it holds the old
    /// root, which no longer opens the keystore's sealed files.
    pub fn move_root(
        self: Arc<Self>,
        caller: &Caller,
        to: &RootSpec,
    ) -> Result<RootMoved, MoveRootError> {
        let from = self.keystore.root_key().spec();
        let from_description = self.keystore.root_key_description();
        let params: Vec<(String, String)> = from
            .audit_parameters("From")
            .into_iter()
            .chain(to.audit_parameters("To"))
            .collect();
        // The record of an attempt on `service`, with `failed` its outcome
        // when the policy allows it.
        let attempt = |service: &KmsService, failed: Option<KmsError>| {
            service.run_audited(caller, MOVE_ROOT, MOVE_ROOT_ACTION.bit(), |trail| {
                for (name, value) in &params {
                    trail.param(name, value.clone());
                }
                service.authorize(trail, caller, MOVE_ROOT_ACTION, &["*".into()], None)?;
                failed.map_or(Ok(()), Err)
            })
        };
        let append = |service: &KmsService, record| {
            service
                .audit
                .append(record)
                .map_err(super::authz::audit_failed)
        };
        let (record, allowed) = attempt(&self, None);
        if let Err(refused) = allowed {
            // Recorded under the old root, which stays in force.
            append(&self, record)?;
            return Err(refused.into());
        }
        let extra_policies = self.policy_dirs.get(1).cloned();
        match crate::root::relocate(&self.keystore, to) {
            Ok(new_root) => {
                let keystore = self.keystore.under_root(new_root);
                drop(self);
                // Named where its file is now, not where it was made.
                let to_description = to.describe_in(keystore.dir());
                let moved = KmsService::open_keystore(keystore, extra_policies.as_deref())?;
                let (record, allowed) = attempt(&moved, None);
                append(&moved, record)?;
                allowed?;
                Ok(RootMoved {
                    from: from_description,
                    to: to_description,
                })
            }
            Err(e) => {
                // Switched but not finished: the new root is in force, and
                // opening the keystore finishes the move.
                let service = if crate::root::move_pending(self.keystore.dir()) {
                    let dir = self.keystore.dir().to_path_buf();
                    drop(self);
                    KmsService::open(&dir, extra_policies.as_deref())?
                } else {
                    self
                };
                let failed = KmsError::new(ErrorCode::Internal, e.to_string());
                let (record, _) = attempt(&service, Some(failed));
                append(&service, record)?;
                Err(e.into())
            }
        }
    }
}

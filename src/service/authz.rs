//! Authorization and audit: the policy check of every operation, the
//! audit record it leaves (`Trail`, `audited`), the CheckPolicy operation
//! (`rewrap policy check`), and the policy questions asked outside an
//! operation (`explain`, `check_access`).

use super::{Caller, KmsService, Snapshot};
use crate::api::{CheckPolicyRequest, CheckPolicyResponse, EncryptionContext, Operation};
use crate::audit::{AuditKey, AuditRecord, DECISION_ALLOW, DECISION_DENY, OUTCOME_SUCCESS};
use crate::error::{ErrorCode, KmsError, Result};
use crate::keystore::{KeyRecord, KeyState};
use crate::policy::{AccessRequest, Action, Decision, ReEncryptFacts, IMPLICIT_DENY};

/// What one operation did, for its audit record.
#[derive(Default)]
pub(super) struct Trail {
    pub(super) keys: Vec<AuditKey>,
    pub(super) context: Option<EncryptionContext>,
    pub(super) destination_context: Option<EncryptionContext>,
    /// For ReEncrypt: whether the destination key is the source key (the
    /// `kms:ReEncryptOnSameKey` condition); `context` and
    /// `destination_context` are the two contexts the ReEncrypt conditions see.
    pub(super) same_key: bool,
    /// For ReEncrypt from an RSA key (issue 15): the source ciphertext binds
    /// no context (RSA-OAEP takes none), so wrapping it under the
    /// destination context changes no binding: the ReEncrypt conditions see
    /// the destination context as the source's. The audit record keeps the
    /// source without one.
    pub(super) source_binds_no_context: bool,
    decisions: Vec<Decision>,
    /// Parameters the handler adds to the record (a created access key id,
    /// the count a forced deletion overrode).
    params: std::collections::BTreeMap<String, String>,
    /// The operation's actions from the operations table, as a bitset: a
    /// handler may check only those (asserted in debug builds, so a table
    /// row and its handler cannot drift apart unnoticed in tests).
    declared: u64,
    /// The object the request says the key use is for (its `object`).
    pub(super) object: Option<String>,
}

impl Trail {
    pub(super) fn key(&mut self, arn: String, version: Option<u32>) {
        self.keys.push(AuditKey { arn, version });
    }

    /// Records that the operation needs no policy action, only an
    /// authenticated caller (its table row says `authenticated`), so its
    /// audit record says allowed, and by what.
    pub(super) fn authenticated_only(&mut self) {
        debug_assert!(
            self.declared == 0,
            "the operations table declares policy actions for this operation"
        );
        self.decisions.push(Decision {
            allowed: true,
            decided_by: AUTHENTICATED_ONLY.into(),
            condition: None,
        });
    }

    /// Records a decision made outside the policy engine (a grant's
    /// retiring principal retiring it).
    pub(super) fn decided(&mut self, decision: Decision) {
        self.decisions.push(decision);
    }

    /// What decided the last policy check (a statement, or a grant).
    pub(super) fn last_decided_by(&self) -> Option<&str> {
        self.decisions.last().map(|d| d.decided_by.as_str())
    }

    /// Adds a request parameter to the audit record.
    pub(super) fn param(&mut self, name: &str, value: String) {
        self.params.insert(name.to_string(), value);
    }

    /// Records the key version used of the key recorded last.
    pub(super) fn version(&mut self, version: u32) {
        self.keys.last_mut().expect("a key is recorded").version = Some(version);
    }
}

/// `decided_by` of an operation any authenticated caller may call.
pub(super) const AUTHENTICATED_ONLY: &str = "authenticated caller (no policy action)";

/// The caller's request parameters and the handler's, `None` if both are empty.
fn merge_parameters(
    caller: &Caller,
    mut params: std::collections::BTreeMap<String, String>,
) -> Option<std::collections::BTreeMap<String, String>> {
    if let Some(from_request) = &caller.request_parameters {
        for (k, v) in from_request {
            params.entry(k.clone()).or_insert_with(|| v.clone());
        }
    }
    (!params.is_empty()).then_some(params)
}

/// The error of a key use whose audit record could not be written.
pub(super) fn audit_failed(e: crate::audit::AuditError) -> KmsError {
    KmsError::internal(format!("cannot write the audit trail: {e}"))
}

impl KmsService {
    pub(super) fn authorize(
        &self,
        trail: &mut Trail,
        caller: &Caller,
        action: Action,
        resources: &[String],
        context: Option<&EncryptionContext>,
    ) -> Result<()> {
        self.authorize_on(trail, caller, action, resources, context, None)
    }

    /// [`KmsService::authorize`] on a key that exists: the policy
    /// conditions see its tags, and where no statement decides, one of
    /// its grants may allow (an explicit deny still wins).
    fn authorize_on(
        &self,
        trail: &mut Trail,
        caller: &Caller,
        action: Action,
        resources: &[String],
        context: Option<&EncryptionContext>,
        key: Option<(&Snapshot, &KeyRecord)>,
    ) -> Result<()> {
        debug_assert!(
            trail.declared & action.bit() != 0,
            "{action} is not among the actions the operations table declares"
        );
        let refs: Vec<&str> = resources.iter().map(String::as_str).collect();
        let re_encrypt =
            matches!(action, Action::ReEncryptFrom | Action::ReEncryptTo).then(|| ReEncryptFacts {
                source_context: if trail.source_binds_no_context {
                    trail.destination_context.as_ref()
                } else {
                    trail.context.as_ref()
                },
                destination_context: trail.destination_context.as_ref(),
                same_key: trail.same_key,
            });
        let mut decision = self.policies().evaluate(&AccessRequest {
            principal: &caller.principal,
            action,
            resources: &refs,
            context,
            re_encrypt,
            resource_tags: key.map(|(_, k)| &k.tags),
        });
        if let Some((snap, k)) = key.filter(|_| decision.decided_by == IMPLICIT_DENY) {
            if let Some(granted) = self.grant_allows(snap, caller, k, action, context) {
                decision = granted;
            }
        }
        let allowed = decision.allowed;
        // A refusal says which condition decided, in the error and the audit record.
        let unmet = match decision.condition.take() {
            Some(c) if !allowed => {
                decision.decided_by = format!("{} ({c})", decision.decided_by);
                format!(": {}", decision.decided_by)
            }
            _ => String::new(),
        };
        trail.decisions.push(decision);
        if allowed {
            Ok(())
        } else {
            let target = resources
                .get(1)
                .or(resources.first())
                .map_or("*", String::as_str);
            Err(KmsError::new(
                ErrorCode::AccessDenied,
                format!(
                    "principal '{}' is not authorized to perform {action} on resource {target}{unmet}",
                    caller.principal
                ),
            ))
        }
    }

    /// Looks a key up and checks `action` on it. A key that does not exist is
    /// NotFound only for callers the policy would allow: others get
    /// AccessDenied, so key ids cannot be probed.
    pub(super) fn authorized_key<'s>(
        &self,
        trail: &mut Trail,
        caller: &Caller,
        snap: &'s Snapshot,
        name: &str,
        action: Action,
        context: Option<&EncryptionContext>,
    ) -> Result<&'s KeyRecord> {
        match self.lookup(snap, name) {
            Ok(key) => {
                let names = self.resource_names(snap, key);
                trail.key(names[1].clone(), None);
                self.authorize_on(trail, caller, action, names, context, Some((snap, key)))?;
                Ok(key)
            }
            Err(e) => {
                self.authorize(trail, caller, action, &[name.to_string()], context)?;
                Err(e)
            }
        }
    }

    pub(super) fn usable(&self, key: &KeyRecord) -> Result<()> {
        match super::import::effective_state(key, self.now()) {
            KeyState::Enabled => Ok(()),
            KeyState::Disabled => Err(KmsError::new(
                ErrorCode::Disabled,
                format!("{} is disabled.", self.key_arn(&key.id)),
            )),
            KeyState::PendingDeletion => Err(KmsError::new(
                ErrorCode::InvalidState,
                format!("{} is pending deletion.", self.key_arn(&key.id)),
            )),
            KeyState::PendingImport => Err(KmsError::new(
                ErrorCode::InvalidState,
                format!("{} is pending import.", self.key_arn(&key.id)),
            )),
        }
    }

    /// Runs one operation and writes its audit record, whatever the outcome.
    pub(super) fn audited<R>(
        &self,
        caller: &Caller,
        op: Operation,
        body: impl Fn(&mut Trail) -> Result<R>,
    ) -> Result<R> {
        self.audited_named(caller, op.name(), Action::bits(op.actions()), body)
    }

    pub(super) fn audited_named<R>(
        &self,
        caller: &Caller,
        operation: &str,
        declared: u64,
        body: impl Fn(&mut Trail) -> Result<R>,
    ) -> Result<R> {
        let (mut record, mut result) = self.run_audited(caller, operation, declared, &body);
        if matches!(&result, Err(e) if e.code == ErrorCode::NotFound) && self.refreshed()? {
            // The key (or alias) may be one another process just made, in
            // the moments the snapshot is trusted without a look at the file
            // (FRESHNESS): asked again on the fresh state, so a job that
            // creates a key and uses it through the server at once is never
            // told it does not exist. Only the answer given is recorded.
            (record, result) = self.run_audited(caller, operation, declared, &body);
        }
        self.recorded(record, result)
    }

    /// [`KmsService::audited_named`] for a body that can run only once (it
    /// consumes what it was given): never asked again.
    pub(super) fn audited_named_once<R>(
        &self,
        caller: &Caller,
        operation: &str,
        declared: u64,
        body: impl FnOnce(&mut Trail) -> Result<R>,
    ) -> Result<R> {
        let (record, result) = self.run_audited(caller, operation, declared, body);
        self.recorded(record, result)
    }

    /// [`KmsService::audited`] for a body that can run only once.
    pub(super) fn audited_once<R>(
        &self,
        caller: &Caller,
        op: Operation,
        body: impl FnOnce(&mut Trail) -> Result<R>,
    ) -> Result<R> {
        self.audited_named_once(caller, op.name(), Action::bits(op.actions()), body)
    }

    /// `result`, once its audit record is appended.
    fn recorded<R>(&self, record: AuditRecord, result: Result<R>) -> Result<R> {
        if let Err(e) = self.audit.append(record) {
            // No audit record, no key use: compliance needs every use on record.
            return Err(audit_failed(e));
        }
        result
    }

    /// Runs `body` and builds its audit record; the caller appends it and
    /// must not return the result unless that succeeds.
    pub(super) fn run_audited<R>(
        &self,
        caller: &Caller,
        operation: &str,
        declared: u64,
        body: impl FnOnce(&mut Trail) -> Result<R>,
    ) -> (AuditRecord, Result<R>) {
        let mut trail = Trail {
            declared,
            ..Trail::default()
        };
        let result = body(&mut trail);
        let allowed = !trail.decisions.is_empty() && trail.decisions.iter().all(|d| d.allowed);
        let record = AuditRecord {
            request_id: caller.request_id.clone().unwrap_or_else(|| {
                uuid::Builder::from_random_bytes(rand::random())
                    .into_uuid()
                    .to_string()
            }),
            principal: caller.principal.clone(),
            operation: operation.into(),
            keys: trail.keys,
            encryption_context: trail.context,
            destination_encryption_context: trail.destination_context,
            decision: if allowed {
                DECISION_ALLOW
            } else {
                DECISION_DENY
            }
            .into(),
            decided_by: trail
                .decisions
                .iter()
                .map(|d| d.decided_by.as_str())
                .collect::<Vec<_>>()
                .join("; "),
            outcome: match &result {
                Ok(_) => OUTCOME_SUCCESS.into(),
                Err(e) => e.code.as_str().into(),
            },
            source_ip: caller.source_ip.clone(),
            user_agent: caller.user_agent.clone(),
            access_key_id: caller.access_key_id.clone(),
            request_parameters: merge_parameters(caller, trail.params),
            object: trail.object.or_else(|| caller.object.clone()),
            ..Default::default()
        };
        (record, result)
    }

    /// CheckPolicy: the caller (with `rewrap:CheckPolicy`, in the audit and
    /// administer groups) asks how the policies decide a request of any
    /// principal, without making it.
    pub(super) fn check_policy(
        &self,
        caller: &Caller,
        r: &CheckPolicyRequest,
    ) -> Result<CheckPolicyResponse> {
        self.audited(caller, Operation::CheckPolicy, |trail| {
            self.authorize(trail, caller, Action::CheckPolicy, &["*".into()], None)?;
            let decision = self.explain(r)?;
            Ok(CheckPolicyResponse {
                decision: if decision.allowed { "allow" } else { "deny" }.into(),
                decided_by: decision.decided_by,
                condition: decision.condition,
            })
        })
    }

    /// Explains the decision for `r.principal_name` doing `r.action` on
    /// `r.key_id` (any name of it; `None` for account-level actions),
    /// without doing it and without an audit record: callers outside an
    /// operation must check the caller's right to ask first.
    pub fn explain(&self, r: &CheckPolicyRequest) -> Result<Decision> {
        let Some(action) = Action::from_name(&r.action) else {
            return Err(KmsError::validation(format!(
                "unknown action {:?}",
                r.action
            )));
        };
        let snap = self.snapshot()?;
        let names = |name: Option<&str>| -> Result<(Vec<String>, Option<uuid::Uuid>)> {
            Ok(match name {
                Some(name) => {
                    let key = self.lookup(&snap, name)?;
                    (self.resource_names(&snap, key).to_vec(), Some(key.id))
                }
                None => (vec!["*".to_string()], None),
            })
        };
        let tags_of =
            |id: Option<uuid::Uuid>| id.and_then(|id| snap.state.keys.get(&id)).map(|k| &k.tags);
        let (source, source_id) = names(r.key_id.as_deref())?;
        let (destination, destination_id) = match &r.destination_key_id {
            Some(d) => names(Some(d))?,
            None => (source.clone(), source_id),
        };
        let source_context = r.encryption_context.as_ref();
        let destination_context = r.destination_encryption_context.as_ref().or(source_context);
        let (resources, context, re_encrypt, key_id) = match action {
            Action::ReEncryptFrom | Action::ReEncryptTo => {
                let facts = ReEncryptFacts {
                    source_context,
                    destination_context,
                    same_key: source_id.is_some() && source_id == destination_id,
                };
                if action == Action::ReEncryptFrom {
                    (&source, source_context, Some(facts), source_id)
                } else {
                    (
                        &destination,
                        destination_context,
                        Some(facts),
                        destination_id,
                    )
                }
            }
            _ => (&source, source_context, None, source_id),
        };
        let refs: Vec<&str> = resources.iter().map(String::as_str).collect();
        Ok(self.policies().evaluate(&AccessRequest {
            principal: &r.principal_name,
            action,
            resources: &refs,
            context,
            re_encrypt,
            resource_tags: tags_of(key_id),
        }))
    }

    /// Checks an account-level action (such as `rewrap:ReadAuditTrail`) for
    /// `principal`, and records the attempt in the audit trail.
    pub fn check_access(&self, principal: &str, action: Action) -> Result<()> {
        self.with_access(principal, action, || ())
    }

    /// Checks an account-level action for `principal`, runs `work` if it is
    /// allowed, and only then records the attempt: `audit verify` reads the
    /// trail as it found it, before its own record is appended.
    pub fn with_access<R>(
        &self,
        principal: &str,
        action: Action,
        work: impl FnOnce() -> R,
    ) -> Result<R> {
        let caller = Caller {
            principal: principal.to_string(),
            ..Caller::default()
        };
        let name = action.name();
        let name = name.rsplit(':').next().unwrap_or(name);
        self.audited_named_once(&caller, name, action.bit(), |trail| {
            self.authorize(trail, &caller, action, &["*".into()], None)?;
            Ok(work())
        })
    }
}

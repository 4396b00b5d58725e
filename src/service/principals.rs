//! Principals and their access keys: CreatePrincipal, DeletePrincipal,
//! CreateAccessKey, DeleteAccessKey, ListPrincipals, authentication, and
//! the rules that guard them: no principal hands out or takes away more
//! rights than it holds, only the owner removes the owner, and the keystore
//! always keeps a principal with every right.

use super::{Caller, KmsService, OWNER};
use crate::api::{
    AccessKeyResponse, CallerIdentityResponse, DeleteAccessKeyRequest, Empty,
    ListPrincipalsResponse, Operation, PrincipalEntry, PrincipalRequest,
};
use crate::error::{ErrorCode, KmsError, Result};
use crate::keystore::{AccessKeyRecord, PrincipalRecord, State};
use crate::operation::Action;
use crate::secret::Secret;

pub(super) fn random_token(len: usize, alphabet: &[u8]) -> String {
    use rand::Rng;
    let mut rng = rand::rngs::OsRng;
    (0..len)
        .map(|_| alphabet[rng.gen_range(0..alphabet.len())] as char)
        .collect()
}

pub(super) fn new_access_key(now: f64) -> AccessKeyRecord {
    const UPPER: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    const SECRET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    AccessKeyRecord {
        id: format!("RWAK{}", random_token(16, UPPER)),
        secret: Secret::new(random_token(40, SECRET).into_bytes()),
        created: now,
    }
}

/// What CreatePrincipal and CreateAccessKey return: the new key, shown once.
pub(super) fn credentials(principal: &str, key: &AccessKeyRecord) -> AccessKeyResponse {
    AccessKeyResponse {
        principal_name: principal.into(),
        access_key_id: key.id.clone(),
        secret_access_key: key.secret.clone(),
    }
}

fn no_such_principal(name: &str) -> KmsError {
    KmsError::not_found(format!("principal {name} does not exist"))
}

fn check_principal_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.@-+=,".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(KmsError::validation(format!(
            "principal name {name:?} is invalid: use 1 to 64 letters, digits or _.@-+=,"
        )))
    }
}

impl KmsService {
    /// Checks an access key id and secret; returns the principal's name.
    /// Comparison is constant-time.
    pub fn authenticate(&self, access_key_id: &str, secret: &[u8]) -> Result<String> {
        use subtle::ConstantTimeEq;
        let (principal, expected) = self.secret_for_access_key(access_key_id)?;
        if bool::from(expected.expose().ct_eq(secret)) {
            Ok(principal)
        } else {
            Err(KmsError::new(
                ErrorCode::UnrecognizedClient,
                "the security token included in the request is invalid (wrong secret access key)",
            ))
        }
    }

    /// The principal and secret of an access key, for signature checks.
    pub(crate) fn secret_for_access_key(&self, access_key_id: &str) -> Result<(String, Secret)> {
        let snap = self.snapshot()?;
        let unknown = || {
            KmsError::new(
                ErrorCode::UnrecognizedClient,
                "the security token included in the request is invalid (unknown access key id)",
            )
        };
        let principal = snap.access_keys.get(access_key_id).ok_or_else(unknown)?;
        let secret = snap.state.principals[principal]
            .access_keys
            .iter()
            .find(|k| k.id == access_key_id)
            .ok_or_else(unknown)?
            .secret
            .clone();
        Ok((principal.clone(), secret))
    }

    /// GetCallerIdentity: who the caller is. Any authenticated caller may
    /// ask (no policy action, see the operations table); audited.
    pub(super) fn get_caller_identity(
        &self,
        caller: &Caller,
        _r: &Empty,
    ) -> Result<CallerIdentityResponse> {
        self.audited(caller, Operation::GetCallerIdentity, |trail| {
            trail.authenticated_only();
            let account = self.config().account.clone();
            Ok(CallerIdentityResponse {
                arn: format!("arn:aws:iam::{account}:user/{}", caller.principal),
                principal: caller.principal.clone(),
                account,
            })
        })
    }

    fn principal_op<R: 'static>(
        &self,
        caller: &Caller,
        op: Operation,
        name: &str,
        change: impl FnOnce(&mut State, f64) -> Result<R>,
    ) -> Result<R> {
        self.audited_once(caller, op, |trail| {
            let resources = vec![format!("principal/{name}"), "*".into()];
            self.authorize(trail, caller, op.actions()[0], &resources, None)?;
            check_principal_name(name)?;
            let out = self.mutate(change)?;
            // The audit record names the access key an operation created.
            if let Some(r) = (&out as &dyn std::any::Any).downcast_ref::<AccessKeyResponse>() {
                trail.param("AccessKeyId", r.access_key_id.clone());
            }
            Ok(out)
        })
    }

    /// Credentials for `target` handed to `caller` must not give the caller
    /// rights it does not already hold: no principal grants itself more
    /// than a policy file gives it.
    fn no_escalation(&self, caller: &Caller, target: &str) -> Result<()> {
        if caller.principal == target || self.policies().covers(&caller.principal, target) {
            return Ok(());
        }
        Err(KmsError::new(
            ErrorCode::AccessDenied,
            format!(
                "principal '{}' may not obtain credentials of '{target}': the policies allow \
                 '{target}' actions that '{}' does not hold on every key",
                caller.principal, caller.principal
            ),
        ))
    }

    pub(super) fn create_principal(
        &self,
        caller: &Caller,
        r: &PrincipalRequest,
    ) -> Result<AccessKeyResponse> {
        let name = r.principal_name.clone();
        self.principal_op(caller, Operation::CreatePrincipal, &name, |state, now| {
            self.no_escalation(caller, &name)?;
            if state.principals.contains_key(&name) {
                return Err(KmsError::new(
                    ErrorCode::AlreadyExists,
                    format!("principal {name} already exists"),
                ));
            }
            let key = new_access_key(now);
            let response = credentials(&name, &key);
            state.principals.insert(
                name.clone(),
                PrincipalRecord {
                    created: now,
                    access_keys: vec![key],
                },
            );
            Ok(response)
        })
    }

    /// Removing `target` or one of its access keys: the same coverage as
    /// creating it (the caller must hold every right `target` could get,
    /// or be `target`), and only the owner may remove the owner.
    fn may_remove(&self, caller: &Caller, target: &str) -> Result<()> {
        let refuse = |why: String| {
            Err(KmsError::new(
                ErrorCode::AccessDenied,
                format!(
                    "principal '{}' may not delete '{target}' or its access keys: {why}",
                    caller.principal
                ),
            ))
        };
        if target == OWNER && caller.principal != OWNER {
            return refuse("only the owner may".into());
        }
        if caller.principal == target || self.policies().covers(&caller.principal, target) {
            return Ok(());
        }
        refuse(format!(
            "the policies allow '{target}' actions that '{}' does not hold on every key",
            caller.principal
        ))
    }

    /// Whether some principal holds every right and can still sign in.
    fn has_full_principal(&self, state: &State) -> bool {
        let policies = self.policies();
        state
            .principals
            .iter()
            .any(|(name, p)| !p.access_keys.is_empty() && policies.holds_every_right(name))
    }

    /// The keystore always keeps a principal that holds every right and can
    /// still sign in: if it had one before a removal, `after` must too.
    fn keeps_a_full_principal(&self, had: bool, after: &State, target: &str) -> Result<()> {
        if !had || self.has_full_principal(after) {
            return Ok(());
        }
        Err(KmsError::new(
            ErrorCode::InvalidState,
            format!(
                "no principal with every right and an access key would remain ({target} is \
                 the last): create another first"
            ),
        ))
    }

    pub(super) fn delete_principal(&self, caller: &Caller, r: &PrincipalRequest) -> Result<Empty> {
        let name = r.principal_name.clone();
        self.principal_op(caller, Operation::DeletePrincipal, &name, |state, _| {
            // The owner may hand over to another principal with every right
            // and go; any other principal deleting itself is a mistake.
            if name == caller.principal && name != OWNER {
                return Err(KmsError::validation("a principal cannot delete itself"));
            }
            self.may_remove(caller, &name)?;
            let had = self.has_full_principal(state);
            state
                .principals
                .remove(&name)
                .ok_or_else(|| no_such_principal(&name))?;
            self.keeps_a_full_principal(had, state, &name)?;
            Ok(Empty {})
        })
    }

    pub(super) fn create_access_key(
        &self,
        caller: &Caller,
        r: &PrincipalRequest,
    ) -> Result<AccessKeyResponse> {
        let name = r.principal_name.clone();
        self.principal_op(caller, Operation::CreateAccessKey, &name, |state, now| {
            self.no_escalation(caller, &name)?;
            let p = state
                .principals
                .get_mut(&name)
                .ok_or_else(|| no_such_principal(&name))?;
            if p.access_keys.len() >= 2 {
                return Err(KmsError::new(
                    ErrorCode::LimitExceeded,
                    format!("principal {name} already has 2 access keys; delete one first"),
                ));
            }
            let key = new_access_key(now);
            let response = credentials(&name, &key);
            p.access_keys.push(key);
            Ok(response)
        })
    }

    pub(super) fn delete_access_key(
        &self,
        caller: &Caller,
        r: &DeleteAccessKeyRequest,
    ) -> Result<Empty> {
        let name = r.principal_name.clone();
        self.principal_op(caller, Operation::DeleteAccessKey, &name, |state, _| {
            self.may_remove(caller, &name)?;
            let had = self.has_full_principal(state);
            let p = state
                .principals
                .get_mut(&name)
                .ok_or_else(|| no_such_principal(&name))?;
            let before = p.access_keys.len();
            p.access_keys.retain(|k| k.id != r.access_key_id);
            if p.access_keys.len() == before {
                return Err(KmsError::not_found(format!(
                    "access key {} of principal {name} does not exist",
                    r.access_key_id
                )));
            }
            self.keeps_a_full_principal(had, state, &name)?;
            Ok(Empty {})
        })
    }

    pub(super) fn list_principals(
        &self,
        caller: &Caller,
        _: &Empty,
    ) -> Result<ListPrincipalsResponse> {
        self.audited(caller, Operation::ListPrincipals, |trail| {
            self.authorize(trail, caller, Action::ListPrincipals, &["*".into()], None)?;
            let snap = self.snapshot()?;
            Ok(ListPrincipalsResponse {
                principals: snap
                    .state
                    .principals
                    .iter()
                    .map(|(name, p)| PrincipalEntry {
                        principal_name: name.clone(),
                        access_key_ids: p.access_keys.iter().map(|k| k.id.clone()).collect(),
                        creation_date: p.created,
                    })
                    .collect(),
            })
        })
    }
}

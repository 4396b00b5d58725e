//! Grants: CreateGrant, ListGrants, ListRetirableGrants, RetireGrant,
//! RevokeGrant, and what a grant allows.
//!
//! A grant gives one principal (the grantee) some operations on one key,
//! optionally only under an encryption context (`Constraints`, which bind
//! the cryptographic operations only, as in AWS). It is kept
//! in the sealed keystore (`State::grants`) and every change is audited.
//!
//! How a grant combines with the policies ([`KmsService::grant_allows`]):
//! a grant adds an allow where no policy statement decides. An explicit
//! deny in a policy still wins over a grant, as in AWS. A grantee whose
//! grant includes `CreateGrant` may hand on only operations of that grant,
//! under the same constraints, so a grant cannot grow by being passed on.

use super::authz::Trail;
use super::principals::random_token;
use super::validation;
use super::{page, Caller, KmsService, Snapshot};
use crate::api::{
    CreateGrantRequest, CreateGrantResponse, Empty, EncryptionContext, GrantConstraints,
    GrantListEntry, ListGrantsRequest, ListGrantsResponse, ListRetirableGrantsRequest, Operation,
    RetireGrantRequest, RevokeGrantRequest,
};
use crate::error::{ErrorCode, KmsError, Result};
use crate::keystore::{GrantRecord, KeyRecord};
use crate::operation::Action;
use crate::policy::{Decision, CRYPTOGRAPHIC};

/// The grant operations rewrap's keys support, by AWS name.
pub(super) const GRANT_OPERATIONS: &[&str] = &[
    "Decrypt",
    "Encrypt",
    "GenerateDataKey",
    "GenerateDataKeyWithoutPlaintext",
    "ReEncryptFrom",
    "ReEncryptTo",
    "DescribeKey",
    "CreateGrant",
    "RetireGrant",
];

/// How `decided_by` names a grant that allowed a request.
const GRANT_PREFIX: &str = "grant ";

/// Whether `context` meets a grant's constraints.
fn constraints_hold(c: Option<&GrantConstraints>, context: Option<&EncryptionContext>) -> bool {
    let empty = EncryptionContext::new();
    let context = context.unwrap_or(&empty);
    let Some(c) = c else { return true };
    if let Some(equals) = &c.encryption_context_equals {
        if equals != context {
            return false;
        }
    }
    if let Some(subset) = &c.encryption_context_subset {
        if subset.iter().any(|(k, v)| context.get(k) != Some(v)) {
            return false;
        }
    }
    true
}

/// A grant's constraints as the audit trail and the access report show them.
pub(super) fn describe_constraints(c: &GrantConstraints) -> String {
    let mut parts = Vec::new();
    if let Some(e) = &c.encryption_context_equals {
        parts.push(format!("EncryptionContextEquals {e:?}"));
    }
    if let Some(s) = &c.encryption_context_subset {
        parts.push(format!("EncryptionContextSubset {s:?}"));
    }
    parts.join(", ")
}

fn check_grant_id(id: &str) -> Result<()> {
    validation::required("grantId", id, 128)?;
    if id.len() != 64 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(KmsError::new(
            ErrorCode::InvalidGrantId,
            format!("Grant ID {id} is not valid"),
        ));
    }
    Ok(())
}

fn check_operations(ops: &[String]) -> Result<()> {
    if ops.is_empty() {
        return Err(validation::too_short("operations", "[]", 1));
    }
    if let Some(bad) = ops.iter().find(|o| !GRANT_OPERATIONS.contains(&o.as_str())) {
        return Err(KmsError::validation(format!(
            "1 validation error detected: Value '[{bad}]' at 'operations' failed to satisfy \
             constraint: Member must satisfy constraint: [Member must satisfy enum value set: \
             [{}]]",
            GRANT_OPERATIONS.join(", ")
        )));
    }
    Ok(())
}

fn check_name(name: &Option<String>) -> Result<()> {
    let Some(name) = name else { return Ok(()) };
    validation::required("name", name, 256)?;
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b":/_-".contains(&b))
    {
        return Err(KmsError::validation(format!(
            "1 validation error detected: Value '{name}' at 'name' failed to satisfy constraint: \
             Member must satisfy regular expression pattern: ^[a-zA-Z0-9:/_-]+$"
        )));
    }
    Ok(())
}

/// The answer to a grant token that names no grant in force (unknown,
/// malformed, or its grant retired or revoked), worded as AWS words it.
fn invalid_grant_token() -> KmsError {
    KmsError::new(
        ErrorCode::InvalidGrantToken,
        "The request was rejected because the specified grant token is not valid.",
    )
}

impl KmsService {
    /// `GrantTokens` of a request: at most [`super::MAX_GRANT_TOKENS`], each
    /// naming a grant in force. Grants are immediately consistent here, so a
    /// token adds no right (the grant itself allows); it only has to be
    /// valid, as AWS refuses a request with a token it cannot honour.
    pub(super) fn check_grant_tokens(&self, tokens: &Option<Vec<String>>) -> Result<()> {
        let Some(tokens) = tokens.as_deref().filter(|t| !t.is_empty()) else {
            return Ok(());
        };
        if tokens.len() > super::MAX_GRANT_TOKENS {
            return Err(KmsError::new(
                ErrorCode::LimitExceeded,
                format!(
                    "{} grant tokens given; at most {} are allowed",
                    tokens.len(),
                    super::MAX_GRANT_TOKENS
                ),
            ));
        }
        // AWS words a list member's constraint on the list; a token is a
        // bearer credential, so its value is not repeated.
        if let Some(bad) = tokens.iter().find(|t| t.is_empty() || t.len() > 8192) {
            let (word, bound) = if bad.is_empty() {
                ("greater", 1)
            } else {
                ("less", 8192)
            };
            return Err(KmsError::validation(format!(
                "1 validation error detected: Value at 'grantTokens' failed to satisfy \
                 constraint: Member must satisfy constraint: [Member must have length {word} \
                 than or equal to {bound}]"
            )));
        }
        let snap = self.snapshot()?;
        let in_force = |token: &String| {
            snap.state
                .grants
                .values()
                .any(|g| g.tokens.iter().any(|t| t == token))
        };
        if tokens.iter().all(in_force) {
            Ok(())
        } else {
            Err(invalid_grant_token())
        }
    }

    /// A principal named by name or by the IAM user ARN GetCallerIdentity
    /// shows for it.
    fn principal_name<'a>(&self, given: &'a str) -> &'a str {
        let prefix = format!("arn:aws:iam::{}:user/", self.config().account);
        given.strip_prefix(prefix.as_str()).unwrap_or(given)
    }

    /// The decision of a grant of `key` that allows `caller` `action` under
    /// `context`, if there is one (called where no policy statement decided).
    pub(super) fn grant_allows(
        &self,
        snap: &Snapshot,
        caller: &Caller,
        key: &KeyRecord,
        action: Action,
        context: Option<&EncryptionContext>,
    ) -> Option<Decision> {
        let name = action.name().strip_prefix("kms:")?;
        // As in AWS, constraints bind only the operations that take an
        // encryption context (not DescribeKey, CreateGrant, RetireGrant).
        let constrained = CRYPTOGRAPHIC.contains(&action);
        let (id, g) = snap.state.grants.iter().find(|(_, g)| {
            g.key == key.id
                && g.grantee == caller.principal
                && g.operations.iter().any(|o| o == name)
                && (!constrained || constraints_hold(g.constraints.as_ref(), context))
        })?;
        Some(Decision {
            allowed: true,
            decided_by: format!("{GRANT_PREFIX}{id}"),
            condition: g.constraints.as_ref().map(describe_constraints),
        })
    }

    fn grant_entry(&self, id: &str, g: &GrantRecord) -> GrantListEntry {
        GrantListEntry {
            key_id: self.key_arn(&g.key),
            grant_id: id.to_string(),
            name: g.name.clone(),
            creation_date: g.created,
            grantee_principal: g.grantee.clone(),
            retiring_principal: g.retiring.clone(),
            issuing_account: format!("arn:aws:iam::{}:root", self.config().account),
            operations: g.operations.clone(),
            constraints: g.constraints.clone(),
        }
    }

    /// When CreateGrant was allowed by a grant (not a policy), the new grant
    /// may hold only that grant's operations, under its constraints.
    fn no_wider_than_parent(
        &self,
        snap: &Snapshot,
        trail: &Trail,
        new: &GrantRecord,
    ) -> Result<()> {
        let Some(parent) = trail
            .last_decided_by()
            .and_then(|d| d.strip_prefix(GRANT_PREFIX))
            .and_then(|id| snap.state.grants.get(id))
        else {
            return Ok(());
        };
        let wider_ops = new
            .operations
            .iter()
            .any(|o| !parent.operations.contains(o));
        let looser = parent.constraints.is_some() && parent.constraints != new.constraints;
        if wider_ops || looser {
            return Err(KmsError::new(
                ErrorCode::AccessDenied,
                "a grant can hand on only its own operations, under its own constraints",
            ));
        }
        Ok(())
    }

    pub(super) fn create_grant(
        &self,
        caller: &Caller,
        r: &CreateGrantRequest,
    ) -> Result<CreateGrantResponse> {
        self.audited(caller, Operation::CreateGrant, |trail| {
            validation::key_id("keyId", &r.key_id)?;
            validation::required("granteePrincipal", &r.grantee_principal, 256)?;
            check_operations(&r.operations)?;
            check_name(&r.name)?;
            self.check_grant_tokens(&r.grant_tokens)?;
            if let Some(c) = &r.constraints {
                if c.encryption_context_equals.is_some() && c.encryption_context_subset.is_some() {
                    return Err(KmsError::validation(
                        "Constraints may have EncryptionContextEquals or EncryptionContextSubset, not both",
                    ));
                }
            }
            let grantee = self.principal_name(&r.grantee_principal).to_string();
            let retiring = r
                .retiring_principal
                .as_deref()
                .map(|p| self.principal_name(p).to_string());
            trail.param("GranteePrincipal", grantee.clone());
            let snap = self.snapshot()?;
            let key =
                self.authorized_key(trail, caller, &snap, &r.key_id, Action::CreateGrant, None)?;
            self.not_pending(key)?;
            if !snap.state.principals.contains_key(&grantee) {
                return Err(KmsError::validation(format!(
                    "GranteePrincipal '{grantee}' is not a principal of this KMS"
                )));
            }
            let new = GrantRecord {
                key: key.id,
                grantee,
                retiring,
                operations: r.operations.clone(),
                constraints: r.constraints.clone(),
                name: r.name.clone(),
                created: self.now(),
                tokens: Vec::new(),
            };
            self.no_wider_than_parent(&snap, trail, &new)?;
            if r.dry_run == Some(true) {
                trail.param("DryRun", "true".into());
                return Err(dry_run());
            }
            let token = format!("{TOKEN_PREFIX}{}", random_token(64, TOKEN_ALPHABET));
            let id = self.mutate(|state, now| {
                // Name makes CreateGrant idempotent: the same request again
                // returns the grant it made, with a new token.
                let same = |g: &GrantRecord| {
                    new.name.is_some()
                        && GrantRecord {
                            created: g.created,
                            tokens: g.tokens.clone(),
                            ..new.clone()
                        } == *g
                };
                let existing = state.grants.iter().find(|(_, g)| same(g));
                let id = existing.map_or_else(
                    || hex::encode(rand::random::<[u8; 32]>()),
                    |(id, _)| id.clone(),
                );
                let grant = state.grants.entry(id.clone()).or_insert_with(|| GrantRecord {
                    created: now,
                    ..new.clone()
                });
                grant.tokens.push(token.clone());
                Ok(id)
            })?;
            trail.param("GrantId", id.clone());
            Ok(CreateGrantResponse {
                grant_token: token,
                grant_id: id,
            })
        })
    }

    pub(super) fn list_grants(
        &self,
        caller: &Caller,
        r: &ListGrantsRequest,
    ) -> Result<ListGrantsResponse> {
        self.audited(caller, Operation::ListGrants, |trail| {
            validation::key_id("keyId", &r.key_id)?;
            if let Some(id) = &r.grant_id {
                check_grant_id(id)?;
            }
            let snap = self.snapshot()?;
            let key =
                self.authorized_key(trail, caller, &snap, &r.key_id, Action::ListGrants, None)?;
            let grantee = r
                .grantee_principal
                .as_deref()
                .map(|p| self.principal_name(p));
            let all: Vec<GrantListEntry> = snap
                .state
                .grants
                .iter()
                .filter(|(id, g)| {
                    g.key == key.id
                        && r.grant_id.as_ref().is_none_or(|want| want == *id)
                        && grantee.is_none_or(|p| p == g.grantee)
                })
                .map(|(id, g)| self.grant_entry(id, g))
                .collect();
            grant_page(&all, r.limit, &r.marker)
        })
    }

    pub(super) fn list_retirable_grants(
        &self,
        caller: &Caller,
        r: &ListRetirableGrantsRequest,
    ) -> Result<ListGrantsResponse> {
        self.audited(caller, Operation::ListRetirableGrants, |trail| {
            validation::required("retiringPrincipal", &r.retiring_principal, 256)?;
            let action = Action::ListRetirableGrants;
            self.authorize(trail, caller, action, &["*".into()], None)?;
            let snap = self.snapshot()?;
            let retiring = self.principal_name(&r.retiring_principal);
            let all: Vec<GrantListEntry> = snap
                .state
                .grants
                .iter()
                .filter(|(_, g)| g.retiring.as_deref() == Some(retiring))
                .map(|(id, g)| self.grant_entry(id, g))
                .collect();
            grant_page(&all, r.limit, &r.marker)
        })
    }

    /// RetireGrant: by token, or by key and grant id. The grant's retiring
    /// principal may retire it, and its grantee if the grant includes
    /// `RetireGrant`; anyone else needs `kms:RetireGrant` on the key.
    pub(super) fn retire_grant(&self, caller: &Caller, r: &RetireGrantRequest) -> Result<Empty> {
        self.audited(caller, Operation::RetireGrant, |trail| {
            let snap = self.snapshot()?;
            let (id, grant) = match (&r.grant_token, &r.key_id, &r.grant_id) {
                (Some(token), None, None) => {
                    validation::required("grantToken", token, 8192)?;
                    snap.state
                        .grants
                        .iter()
                        .find(|(_, g)| g.tokens.iter().any(|t| t == token))
                        .ok_or_else(invalid_grant_token)?
                }
                (None, Some(key_id), Some(grant_id)) => {
                    validation::key_id("keyId", key_id)?;
                    check_grant_id(grant_id)?;
                    let key = self.lookup(&snap, key_id)?;
                    snap.state
                        .grants
                        .get_key_value(grant_id)
                        .filter(|(_, g)| g.key == key.id)
                        .ok_or_else(|| grant_not_found(grant_id))?
                }
                _ => {
                    return Err(KmsError::validation(
                        "give GrantToken, or KeyId and GrantId",
                    ))
                }
            };
            let key = snap
                .state
                .keys
                .get(&grant.key)
                .ok_or_else(|| self.key_not_found(&grant.key))?;
            let own = grant.retiring.as_deref() == Some(caller.principal.as_str())
                || (grant.grantee == caller.principal
                    && grant.operations.iter().any(|o| o == "RetireGrant"));
            trail.param("GrantId", id.clone());
            if own {
                trail.key(self.key_arn(&key.id), None);
                trail.decided(Decision {
                    allowed: true,
                    decided_by: format!("{GRANT_PREFIX}{id}: its retiring principal or grantee"),
                    condition: None,
                });
            } else {
                let name = key.id.to_string();
                self.authorized_key(trail, caller, &snap, &name, Action::RetireGrant, None)?;
            }
            self.remove_grant(trail, r.dry_run, id)
        })
    }

    pub(super) fn revoke_grant(&self, caller: &Caller, r: &RevokeGrantRequest) -> Result<Empty> {
        self.audited(caller, Operation::RevokeGrant, |trail| {
            validation::key_id("keyId", &r.key_id)?;
            check_grant_id(&r.grant_id)?;
            trail.param("GrantId", r.grant_id.clone());
            let snap = self.snapshot()?;
            let key =
                self.authorized_key(trail, caller, &snap, &r.key_id, Action::RevokeGrant, None)?;
            if snap
                .state
                .grants
                .get(&r.grant_id)
                .is_none_or(|g| g.key != key.id)
            {
                return Err(grant_not_found(&r.grant_id));
            }
            self.remove_grant(trail, r.dry_run, &r.grant_id)
        })
    }

    fn remove_grant(&self, trail: &mut Trail, dry: Option<bool>, id: &str) -> Result<Empty> {
        if dry == Some(true) {
            trail.param("DryRun", "true".into());
            return Err(dry_run());
        }
        self.mutate(|state, _| {
            state.grants.remove(id).ok_or_else(|| grant_not_found(id))?;
            Ok(Empty {})
        })
    }
}

const TOKEN_ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
/// The start of every grant token: a token is passed on command lines
/// (`--grant-tokens T`), and one that began with `-` (one in 64 did) was
/// taken for an option by the AWS CLI.
const TOKEN_PREFIX: &str = "RWGT";

/// One page of ListGrants or ListRetirableGrants.
fn grant_page(
    all: &[GrantListEntry],
    limit: Option<u32>,
    marker: &Option<String>,
) -> Result<ListGrantsResponse> {
    let (grants, next_marker) = page(all, limit, marker)?;
    Ok(ListGrantsResponse {
        grants,
        truncated: next_marker.is_some(),
        next_marker,
    })
}

fn grant_not_found(id: &str) -> KmsError {
    KmsError::not_found(format!("Grant ID {id} not found"))
}

/// The answer to a request with `DryRun` that would have succeeded.
pub(super) fn dry_run() -> KmsError {
    KmsError::new(
        ErrorCode::DryRunOperation,
        "The request would have succeeded, but the DryRun option is set.",
    )
}

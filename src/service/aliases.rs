//! Aliases: CreateAlias, UpdateAlias, DeleteAlias, ListAliases, the rules
//! for alias names, and the rule that moving an alias never widens anyone's
//! cryptographic access beyond the mover's own (issue 11 finding 3).

use super::names::KeyName;
use super::{page, Caller, KmsService};
use crate::api::{
    AliasListEntry, AliasRequest, DeleteAliasRequest, Empty, ListAliasesResponse, ListRequest,
    Operation,
};
use crate::error::{ErrorCode, KmsError, Result};
use crate::keystore::{AliasRecord, State};
use crate::operation::Action;
use crate::policy::Effect;
use uuid::Uuid;

fn check_alias_name(name: &str) -> Result<()> {
    let invalid = |why: &str| {
        KmsError::new(
            ErrorCode::InvalidAliasName,
            format!("alias name {name:?} {why}"),
        )
    };
    // The wire constraints (length 1 to 256, AWS's pattern) are
    // ValidationException, as AWS's front end answers them.
    super::validation::required("aliasName", name, 256)?;
    let well_formed = name.strip_prefix("alias/").is_some_and(|rest| {
        !rest.is_empty()
            && rest
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"/_-".contains(&b))
    });
    if !well_formed {
        return Err(super::validation::pattern(
            "aliasName",
            name,
            "^alias/[a-zA-Z0-9/_-]+$",
        ));
    }
    if name.starts_with("alias/aws/") {
        return Err(invalid(
            "is reserved: alias/aws/ names belong to AWS managed keys",
        ));
    }
    Ok(())
}

impl KmsService {
    /// Every policy name of key `id` in `state`: key id, key ARN, and each
    /// alias name and alias ARN (as `Snapshot` lists them).
    fn names_in(&self, state: &State, id: Uuid) -> Vec<String> {
        let mut names = vec![id.to_string(), self.key_arn(&id)];
        for (name, a) in &state.aliases {
            if a.target == id {
                names.push(name.clone());
                names.push(self.alias_arn(name));
            }
        }
        names
    }

    /// Alias names are policy resources, so moving an alias moves what
    /// statements naming it allow or deny. The move is refused when it would
    /// widen any principal's cryptographic access beyond what the caller
    /// holds itself on every key (`PolicySet::alias_move_widens`): an
    /// administrator with no cryptographic rights can never hand them out,
    /// nor lift a deny, by creating, moving or deleting an alias.
    fn alias_move_allowed(
        &self,
        caller: &Caller,
        state: &State,
        alias: &str,
        from: Option<Uuid>,
        to: Option<Uuid>,
    ) -> Result<()> {
        if from == to {
            return Ok(());
        }
        let alias_names = [alias.to_string(), self.alias_arn(alias)];
        let policies = self.policies();
        for (id, gains) in [(from, false), (to, true)] {
            let Some(id) = id else { continue };
            let before = self.names_in(state, id);
            let mut after = before.clone();
            if gains {
                after.extend(alias_names.iter().cloned());
            } else {
                after.retain(|n| !alias_names.contains(n));
            }
            let before: Vec<&str> = before.iter().map(String::as_str).collect();
            let after: Vec<&str> = after.iter().map(String::as_str).collect();
            if let Some(w) = policies.alias_move_widens(&caller.principal, &before, &after) {
                let (verb, effect) = match w.effect {
                    Effect::Allow => ("move {alias} onto", "allow"),
                    Effect::Deny => ("take {alias} off", "no longer deny"),
                };
                let verb = verb.replace("{alias}", alias);
                return Err(KmsError::new(
                    ErrorCode::AccessDenied,
                    format!(
                        "principal '{c}' may not {verb} {key}: statement {st} would then {effect} \
                         {action} on it, which '{c}' does not hold on every key",
                        c = caller.principal,
                        key = self.key_arn(&id),
                        st = w.statement,
                        action = w.action,
                    ),
                ));
            }
        }
        Ok(())
    }

    pub(super) fn create_alias(&self, caller: &Caller, r: &AliasRequest) -> Result<Empty> {
        self.write_alias(caller, r, Operation::CreateAlias)
    }

    pub(super) fn update_alias(&self, caller: &Caller, r: &AliasRequest) -> Result<Empty> {
        self.write_alias(caller, r, Operation::UpdateAlias)
    }

    /// CreateAlias and UpdateAlias: `op`'s one action on the target key and
    /// on the alias.
    fn write_alias(&self, caller: &Caller, r: &AliasRequest, op: Operation) -> Result<Empty> {
        let create = op == Operation::CreateAlias;
        let action = op.actions()[0];
        self.audited(caller, op, |trail| {
            check_alias_name(&r.alias_name)?;
            super::validation::key_id("targetKeyId", &r.target_key_id)?;
            if self
                .parse_key_name(&r.target_key_id)
                .is_ok_and(|n| matches!(n, KeyName::Alias(_)))
            {
                return Err(KmsError::validation(
                    "TargetKeyId must be a key id or key ARN, not an alias",
                ));
            }
            let snap = self.snapshot()?;
            let target =
                self.authorized_key(trail, caller, &snap, &r.target_key_id, action, None)?;
            let alias_names = vec![r.alias_name.clone(), self.alias_arn(&r.alias_name)];
            self.authorize(trail, caller, action, &alias_names, None)?;
            self.not_pending(target)?;
            let target = target.id;
            self.mutate(|state, now| {
                let exists = state.aliases.contains_key(&r.alias_name);
                match (create, exists) {
                    (true, true) => Err(KmsError::new(
                        ErrorCode::AlreadyExists,
                        format!(
                            "An alias with the name {} already exists",
                            self.alias_arn(&r.alias_name)
                        ),
                    )),
                    (false, false) => Err(self.alias_not_found(&r.alias_name)),
                    _ => {
                        let from = state.aliases.get(&r.alias_name).map(|a| a.target);
                        self.alias_move_allowed(caller, state, &r.alias_name, from, Some(target))?;
                        let created = state.aliases.get(&r.alias_name).map_or(now, |a| a.created);
                        state.aliases.insert(
                            r.alias_name.clone(),
                            AliasRecord {
                                target,
                                created,
                                updated: now,
                            },
                        );
                        Ok(Empty {})
                    }
                }
            })
        })
    }

    pub(super) fn delete_alias(&self, caller: &Caller, r: &DeleteAliasRequest) -> Result<Empty> {
        self.audited(caller, Operation::DeleteAlias, |trail| {
            check_alias_name(&r.alias_name)?;
            let snap = self.snapshot()?;
            let key = self.authorized_key(
                trail,
                caller,
                &snap,
                &r.alias_name,
                Action::DeleteAlias,
                None,
            )?;
            let alias = r.alias_name.clone();
            let target = key.id;
            self.mutate(|state, _| match state.aliases.get(&alias) {
                Some(a) if a.target == target => {
                    self.alias_move_allowed(caller, state, &alias, Some(target), None)?;
                    state.aliases.remove(&alias);
                    Ok(Empty {})
                }
                _ => Err(self.alias_not_found(&alias)),
            })
        })
    }

    pub(super) fn list_aliases(
        &self,
        caller: &Caller,
        r: &ListRequest,
    ) -> Result<ListAliasesResponse> {
        self.audited(caller, Operation::ListAliases, |trail| {
            let snap = self.snapshot()?;
            let only = if let Some(name) = &r.key_id {
                Some(
                    self.authorized_key(trail, caller, &snap, name, Action::ListAliases, None)?
                        .id,
                )
            } else {
                self.authorize(trail, caller, Action::ListAliases, &["*".into()], None)?;
                None
            };
            let all: Vec<AliasListEntry> = snap
                .state
                .aliases
                .iter()
                .filter(|(_, a)| only.is_none_or(|id| a.target == id))
                .map(|(name, a)| AliasListEntry {
                    alias_name: name.clone(),
                    alias_arn: self.alias_arn(name),
                    target_key_id: Some(a.target.to_string()),
                    creation_date: Some(a.created),
                    last_updated_date: Some(a.updated),
                })
                .collect();
            let (aliases, next_marker) = page(&all, r.limit, &r.marker)?;
            Ok(ListAliasesResponse {
                aliases,
                truncated: next_marker.is_some(),
                next_marker,
            })
        })
    }
}

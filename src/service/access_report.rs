//! The access report (`rewrap policy report`): effective permissions of
//! every principal on every key (or one), from all loaded policy files and
//! the grants in force, for callers allowed `rewrap:CheckPolicy`.

use super::keys::is_past_deletion;
use super::KmsService;
use crate::error::Result;
use crate::operation::Action;
use crate::policy::report::{AccessReport, GrantInForce, KeyNames};

impl KmsService {
    /// The effective permissions on `key` (any name of it), or on every key
    /// not past deletion, of every principal of the keystore and every
    /// principal a policy names. `caller` needs `rewrap:CheckPolicy`; the
    /// request is recorded in the audit trail.
    pub fn access_report(&self, caller: &str, key: Option<&str>) -> Result<AccessReport> {
        self.with_access(caller, Action::CheckPolicy, || {
            self.effective_permissions(key)
        })?
    }

    fn effective_permissions(&self, key: Option<&str>) -> Result<AccessReport> {
        let snap = self.snapshot()?;
        let now = self.now();
        let records: Vec<&crate::keystore::KeyRecord> = match key {
            Some(name) => vec![self.lookup(&snap, name)?],
            None => snap
                .state
                .keys
                .values()
                .filter(|k| !is_past_deletion(k, now))
                .collect(),
        };
        let keys: Vec<KeyNames> = records
            .into_iter()
            .map(|k| KeyNames {
                arn: self.key_arn(&k.id),
                aliases: snap
                    .state
                    .aliases
                    .iter()
                    .filter(|(_, a)| a.target == k.id)
                    .map(|(name, _)| name.clone())
                    .collect(),
                names: self.resource_names(&snap, k).to_vec(),
            })
            .collect();
        let policies = self.policies();
        let mut principals: Vec<String> = snap.state.principals.keys().cloned().collect();
        principals.extend(policies.literal_principals());
        principals.sort();
        principals.dedup();
        let grants: Vec<GrantInForce> = snap
            .state
            .grants
            .iter()
            .map(|(id, g)| GrantInForce {
                key: self.key_arn(&g.key),
                grant_id: id.clone(),
                name: g.name.clone(),
                grantee: g.grantee.clone(),
                operations: g.operations.clone(),
                constraints: g
                    .constraints
                    .as_ref()
                    .map(super::grants::describe_constraints),
            })
            .collect();
        Ok(policies.access_report(&keys, &principals, &grants))
    }
}

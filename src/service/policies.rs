//! Key policies: GetKeyPolicy, ListKeyPolicies, and loading the policy
//! files the service enforces.

use super::{required_key_id, Caller, KmsService};
use crate::api::{
    GetKeyPolicyRequest, GetKeyPolicyResponse, ListKeyPoliciesResponse, ListRequest, Operation,
};
use crate::error::{KmsError, Result};
use crate::operation::Action;
use crate::policy::PolicySet;
use std::path::PathBuf;

impl KmsService {
    pub(super) fn get_key_policy(
        &self,
        caller: &Caller,
        r: &GetKeyPolicyRequest,
    ) -> Result<GetKeyPolicyResponse> {
        self.audited(caller, Operation::GetKeyPolicy, |trail| {
            let snap = self.snapshot()?;
            let key =
                self.authorized_key(trail, caller, &snap, &r.key_id, Action::GetKeyPolicy, None)?;
            let name = r.policy_name.as_deref().unwrap_or("default");
            if name != "default" {
                return Err(KmsError::not_found(format!("No such policy: {name}")));
            }
            let refs: Vec<&str> = self
                .resource_names(&snap, key)
                .iter()
                .map(String::as_str)
                .collect();
            let statements = self.policies().statements_for_resources(&refs);
            let policy = serde_json::to_string_pretty(&serde_json::json!({
                "Version": "rewrap-2026",
                "Statement": statements,
            }))
            .map_err(|e| KmsError::internal(e.to_string()))?;
            Ok(GetKeyPolicyResponse {
                policy,
                policy_name: name.into(),
            })
        })
    }

    pub(super) fn list_key_policies(
        &self,
        caller: &Caller,
        r: &ListRequest,
    ) -> Result<ListKeyPoliciesResponse> {
        self.audited(caller, Operation::ListKeyPolicies, |trail| {
            let name = required_key_id(r)?;
            let snap = self.snapshot()?;
            self.authorized_key(trail, caller, &snap, name, Action::ListKeyPolicies, None)?;
            Ok(ListKeyPoliciesResponse {
                policy_names: vec!["default".into()],
                truncated: false,
            })
        })
    }
}

pub(super) fn load_policies(dirs: &[PathBuf]) -> Result<PolicySet> {
    let mut set: Option<PolicySet> = None;
    for dir in dirs {
        let more = PolicySet::load_dir(dir)
            .map_err(|e| KmsError::internal(format!("refusing to start: {e}")))?;
        match set.as_mut() {
            Some(s) => s.merge(more),
            None => set = Some(more),
        }
    }
    set.ok_or_else(|| KmsError::internal("no policy folder"))
}

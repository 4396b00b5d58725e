//! [`LocalSession`]: one authenticated principal's view of a
//! [`KmsService`], and its [`Kms`] implementation, which forwards each
//! operation to the service's handler.

use super::{Caller, KmsService};
use crate::api::*;
use crate::error::Result;
use crate::kms::{dispatch, Kms};
use crate::secret::Secret;
use std::sync::Arc;

/// One authenticated principal's view of a [`KmsService`].
#[derive(Clone)]
pub struct LocalSession {
    pub(super) service: Arc<KmsService>,
    pub(super) caller: Caller,
}

impl std::fmt::Debug for LocalSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "LocalSession({})", self.caller.principal)
    }
}

impl LocalSession {
    /// The service behind this session.
    pub fn service(&self) -> &Arc<KmsService> {
        &self.service
    }

    /// The principal this session acts as.
    pub fn caller(&self) -> &Caller {
        &self.caller
    }
}

impl Kms for LocalSession {
    fn call(&self, op: Operation, request: &[u8]) -> Result<Secret> {
        dispatch(self, op, request)
    }
    fn create_key(&self, r: &CreateKeyRequest) -> Result<KeyMetadataResponse> {
        self.service.create_key(&self.caller, r)
    }
    fn describe_key(&self, r: &KeyIdRequest) -> Result<KeyMetadataResponse> {
        self.service.describe_key(&self.caller, r)
    }
    fn list_keys(&self, r: &ListRequest) -> Result<ListKeysResponse> {
        self.service.list_keys(&self.caller, r)
    }
    fn enable_key(&self, r: &KeyIdRequest) -> Result<Empty> {
        self.service.enable_key(&self.caller, r)
    }
    fn disable_key(&self, r: &KeyIdRequest) -> Result<Empty> {
        self.service.disable_key(&self.caller, r)
    }
    fn schedule_key_deletion(
        &self,
        r: &ScheduleKeyDeletionRequest,
    ) -> Result<ScheduleKeyDeletionResponse> {
        self.service.schedule_key_deletion(&self.caller, r)
    }
    fn cancel_key_deletion(&self, r: &KeyIdRequest) -> Result<KeyIdResponse> {
        self.service.cancel_key_deletion(&self.caller, r)
    }
    fn create_alias(&self, r: &AliasRequest) -> Result<Empty> {
        self.service.write_alias(&self.caller, r, true)
    }
    fn update_alias(&self, r: &AliasRequest) -> Result<Empty> {
        self.service.write_alias(&self.caller, r, false)
    }
    fn delete_alias(&self, r: &DeleteAliasRequest) -> Result<Empty> {
        self.service.delete_alias(&self.caller, r)
    }
    fn list_aliases(&self, r: &ListRequest) -> Result<ListAliasesResponse> {
        self.service.list_aliases(&self.caller, r)
    }
    fn enable_key_rotation(&self, r: &EnableKeyRotationRequest) -> Result<Empty> {
        self.service.enable_key_rotation(&self.caller, r)
    }
    fn disable_key_rotation(&self, r: &KeyIdRequest) -> Result<Empty> {
        self.service.disable_key_rotation(&self.caller, r)
    }
    fn get_key_rotation_status(&self, r: &KeyIdRequest) -> Result<KeyRotationStatusResponse> {
        self.service.get_key_rotation_status(&self.caller, r)
    }
    fn rotate_key_on_demand(&self, r: &KeyIdRequest) -> Result<KeyIdResponse> {
        self.service.rotate_key_on_demand(&self.caller, r)
    }
    fn list_key_rotations(&self, r: &ListRequest) -> Result<ListKeyRotationsResponse> {
        self.service.list_key_rotations(&self.caller, r)
    }
    fn encrypt(&self, r: &EncryptRequest) -> Result<EncryptResponse> {
        self.service.encrypt(&self.caller, r)
    }
    fn decrypt(&self, r: &DecryptRequest) -> Result<DecryptResponse> {
        self.service.decrypt(&self.caller, r)
    }
    fn re_encrypt(&self, r: &ReEncryptRequest) -> Result<ReEncryptResponse> {
        self.service.re_encrypt(&self.caller, r)
    }
    fn re_encrypt_many(&self, requests: &[ReEncryptRequest]) -> Vec<Result<ReEncryptResponse>> {
        self.service.re_encrypt_many(&self.caller, requests)
    }
    fn generate_data_key(&self, r: &GenerateDataKeyRequest) -> Result<GenerateDataKeyResponse> {
        let (plaintext, e) = self
            .service
            .data_key(&self.caller, Operation::GenerateDataKey, r)?;
        Ok(GenerateDataKeyResponse {
            ciphertext_blob: e.ciphertext_blob,
            plaintext,
            key_id: e.key_id,
        })
    }
    fn generate_data_key_without_plaintext(
        &self,
        r: &GenerateDataKeyRequest,
    ) -> Result<GenerateDataKeyWithoutPlaintextResponse> {
        let op = Operation::GenerateDataKeyWithoutPlaintext;
        let (_, e) = self.service.data_key(&self.caller, op, r)?;
        Ok(GenerateDataKeyWithoutPlaintextResponse {
            ciphertext_blob: e.ciphertext_blob,
            key_id: e.key_id,
        })
    }
    fn generate_random(&self, r: &GenerateRandomRequest) -> Result<GenerateRandomResponse> {
        self.service.generate_random(&self.caller, r)
    }
    fn get_key_policy(&self, r: &GetKeyPolicyRequest) -> Result<GetKeyPolicyResponse> {
        self.service.get_key_policy(&self.caller, r)
    }
    fn list_key_policies(&self, r: &ListRequest) -> Result<ListKeyPoliciesResponse> {
        self.service.list_key_policies(&self.caller, r)
    }
    fn create_principal(&self, r: &PrincipalRequest) -> Result<AccessKeyResponse> {
        self.service.create_principal(&self.caller, r)
    }
    fn delete_principal(&self, r: &PrincipalRequest) -> Result<Empty> {
        self.service.delete_principal(&self.caller, r)
    }
    fn list_principals(&self, _: &Empty) -> Result<ListPrincipalsResponse> {
        self.service.list_principals(&self.caller)
    }
    fn create_access_key(&self, r: &PrincipalRequest) -> Result<AccessKeyResponse> {
        self.service.create_access_key(&self.caller, r)
    }
    fn delete_access_key(&self, r: &DeleteAccessKeyRequest) -> Result<Empty> {
        self.service.delete_access_key(&self.caller, r)
    }
}

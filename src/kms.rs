//! The one interface every consumer of a KMS goes through.
//!
//! The CLI, the rotation worker and the blob-store worker call a [`Kms`]; they
//! never touch a keystore. [`crate::service::LocalSession`] implements it over
//! the embedded keystore, [`crate::client::RemoteKms`] over the AWS KMS wire
//! protocol, so a local and a remote KMS are interchangeable.
//!
//! The required method is [`Kms::call`], one operation as JSON bytes in and out
//! (exactly the wire body). The typed methods serialize through it by default;
//! an in-process implementation overrides them to skip JSON.

use crate::api::*;
use crate::error::{KmsError, Result};
use crate::secret::Secret;
use serde::{de::DeserializeOwned, Serialize};

/// Room for the largest request or response (4096 bytes of plaintext as
/// base64 plus a ciphertext blob), so serializing a secret never reallocates
/// and leaves a copy behind.
const JSON_BUFFER: usize = 32 * 1024;

/// A KMS, as seen by one authenticated principal.
#[allow(missing_docs)] // reason: each typed method is the AWS operation of the same name
pub trait Kms: Send + Sync {
    /// Calls `op` with a JSON request body; returns the JSON response body.
    fn call(&self, op: Operation, request: &[u8]) -> Result<Secret>;

    fn create_key(&self, r: &CreateKeyRequest) -> Result<KeyMetadataResponse> {
        call_typed(self, Operation::CreateKey, r)
    }
    fn describe_key(&self, r: &KeyIdRequest) -> Result<KeyMetadataResponse> {
        call_typed(self, Operation::DescribeKey, r)
    }
    fn list_keys(&self, r: &ListRequest) -> Result<ListKeysResponse> {
        call_typed(self, Operation::ListKeys, r)
    }
    fn enable_key(&self, r: &KeyIdRequest) -> Result<Empty> {
        call_typed(self, Operation::EnableKey, r)
    }
    fn disable_key(&self, r: &KeyIdRequest) -> Result<Empty> {
        call_typed(self, Operation::DisableKey, r)
    }
    fn schedule_key_deletion(
        &self,
        r: &ScheduleKeyDeletionRequest,
    ) -> Result<ScheduleKeyDeletionResponse> {
        call_typed(self, Operation::ScheduleKeyDeletion, r)
    }
    fn cancel_key_deletion(&self, r: &KeyIdRequest) -> Result<KeyIdResponse> {
        call_typed(self, Operation::CancelKeyDeletion, r)
    }
    fn create_alias(&self, r: &AliasRequest) -> Result<Empty> {
        call_typed(self, Operation::CreateAlias, r)
    }
    fn update_alias(&self, r: &AliasRequest) -> Result<Empty> {
        call_typed(self, Operation::UpdateAlias, r)
    }
    fn delete_alias(&self, r: &DeleteAliasRequest) -> Result<Empty> {
        call_typed(self, Operation::DeleteAlias, r)
    }
    fn list_aliases(&self, r: &ListRequest) -> Result<ListAliasesResponse> {
        call_typed(self, Operation::ListAliases, r)
    }
    fn enable_key_rotation(&self, r: &EnableKeyRotationRequest) -> Result<Empty> {
        call_typed(self, Operation::EnableKeyRotation, r)
    }
    fn disable_key_rotation(&self, r: &KeyIdRequest) -> Result<Empty> {
        call_typed(self, Operation::DisableKeyRotation, r)
    }
    fn get_key_rotation_status(&self, r: &KeyIdRequest) -> Result<KeyRotationStatusResponse> {
        call_typed(self, Operation::GetKeyRotationStatus, r)
    }
    fn rotate_key_on_demand(&self, r: &KeyIdRequest) -> Result<KeyIdResponse> {
        call_typed(self, Operation::RotateKeyOnDemand, r)
    }
    fn list_key_rotations(&self, r: &ListRequest) -> Result<ListKeyRotationsResponse> {
        call_typed(self, Operation::ListKeyRotations, r)
    }
    fn encrypt(&self, r: &EncryptRequest) -> Result<EncryptResponse> {
        call_typed(self, Operation::Encrypt, r)
    }
    fn decrypt(&self, r: &DecryptRequest) -> Result<DecryptResponse> {
        call_typed(self, Operation::Decrypt, r)
    }
    fn re_encrypt(&self, r: &ReEncryptRequest) -> Result<ReEncryptResponse> {
        call_typed(self, Operation::ReEncrypt, r)
    }
    /// ReEncrypt of each request, one result per request, in order: the
    /// batch form the rotation worker uses. Not an AWS operation: each
    /// request is an ordinary ReEncrypt (checked, audited and answered on
    /// its own). This default makes the calls one by one; the in-process
    /// service overrides it to write the batch's audit records in one
    /// group commit.
    fn re_encrypt_many(&self, requests: &[ReEncryptRequest]) -> Vec<Result<ReEncryptResponse>> {
        requests.iter().map(|r| self.re_encrypt(r)).collect()
    }
    fn generate_data_key(&self, r: &GenerateDataKeyRequest) -> Result<GenerateDataKeyResponse> {
        call_typed(self, Operation::GenerateDataKey, r)
    }
    fn generate_data_key_without_plaintext(
        &self,
        r: &GenerateDataKeyRequest,
    ) -> Result<GenerateDataKeyWithoutPlaintextResponse> {
        call_typed(self, Operation::GenerateDataKeyWithoutPlaintext, r)
    }
    fn generate_random(&self, r: &GenerateRandomRequest) -> Result<GenerateRandomResponse> {
        call_typed(self, Operation::GenerateRandom, r)
    }
    fn get_key_policy(&self, r: &GetKeyPolicyRequest) -> Result<GetKeyPolicyResponse> {
        call_typed(self, Operation::GetKeyPolicy, r)
    }
    fn list_key_policies(&self, r: &ListRequest) -> Result<ListKeyPoliciesResponse> {
        call_typed(self, Operation::ListKeyPolicies, r)
    }
    fn create_principal(&self, r: &PrincipalRequest) -> Result<AccessKeyResponse> {
        call_typed(self, Operation::CreatePrincipal, r)
    }
    fn delete_principal(&self, r: &PrincipalRequest) -> Result<Empty> {
        call_typed(self, Operation::DeletePrincipal, r)
    }
    fn list_principals(&self, r: &Empty) -> Result<ListPrincipalsResponse> {
        call_typed(self, Operation::ListPrincipals, r)
    }
    fn create_access_key(&self, r: &PrincipalRequest) -> Result<AccessKeyResponse> {
        call_typed(self, Operation::CreateAccessKey, r)
    }
    fn delete_access_key(&self, r: &DeleteAccessKeyRequest) -> Result<Empty> {
        call_typed(self, Operation::DeleteAccessKey, r)
    }
}

/// Serializes `value` as JSON into a zeroizing buffer.
pub fn to_json<T: Serialize + ?Sized>(value: &T) -> Result<Secret> {
    let mut out = Secret::new(Vec::with_capacity(JSON_BUFFER));
    serde_json::to_writer(out.expose_mut(), value)
        .map_err(|e| KmsError::internal(format!("cannot serialize: {e}")))?;
    Ok(out)
}

/// Parses a JSON request or response body. Errors never quote the body.
pub fn from_json<T: DeserializeOwned>(body: &[u8]) -> Result<T> {
    let body = if body.is_empty() {
        b"{}" as &[u8]
    } else {
        body
    };
    serde_json::from_slice(body).map_err(|e| {
        // serde_json's messages name the field and position, never the value.
        KmsError::new(
            crate::error::ErrorCode::Serialization,
            format!("malformed request body: {}", redact_serde_error(&e)),
        )
    })
}

fn redact_serde_error(e: &serde_json::Error) -> String {
    let text = e.to_string();
    // "invalid type: string \"secret\", expected ..." quotes the value: drop it.
    match text.find('"') {
        Some(_) if e.is_data() => format!(
            "a field has the wrong type or value at line {} column {}",
            e.line(),
            e.column()
        ),
        _ => text,
    }
}

/// Calls `op` through [`Kms::call`] with typed request and response.
pub fn call_typed<K, Req, Resp>(kms: &K, op: Operation, req: &Req) -> Result<Resp>
where
    K: Kms + ?Sized,
    Req: Serialize,
    Resp: DeserializeOwned,
{
    let body = to_json(req)?;
    let out = kms.call(op, body.expose())?;
    from_json(out.expose())
}

/// Runs `op` with a JSON body against the typed methods of `kms`: the body of
/// [`Kms::call`] for in-process implementations and of the server.
pub fn dispatch<K: Kms + ?Sized>(kms: &K, op: Operation, body: &[u8]) -> Result<Secret> {
    use Operation as O;
    match op {
        O::CreateKey => to_json(&kms.create_key(&from_json(body)?)?),
        O::DescribeKey => to_json(&kms.describe_key(&from_json(body)?)?),
        O::ListKeys => to_json(&kms.list_keys(&from_json(body)?)?),
        O::EnableKey => to_json(&kms.enable_key(&from_json(body)?)?),
        O::DisableKey => to_json(&kms.disable_key(&from_json(body)?)?),
        O::ScheduleKeyDeletion => to_json(&kms.schedule_key_deletion(&from_json(body)?)?),
        O::CancelKeyDeletion => to_json(&kms.cancel_key_deletion(&from_json(body)?)?),
        O::CreateAlias => to_json(&kms.create_alias(&from_json(body)?)?),
        O::UpdateAlias => to_json(&kms.update_alias(&from_json(body)?)?),
        O::DeleteAlias => to_json(&kms.delete_alias(&from_json(body)?)?),
        O::ListAliases => to_json(&kms.list_aliases(&from_json(body)?)?),
        O::EnableKeyRotation => to_json(&kms.enable_key_rotation(&from_json(body)?)?),
        O::DisableKeyRotation => to_json(&kms.disable_key_rotation(&from_json(body)?)?),
        O::GetKeyRotationStatus => to_json(&kms.get_key_rotation_status(&from_json(body)?)?),
        O::RotateKeyOnDemand => to_json(&kms.rotate_key_on_demand(&from_json(body)?)?),
        O::ListKeyRotations => to_json(&kms.list_key_rotations(&from_json(body)?)?),
        O::Encrypt => to_json(&kms.encrypt(&from_json(body)?)?),
        O::Decrypt => to_json(&kms.decrypt(&from_json(body)?)?),
        O::ReEncrypt => to_json(&kms.re_encrypt(&from_json(body)?)?),
        O::GenerateDataKey => to_json(&kms.generate_data_key(&from_json(body)?)?),
        O::GenerateDataKeyWithoutPlaintext => {
            to_json(&kms.generate_data_key_without_plaintext(&from_json(body)?)?)
        }
        O::GenerateRandom => to_json(&kms.generate_random(&from_json(body)?)?),
        O::GetKeyPolicy => to_json(&kms.get_key_policy(&from_json(body)?)?),
        O::ListKeyPolicies => to_json(&kms.list_key_policies(&from_json(body)?)?),
        O::CreatePrincipal => to_json(&kms.create_principal(&from_json(body)?)?),
        O::DeletePrincipal => to_json(&kms.delete_principal(&from_json(body)?)?),
        O::ListPrincipals => to_json(&kms.list_principals(&from_json(body)?)?),
        O::CreateAccessKey => to_json(&kms.create_access_key(&from_json(body)?)?),
        O::DeleteAccessKey => to_json(&kms.delete_access_key(&from_json(body)?)?),
    }
}

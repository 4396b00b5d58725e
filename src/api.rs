//! Request and response shapes of every operation, as AWS KMS names them on
//! the wire (JSON 1.1, PascalCase fields, blobs as base64).
//!
//! The CLI, the server, the remote client and the rotation worker all speak
//! these types, so a local and a remote KMS are interchangeable.

pub use crate::operation::Operation;
use crate::secret::Secret;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// An encryption context: string pairs bound to a ciphertext as AAD.
pub type EncryptionContext = BTreeMap<String, String>;

/// Non-secret bytes (ciphertext), base64 in JSON.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct CiphertextBlob(pub Vec<u8>);

impl std::fmt::Debug for CiphertextBlob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CiphertextBlob({} bytes)", self.0.len())
    }
}

impl Serialize for CiphertextBlob {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use base64::Engine;
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(&self.0))
    }
}

impl<'de> Deserialize<'de> for CiphertextBlob {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<CiphertextBlob, D::Error> {
        use base64::Engine;
        let text = String::deserialize(d)?;
        base64::engine::general_purpose::STANDARD
            .decode(text.as_bytes())
            .map(CiphertextBlob)
            .map_err(|_| serde::de::Error::custom("blob is not valid base64"))
    }
}

/// Metadata of a customer master key, as DescribeKey returns it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
#[allow(missing_docs)] // reason: fields are AWS KeyMetadata fields of the same name
pub struct KeyMetadata {
    #[serde(rename = "AWSAccountId")]
    pub aws_account_id: String,
    pub key_id: String,
    pub arn: String,
    /// Seconds since the Unix epoch.
    pub creation_date: f64,
    pub enabled: bool,
    pub description: String,
    pub key_usage: String,
    pub key_state: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deletion_date: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_deletion_window_in_days: Option<u32>,
    pub origin: String,
    pub key_manager: String,
    pub customer_master_key_spec: String,
    pub key_spec: String,
    /// Absent for keys that do not encrypt (SIGN_VERIFY, GENERATE_VERIFY_MAC), as in AWS.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub encryption_algorithms: Vec<String>,
    pub multi_region: bool,
    /// rewrap extension: number of key-material versions.
    #[serde(default)]
    pub key_material_versions: u32,
    /// rewrap extension: when the key was last used for a cryptographic operation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_used_date: Option<f64>,
    /// The custom key store whose token holds the key's material.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom_key_store_id: Option<String>,
    /// Asymmetric, HMAC and imported keys' fields (issues 15, 13).
    #[serde(flatten)]
    pub extra: KeyMetadataExtra,
}

/// CreateKey request.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
#[allow(missing_docs)] // reason: AWS field names
pub struct CreateKeyRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_usage: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_spec: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer_master_key_spec: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<Vec<Tag>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub multi_region: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bypass_policy_lockout_safety_check: Option<bool>,
    /// With `Origin` `AWS_CLOUDHSM`: the custom key store whose token
    /// generates and holds the key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom_key_store_id: Option<String>,
}

/// A key tag (accepted, stored with the key).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
#[allow(missing_docs)] // reason: AWS field names
pub struct Tag {
    pub tag_key: String,
    pub tag_value: String,
}

/// Responses that carry one key's metadata (CreateKey, DescribeKey).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
#[allow(missing_docs)] // reason: AWS field names
pub struct KeyMetadataResponse {
    pub key_metadata: KeyMetadata,
}

/// Requests that name just one key (DescribeKey, EnableKey, DisableKey, ...).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
#[allow(missing_docs)] // reason: AWS field names
pub struct KeyIdRequest {
    pub key_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grant_tokens: Option<Vec<String>>,
}

/// UpdateKeyDescription.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
#[allow(missing_docs)] // reason: AWS field names
pub struct UpdateKeyDescriptionRequest {
    pub key_id: String,
    pub description: String,
}

/// Responses that name just one key (CancelKeyDeletion, RotateKeyOnDemand).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
#[allow(missing_docs)] // reason: AWS field names
pub struct KeyIdResponse {
    pub key_id: String,
}

/// An empty response body (`{}`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Empty {}

/// Paging parameters of List* calls.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
#[allow(missing_docs)] // reason: AWS field names
pub struct ListRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub marker: Option<String>,
}

/// ListKeys entry.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
#[allow(missing_docs)] // reason: AWS field names
pub struct KeyListEntry {
    pub key_id: String,
    pub key_arn: String,
}

/// ListKeys response.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
#[allow(missing_docs)] // reason: AWS field names
pub struct ListKeysResponse {
    pub keys: Vec<KeyListEntry>,
    pub truncated: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_marker: Option<String>,
}

/// ScheduleKeyDeletion request.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
#[allow(missing_docs)] // reason: AWS field names
pub struct ScheduleKeyDeletionRequest {
    pub key_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_window_in_days: Option<u32>,
    /// rewrap extension: schedule even though the KMS's usage index says
    /// the key still wraps envelopes' data keys (recorded in the audit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub force: Option<bool>,
}

/// DisableKey request.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
#[allow(missing_docs)] // reason: AWS field names
pub struct DisableKeyRequest {
    pub key_id: String,
    /// rewrap extension: disable even though the KMS's usage index says
    /// the key still wraps envelopes' data keys (recorded in the audit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub force: Option<bool>,
}

/// ScheduleKeyDeletion response.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
#[allow(missing_docs)] // reason: AWS field names
pub struct ScheduleKeyDeletionResponse {
    pub key_id: String,
    pub deletion_date: f64,
    pub key_state: String,
    pub pending_window_in_days: u32,
}

/// CreateAlias and UpdateAlias request.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
#[allow(missing_docs)] // reason: AWS field names
pub struct AliasRequest {
    pub alias_name: String,
    #[serde(default)]
    pub target_key_id: String,
}

/// DeleteAlias request.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
#[allow(missing_docs)] // reason: AWS field names
pub struct DeleteAliasRequest {
    pub alias_name: String,
}

/// ListAliases entry.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
#[allow(missing_docs)] // reason: AWS field names
pub struct AliasListEntry {
    pub alias_name: String,
    pub alias_arn: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_key_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub creation_date: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_updated_date: Option<f64>,
}

/// ListAliases response.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
#[allow(missing_docs)] // reason: AWS field names
pub struct ListAliasesResponse {
    pub aliases: Vec<AliasListEntry>,
    pub truncated: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_marker: Option<String>,
}

/// EnableKeyRotation request.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
#[allow(missing_docs)] // reason: AWS field names
pub struct EnableKeyRotationRequest {
    pub key_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotation_period_in_days: Option<u32>,
}

/// GetKeyRotationStatus response.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
#[allow(missing_docs)] // reason: AWS field names
pub struct KeyRotationStatusResponse {
    pub key_id: String,
    pub key_rotation_enabled: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotation_period_in_days: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_rotation_date: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_demand_rotation_start_date: Option<f64>,
}

/// ListKeyRotations entry.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
#[allow(missing_docs)] // reason: AWS field names
pub struct RotationEntry {
    pub key_id: String,
    pub rotation_date: f64,
    /// `AUTOMATIC` or `ON_DEMAND`.
    pub rotation_type: String,
}

/// ListKeyRotations response.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
#[allow(missing_docs)] // reason: AWS field names
pub struct ListKeyRotationsResponse {
    pub rotations: Vec<RotationEntry>,
    pub truncated: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_marker: Option<String>,
}

/// Encrypt request.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
#[allow(missing_docs)] // reason: AWS field names
pub struct EncryptRequest {
    pub key_id: String,
    pub plaintext: Secret,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption_context: Option<EncryptionContext>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grant_tokens: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption_algorithm: Option<String>,
    /// Check authorization and key state only: `DryRunOperationException` (HTTP 412) when the call would succeed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dry_run: Option<bool>,
    /// Not an AWS member: the object this key use is for, as the audit
    /// record names it ([`crate::audit::AuditRecord::object`]); sent as the
    /// `x-rewrap-object` header, never in the body.
    #[serde(skip)]
    pub object: Option<String>,
}

/// Encrypt response.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
#[allow(missing_docs)] // reason: AWS field names
pub struct EncryptResponse {
    pub ciphertext_blob: CiphertextBlob,
    pub key_id: String,
    pub encryption_algorithm: String,
}

/// Decrypt request.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
#[allow(missing_docs)] // reason: AWS field names
pub struct DecryptRequest {
    pub ciphertext_blob: CiphertextBlob,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption_context: Option<EncryptionContext>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grant_tokens: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption_algorithm: Option<String>,
    /// Check authorization and key state only: `DryRunOperationException` (HTTP 412) when the call would succeed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dry_run: Option<bool>,
    /// Not an AWS member: the object this key use is for, as the audit
    /// record names it ([`crate::audit::AuditRecord::object`]); sent as the
    /// `x-rewrap-object` header, never in the body.
    #[serde(skip)]
    pub object: Option<String>,
}

/// Decrypt response.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
#[allow(missing_docs)] // reason: AWS field names
pub struct DecryptResponse {
    pub key_id: String,
    pub plaintext: Secret,
    pub encryption_algorithm: String,
}

/// ReEncrypt request.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
#[allow(missing_docs)] // reason: AWS field names
pub struct ReEncryptRequest {
    pub ciphertext_blob: CiphertextBlob,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_encryption_context: Option<EncryptionContext>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_key_id: Option<String>,
    pub destination_key_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination_encryption_context: Option<EncryptionContext>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_encryption_algorithm: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination_encryption_algorithm: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grant_tokens: Option<Vec<String>>,
    /// Check authorization and key state only: `DryRunOperationException` (HTTP 412) when the call would succeed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dry_run: Option<bool>,
    /// Not an AWS member: the object this key use is for, as the audit
    /// record names it ([`crate::audit::AuditRecord::object`]); sent as the
    /// `x-rewrap-object` header, never in the body.
    #[serde(skip)]
    pub object: Option<String>,
}

/// ReEncrypt response.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
#[allow(missing_docs)] // reason: AWS field names
pub struct ReEncryptResponse {
    pub ciphertext_blob: CiphertextBlob,
    pub source_key_id: String,
    pub key_id: String,
    pub source_encryption_algorithm: String,
    pub destination_encryption_algorithm: String,
}

/// GenerateDataKey and GenerateDataKeyWithoutPlaintext request.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
#[allow(missing_docs)] // reason: AWS field names
pub struct GenerateDataKeyRequest {
    pub key_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption_context: Option<EncryptionContext>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub number_of_bytes: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_spec: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grant_tokens: Option<Vec<String>>,
    /// Check authorization and key state only: `DryRunOperationException` (HTTP 412) when the call would succeed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dry_run: Option<bool>,
    /// Not an AWS member: the object this key use is for, as the audit
    /// record names it ([`crate::audit::AuditRecord::object`]); sent as the
    /// `x-rewrap-object` header, never in the body.
    #[serde(skip)]
    pub object: Option<String>,
}

/// GenerateDataKey response.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
#[allow(missing_docs)] // reason: AWS field names
pub struct GenerateDataKeyResponse {
    pub ciphertext_blob: CiphertextBlob,
    pub plaintext: Secret,
    pub key_id: String,
}

/// GenerateDataKeyWithoutPlaintext response.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
#[allow(missing_docs)] // reason: AWS field names
pub struct GenerateDataKeyWithoutPlaintextResponse {
    pub ciphertext_blob: CiphertextBlob,
    pub key_id: String,
}

/// GenerateRandom request.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
#[allow(missing_docs)] // reason: AWS field names
pub struct GenerateRandomRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub number_of_bytes: Option<u32>,
}

/// GenerateRandom response.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
#[allow(missing_docs)] // reason: AWS field names
pub struct GenerateRandomResponse {
    pub plaintext: Secret,
}

/// GetKeyPolicy request.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
#[allow(missing_docs)] // reason: AWS field names
pub struct GetKeyPolicyRequest {
    pub key_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_name: Option<String>,
}

/// GetKeyPolicy response: the policy statements that name this key, as JSON text.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
#[allow(missing_docs)] // reason: AWS field names
pub struct GetKeyPolicyResponse {
    pub policy: String,
    pub policy_name: String,
}

/// ListKeyPolicies response.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
#[allow(missing_docs)] // reason: AWS field names
pub struct ListKeyPoliciesResponse {
    pub policy_names: Vec<String>,
    pub truncated: bool,
}

/// CheckPolicy request (rewrap extension): would `PrincipalName` be allowed
/// `Action` on `KeyId`? For `kms:ReEncryptFrom` / `kms:ReEncryptTo` the
/// request describes a whole ReEncrypt: from `KeyId` under
/// `EncryptionContext` to `DestinationKeyId` (default: `KeyId`) under
/// `DestinationEncryptionContext` (default: `EncryptionContext`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
#[allow(missing_docs)] // reason: field names follow the AWS style
pub struct CheckPolicyRequest {
    pub principal_name: String,
    pub action: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption_context: Option<EncryptionContext>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination_key_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination_encryption_context: Option<EncryptionContext>,
}

/// CheckPolicy response: the decision and what made it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
#[allow(missing_docs)] // reason: field names follow the AWS style
pub struct CheckPolicyResponse {
    /// `allow` or `deny`.
    pub decision: String,
    pub decided_by: String,
    /// The condition that decided, if a condition took part.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub condition: Option<String>,
}

/// CreatePrincipal / DeletePrincipal / CreateAccessKey request (rewrap extension).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
#[allow(missing_docs)] // reason: field names follow AWS IAM
pub struct PrincipalRequest {
    pub principal_name: String,
}

/// DeleteAccessKey request (rewrap extension).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
#[allow(missing_docs)] // reason: field names follow AWS IAM
pub struct DeleteAccessKeyRequest {
    pub principal_name: String,
    pub access_key_id: String,
}

/// A new access key; the secret is shown once.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
#[allow(missing_docs)] // reason: field names follow AWS IAM
pub struct AccessKeyResponse {
    pub principal_name: String,
    pub access_key_id: String,
    #[serde(with = "crate::secret::as_text")]
    pub secret_access_key: Secret,
}

/// ListPrincipals entry.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
#[allow(missing_docs)] // reason: field names follow AWS IAM
pub struct PrincipalEntry {
    pub principal_name: String,
    pub access_key_ids: Vec<String>,
    pub creation_date: f64,
}

/// ListPrincipals response.
/// GetCallerIdentity response: who the KMS says the caller is (the fields
/// of STS GetCallerIdentity, plus the principal's name).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
#[allow(missing_docs)] // reason: field names follow AWS STS
pub struct CallerIdentityResponse {
    pub principal: String,
    pub account: String,
    pub arn: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
#[allow(missing_docs)] // reason: field names follow AWS IAM
pub struct ListPrincipalsResponse {
    pub principals: Vec<PrincipalEntry>,
}

/// VerifyAuditTrail response (rewrap extension): the verdict on the audit
/// trail's hash chain and its sealed checkpoint.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
pub struct VerifyAuditTrailResponse {
    /// Whether every record chains and the end matches the checkpoint.
    pub intact: bool,
    /// What is wrong, when not intact (names the first bad record).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
    /// Complete records (when intact).
    pub records: u64,
    /// `hash` of the last record (when intact).
    pub last_hash: String,
    /// Bytes of a torn final line nobody acknowledged, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub truncated_final_record: Option<u64>,
    /// `seq` of each RepairAuditTail record.
    #[serde(default)]
    pub repairs: Vec<u64>,
    /// `seq` of each AuditCheckpointMissing record.
    #[serde(default)]
    pub checkpoint_missing: Vec<u64>,
    /// Whether the end was checked against the sealed checkpoint.
    pub checkpoint_checked: bool,
}

/// GetAuditReport request (rewrap extension): usage per key, principal and
/// operation, paged.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct AuditReportRequest {
    /// Only records at or after this time (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
    /// Only this key (ARN or key id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
    /// Only this principal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub principal_name: Option<String>,
    /// Rows per page, 1 to 1000 (default 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
    /// Where the previous page ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub marker: Option<String>,
}

/// One row of an audit report.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
#[allow(missing_docs)] // reason: the fields of crate::audit::UsageRow
pub struct AuditReportRow {
    pub key: String,
    pub principal: String,
    pub operation: String,
    pub count: u64,
    pub denied: u64,
    pub errors: u64,
    /// RFC 3339 UTC, milliseconds.
    pub last_used: String,
}

/// GetAuditReport response.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
#[allow(missing_docs)] // reason: AWS-style paging fields
pub struct AuditReportResponse {
    pub rows: Vec<AuditReportRow>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_marker: Option<String>,
    pub truncated: bool,
}

// Custom key stores (PKCS#11; issue 13): their request and response types.
mod custom_key_stores;
pub use custom_key_stores::*;
// ----- issue 15 part A: tags and grants (their shapes live in api/tags_grants.rs)
mod tags_grants;
pub use tags_grants::*;
// ----- Asymmetric and HMAC keys, imported key material (issues 15, 13) -----

/// The fields DescribeKey adds for asymmetric, HMAC and imported keys; set
/// on [`KeyMetadata`]-carrying responses through [`KeyMetadataExtra`].
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
#[allow(missing_docs)] // reason: AWS KeyMetadata field names
pub struct KeyMetadataExtra {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signing_algorithms: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac_algorithms: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expiration_model: Option<String>,
    /// Seconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub valid_to: Option<f64>,
}

/// Sign request.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
#[allow(missing_docs)] // reason: AWS field names
pub struct SignRequest {
    pub key_id: String,
    pub message: Secret,
    /// `RAW` (default) or `DIGEST`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_type: Option<String>,
    pub signing_algorithm: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grant_tokens: Option<Vec<String>>,
}

/// Sign response.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
#[allow(missing_docs)] // reason: AWS field names
pub struct SignResponse {
    pub key_id: String,
    pub signature: CiphertextBlob,
    pub signing_algorithm: String,
}

/// Verify request.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
#[allow(missing_docs)] // reason: AWS field names
pub struct VerifyRequest {
    pub key_id: String,
    pub message: Secret,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_type: Option<String>,
    pub signature: CiphertextBlob,
    pub signing_algorithm: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grant_tokens: Option<Vec<String>>,
}

/// Verify response (an invalid signature is KMSInvalidSignatureException).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
#[allow(missing_docs)] // reason: AWS field names
pub struct VerifyResponse {
    pub key_id: String,
    pub signature_valid: bool,
    pub signing_algorithm: String,
}

/// GetPublicKey response.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
#[allow(missing_docs)] // reason: AWS field names
pub struct GetPublicKeyResponse {
    pub key_id: String,
    /// DER SubjectPublicKeyInfo.
    pub public_key: CiphertextBlob,
    pub customer_master_key_spec: String,
    pub key_spec: String,
    pub key_usage: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption_algorithms: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signing_algorithms: Option<Vec<String>>,
}

/// GenerateMac request.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
#[allow(missing_docs)] // reason: AWS field names
pub struct GenerateMacRequest {
    pub key_id: String,
    pub message: Secret,
    pub mac_algorithm: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grant_tokens: Option<Vec<String>>,
}

/// GenerateMac response.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
#[allow(missing_docs)] // reason: AWS field names
pub struct GenerateMacResponse {
    pub key_id: String,
    pub mac: CiphertextBlob,
    pub mac_algorithm: String,
}

/// VerifyMac request.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
#[allow(missing_docs)] // reason: AWS field names
pub struct VerifyMacRequest {
    pub key_id: String,
    pub message: Secret,
    pub mac_algorithm: String,
    pub mac: CiphertextBlob,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grant_tokens: Option<Vec<String>>,
}

/// VerifyMac response (an invalid MAC is KMSInvalidMacException).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
#[allow(missing_docs)] // reason: AWS field names
pub struct VerifyMacResponse {
    pub key_id: String,
    pub mac_valid: bool,
    pub mac_algorithm: String,
}

/// GenerateDataKeyPair and GenerateDataKeyPairWithoutPlaintext request.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
#[allow(missing_docs)] // reason: AWS field names
pub struct GenerateDataKeyPairRequest {
    pub key_id: String,
    pub key_pair_spec: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption_context: Option<EncryptionContext>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grant_tokens: Option<Vec<String>>,
}

/// GenerateDataKeyPair response.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
#[allow(missing_docs)] // reason: AWS field names
pub struct GenerateDataKeyPairResponse {
    pub private_key_ciphertext_blob: CiphertextBlob,
    /// PKCS#8 DER.
    pub private_key_plaintext: Secret,
    /// DER SubjectPublicKeyInfo.
    pub public_key: CiphertextBlob,
    pub key_id: String,
    pub key_pair_spec: String,
}

/// GenerateDataKeyPairWithoutPlaintext response.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
#[allow(missing_docs)] // reason: AWS field names
pub struct GenerateDataKeyPairWithoutPlaintextResponse {
    pub private_key_ciphertext_blob: CiphertextBlob,
    pub public_key: CiphertextBlob,
    pub key_id: String,
    pub key_pair_spec: String,
}

/// GetParametersForImport request.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
#[allow(missing_docs)] // reason: AWS field names
pub struct GetParametersForImportRequest {
    pub key_id: String,
    pub wrapping_algorithm: String,
    pub wrapping_key_spec: String,
}

/// GetParametersForImport response.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
#[allow(missing_docs)] // reason: AWS field names
pub struct GetParametersForImportResponse {
    pub key_id: String,
    pub import_token: CiphertextBlob,
    /// DER SubjectPublicKeyInfo of the RSA wrapping key.
    pub public_key: CiphertextBlob,
    /// Seconds since the Unix epoch.
    pub parameters_valid_to: f64,
}

/// ImportKeyMaterial request.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
#[allow(missing_docs)] // reason: AWS field names
pub struct ImportKeyMaterialRequest {
    pub key_id: String,
    pub import_token: CiphertextBlob,
    pub encrypted_key_material: CiphertextBlob,
    /// Seconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub valid_to: Option<f64>,
    /// `KEY_MATERIAL_EXPIRES` (default, needs ValidTo) or `KEY_MATERIAL_DOES_NOT_EXPIRE`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expiration_model: Option<String>,
}

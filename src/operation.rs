//! The operations table: every KMS operation rewrap serves and every policy
//! action, each declared once.
//!
//! `for_each_operation!` holds one row per operation:
//!
//! ```text
//! /// doc
//! Name = method(Request) -> Response, [policy actions], reads | writes;
//! Name = method(Request) -> Response, authenticated, reads | writes;
//! ```
//!
//! The access part is either the policy actions the caller needs (a
//! non-empty list) or `authenticated`: any caller with valid credentials may
//! call the operation, no policy statement is consulted, and it is audited
//! like every other (`GetCallerIdentity`, which returns no key material).
//! An empty list `[]` matches neither form and does not compile.
//!
//! and hands the rows to a callback macro. Everything that used to list the
//! operations by hand is derived from it:
//!
//! | derived piece | where |
//! | --- | --- |
//! | [`Operation`]: names, [`Operation::ALL`], [`Operation::actions`], [`Operation::writes_keystore`] | here |
//! | the [`crate::kms::Kms`] trait's typed methods and [`crate::kms::dispatch`] (JSON in, JSON out) | `kms.rs` |
//! | the in-process forwarder `impl Kms for LocalSession` | `service/session.rs` |
//! | the server's dispatch and its choice of thread (keystore writers run off the I/O threads) | `server.rs` |
//! | the remote client (it sends [`Operation::name`] as `X-Amz-Target`) | `client.rs` |
//!
//! Adding an operation is one row here, its request and response types in
//! [`crate::api`], its handler (a `KmsService` method named like the row's
//! method, `fn(&self, &Caller, &Request) -> Result<Response>`) and its CLI
//! arguments. A row without policy actions does not match the macro and does
//! not compile; a row without a handler does not compile; a test walks
//! [`Operation::ALL`] against the CLI's subcommands.
//!
//! Policy actions are the typed [`Action`]: a handler authorizes with
//! `Action::Decrypt`, never a string, and the policy engine compiles action
//! names in policy files to [`Action`] bits at load time.

/// Calls `$callback! { rows }` with the operations table (see the module
/// docs for the row syntax). Each callback macro matches the rows with
///
/// ```text
/// $( $(#[$meta:meta])* $op:ident = $method:ident($req:ty) -> $resp:ty,
///    $access:tt, $effect:ident; )*
/// ```
///
/// and reads `$access` (`[Action, ...]` or `authenticated`) with
/// `access_actions!` when it needs the actions.
macro_rules! for_each_operation {
    ($callback:ident) => {
        $callback! {
            /// Creates a customer master key.
            CreateKey = create_key(CreateKeyRequest) -> KeyMetadataResponse, [CreateKey], writes;
            /// Returns a key's metadata.
            DescribeKey = describe_key(KeyIdRequest) -> KeyMetadataResponse, [DescribeKey], reads;
            /// Lists keys, paged.
            ListKeys = list_keys(ListRequest) -> ListKeysResponse, [ListKeys], reads;
            /// Replaces a key's description.
            UpdateKeyDescription = update_key_description(UpdateKeyDescriptionRequest) -> Empty,
                [UpdateKeyDescription], writes;
            /// Enables a key.
            EnableKey = enable_key(KeyIdRequest) -> Empty, [EnableKey], writes;
            /// Disables a key (it can no longer be used for cryptography).
            DisableKey = disable_key(DisableKeyRequest) -> Empty, [DisableKey], writes;
            /// Schedules a key's deletion after a waiting period.
            ScheduleKeyDeletion = schedule_key_deletion(ScheduleKeyDeletionRequest)
                -> ScheduleKeyDeletionResponse, [ScheduleKeyDeletion], writes;
            /// Cancels a scheduled deletion (the key stays disabled).
            CancelKeyDeletion = cancel_key_deletion(KeyIdRequest) -> KeyIdResponse,
                [CancelKeyDeletion], writes;
            /// Creates an alias for a key.
            CreateAlias = create_alias(AliasRequest) -> Empty, [CreateAlias], writes;
            /// Points an alias at another key.
            UpdateAlias = update_alias(AliasRequest) -> Empty, [UpdateAlias], writes;
            /// Deletes an alias.
            DeleteAlias = delete_alias(DeleteAliasRequest) -> Empty, [DeleteAlias], writes;
            /// Lists aliases, paged.
            ListAliases = list_aliases(ListRequest) -> ListAliasesResponse, [ListAliases], reads;
            /// Turns on automatic key-material rotation.
            EnableKeyRotation = enable_key_rotation(EnableKeyRotationRequest) -> Empty,
                [EnableKeyRotation], writes;
            /// Turns off automatic key-material rotation.
            DisableKeyRotation = disable_key_rotation(KeyIdRequest) -> Empty,
                [DisableKeyRotation], writes;
            /// Whether and when a key's material rotates automatically.
            GetKeyRotationStatus = get_key_rotation_status(KeyIdRequest)
                -> KeyRotationStatusResponse, [GetKeyRotationStatus], reads;
            /// Adds a new version of a key's material now.
            RotateKeyOnDemand = rotate_key_on_demand(KeyIdRequest) -> KeyIdResponse,
                [RotateKeyOnDemand], writes;
            /// Lists a key's material rotations, paged.
            ListKeyRotations = list_key_rotations(ListRequest) -> ListKeyRotationsResponse,
                [ListKeyRotations], reads;
            /// Encrypts at most 4096 bytes under a key.
            Encrypt = encrypt(EncryptRequest) -> EncryptResponse, [Encrypt], reads;
            /// Decrypts a ciphertext blob (the blob names its key).
            Decrypt = decrypt(DecryptRequest) -> DecryptResponse, [Decrypt], reads;
            /// Decrypts and encrypts again inside the service, under another
            /// key or context; the plaintext never leaves.
            ReEncrypt = re_encrypt(ReEncryptRequest) -> ReEncryptResponse,
                [ReEncryptFrom, ReEncryptTo], reads;
            /// A fresh data key, in plaintext and wrapped.
            GenerateDataKey = generate_data_key(GenerateDataKeyRequest)
                -> GenerateDataKeyResponse, [GenerateDataKey], reads;
            /// A fresh data key, wrapped only.
            GenerateDataKeyWithoutPlaintext = generate_data_key_without_plaintext(
                GenerateDataKeyRequest) -> GenerateDataKeyWithoutPlaintextResponse,
                [GenerateDataKeyWithoutPlaintext], reads;
            /// Random bytes.
            GenerateRandom = generate_random(GenerateRandomRequest) -> GenerateRandomResponse,
                [GenerateRandom], reads;
            /// The policy that applies to a key, as TOML.
            GetKeyPolicy = get_key_policy(GetKeyPolicyRequest) -> GetKeyPolicyResponse,
                [GetKeyPolicy], reads;
            /// The names of the policies that apply to a key.
            ListKeyPolicies = list_key_policies(ListRequest) -> ListKeyPoliciesResponse,
                [ListKeyPolicies], reads;
            /// Creates a principal and its first access key (rewrap extension).
            CreatePrincipal = create_principal(PrincipalRequest) -> AccessKeyResponse,
                [CreatePrincipal], writes;
            /// Deletes a principal (rewrap extension).
            DeletePrincipal = delete_principal(PrincipalRequest) -> Empty,
                [DeletePrincipal], writes;
            /// Lists principals (rewrap extension).
            ListPrincipals = list_principals(Empty) -> ListPrincipalsResponse,
                [ListPrincipals], reads;
            /// Adds an access key to a principal (rewrap extension).
            CreateAccessKey = create_access_key(PrincipalRequest) -> AccessKeyResponse,
                [CreateAccessKey], writes;
            /// Deletes an access key (rewrap extension).
            DeleteAccessKey = delete_access_key(DeleteAccessKeyRequest) -> Empty,
                [DeleteAccessKey], writes;
            /// Who the caller is, as the KMS authenticated it (STS's name;
            /// rewrap extension): any authenticated caller, no policy action.
            GetCallerIdentity = get_caller_identity(Empty) -> CallerIdentityResponse,
                authenticated, reads;
            /// Explains whether a principal may perform an action, and which
            /// statement and condition decided (rewrap extension; `rewrap
            /// policy check`).
            CheckPolicy = check_policy(CheckPolicyRequest) -> CheckPolicyResponse,
                [CheckPolicy], reads;
            /// Verifies the audit trail's chain and sealed checkpoint; records
            /// its own use after (rewrap extension).
            VerifyAuditTrail = verify_audit_trail(Empty) -> VerifyAuditTrailResponse,
                [ReadAuditTrail], reads;
            /// Usage per key, principal and operation from the audit trail,
            /// paged (rewrap extension).
            GetAuditReport = get_audit_report(AuditReportRequest) -> AuditReportResponse,
                [ReadAuditTrail], reads;
            // Custom key stores (PKCS#11 tokens; issue 13).
            /// Records a custom key store: a PKCS#11 module, a token and
            /// where its user PIN is read.
            CreateCustomKeyStore = create_custom_key_store(CreateCustomKeyStoreRequest)
                -> CreateCustomKeyStoreResponse, [CreateCustomKeyStore], writes;
            /// Custom key stores and their connection states, paged.
            DescribeCustomKeyStores = describe_custom_key_stores(DescribeCustomKeyStoresRequest)
                -> DescribeCustomKeyStoresResponse, [DescribeCustomKeyStores], reads;
            /// Logs in to a custom key store's token; its keys become usable.
            ConnectCustomKeyStore = connect_custom_key_store(CustomKeyStoreIdRequest) -> Empty,
                [ConnectCustomKeyStore], writes;
            /// Disconnects a custom key store; its keys refuse cryptography.
            DisconnectCustomKeyStore = disconnect_custom_key_store(CustomKeyStoreIdRequest)
                -> Empty, [DisconnectCustomKeyStore], writes;
            /// Renames a custom key store or changes its module, token or PIN source.
            UpdateCustomKeyStore = update_custom_key_store(UpdateCustomKeyStoreRequest) -> Empty,
                [UpdateCustomKeyStore], writes;
            /// Deletes a disconnected custom key store that holds no keys.
            DeleteCustomKeyStore = delete_custom_key_store(CustomKeyStoreIdRequest) -> Empty,
                [DeleteCustomKeyStore], writes;
            // ----- issue 15 part A: tags and grants -----
            /// Adds or replaces tags on a key.
            TagResource = tag_resource(TagResourceRequest) -> Empty, [TagResource], writes;
            /// Removes tags from a key.
            UntagResource = untag_resource(UntagResourceRequest) -> Empty, [UntagResource], writes;
            /// Lists a key's tags, paged.
            ListResourceTags = list_resource_tags(ListResourceTagsRequest)
                -> ListResourceTagsResponse, [ListResourceTags], reads;
            /// Gives a principal a narrow, revocable right to use a key.
            CreateGrant = create_grant(CreateGrantRequest) -> CreateGrantResponse,
                [CreateGrant], writes;
            /// Lists a key's grants, paged.
            ListGrants = list_grants(ListGrantsRequest) -> ListGrantsResponse, [ListGrants], reads;
            /// Lists the grants a principal may retire, paged.
            ListRetirableGrants = list_retirable_grants(ListRetirableGrantsRequest)
                -> ListGrantsResponse, [ListRetirableGrants], reads;
            /// Retires a grant (its retiring principal or grantee, or an administrator).
            RetireGrant = retire_grant(RetireGrantRequest) -> Empty, [RetireGrant], writes;
            /// Revokes a grant (an administrator of the key).
            RevokeGrant = revoke_grant(RevokeGrantRequest) -> Empty, [RevokeGrant], writes;
            // Asymmetric and HMAC keys (issue 15), imported key material (issue 13).
            /// Signs a message or digest with an asymmetric SIGN_VERIFY key.
            Sign = sign(SignRequest) -> SignResponse, [Sign], reads;
            /// Verifies a signature made with an asymmetric SIGN_VERIFY key.
            Verify = verify(VerifyRequest) -> VerifyResponse, [Verify], reads;
            /// The public key of an asymmetric key (DER SubjectPublicKeyInfo).
            GetPublicKey = get_public_key(KeyIdRequest) -> GetPublicKeyResponse,
                [GetPublicKey], reads;
            /// An HMAC of a message under a GENERATE_VERIFY_MAC key.
            GenerateMac = generate_mac(GenerateMacRequest) -> GenerateMacResponse,
                [GenerateMac], reads;
            /// Verifies an HMAC made under a GENERATE_VERIFY_MAC key.
            VerifyMac = verify_mac(VerifyMacRequest) -> VerifyMacResponse, [VerifyMac], reads;
            /// A fresh asymmetric data key pair, its private key in plaintext
            /// and wrapped under a symmetric key.
            GenerateDataKeyPair = generate_data_key_pair(GenerateDataKeyPairRequest)
                -> GenerateDataKeyPairResponse, [GenerateDataKeyPair], reads;
            /// A fresh asymmetric data key pair, its private key wrapped only.
            GenerateDataKeyPairWithoutPlaintext = generate_data_key_pair_without_plaintext(
                GenerateDataKeyPairRequest) -> GenerateDataKeyPairWithoutPlaintextResponse,
                [GenerateDataKeyPairWithoutPlaintext], reads;
            /// A wrapping public key and import token for an EXTERNAL key.
            GetParametersForImport = get_parameters_for_import(GetParametersForImportRequest)
                -> GetParametersForImportResponse, [GetParametersForImport], writes;
            /// Imports wrapped key material into an EXTERNAL key.
            ImportKeyMaterial = import_key_material(ImportKeyMaterialRequest) -> Empty,
                [ImportKeyMaterial], writes;
            /// Deletes an EXTERNAL key's imported material (state PendingImport).
            DeleteImportedKeyMaterial = delete_imported_key_material(KeyIdRequest) -> Empty,
                [DeleteImportedKeyMaterial], writes;
        }
    };
}
pub(crate) use for_each_operation;

/// The access part of a table row as the actions it needs: a non-empty
/// list, or none for `authenticated` (an empty list `[]` does not match).
macro_rules! access_actions {
    ([$($action:ident),+]) => {
        &[$(Action::$action),+]
    };
    (authenticated) => {
        &[]
    };
}

/// `writes` or `reads` in a table row, as a bool.
macro_rules! writes_keystore {
    (writes) => {
        true
    };
    (reads) => {
        false
    };
}

macro_rules! define_operations {
    ($( $(#[$meta:meta])* $op:ident = $method:ident($req:ty) -> $resp:ty,
        $access:tt, $effect:ident; )*) => {
        /// Every operation rewrap serves. The name is the `X-Amz-Target` suffix.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
        pub enum Operation {
            $( $(#[$meta])* $op, )*
        }

        impl Operation {
            /// Every operation, in table order.
            pub const ALL: &'static [Operation] = &[$(Operation::$op),*];

            /// The operation's AWS name, e.g. `ReEncrypt`.
            pub const fn name(self) -> &'static str {
                match self {
                    $(Operation::$op => stringify!($op),)*
                }
            }

            /// The policy actions a caller needs for this operation (on the
            /// keys the request names, or on `*` for account-level ones);
            /// empty exactly when [`Operation::authenticated_only`].
            pub const fn actions(self) -> &'static [Action] {
                match self {
                    $(Operation::$op => access_actions!($access),)*
                }
            }

            /// Whether any authenticated caller may call the operation, with
            /// no policy action (the row says `authenticated`).
            pub const fn authenticated_only(self) -> bool {
                self.actions().is_empty()
            }

            /// Whether the operation changes the keystore (an fsync'd write):
            /// the server runs such operations off its I/O threads.
            pub const fn writes_keystore(self) -> bool {
                match self {
                    $(Operation::$op => writes_keystore!($effect),)*
                }
            }
        }
    };
}
for_each_operation!(define_operations);

impl Operation {
    /// Looks an operation up by its AWS name.
    pub fn from_name(name: &str) -> Option<Operation> {
        Operation::ALL.iter().copied().find(|o| o.name() == name)
    }
}

impl std::fmt::Display for Operation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

macro_rules! define_actions {
    ($( $(#[$meta:meta])* $action:ident = $name:literal, )*) => {
        /// Every action a policy can name. A policy statement's action set is
        /// a bitset over these ([`Action::bit`]).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Action {
            $( $(#[$meta])* $action, )*
        }

        impl Action {
            /// Every action, in declaration order.
            pub const ALL: &'static [Action] = &[$(Action::$action),*];

            /// The action's policy name, e.g. `kms:Decrypt`.
            pub const fn name(self) -> &'static str {
                match self {
                    $(Action::$action => $name,)*
                }
            }
        }
    };
}

define_actions! {
    /// Encrypt under the key.
    Encrypt = "kms:Encrypt",
    /// Decrypt a ciphertext made under the key.
    Decrypt = "kms:Decrypt",
    /// ReEncrypt from a ciphertext made under the key.
    ReEncryptFrom = "kms:ReEncryptFrom",
    /// ReEncrypt into a ciphertext under the key.
    ReEncryptTo = "kms:ReEncryptTo",
    /// GenerateDataKey under the key.
    GenerateDataKey = "kms:GenerateDataKey",
    /// GenerateDataKeyWithoutPlaintext under the key.
    GenerateDataKeyWithoutPlaintext = "kms:GenerateDataKeyWithoutPlaintext",
    /// GenerateRandom (account level).
    GenerateRandom = "kms:GenerateRandom",
    /// CreateKey (account level).
    CreateKey = "kms:CreateKey",
    /// DescribeKey.
    DescribeKey = "kms:DescribeKey",
    /// ListKeys (account level).
    ListKeys = "kms:ListKeys",
    /// ListAliases.
    ListAliases = "kms:ListAliases",
    /// UpdateKeyDescription.
    UpdateKeyDescription = "kms:UpdateKeyDescription",
    /// EnableKey.
    EnableKey = "kms:EnableKey",
    /// DisableKey.
    DisableKey = "kms:DisableKey",
    /// ScheduleKeyDeletion.
    ScheduleKeyDeletion = "kms:ScheduleKeyDeletion",
    /// CancelKeyDeletion.
    CancelKeyDeletion = "kms:CancelKeyDeletion",
    /// CreateAlias (on the alias and on its key).
    CreateAlias = "kms:CreateAlias",
    /// UpdateAlias (on the alias and on its keys).
    UpdateAlias = "kms:UpdateAlias",
    /// DeleteAlias.
    DeleteAlias = "kms:DeleteAlias",
    /// EnableKeyRotation.
    EnableKeyRotation = "kms:EnableKeyRotation",
    /// DisableKeyRotation.
    DisableKeyRotation = "kms:DisableKeyRotation",
    /// GetKeyRotationStatus.
    GetKeyRotationStatus = "kms:GetKeyRotationStatus",
    /// RotateKeyOnDemand.
    RotateKeyOnDemand = "kms:RotateKeyOnDemand",
    /// ListKeyRotations.
    ListKeyRotations = "kms:ListKeyRotations",
    /// GetKeyPolicy.
    GetKeyPolicy = "kms:GetKeyPolicy",
    /// ListKeyPolicies.
    ListKeyPolicies = "kms:ListKeyPolicies",
    /// CreatePrincipal (account level; rewrap extension).
    CreatePrincipal = "kms:CreatePrincipal",
    /// DeletePrincipal (account level; rewrap extension).
    DeletePrincipal = "kms:DeletePrincipal",
    /// ListPrincipals (account level; rewrap extension).
    ListPrincipals = "kms:ListPrincipals",
    /// CreateAccessKey (account level; rewrap extension).
    CreateAccessKey = "kms:CreateAccessKey",
    /// DeleteAccessKey (account level; rewrap extension).
    DeleteAccessKey = "kms:DeleteAccessKey",
    /// Read the audit trail (VerifyAuditTrail, GetAuditReport, `rewrap
    /// audit`; rewrap extension).
    ReadAuditTrail = "rewrap:ReadAuditTrail",
    /// Ask the policy engine about any principal (`rewrap policy check`;
    /// rewrap extension).
    CheckPolicy = "rewrap:CheckPolicy",
    // Custom key stores (issue 13), account level.
    /// CreateCustomKeyStore.
    CreateCustomKeyStore = "kms:CreateCustomKeyStore",
    /// DescribeCustomKeyStores.
    DescribeCustomKeyStores = "kms:DescribeCustomKeyStores",
    /// ConnectCustomKeyStore.
    ConnectCustomKeyStore = "kms:ConnectCustomKeyStore",
    /// DisconnectCustomKeyStore.
    DisconnectCustomKeyStore = "kms:DisconnectCustomKeyStore",
    /// UpdateCustomKeyStore.
    UpdateCustomKeyStore = "kms:UpdateCustomKeyStore",
    /// DeleteCustomKeyStore.
    DeleteCustomKeyStore = "kms:DeleteCustomKeyStore",
    // ----- issue 15 part A: tags and grants -----
    /// TagResource.
    TagResource = "kms:TagResource",
    /// UntagResource.
    UntagResource = "kms:UntagResource",
    /// ListResourceTags.
    ListResourceTags = "kms:ListResourceTags",
    /// CreateGrant.
    CreateGrant = "kms:CreateGrant",
    /// ListGrants.
    ListGrants = "kms:ListGrants",
    /// ListRetirableGrants (account level).
    ListRetirableGrants = "kms:ListRetirableGrants",
    /// RetireGrant (besides the grant's own retiring principal and grantee).
    RetireGrant = "kms:RetireGrant",
    /// RevokeGrant.
    RevokeGrant = "kms:RevokeGrant",
    // Asymmetric and HMAC keys (issue 15), imported key material (issue 13).
    /// Sign with the key.
    Sign = "kms:Sign",
    /// Verify with the key.
    Verify = "kms:Verify",
    /// GetPublicKey.
    GetPublicKey = "kms:GetPublicKey",
    /// GenerateMac with the key.
    GenerateMac = "kms:GenerateMac",
    /// VerifyMac with the key.
    VerifyMac = "kms:VerifyMac",
    /// GenerateDataKeyPair under the key.
    GenerateDataKeyPair = "kms:GenerateDataKeyPair",
    /// GenerateDataKeyPairWithoutPlaintext under the key.
    GenerateDataKeyPairWithoutPlaintext = "kms:GenerateDataKeyPairWithoutPlaintext",
    /// GetParametersForImport.
    GetParametersForImport = "kms:GetParametersForImport",
    /// ImportKeyMaterial.
    ImportKeyMaterial = "kms:ImportKeyMaterial",
    /// DeleteImportedKeyMaterial.
    DeleteImportedKeyMaterial = "kms:DeleteImportedKeyMaterial",
}

// An action set is a bitset in a u64.
const _: () = assert!(Action::ALL.len() <= 64);

impl Action {
    /// Looks an action up by its policy name; AWS action names are
    /// case-insensitive, and the exact spelling is tried first.
    pub fn from_name(name: &str) -> Option<Action> {
        let all = Action::ALL.iter().copied();
        all.clone().find(|a| a.name() == name).or_else(|| {
            all.into_iter()
                .find(|a| a.name().eq_ignore_ascii_case(name))
        })
    }

    /// This action's bit in an action set.
    pub const fn bit(self) -> u64 {
        1 << self as u32
    }

    /// The bitset of `actions`.
    pub fn bits(actions: &[Action]) -> u64 {
        actions.iter().fold(0, |bits, a| bits | a.bit())
    }
}

impl std::fmt::Display for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_are_unique() {
        for op in Operation::ALL {
            assert_eq!(Operation::from_name(op.name()), Some(*op));
        }
        for a in Action::ALL {
            assert_eq!(Action::from_name(a.name()), Some(*a));
            assert_eq!(Action::from_name(&a.name().to_uppercase()), Some(*a));
        }
        assert_eq!(Operation::from_name("Frobnicate"), None);
        assert_eq!(Action::from_name("kms:Frobnicate"), None);
    }

    #[test]
    fn every_operation_needs_actions_and_every_kms_action_has_an_operation() {
        let open: Vec<&str> = Operation::ALL
            .iter()
            .filter(|op| op.authenticated_only())
            .map(|op| op.name())
            .collect();
        // The one operation without a policy action returns only who the caller is.
        assert_eq!(open, ["GetCallerIdentity"]);
        let used = Operation::ALL
            .iter()
            .fold(0, |bits, op| bits | Action::bits(op.actions()));
        let unused: Vec<&str> = Action::ALL
            .iter()
            .filter(|a| used & a.bit() == 0)
            .map(|a| a.name())
            .collect();
        assert_eq!(unused, Vec::<&str>::new());
    }

    #[test]
    fn keystore_writers_are_exactly_the_state_changing_operations() {
        let writers: Vec<&str> = Operation::ALL
            .iter()
            .filter(|o| o.writes_keystore())
            .map(|o| o.name())
            .collect();
        assert_eq!(
            writers,
            [
                "CreateKey",
                "UpdateKeyDescription",
                "EnableKey",
                "DisableKey",
                "ScheduleKeyDeletion",
                "CancelKeyDeletion",
                "CreateAlias",
                "UpdateAlias",
                "DeleteAlias",
                "EnableKeyRotation",
                "DisableKeyRotation",
                "RotateKeyOnDemand",
                "CreatePrincipal",
                "DeletePrincipal",
                "CreateAccessKey",
                "DeleteAccessKey",
                "CreateCustomKeyStore",
                "ConnectCustomKeyStore",
                "DisconnectCustomKeyStore",
                "UpdateCustomKeyStore",
                "DeleteCustomKeyStore",
                "TagResource",
                "UntagResource",
                "CreateGrant",
                "RetireGrant",
                "RevokeGrant",
                "GetParametersForImport",
                "ImportKeyMaterial",
                "DeleteImportedKeyMaterial",
            ]
        );
    }
}

//! Request and response types of the custom key store operations
//! (CreateCustomKeyStore, DescribeCustomKeyStores, ConnectCustomKeyStore,
//! DisconnectCustomKeyStore, UpdateCustomKeyStore, DeleteCustomKeyStore).
//!
//! AWS's member names where they fit. rewrap's store type is `PKCS11`; its
//! connection is named by the rewrap members `Pkcs11ModulePath`,
//! `TokenLabel` or `TokenSerial`, and `PinSource` (`file:PATH` or
//! `env:NAME`). AWS's `KeyStorePassword` is accepted only as such a
//! reference: a PIN given inline is refused.

use serde::{Deserialize, Serialize};

/// CreateCustomKeyStore.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
#[allow(missing_docs)] // reason: AWS field names, and the rewrap members the module doc names
pub struct CreateCustomKeyStoreRequest {
    pub custom_key_store_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom_key_store_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pkcs11_module_path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_label: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_serial: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pin_source: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_store_password: Option<String>,
}

/// CreateCustomKeyStore response.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
#[allow(missing_docs)] // reason: AWS field names
pub struct CreateCustomKeyStoreResponse {
    pub custom_key_store_id: String,
}

/// ConnectCustomKeyStore, DisconnectCustomKeyStore, DeleteCustomKeyStore.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
#[allow(missing_docs)] // reason: AWS field names
pub struct CustomKeyStoreIdRequest {
    pub custom_key_store_id: String,
}

/// UpdateCustomKeyStore: each member given replaces the stored one.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
#[allow(missing_docs)] // reason: AWS field names, and the rewrap members the module doc names
pub struct UpdateCustomKeyStoreRequest {
    pub custom_key_store_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new_custom_key_store_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pkcs11_module_path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_label: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_serial: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pin_source: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_store_password: Option<String>,
}

/// DescribeCustomKeyStores: one store by id or name, or all, paged.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
#[allow(missing_docs)] // reason: AWS field names
pub struct DescribeCustomKeyStoresRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom_key_store_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom_key_store_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub marker: Option<String>,
}

/// One store in a DescribeCustomKeyStores response.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
#[allow(missing_docs)] // reason: AWS field names, and the rewrap members the module doc names
pub struct CustomKeyStoreEntry {
    pub custom_key_store_id: String,
    pub custom_key_store_name: String,
    pub custom_key_store_type: String,
    pub connection_state: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_error_code: Option<String>,
    /// rewrap extension: what failed, when `ConnectionState` is `FAILED`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_error_message: Option<String>,
    /// Seconds since the Unix epoch.
    pub creation_date: f64,
    pub pkcs11_module_path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_label: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_serial: Option<String>,
    pub pin_source: String,
    /// rewrap extension: token objects of deleted keys that are still to be
    /// destroyed (C_DestroyObject) when the store is next connected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_objects_to_destroy: Option<usize>,
}

/// DescribeCustomKeyStores response.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
#[allow(missing_docs)] // reason: AWS field names
pub struct DescribeCustomKeyStoresResponse {
    pub custom_key_stores: Vec<CustomKeyStoreEntry>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_marker: Option<String>,
    pub truncated: bool,
}

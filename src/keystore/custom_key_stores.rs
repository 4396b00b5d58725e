//! Custom key store records, as the sealed keystore state holds them: where
//! the PKCS#11 token is and how rewrap was last told to treat it. The PIN
//! itself is never stored, only where to read it.

use serde::{Deserialize, Serialize};

/// The connection state of a custom key store, with AWS's names.
///
/// `CONNECTING` is written before rewrap logs in to the token and replaced
/// by `CONNECTED` or `FAILED` after; a process killed in between leaves it,
/// and ConnectCustomKeyStore tries again. `DISCONNECTING` is AWS's
/// transient state; rewrap disconnects in one keystore update and never
/// records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ConnectionState {
    /// Keys in the store can be used.
    Connected,
    /// A connection attempt is under way (or was interrupted).
    Connecting,
    /// The last connection attempt failed; see the error code.
    Failed,
    /// Keys in the store refuse cryptographic operations.
    Disconnected,
    /// Never recorded by rewrap (see the type's docs).
    Disconnecting,
}

impl ConnectionState {
    /// The AWS name.
    pub fn as_str(self) -> &'static str {
        match self {
            ConnectionState::Connected => "CONNECTED",
            ConnectionState::Connecting => "CONNECTING",
            ConnectionState::Failed => "FAILED",
            ConnectionState::Disconnected => "DISCONNECTED",
            ConnectionState::Disconnecting => "DISCONNECTING",
        }
    }
}

/// A custom key store backed by a PKCS#11 token.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CustomKeyStoreRecord {
    /// `cks-` and 17 hex digits, as AWS's.
    pub id: String,
    /// Unique among the keystore's custom key stores.
    pub name: String,
    /// Creation time, seconds since the epoch.
    pub created: f64,
    /// The PKCS#11 module (shared library).
    pub module_path: String,
    /// The token's label, when it is chosen by label.
    pub token_label: Option<String>,
    /// The token's serial number, when it is chosen by serial.
    pub token_serial: Option<String>,
    /// Where the user PIN is read: `file:PATH` or `env:NAME`.
    pub pin_source: String,
    /// The connection state.
    pub state: ConnectionState,
    /// AWS's `ConnectionErrorCode` when `FAILED`.
    pub error_code: Option<String>,
    /// What failed, when `FAILED` (never the PIN).
    pub error_message: Option<String>,
    /// Labels of token objects whose keys were deleted for good and that
    /// were not destroyed yet (the store was not connected, or the
    /// process stopped first): destroyed at the next keystore update made
    /// while the store is connected.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub objects_to_destroy: Vec<String>,
}

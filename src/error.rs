//! The one error type of rewrap's KMS operations, named after AWS KMS errors.
//!
//! Every failure a caller can see maps 1:1 to an AWS error name, so the CLI,
//! the server and remote clients agree on what went wrong. Cryptographic
//! failures carry no detail about why they failed.
//!
//! One naming convention for failure kinds across the crate: a KMS failure
//! is named by its AWS error name ([`ErrorCode::as_str`]); every other error
//! type (`EnvelopeError`, `FileError`, `ObjectStoreError`, the worker's
//! `StartError`) has a `kind()` that returns a PascalCase name, stable for
//! reports and tests; the worker's `FailureKind` serializes as such a name.

use crate::keystore::KeystoreError;
use std::fmt;

/// AWS error names, as sent in `__type` on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorCode {
    /// The named key, alias or principal does not exist.
    NotFound,
    /// The key is disabled.
    Disabled,
    /// The key's state (for example PendingDeletion) forbids the operation.
    InvalidState,
    /// The ciphertext is malformed, tampered with, or its context does not match.
    InvalidCiphertext,
    /// The ciphertext was not made under the key the caller named.
    IncorrectKey,
    /// The policy does not allow the caller this action.
    AccessDenied,
    /// A parameter is out of range or malformed.
    Validation,
    /// The name is taken.
    AlreadyExists,
    /// The alias name is malformed or reserved.
    InvalidAliasName,
    /// The ARN is malformed.
    InvalidArn,
    /// The marker of a paged list call is not one we issued.
    InvalidMarker,
    /// A limit (grant tokens, request size) was exceeded.
    LimitExceeded,
    /// The key's usage does not allow this operation.
    InvalidKeyUsage,
    /// The request body is not well-formed JSON of the expected shape.
    Serialization,
    /// The access key id is unknown.
    UnrecognizedClient,
    /// The request signature does not match.
    InvalidSignature,
    /// The authorization header is missing parts.
    IncompleteSignature,
    /// No credentials were presented.
    MissingAuthenticationToken,
    /// The request time is too far from the server's.
    RequestExpired,
    /// The operation is not supported.
    UnsupportedOperation,
    /// The KMS refused the request rate (AWS's ThrottlingException).
    Throttling,
    /// Client side only, never sent by a server: the KMS could not be
    /// reached (refused, reset or timed-out connection). Named as botocore
    /// names it.
    EndpointConnection,
    /// The key store or another dependency failed; the message says which.
    Internal,
    // Custom key stores (issue 13).
    /// No custom key store has that id or name.
    CustomKeyStoreNotFound,
    /// Another custom key store has that name.
    CustomKeyStoreNameInUse,
    /// The custom key store's connection state forbids the operation.
    CustomKeyStoreInvalidState,
    /// The custom key store still holds keys.
    CustomKeyStoreHasCMKs,
    // ----- issue 15 part A: tags, dry runs, grants -----
    /// A tag key or value is invalid, reserved, or a key would have too many tags.
    Tag,
    /// The request would have succeeded; DryRun was set (HTTP 412).
    DryRunOperation,
    /// The grant id is not a grant of the key.
    InvalidGrantId,
    /// The grant token is malformed or not one this KMS issued.
    InvalidGrantToken,
    // Asymmetric and HMAC keys, imported key material (issues 15, 13).
    /// Verify: the signature does not verify under the key and algorithm.
    KmsInvalidSignature,
    /// VerifyMac: the MAC does not verify under the key and algorithm.
    KmsInvalidMac,
    /// ImportKeyMaterial: the import token is not the key's current one.
    InvalidImportToken,
    /// ImportKeyMaterial: the import token is more than 24 hours old.
    ExpiredImportToken,
    /// ImportKeyMaterial: the material is not the key's earlier material.
    IncorrectKeyMaterial,
}

impl ErrorCode {
    /// Every code, for tables and tests.
    pub const ALL: &'static [ErrorCode] = &[
        ErrorCode::NotFound,
        ErrorCode::Disabled,
        ErrorCode::InvalidState,
        ErrorCode::InvalidCiphertext,
        ErrorCode::IncorrectKey,
        ErrorCode::AccessDenied,
        ErrorCode::Validation,
        ErrorCode::AlreadyExists,
        ErrorCode::InvalidAliasName,
        ErrorCode::InvalidArn,
        ErrorCode::InvalidMarker,
        ErrorCode::LimitExceeded,
        ErrorCode::InvalidKeyUsage,
        ErrorCode::Serialization,
        ErrorCode::UnrecognizedClient,
        ErrorCode::InvalidSignature,
        ErrorCode::IncompleteSignature,
        ErrorCode::MissingAuthenticationToken,
        ErrorCode::RequestExpired,
        ErrorCode::UnsupportedOperation,
        ErrorCode::Throttling,
        ErrorCode::EndpointConnection,
        ErrorCode::Internal,
        ErrorCode::CustomKeyStoreNotFound,
        ErrorCode::CustomKeyStoreNameInUse,
        ErrorCode::CustomKeyStoreInvalidState,
        ErrorCode::CustomKeyStoreHasCMKs,
        ErrorCode::Tag,
        ErrorCode::DryRunOperation,
        ErrorCode::InvalidGrantId,
        ErrorCode::InvalidGrantToken,
        ErrorCode::KmsInvalidSignature,
        ErrorCode::KmsInvalidMac,
        ErrorCode::InvalidImportToken,
        ErrorCode::ExpiredImportToken,
        ErrorCode::IncorrectKeyMaterial,
    ];

    /// The AWS name, e.g. `NotFoundException`.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::NotFound => "NotFoundException",
            ErrorCode::Disabled => "DisabledException",
            ErrorCode::InvalidState => "KMSInvalidStateException",
            ErrorCode::InvalidCiphertext => "InvalidCiphertextException",
            ErrorCode::IncorrectKey => "IncorrectKeyException",
            ErrorCode::AccessDenied => "AccessDeniedException",
            ErrorCode::Validation => "ValidationException",
            ErrorCode::AlreadyExists => "AlreadyExistsException",
            ErrorCode::InvalidAliasName => "InvalidAliasNameException",
            ErrorCode::InvalidArn => "InvalidArnException",
            ErrorCode::InvalidMarker => "InvalidMarkerException",
            ErrorCode::LimitExceeded => "LimitExceededException",
            ErrorCode::InvalidKeyUsage => "InvalidKeyUsageException",
            ErrorCode::Serialization => "SerializationException",
            ErrorCode::UnrecognizedClient => "UnrecognizedClientException",
            ErrorCode::InvalidSignature => "InvalidSignatureException",
            ErrorCode::IncompleteSignature => "IncompleteSignatureException",
            ErrorCode::MissingAuthenticationToken => "MissingAuthenticationTokenException",
            ErrorCode::RequestExpired => "RequestExpired",
            ErrorCode::UnsupportedOperation => "UnsupportedOperationException",
            ErrorCode::Throttling => "ThrottlingException",
            ErrorCode::EndpointConnection => "EndpointConnectionError",
            ErrorCode::Internal => "KMSInternalException",
            ErrorCode::CustomKeyStoreNotFound => "CustomKeyStoreNotFoundException",
            ErrorCode::CustomKeyStoreNameInUse => "CustomKeyStoreNameInUseException",
            ErrorCode::CustomKeyStoreInvalidState => "CustomKeyStoreInvalidStateException",
            ErrorCode::CustomKeyStoreHasCMKs => "CustomKeyStoreHasCMKsException",
            ErrorCode::Tag => "TagException",
            ErrorCode::DryRunOperation => "DryRunOperationException",
            ErrorCode::InvalidGrantId => "InvalidGrantIdException",
            ErrorCode::InvalidGrantToken => "InvalidGrantTokenException",
            ErrorCode::KmsInvalidSignature => "KMSInvalidSignatureException",
            ErrorCode::KmsInvalidMac => "KMSInvalidMacException",
            ErrorCode::InvalidImportToken => "InvalidImportTokenException",
            ErrorCode::ExpiredImportToken => "ExpiredImportTokenException",
            ErrorCode::IncorrectKeyMaterial => "IncorrectKeyMaterialException",
        }
    }

    /// Parses an AWS name; tolerates the `namespace#Name` form some services send.
    pub fn parse(name: &str) -> Option<ErrorCode> {
        let name = name.rsplit('#').next().unwrap_or(name);
        let name = name.split(':').next().unwrap_or(name);
        ErrorCode::ALL.iter().copied().find(|c| c.as_str() == name)
    }

    /// The HTTP status AWS uses for this error.
    pub fn http_status(self) -> u16 {
        match self {
            ErrorCode::Internal => 500,
            ErrorCode::EndpointConnection => 503,
            ErrorCode::DryRunOperation => 412,
            _ => 400,
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error of a KMS operation: an AWS error name and a message.
///
/// Messages never contain plaintext, key material or ciphertext bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KmsError {
    /// The AWS error name.
    pub code: ErrorCode,
    /// A human-readable message.
    pub message: String,
}

impl KmsError {
    /// A new error with the given code and message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> KmsError {
        KmsError {
            code,
            message: message.into(),
        }
    }

    /// The one error every cryptographic failure collapses to.
    pub fn invalid_ciphertext() -> KmsError {
        KmsError::new(
            ErrorCode::InvalidCiphertext,
            "The ciphertext is invalid, was tampered with, or its encryption context does not match",
        )
    }

    /// A ValidationException.
    pub fn validation(message: impl Into<String>) -> KmsError {
        KmsError::new(ErrorCode::Validation, message)
    }

    /// A KMSInternalException.
    pub fn internal(message: impl Into<String>) -> KmsError {
        KmsError::new(ErrorCode::Internal, message)
    }

    /// A NotFoundException.
    pub fn not_found(message: impl Into<String>) -> KmsError {
        KmsError::new(ErrorCode::NotFound, message)
    }
}

impl fmt::Display for KmsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for KmsError {}

/// A keystore failure fails the operation as `KMSInternalException`, except
/// a second `init`, which AWS would call `AlreadyExistsException`.
impl From<KeystoreError> for KmsError {
    fn from(e: KeystoreError) -> KmsError {
        let code = match e {
            KeystoreError::AlreadyExists { .. } => ErrorCode::AlreadyExists,
            _ => ErrorCode::Internal,
        };
        KmsError::new(code, e.to_string())
    }
}

/// Result of a KMS operation.
pub type Result<T, E = KmsError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_round_trips_through_its_name() {
        for code in ErrorCode::ALL {
            assert_eq!(ErrorCode::parse(code.as_str()), Some(*code));
        }
        assert_eq!(
            ErrorCode::parse("com.amazonaws.kms#NotFoundException"),
            Some(ErrorCode::NotFound)
        );
        assert_eq!(ErrorCode::parse("NoSuchThing"), None);
    }
}

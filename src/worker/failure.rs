//! What kind of failure an item met: one enum for every report of the
//! worker (re-wrap, inventory, tree encryption), and the one place that
//! classifies KMS, envelope, store, object-store and I/O errors into it.
//!
//! A kind lets code decide on a failure (stop on `AccessDenied`, retry on
//! `Throttled` or `Network`) without parsing its message.

use super::store::StoreError;
use crate::envelope::EnvelopeError;
use crate::error::{ErrorCode, KmsError};
use crate::files::FileError;
use crate::objstore::ObjectStoreError;
use serde::{Deserialize, Serialize};

/// The kind of an item's failure (serialized as its name, e.g.
/// `"AccessDenied"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum FailureKind {
    /// The KMS policy or the object store refused the caller (or a grant
    /// token it presented).
    AccessDenied,
    /// The key, file, object or bucket does not exist.
    NotFound,
    /// The KMS could not open the wrapped key (tampered, wrong key or
    /// context).
    InvalidCiphertext,
    /// The key is disabled or pending deletion.
    KeyState,
    /// The KMS or the store asked to slow down.
    Throttled,
    /// The KMS or the store could not be reached.
    Network,
    /// A local read, write or sync failed.
    Io,
    /// The envelope's header, slots or body are malformed or did not
    /// authenticate.
    CorruptEnvelope,
    /// The envelope's active key slot names another key than its wrapped
    /// data key does (its label was changed): corrupt, never trusted.
    SlotKeyMismatch,
    /// The envelope's encryption context is not the expected one.
    ContextMismatch,
    /// Another writer held the item's lock.
    Busy,
    /// The item kept changing under the worker (other writers).
    Conflict,
    /// The request cannot be made as given (bad parameter, name or usage).
    InvalidRequest,
    /// Anything else: the KMS's internal errors, a worker that panicked.
    Internal,
}

/// One item that failed, and why.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Failure {
    /// The item (path or object URL).
    pub path: String,
    /// What kind of failure.
    pub kind: FailureKind,
    /// Why; never contains key or plaintext bytes.
    pub error: String,
}

impl Failure {
    /// The failure of `path` with `error`, classified.
    pub fn new<E>(path: impl Into<String>, error: &E) -> Failure
    where
        E: std::fmt::Display,
        for<'e> &'e E: Into<FailureKind>,
    {
        Failure {
            path: path.into(),
            kind: error.into(),
            error: error.to_string(),
        }
    }
}

impl From<&KmsError> for FailureKind {
    fn from(e: &KmsError) -> FailureKind {
        match e.code {
            ErrorCode::AccessDenied
            | ErrorCode::UnrecognizedClient
            | ErrorCode::InvalidSignature
            | ErrorCode::IncompleteSignature
            | ErrorCode::MissingAuthenticationToken
            | ErrorCode::RequestExpired
            // A grant token refused (its grant retired or revoked) refuses
            // every item of the run alike, as a policy refusal does.
            | ErrorCode::InvalidGrantToken => FailureKind::AccessDenied,
            ErrorCode::NotFound => FailureKind::NotFound,
            ErrorCode::Disabled | ErrorCode::InvalidState => FailureKind::KeyState,
            ErrorCode::InvalidCiphertext | ErrorCode::IncorrectKey => {
                FailureKind::InvalidCiphertext
            }
            ErrorCode::LimitExceeded | ErrorCode::Throttling => FailureKind::Throttled,
            ErrorCode::EndpointConnection => FailureKind::Network,
            ErrorCode::Validation
            | ErrorCode::AlreadyExists
            | ErrorCode::InvalidAliasName
            | ErrorCode::InvalidArn
            | ErrorCode::InvalidMarker
            | ErrorCode::InvalidKeyUsage
            | ErrorCode::Serialization
            | ErrorCode::UnsupportedOperation => FailureKind::InvalidRequest,
            _ => FailureKind::Internal,
        }
    }
}

impl From<&EnvelopeError> for FailureKind {
    fn from(e: &EnvelopeError) -> FailureKind {
        match e {
            EnvelopeError::Io(e) => e.into(),
            EnvelopeError::InvalidContext(_) | EnvelopeError::InvalidParameter(_) => {
                FailureKind::InvalidRequest
            }
            EnvelopeError::SlotKeyMismatch(_) => FailureKind::SlotKeyMismatch,
            _ => FailureKind::CorruptEnvelope,
        }
    }
}

impl From<&std::io::Error> for FailureKind {
    fn from(e: &std::io::Error) -> FailureKind {
        use std::io::ErrorKind as K;
        match e.kind() {
            K::NotFound => FailureKind::NotFound,
            K::PermissionDenied => FailureKind::AccessDenied,
            K::WouldBlock => FailureKind::Busy,
            K::TimedOut
            | K::ConnectionRefused
            | K::ConnectionReset
            | K::ConnectionAborted
            | K::NotConnected
            | K::AddrNotAvailable => FailureKind::Network,
            _ => FailureKind::Io,
        }
    }
}

impl From<&ObjectStoreError> for FailureKind {
    fn from(e: &ObjectStoreError) -> FailureKind {
        match e {
            ObjectStoreError::AccessDenied(_) => FailureKind::AccessDenied,
            ObjectStoreError::BucketNotFound(_) | ObjectStoreError::NotFound(_) => {
                FailureKind::NotFound
            }
            ObjectStoreError::AlreadyExists(_) | ObjectStoreError::Conflict(_) => {
                FailureKind::Conflict
            }
            // What is left after the store's retries: throttling the store
            // kept answering, or a connection it could not make.
            ObjectStoreError::Store(text) => {
                let throttled = ["SlowDown", "429", "Too Many Requests", "Throttl"];
                if throttled.iter().any(|t| text.contains(t)) {
                    FailureKind::Throttled
                } else {
                    FailureKind::Network
                }
            }
            ObjectStoreError::Io { source, .. } => source.into(),
            ObjectStoreError::Format(e) => e.into(),
            ObjectStoreError::Kms(e) => e.into(),
            ObjectStoreError::ContextMismatch(_) => FailureKind::ContextMismatch,
            ObjectStoreError::InvalidUrl(_) | ObjectStoreError::Usage(_) => {
                FailureKind::InvalidRequest
            }
        }
    }
}

impl From<&StoreError> for FailureKind {
    fn from(e: &StoreError) -> FailureKind {
        match e {
            StoreError::Conflict(_) => FailureKind::Conflict,
            StoreError::Format(e) => e.into(),
            StoreError::Io { source, .. } => source.into(),
            StoreError::Object { source, .. } => (&**source).into(),
            StoreError::Busy => FailureKind::Busy,
        }
    }
}

impl From<&FileError> for FailureKind {
    fn from(e: &FileError) -> FailureKind {
        match e {
            FileError::Format(e) => e.into(),
            FileError::Kms(e) => e.into(),
            FileError::Io { source, .. } => source.into(),
            FileError::ContextMismatch(_) => FailureKind::ContextMismatch,
            FileError::Usage(_) => FailureKind::InvalidRequest,
            FileError::Changed(_) => FailureKind::Conflict,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_serialize_as_their_names() {
        let f = Failure::new("a", &KmsError::new(ErrorCode::AccessDenied, "no"));
        let v = serde_json::to_value(&f).unwrap();
        assert_eq!(v["kind"], "AccessDenied");
        let e = StoreError::Format(EnvelopeError::TruncatedHeader);
        assert_eq!(FailureKind::from(&e), FailureKind::CorruptEnvelope);
        let io = std::io::Error::from(std::io::ErrorKind::PermissionDenied);
        assert_eq!(
            FailureKind::from(&StoreError::io("open", io)),
            FailureKind::AccessDenied
        );
    }

    #[test]
    fn a_remote_kms_failure_keeps_its_kind() {
        let kind = |code| FailureKind::from(&KmsError::new(code, "x"));
        assert_eq!(kind(ErrorCode::EndpointConnection), FailureKind::Network);
        assert_eq!(kind(ErrorCode::Throttling), FailureKind::Throttled);
        assert_eq!(kind(ErrorCode::LimitExceeded), FailureKind::Throttled);
        assert_eq!(kind(ErrorCode::Internal), FailureKind::Internal);
    }
}

//! The one interface every consumer of a KMS goes through.
//!
//! The CLI, the re-wrap worker and the server call a [`Kms`]; they
//! never touch a keystore. [`crate::service::LocalSession`] implements it over
//! the embedded keystore, [`crate::client::RemoteKms`] over the AWS KMS wire
//! protocol, so a local and a remote KMS are interchangeable.
//!
//! The required method is [`Kms::call`], one operation as JSON bytes in and out
//! (exactly the wire body). The typed methods serialize through it by default;
//! an in-process implementation overrides them to skip JSON.

// Every request and response type: the operations table names them unqualified.
use crate::api::*;
use crate::error::{KmsError, Result};
use crate::operation::{for_each_operation, Operation};
use crate::secret::Secret;
use serde::{de::DeserializeOwned, Serialize};

macro_rules! define_kms {
    ($( $(#[$meta:meta])* $op:ident = $method:ident($req:ty) -> $resp:ty,
        $access:tt, $effect:ident; )*) => {
        /// A KMS, as seen by one authenticated principal.
        pub trait Kms: Send + Sync {
            /// Calls `op` with a JSON request body; returns the JSON response body.
            fn call(&self, op: Operation, request: &[u8]) -> Result<Secret>;

            $(
                $(#[$meta])*
                fn $method(&self, r: &$req) -> Result<$resp> {
                    call_typed(self, Operation::$op, r)
                }
            )*

            /// ReEncrypt of each request, one result per request, in order: the
            /// batch form the rotation worker uses. Not an AWS operation: each
            /// request is an ordinary ReEncrypt (checked, audited and answered on
            /// its own). This default makes the calls one by one; the in-process
            /// service overrides it to write the batch's audit records in one
            /// group commit.
            fn re_encrypt_many(&self, requests: &[ReEncryptRequest]) -> Vec<Result<ReEncryptResponse>> {
                requests.iter().map(|r| self.re_encrypt(r)).collect()
            }
        }

        /// Runs `op` with a JSON body against the typed methods of `kms`: the body of
        /// [`Kms::call`] for in-process implementations and of the server.
        pub fn dispatch<K: Kms + ?Sized>(kms: &K, op: Operation, body: &[u8]) -> Result<Secret> {
            match op {
                $(Operation::$op => to_json(&kms.$method(&from_json(body)?)?),)*
            }
        }
    };
}
for_each_operation!(define_kms);

/// Serializes `value` as JSON into a zeroizing buffer of exactly its size:
/// the value is serialized once to count the bytes, then into a buffer of
/// that capacity, so the buffer never reallocates (which would leave a copy
/// of a secret behind) and dropping it wipes only what it held (a fixed
/// room for the largest body made every call wipe 32 KiB).
pub fn to_json<T: Serialize + ?Sized>(value: &T) -> Result<Secret> {
    let cannot = |e: serde_json::Error| KmsError::internal(format!("cannot serialize: {e}"));
    let mut counter = Counter(0);
    serde_json::to_writer(&mut counter, value).map_err(cannot)?;
    let mut out = Secret::new(Vec::with_capacity(counter.0));
    serde_json::to_writer(out.expose_mut(), value).map_err(cannot)?;
    debug_assert_eq!(out.len(), counter.0);
    Ok(out)
}

/// A writer that only counts the bytes written to it.
struct Counter(usize);

impl std::io::Write for Counter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len();
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// How the message of a body that does not parse starts.
pub(crate) const MALFORMED: &str = "malformed request body";

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
            format!("{MALFORMED}: {}", redact_serde_error(&e)),
        )
    })
}

/// A request body without a required member, as AWS answers it
/// (`ValidationException`, "Value null at 'keyId' ..."); `None` for any
/// other error. Takes the error [`from_json`] gave the request body.
pub(crate) fn missing_member(e: &KmsError) -> Option<KmsError> {
    let rest = e.message.strip_prefix(MALFORMED)?;
    let field = rest.strip_prefix(": missing field `")?.split('`').next()?;
    let member = crate::service::validation::member_name(field);
    Some(crate::service::validation::null(&member))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::EncryptRequest;

    /// The buffer holding a serialized secret is exactly its size: it never
    /// grew (no copy left behind) and its drop wipes what it held.
    #[test]
    fn to_json_fills_a_buffer_of_exactly_its_size() {
        for size in [0usize, 1, 100, 4096] {
            let request = EncryptRequest {
                key_id: "alias/app".into(),
                plaintext: Secret::new(vec![7u8; size]),
                encryption_context: Some(
                    [
                        ("b".to_string(), "2".to_string()),
                        ("a".to_string(), "1".to_string()),
                    ]
                    .into_iter()
                    .collect(),
                ),
                ..Default::default()
            };
            let mut json = to_json(&request).unwrap();
            let expected = serde_json::to_vec(&request).unwrap();
            assert_eq!(json.expose(), &expected[..]);
            assert_eq!(json.expose_mut().capacity(), expected.len(), "{size} bytes");
        }
    }
}

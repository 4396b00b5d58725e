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

/// Room for the largest request or response (4096 bytes of plaintext as
/// base64 plus a ciphertext blob), so serializing a secret never reallocates
/// and leaves a copy behind.
const JSON_BUFFER: usize = 32 * 1024;

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

/// Serializes `value` as JSON into a zeroizing buffer.
pub fn to_json<T: Serialize + ?Sized>(value: &T) -> Result<Secret> {
    let mut out = Secret::new(Vec::with_capacity(JSON_BUFFER));
    serde_json::to_writer(out.expose_mut(), value)
        .map_err(|e| KmsError::internal(format!("cannot serialize: {e}")))?;
    Ok(out)
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

//! [`LocalSession`]: one authenticated principal's view of a
//! [`KmsService`], and its [`Kms`] implementation, which forwards each
//! operation to the service's handler.

use super::{Caller, KmsService};
// Every request and response type: the operations table names them unqualified.
use super::usage::audit_parameters;
use crate::api::*;
use crate::error::{ErrorCode, Result};
use crate::kms::MALFORMED;
use crate::kms::{dispatch, Kms};
use crate::operation::for_each_operation;
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

macro_rules! forward_to_service {
    ($( $(#[$meta:meta])* $op:ident = $method:ident($req:ty) -> $resp:ty,
        $access:tt, $effect:ident; )*) => {
        /// Each operation is the [`KmsService`] handler of the same name,
        /// called as this session's principal (generated from the
        /// operations table).
        impl Kms for LocalSession {
            fn call(&self, op: Operation, request: &[u8]) -> Result<Secret> {
                dispatch(self, op, request).map_err(|e| {
                    // A body that does not parse never reaches a handler,
                    // so it would leave no record of its own. A missing
                    // required member is AWS's ValidationException.
                    if e.code == ErrorCode::Serialization && e.message.starts_with(MALFORMED) {
                        let e = crate::kms::missing_member(&e).unwrap_or(e);
                        self.service.audit_malformed(&self.caller, op, &e);
                        return e;
                    }
                    e
                })
            }

            $(
                fn $method(&self, r: &$req) -> Result<$resp> {
                    match audit_parameters(Operation::$op, r) {
                        None => self.service.$method(&self.caller, r),
                        Some(params) => {
                            let caller = Caller {
                                request_parameters: Some(params),
                                ..self.caller.clone()
                            };
                            self.service.$method(&caller, r)
                        }
                    }
                }
            )*

            fn re_encrypt_many(
                &self,
                requests: &[ReEncryptRequest],
            ) -> Vec<Result<ReEncryptResponse>> {
                self.service.re_encrypt_many(&self.caller, requests)
            }
        }
    };
}
for_each_operation!(forward_to_service);

//! `rewrap whoami`: who the CLI acts as, from which credentials, against
//! which KMS, and what that KMS says the caller is (GetCallerIdentity).

use super::{Context, OpError};
use rewrap::api::Empty;

/// Examples at the end of `rewrap whoami --help`.
pub(crate) const AFTER_HELP: &str = "\
Examples:
  rewrap whoami
  rewrap --profile storage-rotator whoami --output text
  rewrap --endpoint-url https://kms.example:4443 whoami --query Principal

The principal is what the KMS says after checking the credentials (the
keystore here, or the server with --endpoint-url): GetCallerIdentity needs
no policy right and is recorded in the audit trail.";

/// Prints the caller's identity; 253 when the credentials are missing or
/// refused, 254 when the KMS refuses the call.
pub(crate) fn run(ctx: &Context) -> anyhow::Result<i32> {
    let (creds, source) = ctx.credentials_with_source()?;
    let access_key_id = creds.access_key_id.clone();
    let kms = ctx.kms_as(creds)?;
    let identity = kms
        .get_caller_identity(&Empty {})
        .map_err(|error| OpError {
            operation: "GetCallerIdentity",
            error,
        })?;
    let mut value = serde_json::json!({
        "Principal": identity.principal,
        "Arn": identity.arn,
        "Account": identity.account,
        "AccessKeyId": access_key_id,
        "Credentials": source.to_string(),
    });
    match &ctx.global.endpoint_url {
        Some(url) => value["Endpoint"] = url.clone().into(),
        None => value["Keystore"] = ctx.home().display().to_string().into(),
    }
    ctx.print_value(&value)?;
    Ok(0)
}

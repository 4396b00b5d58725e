//! Request validation as AWS's front ends word it: a required member that is
//! empty or missing is `ValidationException` with "1 validation error
//! detected: Value '' at 'keyId' failed to satisfy constraint: Member must
//! have length greater than or equal to 1".

use crate::error::{KmsError, Result};

/// The AWS message of a member shorter than its minimum.
pub(crate) fn too_short(member: &str, value: &str, min: usize) -> KmsError {
    one(format!(
        "Value '{}' at '{member}' failed to satisfy constraint: \
         Member must have length greater than or equal to {min}",
        quote(value)
    ))
}

/// The AWS message of a member longer than its maximum (the value is not
/// repeated: it may be long).
pub(crate) fn too_long(member: &str, max: usize) -> KmsError {
    one(format!(
        "Value at '{member}' failed to satisfy constraint: \
         Member must have length less than or equal to {max}"
    ))
}

/// A required string member: non-empty and at most `max` characters.
/// `member` is the wire name in AWS's lower camel case (`keyId`).
pub(crate) fn required(member: &str, value: &str, max: usize) -> Result<()> {
    if value.is_empty() {
        return Err(too_short(member, value, 1));
    }
    if value.chars().count() > max {
        return Err(too_long(member, max));
    }
    Ok(())
}

/// A key id member (KeyId, DestinationKeyId): 1 to 2048 characters.
pub(crate) fn key_id(member: &str, value: &str) -> Result<()> {
    required(member, value, 2048)
}

/// Values quoted in messages are names, never secrets; long ones are cut.
fn quote(value: &str) -> String {
    value.chars().take(64).collect()
}

/// "1 validation error detected: " and one constraint, as AWS words it.
fn one(constraint: String) -> KmsError {
    KmsError::validation(format!("1 validation error detected: {constraint}"))
}

/// A required member that is missing (`null` on the wire).
pub(crate) fn null(member: &str) -> KmsError {
    one(format!(
        "Value null at '{member}' failed to satisfy constraint: Member must not be null"
    ))
}

/// An integer member outside `min..=max`.
pub(crate) fn int_range(member: &str, value: i64, min: i64, max: i64) -> Result<()> {
    let (bound, word) = if value < min {
        (min, "greater")
    } else if value > max {
        (max, "less")
    } else {
        return Ok(());
    };
    Err(one(format!(
        "Value '{value}' at '{member}' failed to satisfy constraint: \
         Member must have value {word} than or equal to {bound}"
    )))
}

/// A sensitive member (plaintext) of the wrong length: AWS does not repeat
/// the value.
pub(crate) fn sensitive_length(member: &str, len: usize, min: usize, max: usize) -> Result<()> {
    let (bound, word) = if len < min {
        (min, "greater")
    } else if len > max {
        (max, "less")
    } else {
        return Ok(());
    };
    Err(one(format!(
        "Value at '{member}' failed to satisfy constraint: \
         Member must have length {word} than or equal to {bound}"
    )))
}

/// A string member that does not match its pattern.
pub(crate) fn pattern(member: &str, value: &str, pattern: &str) -> KmsError {
    one(format!(
        "Value '{}' at '{member}' failed to satisfy constraint: \
         Member must satisfy regular expression pattern: {pattern}",
        quote(value)
    ))
}

/// The wire name of a member in AWS's messages: `KeyId` -> `keyId`.
pub(crate) fn member_name(field: &str) -> String {
    let mut chars = field.chars();
    chars.next().map_or_else(String::new, |c| {
        c.to_ascii_lowercase().to_string() + chars.as_str()
    })
}

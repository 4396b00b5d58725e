//! Zeroizing containers for plaintext and key material.
//!
//! Every secret byte in rewrap lives in a [`Secret`]: it is wiped when dropped
//! and its `Debug` prints `[redacted]`, so a stray `{:?}` or a panic message
//! cannot leak it.

use std::fmt;
use zeroize::Zeroizing;

/// Secret bytes: zeroized on drop, never printed.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(Zeroizing<Vec<u8>>);

impl Secret {
    /// Takes ownership of `bytes`; the caller's vector is moved, not copied.
    pub fn new(bytes: Vec<u8>) -> Secret {
        Secret(Zeroizing::new(bytes))
    }

    /// Copies `bytes` into a new secret.
    pub fn from_slice(bytes: &[u8]) -> Secret {
        let mut v = Vec::with_capacity(bytes.len());
        v.extend_from_slice(bytes);
        Secret::new(v)
    }

    /// `len` random bytes from the operating system's CSPRNG.
    pub fn random(len: usize) -> Secret {
        use rand::RngCore;
        let mut v = Zeroizing::new(vec![0u8; len]);
        rand::rngs::OsRng.fill_bytes(&mut v);
        Secret(v)
    }

    /// The secret bytes.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    /// The secret bytes, mutably (for in-place decryption).
    pub fn expose_mut(&mut self) -> &mut Vec<u8> {
        &mut self.0
    }

    /// Number of bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// Serialized as standard base64, as AWS sends blobs in JSON. The base64 text
/// of a secret is itself secret: it is built in a zeroizing buffer.
impl serde::Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use base64::Engine;
        let mut buf = Zeroizing::new(vec![0u8; self.0.len().div_ceil(3) * 4 + 4]);
        let n = base64::engine::general_purpose::STANDARD
            .encode_slice(self.expose(), &mut buf[..])
            .map_err(serde::ser::Error::custom)?;
        let text = std::str::from_utf8(&buf[..n]).map_err(serde::ser::Error::custom)?;
        s.serialize_str(text)
    }
}

impl<'de> serde::Deserialize<'de> for Secret {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Secret, D::Error> {
        use base64::Engine;
        let text: Zeroizing<String> = Zeroizing::new(String::deserialize(d)?);
        let mut buf = Zeroizing::new(vec![0u8; text.len() / 4 * 3 + 3]);
        let n = base64::engine::general_purpose::STANDARD
            .decode_slice(text.as_bytes(), &mut buf[..])
            .map_err(|_| serde::de::Error::custom("blob is not valid base64"))?;
        buf.truncate(n);
        Ok(Secret(buf))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_bytes() {
        let s = Secret::from_slice(b"hunter2");
        assert_eq!(format!("{s:?}"), "[redacted]");
    }

    #[test]
    fn base64_round_trip() {
        let s = Secret::from_slice(b"\x00\x01secret");
        let json = serde_json::to_string(&s).unwrap();
        assert_eq!(json, "\"AAFzZWNyZXQ=\"");
        let back: Secret = serde_json::from_str(&json).unwrap();
        assert_eq!(back.expose(), b"\x00\x01secret");
        assert!(serde_json::from_str::<Secret>("\"!!\"").is_err());
    }
}

/// Serde adapter for secrets that are text (secret access keys): serialized
/// as the string itself rather than base64. Use with
/// `#[serde(with = "crate::secret::as_text")]`.
pub mod as_text {
    use super::Secret;
    use zeroize::Zeroizing;

    /// Serializes the secret as a UTF-8 string.
    pub fn serialize<S: serde::Serializer>(secret: &Secret, s: S) -> Result<S::Ok, S::Error> {
        let text = std::str::from_utf8(secret.expose())
            .map_err(|_| serde::ser::Error::custom("secret is not UTF-8 text"))?;
        s.serialize_str(text)
    }

    /// Deserializes a secret from a string.
    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Secret, D::Error> {
        let text: Zeroizing<String> = Zeroizing::new(serde::Deserialize::deserialize(d)?);
        Ok(Secret::from_slice(text.as_bytes()))
    }
}

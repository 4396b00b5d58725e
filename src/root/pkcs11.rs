//! A root key held in a PKCS#11 token, named by an RFC 7512 URI:
//!
//! ```text
//! pkcs11:token=LABEL;object=NAME?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=file:/etc/rewrap/hsm.pin
//! ```
//!
//! Path attributes: `token` (or `serial`) and `object` (the key's
//! `CKA_LABEL`); query attributes: `module-path` and `pin-source`
//! (`file:PATH` or `env:NAME`, never the PIN: `pin-value` is refused).
//! Values are percent-decoded. The key is an AES-256 token object,
//! sensitive and not extractable; sealing is AES-256-GCM inside the token,
//! with the same output layout as the root key file's (nonce || ciphertext
//! || tag).

use super::{RootKey, RootKeyError};
use crate::hsm::{PinSource, Token, TokenSelector, IV_LEN};
use crate::secret::Secret;
use std::path::{Path, PathBuf};

/// The parts of a `pkcs11:` URI rewrap uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pkcs11Uri {
    /// The token.
    pub token: TokenSelector,
    /// The key object's label.
    pub object: String,
    /// The PKCS#11 module.
    pub module_path: PathBuf,
    /// Where the user PIN is read.
    pub pin_source: PinSource,
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

impl Pkcs11Uri {
    /// Parses a `pkcs11:` URI; the error says what is wrong (never a PIN).
    pub fn parse(uri: &str) -> Result<Pkcs11Uri, String> {
        let rest = uri
            .strip_prefix("pkcs11:")
            .ok_or("a PKCS#11 URI starts with pkcs11:")?;
        let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
        let (mut token, mut object, mut module, mut pin) = (None, None, None, None);
        let attrs = path
            .split(';')
            .chain(query.split('&'))
            .filter(|a| !a.is_empty());
        for attr in attrs {
            let (name, value) = attr
                .split_once('=')
                .ok_or_else(|| format!("attribute {attr:?} has no value"))?;
            let value = percent_decode(value)
                .ok_or_else(|| format!("attribute {name} is not valid percent-encoding"))?;
            match name {
                "token" => token = Some(TokenSelector::Label(value)),
                "serial" => token = Some(TokenSelector::Serial(value)),
                "object" => object = Some(value),
                "module-path" => module = Some(PathBuf::from(value)),
                "pin-source" => pin = Some(PinSource::parse(&value)?),
                "pin-value" => {
                    return Err(
                        "pin-value is refused: give pin-source=file:PATH or env:NAME".into(),
                    )
                }
                // Other RFC 7512 attributes (type, id, manufacturer, ...) do
                // not change which key rewrap uses.
                _ => {}
            }
        }
        Ok(Pkcs11Uri {
            token: token.ok_or("the URI names no token (token=LABEL or serial=NUMBER)")?,
            object: object.ok_or("the URI names no object (object=LABEL)")?,
            module_path: module.ok_or("the URI names no module (?module-path=PATH)")?,
            pin_source: pin.ok_or("the URI names no PIN source (pin-source=file:PATH)")?,
        })
    }
}

/// The root key in a token.
pub struct Pkcs11RootKey {
    uri: String,
    object: String,
    token: Token,
}

impl std::fmt::Debug for Pkcs11RootKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Pkcs11RootKey({})", self.uri)
    }
}

impl Pkcs11RootKey {
    /// Opens the key `uri` names; with `create`, generates it first when
    /// the token has no object of that label.
    pub fn open(uri: &str, create: bool, file: &Path) -> Result<Pkcs11RootKey, RootKeyError> {
        let invalid = |problem: String| RootKeyError::Invalid {
            path: file.to_path_buf(),
            problem,
        };
        let parsed = Pkcs11Uri::parse(uri).map_err(invalid)?;
        // As a custom key store's module: one another user could replace
        // is not loaded (the operator named it, so no allow-list applies).
        let module = std::fs::canonicalize(&parsed.module_path).map_err(|e| {
            invalid(format!(
                "PKCS#11 module {}: {e}",
                parsed.module_path.display()
            ))
        })?;
        for path in std::iter::once(module.as_path()).chain(module.parent()) {
            crate::hsm::check_not_replaceable(path).map_err(|why| {
                invalid(format!(
                    "PKCS#11 module {} is refused: {why}",
                    parsed.module_path.display()
                ))
            })?;
        }
        // A PIN file others can read is refused, as a passphrase file is.
        if let PinSource::File(path) = &parsed.pin_source {
            super::owner_only(path)?;
        }
        let token = Token::open(&module, &parsed.token, &parsed.pin_source, 2)
            .map_err(|e| invalid(e.to_string()))?;
        let present = token
            .has_key(&parsed.object)
            .map_err(|e| invalid(e.to_string()))?;
        match (present, create) {
            (true, _) => {}
            (false, true) => token
                .generate_aes_key(&parsed.object)
                .map_err(|e| invalid(e.to_string()))?,
            (false, false) => {
                return Err(invalid(format!(
                    "the token has no key object labelled {:?}",
                    parsed.object
                )))
            }
        }
        Ok(Pkcs11RootKey {
            uri: uri.to_string(),
            object: parsed.object,
            token,
        })
    }
}

impl RootKey for Pkcs11RootKey {
    fn seal(&self, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, RootKeyError> {
        let iv: [u8; IV_LEN] = rand::random();
        let sealed = self
            .token
            .encrypt_gcm(&self.object, iv, aad, plaintext)
            .map_err(|_| RootKeyError::Authentication)?;
        let mut out = Vec::with_capacity(IV_LEN + sealed.len());
        out.extend_from_slice(&iv);
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    fn unseal(&self, aad: &[u8], sealed: &[u8]) -> Result<Secret, RootKeyError> {
        if sealed.len() < IV_LEN + crate::hsm::TAG_LEN {
            return Err(RootKeyError::Authentication);
        }
        let (iv, body) = sealed.split_at(IV_LEN);
        let iv: [u8; IV_LEN] = iv.try_into().expect("12 bytes");
        self.token
            .decrypt_gcm(&self.object, iv, aad, body)
            .map_err(|_| RootKeyError::Authentication)
    }

    fn describe(&self) -> String {
        self.spec().describe_in(Path::new(""))
    }

    fn spec(&self) -> super::RootSpec {
        super::RootSpec::Pkcs11(self.uri.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uri_parts_are_read_and_a_pin_value_is_refused() {
        let uri = "pkcs11:token=my%20token;object=root;type=secret-key?module-path=/usr/lib/m.so&pin-source=file:/etc/p";
        let p = Pkcs11Uri::parse(uri).unwrap();
        assert_eq!(p.token, TokenSelector::Label("my token".into()));
        assert_eq!(p.object, "root");
        assert_eq!(p.module_path, PathBuf::from("/usr/lib/m.so"));
        assert_eq!(p.pin_source, PinSource::File("/etc/p".into()));
        let err =
            Pkcs11Uri::parse("pkcs11:token=t;object=o?module-path=/m&pin-value=1234").unwrap_err();
        assert!(err.starts_with("pin-value is refused"), "{err}");
        assert!(!err.contains("1234"));
        assert_eq!(
            Pkcs11Uri::parse("pkcs11:object=o?module-path=/m&pin-source=env:P").unwrap_err(),
            "the URI names no token (token=LABEL or serial=NUMBER)"
        );
    }
}

//! The root of trust: the key that seals the keystore at rest.
//!
//! Kept behind the small [`RootKey`] trait so an HSM can take the place of
//! the root key file without the keystore noticing: [`FileRootKey`] (the
//! default, `root.key`) or [`Pkcs11RootKey`] (a key in a PKCS#11 token,
//! named by the RFC 7512 URI in `root.uri`).

mod pkcs11;
pub use pkcs11::{Pkcs11RootKey, Pkcs11Uri};

use crate::secret::Secret;
use aes_gcm::aead::{AeadInPlace, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce, Tag};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Why the root key could not seal or unseal.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RootKeyError {
    /// The root key file could not be read or written.
    #[error("root key {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The root key file is malformed or has unsafe permissions.
    #[error("root key {path}: {problem}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
    /// Authentication of sealed data failed: it was changed, or sealed under another root key.
    #[error("authentication failed: the data was tampered with or sealed under another root key")]
    Authentication,
}

/// Seals and unseals keystore contents. Implementations hold the root key
/// material where the rest of the process cannot read it.
pub trait RootKey: Send + Sync {
    /// Encrypts and authenticates `plaintext` with `aad`; returns nonce || ciphertext || tag.
    fn seal(&self, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, RootKeyError>;
    /// Reverses [`RootKey::seal`].
    fn unseal(&self, aad: &[u8], sealed: &[u8]) -> Result<Secret, RootKeyError>;
    /// A short description for diagnostics (never key bytes).
    fn describe(&self) -> String;
}

/// A 32-byte AES-256 root key in a file of mode 0600.
pub struct FileRootKey {
    path: PathBuf,
    cipher: Aes256Gcm,
}

impl std::fmt::Debug for FileRootKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "FileRootKey({})", self.path.display())
    }
}

const ROOT_KEY_LEN: usize = 32;

impl FileRootKey {
    /// Creates a new random root key at `path` (mode 0600); refuses to overwrite.
    pub fn create(path: &Path) -> Result<FileRootKey, RootKeyError> {
        use std::os::unix::fs::OpenOptionsExt;
        let io = |source| RootKeyError::Io {
            path: path.to_path_buf(),
            source,
        };
        let key = Secret::random(ROOT_KEY_LEN);
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(io)?;
        file.write_all(key.expose()).map_err(io)?;
        file.sync_all().map_err(io)?;
        FileRootKey::from_secret(path, &key)
    }

    /// Loads the root key at `path`; refuses a file others can read.
    pub fn load(path: &Path) -> Result<FileRootKey, RootKeyError> {
        use std::os::unix::fs::PermissionsExt;
        let io = |source| RootKeyError::Io {
            path: path.to_path_buf(),
            source,
        };
        let meta = fs::metadata(path).map_err(io)?;
        if meta.permissions().mode() & 0o077 != 0 {
            return Err(RootKeyError::Invalid {
                path: path.to_path_buf(),
                problem: format!(
                    "permissions {:o} are too open; it must be readable by its owner only (chmod 600)",
                    meta.permissions().mode() & 0o777
                ),
            });
        }
        let key = Secret::new(fs::read(path).map_err(io)?);
        if key.len() != ROOT_KEY_LEN {
            return Err(RootKeyError::Invalid {
                path: path.to_path_buf(),
                problem: format!("expected {ROOT_KEY_LEN} bytes, found {}", key.len()),
            });
        }
        FileRootKey::from_secret(path, &key)
    }

    fn from_secret(path: &Path, key: &Secret) -> Result<FileRootKey, RootKeyError> {
        let cipher =
            Aes256Gcm::new_from_slice(key.expose()).map_err(|_| RootKeyError::Invalid {
                path: path.to_path_buf(),
                problem: "bad key length".into(),
            })?;
        Ok(FileRootKey {
            path: path.to_path_buf(),
            cipher,
        })
    }
}

impl RootKey for FileRootKey {
    fn seal(&self, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, RootKeyError> {
        let mut nonce = [0u8; 12];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut nonce);
        let mut out = Vec::with_capacity(12 + plaintext.len() + 16);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(plaintext);
        let tag = self
            .cipher
            .encrypt_in_place_detached(Nonce::from_slice(&nonce), aad, &mut out[12..])
            .map_err(|_| RootKeyError::Authentication)?;
        out.extend_from_slice(&tag);
        Ok(out)
    }

    fn unseal(&self, aad: &[u8], sealed: &[u8]) -> Result<Secret, RootKeyError> {
        if sealed.len() < 28 {
            return Err(RootKeyError::Authentication);
        }
        let (nonce, rest) = sealed.split_at(12);
        let (body, tag) = rest.split_at(rest.len() - 16);
        let mut plain = Secret::from_slice(body);
        self.cipher
            .decrypt_in_place_detached(
                Nonce::from_slice(nonce),
                aad,
                plain.expose_mut(),
                Tag::from_slice(tag),
            )
            .map_err(|_| RootKeyError::Authentication)?;
        Ok(plain)
    }

    fn describe(&self) -> String {
        format!("root key file {}", self.path.display())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn create_load_seal_unseal() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("root.key");
        let a = FileRootKey::create(&path).unwrap();
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let sealed = a.seal(b"aad", b"secret").unwrap();
        let b = FileRootKey::load(&path).unwrap();
        assert_eq!(b.unseal(b"aad", &sealed).unwrap().expose(), b"secret");
        assert!(matches!(
            b.unseal(b"other", &sealed),
            Err(RootKeyError::Authentication)
        ));
        assert!(FileRootKey::create(&path).is_err(), "must not overwrite");
    }

    #[test]
    fn refuses_open_permissions() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("root.key");
        FileRootKey::create(&path).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        let err = FileRootKey::load(&path).unwrap_err().to_string();
        assert!(err.contains("permissions 644 are too open"), "{err}");
    }
}

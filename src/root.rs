//! The root of trust: the key that seals the keystore at rest.
//!
//! Kept behind the small [`RootKey`] trait so an HSM can take the place of
//! the root key file without the keystore noticing: [`FileRootKey`] (the
//! default, `root.key`), [`Pkcs11RootKey`] (a key in a PKCS#11 token,
//! named by the RFC 7512 URI in `root.uri`) or [`PassphraseRootKey`] (derived
//! with Argon2id from a passphrase, its parameters in `root.passphrase`).
//! [`RootSpec`] names one on a command line; [`create`] and [`open`] find
//! which one a keystore folder has.

mod passphrase;
mod pkcs11;
mod prompt;
mod relocate;
pub use passphrase::{KdfCost, PassphraseRootKey, PassphraseSource};
pub use pkcs11::{Pkcs11RootKey, Pkcs11Uri};
pub use relocate::relocate;
pub(crate) use relocate::{finish_move, move_pending};

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
    /// The passphrase does not derive the keystore's root key.
    #[error("wrong passphrase: the passphrase from {from} does not open this keystore's root key")]
    WrongPassphrase {
        /// Where the passphrase was read (never the passphrase).
        from: String,
    },
    /// A `passphrase:prompt` root could not ask: stdin is not a terminal,
    /// there is no controlling terminal, or nothing was typed.
    #[error("cannot prompt for the passphrase ({why}): give passphrase:file:PATH or passphrase:env:NAME instead")]
    PromptUnavailable {
        /// Why.
        why: String,
    },
    /// The passphrase typed twice for a new root was not the same.
    #[error("the two passphrases typed differ; nothing was changed")]
    PassphraseMismatch,
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
    /// Which root this is, as `--root` names it (for the audit record of a
    /// root move: never a PIN or a passphrase, only where they are read).
    fn spec(&self) -> RootSpec;
}

/// A 32-byte AES-256 root key in a file of mode 0600.
pub struct FileRootKey {
    path: PathBuf,
    cipher: AesRoot,
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
        let key = Secret::random(ROOT_KEY_LEN);
        write_new(path, key.expose())?;
        FileRootKey::from_secret(path, &key)
    }

    /// Loads the root key at `path`; refuses a file others can read.
    pub fn load(path: &Path) -> Result<FileRootKey, RootKeyError> {
        let io = |source| RootKeyError::Io {
            path: path.to_path_buf(),
            source,
        };
        owner_only(path)?;
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
        Ok(FileRootKey {
            path: path.to_path_buf(),
            cipher: AesRoot::new(path, key)?,
        })
    }
}

impl RootKey for FileRootKey {
    fn seal(&self, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, RootKeyError> {
        self.cipher.seal(aad, plaintext)
    }

    fn unseal(&self, aad: &[u8], sealed: &[u8]) -> Result<Secret, RootKeyError> {
        self.cipher.unseal(aad, sealed)
    }

    fn describe(&self) -> String {
        self.spec().describe_at(&self.path)
    }

    fn spec(&self) -> RootSpec {
        RootSpec::File
    }
}

/// Refuses a secret-bearing file (a root key, a passphrase) that others can read.
fn owner_only(path: &Path) -> Result<(), RootKeyError> {
    use std::os::unix::fs::PermissionsExt;
    let meta = fs::metadata(path).map_err(|source| RootKeyError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    if meta.permissions().mode() & 0o077 != 0 {
        return Err(RootKeyError::Invalid {
            path: path.to_path_buf(),
            problem: format!(
                "permissions {:o} are too open; it must be readable by its owner only (chmod 600)",
                meta.permissions().mode() & 0o777
            ),
        });
    }
    Ok(())
}

/// Writes a new file of mode 0600 and syncs it; refuses to overwrite.
fn write_new(path: &Path, bytes: &[u8]) -> Result<(), RootKeyError> {
    use std::os::unix::fs::OpenOptionsExt;
    let io = |source| RootKeyError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(io)?;
    file.write_all(bytes).map_err(io)?;
    file.sync_all().map_err(io)
}

/// AES-256-GCM under a root key held in this process (a key file's, or
/// one derived from a passphrase): nonce || ciphertext || tag.
struct AesRoot(Aes256Gcm);

impl AesRoot {
    fn new(path: &Path, key: &Secret) -> Result<AesRoot, RootKeyError> {
        Aes256Gcm::new_from_slice(key.expose())
            .map(AesRoot)
            .map_err(|_| RootKeyError::Invalid {
                path: path.to_path_buf(),
                problem: "bad key length".into(),
            })
    }

    fn seal(&self, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, RootKeyError> {
        let mut nonce = [0u8; 12];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut nonce);
        let mut out = Vec::with_capacity(12 + plaintext.len() + 16);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(plaintext);
        let tag = self
            .0
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
        self.0
            .decrypt_in_place_detached(
                Nonce::from_slice(nonce),
                aad,
                plain.expose_mut(),
                Tag::from_slice(tag),
            )
            .map_err(|_| RootKeyError::Authentication)?;
        Ok(plain)
    }
}

/// Which root key seals a keystore, as `rewrap init --root` names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RootSpec {
    /// `file`: a new random key in `root.key` (the default).
    File,
    /// `pkcs11:...`: a key in a PKCS#11 token, generated if missing.
    Pkcs11(String),
    /// `passphrase:file:PATH`, `passphrase:env:NAME` or `passphrase:prompt`,
    /// with its Argon2id cost.
    Passphrase(PassphraseSource, KdfCost),
}

impl RootSpec {
    /// The kind of root: `file`, `pkcs11` or `passphrase`.
    pub fn kind(&self) -> &'static str {
        match self {
            RootSpec::File => "file",
            RootSpec::Pkcs11(_) => "pkcs11",
            RootSpec::Passphrase(..) => "passphrase",
        }
    }

    /// The file beside `keystore.sealed` that says a keystore has this root.
    pub fn file_name(&self) -> &'static str {
        match self {
            RootSpec::File => KEY_FILE,
            RootSpec::Pkcs11(_) => URI_FILE,
            RootSpec::Passphrase(..) => PASSPHRASE_FILE,
        }
    }

    /// What [`RootKey::describe`] says of this root, its file in `dir`.
    pub fn describe_in(&self, dir: &Path) -> String {
        self.describe_at(&dir.join(self.file_name()))
    }

    /// What [`RootKey::describe`] says of this root, its file at `file`.
    fn describe_at(&self, file: &Path) -> String {
        match self {
            RootSpec::File => format!("root key file {}", file.display()),
            RootSpec::Pkcs11(uri) => format!("root key {uri}"),
            RootSpec::Passphrase(source, _) => format!(
                "root key derived from the passphrase {source} ({})",
                file.display()
            ),
        }
    }

    /// The audit record's parameters naming this root, each name starting
    /// with `side` (`From` or `To`): `{side}Root` (the kind), and
    /// `{side}RootUri` (a PKCS#11 URI, which names its PIN by reference
    /// only) or `{side}PassphraseSource` (`file:PATH`, `env:NAME`, `prompt`).
    pub fn audit_parameters(&self, side: &str) -> Vec<(String, String)> {
        let mut params = vec![(format!("{side}Root"), self.kind().to_string())];
        match self {
            RootSpec::File => {}
            RootSpec::Pkcs11(uri) => params.push((format!("{side}RootUri"), uri.clone())),
            RootSpec::Passphrase(source, _) => {
                params.push((format!("{side}PassphraseSource"), source.to_string()));
            }
        }
        params
    }
}

/// The files that say which root a keystore folder has, one at a time.
pub const ROOT_FILES: [&str; 3] = [KEY_FILE, URI_FILE, PASSPHRASE_FILE];
const KEY_FILE: &str = "root.key";
const URI_FILE: &str = "root.uri";
const PASSPHRASE_FILE: &str = "root.passphrase";

impl RootSpec {
    /// Parses `file`, a `pkcs11:` URI or `passphrase:SOURCE` (`cost` is the
    /// Argon2id cost of a passphrase root).
    pub fn parse(text: &str, cost: KdfCost) -> Result<RootSpec, String> {
        if text == "file" {
            return Ok(RootSpec::File);
        }
        if text.starts_with("pkcs11:") {
            Pkcs11Uri::parse(text)?;
            return Ok(RootSpec::Pkcs11(text.to_string()));
        }
        if let Some(source) = text.strip_prefix("passphrase:") {
            let source = PassphraseSource::parse(source)?;
            cost.check()?;
            return Ok(RootSpec::Passphrase(source, cost));
        }
        Err(format!(
            "unknown root {text:?}: give file, pkcs11:URI, passphrase:file:PATH, passphrase:env:NAME or passphrase:prompt"
        ))
    }
}

/// Makes the root `spec` names in `dir`, with its file there (`root.key`,
/// `root.uri` or `root.passphrase`); refuses to overwrite one.
pub fn create(dir: &Path, spec: &RootSpec) -> Result<std::sync::Arc<dyn RootKey>, RootKeyError> {
    Ok(match spec {
        RootSpec::File => std::sync::Arc::new(FileRootKey::create(&dir.join(KEY_FILE))?),
        RootSpec::Pkcs11(uri) => {
            let file = dir.join(URI_FILE);
            let key = Pkcs11RootKey::open(uri, true, &file)?;
            write_new(&file, uri.as_bytes())?;
            std::sync::Arc::new(key)
        }
        RootSpec::Passphrase(source, cost) => std::sync::Arc::new(PassphraseRootKey::create(
            &dir.join(PASSPHRASE_FILE),
            source,
            *cost,
        )?),
    })
}

/// Opens the root of the keystore folder `dir`, whichever file it has.
pub fn open(dir: &Path) -> Result<std::sync::Arc<dyn RootKey>, RootKeyError> {
    let uri_file = dir.join(URI_FILE);
    if uri_file.exists() {
        let uri = fs::read_to_string(&uri_file).map_err(|source| RootKeyError::Io {
            path: uri_file.clone(),
            source,
        })?;
        return Ok(std::sync::Arc::new(Pkcs11RootKey::open(
            uri.trim(),
            false,
            &uri_file,
        )?));
    }
    let passphrase_file = dir.join(PASSPHRASE_FILE);
    if passphrase_file.exists() {
        return Ok(std::sync::Arc::new(PassphraseRootKey::open(
            &passphrase_file,
        )?));
    }
    Ok(std::sync::Arc::new(FileRootKey::load(&dir.join(KEY_FILE))?))
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

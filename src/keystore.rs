//! The embedded keystore: CMKs, their key material, aliases and principals,
//! sealed at rest under the root key, updated atomically and safely between
//! processes.
//!
//! # Folder
//! ```text
//! <home>/root.key          32-byte root key, mode 0600 (see crate::root)
//! <home>/root.uri          or: the pkcs11: URI of a root key in a token
//! <home>/root.passphrase   or: the Argon2id parameters of a passphrase root
//! <home>/keystore.sealed   the sealed state (layout below)
//! <home>/keystore.lock     flock(2) target: shared to read, exclusive to update
//! <home>/config.toml       region and account used in ARNs
//! ```
//!
//! # Sealed file layout
//! ```text
//! offset  size  field
//! 0       4     magic "RWKS"
//! 4       1     format version, 0x01
//! 5       3     reserved, zero
//! 8       8     generation (u64, big-endian), +1 on every update
//! 16      12    AES-GCM nonce
//! 28      n     AES-256-GCM ciphertext of the JSON state
//! 28+n    16    tag
//! ```
//! The 16 header bytes are the additional authenticated data. A file that
//! fails to parse or authenticate is reported as corrupt; rewrap never starts
//! over with an empty keystore in its place.
//!
//! # Updates
//! Under the exclusive lock: read and unseal the current file, apply the
//! change, seal, write `keystore.sealed.tmp`, fsync it, rename it over the
//! old file, fsync the folder. A crash at any instant leaves either the old
//! or the new state.

use crate::root::{RootKey, RootKeyError, RootSpec};
use crate::secret::Secret;
use fs4::fs_std::FileExt;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use uuid::Uuid;

mod custom_key_stores;
pub use custom_key_stores::{ConnectionState, CustomKeyStoreRecord};

const MAGIC: &[u8; 4] = b"RWKS";
const FORMAT: u8 = 1;
const HEADER_LEN: usize = 16;

/// Why the keystore could not be created, opened, read or updated.
///
/// Messages name files and what is wrong with them, never key material or
/// any part of the unsealed state. [`crate::error::KmsError`]'s `From` impl turns every
/// variant into the AWS error users see (`KMSInternalException`, or
/// `AlreadyExistsException`) with this message.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeystoreError {
    /// Reading, writing or syncing a keystore file failed.
    #[error("keystore {}: {source}", path.display())]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
    /// The lock file could not be opened or locked.
    #[error("keystore {}: {source}", path.display())]
    Lock {
        /// The lock file.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
    /// The keystore folder or its lock file is open to other users: anyone
    /// who can open the lock file can hold it and stall every command.
    #[error("keystore {}: permissions {mode:o} are too open; it must be private to its owner (chmod {want:o} {})", path.display(), path.display())]
    Permissions {
        /// The folder or file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
        /// The mode it should have.
        want: u32,
    },
    /// The folder holds no sealed keystore file.
    #[error("no keystore in {}: run `rewrap init` first (or pass --keystore DIR)", dir.display())]
    Missing {
        /// The folder.
        dir: PathBuf,
    },
    /// [`Keystore::create`] found a keystore (or a root key) in the folder.
    #[error("a keystore already exists in {}", dir.display())]
    AlreadyExists {
        /// The folder.
        dir: PathBuf,
    },
    /// The root key could not be created or loaded, or failed to seal.
    #[error(transparent)]
    RootKey(#[from] RootKeyError),
    /// `config.toml` does not parse.
    #[error("keystore {}: {source}", path.display())]
    Config {
        /// The configuration file.
        path: PathBuf,
        /// The parser's error.
        #[source]
        source: toml::de::Error,
    },
    /// The configuration could not be written as TOML.
    #[error("{0}")]
    ConfigSerialize(#[source] toml::ser::Error),
    /// The sealed file failed to parse or authenticate. It is never replaced:
    /// the operator restores it from a backup.
    #[error(
        "keystore {} is corrupt or was tampered with ({problem}); refusing to use it. \
         Restore it from a backup",
        path.display()
    )]
    Corrupt {
        /// The sealed file.
        path: PathBuf,
        /// What is wrong with it.
        problem: Corruption,
    },
    /// The state could not be serialized for sealing.
    #[error("cannot serialize keystore: {0}")]
    Serialize(#[source] serde_json::Error),
}

/// What is wrong with a sealed keystore file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Corruption {
    /// Too short, or the magic is not `RWKS`.
    #[error("not a sealed keystore file")]
    NotSealed,
    /// A format version (or reserved bytes) this build does not know.
    #[error("unknown format version")]
    UnknownFormat,
    /// AES-GCM authentication failed: the file was changed, or it was sealed
    /// under another root key (the two cannot be told apart).
    #[error("authentication failed")]
    Authentication,
    /// Authentic, but the state inside is not what this build reads.
    #[error("state does not parse")]
    State,
}

impl KeystoreError {
    /// Wraps an I/O error on `path`.
    fn io(path: &Path) -> impl FnOnce(io::Error) -> KeystoreError + '_ {
        move |source| KeystoreError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// Lifecycle state of a CMK, with AWS's names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum KeyState {
    /// Usable.
    Enabled,
    /// Refuses cryptographic operations (DisabledException).
    Disabled,
    /// Scheduled for deletion; refuses cryptographic operations (KMSInvalidStateException).
    PendingDeletion,
    /// Origin EXTERNAL without (or with expired) imported key material;
    /// refuses cryptographic operations (KMSInvalidStateException).
    PendingImport,
}

impl KeyState {
    /// The AWS name.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyState::Enabled => "Enabled",
            KeyState::Disabled => "Disabled",
            KeyState::PendingDeletion => "PendingDeletion",
            KeyState::PendingImport => "PendingImport",
        }
    }
}

/// One version of a key's material.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KeyVersion {
    /// 1-based version number.
    pub version: u32,
    /// Creation time, seconds since the epoch.
    pub created: f64,
    /// `AUTOMATIC`, `ON_DEMAND`, or `CREATE` for the first.
    pub origin: String,
    /// 32 bytes of AES-256 key material.
    pub material: Secret,
}

/// Automatic rotation settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RotationConfig {
    /// Period in days (90 to 2560).
    pub period_days: u32,
    /// When the next automatic rotation is due, seconds since the epoch.
    pub next_rotation: f64,
}

/// A customer master key.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KeyRecord {
    /// The key id.
    pub id: Uuid,
    /// Free text.
    pub description: String,
    /// Creation time, seconds since the epoch.
    pub created: f64,
    /// Lifecycle state.
    pub state: KeyState,
    /// When a pending deletion takes effect.
    pub deletion_date: Option<f64>,
    /// The pending window that was asked for.
    pub pending_window_days: Option<u32>,
    /// Automatic rotation, when enabled.
    pub rotation: Option<RotationConfig>,
    /// Key material, oldest first; the last is used to encrypt.
    pub versions: Vec<KeyVersion>,
    /// Tags given at creation.
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// The custom key store whose token holds every version's material
    /// (the versions' `material` is then empty): see [`crate::hsm`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom_key_store_id: Option<String>,
    // Asymmetric and HMAC keys, imported key material (issues 15, 13).
    /// AWS KeySpec: `SYMMETRIC_DEFAULT`, `RSA_2048`, `ECC_NIST_P256`,
    /// `HMAC_256`, ... It says how each version's `material` is read: 32
    /// AES bytes, the PKCS#8 DER of a private key, or HMAC key bytes.
    #[serde(default = "default_key_spec")]
    pub key_spec: String,
    /// AWS KeyUsage: `ENCRYPT_DECRYPT`, `SIGN_VERIFY` or `GENERATE_VERIFY_MAC`.
    #[serde(default = "default_key_usage")]
    pub key_usage: String,
    /// AWS Origin: `AWS_KMS`, or `EXTERNAL` for imported key material.
    #[serde(default = "default_origin")]
    pub origin: String,
    /// Origin `EXTERNAL`: the import parameters and imported material's terms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub import: Option<ImportRecord>,
}

fn default_key_spec() -> String {
    "SYMMETRIC_DEFAULT".into()
}

fn default_key_usage() -> String {
    "ENCRYPT_DECRYPT".into()
}

fn default_origin() -> String {
    "AWS_KMS".into()
}

/// Imported key material of an `EXTERNAL` key (issue 13).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ImportRecord {
    /// The latest GetParametersForImport answer, until used or expired.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<ImportParameters>,
    /// SHA-256 over the key id and the material first imported: a
    /// re-import must bring the same material.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub material_digest: Option<String>,
    /// `KEY_MATERIAL_EXPIRES` or `KEY_MATERIAL_DOES_NOT_EXPIRE`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expiration_model: Option<String>,
    /// When imported material expires, seconds since the epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub valid_to: Option<f64>,
}

/// A wrapping key pair and its import token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ImportParameters {
    /// The import token (random, hex); names these parameters.
    pub token: String,
    /// The wrapping private key, PKCS#8 DER.
    pub wrapping_key: Secret,
    /// `RSAES_OAEP_SHA_1` or `RSAES_OAEP_SHA_256`.
    pub wrapping_algorithm: String,
    /// When the token expires (24 hours after it was made).
    pub valid_to: f64,
}

impl KeyRecord {
    /// The newest key material version.
    pub fn current(&self) -> &KeyVersion {
        self.versions
            .last()
            .expect("a key always has at least one version")
    }

    /// A given version of the key material.
    pub fn version(&self, version: u32) -> Option<&KeyVersion> {
        let index = usize::try_from(version).ok()?.checked_sub(1)?;
        self.versions.get(index)
    }
}

/// An alias.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AliasRecord {
    /// The key it points at.
    pub target: Uuid,
    /// Creation time.
    pub created: f64,
    /// Last retarget time.
    pub updated: f64,
}

/// An access key of a principal.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AccessKeyRecord {
    /// The public id.
    pub id: String,
    /// The secret access key (sealed at rest with the whole state).
    pub secret: Secret,
    /// Creation time.
    pub created: f64,
}

/// A principal: a named identity with credentials. Its rights come from the
/// policy files only.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PrincipalRecord {
    /// Creation time.
    pub created: f64,
    /// Its access keys (at most two, as in AWS IAM).
    pub access_keys: Vec<AccessKeyRecord>,
}

/// Everything the keystore holds.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct State {
    /// Keys by id.
    pub keys: BTreeMap<Uuid, KeyRecord>,
    /// Aliases by full name (`alias/x`).
    pub aliases: BTreeMap<String, AliasRecord>,
    /// Principals by name.
    pub principals: BTreeMap<String, PrincipalRecord>,
    /// Custom key stores (PKCS#11 tokens) by id.
    #[serde(default)]
    pub custom_key_stores: BTreeMap<String, CustomKeyStoreRecord>,
    /// Grants by grant id (issue 15).
    #[serde(default)]
    pub grants: BTreeMap<String, GrantRecord>,
}

/// A grant: a principal's narrow, revocable right to use one key (issue 15).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct GrantRecord {
    /// The key it applies to.
    pub key: Uuid,
    /// The principal name it gives rights to.
    pub grantee: String,
    /// The principal name that may retire it, if any.
    pub retiring: Option<String>,
    /// AWS grant operation names (`Decrypt`, `ReEncryptFrom`, ...).
    pub operations: Vec<String>,
    /// Encryption-context constraints.
    pub constraints: Option<crate::api::GrantConstraints>,
    /// The name given at creation (makes CreateGrant idempotent).
    pub name: Option<String>,
    /// Creation time, seconds since the epoch.
    pub created: f64,
    /// The grant tokens handed out for it (RetireGrant accepts any).
    pub tokens: Vec<String>,
}

/// Where ARNs say the keys live.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Config {
    /// AWS-style region.
    pub region: String,
    /// 12-digit account id.
    pub account: String,
    /// The audit trail's segments (`[audit]`; issue 14).
    #[serde(default)]
    pub audit: crate::audit::AuditConfig,
    /// The PKCS#11 modules custom key stores may load
    /// (`[custom_key_stores]`; issue 13).
    #[serde(default)]
    pub custom_key_stores: crate::hsm::ModuleConfig,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            region: "us-east-1".into(),
            account: "111122223333".into(),
            audit: crate::audit::AuditConfig::default(),
            custom_key_stores: crate::hsm::ModuleConfig::default(),
        }
    }
}

/// Identifies one version of the sealed file on disk, to notice updates by
/// other processes without reading the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fingerprint {
    ino: u64,
    mtime_ns: i128,
    len: u64,
}

/// A keystore folder.
pub struct Keystore {
    dir: PathBuf,
    root: std::sync::Arc<dyn RootKey>,
    config: Config,
}

impl std::fmt::Debug for Keystore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Keystore({})", self.dir.display())
    }
}

impl Keystore {
    /// Creates a new keystore in `dir` (created if missing). Refuses a folder
    /// that already holds a keystore.
    pub fn create(dir: &Path, config: Config) -> Result<Keystore, KeystoreError> {
        Keystore::create_with_root(dir, config, &RootSpec::File)
    }

    /// [`Keystore::create`] sealed by the root `root` names (see
    /// [`crate::root::create`]).
    pub fn create_with_root(
        dir: &Path,
        config: Config,
        root: &RootSpec,
    ) -> Result<Keystore, KeystoreError> {
        fs::create_dir_all(dir).map_err(KeystoreError::io(dir))?;
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
            .map_err(KeystoreError::io(dir))?;
        let sealed = dir.join("keystore.sealed");
        if sealed.exists() || crate::root::ROOT_FILES.iter().any(|f| dir.join(f).exists()) {
            return Err(KeystoreError::AlreadyExists {
                dir: dir.to_path_buf(),
            });
        }
        let root = crate::root::create(dir, root)?;
        let text = toml::to_string(&config).map_err(KeystoreError::ConfigSerialize)?;
        write_atomic(&dir.join("config.toml"), text.as_bytes())?;
        let store = Keystore {
            dir: dir.to_path_buf(),
            root,
            config,
        };
        let _lock = store.lock(true)?;
        store.write(&State::default(), 1)?;
        Ok(store)
    }

    /// Opens the keystore in `dir` with its root key file.
    pub fn open(dir: &Path) -> Result<Keystore, KeystoreError> {
        let sealed = dir.join("keystore.sealed");
        if !sealed.exists() {
            return Err(KeystoreError::Missing {
                dir: dir.to_path_buf(),
            });
        }
        check_private(dir, 0o700)?;
        check_private(&dir.join("keystore.lock"), 0o600)?;
        Keystore::finish_root_move(dir)?;
        let root = crate::root::open(dir)?;
        let config_path = dir.join("config.toml");
        let text = fs::read_to_string(&config_path).map_err(KeystoreError::io(&config_path))?;
        let config: Config = toml::from_str(&text).map_err(|source| KeystoreError::Config {
            path: config_path.clone(),
            source,
        })?;
        Ok(Keystore {
            dir: dir.to_path_buf(),
            root,
            config,
        })
    }

    /// The folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The root key, for other sealed files of the keystore folder (the
    /// audit trail's checkpoint).
    pub(crate) fn root_key(&self) -> std::sync::Arc<dyn RootKey> {
        std::sync::Arc::clone(&self.root)
    }

    /// This keystore under the root a finished [`crate::root::relocate`]
    /// switched it to (without reading the root's secret again).
    pub(crate) fn under_root(&self, root: std::sync::Arc<dyn RootKey>) -> Keystore {
        Keystore {
            dir: self.dir.clone(),
            root,
            config: self.config.clone(),
        }
    }

    /// What the root key is (never key bytes).
    pub fn root_key_description(&self) -> String {
        self.root.describe()
    }

    /// Region and account.
    pub fn config(&self) -> &Config {
        &self.config
    }

    fn sealed_path(&self) -> PathBuf {
        self.dir.join("keystore.sealed")
    }

    fn lock(&self, exclusive: bool) -> Result<File, KeystoreError> {
        lock_in(&self.dir, exclusive)
    }

    /// The fingerprint of the sealed file as it is now.
    pub(crate) fn fingerprint(&self) -> Result<Fingerprint, KeystoreError> {
        let path = self.sealed_path();
        let meta = fs::metadata(&path).map_err(KeystoreError::io(&path))?;
        Ok(Fingerprint {
            ino: meta.ino(),
            mtime_ns: i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
            len: meta.len(),
        })
    }

    /// Reads and unseals the state.
    pub fn load(&self) -> Result<(State, Fingerprint), KeystoreError> {
        let _lock = self.lock(false)?;
        let (state, _) = self.read()?;
        Ok((state, self.fingerprint()?))
    }

    /// Applies `change` to the current state under the exclusive lock and
    /// persists the result atomically. Nothing is written if `change` fails.
    ///
    /// `change` fails with an error of its own (the KMS operation's, for the
    /// service), into which the keystore's own failures convert.
    pub fn update<R, E: From<KeystoreError>>(
        &self,
        change: impl FnOnce(&mut State) -> Result<R, E>,
    ) -> Result<(R, State, Fingerprint), E> {
        let _lock = self.lock(true)?;
        let (mut state, generation) = self.read()?;
        let out = change(&mut state)?;
        self.write(&state, generation + 1)?;
        Ok((out, state, self.fingerprint()?))
    }

    fn read(&self) -> Result<(State, u64), KeystoreError> {
        let path = self.sealed_path();
        let bytes = fs::read(&path).map_err(KeystoreError::io(&path))?;
        let corrupt = |problem| KeystoreError::Corrupt {
            path: path.clone(),
            problem,
        };
        if bytes.len() < HEADER_LEN + 28 || &bytes[..4] != MAGIC {
            return Err(corrupt(Corruption::NotSealed));
        }
        if bytes[4] != FORMAT || bytes[5..8] != [0, 0, 0] {
            return Err(corrupt(Corruption::UnknownFormat));
        }
        let generation = u64::from_be_bytes(bytes[8..16].try_into().expect("8 bytes"));
        let plain = self
            .root
            .unseal(&bytes[..HEADER_LEN], &bytes[HEADER_LEN..])
            .map_err(|_| corrupt(Corruption::Authentication))?;
        // The parser's message is dropped: it could quote the unsealed state.
        let state: State =
            serde_json::from_slice(plain.expose()).map_err(|_| corrupt(Corruption::State))?;
        Ok((state, generation))
    }

    /// Runs `f` with the exclusive lock held, the sealed file's bytes as
    /// they are and the state they hold sealed again (same generation)
    /// under `to`: a move of the root ([`crate::root::relocate`]), which
    /// must hold the lock until it has switched roots.
    pub(crate) fn with_resealed<R>(
        &self,
        to: &dyn RootKey,
        f: impl FnOnce(Vec<u8>) -> Result<R, KeystoreError>,
    ) -> Result<R, KeystoreError> {
        let _lock = self.lock(true)?;
        let (state, generation) = self.read()?;
        f(self.sealed_bytes(to, &state, generation)?)
    }

    /// Finishes an interrupted move of the root (see
    /// [`crate::root::relocate`]) under the exclusive lock.
    fn finish_root_move(dir: &Path) -> Result<(), KeystoreError> {
        if !crate::root::move_pending(dir) {
            return Ok(());
        }
        let _lock = lock_in(dir, true)?;
        crate::root::finish_move(dir)?;
        Ok(())
    }

    fn write(&self, state: &State, generation: u64) -> Result<(), KeystoreError> {
        let bytes = self.sealed_bytes(self.root.as_ref(), state, generation)?;
        write_atomic(&self.sealed_path(), &bytes)
    }

    fn sealed_bytes(
        &self,
        root: &dyn RootKey,
        state: &State,
        generation: u64,
    ) -> Result<Vec<u8>, KeystoreError> {
        let mut header = Vec::with_capacity(HEADER_LEN);
        header.extend_from_slice(MAGIC);
        header.extend_from_slice(&[FORMAT, 0, 0, 0]);
        header.extend_from_slice(&generation.to_be_bytes());
        let estimate = 4096
            + state
                .keys
                .values()
                .map(|k| k.versions.len() * 200 + 400)
                .sum::<usize>()
            + state.principals.len() * 300;
        let mut json = Secret::new(Vec::with_capacity(estimate));
        serde_json::to_writer(json.expose_mut(), state).map_err(KeystoreError::Serialize)?;
        let sealed = root.seal(&header, json.expose())?;
        header.extend_from_slice(&sealed);
        Ok(header)
    }
}

/// Locks the keystore folder `dir`: shared to read, exclusive to update.
fn lock_in(dir: &Path, exclusive: bool) -> Result<File, KeystoreError> {
    let path = dir.join("keystore.lock");
    let lock_error = |source| KeystoreError::Lock {
        path: path.clone(),
        source,
    };
    let file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .open(&path)
        .map_err(lock_error)?;
    let locked = if exclusive {
        file.lock_exclusive()
    } else {
        FileExt::lock_shared(&file)
    };
    locked.map_err(lock_error)?;
    Ok(file)
}

/// Writes `bytes` to `path` atomically and durably: temporary file, fsync,
/// rename, fsync of the folder. Mode 0600.
///
/// The temporary file has a random name and is created with `O_EXCL`
/// (`tempfile`), so a link planted in the folder under a guessable name is
/// never followed; a failure removes it.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), KeystoreError> {
    let dir = folder_of(path);
    let result = (|| {
        let mut tmp = tempfile::Builder::new()
            .prefix(".rewrap-")
            .suffix(".tmp")
            .tempfile_in(dir)?;
        tmp.as_file_mut().write_all(bytes)?;
        tmp.as_file().sync_all()?;
        tmp.persist(path).map_err(|e| e.error)?;
        File::open(dir)?.sync_all()
    })();
    result.map_err(KeystoreError::io(path))
}

/// Refuses a keystore folder or lock file that other users can reach
/// (`want` is the mode to ask for). A missing file is fine: it is created
/// private.
fn check_private(path: &Path, want: u32) -> Result<(), KeystoreError> {
    let meta = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(KeystoreError::io(path)(e)),
    };
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(KeystoreError::Permissions {
            path: path.to_path_buf(),
            mode,
            want,
        });
    }
    Ok(())
}

/// The folder that holds `path`: `.` for a bare file name, whose
/// `Path::parent()` is the empty path, which cannot be opened to fsync.
fn folder_of(path: &Path) -> &Path {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    }
}

#[cfg(test)]
mod tests;

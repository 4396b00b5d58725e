//! A root key derived from a passphrase with Argon2id (RFC 9106).
//!
//! The passphrase is read by reference, never from a command line:
//! `passphrase:file:PATH` (the first line of a file readable by its owner
//! only, as `root.key` must be) or `passphrase:env:NAME`, or typed at
//! `passphrase:prompt` (asked twice by `init` and `root move`). What the
//! derivation needs besides the passphrase is kept in `root.passphrase`
//! beside the sealed keystore (TOML):
//!
//! ```text
//! source = "file:/etc/rewrap/passphrase"   # where the passphrase is read
//! kdf = "argon2id"
//! version = 19                             # Argon2 v1.3
//! memory_kib = 65536                       # m
//! iterations = 3                           # t
//! parallelism = 1                          # p
//! salt = "<32 hex digits>"                 # 16 random bytes
//! check = "<hex>"                          # AES-256-GCM seal of CHECK_PLAINTEXT
//! ```
//!
//! The default cost (m = 64 MiB, t = 3, p = 1; RFC 9106's second
//! recommended setting with one lane) takes a fraction of a second once per
//! process start. `rewrap init --root-kdf-memory-kib N --root-kdf-iterations
//! N` chooses another, recorded in the file like the default (the tests use
//! a cheap one this way, in the open). `check` tells a wrong passphrase
//! ([`RootKeyError::WrongPassphrase`]) from a corrupt keystore.

use super::{owner_only, AesRoot, RootKey, RootKeyError};
use crate::hsm::{HsmError, PinSource};
use crate::secret::Secret;
use std::path::{Path, PathBuf};

const CHECK_AAD: &[u8] = b"rewrap passphrase root check v1";
const CHECK_PLAINTEXT: &[u8] = b"rewrap passphrase root";
const SALT_LEN: usize = 16;

/// Where the passphrase is read: `file:PATH` (the first line of a file of
/// mode 0600 or stricter) or `env:NAME`, read as a PIN source is, or
/// `prompt` (the terminal, when stdin is one: `prompt.rs`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PassphraseSource(Source);

#[derive(Debug, Clone, PartialEq, Eq)]
enum Source {
    Reference(PinSource),
    Prompt,
}

impl PassphraseSource {
    /// Parses `file:PATH`, `env:NAME` or `prompt`.
    pub fn parse(text: &str) -> Result<PassphraseSource, String> {
        if text == "prompt" {
            return Ok(PassphraseSource(Source::Prompt));
        }
        PinSource::parse(text)
            .map(|s| PassphraseSource(Source::Reference(s)))
            .map_err(|_| {
                "a passphrase root is passphrase:file:PATH, passphrase:env:NAME or \
                 passphrase:prompt; rewrap never takes a passphrase inline"
                    .into()
            })
    }

    /// Reads the passphrase; a file others can read is refused. A prompt
    /// asks twice when `confirm` (a new root).
    fn read(&self, confirm: bool) -> Result<Secret, RootKeyError> {
        let source = match &self.0 {
            Source::Prompt => return super::prompt::read_passphrase(confirm),
            Source::Reference(source) => source,
        };
        if let PinSource::File(path) = source {
            owner_only(path)?;
        }
        source.read().map_err(|e| RootKeyError::Invalid {
            path: PathBuf::from(self.to_string()),
            problem: match e {
                HsmError::PinSource(_, why) => format!("the passphrase is unreadable: {why}"),
                other => other.to_string(),
            },
        })
    }
}

impl std::fmt::Display for PassphraseSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            Source::Reference(source) => source.fmt(f),
            Source::Prompt => f.write_str("prompt"),
        }
    }
}

/// Argon2id's cost parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KdfCost {
    /// Memory, KiB (m).
    pub memory_kib: u32,
    /// Passes (t).
    pub iterations: u32,
    /// Lanes (p).
    pub parallelism: u32,
}

impl Default for KdfCost {
    fn default() -> KdfCost {
        KdfCost {
            memory_kib: 64 * 1024,
            iterations: 3,
            parallelism: 1,
        }
    }
}

impl KdfCost {
    /// Checks the cost is one Argon2id accepts (a usage error otherwise:
    /// `init` and `root move` refuse it before anything is created).
    pub fn check(&self) -> Result<(), String> {
        argon2::Params::new(self.memory_kib, self.iterations, self.parallelism, Some(32))
            .map(|_| ())
            .map_err(|e| {
                format!(
                    "--root-kdf-memory-kib {} / --root-kdf-iterations {}: Argon2id refuses them ({e})",
                    self.memory_kib, self.iterations
                )
            })
    }
}

/// `root.passphrase`.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ParamsFile {
    source: String,
    kdf: String,
    version: u32,
    memory_kib: u32,
    iterations: u32,
    parallelism: u32,
    salt: String,
    check: String,
}

/// The root key derived from a passphrase.
pub struct PassphraseRootKey {
    file: PathBuf,
    source: PassphraseSource,
    cost: KdfCost,
    cipher: AesRoot,
}

impl std::fmt::Debug for PassphraseRootKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PassphraseRootKey({})", self.source)
    }
}

fn derive(
    file: &Path,
    passphrase: &Secret,
    salt: &[u8],
    cost: KdfCost,
) -> Result<AesRoot, RootKeyError> {
    let invalid = |problem: String| RootKeyError::Invalid {
        path: file.to_path_buf(),
        problem,
    };
    let params = argon2::Params::new(cost.memory_kib, cost.iterations, cost.parallelism, Some(32))
        .map_err(|e| invalid(format!("Argon2id parameters: {e}")))?;
    let argon = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let mut key = Secret::new(vec![0u8; 32]);
    argon
        .hash_password_into(passphrase.expose(), salt, key.expose_mut())
        .map_err(|e| invalid(format!("Argon2id: {e}")))?;
    AesRoot::new(file, &key)
}

impl PassphraseRootKey {
    /// Derives a new root key from the passphrase `source` gives, with a
    /// fresh salt, and writes `file` (refuses to overwrite it).
    pub fn create(
        file: &Path,
        source: &PassphraseSource,
        cost: KdfCost,
    ) -> Result<PassphraseRootKey, RootKeyError> {
        let passphrase = source.read(true)?;
        let salt: [u8; SALT_LEN] = rand::random();
        let cipher = derive(file, &passphrase, &salt, cost)?;
        let check = cipher.seal(CHECK_AAD, CHECK_PLAINTEXT)?;
        let params = ParamsFile {
            source: source.to_string(),
            kdf: "argon2id".into(),
            version: 0x13,
            memory_kib: cost.memory_kib,
            iterations: cost.iterations,
            parallelism: cost.parallelism,
            salt: hex::encode(salt),
            check: hex::encode(check),
        };
        let text = format!(
            "# The keystore's root key is derived from this passphrase with these\n\
             # parameters (rewrap init --root passphrase:...). Never edit by hand.\n{}",
            toml::to_string(&params).expect("the parameters serialize")
        );
        super::write_new(file, text.as_bytes())?;
        Ok(PassphraseRootKey {
            file: file.to_path_buf(),
            source: source.clone(),
            cost,
            cipher,
        })
    }

    /// Reads `file`, reads the passphrase and derives the root key; a
    /// passphrase that does not open `check` is [`RootKeyError::WrongPassphrase`].
    pub fn open(file: &Path) -> Result<PassphraseRootKey, RootKeyError> {
        let invalid = |problem: String| RootKeyError::Invalid {
            path: file.to_path_buf(),
            problem,
        };
        let text = std::fs::read_to_string(file).map_err(|source| RootKeyError::Io {
            path: file.to_path_buf(),
            source,
        })?;
        let params: ParamsFile = toml::from_str(&text).map_err(|e| invalid(e.message().into()))?;
        if params.kdf != "argon2id" || params.version != 0x13 {
            return Err(invalid(format!(
                "unknown key derivation {} version {}",
                params.kdf, params.version
            )));
        }
        let salt = hex::decode(&params.salt).map_err(|_| invalid("salt is not hex".into()))?;
        let check = hex::decode(&params.check).map_err(|_| invalid("check is not hex".into()))?;
        let source = PassphraseSource::parse(&params.source).map_err(invalid)?;
        let cost = KdfCost {
            memory_kib: params.memory_kib,
            iterations: params.iterations,
            parallelism: params.parallelism,
        };
        let cipher = derive(file, &source.read(false)?, &salt, cost)?;
        cipher
            .unseal(CHECK_AAD, &check)
            .map_err(|_| RootKeyError::WrongPassphrase {
                from: source.to_string(),
            })?;
        Ok(PassphraseRootKey {
            file: file.to_path_buf(),
            source,
            cost,
            cipher,
        })
    }
}

impl RootKey for PassphraseRootKey {
    fn seal(&self, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, RootKeyError> {
        self.cipher.seal(aad, plaintext)
    }

    fn unseal(&self, aad: &[u8], sealed: &[u8]) -> Result<Secret, RootKeyError> {
        self.cipher.unseal(aad, sealed)
    }

    fn describe(&self) -> String {
        self.spec().describe_at(&self.file)
    }

    fn spec(&self) -> super::RootSpec {
        super::RootSpec::Passphrase(self.source.clone(), self.cost)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHEAP: KdfCost = KdfCost {
        memory_kib: 64,
        iterations: 1,
        parallelism: 1,
    };

    #[test]
    fn derive_reopen_and_refuse_a_wrong_passphrase() {
        let dir = tempfile::tempdir().unwrap();
        let var = "REWRAP_UNIT_TEST_PASSPHRASE_1";
        std::env::set_var(var, "correct horse\n");
        let file = dir.path().join("root.passphrase");
        let source = PassphraseSource::parse(&format!("env:{var}")).unwrap();
        let a = PassphraseRootKey::create(&file, &source, CHEAP).unwrap();
        let sealed = a.seal(b"aad", b"secret").unwrap();
        let b = PassphraseRootKey::open(&file).unwrap();
        assert_eq!(b.unseal(b"aad", &sealed).unwrap().expose(), b"secret");
        std::env::set_var(var, "battery staple");
        let err = PassphraseRootKey::open(&file).unwrap_err();
        assert!(matches!(err, RootKeyError::WrongPassphrase { .. }), "{err}");
        assert!(!err.to_string().contains("battery"), "{err}");
        assert!(PassphraseRootKey::create(&file, &source, CHEAP).is_err());
    }
}

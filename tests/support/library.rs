//! Shared setup of the envelope and rotation tests: a temporary keystore
//! with the shipped policies, principals and keys, driven in process.

pub(crate) use super::repo;
use rewrap::api::{CreateKeyRequest, KeyIdRequest, PrincipalRequest};
use rewrap::files::{DecryptOptions, EncryptOptions, FileError, Output};
use rewrap::service::{Caller, KmsService, LocalSession};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A keystore in a temporary folder, opened with the shipped policies.
pub(crate) struct Env {
    pub dir: tempfile::TempDir,
    pub home: PathBuf,
    pub service: Arc<KmsService>,
    pub owner: LocalSession,
}

impl Env {
    pub(crate) fn new() -> Env {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().join("home");
        KmsService::init(&home).unwrap();
        let service = KmsService::open(&home, Some(&repo().join("policies"))).unwrap();
        let owner = service.session(Caller {
            principal: "owner".into(),
            ..Default::default()
        });
        Env {
            dir,
            home,
            service,
            owner,
        }
    }

    /// A session of `principal` (created first by the owner).
    pub(crate) fn principal(&self, name: &str) -> LocalSession {
        use rewrap::kms::Kms;
        self.owner
            .create_principal(&PrincipalRequest {
                principal_name: name.into(),
            })
            .unwrap();
        self.session(name)
    }

    /// A session of an existing principal.
    pub(crate) fn session(&self, name: &str) -> LocalSession {
        session(&self.service, name)
    }

    /// A new key; returns its ARN.
    pub(crate) fn key(&self, description: &str) -> String {
        use rewrap::kms::Kms;
        self.owner
            .create_key(&CreateKeyRequest {
                description: Some(description.into()),
                ..Default::default()
            })
            .unwrap()
            .key_metadata
            .arn
    }

    /// Rotates the key material of `key` (new version); returns the count.
    pub(crate) fn rotate_key(&self, key: &str) -> u32 {
        use rewrap::kms::Kms;
        let r = KeyIdRequest {
            key_id: key.into(),
            grant_tokens: None,
        };
        self.owner.rotate_key_on_demand(&r).unwrap();
        self.owner
            .describe_key(&r)
            .unwrap()
            .key_metadata
            .key_material_versions
    }

    pub(crate) fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

/// Options for the app's context (`purpose = app-data`, which the shipped
/// app-reader policy requires).
pub(crate) fn app_opts(key: &str) -> EncryptOptions {
    let mut o = EncryptOptions::new(key);
    o.context.insert("purpose".into(), "app-data".into());
    o
}

/// Deterministic pseudo-random bytes.
pub(crate) fn bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Encrypts `plain` into `path` as an envelope.
pub(crate) fn seal(kms: &dyn rewrap::kms::Kms, opts: &EncryptOptions, path: &Path, plain: &[u8]) {
    let src = path.with_extension("plain");
    std::fs::write(&src, plain).unwrap();
    rewrap::files::encrypt_file(kms, opts, &src, Output::To(path)).unwrap();
    std::fs::remove_file(&src).unwrap();
}

/// Decrypts `path` into memory (through a temporary file).
pub(crate) fn open(kms: &dyn rewrap::kms::Kms, path: &Path) -> Result<Vec<u8>, FileError> {
    let out = path.with_extension("opened");
    rewrap::files::decrypt_file(kms, &DecryptOptions::default(), path, Output::To(&out))?;
    let bytes = std::fs::read(&out).unwrap();
    std::fs::remove_file(&out).unwrap();
    Ok(bytes)
}

/// Names in `dir` (to prove no temporary or partial output is left).
pub(crate) fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// A session of `principal` on `service`.
pub(crate) fn session(service: &Arc<KmsService>, principal: &str) -> LocalSession {
    service.session(Caller {
        principal: principal.into(),
        ..Default::default()
    })
}

//! Unit tests of `crate::keystore`.

use super::*;
use crate::error::ErrorCode;
use crate::error::KmsError;

fn key(id: u128) -> KeyRecord {
    KeyRecord {
        id: Uuid::from_u128(id),
        description: "t".into(),
        created: 0.0,
        state: KeyState::Enabled,
        deletion_date: None,
        pending_window_days: None,
        rotation: None,
        versions: vec![KeyVersion {
            version: 1,
            created: 0.0,
            origin: "CREATE".into(),
            material: Secret::random(32),
        }],
        tags: BTreeMap::new(),
        custom_key_store_id: None,
        key_spec: default_key_spec(),
        key_usage: default_key_usage(),
        origin: default_origin(),
        import: None,
    }
}

#[test]
fn update_persists_and_reopens() {
    let dir = tempfile::tempdir().unwrap();
    let store = Keystore::create(dir.path(), Config::default()).unwrap();
    store
        .update::<_, KeystoreError>(|s| {
            s.keys.insert(Uuid::from_u128(1), key(1));
            Ok(())
        })
        .unwrap();
    let reopened = Keystore::open(dir.path()).unwrap();
    let (state, _) = reopened.load().unwrap();
    assert_eq!(state.keys.len(), 1);
    let raw = fs::read(dir.path().join("keystore.sealed")).unwrap();
    let material = state.keys[&Uuid::from_u128(1)].current().material.clone();
    assert!(
        !raw.windows(32).any(|w| w == material.expose()),
        "key material must not appear unsealed"
    );
}

#[test]
fn failed_change_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = Keystore::create(dir.path(), Config::default()).unwrap();
    let before = fs::read(dir.path().join("keystore.sealed")).unwrap();
    let err = store
        .update::<_, KmsError>(|s| {
            s.keys.insert(Uuid::from_u128(1), key(1));
            Err::<(), _>(KmsError::validation("no"))
        })
        .unwrap_err();
    assert_eq!(err.message, "no");
    assert_eq!(
        fs::read(dir.path().join("keystore.sealed")).unwrap(),
        before
    );
}

#[test]
fn tampered_file_is_refused_not_replaced() {
    let dir = tempfile::tempdir().unwrap();
    Keystore::create(dir.path(), Config::default()).unwrap();
    let path = dir.path().join("keystore.sealed");
    let mut bytes = fs::read(&path).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    fs::write(&path, &bytes).unwrap();
    let store = Keystore::open(dir.path()).unwrap();
    let err = store.load().unwrap_err();
    assert!(
        matches!(
            &err,
            KeystoreError::Corrupt { path: p, problem: Corruption::Authentication } if *p == path
        ),
        "{err:?}"
    );
    let err = KmsError::from(err);
    assert!(
        err.message
            .contains("is corrupt or was tampered with (authentication failed)"),
        "{}",
        err.message
    );
    assert!(store.update::<_, KeystoreError>(|_| Ok(())).is_err());
    assert_eq!(fs::read(&path).unwrap(), bytes, "never overwritten");
}

#[test]
fn concurrent_updates_from_many_handles_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    Keystore::create(dir.path(), Config::default()).unwrap();
    let threads: Vec<_> = (0..8u128)
        .map(|t| {
            let dir = dir.path().to_path_buf();
            std::thread::spawn(move || {
                let store = Keystore::open(&dir).unwrap();
                for i in 0..10u128 {
                    store
                        .update::<_, KeystoreError>(|s| {
                            s.keys
                                .insert(Uuid::from_u128(t * 100 + i), key(t * 100 + i));
                            Ok(())
                        })
                        .unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let (state, _) = Keystore::open(dir.path()).unwrap().load().unwrap();
    assert_eq!(state.keys.len(), 80);
}

/// A sealed file with a valid header whose body was sealed by `root`.
fn seal_body(dir: &Path, body: &[u8]) {
    let root = crate::root::FileRootKey::load(&dir.join("root.key")).unwrap();
    let mut file = b"RWKS\x01\0\0\0".to_vec();
    file.extend_from_slice(&7u64.to_be_bytes());
    let sealed = root.seal(&file, body).unwrap();
    file.extend_from_slice(&sealed);
    fs::write(dir.join("keystore.sealed"), file).unwrap();
}

fn corruption_of(dir: &Path) -> (Corruption, KmsError) {
    match Keystore::open(dir).unwrap().load() {
        Err(e @ KeystoreError::Corrupt { .. }) => {
            let KeystoreError::Corrupt { problem, .. } = &e else {
                unreachable!()
            };
            (*problem, KmsError::from(e))
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
}

#[test]
fn each_corruption_is_named_and_internal() {
    let dir = tempfile::tempdir().unwrap();
    Keystore::create(dir.path(), Config::default()).unwrap();
    let sealed = dir.path().join("keystore.sealed");
    let original = fs::read(&sealed).unwrap();
    let expect = |problem: Corruption, why: &str| {
        let (found, kms) = corruption_of(dir.path());
        assert_eq!(found, problem);
        assert_eq!(kms.code, ErrorCode::Internal);
        assert_eq!(
            kms.message,
            format!(
                "keystore {} is corrupt or was tampered with ({why}); refusing to use it. \
                 Restore it from a backup",
                sealed.display()
            )
        );
    };

    fs::write(&sealed, b"not a keystore").unwrap();
    expect(Corruption::NotSealed, "not a sealed keystore file");

    let mut newer = original.clone();
    newer[4] = 2;
    fs::write(&sealed, &newer).unwrap();
    expect(Corruption::UnknownFormat, "unknown format version");

    seal_body(dir.path(), b"{not json");
    expect(Corruption::State, "state does not parse");
}

#[test]
fn state_parse_error_does_not_quote_the_state() {
    let dir = tempfile::tempdir().unwrap();
    Keystore::create(dir.path(), Config::default()).unwrap();
    seal_body(dir.path(), br#"{"keys": "SECRET-MATERIAL"}"#);
    let (_, kms) = corruption_of(dir.path());
    assert!(!kms.message.contains("SECRET"), "{}", kms.message);
}

#[test]
fn a_second_create_is_already_exists() {
    let dir = tempfile::tempdir().unwrap();
    Keystore::create(dir.path(), Config::default()).unwrap();
    let err = Keystore::create(dir.path(), Config::default()).unwrap_err();
    assert!(
        matches!(err, KeystoreError::AlreadyExists { .. }),
        "{err:?}"
    );
    let kms = KmsError::from(err);
    assert_eq!(kms.code, ErrorCode::AlreadyExists);
    assert_eq!(
        kms.message,
        format!("a keystore already exists in {}", dir.path().display())
    );
}

#[test]
fn opening_an_empty_folder_says_to_run_init() {
    let dir = tempfile::tempdir().unwrap();
    let err = Keystore::open(dir.path()).unwrap_err();
    assert!(matches!(err, KeystoreError::Missing { .. }), "{err:?}");
    let kms = KmsError::from(err);
    assert_eq!(kms.code, ErrorCode::Internal);
    assert_eq!(
        kms.message,
        format!(
            "no keystore in {}: run `rewrap init` first (or pass --keystore DIR)",
            dir.path().display()
        )
    );
}

#[test]
fn io_errors_keep_their_source_and_path() {
    let dir = tempfile::tempdir().unwrap();
    let store = Keystore::create(dir.path(), Config::default()).unwrap();
    let sealed = dir.path().join("keystore.sealed");
    fs::remove_file(&sealed).unwrap();
    let err = store.fingerprint().unwrap_err();
    match &err {
        KeystoreError::Io { path, source } => {
            assert_eq!(*path, sealed);
            assert_eq!(source.kind(), io::ErrorKind::NotFound);
        }
        other => panic!("expected Io, got {other:?}"),
    }
    let source = std::error::Error::source(&err).expect("the io::Error");
    assert_eq!(source.to_string(), "No such file or directory (os error 2)");
    let kms = KmsError::from(err);
    assert_eq!(kms.code, ErrorCode::Internal);
    assert_eq!(
        kms.message,
        format!(
            "keystore {}: No such file or directory (os error 2)",
            sealed.display()
        )
    );
}

#[test]
fn an_unusable_root_key_is_a_root_key_error() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    Keystore::create(dir.path(), Config::default()).unwrap();
    let root = dir.path().join("root.key");
    fs::set_permissions(&root, fs::Permissions::from_mode(0o644)).unwrap();
    let err = Keystore::open(dir.path()).unwrap_err();
    assert!(
        matches!(err, KeystoreError::RootKey(RootKeyError::Invalid { .. })),
        "{err:?}"
    );
    let kms = KmsError::from(err);
    assert_eq!(kms.code, ErrorCode::Internal);
    assert_eq!(
        kms.message,
        format!(
            "root key {}: permissions 644 are too open; it must be readable by its owner only (chmod 600)",
            root.display()
        )
    );
}

#[test]
fn a_config_that_does_not_parse_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    Keystore::create(dir.path(), Config::default()).unwrap();
    let config = dir.path().join("config.toml");
    fs::write(&config, "region = ").unwrap();
    let err = Keystore::open(dir.path()).unwrap_err();
    assert!(matches!(err, KeystoreError::Config { .. }), "{err:?}");
    let kms = KmsError::from(err);
    assert!(
        kms.message
            .starts_with(&format!("keystore {}: ", config.display())),
        "{}",
        kms.message
    );
}

/// `rotate --report r.json s3://…` failed after rotating everything: the
/// folder of a bare file name was the empty path, which cannot be fsynced.
#[test]
fn a_bare_file_name_is_synced_in_the_current_folder() {
    assert_eq!(folder_of(Path::new("r.json")), Path::new("."));
    assert_eq!(folder_of(Path::new("out/r.json")), Path::new("out"));
    assert_eq!(folder_of(Path::new("/r.json")), Path::new("/"));
    assert_eq!(folder_of(Path::new("/")), Path::new("."));
}

//! Unit tests of the service: deletion windows, automatic key-material
//! rotation, cancelled deletion, probing of unknown keys, data-key
//! parameters, Verify with each of a key's signing algorithms.

use super::*;
use crate::api::*;
use crate::ciphertext_blob;
use crate::kms::Kms;

fn owner() -> (tempfile::TempDir, LocalSession) {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("ks");
    KmsService::init(&home).unwrap();
    let service = KmsService::open(&home, None).unwrap();
    let session = service.session(Caller {
        principal: OWNER.into(),
        ..Caller::default()
    });
    (dir, session)
}

fn key_id(kms: &LocalSession) -> String {
    kms.create_key(&CreateKeyRequest::default())
        .unwrap()
        .key_metadata
        .key_id
}

#[test]
fn deletion_takes_effect_when_the_window_passes() {
    let (_dir, kms) = owner();
    let id = key_id(&kms);
    let keep = key_id(&kms);
    let scheduled = kms
        .schedule_key_deletion(&ScheduleKeyDeletionRequest {
            key_id: id.clone(),
            pending_window_in_days: Some(7),
            force: None,
        })
        .unwrap();
    assert_eq!(scheduled.key_state, "PendingDeletion");
    assert_eq!(scheduled.pending_window_in_days, 7);
    let describe = |k: &str| {
        kms.describe_key(&KeyIdRequest {
            key_id: k.into(),
            grant_tokens: None,
        })
    };
    assert_eq!(
        describe(&id).unwrap().key_metadata.key_state,
        "PendingDeletion"
    );
    kms.service().set_clock_offset_days(6);
    assert!(describe(&id).is_ok(), "still inside the window");
    kms.service().set_clock_offset_days(8);
    assert_eq!(describe(&id).unwrap_err().code, ErrorCode::NotFound);
    let listed = kms.list_keys(&ListRequest::default()).unwrap();
    assert_eq!(listed.keys.len(), 1);
    assert_eq!(listed.keys[0].key_id, keep);
    // The next update purges the key from the keystore for good.
    key_id(&kms);
    let (state, _) = kms.service().keystore.load().unwrap();
    assert!(!state.keys.contains_key(&Uuid::parse_str(&id).unwrap()));
}

#[test]
fn automatic_rotation_adds_a_version_when_due() {
    let (_dir, kms) = owner();
    let id = key_id(&kms);
    kms.enable_key_rotation(&EnableKeyRotationRequest {
        key_id: id.clone(),
        rotation_period_in_days: Some(90),
    })
    .unwrap();
    assert!(kms.service().rotate_due_keys().unwrap().is_empty());
    kms.service().set_clock_offset_days(91);
    let rotated = kms.service().rotate_due_keys().unwrap();
    assert_eq!(rotated.len(), 1);
    assert!(rotated[0].ends_with(&id));
    assert!(
        kms.service().rotate_due_keys().unwrap().is_empty(),
        "next one is 90 days on"
    );
    let rotations = kms
        .list_key_rotations(&ListRequest {
            key_id: Some(id.clone()),
            ..ListRequest::default()
        })
        .unwrap();
    assert_eq!(rotations.rotations.len(), 1);
    assert_eq!(rotations.rotations[0].rotation_type, "AUTOMATIC");
}

#[test]
fn cancelled_deletion_leaves_the_key_disabled() {
    let (_dir, kms) = owner();
    let id = key_id(&kms);
    let req = KeyIdRequest {
        key_id: id.clone(),
        grant_tokens: None,
    };
    kms.schedule_key_deletion(&ScheduleKeyDeletionRequest {
        key_id: id.clone(),
        pending_window_in_days: None,
        force: None,
    })
    .unwrap();
    let disable = DisableKeyRequest {
        key_id: id.clone(),
        force: None,
    };
    assert_eq!(
        kms.disable_key(&disable).unwrap_err().code,
        ErrorCode::InvalidState
    );
    kms.cancel_key_deletion(&req).unwrap();
    let meta = kms.describe_key(&req).unwrap().key_metadata;
    assert_eq!(meta.key_state, "Disabled");
    assert_eq!(meta.deletion_date, None);
    assert_eq!(
        kms.cancel_key_deletion(&req).unwrap_err().code,
        ErrorCode::InvalidState
    );
    kms.enable_key(&req).unwrap();
}

#[test]
fn unknown_keys_are_access_denied_to_callers_without_rights() {
    let (_dir, kms) = owner();
    let stranger = kms.service().session(Caller {
        principal: "stranger".into(),
        ..Caller::default()
    });
    let req = KeyIdRequest {
        key_id: Uuid::new_v4().to_string(),
        grant_tokens: None,
    };
    assert_eq!(
        stranger.describe_key(&req).unwrap_err().code,
        ErrorCode::AccessDenied
    );
    assert_eq!(
        kms.describe_key(&req).unwrap_err().code,
        ErrorCode::NotFound
    );
}

#[test]
fn generate_data_key_checks_its_parameters() {
    let (_dir, kms) = owner();
    let id = key_id(&kms);
    let req = |spec: Option<&str>, n: Option<u32>| GenerateDataKeyRequest {
        key_id: id.clone(),
        key_spec: spec.map(String::from),
        number_of_bytes: n,
        ..Default::default()
    };
    assert_eq!(
        kms.generate_data_key(&req(Some("AES_128"), None))
            .unwrap()
            .plaintext
            .len(),
        16
    );
    assert_eq!(
        kms.generate_data_key(&req(None, Some(1024)))
            .unwrap()
            .plaintext
            .len(),
        1024
    );
    for bad in [
        req(None, None),
        req(Some("AES_256"), Some(32)),
        req(None, Some(1025)),
        req(Some("RSA"), None),
    ] {
        assert_eq!(
            kms.generate_data_key(&bad).unwrap_err().code,
            ErrorCode::Validation
        );
    }
    let wp = kms
        .generate_data_key_without_plaintext(&req(Some("AES_256"), None))
        .unwrap();
    assert_eq!(wp.ciphertext_blob.0.len(), 32 + ciphertext_blob::OVERHEAD);
}

/// Verify keeps one parsed public key per key and signing algorithm: each
/// of an RSA key's six algorithms accepts its own signature and refuses
/// the other five's, the first time (parsing) and again (from the cache),
/// and a DIGEST verification shares the slot of its algorithm.
#[test]
fn verify_checks_each_signature_with_its_own_algorithm() {
    let (_dir, kms) = owner();
    let key_id = kms
        .create_key(&CreateKeyRequest {
            key_spec: Some("RSA_2048".into()),
            key_usage: Some("SIGN_VERIFY".into()),
            ..Default::default()
        })
        .unwrap()
        .key_metadata
        .key_id;
    let message = crate::secret::Secret::from_slice(b"the message");
    let algorithms = keyspec::KeySpec::Rsa(2048).signing_algorithms();
    assert_eq!(algorithms.len(), 6);
    let signatures: Vec<_> = algorithms
        .iter()
        .map(|alg| {
            kms.sign(&SignRequest {
                key_id: key_id.clone(),
                message: message.clone(),
                message_type: None,
                signing_algorithm: (*alg).into(),
                grant_tokens: None,
            })
            .unwrap()
            .signature
        })
        .collect();
    let verify = |alg: &str, signature: &CiphertextBlob, message_type: Option<&str>, message| {
        kms.verify(&VerifyRequest {
            key_id: key_id.clone(),
            message,
            message_type: message_type.map(String::from),
            signature: signature.clone(),
            signing_algorithm: alg.into(),
            grant_tokens: None,
        })
    };
    for pass in 0..2 {
        for (i, alg) in algorithms.iter().enumerate() {
            for (j, signature) in signatures.iter().enumerate() {
                let outcome = verify(alg, signature, None, message.clone());
                if i == j {
                    let response = outcome.unwrap();
                    assert!(response.signature_valid, "pass {pass}: {alg}");
                    assert_eq!(response.signing_algorithm, *alg);
                } else {
                    assert_eq!(
                        outcome.unwrap_err().code,
                        ErrorCode::KmsInvalidSignature,
                        "pass {pass}: {alg} accepted the signature made with {}",
                        algorithms[j]
                    );
                }
            }
        }
    }
    // RSASSA_PSS_SHA_256 over the SHA-256 digest of the message.
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, b"the message");
    let digest = crate::secret::Secret::from_slice(digest.as_ref());
    assert!(
        verify(
            algorithms[0],
            &signatures[0],
            Some("DIGEST"),
            digest.clone()
        )
        .unwrap()
        .signature_valid
    );
    assert_eq!(
        verify(algorithms[0], &signatures[1], Some("DIGEST"), digest)
            .unwrap_err()
            .code,
        ErrorCode::KmsInvalidSignature
    );
}

/// A key or alias another process has just made is found at once, even
/// while this process trusts its snapshot without a look at the file
/// (`FRESHNESS`): a job that creates a key with the CLI and at once uses it
/// through `rewrap serve` is not told NotFoundException (the README's demo
/// met this in one run of seven). Only the answer given is in the trail.
/// (A change to what exists, such as an alias pointed elsewhere, is still
/// seen within `FRESHNESS`, as before.)
#[test]
fn a_key_another_process_just_made_is_found_at_once() {
    let (dir, server) = owner();
    let other = KmsService::open(&dir.path().join("ks"), None)
        .unwrap()
        .session(Caller {
            principal: OWNER.into(),
            ..Caller::default()
        });
    let new = key_id(&other);
    other
        .create_alias(&AliasRequest {
            alias_name: "alias/made-elsewhere".into(),
            target_key_id: new.clone(),
        })
        .unwrap();
    // As if the server had looked at the file a moment ago: without a
    // second look it would not know the key.
    let trusted_now = || *server.service().checked.lock().unwrap() = std::time::Instant::now();
    trusted_now();
    let encrypted = server
        .encrypt(&EncryptRequest {
            key_id: new.clone(),
            plaintext: crate::secret::Secret::from_slice(b"made elsewhere"),
            encryption_context: None,
            grant_tokens: None,
            encryption_algorithm: None,
            ..Default::default()
        })
        .unwrap();
    assert_eq!(
        encrypted.key_id,
        server.service().key_arn(&new.parse().unwrap())
    );
    // A key change through the server (its own once-only body) as well.
    let newer = key_id(&other);
    trusted_now();
    server
        .disable_key(&DisableKeyRequest {
            key_id: newer.clone(),
            force: None,
        })
        .unwrap();
    trusted_now();
    let described = server
        .describe_key(&KeyIdRequest {
            key_id: "alias/made-elsewhere".into(),
            grant_tokens: None,
        })
        .unwrap();
    assert_eq!(described.key_metadata.key_id, new);
    // A key that does not exist is still NotFoundException, recorded once.
    trusted_now();
    let missing = server
        .describe_key(&KeyIdRequest {
            key_id: "alias/made-nowhere".into(),
            grant_tokens: None,
        })
        .unwrap_err();
    assert_eq!(missing.code.as_str(), "NotFoundException");
    let records = crate::audit::read_records(&server.service().audit_path()).unwrap();
    let count = |operation: &str, outcome: &str| {
        records
            .iter()
            .filter(|r| r.operation == operation && r.outcome == outcome)
            .count()
    };
    assert_eq!(count("Encrypt", "Success"), 1);
    assert_eq!(count("Encrypt", "NotFoundException"), 0);
    assert_eq!(count("DisableKey", "Success"), 1);
    assert_eq!(count("DisableKey", "NotFoundException"), 0);
    assert_eq!(count("DescribeKey", "Success"), 1);
    assert_eq!(count("DescribeKey", "NotFoundException"), 1);
}

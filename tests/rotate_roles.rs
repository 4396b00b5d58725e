//! Role separation end to end, with the shipped policies: the application
//! writer seals 1,000 files, the storage rotator re-wraps them all and can
//! decrypt none (each refusal audited), and the application reader still
//! opens every file, byte-identical.

mod support;

use rewrap::api::{CiphertextBlob, DecryptRequest};
use rewrap::envelope::ParsedHeader;
use rewrap::files::DecryptOptions;
use rewrap::kms::Kms;
use rewrap::worker::{self, FileStore, RewrapOptions};
use support::library::*;

const FILES: usize = 1000;

#[test]
fn rotator_rewraps_1000_files_but_can_read_none_and_the_reader_reads_all() {
    let env = Env::new();
    let old = env.key("old");
    let new = env.key("new");
    let writer = env.principal("app-writer");
    let reader = env.principal("app-reader");
    let rotator = env.principal("storage-rotator");
    let root = env.path("tree");
    let mut plain = Vec::with_capacity(FILES);
    for i in 0..FILES {
        let dir = root.join(format!("{:02}", i % 50));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("{i}.rwp"));
        let data = bytes(i % 300, i as u64);
        let mut f = std::fs::File::create(&path).unwrap();
        rewrap::files::encrypt_stream(&writer, &app_opts(&old), &mut &data[..], &mut f).unwrap();
        plain.push((path, data));
    }

    let items = worker::walk_files(std::slice::from_ref(&root), false);
    let report = worker::rewrap_items(
        &rotator,
        &FileStore::default(),
        items,
        &RewrapOptions::new(&new),
    )
    .unwrap();
    assert_eq!(
        (report.rotated, report.failed, report.not_envelope),
        (FILES as u64, 0, 0),
        "{:?}",
        report.failures.first()
    );
    assert_eq!(report.by_source[&old]["1"].rotated, FILES as u64);

    // The rotator can decrypt nothing: not the file, not the raw slot.
    for (path, _) in &plain {
        let err = open(&rotator, path).unwrap_err();
        assert_eq!(err.kind(), "AccessDeniedException", "{path:?}: {err}");
    }
    let (path, _) = &plain[0];
    let parsed = ParsedHeader::read_from(&mut std::fs::File::open(path).unwrap()).unwrap();
    let (_, slot) = parsed.slots.active().unwrap();
    assert_eq!(slot.key_arn, new);
    let err = rotator
        .decrypt(&DecryptRequest {
            ciphertext_blob: CiphertextBlob(slot.wrapped_key.clone()),
            encryption_context: Some(parsed.header.kms_context()),
            ..Default::default()
        })
        .unwrap_err();
    assert_eq!(err.code.as_str(), "AccessDeniedException");

    // The application reader opens every file, byte-identical.
    for (path, data) in &plain {
        let mut out = Vec::new();
        let mut f = std::fs::File::open(path).unwrap();
        rewrap::files::decrypt_stream(&reader, &DecryptOptions::default(), &mut f, &mut out)
            .unwrap();
        assert!(out == *data, "{path:?} differs after rotation");
    }

    // The audit trail has every refusal and every re-wrap, each naming the
    // file it was for.
    let records = rewrap::audit::read_records(&env.service.audit_path()).unwrap();
    let of = |op: &str, outcome: &str| {
        records
            .iter()
            .filter(|r| {
                r.principal == "storage-rotator" && r.operation == op && r.outcome == outcome
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(of("Decrypt", "AccessDeniedException").len(), FILES + 1);
    let rewraps = of("ReEncrypt", "Success");
    assert_eq!(rewraps.len(), FILES);
    assert!(rewraps.iter().all(|r| r
        .encryption_context
        .as_ref()
        .is_some_and(|c| c.contains_key("rewrap:file-id"))));
    // Rotation never changes a context.
    assert!(rewraps
        .iter()
        .all(|r| r.encryption_context == r.destination_encryption_context));
    assert!(records
        .iter()
        .filter(|r| r.principal == "storage-rotator")
        .all(|r| r.operation != "Decrypt" || r.outcome != "Success"));
}

/// Issue 11 finding 1 for envelopes: a data key is bound to its context and
/// its file id; the rotator can neither relabel it (`purpose = hr` to
/// `purpose = app-data`) nor move it to another file's id, while rotating it
/// in place still works and keeps both.
#[test]
fn rotator_cannot_relabel_or_move_an_envelope_data_key_issue_11_finding_1() {
    use rewrap::api::ReEncryptRequest;
    let env = Env::new();
    let key = env.key("k");
    let new = env.key("new");
    let writer = env.principal("app-writer");
    let reader = env.principal("app-reader");
    let rotator = env.principal("storage-rotator");
    let hr = env.path("hr.rwp");
    let mut hr_opts = rewrap::files::EncryptOptions::new(&key);
    hr_opts.context.insert("purpose".into(), "hr".into());
    seal(&writer, &hr_opts, &hr, b"hr data");
    let app = env.path("app.rwp");
    seal(&writer, &app_opts(&key), &app, b"app data");
    let header = |path: &std::path::Path| {
        ParsedHeader::read_from(&mut std::fs::File::open(path).unwrap()).unwrap()
    };
    let parsed = header(&hr);
    let (_, slot) = parsed.slots.active().unwrap();
    let source = parsed.header.kms_context();
    let mut relabelled = source.clone();
    relabelled.insert("purpose".into(), "app-data".into());
    let moved = header(&app).header.kms_context();
    assert_ne!(moved["rewrap:file-id"], source["rewrap:file-id"]);
    for destination in [relabelled, moved] {
        let err = rotator
            .re_encrypt(&ReEncryptRequest {
                ciphertext_blob: CiphertextBlob(slot.wrapped_key.clone()),
                source_encryption_context: Some(source.clone()),
                destination_key_id: key.clone(),
                destination_encryption_context: Some(destination.clone()),
                ..Default::default()
            })
            .unwrap_err();
        assert_eq!(err.code.as_str(), "AccessDeniedException", "{err}");
        assert!(
            err.message.ends_with(
                ": storage-rotator.toml#2 (rotator-no-context-change) \
                 (rewrap:ReEncryptSameContext = false)"
            ),
            "{}",
            err.message
        );
    }
    let err = open(&reader, &hr).unwrap_err();
    assert_eq!(err.kind(), "AccessDeniedException", "{err}");

    // Rotation of the same file re-wraps under the new key, context kept.
    let items = worker::walk_files(std::slice::from_ref(&hr), false);
    let report = worker::rewrap_items(
        &rotator,
        &FileStore::default(),
        items,
        &RewrapOptions::new(&new),
    )
    .unwrap();
    assert_eq!((report.rotated, report.failed), (1, 0));
    let after = header(&hr);
    assert_eq!(after.header.kms_context(), source);
    assert_eq!(after.slots.active().unwrap().1.key_arn, new);
    let err = open(&reader, &hr).unwrap_err();
    assert_eq!(err.kind(), "AccessDeniedException", "{err}");
    assert_eq!(open(&env.owner, &hr).unwrap(), b"hr data");
}

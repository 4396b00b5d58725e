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
    assert!(records
        .iter()
        .filter(|r| r.principal == "storage-rotator")
        .all(|r| r.operation != "Decrypt" || r.outcome != "Success"));
}

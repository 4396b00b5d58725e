//! Envelope round trips through the KMS, on real files: chunk-boundary
//! sizes, 100 MiB, streams, and trees in place and to another folder.

mod support;

use rewrap::envelope::DEFAULT_CHUNK_SIZE;
use rewrap::files::{decrypt_stream, encrypt_stream, DecryptOptions, Output};
use rewrap::worker::{transform_tree, TreeOp, TreeOptions};
use support::library::*;

#[test]
fn round_trips_at_chunk_boundaries() {
    let env = Env::new();
    let key = env.key("data");
    let writer = env.principal("app-writer");
    let reader = env.principal("app-reader");
    let c = DEFAULT_CHUNK_SIZE as usize;
    for (i, size) in [0, 1, c - 1, c, c + 1, 3 * c, 3 * c + 17]
        .into_iter()
        .enumerate()
    {
        let plain = bytes(size, i as u64);
        let path = env.path(&format!("f{i}.rwp"));
        seal(&writer, &app_opts(&key), &path, &plain);
        let len = std::fs::metadata(&path).unwrap().len();
        let header =
            rewrap::envelope::ParsedHeader::read_from(&mut std::fs::File::open(&path).unwrap())
                .unwrap()
                .total_len() as u64;
        assert_eq!(
            len,
            header + rewrap::stream::body_len(size as u64, DEFAULT_CHUNK_SIZE),
            "size {size}"
        );
        assert_eq!(open(&reader, &path).unwrap(), plain, "size {size}");
    }
}

// AES-GCM is generic, so it is compiled with this crate's opt-level: the
// test profile builds rewrap with opt-level 2 (Cargo.toml) for this test.
#[test]
fn round_trips_100_mib_in_constant_memory() {
    let env = Env::new();
    let key = env.key("data");
    let writer = env.principal("app-writer");
    let reader = env.principal("app-reader");
    let plain = bytes(100 << 20, 42);
    let src = env.path("big.plain");
    std::fs::write(&src, &plain).unwrap();
    let sealed = env.path("big.rwp");
    let info =
        rewrap::files::encrypt_file(&writer, &app_opts(&key), &src, Output::To(&sealed)).unwrap();
    assert_eq!(info.plaintext_bytes, 100 << 20);
    let out = env.path("big.out");
    rewrap::files::decrypt_file(
        &reader,
        &DecryptOptions::default(),
        &sealed,
        Output::To(&out),
    )
    .unwrap();
    assert!(
        std::fs::read(&out).unwrap() == plain,
        "100 MiB round trip differs"
    );
}

#[test]
fn streams_round_trip_and_record_the_key() {
    let env = Env::new();
    let key = env.key("data");
    let writer = env.principal("app-writer");
    let reader = env.principal("app-reader");
    let plain = bytes(200_000, 7);
    let mut sealed = Vec::new();
    let info = encrypt_stream(&writer, &app_opts(&key), &mut &plain[..], &mut sealed).unwrap();
    assert_eq!(info.key_arn, key);
    assert_eq!(info.key_version, 1);
    let mut back = Vec::new();
    let info2 = decrypt_stream(
        &reader,
        &DecryptOptions::default(),
        &mut &sealed[..],
        &mut back,
    )
    .unwrap();
    assert_eq!(back, plain);
    assert_eq!(info2.file_id, info.file_id);
}

#[test]
fn encrypting_in_place_replaces_the_file_and_keeps_its_mode() {
    use std::os::unix::fs::PermissionsExt;
    let env = Env::new();
    let key = env.key("data");
    let writer = env.principal("app-writer");
    let reader = env.principal("app-reader");
    let path = env.path("doc.txt");
    let plain = bytes(70_000, 3);
    std::fs::write(&path, &plain).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
    rewrap::files::encrypt_file(&writer, &app_opts(&key), &path, Output::InPlace).unwrap();
    assert!(rewrap::files::is_envelope(&path).unwrap());
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o640);
    assert_eq!(names(env.dir.path()), vec!["doc.txt", "home"]);
    rewrap::files::decrypt_file(&reader, &DecryptOptions::default(), &path, Output::InPlace)
        .unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), plain);
}

#[test]
fn trees_encrypt_and_decrypt_in_place_and_to_another_folder() {
    let env = Env::new();
    let key = env.key("data");
    let writer = env.principal("app-writer");
    let reader = env.principal("app-reader");
    let src = env.path("src");
    for i in 0..40 {
        let dir = src.join(format!("d{}", i % 4));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("f{i}")), bytes(i * 1000, i as u64)).unwrap();
    }
    let tree = TreeOptions {
        follow_links: false,
        jobs: 2,
        ..TreeOptions::default()
    };
    let dec = TreeOp::Decrypt(DecryptOptions::default());
    let sealed = env.path("sealed");
    let enc = TreeOp::Encrypt(app_opts(&key));
    let r = transform_tree(&writer, &enc, &src, Some(&sealed), &tree);
    assert_eq!((r.done, r.skipped, r.failed.len()), (40, 0, 0));
    // Encrypting the sealed tree again in place skips every envelope.
    let r = transform_tree(&writer, &enc, &sealed, None, &tree);
    assert_eq!((r.done, r.skipped, r.failed.len()), (0, 40, 0));
    let r = transform_tree(&reader, &dec, &sealed, None, &tree);
    assert_eq!((r.done, r.skipped, r.failed.len()), (40, 0, 0));
    for i in 0..40 {
        let rel = format!("d{}/f{i}", i % 4);
        assert_eq!(
            std::fs::read(sealed.join(&rel)).unwrap(),
            std::fs::read(src.join(&rel)).unwrap(),
            "{rel}"
        );
    }
}

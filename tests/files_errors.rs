//! Every way an envelope can fail to open: each is a specific error, and no
//! output that looks complete is left behind.

mod support;

use rewrap::envelope::{ParsedHeader, Slot, SLOT_SIZE};
use rewrap::files::{decrypt_file, DecryptOptions, FileError, Output};
use rewrap::kms::Kms;
use std::path::Path;
use support::library::*;

const CHUNK: u32 = 4096;

struct Case {
    env: Env,
    key: String,
    writer: rewrap::service::LocalSession,
    reader: rewrap::service::LocalSession,
}

fn case() -> Case {
    let env = Env::new();
    let key = env.key("data");
    let writer = env.principal("app-writer");
    let reader = env.principal("app-reader");
    Case {
        env,
        key,
        writer,
        reader,
    }
}

impl Case {
    /// A 3-chunk envelope (4096 + 4096 + 1808 bytes of plaintext).
    fn sealed(&self, name: &str) -> std::path::PathBuf {
        let mut opts = app_opts(&self.key);
        opts.chunk_size = CHUNK;
        let path = self.env.path(name);
        seal(&self.writer, &opts, &path, &bytes(10_000, 1));
        path
    }
}

fn body_offset(path: &Path) -> usize {
    let parsed = ParsedHeader::read_from(&mut std::fs::File::open(path).unwrap()).unwrap();
    parsed.total_len()
}

fn edit(path: &Path, f: impl FnOnce(&mut Vec<u8>)) {
    let mut b = std::fs::read(path).unwrap();
    f(&mut b);
    std::fs::write(path, b).unwrap();
}

/// Decrypts `path` to `<path>.out`, expects failure, and checks that
/// neither the output nor a temporary file exists afterwards.
fn refused(kms: &dyn Kms, opts: &DecryptOptions, path: &Path) -> FileError {
    let dir = path.parent().unwrap();
    let before = names(dir);
    let out = path.with_extension("out");
    let err = decrypt_file(kms, opts, path, Output::To(&out)).unwrap_err();
    assert!(!out.exists(), "output left behind after {err}");
    assert_eq!(names(dir), before, "temporary file left behind after {err}");
    err
}

fn assert_error(err: &FileError, kind: &str, message: &str) {
    assert_eq!(err.kind(), kind, "{err}");
    assert!(err.to_string().contains(message), "{err}");
}

#[test]
fn plain_file_is_not_an_envelope() {
    let c = case();
    let path = c.env.path("plain.txt");
    std::fs::write(&path, b"hello, world").unwrap();
    let err = refused(&c.reader, &DecryptOptions::default(), &path);
    assert_error(&err, "NotEnvelope", "not a rewrap envelope (bad magic)");
}

#[test]
fn corrupt_header_field_is_a_checksum_mismatch() {
    let c = case();
    let path = c.sealed("a.rwp");
    edit(&path, |b| b[20] ^= 0x01); // inside the file id
    let err = refused(&c.reader, &DecryptOptions::default(), &path);
    assert_error(
        &err,
        "CorruptHeader",
        "corrupt header: header checksum mismatch",
    );
}

#[test]
fn truncated_header_is_reported() {
    let c = case();
    let path = c.sealed("a.rwp");
    edit(&path, |b| b.truncate(500));
    let err = refused(&c.reader, &DecryptOptions::default(), &path);
    assert_error(&err, "TruncatedHeader", "truncated: header incomplete");
}

#[test]
fn both_slots_invalid_is_reported() {
    let c = case();
    let path = c.sealed("a.rwp");
    let slot0 = ParsedHeader::read_from(&mut std::fs::File::open(&path).unwrap())
        .unwrap()
        .header
        .slot_offset(0) as usize;
    edit(&path, |b| b[slot0 + 100] ^= 0x40);
    let err = refused(&c.reader, &DecryptOptions::default(), &path);
    assert_error(
        &err,
        "CorruptHeader",
        "corrupt header: both key slots invalid",
    );
}

#[test]
fn torn_slot_write_leaves_the_file_readable_through_the_other_slot() {
    let c = case();
    let path = c.sealed("a.rwp");
    let plain = open(&c.reader, &path).unwrap();
    let parsed = ParsedHeader::read_from(&mut std::fs::File::open(&path).unwrap()).unwrap();
    let (active, slot) = parsed.slots.active().unwrap();
    assert_eq!(active, 0);
    // A rotation was writing slot 1 with sequence 2 when the power failed:
    // only the first 512 bytes (one sector) reached the disk.
    let newer = Slot {
        sequence: slot.sequence + 1,
        ..slot.clone()
    }
    .encode()
    .unwrap();
    let at = parsed.header.slot_offset(1) as usize;
    edit(&path, |b| b[at..at + 512].copy_from_slice(&newer[..512]));
    let reparsed = ParsedHeader::read_from(&mut std::fs::File::open(&path).unwrap()).unwrap();
    assert_eq!(reparsed.slots.0[1], rewrap::envelope::SlotState::Corrupt);
    assert_eq!(open(&c.reader, &path).unwrap(), plain);
    // The same with the roles swapped: a torn slot 0 and a valid slot 1.
    edit(&path, |b| {
        b[at..at + SLOT_SIZE].copy_from_slice(&newer);
        let at0 = at - SLOT_SIZE;
        b[at0 + 512..at0 + SLOT_SIZE].fill(0xFF);
    });
    assert_eq!(open(&c.reader, &path).unwrap(), plain);
}

#[test]
fn corrupt_chunk_names_the_chunk() {
    let c = case();
    let path = c.sealed("a.rwp");
    let body = body_offset(&path);
    edit(&path, |b| b[body + CHUNK as usize + 16 + 10] ^= 0x01);
    let err = refused(&c.reader, &DecryptOptions::default(), &path);
    assert_error(&err, "ChunkAuth", "chunk 1 failed authentication");
}

#[test]
fn truncation_at_a_chunk_boundary_is_reported() {
    let c = case();
    let path = c.sealed("a.rwp");
    let body = body_offset(&path);
    edit(&path, |b| b.truncate(body + 2 * (CHUNK as usize + 16)));
    let err = refused(&c.reader, &DecryptOptions::default(), &path);
    assert_error(&err, "Truncated", "truncated: final chunk missing");
    // And with the whole body gone.
    edit(&path, |b| b.truncate(body));
    let err = refused(&c.reader, &DecryptOptions::default(), &path);
    assert_error(&err, "Truncated", "truncated: final chunk missing");
}

#[test]
fn trailing_garbage_is_reported() {
    let c = case();
    let path = c.sealed("a.rwp");
    edit(&path, |b| b.extend_from_slice(b"appended by someone"));
    let err = refused(&c.reader, &DecryptOptions::default(), &path);
    assert_error(&err, "TrailingData", "trailing data after final chunk");
}

#[test]
fn chunk_swapped_from_another_file_is_refused() {
    let c = case();
    let a = c.sealed("a.rwp");
    let b = c.sealed("b.rwp");
    let body = body_offset(&a);
    let other = std::fs::read(&b).unwrap();
    let full = CHUNK as usize + 16;
    edit(&a, |x| {
        x[body + full..body + 2 * full].copy_from_slice(&other[body + full..body + 2 * full]);
    });
    let err = refused(&c.reader, &DecryptOptions::default(), &a);
    assert_error(&err, "ChunkAuth", "chunk 1 failed authentication");
}

#[test]
fn reordered_chunks_are_refused() {
    let c = case();
    let a = c.sealed("a.rwp");
    let body = body_offset(&a);
    let full = CHUNK as usize + 16;
    edit(&a, |x| {
        let (first, rest) = x[body..].split_at_mut(full);
        first.swap_with_slice(&mut rest[..full]);
    });
    let err = refused(&c.reader, &DecryptOptions::default(), &a);
    assert_error(&err, "ChunkAuth", "chunk 0 failed authentication");
}

#[test]
fn slot_copied_from_another_file_is_refused_by_the_kms() {
    let c = case();
    let a = c.sealed("a.rwp");
    let b = c.sealed("b.rwp");
    let at = ParsedHeader::read_from(&mut std::fs::File::open(&a).unwrap())
        .unwrap()
        .header
        .slot_offset(0) as usize;
    let other = std::fs::read(&b).unwrap();
    edit(&a, |x| {
        x[at..at + SLOT_SIZE].copy_from_slice(&other[at..at + SLOT_SIZE]);
    });
    let err = refused(&c.reader, &DecryptOptions::default(), &a);
    assert_error(
        &err,
        "InvalidCiphertextException",
        "InvalidCiphertextException",
    );
}

#[test]
fn wrong_key_is_incorrect_key() {
    let c = case();
    let other = c.env.key("other");
    let path = c.sealed("a.rwp");
    let opts = DecryptOptions {
        key_id: Some(other),
        ..Default::default()
    };
    let err = refused(&c.env.owner, &opts, &path);
    assert_error(&err, "IncorrectKeyException", "IncorrectKeyException");
}

#[test]
fn missing_rights_are_access_denied() {
    let c = case();
    let path = c.sealed("a.rwp");
    // The writer may not decrypt at all.
    let err = refused(&c.writer, &DecryptOptions::default(), &path);
    assert_error(&err, "AccessDeniedException", "AccessDeniedException");
    // The reader may not decrypt data outside its purpose.
    let path = c.env.path("other-purpose.rwp");
    let mut opts = rewrap::files::EncryptOptions::new(&c.key);
    opts.context.insert("purpose".into(), "billing".into());
    seal(&c.writer, &opts, &path, b"not for the app");
    let err = refused(&c.reader, &DecryptOptions::default(), &path);
    assert_error(&err, "AccessDeniedException", "AccessDeniedException");
}

#[test]
fn expected_context_is_checked_before_the_kms() {
    let c = case();
    let path = c.sealed("a.rwp");
    let mut opts = DecryptOptions::default();
    opts.expect_context
        .insert("purpose".into(), "billing".into());
    let err = refused(&c.reader, &opts, &path);
    assert_error(&err, "ContextMismatch", "encryption context mismatch");
}

#[test]
fn reserved_context_keys_are_refused_when_encrypting() {
    let c = case();
    let mut opts = app_opts(&c.key);
    opts.context
        .insert("rewrap:file-id".into(), "forged".into());
    let src = c.env.path("x.plain");
    std::fs::write(&src, b"x").unwrap();
    let out = c.env.path("x.rwp");
    let err = rewrap::files::encrypt_file(&c.writer, &opts, &src, Output::To(&out)).unwrap_err();
    assert_error(&err, "InvalidContext", "reserved prefix");
    assert!(!out.exists());
}

#[test]
fn encrypting_in_place_without_rights_leaves_the_original_untouched() {
    let c = case();
    let path = c.env.path("doc.txt");
    std::fs::write(&path, b"original").unwrap();
    let err = rewrap::files::encrypt_file(&c.reader, &app_opts(&c.key), &path, Output::InPlace)
        .unwrap_err();
    assert_error(&err, "AccessDeniedException", "AccessDeniedException");
    assert_eq!(std::fs::read(&path).unwrap(), b"original");
    assert_eq!(names(c.env.dir.path()), vec!["doc.txt", "home"]);
}

/// `len` bytes holding `l (u32) || "REND"` where a final chunk of `l`
/// bytes would end, for every `l` in 0, 8, .. up to `chunk`.
fn end_record_decoys(chunk: usize, len: usize) -> Vec<u8> {
    let mut b = vec![0x5Au8; len];
    let mut l = 0;
    while l <= chunk && l + 24 <= len {
        b[l + 16..l + 20].copy_from_slice(&(l as u32).to_be_bytes());
        b[l + 20..l + 24].copy_from_slice(b"REND");
        l += 8;
    }
    b
}

/// Issue 12 finding 1, through the real binary: anyone who can write one
/// envelope put an end-record look-alike every 8 bytes of a 16 MiB-chunk
/// body, and `decrypt-file` tried each as the final chunk (about 2 million
/// AES-GCM opens of up to 16 MiB: hours). Now it opens a bounded number and
/// fails with the chunk's name. The kill deadline only guards against a
/// hang; the work bound itself is asserted in `stream::tests`.
#[test]
fn quadratic_decrypt_a_16_mib_chunk_envelope_full_of_end_record_decoys_fails_at_once() {
    use support::cli::{stderr, Env};
    let env = Env::new();
    let key = env.key("data");
    let plain = env.path("plain");
    std::fs::write(&plain, b"ten bytes.").unwrap();
    let sealed = env.path("sealed.rwp");
    let chunk = rewrap::envelope::MAX_CHUNK_SIZE;
    let out = env.run(
        &env.owner,
        &[
            "encrypt-file",
            "--key-id",
            &key,
            "--chunk-size",
            &chunk.to_string(),
            plain.to_str().unwrap(),
            "-o",
            sealed.to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let at = body_offset(&sealed);
    edit(&sealed, |b| {
        b.truncate(at);
        b.extend(end_record_decoys(
            chunk as usize,
            chunk as usize + 16 + 8 - 1,
        ));
    });
    let target = env.path("out");
    let mut child = env
        .command(&env.owner)
        .args(["decrypt-file", sealed.to_str().unwrap(), "-o"])
        .arg(&target)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_mins(2);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            child.kill().unwrap();
            panic!("decrypt-file still running after 120 s: the decoys are searched");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    // The exact code (255 in the exit-code table) is the CLI's business.
    assert!(!out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("chunk 0 failed authentication"),
        "{}",
        stderr(&out)
    );
    assert!(!target.exists());
}

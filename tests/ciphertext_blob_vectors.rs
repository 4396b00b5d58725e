//! Ciphertext blob test vectors (tests/vectors/ciphertext_blob/*.json): each says what
//! must happen: the exact bytes a seal produces, or the exact error.
//!
//! Regenerate the `ok` vectors' expected bytes with
//! `REWRAP_BLESS_VECTORS=1 cargo test --test ciphertext_blob_vectors` (only after a
//! deliberate format change).

use rewrap::api::EncryptionContext;
use rewrap::ciphertext_blob::{self, BlobHeader};
use rewrap::secret::Secret;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

#[derive(Serialize, Deserialize)]
struct Vector {
    description: String,
    key_hex: String,
    key_id: String,
    key_version: u32,
    nonce_hex: String,
    context: Option<EncryptionContext>,
    plaintext_hex: String,
    /// The blob as sealed (for `ok`), or the bytes to open (for failures).
    blob_hex: String,
    /// `ok`, or the AWS error name opening `blob_hex` must give.
    expect: String,
    /// Context to open with, when it differs from `context`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    open_context: Option<EncryptionContext>,
}

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/vectors/ciphertext_blob")
}

#[test]
fn blob_vectors() {
    let bless = std::env::var_os("REWRAP_BLESS_VECTORS").is_some();
    let mut count = 0;
    let mut paths: Vec<_> = std::fs::read_dir(dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    paths.sort();
    for path in paths
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
    {
        let mut v: Vector = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        let key = Secret::new(hex::decode(&v.key_hex).unwrap());
        let header = BlobHeader {
            key_id: v.key_id.parse().unwrap(),
            key_version: v.key_version,
        };
        let nonce: [u8; 12] = hex::decode(&v.nonce_hex).unwrap().try_into().unwrap();
        let plaintext = hex::decode(&v.plaintext_hex).unwrap();
        if v.expect == "ok" {
            let sealed = ciphertext_blob::seal_with_nonce(
                &key,
                header,
                v.context.as_ref(),
                &plaintext,
                nonce,
            )
            .unwrap();
            if bless {
                v.blob_hex = hex::encode(&sealed);
                std::fs::write(&path, serde_json::to_string_pretty(&v).unwrap() + "\n").unwrap();
            }
            assert_eq!(
                hex::encode(&sealed),
                v.blob_hex,
                "{}: {}",
                path.display(),
                v.description
            );
            assert_eq!(ciphertext_blob::peek(&sealed), Some(header));
        }
        let bytes = hex::decode(&v.blob_hex).unwrap();
        let ctx = v.open_context.as_ref().or(v.context.as_ref());
        match ciphertext_blob::open(&key, &bytes, ctx) {
            Ok(p) => {
                assert_eq!(v.expect, "ok", "{}: {}", path.display(), v.description);
                assert_eq!(p.expose(), &plaintext[..]);
            }
            Err(e) => assert_eq!(
                e.code.as_str(),
                v.expect,
                "{}: {}",
                path.display(),
                v.description
            ),
        }
        count += 1;
    }
    assert_eq!(count, 7, "every vector file was checked");
}

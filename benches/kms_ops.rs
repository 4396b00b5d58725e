//! In-process KMS operations per second, with the policy check and the
//! audit record included: Encrypt, Decrypt, ReEncrypt, GenerateDataKey.
//!
//! The baseline in the same run is the bare cryptography of one ReEncrypt
//! (open one blob, seal one blob) with no policy, no audit and no keystore,
//! so the figure shows what the service adds around the AES-GCM work.
#![allow(missing_docs)] // reason: criterion_group! generates undocumented public functions

/// The allocator the `rewrap` binary ships with (src/main.rs), so the bench
/// measures the shipped configuration.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use rewrap::api::{
    CreateKeyRequest, DecryptRequest, EncryptRequest, EncryptionContext, GenerateDataKeyRequest,
    ReEncryptRequest,
};
use rewrap::ciphertext_blob::{self, BlobHeader};
use rewrap::kms::Kms;
use rewrap::secret::Secret;
use rewrap::service::{Caller, KmsService};
use std::hint::black_box;

fn setup() -> (
    tempfile::TempDir,
    rewrap::service::LocalSession,
    String,
    String,
) {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("ks");
    KmsService::init(&home).unwrap();
    let service = KmsService::open(&home, None).unwrap();
    let kms = service.session(Caller {
        principal: "owner".into(),
        ..Caller::default()
    });
    let a = kms
        .create_key(&CreateKeyRequest::default())
        .unwrap()
        .key_metadata
        .key_id;
    let b = kms
        .create_key(&CreateKeyRequest::default())
        .unwrap()
        .key_metadata
        .key_id;
    (dir, kms, a, b)
}

fn context() -> EncryptionContext {
    [
        ("purpose".to_string(), "app-data".to_string()),
        ("rewrap:file-id".to_string(), "0123456789abcdef".to_string()),
    ]
    .into_iter()
    .collect()
}

fn kms_ops(c: &mut Criterion) {
    let (_dir, kms, a, b) = setup();
    let ctx = Some(context());
    let data_key = kms
        .generate_data_key(&GenerateDataKeyRequest {
            key_id: a.clone(),
            encryption_context: ctx.clone(),
            key_spec: Some("AES_256".into()),
            ..Default::default()
        })
        .unwrap();
    let wrapped = data_key.ciphertext_blob.clone();

    let mut g = c.benchmark_group("kms");
    g.throughput(Throughput::Elements(1));
    g.bench_function("encrypt_32B", |bench| {
        let req = EncryptRequest {
            key_id: a.clone(),
            plaintext: Secret::from_slice(&[7u8; 32]),
            encryption_context: ctx.clone(),
            ..Default::default()
        };
        bench.iter(|| black_box(kms.encrypt(&req).unwrap()));
    });
    g.bench_function("decrypt_32B", |bench| {
        let req = DecryptRequest {
            ciphertext_blob: wrapped.clone(),
            encryption_context: ctx.clone(),
            ..Default::default()
        };
        bench.iter(|| black_box(kms.decrypt(&req).unwrap()));
    });
    g.bench_function("re_encrypt_32B", |bench| {
        let req = ReEncryptRequest {
            ciphertext_blob: wrapped.clone(),
            source_encryption_context: ctx.clone(),
            destination_key_id: b.clone(),
            destination_encryption_context: ctx.clone(),
            ..Default::default()
        };
        bench.iter(|| black_box(kms.re_encrypt(&req).unwrap()));
    });
    g.bench_function("generate_data_key_aes256", |bench| {
        let req = GenerateDataKeyRequest {
            key_id: a.clone(),
            encryption_context: ctx.clone(),
            key_spec: Some("AES_256".into()),
            ..Default::default()
        };
        bench.iter(|| black_box(kms.generate_data_key(&req).unwrap()));
    });
    // Baseline: the bare AES-GCM work of one ReEncrypt.
    g.bench_function("baseline_bare_reencrypt_crypto", |bench| {
        let k1 = Secret::random(32);
        let k2 = Secret::random(32);
        let h = BlobHeader {
            key_id: uuid::Uuid::new_v4(),
            key_version: 1,
        };
        let ctx = context();
        let sealed = ciphertext_blob::seal(&k1, h, Some(&ctx), &[7u8; 32]).unwrap();
        bench.iter(|| {
            let plain = ciphertext_blob::open(&k1, &sealed, Some(&ctx)).unwrap();
            black_box(ciphertext_blob::seal(&k2, h, Some(&ctx), plain.expose()).unwrap())
        });
    });
    g.finish();
}

criterion_group!(benches, kms_ops);
criterion_main!(benches);

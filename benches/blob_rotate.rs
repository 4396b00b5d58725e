//! Blob rotation throughput over moto's S3 server on loopback, against the
//! raw rate of the same requests from the same client in the same run.
//!
//! Rotating one blob costs one GET of its key object, one ReEncrypt (in
//! process here) and one conditional PUT (If-Match) of the key object,
//! plus a share of a LIST. The baseline is N x (GET + conditional PUT of
//! the same small object) through the same `object_store` client with the
//! same concurrency, measured before and after the rotation (the mean is
//! the baseline). Goal: rotation rate / raw rate >= 0.7.
//!
//! Needs REWRAP_TEST_VENV (moto_server). Run: `cargo bench --bench
//! blob_rotate` (env BLOB_BENCH_N, BLOB_BENCH_CONCURRENCY).

/// The allocator the `rewrap` binary ships with (src/main.rs), so the bench
/// measures the shipped configuration.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[path = "../tests/support/mod.rs"]
mod support;

use futures::StreamExt;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, PutMode, PutOptions, PutPayload, UpdateVersion};
use rewrap::files::EncryptOptions;
use rewrap::objstore::{encrypt_object, ObjectLocation};
use rewrap::worker::{ObjectWalkOptions, RewrapOptions};
use std::sync::Arc;
use std::time::Instant;
use support::objects::{app_context, pattern, rewrap_location, Kms3, Moto};

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// N x (GET + conditional PUT of the same bytes) with `concurrency` in
/// flight; returns pairs per second.
fn raw_rate(loc: &ObjectLocation, paths: &[ObjectPath], concurrency: usize) -> f64 {
    let store: Arc<dyn ObjectStore> = Arc::clone(loc.store());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let start = Instant::now();
    rt.block_on(async {
        futures::stream::iter(paths.iter().cloned())
            .map(|p| {
                let store = Arc::clone(&store);
                async move {
                    let got = store.get(&p).await.unwrap();
                    let update = UpdateVersion {
                        e_tag: got.meta.e_tag.clone(),
                        version: got.meta.version.clone(),
                    };
                    let bytes = got.bytes().await.unwrap();
                    let opts = PutOptions {
                        mode: PutMode::Update(update),
                        ..Default::default()
                    };
                    store
                        .put_opts(&p, PutPayload::from(bytes), opts)
                        .await
                        .unwrap();
                }
            })
            .buffer_unordered(concurrency)
            .collect::<Vec<()>>()
            .await;
    });
    paths.len() as f64 / start.elapsed().as_secs_f64()
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let n = env_usize("BLOB_BENCH_N", 500);
    let concurrency = env_usize("BLOB_BENCH_CONCURRENCY", 8);
    let moto = Moto::start();
    moto.create_bucket("bench");
    let kms = Kms3::new();
    let loc = moto.open("s3://bench/p");
    let writer = kms.as_role("app-writer");
    let mut opts = EncryptOptions::new(kms.old.clone());
    opts.context = app_context();
    let data = pattern(1024, 7);
    for i in 0..n {
        encrypt_object(&writer, &mut &data[..], &loc, &format!("o{i:06}"), &opts).unwrap();
    }
    let paths: Vec<ObjectPath> = (0..n)
        .map(|i| ObjectPath::from(format!("p/o{i:06}.rewrap-key")))
        .collect();

    let raw_before = raw_rate(&loc, &paths, concurrency);
    let rotator = kms.as_role("storage-rotator");
    let walk = ObjectWalkOptions {
        concurrency,
        ..Default::default()
    };
    let start = Instant::now();
    let to = RewrapOptions::new(kms.new.clone());
    let r = rewrap_location(&rotator, &loc, &to, &walk).unwrap();
    let rotate = n as f64 / start.elapsed().as_secs_f64();
    assert_eq!(r.rotated, n as u64, "{r:#?}");
    let raw_after = raw_rate(&loc, &paths, concurrency);
    let raw = f64::midpoint(raw_before, raw_after);
    println!("blob_rotate: {n} objects of 1 KiB, concurrency {concurrency}, moto S3 on loopback");
    println!("  raw GET + conditional PUT: {raw_before:.0}/s before, {raw_after:.0}/s after, mean {raw:.0}/s");
    println!("  rotation:                  {rotate:.0} objects/s");
    println!(
        "  ratio rotation / raw:      {:.2} (goal >= 0.70)",
        rotate / raw
    );
}

//! Blob stores over a real S3-compatible server: moto's server mode on
//! loopback (from REWRAP_TEST_VENV; the tests fail, never skip, without it).

mod support;

use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, PutMode, PutOptions, PutPayload, UpdateVersion};
use rewrap::files::{DecryptOptions, EncryptOptions};
use rewrap::kms::Kms;
use rewrap::objstore::{decrypt_object, encrypt_object, ObjectLocation, ObjectStoreError};
use rewrap::worker::{Checkpoint, ObjectWalkOptions, RewrapOptions, Shard};
use std::collections::BTreeMap;
use std::time::Duration;
use support::objects::*;

const BIG: usize = 6 * 1024 * 1024 + 12_345;

fn encrypt_all(kms: &dyn Kms, loc: &ObjectLocation, key: &str, sizes: &[(String, usize)]) {
    let mut opts = EncryptOptions::new(key);
    opts.context = app_context();
    for (i, (name, len)) in sizes.iter().enumerate() {
        let data = pattern(*len, i as u8);
        encrypt_object(kms, &mut &data[..], loc, name, &opts).unwrap();
    }
}

fn decrypt(kms: &dyn Kms, loc: &ObjectLocation, name: &str) -> Result<Vec<u8>, ObjectStoreError> {
    let mut out = Vec::new();
    let opts = DecryptOptions {
        expect_context: app_context(),
        ..Default::default()
    };
    decrypt_object(kms, loc, name, &mut out, &opts)?;
    Ok(out)
}

/// (ETag, last-modified) of every object under the location.
fn heads(loc: &ObjectLocation) -> BTreeMap<String, (String, String)> {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        use futures::TryStreamExt;
        let all: Vec<_> = loc.store().list(None).try_collect().await.unwrap();
        all.into_iter()
            .map(|m| {
                (
                    m.location.to_string(),
                    (m.e_tag.unwrap_or_default(), m.last_modified.to_rfc3339()),
                )
            })
            .collect()
    })
}

fn rotate_opts(kms: &Kms3) -> RewrapOptions {
    RewrapOptions::new(kms.new.clone())
}

fn blob_opts(concurrency: usize) -> ObjectWalkOptions {
    ObjectWalkOptions {
        concurrency,
        ..Default::default()
    }
}

fn names(n: usize, len: usize) -> Vec<(String, usize)> {
    (0..n).map(|i| (format!("obj-{i:04}"), len)).collect()
}

#[test]
fn moto_honours_conditional_puts() {
    let moto = Moto::start();
    moto.create_bucket("cond");
    let loc = moto.open("s3://cond");
    let store = loc.store().clone();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let p = ObjectPath::from("k");
        let create = || PutOptions {
            mode: PutMode::Create,
            ..Default::default()
        };
        let first = store
            .put_opts(&p, PutPayload::from_static(b"one"), create())
            .await
            .unwrap();
        let again = store
            .put_opts(&p, PutPayload::from_static(b"two"), create())
            .await;
        assert!(
            matches!(again, Err(object_store::Error::AlreadyExists { .. })),
            "{again:?}"
        );
        let update = |e_tag: Option<String>| PutOptions {
            mode: PutMode::Update(UpdateVersion {
                e_tag,
                version: None,
            }),
            ..Default::default()
        };
        let second = store
            .put_opts(
                &p,
                PutPayload::from_static(b"two"),
                update(first.e_tag.clone()),
            )
            .await
            .unwrap();
        let stale = store
            .put_opts(&p, PutPayload::from_static(b"three"), update(first.e_tag))
            .await;
        assert!(
            matches!(stale, Err(object_store::Error::Precondition { .. })),
            "{stale:?}"
        );
        let now = store.get(&p).await.unwrap();
        assert_eq!(now.meta.e_tag, second.e_tag);
        assert_eq!(&now.bytes().await.unwrap()[..], b"two");
    });
}

#[test]
fn s3_rotation_rewrites_only_key_objects_and_the_reader_decrypts() {
    let moto = Moto::start();
    moto.create_bucket("data");
    let kms = Kms3::new();
    let loc = moto.open("s3://data/tenant-a");
    let sizes: Vec<(String, usize)> = [0usize, 1, 65_536, 200_001, BIG]
        .iter()
        .enumerate()
        .map(|(i, &n)| (format!("dir/obj-{i}.bin"), n))
        .collect();
    encrypt_all(&kms.as_role("app-writer"), &loc, &kms.old, &sizes);
    let before = heads(&loc);
    assert_eq!(before.len(), 10, "{before:?}");
    let big = &before["tenant-a/dir/obj-4.bin"];
    assert!(
        big.0.trim_matches('"').ends_with("-2"),
        "multipart ETag: {}",
        big.0
    );

    let rotator = kms.as_role("storage-rotator");
    let r = rewrap_location(&rotator, &loc, &rotate_opts(&kms), &blob_opts(4)).unwrap();
    assert_eq!(
        (r.scanned, r.rotated, r.failed, r.conflicts.unwrap()),
        (5, 5, 0, 0),
        "{r:#?}"
    );
    assert_eq!(r.exit_code(), 0);
    let after = heads(&loc);
    for (path, head) in &before {
        if path.ends_with(".rewrap-key") {
            assert_ne!(after[path].0, head.0, "key object {path} not rewritten");
        } else {
            assert_eq!(&after[path], head, "body {path} was rewritten");
        }
    }
    let reader = kms.as_role("app-reader");
    for (i, (name, len)) in sizes.iter().enumerate() {
        assert_eq!(
            decrypt(&reader, &loc, name).unwrap(),
            pattern(*len, i as u8),
            "{name}"
        );
    }
    // The rotator can never read, the reader could not rotate.
    let denied = decrypt(&rotator, &loc, &sizes[1].0).unwrap_err();
    assert_eq!(denied.kind(), "AccessDeniedException");

    let inv = inventory_location(Some(&rotator), &loc, Some(&kms.new), &blob_opts(4)).unwrap();
    assert_eq!((inv.envelopes, inv.stale, inv.stale_slots), (5, Some(0), 0));
    let again = rewrap_location(&rotator, &loc, &rotate_opts(&kms), &blob_opts(4)).unwrap();
    assert_eq!((again.rotated, again.already_current), (0, 5));
    assert_eq!(heads(&loc), after, "a second run must write nothing");
}

#[test]
fn s3_key_object_and_body_concatenate_to_a_file_envelope() {
    let moto = Moto::start();
    moto.create_bucket("layout");
    let kms = Kms3::new();
    let loc = moto.open("s3://layout/p");
    let writer = kms.as_role("app-writer");
    encrypt_all(&writer, &loc, &kms.old, &[("x".into(), 70_000)]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let get = |p: &str| {
        rt.block_on(async {
            loc.store()
                .get(&ObjectPath::from(p))
                .await
                .unwrap()
                .bytes()
                .await
        })
        .unwrap()
        .to_vec()
    };
    let mut envelope = get("p/x.rewrap-key");
    let key_len = envelope.len();
    let parsed = rewrap::envelope::ParsedHeader::parse(&envelope).unwrap();
    assert_eq!(key_len, parsed.total_len());
    let body = get("p/x");
    assert_eq!(
        body.len() as u64,
        rewrap::stream::body_len(70_000, parsed.header.chunk_size())
    );
    envelope.extend_from_slice(&body);
    let mut plain = Vec::new();
    let opts = DecryptOptions::default();
    rewrap::files::decrypt_stream(
        &kms.as_role("app-reader"),
        &opts,
        &mut &envelope[..],
        &mut plain,
    )
    .unwrap();
    assert_eq!(plain, pattern(70_000, 0));
}

#[test]
fn s3_errors_name_the_missing_bucket_the_missing_object_and_the_existing_blob() {
    let moto = Moto::start();
    moto.create_bucket("here");
    let kms = Kms3::new();
    let rotator = kms.as_role("storage-rotator");
    let missing = moto.open("s3://no-such-bucket/p");
    let e = rewrap_location(&rotator, &missing, &rotate_opts(&kms), &blob_opts(2)).unwrap_err();
    assert_eq!(e.kind(), "BucketNotFound", "{e}");
    let e = inventory_location(None, &missing, None, &blob_opts(2)).unwrap_err();
    assert_eq!(e.kind(), "BucketNotFound", "{e}");

    let loc = moto.open("s3://here/p");
    let reader = kms.as_role("app-reader");
    assert_eq!(
        decrypt(&reader, &loc, "nothing").unwrap_err().kind(),
        "NotFound"
    );
    let writer = kms.as_role("app-writer");
    encrypt_all(&writer, &loc, &kms.old, &[("a".into(), 10)]);
    let before = heads(&loc);
    let mut opts = EncryptOptions::new(kms.old.clone());
    opts.context = app_context();
    let e = encrypt_object(&writer, &mut &b"other"[..], &loc, "a", &opts).unwrap_err();
    assert_eq!(e.kind(), "AlreadyExists", "{e}");
    assert_eq!(
        heads(&loc),
        before,
        "a refused encryption must write nothing"
    );
    let e = encrypt_object(&writer, &mut &b"x"[..], &loc, "a.rewrap-key", &opts).unwrap_err();
    assert_eq!(e.kind(), "Usage");
    let e = rewrap::objstore::open_location("ftp://x/y", &moto.options()).unwrap_err();
    assert_eq!(e.kind(), "InvalidUrl");
    // A body whose key object is gone: NotFound, not garbage.
    assert_eq!(decrypt(&reader, &loc, "a").unwrap(), pattern(10, 0));
}

#[test]
fn s3_refused_credentials_stop_the_run_before_it_starts() {
    // moto checks signatures against its own IAM when asked to: the test
    // credentials are unknown there, so every request is refused (403).
    let moto = Moto::start_with(&[("INITIAL_NO_AUTH_ACTION_COUNT", "0")]);
    let kms = Kms3::new();
    let loc = moto.open("s3://locked/p");
    let rotator = kms.as_role("storage-rotator");
    let e = rewrap_location(&rotator, &loc, &rotate_opts(&kms), &blob_opts(2)).unwrap_err();
    assert_eq!(e.kind(), "AccessDenied", "{e}");
    assert!(e.to_string().contains("check credentials"), "{e}");
    let e = inventory_location(None, &loc, None, &blob_opts(2)).unwrap_err();
    assert_eq!(e.kind(), "AccessDenied", "{e}");
    let reader = kms.as_role("app-reader");
    assert_eq!(
        decrypt(&reader, &loc, "x").unwrap_err().kind(),
        "AccessDenied"
    );
}

#[test]
fn s3_conflicting_writer_is_counted_and_its_newer_key_object_kept() {
    let moto = Moto::start();
    moto.create_bucket("race");
    let kms = Kms3::new();
    let loc = moto.open("s3://race/p");
    encrypt_all(&kms.as_role("app-writer"), &loc, &kms.old, &names(6, 100));
    let rotator = kms.as_role("storage-rotator");
    // The other writer rotates every key object (to the same target) while
    // the run holds its first read.
    let other_heads = std::sync::Mutex::new(BTreeMap::new());
    let other_loc = moto.open("s3://race/p");
    let service = kms.service.clone();
    let to = kms.new.clone();
    let kms_wrapper = InterferingKms {
        inner: kms.as_role("storage-rotator"),
        fired: std::sync::atomic::AtomicBool::default(),
        hook: Box::new(move || {
            let other = session(&service, "storage-rotator");
            let r = rewrap_location(
                &other,
                &other_loc,
                &RewrapOptions::new(to.clone()),
                &blob_opts(1),
            )
            .unwrap();
            assert_eq!(r.rotated, 6);
            *other_heads.lock().unwrap() = heads(&other_loc);
        }),
    };
    let r = rewrap_location(&kms_wrapper, &loc, &rotate_opts(&kms), &blob_opts(1)).unwrap();
    assert_eq!(r.conflicts.unwrap(), 1, "{r:#?}");
    assert_eq!((r.rotated, r.already_current, r.failed), (0, 6, 0));
    drop(rotator);
    let InterferingKms { hook, .. } = kms_wrapper;
    drop(hook);
    let after = heads(&loc);
    // Every key object is the other writer's version (none overwritten).
    let reader = kms.as_role("app-reader");
    for (i, (name, _)) in names(6, 100).iter().enumerate() {
        assert_eq!(decrypt(&reader, &loc, name).unwrap(), pattern(100, i as u8));
    }
    let json = serde_json::to_value(&r).unwrap();
    assert_eq!(json["conflicts"], 1);
    assert_eq!(json["already_current"], 6);
    assert_eq!(after.len(), 12);
}

#[test]
fn s3_two_concurrent_rotations_leave_every_blob_rotated_once() {
    let moto = Moto::start();
    moto.create_bucket("twice");
    let kms = Kms3::new();
    let n = 40;
    let loc = moto.open("s3://twice/p");
    encrypt_all(&kms.as_role("app-writer"), &loc, &kms.old, &names(n, 300));
    let reports: Vec<_> = std::thread::scope(|s| {
        let runs: Vec<_> = (0..2)
            .map(|_| {
                s.spawn(|| {
                    let loc = moto.open("s3://twice/p");
                    let rotator = kms.as_role("storage-rotator");
                    rewrap_location(&rotator, &loc, &rotate_opts(&kms), &blob_opts(4)).unwrap()
                })
            })
            .collect();
        runs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let (a, b) = (&reports[0], &reports[1]);
    assert_eq!((a.failed, b.failed), (0, 0), "{reports:#?}");
    assert_eq!(a.scanned + b.scanned, 2 * n as u64);
    assert_eq!(
        a.rotated + a.already_current + b.rotated + b.already_current,
        2 * n as u64
    );
    assert!(a.rotated + b.rotated >= n as u64);
    let rotator = kms.as_role("storage-rotator");
    let inv = inventory_location(Some(&rotator), &loc, Some(&kms.new), &blob_opts(4)).unwrap();
    assert_eq!(
        (inv.envelopes, inv.stale, inv.stale_slots, inv.failed),
        (n as u64, Some(0), 0, 0)
    );
    let reader = kms.as_role("app-reader");
    for (i, (name, _)) in names(n, 300).iter().enumerate() {
        assert_eq!(decrypt(&reader, &loc, name).unwrap(), pattern(300, i as u8));
    }
}

#[test]
fn s3_shards_split_a_bucket_without_overlap() {
    let moto = Moto::start();
    moto.create_bucket("shards");
    let kms = Kms3::new();
    let n = 30;
    let loc = moto.open("s3://shards");
    encrypt_all(&kms.as_role("app-writer"), &loc, &kms.old, &names(n, 10));
    let rotator = kms.as_role("storage-rotator");
    let before = heads(&loc);
    let checkpoint = kms.dir.path().join("dry.checkpoint");
    let dry = ObjectWalkOptions {
        checkpoint: Some(checkpoint.clone()),
        ..blob_opts(2)
    };
    let mut dry_run = rotate_opts(&kms);
    dry_run.dry_run = true;
    let r = rewrap_location(&rotator, &loc, &dry_run, &dry).unwrap();
    assert_eq!((r.scanned, r.would_rotate), (n as u64, n as u64));
    assert_eq!(heads(&loc), before, "a dry run writes nothing");
    assert!(!checkpoint.exists(), "a dry run keeps no checkpoint");
    let mut total = 0;
    for index in 0..3 {
        let opts = ObjectWalkOptions {
            shard: Some(Shard { index, count: 3 }),
            ..blob_opts(2)
        };
        let r = rewrap_location(&rotator, &loc, &rotate_opts(&kms), &opts).unwrap();
        assert_eq!(r.rotated, r.scanned, "{r:#?}");
        assert!(r.scanned > 0);
        assert_eq!(r.shard.as_deref(), Some(format!("{index}/3").as_str()));
        total += r.scanned;
    }
    assert_eq!(total, n as u64);
    let inv = inventory_location(Some(&rotator), &loc, Some(&kms.new), &blob_opts(2)).unwrap();
    assert_eq!(inv.stale, Some(0));
}

/// The child side of `s3_killed_rotation_resumes_from_checkpoint`: a
/// rotation in its own process, slowed down so it can be killed midway.
#[test]
#[ignore = "run as a child process by s3_killed_rotation_resumes_from_checkpoint"]
fn child_rotation_process() {
    let cfg: serde_json::Value =
        serde_json::from_str(&std::env::var("REWRAP_BLOB_CHILD").expect("child config")).unwrap();
    let s = |k: &str| cfg[k].as_str().unwrap().to_string();
    let kms = Kms3::open(std::path::Path::new(&s("home")), &s("old"), &s("new"));
    let loc = rewrap::objstore::open_location(
        &s("url"),
        &rewrap::objstore::ObjectStoreOptions {
            s3_endpoint: Some(s("endpoint")),
            ..Default::default()
        },
    )
    .unwrap();
    let slow = SlowKms {
        inner: kms.as_role("storage-rotator"),
        delay: Duration::from_millis(40),
    };
    let opts = ObjectWalkOptions {
        checkpoint: Some(s("checkpoint").into()),
        checkpoint_every: 5,
        concurrency: 2,
        ..Default::default()
    };
    rewrap_location(&slow, &loc, &rotate_opts(&kms), &opts).unwrap();
    panic!("the child rotation was expected to be killed before it finished");
}

#[test]
fn s3_killed_rotation_resumes_from_checkpoint() {
    let moto = Moto::start();
    moto.create_bucket("resume");
    let kms = Kms3::new();
    let n = 120u64;
    let url = "s3://resume/batch";
    let loc = moto.open(url);
    encrypt_all(
        &kms.as_role("app-writer"),
        &loc,
        &kms.old,
        &names(n as usize, 50),
    );
    let checkpoint = kms.dir.path().join("rotation.checkpoint");
    let cfg = serde_json::json!({
        "home": kms.home, "old": kms.old, "new": kms.new, "url": url,
        "endpoint": moto.endpoint, "checkpoint": checkpoint,
    });
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_rotation_process",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("REWRAP_BLOB_CHILD", cfg.to_string())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Kill it once a checkpoint records real progress.
    let deadline = std::time::Instant::now() + Duration::from_mins(2);
    loop {
        let cp = Checkpoint::load(&checkpoint).unwrap_or(None);
        if cp.as_ref().is_some_and(|c| c.objects >= 20) {
            break;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "the child ended before it was killed"
        );
        assert!(
            std::time::Instant::now() < deadline,
            "no checkpoint progress"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let at_kill = Checkpoint::load(&checkpoint).unwrap().unwrap();
    assert!(!at_kill.complete);
    assert!(at_kill.objects < n, "{at_kill:?}");
    let rotator = kms.as_role("storage-rotator");
    let opts = ObjectWalkOptions {
        checkpoint: Some(checkpoint.clone()),
        checkpoint_every: 5,
        concurrency: 2,
        ..Default::default()
    };
    let r = rewrap_location(&rotator, &loc, &rotate_opts(&kms), &opts).unwrap();
    assert_eq!(r.resumed_objects.unwrap(), at_kill.objects);
    assert_eq!(r.resumed_after, at_kill.last_key);
    // Nothing up to the checkpoint is looked at again ...
    assert_eq!(r.scanned, n - at_kill.objects, "{r:#?}");
    // ... and only what finished after the last checkpoint write is found done.
    assert!(r.already_current <= 5 + 2 + 2, "{r:#?}");
    assert_eq!(r.rotated + r.already_current, r.scanned);
    let done = Checkpoint::load(&checkpoint).unwrap().unwrap();
    assert!(done.complete);
    assert_eq!(done.objects, n);
    let inv = inventory_location(Some(&rotator), &loc, Some(&kms.new), &blob_opts(4)).unwrap();
    assert_eq!((inv.envelopes, inv.stale, inv.stale_slots), (n, Some(0), 0));
    // A checkpoint of another location is refused.
    let other = moto.open("s3://resume/other");
    let e = rewrap_location(&rotator, &other, &rotate_opts(&kms), &opts).unwrap_err();
    assert_eq!(e.kind(), "Checkpoint", "{e}");
}

/// A source that fails after `ok` bytes (a broken pipe, a dying disk).
struct FailingAfter {
    ok: usize,
    sent: usize,
}

impl std::io::Read for FailingAfter {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.sent >= self.ok {
            return Err(std::io::Error::other("source failed"));
        }
        let n = buf.len().min(self.ok - self.sent);
        buf[..n].fill(0x5a);
        self.sent += n;
        Ok(n)
    }
}

#[test]
fn s3_failed_upload_leaves_no_partial_blob() {
    let moto = Moto::start();
    moto.create_bucket("partial");
    let kms = Kms3::new();
    let loc = moto.open("s3://partial/p");
    let mut opts = EncryptOptions::new(kms.old.clone());
    opts.context = app_context();
    let writer = kms.as_role("app-writer");
    // Fails after the first multipart part went up.
    let mut src = FailingAfter { ok: BIG, sent: 0 };
    let e = encrypt_object(&writer, &mut src, &loc, "broken", &opts).unwrap_err();
    assert_eq!(e.kind(), "Io", "{e}");
    assert!(heads(&loc).is_empty(), "{:?}", heads(&loc));
    let uploads = http_get(moto.port, "/partial?uploads");
    assert!(uploads.contains("ListMultipartUploadsResult"), "{uploads}");
    assert!(
        !uploads.contains("<Upload>"),
        "multipart upload left open: {uploads}"
    );
    // The name is free again.
    encrypt_all(&writer, &loc, &kms.old, &[("broken".into(), 10)]);
    assert_eq!(heads(&loc).len(), 2);
}

//! Blob stores on `file://` locations (no server needed): the same API and
//! pipeline as S3, with the lock-based conditional update.

mod support;

use rewrap::files::{DecryptOptions, EncryptOptions};
use rewrap::objstore::{
    decrypt_object, encrypt_object, is_object_url, open_location, ObjectStoreOptions,
};
use rewrap::worker::{ObjectWalkOptions, RewrapOptions};
use support::objects::*;

fn file_url(dir: &std::path::Path) -> String {
    format!("file://{}", dir.display())
}

fn read_opts() -> DecryptOptions {
    DecryptOptions {
        expect_context: app_context(),
        ..Default::default()
    }
}

#[test]
fn blob_urls_are_told_from_paths() {
    for url in [
        "s3://b/p",
        "S3://b",
        "s3a://b",
        "az://c/p",
        "azure://c",
        "gs://b/p",
        "file:///x",
    ] {
        assert!(is_object_url(url), "{url}");
    }
    for path in [
        "/tmp/x",
        "s3",
        "relative/s3://x",
        "C:\\x",
        "-",
        "http://x/y",
    ] {
        assert!(!is_object_url(path), "{path}");
    }
    let e = open_location("s3:///no-bucket", &ObjectStoreOptions::default()).unwrap_err();
    assert_eq!(e.kind(), "InvalidUrl");
    let e = open_location("file://host/x", &ObjectStoreOptions::default()).unwrap_err();
    assert_eq!(e.kind(), "InvalidUrl");
}

#[test]
fn file_location_round_trips_and_rotates_only_key_objects() {
    let kms = Kms3::new();
    let root = kms.dir.path().join("blobs");
    let loc = open_location(&file_url(&root), &ObjectStoreOptions::default()).unwrap();
    let mut opts = EncryptOptions::new(kms.old.clone());
    opts.context = app_context();
    let writer = kms.as_role("app-writer");
    let sizes = [0usize, 3, 64 * 1024, 300_000];
    for (i, n) in sizes.iter().enumerate() {
        let data = pattern(*n, i as u8);
        encrypt_object(&writer, &mut &data[..], &loc, &format!("d/o{i}"), &opts).unwrap();
    }
    let body = root.join("d/o3");
    let body_before = std::fs::read(&body).unwrap();
    let body_meta = std::fs::metadata(&body).unwrap().modified().unwrap();
    let rotator = kms.as_role("storage-rotator");
    let to = RewrapOptions::new(kms.new.clone());
    let r = rewrap_location(&rotator, &loc, &to, &ObjectWalkOptions::default()).unwrap();
    assert_eq!(
        (r.scanned, r.rotated, r.conflicts.unwrap()),
        (4, 4, 0),
        "{r:#?}"
    );
    assert_eq!(std::fs::read(&body).unwrap(), body_before);
    assert_eq!(
        std::fs::metadata(&body).unwrap().modified().unwrap(),
        body_meta
    );
    let reader = kms.as_role("app-reader");
    for (i, n) in sizes.iter().enumerate() {
        let mut out = Vec::new();
        decrypt_object(&reader, &loc, &format!("d/o{i}"), &mut out, &read_opts()).unwrap();
        assert_eq!(out, pattern(*n, i as u8));
    }
    let inv = inventory_location(
        Some(&rotator),
        &loc,
        Some(&kms.new),
        &ObjectWalkOptions::default(),
    )
    .unwrap();
    assert_eq!((inv.envelopes, inv.stale, inv.failed), (4, Some(0), 0));
    assert_eq!(inv.roots, vec![file_url(&root)]);
}

#[test]
fn file_location_keeps_a_concurrent_writers_key_object() {
    let kms = Kms3::new();
    let url = file_url(&kms.dir.path().join("race"));
    let loc = open_location(&url, &ObjectStoreOptions::default()).unwrap();
    let mut opts = EncryptOptions::new(kms.old.clone());
    opts.context = app_context();
    let writer = kms.as_role("app-writer");
    for i in 0..4 {
        encrypt_object(&writer, &mut &b"data"[..], &loc, &format!("o{i}"), &opts).unwrap();
    }
    let service = kms.service.clone();
    let to = kms.new.clone();
    let url2 = url.clone();
    let interfering = InterferingKms {
        inner: kms.as_role("storage-rotator"),
        fired: std::sync::atomic::AtomicBool::default(),
        hook: Box::new(move || {
            let other = open_location(&url2, &ObjectStoreOptions::default()).unwrap();
            let s = session(&service, "storage-rotator");
            let one = ObjectWalkOptions {
                concurrency: 1,
                ..Default::default()
            };
            let r = rewrap_location(&s, &other, &RewrapOptions::new(to.clone()), &one).unwrap();
            assert_eq!(r.rotated, 4);
        }),
    };
    let one = ObjectWalkOptions {
        concurrency: 1,
        ..Default::default()
    };
    let to = RewrapOptions::new(kms.new.clone());
    let r = rewrap_location(&interfering, &loc, &to, &one).unwrap();
    assert_eq!(r.conflicts.unwrap(), 1, "{r:#?}");
    assert_eq!((r.rotated, r.already_current), (0, 4));
}

#[test]
fn checkpoints_are_refused_for_local_folders_and_bad_shards_for_everyone() {
    let kms = Kms3::new();
    let loc = open_location(
        &file_url(&kms.dir.path().join("cp")),
        &ObjectStoreOptions::default(),
    )
    .unwrap();
    let rotator = kms.as_role("storage-rotator");
    let opts = ObjectWalkOptions {
        checkpoint: Some(kms.dir.path().join("x.checkpoint")),
        ..Default::default()
    };
    let to = RewrapOptions::new(kms.new.clone());
    let e = rewrap_location(&rotator, &loc, &to, &opts).unwrap_err();
    assert_eq!(e.kind(), "Usage", "{e}");
    assert!(!kms.dir.path().join("x.checkpoint").exists());
    assert!("3/3".parse::<rewrap::worker::Shard>().is_err());
}

#[test]
fn damaged_blobs_fail_alone_with_their_exact_error() {
    let kms = Kms3::new();
    let root = kms.dir.path().join("damaged");
    let loc = open_location(&file_url(&root), &ObjectStoreOptions::default()).unwrap();
    let mut opts = EncryptOptions::new(kms.old.clone());
    opts.context = app_context();
    let writer = kms.as_role("app-writer");
    for name in ["a", "b", "c", "d"] {
        let data = pattern(1000, name.as_bytes()[0]);
        encrypt_object(&writer, &mut &data[..], &loc, name, &opts).unwrap();
    }
    let reader = kms.as_role("app-reader");
    let decrypt = |name: &str, opts: &DecryptOptions| {
        let mut out = Vec::new();
        decrypt_object(&reader, &loc, name, &mut out, opts).map(|_| out)
    };
    // b's key object on c's body: the header is c's AAD no more.
    std::fs::copy(root.join("b.rewrap-key"), root.join("c.rewrap-key")).unwrap();
    assert_eq!(decrypt("c", &read_opts()).unwrap_err().kind(), "ChunkAuth");
    // A torn key object (its header checksum breaks).
    let mut torn = std::fs::read(root.join("d.rewrap-key")).unwrap();
    torn[20] ^= 1;
    std::fs::write(root.join("d.rewrap-key"), &torn).unwrap();
    assert_eq!(
        decrypt("d", &read_opts()).unwrap_err().kind(),
        "CorruptHeader"
    );
    // A key object with bytes after the slots.
    let mut long = std::fs::read(root.join("a.rewrap-key")).unwrap();
    long.push(0);
    std::fs::write(root.join("e.rewrap-key"), &long).unwrap();
    assert_eq!(
        decrypt("e", &read_opts()).unwrap_err().kind(),
        "CorruptHeader"
    );
    // Not an envelope at all.
    std::fs::write(root.join("f.rewrap-key"), b"hello").unwrap();
    assert_eq!(
        decrypt("f", &read_opts()).unwrap_err().kind(),
        "NotEnvelope"
    );
    // The wrong context is refused before the KMS is asked.
    let other = DecryptOptions {
        expect_context: [("purpose".to_string(), "billing".to_string())].into(),
        ..Default::default()
    };
    assert_eq!(decrypt("a", &other).unwrap_err().kind(), "ContextMismatch");
    assert_eq!(decrypt("a", &read_opts()).unwrap(), pattern(1000, b'a'));

    // A rotation goes on past the damaged ones and says which failed.
    let rotator = kms.as_role("storage-rotator");
    let to = RewrapOptions::new(kms.new.clone());
    let r = rewrap_location(&rotator, &loc, &to, &ObjectWalkOptions::default()).unwrap();
    let rep = &r;
    assert_eq!(
        (rep.scanned, rep.rotated, rep.not_envelope, rep.failed),
        (6, 3, 1, 2),
        "{r:#?}"
    );
    assert_eq!(r.exit_code(), 1);
    let failed: Vec<&str> = rep.failures.iter().map(|f| f.path.as_str()).collect();
    let url = file_url(&root);
    assert_eq!(failed, vec![format!("{url}/d"), format!("{url}/e")]);
}

#[test]
fn an_unreachable_store_is_a_store_error() {
    let port = free_port();
    let opts = ObjectStoreOptions {
        s3_endpoint: Some(format!("http://127.0.0.1:{port}")),
        max_retries: 0,
        retry_timeout: std::time::Duration::from_secs(1),
        ..ObjectStoreOptions::default()
    };
    set_test_credentials();
    let loc = open_location("s3://nobody/p", &opts).unwrap();
    let e = inventory_location(None, &loc, None, &ObjectWalkOptions::default()).unwrap_err();
    assert_eq!(e.kind(), "Store", "{e}");
}

/// A stand-in S3 endpoint: answers the first `throttle` requests with 503
/// SlowDown, then every listing with an empty result. Returns its port and
/// the request counter.
fn throttling_endpoint(throttle: usize) -> (u16, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::io::{BufRead, Write};
    use std::sync::atomic::Ordering;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let count = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let seen = count.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            let mut reader = std::io::BufReader::new(stream);
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 0) && line != "\r\n" {
                line.clear();
            }
            let n = seen.fetch_add(1, Ordering::SeqCst);
            let (status, body) = if n < throttle {
                (
                    "503 Slow Down",
                    "<Error><Code>SlowDown</Code></Error>".to_string(),
                )
            } else {
                (
                    "200 OK",
                    "<?xml version=\"1.0\" encoding=\"UTF-8\"?><ListBucketResult \
                     xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><Name>b</Name>\
                     <Prefix>p/</Prefix><KeyCount>0</KeyCount><MaxKeys>1000</MaxKeys>\
                     <IsTruncated>false</IsTruncated></ListBucketResult>"
                        .to_string(),
                )
            };
            let mut stream = reader.into_inner();
            let _ = write!(
                stream,
                "HTTP/1.1 {status}\r\nContent-Type: application/xml\r\nContent-Length: {}\r\n\
                 Connection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    (port, count)
}

#[test]
fn throttling_is_retried_with_backoff_up_to_the_limit() {
    set_test_credentials();
    let opts = |port: u16, retries: usize| ObjectStoreOptions {
        s3_endpoint: Some(format!("http://127.0.0.1:{port}")),
        max_retries: retries,
        initial_backoff: std::time::Duration::from_millis(5),
        ..ObjectStoreOptions::default()
    };
    let (port, count) = throttling_endpoint(3);
    let loc = open_location("s3://b/p", &opts(port, 3)).unwrap();
    let inv = inventory_location(None, &loc, None, &ObjectWalkOptions::default()).unwrap();
    assert_eq!((inv.scanned, inv.failed), (0, 0));
    // 3 throttled + the probe + the envelope listing + the SOPS pass's
    // listing of plain objects.
    assert_eq!(count.load(std::sync::atomic::Ordering::SeqCst), 6);

    let (port, count) = throttling_endpoint(3);
    let loc = open_location("s3://b/p", &opts(port, 2)).unwrap();
    let e = inventory_location(None, &loc, None, &ObjectWalkOptions::default()).unwrap_err();
    assert_eq!(e.kind(), "Store", "{e}");
    assert_eq!(count.load(std::sync::atomic::Ordering::SeqCst), 3);
}

//! Blob stores over Azure Blob Storage: Azurite (npm package `azurite`) on
//! loopback. scripts/test installs it into `.node/` and exports
//! `REWRAP_TEST_AZURITE` (the `azurite-blob` executable); without it the
//! test fails, it never skips.

mod support;

use base64::Engine;
use hmac::{Hmac, Mac};
use rewrap::files::{DecryptOptions, EncryptOptions};
use rewrap::objstore::{decrypt_object, encrypt_object, open_location, ObjectStoreOptions};
use rewrap::worker::{ObjectWalkOptions, RewrapOptions};
use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use support::objects::*;

/// Azurite's well-known development account.
const ACCOUNT: &str = "devstoreaccount1";
const ACCOUNT_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

struct Azurite {
    child: std::process::Child,
    port: u16,
    _data: tempfile::TempDir,
}

impl Drop for Azurite {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Azurite {
    fn start() -> Azurite {
        let bin = std::env::var("REWRAP_TEST_AZURITE")
            .expect("REWRAP_TEST_AZURITE must name the azurite-blob executable");
        let data = tempfile::tempdir().unwrap();
        let port = free_port();
        let child = Command::new(&bin)
            .args(["--blobHost", "127.0.0.1", "--blobPort", &port.to_string()])
            .args(["--disableTelemetry", "--skipApiVersionCheck"])
            .arg("--location")
            .arg(data.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {bin}: {e}"));
        let mut a = Azurite {
            child,
            port,
            _data: data,
        };
        let deadline = Instant::now() + Duration::from_mins(1);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(a.child.try_wait().unwrap().is_none(), "azurite exited");
            assert!(Instant::now() < deadline, "azurite did not answer");
            std::thread::sleep(Duration::from_millis(100));
        }
        a
    }

    /// Create Container, signed with the account key (SharedKey).
    fn create_container(&self, name: &str) {
        let date = chrono::Utc::now()
            .format("%a, %d %b %Y %H:%M:%S GMT")
            .to_string();
        let version = "2021-08-06";
        let to_sign = format!(
            "PUT\n\n\n\n\n\n\n\n\n\n\n\nx-ms-date:{date}\nx-ms-version:{version}\n\
             /{ACCOUNT}/{ACCOUNT}/{name}\nrestype:container"
        );
        let key = base64::engine::general_purpose::STANDARD
            .decode(ACCOUNT_KEY)
            .unwrap();
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(&key).unwrap();
        mac.update(to_sign.as_bytes());
        let sig = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
        let mut s = std::net::TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        write!(
            s,
            "PUT /{ACCOUNT}/{name}?restype=container HTTP/1.1\r\nHost: 127.0.0.1:{}\r\n\
             x-ms-date: {date}\r\nx-ms-version: {version}\r\n\
             Authorization: SharedKey {ACCOUNT}:{sig}\r\nContent-Length: 0\r\n\
             Connection: close\r\n\r\n",
            self.port
        )
        .unwrap();
        let mut head = [0u8; 12];
        s.read_exact(&mut head).unwrap();
        assert_eq!(&head[9..12], b"201", "create container {name}");
    }
}

#[test]
fn azurite_rotation_rewrites_only_key_objects() {
    let azurite = Azurite::start();
    azurite.create_container("data");
    std::env::set_var("AZURE_STORAGE_USE_EMULATOR", "true");
    std::env::set_var(
        "AZURITE_BLOB_STORAGE_URL",
        format!("http://127.0.0.1:{}", azurite.port),
    );
    let kms = Kms3::new();
    let loc = open_location("az://data/tenant", &ObjectStoreOptions::default()).unwrap();
    let mut opts = EncryptOptions::new(kms.old.clone());
    opts.context = app_context();
    let writer = kms.as_role("app-writer");
    let sizes = [0usize, 5000, 9 * 1024 * 1024];
    for (i, n) in sizes.iter().enumerate() {
        let data = pattern(*n, i as u8);
        encrypt_object(&writer, &mut &data[..], &loc, &format!("o{i}"), &opts).unwrap();
    }
    let e = encrypt_object(&writer, &mut &b"x"[..], &loc, "o0", &opts).unwrap_err();
    assert_eq!(e.kind(), "AlreadyExists");
    let rotator = kms.as_role("storage-rotator");
    let to = RewrapOptions::new(kms.new.clone());
    let r = rewrap_location(&rotator, &loc, &to, &ObjectWalkOptions::default()).unwrap();
    assert_eq!((r.scanned, r.rotated, r.failed), (3, 3, 0), "{r:#?}");
    let inv = inventory_location(
        Some(&rotator),
        &loc,
        Some(&kms.new),
        &ObjectWalkOptions::default(),
    )
    .unwrap();
    assert_eq!((inv.envelopes, inv.stale), (3, Some(0)));
    let reader = kms.as_role("app-reader");
    for (i, n) in sizes.iter().enumerate() {
        let mut out = Vec::new();
        let d = DecryptOptions {
            expect_context: app_context(),
            ..Default::default()
        };
        decrypt_object(&reader, &loc, &format!("o{i}"), &mut out, &d).unwrap();
        assert_eq!(out, pattern(*n, i as u8));
    }
}

//! Shared harness of the blob-store tests: a moto S3 server on loopback,
//! a keystore with the shipped role policies, and KMS wrappers.

pub(crate) use super::library::session;
pub(crate) use super::repo;
use rewrap::api::{CreateKeyRequest, EncryptionContext, Operation, PrincipalRequest};
use rewrap::error::Result as KmsResult;
use rewrap::kms::Kms;
use rewrap::objstore::{open_location, ObjectLocation, ObjectStoreOptions};
use rewrap::secret::Secret;
use rewrap::service::{KmsService, LocalSession};
use rewrap::worker::{
    Inventory, ObjectWalkOptions, RewrapOptions, RewrapReport, Source, StartError,
};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A moto S3 server on a free loopback port, killed on drop.
pub(crate) struct Moto {
    child: Child,
    pub port: u16,
    pub endpoint: String,
}

/// Dummy credentials: moto accepts any; object_store must not go looking
/// for instance credentials.
/// Set once per process, so tests running in parallel never write the
/// environment while another reads it.
pub(crate) fn set_test_credentials() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        std::env::set_var("AWS_ACCESS_KEY_ID", "testing");
        std::env::set_var("AWS_SECRET_ACCESS_KEY", "testing");
        std::env::set_var("AWS_REGION", "us-east-1");
    });
}

/// The moto_server of the test venv. Panics (never skips) when it is
/// missing.
pub(crate) fn moto_server_bin() -> PathBuf {
    let venv = std::env::var_os("REWRAP_TEST_VENV").unwrap_or_else(|| {
        panic!(
            "REWRAP_TEST_VENV is not set: the blob-store tests need moto's S3 server. \
             Run scripts/test, or: python3 -m venv .venv && .venv/bin/pip install -r \
             tests/requirements.txt && REWRAP_TEST_VENV=$PWD/.venv cargo test"
        )
    });
    let bin = PathBuf::from(venv).join("bin").join("moto_server");
    assert!(
        bin.is_file(),
        "{} is missing: install tests/requirements.txt into REWRAP_TEST_VENV",
        bin.display()
    );
    bin
}

pub(crate) fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One raw HTTP/1.1 request without auth (moto does not check it);
/// returns the status code.
pub(crate) fn http(port: u16, method: &str, path: &str) -> std::io::Result<u16> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )?;
    let mut head = [0u8; 12];
    s.read_exact(&mut head)?;
    let text = String::from_utf8_lossy(&head);
    text[9..12]
        .parse()
        .map_err(|_| std::io::Error::other(format!("bad status line {text:?}")))
}

/// One raw HTTP/1.1 GET without auth; returns the whole response.
pub(crate) fn http_get(port: u16, path: &str) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

impl Moto {
    pub(crate) fn start() -> Moto {
        Moto::start_with(&[])
    }

    /// A moto server with extra environment (e.g. enforced authentication:
    /// `INITIAL_NO_AUTH_ACTION_COUNT=0`).
    pub(crate) fn start_with(env: &[(&str, &str)]) -> Moto {
        set_test_credentials();
        let bin = moto_server_bin();
        let port = free_port();
        let child = Command::new(&bin)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        let mut moto = Moto {
            child,
            port,
            endpoint: format!("http://127.0.0.1:{port}"),
        };
        let deadline = Instant::now() + Duration::from_mins(1);
        while http(port, "GET", "/").is_err() {
            if let Some(status) = moto.child.try_wait().unwrap() {
                panic!("moto_server exited early: {status}");
            }
            assert!(Instant::now() < deadline, "moto_server did not answer");
            std::thread::sleep(Duration::from_millis(100));
        }
        moto
    }

    pub(crate) fn create_bucket(&self, bucket: &str) {
        let status = http(self.port, "PUT", &format!("/{bucket}")).unwrap();
        assert_eq!(status, 200, "create bucket {bucket}");
    }

    pub(crate) fn options(&self) -> ObjectStoreOptions {
        ObjectStoreOptions {
            s3_endpoint: Some(self.endpoint.clone()),
            max_retries: 3,
            part_size: 5 * 1024 * 1024,
            ..ObjectStoreOptions::default()
        }
    }

    pub(crate) fn open(&self, url: &str) -> ObjectLocation {
        open_location(url, &self.options()).unwrap()
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A keystore with the shipped policies, the role principals, and two
/// keys: `old` (what blobs are written under) and `new` (rotation target).
pub(crate) struct Kms3 {
    pub dir: tempfile::TempDir,
    pub home: PathBuf,
    pub service: Arc<KmsService>,
    pub old: String,
    pub new: String,
}

impl Kms3 {
    pub(crate) fn new() -> Kms3 {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().join("keystore");
        let owner = KmsService::init(&home).unwrap();
        let service = KmsService::open(&home, Some(&repo().join("policies"))).unwrap();
        let admin = session(&service, &owner.principal_name);
        for p in ["storage-rotator", "app-reader", "app-writer"] {
            admin
                .create_principal(&PrincipalRequest {
                    principal_name: p.into(),
                })
                .unwrap();
        }
        let key = |d: &str| {
            admin
                .create_key(&CreateKeyRequest {
                    description: Some(d.into()),
                    ..Default::default()
                })
                .unwrap()
                .key_metadata
                .key_id
        };
        let old = key("old");
        let new = key("new");
        Kms3 {
            dir,
            home,
            service,
            old,
            new,
        }
    }

    /// Reopens an existing keystore (a child process).
    pub(crate) fn open(home: &Path, old: &str, new: &str) -> Kms3 {
        let service = KmsService::open(home, Some(&repo().join("policies"))).unwrap();
        Kms3 {
            dir: tempfile::tempdir().unwrap(),
            home: home.to_path_buf(),
            service,
            old: old.into(),
            new: new.into(),
        }
    }

    pub(crate) fn as_role(&self, principal: &str) -> LocalSession {
        session(&self.service, principal)
    }
}

pub(crate) fn app_context() -> EncryptionContext {
    [("purpose".to_string(), "app-data".to_string())].into()
}

/// Deterministic test bytes.
pub(crate) fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_be_bytes()[0] ^ seed)
        .collect()
}

/// A KMS that sleeps before each ReEncrypt (a slow remote KMS), so a
/// rotation lasts long enough to be killed midway.
pub(crate) struct SlowKms<K> {
    pub inner: K,
    pub delay: Duration,
}

impl<K: Kms> Kms for SlowKms<K> {
    fn call(&self, op: Operation, request: &[u8]) -> KmsResult<Secret> {
        if op == Operation::ReEncrypt {
            std::thread::sleep(self.delay);
        }
        self.inner.call(op, request)
    }
}

/// A KMS that runs `hook` once, at the first ReEncrypt: another writer acts
/// between the rotation's read of a key object and its write.
pub(crate) struct InterferingKms<K> {
    pub inner: K,
    pub fired: std::sync::atomic::AtomicBool,
    pub hook: Box<dyn Fn() + Send + Sync>,
}

impl<K: Kms> Kms for InterferingKms<K> {
    fn call(&self, op: Operation, request: &[u8]) -> KmsResult<Secret> {
        use std::sync::atomic::Ordering;
        if op == Operation::ReEncrypt && !self.fired.swap(true, Ordering::SeqCst) {
            (self.hook)();
        }
        self.inner.call(op, request)
    }
}

/// Re-wraps every object under `loc`: the worker over an object-store source.
pub(crate) fn rewrap_location(
    kms: &dyn Kms,
    loc: &ObjectLocation,
    opts: &RewrapOptions,
    walk: &ObjectWalkOptions,
) -> Result<RewrapReport, StartError> {
    let source = Source::Objects {
        location: loc,
        walk: walk.clone(),
    };
    rewrap::worker::rewrap(kms, &source, opts)
}

/// The inventory of the objects under `loc`.
pub(crate) fn inventory_location(
    kms: Option<&dyn Kms>,
    loc: &ObjectLocation,
    stale_against: Option<&str>,
    walk: &ObjectWalkOptions,
) -> Result<Inventory, StartError> {
    let source = Source::Objects {
        location: loc,
        walk: walk.clone(),
    };
    rewrap::worker::inventory(kms, &source, stale_against, walk.concurrency)
}

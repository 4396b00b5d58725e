//! The rotation worker as a remote client: `rewrap --endpoint-url URL rotate`
//! against `rewrap serve` (role separation, audit trail) and against moto's
//! KMS server (a KMS rewrap did not write).
//!
//! Python tools come from `REWRAP_TEST_VENV` (set by `scripts/test`; else
//! `.venv` in the crate); a missing tool fails the test with the fix.

mod support;

use rewrap::api::*;
use rewrap::client::RemoteKms;
use rewrap::kms::Kms;
use rewrap::secret::Secret;
use rewrap::sigv4::Credentials;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};
use support::cli::Server;

const BIN: &str = env!("CARGO_BIN_EXE_rewrap");
const FILES: usize = 40;

fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn venv_tool(tool: &str) -> PathBuf {
    let dir = std::env::var_os("REWRAP_TEST_VENV")
        .map_or_else(|| manifest_dir().join(".venv"), PathBuf::from);
    let path = dir.join("bin").join(tool);
    assert!(
        path.exists(),
        "{tool} is missing from the test virtual environment {}: run scripts/test, or \
         python3 -m venv .venv && .venv/bin/pip install -r tests/requirements.txt",
        dir.display()
    );
    path
}

/// Kills the child on drop.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn must(out: Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed ({}):\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// `rewrap --endpoint-url URL ...` as the principal with `creds`.
fn rewrap_remote(url: &str, creds: &(String, String)) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.env("REWRAP_ENDPOINT_URL", url)
        .env("REWRAP_ACCESS_KEY_ID", &creds.0)
        .env("REWRAP_SECRET_ACCESS_KEY", &creds.1)
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
        .env_remove("REWRAP_HOME")
        .env_remove("AWS_PROFILE")
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .env_remove("AWS_SESSION_TOKEN");
    cmd
}

fn client(url: &str, creds: &(String, String)) -> RemoteKms {
    RemoteKms::new(
        url,
        "us-east-1",
        Credentials {
            access_key_id: creds.0.clone(),
            secret_access_key: Secret::from_slice(creds.1.as_bytes()),
            session_token: None,
        },
        None,
    )
    .unwrap()
}

/// Writes `FILES` files in nested folders; returns (relative path, content).
fn write_tree(root: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    (0..FILES)
        .map(|i| {
            let rel = PathBuf::from(format!("d{}/sub{}/file{i}.txt", i % 3, i % 2));
            let content = format!("file {i} says {}\n", "x".repeat(i * 37)).into_bytes();
            std::fs::create_dir_all(root.join(&rel).parent().unwrap()).unwrap();
            std::fs::write(root.join(&rel), &content).unwrap();
            (rel, content)
        })
        .collect()
}

fn rotation_report(stdout: &str) -> serde_json::Value {
    serde_json::from_str(stdout)
        .unwrap_or_else(|e| panic!("rotate printed no JSON summary ({e}):\n{stdout}"))
}

#[test]
fn rotator_rotates_through_the_server_and_cannot_decrypt() {
    let home = tempfile::tempdir().unwrap();
    let init = Command::new(BIN)
        .arg("--keystore")
        .arg(home.path())
        .arg("init")
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(&must(init, "init")).unwrap();
    let owner = (
        v["AccessKeyId"].as_str().unwrap().to_string(),
        v["SecretAccessKey"].as_str().unwrap().to_string(),
    );
    let server = Server::start(home.path(), &[]);
    let url = server.url.clone();
    let admin = client(&url, &owner);
    let principal = |name: &str| {
        let r = admin
            .create_principal(&PrincipalRequest {
                principal_name: name.into(),
            })
            .unwrap();
        (
            r.access_key_id,
            String::from_utf8(r.secret_access_key.expose().to_vec()).unwrap(),
        )
    };
    let rotator = principal("storage-rotator");
    let reader = principal("app-reader");
    let old = admin
        .create_key(&CreateKeyRequest::default())
        .unwrap()
        .key_metadata;
    let new = admin
        .create_key(&CreateKeyRequest::default())
        .unwrap()
        .key_metadata;

    let tree = tempfile::tempdir().unwrap();
    let files = write_tree(tree.path());
    must(
        rewrap_remote(&url, &owner)
            .args([
                "encrypt-file",
                "--key-id",
                &old.key_id,
                "--context",
                "purpose=app-data",
            ])
            .args(["--recursive", "--in-place"])
            .arg(tree.path())
            .output()
            .unwrap(),
        "encrypt-file through the server",
    );

    let out = rewrap_remote(&url, &rotator)
        .args([
            "rotate",
            "--to",
            &new.key_id,
            "--jobs",
            "16",
            "--no-progress",
        ])
        .arg(tree.path())
        .output()
        .unwrap();
    let report = rotation_report(&must(out, "rotate as storage-rotator"));
    assert_eq!(report["rotated"], FILES as u64, "{report}");
    assert_eq!(report["failed"], 0, "{report}");

    // The rotator can re-wrap but never read.
    let denied = rewrap_remote(&url, &rotator)
        .args(["decrypt-file", "-o", "-"])
        .arg(tree.path().join(&files[0].0))
        .output()
        .unwrap();
    assert!(!denied.status.success());
    let err = String::from_utf8_lossy(&denied.stderr);
    assert!(err.contains("AccessDeniedException"), "{err}");

    // The application reader opens every file, now under the new key.
    let plain = tempfile::tempdir().unwrap();
    must(
        rewrap_remote(&url, &reader)
            .args(["decrypt-file", "--key-id", &new.key_id, "--recursive", "-o"])
            .arg(plain.path())
            .arg(tree.path())
            .output()
            .unwrap(),
        "decrypt-file as app-reader",
    );
    for (rel, content) in &files {
        assert_eq!(
            &std::fs::read(plain.path().join(rel)).unwrap(),
            content,
            "{}",
            rel.display()
        );
    }

    // The server's audit trail shows both.
    let audit = std::fs::read_to_string(home.path().join("audit.log")).unwrap();
    let records: Vec<serde_json::Value> = audit
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let count = |op: &str, outcome: &str| {
        records
            .iter()
            .filter(|r| {
                r["principal"] == "storage-rotator"
                    && r["operation"] == op
                    && r["outcome"] == outcome
                    && r["source_ip"] == "127.0.0.1"
            })
            .count()
    };
    assert_eq!(
        count("ReEncrypt", "Success"),
        FILES,
        "rotator's re-encrypts"
    );
    assert!(
        count("Decrypt", "AccessDeniedException") >= 1,
        "rotator's denied decrypt"
    );
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn the_worker_rotates_through_moto_kms() {
    let moto = venv_tool("moto_server");
    let port = free_port();
    let _moto = Guard(
        Command::new(moto)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let started = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "moto_server did not start"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let url = format!("http://127.0.0.1:{port}");
    let creds = ("testing".to_string(), "testing".to_string());
    let kms = client(&url, &creds);
    let a = kms
        .create_key(&CreateKeyRequest::default())
        .unwrap()
        .key_metadata;
    let b = kms
        .create_key(&CreateKeyRequest::default())
        .unwrap()
        .key_metadata;

    let tree = tempfile::tempdir().unwrap();
    let files = write_tree(tree.path());
    must(
        rewrap_remote(&url, &creds)
            .args([
                "encrypt-file",
                "--key-id",
                &a.key_id,
                "--context",
                "purpose=app-data",
            ])
            .args(["--recursive", "--in-place"])
            .arg(tree.path())
            .output()
            .unwrap(),
        "encrypt-file against moto",
    );
    let out = rewrap_remote(&url, &creds)
        .args(["rotate", "--to", &b.key_id, "--jobs", "8", "--no-progress"])
        .arg(tree.path())
        .output()
        .unwrap();
    let report = rotation_report(&must(out, "rotate against moto"));
    assert_eq!(report["rotated"], FILES as u64, "{report}");
    let plain = tempfile::tempdir().unwrap();
    must(
        rewrap_remote(&url, &creds)
            .args(["decrypt-file", "--key-id", &b.arn, "--recursive", "-o"])
            .arg(plain.path())
            .arg(tree.path())
            .output()
            .unwrap(),
        "decrypt-file against moto",
    );
    for (rel, content) in &files {
        assert_eq!(
            &std::fs::read(plain.path().join(rel)).unwrap(),
            content,
            "{}",
            rel.display()
        );
    }
}

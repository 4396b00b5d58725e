//! Object-store locations through the real `rewrap` binary, against moto's
//! S3 server: encrypt-file / decrypt-file to and from `s3://` URLs, and a
//! `rewrap rotate --checkpoint` process killed with SIGKILL midway, then
//! resumed by a second process.

mod support;

use rewrap::api::PrincipalRequest;
use rewrap::files::EncryptOptions;
use rewrap::kms::Kms;
use rewrap::objstore::encrypt_object;
use rewrap::worker::Checkpoint;
use std::process::{Command, Output};
use std::time::{Duration, Instant};
use support::objects::*;

/// Access key of a role principal, minted by the owner.
struct Creds {
    id: String,
    secret: String,
}

fn creds(kms: &Kms3, principal: &str) -> Creds {
    let k = kms
        .as_role("owner")
        .create_access_key(&PrincipalRequest {
            principal_name: principal.into(),
        })
        .unwrap();
    Creds {
        id: k.access_key_id,
        secret: String::from_utf8(k.secret_access_key.expose().to_vec()).unwrap(),
    }
}

fn rewrap(kms: &Kms3, moto: &Moto, who: &Creds) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_rewrap"));
    c.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", kms.dir.path())
        .env("REWRAP_HOME", &kms.home)
        .env("REWRAP_POLICIES", repo().join("policies"))
        .env("REWRAP_ACCESS_KEY_ID", &who.id)
        .env("REWRAP_SECRET_ACCESS_KEY", &who.secret)
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ENDPOINT_URL", &moto.endpoint)
        .current_dir(kms.dir.path());
    c
}

fn ok(out: Output) -> Output {
    assert!(
        out.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[test]
fn cli_encrypts_to_and_decrypts_from_s3_urls() {
    let moto = Moto::start();
    moto.create_bucket("cli-io");
    let kms = Kms3::new();
    let writer = creds(&kms, "app-writer");
    let reader = creds(&kms, "app-reader");
    let input = kms.dir.path().join("plain.bin");
    std::fs::write(&input, pattern(300_000, 3)).unwrap();
    let url = "s3://cli-io/p/plain.bin";
    ok(rewrap(&kms, &moto, &writer)
        .args([
            "encrypt-file",
            "--key-id",
            &kms.old,
            "--context",
            "purpose=app-data",
        ])
        .arg(&input)
        .args(["-o", url])
        .output()
        .unwrap());
    let out = kms.dir.path().join("back.bin");
    ok(rewrap(&kms, &moto, &reader)
        .args(["decrypt-file", url, "-o"])
        .arg(&out)
        .output()
        .unwrap());
    assert_eq!(std::fs::read(&out).unwrap(), pattern(300_000, 3));
}

#[test]
fn cli_rotation_killed_midway_resumes_from_its_checkpoint() {
    let moto = Moto::start();
    moto.create_bucket("resume-cli");
    let kms = Kms3::new();
    let n = 400u64;
    let url = "s3://resume-cli/batch";
    let loc = moto.open(url);
    let writer = kms.as_role("app-writer");
    let mut opts = EncryptOptions::new(kms.old.clone());
    opts.context = app_context();
    for i in 0..n {
        encrypt_object(&writer, &mut &b"x"[..], &loc, &format!("o{i:05}"), &opts).unwrap();
    }
    let rotator = creds(&kms, "storage-rotator");
    let checkpoint = kms.dir.path().join("rotate.checkpoint");
    let report = kms.dir.path().join("report.json");
    let rotate = || {
        let mut c = rewrap(&kms, &moto, &rotator);
        c.args(["rotate", "--to", &kms.new, "--no-progress"])
            .arg("--checkpoint")
            .arg(&checkpoint)
            .args(["--checkpoint-every", "10", "--concurrency", "1"])
            .arg("--report")
            .arg(&report)
            .arg(url);
        c
    };
    let mut child = rotate()
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_mins(2);
    loop {
        if Checkpoint::load(&checkpoint)
            .ok()
            .flatten()
            .is_some_and(|c| c.objects >= 40)
        {
            break;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "rotate ended before the kill"
        );
        assert!(Instant::now() < deadline, "no checkpoint progress");
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let at_kill = Checkpoint::load(&checkpoint).unwrap().unwrap();
    assert!(!at_kill.complete && at_kill.objects < n, "{at_kill:?}");

    ok(rotate().output().unwrap());
    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    assert_eq!(r["resumed_objects"], at_kill.objects);
    assert_eq!(r["scanned"], n - at_kill.objects, "{r:#}");
    assert_eq!(r["failed"], 0);
    let redone = r["already_current"].as_u64().unwrap();
    assert!(redone <= 10 + 1, "redid {redone} objects: {r:#}");
    assert!(Checkpoint::load(&checkpoint).unwrap().unwrap().complete);

    let inv = ok(rewrap(&kms, &moto, &rotator)
        .args(["inventory", "--stale-against", &kms.new, url])
        .output()
        .unwrap());
    let inv: serde_json::Value = serde_json::from_slice(&inv.stdout).unwrap();
    assert_eq!(
        (inv["envelopes"].as_u64(), inv["stale"].as_u64()),
        (Some(n), Some(0))
    );
}

//! Resource use stays flat on a hostile tree (issue 12): `decrypt-file -r`,
//! `rotate` and `inventory`, through the real binary, over 10,000 entries of
//! every kind a neighbour with write access to the tree can plant. Every
//! regular file gets a named outcome with exact counts per kind, every run
//! ends under a kill deadline, and a folder outside the tree (the target of
//! symlinks planted in it) is byte-for-byte unchanged.
//!
//! Not regular files (FIFOs, sockets, symbolic links into and out of the
//! tree, dangling links) are not walked: their named outcome is "not a
//! regular file", seen as the `scanned` count leaving them out. Unreadable
//! files are not planted: the tests run as root, which reads through any
//! mode; `a_file_locked_by_someone_else_is_reported_busy_not_waited_on_forever`
//! (worker_cli) covers a file that cannot be had.

mod support;

use sha2::Digest;
use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};
use support::cli::{stderr, Creds, Env};

/// What is planted, and how many of each (10,000 in all).
const VALID: usize = 4000;
const PLAIN: usize = 1000;
/// Envelopes whose header or slots are bad: every header error kind.
const HEADER_KINDS: [&str; 5] = [
    "truncated-header",
    "header-checksum",
    "no-valid-slot",
    "version",
    "chunk-size",
];
/// Envelopes whose header is fine but whose body is bad: every body error.
const BODY_KINDS: [&str; 4] = ["chunk-auth", "truncated-body", "trailing", "decoys"];
const PER_BAD_KIND: usize = 500;
const DECOYS: usize = 250;
const FIFOS: usize = 200;
const SOCKETS: usize = 100;
const LINKS_IN: usize = 200;
const LINKS_OUT: usize = 200;
const LINKS_DANGLING: usize = 50;

fn bad(kind: &str, good: &[u8], body_at: usize) -> Vec<u8> {
    let mut b = good.to_vec();
    let h = body_at - 2 * 1024;
    match kind {
        "truncated-header" => b.truncate(30),
        "header-checksum" => b[20] ^= 1,
        "no-valid-slot" => b[h + 100] ^= 1,
        "version" => b[9] = 2,
        "chunk-size" => {
            b[12..16].copy_from_slice(&(rewrap::envelope::MAX_CHUNK_SIZE + 1).to_be_bytes());
            let sum = sha2::Sha256::digest(&b[..h - 32]);
            b[h - 32..h].copy_from_slice(&sum);
        }
        "chunk-auth" => b[body_at + 3] ^= 1,
        "truncated-body" => b.truncate(b.len() - 9),
        "trailing" => b.extend_from_slice(b"appended"),
        "decoys" => {
            b.truncate(body_at);
            let mut body = vec![0x5Au8; 64 + 16 + 8 - 1];
            let mut l = 0;
            while l + 24 <= body.len() {
                body[l + 16..l + 20].copy_from_slice(&(l as u32).to_be_bytes());
                body[l + 20..l + 24].copy_from_slice(b"REND");
                l += 8;
            }
            b.extend(body);
        }
        other => panic!("unknown kind {other}"),
    }
    b
}

/// SHA-256 of every file under `dir`, by relative path.
fn checksums(dir: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for e in walkdir::WalkDir::new(dir) {
        let e = e.unwrap();
        if e.file_type().is_file() {
            let rel = e.path().strip_prefix(dir).unwrap().display().to_string();
            out.insert(
                rel,
                hex::encode(sha2::Sha256::digest(std::fs::read(e.path()).unwrap())),
            );
        }
    }
    out
}

/// Runs `args` as `who` in the env's folder, killed after 5 minutes.
fn bounded(env: &Env, who: &Creds, args: &[&str]) -> Output {
    let child = env
        .command(who)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let deadline = Instant::now() + Duration::from_mins(5);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        if rx.recv_timeout(deadline - Instant::now()).is_err() {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
    });
    let out = child.wait_with_output().unwrap();
    let _ = tx.send(());
    assert!(
        out.status.code().is_some(),
        "{args:?} was killed after 5 minutes (a hang): {}",
        stderr(&out)
    );
    out
}

/// Failure kinds of a report's `failures`, counted.
fn kinds(failures: &serde_json::Value) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for f in failures.as_array().expect("a failures list") {
        *out.entry(f["kind"].as_str().unwrap().to_string())
            .or_insert(0) += 1;
    }
    out
}

#[test]
fn ten_thousand_hostile_entries_each_get_a_named_outcome_and_nothing_outside_is_touched() {
    let env = Env::new();
    let rotator = env.principal("storage-rotator");
    let old = env.key("old");
    let new = env.key("new");
    let plain = env.path("plain");
    std::fs::write(&plain, vec![b'p'; 100]).unwrap();
    let sealed = env.path("sealed.rwp");
    let out = env.run(
        &env.owner,
        &[
            "encrypt-file",
            "--key-id",
            &old,
            "--chunk-size",
            "64",
            plain.to_str().unwrap(),
            "-o",
            sealed.to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let good = std::fs::read(&sealed).unwrap();
    let body_at = rewrap::envelope::ParsedHeader::parse(&good)
        .unwrap()
        .total_len();

    let outside = env.path("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("secret.txt"), b"not for the tree").unwrap();
    std::fs::write(outside.join("envelope.rwp"), &good).unwrap();
    let tree = env.path("tree");
    let mut planted = 0;
    let dir_for = |i: usize| {
        let d = tree.join(format!("d{:03}", i % 100));
        std::fs::create_dir_all(&d).unwrap();
        d
    };
    for i in 0..VALID {
        std::fs::write(dir_for(i).join(format!("valid-{i}.rwp")), &good).unwrap();
    }
    for i in 0..PLAIN {
        std::fs::write(
            dir_for(i).join(format!("plain-{i}.txt")),
            format!("plain {i}"),
        )
        .unwrap();
    }
    planted += VALID + PLAIN;
    for kind in HEADER_KINDS.iter().chain(BODY_KINDS.iter()) {
        let n = if *kind == "decoys" {
            DECOYS
        } else {
            PER_BAD_KIND
        };
        let bytes = bad(kind, &good, body_at);
        for i in 0..n {
            std::fs::write(dir_for(i).join(format!("{kind}-{i}.rwp")), &bytes).unwrap();
        }
        planted += n;
    }
    let fifos: Vec<String> = (0..FIFOS)
        .map(|i| dir_for(i).join(format!("fifo-{i}")).display().to_string())
        .collect();
    assert!(Command::new("mkfifo")
        .args(&fifos)
        .status()
        .unwrap()
        .success());
    for i in 0..SOCKETS {
        drop(
            std::os::unix::net::UnixListener::bind(dir_for(i).join(format!("socket-{i}"))).unwrap(),
        );
    }
    for i in 0..LINKS_IN {
        let d = dir_for(i);
        std::os::unix::fs::symlink(format!("valid-{i}.rwp"), d.join(format!("link-in-{i}")))
            .unwrap();
    }
    for i in 0..LINKS_OUT {
        let target = if i % 2 == 0 {
            "secret.txt"
        } else {
            "envelope.rwp"
        };
        std::os::unix::fs::symlink(
            outside.join(target),
            dir_for(i).join(format!("link-out-{i}")),
        )
        .unwrap();
    }
    for i in 0..LINKS_DANGLING {
        std::os::unix::fs::symlink(
            env.path("nowhere"),
            dir_for(i).join(format!("dangling-{i}")),
        )
        .unwrap();
    }
    planted += FIFOS + SOCKETS + LINKS_IN + LINKS_OUT + LINKS_DANGLING;
    assert_eq!(planted, 10_000);
    let regular = (VALID + PLAIN + 5 * PER_BAD_KIND + 3 * PER_BAD_KIND + DECOYS) as u64;
    let header_bad = (HEADER_KINDS.len() * PER_BAD_KIND) as u64;
    let body_bad = (3 * PER_BAD_KIND + DECOYS) as u64;
    let before = checksums(&outside);

    // decrypt-file -r: valid ones done, plain ones skipped, every bad
    // envelope failed as CorruptEnvelope.
    let decrypted = env.path("decrypted");
    let out = bounded(
        &env,
        &env.owner,
        &[
            "decrypt-file",
            "--recursive",
            tree.to_str().unwrap(),
            "-o",
            decrypted.to_str().unwrap(),
        ],
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["done"], VALID as u64, "{r}");
    assert_eq!(r["skipped"], PLAIN as u64, "{r}");
    assert_eq!(
        kinds(&r["failed"]),
        BTreeMap::from([("CorruptEnvelope".to_string(), header_bad + body_bad)])
    );

    // rotate: reads only headers and slots, so bad bodies rotate too.
    let report = env.path("rotate.json");
    let out = bounded(
        &env,
        &rotator,
        &[
            "rotate",
            "--to",
            &new,
            // 2,500 corrupt envelopes would stop the run at the default
            // limit of 100 failures; this test wants every outcome.
            "--max-failures",
            "0",
            "--report",
            report.to_str().unwrap(),
            tree.to_str().unwrap(),
        ],
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    assert_eq!(r["scanned"], regular, "{r}");
    assert_eq!(r["rotated"], VALID as u64 + body_bad, "{r}");
    assert_eq!(r["not_envelope"], PLAIN as u64, "{r}");
    assert_eq!(r["failed"], header_bad, "{r}");
    assert_eq!(
        kinds(&r["failures"]),
        BTreeMap::from([("CorruptEnvelope".to_string(), header_bad)])
    );

    // inventory: every readable envelope counted under the new key.
    let out = bounded(&env, &rotator, &["inventory", tree.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["envelopes"], VALID as u64 + body_bad, "{r}");
    assert_eq!(
        kinds(&r["failures"]),
        BTreeMap::from([("CorruptEnvelope".to_string(), header_bad)])
    );

    assert_eq!(
        checksums(&outside),
        before,
        "a file outside the tree changed"
    );
    assert_eq!(std::fs::read(outside.join("envelope.rwp")).unwrap(), good);
}

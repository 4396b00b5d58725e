//! Resource use stays flat on a hostile tree (issue 12): `decrypt-file -r`,
//! `rotate` and `inventory`, through the real binary, over 10,000 entries of
//! every kind a neighbour with write access to the tree can plant. Every
//! regular file gets a named outcome with exact counts per kind, every run
//! ends under a kill deadline, and a folder outside the tree (the target of
//! symlinks planted in it) is byte-for-byte unchanged.
//!
//! Not regular files are never opened: symbolic links (into and out of the
//! tree, dangling) are counted and listed as `skipped_links`, FIFOs and
//! sockets as `skipped_special`. Unreadable files and folders are planted in
//! a test of their own, run as an unprivileged user (the suite runs as root,
//! which reads through any mode), and files swapped for FIFOs and links
//! while the walker runs in another.

mod support;

use sha2::Digest;
use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};
use support::cli::{bin, stderr, Creds, Env};

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

/// Every link and special file planted is counted and listed by name.
fn assert_left_alone(r: &serde_json::Value) {
    assert_eq!(
        r["skipped_links"],
        (LINKS_IN + LINKS_OUT + LINKS_DANGLING) as u64,
        "{r}"
    );
    assert_eq!(r["skipped_special"], (FIFOS + SOCKETS) as u64, "{r}");
    let special: Vec<&str> = r["special"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap().rsplit('/').next().unwrap())
        .collect();
    assert_eq!(special.len(), FIFOS + SOCKETS);
    assert_eq!(
        special.iter().filter(|n| n.starts_with("fifo-")).count(),
        FIFOS
    );
    assert_eq!(
        special.iter().filter(|n| n.starts_with("socket-")).count(),
        SOCKETS
    );
    assert_eq!(
        r["links"].as_array().unwrap().len(),
        LINKS_IN + LINKS_OUT + LINKS_DANGLING
    );
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
    assert_left_alone(&r);
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
    assert_left_alone(&r);
    assert_eq!(
        kinds(&r["failures"]),
        BTreeMap::from([("CorruptEnvelope".to_string(), header_bad)])
    );

    // inventory: every readable envelope counted under the new key.
    let out = bounded(&env, &rotator, &["inventory", tree.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["envelopes"], VALID as u64 + body_bad, "{r}");
    assert_left_alone(&r);
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

/// Seals `bytes` under `key` as the owner, returns the envelope.
fn envelope(env: &Env, key: &str, bytes: &[u8]) -> Vec<u8> {
    let plain = env.path("one-plain");
    let sealed = env.path("one-sealed.rwp");
    std::fs::write(&plain, bytes).unwrap();
    let _ = std::fs::remove_file(&sealed);
    let out = env.run(
        &env.owner,
        &[
            "encrypt-file",
            "--key-id",
            key,
            plain.to_str().unwrap(),
            "-o",
            sealed.to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    std::fs::read(&sealed).unwrap()
}

/// A rotation run as an unprivileged user (uid 65534 through `setpriv`,
/// against `rewrap serve`: that user cannot open the keystore) over a tree
/// it owns, where one file and one folder are mode 000: each gets a named
/// failure, every other envelope is rotated, and nothing hangs.
#[test]
fn unreadable_files_and_folders_get_a_named_outcome_as_an_unprivileged_user() {
    use std::os::unix::fs::PermissionsExt;
    let env = Env::new();
    let rotator = env.principal("storage-rotator");
    let old = env.key("old");
    let new = env.key("new");
    let good = envelope(&env, &old, b"readable by its owner only");
    let served = env.serve();
    // The user must reach the tree: the test folder is root's, 0700.
    std::fs::set_permissions(env.dir.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
    let tree = env.path("tree");
    let closed = tree.join("closed");
    std::fs::create_dir_all(&closed).unwrap();
    for i in 0..20 {
        std::fs::write(tree.join(format!("ok-{i}.rwp")), &good).unwrap();
    }
    std::fs::write(tree.join("unreadable.rwp"), &good).unwrap();
    std::fs::write(closed.join("inside.rwp"), &good).unwrap();
    let chown = Command::new("chown")
        .args(["-R", "65534:65534", tree.to_str().unwrap()])
        .status()
        .unwrap();
    assert!(chown.success());
    std::fs::set_permissions(
        tree.join("unreadable.rwp"),
        std::fs::Permissions::from_mode(0o000),
    )
    .unwrap();
    std::fs::set_permissions(&closed, std::fs::Permissions::from_mode(0o000)).unwrap();

    let as_nobody = |args: &[&str]| {
        let out = Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
            .arg(bin())
            .args(args)
            .env_clear()
            .envs(env.remote_env(&served.url, &rotator))
            .current_dir("/")
            .output()
            .unwrap();
        let r: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{args:?}: no JSON ({e}): {}", stderr(&out)));
        (out.status.code(), r)
    };
    let reports = env.path("reports");
    std::fs::create_dir_all(&reports).unwrap();
    std::fs::set_permissions(&reports, std::fs::Permissions::from_mode(0o777)).unwrap();
    let report = reports.join("rotate.json");
    let (code, summary) = as_nobody(&[
        "rotate",
        "--to",
        &new,
        "--report",
        report.to_str().unwrap(),
        tree.to_str().unwrap(),
    ]);
    assert_eq!(code, Some(1), "{summary}");
    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    assert_eq!(r["rotated"], 20, "{r}");
    assert_eq!(r["failed"], 2, "{r}");
    let failures: BTreeMap<String, String> = r["failures"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["path"]
                    .as_str()
                    .unwrap()
                    .rsplit('/')
                    .next()
                    .unwrap()
                    .to_string(),
                f["kind"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        failures,
        BTreeMap::from([
            ("closed".to_string(), "AccessDenied".to_string()),
            ("unreadable.rwp".to_string(), "AccessDenied".to_string()),
        ]),
        "{r}"
    );
    let (code, r) = as_nobody(&["inventory", tree.to_str().unwrap()]);
    assert_eq!(code, Some(1), "{r}");
    assert_eq!(r["envelopes"], 20, "{r}");
    assert_eq!(
        kinds(&r["failures"]),
        BTreeMap::from([("AccessDenied".to_string(), 2)])
    );
    // The unreadable ones are as they were.
    std::fs::set_permissions(&closed, std::fs::Permissions::from_mode(0o755)).unwrap();
    assert_eq!(std::fs::read(closed.join("inside.rwp")).unwrap(), good);
    assert_eq!(std::fs::read(tree.join("unreadable.rwp")).unwrap(), good);
}

/// Files swapped, while `rotate`, `inventory` and `decrypt-file -r` walk the
/// tree, for FIFOs, links out of the tree and back: no run hangs, every
/// file scanned gets exactly one outcome, nothing outside the tree is
/// read into it or changed, and the files left in place at the end all
/// decrypt.
#[test]
fn files_swapped_for_fifos_and_links_during_the_walk_never_hang_or_leak() {
    const STEADY: usize = 1000;
    const SWAPPED: usize = 200;
    let env = Env::new();
    let rotator = env.principal("storage-rotator");
    let old = env.key("old");
    let new = env.key("new");
    let good = envelope(&env, &old, b"inside the tree");
    let outside = env.path("outside");
    std::fs::create_dir_all(&outside).unwrap();
    let foreign = envelope(&env, &old, b"outside the tree");
    std::fs::write(outside.join("envelope.rwp"), &foreign).unwrap();
    std::fs::write(outside.join("secret.txt"), b"not for the tree").unwrap();
    let before = checksums(&outside);
    let tree = env.path("tree");
    std::fs::create_dir_all(&tree).unwrap();
    for i in 0..STEADY {
        std::fs::write(tree.join(format!("steady-{i}.rwp")), &good).unwrap();
    }
    let swapped: Vec<std::path::PathBuf> = (0..SWAPPED)
        .map(|i| tree.join(format!("swapped-{i}.rwp")))
        .collect();
    for p in &swapped {
        std::fs::write(p, &good).unwrap();
    }
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let swapping = {
        let stop = stop.clone();
        let swapped = swapped.clone();
        let outside = outside.clone();
        let good = good.clone();
        std::thread::spawn(move || {
            let mut round = 0usize;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                for (i, p) in swapped.iter().enumerate() {
                    let aside = p.with_extension("swap");
                    let _ = std::fs::remove_file(&aside);
                    match (i + round) % 4 {
                        0 => {
                            let _ = Command::new("mkfifo").arg(&aside).status();
                        }
                        1 => {
                            let _ =
                                std::os::unix::fs::symlink(outside.join("envelope.rwp"), &aside);
                        }
                        2 => {
                            let _ = std::os::unix::fs::symlink(&outside, &aside);
                        }
                        _ => {
                            let _ = std::fs::write(&aside, &good);
                        }
                    }
                    let _ = std::fs::rename(&aside, p);
                }
                round += 1;
            }
        })
    };
    let tree_arg = tree.to_str().unwrap().to_string();
    let decrypted = env.path("decrypted");
    let runs = [
        (
            env.owner.clone(),
            vec![
                "decrypt-file".to_string(),
                "--recursive".into(),
                tree_arg.clone(),
                "-o".into(),
                decrypted.display().to_string(),
            ],
        ),
        (
            rotator.clone(),
            vec![
                "rotate".into(),
                "--to".into(),
                new.clone(),
                "--max-failures".into(),
                "0".into(),
                "--report".into(),
                env.path("rotate.json").display().to_string(),
                tree_arg.clone(),
            ],
        ),
        (rotator.clone(), vec!["inventory".into(), tree_arg.clone()]),
    ];
    for (who, args) in &runs {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = bounded(&env, who, &args);
        let json = if args[0] == "rotate" {
            std::fs::read(env.path("rotate.json")).unwrap_or_else(|e| {
                panic!(
                    "no report ({e}): {:?} {}{}",
                    out.status,
                    String::from_utf8_lossy(&out.stdout),
                    stderr(&out)
                )
            })
        } else {
            out.stdout.clone()
        };
        let r: serde_json::Value = serde_json::from_slice(&json)
            .unwrap_or_else(|e| panic!("{args:?}: no JSON ({e}): {}", stderr(&out)));
        assert!(matches!(out.status.code(), Some(0 | 1)), "{args:?}: {r}");
        let allowed = ["Conflict", "NotFound", "Busy"];
        let failures = r
            .get("failures")
            .or_else(|| r.get("failed").filter(|f| f.is_array()))
            .unwrap();
        for (kind, _) in kinds(failures) {
            assert!(allowed.contains(&kind.as_str()), "{args:?}: {kind}: {r}");
        }
        match args[0] {
            "rotate" => {
                let outcomes: u64 = [
                    "rotated",
                    "already_current",
                    "other_key",
                    "not_envelope",
                    "failed",
                    "unfinished",
                ]
                .iter()
                .map(|k| r[*k].as_u64().unwrap())
                .sum();
                assert_eq!(r["scanned"], outcomes, "{r}");
                assert!(r["rotated"].as_u64().unwrap() >= STEADY as u64, "{r}");
            }
            "inventory" => assert!(r["envelopes"].as_u64().unwrap() >= STEADY as u64, "{r}"),
            _ => assert!(r["done"].as_u64().unwrap() >= STEADY as u64, "{r}"),
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    swapping.join().unwrap();
    assert_eq!(
        checksums(&outside),
        before,
        "a file outside the tree changed"
    );
    // Nothing from outside was decrypted into the output.
    for (name, _) in checksums(&decrypted) {
        let text = std::fs::read(decrypted.join(&name)).unwrap();
        assert_eq!(text, b"inside the tree", "{name}");
    }
    // Every regular file left in the tree decrypts.
    let out = env.run(
        &env.owner,
        &[
            "decrypt-file",
            "--recursive",
            &tree_arg,
            "-o",
            env.path("after").to_str().unwrap(),
        ],
    );
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(0), "{r}");
    assert!(r["done"].as_u64().unwrap() >= STEADY as u64, "{r}");
}

//! Unattended batch runs (issue 10), through the real binary: preflight
//! before any write, stopping early on a systematic failure, graceful
//! interruption by SIGTERM, symbolic links, and no silent overwrites.
//!
//! Regression tests, one per observation of the issue: a dry run of a
//! principal without ReEncrypt rights reported everything as rotated; the
//! real run then failed file by file (4,060 AccessDenied lines); SIGTERM
//! ended a run without report or summary; a bad `--report` path was found
//! only after the work; a symlink named as PATH was ignored and links in
//! the tree went uncounted; `--follow-symlinks` failed every link with
//! "changed concurrently"; `decrypt-file -o` overwrote an existing file
//! and `encrypt-file --in-place` sealed an envelope twice.

mod support;

use rewrap::api::{DisableKeyRequest, PrincipalRequest};
use rewrap::envelope::{ParsedHeader, SlotState};
use rewrap::kms::Kms;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};
use support::library::*;

/// Access key id and secret of a principal, for the binary.
struct Creds(String, String);

struct Fixture {
    env: Env,
    old: String,
    new: String,
    root: PathBuf,
    plain: Vec<(PathBuf, Vec<u8>)>,
    rotator: Creds,
    reader: Creds,
    writer: Creds,
}

fn creds(env: &Env, name: &str) -> Creds {
    let c = env
        .owner
        .create_principal(&PrincipalRequest {
            principal_name: name.into(),
        })
        .unwrap();
    Creds(
        c.access_key_id,
        String::from_utf8(c.secret_access_key.expose().to_vec()).unwrap(),
    )
}

/// `n` envelopes under the old key in `tree/` (spread over 7 folders).
fn fixture(n: usize) -> Fixture {
    let env = Env::new();
    let old = env.key("old");
    let new = env.key("new");
    let writer_creds = creds(&env, "app-writer");
    let writer = env.session("app-writer");
    let rotator = creds(&env, "storage-rotator");
    let reader = creds(&env, "app-reader");
    let root = env.path("tree");
    let mut plain = Vec::with_capacity(n);
    for i in 0..n {
        let dir = root.join(format!("{}", i % 7));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("{i}.rwp"));
        let data = bytes(i * 7 % 500, i as u64);
        let mut f = std::fs::File::create(&path).unwrap();
        rewrap::files::encrypt_stream(&writer, &app_opts(&old), &mut &data[..], &mut f).unwrap();
        plain.push((path, data));
    }
    Fixture {
        env,
        old,
        new,
        root,
        plain,
        rotator,
        reader,
        writer: writer_creds,
    }
}

impl Fixture {
    fn cmd(&self, who: &Creds, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_rewrap"));
        c.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", self.env.dir.path())
            .env("REWRAP_HOME", &self.env.home)
            .env("REWRAP_POLICIES", repo().join("policies"))
            .env("REWRAP_ACCESS_KEY_ID", &who.0)
            .env("REWRAP_SECRET_ACCESS_KEY", &who.1)
            .current_dir(self.env.dir.path())
            .args(args);
        c
    }

    fn run(&self, who: &Creds, args: &[&str]) -> Output {
        self.cmd(who, args).output().unwrap()
    }

    fn root(&self) -> &str {
        self.root.to_str().unwrap()
    }

    /// Every file's bytes, to prove a run changed nothing.
    fn snapshot(&self) -> Vec<Vec<u8>> {
        self.plain
            .iter()
            .map(|(p, _)| std::fs::read(p).unwrap())
            .collect()
    }

    /// Every file opens (as the app reader) to its original bytes; returns
    /// how many are under the new key, and how many hold two valid slots.
    fn check_all(&self) -> (usize, usize) {
        let reader = self.env.session("app-reader");
        let (mut new, mut both) = (0, 0);
        for (path, data) in &self.plain {
            let mut got = Vec::new();
            let mut file = std::fs::File::open(path).unwrap();
            rewrap::files::decrypt_stream(
                &reader,
                &rewrap::files::DecryptOptions::default(),
                &mut file,
                &mut got,
            )
            .unwrap_or_else(|e| panic!("{path:?}: {e}"));
            assert!(got == *data, "{path:?} differs");
            let p = header(path);
            new += usize::from(p.slots.active().unwrap().1.key_arn == self.new);
            both += usize::from(p.slots.0.iter().all(|s| matches!(s, SlotState::Valid(_))));
        }
        (new, both)
    }

    /// Audit records of `operation` by the principal with `outcome`.
    fn audited(&self, principal: &str, operation: &str, outcome: &str) -> usize {
        rewrap::audit::read_records(&self.env.service.audit_path())
            .unwrap()
            .iter()
            .filter(|r| {
                r.principal == principal && r.operation == operation && r.outcome == outcome
            })
            .count()
    }
}

fn header(path: &Path) -> ParsedHeader {
    ParsedHeader::read_from(&mut std::fs::File::open(path).unwrap()).unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn report(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

/// scanned = every outcome counted once (nothing lost, nothing twice).
fn assert_counts_add_up(r: &serde_json::Value) {
    let n = |k: &str| r[k].as_u64().unwrap_or_else(|| panic!("{k} in {r}"));
    assert_eq!(
        n("scanned"),
        n("rotated")
            + n("would_rotate")
            + n("already_current")
            + n("other_key")
            + n("not_envelope")
            + n("failed")
            + n("unfinished"),
        "{r}"
    );
}

#[test]
fn dry_run_without_reencrypt_rights_fails_with_exit_2_after_one_call_and_writes_nothing() {
    let f = fixture(40);
    let before = f.snapshot();
    let r = f.env.path("dry.json");
    let out = f.run(
        &f.reader,
        &[
            "rotate",
            "--to",
            &f.new,
            "--dry-run",
            "--report",
            r.to_str().unwrap(),
            f.root(),
        ],
    );
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    let r = report(&r);
    assert_eq!(r["dry_run"], true);
    assert_eq!(r["stopped_early"], true);
    assert_eq!(r["would_rotate"], 0, "{r}");
    assert_eq!(r["rotated"], 0, "{r}");
    assert_eq!(r["failures"][0]["kind"], "AccessDenied", "{r}");
    assert!(
        r["stop_reason"]
            .as_str()
            .unwrap()
            .contains("AccessDeniedException"),
        "{r}"
    );
    assert_counts_add_up(&r);
    // One failure line and a count, not one line per file.
    assert!(err.lines().count() <= 3, "{err}");
    assert!(
        err.contains("rewrap: stopped early: the KMS refused the caller"),
        "{err}"
    );
    // One ReEncrypt was asked for the one source key version, and refused.
    assert_eq!(
        f.audited("app-reader", "ReEncrypt", "AccessDeniedException"),
        1
    );
    assert!(f.snapshot() == before, "a dry run changed a file");
}

#[test]
fn dry_run_lists_every_envelope_with_its_key_alias_and_version() {
    let f = fixture(5);
    f.env
        .owner
        .create_alias(&rewrap::api::AliasRequest {
            alias_name: "alias/app-old".into(),
            target_key_id: f.old.clone(),
        })
        .unwrap();
    std::fs::write(f.root.join("notes.txt"), b"plain").unwrap();
    let before = f.snapshot();
    let out = f.run(
        &f.rotator,
        &["rotate", "--to", &f.new, "--dry-run", "--list", f.root()],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    let listed: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("would_rotate\t"))
        .collect();
    assert_eq!(listed.len(), 5, "{text}");
    for (path, _) in &f.plain {
        let want = format!(
            "would_rotate\t{}\talias/app-old\t1\t{}",
            f.old,
            path.display()
        );
        assert!(listed.contains(&want.as_str()), "{want:?} not in {text}");
    }
    // The summary after the listing says would_rotate, not rotated.
    let summary: serde_json::Value =
        serde_json::from_str(&text[text.find('{').unwrap()..]).unwrap();
    assert_eq!(
        (
            summary["would_rotate"].as_u64(),
            summary["rotated"].as_u64()
        ),
        (Some(5), Some(0))
    );
    assert_eq!(summary["not_envelope"], 1);
    assert!(f.snapshot() == before, "a dry run changed a file");
    // The probe is a DryRun ReEncrypt (issue 15): rights checked, no key used.
    assert_eq!(f.audited("storage-rotator", "ReEncrypt", "Success"), 0);
    assert_eq!(
        f.audited("storage-rotator", "ReEncrypt", "DryRunOperationException"),
        1
    );
}

#[test]
fn a_run_without_rights_stops_after_the_first_batch_with_exit_2() {
    const FILES: usize = 1500;
    let f = fixture(FILES);
    let before = f.snapshot();
    let r = f.env.path("r.json");
    let out = f.run(
        &f.reader,
        &[
            "rotate",
            "--jobs",
            "2",
            "--to",
            &f.new,
            "--report",
            r.to_str().unwrap(),
            f.root(),
        ],
    );
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    let r = report(&r);
    assert_eq!(r["stopped_early"], true);
    let failed = r["failed"].as_u64().unwrap();
    // At most one ReEncrypt batch (64) per worker was refused.
    assert!((1..=128).contains(&failed), "{failed} failed");
    assert_eq!(
        f.audited("app-reader", "ReEncrypt", "AccessDeniedException"),
        failed as usize
    );
    assert!(r["failures"]
        .as_array()
        .unwrap()
        .iter()
        .all(|x| x["kind"] == "AccessDenied"));
    assert_counts_add_up(&r);
    assert_eq!(err.matches("AccessDeniedException").count(), 2, "{err}");
    if failed > 1 {
        let more = format!(
            "rewrap: ... and {} more failures (the report lists them)",
            failed - 1
        );
        assert!(err.contains(&more), "{err}");
    }
    assert!(f.snapshot() == before, "a refused run changed a file");
}

#[test]
fn a_disabled_target_key_stops_the_run_before_any_file() {
    let f = fixture(10);
    f.env
        .owner
        .disable_key(&DisableKeyRequest {
            key_id: f.new.clone(),
            force: None,
        })
        .unwrap();
    let before = f.snapshot();
    let out = f.run(&f.rotator, &["rotate", "--to", &f.new, f.root()]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert_eq!(
        err.trim_end(),
        format!(
            "rewrap: rotation could not start: DisabledException: the target key {} is disabled",
            f.new
        )
    );
    assert!(f.snapshot() == before);
    assert_eq!(
        f.audited("storage-rotator", "ReEncrypt", "DisabledException"),
        0
    );
}

#[test]
fn a_bad_report_path_stops_the_run_before_any_file_with_one_message() {
    let f = fixture(10);
    let before = f.snapshot();
    for bad in [
        f.env.path("missing/r.json"),
        f.env.path(""), // a folder
    ] {
        let out = f.run(
            &f.rotator,
            &[
                "rotate",
                "--to",
                &f.new,
                "--report",
                bad.to_str().unwrap(),
                f.root(),
            ],
        );
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(
            err.starts_with(&format!(
                "rewrap: cannot write the report {}: ",
                bad.display()
            )),
            "{err}"
        );
        assert!(f.snapshot() == before, "{bad:?}: a file was touched");
    }
    assert_eq!(f.audited("storage-rotator", "ReEncrypt", "Success"), 0);
}

#[test]
fn max_failures_stops_the_run_with_exit_2_and_says_why() {
    let f = fixture(30);
    // Envelopes by their magic, unusable past it.
    for i in 0..12 {
        let mut bad = rewrap::envelope::MAGIC.to_vec();
        bad.extend_from_slice(&[0xEE; 40]);
        std::fs::write(f.root.join(format!("bad-{i:02}.rwp")), bad).unwrap();
    }
    let r = f.env.path("r.json");
    let out = f.run(
        &f.rotator,
        &[
            "rotate",
            "--jobs",
            "1",
            "--max-failures",
            "3",
            "--to",
            &f.new,
            "--report",
            r.to_str().unwrap(),
            f.root(),
        ],
    );
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    let r = report(&r);
    assert_eq!(
        (r["stopped_early"].as_bool(), r["failed"].as_u64()),
        (Some(true), Some(3))
    );
    assert_eq!(
        r["stop_reason"],
        "3 items failed: the limit is 3 (--max-failures)"
    );
    assert_eq!(r["failures"][0]["kind"], "CorruptEnvelope");
    assert_counts_add_up(&r);
    // Every file still opens; a run without the limit finishes the job.
    f.check_all();
    let out = f.run(
        &f.rotator,
        &["rotate", "--max-failures", "0", "--to", &f.new, f.root()],
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_eq!(f.check_all(), (30, 0));
}

#[test]
fn sigterm_mid_run_finishes_the_batch_writes_a_partial_report_and_exits_3() {
    const FILES: usize = 6000;
    let f = fixture(FILES);
    let r = f.env.path("r.json");
    let audit = f.env.service.audit_path();
    let start = std::fs::metadata(&audit).map_or(0, |m| m.len());
    let mut child = f
        .cmd(
            &f.rotator,
            &[
                "rotate",
                "--no-progress",
                "--jobs",
                "2",
                "--batch",
                "16",
                "--to",
                &f.new,
                "--report",
                r.to_str().unwrap(),
                f.root(),
            ],
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Mid-run: the first ReEncrypt records are in the audit log.
    let deadline = Instant::now() + Duration::from_mins(1);
    while std::fs::metadata(&audit).map_or(0, |m| m.len()) < start + 20_000 {
        assert!(Instant::now() < deadline, "the run never started");
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run ended too soon"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    let pid = rustix::process::Pid::from_child(&child);
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
    let signalled = Instant::now();
    let out = child.wait_with_output().unwrap();
    let err = stderr(&out);
    assert!(
        signalled.elapsed() < Duration::from_secs(10),
        "took {:?} to stop",
        signalled.elapsed()
    );
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(
        err.contains("rewrap: interrupted: finishing the batch in flight"),
        "{err}"
    );
    let r = report(&r);
    assert_eq!(r["interrupted"], true);
    assert_eq!(r["stopped_early"], false);
    assert_eq!(r["failed"], 0, "{r}");
    assert_counts_add_up(&r);
    let rotated = r["rotated"].as_u64().unwrap() as usize;
    assert!(rotated > 0 && rotated < FILES, "{rotated} rotated");
    // The summary was printed too.
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["rotated"], r["rotated"]);
    assert_eq!(summary["interrupted"], true);
    // Every file opens; the rotated ones are done (old slot wiped), the
    // others untouched: rotated + not yet done = total.
    let (new, both) = f.check_all();
    assert_eq!((new, both), (rotated, 0));
    // A second run finishes the job.
    let out = f.run(&f.rotator, &["rotate", "--to", &f.new, f.root()]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(f.check_all(), (FILES, 0));
}

#[test]
fn links_named_as_path_are_followed_links_inside_are_counted_or_followed() {
    let f = fixture(3);
    let outside = f.env.path("outside.rwp");
    let writer = f.env.session("app-writer");
    seal(&writer, &app_opts(&f.old), &outside, b"outside the tree");
    let inside = f.root.join("links");
    std::fs::create_dir_all(&inside).unwrap();
    std::os::unix::fs::symlink(&outside, inside.join("to-outside")).unwrap();
    std::os::unix::fs::symlink(f.env.path("nowhere"), inside.join("dangling")).unwrap();
    let file_link = f.env.path("file-link");
    std::os::unix::fs::symlink(&f.plain[0].0, &file_link).unwrap();

    // A link to a file named as PATH is followed, as `find -H` does.
    let r = f.env.path("r.json");
    let rep = |args: &[&str]| {
        let mut all = vec!["rotate", "--report", r.to_str().unwrap()];
        all.extend_from_slice(args);
        let out = f.run(&f.rotator, &all);
        (out.status.code(), stderr(&out), report(&r))
    };
    let (code, err, got) = rep(&["--to", &f.new, file_link.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(
        (got["scanned"].as_u64(), got["rotated"].as_u64()),
        (Some(1), Some(1))
    );
    assert_eq!(
        header(&f.plain[0].0).slots.active().unwrap().1.key_arn,
        f.new
    );

    // Links inside the tree are counted and listed, and left alone.
    let (code, err, got) = rep(&["--to", &f.new, f.root()]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(got["skipped_links"], 2);
    let links: Vec<String> = vec![
        inside.join("dangling").display().to_string(),
        inside.join("to-outside").display().to_string(),
    ];
    assert_eq!(got["links"], serde_json::json!(links));
    assert_eq!(header(&outside).slots.active().unwrap().1.key_arn, f.old);

    // --follow-symlinks rotates the file a link leads to; the dangling
    // link is still counted.
    let (code, err, got) = rep(&["--follow-symlinks", "--to", &f.new, f.root()]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(
        (got["rotated"].as_u64(), got["failed"].as_u64()),
        (Some(1), Some(0))
    );
    assert_eq!(got["skipped_links"], 1);
    assert_eq!(header(&outside).slots.active().unwrap().1.key_arn, f.new);
    assert!(std::fs::symlink_metadata(inside.join("to-outside"))
        .unwrap()
        .file_type()
        .is_symlink());

    // decrypt-file -r counts the links it leaves alone.
    let out = f.run(
        &f.reader,
        &[
            "decrypt-file",
            "-r",
            f.root(),
            "-o",
            f.env.path("plain").to_str().unwrap(),
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (v["done"].as_u64(), v["skipped_links"].as_u64()),
        (Some(3), Some(2))
    );
    assert_eq!(v["links"], serde_json::json!(links));
}

#[test]
fn outputs_are_not_overwritten_without_force_and_envelopes_not_sealed_twice() {
    let f = fixture(1);
    let (env_path, data) = &f.plain[0];
    let existing = f.env.path("existing.txt");
    std::fs::write(&existing, b"keep me").unwrap();
    let dec = |extra: &[&str]| {
        let mut args = vec!["decrypt-file", env_path.to_str().unwrap(), "-o"];
        args.push(existing.to_str().unwrap());
        args.extend_from_slice(extra);
        f.run(&f.reader, &args)
    };
    let out = dec(&[]);
    assert_eq!(out.status.code(), Some(252), "{}", stderr(&out));
    assert_eq!(
        stderr(&out),
        format!(
            "rewrap: {} exists: add --force to replace it\n",
            existing.display()
        )
    );
    assert_eq!(std::fs::read(&existing).unwrap(), b"keep me");
    let out = dec(&["--force"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(std::fs::read(&existing).unwrap() == *data);

    // encrypt-file -o refuses the same way.
    let out = f.run(
        &f.rotator,
        &[
            "encrypt-file",
            "--key-id",
            &f.new,
            existing.to_str().unwrap(),
            "-o",
            env_path.to_str().unwrap(),
        ],
    );
    assert_eq!(out.status.code(), Some(252), "{}", stderr(&out));
    assert!(stderr(&out).contains("exists: add --force"));

    // encrypt-file --in-place on an envelope leaves it as it is.
    let before = std::fs::read(env_path).unwrap();
    let out = f.run(
        &f.rotator,
        &[
            "encrypt-file",
            "--key-id",
            &f.new,
            "--in-place",
            env_path.to_str().unwrap(),
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        stderr(&out),
        format!(
            "rewrap: {}: already an envelope; left as it is\n",
            env_path.display()
        )
    );
    assert!(std::fs::read(env_path).unwrap() == before);
}

#[test]
fn sigkill_during_tree_encryption_leaves_every_file_whole_and_a_rerun_finishes() {
    const FILES: usize = 1500;
    const KILLS: usize = 8;
    let f = fixture(0);
    let root = f.env.path("plain");
    let mut plain = Vec::with_capacity(FILES);
    for i in 0..FILES {
        let dir = root.join(format!("{}", i % 5));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("{i}.txt"));
        let data = bytes(i * 11 % 2000, i as u64 + 7);
        std::fs::write(&path, &data).unwrap();
        plain.push((path, data));
    }
    let reader = f.env.session("app-reader");
    // Each file is its plaintext or an envelope of it; nothing else.
    let check = |moment: &str| -> usize {
        let mut sealed = 0;
        for (path, data) in &plain {
            let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{moment}: {path:?}: {e}"));
            if bytes.starts_with(&rewrap::envelope::MAGIC) {
                let mut got = Vec::new();
                rewrap::files::decrypt_stream(
                    &reader,
                    &rewrap::files::DecryptOptions::default(),
                    &mut &bytes[..],
                    &mut got,
                )
                .unwrap_or_else(|e| panic!("{moment}: {path:?}: {e}"));
                assert!(got == *data, "{moment}: {path:?} differs");
                sealed += 1;
            } else {
                assert!(
                    bytes == *data,
                    "{moment}: {path:?} is neither plaintext nor envelope"
                );
            }
        }
        sealed
    };
    let args = [
        "encrypt-file",
        "--key-id",
        &f.old,
        "--context",
        "purpose=app-data",
        "--jobs",
        "2",
        "-r",
        "--in-place",
        root.to_str().unwrap(),
    ];
    let mut seed = 0x9E37_79B9_7F4A_7C15u64;
    let mut mid_run = 0;
    let mut partial = 0;
    for round in 0..KILLS {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let mut child = f
            .cmd(&f.writer, &args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(20 + seed % 400));
        mid_run += usize::from(child.try_wait().unwrap().is_none());
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let sealed = check(&format!("after kill {round}"));
        eprintln!("kill {round}: {sealed} of {FILES} sealed");
        partial += usize::from(sealed > 0 && sealed < FILES);
        if sealed == FILES {
            break;
        }
    }
    assert!(mid_run >= 1, "no kill hit a running encryption");
    assert!(partial >= 1, "no kill left a tree half sealed");
    let out = f.run(&f.writer, &args);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(check("after the final run"), FILES);
}

#[test]
fn a_tree_decryption_without_rights_stops_early_with_exit_2() {
    let f = fixture(300);
    let before = f.snapshot();
    let out = f.run(
        &f.rotator,
        &[
            "decrypt-file",
            "--jobs",
            "2",
            "-r",
            f.root(),
            "-o",
            f.env.path("opened").to_str().unwrap(),
        ],
    );
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["stopped_early"], true);
    assert_eq!(v["done"], 0);
    let failed = v["failed"].as_array().unwrap();
    // At most the file in flight on each worker.
    assert!((1..=2).contains(&failed.len()), "{v}");
    assert!(failed.iter().all(|x| x["kind"] == "AccessDenied"), "{v}");
    assert!(
        err.contains("rewrap: stopped early: the KMS refused the caller"),
        "{err}"
    );
    assert_eq!(
        f.audited("storage-rotator", "Decrypt", "AccessDeniedException"),
        failed.len()
    );
    assert!(f.snapshot() == before);
}

/// `--max-failures` bounds a tree decryption as it bounds a rotation: with
/// 40 corrupt envelopes and a limit of 5, the run stops (exit 2) after at
/// most the limit plus one file in flight per worker, and says why.
#[test]
fn max_failures_stops_a_tree_decryption_with_exit_2_and_says_why() {
    let f = fixture(40);
    for (path, _) in &f.plain {
        let mut bytes = std::fs::read(path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        std::fs::write(path, bytes).unwrap();
    }
    let opened = f.env.path("opened");
    let out = f.run(
        &f.reader,
        &[
            "decrypt-file",
            "--jobs",
            "2",
            "--max-failures",
            "5",
            "-r",
            f.root(),
            "-o",
            opened.to_str().unwrap(),
        ],
    );
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["stopped_early"], true, "{v}");
    assert_eq!(v["done"], 0, "{v}");
    let failed = v["failed"].as_array().unwrap();
    assert!((5..=6).contains(&failed.len()), "{v}");
    assert!(
        failed
            .iter()
            .all(|x| x["kind"] == "CorruptEnvelope"
                && x["error"] == "truncated: final chunk missing"),
        "{v}"
    );
    let reason = v["stop_reason"].as_str().unwrap();
    assert!(
        reason.ends_with(" files failed: the limit is 5 (--max-failures)"),
        "{v}"
    );
    assert!(err.contains("rewrap: stopped early: "), "{err}");
}

/// Every key use of `encrypt-file -r` (GenerateDataKey) and `decrypt-file
/// -r` (Decrypt) names its envelope in the audit record (`object`), as a
/// rotation's ReEncrypt does: the path as walked (the tree root as given,
/// joined with the path inside it), the envelope written when encrypting
/// into another folder, the one read when decrypting; a control character
/// in a file name is written as an escape. Before, their records named no
/// file at all.
#[test]
fn tree_encryption_and_decryption_name_each_envelope_in_their_audit_records() {
    let f = fixture(0);
    let plain = f.env.path("plain");
    let names = ["a.txt", "sub/b ä.txt", "sub/deeper/c\nd.txt"];
    for (i, name) in names.iter().enumerate() {
        let path = plain.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, bytes(100 + i, i as u64)).unwrap();
    }
    // `encrypt-file -r` as the writer, then `tail` (where to and what).
    let encrypt = |tail: &[&str]| {
        let mut args = vec![
            "encrypt-file",
            "--key-id",
            &f.old,
            "--context",
            "purpose=app-data",
            "-r",
        ];
        args.extend(tail);
        let out = f.run(&f.writer, &args);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    };
    let sealed = f.env.path("sealed");
    encrypt(&[plain.to_str().unwrap(), "-o", sealed.to_str().unwrap()]);
    let opened = f.env.path("opened");
    let out = f.run(
        &f.reader,
        &[
            "decrypt-file",
            "-r",
            sealed.to_str().unwrap(),
            "-o",
            opened.to_str().unwrap(),
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    for (i, name) in names.iter().enumerate() {
        assert!(std::fs::read(opened.join(name)).unwrap() == bytes(100 + i, i as u64));
    }

    let records = rewrap::audit::read_records(&f.env.service.audit_path()).unwrap();
    let uses: Vec<_> = records
        .iter()
        .filter(|r| r.operation == "GenerateDataKey" || r.operation == "Decrypt")
        .collect();
    assert_eq!(uses.len(), 2 * names.len(), "{uses:#?}");
    let mut expected = Vec::new();
    for (operation, principal) in [("GenerateDataKey", "app-writer"), ("Decrypt", "app-reader")] {
        for name in names {
            let envelope = sealed.join(name);
            let object = envelope.to_str().unwrap().replace('\n', "\\u{a}");
            let got = uses
                .iter()
                .find(|r| r.operation == operation && r.object.as_deref() == Some(&object))
                .unwrap_or_else(|| panic!("no {operation} record names {object:?}: {uses:#?}"));
            expected.push(rewrap::audit::AuditRecord {
                principal: principal.into(),
                operation: operation.into(),
                keys: vec![rewrap::audit::AuditKey {
                    arn: f.old.clone(),
                    version: Some(1),
                }],
                encryption_context: Some(header(&envelope).header.kms_context()),
                destination_encryption_context: None,
                decision: "Allow".into(),
                outcome: "Success".into(),
                // In process: no network address, no access key recorded.
                source_ip: None,
                access_key_id: None,
                object: Some(object),
                // Not what this test is about: as recorded.
                seq: got.seq,
                time: got.time.clone(),
                request_id: got.request_id.clone(),
                decided_by: got.decided_by.clone(),
                user_agent: got.user_agent.clone(),
                request_parameters: got.request_parameters.clone(),
                prev_hash: got.prev_hash.clone(),
                hash: got.hash.clone(),
            });
        }
    }
    expected.sort_by_key(|r| r.seq);
    let got: Vec<_> = uses.into_iter().cloned().collect();
    assert_eq!(got, expected);

    // In place, the envelope is the file itself, named as the root is given.
    encrypt(&["--in-place", "plain"]);
    let mut objects: Vec<_> = rewrap::audit::read_records(&f.env.service.audit_path())
        .unwrap()
        .into_iter()
        .skip(records.len())
        .filter(|r| r.operation == "GenerateDataKey")
        .map(|r| (r.operation, r.object))
        .collect();
    objects.sort();
    let gdk = |o: &str| ("GenerateDataKey".to_string(), Some(o.to_string()));
    assert_eq!(
        objects,
        [
            gdk("plain/a.txt"),
            gdk("plain/sub/b ä.txt"),
            gdk("plain/sub/deeper/c\\u{a}d.txt"),
        ]
    );
}

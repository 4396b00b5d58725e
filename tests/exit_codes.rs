//! The README's exit-code table, walked command by command through the real
//! binary (issue 10 observation 5: `decrypt-file` access denied gave 1, a
//! missing `-o` 2, a bad `--since` 253, the `disable-key` refusal 253).
//!
//! Each row is a command line that provokes one case, the exact exit code
//! and, for errors, the exact error name or message on stderr. The batch
//! commands' interrupted code (3) is tested with the signal handling.

mod support;

use std::process::Output;
use support::cli::{stderr, stdout, Creds, Env};

/// What one row expects.
struct Row<'a> {
    /// The command line (after `rewrap`).
    args: Vec<String>,
    /// The exit code.
    code: i32,
    /// A substring of stderr (errors) or stdout (success); empty: not checked.
    says: &'a str,
}

fn row<'a>(args: &[&str], code: i32, says: &'a str) -> Row<'a> {
    Row {
        args: args.iter().map(|s| (*s).to_string()).collect(),
        code,
        says,
    }
}

/// Runs every row as `who`; collects every mismatch, so one run shows them all.
fn walk(env: &Env, who: &Creds, rows: &[Row<'_>]) {
    let mut wrong = Vec::new();
    for r in rows {
        let out = env.command(who).args(&r.args).output().unwrap();
        check(&r.args.join(" "), &out, r.code, r.says, &mut wrong);
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n\n"));
}

fn check(line: &str, out: &Output, code: i32, says: &str, wrong: &mut Vec<String>) {
    let text = if code == 0 { stdout(out) } else { stderr(out) };
    if out.status.code() != Some(code) || !text.contains(says) {
        wrong.push(format!(
            "rewrap {line}: want exit {code} and {says:?}, got {:?}\nstdout: {}\nstderr: {}",
            out.status.code(),
            stdout(out),
            stderr(out)
        ));
    }
}

/// A keystore with a key, its alias, the role principals and a tree of two
/// envelopes under the key (context purpose=app-data).
struct Fixture {
    env: Env,
    key: String,
    rotator: Creds,
}

fn fixture() -> Fixture {
    let env = Env::new();
    let key = env.key("exit codes");
    env.ok(
        &env.owner,
        &[
            "create-alias",
            "--alias-name",
            "alias/app-data",
            "--target-key-id",
            &key,
        ],
    );
    let rotator = env.principal("storage-rotator");
    std::fs::create_dir_all(env.path("data")).unwrap();
    std::fs::write(env.path("data/a.txt"), b"alpha").unwrap();
    std::fs::write(env.path("data/b.txt"), b"beta").unwrap();
    env.ok(
        &env.owner,
        &[
            "encrypt-file",
            "--key-id",
            "alias/app-data",
            "--encryption-context",
            "purpose=app-data",
            "-r",
            "--in-place",
            "data",
        ],
    );
    // A file that starts as an envelope and stops after 30 bytes.
    let sealed = std::fs::read(env.path("data/a.txt")).unwrap();
    std::fs::write(env.path("truncated.rwp"), &sealed[..30]).unwrap();
    std::fs::write(env.path("plain.txt"), b"not an envelope").unwrap();
    Fixture { env, key, rotator }
}

#[test]
fn help_and_version_exit_0_and_usage_errors_exit_252() {
    let f = fixture();
    let o = &f.env.owner;
    walk(
        &f.env,
        o,
        &[
            row(&["--help"], 0, "Global options:"),
            row(&["--version"], 0, "rewrap "),
            row(&["describe-key", "--help"], 0, "--key-id"),
            // clap usage errors: 2 before issue 10.
            row(&[], 252, "Usage: rewrap"),
            row(&["frobnicate"], 252, "unrecognized subcommand 'frobnicate'"),
            row(
                &["describe-key"],
                252,
                "the following required arguments were not provided",
            ),
            row(
                &["list-keys", "--output", "yaml"],
                252,
                "invalid value 'yaml' for '--output <FORMAT>'",
            ),
            row(
                &["encrypt-file", "plain.txt", "-o", "x"],
                252,
                "the following required arguments were not provided",
            ),
            row(&["init", "--bogus"], 252, "unexpected argument '--bogus'"),
            // The value of a global option is not taken for the command.
            row(
                &["--query", "rotate", "describe-key"],
                252,
                "the following required arguments were not provided",
            ),
            row(&["whoami", "extra"], 252, "unexpected argument 'extra'"),
            row(
                &["serve", "--listen", "not an address"],
                252,
                "--listen \"not an address\": not an address",
            ),
            // A bad --since: 253 before issue 10.
            row(
                &["audit", "report", "--since", "yesterday"],
                252,
                "--since \"yesterday\": use RFC 3339 or YYYY-MM-DD",
            ),
        ],
    );
}

#[test]
fn kms_commands_exit_0_252_253_254_255() {
    let f = fixture();
    let o = &f.env.owner;
    let disabled = f.env.key("disabled");
    f.env
        .ok(o, &["disable-key", "--key-id", &disabled, "--force"]);
    let enc = f
        .env
        .ok(o, &["encrypt", "--key-id", &f.key, "--plaintext", "hello"]);
    let blob = f.env.path("blob.bin");
    {
        use base64::Engine as _;
        let b64 = enc["CiphertextBlob"].as_str().unwrap();
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap();
        std::fs::write(&blob, bytes).unwrap();
    }
    let blob_arg = format!("fileb://{}", blob.display());
    walk(
        &f.env,
        o,
        &[
            row(&["list-keys"], 0, "\"Keys\""),
            row(
                &["describe-key", "--key-id", "alias/nope"],
                254,
                "An error occurred (NotFoundException) when calling the DescribeKey operation: ",
            ),
            row(
                &["encrypt", "--key-id", &disabled, "--plaintext", "x"],
                254,
                "An error occurred (DisabledException) when calling the Encrypt operation: ",
            ),
            row(
                &["describe-key", "--key-id", "arn:aws:s3:::bucket"],
                254,
                "An error occurred (InvalidArnException) when calling the DescribeKey operation: ",
            ),
            // Anything else: a file that cannot be read.
            row(
                &["encrypt", "--key-id", &f.key, "--plaintext", "fileb:///nonexistent/x"],
                255,
                "rewrap: error: cannot read /nonexistent/x",
            ),
            // Configuration: a keystore that is not there.
            row(
                &["--keystore", "/nonexistent/ks", "list-keys"],
                253,
                "rewrap: no keystore in /nonexistent/ks: run `rewrap init` first",
            ),
            // Configuration: an unreachable endpoint.
            row(
                &["--endpoint-url", "http://127.0.0.1:1", "list-keys"],
                253,
                "An error occurred (EndpointConnectionError) when calling the ListKeys operation: cannot reach the KMS at 127.0.0.1",
            ),
            row(
                &["--endpoint-url", "ftp://127.0.0.1", "list-keys"],
                253,
                "endpoint URL \"ftp://127.0.0.1\": the scheme must be http or https",
            ),
            // init of an existing keystore.
            row(
                &["init"],
                254,
                "An error occurred (AlreadyExistsException) when calling the Init operation: ",
            ),
            row(&["whoami", "--query", "Principal", "--output", "text"], 0, "owner\n"),
            row(&["get-caller-identity", "--query", "Principal"], 0, "\"owner\""),
            // serve: a keystore that is not there; plain HTTP off loopback.
            row(
                &["--keystore", "/nonexistent/ks", "serve", "--listen", "127.0.0.1:0"],
                253,
                "rewrap: no keystore in /nonexistent/ks",
            ),
            row(
                &["serve", "--listen", "0.0.0.0:0"],
                252,
                "rewrap: refusing plain HTTP on 0.0.0.0:0, which is not a loopback address",
            ),
        ],
    );
    // The rotator: AccessDenied on decrypt and on principal administration.
    walk(
        &f.env,
        &f.rotator,
        &[
            row(
                &["decrypt", "--ciphertext-blob", &blob_arg],
                254,
                "An error occurred (AccessDeniedException) when calling the Decrypt operation: principal 'storage-rotator' is not authorized to perform kms:Decrypt",
            ),
            row(
                &["create-principal", "--principal-name", "x"],
                254,
                "An error occurred (AccessDeniedException) when calling the CreatePrincipal operation: ",
            ),
            row(&["whoami", "--query", "Principal", "--output", "text"], 0, "storage-rotator\n"),
        ],
    );
    // Credentials: a wrong secret, an unknown profile, none at all.
    let wrong = Creds {
        secret: "not-the-secret".into(),
        ..o.clone()
    };
    walk(
        &f.env,
        &wrong,
        &[
            row(&["list-keys"], 253, "UnrecognizedClientException"),
            row(&["whoami"], 253, "UnrecognizedClientException"),
            row(
                &["--profile", "nobody", "list-keys"],
                253,
                "Unable to locate credentials: reading ",
            ),
        ],
    );
    let out = f
        .env
        .command(o)
        .env_remove("REWRAP_ACCESS_KEY_ID")
        .env_remove("REWRAP_SECRET_ACCESS_KEY")
        .args(["whoami"])
        .output()
        .unwrap();
    let mut wrong = Vec::new();
    check(
        "whoami (no credentials)",
        &out,
        253,
        "Unable to locate credentials",
        &mut wrong,
    );
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn the_disable_key_refusal_is_a_kms_error_254() {
    let f = fixture();
    let o = &f.env.owner;
    // The inventory records two envelopes under the key.
    f.env.ok(o, &["inventory", "data"]);
    walk(
        &f.env,
        o,
        &[
            row(
                &["disable-key", "--key-id", &f.key],
                254,
                "still wraps the data keys of 2 envelope(s) (as this KMS last wrapped them); re-wrap them under another key first (rewrap rotate --to KEY), or disable it anyway with Force (rewrap: --force)",
            ),
            row(
                &["schedule-key-deletion", "--key-id", &f.key],
                254,
                "still wraps the data keys of 2 envelope(s) (as this KMS last wrapped them); re-wrap them under another key first (rewrap rotate --to KEY), or schedule its deletion anyway with Force (rewrap: --force)",
            ),
        ],
    );
    let state = f.env.ok(o, &["describe-key", "--key-id", &f.key]);
    assert_eq!(
        state["KeyMetadata"]["KeyState"], "Enabled",
        "nothing changed"
    );
}

#[test]
fn single_file_commands_exit_like_kms_commands() {
    let f = fixture();
    let o = &f.env.owner;
    walk(
        &f.env,
        o,
        &[
            row(
                &["decrypt-file", "data/b.txt", "-o", "b.out"],
                0,
                "\"output\": \"b.out\"",
            ),
            row(
                &["inspect-envelope", "data/b.txt", "--query", "chunk_size"],
                0,
                "65536",
            ),
            // A missing -o: 2 before issue 10.
            row(
                &["decrypt-file", "data/b.txt"],
                252,
                "rewrap: give --out PATH (or `-o -` for stdout) or --in-place",
            ),
            row(
                &["encrypt-file", "--key-id", &f.key, "data", "-o", "x"],
                252,
                "rewrap: data is a folder: add --recursive",
            ),
            row(
                &[
                    "encrypt-file",
                    "--key-id",
                    "alias/nope",
                    "plain.txt",
                    "-o",
                    "p.rwp",
                ],
                254,
                "rewrap: plain.txt: NotFoundException: ",
            ),
            // Anything else: a corrupt file, an input that is not there.
            row(
                &["decrypt-file", "truncated.rwp", "-o", "t.out"],
                255,
                "rewrap: truncated.rwp: truncated: header incomplete",
            ),
            row(
                &["inspect-envelope", "plain.txt"],
                255,
                "rewrap: plain.txt: not a rewrap envelope (bad magic)",
            ),
            row(
                &["inspect-envelope", "missing.rwp"],
                255,
                "rewrap: missing.rwp: ",
            ),
        ],
    );
    // The rotator may not decrypt: 1 before issue 10.
    walk(
        &f.env,
        &f.rotator,
        &[row(
            &["decrypt-file", "data/a.txt", "-o", "a.out"],
            254,
            "rewrap: data/a.txt: AccessDeniedException: principal 'storage-rotator' is not authorized to perform kms:Decrypt",
        )],
    );
    assert!(!f.env.path("a.out").exists(), "no output left behind");
    let out = f
        .env
        .command(o)
        .env_remove("REWRAP_ACCESS_KEY_ID")
        .args(["decrypt-file", "data/a.txt", "-o", "a.out"])
        .output()
        .unwrap();
    let mut wrong = Vec::new();
    check(
        "decrypt-file (half the credentials)",
        &out,
        253,
        "must be set together",
        &mut wrong,
    );
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn verdict_commands_exit_0_for_yes_and_1_for_no() {
    let f = fixture();
    let o = &f.env.owner;
    walk(
        &f.env,
        o,
        &[
            row(
                &[
                    "policy",
                    "check",
                    "--principal",
                    "app-reader",
                    "--action",
                    "kms:Decrypt",
                    "--key-id",
                    &f.key,
                    "--encryption-context",
                    "purpose=app-data",
                ],
                0,
                "\"Decision\": \"allow\"",
            ),
            row(
                &[
                    "policy",
                    "check",
                    "--principal",
                    "storage-rotator",
                    "--action",
                    "kms:Decrypt",
                    "--key",
                    &f.key,
                ],
                1,
                "",
            ),
            row(
                &["policy", "check", "--principal", "x", "--action", "kms:Decrypt", "--key-id", "alias/nope"],
                254,
                "An error occurred (NotFoundException) when calling the CheckPolicy operation: ",
            ),
            row(
                &["policy", "check", "--principal", "x", "--action", "kms:Frobnicate"],
                254,
                "An error occurred (ValidationException) when calling the CheckPolicy operation: unknown action \"kms:Frobnicate\"",
            ),
            row(&["audit", "verify"], 0, "ok: "),
            row(
                &["--keystore", "/nonexistent/ks", "audit", "verify"],
                253,
                "rewrap: no keystore in /nonexistent/ks",
            ),
        ],
    );
    // A changed record: tampered, 1.
    let log = f.env.home.join("audit.log");
    let text = std::fs::read_to_string(&log).unwrap();
    std::fs::write(&log, text.replacen("\"owner\"", "\"someone\"", 1)).unwrap();
    walk(
        &f.env,
        o,
        &[row(&["audit", "verify"], 1, "FAILED verification")],
    );
}

#[test]
fn batch_commands_exit_0_1_2() {
    let f = fixture();
    let o = &f.env.owner;
    let k2 = f.env.key("second");
    // Decrypt-file -r into a folder where one output is in the way (a folder).
    std::fs::create_dir_all(f.env.path("blocked/b.txt")).unwrap();
    walk(
        &f.env,
        o,
        &[
            // 0: every item done.
            row(&["inventory", "data", "--query", "envelopes"], 0, "2"),
            row(&["decrypt-file", "-r", "data", "-o", "plain"], 0, ""),
            row(
                &[
                    "encrypt-file",
                    "--key-id",
                    &f.key,
                    "-r",
                    "plain",
                    "-o",
                    "sealed",
                ],
                0,
                "",
            ),
            // 1: some items failed.
            row(
                &["decrypt-file", "-r", "data", "-o", "blocked"],
                1,
                "rewrap: ",
            ),
            // 2: bad arguments, clap's included.
            row(
                &["rotate"],
                2,
                "the following required arguments were not provided",
            ),
            row(
                &["rotate", "--to", &f.key, "--bogus", "data"],
                2,
                "unexpected argument '--bogus'",
            ),
            row(&["--output", "json", "inventory"], 2, "required arguments"),
            row(
                &["inventory", "--jobs", "many", "data"],
                2,
                "invalid value 'many'",
            ),
            row(
                &["encrypt-file", "--key-id", &f.key, "-r"],
                2,
                "required arguments",
            ),
            row(
                &["decrypt-file", "--recursive", "data", "--bogus"],
                2,
                "unexpected argument",
            ),
            row(
                &["decrypt-file", "-r", "data"],
                2,
                "rewrap: give --out FOLDER or --in-place",
            ),
            row(
                &[
                    "encrypt-file",
                    "--key-id",
                    &f.key,
                    "-r",
                    "plain.txt",
                    "-o",
                    "x",
                ],
                2,
                "rewrap: plain.txt is not a folder",
            ),
            // 2: credentials (the rotation never starts).
            row(
                &[
                    "--keystore",
                    "/nonexistent/ks",
                    "rotate",
                    "--to",
                    &k2,
                    "data",
                ],
                2,
                "no keystore in /nonexistent/ks",
            ),
            row(
                &[
                    "--profile",
                    "nobody",
                    "decrypt-file",
                    "-r",
                    "data",
                    "-o",
                    "p2",
                ],
                2,
                "Unable to locate credentials",
            ),
        ],
    );
    // The single-file form of the same mistake is 252, not 2.
    walk(
        &f.env,
        o,
        &[row(
            &["encrypt-file", "--key-id", &f.key, "--bogus"],
            252,
            "unexpected argument",
        )],
    );
    // Rotation: 1 when an envelope is corrupt, 0 once it is gone.
    std::fs::copy(f.env.path("truncated.rwp"), f.env.path("data/short")).unwrap();
    walk(
        &f.env,
        &f.rotator,
        &[
            row(
                &["rotate", "--to", &k2, "data"],
                1,
                "data/short: truncated: header incomplete",
            ),
            row(&["inventory", "data"], 1, "data/short"),
        ],
    );
    std::fs::remove_file(f.env.path("data/short")).unwrap();
    walk(
        &f.env,
        &f.rotator,
        &[
            row(
                &["rotate", "--to", &k2, "data", "--query", "rotated"],
                0,
                "0",
            ),
            row(&["inventory", "data", "--query", "envelopes"], 0, "2"),
        ],
    );
}

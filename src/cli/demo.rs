//! `rewrap demo`: the main job end to end on an embedded default.
//!
//! Runs the real `rewrap` binary, command by command, as the principals of
//! the shipped policies, in a temporary folder: what a newcomer would type,
//! printed before its output.
//!
//! The owner, the writer and the auditor work in local mode (they read the
//! keystore folder, `root.key` included); the storage rotator and the
//! application reader reach the keys only through `rewrap serve`, started by
//! the demo on an ephemeral loopback port and stopped at its end: the
//! separation of roles holds only across that boundary.

use anyhow::{bail, Context as _};
use clap::Args;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// How long `rewrap serve` may take to start, and to stop on SIGTERM.
const SERVE_WAIT: Duration = Duration::from_secs(30);

/// The shipped role policies, embedded so the demo runs from any folder.
const POLICIES: &[(&str, &str)] = &[
    (
        "key-admin.toml",
        include_str!("../../policies/key-admin.toml"),
    ),
    (
        "app-writer.toml",
        include_str!("../../policies/app-writer.toml"),
    ),
    (
        "app-reader.toml",
        include_str!("../../policies/app-reader.toml"),
    ),
    (
        "storage-rotator.toml",
        include_str!("../../policies/storage-rotator.toml"),
    ),
    ("auditor.toml", include_str!("../../policies/auditor.toml")),
];

/// `rewrap demo` options.
#[derive(Debug, Args)]
pub(crate) struct DemoArgs {
    /// Number of sample files in the tree.
    #[arg(long, default_value_t = 300)]
    pub(crate) files: usize,
    /// Keep the temporary folder and print where it is.
    #[arg(long)]
    pub(crate) keep: bool,
    /// The global options, refused here (demo makes its own keystore).
    #[command(flatten)]
    pub(crate) not_used: super::NotForDemo,
}

struct Principal {
    name: String,
    id: String,
    secret: String,
}

struct Demo {
    exe: PathBuf,
    root: PathBuf,
    home: PathBuf,
    policies: PathBuf,
    /// The URL of the demo's `rewrap serve`, once started.
    endpoint: Option<String>,
}

/// `rewrap serve` on a loopback port; stopped (SIGTERM, then SIGKILL after a
/// bounded wait) when dropped, whatever way the demo ends.
struct Server {
    child: Child,
    url: String,
}

impl Server {
    fn start(demo: &Demo) -> anyhow::Result<Server> {
        let mut child = Command::new(&demo.exe)
            .args(["serve", "--listen", "127.0.0.1:0"])
            .env("REWRAP_HOME", &demo.home)
            .env("REWRAP_POLICIES", &demo.policies)
            .env_remove("REWRAP_ENDPOINT_URL")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting rewrap serve")?;
        let stdout = child.stdout.take().context("serve's stdout")?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = std::io::BufReader::new(stdout).lines();
            let _ = tx.send(lines.next());
            // Keep draining, so the server never blocks on a full pipe.
            for _ in lines {}
        });
        let mut server = Server {
            child,
            url: String::new(),
        };
        let Ok(Some(Ok(line))) = rx.recv_timeout(SERVE_WAIT) else {
            bail!("rewrap serve did not start within {SERVE_WAIT:?}")
        };
        println!("{line}");
        server.url = line
            .strip_prefix("rewrap serve listening on ")
            .with_context(|| format!("unexpected start line {line:?}"))?
            .to_string();
        Ok(server)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let started = Instant::now();
        while started.elapsed() < SERVE_WAIT {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Demo {
    /// Runs `rewrap ARGS` as `who`: in local mode for the owner, the writer
    /// and the auditor; through the server, with no keystore in reach, for
    /// the rotator and the reader.
    fn run(&self, who: &Principal, args: &[&str]) -> anyhow::Result<Output> {
        let remote = matches!(who.name.as_str(), "storage-rotator" | "app-reader");
        let mut cmd = Command::new(&self.exe);
        if let (Some(url), true) = (&self.endpoint, remote) {
            println!(
                "\n[{}]$ rewrap --endpoint-url {url} {}",
                who.name,
                args.join(" ")
            );
            cmd.args(["--endpoint-url", url])
                .env("REWRAP_HOME", self.root.join("no-keystore-here"))
                .env_remove("REWRAP_POLICIES");
        } else {
            println!("\n[{}]$ rewrap {}", who.name, args.join(" "));
            cmd.env("REWRAP_HOME", &self.home)
                .env("REWRAP_POLICIES", &self.policies)
                .env_remove("REWRAP_ENDPOINT_URL");
        }
        let out = cmd
            .args(args)
            .current_dir(&self.root)
            .env("REWRAP_ACCESS_KEY_ID", &who.id)
            .env("REWRAP_SECRET_ACCESS_KEY", &who.secret)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .output()
            .with_context(|| format!("running {}", self.exe.display()))?;
        print!("{}", String::from_utf8_lossy(&out.stdout));
        Ok(out)
    }

    fn ok(&self, who: &Principal, args: &[&str]) -> anyhow::Result<serde_json::Value> {
        let out = self.run(who, args)?;
        if !out.status.success() {
            bail!("`rewrap {}` failed ({})", args.join(" "), out.status);
        }
        if out.stdout.is_empty() {
            return Ok(serde_json::Value::Null);
        }
        serde_json::from_slice(&out.stdout).or(Ok(serde_json::Value::Null))
    }

    fn refused(&self, who: &Principal, args: &[&str]) -> anyhow::Result<()> {
        let out = self.run(who, args)?;
        if out.status.success() {
            bail!("`rewrap {}` should have been refused", args.join(" "));
        }
        println!(
            "(refused, as the policy says: exit code {})",
            out.status.code().unwrap_or(-1)
        );
        Ok(())
    }

    fn text(&self, who: &Principal, args: &[&str]) -> anyhow::Result<String> {
        let out = self.run(who, args)?;
        if !out.status.success() {
            bail!("`rewrap {}` failed ({})", args.join(" "), out.status);
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    /// Creates a principal as the owner; its secret is kept out of the log.
    fn principal(&self, owner: &Principal, name: &str) -> anyhow::Result<Principal> {
        println!("\n[owner]$ rewrap create-principal --principal-name {name}   (its access key stays out of this log)");
        let out = Command::new(&self.exe)
            .args(["create-principal", "--principal-name", name])
            .env_remove("REWRAP_ENDPOINT_URL")
            .env("REWRAP_HOME", &self.home)
            .env("REWRAP_POLICIES", &self.policies)
            .env("REWRAP_ACCESS_KEY_ID", &owner.id)
            .env("REWRAP_SECRET_ACCESS_KEY", &owner.secret)
            .output()?;
        if !out.status.success() {
            bail!(
                "create-principal {name} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
        Ok(Principal {
            name: name.into(),
            id: v["AccessKeyId"].as_str().unwrap_or_default().into(),
            secret: v["SecretAccessKey"].as_str().unwrap_or_default().into(),
        })
    }
}

fn section(title: &str) {
    println!("\n=== {title} ===");
}

fn write_samples(dir: &Path, count: usize) -> anyhow::Result<()> {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    for i in 0..count {
        let sub = dir.join(format!("team-{}", i % 5));
        std::fs::create_dir_all(&sub)?;
        let size = match i % 10 {
            0 => 256 * 1024 + rng.gen_range(0..4096),
            _ => rng.gen_range(1..8192),
        };
        let line = format!("record {i}: patient notes, confidential\n");
        let body: Vec<u8> = line.bytes().cycle().take(size).collect();
        std::fs::write(sub.join(format!("doc-{i:04}.txt")), body)?;
    }
    Ok(())
}

/// Runs the demo.
pub(crate) fn run(args: DemoArgs) -> anyhow::Result<i32> {
    let tmp = tempfile::Builder::new().prefix("rewrap-demo-").tempdir()?;
    let root = tmp.path().to_path_buf();
    let mut demo = Demo {
        exe: std::env::current_exe()?,
        home: root.join("keystore"),
        policies: root.join("policies"),
        root: root.clone(),
        endpoint: None,
    };
    std::fs::create_dir_all(&demo.policies)?;
    for (name, text) in POLICIES {
        std::fs::write(demo.policies.join(name), text)?;
    }
    println!(
        "rewrap demo in {} (policies: the shipped examples)",
        root.display()
    );

    section("1. A keystore, its owner, keys and the principals of the shipped policies");
    let out = Command::new(&demo.exe)
        .arg("init")
        .env("REWRAP_HOME", &demo.home)
        .output()?;
    if !out.status.success() {
        bail!("init failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let owner = Principal {
        name: "owner".into(),
        id: v["AccessKeyId"].as_str().unwrap_or_default().into(),
        secret: v["SecretAccessKey"].as_str().unwrap_or_default().into(),
    };
    println!(
        "$ rewrap init   (owner access key {}; secret shown once, kept out of this log)",
        owner.id
    );
    let key1 = demo.text(
        &owner,
        &[
            "create-key",
            "--description",
            "app data 2026",
            "--query",
            "KeyMetadata.KeyId",
            "--output",
            "text",
        ],
    )?;
    demo.ok(
        &owner,
        &[
            "create-alias",
            "--alias-name",
            "alias/app-data",
            "--target-key-id",
            &key1,
        ],
    )?;
    let writer = demo.principal(&owner, "app-writer")?;
    let reader = demo.principal(&owner, "app-reader")?;
    let rotator = demo.principal(&owner, "storage-rotator")?;
    let auditor = demo.principal(&owner, "auditor")?;

    section("2. The KMS server: the boundary between the roles");
    println!(
        "In local mode a command reads the keystore folder and its root.key: whoever can read\n\
         them holds every key, whatever the policies say. The storage rotator and the reader\n\
         therefore get no access to that folder: they hold only their access keys and reach\n\
         the keys through `rewrap serve`, where the policies are enforced."
    );
    println!("\n$ rewrap serve --listen 127.0.0.1:0");
    let server = Server::start(&demo)?;
    demo.endpoint = Some(server.url.clone());

    section("3. KMS operations and role separation");
    std::fs::write(root.join("topsecret.txt"), b"this is a secret message\n")?;
    let ct = demo.ok(
        &writer,
        &[
            "encrypt",
            "--key-id",
            "alias/app-data",
            "--plaintext",
            "file://topsecret.txt",
            "--encryption-context",
            "purpose=app-data",
        ],
    )?;
    let blob = ct["CiphertextBlob"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    use base64::Engine;
    let bytes = base64::engine::general_purpose::STANDARD.decode(&blob)?;
    std::fs::write(root.join("topsecret.encrypted"), bytes)?;
    demo.ok(
        &reader,
        &[
            "decrypt",
            "--ciphertext-blob",
            "fileb://topsecret.encrypted",
            "--encryption-context",
            "purpose=app-data",
            "--output",
            "text",
            "--query",
            "Plaintext",
        ],
    )?;
    demo.refused(
        &rotator,
        &[
            "decrypt",
            "--ciphertext-blob",
            "fileb://topsecret.encrypted",
            "--encryption-context",
            "purpose=app-data",
        ],
    )?;
    demo.refused(
        &reader,
        &[
            "decrypt",
            "--ciphertext-blob",
            "fileb://topsecret.encrypted",
        ],
    )?;
    let key2 = demo.text(
        &owner,
        &[
            "create-key",
            "--description",
            "app data 2027",
            "--query",
            "KeyMetadata.KeyId",
            "--output",
            "text",
        ],
    )?;
    demo.ok(
        &rotator,
        &[
            "re-encrypt",
            "--ciphertext-blob",
            "fileb://topsecret.encrypted",
            "--source-encryption-context",
            "purpose=app-data",
            "--destination-key-id",
            &key2,
            "--destination-encryption-context",
            "purpose=app-data",
            "--query",
            "{KeyId: KeyId, SourceKeyId: SourceKeyId}",
        ],
    )?;

    // Context laundering: re-encrypting with another context is refused.
    demo.refused(
        &rotator,
        &[
            "re-encrypt",
            "--ciphertext-blob",
            "fileb://topsecret.encrypted",
            "--source-encryption-context",
            "purpose=app-data",
            "--destination-key-id",
            &key2,
            "--destination-encryption-context",
            "purpose=other",
        ],
    )?;

    section("4. A tree of sample files, encrypted by the application writer");
    let data = root.join("data");
    write_samples(&data, args.files)?;
    println!("wrote {} sample files under data/", args.files);
    demo.ok(
        &writer,
        &[
            "encrypt-file",
            "--key-id",
            "alias/app-data",
            "--context",
            "purpose=app-data",
            "--recursive",
            "--in-place",
            "data",
        ],
    )?;
    let out = demo.run(
        &auditor,
        &[
            "inventory",
            "--stale-against",
            &key2,
            "--output",
            "text",
            "data",
        ],
    )?;
    if !out.status.success() {
        bail!("inventory failed");
    }

    section("5. The storage rotator re-wraps every data key under the new key");
    let out = demo.run(
        &rotator,
        &[
            "rotate",
            "--to",
            &key2,
            "--report",
            "rotation-report.json",
            "data",
        ],
    )?;
    if !out.status.success() {
        bail!("rotation failed");
    }
    let report = std::fs::read_to_string(root.join("rotation-report.json"))?;
    println!("rotation-report.json:\n{report}");
    let sample = data.join("team-0/doc-0000.txt");
    let sample_rel = "data/team-0/doc-0000.txt";
    demo.refused(&rotator, &["decrypt-file", sample_rel, "-o", "-"])?;
    let out = demo.run(
        &reader,
        &["decrypt-file", sample_rel, "-o", "reader-copy.txt"],
    )?;
    if !out.status.success() {
        bail!("the reader could not decrypt {}", sample.display());
    }
    let head: String = std::fs::read_to_string(root.join("reader-copy.txt"))?
        .lines()
        .next()
        .unwrap_or_default()
        .into();
    println!("reader decrypted {sample_rel}: first line {head:?}");
    demo.run(
        &auditor,
        &[
            "inventory",
            "--stale-against",
            &key2,
            "--output",
            "text",
            "data",
        ],
    )?;

    section("6. The audit trail");
    demo.run(&auditor, &["audit", "verify"])?;
    demo.run(&auditor, &["audit", "report", "--output", "text"])?;

    drop(server);
    println!("\n(rewrap serve stopped)");

    if args.keep {
        let kept = tmp.keep();
        println!("\nkept {}", kept.display());
    }
    println!("\ndemo finished: every step behaved as the policies say.");
    Ok(0)
}

//! Shared harness for tests that drive the real `rewrap` binary.

pub(crate) use super::repo;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

/// Credentials of one principal.
#[derive(Clone, Debug)]
pub(crate) struct Creds {
    pub name: String,
    pub id: String,
    pub secret: String,
}

/// A keystore in a temporary folder, with the shipped policies.
pub(crate) struct Env {
    pub dir: tempfile::TempDir,
    pub home: PathBuf,
    pub owner: Creds,
}

pub(crate) fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_rewrap")
}

pub(crate) fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub(crate) fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

pub(crate) fn json(out: &Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "command failed: {}\n{}",
        stderr(out),
        stdout(out)
    );
    if out.stdout.is_empty() {
        return serde_json::Value::Null;
    }
    serde_json::from_slice(&out.stdout).expect("JSON output")
}

/// Asserts the command failed with the AWS CLI's message for `code`.
pub(crate) fn assert_aws_error(out: &Output, code: &str, operation: &str) {
    let err = stderr(out);
    assert_eq!(out.status.code(), Some(254), "stderr: {err}");
    let want = format!("An error occurred ({code}) when calling the {operation} operation: ");
    assert!(err.contains(&want), "want {want:?} in stderr: {err}");
}

impl Env {
    pub(crate) fn new() -> Env {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().join("keystore");
        let out = Command::new(bin())
            .args(["--keystore"])
            .arg(&home)
            .arg("init")
            .env_remove("REWRAP_HOME")
            .output()
            .unwrap();
        let v = json(&out);
        let owner = Creds {
            name: "owner".into(),
            id: v["AccessKeyId"].as_str().unwrap().into(),
            secret: v["SecretAccessKey"].as_str().unwrap().into(),
        };
        Env { dir, home, owner }
    }

    /// A command acting as `who`, with the shipped policies.
    pub(crate) fn command(&self, who: &Creds) -> Command {
        let mut c = Command::new(bin());
        c.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", self.dir.path())
            .env("REWRAP_HOME", &self.home)
            .env("REWRAP_POLICIES", repo().join("policies"))
            .env("REWRAP_ACCESS_KEY_ID", &who.id)
            .env("REWRAP_SECRET_ACCESS_KEY", &who.secret)
            .current_dir(self.dir.path());
        c
    }

    pub(crate) fn run(&self, who: &Creds, args: &[&str]) -> Output {
        self.command(who).args(args).output().unwrap()
    }

    pub(crate) fn ok(&self, who: &Creds, args: &[&str]) -> serde_json::Value {
        json(&self.run(who, args))
    }

    /// Creates a principal (as the owner) and returns its credentials.
    pub(crate) fn principal(&self, name: &str) -> Creds {
        let v = self.ok(&self.owner, &["create-principal", "--principal-name", name]);
        Creds {
            name: name.into(),
            id: v["AccessKeyId"].as_str().unwrap().into(),
            secret: v["SecretAccessKey"].as_str().unwrap().into(),
        }
    }

    /// Creates a key as the owner; returns its id.
    pub(crate) fn key(&self, description: &str) -> String {
        let v = self.ok(&self.owner, &["create-key", "--description", description]);
        v["KeyMetadata"]["KeyId"].as_str().unwrap().into()
    }

    pub(crate) fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub(crate) fn audit_log(&self) -> String {
        std::fs::read_to_string(self.home.join("audit.log")).unwrap_or_default()
    }
}

/// `rewrap serve` on a loopback port, killed when dropped.
pub(crate) struct Server {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    /// Starts `rewrap serve` on the keystore `home` with the shipped
    /// policies (and `extra` options), once it listens.
    pub(crate) fn start(home: &Path, extra: &[&str]) -> Server {
        let mut cmd = Command::new(bin());
        cmd.env_remove("REWRAP_HOME")
            .arg("--keystore")
            .arg(home)
            .arg("--policies")
            .arg(repo().join("policies"));
        Server::from_command(cmd, extra)
    }

    /// Starts `rewrap serve` (and `extra` options) from `cmd`, which names
    /// the keystore and its environment, once it listens.
    pub(crate) fn from_command(mut cmd: Command, extra: &[&str]) -> Server {
        let mut child = cmd
            .args(["serve", "--listen", "127.0.0.1:0"])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let out = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = std::io::BufReader::new(out).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx
            .recv_timeout(std::time::Duration::from_secs(30))
            .expect("rewrap serve printed no start line within 30 s");
        let url = line
            .trim()
            .strip_prefix("rewrap serve listening on ")
            .unwrap_or_else(|| panic!("unexpected start line {line:?}"))
            .trim_end_matches('/')
            .to_string();
        Server { child, url }
    }

    /// The address it listens on.
    pub(crate) fn addr(&self) -> std::net::SocketAddr {
        let (_, addr) = self.url.split_once("://").expect("a URL");
        addr.parse()
            .unwrap_or_else(|e| panic!("{}: no address: {e}", self.url))
    }

    /// Sends SIGTERM and waits (at most 20 s) for the exit status.
    pub(crate) fn terminate(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        let started = std::time::Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                started.elapsed() < std::time::Duration::from_secs(20),
                "serve did not stop on SIGTERM"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }
}

impl Env {
    /// Starts `rewrap serve` on this keystore with the shipped policies,
    /// once it listens.
    pub(crate) fn serve(&self) -> Server {
        Server::start(&self.home, &[])
    }

    /// The environment of a command acting as `who` through the server at
    /// `url`, holding no keystore: `(name, value)` pairs, for commands that
    /// run `rewrap` under another program (`setpriv`).
    pub(crate) fn remote_env(&self, url: &str, who: &Creds) -> Vec<(String, String)> {
        vec![
            ("PATH".into(), std::env::var("PATH").unwrap_or_default()),
            ("HOME".into(), self.dir.path().display().to_string()),
            ("REWRAP_ENDPOINT_URL".into(), url.into()),
            ("REWRAP_ACCESS_KEY_ID".into(), who.id.clone()),
            ("REWRAP_SECRET_ACCESS_KEY".into(), who.secret.clone()),
        ]
    }

    /// A command acting as `who` through the server at `url`.
    pub(crate) fn remote(&self, url: &str, who: &Creds) -> Command {
        let mut c = Command::new(bin());
        c.env_clear()
            .envs(self.remote_env(url, who))
            .current_dir(self.dir.path());
        c
    }
}

pub(crate) fn write(path: &Path, bytes: &[u8]) {
    std::fs::write(path, bytes).unwrap();
}

/// A tool of the Python test venv (`REWRAP_TEST_VENV`, set by
/// `scripts/test`; else `.venv` in the crate); a missing tool fails the
/// test with the fix.
pub(crate) fn venv_tool(tool: &str) -> PathBuf {
    let dir =
        std::env::var_os("REWRAP_TEST_VENV").map_or_else(|| repo().join(".venv"), PathBuf::from);
    let path = dir.join("bin").join(tool);
    assert!(
        path.exists(),
        "{tool} is missing from the test virtual environment {}: run scripts/test, or \
         python3 -m venv .venv && .venv/bin/pip install -r tests/requirements.txt",
        dir.display()
    );
    path
}

/// A command of the test virtual environment (`python`, `aws`) acting as
/// `who`, with AWS settings isolated from the machine's.
pub(crate) fn aws_tool(tool: &str, who: &Creds) -> Command {
    let mut c = Command::new(venv_tool(tool));
    c.env("AWS_ACCESS_KEY_ID", &who.id)
        .env("AWS_SECRET_ACCESS_KEY", &who.secret)
        .env("AWS_DEFAULT_REGION", "us-east-1")
        .env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
        .env_remove("AWS_SESSION_TOKEN")
        .env_remove("AWS_PROFILE")
        .env_remove("AWS_CA_BUNDLE");
    c
}

/// The test virtual environment's `bin` folder (awscli, boto3); panics
/// with the fix when it is missing: these tests never skip.
pub(crate) fn venv_bin() -> PathBuf {
    venv_tool("aws");
    venv_tool("python").parent().unwrap().to_path_buf()
}

impl Env {
    /// Runs a bash script (`set -euo pipefail`) in the test folder as
    /// `who`, with the venv's `aws` and `python` first on PATH, the AWS
    /// settings isolated from the machine's, `$E` = `--endpoint-url URL`
    /// and `$REWRAP_URL` = the URL.
    pub(crate) fn aws_script(&self, served: &Server, who: &Creds, script: &str) -> Output {
        let path = format!(
            "{}:{}",
            venv_bin().display(),
            std::env::var("PATH").unwrap_or_default()
        );
        Command::new("bash")
            .arg("-c")
            .arg(format!(
                "set -euo pipefail\nE=\"--endpoint-url $REWRAP_URL\"\n{script}"
            ))
            .current_dir(self.dir.path())
            .env("PATH", path)
            .env("REWRAP_URL", &served.url)
            .env("AWS_ACCESS_KEY_ID", &who.id)
            .env("AWS_SECRET_ACCESS_KEY", &who.secret)
            .env("AWS_DEFAULT_REGION", "us-east-1")
            .env("AWS_CONFIG_FILE", "/dev/null")
            .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
            .env_remove("AWS_SESSION_TOKEN")
            .env_remove("AWS_PROFILE")
            .env_remove("AWS_CA_BUNDLE")
            .output()
            .unwrap()
    }
}

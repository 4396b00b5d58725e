//! Packaging for schedulers (issue 10 observation 9): the systemd units
//! pass `systemd-analyze verify` with no warning, every Kubernetes manifest
//! parses and runs the image `deploy/Dockerfile` builds with arguments
//! `rewrap` accepts, and the Dockerfile's build steps hold together (COPY
//! sources exist, the cargo build flags parse, the toolchain matches). The
//! image build itself needs the network and is not run here.
//!
//! The tools are not optional: without `systemd-analyze` (Debian's
//! `systemd` package, which `scripts/test` installs) or Python's `yaml`
//! (tests/requirements.txt) these tests fail.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use support::cli::{bin, stderr, stdout};
use support::repo;

fn deploy() -> PathBuf {
    repo().join("deploy")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The tag the Dockerfile's header says to build: `docker build ... -t TAG .`
fn dockerfile_tag() -> String {
    let text = read(&deploy().join("Dockerfile"));
    let line = text
        .lines()
        .find(|l| l.contains("docker build -f deploy/Dockerfile -t "))
        .expect("the Dockerfile says how to build and tag it");
    let tag = line
        .split(" -t ")
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap();
    tag.to_string()
}

/// Runs `rewrap ARGS --help`: clap reads every argument before `--help`,
/// so an unknown flag or a value that does not parse fails it.
fn assert_rewrap_accepts(args: &[String], what: &str) {
    let out = Command::new(bin())
        .args(args)
        .arg("--help")
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{what}: rewrap {} refused: {}",
        args.join(" "),
        stderr(&out)
    );
}

#[test]
fn systemd_units_verify_without_warnings() {
    let dir = tempfile::tempdir().unwrap();
    let units = deploy().join("systemd");
    // The units as shipped, with this build's binary where they install it
    // (verify checks that ExecStart names an executable).
    let service = read(&units.join("rewrap-rotate.service"));
    assert!(
        service.contains("ExecStart=/usr/local/bin/rewrap "),
        "{service}"
    );
    std::fs::write(
        dir.path().join("rewrap-rotate.service"),
        service.replace("/usr/local/bin/rewrap", bin()),
    )
    .unwrap();
    std::fs::copy(
        units.join("rewrap-rotate.timer"),
        dir.path().join("rewrap-rotate.timer"),
    )
    .unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(dir.path().join("rewrap-rotate.service"))
        .arg(dir.path().join("rewrap-rotate.timer"))
        .output()
        .expect("systemd-analyze (Debian package systemd; scripts/test installs it)");
    // verify exits 0 on an unknown key or a bad value and only warns: any
    // output is a failure.
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!((stdout(&out), stderr(&out)), (String::new(), String::new()));

    // The hardening the brief asks for, and the exit-code policy.
    for line in [
        "Type=oneshot",
        "User=rewrap",
        "EnvironmentFile=/etc/rewrap/rotate.env",
        "ProtectSystem=strict",
        "ReadWritePaths=/srv/data /var/lib/rewrap",
        "NoNewPrivileges=yes",
        "PrivateTmp=yes",
        "ProtectHome=yes",
        "CapabilityBoundingSet=",
        "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6",
        "SystemCallFilter=@system-service",
        "SuccessExitStatus=3",
    ] {
        assert!(
            service.lines().any(|l| l == line),
            "missing {line:?} in the service"
        );
    }
    // The command line parses (with the EnvironmentFile's example values).
    let exec = service
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart=/usr/local/bin/rewrap "))
        .unwrap()
        .replace("${REWRAP_TARGET_KEY}", "alias/app-data")
        .replace("$REWRAP_ROTATE_PATHS", "/srv/data");
    let args: Vec<String> = exec.split_whitespace().map(str::to_string).collect();
    assert_eq!(args[0], "rotate");
    assert_rewrap_accepts(&args, "ExecStart");
}

/// Every YAML document of every manifest, as JSON (Python's yaml).
fn manifests() -> Vec<(PathBuf, serde_json::Value)> {
    let python = std::env::var("REWRAP_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
    let mut files: Vec<PathBuf> = std::fs::read_dir(deploy())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    files.sort();
    assert!(files.len() >= 2, "{files:?}");
    let mut docs = Vec::new();
    for file in files {
        let out = Command::new(&python)
            .args([
                "-c",
                "import json, sys, yaml; \
                 print(json.dumps(list(yaml.safe_load_all(open(sys.argv[1])))))",
            ])
            .arg(&file)
            .output()
            .expect("python with yaml (tests/requirements.txt)");
        assert!(out.status.success(), "{}: {}", file.display(), stderr(&out));
        let parsed: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
        docs.extend(parsed.into_iter().map(|d| (file.clone(), d)));
    }
    docs
}

/// The pod spec of a Job or a CronJob.
fn pod_spec(doc: &serde_json::Value) -> Option<&serde_json::Value> {
    match doc["kind"].as_str()? {
        "Job" => Some(&doc["spec"]["template"]["spec"]),
        "CronJob" => Some(&doc["spec"]["jobTemplate"]["spec"]["template"]["spec"]),
        _ => None,
    }
}

/// `$(NAME)` replaced as Kubernetes does, from the container's `env` values
/// (and JOB_COMPLETION_INDEX, which the Job controller adds).
fn expand(arg: &str, env: &[(String, String)]) -> String {
    let mut out = arg.to_string();
    for (name, value) in env {
        out = out.replace(&format!("$({name})"), value);
    }
    out
}

#[test]
fn manifests_run_the_dockerfile_image_with_arguments_rewrap_accepts() {
    let tag = dockerfile_tag();
    assert_eq!(
        tag,
        format!("ghcr.io/CHANGE-ME/rewrap:{}", env!("CARGO_PKG_VERSION")),
        "the image tag follows the crate version"
    );
    let mut containers = 0;
    for (file, doc) in manifests() {
        assert!(
            doc["apiVersion"].is_string() && doc["kind"].is_string(),
            "{}",
            file.display()
        );
        let Some(spec) = pod_spec(&doc) else { continue };
        assert_eq!(
            spec["securityContext"]["runAsNonRoot"],
            true,
            "{}",
            file.display()
        );
        for c in spec["containers"].as_array().unwrap() {
            containers += 1;
            let what = format!("{} container {}", file.display(), c["name"]);
            assert_eq!(c["image"].as_str(), Some(tag.as_str()), "{what}");
            // The entrypoint is rewrap; the image has no shell to run.
            assert!(
                c.get("command").is_none(),
                "{what}: command overrides the entrypoint"
            );
            let mut env: Vec<(String, String)> = c["env"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(|e| Some((e["name"].as_str()?.into(), e["value"].as_str()?.into())))
                .collect();
            env.push(("JOB_COMPLETION_INDEX".into(), "0".into()));
            let args: Vec<String> = c["args"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| expand(a.as_str().unwrap(), &env))
                .collect();
            assert!(
                args.iter().all(|a| !a.contains("$(")),
                "{what}: unexpanded variable in {args:?}"
            );
            assert_rewrap_accepts(&args, &what);
        }
    }
    assert_eq!(containers, 2, "one container per manifest");
}

#[test]
fn dockerfile_build_steps_hold_together() {
    let text = read(&deploy().join("Dockerfile"));
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .collect();
    // Every COPY from the build context names something in the repository.
    let mut copies = 0;
    for l in &lines {
        let Some(rest) = l.strip_prefix("COPY ") else {
            continue;
        };
        if rest.starts_with("--from=") {
            continue;
        }
        let words: Vec<&str> = rest.split_whitespace().collect();
        for source in &words[..words.len() - 1] {
            copies += 1;
            assert!(
                repo().join(source).exists(),
                "COPY source {source} does not exist"
            );
        }
    }
    assert!(copies >= 5, "{copies} COPY sources");
    // A multi-stage build whose last stage runs rewrap as a non-root user.
    let froms: Vec<&&str> = lines.iter().filter(|l| l.starts_with("FROM ")).collect();
    assert_eq!(froms.len(), 2, "{froms:?}");
    assert!(text.contains("\nUSER 65532:65532\n"));
    assert!(text.contains("\nENTRYPOINT [\"rewrap\"]\n"));
    // The builder's Rust is the toolchain this suite was built with.
    let rustc = Command::new("rustc").arg("--version").output().unwrap();
    let version = stdout(&rustc);
    let minor: Vec<&str> = version
        .split_whitespace()
        .nth(1)
        .unwrap()
        .split('.')
        .take(2)
        .collect();
    assert!(
        froms[0].starts_with(&format!(
            "FROM rust:{}-slim-bookworm AS builder",
            minor.join(".")
        )),
        "{} against {version}",
        froms[0]
    );
    // The cargo build line: its flags parse, its binary exists, the lock
    // file is current (`--locked` would refuse it otherwise).
    let steps = lines.join("\n");
    let build = steps
        .split("cargo build ")
        .nth(1)
        .and_then(|rest| rest.split('\n').next())
        .expect("a cargo build step");
    let flags: Vec<&str> = build
        .split_whitespace()
        .take_while(|w| *w != "\\" && *w != "&&")
        .collect();
    assert_eq!(flags, ["--release", "--locked", "--bin", "rewrap"]);
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(&cargo)
        .arg("build")
        .args(&flags)
        .arg("--help")
        .current_dir(repo())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "cargo build {flags:?}: {}",
        stderr(&out)
    );
    let out = Command::new(&cargo)
        .args([
            "metadata",
            "--locked",
            "--offline",
            "--no-deps",
            "--format-version",
            "1",
        ])
        .current_dir(repo())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let bins: Vec<&str> = meta["packages"][0]["targets"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["kind"][0] == "bin")
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(bins, ["rewrap"]);
}

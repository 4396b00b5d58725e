//! Help that teaches (issue 10 observation 10): global options in their
//! own section, each command's own options first with examples, no empty
//! `[env: REWRAP_HOME=]`, consistent flag names with the old spellings kept
//! as hidden aliases, `demo --help` without options demo ignores, no stray
//! `False` in text output, and no panic on a closed stdout.

mod support;

use std::process::{Command, Output, Stdio};
use support::cli::{bin, stderr, stdout, Env};

fn help(args: &[&str]) -> String {
    let out = Command::new(bin()).args(args).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    stdout(&out)
}

/// The subcommands `rewrap --help` lists.
fn commands() -> Vec<String> {
    let text = help(&["--help"]);
    let section = text
        .split("Commands:\n")
        .nth(1)
        .unwrap()
        .split("\n\n")
        .next()
        .unwrap();
    section
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| *c != "help")
        .map(str::to_string)
        .collect()
}

#[test]
fn global_options_have_their_own_section_after_the_commands_own() {
    let top = help(&["--help"]);
    let global = top
        .find("\nGlobal options:\n")
        .expect("a Global options section");
    for flag in [
        "--keystore",
        "--endpoint-url",
        "--profile",
        "--output",
        "--query",
    ] {
        let at = top.find(flag).unwrap();
        assert!(
            at > global,
            "{flag} listed before the Global options heading"
        );
    }
    let rotate = help(&["rotate", "--help"]);
    let own = rotate
        .find("\nOptions:\n")
        .expect("the command's own options");
    let global = rotate.find("\nGlobal options:\n").unwrap();
    let to = rotate.find("\n      --to <KEY>").unwrap();
    let keystore = rotate.find("\n      --keystore <DIR>").unwrap();
    assert!(own < to && to < global && global < keystore, "{rotate}");
}

#[test]
fn every_command_shows_examples() {
    let commands = commands();
    assert!(commands.len() >= 40, "{commands:?}");
    let mut missing = Vec::new();
    for c in &commands {
        let text = help(&[c, "--help"]);
        if !text.contains("\nExamples:\n  ") || !text.contains(&format!("rewrap {c}")) {
            // policy and audit have subcommands: their examples are one level down.
            if !matches!(c.as_str(), "policy" | "audit") {
                missing.push(c.clone());
            }
        }
    }
    for sub in [
        ["policy", "check"],
        ["policy", "validate"],
        ["audit", "verify"],
        ["audit", "report"],
    ] {
        let text = help(&[sub[0], sub[1], "--help"]);
        if !text.contains(&format!("\nExamples:\n  rewrap {} {}", sub[0], sub[1])) {
            missing.push(sub.join(" "));
        }
    }
    assert_eq!(missing, Vec::<String>::new());
    let rotate = help(&["rotate", "--help"]);
    assert!(rotate.contains("  rewrap rotate --dry-run --to alias/app-data data/\n"));
}

#[test]
fn environment_variables_are_named_without_their_values() {
    for value in ["", "/secret/place"] {
        let out = Command::new(bin())
            .args(["list-keys", "--help"])
            .env("REWRAP_HOME", value)
            .env("REWRAP_ENDPOINT_URL", value)
            .output()
            .unwrap();
        let text = stdout(&out);
        assert!(text.contains("[env: REWRAP_HOME]"), "{text}");
        assert!(text.contains("[env: REWRAP_ENDPOINT_URL]"), "{text}");
        assert!(!text.contains("REWRAP_HOME="), "{text}");
        assert!(!text.contains("/secret/place"), "{text}");
    }
}

#[test]
fn flag_names_are_consistent_and_old_spellings_still_work() {
    let help_text = help(&["encrypt-file", "--help"]);
    assert!(
        help_text.contains("--encryption-context <KEY=VALUE>"),
        "{help_text}"
    );
    assert!(help_text.contains("-o, --out-file <PATH>"), "{help_text}");
    assert!(!help_text.contains("--context"), "{help_text}");
    assert!(!help_text.contains("--out <"), "{help_text}");
    let output = help_text.split("--output <FORMAT>").nth(1).unwrap();
    assert!(output.contains("Output format"), "{help_text}");
    let check = help(&["policy", "check", "--help"]);
    assert!(check.contains("--key-id <KEY>"), "{check}");
    assert!(
        check.contains("--encryption-context <KEY=VALUE>"),
        "{check}"
    );
    assert!(!check.contains("--key <"), "{check}");

    let env = Env::new();
    let o = &env.owner;
    let key = env.key("aliases");
    std::fs::write(env.path("p.txt"), b"plain").unwrap();
    // The old spellings: --context, --out; the new: --encryption-context, --out-file.
    let sealed = env.ok(
        o,
        &[
            "encrypt-file",
            "--key-id",
            &key,
            "--context",
            "purpose=app-data",
            "p.txt",
            "--out",
            "old.rwp",
        ],
    );
    assert_eq!(sealed["output"], "old.rwp");
    let sealed = env.ok(
        o,
        &[
            "encrypt-file",
            "--key-id",
            &key,
            "--encryption-context",
            "purpose=app-data",
            "p.txt",
            "--out-file",
            "new.rwp",
        ],
    );
    assert_eq!(sealed["output"], "new.rwp");
    let inspected = env.ok(o, &["inspect-envelope", "old.rwp", "--query", "context"]);
    assert_eq!(inspected, serde_json::json!({ "purpose": "app-data" }));
    for flag in ["--key", "--key-id"] {
        let out = env.run(
            o,
            &[
                "policy",
                "check",
                "--principal",
                "app-writer",
                "--action",
                "kms:Encrypt",
                flag,
                &key,
                "--context",
                "a=b",
            ],
        );
        assert_eq!(out.status.code(), Some(0), "{flag}: {}", stderr(&out));
    }
}

#[test]
fn demo_help_lists_only_what_demo_uses() {
    let text = help(&["demo", "--help"]);
    let options: Vec<&str> = text
        .lines()
        .map(str::trim_start)
        .filter(|l| l.starts_with('-'))
        .map(|l| l.split_whitespace().next().unwrap())
        .collect();
    assert_eq!(options, ["--files", "--keep", "-h,"], "{text}");
    assert!(!text.contains("Global options"), "{text}");
    let out = Command::new(bin())
        .args(["demo", "--keystore", "/tmp/x"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(252));
    assert!(
        stderr(&out).contains("demo makes its own keystore and principals in a temporary folder"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn list_keys_text_prints_one_line_per_key_and_no_stray_false() {
    let env = Env::new();
    let o = &env.owner;
    let keys = [env.key("one"), env.key("two")];
    let json = env.ok(o, &["list-keys"]);
    assert_eq!(json["Truncated"], false);
    let out = env.run(o, &["list-keys", "--output", "text"]);
    assert_eq!(out.status.code(), Some(0));
    let want: Vec<String> = json["Keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| {
            format!(
                "{}\t{}\n",
                k["KeyArn"].as_str().unwrap(),
                k["KeyId"].as_str().unwrap()
            )
        })
        .collect();
    let want = want.concat();
    assert_eq!(stdout(&out), want);
    for k in &keys {
        assert!(want.contains(k.as_str()));
    }
    // A truncated page still says so, with its marker.
    let out = env.run(o, &["list-keys", "--limit", "1", "--output", "text"]);
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(lines[0].ends_with("\tTrue"), "{text}");
}

/// Runs `args` with stdout a pipe whose reading end is already closed.
fn with_closed_stdout(env: &Env, args: &[&str]) -> Output {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    env.command(&env.owner)
        .args(args)
        .stdout(Stdio::from(writer))
        .stderr(Stdio::piped())
        .output()
        .unwrap()
}

#[test]
fn a_closed_stdout_ends_quietly_with_141() {
    let env = Env::new();
    env.key("piped");
    std::fs::write(env.path("p.txt"), vec![b'x'; 1 << 20]).unwrap();
    env.ok(
        &env.owner,
        &[
            "encrypt-file",
            "--key-id",
            &env.key("k"),
            "p.txt",
            "-o",
            "p.rwp",
        ],
    );
    std::fs::create_dir_all(env.path("tree")).unwrap();
    std::fs::copy(env.path("p.rwp"), env.path("tree/p.rwp")).unwrap();
    for args in [
        &["list-keys"][..],
        &["whoami", "--output", "text"],
        &["audit", "report", "--output", "text"],
        &["inventory", "tree", "--output", "text"],
        &["decrypt-file", "p.rwp", "-o", "-"],
        &["--help"],
    ] {
        let out = with_closed_stdout(&env, args);
        assert_eq!(out.status.code(), Some(141), "{args:?}: {}", stderr(&out));
        assert_eq!(stderr(&out), "", "{args:?}");
    }
}

//! `rewrap inventory --list`: one JSON line per envelope (path or object
//! URL, key ARN, alias names, key version, wrap time, stale or not), for
//! file trees and object-store locations through the one pipeline;
//! `--stale-only`; and the text table with alias names beside key ids.

mod support;

use serde_json::Value;
use support::cli::{stderr, stdout, Env};

/// A keystore with two keys and three aliases, a tree `data/` of four
/// envelopes (two under key 1 version 1, one under key 1 version 2, one
/// under key 2) and a text file, and a `file://` location of two objects
/// (key 1 version 1 and version 2).
struct Fixture {
    env: Env,
    k1: String,
    k2: String,
    url: String,
}

fn fixture() -> Fixture {
    let env = Env::new();
    let o = &env.owner;
    let k1 = env.key("app data");
    let k2 = env.key("archive");
    for (alias, key) in [
        ("alias/app-data-2027", &k1),
        ("alias/app-data", &k1),
        ("alias/archive", &k2),
    ] {
        env.ok(
            o,
            &[
                "create-alias",
                "--alias-name",
                alias,
                "--target-key-id",
                key,
            ],
        );
    }
    std::fs::create_dir_all(env.path("data")).unwrap();
    std::fs::create_dir_all(env.path("store/data")).unwrap();
    std::fs::write(env.path("plain.txt"), b"plain").unwrap();
    std::fs::write(env.path("data/notes.txt"), b"not an envelope").unwrap();
    let url = format!("file://{}/data", env.path("store").display());
    let encrypt = |key: &str, out: &str| {
        env.ok(
            o,
            &["encrypt-file", "--key-id", key, "plain.txt", "-o", out],
        );
    };
    encrypt("alias/app-data", "data/a.rwp");
    encrypt("alias/app-data", "data/b.rwp");
    encrypt("alias/app-data", &format!("{url}/obj-old"));
    env.ok(o, &["rotate-key-on-demand", "--key-id", &k1]);
    encrypt(&k1, "data/c.rwp");
    encrypt(&k1, &format!("{url}/obj-new"));
    encrypt(&k2, "data/d.rwp");
    Fixture { env, k1, k2, url }
}

/// The JSON lines of stdout, sorted by path.
fn lines(out: &std::process::Output) -> Vec<Value> {
    assert_eq!(out.status.code(), Some(0), "{}", stderr(out));
    let mut v: Vec<Value> = stdout(out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
        .collect();
    v.sort_by(|a, b| a["path"].as_str().cmp(&b["path"].as_str()));
    v
}

/// (path, key id, aliases, version, stale) of each line.
fn brief(lines: &[Value]) -> Vec<(String, String, Vec<String>, u64, Value)> {
    lines
        .iter()
        .map(|l| {
            let arn = l["key_arn"].as_str().unwrap();
            (
                l["path"].as_str().unwrap().to_string(),
                arn.rsplit('/').next().unwrap().to_string(),
                serde_json::from_value(l["aliases"].clone()).unwrap(),
                l["key_version"].as_u64().unwrap(),
                l["stale"].clone(),
            )
        })
        .collect()
}

fn names(list: &[&str]) -> Vec<String> {
    list.iter().map(ToString::to_string).collect()
}

#[test]
fn list_streams_one_line_per_envelope_of_a_tree() {
    let f = fixture();
    let o = &f.env.owner;
    let out = f.env.run(o, &["inventory", "--list", "data"]);
    let listed = lines(&out);
    let k1_aliases = names(&["alias/app-data", "alias/app-data-2027"]);
    assert_eq!(
        brief(&listed),
        vec![
            (
                "data/a.rwp".into(),
                f.k1.clone(),
                k1_aliases.clone(),
                1,
                Value::Bool(true)
            ),
            (
                "data/b.rwp".into(),
                f.k1.clone(),
                k1_aliases.clone(),
                1,
                Value::Bool(true)
            ),
            (
                "data/c.rwp".into(),
                f.k1.clone(),
                k1_aliases.clone(),
                2,
                Value::Bool(false)
            ),
            (
                "data/d.rwp".into(),
                f.k2.clone(),
                names(&["alias/archive"]),
                1,
                Value::Bool(false)
            ),
        ]
    );
    let now = chrono::Utc::now();
    for l in &listed {
        let wrapped = l["wrapped_at"].as_str().expect("a wrap time");
        let t = chrono::DateTime::parse_from_rfc3339(wrapped).unwrap();
        assert!(
            (now - t.with_timezone(&chrono::Utc)).num_seconds().abs() < 600,
            "{wrapped}"
        );
        assert!(l["key_arn"].as_str().unwrap().starts_with("arn:aws:kms:"));
    }
    let err = stderr(&out);
    assert!(
        err.contains("total: 4 envelopes, 1 not envelopes, 0 failed")
            && err.contains("2 listed as stale"),
        "{err}"
    );

    let stale = lines(&f.env.run(o, &["inventory", "--stale-only", "data"]));
    let paths: Vec<&str> = stale.iter().map(|l| l["path"].as_str().unwrap()).collect();
    assert_eq!(paths, ["data/a.rwp", "data/b.rwp"]);

    // Against another key, everything not under it is stale.
    let against = lines(&f.env.run(
        o,
        &[
            "inventory",
            "--list",
            "--stale-against",
            "alias/archive",
            "data",
        ],
    ));
    let stale: Vec<(&str, bool)> = against
        .iter()
        .map(|l| (l["path"].as_str().unwrap(), l["stale"].as_bool().unwrap()))
        .collect();
    assert_eq!(
        stale,
        [
            ("data/a.rwp", true),
            ("data/b.rwp", true),
            ("data/c.rwp", true),
            ("data/d.rwp", false)
        ]
    );
}

#[test]
fn list_works_the_same_on_an_object_location() {
    let f = fixture();
    let listed = lines(&f.env.run(&f.env.owner, &["inventory", "--list", &f.url]));
    let got: Vec<(String, String, Vec<String>, u64, Value)> = brief(&listed);
    assert_eq!(got.len(), 2, "{listed:?}");
    let k1_aliases = names(&["alias/app-data", "alias/app-data-2027"]);
    assert!(got[0].0.ends_with("/obj-new"), "{}", got[0].0);
    assert!(got[1].0.ends_with("/obj-old"), "{}", got[1].0);
    assert_eq!(
        got.iter()
            .map(|g| (&g.1, &g.2, g.3, &g.4))
            .collect::<Vec<_>>(),
        vec![
            (&f.k1, &k1_aliases, 2, &Value::Bool(false)),
            (&f.k1, &k1_aliases, 1, &Value::Bool(true)),
        ]
    );
    let only = lines(
        &f.env
            .run(&f.env.owner, &["inventory", "--stale-only", &f.url]),
    );
    assert_eq!(only.len(), 1);
    assert!(only[0]["path"].as_str().unwrap().ends_with("/obj-old"));
}

#[test]
fn text_table_names_aliases_beside_key_ids() {
    let f = fixture();
    let out = f
        .env
        .run(&f.env.owner, &["inventory", "data", "--output", "text"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    let rows: Vec<&str> = text.lines().collect();
    assert_eq!(rows.len(), 5, "{text}");
    let header = rows[0];
    assert!(header.starts_with("KEY"), "{text}");
    let col = |name: &str| header.find(name).unwrap();
    let want = [
        (&f.k1, "alias/app-data,alias/app-data-2027", "1", "2"),
        (&f.k1, "alias/app-data,alias/app-data-2027", "2", "1"),
        (&f.k2, "alias/archive", "1", "1"),
    ];
    let mut body: Vec<&str> = rows[1..4].to_vec();
    body.sort_by_key(|r| (!r.starts_with(f.k1.as_str()), r.to_string()));
    for (row, (key, aliases, version, count)) in body.iter().zip(want) {
        assert!(row.starts_with(key.as_str()), "{text}");
        assert_eq!(
            &row[col("ALIASES")..col("ALIASES") + aliases.len()],
            aliases,
            "{text}"
        );
        // Version and count are right-aligned under their headers.
        let version_end = col("VERSION") + "VERSION".len();
        assert_eq!(&row[version_end - 1..version_end], version, "{text}");
        let count_end = col("ENVELOPES") + "ENVELOPES".len();
        assert_eq!(&row[count_end - 1..count_end], count, "{text}");
        assert_eq!(row.as_bytes()[count_end + 1], b' ', "{text}");
    }
    assert!(
        rows[4].starts_with("total: 4 envelopes, 1 not envelopes, 0 failed"),
        "{text}"
    );
}

#[test]
fn list_without_credentials_does_not_start() {
    let f = fixture();
    let out = f
        .env
        .command(&f.env.owner)
        .env_remove("REWRAP_ACCESS_KEY_ID")
        .env_remove("REWRAP_SECRET_ACCESS_KEY")
        .args(["inventory", "--list", "data"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("Unable to locate credentials"),
        "{}",
        stderr(&out)
    );
    assert_eq!(stdout(&out), "");
}

//! Codec tests on files the real `sops` 3.11 wrote (`tests/vectors/sops/`).

use super::*;

fn vector(name: &str) -> Vec<u8> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/vectors/sops")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

const K1: &str = "arn:aws:kms:us-east-1:111122223333:key/4f6d90ba-5c88-4ac2-9b21-1e2c1bef8491";
const K2: &str = "arn:aws:kms:us-east-1:111122223333:key/2f79ff21-4e9e-4f7f-ba31-34ce51b1b48c";

fn parsed(name: &str) -> (Vec<u8>, SopsFile) {
    let bytes = vector(name);
    let file = parse(&bytes)
        .unwrap_or_else(|e| panic!("{name}: {e}"))
        .unwrap_or_else(|| panic!("{name}: not taken for a SOPS file"));
    (bytes, file)
}

/// Every entry's fields name exactly the bytes they were read from.
fn spans_hold(bytes: &[u8], file: &SopsFile) {
    for e in &file.entries {
        assert_eq!(&bytes[e.arn.span.clone()], e.arn.value.as_bytes());
        assert_eq!(&bytes[e.enc.span.clone()], e.enc.value.as_bytes());
        let c = e.created_at.as_ref().expect("created_at");
        assert_eq!(&bytes[c.span.clone()], c.value.as_bytes());
        assert_eq!(c.value.len(), "2026-11-30T01:09:31Z".len());
        assert!(e.blob().len() > 32, "{}", e.name());
    }
}

fn context(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn one_entry_with_context_in_every_format() {
    for (name, format) in [
        ("context.yaml", Format::Yaml),
        ("context.env", Format::Dotenv),
        ("context.ini", Format::Ini),
    ] {
        let (bytes, file) = parsed(name);
        assert_eq!(file.format, format, "{name}");
        assert_eq!(file.entries.len(), 1, "{name}");
        let e = &file.entries[0];
        assert_eq!((e.group, e.index), (None, 0), "{name}");
        assert_eq!(e.arn.value, K1, "{name}");
        let want: &[(&str, &str)] = if format == Format::Yaml {
            &[("app", "web"), ("env", "prod")]
        } else {
            &[("app", "web")]
        };
        assert_eq!(e.context, context(want), "{name}");
        spans_hold(&bytes, &file);
    }
}

#[test]
fn json_with_two_entries_and_binary() {
    let (bytes, file) = parsed("two_entries.json");
    assert_eq!(file.format, Format::Json);
    let arns: Vec<&str> = file.entries.iter().map(|e| e.arn.value.as_str()).collect();
    assert_eq!(arns, [K1, K2]);
    assert!(file.entries.iter().all(|e| e.context.is_empty()));
    spans_hold(&bytes, &file);
    let (bytes, file) = parsed("data.bin");
    assert_eq!(file.format, Format::Binary);
    assert_eq!(file.entries.len(), 1);
    spans_hold(&bytes, &file);
}

#[test]
fn key_groups_with_age_and_shamir_in_every_format() {
    for (name, format) in [
        ("key_groups.yaml", Format::Yaml),
        ("key_groups.json", Format::Json),
        ("key_groups.env", Format::Dotenv),
        ("key_groups.ini", Format::Ini),
    ] {
        let (bytes, file) = parsed(name);
        assert_eq!(file.format, format, "{name}");
        let got: Vec<(Option<usize>, usize, &str)> = file
            .entries
            .iter()
            .map(|e| (e.group, e.index, e.arn.value.as_str()))
            .collect();
        assert_eq!(got, [(Some(0), 0, K1), (Some(1), 0, K2)], "{name}");
        assert_eq!(file.entries[0].context, context(&[("team", "a")]), "{name}");
        assert!(file.entries[1].context.is_empty(), "{name}");
        spans_hold(&bytes, &file);
    }
}

#[test]
fn rewrite_changes_only_the_spans() {
    for name in [
        "context.yaml",
        "context.env",
        "context.ini",
        "two_entries.json",
        "data.bin",
        "key_groups.yaml",
        "key_groups.json",
        "key_groups.env",
        "key_groups.ini",
    ] {
        let (bytes, file) = parsed(name);
        let same: Vec<_> = file
            .entries
            .iter()
            .map(|e| (e.arn.span.clone(), e.arn.value.clone()))
            .collect();
        assert_eq!(rewrite(&bytes, &same), bytes, "{name}");
        let e = &file.entries[0];
        let new_arn = K2.replace("2f79", "ffff");
        let edits = vec![
            (e.arn.span.clone(), new_arn.clone()),
            (e.enc.span.clone(), "QUJD".to_string()),
        ];
        let out = rewrite(&bytes, &edits);
        let again = parse(&out).unwrap().unwrap();
        assert_eq!(again.entries[0].arn.value, new_arn, "{name}");
        assert_eq!(again.entries[0].enc.value, "QUJD", "{name}");
        let values = |f: &SopsFile| -> Vec<(String, String, BTreeMap<String, String>)> {
            f.entries[1..]
                .iter()
                .map(|e| (e.arn.value.clone(), e.enc.value.clone(), e.context.clone()))
                .collect()
        };
        assert_eq!(values(&again), values(&file), "{name}");
        // Bytes before the first edited value are untouched.
        let first = e.arn.span.start.min(e.enc.span.start);
        assert_eq!(out[..first], bytes[..first], "{name}");
    }
}

#[test]
fn crlf_yaml_reads_the_same_values() {
    let bytes = vector("key_groups.yaml");
    let crlf: Vec<u8> = String::from_utf8(bytes.clone())
        .unwrap()
        .replace('\n', "\r\n")
        .into_bytes();
    let a = parse(&bytes).unwrap().unwrap();
    let b = parse(&crlf).unwrap().unwrap();
    let values = |f: &SopsFile| -> Vec<(String, String)> {
        f.entries
            .iter()
            .map(|e| (e.arn.value.clone(), e.enc.value.clone()))
            .collect()
    };
    assert_eq!(values(&a), values(&b));
    for e in &b.entries {
        assert_eq!(&crlf[e.enc.span.clone()], e.enc.value.as_bytes());
        assert_eq!(crlf[e.enc.span.end], b'\r');
    }
}

#[test]
fn files_that_are_not_sops_files() {
    for text in [
        &b""[..],
        b"plain text\n",
        b"key: value\nsops_like: 1\n",
        b"{\"a\": 1}",
        b"{\"sops\": {\"kms\": []}}",
        b"{ \"a\": \"sops\", broken",
        b"{\"data\": \"x\", \"sops\": {\"kms\": [], \"version\": \"3\"}}",
        b"sops:\n    version: 3.11.0\n",
        b"FOO=bar\nsops_version=1\n",
        b"\x00\x01binary sops",
    ] {
        assert_eq!(parse(text), Ok(None), "{:?}", String::from_utf8_lossy(text));
    }
}

#[test]
fn malformed_metadata_is_refused_by_name() {
    let cases: &[(&[u8], &str)] = &[
        (b"{\"sops\": {\"mac\": \"x\"", "SopsMalformed"),
        (b"{\"a\": 1, \"sops\": [1,", "SopsMalformed"),
        (b"{\"sops\": {\"mac\": \"x\"}} trailing", "SopsMalformed"),
        (
            b"sops:\n    mac: x\n    kms:\n        - arn: a\n          enc: @@@\n",
            "SopsBadEntry",
        ),
        (
            b"sops:\n    mac: x\n    kms:\n        - arn: a\n",
            "SopsBadEntry",
        ),
        (b"sops:\n    mac: &anchor x\n", "SopsMalformed"),
        (b"sops:\n    mac: x\n      more\n", "SopsMalformed"),
        (b"sops:\n    mac: x\nsops:\n    mac: y\n", "SopsMalformed"),
        (b"[sops]\nmac = x\nno equals sign\n", "SopsMalformed"),
    ];
    for (text, kind) in cases {
        let e = parse(text).expect_err(&String::from_utf8_lossy(text));
        assert_eq!(e.kind(), *kind, "{e}");
    }
}

#[test]
fn nesting_is_bounded() {
    let mut deep = b"{\"sops\": ".to_vec();
    deep.extend(std::iter::repeat_n(b'[', 10_000));
    assert_eq!(parse(&deep).unwrap_err().kind(), "SopsMalformed");
    let mut yaml = b"sops:\n".to_vec();
    for i in 1..200 {
        yaml.extend(std::iter::repeat_n(b' ', i));
        yaml.extend_from_slice(b"k:\n");
    }
    assert_eq!(parse(&yaml).unwrap_err().kind(), "SopsMalformed");
}

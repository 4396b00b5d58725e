//! The segmented audit trail (issue 14), through the real binary: closed
//! segments by size, the chain across them, compaction, and what `audit
//! verify` reports when a segment is removed, truncated or edited.

mod support;

use std::io::{Read, Write};
use std::path::PathBuf;
use support::cli::*;

/// A keystore whose trail closes a segment every `bytes` bytes.
fn env_with_segments_of(bytes: u64) -> Env {
    let env = Env::new();
    let path = env.home.join("config.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let old = format!("segment_max_bytes = {}", 64u64 << 20);
    assert!(text.contains(&old), "{text}");
    std::fs::write(
        &path,
        text.replace(&old, &format!("segment_max_bytes = {bytes}")),
    )
    .unwrap();
    env
}

fn segments(env: &Env) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(env.home.join("audit.segments"))
        .map(|d| d.map(|e| e.unwrap().path()).collect())
        .unwrap_or_default();
    v.sort();
    v
}

fn first_seq(segment: &std::path::Path) -> u64 {
    let name = segment.file_name().unwrap().to_str().unwrap();
    name.strip_suffix(".seg").unwrap().parse().unwrap()
}

/// Runs `n` ListKeys (one record each).
fn list_keys(env: &Env, n: usize) {
    for _ in 0..n {
        env.ok(&env.owner, &["list-keys"]);
    }
}

fn verify(env: &Env) -> std::process::Output {
    env.run(&env.owner, &["audit", "verify"])
}

/// The number of records `audit verify` found (it then appends its own).
fn verified_records(env: &Env) -> u64 {
    let o = verify(env);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = stdout(&o);
    out.strip_prefix("ok: ")
        .and_then(|s| s.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("unexpected verdict {out}"))
}

/// The JSON lines inside a closed segment.
fn body(segment: &std::path::Path) -> Vec<String> {
    let bytes = std::fs::read(segment).unwrap();
    assert_eq!(&bytes[..8], b"RWAUDSG1");
    let mut text = String::new();
    flate2::read::DeflateDecoder::new(&bytes[8..])
        .read_to_string(&mut text)
        .unwrap();
    text.lines().map(str::to_string).collect()
}

fn write_body(segment: &std::path::Path, lines: &[String]) {
    let mut enc =
        flate2::write::DeflateEncoder::new(b"RWAUDSG1".to_vec(), flate2::Compression::default());
    for l in lines {
        enc.write_all(l.as_bytes()).unwrap();
        enc.write_all(b"\n").unwrap();
    }
    std::fs::write(segment, enc.finish().unwrap()).unwrap();
}

/// Indexes of the record entries (`{"r":...}`) of a segment body.
fn record_lines(lines: &[String]) -> Vec<usize> {
    (0..lines.len())
        .filter(|&i| lines[i].starts_with("{\"r\":"))
        .collect()
}

fn failed(env: &Env) -> String {
    let o = verify(env);
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    stderr(&o)
}

/// A trail of three closed segments and an active file.
fn segmented_env() -> (Env, Vec<PathBuf>) {
    let env = env_with_segments_of(2048);
    list_keys(&env, 20);
    let segs = segments(&env);
    assert!(segs.len() >= 3, "{segs:?}");
    (env, segs)
}

#[test]
fn segments_close_by_size_and_the_chain_runs_across_them() {
    let env = env_with_segments_of(2048);
    let before = verified_records(&env);
    list_keys(&env, 20);
    let segs = segments(&env);
    assert!(segs.len() >= 3, "{segs:?}");
    // Consecutive segments: each starts where the one before ended.
    assert_eq!(first_seq(&segs[0]), 1);
    for pair in segs.windows(2) {
        let records = record_lines(&body(&pair[0])).len() as u64;
        assert_eq!(first_seq(&pair[0]) + records, first_seq(&pair[1]));
    }
    // Every record is still there: the earlier verify's own, and 20 more.
    assert_eq!(verified_records(&env), before + 1 + 20);
    let o = verify(&env);
    assert!(
        stdout(&o).contains(&format!("; {} closed segment(s)", segments(&env).len())),
        "{}",
        stdout(&o)
    );
    // The report reads across segments too: 20 ListKeys by the owner.
    let o = env.run(&env.owner, &["audit", "report", "--output", "json"]);
    let rows: serde_json::Value = json(&o);
    let list = rows["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["operation"] == "ListKeys")
        .unwrap_or_else(|| panic!("{rows}"));
    assert_eq!(list["count"], 20);
}

/// A record names a repeated value by an id declared once per segment.
#[test]
fn segment_records_are_compacted() {
    let (_env, segs) = segmented_env();
    let lines = body(&segs[1]);
    let principal_declarations = lines.iter().filter(|l| *l == r#"{"s":"owner"}"#).count();
    assert_eq!(principal_declarations, 1, "{lines:#?}");
    for i in record_lines(&lines) {
        assert!(!lines[i].contains("owner"), "{}", lines[i]);
        assert!(!lines[i].contains("prev_hash"), "{}", lines[i]);
    }
}

#[test]
fn a_removed_segment_is_named() {
    let (env, segs) = segmented_env();
    let (gone, next) = (&segs[1], &segs[2]);
    std::fs::remove_file(gone).unwrap();
    let want = format!(
        "FAILED verification: record {n}: segment {}: starts at record {n} but the trail before it ends at record {}: records {} to {} are missing (segment removed)",
        next.display(),
        first_seq(gone) - 1,
        first_seq(gone),
        first_seq(next) - 1,
        n = first_seq(next),
    );
    let err = failed(&env);
    assert!(err.contains(&want), "want {want}\n in {err}");
}

#[test]
fn a_truncated_segment_is_detected() {
    let (env, segs) = segmented_env();
    let bytes = std::fs::read(&segs[1]).unwrap();
    std::fs::write(&segs[1], &bytes[..bytes.len() / 2]).unwrap();
    let err = failed(&env);
    assert!(
        err.contains(&format!("segment {}: ", segs[1].display())),
        "{err}"
    );
}

/// Removing the records at the end of a segment (and fixing nothing else)
/// is a truncation the header reveals.
#[test]
fn records_removed_from_the_end_of_a_segment_are_detected() {
    let (env, segs) = segmented_env();
    let mut lines = body(&segs[1]);
    let records = record_lines(&lines);
    lines.truncate(*records.last().unwrap());
    write_body(&segs[1], &lines);
    let last = first_seq(&segs[2]) - 1;
    let want = format!(
        "segment {} ends at record {} but its header says it holds records {} to {last} (records removed or segment truncated)",
        segs[1].display(),
        last - 1,
        first_seq(&segs[1]),
    );
    let err = failed(&env);
    assert!(err.contains(&want), "want {want}\n in {err}");
}

fn edited_segment_is_named(edit: impl FnOnce(&mut Vec<String>, &[usize]) -> usize) {
    let (env, segs) = segmented_env();
    let mut lines = body(&segs[1]);
    let records = record_lines(&lines);
    let k = edit(&mut lines, &records);
    write_body(&segs[1], &lines);
    let seq = first_seq(&segs[1]) + k as u64;
    let want = format!(
        "FAILED verification: record {seq}: segment {}: hash mismatch (record changed, removed, inserted or reordered)",
        segs[1].display()
    );
    let err = failed(&env);
    assert!(err.contains(&want), "want {want}\n in {err}");
}

#[test]
fn a_changed_record_in_a_segment_is_named() {
    edited_segment_is_named(|lines, records| {
        let i = records[1];
        let (start, end) = lines[i].split_at(lines[i].find("\"t\":\"").unwrap() + 5);
        lines[i] = format!("{start}1999{}", &end[4..]);
        1
    });
}

#[test]
fn a_removed_record_in_a_segment_is_named() {
    edited_segment_is_named(|lines, records| {
        lines.remove(records[2]);
        2
    });
}

#[test]
fn reordered_records_in_a_segment_are_named() {
    edited_segment_is_named(|lines, records| {
        lines.swap(records[1], records[2]);
        1
    });
}

#[test]
fn an_inserted_record_in_a_segment_is_named() {
    edited_segment_is_named(|lines, records| {
        let copy = lines[records[2]].clone();
        lines.insert(records[1], copy);
        1
    });
}

/// A trail from before segments (one `audit.log`) still verifies, and its
/// records become the first closed segment once it is over the size.
#[test]
fn a_single_file_trail_becomes_the_first_segment() {
    let env = Env::new();
    list_keys(&env, 5);
    let before = verified_records(&env);
    assert!(segments(&env).is_empty());
    let path = env.home.join("config.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(
        &path,
        text.replace(
            &format!("segment_max_bytes = {}", 64u64 << 20),
            "segment_max_bytes = 100",
        ),
    )
    .unwrap();
    list_keys(&env, 1);
    let segs = segments(&env);
    assert_eq!(segs.len(), 1, "{segs:?}");
    assert_eq!(first_seq(&segs[0]), 1);
    assert_eq!(record_lines(&body(&segs[0])).len() as u64, before + 2);
    assert_eq!(env.audit_log(), "");
    assert_eq!(verified_records(&env), before + 2);
}

// Signed digests (CloudTrail-style) and the offline verification.

fn digests(env: &Env) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(env.home.join("audit.digests"))
        .map(|d| d.map(|e| e.unwrap().path()).collect())
        .unwrap_or_default();
    v.sort();
    v
}

/// `rewrap audit public-key` into a file of the test folder.
fn public_keys_file(env: &Env, extra: &[&str]) -> PathBuf {
    let mut args = vec!["audit", "public-key"];
    args.extend_from_slice(extra);
    let o = env.run(&env.owner, &args);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let path = env.path("audit-public-keys.txt");
    std::fs::write(&path, stdout(&o)).unwrap();
    path
}

/// Copies the closed segments and digests (what an export holds) to a
/// folder of its own.
fn copy_of_trail(env: &Env) -> PathBuf {
    let copy = env.path("copy");
    for sub in ["audit.segments", "audit.digests"] {
        std::fs::create_dir_all(copy.join(sub)).unwrap();
        for entry in std::fs::read_dir(env.home.join(sub)).unwrap() {
            let entry = entry.unwrap();
            std::fs::copy(entry.path(), copy.join(sub).join(entry.file_name())).unwrap();
        }
    }
    copy
}

/// `audit verify --public-key FILE DIR` with no keystore in reach.
fn verify_offline(keys: &std::path::Path, dir: &std::path::Path) -> std::process::Output {
    std::process::Command::new(bin())
        .env_clear()
        .env("HOME", dir)
        .args(["audit", "verify", "--public-key"])
        .arg(keys)
        .arg(dir)
        .output()
        .unwrap()
}

fn offline_failure(keys: &std::path::Path, dir: &std::path::Path) -> String {
    let o = verify_offline(keys, dir);
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    stderr(&o)
}

#[test]
fn a_copied_trail_verifies_offline_with_only_the_public_key() {
    let (env, segs) = segmented_env();
    let keys = public_keys_file(&env, &[]);
    assert_eq!(std::fs::read_to_string(&keys).unwrap().lines().count(), 1);
    let copy = copy_of_trail(&env);
    let n_digests = digests(&env).len();
    assert!(n_digests >= segs.len(), "a digest at every close");
    let closed: u64 = segments(&env)
        .iter()
        .map(|s| record_lines(&body(s)).len() as u64)
        .sum();
    let o = verify_offline(&keys, &copy);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(
        stdout(&o).starts_with(&format!("ok: {closed} records, chain intact, last hash ")),
        "{}",
        stdout(&o)
    );
    assert!(
        stdout(&o).contains(&format!(
            "; {} closed segment(s); {n_digests} signed digest(s) verified ({})",
            segments(&env).len(),
            copy.display()
        )),
        "{}",
        stdout(&o)
    );
}

#[test]
fn offline_verify_finds_a_removed_last_segment() {
    let (env, _) = segmented_env();
    let keys = public_keys_file(&env, &[]);
    let copy = copy_of_trail(&env);
    let segs: Vec<PathBuf> = {
        let mut v: Vec<PathBuf> = std::fs::read_dir(copy.join("audit.segments"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        v.sort();
        v
    };
    let last = segs.last().unwrap();
    let records = record_lines(&body(last)).len() as u64;
    std::fs::remove_file(last).unwrap();
    let name = last.file_name().unwrap().to_str().unwrap();
    let err = offline_failure(&keys, &copy);
    // The digest that listed it also covers its records: the copy ends
    // before a signed digest.
    let want = format!(
        "the trail ends at record {} but digest ",
        first_seq(last) - 1
    );
    assert!(err.contains(&want), "want {want}\n in {err}");
    assert!(
        err.contains(&format!(
            "covers records up to {}: records were removed back to (or before) a signed digest",
            first_seq(last) + records - 1
        )),
        "{err}"
    );
    assert!(!copy.join("audit.segments").join(name).exists());
}

#[test]
fn offline_verify_refuses_a_key_it_was_not_given() {
    let (env, _) = segmented_env();
    let other = env_with_segments_of(2048);
    list_keys(&other, 1);
    let foreign = public_keys_file(&other, &[]);
    let copy = copy_of_trail(&env);
    let err = offline_failure(&foreign, &copy);
    assert!(
        err.contains(
            "00000000000000000001.json: is signed by a key that is not a trusted audit-signing key"
        ),
        "{err}"
    );
}

#[test]
fn offline_verify_finds_a_changed_or_removed_digest() {
    let (env, _) = segmented_env();
    let keys = public_keys_file(&env, &[]);
    let copy = copy_of_trail(&env);
    let digest_dir = copy.join("audit.digests");
    // Changed: the digest claims fewer records.
    let first = digest_dir.join(format!("{:020}.json", 1));
    let original = std::fs::read_to_string(&first).unwrap();
    let mut d: serde_json::Value = serde_json::from_str(&original).unwrap();
    d["last_seq"] = (d["last_seq"].as_u64().unwrap() - 1).into();
    std::fs::write(&first, d.to_string()).unwrap();
    let err = offline_failure(&keys, &copy);
    assert!(
        err.contains(&format!(
            "digest {}: signature does not verify (digest changed)",
            first.display()
        )),
        "{err}"
    );
    // Removed: the one after it no longer follows.
    std::fs::write(&first, original).unwrap();
    std::fs::remove_file(digest_dir.join(format!("{:020}.json", 2))).unwrap();
    let err = offline_failure(&keys, &copy);
    assert!(
        err.contains(
            "is digest 3 where digest 2 was expected (digest removed, inserted or renamed)"
        ),
        "{err}"
    );
}

/// Records cut off the end back to before the last digest, and the sealed
/// checkpoint deleted so that only the digest can tell.
#[test]
fn a_tail_removed_back_to_the_last_digest_is_detected() {
    let (env, _) = segmented_env();
    let segs = segments(&env);
    let last = segs.last().unwrap();
    std::fs::remove_file(last).unwrap();
    std::fs::write(env.home.join("audit.log"), "").unwrap();
    std::fs::remove_file(env.home.join("audit.checkpoint")).unwrap();
    let o = verify(&env);
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    let err = stderr(&o);
    let want = format!(
        "the trail ends at record {} but digest ",
        first_seq(last) - 1
    );
    assert!(err.contains(&want), "want {want}\n in {err}");
    assert!(
        err.contains(": records were removed back to (or before) a signed digest"),
        "{err}"
    );
}

/// A rotated signing key: the old public key stays listed and still
/// verifies the digests it signed; the new one alone does not.
#[test]
fn a_rotated_signing_key_keeps_the_old_public_key() {
    let (env, _) = segmented_env();
    let old = std::fs::read_to_string(public_keys_file(&env, &[])).unwrap();
    let both = public_keys_file(&env, &["--rotate"]);
    let text = std::fs::read_to_string(&both).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert_eq!(lines[0], old.trim());
    list_keys(&env, 8);
    let copy = copy_of_trail(&env);
    let o = verify_offline(&both, &copy);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let new_only = env.path("new-key.txt");
    std::fs::write(&new_only, format!("{}\n", lines[1])).unwrap();
    let err = offline_failure(&new_only, &copy);
    assert!(
        err.contains("is signed by a key that is not a trusted audit-signing key"),
        "{err}"
    );
}

// Export to an object store (moto's S3 server) and offline verification
// of the exported copy.

fn export(env: &Env, url: &str, endpoint: &str) -> std::process::Output {
    env.command(&env.owner)
        .args(["audit", "export", url, "--s3-endpoint", endpoint])
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_REGION", "us-east-1")
        .output()
        .unwrap()
}

/// Downloads every object under `prefix` of `bucket` into `dir`.
fn download(
    moto: &support::objects::Moto,
    bucket: &str,
    prefix: &str,
    dir: &std::path::Path,
) -> usize {
    use futures::TryStreamExt;
    let loc = moto.open(&format!("s3://{bucket}"));
    let store = loc.store().clone();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let prefix_path = object_store::path::Path::from(prefix);
    let objects: Vec<_> = rt
        .block_on(store.list(Some(&prefix_path)).try_collect::<Vec<_>>())
        .unwrap();
    for meta in &objects {
        let bytes = rt
            .block_on(async { store.get(&meta.location).await.unwrap().bytes().await })
            .unwrap();
        let rel = meta
            .location
            .as_ref()
            .strip_prefix(&format!("{prefix}/"))
            .unwrap();
        let target = dir.join(rel);
        std::fs::create_dir_all(target.parent().unwrap()).unwrap();
        std::fs::write(target, bytes).unwrap();
    }
    objects.len()
}

#[test]
fn export_to_s3_is_create_only_resumable_and_verifies_offline() {
    let (env, _) = segmented_env();
    let moto = support::objects::Moto::start();
    moto.create_bucket("audit");
    let url = "s3://audit/host-1";
    let o = export(&env, url, &moto.endpoint);
    let first: serde_json::Value = json(&o);
    // The export's own record (ReadAuditTrail) may close a segment, so
    // count what is there after it.
    let total = (segments(&env).len() + digests(&env).len()) as u64;
    let uploaded = first["uploaded"].as_array().unwrap().len() as u64;
    assert_eq!(first["already_there"], 0, "{first}");
    assert!(uploaded >= total - 2, "{first}");
    let names: Vec<&str> = first["uploaded"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    let first_digest = names
        .iter()
        .position(|n| n.starts_with("audit.digests/"))
        .unwrap();
    assert!(
        names[..first_digest]
            .iter()
            .all(|n| n.starts_with("audit.segments/"))
            && names[first_digest..]
                .iter()
                .all(|n| n.starts_with("audit.digests/")),
        "segments go before the digests: {names:?}"
    );

    // Resumed with the ledger lost: every object is already there, same bytes.
    std::fs::remove_file(env.home.join("audit.exported")).unwrap();
    let again: serde_json::Value = json(&export(&env, url, &moto.endpoint));
    assert_eq!(
        again["already_there"].as_u64().unwrap(),
        uploaded,
        "{again}"
    );

    // The copy verifies offline with only the public key.
    let keys = public_keys_file(&env, &[]);
    let copy = env.path("downloaded");
    let n = download(&moto, "audit", "host-1", &copy) as u64;
    assert_eq!(
        n,
        uploaded + again["uploaded"].as_array().unwrap().len() as u64
    );
    let o = verify_offline(&keys, &copy);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(
        stdout(&o).contains(" signed digest(s) verified ("),
        "{}",
        stdout(&o)
    );

    // Create-only: an object with other bytes under a name is never replaced.
    let victim = copy.join(names[0]);
    let store_loc = moto.open(url);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let path = object_store::path::Path::from(format!("host-1/{}", names[0]));
    rt.block_on(
        store_loc
            .store()
            .put(&path, b"not a segment".to_vec().into()),
    )
    .unwrap();
    std::fs::remove_file(env.home.join("audit.exported")).unwrap();
    let o = export(&env, url, &moto.endpoint);
    assert_ne!(o.status.code(), Some(0));
    assert!(
        stderr(&o).contains("already there with other bytes: not overwritten"),
        "{}",
        stderr(&o)
    );
    assert!(victim.exists());
}

// Retention.

fn prune(env: &Env) -> serde_json::Value {
    env.ok(&env.owner, &["audit", "prune", "--older-than-days", "0"])
}

#[test]
fn retention_removes_only_exported_and_digested_segments_and_records_it() {
    let (env, _) = segmented_env();
    // Nothing exported yet: nothing goes.
    let v = prune(&env);
    assert_eq!(v["segments"], serde_json::json!([]), "{v}");
    let dest = env.path("exported");
    std::fs::create_dir_all(&dest).unwrap();
    let url = format!("file://{}", dest.display());
    let exported: serde_json::Value = env.ok(&env.owner, &["audit", "export", &url]);
    let exported_segments: Vec<String> = exported["uploaded"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|n| n.as_str().unwrap().strip_prefix("audit.segments/"))
        .map(str::to_string)
        .collect();
    assert!(!exported_segments.is_empty());
    let before = segments(&env);
    let ends: Vec<u64> = before
        .iter()
        .map(|s| first_seq(s) + record_lines(&body(s)).len() as u64 - 1)
        .collect();
    let v = prune(&env);
    let removed: Vec<String> = v["segments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap().to_string())
        .collect();
    // Exactly the exported segments go (all of them are listed by a digest:
    // one is written at every close), oldest first.
    assert_eq!(removed, exported_segments, "{v}");
    let after = segments(&env);
    for name in &removed {
        assert!(
            !after.iter().any(|p| p.ends_with(name)),
            "{name} is still there"
        );
    }
    assert!(after.len() >= before.len() - removed.len());
    let through = v["through_seq"].as_u64().unwrap();
    assert_eq!(
        through,
        ends[removed.len() - 1],
        "the last removed segment ends at the record the prune names"
    );
    // The trail still verifies: a signed digest vouches for what went.
    let o = verify(&env);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    // And the removal is in the trail (both prunes are recorded).
    let o = env.run(&env.owner, &["audit", "report", "--output", "json"]);
    let rows: serde_json::Value = json(&o);
    let prunes = rows["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["operation"] == "PruneAuditTrail")
        .unwrap_or_else(|| panic!("{rows}"));
    assert_eq!(prunes["count"], 2);
    // A segment removed by hand is still a removal verify reports.
    list_keys(&env, 12);
    let kept = segments(&env);
    assert!(kept.len() >= 2, "{kept:?}");
    std::fs::remove_file(&kept[0]).unwrap();
    let err = failed(&env);
    assert!(err.contains("(segment removed)"), "{err}");
}

//! A key slot's key ARN is not authenticated, but a rewrap ciphertext blob
//! names its key: a slot whose label disagrees with its wrapped key is a
//! corrupt slot everywhere (issue 11, finding 5).
//!
//! The attack: relabel one envelope's active slot with the new key's ARN
//! (the slot checksum recomputed, as anyone who can write the file can).
//! Before the fix, rotate called it `already_current`, inventory counted it
//! under the new key, and deleting the old key (which still wraps its data
//! key) was allowed.

mod support;

use rewrap::envelope::{ParsedHeader, Slot};
use std::io::{Seek, SeekFrom, Write};
use std::path::Path;
use support::cli::*;

fn seal(env: &Env, key: &str, name: &str) {
    let plain = env.path(&format!("{name}.plain"));
    std::fs::write(&plain, b"payroll 2026\n").unwrap();
    let out = env.path(&format!("data/{name}"));
    let o = env.run(
        &env.owner,
        &[
            "encrypt-file",
            "--key-id",
            key,
            plain.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
}

/// Rewrites the active slot of `path` with `arn` as its key label, a valid
/// checksum and everything else unchanged.
fn relabel(path: &Path, arn: &str) {
    let parsed = ParsedHeader::read_from(&mut std::fs::File::open(path).unwrap()).unwrap();
    let (index, slot) = parsed.slots.active().unwrap();
    let forged = Slot {
        key_arn: arn.to_string(),
        ..slot.clone()
    };
    let bytes = forged.encode().unwrap();
    let mut file = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    file.seek(SeekFrom::Start(parsed.header.slot_offset(index)))
        .unwrap();
    file.write_all(&bytes).unwrap();
}

fn arn(env: &Env, key: &str) -> String {
    let v = env.ok(&env.owner, &["describe-key", "--key-id", key]);
    v["KeyMetadata"]["Arn"].as_str().unwrap().to_string()
}

#[test]
fn a_relabelled_slot_is_corrupt_for_rotate_inventory_and_the_interlock() {
    let env = Env::new();
    let old = env.key("old");
    let new = env.key("new");
    let (old_arn, new_arn) = (arn(&env, &old), arn(&env, &new));
    std::fs::create_dir_all(env.path("data")).unwrap();
    seal(&env, &old, "forged");
    seal(&env, &old, "honest");
    relabel(&env.path("data/forged"), &new_arn);

    // rotate: the forged slot is a failure of its own kind, not current.
    let o = env.run(
        &env.owner,
        &["rotate", "--to", &new, "--report", "r.json", "data"],
    );
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(env.path("r.json")).unwrap()).unwrap();
    assert_eq!(report["already_current"], 0, "{report:#}");
    assert_eq!(report["rotated"], 1, "{report:#}");
    let failures = report["failures"].as_array().unwrap();
    assert_eq!(failures.len(), 1, "{report:#}");
    assert!(failures[0]["path"]
        .as_str()
        .unwrap()
        .ends_with("data/forged"));
    assert_eq!(failures[0]["kind"], "SlotKeyMismatch");
    let old_id = old_arn.rsplit('/').next().unwrap();
    assert_eq!(
        failures[0]["error"].as_str().unwrap(),
        format!(
            "key slot 0 says {new_arn} version 1 but its wrapped key is under key {old_id} version 1: \
             the slot's key label was changed"
        )
    );

    // inventory: the new key holds the honest envelope only.
    let o = env.run(&env.owner, &["inventory", "data"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let inv: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(inv["envelopes"], 1, "{inv:#}");
    assert_eq!(inv["keys"][&new_arn]["envelopes"], 1, "{inv:#}");
    assert_eq!(inv["failed"], 1);
    assert_eq!(inv["failures"][0]["kind"], "SlotKeyMismatch");

    // The interlock: the KMS knows it last wrapped the forged file's data
    // key under the old key, whatever the slot says.
    let o = env.run(&env.owner, &["schedule-key-deletion", "--key-id", &old]);
    assert_eq!(o.status.code(), Some(254), "{}", stderr(&o));
    assert!(
        stderr(&o).contains(&format!(
            "{old_arn} still wraps the data keys of 1 envelope(s)"
        )),
        "{}",
        stderr(&o)
    );
}

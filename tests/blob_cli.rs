//! Object-store locations through the real binary (file:// store): encrypt to
//! a location, rotate it as the storage rotator, decrypt as the reader; the
//! body object is never rewritten.

mod support;

use support::cli::*;

#[test]
fn rotate_a_blob_location_through_the_cli() {
    let env = Env::new();
    let writer = env.principal("app-writer");
    let reader = env.principal("app-reader");
    let rotator = env.principal("storage-rotator");
    let k1 = env.key("v1");
    let k2 = env.key("v2");
    let store = env.path("store");
    std::fs::create_dir_all(store.join("data")).unwrap();
    let url = format!("file://{}/data", store.display());
    let mut originals = Vec::new();
    for (i, size) in [0usize, 1, 65_536, 300_001].into_iter().enumerate() {
        let bytes: Vec<u8> = (0..size).map(|j| (j * 31 + i) as u8).collect();
        let src = env.path(&format!("in-{i}.bin"));
        std::fs::write(&src, &bytes).unwrap();
        let out = env.run(
            &writer,
            &[
                "encrypt-file",
                "--key-id",
                &k1,
                "--context",
                "purpose=app-data",
                src.to_str().unwrap(),
                "-o",
                &format!("{url}/obj-{i}"),
            ],
        );
        assert!(out.status.success(), "{}", stderr(&out));
        originals.push(bytes);
    }
    let bodies_before: Vec<Vec<u8>> = (0..4)
        .map(|i| std::fs::read(store.join(format!("data/obj-{i}"))).unwrap())
        .collect();
    let mtimes_before: Vec<_> = (0..4)
        .map(|i| {
            std::fs::metadata(store.join(format!("data/obj-{i}")))
                .unwrap()
                .modified()
                .unwrap()
        })
        .collect();

    let report = env.path("report.json");
    let out = env.run(
        &rotator,
        &[
            "rotate",
            "--to",
            &k2,
            "--report",
            report.to_str().unwrap(),
            &url,
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    assert_eq!(r["rotated"], 4);
    assert_eq!(r["failed"], 0);
    assert_eq!(r["conflicts"], 0);
    let again = env.ok(&rotator, &["rotate", "--to", &k2, &url]);
    assert_eq!(again["rotated"], 0);
    assert_eq!(again["already_current"], 4);

    for i in 0..4 {
        let body = store.join(format!("data/obj-{i}"));
        assert_eq!(
            std::fs::read(&body).unwrap(),
            bodies_before[i],
            "body {i} untouched"
        );
        assert_eq!(
            std::fs::metadata(&body).unwrap().modified().unwrap(),
            mtimes_before[i]
        );
        let dst = env.path(&format!("out-{i}.bin"));
        let out = env.run(
            &reader,
            &[
                "decrypt-file",
                &format!("{url}/obj-{i}"),
                "-o",
                dst.to_str().unwrap(),
            ],
        );
        assert!(out.status.success(), "{}", stderr(&out));
        assert_eq!(std::fs::read(&dst).unwrap(), originals[i]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert!(v["key_arn"].as_str().unwrap().ends_with(&k2));
    }
    let denied = env.path("denied.bin");
    let out = env.run(
        &rotator,
        &[
            "decrypt-file",
            &format!("{url}/obj-3"),
            "-o",
            denied.to_str().unwrap(),
        ],
    );
    // A single object: a KMS error is 254 (README exit-code table).
    assert_eq!(out.status.code(), Some(254));
    assert!(
        stderr(&out).contains("AccessDeniedException"),
        "{}",
        stderr(&out)
    );
    assert!(!denied.exists(), "no output left behind");

    let inv = env.ok(&rotator, &["inventory", &url]);
    assert_eq!(inv["envelopes"], 4);
    let out = env.run(&rotator, &["rotate", "--to", &k2, &url, "/tmp"]);
    assert_eq!(out.status.code(), Some(2));
}

//! Replays every fuzz corpus file and every recorded crash case through the
//! same entry points the fuzz targets call (`rewrap::fuzz`), on stable Rust,
//! so CI covers what the fuzzers found. `scripts/fuzz` runs the fuzzers.

mod support;

use std::path::PathBuf;

fn fuzz_dir() -> PathBuf {
    support::repo().join("fuzz")
}

/// The files of `fuzz/<kind>/<target>/`, sorted.
fn files(kind: &str, target: &str) -> Vec<PathBuf> {
    let Ok(dir) = std::fs::read_dir(fuzz_dir().join(kind).join(target)) else {
        return Vec::new();
    };
    let mut out: Vec<PathBuf> = dir.map(|e| e.unwrap().path()).collect();
    out.sort();
    out
}

#[test]
fn every_target_has_a_fuzz_target_file_and_a_seeded_corpus() {
    for (name, _) in rewrap::fuzz::TARGETS {
        let target = fuzz_dir().join("fuzz_targets").join(format!("{name}.rs"));
        assert!(target.is_file(), "{} is missing", target.display());
        let seeds = files("corpus", name)
            .iter()
            .filter(|p| {
                p.file_name()
                    .unwrap()
                    .to_string_lossy()
                    .starts_with("seed-")
            })
            .count();
        assert!(seeds >= 2, "{name}: {seeds} seed files");
    }
    let listed: Vec<String> = std::fs::read_dir(fuzz_dir().join("fuzz_targets"))
        .unwrap()
        .map(|e| {
            e.unwrap()
                .path()
                .file_stem()
                .unwrap()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    assert_eq!(listed.len(), rewrap::fuzz::TARGETS.len(), "{listed:?}");
}

#[test]
fn every_corpus_file_and_crash_case_replays_without_a_panic() {
    let mut replayed = 0;
    for (name, run) in rewrap::fuzz::TARGETS {
        for kind in ["corpus", "regressions"] {
            for path in files(kind, name) {
                let data = std::fs::read(&path).unwrap();
                let outcome = std::panic::catch_unwind(|| run(&data));
                assert!(outcome.is_ok(), "{name}: {} panics", path.display());
                replayed += 1;
            }
        }
    }
    assert!(replayed >= 150, "only {replayed} files replayed");
}

/// The `object_header` seeds hold what the server must accept (as the
/// client encodes names) and each way a value is refused, with the exact
/// decoded name or reason: the fuzzer starts from both sides.
#[test]
fn object_header_seeds_decode_to_the_expected_names_and_refusals() {
    let decode = |seed: &str| {
        let data = std::fs::read(fuzz_dir().join("corpus/object_header").join(seed)).unwrap();
        rewrap::audit::decode_object_header(&data)
    };
    let ok = |name: &str| Ok(name.to_string());
    assert_eq!(decode("seed-path"), ok("/srv/conf/db.enc.yaml"));
    assert_eq!(decode("seed-url"), ok("s3://bucket/conf/0.enc.json"));
    assert_eq!(decode("seed-non-ascii"), ok("/data/b ä.txt"));
    assert_eq!(decode("seed-escaped-control"), ok("tree/c\\u{a}d.txt"));
    assert_eq!(decode("seed-lowercase-hex"), ok("a/bä"));
    assert_eq!(decode("seed-long"), ok(&format!("/d{}", "A".repeat(1400))));
    assert_eq!(
        decode("seed-truncated-escape"),
        Err("has a truncated %-escape")
    );
    assert_eq!(decode("seed-bad-escape"), Err("has a bad %-escape"));
    assert_eq!(decode("seed-control"), Err("holds a control character"));
    assert_eq!(decode("seed-not-utf8"), Err("is not UTF-8"));
    assert_eq!(decode("seed-empty"), Err("is empty"));
}

//! Throughput of `PolicySet::evaluate` against 1,000 statements.
//!
//! Ignored by default (timing depends on the machine); run with
//! `cargo test --release --test policy_perf -- --ignored --nocapture`.
//! Each figure is printed next to a 10-statement set measured in the same run.

use rewrap::policy::{AccessRequest, PolicySet};
use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::Instant;

/// `n` statements: each principal `app-{i}` may decrypt `alias/app-{i}` under a
/// context condition; with `globs`, principals are globs (`app-{i}*`), which
/// defeats the literal-principal index and scans every statement.
fn policy(n: usize, globs: bool) -> PolicySet {
    let mut text = String::from(
        "[[statement]]\neffect = \"deny\"\nprincipals = [\"storage-*\"]\n\
         actions = [\"decrypt\"]\nresources = [\"*\"]\n",
    );
    for i in 0..n {
        let star = if globs { "*" } else { "" };
        text.push_str(&format!(
            "[[statement]]\nsid = \"s{i}\"\neffect = \"allow\"\nprincipals = [\"app-{i}{star}\"]\n\
             actions = [\"decrypt\", \"kms:ReEncrypt*\"]\n\
             resources = [\"alias/app-{i}\", \"arn:aws:kms:*:*:alias/app-{i}\"]\n\
             condition = {{ context_equals = {{ purpose = \"app-data\" }} }}\n"
        ));
    }
    PolicySet::from_toml("perf.toml", &text).unwrap()
}

fn per_second(set: &PolicySet, principal: &str, resources: &[&str]) -> f64 {
    let context: BTreeMap<String, String> =
        [("purpose".to_string(), "app-data".to_string())].into();
    let req = AccessRequest {
        principal,
        action: "kms:ReEncryptFrom",
        resources,
        context: Some(&context),
    };
    assert!(set.evaluate(&req).allowed);
    for _ in 0..50_000 {
        black_box(set.evaluate(black_box(&req)));
    }
    let n = 500_000;
    let start = Instant::now();
    for _ in 0..n {
        black_box(set.evaluate(black_box(&req)));
    }
    n as f64 / start.elapsed().as_secs_f64()
}

#[test]
#[ignore = "timing; run in release with --ignored --nocapture"]
fn evaluate_throughput_against_1000_statements() {
    let key = [
        "1234abcd-12ab-34cd-56ef-1234567890ab",
        "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab",
        "alias/app-9",
        "arn:aws:kms:us-east-1:111122223333:alias/app-9",
    ];
    let small = per_second(&policy(10, false), "app-9", &key);
    let large = per_second(&policy(1000, false), "app-9", &key);
    let glob_small = per_second(&policy(10, true), "app-9", &key);
    let glob_large = per_second(&policy(1000, true), "app-9", &key);
    println!(
        "literal principals:   10 statements {small:>12.0}/s, 1000 statements {large:>12.0}/s"
    );
    println!("glob principals:      10 statements {glob_small:>12.0}/s, 1000 statements {glob_large:>12.0}/s");
}

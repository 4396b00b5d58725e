//! `PolicySet::evaluate` against 1,000 statements, with a 10-statement set
//! measured in the same run as the baseline; literal principals (indexed)
//! and glob principals (every statement scanned).
#![allow(missing_docs)] // reason: criterion_group! generates undocumented public functions

/// The allocator the `rewrap` binary ships with (src/main.rs), so the bench
/// measures the shipped configuration.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use rewrap::policy::{AccessRequest, Action, PolicySet};
use std::collections::BTreeMap;
use std::hint::black_box;

/// `n` statements: principal `app-{i}` may decrypt and re-encrypt
/// `alias/app-{i}` under a context condition, after one deny statement.
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
    PolicySet::from_toml("bench.toml", &text).unwrap()
}

fn evaluate(c: &mut Criterion) {
    let key = [
        "1234abcd-12ab-34cd-56ef-1234567890ab",
        "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab",
        "alias/app-9",
        "arn:aws:kms:us-east-1:111122223333:alias/app-9",
    ];
    let context: BTreeMap<String, String> =
        [("purpose".to_string(), "app-data".to_string())].into();
    let req = AccessRequest {
        principal: "app-9",
        action: Action::ReEncryptFrom,
        resources: &key,
        context: Some(&context),
        re_encrypt: None,
        resource_tags: None,
    };
    let mut g = c.benchmark_group("policy_evaluate");
    g.throughput(Throughput::Elements(1));
    for (label, globs) in [("literal", false), ("glob", true)] {
        for n in [10, 1000] {
            let set = policy(n, globs);
            assert!(set.evaluate(&req).allowed);
            g.bench_with_input(BenchmarkId::new(label, n), &set, |b, set| {
                b.iter(|| black_box(set.evaluate(black_box(&req))));
            });
        }
    }
    g.finish();
}

criterion_group!(benches, evaluate);
criterion_main!(benches);

//! Inventory summaries on disk: what re-wrap and inventory runs leave in
//! `<home>/inventory/` (one file per set of roots or location), and what
//! the KMS commands read back before disabling or deleting a key.

use super::inventory::Inventory;
use super::report::{write_json, RewrapReport};
use super::Source;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// What re-wrap and inventory runs leave in `<home>/inventory/`: one file
/// per set of roots (a later run over the same roots replaces it).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct InventorySummary {
    /// The roots walked.
    pub roots: Vec<String>,
    /// When (RFC 3339).
    pub seen_at: String,
    /// `inventory` or `rotate`.
    pub recorded_by: String,
    /// Per key ARN, per version: envelopes.
    pub keys: BTreeMap<String, BTreeMap<String, u64>>,
}

impl InventorySummary {
    /// The summary of an inventory run.
    pub fn from_inventory(inv: &Inventory) -> InventorySummary {
        InventorySummary {
            roots: inv.roots.clone(),
            seen_at: inv.seen_at.clone(),
            recorded_by: "inventory".into(),
            keys: inv
                .keys
                .iter()
                .map(|(k, v)| (k.clone(), v.versions.clone()))
                .collect(),
        }
    }

    /// The summary of a re-wrap run over `source` (the state after it).
    pub fn from_rewrap(source: &Source<'_>, report: &RewrapReport) -> InventorySummary {
        InventorySummary {
            roots: source.roots(),
            seen_at: report.finished_at.clone(),
            recorded_by: "rotate".into(),
            keys: report.after.clone(),
        }
    }

    /// Writes the summary into `<home>/inventory/` (atomically).
    pub fn record(&self, home: &Path) -> std::io::Result<PathBuf> {
        use sha2::{Digest, Sha256};
        let dir = home.join("inventory");
        std::fs::create_dir_all(&dir)?;
        let id = Sha256::digest(self.roots.join("\n").as_bytes());
        let path = dir.join(format!("{}.json", hex::encode(&id[..8])));
        write_json(&path, self)?;
        Ok(path)
    }
}

/// The roots as absolute paths, sorted: the identity of a summary.
pub fn canonical_roots(roots: &[PathBuf]) -> Vec<String> {
    let mut out: Vec<String> = roots
        .iter()
        .map(|r| {
            std::fs::canonicalize(r)
                .unwrap_or_else(|_| r.clone())
                .display()
                .to_string()
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

/// How many envelopes the summaries in `<home>/inventory/` last saw under
/// `key` (an ARN or a key id): for warnings before disabling or deleting a
/// key. Unreadable summaries are ignored; 0 when there are none.
///
/// Summaries of nested roots (`/data` and, later, `/data/a`) are not added
/// up twice: a summary counts as the larger of its own figure and the sum
/// of the summaries directly inside it, whichever of them is newer. The
/// figure may overstate (a stale outer summary wins over newer inner ones)
/// but never misses envelopes a summary saw, which is the safe side for a
/// warning before disabling a key.
pub fn known_envelopes_for_key(home: &Path, key_arn_or_id: &str) -> u64 {
    let found: Vec<(Vec<String>, u64)> = read_summaries(home)
        .into_iter()
        .map(|summary| {
            let count = summary
                .keys
                .iter()
                .filter(|(arn, _)| {
                    *arn == key_arn_or_id || arn.rsplit('/').next() == Some(key_arn_or_id)
                })
                .map(|(_, versions)| versions.values().sum::<u64>())
                .sum();
            (summary.roots, count)
        })
        .collect();
    nested_total(&found)
}

/// Every summary in `<home>/inventory/` (the last run over each set of
/// roots), oldest first; unreadable ones are skipped.
pub fn read_summaries(home: &Path) -> Vec<InventorySummary> {
    let Ok(dir) = std::fs::read_dir(home.join("inventory")) else {
        return Vec::new();
    };
    let mut out: Vec<InventorySummary> = dir
        .flatten()
        .map(|entry| entry.path())
        .filter(|path| path.extension().and_then(|e| e.to_str()) == Some("json"))
        .filter_map(|path| std::fs::read(path).ok())
        .filter_map(|text| serde_json::from_slice(&text).ok())
        .collect();
    out.sort_by(|a, b| a.seen_at.cmp(&b.seen_at));
    out
}

/// The total of `(roots, count)` summaries, nested ones counted once (see
/// [`known_envelopes_for_key`]).
fn nested_total(summaries: &[(Vec<String>, u64)]) -> u64 {
    let within = |inner: &str, outer: &str| Path::new(inner).starts_with(Path::new(outer));
    // `a` covers `b`: every root of `b` lies in a root of `a`, and not the
    // other way round (equal root sets are one summary file).
    let covers = |a: usize, b: usize| {
        let all_in = |x: usize, y: usize| {
            summaries[y]
                .0
                .iter()
                .all(|r| summaries[x].0.iter().any(|o| within(r, o)))
        };
        a != b && all_in(a, b) && !all_in(b, a)
    };
    let n = summaries.len();
    // Immediate children: covered by `s`, and by nothing else `s` covers.
    let children = |s: usize| -> Vec<usize> {
        (0..n)
            .filter(|&c| covers(s, c) && !(0..n).any(|m| covers(s, m) && covers(m, c)))
            .collect()
    };
    fn value(s: usize, counts: &[(Vec<String>, u64)], kids: &dyn Fn(usize) -> Vec<usize>) -> u64 {
        let inner: u64 = kids(s).into_iter().map(|c| value(c, counts, kids)).sum();
        counts[s].1.max(inner)
    }
    (0..n)
        .filter(|&s| !(0..n).any(|o| covers(o, s)))
        .map(|s| value(s, summaries, &children))
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(roots: &[&str], count: u64) -> (Vec<String>, u64) {
        (roots.iter().map(ToString::to_string).collect(), count)
    }

    #[test]
    fn nested_summaries_are_counted_once() {
        // Disjoint roots add up.
        assert_eq!(nested_total(&[s(&["/a"], 3), s(&["/b"], 4)]), 7);
        // A newer inner summary does not add to the outer one.
        assert_eq!(
            nested_total(&[s(&["/data"], 100), s(&["/data/x"], 30)]),
            100
        );
        // Inner summaries that saw more than a stale outer one win.
        assert_eq!(
            nested_total(&[s(&["/data"], 10), s(&["/data/x"], 30), s(&["/data/y"], 40)]),
            70
        );
        // Two levels deep, and a sibling path that only shares a prefix.
        assert_eq!(
            nested_total(&[
                s(&["/d"], 5),
                s(&["/d/x"], 8),
                s(&["/d/x/y"], 9),
                s(&["/dx"], 1)
            ]),
            10
        );
        // A multi-root summary covering a single-root one.
        assert_eq!(nested_total(&[s(&["/a", "/b"], 6), s(&["/b/c"], 2)]), 6);
        assert_eq!(nested_total(&[]), 0);
    }
}

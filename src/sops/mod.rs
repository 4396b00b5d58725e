//! SOPS files (<https://github.com/getsops/sops>) as rewrap re-wraps them:
//! finds the AWS KMS entries of a SOPS file's `sops` metadata block by
//! content, and rewrites only the `arn`, `enc` and `created_at` values of
//! the entries it re-wraps; every other byte stays as it was.
//!
//! A SOPS file's data key is wrapped once per master key. A KMS entry is
//! `{arn, role?, context?, created_at, enc, aws_profile}`, where `enc` is
//! the base64 of the KMS ciphertext blob and `context` the encryption
//! context SOPS passed to Encrypt. The values, the MAC and `lastmodified`
//! (the MAC's authenticated data) do not depend on the wrapped key, so a
//! KMS entry can be re-wrapped by ReEncrypt alone, without the data key.
//!
//! | module | format (report name) | where the KMS entries are |
//! |---|---|---|
//! | `yaml.rs` | YAML (`sops-yaml`) | top-level `sops:` mapping, `kms:` or `key_groups[].kms:` sequences |
//! | `json.rs` | JSON (`sops-json`), binary (`sops-binary`: a JSON object with `data` and `sops`) | top-level `"sops"` object, same shape |
//! | `flat.rs` | dotenv (`sops-dotenv`), INI (`sops-ini`) | flattened keys `sops_kms__list_0__map_arn=...` / `[sops]` section `kms__list_0__map_arn = ...` |
//!
//! Every codec reduces the metadata block to [`Leaf`]s named by their
//! flattened path (SOPS's own flattening: `kms__list_0__map_arn`,
//! `key_groups__list_1__map_kms__list_0__map_context__map_team`), each with
//! the byte range of its value as written (inside quotes for quoted
//! scalars); [`entries`] groups them into [`KmsEntry`]s. Scanners run in
//! linear time over at most [`MAX_SIZE`] bytes and nest at most
//! [`MAX_DEPTH`] levels; they are fuzzed (`fuzz/fuzz_targets/sops_file.rs`).

mod flat;
mod json;
mod yaml;

use std::collections::BTreeMap;
use std::ops::Range;

/// Files larger than this are not taken for SOPS files (SOPS files are
/// configuration; a larger file is read no further than its size).
pub const MAX_SIZE: u64 = 16 << 20;

/// Nesting levels a scanner follows before it refuses the file.
pub const MAX_DEPTH: usize = 64;

/// The serialization of a SOPS file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Format {
    /// YAML.
    Yaml,
    /// JSON.
    Json,
    /// dotenv (`KEY=value` lines).
    Dotenv,
    /// INI.
    Ini,
    /// Binary: SOPS's JSON object `{"data": ..., "sops": ...}`.
    Binary,
}

impl Format {
    /// The name reports and inventories use: `sops-yaml`, `sops-json`,
    /// `sops-dotenv`, `sops-ini`, `sops-binary`.
    pub fn name(self) -> &'static str {
        match self {
            Format::Yaml => "sops-yaml",
            Format::Json => "sops-json",
            Format::Dotenv => "sops-dotenv",
            Format::Ini => "sops-ini",
            Format::Binary => "sops-binary",
        }
    }
}

/// Why a file that looks like a SOPS file cannot be re-wrapped. Nothing
/// was changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SopsError {
    /// The metadata block is not in a shape the codec reads.
    #[error("malformed SOPS metadata ({format}) at byte {at}: {why}")]
    Malformed {
        /// The format name.
        format: &'static str,
        /// Byte offset.
        at: usize,
        /// What was wrong.
        why: &'static str,
    },
    /// A KMS entry lacks its `arn` or `enc`, or `enc` is not base64.
    #[error("SOPS KMS entry {entry} ({format}): {why}")]
    BadEntry {
        /// The format name.
        format: &'static str,
        /// The entry's flattened path prefix (`kms__list_0`).
        entry: String,
        /// What was wrong.
        why: &'static str,
    },
}

impl SopsError {
    /// A short, stable name: `SopsMalformed` or `SopsBadEntry`.
    pub fn kind(&self) -> &'static str {
        match self {
            SopsError::Malformed { .. } => "SopsMalformed",
            SopsError::BadEntry { .. } => "SopsBadEntry",
        }
    }

    fn malformed(format: Format, at: usize, why: &'static str) -> SopsError {
        SopsError::Malformed {
            format: format.name(),
            at,
            why,
        }
    }
}

/// One scalar of the metadata block: its flattened path, its value and
/// where the value's bytes are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leaf {
    /// SOPS's flattened path below `sops` (`kms__list_0__map_enc`).
    pub path: String,
    /// The value, unescaped.
    pub value: String,
    /// The bytes of the value as written (inside quotes when quoted).
    pub span: Range<usize>,
}

/// A value of a KMS entry and where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    /// The value, unescaped.
    pub value: String,
    /// The bytes to replace to change it.
    pub span: Range<usize>,
}

/// One AWS KMS entry of a SOPS file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KmsEntry {
    /// The key group (`key_groups[g]`), or `None` for the top-level `kms`
    /// list.
    pub group: Option<usize>,
    /// Position in its list.
    pub index: usize,
    /// The key ARN.
    pub arn: Field,
    /// base64 of the KMS ciphertext blob.
    pub enc: Field,
    /// When it was wrapped (RFC 3339), if written.
    pub created_at: Option<Field>,
    /// The encryption context.
    pub context: BTreeMap<String, String>,
    /// The role SOPS assumes for this entry, if any.
    pub role: Option<String>,
}

impl KmsEntry {
    /// The wrapped data key (the decoded `enc`).
    pub fn blob(&self) -> Vec<u8> {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD
            .decode(self.enc.value.as_bytes())
            .unwrap_or_default()
    }

    /// The entry's flattened path prefix (`kms__list_0`,
    /// `key_groups__list_1__map_kms__list_0`), as reports name it.
    pub fn name(&self) -> String {
        match self.group {
            Some(g) => format!("key_groups__list_{g}__map_kms__list_{}", self.index),
            None => format!("kms__list_{}", self.index),
        }
    }
}

/// A parsed SOPS file: its format and KMS entries (other master keys are
/// not read).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SopsFile {
    /// The serialization.
    pub format: Format,
    /// Every AWS KMS entry, in file order of their groups and indexes.
    pub entries: Vec<KmsEntry>,
}

/// Reads `bytes` as a SOPS file: `Ok(None)` when it is not one (no `sops`
/// metadata block with a `mac`), an error when it is one whose metadata
/// cannot be read.
pub fn parse(bytes: &[u8]) -> Result<Option<SopsFile>, SopsError> {
    if bytes.len() as u64 > MAX_SIZE || !contains(bytes, b"sops") {
        return Ok(None);
    }
    let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
    let found = if first == Some(&b'{') {
        json::leaves(bytes)?
    } else if let Some(found) = flat::leaves(bytes)? {
        Some(found)
    } else {
        yaml::leaves(bytes)?
    };
    let Some((format, leaves)) = found else {
        return Ok(None);
    };
    if !leaves.iter().any(|l| l.path == "mac") {
        return Ok(None);
    }
    Ok(Some(SopsFile {
        format,
        entries: entries(format, &leaves)?,
    }))
}

/// Groups leaves into KMS entries (`kms__list_I__map_F` and
/// `key_groups__list_G__map_kms__list_I__map_F`).
pub fn entries(format: Format, leaves: &[Leaf]) -> Result<Vec<KmsEntry>, SopsError> {
    // (group, index) -> (field name, leaf)
    type Fields<'l> = Vec<(&'l str, &'l Leaf)>;
    let mut by_entry: BTreeMap<(Option<usize>, usize), Fields<'_>> = BTreeMap::new();
    for leaf in leaves {
        let (group, rest) = match leaf.path.strip_prefix("key_groups__list_") {
            Some(rest) => {
                let (g, rest) = split_index(rest);
                let Some(rest) = rest.strip_prefix("__map_") else {
                    continue;
                };
                (g, rest)
            }
            None => (None, leaf.path.as_str()),
        };
        let Some(rest) = rest.strip_prefix("kms__list_") else {
            continue;
        };
        let (Some(index), rest) = split_index(rest) else {
            continue;
        };
        let Some(field) = rest.strip_prefix("__map_") else {
            continue;
        };
        if leaf.path.starts_with("key_groups") && group.is_none() {
            continue;
        }
        by_entry
            .entry((group, index))
            .or_default()
            .push((field, leaf));
    }
    let mut out = Vec::with_capacity(by_entry.len());
    for ((group, index), fields) in by_entry {
        let mut arn = None;
        let mut enc = None;
        let mut created_at = None;
        let mut role = None;
        let mut context = BTreeMap::new();
        for (name, leaf) in fields {
            let field = || Field {
                value: leaf.value.clone(),
                span: leaf.span.clone(),
            };
            match name {
                "arn" => arn = Some(field()),
                "enc" => enc = Some(field()),
                "created_at" => created_at = Some(field()),
                "role" if !leaf.value.is_empty() => role = Some(leaf.value.clone()),
                _ => {
                    if let Some(k) = name.strip_prefix("context__map_") {
                        context.insert(k.to_string(), leaf.value.clone());
                    }
                }
            }
        }
        let bad = |why| SopsError::BadEntry {
            format: format.name(),
            entry: match group {
                Some(g) => format!("key_groups__list_{g}__map_kms__list_{index}"),
                None => format!("kms__list_{index}"),
            },
            why,
        };
        let arn = arn.ok_or_else(|| bad("no arn"))?;
        let enc = enc.ok_or_else(|| bad("no enc"))?;
        let entry = KmsEntry {
            group,
            index,
            arn,
            enc,
            created_at,
            context,
            role,
        };
        if entry.blob().is_empty() {
            return Err(bad("enc is not base64"));
        }
        out.push(entry);
    }
    Ok(out)
}

/// `"12__rest"` -> `(Some(12), "__rest")`.
fn split_index(s: &str) -> (Option<usize>, &str) {
    let digits = s.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 || digits > 9 {
        return (None, s);
    }
    (s[..digits].parse().ok(), &s[digits..])
}

/// `bytes` with each `(span, value)` replaced; spans must not overlap.
/// The values rewrap writes (ARNs, base64, RFC 3339 times) need no
/// escaping in any SOPS format.
pub fn rewrite(bytes: &[u8], edits: &[(Range<usize>, String)]) -> Vec<u8> {
    let mut edits: Vec<&(Range<usize>, String)> = edits.iter().collect();
    edits.sort_by_key(|(r, _)| r.start);
    let mut out = Vec::with_capacity(bytes.len() + 256);
    let mut at = 0;
    for (span, value) in edits {
        out.extend_from_slice(&bytes[at..span.start]);
        out.extend_from_slice(value.as_bytes());
        at = span.end;
    }
    out.extend_from_slice(&bytes[at..]);
    out
}

/// True when `value` can be written into any SOPS format's scalar as is.
pub fn safe_value(value: &str) -> bool {
    !value.is_empty()
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+/=:-_.".contains(&b))
}

/// The time now as SOPS writes `created_at` (RFC 3339, UTC, seconds).
pub fn now_rfc3339() -> String {
    chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Lines of `bytes`: (start, end without `\n` and a trailing `\r`).
fn lines(bytes: &[u8]) -> impl Iterator<Item = (usize, usize)> + '_ {
    let mut at = 0;
    std::iter::from_fn(move || {
        if at >= bytes.len() {
            return None;
        }
        let start = at;
        let nl = bytes[at..].iter().position(|&b| b == b'\n');
        let mut end = nl.map_or(bytes.len(), |n| at + n);
        at = nl.map_or(bytes.len(), |n| at + n + 1);
        if end > start && bytes[end - 1] == b'\r' {
            end -= 1;
        }
        Some((start, end))
    })
}

fn utf8(format: Format, bytes: &[u8], at: usize) -> Result<String, SopsError> {
    std::str::from_utf8(bytes)
        .map(str::to_string)
        .map_err(|_| SopsError::malformed(format, at, "a metadata value is not UTF-8"))
}

#[cfg(test)]
mod tests;

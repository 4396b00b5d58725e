//! Signed digests (as CloudTrail's log-file integrity validation): the
//! trail's closed segments and its end, signed with an Ed25519 key held
//! sealed in the keystore, each digest chained to the one before.
//!
//! A digest is written at each segment close and whenever the last one is
//! older than the digest interval, to `audit.digests/<number, 20
//! digits>.json` beside the active file: one JSON object, [`Digest`], whose
//! `signature` is the hex Ed25519 signature of the object's serialization
//! with `signature` set to `""` (fields in declaration order, no
//! whitespace: the same rule as a record's hash). It lists the segments
//! closed since the digest before (file name, first `seq`, record count,
//! last hash, SHA-256 of the file), the `seq` and hash of the trail's last
//! record when it was made, the public key that signed it and the previous
//! digest's signature.
//!
//! The signing keys live in `audit.signing`, sealed under the root key
//! (AAD `rewrap audit signing v1`): the 32-byte Ed25519 seeds, oldest
//! first, the last one signing. Rotating adds a seed; the old ones are kept
//! so their public keys stay listed. `audit.public-keys` beside it lists
//! every public key (hex, one a line, oldest first): what an auditor needs
//! to verify a copy of the trail without any keystore access.
//!
//! [`verify_digests`] checks, with a set of trusted public keys: every
//! digest's signature and its link to the one before (a removed, inserted
//! or replaced digest breaks it), that every segment a digest lists is
//! present with the same SHA-256, and that the trail holds each digest's
//! last record with that hash (records removed back to a digest, or
//! rewritten, are found). Without keys in the keystore or given, a trail
//! has no digests to check.

use super::segment::{self, SegmentHeader, SegmentReader};
use super::{io_error, AuditError};
use crate::root::RootKey;
use crate::secret::Secret;
use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair, UnparsedPublicKey, ED25519};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

const SIGNING_AAD: &[u8] = b"rewrap audit signing v1";
/// The folder of digests, beside the active file.
pub(super) const DIGESTS_DIR: &str = "audit.digests";
/// The sealed signing keys, beside the active file.
const SIGNING_FILE: &str = "audit.signing";
/// The public keys, beside the active file.
pub const PUBLIC_KEYS_FILE: &str = "audit.public-keys";
const SEED: usize = 32;

/// One segment as a digest lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DigestSegment {
    /// The segment's file name in `audit.segments/`.
    pub file: String,
    /// `seq` of its first record.
    pub first_seq: u64,
    /// Its record count.
    pub records: u64,
    /// Hash of its last record.
    pub last_hash: String,
    /// Hex SHA-256 of the file.
    pub sha256: String,
}

/// A signed digest of the trail. Field order is part of the signature
/// definition: do not reorder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Digest {
    /// 1-based, consecutive.
    pub number: u64,
    /// When it was made (RFC 3339 UTC).
    pub time: String,
    /// Segments closed since the previous digest.
    pub segments: Vec<DigestSegment>,
    /// The last `seq` of the newest segment this or an earlier digest lists.
    pub segments_through: u64,
    /// `seq` of the trail's last record when the digest was made.
    pub last_seq: u64,
    /// Hash of that record.
    pub last_hash: String,
    /// Hex public key of the signer.
    pub public_key: String,
    /// The previous digest's signature (`""` for the first).
    pub previous_signature: String,
    /// Records up to this `seq` were removed by retention (0: none), after
    /// they were exported and listed by a digest.
    #[serde(default)]
    pub pruned_through: u64,
    /// Hash of record `pruned_through`: what the first kept record chains onto.
    #[serde(default)]
    pub pruned_hash: String,
    /// Hex Ed25519 signature (see the module doc).
    pub signature: String,
}

impl Digest {
    fn signed_bytes(&self) -> Vec<u8> {
        let mut unsigned = self.clone();
        unsigned.signature.clear();
        serde_json::to_vec(&unsigned).expect("a digest serializes")
    }
}

/// The signing keys, unsealed.
struct SigningKeys {
    seeds: Secret,
}

impl SigningKeys {
    fn count(&self) -> usize {
        self.seeds.expose().len() / SEED
    }

    fn pair(&self, i: usize) -> Result<Ed25519KeyPair, AuditError> {
        Ed25519KeyPair::from_seed_unchecked(&self.seeds.expose()[i * SEED..(i + 1) * SEED])
            .map_err(|_| signing_error("a sealed audit-signing key does not load"))
    }

    fn public_keys(&self) -> Result<Vec<String>, AuditError> {
        (0..self.count())
            .map(|i| Ok(hex::encode(self.pair(i)?.public_key().as_ref())))
            .collect()
    }
}

fn signing_error(problem: &str) -> AuditError {
    AuditError::Checkpoint {
        problem: problem.to_string(),
    }
}

fn beside(active: &Path, name: &str) -> PathBuf {
    active.with_file_name(name)
}

/// Unseals the signing keys; `None` if there are none yet.
fn load_keys(active: &Path, root: &dyn RootKey) -> Result<Option<SigningKeys>, AuditError> {
    let path = beside(active, SIGNING_FILE);
    let sealed = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_error(&path)(e)),
    };
    let seeds = root.unseal(SIGNING_AAD, &sealed).map_err(|_| {
        signing_error(&format!(
            "{} does not authenticate (changed, or not made with this keystore's root key)",
            path.display()
        ))
    })?;
    if seeds.expose().is_empty() || seeds.expose().len() % SEED != 0 {
        return Err(signing_error(
            "the sealed audit-signing keys have a bad length",
        ));
    }
    Ok(Some(SigningKeys { seeds }))
}

/// Adds a new signing key (the first, or a rotation); returns every public
/// key, oldest first, as also written to `audit.public-keys`.
pub(crate) fn rotate_signing_key(
    active: &Path,
    root: &dyn RootKey,
) -> Result<Vec<String>, AuditError> {
    let old = load_keys(active, root)?;
    let old_len = old.as_ref().map_or(0, |o| o.seeds.len());
    // Sized up front: growing the buffer would leave a copy unwiped.
    let mut seeds = Secret::new(Vec::with_capacity(old_len + SEED));
    if let Some(old) = &old {
        seeds.expose_mut().extend_from_slice(old.seeds.expose());
    }
    seeds
        .expose_mut()
        .extend_from_slice(Secret::random(SEED).expose());
    let keys = SigningKeys { seeds };
    let sealed = root
        .seal(SIGNING_AAD, keys.seeds.expose())
        .map_err(|e| signing_error(&format!("cannot seal the audit-signing keys: {e}")))?;
    let path = beside(active, SIGNING_FILE);
    write_file(&path, &sealed)?;
    let public = keys.public_keys()?;
    write_file(
        &beside(active, PUBLIC_KEYS_FILE),
        format!("{}\n", public.join("\n")).as_bytes(),
    )?;
    Ok(public)
}

/// The audit-signing keys of the trail at `active` sealed under `to`
/// instead of `from` (a move of the keystore's root); `None` if there are
/// none yet.
pub(crate) fn reseal_signing_keys(
    active: &Path,
    from: &dyn RootKey,
    to: &dyn RootKey,
) -> Result<Option<Vec<u8>>, AuditError> {
    let Some(keys) = load_keys(active, from)? else {
        return Ok(None);
    };
    to.seal(SIGNING_AAD, keys.seeds.expose())
        .map(Some)
        .map_err(|e| signing_error(&format!("cannot seal the audit-signing keys: {e}")))
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<(), AuditError> {
    crate::keystore::write_atomic(path, bytes).map_err(|e| AuditError::Io {
        path: path.to_path_buf(),
        source: std::io::Error::other(e.to_string()),
    })
}

/// The public keys listed beside the trail (or in any such file).
pub fn read_public_keys(file: &Path) -> Result<Vec<String>, AuditError> {
    let text = std::fs::read_to_string(file).map_err(io_error(file))?;
    let keys: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect();
    if keys
        .iter()
        .any(|k| k.len() != 64 || hex::decode(k).is_err())
    {
        return Err(AuditError::Malformed {
            line: 0,
            problem: format!(
                "{}: not a list of hex Ed25519 public keys (one a line)",
                file.display()
            ),
        });
    }
    Ok(keys)
}

/// The digests of the trail, by number (file name order).
pub(super) fn list(active: &Path) -> Result<Vec<PathBuf>, AuditError> {
    let dir = beside(active, DIGESTS_DIR);
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_error(&dir)(e)),
    };
    let mut v = Vec::new();
    for entry in entries {
        let entry = entry.map_err(io_error(&dir))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let json = Path::new(&name).extension().is_some_and(|e| e == "json");
        if name.len() == 25 && json {
            v.push(entry.path());
        }
    }
    v.sort();
    Ok(v)
}

fn read_digest(path: &Path) -> Result<Digest, AuditError> {
    let bytes = std::fs::read(path).map_err(io_error(path))?;
    serde_json::from_slice(&bytes).map_err(|e| AuditError::Malformed {
        line: 0,
        problem: format!("digest {}: not a digest ({e})", path.display()),
    })
}

fn file_sha256(path: &Path) -> Result<String, AuditError> {
    let bytes = std::fs::read(path).map_err(io_error(path))?;
    Ok(hex::encode(Sha256::digest(&bytes)))
}

/// When the last digest was made (Unix seconds), if there is one.
pub(super) fn last_time(active: &Path) -> Option<i64> {
    let last = list(active).ok()?.pop()?;
    let d = read_digest(&last).ok()?;
    chrono::DateTime::parse_from_rfc3339(&d.time)
        .ok()
        .map(|t| t.timestamp())
}

/// Writes the next digest: the segments closed since the last one and the
/// end of the trail (`seq`, `hash`). A no-op without signing keys. The
/// caller holds the trail's lock, and the records up to `seq` are on
/// stable storage.
pub(super) fn write_next(
    active: &Path,
    root: &dyn RootKey,
    end: (u64, &str),
) -> Result<Option<Digest>, AuditError> {
    write_next_pruning(active, root, end, None)
}

/// [`write_next`], saying that records up to `pruned` (`seq`, hash) are
/// removed (else carrying the previous digest's statement forward).
pub(super) fn write_next_pruning(
    active: &Path,
    root: &dyn RootKey,
    end: (u64, &str),
    pruned: Option<(u64, &str)>,
) -> Result<Option<Digest>, AuditError> {
    let keys = if let Some(keys) = load_keys(active, root)? {
        keys
    } else {
        {
            // The first digest of this trail (a new keystore, or one from
            // before digests): its signing key is made now.
            rotate_signing_key(active, root)?;
            load_keys(active, root)?.ok_or_else(|| signing_error("the new signing key is gone"))?
        }
    };
    let existing = list(active)?;
    let previous = existing.last().map(|p| read_digest(p)).transpose()?;
    let listed_up_to = previous.as_ref().map_or(0, |d| d.segments_through);
    let mut segments = Vec::new();
    for path in segment::list(active)? {
        let header: SegmentHeader = SegmentReader::open(&path)?.header().clone();
        if header.first_seq <= listed_up_to {
            continue;
        }
        segments.push(DigestSegment {
            file: path
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned(),
            first_seq: header.first_seq,
            records: header.records,
            last_hash: header.last_hash.clone(),
            sha256: file_sha256(&path)?,
        });
    }
    let pair = keys.pair(keys.count() - 1)?;
    let segments_through = segments
        .last()
        .map_or(listed_up_to, |s| s.first_seq + s.records - 1);
    let mut digest = Digest {
        number: previous.as_ref().map_or(1, |d| d.number + 1),
        time: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        segments,
        segments_through,
        last_seq: end.0,
        last_hash: end.1.to_string(),
        public_key: hex::encode(pair.public_key().as_ref()),
        pruned_through: pruned.map_or_else(
            || previous.as_ref().map_or(0, |d| d.pruned_through),
            |p| p.0,
        ),
        pruned_hash: pruned.map_or_else(
            || {
                previous
                    .as_ref()
                    .map(|d| d.pruned_hash.clone())
                    .unwrap_or_default()
            },
            |p| p.1.to_string(),
        ),
        previous_signature: previous.map(|d| d.signature).unwrap_or_default(),
        signature: String::new(),
    };
    digest.signature = hex::encode(pair.sign(&digest.signed_bytes()).as_ref());
    let dir = beside(active, DIGESTS_DIR);
    std::fs::create_dir_all(&dir).map_err(io_error(&dir))?;
    let path = dir.join(format!("{:020}.json", digest.number));
    write_file(
        &path,
        &serde_json::to_vec(&digest).expect("a digest serializes"),
    )?;
    Ok(Some(digest))
}

/// The segment files any digest lists.
pub(super) fn segments_listed(
    active: &Path,
) -> Result<std::collections::BTreeSet<String>, AuditError> {
    let mut names = std::collections::BTreeSet::new();
    for path in list(active)? {
        names.extend(read_digest(&path)?.segments.into_iter().map(|s| s.file));
    }
    Ok(names)
}

/// What the newest digest says retention removed: (`seq`, hash) of the
/// last removed record. Read without checking signatures; the walk starts
/// there and [`verify_digests`] then checks the digest that says so.
pub(super) fn pruned(active: &Path) -> Result<Option<(u64, String)>, AuditError> {
    let Some(last) = list(active)?.pop() else {
        return Ok(None);
    };
    let d = read_digest(&last)?;
    Ok((d.pruned_through > 0).then_some((d.pruned_through, d.pruned_hash)))
}

/// What `verify_digests` found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DigestSummary {
    /// Digests checked.
    pub digests: u64,
    /// `seq` covered by the last digest.
    pub last_digest_seq: u64,
    /// The last `seq` of the closed segments the digests list.
    pub segments_through: u64,
}

/// Checks the digests of the trail whose active file is `active` against
/// `trusted` public keys (hex). `records` is the `seq` -> hash lookup of the
/// trail (from a verified walk) and `end` the trail's last `seq`; with
/// `tail_required`, the trail must reach every digest's last record (a
/// live trail); without (an exported copy, closed segments only), records
/// past the last segment are not required.
pub(super) fn verify_digests(
    active: &Path,
    trusted: &[String],
    hash_at: &dyn Fn(u64) -> Option<String>,
    end: u64,
    tail_required: bool,
) -> Result<DigestSummary, AuditError> {
    let tampered = |path: &Path, seq: u64, problem: String| AuditError::Tampered {
        line: seq,
        seq,
        problem: format!("digest {}: {problem}", path.display()),
    };
    let mut previous: Option<Digest> = None;
    let mut listed: BTreeMap<String, (PathBuf, DigestSegment)> = BTreeMap::new();
    let mut summary = DigestSummary::default();
    let pruned_through = pruned(active)?.map_or(0, |p| p.0);
    for path in list(active)? {
        let d = read_digest(&path)?;
        let want = previous.as_ref().map_or(1, |p| p.number + 1);
        if d.number != want {
            return Err(tampered(
                &path,
                d.last_seq,
                format!("is digest {} where digest {want} was expected (digest removed, inserted or renamed)", d.number),
            ));
        }
        if !trusted.contains(&d.public_key) {
            return Err(tampered(
                &path,
                d.last_seq,
                "is signed by a key that is not a trusted audit-signing key".into(),
            ));
        }
        let key = hex::decode(&d.public_key).unwrap_or_default();
        let sig = hex::decode(&d.signature).unwrap_or_default();
        if UnparsedPublicKey::new(&ED25519, &key)
            .verify(&d.signed_bytes(), &sig)
            .is_err()
        {
            return Err(tampered(
                &path,
                d.last_seq,
                "signature does not verify (digest changed)".into(),
            ));
        }
        let prev_sig = previous.as_ref().map_or("", |p| p.signature.as_str());
        if d.previous_signature != prev_sig {
            return Err(tampered(
                &path,
                d.last_seq,
                "does not chain onto the previous digest (digest replaced)".into(),
            ));
        }
        for s in &d.segments {
            listed.insert(s.file.clone(), (path.clone(), s.clone()));
        }
        if d.last_seq > end && (tail_required || d.segments_through > end) {
            return Err(AuditError::Truncated {
                records: end,
                expected: d.last_seq,
                problem: format!(
                    "the trail ends at record {end} but digest {} covers records up to {}: records were removed back to (or before) a signed digest",
                    path.display(),
                    d.last_seq
                ),
            });
        }
        if d.last_seq > pruned_through
            && d.last_seq <= end
            && hash_at(d.last_seq).as_deref() != Some(&d.last_hash)
        {
            return Err(tampered(
                &path,
                d.last_seq,
                format!(
                    "record {} does not have the hash the digest signed (record changed)",
                    d.last_seq
                ),
            ));
        }
        summary.digests += 1;
        summary.last_digest_seq = d.last_seq;
        summary.segments_through = d.segments_through;
        previous = Some(d);
    }
    let dir = segment::segments_dir(active);
    for (file, (digest, s)) in &listed {
        if s.first_seq + s.records - 1 <= pruned_through {
            continue; // removed by retention, as a signed digest says
        }
        let path = dir.join(file);
        if !path.exists() {
            return Err(tampered(
                digest,
                s.first_seq,
                format!(
                    "lists segment {file} (records {} to {}), which is missing (segment removed)",
                    s.first_seq,
                    s.first_seq + s.records - 1
                ),
            ));
        }
        if file_sha256(&path)? != s.sha256 {
            return Err(tampered(
                digest,
                s.first_seq,
                format!("segment {file} is not the file the digest signed (segment changed or truncated)"),
            ));
        }
    }
    Ok(summary)
}

/// The trusted public keys of a keystore's trail (from its sealed keys).
pub(super) fn keystore_public_keys(
    active: &Path,
    root: &dyn RootKey,
) -> Result<Vec<String>, AuditError> {
    match load_keys(active, root)? {
        Some(keys) => keys.public_keys(),
        None => Ok(Vec::new()),
    }
}

//! The KMS operations: key lifecycle, cryptography, aliases, key-material
//! rotation and principals, each with a policy check and an audit record.
//!
//! [`KmsService`] owns the keystore, the policy set and the audit trail.
//! Callers reach it through a [`LocalSession`] (one authenticated principal),
//! which implements [`Kms`](crate::kms::Kms); the server makes one session
//! per request.
//!
//! # Data flow
//!
//! A call enters through [`LocalSession`] (`session.rs`), which forwards it
//! with its [`Caller`] to a handler on [`KmsService`]. Every handler runs
//! inside `audited` (`authz.rs`): it reads a `Snapshot` of the keystore
//! (`snapshot`), resolves key names (`names.rs`), checks the policy
//! (`authorize`, `authorized_key`), does its work, and for a change applies
//! it with `mutate`, which writes the keystore and installs a new snapshot.
//! Whatever the outcome, the audit record is appended before the result is
//! returned.
//!
//! # Files
//!
//! | file | owns |
//! | --- | --- |
//! | `mod.rs` | [`Caller`], [`KmsService`] (open, init, sessions, clock), the keystore snapshot and `mutate`, paging |
//! | `names.rs` | key and alias names: parsing, lookup, ARNs, policy resource names |
//! | `authz.rs` | authorization and audit: `authorize`, `audited`, the audit `Trail`, `explain`, `check_access` |
//! | `keys.rs` | key lifecycle: CreateKey, DescribeKey, ListKeys, enable/disable, deletion and its purge |
//! | `aliases.rs` | CreateAlias, UpdateAlias, DeleteAlias, ListAliases and alias-name rules |
//! | `key_rotation.rs` | key-material rotation: automatic (`rotate_due_keys`), on demand, status, history |
//! | `crypto.rs` | Encrypt, Decrypt, ReEncrypt, data keys, GenerateRandom |
//! | `custom_key_stores.rs` | custom key stores (PKCS#11 tokens): their lifecycle, and the cryptography of keys whose material a token holds |
//! | `audit_trail.rs` | VerifyAuditTrail, GetAuditReport: the audit trail read through the KMS |
//! | `access_report.rs` | the access report: effective permissions per key and principal |
//! | `usage.rs` | the deletion interlock over the audit trail's usage index, and the records of refused requests |
//! | `policies.rs` | GetKeyPolicy, ListKeyPolicies and loading the policy files |
//! | `principals.rs` | principals and access keys, authentication |
//! | `session.rs` | [`LocalSession`], the [`Kms`](crate::kms::Kms) implementation |
//! | `tags.rs` | TagResource, UntagResource, ListResourceTags and the tag rules |
//! | `grants.rs` | CreateGrant, ListGrants, ListRetirableGrants, RetireGrant, RevokeGrant, and what a grant allows |
//! | `validation.rs` | AWS's wording of request validation errors |
//! | `keyspec.rs` | KeySpec / KeyUsage: valid pairs, material, generation, algorithm names |
//! | `asymmetric.rs` | Sign, Verify, GetPublicKey, RSA-OAEP Encrypt/Decrypt/ReEncrypt, GenerateDataKeyPair* |
//! | `mac.rs` | GenerateMac, VerifyMac |
//! | `import.rs` | Origin EXTERNAL: GetParametersForImport, ImportKeyMaterial, DeleteImportedKeyMaterial, expiry |

mod access_report;
mod aliases;
mod audit_trail;
mod authz;
mod crypto;
mod custom_key_stores;
mod grants;
mod key_rotation;
mod keys;
mod names;
mod policies;
mod principals;
mod root_move;
mod session;
mod tags;
#[cfg(test)]
mod tests;
mod usage;
pub(crate) mod validation;
// Asymmetric and HMAC keys (issue 15), imported key material (issue 13).
mod asymmetric;
mod import;
mod keyspec;
mod mac;

pub use root_move::{MoveRootError, RootMoved, MOVE_ROOT};
pub use session::LocalSession;
pub use usage::RejectedRequest;

use crate::api::{AccessKeyResponse, ListRequest};
use crate::audit::AuditLog;
use crate::error::{ErrorCode, KmsError, Result};
use crate::keystore::{Config, Fingerprint, Keystore, PrincipalRecord, State};
use crate::policy::PolicySet;
use keys::purge_deleted;
use names::{alias_arn, key_arn};
use policies::load_policies;
use principals::{credentials, new_access_key};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use uuid::Uuid;

/// Largest plaintext Encrypt takes, as in AWS KMS.
pub const MAX_PLAINTEXT: usize = 4096;
/// Most grant tokens a request may carry.
pub const MAX_GRANT_TOKENS: usize = 10;
const DAY: f64 = 86_400.0;
const SYMMETRIC_DEFAULT: &str = "SYMMETRIC_DEFAULT";
/// The principal `rewrap init` creates, allowed everything by `owner.toml`.
pub const OWNER: &str = "owner";

/// Who is calling: the authenticated principal and where the call came from.
#[derive(Debug, Clone, Default)]
pub struct Caller {
    /// The authenticated principal's name.
    pub principal: String,
    /// The network address of the caller, for server requests.
    pub source_ip: Option<String>,
    /// The caller's user agent, for server requests.
    pub user_agent: Option<String>,
    /// The access key id that signed the request, for server requests.
    pub access_key_id: Option<String>,
    /// What the request names besides keys (alias, principal, access key,
    /// `Force`), for the audit record; filled in per request by the session.
    pub request_parameters: Option<std::collections::BTreeMap<String, String>>,
    /// The object the caller says its key uses are for (the server's
    /// `x-rewrap-object` header), for the audit record; a request's own
    /// `object` member wins.
    pub object: Option<String>,
    /// The request id the server answers this request with
    /// (`x-amzn-RequestId`): its audit records carry it, so an auditor
    /// finds a client's request by the id the client was given. `None`
    /// (the CLI, whose session makes many calls): each record gets a new one.
    pub request_id: Option<String>,
}

/// The keystore state as last read, with lookup indexes.
struct Snapshot {
    state: State,
    fingerprint: Fingerprint,
    /// access key id -> principal name.
    access_keys: HashMap<String, String>,
    /// key id -> every name of the key, as policy resources: key id, key
    /// ARN, then each alias name and alias ARN. Index 1 is the key ARN.
    names: HashMap<Uuid, Vec<String>>,
}

impl Snapshot {
    fn new(state: State, fingerprint: Fingerprint, config: &Config) -> Snapshot {
        let mut access_keys = HashMap::new();
        for (name, p) in &state.principals {
            for k in &p.access_keys {
                access_keys.insert(k.id.clone(), name.clone());
            }
        }
        let mut names: HashMap<Uuid, Vec<String>> = state
            .keys
            .keys()
            .map(|id| (*id, vec![id.to_string(), key_arn(config, id)]))
            .collect();
        for (name, a) in &state.aliases {
            if let Some(list) = names.get_mut(&a.target) {
                list.push(name.clone());
                list.push(alias_arn(config, name));
            }
        }
        Snapshot {
            state,
            fingerprint,
            access_keys,
            names,
        }
    }
}

/// The embedded KMS.
pub struct KmsService {
    keystore: Keystore,
    snapshot: RwLock<Arc<Snapshot>>,
    policies: RwLock<Arc<PolicySet>>,
    policy_dirs: Vec<PathBuf>,
    audit: AuditLog,
    clock_offset_secs: AtomicI64,
    /// When the keystore file was last checked for updates by others.
    checked: Mutex<std::time::Instant>,
    /// Logged-in PKCS#11 tokens of connected custom key stores.
    tokens: custom_key_stores::Tokens,
    /// Parsed private keys of asymmetric keys (issue 15).
    parsed_keys: asymmetric::ParsedKeys,
}

/// How long an update by another process may go unnoticed.
const FRESHNESS: std::time::Duration = std::time::Duration::from_millis(20);

impl std::fmt::Debug for KmsService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KmsService({})", self.keystore.dir().display())
    }
}

fn now_secs() -> f64 {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    (d.as_millis() as f64) / 1000.0
}

fn page<T: Clone>(
    items: &[T],
    limit: Option<u32>,
    marker: &Option<String>,
) -> Result<(Vec<T>, Option<String>)> {
    let limit = limit.unwrap_or(100);
    validation::int_range("limit", i64::from(limit), 1, 1000)?;
    let start = match marker {
        None => 0,
        Some(m) => m
            .parse::<usize>()
            .ok()
            .filter(|&s| s <= items.len())
            .ok_or_else(|| {
                KmsError::new(
                    ErrorCode::InvalidMarker,
                    "the Marker is not one this service issued",
                )
            })?,
    };
    let end = (start + limit as usize).min(items.len());
    let next = (end < items.len()).then(|| end.to_string());
    Ok((items[start..end].to_vec(), next))
}

/// The KeyId of a list request whose operation needs one.
fn required_key_id(r: &ListRequest) -> Result<&str> {
    r.key_id.as_deref().ok_or_else(|| validation::null("keyId"))
}

impl KmsService {
    /// Creates a keystore in `home` with the principal `owner`, allowed
    /// everything by `home/policies/owner.toml`. Returns the owner's
    /// credentials: they are shown once and stored only sealed.
    pub fn init(home: &Path) -> Result<AccessKeyResponse> {
        KmsService::init_with(home, Config::default())
    }

    /// [`KmsService::init`] with a chosen region and account.
    pub fn init_with(home: &Path, config: Config) -> Result<AccessKeyResponse> {
        KmsService::init_with_root(home, config, &crate::root::RootSpec::File)
    }

    /// [`KmsService::init_with`], the keystore sealed by the root `root`
    /// names (a key file, a key in a PKCS#11 token, a passphrase).
    pub fn init_with_root(
        home: &Path,
        config: Config,
        root: &crate::root::RootSpec,
    ) -> Result<AccessKeyResponse> {
        KmsService::init_owner(Keystore::create_with_root(home, config, root)?)
    }

    /// Writes the owner's policy and creates the owner principal in a
    /// keystore [`Keystore::create_with_root`] just made (the second half
    /// of [`KmsService::init_with_root`], for a caller that tells the
    /// keystore's errors apart).
    pub fn init_owner(store: Keystore) -> Result<AccessKeyResponse> {
        let home = store.dir().to_path_buf();
        let policies = home.join("policies");
        std::fs::create_dir_all(&policies)
            .map_err(|e| KmsError::internal(format!("{}: {e}", policies.display())))?;
        crate::keystore::write_atomic(&policies.join("owner.toml"), OWNER_POLICY.as_bytes())?;
        let now = now_secs();
        let key = new_access_key(now);
        let response = credentials(OWNER, &key);
        store.update(|s| {
            s.principals.insert(
                OWNER.into(),
                PrincipalRecord {
                    created: now,
                    access_keys: vec![key],
                },
            );
            Ok::<_, KmsError>(())
        })?;
        Ok(response)
    }

    /// Opens the keystore in `home`, its policies (`home/policies` plus
    /// `extra_policies`) and its audit trail.
    pub fn open(home: &Path, extra_policies: Option<&Path>) -> Result<Arc<KmsService>> {
        KmsService::open_keystore(Keystore::open(home)?, extra_policies)
    }

    /// [`KmsService::open`] of a keystore already open.
    pub(crate) fn open_keystore(
        keystore: Keystore,
        extra_policies: Option<&Path>,
    ) -> Result<Arc<KmsService>> {
        let home = keystore.dir().to_path_buf();
        let (state, fingerprint) = keystore.load()?;
        let mut policy_dirs = vec![home.join("policies")];
        policy_dirs.extend(extra_policies.map(Path::to_path_buf));
        let policies = load_policies(&policy_dirs)?;
        let audit_path = home.join("audit.log");
        // No audit, no answer: a key use's record is on stable storage
        // before its result is returned (one fdatasync per group commit).
        let audit = AuditLog::open_in_keystore(
            &audit_path,
            crate::audit::AuditOptions {
                durable: true,
                segments: keystore.config().audit,
            },
            Some(keystore.root_key()),
        )
        .map_err(|e| KmsError::internal(format!("audit trail {}: {e}", audit_path.display())))?;
        let snapshot = Snapshot::new(state, fingerprint, keystore.config());
        Ok(Arc::new(KmsService {
            keystore,
            snapshot: RwLock::new(Arc::new(snapshot)),
            checked: Mutex::new(std::time::Instant::now()),
            policies: RwLock::new(Arc::new(policies)),
            policy_dirs,
            audit,
            clock_offset_secs: AtomicI64::new(0),
            tokens: custom_key_stores::Tokens::default(),
            parsed_keys: asymmetric::ParsedKeys::default(),
        }))
    }

    /// A session acting as `caller`, who must already be authenticated.
    pub fn session(self: &Arc<Self>, caller: Caller) -> LocalSession {
        LocalSession {
            service: Arc::clone(self),
            caller,
        }
    }

    /// The keystore folder.
    pub fn home(&self) -> &Path {
        self.keystore.dir()
    }

    /// The audit trail file.
    pub fn audit_path(&self) -> PathBuf {
        self.audit.path().to_path_buf()
    }

    /// Verifies the audit trail, its end against the sealed checkpoint
    /// included. Appends nothing.
    pub fn verify_audit(
        &self,
    ) -> std::result::Result<crate::audit::VerifySummary, crate::audit::AuditError> {
        crate::audit::verify_sealed(self.audit.path(), self.keystore.root_key().as_ref())
    }

    /// Region and account used in ARNs.
    pub fn config(&self) -> &Config {
        self.keystore.config()
    }

    /// Reloads the policy files; on error the old set stays in force.
    pub fn reload_policies(&self) -> Result<()> {
        let set = load_policies(&self.policy_dirs)?;
        *self.policies.write().expect("policy lock") = Arc::new(set);
        Ok(())
    }

    /// The policy set in force.
    pub fn policies(&self) -> Arc<PolicySet> {
        Arc::clone(&self.policies.read().expect("policy lock"))
    }

    /// Shifts this service's clock, for tests of automatic rotation and
    /// deletion windows only.
    pub fn set_clock_offset_days(&self, days: i64) {
        self.clock_offset_secs
            .store(days.saturating_mul(86_400), Ordering::Relaxed);
    }

    fn now(&self) -> f64 {
        now_secs() + self.clock_offset_secs.load(Ordering::Relaxed) as f64
    }

    fn snapshot(&self) -> Result<Arc<Snapshot>> {
        let current = Arc::clone(&self.snapshot.read().expect("snapshot lock"));
        {
            // Another process's update is noticed within FRESHNESS; checking
            // the file on every call would cost a stat per operation.
            let mut checked = self.checked.lock().expect("check lock");
            if checked.elapsed() < FRESHNESS {
                return Ok(current);
            }
            *checked = std::time::Instant::now();
        }
        Ok(self.reload_if_changed(current)?.0)
    }

    /// Looks at the keystore file now, whatever [`FRESHNESS`] allows, and
    /// installs its state if another process changed it: whether it did.
    fn refreshed(&self) -> Result<bool> {
        *self.checked.lock().expect("check lock") = std::time::Instant::now();
        let current = Arc::clone(&self.snapshot.read().expect("snapshot lock"));
        Ok(self.reload_if_changed(current)?.1)
    }

    /// `current`, or the file's state installed in its place if the file
    /// changed since `current` was read; and whether it had.
    fn reload_if_changed(&self, current: Arc<Snapshot>) -> Result<(Arc<Snapshot>, bool)> {
        if self.keystore.fingerprint()? == current.fingerprint {
            return Ok((current, false));
        }
        let (state, fingerprint) = self.keystore.load()?;
        let fresh = Arc::new(Snapshot::new(state, fingerprint, self.keystore.config()));
        *self.snapshot.write().expect("snapshot lock") = Arc::clone(&fresh);
        Ok((fresh, true))
    }

    /// Applies `change` to the keystore (after purging keys whose deletion
    /// date has passed) and installs the result.
    fn mutate<R>(&self, change: impl FnOnce(&mut State, f64) -> Result<R>) -> Result<R> {
        let now = self.now();
        let (out, state, fingerprint) = self.keystore.update(|state| {
            purge_deleted(state, now);
            change(state, now)
        })?;
        let queued = custom_key_stores::has_objects_to_destroy(&state);
        *self.snapshot.write().expect("snapshot lock") =
            Arc::new(Snapshot::new(state, fingerprint, self.keystore.config()));
        if queued {
            self.destroy_token_objects();
        }
        Ok(out)
    }
}

/// The policy `init` writes for the owner.
pub const OWNER_POLICY: &str = r#"# Written by `rewrap init`: the owner may do everything, like an AWS
# account's root user under the default key policy. Remove or narrow this
# file once administrators with narrower rights exist.
[[statement]]
sid = "owner-all"
effect = "allow"
principals = ["owner"]
actions = ["*"]
resources = ["*"]
"#;

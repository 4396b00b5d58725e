//! The KMS operations: key lifecycle, cryptography, aliases, rotation and
//! principals, each with a policy check and an audit record.
//!
//! [`KmsService`] owns the keystore, the policy set and the audit trail.
//! Callers reach it through a [`LocalSession`] (one authenticated principal),
//! which implements [`Kms`]; the server makes one session per request.

use crate::api::*;
use crate::audit::{AuditKey, AuditLog, AuditRecord};
use crate::blob::{self, BlobHeader};
use crate::error::{ErrorCode, KmsError, Result};
use crate::keystore::{
    AccessKeyRecord, AliasRecord, Config, Fingerprint, KeyRecord, KeyState, KeyVersion, Keystore,
    PrincipalRecord, RotationConfig, State,
};
use crate::kms::{dispatch, Kms};
use crate::policy::{AccessRequest, Decision, PolicySet};
use crate::secret::Secret;
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

/// How an operation means to use the key a ciphertext blob names.
struct BlobUse<'a> {
    /// The key the caller says the blob is under (IncorrectKeyException if not).
    expected: Option<&'a str>,
    /// The policy action to check on that key.
    action: &'a str,
    /// The encryption context presented.
    context: Option<&'a EncryptionContext>,
}

/// What one operation did, for its audit record.
#[derive(Default)]
struct Trail {
    keys: Vec<AuditKey>,
    context: Option<EncryptionContext>,
    destination_context: Option<EncryptionContext>,
    decisions: Vec<Decision>,
}

impl Trail {
    fn key(&mut self, arn: String, version: Option<u32>) {
        self.keys.push(AuditKey { arn, version });
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
    usage: Mutex<HashMap<Uuid, f64>>,
    /// When the keystore file was last checked for updates by others.
    checked: Mutex<std::time::Instant>,
}

/// How long an update by another process may go unnoticed.
const FRESHNESS: std::time::Duration = std::time::Duration::from_millis(20);

impl std::fmt::Debug for KmsService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KmsService({})", self.keystore.dir().display())
    }
}

fn key_arn(c: &Config, id: &Uuid) -> String {
    format!("arn:aws:kms:{}:{}:key/{id}", c.region, c.account)
}

fn alias_arn(c: &Config, name: &str) -> String {
    format!("arn:aws:kms:{}:{}:{name}", c.region, c.account)
}

fn now_secs() -> f64 {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    (d.as_millis() as f64) / 1000.0
}

fn random_token(len: usize, alphabet: &[u8]) -> String {
    use rand::Rng;
    let mut rng = rand::rngs::OsRng;
    (0..len)
        .map(|_| alphabet[rng.gen_range(0..alphabet.len())] as char)
        .collect()
}

fn new_access_key(now: f64) -> AccessKeyRecord {
    const UPPER: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    const SECRET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    AccessKeyRecord {
        id: format!("RWAK{}", random_token(16, UPPER)),
        secret: Secret::new(random_token(40, SECRET).into_bytes()),
        created: now,
    }
}

fn check_grant_tokens(tokens: &Option<Vec<String>>) -> Result<()> {
    match tokens {
        Some(t) if t.len() > MAX_GRANT_TOKENS => Err(KmsError::new(
            ErrorCode::LimitExceeded,
            format!(
                "{} grant tokens given; at most {MAX_GRANT_TOKENS} are allowed",
                t.len()
            ),
        )),
        _ => Ok(()),
    }
}

fn check_algorithm(algorithm: &Option<String>) -> Result<()> {
    match algorithm.as_deref() {
        None | Some(SYMMETRIC_DEFAULT) => Ok(()),
        Some(other) => Err(KmsError::validation(format!(
            "encryption algorithm {other:?} is not supported; symmetric keys use SYMMETRIC_DEFAULT"
        ))),
    }
}

fn check_principal_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.@-+=,".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(KmsError::validation(format!(
            "principal name {name:?} is invalid: use 1 to 64 letters, digits or _.@-+=,"
        )))
    }
}

fn check_alias_name(name: &str) -> Result<()> {
    let invalid = |why: &str| {
        KmsError::new(
            ErrorCode::InvalidAliasName,
            format!("alias name {name:?} {why}"),
        )
    };
    let Some(rest) = name.strip_prefix("alias/") else {
        return Err(invalid("must begin with \"alias/\""));
    };
    if rest.is_empty() || name.len() > 256 {
        return Err(invalid("must have 1 to 250 characters after \"alias/\""));
    }
    if !rest
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"/_-".contains(&b))
    {
        return Err(invalid("may contain only letters, digits, /, _ and -"));
    }
    if rest.starts_with("aws/") {
        return Err(invalid(
            "is reserved: alias/aws/ names belong to AWS managed keys",
        ));
    }
    Ok(())
}

fn page<T: Clone>(
    items: &[T],
    limit: Option<u32>,
    marker: &Option<String>,
) -> Result<(Vec<T>, Option<String>)> {
    let limit = limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(KmsError::validation("Limit must be between 1 and 1000"));
    }
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

/// The error of a key use whose audit record could not be written.
fn audit_failed(e: crate::audit::AuditError) -> KmsError {
    KmsError::internal(format!("cannot write the audit trail: {e}"))
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
        let store = Keystore::create(home, config)?;
        let policies = home.join("policies");
        std::fs::create_dir_all(&policies)
            .map_err(|e| KmsError::internal(format!("{}: {e}", policies.display())))?;
        crate::keystore::write_atomic(&policies.join("owner.toml"), OWNER_POLICY.as_bytes())?;
        let now = now_secs();
        let key = new_access_key(now);
        let response = AccessKeyResponse {
            principal_name: OWNER.into(),
            access_key_id: key.id.clone(),
            secret_access_key: key.secret.clone(),
        };
        store.update(|s| {
            s.principals.insert(
                OWNER.into(),
                PrincipalRecord {
                    created: now,
                    access_keys: vec![key],
                },
            );
            Ok(())
        })?;
        Ok(response)
    }

    /// Opens the keystore in `home`, its policies (`home/policies` plus
    /// `extra_policies`) and its audit trail.
    pub fn open(home: &Path, extra_policies: Option<&Path>) -> Result<Arc<KmsService>> {
        let keystore = Keystore::open(home)?;
        let (state, fingerprint) = keystore.load()?;
        let mut policy_dirs = vec![home.join("policies")];
        policy_dirs.extend(extra_policies.map(Path::to_path_buf));
        let policies = load_policies(&policy_dirs)?;
        let audit_path = home.join("audit.log");
        let audit = AuditLog::open(&audit_path).map_err(|e| {
            KmsError::internal(format!("audit trail {}: {e}", audit_path.display()))
        })?;
        let snapshot = Snapshot::new(state, fingerprint, keystore.config());
        Ok(Arc::new(KmsService {
            keystore,
            snapshot: RwLock::new(Arc::new(snapshot)),
            checked: Mutex::new(std::time::Instant::now()),
            policies: RwLock::new(Arc::new(policies)),
            policy_dirs,
            audit,
            clock_offset_secs: AtomicI64::new(0),
            usage: Mutex::new(HashMap::new()),
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

    /// Checks an access key id and secret; returns the principal's name.
    /// Comparison is constant-time.
    pub fn authenticate(&self, access_key_id: &str, secret: &[u8]) -> Result<String> {
        use subtle::ConstantTimeEq;
        let (principal, expected) = self.secret_for_access_key(access_key_id)?;
        if bool::from(expected.expose().ct_eq(secret)) {
            Ok(principal)
        } else {
            Err(KmsError::new(
                ErrorCode::UnrecognizedClient,
                "the security token included in the request is invalid (wrong secret access key)",
            ))
        }
    }

    /// The principal and secret of an access key, for signature checks.
    pub fn secret_for_access_key(&self, access_key_id: &str) -> Result<(String, Secret)> {
        let snap = self.snapshot()?;
        let unknown = || {
            KmsError::new(
                ErrorCode::UnrecognizedClient,
                "the security token included in the request is invalid (unknown access key id)",
            )
        };
        let principal = snap.access_keys.get(access_key_id).ok_or_else(unknown)?;
        let secret = snap.state.principals[principal]
            .access_keys
            .iter()
            .find(|k| k.id == access_key_id)
            .ok_or_else(unknown)?
            .secret
            .clone();
        Ok((principal.clone(), secret))
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
        if self.keystore.fingerprint()? == current.fingerprint {
            return Ok(current);
        }
        let (state, fingerprint) = self.keystore.load()?;
        let fresh = Arc::new(Snapshot::new(state, fingerprint, self.keystore.config()));
        *self.snapshot.write().expect("snapshot lock") = Arc::clone(&fresh);
        Ok(fresh)
    }

    /// Applies `change` to the keystore (after purging keys whose deletion
    /// date has passed) and installs the result.
    fn mutate<R>(&self, change: impl FnOnce(&mut State, f64) -> Result<R>) -> Result<R> {
        let now = self.now();
        let (out, state, fingerprint) = self.keystore.update(|state| {
            purge_deleted(state, now);
            change(state, now)
        })?;
        *self.snapshot.write().expect("snapshot lock") =
            Arc::new(Snapshot::new(state, fingerprint, self.keystore.config()));
        Ok(out)
    }

    fn key_arn(&self, id: &Uuid) -> String {
        key_arn(self.keystore.config(), id)
    }

    fn alias_arn(&self, name: &str) -> String {
        alias_arn(self.keystore.config(), name)
    }

    /// Parses any form of key name to a key id or an alias name.
    fn parse_key_name<'a>(&self, name: &'a str) -> Result<KeyName<'a>> {
        let not_found = || KmsError::not_found(format!("Invalid keyId '{name}'"));
        let local = if let Some(rest) = name.strip_prefix("arn:") {
            let parts: Vec<&str> = rest.splitn(5, ':').collect();
            let c = self.keystore.config();
            if parts.len() != 5 || parts[1] != "kms" {
                return Err(KmsError::new(
                    ErrorCode::InvalidArn,
                    format!("{name:?} is not a KMS key or alias ARN"),
                ));
            }
            if parts[2] != c.region || parts[3] != c.account {
                return Err(KmsError::not_found(format!(
                    "Key '{name}' is not in this service's region and account ({}:{})",
                    c.region, c.account
                )));
            }
            parts[4]
        } else {
            name
        };
        if local.starts_with("alias/") {
            return Ok(KeyName::Alias(local));
        }
        let id = local.strip_prefix("key/").unwrap_or(local);
        Uuid::parse_str(id)
            .map(KeyName::Id)
            .map_err(|_| not_found())
    }

    fn lookup<'s>(&self, snap: &'s Snapshot, name: &str) -> Result<&'s KeyRecord> {
        let id = match self.parse_key_name(name)? {
            KeyName::Id(id) => id,
            KeyName::Alias(alias) => {
                snap.state
                    .aliases
                    .get(alias)
                    .ok_or_else(|| {
                        KmsError::not_found(format!(
                            "Alias {} is not found.",
                            self.alias_arn(alias)
                        ))
                    })?
                    .target
            }
        };
        snap.state
            .keys
            .get(&id)
            .filter(|k| !is_past_deletion(k, self.now()))
            .ok_or_else(|| {
                KmsError::not_found(format!("Key '{}' does not exist", self.key_arn(&id)))
            })
    }

    /// Every name of a key, as policy resources.
    fn resource_names<'s>(&self, snap: &'s Snapshot, key: &KeyRecord) -> &'s [String] {
        snap.names.get(&key.id).map_or(&[], Vec::as_slice)
    }

    fn authorize(
        &self,
        trail: &mut Trail,
        caller: &Caller,
        action: &str,
        resources: &[String],
        context: Option<&EncryptionContext>,
    ) -> Result<()> {
        let refs: Vec<&str> = resources.iter().map(String::as_str).collect();
        let decision = self.policies().evaluate(&AccessRequest {
            principal: &caller.principal,
            action: crate::policy::Action::from_name(action).expect("known action"),
            resources: &refs,
            context,
        });
        let allowed = decision.allowed;
        trail.decisions.push(decision);
        if allowed {
            Ok(())
        } else {
            let target = resources
                .get(1)
                .or(resources.first())
                .map_or("*", String::as_str);
            Err(KmsError::new(
                ErrorCode::AccessDenied,
                format!(
                    "principal '{}' is not authorized to perform {action} on resource {target}",
                    caller.principal
                ),
            ))
        }
    }

    /// Looks a key up and checks `action` on it. A key that does not exist is
    /// NotFound only for callers the policy would allow: others get
    /// AccessDenied, so key ids cannot be probed.
    fn authorized_key<'s>(
        &self,
        trail: &mut Trail,
        caller: &Caller,
        snap: &'s Snapshot,
        name: &str,
        action: &str,
        context: Option<&EncryptionContext>,
    ) -> Result<&'s KeyRecord> {
        match self.lookup(snap, name) {
            Ok(key) => {
                let names = self.resource_names(snap, key);
                trail.key(names[1].clone(), None);
                self.authorize(trail, caller, action, names, context)?;
                Ok(key)
            }
            Err(e) => {
                self.authorize(trail, caller, action, &[name.to_string()], context)?;
                Err(e)
            }
        }
    }

    fn usable(&self, key: &KeyRecord) -> Result<()> {
        match key.state {
            KeyState::Enabled => Ok(()),
            KeyState::Disabled => Err(KmsError::new(
                ErrorCode::Disabled,
                format!("{} is disabled.", self.key_arn(&key.id)),
            )),
            KeyState::PendingDeletion => Err(KmsError::new(
                ErrorCode::InvalidState,
                format!("{} is pending deletion.", self.key_arn(&key.id)),
            )),
        }
    }

    fn note_use(&self, key: &KeyRecord) {
        let now = self.now();
        self.usage.lock().expect("usage lock").insert(key.id, now);
    }

    /// Runs one operation and writes its audit record, whatever the outcome.
    fn audited<R>(
        &self,
        caller: &Caller,
        op: Operation,
        body: impl FnOnce(&mut Trail) -> Result<R>,
    ) -> Result<R> {
        self.audited_named(caller, op.name(), body)
    }

    fn audited_named<R>(
        &self,
        caller: &Caller,
        operation: &str,
        body: impl FnOnce(&mut Trail) -> Result<R>,
    ) -> Result<R> {
        let (record, result) = self.run_audited(caller, operation, body);
        if let Err(e) = self.audit.append(record) {
            // No audit record, no key use: compliance needs every use on record.
            return Err(audit_failed(e));
        }
        result
    }

    /// Runs `body` and builds its audit record; the caller appends it and
    /// must not return the result unless that succeeds.
    fn run_audited<R>(
        &self,
        caller: &Caller,
        operation: &str,
        body: impl FnOnce(&mut Trail) -> Result<R>,
    ) -> (AuditRecord, Result<R>) {
        let mut trail = Trail::default();
        let result = body(&mut trail);
        let allowed = !trail.decisions.is_empty() && trail.decisions.iter().all(|d| d.allowed);
        let record = AuditRecord {
            request_id: uuid::Builder::from_random_bytes(rand::random())
                .into_uuid()
                .to_string(),
            principal: caller.principal.clone(),
            operation: operation.into(),
            keys: trail.keys,
            encryption_context: trail.context,
            destination_encryption_context: trail.destination_context,
            decision: if allowed { "Allow" } else { "Deny" }.into(),
            decided_by: trail
                .decisions
                .iter()
                .map(|d| d.decided_by.as_str())
                .collect::<Vec<_>>()
                .join("; "),
            outcome: match &result {
                Ok(_) => "Success".into(),
                Err(e) => e.code.as_str().into(),
            },
            source_ip: caller.source_ip.clone(),
            user_agent: caller.user_agent.clone(),
            ..Default::default()
        };
        (record, result)
    }

    fn metadata(&self, key: &KeyRecord) -> KeyMetadata {
        let c = self.keystore.config();
        let last_used = self.usage.lock().expect("usage lock").get(&key.id).copied();
        KeyMetadata {
            aws_account_id: c.account.clone(),
            key_id: key.id.to_string(),
            arn: self.key_arn(&key.id),
            creation_date: key.created,
            enabled: key.state == KeyState::Enabled,
            description: key.description.clone(),
            key_usage: "ENCRYPT_DECRYPT".into(),
            key_state: key.state.as_str().into(),
            deletion_date: key.deletion_date,
            pending_deletion_window_in_days: key.pending_window_days,
            origin: "AWS_KMS".into(),
            key_manager: "CUSTOMER".into(),
            customer_master_key_spec: SYMMETRIC_DEFAULT.into(),
            key_spec: SYMMETRIC_DEFAULT.into(),
            encryption_algorithms: vec![SYMMETRIC_DEFAULT.into()],
            multi_region: false,
            key_material_versions: key.versions.len() as u32,
            last_used_date: last_used.or_else(|| self.last_use_from_audit(key)),
        }
    }

    fn last_use_from_audit(&self, key: &KeyRecord) -> Option<f64> {
        let arn = self.key_arn(&key.id);
        crate::audit::last_use_by_key(self.audit.path())
            .ok()?
            .get(&arn)
            .map(|t| t.timestamp_millis() as f64 / 1000.0)
    }

    /// Adds a key version to every enabled key whose automatic rotation is
    /// due. Returns the ARNs of the keys rotated.
    pub fn rotate_due_keys(&self) -> Result<Vec<String>> {
        let now = self.now();
        let snap = self.snapshot()?;
        let due = |k: &KeyRecord| {
            k.state == KeyState::Enabled
                && k.rotation.as_ref().is_some_and(|r| r.next_rotation <= now)
        };
        if !snap.state.keys.values().any(due) {
            return Ok(Vec::new());
        }
        let rotated = self.mutate(|state, now| {
            let mut rotated = Vec::new();
            for key in state.keys.values_mut().filter(|k| due(k)) {
                add_version(key, now, "AUTOMATIC");
                let r = key.rotation.as_mut().expect("due keys rotate");
                r.next_rotation = now + f64::from(r.period_days) * DAY;
                rotated.push(key.id);
            }
            Ok(rotated)
        })?;
        Ok(rotated.iter().map(|id| self.key_arn(id)).collect())
    }

    /// Explains the decision for `principal` doing `action` on `key` (any
    /// name of it; `None` for account-level actions), without doing it.
    pub fn explain(
        &self,
        principal: &str,
        action: &str,
        key: Option<&str>,
        context: Option<&EncryptionContext>,
    ) -> Result<Decision> {
        let Some(action) = crate::policy::Action::from_name(action) else {
            return Err(KmsError::validation(format!("unknown action {action:?}")));
        };
        let snap = self.snapshot()?;
        let names = match key {
            Some(name) => self
                .resource_names(&snap, self.lookup(&snap, name)?)
                .to_vec(),
            None => vec!["*".to_string()],
        };
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        Ok(self.policies().evaluate(&AccessRequest {
            principal,
            action,
            resources: &refs,
            context,
        }))
    }

    /// Checks an account-level action (such as `rewrap:ReadAuditTrail`) for
    /// `principal`, and records the attempt in the audit trail.
    pub fn check_access(&self, principal: &str, action: &str) -> Result<()> {
        let caller = Caller {
            principal: principal.to_string(),
            ..Caller::default()
        };
        let name = action.rsplit(':').next().unwrap_or(action).to_string();
        self.audited_named(&caller, &name, |trail| {
            self.authorize(trail, &caller, action, &["*".into()], None)
        })
    }

    // ----- key lifecycle -------------------------------------------------

    fn create_key(&self, caller: &Caller, r: &CreateKeyRequest) -> Result<KeyMetadataResponse> {
        self.audited(caller, Operation::CreateKey, |trail| {
            self.authorize(trail, caller, "kms:CreateKey", &["*".into()], None)?;
            if let Some(usage) = r.key_usage.as_deref().filter(|u| *u != "ENCRYPT_DECRYPT") {
                return Err(KmsError::validation(format!(
                    "KeyUsage {usage} is not supported; rewrap keys are ENCRYPT_DECRYPT"
                )));
            }
            for spec in [&r.key_spec, &r.customer_master_key_spec].into_iter().flatten() {
                if spec != SYMMETRIC_DEFAULT {
                    return Err(KmsError::validation(format!(
                        "KeySpec {spec} is not supported; rewrap keys are SYMMETRIC_DEFAULT (AES-256-GCM)"
                    )));
                }
            }
            if let Some(origin) = r.origin.as_deref().filter(|o| *o != "AWS_KMS") {
                return Err(KmsError::new(
                    ErrorCode::UnsupportedOperation,
                    format!("Origin {origin} is not supported"),
                ));
            }
            let description = r.description.clone().unwrap_or_default();
            if description.len() > 8192 {
                return Err(KmsError::validation("Description is longer than 8192 characters"));
            }
            let tags = r
                .tags
                .iter()
                .flatten()
                .map(|t| (t.tag_key.clone(), t.tag_value.clone()))
                .collect();
            let key = self.mutate(|state, now| {
                let mut key = KeyRecord {
                    id: Uuid::new_v4(),
                    description,
                    created: now,
                    state: KeyState::Enabled,
                    deletion_date: None,
                    pending_window_days: None,
                    rotation: None,
                    versions: Vec::new(),
                    tags,
                };
                add_version(&mut key, now, "CREATE");
                state.keys.insert(key.id, key.clone());
                Ok(key)
            })?;
            trail.key(self.key_arn(&key.id), Some(1));
            Ok(KeyMetadataResponse {
                key_metadata: self.metadata(&key),
            })
        })
    }

    fn describe_key(&self, caller: &Caller, r: &KeyIdRequest) -> Result<KeyMetadataResponse> {
        self.audited(caller, Operation::DescribeKey, |trail| {
            check_grant_tokens(&r.grant_tokens)?;
            let snap = self.snapshot()?;
            let key =
                self.authorized_key(trail, caller, &snap, &r.key_id, "kms:DescribeKey", None)?;
            Ok(KeyMetadataResponse {
                key_metadata: self.metadata(key),
            })
        })
    }

    fn list_keys(&self, caller: &Caller, r: &ListRequest) -> Result<ListKeysResponse> {
        self.audited(caller, Operation::ListKeys, |trail| {
            self.authorize(trail, caller, "kms:ListKeys", &["*".into()], None)?;
            let snap = self.snapshot()?;
            let now = self.now();
            let all: Vec<KeyListEntry> = snap
                .state
                .keys
                .values()
                .filter(|k| !is_past_deletion(k, now))
                .map(|k| KeyListEntry {
                    key_id: k.id.to_string(),
                    key_arn: self.key_arn(&k.id),
                })
                .collect();
            let (keys, next_marker) = page(&all, r.limit, &r.marker)?;
            Ok(ListKeysResponse {
                keys,
                truncated: next_marker.is_some(),
                next_marker,
            })
        })
    }

    /// Runs a state change on one key: checks `action`, then `change`.
    fn change_key<R>(
        &self,
        caller: &Caller,
        op: Operation,
        action: &str,
        key_id: &str,
        change: impl FnOnce(&mut KeyRecord, f64) -> Result<R>,
    ) -> Result<R> {
        self.audited(caller, op, |trail| {
            let snap = self.snapshot()?;
            let id = self
                .authorized_key(trail, caller, &snap, key_id, action, None)?
                .id;
            self.mutate(|state, now| {
                let key = state.keys.get_mut(&id).ok_or_else(|| {
                    KmsError::not_found(format!("Key '{}' does not exist", self.key_arn(&id)))
                })?;
                change(key, now)
            })
        })
    }

    fn not_pending(&self, key: &KeyRecord) -> Result<()> {
        if key.state == KeyState::PendingDeletion {
            Err(KmsError::new(
                ErrorCode::InvalidState,
                format!("{} is pending deletion.", self.key_arn(&key.id)),
            ))
        } else {
            Ok(())
        }
    }

    fn enable_key(&self, caller: &Caller, r: &KeyIdRequest) -> Result<Empty> {
        self.change_key(
            caller,
            Operation::EnableKey,
            "kms:EnableKey",
            &r.key_id,
            |key, _| {
                self.not_pending(key)?;
                key.state = KeyState::Enabled;
                Ok(Empty {})
            },
        )
    }

    fn disable_key(&self, caller: &Caller, r: &KeyIdRequest) -> Result<Empty> {
        self.change_key(
            caller,
            Operation::DisableKey,
            "kms:DisableKey",
            &r.key_id,
            |key, _| {
                self.not_pending(key)?;
                key.state = KeyState::Disabled;
                Ok(Empty {})
            },
        )
    }

    fn schedule_key_deletion(
        &self,
        caller: &Caller,
        r: &ScheduleKeyDeletionRequest,
    ) -> Result<ScheduleKeyDeletionResponse> {
        let days = r.pending_window_in_days.unwrap_or(30);
        let op = Operation::ScheduleKeyDeletion;
        self.change_key(
            caller,
            op,
            "kms:ScheduleKeyDeletion",
            &r.key_id,
            |key, now| {
                if !(7..=30).contains(&days) {
                    return Err(KmsError::validation(format!(
                        "PendingWindowInDays is {days}; it must be between 7 and 30"
                    )));
                }
                self.not_pending(key)?;
                let when = now + f64::from(days) * DAY;
                key.state = KeyState::PendingDeletion;
                key.deletion_date = Some(when);
                key.pending_window_days = Some(days);
                Ok(ScheduleKeyDeletionResponse {
                    key_id: self.key_arn(&key.id),
                    deletion_date: when,
                    key_state: key.state.as_str().into(),
                    pending_window_in_days: days,
                })
            },
        )
    }

    fn cancel_key_deletion(&self, caller: &Caller, r: &KeyIdRequest) -> Result<KeyIdResponse> {
        let op = Operation::CancelKeyDeletion;
        self.change_key(caller, op, "kms:CancelKeyDeletion", &r.key_id, |key, _| {
            if key.state != KeyState::PendingDeletion {
                return Err(KmsError::new(
                    ErrorCode::InvalidState,
                    format!("{} is not pending deletion.", self.key_arn(&key.id)),
                ));
            }
            // As in AWS: a key whose deletion is cancelled comes back disabled.
            key.state = KeyState::Disabled;
            key.deletion_date = None;
            key.pending_window_days = None;
            Ok(KeyIdResponse {
                key_id: self.key_arn(&key.id),
            })
        })
    }

    // ----- aliases -------------------------------------------------------

    fn write_alias(&self, caller: &Caller, r: &AliasRequest, create: bool) -> Result<Empty> {
        let (op, action) = if create {
            (Operation::CreateAlias, "kms:CreateAlias")
        } else {
            (Operation::UpdateAlias, "kms:UpdateAlias")
        };
        self.audited(caller, op, |trail| {
            check_alias_name(&r.alias_name)?;
            if self
                .parse_key_name(&r.target_key_id)
                .is_ok_and(|n| matches!(n, KeyName::Alias(_)))
            {
                return Err(KmsError::validation(
                    "TargetKeyId must be a key id or key ARN, not an alias",
                ));
            }
            let snap = self.snapshot()?;
            let target =
                self.authorized_key(trail, caller, &snap, &r.target_key_id, action, None)?;
            let alias_names = vec![r.alias_name.clone(), self.alias_arn(&r.alias_name)];
            self.authorize(trail, caller, action, &alias_names, None)?;
            self.not_pending(target)?;
            let target = target.id;
            self.mutate(|state, now| {
                let exists = state.aliases.contains_key(&r.alias_name);
                match (create, exists) {
                    (true, true) => Err(KmsError::new(
                        ErrorCode::AlreadyExists,
                        format!(
                            "An alias with the name {} already exists",
                            self.alias_arn(&r.alias_name)
                        ),
                    )),
                    (false, false) => Err(KmsError::not_found(format!(
                        "Alias {} is not found.",
                        self.alias_arn(&r.alias_name)
                    ))),
                    _ => {
                        let created = state.aliases.get(&r.alias_name).map_or(now, |a| a.created);
                        state.aliases.insert(
                            r.alias_name.clone(),
                            AliasRecord {
                                target,
                                created,
                                updated: now,
                            },
                        );
                        Ok(Empty {})
                    }
                }
            })
        })
    }

    fn delete_alias(&self, caller: &Caller, r: &DeleteAliasRequest) -> Result<Empty> {
        self.audited(caller, Operation::DeleteAlias, |trail| {
            check_alias_name(&r.alias_name)?;
            let snap = self.snapshot()?;
            let key =
                self.authorized_key(trail, caller, &snap, &r.alias_name, "kms:DeleteAlias", None)?;
            let alias = r.alias_name.clone();
            let target = key.id;
            self.mutate(|state, _| match state.aliases.get(&alias) {
                Some(a) if a.target == target => {
                    state.aliases.remove(&alias);
                    Ok(Empty {})
                }
                _ => Err(KmsError::not_found(format!(
                    "Alias {} is not found.",
                    self.alias_arn(&alias)
                ))),
            })
        })
    }

    fn list_aliases(&self, caller: &Caller, r: &ListRequest) -> Result<ListAliasesResponse> {
        self.audited(caller, Operation::ListAliases, |trail| {
            let snap = self.snapshot()?;
            let only = match &r.key_id {
                Some(name) => Some(
                    self.authorized_key(trail, caller, &snap, name, "kms:ListAliases", None)?
                        .id,
                ),
                None => {
                    self.authorize(trail, caller, "kms:ListAliases", &["*".into()], None)?;
                    None
                }
            };
            let all: Vec<AliasListEntry> = snap
                .state
                .aliases
                .iter()
                .filter(|(_, a)| only.is_none_or(|id| a.target == id))
                .map(|(name, a)| AliasListEntry {
                    alias_name: name.clone(),
                    alias_arn: self.alias_arn(name),
                    target_key_id: Some(a.target.to_string()),
                    creation_date: Some(a.created),
                    last_updated_date: Some(a.updated),
                })
                .collect();
            let (aliases, next_marker) = page(&all, r.limit, &r.marker)?;
            Ok(ListAliasesResponse {
                aliases,
                truncated: next_marker.is_some(),
                next_marker,
            })
        })
    }

    // ----- rotation ------------------------------------------------------

    fn enable_key_rotation(&self, caller: &Caller, r: &EnableKeyRotationRequest) -> Result<Empty> {
        let period = r.rotation_period_in_days.unwrap_or(365);
        let op = Operation::EnableKeyRotation;
        self.change_key(
            caller,
            op,
            "kms:EnableKeyRotation",
            &r.key_id,
            |key, now| {
                if !(90..=2560).contains(&period) {
                    return Err(KmsError::validation(format!(
                        "RotationPeriodInDays is {period}; it must be between 90 and 2560"
                    )));
                }
                self.usable(key)?;
                key.rotation = Some(RotationConfig {
                    period_days: period,
                    next_rotation: now + f64::from(period) * DAY,
                });
                Ok(Empty {})
            },
        )
    }

    fn disable_key_rotation(&self, caller: &Caller, r: &KeyIdRequest) -> Result<Empty> {
        let op = Operation::DisableKeyRotation;
        self.change_key(caller, op, "kms:DisableKeyRotation", &r.key_id, |key, _| {
            self.usable(key)?;
            key.rotation = None;
            Ok(Empty {})
        })
    }

    fn get_key_rotation_status(
        &self,
        caller: &Caller,
        r: &KeyIdRequest,
    ) -> Result<KeyRotationStatusResponse> {
        self.audited(caller, Operation::GetKeyRotationStatus, |trail| {
            let snap = self.snapshot()?;
            let key = self.authorized_key(
                trail,
                caller,
                &snap,
                &r.key_id,
                "kms:GetKeyRotationStatus",
                None,
            )?;
            self.not_pending(key)?;
            Ok(KeyRotationStatusResponse {
                key_id: self.key_arn(&key.id),
                key_rotation_enabled: key.rotation.is_some(),
                rotation_period_in_days: key.rotation.as_ref().map(|r| r.period_days),
                next_rotation_date: key.rotation.as_ref().map(|r| r.next_rotation),
                on_demand_rotation_start_date: None,
            })
        })
    }

    fn rotate_key_on_demand(&self, caller: &Caller, r: &KeyIdRequest) -> Result<KeyIdResponse> {
        let op = Operation::RotateKeyOnDemand;
        self.change_key(
            caller,
            op,
            "kms:RotateKeyOnDemand",
            &r.key_id,
            |key, now| {
                self.usable(key)?;
                add_version(key, now, "ON_DEMAND");
                Ok(KeyIdResponse {
                    key_id: self.key_arn(&key.id),
                })
            },
        )
    }

    fn list_key_rotations(
        &self,
        caller: &Caller,
        r: &ListRequest,
    ) -> Result<ListKeyRotationsResponse> {
        self.audited(caller, Operation::ListKeyRotations, |trail| {
            let name = r
                .key_id
                .as_deref()
                .ok_or_else(|| KmsError::validation("KeyId is required"))?;
            let snap = self.snapshot()?;
            let key =
                self.authorized_key(trail, caller, &snap, name, "kms:ListKeyRotations", None)?;
            let all: Vec<RotationEntry> = key
                .versions
                .iter()
                .skip(1)
                .map(|v| RotationEntry {
                    key_id: self.key_arn(&key.id),
                    rotation_date: v.created,
                    rotation_type: v.origin.clone(),
                })
                .collect();
            let (rotations, next_marker) = page(&all, r.limit, &r.marker)?;
            Ok(ListKeyRotationsResponse {
                rotations,
                truncated: next_marker.is_some(),
                next_marker,
            })
        })
    }

    // ----- cryptography --------------------------------------------------

    fn seal_under(
        &self,
        key: &KeyRecord,
        context: Option<&EncryptionContext>,
        plain: &[u8],
    ) -> Result<Vec<u8>> {
        let v = key.current();
        blob::seal(
            &v.material,
            BlobHeader {
                key_id: key.id,
                key_version: v.version,
            },
            context,
            plain,
        )
    }

    /// Finds the key a blob names and checks `action` on it.
    fn blob_key<'s>(
        &self,
        trail: &mut Trail,
        caller: &Caller,
        snap: &'s Snapshot,
        ciphertext: &[u8],
        want: BlobUse<'_>,
    ) -> Result<(&'s KeyRecord, &'s KeyVersion)> {
        if ciphertext.len() > blob::MAX_BLOB {
            return Err(KmsError::validation(format!(
                "CiphertextBlob is {} bytes; at most {} are allowed",
                ciphertext.len(),
                blob::MAX_BLOB
            )));
        }
        let BlobUse {
            expected,
            action,
            context,
        } = want;
        let header = blob::peek(ciphertext).ok_or_else(KmsError::invalid_ciphertext)?;
        let key = self.authorized_key(
            trail,
            caller,
            snap,
            &header.key_id.to_string(),
            action,
            context,
        )?;
        trail
            .keys
            .last_mut()
            .expect("authorized_key records the key")
            .version = Some(header.key_version);
        if let Some(expected) = expected {
            let named = self.lookup(snap, expected)?;
            if named.id != key.id {
                return Err(KmsError::new(
                    ErrorCode::IncorrectKey,
                    format!(
                        "The key ID in the request does not identify a CMK that can perform this operation: the ciphertext is under {}",
                        self.key_arn(&key.id)
                    ),
                ));
            }
        }
        self.usable(key)?;
        let version = key
            .version(header.key_version)
            .ok_or_else(KmsError::invalid_ciphertext)?;
        Ok((key, version))
    }

    fn encrypt(&self, caller: &Caller, r: &EncryptRequest) -> Result<EncryptResponse> {
        self.audited(caller, Operation::Encrypt, |trail| {
            trail.context = r.encryption_context.clone();
            check_grant_tokens(&r.grant_tokens)?;
            check_algorithm(&r.encryption_algorithm)?;
            let len = r.plaintext.len();
            if len == 0 || len > MAX_PLAINTEXT {
                return Err(KmsError::validation(format!(
                    "Plaintext is {len} bytes; Encrypt takes 1 to {MAX_PLAINTEXT} bytes. To encrypt more data, \
                     use a data key (GenerateDataKey) and envelope encryption, e.g. `rewrap encrypt-file`"
                )));
            }
            let snap = self.snapshot()?;
            let ctx = r.encryption_context.as_ref();
            let key = self.authorized_key(trail, caller, &snap, &r.key_id, "kms:Encrypt", ctx)?;
            self.usable(key)?;
            trail.keys.last_mut().expect("recorded").version = Some(key.current().version);
            let ciphertext = self.seal_under(key, ctx, r.plaintext.expose())?;
            self.note_use(key);
            Ok(EncryptResponse {
                ciphertext_blob: Blob(ciphertext),
                key_id: trail.keys[0].arn.clone(),
                encryption_algorithm: SYMMETRIC_DEFAULT.into(),
            })
        })
    }

    fn decrypt(&self, caller: &Caller, r: &DecryptRequest) -> Result<DecryptResponse> {
        self.audited(caller, Operation::Decrypt, |trail| {
            trail.context = r.encryption_context.clone();
            check_grant_tokens(&r.grant_tokens)?;
            check_algorithm(&r.encryption_algorithm)?;
            let snap = self.snapshot()?;
            let ctx = r.encryption_context.as_ref();
            let (key, version) = self.blob_key(
                trail,
                caller,
                &snap,
                &r.ciphertext_blob.0,
                BlobUse {
                    expected: r.key_id.as_deref(),
                    action: "kms:Decrypt",
                    context: ctx,
                },
            )?;
            let plaintext = blob::open(&version.material, &r.ciphertext_blob.0, ctx)?;
            self.note_use(key);
            Ok(DecryptResponse {
                key_id: trail.keys[0].arn.clone(),
                plaintext,
                encryption_algorithm: SYMMETRIC_DEFAULT.into(),
            })
        })
    }

    fn re_encrypt(&self, caller: &Caller, r: &ReEncryptRequest) -> Result<ReEncryptResponse> {
        self.audited(caller, Operation::ReEncrypt, |trail| {
            self.re_encrypt_checked(trail, caller, r)
        })
    }

    /// ReEncrypt of each request, each checked and audited on its own (one
    /// ReEncrypt record per request), the records appended in one group
    /// commit. If the audit trail cannot be written, every request fails.
    fn re_encrypt_many(
        &self,
        caller: &Caller,
        requests: &[ReEncryptRequest],
    ) -> Vec<Result<ReEncryptResponse>> {
        let op = Operation::ReEncrypt.name();
        let (records, results): (Vec<_>, Vec<_>) = requests
            .iter()
            .map(|r| {
                self.run_audited(caller, op, |trail| {
                    self.re_encrypt_checked(trail, caller, r)
                })
            })
            .unzip();
        match self.audit.append_all(records) {
            Ok(()) => results,
            Err(e) => {
                let e = audit_failed(e);
                results.iter().map(|_| Err(e.clone())).collect()
            }
        }
    }

    fn re_encrypt_checked(
        &self,
        trail: &mut Trail,
        caller: &Caller,
        r: &ReEncryptRequest,
    ) -> Result<ReEncryptResponse> {
        {
            trail.context = r.source_encryption_context.clone();
            trail.destination_context = r.destination_encryption_context.clone();
            check_grant_tokens(&r.grant_tokens)?;
            check_algorithm(&r.source_encryption_algorithm)?;
            check_algorithm(&r.destination_encryption_algorithm)?;
            let snap = self.snapshot()?;
            let src_ctx = r.source_encryption_context.as_ref();
            let dst_ctx = r.destination_encryption_context.as_ref();
            let (source, version) = self.blob_key(
                trail,
                caller,
                &snap,
                &r.ciphertext_blob.0,
                BlobUse {
                    expected: r.source_key_id.as_deref(),
                    action: "kms:ReEncryptFrom",
                    context: src_ctx,
                },
            )?;
            let dest = self.authorized_key(
                trail,
                caller,
                &snap,
                &r.destination_key_id,
                "kms:ReEncryptTo",
                dst_ctx,
            )?;
            self.usable(dest)?;
            trail.keys.last_mut().expect("recorded").version = Some(dest.current().version);
            // The plaintext lives only in this zeroizing buffer, for this call.
            let plaintext = blob::open(&version.material, &r.ciphertext_blob.0, src_ctx)?;
            let ciphertext = self.seal_under(dest, dst_ctx, plaintext.expose())?;
            self.note_use(source);
            self.note_use(dest);
            Ok(ReEncryptResponse {
                ciphertext_blob: Blob(ciphertext),
                source_key_id: trail.keys[0].arn.clone(),
                key_id: trail.keys[1].arn.clone(),
                source_encryption_algorithm: SYMMETRIC_DEFAULT.into(),
                destination_encryption_algorithm: SYMMETRIC_DEFAULT.into(),
            })
        }
    }

    fn data_key(
        &self,
        caller: &Caller,
        op: Operation,
        r: &GenerateDataKeyRequest,
    ) -> Result<(Secret, EncryptResponse)> {
        let action = format!("kms:{}", op.name());
        self.audited(caller, op, |trail| {
            trail.context = r.encryption_context.clone();
            check_grant_tokens(&r.grant_tokens)?;
            let len = match (r.key_spec.as_deref(), r.number_of_bytes) {
                (Some(_), Some(_)) => {
                    return Err(KmsError::validation(
                        "give KeySpec or NumberOfBytes, not both",
                    ))
                }
                (None, None) => {
                    return Err(KmsError::validation("KeySpec or NumberOfBytes is required"))
                }
                (Some("AES_256"), None) => 32,
                (Some("AES_128"), None) => 16,
                (Some(other), None) => {
                    return Err(KmsError::validation(format!(
                        "KeySpec {other:?} is not valid; use AES_256 or AES_128"
                    )))
                }
                (None, Some(n)) if (1..=1024).contains(&n) => n as usize,
                (None, Some(n)) => {
                    return Err(KmsError::validation(format!(
                        "NumberOfBytes is {n}; it must be between 1 and 1024"
                    )))
                }
            };
            let snap = self.snapshot()?;
            let ctx = r.encryption_context.as_ref();
            let key = self.authorized_key(trail, caller, &snap, &r.key_id, &action, ctx)?;
            self.usable(key)?;
            trail.keys.last_mut().expect("recorded").version = Some(key.current().version);
            let data_key = Secret::random(len);
            let ciphertext = self.seal_under(key, ctx, data_key.expose())?;
            self.note_use(key);
            Ok((
                data_key,
                EncryptResponse {
                    ciphertext_blob: Blob(ciphertext),
                    key_id: trail.keys[0].arn.clone(),
                    encryption_algorithm: SYMMETRIC_DEFAULT.into(),
                },
            ))
        })
    }

    fn generate_random(
        &self,
        caller: &Caller,
        r: &GenerateRandomRequest,
    ) -> Result<GenerateRandomResponse> {
        self.audited(caller, Operation::GenerateRandom, |trail| {
            self.authorize(trail, caller, "kms:GenerateRandom", &["*".into()], None)?;
            let n = r.number_of_bytes.unwrap_or(32);
            if !(1..=1024).contains(&n) {
                return Err(KmsError::validation(format!(
                    "NumberOfBytes is {n}; it must be between 1 and 1024"
                )));
            }
            Ok(GenerateRandomResponse {
                plaintext: Secret::random(n as usize),
            })
        })
    }

    fn get_key_policy(
        &self,
        caller: &Caller,
        r: &GetKeyPolicyRequest,
    ) -> Result<GetKeyPolicyResponse> {
        self.audited(caller, Operation::GetKeyPolicy, |trail| {
            let snap = self.snapshot()?;
            let key =
                self.authorized_key(trail, caller, &snap, &r.key_id, "kms:GetKeyPolicy", None)?;
            let name = r.policy_name.as_deref().unwrap_or("default");
            if name != "default" {
                return Err(KmsError::not_found(format!("No such policy: {name}")));
            }
            let refs: Vec<&str> = self
                .resource_names(&snap, key)
                .iter()
                .map(String::as_str)
                .collect();
            let statements = self.policies().statements_for_resources(&refs);
            let policy = serde_json::to_string_pretty(&serde_json::json!({
                "Version": "rewrap-2026",
                "Statement": statements,
            }))
            .map_err(|e| KmsError::internal(e.to_string()))?;
            Ok(GetKeyPolicyResponse {
                policy,
                policy_name: name.into(),
            })
        })
    }

    fn list_key_policies(
        &self,
        caller: &Caller,
        r: &ListRequest,
    ) -> Result<ListKeyPoliciesResponse> {
        self.audited(caller, Operation::ListKeyPolicies, |trail| {
            let name = r
                .key_id
                .as_deref()
                .ok_or_else(|| KmsError::validation("KeyId is required"))?;
            let snap = self.snapshot()?;
            self.authorized_key(trail, caller, &snap, name, "kms:ListKeyPolicies", None)?;
            Ok(ListKeyPoliciesResponse {
                policy_names: vec!["default".into()],
                truncated: false,
            })
        })
    }

    // ----- principals ----------------------------------------------------

    fn principal_op<R>(
        &self,
        caller: &Caller,
        op: Operation,
        name: &str,
        change: impl FnOnce(&mut State, f64) -> Result<R>,
    ) -> Result<R> {
        self.audited(caller, op, |trail| {
            let action = format!("kms:{}", op.name());
            let resources = vec![format!("principal/{name}"), "*".into()];
            self.authorize(trail, caller, &action, &resources, None)?;
            check_principal_name(name)?;
            self.mutate(change)
        })
    }

    /// Credentials for `target` handed to `caller` must not give the caller
    /// rights it does not already hold: no principal grants itself more
    /// than a policy file gives it.
    fn no_escalation(&self, caller: &Caller, target: &str) -> Result<()> {
        if caller.principal == target || self.policies().covers(&caller.principal, target) {
            return Ok(());
        }
        Err(KmsError::new(
            ErrorCode::AccessDenied,
            format!(
                "principal '{}' may not obtain credentials of '{target}': the policies allow \
                 '{target}' actions that '{}' does not hold on every key",
                caller.principal, caller.principal
            ),
        ))
    }

    fn create_principal(&self, caller: &Caller, r: &PrincipalRequest) -> Result<AccessKeyResponse> {
        let name = r.principal_name.clone();
        self.principal_op(caller, Operation::CreatePrincipal, &name, |state, now| {
            self.no_escalation(caller, &name)?;
            if state.principals.contains_key(&name) {
                return Err(KmsError::new(
                    ErrorCode::AlreadyExists,
                    format!("principal {name} already exists"),
                ));
            }
            let key = new_access_key(now);
            let response = AccessKeyResponse {
                principal_name: name.clone(),
                access_key_id: key.id.clone(),
                secret_access_key: key.secret.clone(),
            };
            state.principals.insert(
                name.clone(),
                PrincipalRecord {
                    created: now,
                    access_keys: vec![key],
                },
            );
            Ok(response)
        })
    }

    fn delete_principal(&self, caller: &Caller, r: &PrincipalRequest) -> Result<Empty> {
        let name = r.principal_name.clone();
        self.principal_op(caller, Operation::DeletePrincipal, &name, |state, _| {
            if name == caller.principal {
                return Err(KmsError::validation("a principal cannot delete itself"));
            }
            state
                .principals
                .remove(&name)
                .map(|_| Empty {})
                .ok_or_else(|| KmsError::not_found(format!("principal {name} does not exist")))
        })
    }

    fn create_access_key(
        &self,
        caller: &Caller,
        r: &PrincipalRequest,
    ) -> Result<AccessKeyResponse> {
        let name = r.principal_name.clone();
        self.principal_op(caller, Operation::CreateAccessKey, &name, |state, now| {
            self.no_escalation(caller, &name)?;
            let p = state
                .principals
                .get_mut(&name)
                .ok_or_else(|| KmsError::not_found(format!("principal {name} does not exist")))?;
            if p.access_keys.len() >= 2 {
                return Err(KmsError::new(
                    ErrorCode::LimitExceeded,
                    format!("principal {name} already has 2 access keys; delete one first"),
                ));
            }
            let key = new_access_key(now);
            let response = AccessKeyResponse {
                principal_name: name.clone(),
                access_key_id: key.id.clone(),
                secret_access_key: key.secret.clone(),
            };
            p.access_keys.push(key);
            Ok(response)
        })
    }

    fn delete_access_key(&self, caller: &Caller, r: &DeleteAccessKeyRequest) -> Result<Empty> {
        let name = r.principal_name.clone();
        self.principal_op(caller, Operation::DeleteAccessKey, &name, |state, _| {
            let p = state
                .principals
                .get_mut(&name)
                .ok_or_else(|| KmsError::not_found(format!("principal {name} does not exist")))?;
            let before = p.access_keys.len();
            p.access_keys.retain(|k| k.id != r.access_key_id);
            if p.access_keys.len() == before {
                return Err(KmsError::not_found(format!(
                    "access key {} of principal {name} does not exist",
                    r.access_key_id
                )));
            }
            Ok(Empty {})
        })
    }

    fn list_principals(&self, caller: &Caller) -> Result<ListPrincipalsResponse> {
        self.audited(caller, Operation::ListPrincipals, |trail| {
            self.authorize(trail, caller, "kms:ListPrincipals", &["*".into()], None)?;
            let snap = self.snapshot()?;
            Ok(ListPrincipalsResponse {
                principals: snap
                    .state
                    .principals
                    .iter()
                    .map(|(name, p)| PrincipalEntry {
                        principal_name: name.clone(),
                        access_key_ids: p.access_keys.iter().map(|k| k.id.clone()).collect(),
                        creation_date: p.created,
                    })
                    .collect(),
            })
        })
    }
}

enum KeyName<'a> {
    Id(Uuid),
    Alias(&'a str),
}

fn is_past_deletion(key: &KeyRecord, now: f64) -> bool {
    key.state == KeyState::PendingDeletion && key.deletion_date.is_some_and(|d| d <= now)
}

/// Deletes for good the keys whose pending window has passed, and their aliases.
fn purge_deleted(state: &mut State, now: f64) {
    let gone: Vec<Uuid> = state
        .keys
        .values()
        .filter(|k| is_past_deletion(k, now))
        .map(|k| k.id)
        .collect();
    for id in &gone {
        state.keys.remove(id);
    }
    state.aliases.retain(|_, a| !gone.contains(&a.target));
}

fn add_version(key: &mut KeyRecord, now: f64, origin: &str) {
    let version = key.versions.len() as u32 + 1;
    key.versions.push(KeyVersion {
        version,
        created: now,
        origin: origin.into(),
        material: Secret::random(32),
    });
}

fn load_policies(dirs: &[PathBuf]) -> Result<PolicySet> {
    let mut set: Option<PolicySet> = None;
    for dir in dirs {
        let more = PolicySet::load_dir(dir)
            .map_err(|e| KmsError::internal(format!("refusing to start: {e}")))?;
        match set.as_mut() {
            Some(s) => s.merge(more),
            None => set = Some(more),
        }
    }
    set.ok_or_else(|| KmsError::internal("no policy folder"))
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

/// One authenticated principal's view of a [`KmsService`].
#[derive(Clone)]
pub struct LocalSession {
    service: Arc<KmsService>,
    caller: Caller,
}

impl std::fmt::Debug for LocalSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "LocalSession({})", self.caller.principal)
    }
}

impl LocalSession {
    /// The service behind this session.
    pub fn service(&self) -> &Arc<KmsService> {
        &self.service
    }

    /// The principal this session acts as.
    pub fn caller(&self) -> &Caller {
        &self.caller
    }
}

impl Kms for LocalSession {
    fn call(&self, op: Operation, request: &[u8]) -> Result<Secret> {
        dispatch(self, op, request)
    }
    fn create_key(&self, r: &CreateKeyRequest) -> Result<KeyMetadataResponse> {
        self.service.create_key(&self.caller, r)
    }
    fn describe_key(&self, r: &KeyIdRequest) -> Result<KeyMetadataResponse> {
        self.service.describe_key(&self.caller, r)
    }
    fn list_keys(&self, r: &ListRequest) -> Result<ListKeysResponse> {
        self.service.list_keys(&self.caller, r)
    }
    fn enable_key(&self, r: &KeyIdRequest) -> Result<Empty> {
        self.service.enable_key(&self.caller, r)
    }
    fn disable_key(&self, r: &KeyIdRequest) -> Result<Empty> {
        self.service.disable_key(&self.caller, r)
    }
    fn schedule_key_deletion(
        &self,
        r: &ScheduleKeyDeletionRequest,
    ) -> Result<ScheduleKeyDeletionResponse> {
        self.service.schedule_key_deletion(&self.caller, r)
    }
    fn cancel_key_deletion(&self, r: &KeyIdRequest) -> Result<KeyIdResponse> {
        self.service.cancel_key_deletion(&self.caller, r)
    }
    fn create_alias(&self, r: &AliasRequest) -> Result<Empty> {
        self.service.write_alias(&self.caller, r, true)
    }
    fn update_alias(&self, r: &AliasRequest) -> Result<Empty> {
        self.service.write_alias(&self.caller, r, false)
    }
    fn delete_alias(&self, r: &DeleteAliasRequest) -> Result<Empty> {
        self.service.delete_alias(&self.caller, r)
    }
    fn list_aliases(&self, r: &ListRequest) -> Result<ListAliasesResponse> {
        self.service.list_aliases(&self.caller, r)
    }
    fn enable_key_rotation(&self, r: &EnableKeyRotationRequest) -> Result<Empty> {
        self.service.enable_key_rotation(&self.caller, r)
    }
    fn disable_key_rotation(&self, r: &KeyIdRequest) -> Result<Empty> {
        self.service.disable_key_rotation(&self.caller, r)
    }
    fn get_key_rotation_status(&self, r: &KeyIdRequest) -> Result<KeyRotationStatusResponse> {
        self.service.get_key_rotation_status(&self.caller, r)
    }
    fn rotate_key_on_demand(&self, r: &KeyIdRequest) -> Result<KeyIdResponse> {
        self.service.rotate_key_on_demand(&self.caller, r)
    }
    fn list_key_rotations(&self, r: &ListRequest) -> Result<ListKeyRotationsResponse> {
        self.service.list_key_rotations(&self.caller, r)
    }
    fn encrypt(&self, r: &EncryptRequest) -> Result<EncryptResponse> {
        self.service.encrypt(&self.caller, r)
    }
    fn decrypt(&self, r: &DecryptRequest) -> Result<DecryptResponse> {
        self.service.decrypt(&self.caller, r)
    }
    fn re_encrypt(&self, r: &ReEncryptRequest) -> Result<ReEncryptResponse> {
        self.service.re_encrypt(&self.caller, r)
    }
    fn re_encrypt_many(&self, requests: &[ReEncryptRequest]) -> Vec<Result<ReEncryptResponse>> {
        self.service.re_encrypt_many(&self.caller, requests)
    }
    fn generate_data_key(&self, r: &GenerateDataKeyRequest) -> Result<GenerateDataKeyResponse> {
        let (plaintext, e) = self
            .service
            .data_key(&self.caller, Operation::GenerateDataKey, r)?;
        Ok(GenerateDataKeyResponse {
            ciphertext_blob: e.ciphertext_blob,
            plaintext,
            key_id: e.key_id,
        })
    }
    fn generate_data_key_without_plaintext(
        &self,
        r: &GenerateDataKeyRequest,
    ) -> Result<GenerateDataKeyWithoutPlaintextResponse> {
        let op = Operation::GenerateDataKeyWithoutPlaintext;
        let (_, e) = self.service.data_key(&self.caller, op, r)?;
        Ok(GenerateDataKeyWithoutPlaintextResponse {
            ciphertext_blob: e.ciphertext_blob,
            key_id: e.key_id,
        })
    }
    fn generate_random(&self, r: &GenerateRandomRequest) -> Result<GenerateRandomResponse> {
        self.service.generate_random(&self.caller, r)
    }
    fn get_key_policy(&self, r: &GetKeyPolicyRequest) -> Result<GetKeyPolicyResponse> {
        self.service.get_key_policy(&self.caller, r)
    }
    fn list_key_policies(&self, r: &ListRequest) -> Result<ListKeyPoliciesResponse> {
        self.service.list_key_policies(&self.caller, r)
    }
    fn create_principal(&self, r: &PrincipalRequest) -> Result<AccessKeyResponse> {
        self.service.create_principal(&self.caller, r)
    }
    fn delete_principal(&self, r: &PrincipalRequest) -> Result<Empty> {
        self.service.delete_principal(&self.caller, r)
    }
    fn list_principals(&self, _: &Empty) -> Result<ListPrincipalsResponse> {
        self.service.list_principals(&self.caller)
    }
    fn create_access_key(&self, r: &PrincipalRequest) -> Result<AccessKeyResponse> {
        self.service.create_access_key(&self.caller, r)
    }
    fn delete_access_key(&self, r: &DeleteAccessKeyRequest) -> Result<Empty> {
        self.service.delete_access_key(&self.caller, r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner() -> (tempfile::TempDir, LocalSession) {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().join("ks");
        KmsService::init(&home).unwrap();
        let service = KmsService::open(&home, None).unwrap();
        let session = service.session(Caller {
            principal: OWNER.into(),
            ..Caller::default()
        });
        (dir, session)
    }

    fn key_id(kms: &LocalSession) -> String {
        kms.create_key(&CreateKeyRequest::default())
            .unwrap()
            .key_metadata
            .key_id
    }

    #[test]
    fn deletion_takes_effect_when_the_window_passes() {
        let (_dir, kms) = owner();
        let id = key_id(&kms);
        let keep = key_id(&kms);
        let scheduled = kms
            .schedule_key_deletion(&ScheduleKeyDeletionRequest {
                key_id: id.clone(),
                pending_window_in_days: Some(7),
            })
            .unwrap();
        assert_eq!(scheduled.key_state, "PendingDeletion");
        assert_eq!(scheduled.pending_window_in_days, 7);
        let describe = |k: &str| {
            kms.describe_key(&KeyIdRequest {
                key_id: k.into(),
                grant_tokens: None,
            })
        };
        assert_eq!(
            describe(&id).unwrap().key_metadata.key_state,
            "PendingDeletion"
        );
        kms.service().set_clock_offset_days(6);
        assert!(describe(&id).is_ok(), "still inside the window");
        kms.service().set_clock_offset_days(8);
        assert_eq!(describe(&id).unwrap_err().code, ErrorCode::NotFound);
        let listed = kms.list_keys(&ListRequest::default()).unwrap();
        assert_eq!(listed.keys.len(), 1);
        assert_eq!(listed.keys[0].key_id, keep);
        // The next update purges the key from the keystore for good.
        key_id(&kms);
        let (state, _) = kms.service().keystore.load().unwrap();
        assert!(!state.keys.contains_key(&Uuid::parse_str(&id).unwrap()));
    }

    #[test]
    fn automatic_rotation_adds_a_version_when_due() {
        let (_dir, kms) = owner();
        let id = key_id(&kms);
        kms.enable_key_rotation(&EnableKeyRotationRequest {
            key_id: id.clone(),
            rotation_period_in_days: Some(90),
        })
        .unwrap();
        assert!(kms.service().rotate_due_keys().unwrap().is_empty());
        kms.service().set_clock_offset_days(91);
        let rotated = kms.service().rotate_due_keys().unwrap();
        assert_eq!(rotated.len(), 1);
        assert!(rotated[0].ends_with(&id));
        assert!(
            kms.service().rotate_due_keys().unwrap().is_empty(),
            "next one is 90 days on"
        );
        let rotations = kms
            .list_key_rotations(&ListRequest {
                key_id: Some(id.clone()),
                ..ListRequest::default()
            })
            .unwrap();
        assert_eq!(rotations.rotations.len(), 1);
        assert_eq!(rotations.rotations[0].rotation_type, "AUTOMATIC");
    }

    #[test]
    fn cancelled_deletion_leaves_the_key_disabled() {
        let (_dir, kms) = owner();
        let id = key_id(&kms);
        let req = KeyIdRequest {
            key_id: id.clone(),
            grant_tokens: None,
        };
        kms.schedule_key_deletion(&ScheduleKeyDeletionRequest {
            key_id: id.clone(),
            pending_window_in_days: None,
        })
        .unwrap();
        assert_eq!(
            kms.disable_key(&req).unwrap_err().code,
            ErrorCode::InvalidState
        );
        kms.cancel_key_deletion(&req).unwrap();
        let meta = kms.describe_key(&req).unwrap().key_metadata;
        assert_eq!(meta.key_state, "Disabled");
        assert_eq!(meta.deletion_date, None);
        assert_eq!(
            kms.cancel_key_deletion(&req).unwrap_err().code,
            ErrorCode::InvalidState
        );
        kms.enable_key(&req).unwrap();
    }

    #[test]
    fn unknown_keys_are_access_denied_to_callers_without_rights() {
        let (_dir, kms) = owner();
        let stranger = kms.service().session(Caller {
            principal: "stranger".into(),
            ..Caller::default()
        });
        let req = KeyIdRequest {
            key_id: Uuid::new_v4().to_string(),
            grant_tokens: None,
        };
        assert_eq!(
            stranger.describe_key(&req).unwrap_err().code,
            ErrorCode::AccessDenied
        );
        assert_eq!(
            kms.describe_key(&req).unwrap_err().code,
            ErrorCode::NotFound
        );
    }

    #[test]
    fn generate_data_key_checks_its_parameters() {
        let (_dir, kms) = owner();
        let id = key_id(&kms);
        let req = |spec: Option<&str>, n: Option<u32>| GenerateDataKeyRequest {
            key_id: id.clone(),
            key_spec: spec.map(String::from),
            number_of_bytes: n,
            ..Default::default()
        };
        assert_eq!(
            kms.generate_data_key(&req(Some("AES_128"), None))
                .unwrap()
                .plaintext
                .len(),
            16
        );
        assert_eq!(
            kms.generate_data_key(&req(None, Some(1024)))
                .unwrap()
                .plaintext
                .len(),
            1024
        );
        for bad in [
            req(None, None),
            req(Some("AES_256"), Some(32)),
            req(None, Some(1025)),
            req(Some("RSA"), None),
        ] {
            assert_eq!(
                kms.generate_data_key(&bad).unwrap_err().code,
                ErrorCode::Validation
            );
        }
        let wp = kms
            .generate_data_key_without_plaintext(&req(Some("AES_256"), None))
            .unwrap();
        assert_eq!(wp.ciphertext_blob.0.len(), 32 + blob::OVERHEAD);
    }
}

//! Custom key stores: CreateCustomKeyStore, DescribeCustomKeyStores,
//! ConnectCustomKeyStore, DisconnectCustomKeyStore, UpdateCustomKeyStore,
//! DeleteCustomKeyStore, and the cryptography of keys whose material a
//! PKCS#11 token holds ([`crate::hsm`]).
//!
//! A store's record (in the sealed keystore state) says where its token is,
//! where its PIN is read, and whether rewrap was told to connect it. Every
//! process that uses a `CONNECTED` store logs in to its token on first use
//! and keeps the token in [`Tokens`]; a store another process disconnected
//! is seen in the next keystore snapshot, and its keys refuse cryptography
//! with `KMSInvalidStateException` while every other key keeps working.

use super::authz::Trail;
use super::{page, Caller, KmsService, Snapshot};
use crate::api::{
    CreateCustomKeyStoreRequest, CreateCustomKeyStoreResponse, CustomKeyStoreEntry,
    CustomKeyStoreIdRequest, DescribeCustomKeyStoresRequest, DescribeCustomKeyStoresResponse,
    Empty, EncryptionContext, Operation, UpdateCustomKeyStoreRequest,
};
use crate::ciphertext_blob::{self, BlobHeader};
use crate::error::{ErrorCode, KmsError, Result};
use crate::hsm::{self, HsmError, ModuleConfig, PinSource, Token, TokenSelector};
use crate::keystore::{ConnectionState, CustomKeyStoreRecord, KeyRecord, KeyVersion, State};
use crate::operation::Action;
use crate::secret::Secret;
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

/// The only `CustomKeyStoreType` rewrap has.
pub(super) const PKCS11: &str = "PKCS11";
/// The `Origin` of keys in a custom key store, as AWS names it.
pub(super) const AWS_CLOUDHSM: &str = "AWS_CLOUDHSM";
const MAX_NAME: usize = 256;

/// Logged-in tokens by store id, each with the connection settings it was
/// opened with (a store updated since is opened again).
#[derive(Default)]
pub(super) struct Tokens(Mutex<HashMap<String, (Connection, Arc<Token>)>>);

/// What a token was opened with.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Connection {
    module: String,
    token: TokenSelector,
    pin: PinSource,
}

impl Connection {
    fn of(record: &CustomKeyStoreRecord) -> Result<Connection> {
        let token = match (&record.token_label, &record.token_serial) {
            (Some(l), _) => TokenSelector::Label(l.clone()),
            (None, Some(s)) => TokenSelector::Serial(s.clone()),
            (None, None) => return Err(KmsError::internal("custom key store names no token")),
        };
        Ok(Connection {
            module: record.module_path.clone(),
            token,
            pin: PinSource::parse(&record.pin_source).map_err(KmsError::validation)?,
        })
    }

    /// Logs in, after checking the module against `modules` (nothing is
    /// loaded when the check fails).
    fn open(&self, modules: &ModuleConfig) -> std::result::Result<Token, HsmError> {
        let module = modules.check(Path::new(&self.module))?;
        Token::open(&module, &self.token, &self.pin, hsm::default_sessions())
    }
}

fn store_not_found(what: &str) -> KmsError {
    KmsError::new(
        ErrorCode::CustomKeyStoreNotFound,
        format!("custom key store {what} does not exist"),
    )
}

fn invalid_state(record: &CustomKeyStoreRecord, why: &str) -> KmsError {
    KmsError::new(
        ErrorCode::CustomKeyStoreInvalidState,
        format!(
            "custom key store {} is {}: {why}",
            record.id,
            record.state.as_str()
        ),
    )
}

/// A `PinSource` or AWS `KeyStorePassword` member, which must be a
/// reference; both given must agree.
fn pin_source(pin: &Option<String>, password: &Option<String>) -> Result<Option<String>> {
    let mut found = None;
    for (member, value) in [("PinSource", pin), ("KeyStorePassword", password)] {
        if let Some(v) = value {
            PinSource::parse(v).map_err(|why| KmsError::validation(format!("{member}: {why}")))?;
            if found.as_ref().is_some_and(|f| f != v) {
                return Err(KmsError::validation(
                    "PinSource and KeyStorePassword name different PIN sources",
                ));
            }
            found = Some(v.clone());
        }
    }
    Ok(found)
}

fn check_name(name: &str) -> Result<()> {
    if name.is_empty() || name.len() > MAX_NAME {
        return Err(KmsError::validation(format!(
            "CustomKeyStoreName must be 1 to {MAX_NAME} characters"
        )));
    }
    Ok(())
}

fn name_taken(state: &State, name: &str, except: &str) -> Result<()> {
    if state
        .custom_key_stores
        .values()
        .any(|s| s.name == name && s.id != except)
    {
        return Err(KmsError::new(
            ErrorCode::CustomKeyStoreNameInUse,
            format!("a custom key store named {name:?} already exists"),
        ));
    }
    Ok(())
}

fn new_store_id() -> String {
    let hex = hex::encode(rand::random::<[u8; 9]>());
    format!("cks-{}", &hex[..17])
}

fn entry(s: &CustomKeyStoreRecord) -> CustomKeyStoreEntry {
    CustomKeyStoreEntry {
        custom_key_store_id: s.id.clone(),
        custom_key_store_name: s.name.clone(),
        custom_key_store_type: PKCS11.into(),
        connection_state: s.state.as_str().into(),
        connection_error_code: s.error_code.clone(),
        connection_error_message: s.error_message.clone(),
        creation_date: s.created,
        pkcs11_module_path: s.module_path.clone(),
        token_label: s.token_label.clone(),
        token_serial: s.token_serial.clone(),
        pin_source: s.pin_source.clone(),
        token_objects_to_destroy: (!s.objects_to_destroy.is_empty())
            .then_some(s.objects_to_destroy.len()),
    }
}

/// Records, in their stores, the token objects of the keys `gone` (being
/// deleted for good in this update), one per key-material version.
pub(super) fn queue_token_objects(state: &mut State, gone: &[uuid::Uuid]) {
    for id in gone {
        let Some(key) = state.keys.get(id) else {
            continue;
        };
        let Some(store) = key.custom_key_store_id.as_deref() else {
            continue;
        };
        let labels: Vec<String> = key
            .versions
            .iter()
            .map(|v| hsm::key_label(&key.id, v.version))
            .collect();
        if let Some(record) = state.custom_key_stores.get_mut(store) {
            record.objects_to_destroy.extend(labels);
        }
    }
}

/// Whether a connected store has token objects to destroy.
pub(super) fn has_objects_to_destroy(state: &State) -> bool {
    state
        .custom_key_stores
        .values()
        .any(|s| s.state == ConnectionState::Connected && !s.objects_to_destroy.is_empty())
}

impl KmsService {
    /// The module allow-list of the keystore's configuration.
    fn modules(&self) -> &ModuleConfig {
        &self.keystore.config().custom_key_stores
    }

    /// Refuses a `Pkcs11ModulePath` the allow-list does not admit, before
    /// anything is loaded or stored (the refusal is audited with the path).
    /// A listed module that is not installed (yet) is accepted: connecting
    /// reports `PKCS11_MODULE_NOT_FOUND`.
    fn check_module(&self, trail: &mut Trail, path: &str) -> Result<()> {
        trail.param("Pkcs11ModulePath", path.to_string());
        match self.modules().check(Path::new(path)) {
            Ok(_) | Err(HsmError::ModuleNotFound(_)) => Ok(()),
            Err(e) => Err(KmsError::validation(format!(
                "{e}. The modules rewrap may load are listed in custom_key_stores.allowed_modules of {}",
                self.keystore.dir().join("config.toml").display()
            ))),
        }
    }

    /// Checks an account-level custom key store action.
    fn authorize_store(&self, trail: &mut Trail, caller: &Caller, action: Action) -> Result<()> {
        self.authorize(trail, caller, action, &["*".into()], None)
    }

    /// Whether any custom key store exists: operations on its keys call a
    /// PKCS#11 module, which may hold the thread (the server then runs
    /// every operation on its blocking pool).
    pub(crate) fn uses_custom_key_stores(&self) -> bool {
        self.snapshot
            .read()
            .map_or(true, |s| !s.state.custom_key_stores.is_empty())
    }

    pub(super) fn create_custom_key_store(
        &self,
        caller: &Caller,
        r: &CreateCustomKeyStoreRequest,
    ) -> Result<CreateCustomKeyStoreResponse> {
        self.audited(caller, Operation::CreateCustomKeyStore, |trail| {
            self.authorize_store(trail, caller, Action::CreateCustomKeyStore)?;
            check_name(&r.custom_key_store_name)?;
            match r.custom_key_store_type.as_deref() {
                None | Some(PKCS11) => {}
                Some(other) => {
                    return Err(KmsError::new(
                        ErrorCode::UnsupportedOperation,
                        format!("CustomKeyStoreType {other} is not supported; rewrap's custom key stores are {PKCS11}"),
                    ))
                }
            }
            let module = r
                .pkcs11_module_path
                .clone()
                .ok_or_else(|| KmsError::validation("Pkcs11ModulePath is required"))?;
            self.check_module(trail, &module)?;
            if r.token_label.is_some() == r.token_serial.is_some() {
                return Err(KmsError::validation(
                    "give exactly one of TokenLabel and TokenSerial",
                ));
            }
            let pin = pin_source(&r.pin_source, &r.key_store_password)?
                .ok_or_else(|| KmsError::validation("PinSource (file:PATH or env:NAME) is required"))?;
            let id = self.mutate(|state, now| {
                name_taken(state, &r.custom_key_store_name, "")?;
                let id = new_store_id();
                state.custom_key_stores.insert(
                    id.clone(),
                    CustomKeyStoreRecord {
                        id: id.clone(),
                        name: r.custom_key_store_name.clone(),
                        created: now,
                        module_path: module,
                        token_label: r.token_label.clone(),
                        token_serial: r.token_serial.clone(),
                        pin_source: pin,
                        state: ConnectionState::Disconnected,
                        error_code: None,
                        error_message: None,
                        objects_to_destroy: Vec::new(),
                    },
                );
                Ok(id)
            })?;
            trail.param("CustomKeyStoreId", id.clone());
            Ok(CreateCustomKeyStoreResponse {
                custom_key_store_id: id,
            })
        })
    }

    pub(super) fn describe_custom_key_stores(
        &self,
        caller: &Caller,
        r: &DescribeCustomKeyStoresRequest,
    ) -> Result<DescribeCustomKeyStoresResponse> {
        self.audited(caller, Operation::DescribeCustomKeyStores, |trail| {
            self.authorize_store(trail, caller, Action::DescribeCustomKeyStores)?;
            let snap = self.snapshot()?;
            let all: Vec<CustomKeyStoreEntry> = snap
                .state
                .custom_key_stores
                .values()
                .filter(|s| r.custom_key_store_id.as_ref().is_none_or(|id| *id == s.id))
                .filter(|s| {
                    r.custom_key_store_name
                        .as_ref()
                        .is_none_or(|n| *n == s.name)
                })
                .map(entry)
                .collect();
            if all.is_empty() {
                if let Some(what) = r
                    .custom_key_store_id
                    .as_ref()
                    .or(r.custom_key_store_name.as_ref())
                {
                    return Err(store_not_found(what));
                }
            }
            let (custom_key_stores, next_marker) = page(&all, r.limit, &r.marker)?;
            Ok(DescribeCustomKeyStoresResponse {
                custom_key_stores,
                truncated: next_marker.is_some(),
                next_marker,
            })
        })
    }

    /// Records `state` (and an error) for store `id`.
    fn set_store_state(
        &self,
        id: &str,
        state: ConnectionState,
        error: Option<&HsmError>,
    ) -> Result<()> {
        self.mutate(|s, _| {
            let record = s
                .custom_key_stores
                .get_mut(id)
                .ok_or_else(|| store_not_found(id))?;
            record.state = state;
            record.error_code = error.map(|e| e.connection_error_code().to_string());
            record.error_message = error.map(ToString::to_string);
            Ok(())
        })
    }

    /// Logs in to the store's token. As AWS's, the call succeeds when the
    /// attempt was made: a failed attempt leaves the store `FAILED` with its
    /// `ConnectionErrorCode` (the CLI reads it back and reports it).
    pub(super) fn connect_custom_key_store(
        &self,
        caller: &Caller,
        r: &CustomKeyStoreIdRequest,
    ) -> Result<Empty> {
        self.audited(caller, Operation::ConnectCustomKeyStore, |trail| {
            self.authorize_store(trail, caller, Action::ConnectCustomKeyStore)?;
            trail.param("CustomKeyStoreId", r.custom_key_store_id.clone());
            let id = &r.custom_key_store_id;
            let record = self.mutate(|s, _| {
                let record = s
                    .custom_key_stores
                    .get_mut(id)
                    .ok_or_else(|| store_not_found(id))?;
                match record.state {
                    ConnectionState::Connected => return Ok(None),
                    ConnectionState::Failed => {
                        return Err(invalid_state(
                            record,
                            "disconnect it (DisconnectCustomKeyStore) before connecting again",
                        ))
                    }
                    _ => {}
                }
                record.state = ConnectionState::Connecting;
                Ok(Some(record.clone()))
            })?;
            let Some(record) = record else {
                return Ok(Empty {});
            };
            let connection = Connection::of(&record)?;
            match connection.open(self.modules()) {
                Ok(token) => {
                    self.tokens
                        .0
                        .lock()
                        .expect("token table lock")
                        .insert(id.clone(), (connection, Arc::new(token)));
                    self.set_store_state(id, ConnectionState::Connected, None)?;
                }
                Err(e) => self.set_store_state(id, ConnectionState::Failed, Some(&e))?,
            }
            Ok(Empty {})
        })
    }

    pub(super) fn disconnect_custom_key_store(
        &self,
        caller: &Caller,
        r: &CustomKeyStoreIdRequest,
    ) -> Result<Empty> {
        self.audited(caller, Operation::DisconnectCustomKeyStore, |trail| {
            self.authorize_store(trail, caller, Action::DisconnectCustomKeyStore)?;
            trail.param("CustomKeyStoreId", r.custom_key_store_id.clone());
            self.set_store_state(&r.custom_key_store_id, ConnectionState::Disconnected, None)?;
            self.tokens
                .0
                .lock()
                .expect("token table lock")
                .remove(&r.custom_key_store_id);
            Ok(Empty {})
        })
    }

    pub(super) fn update_custom_key_store(
        &self,
        caller: &Caller,
        r: &UpdateCustomKeyStoreRequest,
    ) -> Result<Empty> {
        self.audited(caller, Operation::UpdateCustomKeyStore, |trail| {
            self.authorize_store(trail, caller, Action::UpdateCustomKeyStore)?;
            trail.param("CustomKeyStoreId", r.custom_key_store_id.clone());
            if let Some(name) = &r.new_custom_key_store_name {
                check_name(name)?;
            }
            if let Some(module) = &r.pkcs11_module_path {
                self.check_module(trail, module)?;
            }
            if r.token_label.is_some() && r.token_serial.is_some() {
                return Err(KmsError::validation(
                    "give at most one of TokenLabel and TokenSerial",
                ));
            }
            let pin = pin_source(&r.pin_source, &r.key_store_password)?;
            let connection_changes = r.pkcs11_module_path.is_some()
                || r.token_label.is_some()
                || r.token_serial.is_some()
                || pin.is_some();
            let id = &r.custom_key_store_id;
            self.mutate(|s, _| {
                if let Some(name) = &r.new_custom_key_store_name {
                    name_taken(s, name, id)?;
                }
                let record = s
                    .custom_key_stores
                    .get_mut(id)
                    .ok_or_else(|| store_not_found(id))?;
                if connection_changes && record.state != ConnectionState::Disconnected {
                    return Err(invalid_state(
                        record,
                        "disconnect it before changing its module, token or PIN source",
                    ));
                }
                if let Some(name) = &r.new_custom_key_store_name {
                    record.name.clone_from(name);
                }
                if let Some(module) = &r.pkcs11_module_path {
                    record.module_path.clone_from(module);
                }
                if r.token_label.is_some() || r.token_serial.is_some() {
                    record.token_label.clone_from(&r.token_label);
                    record.token_serial.clone_from(&r.token_serial);
                }
                if let Some(pin) = pin {
                    record.pin_source = pin;
                }
                Ok(Empty {})
            })
        })
    }

    pub(super) fn delete_custom_key_store(
        &self,
        caller: &Caller,
        r: &CustomKeyStoreIdRequest,
    ) -> Result<Empty> {
        self.audited(caller, Operation::DeleteCustomKeyStore, |trail| {
            self.authorize_store(trail, caller, Action::DeleteCustomKeyStore)?;
            trail.param("CustomKeyStoreId", r.custom_key_store_id.clone());
            let id = &r.custom_key_store_id;
            self.mutate(|s, _| {
                let record = s
                    .custom_key_stores
                    .get(id)
                    .ok_or_else(|| store_not_found(id))?;
                if record.state != ConnectionState::Disconnected {
                    return Err(invalid_state(record, "disconnect it before deleting it"));
                }
                let keys = s
                    .keys
                    .values()
                    .filter(|k| k.custom_key_store_id.as_deref() == Some(id.as_str()))
                    .count();
                if keys > 0 {
                    return Err(KmsError::new(
                        ErrorCode::CustomKeyStoreHasCMKs,
                        format!("custom key store {id} holds {keys} keys; delete them first (ScheduleKeyDeletion)"),
                    ));
                }
                if !record.objects_to_destroy.is_empty() {
                    return Err(invalid_state(
                        record,
                        &format!(
                            "{} token objects of deleted keys are still to be destroyed: connect it once first",
                            record.objects_to_destroy.len()
                        ),
                    ));
                }
                s.custom_key_stores.remove(id);
                Ok(Empty {})
            })
        })
    }

    /// Destroys the queued token objects of purged keys in every connected
    /// store, then removes from the queue those that are gone (destroyed
    /// now, or already). A failure leaves them queued for the next update:
    /// it never fails the operation that purged the keys.
    pub(super) fn destroy_token_objects(&self) {
        let snap = Arc::clone(&self.snapshot.read().expect("snapshot lock"));
        let mut gone: Vec<(String, String)> = Vec::new();
        for store in snap.state.custom_key_stores.values() {
            if store.state != ConnectionState::Connected || store.objects_to_destroy.is_empty() {
                continue;
            }
            let Ok(token) = self.token_in(&snap, &store.id) else {
                continue;
            };
            for label in &store.objects_to_destroy {
                if token.destroy_key(label).is_ok() {
                    gone.push((store.id.clone(), label.clone()));
                }
            }
        }
        if gone.is_empty() {
            return;
        }
        let update = self.keystore.update(|s| {
            for (store, label) in &gone {
                if let Some(record) = s.custom_key_stores.get_mut(store) {
                    record.objects_to_destroy.retain(|l| l != label);
                }
            }
            Ok::<_, KmsError>(())
        });
        if let Ok(((), state, fingerprint)) = update {
            *self.snapshot.write().expect("snapshot lock") =
                Arc::new(Snapshot::new(state, fingerprint, self.keystore.config()));
        }
    }

    /// The logged-in token of store `id`, which must be `CONNECTED`; any
    /// other state, or a token that cannot be opened now, is
    /// `KMSInvalidStateException` for the key.
    fn token_of(&self, id: &str) -> Result<Arc<Token>> {
        let snap = self.snapshot()?;
        self.token_in(&snap, id)
    }

    /// [`KmsService::token_of`] as `snap` says the store is: inside a
    /// keystore update, whose exclusive lock a fresh snapshot would wait for.
    fn token_in(&self, snap: &Snapshot, id: &str) -> Result<Arc<Token>> {
        let unusable = |why: String| {
            KmsError::new(
                ErrorCode::InvalidState,
                format!("the key's custom key store {id} {why}"),
            )
        };
        let record = snap
            .state
            .custom_key_stores
            .get(id)
            .ok_or_else(|| unusable("does not exist".into()))?;
        let mut tokens = self.tokens.0.lock().expect("token table lock");
        if record.state != ConnectionState::Connected {
            tokens.remove(id);
            return Err(unusable(format!("is {}", record.state.as_str())));
        }
        let connection = Connection::of(record)?;
        if let Some((c, t)) = tokens.get(id) {
            if *c == connection {
                return Ok(Arc::clone(t));
            }
        }
        // Connected by another process (or before this one started): log
        // in here too. The lock is held so that threads log in once.
        let token = Arc::new(
            connection
                .open(self.modules())
                .map_err(|e| unusable(format!("cannot be reached: {e}")))?,
        );
        tokens.insert(id.to_string(), (connection, Arc::clone(&token)));
        Ok(token)
    }

    /// CreateKey's check of `Origin` and `CustomKeyStoreId`: the store a new
    /// key goes to, if any (its token, logged in).
    pub(super) fn store_for_new_key(
        &self,
        origin: Option<&str>,
        store_id: Option<&str>,
    ) -> Result<Option<(String, Arc<Token>)>> {
        match (origin, store_id) {
            (Some(AWS_CLOUDHSM), Some(id)) => {
                let snap = self.snapshot()?;
                let record = snap
                    .state
                    .custom_key_stores
                    .get(id)
                    .ok_or_else(|| store_not_found(id))?;
                if record.state != ConnectionState::Connected {
                    return Err(invalid_state(
                        record,
                        "connect it before creating keys in it",
                    ));
                }
                Ok(Some((id.to_string(), self.token_of(id)?)))
            }
            (Some(AWS_CLOUDHSM), None) => Err(KmsError::validation(
                "Origin AWS_CLOUDHSM needs a CustomKeyStoreId",
            )),
            (_, Some(_)) => Err(KmsError::validation(
                "CustomKeyStoreId needs Origin AWS_CLOUDHSM",
            )),
            _ => Ok(None),
        }
    }

    /// Seals `plain` under the current version of `key`, whose material the
    /// token of its custom key store holds.
    pub(super) fn seal_in_token(
        &self,
        key: &KeyRecord,
        store: &str,
        context: Option<&EncryptionContext>,
        plain: &[u8],
    ) -> Result<Vec<u8>> {
        let token = self.token_of(store)?;
        let v = key.current();
        let label = hsm::key_label(&key.id, v.version);
        let header = BlobHeader {
            key_id: key.id,
            key_version: v.version,
        };
        ciphertext_blob::seal_external(header, context, plain, |iv, aad, plain| {
            token
                .encrypt_gcm(&label, iv, aad, plain)
                .map_err(|e| hsm_failure(&label, &e))
        })
    }

    /// Opens a blob under `version` of `key`: in its token for a key of a
    /// custom key store, in software otherwise.
    pub(super) fn open_blob(
        &self,
        key: &KeyRecord,
        version: &KeyVersion,
        blob: &[u8],
        context: Option<&EncryptionContext>,
    ) -> Result<Secret> {
        let Some(store) = key.custom_key_store_id.as_deref() else {
            return ciphertext_blob::open(&version.material, blob, context);
        };
        let token = self.token_of(store)?;
        let label = hsm::key_label(&key.id, version.version);
        ciphertext_blob::open_external(blob, context, |iv, aad, sealed| {
            token
                .decrypt_gcm(&label, iv, aad, sealed)
                .map_err(|e| match e {
                    HsmError::Authentication => KmsError::invalid_ciphertext(),
                    other => hsm_failure(&label, &other),
                })
        })
    }

    /// Adds a key-material version: a new token object for a key of a
    /// custom key store, random material otherwise.
    pub(super) fn new_key_version(
        &self,
        key: &mut KeyRecord,
        now: f64,
        origin: &str,
    ) -> Result<()> {
        let Some(store) = key.custom_key_store_id.clone() else {
            super::key_rotation::add_version(key, now, origin);
            return Ok(());
        };
        // Called inside a keystore update: the snapshot installed last.
        let snap = Arc::clone(&self.snapshot.read().expect("snapshot lock"));
        let token = self.token_in(&snap, &store)?;
        add_token_version(&token, key, now, origin)
    }
}

/// Generates the token object of `key`'s next version and records it.
pub(super) fn add_token_version(
    token: &Token,
    key: &mut KeyRecord,
    now: f64,
    origin: &str,
) -> Result<()> {
    let version = key.versions.len() as u32 + 1;
    let label = hsm::key_label(&key.id, version);
    token
        .generate_aes_key(&label)
        .map_err(|e| hsm_failure(&label, &e))?;
    key.versions.push(KeyVersion {
        version,
        created: now,
        origin: origin.into(),
        // The material is the token object; none is ever in rewrap.
        material: Secret::default(),
    });
    Ok(())
}

/// A token failure other than a failed decryption, as a KMS error.
fn hsm_failure(label: &str, e: &HsmError) -> KmsError {
    let code = match e {
        HsmError::TokenFull(_) => ErrorCode::LimitExceeded,
        HsmError::KeyNotFound(_) => ErrorCode::InvalidState,
        _ => ErrorCode::Internal,
    };
    KmsError::new(code, format!("HSM key {label}: {e} ({})", e.kind()))
}

//! The PKCS#11 layer: a token in an HSM that holds AES-256 keys rewrap can
//! use but never read.
//!
//! [`Token`] loads a PKCS#11 module (once per process: a second
//! `C_Initialize` of the same library fails, and finalizing one handle would
//! end every other), finds a token by label or serial number, logs in with
//! the user PIN and keeps a pool of sessions sized to the worker threads.
//! Keys are generated inside the token (`CKA_SENSITIVE`, not
//! `CKA_EXTRACTABLE`, `CKA_TOKEN`) and named by their `CKA_LABEL`;
//! AES-GCM encryption and decryption run inside the token with the IV and
//! the additional authenticated data rewrap passes (PKCS#11 v2.40
//! `CK_GCM_PARAMS`, 128-bit tag appended to the ciphertext).
//!
//! Operations use a session-object copy of each key (`C_CopyObject` with
//! `CKA_TOKEN=false`), made on first use and kept in a per-process cache:
//! the copy is still inside the HSM, sensitive and not extractable (a copy
//! never loosens those), but a module need not re-check its token storage
//! on every `C_EncryptInit`/`C_DecryptInit` (SoftHSM2 opens, locks and
//! reads the key's object file each time for a token object). A module
//! that refuses the copy is used through the token object. The copies end
//! with the sessions (a disconnect, a token reset) and are destroyed with
//! their key; a copy whose handle the module no longer knows is made again.
//!
//! A session lost to a token reset (`CKR_SESSION_HANDLE_INVALID`,
//! `CKR_USER_NOT_LOGGED_IN`, ...) is replaced once: the pool is emptied, a
//! new session logs in again and the call is repeated.
//!
//! The PIN is read from a [`PinSource`] (a file or an environment variable)
//! when the token is opened and kept only in cryptoki's zeroizing
//! `AuthPin`; it is never in an error message.

use crate::secret::Secret;
use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex, OnceLock};

/// Length of the AES-GCM IV rewrap passes to the token.
pub const IV_LEN: usize = 12;
/// Length of the AES-GCM tag the token appends.
pub const TAG_LEN: usize = 16;

/// Why a PKCS#11 call failed. Messages name the module, the token or the
/// key label, never the PIN or key material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HsmError {
    /// The PKCS#11 module file is not there.
    #[error("PKCS#11 module {} not found", .0.display())]
    ModuleNotFound(PathBuf),
    /// The module could not be loaded or initialized.
    #[error("PKCS#11 module {}: {}", .0.display(), .1)]
    Module(PathBuf, String),
    /// No slot holds a token with that label or serial number.
    #[error("no PKCS#11 token {0} in the module")]
    TokenNotFound(String),
    /// The PIN source could not be read (the PIN itself is never shown).
    #[error("PIN source {0}: {1}")]
    PinSource(String, String),
    /// The token refused the PIN.
    #[error("the token refused the user PIN (CKR_PIN_INCORRECT)")]
    InvalidCredentials,
    /// The token locked the user out after too many wrong PINs.
    #[error("the token's user PIN is locked (CKR_PIN_LOCKED)")]
    PinLocked,
    /// The token has no room for another object.
    #[error("the token cannot store another key object ({0}): it is full, or its storage failed")]
    TokenFull(String),
    /// No key object has that label.
    #[error("no key object labelled {0} in the token")]
    KeyNotFound(String),
    /// AES-GCM decryption failed: the ciphertext, the tag or the additional
    /// data does not match.
    #[error("authentication failed")]
    Authentication,
    /// The module is not one the keystore's configuration allows
    /// (`custom_key_stores.allowed_modules`), or its file could be replaced
    /// by someone else: refused before it is loaded.
    #[error("PKCS#11 module {} is refused: {}", .0.display(), .1)]
    ModuleNotAllowed(PathBuf, String),
    /// Any other PKCS#11 failure.
    #[error("{function}: {rv}")]
    Pkcs11 {
        /// The PKCS#11 function.
        function: String,
        /// The return value's name.
        rv: String,
    },
}

impl HsmError {
    /// A stable PascalCase name for reports and tests.
    pub fn kind(&self) -> &'static str {
        match self {
            HsmError::ModuleNotFound(_) => "ModuleNotFound",
            HsmError::Module(..) => "ModuleLoad",
            HsmError::ModuleNotAllowed(..) => "ModuleNotAllowed",
            HsmError::TokenNotFound(_) => "TokenNotFound",
            HsmError::PinSource(..) => "PinSourceUnreadable",
            HsmError::InvalidCredentials => "InvalidCredentials",
            HsmError::PinLocked => "PinLocked",
            HsmError::TokenFull(_) => "TokenFull",
            HsmError::KeyNotFound(_) => "KeyNotFound",
            HsmError::Authentication => "Authentication",
            HsmError::Pkcs11 { .. } => "Pkcs11",
        }
    }

    /// The custom key store's `ConnectionErrorCode` for a failure to
    /// connect: AWS's names where one fits, rewrap's otherwise.
    pub fn connection_error_code(&self) -> &'static str {
        match self {
            HsmError::InvalidCredentials => "INVALID_CREDENTIALS",
            HsmError::PinLocked => "USER_LOCKED_OUT",
            HsmError::ModuleNotFound(_) | HsmError::Module(..) => "PKCS11_MODULE_NOT_FOUND",
            HsmError::ModuleNotAllowed(..) => "PKCS11_MODULE_NOT_ALLOWED",
            HsmError::TokenNotFound(_) => "TOKEN_NOT_FOUND",
            HsmError::PinSource(..) => "PIN_SOURCE_UNREADABLE",
            _ => "INTERNAL_ERROR",
        }
    }

    fn from_ck(e: CkError) -> HsmError {
        match e {
            CkError::Pkcs11(RvError::PinIncorrect, _) => HsmError::InvalidCredentials,
            CkError::Pkcs11(RvError::PinLocked, _) => HsmError::PinLocked,
            CkError::Pkcs11(rv, function) => HsmError::Pkcs11 {
                function: format!("{function:?}"),
                rv: format!("{rv:?}"),
            },
            other => HsmError::Pkcs11 {
                function: "cryptoki".into(),
                rv: other.to_string(),
            },
        }
    }
}

/// Whether a failure means the session or the login is gone (a token
/// reset, a removed and reinserted token): worth one new session.
fn session_lost(e: &CkError) -> bool {
    matches!(
        e,
        CkError::Pkcs11(
            RvError::SessionHandleInvalid
                | RvError::SessionClosed
                | RvError::UserNotLoggedIn
                | RvError::TokenNotPresent
                | RvError::DeviceRemoved,
            _
        )
    )
}

/// Where the user PIN comes from: `file:PATH` (the first line of a file) or
/// `env:NAME` (an environment variable of the process that connects).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PinSource {
    /// The first line of a file.
    File(PathBuf),
    /// An environment variable.
    Env(String),
}

impl PinSource {
    /// Parses `file:PATH` or `env:NAME`; anything else (a PIN given inline)
    /// is refused, and the refusal does not repeat it.
    pub fn parse(text: &str) -> Result<PinSource, String> {
        if let Some(path) = text.strip_prefix("file:").filter(|p| !p.is_empty()) {
            return Ok(PinSource::File(PathBuf::from(path)));
        }
        if let Some(name) = text.strip_prefix("env:").filter(|n| !n.is_empty()) {
            return Ok(PinSource::Env(name.to_string()));
        }
        Err(
            "the PIN must be given by reference, as file:PATH or env:NAME; rewrap never takes a PIN inline"
                .into(),
        )
    }

    /// Reads the PIN.
    pub fn read(&self) -> Result<Secret, HsmError> {
        let err = |why: String| HsmError::PinSource(self.to_string(), why);
        let mut pin = match self {
            PinSource::File(path) => {
                Secret::new(std::fs::read(path).map_err(|e| err(e.kind().to_string()))?)
            }
            PinSource::Env(name) => Secret::new(
                std::env::var_os(name)
                    .ok_or_else(|| err("not set".into()))?
                    .into_encoded_bytes(),
            ),
        };
        let end = pin
            .expose()
            .iter()
            .position(|&b| b == b'\n' || b == b'\r')
            .unwrap_or(pin.len());
        pin.expose_mut().truncate(end);
        if pin.is_empty() {
            return Err(err("empty".into()));
        }
        Ok(pin)
    }
}

impl std::fmt::Display for PinSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PinSource::File(p) => write!(f, "file:{}", p.display()),
            PinSource::Env(n) => write!(f, "env:{n}"),
        }
    }
}

/// Which token of a module: by label or by serial number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenSelector {
    /// `CKA_LABEL` of the token (trailing blanks ignored).
    Label(String),
    /// The token's serial number.
    Serial(String),
}

impl std::fmt::Display for TokenSelector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TokenSelector::Label(l) => write!(f, "labelled {l:?}"),
            TokenSelector::Serial(s) => write!(f, "with serial {s:?}"),
        }
    }
}

/// The `[custom_key_stores]` table of the keystore's `config.toml`: which
/// PKCS#11 modules rewrap may load for a custom key store. Loading a module
/// runs its code inside rewrap (and inside `rewrap serve`), so a caller
/// with administer rights must not be able to name any file.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModuleConfig {
    /// Absolute paths of the modules that may be loaded. The default is
    /// Debian's SoftHSM2 (the symbolic link in `/usr/lib/softhsm` and the
    /// multiarch file it points at), the software token of the README and
    /// the tests: a hardware HSM's or CloudHSM's module is added by the
    /// operator, never implied.
    pub allowed_modules: Vec<PathBuf>,
}

impl Default for ModuleConfig {
    fn default() -> ModuleConfig {
        let arch = std::env::consts::ARCH;
        ModuleConfig {
            allowed_modules: vec![
                PathBuf::from("/usr/lib/softhsm/libsofthsm2.so"),
                PathBuf::from(format!("/usr/lib/{arch}-linux-gnu/softhsm/libsofthsm2.so")),
            ],
        }
    }
}

impl ModuleConfig {
    /// Checks that `path` may be loaded, without loading it: absolute, on
    /// the list, resolving (through any symbolic links) to a file on the
    /// list, and neither that file nor its folder writable by anyone but
    /// root or this process's user. Returns the resolved file, the one to
    /// load. A listed module that is not there is [`HsmError::ModuleNotFound`].
    pub fn check(&self, path: &Path) -> Result<PathBuf, HsmError> {
        let refuse = |why: String| HsmError::ModuleNotAllowed(path.to_path_buf(), why);
        if !path.is_absolute() {
            return Err(refuse("the path is not absolute".into()));
        }
        if !self.allowed_modules.iter().any(|m| m == path) {
            return Err(refuse(
                "it is not in custom_key_stores.allowed_modules".into(),
            ));
        }
        let real = match std::fs::canonicalize(path) {
            Ok(real) => real,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(HsmError::ModuleNotFound(path.to_path_buf()))
            }
            Err(e) => return Err(refuse(format!("it cannot be resolved: {}", e.kind()))),
        };
        if real != path && !self.allowed_modules.contains(&real) {
            return Err(refuse(format!(
                "it leads to {}, which is not in custom_key_stores.allowed_modules",
                real.display()
            )));
        }
        check_not_replaceable(&real).map_err(refuse)?;
        if let Some(folder) = real.parent() {
            check_not_replaceable(folder).map_err(refuse)?;
        }
        Ok(real)
    }
}

/// Refuses a file or folder that a user other than root or this process's
/// could write (or, for a folder, replace entries of): such a user could
/// swap the module for code of their own.
pub fn check_not_replaceable(path: &Path) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).map_err(|e| format!("{}: {}", path.display(), e.kind()))?;
    let mode = meta.mode() & 0o7777;
    if mode & 0o022 != 0 {
        return Err(format!(
            "{} is group- or world-writable (mode {:o})",
            path.display(),
            mode & 0o777
        ));
    }
    let me = rustix::process::geteuid().as_raw();
    if meta.uid() != 0 && meta.uid() != me {
        return Err(format!(
            "{} is owned by uid {}, neither root nor this service's user (uid {me})",
            path.display(),
            meta.uid()
        ));
    }
    Ok(())
}

/// Loads `path` once per process and keeps it loaded.
fn module(path: &Path) -> Result<Pkcs11, HsmError> {
    static MODULES: OnceLock<Mutex<HashMap<PathBuf, Pkcs11>>> = OnceLock::new();
    let mut modules = MODULES
        .get_or_init(Mutex::default)
        .lock()
        .expect("module table lock");
    // One entry per file, however it was named (a link or the file).
    let real = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    if let Some(m) = modules.get(&real) {
        return Ok(m.clone());
    }
    if !path.is_file() {
        return Err(HsmError::ModuleNotFound(path.to_path_buf()));
    }
    let load = |e: CkError| HsmError::Module(path.to_path_buf(), e.to_string());
    let pkcs11 = Pkcs11::new(path).map_err(load)?;
    match pkcs11.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
        Err(e) => return Err(load(e)),
    }
    modules.insert(real, pkcs11.clone());
    Ok(pkcs11)
}

/// The PIN this process logged in to the token `login` with: records `pin`
/// when given, returns the one recorded.
fn logged_in_with(login: &str, pin: Option<&Secret>) -> Option<Secret> {
    static PINS: OnceLock<Mutex<HashMap<String, Secret>>> = OnceLock::new();
    let mut pins = PINS
        .get_or_init(Mutex::default)
        .lock()
        .expect("PIN map lock");
    if let Some(pin) = pin {
        pins.insert(login.to_string(), Secret::from_slice(pin.expose()));
    }
    pins.get(login).map(|p| Secret::from_slice(p.expose()))
}

/// An open, logged-in token with a pool of sessions.
pub struct Token {
    pkcs11: Pkcs11,
    slot: Slot,
    pin: AuthPin,
    /// The PIN again, to compare with the one that logged this process in.
    pin_check: Secret,
    /// The module's real path and the slot: one login per process.
    login: String,
    name: String,
    max_sessions: usize,
    pool: Mutex<Pool>,
    returned: Condvar,
    handles: Mutex<HashMap<String, KeyHandles>>,
    relogins: std::sync::atomic::AtomicU64,
}

/// A key's objects in the token: the token object, and the object the
/// operations use (its session-object copy, or the token object itself
/// when the module refused the copy).
#[derive(Clone, Copy)]
struct KeyHandles {
    token: ObjectHandle,
    working: ObjectHandle,
}

/// What the module says of a key's working object (see
/// [`Token::working_object`]).
#[doc(hidden)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(clippy::struct_excessive_bools)] // reason: one flag per PKCS#11 attribute
pub struct WorkingObject {
    /// Another object than the token object: a session-object copy.
    pub is_copy: bool,
    /// `CKA_TOKEN`.
    pub token: bool,
    /// `CKA_SENSITIVE`.
    pub sensitive: bool,
    /// `CKA_EXTRACTABLE`.
    pub extractable: bool,
    /// `C_GetAttributeValue` would return `CKA_VALUE`.
    pub value_readable: bool,
}

#[derive(Default)]
struct Pool {
    idle: Vec<Session>,
    open: usize,
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Token({})", self.name)
    }
}

impl Token {
    /// Opens the token `which` of the module at `module_path`, logs in with
    /// the PIN from `pin`, and keeps up to `max_sessions` sessions.
    pub fn open(
        module_path: &Path,
        which: &TokenSelector,
        pin: &PinSource,
        max_sessions: usize,
    ) -> Result<Token, HsmError> {
        let pkcs11 = module(module_path)?;
        let slot = find_slot(&pkcs11, which)?;
        let secret = pin.read()?;
        let text = String::from_utf8(secret.expose().to_vec())
            .map_err(|_| HsmError::PinSource(pin.to_string(), "not UTF-8".into()))?;
        let real = std::fs::canonicalize(module_path).unwrap_or_else(|_| module_path.into());
        let token = Token {
            login: format!("{}#{}", real.display(), slot.id()),
            pkcs11,
            slot,
            pin_check: Secret::from_slice(text.as_bytes()),
            pin: AuthPin::new(text.into()),
            name: format!("token {which} of {}", module_path.display()),
            max_sessions: max_sessions.max(1),
            pool: Mutex::default(),
            returned: Condvar::new(),
            handles: Mutex::default(),
            relogins: std::sync::atomic::AtomicU64::new(0),
        };
        // Logging in now makes a wrong PIN a connection error, not a
        // failure of the first Encrypt. Taken from the pool, so that it is
        // counted among the open sessions (a replaced one is uncounted).
        let session = token.take()?;
        token.give_back(session);
        Ok(token)
    }

    /// The sessions this token keeps at most.
    pub fn max_sessions(&self) -> usize {
        self.max_sessions
    }

    /// How many times a lost session or login was replaced by a new,
    /// logged-in session (for the re-login test).
    #[doc(hidden)]
    pub fn relogins(&self) -> u64 {
        self.relogins.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Logs the user out of the token (`C_Logout` through a pooled
    /// session): what a token reset does to this process's login, for the
    /// re-login test. Every session of the process is then public.
    #[doc(hidden)]
    pub fn log_out(&self) -> Result<(), HsmError> {
        self.with_session(Session::logout)?
            .map_err(HsmError::from_ck)
    }

    fn new_session(&self) -> Result<Session, HsmError> {
        let session = self
            .pkcs11
            .open_rw_session(self.slot)
            .map_err(HsmError::from_ck)?;
        match session.login(UserType::User, Some(&self.pin)) {
            Ok(()) => {
                logged_in_with(&self.login, Some(&self.pin_check));
                Ok(session)
            }
            // The login is the process's, not the session's: a PIN is only
            // as good as the one that logged the process in (else a wrong
            // PIN for a token another store or root already opened passes).
            Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {
                match logged_in_with(&self.login, None) {
                    Some(pin) if pin.expose() != self.pin_check.expose() => {
                        Err(HsmError::InvalidCredentials)
                    }
                    _ => Ok(session),
                }
            }
            Err(e) => Err(HsmError::from_ck(e)),
        }
    }

    fn take(&self) -> Result<Session, HsmError> {
        let mut pool = self.pool.lock().expect("session pool lock");
        loop {
            if let Some(s) = pool.idle.pop() {
                return Ok(s);
            }
            if pool.open < self.max_sessions {
                pool.open += 1;
                drop(pool);
                return self.new_session().inspect_err(|_| {
                    self.pool.lock().expect("session pool lock").open -= 1;
                    self.returned.notify_one();
                });
            }
            pool = self.returned.wait(pool).expect("session pool lock");
        }
    }

    fn give_back(&self, session: Session) {
        self.pool
            .lock()
            .expect("session pool lock")
            .idle
            .push(session);
        self.returned.notify_one();
    }

    fn discard(&self, session: Session) {
        drop(session);
        self.pool.lock().expect("session pool lock").open -= 1;
        self.returned.notify_one();
    }

    /// Runs `f` on a pooled session; a lost session or login is replaced
    /// once (the idle sessions, probably lost too, are closed first). The
    /// outer error: no session could be had; the inner one: `f`'s.
    fn with_session<R>(
        &self,
        f: impl Fn(&Session) -> Result<R, CkError>,
    ) -> Result<Result<R, CkError>, HsmError> {
        let session = self.take()?;
        match f(&session) {
            Err(e) if session_lost(&e) => {
                self.discard(session);
                let stale = std::mem::take(&mut self.pool.lock().expect("session pool lock").idle);
                for s in stale {
                    self.discard(s);
                }
                self.handles.lock().expect("handle cache lock").clear();
                let fresh = self.take()?;
                self.relogins
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let out = f(&fresh);
                self.give_back(fresh);
                Ok(out)
            }
            out => {
                self.give_back(session);
                Ok(out)
            }
        }
    }

    /// The token object labelled `label`, if there is one (session
    /// objects, such as this process's working copies, are not looked at).
    fn token_object(session: &Session, label: &str) -> Result<Option<ObjectHandle>, CkError> {
        Ok(Self::token_objects(session, label)?.first().copied())
    }

    /// Every token object labelled `label` (session objects left out).
    fn token_objects(session: &Session, label: &str) -> Result<Vec<ObjectHandle>, CkError> {
        session.find_objects(&[
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::Token(true),
            Attribute::Label(label.as_bytes().to_vec()),
        ])
    }

    /// The handles of the key labelled `label`: from the cache, or found
    /// in the token and copied into a session object (see the module doc).
    fn key_handles(&self, session: &Session, label: &str) -> Result<Option<KeyHandles>, CkError> {
        if let Some(h) = self.handles.lock().expect("handle cache lock").get(label) {
            return Ok(Some(*h));
        }
        let Some(token) = Self::token_object(session, label)? else {
            return Ok(None);
        };
        let working = match session.copy_object(token, &[Attribute::Token(false)]) {
            Ok(copy) => copy,
            Err(e) if session_lost(&e) => return Err(e),
            // A module without C_CopyObject, or a key it will not copy.
            Err(_) => token,
        };
        let handles = KeyHandles { token, working };
        let mut cache = self.handles.lock().expect("handle cache lock");
        // Another thread made a copy meanwhile: keep one.
        if let Some(kept) = cache.get(label) {
            if working != token {
                let _ = session.destroy_object(working);
            }
            return Ok(Some(*kept));
        }
        cache.insert(label.to_string(), handles);
        Ok(Some(handles))
    }

    /// Forgets the cached handles of `label` after the module said it no
    /// longer knows one (its session closed, or the object was destroyed).
    fn forget(&self, label: &str) {
        self.handles
            .lock()
            .expect("handle cache lock")
            .remove(label);
    }

    /// Runs `op` with the working object of `label` on a pooled session;
    /// `Ok(None)` if the token has no such key. A handle the module does
    /// not know (a copy whose session ended) is looked up again once.
    fn with_key<R>(
        &self,
        label: &str,
        op: impl Fn(&Session, ObjectHandle) -> Result<R, CkError>,
    ) -> Result<Result<Option<R>, CkError>, HsmError> {
        self.with_session(|s| {
            let Some(key) = self.key_handles(s, label)? else {
                return Ok(None);
            };
            match op(s, key.working) {
                Err(CkError::Pkcs11(
                    RvError::KeyHandleInvalid | RvError::ObjectHandleInvalid,
                    _,
                )) => {
                    self.forget(label);
                    match self.key_handles(s, label)? {
                        Some(key) => op(s, key.working).map(Some),
                        None => Ok(None),
                    }
                }
                out => out.map(Some),
            }
        })
    }

    /// The working object of `label` as the module reports it (making it
    /// if need be), for the tests: whether it is a copy (another object
    /// than the token object), and its `CKA_TOKEN`, `CKA_SENSITIVE`,
    /// `CKA_EXTRACTABLE`, and whether `CKA_VALUE` can be read.
    #[doc(hidden)]
    pub fn working_object(&self, label: &str) -> Result<WorkingObject, HsmError> {
        use cryptoki::object::{AttributeInfo, AttributeType};
        self.with_session(|s| {
            let Some(key) = self.key_handles(s, label)? else {
                return Ok(None);
            };
            let flags = s.get_attributes(
                key.working,
                &[
                    AttributeType::Token,
                    AttributeType::Sensitive,
                    AttributeType::Extractable,
                ],
            )?;
            let value = s.get_attribute_info(key.working, &[AttributeType::Value])?;
            Ok(Some(WorkingObject {
                is_copy: key.working != key.token,
                token: flags.contains(&Attribute::Token(true)),
                sensitive: flags.contains(&Attribute::Sensitive(true)),
                extractable: flags.contains(&Attribute::Extractable(true)),
                value_readable: matches!(value.first(), Some(AttributeInfo::Available(_))),
            }))
        })?
        .map_err(HsmError::from_ck)?
        .ok_or_else(|| HsmError::KeyNotFound(label.to_string()))
    }

    /// Destroys the working copy of `label` behind the cache's back (what
    /// the end of the session that made it does), for the tests.
    #[doc(hidden)]
    pub fn destroy_working_copy(&self, label: &str) -> Result<(), HsmError> {
        let cached = self
            .handles
            .lock()
            .expect("handle cache lock")
            .get(label)
            .copied();
        match cached {
            Some(KeyHandles { token, working }) if working != token => self
                .with_session(|s| s.destroy_object(working))?
                .map_err(HsmError::from_ck),
            _ => Err(HsmError::KeyNotFound(label.to_string())),
        }
    }

    /// Generates an AES-256 key inside the token, labelled `label`:
    /// a token object, sensitive, not extractable, for encrypt and decrypt.
    pub fn generate_aes_key(&self, label: &str) -> Result<(), HsmError> {
        let template = [
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::AES),
            Attribute::ValueLen(32.into()),
            Attribute::Token(true),
            Attribute::Private(true),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Encrypt(true),
            Attribute::Decrypt(true),
            Attribute::Label(label.as_bytes().to_vec()),
        ];
        // Its working copy is made on first use (see the module doc).
        self.with_session(|s| s.generate_key(&Mechanism::AesKeyGen, &template).map(drop))?
            .map_err(|e| match e {
                // SoftHSM2 answers CKR_FUNCTION_FAILED when the disk under
                // its token folder is full; a hardware token CKR_DEVICE_MEMORY.
                CkError::Pkcs11(
                    RvError::DeviceMemory | RvError::HostMemory | RvError::FunctionFailed,
                    _,
                ) => HsmError::TokenFull(label.to_string()),
                other => HsmError::from_ck(other),
            })?;
        Ok(())
    }

    /// Destroys every key object labelled `label` (C_DestroyObject);
    /// returns how many there were (none: already gone).
    pub fn destroy_key(&self, label: &str) -> Result<usize, HsmError> {
        let cached = self
            .handles
            .lock()
            .expect("handle cache lock")
            .remove(label);
        self.with_session(|s| {
            if let Some(KeyHandles { token, working }) = cached {
                if working != token {
                    // Gone already if its session ended; either way unusable.
                    let _ = s.destroy_object(working);
                }
            }
            let found = Self::token_objects(s, label)?;
            for handle in &found {
                s.destroy_object(*handle)?;
            }
            Ok(found.len())
        })?
        .map_err(HsmError::from_ck)
    }

    /// Whether a key object labelled `label` is in the token.
    pub fn has_key(&self, label: &str) -> Result<bool, HsmError> {
        self.with_session(|s| Self::token_object(s, label))?
            .map(|h| h.is_some())
            .map_err(HsmError::from_ck)
    }

    /// AES-256-GCM inside the token under the key labelled `label`:
    /// returns ciphertext || 16-byte tag.
    pub fn encrypt_gcm(
        &self,
        label: &str,
        iv: [u8; IV_LEN],
        aad: &[u8],
        plaintext: &[u8],
    ) -> Result<Vec<u8>, HsmError> {
        let out = self.with_key(label, |s, key| {
            let mut iv = iv;
            let params = GcmParams::new(&mut iv, aad, (TAG_LEN as u64 * 8).into())?;
            s.encrypt(&Mechanism::AesGcm(params), key, plaintext)
        })?;
        out.map_err(HsmError::from_ck)?
            .ok_or_else(|| HsmError::KeyNotFound(label.to_string()))
    }

    /// Reverses [`Token::encrypt_gcm`]; any mismatch is
    /// [`HsmError::Authentication`].
    pub fn decrypt_gcm(
        &self,
        label: &str,
        iv: [u8; IV_LEN],
        aad: &[u8],
        ciphertext_and_tag: &[u8],
    ) -> Result<Secret, HsmError> {
        if ciphertext_and_tag.len() < TAG_LEN {
            return Err(HsmError::Authentication);
        }
        let out = self.with_key(label, |s, key| {
            let mut iv = iv;
            let params = GcmParams::new(&mut iv, aad, (TAG_LEN as u64 * 8).into())?;
            s.decrypt(&Mechanism::AesGcm(params), key, ciphertext_and_tag)
                .map(Secret::new)
        })?;
        match out {
            Ok(Some(plain)) => Ok(plain),
            Ok(None) => Err(HsmError::KeyNotFound(label.to_string())),
            Err(CkError::Pkcs11(
                RvError::EncryptedDataInvalid
                | RvError::EncryptedDataLenRange
                | RvError::FunctionFailed
                | RvError::GeneralError,
                _,
            )) => Err(HsmError::Authentication),
            Err(e) => Err(HsmError::from_ck(e)),
        }
    }
}

fn find_slot(pkcs11: &Pkcs11, which: &TokenSelector) -> Result<Slot, HsmError> {
    let slots = pkcs11.get_slots_with_token().map_err(HsmError::from_ck)?;
    for slot in slots {
        let Ok(info) = pkcs11.get_token_info(slot) else {
            continue;
        };
        let matches = match which {
            TokenSelector::Label(l) => info.label().trim_end() == l,
            TokenSelector::Serial(s) => info.serial_number().trim_end() == s,
        };
        if matches {
            return Ok(slot);
        }
    }
    Err(HsmError::TokenNotFound(which.to_string()))
}

/// The label of the token object that holds `version` of key `key_id`.
pub fn key_label(key_id: &uuid::Uuid, version: u32) -> String {
    format!("rewrap/{key_id}/v{version}")
}

/// Sessions a token keeps at most (opened as concurrency needs them): one
/// per worker thread, and at least [`SERVER_SESSIONS`], so neither a
/// rotation's threads nor `rewrap serve`'s concurrent requests (each runs
/// its custom-key-store operation on a blocking thread of its own) wait
/// for each other's sessions.
pub fn default_sessions() -> usize {
    rayon::current_num_threads().max(SERVER_SESSIONS)
}

/// Sessions for the requests a server has in flight at once with a custom
/// key store. Measured on SoftHSM2 with 32 threads calling ReEncrypt: a
/// pool of 2 (one per core, as it was) held the rate at 6,000/s, threads
/// queueing for a session.
pub const SERVER_SESSIONS: usize = 32;

//! [`RemoteKms`]: the [`Kms`] trait over the AWS KMS JSON 1.1 wire protocol,
//! signed with SigV4, so every rewrap command can use a remote KMS: a
//! `rewrap serve`, AWS KMS itself, or any server that speaks the protocol.
//!
//! `Kms` is synchronous and is called from many worker threads at once, so a
//! `RemoteKms` owns a small tokio runtime and one connection pool that all
//! callers share; each call blocks only its own thread, and many calls are in
//! flight together. Transient failures (a pooled connection closed by the
//! server, HTTP 5xx, throttling) are retried with backoff, re-signed each time.

use crate::api::Operation;
use crate::error::{ErrorCode, KmsError, Result};
use crate::kms::Kms;
use crate::secret::Secret;
use crate::sigv4::{self, Credentials};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Attempts per call, the first included.
const MAX_ATTEMPTS: u32 = 4;

/// The largest response body the client accepts. KMS responses are small
/// (a ciphertext blob is at most 6 KiB; a page of keys or aliases tens of
/// KiB); a hostile or broken endpoint must not make a worker allocate more.
pub const MAX_RESPONSE_BYTES: usize = 1 << 20;

/// What the client reserves for a response before reading it.
const INITIAL_RESPONSE_BUFFER: usize = 16 << 10;

/// The SigV4 service name of KMS.
const SERVICE: &str = "kms";

/// Why a client could not be set up: credentials, endpoint or TLS settings.
/// Failures of the calls themselves are [`KmsError`]s with AWS error names.
/// Messages never contain a secret; each keeps its cause as its `source`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// No usable credentials in the environment or the credentials file.
    #[error("{0}")]
    NoCredentials(String),
    /// The shared credentials file could not be read.
    #[error("reading {}", path.display())]
    CredentialsFile {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// The profile is missing or incomplete.
    #[error("profile [{profile}] in {}", path.display())]
    Profile {
        /// The profile name.
        profile: String,
        /// The credentials file.
        path: PathBuf,
        /// What is wrong with it.
        #[source]
        problem: ProfileProblem,
    },
    /// The endpoint URL does not parse.
    #[error("endpoint URL {url:?}")]
    EndpointUrl {
        /// The URL as given.
        url: String,
        /// Why it does not parse.
        #[source]
        source: url::ParseError,
    },
    /// The endpoint URL parses but cannot be used (scheme, host).
    #[error("endpoint URL {url:?}{problem}")]
    Endpoint {
        /// The URL as given.
        url: String,
        /// What is wrong, as the end of the sentence.
        problem: &'static str,
    },
    /// The CA bundle could not be read or holds no usable certificate.
    #[error("CA bundle {}", path.display())]
    CaBundle {
        /// The bundle file.
        path: PathBuf,
        /// Why.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The HTTP client could not be built.
    #[error("building the HTTP client")]
    HttpClient(#[source] reqwest::Error),
    /// The client's runtime could not start.
    #[error("starting the HTTP client runtime")]
    Runtime(#[source] std::io::Error),
}

/// What is wrong with a profile of the shared credentials file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProfileProblem {
    /// No section of that name.
    #[error("no such profile")]
    NotFound,
    /// The section lacks a key id or a secret.
    #[error("the profile lacks aws_access_key_id or aws_secret_access_key")]
    Incomplete,
}

/// A KMS reached over HTTP(S) with SigV4-signed requests.
pub struct RemoteKms {
    http: reqwest::Client,
    url: reqwest::Url,
    host: String,
    region: String,
    creds: Credentials,
    runtime: Option<tokio::runtime::Runtime>,
}

impl std::fmt::Debug for RemoteKms {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteKms")
            .field("url", &self.url.as_str())
            .field("region", &self.region)
            .field("access_key_id", &self.creds.access_key_id)
            .finish_non_exhaustive()
    }
}

/// Where credentials and settings are read from: the process environment, or
/// a fixed map in tests.
pub trait Env {
    /// The value of variable `name`, if set and not empty.
    fn var(&self, name: &str) -> Option<String>;
}

/// The process environment.
pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok().filter(|v| !v.is_empty())
    }
}

impl<const N: usize> Env for [(&str, &str); N] {
    fn var(&self, name: &str) -> Option<String> {
        self.iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.to_string())
    }
}

/// The region: `region`, else `AWS_REGION`, else `AWS_DEFAULT_REGION`, else `us-east-1`.
pub fn resolve_region(env: &dyn Env, region: Option<&str>) -> String {
    region
        .map(str::to_string)
        .or_else(|| env.var("AWS_REGION"))
        .or_else(|| env.var("AWS_DEFAULT_REGION"))
        .unwrap_or_else(|| "us-east-1".to_string())
}

/// Where [`resolve_credentials_with_source`] found the credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CredentialSource {
    /// A pair of environment variables.
    Environment {
        /// The access key id variable, e.g. `REWRAP_ACCESS_KEY_ID`.
        id_var: &'static str,
        /// The secret variable.
        secret_var: &'static str,
    },
    /// A profile of the shared credentials file.
    Profile {
        /// The profile name.
        name: String,
        /// What chose the profile: `--profile`, `AWS_PROFILE` or `default`.
        chosen_by: ProfileChoice,
        /// The credentials file.
        path: PathBuf,
    },
}

/// What chose the profile of the shared credentials file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProfileChoice {
    /// The caller named it (`--profile`): it wins over key variables.
    Explicit,
    /// The `AWS_PROFILE` variable (used only without key variables).
    AwsProfileVariable,
    /// No profile was named: `default`.
    Default,
}

impl std::fmt::Display for CredentialSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CredentialSource::Environment { id_var, secret_var } => {
                write!(f, "environment variables {id_var} and {secret_var}")
            }
            CredentialSource::Profile {
                name,
                chosen_by,
                path,
            } => {
                let how = match chosen_by {
                    ProfileChoice::Explicit => "--profile ",
                    ProfileChoice::AwsProfileVariable => "AWS_PROFILE=",
                    ProfileChoice::Default => "profile ",
                };
                write!(f, "{how}{name} in {}", path.display())
            }
        }
    }
}

/// Credentials as the AWS CLI finds them (see
/// [`resolve_credentials_with_source`]).
pub fn resolve_credentials(
    env: &dyn Env,
    profile: Option<&str>,
) -> std::result::Result<Credentials, ClientError> {
    resolve_credentials_with_source(env, profile).map(|(c, _)| c)
}

/// Credentials and where they came from, with the AWS CLI's precedence:
///
/// 1. an explicit `profile` (`--profile`): that profile of the shared
///    credentials file, whatever key variables are set;
/// 2. `REWRAP_ACCESS_KEY_ID` / `REWRAP_SECRET_ACCESS_KEY`;
/// 3. `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY` (/ `AWS_SESSION_TOKEN`);
/// 4. the profile named by `AWS_PROFILE`, else `default`.
///
/// The shared credentials file is `AWS_SHARED_CREDENTIALS_FILE`, else
/// `~/.aws/credentials`.
pub fn resolve_credentials_with_source(
    env: &dyn Env,
    profile: Option<&str>,
) -> std::result::Result<(Credentials, CredentialSource), ClientError> {
    if let Some(name) = profile {
        return profile_credentials(env, name.to_string(), ProfileChoice::Explicit);
    }
    let pair = |id_var: &'static str, secret_var: &'static str| match (
        env.var(id_var),
        env.var(secret_var),
    ) {
        (Some(access_key_id), Some(secret)) => Ok(Some((
            Credentials {
                access_key_id,
                secret_access_key: Secret::new(secret.into_bytes()),
                session_token: None,
            },
            CredentialSource::Environment { id_var, secret_var },
        ))),
        (None, None) => Ok(None),
        _ => Err(ClientError::NoCredentials(format!(
            "{id_var} and {secret_var} must be set together"
        ))),
    };
    if let Some(found) = pair("REWRAP_ACCESS_KEY_ID", "REWRAP_SECRET_ACCESS_KEY")? {
        return Ok(found);
    }
    if let Some((mut c, source)) = pair("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")? {
        c.session_token = env.var("AWS_SESSION_TOKEN");
        return Ok((c, source));
    }
    match env.var("AWS_PROFILE") {
        Some(name) => profile_credentials(env, name, ProfileChoice::AwsProfileVariable),
        None => profile_credentials(env, "default".into(), ProfileChoice::Default),
    }
}

/// One profile of the shared credentials file.
fn profile_credentials(
    env: &dyn Env,
    profile: String,
    chosen_by: ProfileChoice,
) -> std::result::Result<(Credentials, CredentialSource), ClientError> {
    let path = env
        .var("AWS_SHARED_CREDENTIALS_FILE")
        .map(PathBuf::from)
        .or_else(|| {
            env.var("HOME")
                .map(|h| PathBuf::from(h).join(".aws/credentials"))
        });
    let Some(path) = path else {
        return Err(ClientError::NoCredentials(
            "no credentials: set REWRAP_ACCESS_KEY_ID and REWRAP_SECRET_ACCESS_KEY".into(),
        ));
    };
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => zeroize::Zeroizing::new(t),
        // A profile the caller named must exist: say which file lacks it.
        Err(e)
            if e.kind() == std::io::ErrorKind::NotFound && chosen_by != ProfileChoice::Explicit =>
        {
            return Err(ClientError::NoCredentials(format!(
                "no credentials: set REWRAP_ACCESS_KEY_ID and REWRAP_SECRET_ACCESS_KEY, \
                 AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or profile [{profile}] in {}",
                path.display()
            )))
        }
        Err(source) => return Err(ClientError::CredentialsFile { path, source }),
    };
    match credentials_from_ini(&text, &profile) {
        Ok(c) => Ok((
            c,
            CredentialSource::Profile {
                name: profile,
                chosen_by,
                path,
            },
        )),
        Err(problem) => Err(ClientError::Profile {
            profile,
            path,
            problem,
        }),
    }
}

/// Reads one profile of a shared credentials file (INI: `[name]` then `key = value`).
fn credentials_from_ini(
    text: &str,
    profile: &str,
) -> std::result::Result<Credentials, ProfileProblem> {
    let mut in_profile = false;
    let mut found = false;
    let (mut id, mut secret, mut token) = (None, None, None);
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') || line.starts_with(';') || line.is_empty() {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            let name = name.trim();
            in_profile = name == profile || name.strip_prefix("profile ") == Some(profile);
            found |= in_profile;
            continue;
        }
        if !in_profile {
            continue;
        }
        if let Some((k, v)) = line.split_once('=') {
            let v = v.trim().to_string();
            match k.trim() {
                "aws_access_key_id" => id = Some(v),
                "aws_secret_access_key" => secret = Some(Secret::new(v.into_bytes())),
                "aws_session_token" => token = Some(v),
                _ => {}
            }
        }
    }
    match (id, secret) {
        (Some(access_key_id), Some(secret_access_key)) => Ok(Credentials {
            access_key_id,
            secret_access_key,
            session_token: token,
        }),
        _ if !found => Err(ProfileProblem::NotFound),
        _ => Err(ProfileProblem::Incomplete),
    }
}

impl RemoteKms {
    /// A client of the KMS at `endpoint_url`, with credentials and region from
    /// the usual sources (see [`resolve_credentials`], [`resolve_region`]).
    /// A CA bundle for a private TLS certificate is read from
    /// `REWRAP_CA_BUNDLE` or `AWS_CA_BUNDLE`.
    pub fn from_env(
        endpoint_url: &str,
        region: Option<&str>,
        profile: Option<&str>,
    ) -> std::result::Result<RemoteKms, ClientError> {
        let creds = resolve_credentials(&ProcessEnv, profile)?;
        RemoteKms::from_env_with(endpoint_url, region, creds)
    }

    /// [`RemoteKms::from_env`] with credentials the caller resolved (to
    /// know where they came from, as `rewrap whoami` does).
    pub fn from_env_with(
        endpoint_url: &str,
        region: Option<&str>,
        creds: Credentials,
    ) -> std::result::Result<RemoteKms, ClientError> {
        let env = ProcessEnv;
        let region = resolve_region(&env, region);
        let ca = env
            .var("REWRAP_CA_BUNDLE")
            .or_else(|| env.var("AWS_CA_BUNDLE"));
        RemoteKms::new(
            endpoint_url,
            &region,
            creds,
            ca.map(PathBuf::from).as_deref(),
        )
    }

    /// A client of the KMS at `endpoint_url` in `region`, signing with `creds`;
    /// `ca_bundle` adds trusted PEM certificates for TLS.
    pub fn new(
        endpoint_url: &str,
        region: &str,
        creds: Credentials,
        ca_bundle: Option<&Path>,
    ) -> std::result::Result<RemoteKms, ClientError> {
        let endpoint = |problem| ClientError::Endpoint {
            url: endpoint_url.to_string(),
            problem,
        };
        let url = reqwest::Url::parse(endpoint_url).map_err(|source| ClientError::EndpointUrl {
            url: endpoint_url.to_string(),
            source,
        })?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(endpoint(": the scheme must be http or https"));
        }
        let host = match (url.host_str(), url.port()) {
            (Some(h), Some(p)) => format!("{h}:{p}"),
            (Some(h), None) => h.to_string(),
            (None, _) => return Err(endpoint(" has no host")),
        };
        let mut builder = reqwest::Client::builder()
            .user_agent(concat!("rewrap/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_mins(1))
            // Below the server's header timeout, so a pooled connection is
            // rarely reused just as the server closes it.
            .pool_idle_timeout(Duration::from_secs(5))
            .tcp_nodelay(true);
        if let Some(path) = ca_bundle {
            let bundle = |source: Box<dyn std::error::Error + Send + Sync>| ClientError::CaBundle {
                path: path.to_path_buf(),
                source,
            };
            let pem = std::fs::read(path).map_err(|e| bundle(e.into()))?;
            for cert in reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| bundle(e.into()))? {
                builder = builder.add_root_certificate(cert);
            }
        }
        let http = builder.build().map_err(ClientError::HttpClient)?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("rewrap-kms-client")
            .enable_all()
            .build()
            .map_err(ClientError::Runtime)?;
        Ok(RemoteKms {
            http,
            url,
            host,
            region: region.to_string(),
            creds,
            runtime: Some(runtime),
        })
    }

    /// The endpoint this client calls.
    pub fn endpoint(&self) -> &str {
        self.url.as_str()
    }

    /// The region requests are signed for.
    pub fn region(&self) -> &str {
        &self.region
    }

    /// Calls `op` asynchronously (for callers that already run in tokio).
    pub async fn call_async(&self, op: Operation, request: &[u8]) -> Result<Secret> {
        self.call_about_async(op, request, None).await
    }

    /// [`RemoteKms::call_async`] on behalf of `object`, sent as the signed
    /// `x-rewrap-object` header for the server's audit record.
    pub async fn call_about_async(
        &self,
        op: Operation,
        request: &[u8],
        object: Option<&str>,
    ) -> Result<Secret> {
        let header = object.map(crate::audit::encode_object_header);
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.attempt(op, request, header.as_deref()).await {
                Err(Failure::Transient(e)) if attempt < MAX_ATTEMPTS => {
                    let backoff = Duration::from_millis(25 << attempt);
                    tokio::time::sleep(backoff).await;
                    drop(e);
                }
                Err(Failure::Transient(e) | Failure::Final(e)) => return Err(e),
                Ok(body) => return Ok(body),
            }
        }
    }

    async fn attempt(
        &self,
        op: Operation,
        request: &[u8],
        object: Option<&str>,
    ) -> std::result::Result<Secret, Failure> {
        let target = format!("TrentService.{}", op.name());
        let mut base: Vec<(&str, &str)> = vec![
            ("host", &self.host),
            ("content-type", "application/x-amz-json-1.1"),
            ("x-amz-target", &target),
        ];
        if let Some(object) = object {
            base.push((crate::audit::OBJECT_HEADER, object));
        }
        let parts = sigv4::RequestParts {
            method: "POST",
            path: self.url.path(),
            query: self.url.query().unwrap_or(""),
            headers: &base,
        };
        let signed = sigv4::sign(
            &parts,
            request,
            &self.creds,
            &self.region,
            SERVICE,
            chrono::Utc::now(),
        );
        let mut req = self
            .http
            .post(self.url.clone())
            .header("content-type", "application/x-amz-json-1.1")
            .header("x-amz-target", &target);
        if let Some(object) = object {
            req = req.header(crate::audit::OBJECT_HEADER, object);
        }
        for (name, value) in &signed {
            req = req.header(*name, value);
        }
        // reqwest needs an owned body; this copy is outside rewrap's zeroizing reach.
        let resp = req
            .body(request.to_vec())
            .send()
            .await
            .map_err(|e| transport_failure(&self.url, e))?;
        let status = resp.status();
        // The declared length is the endpoint's word, not a fact: allocate
        // what a KMS response can be at most, and refuse a longer body.
        let declared = resp.content_length().unwrap_or(1024);
        let mut body = Secret::new(Vec::with_capacity(
            declared.min(INITIAL_RESPONSE_BUFFER as u64) as usize,
        ));
        let mut resp = resp;
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|e| transport_failure(&self.url, e))?
        {
            if body.expose().len() + chunk.len() > MAX_RESPONSE_BYTES {
                return Err(Failure::Final(KmsError::internal(format!(
                    "the KMS response is larger than {MAX_RESPONSE_BYTES} bytes"
                ))));
            }
            body.expose_mut().extend_from_slice(&chunk);
        }
        if status.is_success() {
            return normalize_response(op, body).map_err(Failure::Final);
        }
        let err = error_from_response(status.as_u16(), body.expose());
        let transient = status.is_server_error()
            || matches!(
                err.1.as_str(),
                "ThrottlingException" | "RequestTimeoutException"
            );
        if transient {
            Err(Failure::Transient(err.0))
        } else {
            Err(Failure::Final(err.0))
        }
    }
}

enum Failure {
    Transient(KmsError),
    Final(KmsError),
}

fn transport_failure(url: &reqwest::Url, e: reqwest::Error) -> Failure {
    let host = url.host_str().unwrap_or("?");
    let err = KmsError::new(
        ErrorCode::EndpointConnection,
        format!("cannot reach the KMS at {host}: {}", error_chain(&e)),
    );
    // Timeouts, refused or reset connections: all worth another try.
    if e.is_timeout() || e.is_connect() || e.is_request() || e.is_body() {
        Failure::Transient(err)
    } else {
        Failure::Final(err)
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// Maps an AWS error response to a [`KmsError`]; also returns the bare AWS
/// error name as sent, for retry decisions.
pub fn error_from_response(status: u16, body: &[u8]) -> (KmsError, String) {
    #[derive(serde::Deserialize)]
    struct AwsError {
        #[serde(rename = "__type", default)]
        kind: String,
        #[serde(default, alias = "Message")]
        message: String,
    }
    let parsed: Option<AwsError> = serde_json::from_slice(body).ok();
    let Some(parsed) = parsed.filter(|p| !p.kind.is_empty()) else {
        return (
            KmsError::internal(format!(
                "the KMS answered HTTP {status} without an AWS error"
            )),
            String::new(),
        );
    };
    let name = parsed.kind.rsplit('#').next().unwrap_or(&parsed.kind);
    let name = name.split(':').next().unwrap_or(name).to_string();
    let code = ErrorCode::parse(&name).unwrap_or(match name.as_str() {
        "UnknownOperationException" => ErrorCode::UnsupportedOperation,
        "IncompleteSignatureException" => ErrorCode::IncompleteSignature,
        "SignatureDoesNotMatch" | "KMSInvalidSignatureException" => ErrorCode::InvalidSignature,
        "ExpiredTokenException" => ErrorCode::RequestExpired,
        _ => ErrorCode::Internal,
    });
    let message = if code == ErrorCode::Internal && name != ErrorCode::Internal.as_str() {
        format!("{name}: {}", parsed.message)
    } else {
        parsed.message
    };
    (KmsError::new(code, message), name)
}

/// Fields AWS KMS always returns but other servers (moto) omit or send as
/// `null`, with the value AWS documents as the default; per operation.
fn defaults_for(op: Operation) -> &'static [(&'static str, DefaultValue)] {
    use DefaultValue::{False, Str};
    const ALG: DefaultValue = Str("SYMMETRIC_DEFAULT");
    match op {
        Operation::Encrypt | Operation::Decrypt => &[("EncryptionAlgorithm", ALG)],
        Operation::ReEncrypt => &[
            ("SourceEncryptionAlgorithm", ALG),
            ("DestinationEncryptionAlgorithm", ALG),
        ],
        Operation::CreateKey | Operation::DescribeKey => &[
            ("KeyUsage", Str("ENCRYPT_DECRYPT")),
            ("MultiRegion", False),
            ("Description", Str("")),
            ("KeyManager", Str("CUSTOMER")),
            ("Origin", Str("AWS_KMS")),
            ("CustomerMasterKeySpec", ALG),
            ("KeySpec", ALG),
        ],
        _ => &[],
    }
}

#[derive(Clone, Copy)]
enum DefaultValue {
    Str(&'static str),
    False,
}

/// Makes a response of another KMS implementation parse like AWS's, the way
/// botocore reads it: `null` members are absent, and absent members that
/// rewrap's types require get AWS's documented defaults. Responses that need
/// nothing (rewrap's, AWS's) are returned untouched without being parsed.
fn normalize_response(op: Operation, body: Secret) -> Result<Secret> {
    let text = body.expose();
    // Base64 blobs never contain ':' or spaces, so this finds only JSON nulls.
    let has_null = contains(text, b": null") || contains(text, b":null");
    let defaults = defaults_for(op);
    let missing = defaults
        .iter()
        .any(|(name, _)| !contains(text, format!("\"{name}\"").as_bytes()));
    if !has_null && !missing {
        return Ok(body);
    }
    let mut value: serde_json::Value = serde_json::from_slice(text)
        .map_err(|_| KmsError::internal("the KMS sent a response that is not JSON"))?;
    drop_nulls(&mut value);
    let target = match value.get_mut("KeyMetadata") {
        Some(inner) => inner,
        None => &mut value,
    };
    if let Some(map) = target.as_object_mut() {
        for (name, default) in defaults {
            map.entry(name.to_string())
                .or_insert_with(|| match default {
                    DefaultValue::Str(s) => serde_json::Value::String(s.to_string()),
                    DefaultValue::False => serde_json::Value::Bool(false),
                });
        }
    }
    let out = crate::kms::to_json(&value);
    wipe(&mut value);
    out
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fn drop_nulls(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Object(map) => {
            map.retain(|_, v| !v.is_null());
            map.values_mut().for_each(drop_nulls);
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(drop_nulls),
        _ => {}
    }
}

/// Zeroizes every string of a parsed response (a plaintext may be one).
fn wipe(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::String(s) => zeroize::Zeroize::zeroize(s),
        serde_json::Value::Object(map) => map.values_mut().for_each(wipe),
        serde_json::Value::Array(items) => items.iter_mut().for_each(wipe),
        _ => {}
    }
}

impl RemoteKms {
    /// [`Kms::call`] on behalf of `object` (see [`RemoteKms::call_about_async`]).
    pub fn call_about(
        &self,
        op: Operation,
        request: &[u8],
        object: Option<&str>,
    ) -> Result<Secret> {
        let runtime = self
            .runtime
            .as_ref()
            .ok_or_else(|| KmsError::internal("the client is shut down"))?;
        if tokio::runtime::Handle::try_current().is_err() {
            // The common case: a worker thread. The request runs on this
            // thread; the runtime's threads drive the sockets.
            return runtime.block_on(self.call_about_async(op, request, object));
        }
        // Called from inside some tokio runtime: block_on would panic there.
        std::thread::scope(|s| {
            s.spawn(|| runtime.block_on(self.call_about_async(op, request, object)))
                .join()
                .unwrap_or_else(|_| Err(KmsError::internal("the KMS call panicked")))
        })
    }

    /// A typed call whose request may name its object (`object` member).
    fn call_typed_about<Req: serde::Serialize, Resp: serde::de::DeserializeOwned>(
        &self,
        op: Operation,
        request: &Req,
        object: Option<&str>,
    ) -> Result<Resp> {
        let body = crate::kms::to_json(request)?;
        let out = self.call_about(op, body.expose(), object)?;
        crate::kms::from_json(out.expose())
    }
}

/// The key uses that may name their object send it as a header; every other
/// operation is the trait's default (JSON through [`RemoteKms::call`]).
impl Kms for RemoteKms {
    fn call(&self, op: Operation, request: &[u8]) -> Result<Secret> {
        self.call_about(op, request, None)
    }

    fn encrypt(&self, r: &crate::api::EncryptRequest) -> Result<crate::api::EncryptResponse> {
        self.call_typed_about(Operation::Encrypt, r, r.object.as_deref())
    }

    fn decrypt(&self, r: &crate::api::DecryptRequest) -> Result<crate::api::DecryptResponse> {
        self.call_typed_about(Operation::Decrypt, r, r.object.as_deref())
    }

    fn re_encrypt(
        &self,
        r: &crate::api::ReEncryptRequest,
    ) -> Result<crate::api::ReEncryptResponse> {
        self.call_typed_about(Operation::ReEncrypt, r, r.object.as_deref())
    }

    fn generate_data_key(
        &self,
        r: &crate::api::GenerateDataKeyRequest,
    ) -> Result<crate::api::GenerateDataKeyResponse> {
        self.call_typed_about(Operation::GenerateDataKey, r, r.object.as_deref())
    }
}

impl Drop for RemoteKms {
    fn drop(&mut self) {
        // Dropping a runtime inside another one panics; this never does.
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

#[cfg(test)]
mod tests;

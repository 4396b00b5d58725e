//! The KMS server: the AWS KMS JSON 1.1 wire protocol over HTTP/1.1 (plain on
//! loopback, TLS with rustls elsewhere), SigV4-authenticated principals.
//!
//! One request is `POST /` with `X-Amz-Target: TrentService.<Operation>` and a
//! JSON body. Limits are applied in the order AWS's front ends apply them,
//! cheapest and least trusting first:
//!
//! 1. at accept: a limit per source address and a global limit, where a new
//!    connection at the global limit sheds the connection that has waited
//!    longest without a verified request in progress (`server/admission.rs`);
//! 2. the request headers within the header deadline (hyper, 408-like close);
//! 3. before any body byte is read: the `Authorization` header's syntax, the
//!    `X-Amz-Date` window and a known access key id (`precheck`), then the
//!    declared body size (413), so an unsigned client cannot make the server
//!    wait for or buffer a body;
//! 4. the body within the body deadline (408) and the size limit (413);
//! 5. the SigV4 signature over headers and body (see [`crate::sigv4`]), an
//!    unknown target and a wrong content type;
//!
//! only then does the [`Backend`] run the operation, with the field limits,
//! policy check and audit record of the authenticated principal. Errors go
//! back as AWS sends them: an HTTP status and `{"__type": "...", "message": "..."}`.
//!
//! Bodies, signatures and secrets are never logged; request and response
//! bodies are held in zeroizing buffers as far as rewrap controls them (hyper's
//! own socket buffers are outside its reach).

use crate::api::Operation;
use crate::audit;
use crate::error::{ErrorCode, KmsError, Result};
use crate::kms::Kms;
use crate::secret::Secret;
use crate::service::{Caller, KmsService, RejectedRequest};
use crate::sigv4;
use hyper::body::{Body, Buf, Frame, Incoming, SizeHint};
use hyper::header::{HeaderValue, CONTENT_LENGTH, CONTENT_TYPE, USER_AGENT};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};

mod admission;
use admission::{Admission, Refusal, Ticket};

/// The `X-Amz-Target` prefix of every KMS operation.
pub(crate) const TARGET_PREFIX: &str = "TrentService.";

/// The content type of the JSON 1.1 protocol.
pub(crate) const CONTENT_TYPE_JSON: &str = "application/x-amz-json-1.1";

/// The SigV4 service name of KMS.
pub(crate) const SERVICE: &str = "kms";

/// Who is calling: the authenticated principal and where the call came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallerInfo {
    /// The principal whose access key signed the request.
    pub principal: String,
    /// The peer address of the connection.
    pub source_ip: Option<String>,
    /// The `User-Agent` header, if any.
    pub user_agent: Option<String>,
    /// The access key id that signed the request.
    pub access_key_id: Option<String>,
    /// The signed `x-rewrap-object` header: what the key use is for.
    pub object: Option<String>,
    /// The request id the answer carries (`x-amzn-RequestId`), for the
    /// audit records.
    pub request_id: String,
}

/// What the server needs of a KMS: access keys, operations, automatic rotation.
pub trait Backend: Send + Sync + 'static {
    /// The principal and secret of an access key, or `UnrecognizedClientException`.
    fn lookup_access_key(&self, access_key_id: &str) -> Result<(String, Secret)>;
    /// Runs `op` for `caller` (policy check and audit record included).
    fn call(&self, caller: CallerInfo, op: Operation, body: &[u8]) -> Result<Secret>;
    /// Adds a key version to every key whose rotation period has passed;
    /// returns their ids.
    fn rotate_due_keys(&self) -> Result<Vec<String>>;
    /// Records a request refused before any operation ran (bad or missing
    /// signature, unknown access key or operation, unreadable body).
    fn audit_rejected(&self, _request: RejectedRequest) {}
    /// Whether `op` may hold its thread for long (a keystore write with
    /// fsync, an HSM, key-pair generation): the server then runs it on the
    /// blocking pool instead of the connection's task.
    fn may_block(&self, _op: Operation) -> bool {
        true
    }
    /// The region the KMS's keys live in: a credential scope naming another
    /// is refused (`None`: any region).
    fn region(&self) -> Option<String> {
        None
    }
}

/// The embedded [`KmsService`] as a server backend: every request runs in a
/// [`crate::service::LocalSession`] of its authenticated principal, so policy
/// checks, field limits and audit records are exactly the CLI's.
#[derive(Debug, Clone)]
pub struct ServiceBackend(pub Arc<KmsService>);

impl Backend for ServiceBackend {
    fn lookup_access_key(&self, access_key_id: &str) -> Result<(String, Secret)> {
        self.0.secret_for_access_key(access_key_id)
    }

    fn call(&self, caller: CallerInfo, op: Operation, body: &[u8]) -> Result<Secret> {
        let session = self.0.session(Caller {
            principal: caller.principal,
            source_ip: caller.source_ip,
            user_agent: caller.user_agent,
            access_key_id: caller.access_key_id,
            request_parameters: None,
            object: caller.object,
            request_id: Some(caller.request_id),
        });
        session.call(op, body)
    }

    fn rotate_due_keys(&self) -> Result<Vec<String>> {
        self.0.rotate_due_keys()
    }

    fn audit_rejected(&self, request: RejectedRequest) {
        self.0.audit_rejected(&request);
    }

    fn may_block(&self, op: Operation) -> bool {
        op.writes_keystore()
            || matches!(
                op,
                Operation::GenerateDataKeyPair | Operation::GenerateDataKeyPairWithoutPlaintext
            )
            || self.0.uses_custom_key_stores()
    }

    fn region(&self) -> Option<String> {
        Some(self.0.config().region.clone())
    }
}

/// Limits and options of a server.
#[derive(Clone)]
pub struct ServerConfig {
    /// TLS configuration; `None` serves plain HTTP.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Largest accepted request body, in bytes.
    pub max_body_bytes: usize,
    /// Time allowed for a request's headers (and a TLS handshake).
    pub header_timeout: Duration,
    /// Time allowed for a request's body once its headers arrived.
    pub body_timeout: Duration,
    /// How often to add key versions to keys due for automatic rotation;
    /// `None` disables the background task.
    pub rotation_check_interval: Option<Duration>,
    /// Most connections held at once. At the limit a new connection sheds
    /// the one that has waited longest without a verified request in
    /// progress (a slow header or body, an idle keep-alive), so a flood of
    /// slow connections cannot keep well-behaved clients out; if every
    /// connection is running a request, the new one is refused.
    pub max_connections: usize,
    /// Most connections held at once from one source address; further ones
    /// are refused at once (`ThrottlingException`, then closed).
    pub max_connections_per_address: usize,
    /// How long shutdown waits for requests in flight.
    pub shutdown_grace: Duration,
    /// Run operations that cannot hold the thread for long (cryptography
    /// and reads with software keys) on the connection's task: a hop to
    /// tokio's blocking pool and back costs more than the operation. Their
    /// audit records' fdatasync (the group commit) is awaited without
    /// blocking the task, and no answer leaves before it is done. Keystore
    /// writes, HSM operations and key-pair generation always go to the
    /// blocking pool ([`Backend::may_block`]). On by default, as
    /// `rewrap serve` and `benches/server.rs` run.
    pub inline_operations: bool,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            tls: None,
            max_body_bytes: 256 * 1024,
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            rotation_check_interval: Some(Duration::from_hours(1)),
            max_connections: 4096,
            max_connections_per_address: 128,
            shutdown_grace: Duration::from_secs(30),
            inline_operations: true,
        }
    }
}

/// Loads a PEM certificate chain and private key into a rustls server
/// configuration (TLS 1.2 and 1.3, HTTP/1.1 over ALPN).
pub fn load_tls(cert: &Path, key: &Path) -> std::io::Result<Arc<rustls::ServerConfig>> {
    use std::io::{Error, ErrorKind};
    let open = |p: &Path| {
        std::fs::File::open(p)
            .map(std::io::BufReader::new)
            .map_err(|e| Error::new(e.kind(), format!("{}: {e}", p.display())))
    };
    let certs = rustls_pemfile::certs(&mut open(cert)?).collect::<std::io::Result<Vec<_>>>()?;
    if certs.is_empty() {
        return Err(Error::new(
            ErrorKind::InvalidData,
            format!("{}: no PEM certificate", cert.display()),
        ));
    }
    let key_der = rustls_pemfile::private_key(&mut open(key)?)?.ok_or_else(|| {
        Error::new(
            ErrorKind::InvalidData,
            format!("{}: no PEM private key", key.display()),
        )
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::new(ErrorKind::InvalidData, e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key_der)
        .map_err(|e| {
            Error::new(
                ErrorKind::InvalidData,
                format!("TLS key or certificate: {e}"),
            )
        })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Resolves when the process receives SIGTERM or SIGINT (Ctrl-C).
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}

struct Shared<B> {
    backend: Arc<B>,
    config: ServerConfig,
}

/// Serves `listener` until `shutdown` resolves, then stops accepting, lets
/// requests in flight finish (up to [`ServerConfig::shutdown_grace`]) and returns.
pub async fn serve<B: Backend>(
    listener: TcpListener,
    backend: Arc<B>,
    config: ServerConfig,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let shared = Arc::new(Shared { backend, config });
    let (stop_tx, stop_rx) = watch::channel(false);
    // Each connection holds a clone of `alive`; `recv` returns None once all are gone.
    let (alive, mut all_done) = mpsc::channel::<()>(1);
    let admission = Admission::new(
        shared.config.max_connections_per_address,
        shared.config.max_connections,
    );
    let rotation = shared
        .config
        .rotation_check_interval
        .map(|every| tokio::spawn(rotate_periodically(shared.clone(), every, stop_rx.clone())));
    let tls = shared
        .config
        .tls
        .clone()
        .map(tokio_rustls::TlsAcceptor::from);
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                // Out of descriptors or a connection reset before accept: keep serving.
                Err(e) => {
                    eprintln!("rewrap serve: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let ticket = match admission.admit(peer.ip()) {
            Ok(ticket) => ticket,
            Err(refusal) => {
                refuse(&stream, refusal, tls.is_none());
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let (shared, stop_rx, alive, tls) =
            (shared.clone(), stop_rx.clone(), alive.clone(), tls.clone());
        tokio::spawn(async move {
            let _alive = alive;
            let serve = async {
                match tls {
                    None => serve_connection(stream, peer, shared, stop_rx, &ticket).await,
                    Some(acceptor) => {
                        let timeout = shared.config.header_timeout;
                        if let Ok(Ok(tls_stream)) =
                            tokio::time::timeout(timeout, acceptor.accept(stream)).await
                        {
                            serve_connection(tls_stream, peer, shared, stop_rx, &ticket).await;
                        }
                    }
                }
            };
            // Shed to admit another: the connection is dropped (closed) here.
            tokio::select! {
                () = serve => {}
                () = ticket.shed() => {}
            }
        });
    }
    drop(listener);
    let _ = stop_tx.send(true);
    drop(alive);
    let grace = shared.config.shutdown_grace;
    let _ = tokio::time::timeout(grace, all_done.recv()).await;
    if let Some(task) = rotation {
        task.abort();
    }
    Ok(())
}

/// Refuses a connection that was not admitted: on plain HTTP with a
/// `ThrottlingException` written without waiting (a full socket buffer
/// drops it), then closes it.
fn refuse(stream: &tokio::net::TcpStream, refusal: Refusal, plain_http: bool) {
    if !plain_http {
        return;
    }
    let message = match refusal {
        Refusal::PerAddress => "Too many connections from your address",
        Refusal::Global => "The server is at its connection limit",
    };
    let body =
        serde_json::json!({ "__type": "ThrottlingException", "message": message }).to_string();
    let response = format!(
        "HTTP/1.1 400 Bad Request\r\ncontent-type: {CONTENT_TYPE_JSON}\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.try_write(response.as_bytes());
}

async fn serve_connection<B, I>(
    io: I,
    peer: SocketAddr,
    shared: Arc<Shared<B>>,
    mut stop: watch::Receiver<bool>,
    ticket: &Arc<Ticket>,
) where
    B: Backend,
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let header_timeout = shared.config.header_timeout;
    let ticket = ticket.clone();
    let service = hyper::service::service_fn(move |req| {
        let (shared, ticket) = (shared.clone(), ticket.clone());
        async move { Ok::<_, Infallible>(handle(req, peer, &shared, &ticket).await) }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .keep_alive(true);
    let conn = builder.serve_connection(TokioIo::new(io), service);
    tokio::pin!(conn);
    if *stop.borrow() {
        conn.as_mut().graceful_shutdown();
    }
    tokio::select! {
        _ = conn.as_mut() => {}
        _ = stop.changed() => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}

async fn rotate_periodically<B: Backend>(
    shared: Arc<Shared<B>>,
    every: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = stop.changed() => return,
        }
        let backend = shared.backend.clone();
        match tokio::task::spawn_blocking(move || backend.rotate_due_keys()).await {
            Ok(Ok(rotated)) => {
                for key in rotated {
                    eprintln!("rewrap serve: automatic rotation added a key version to {key}");
                }
            }
            Ok(Err(e)) => eprintln!("rewrap serve: automatic rotation failed: {e}"),
            Err(e) => eprintln!("rewrap serve: automatic rotation task failed: {e}"),
        }
    }
}

/// An error on the wire: HTTP status, AWS error name, message.
struct WireError {
    status: StatusCode,
    kind: &'static str,
    message: String,
}

impl From<KmsError> for WireError {
    fn from(e: KmsError) -> Self {
        WireError {
            status: StatusCode::from_u16(e.code.http_status()).unwrap_or(StatusCode::BAD_REQUEST),
            kind: e.code.as_str(),
            message: e.message,
        }
    }
}

impl WireError {
    fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Self {
        WireError {
            status,
            kind,
            message: message.into(),
        }
    }
}

async fn handle<B: Backend>(
    req: Request<Incoming>,
    peer: SocketAddr,
    shared: &Shared<B>,
    ticket: &Arc<Ticket>,
) -> Response<SecretBody> {
    let request_id = uuid::Uuid::new_v4().to_string();
    let (status, body) = match process(req, peer, shared, ticket, &request_id).await {
        Ok(body) => (StatusCode::OK, body),
        Err(e) => {
            let json = serde_json::json!({ "__type": e.kind, "message": e.message });
            (e.status, Secret::new(json.to_string().into_bytes()))
        }
    };
    let mut resp = Response::new(SecretBody::new(body));
    *resp.status_mut() = status;
    let headers = resp.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE_JSON));
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        headers.insert("x-amzn-requestid", v);
    }
    resp
}

async fn process<B: Backend>(
    req: Request<Incoming>,
    peer: SocketAddr,
    shared: &Shared<B>,
    ticket: &Arc<Ticket>,
    request_id: &str,
) -> std::result::Result<Secret, WireError> {
    let refused = |headers: &hyper::HeaderMap, principal: Option<&str>, error: &str| {
        audit_rejected_request(shared, peer, headers, principal, error, request_id);
    };
    if req.method() != Method::POST {
        let e = WireError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            ErrorCode::UnsupportedOperation.as_str(),
            "Only POST is supported",
        );
        refused(req.headers(), None, e.kind);
        return Err(e);
    }
    let (parts, incoming) = req.into_parts();
    let (auth, found) = precheck(&parts.headers, chrono::Utc::now(), |id| {
        shared.backend.lookup_access_key(id)
    })
    .and_then(|(auth, found)| {
        check_region(&auth.region, shared.backend.region()).map(|()| (auth, found))
    })
    .inspect_err(|e| refused(&parts.headers, None, e.code.as_str()))?;
    let body = read_body(&parts.headers, incoming, &shared.config)
        .await
        .inspect_err(|e| refused(&parts.headers, None, e.kind))?;
    let headers: Vec<(&str, &str)> = parts
        .headers
        .iter()
        .filter_map(|(n, v)| v.to_str().ok().map(|v| (n.as_str(), v)))
        .collect();
    let request = sigv4::RequestParts {
        method: parts.method.as_str(),
        path: parts.uri.path(),
        query: parts.uri.query().unwrap_or(""),
        headers: &headers,
    };
    // The header was parsed, and its access key looked up, by the precheck.
    let verified = sigv4::verify_parsed(
        &request,
        auth,
        body.expose(),
        SERVICE,
        chrono::Utc::now(),
        |_| Ok(found),
    )
    .inspect_err(|e| refused(&parts.headers, None, e.code.as_str()))?;
    // A verified request is never shed for a newcomer while it runs.
    let _busy = ticket.busy();
    let known = Some(verified.principal.as_str());
    let op = operation(&parts.headers).inspect_err(|e| refused(&parts.headers, known, e.kind))?;
    check_content_type(&parts.headers).inspect_err(|e| {
        refused(&parts.headers, known, e.code.as_str());
    })?;
    let object = object_header(&parts.headers).inspect_err(|e| {
        refused(&parts.headers, known, e.code.as_str());
    })?;
    let caller = CallerInfo {
        object,
        access_key_id: Some(verified.access_key_id),
        principal: verified.principal,
        source_ip: Some(peer.ip().to_string()),
        user_agent: parts
            .headers
            .get(USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
        request_id: request_id.to_string(),
    };
    if shared.config.inline_operations && !shared.backend.may_block(op) {
        // Run on this task; the record's fdatasync is awaited without
        // blocking the thread, and nothing is answered before it is done.
        let (result, durability) =
            audit::defer_durability(|| shared.backend.call(caller, op, body.expose()));
        durability.wait().await.map_err(|e| {
            WireError::from(KmsError::internal(format!(
                "cannot write the audit trail: {e}"
            )))
        })?;
        return result.map_err(WireError::from);
    }
    let backend = shared.backend.clone();
    tokio::task::spawn_blocking(move || backend.call(caller, op, body.expose()))
        .await
        .map_err(|_| WireError::from(KmsError::internal("the operation did not complete")))?
        .map_err(WireError::from)
}

/// Records a request refused before the backend ran it: who it claimed to
/// be (the access key id of its `Authorization` header, and the principal
/// when that key is known), where it came from, the operation it named and
/// the error it got.
fn audit_rejected_request<B: Backend>(
    shared: &Shared<B>,
    peer: SocketAddr,
    headers: &hyper::HeaderMap,
    principal: Option<&str>,
    error: &str,
    request_id: &str,
) {
    let text = |name| {
        headers
            .get(name)
            .and_then(|v: &HeaderValue| v.to_str().ok())
    };
    let access_key_id = text(hyper::header::AUTHORIZATION)
        .and_then(|a| a.split("Credential=").nth(1))
        .and_then(|c| c.split('/').next())
        .filter(|id| !id.is_empty() && id.len() <= 128)
        .map(str::to_string);
    let principal = principal.map(str::to_string).or_else(|| {
        let id = access_key_id.as_deref()?;
        shared.backend.lookup_access_key(id).ok().map(|(p, _)| p)
    });
    let operation = text(hyper::header::HeaderName::from_static("x-amz-target"))
        .and_then(|t| t.strip_prefix(TARGET_PREFIX))
        .and_then(Operation::from_name)
        .map(|op| op.name().to_string());
    // A refusal answers no key use: its record is written before the
    // answer, and made durable in the background, not awaited.
    let ((), durability) = audit::defer_durability(|| {
        shared.backend.audit_rejected(RejectedRequest {
            principal,
            access_key_id,
            source_ip: Some(peer.ip().to_string()),
            user_agent: text(USER_AGENT).map(|u| u.chars().take(512).collect()),
            operation,
            error: error.to_string(),
            request_id: request_id.to_string(),
        });
    });
    if !durability.is_empty() {
        durability.write_now();
        tokio::spawn(async move {
            if let Err(e) = durability.wait().await {
                eprintln!("rewrap: cannot record a refused request in the audit trail: {e}");
            }
        });
    }
}

/// The checks of a request's headers that need no body, made before any body
/// byte is read: an `Authorization` header of the SigV4 syntax, an
/// `X-Amz-Date` within the allowed clock skew of `now`, and an access key id
/// that `lookup` knows. The same checks are made again, with the signature,
/// by [`sigv4::verify`] once the body is in; this early pass only keeps an
/// unauthenticated client from making the server wait for or buffer a body.
///
/// Returns the parsed header and what `lookup` found for its access key.
pub(crate) fn precheck<F>(
    headers: &hyper::HeaderMap,
    now: chrono::DateTime<chrono::Utc>,
    lookup: F,
) -> Result<(sigv4::Authorization, (String, Secret))>
where
    F: FnOnce(&str) -> Result<(String, Secret)>,
{
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let authorization = text("authorization").ok_or_else(|| {
        KmsError::new(
            ErrorCode::MissingAuthenticationToken,
            "Missing Authentication Token",
        )
    })?;
    let auth = sigv4::parse_authorization(authorization)?;
    let date_text = text("x-amz-date").ok_or_else(|| {
        KmsError::new(
            ErrorCode::IncompleteSignature,
            "Authorization header requires existence of a 'X-Amz-Date' header",
        )
    })?;
    let time = sigv4::parse_amz_date(date_text).ok_or_else(|| {
        KmsError::new(
            ErrorCode::IncompleteSignature,
            "X-Amz-Date must be in the ISO 8601 basic format",
        )
    })?;
    sigv4::check_time(date_text, time, now)?;
    let found = lookup(&auth.access_key_id)?;
    Ok((auth, found))
}

/// A credential scope must name the region the server's keys live in, as
/// AWS refuses a request signed for another region.
fn check_region(scoped: &str, region: Option<String>) -> Result<()> {
    let Some(region) = region else {
        return Ok(());
    };
    if scoped == region {
        return Ok(());
    }
    Err(KmsError::new(
        ErrorCode::InvalidSignature,
        format!("Credential should be scoped to a valid region: '{region}', not '{scoped}'"),
    ))
}

fn too_large(limit: usize) -> WireError {
    WireError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        ErrorCode::Validation.as_str(),
        format!("The request body is larger than {limit} bytes"),
    )
}

async fn read_body(
    headers: &hyper::HeaderMap,
    mut incoming: Incoming,
    config: &ServerConfig,
) -> std::result::Result<Secret, WireError> {
    let limit = config.max_body_bytes;
    let declared = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large(limit));
    }
    let capacity = declared.map_or(4096, |n| n as usize);
    let mut body = Secret::new(Vec::with_capacity(capacity));
    let read = async {
        use http_body_util::BodyExt;
        while let Some(frame) = incoming.frame().await {
            let frame = frame.map_err(|_| {
                WireError::new(
                    StatusCode::BAD_REQUEST,
                    ErrorCode::Serialization.as_str(),
                    "The request body could not be read",
                )
            })?;
            if let Ok(data) = frame.into_data() {
                if body.len() + data.len() > limit {
                    return Err(too_large(limit));
                }
                body.expose_mut().extend_from_slice(&data);
            }
        }
        Ok(())
    };
    match tokio::time::timeout(config.body_timeout, read).await {
        Ok(Ok(())) => Ok(body),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(WireError::new(
            StatusCode::REQUEST_TIMEOUT,
            "RequestTimeoutException",
            "The request body was not received in time",
        )),
    }
}

fn operation(headers: &hyper::HeaderMap) -> std::result::Result<Operation, WireError> {
    let target = headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    target
        .strip_prefix(TARGET_PREFIX)
        .and_then(Operation::from_name)
        .ok_or_else(|| {
            WireError::new(
                StatusCode::BAD_REQUEST,
                "UnknownOperationException",
                "The X-Amz-Target header does not name a supported operation",
            )
        })
}

/// The signed `x-rewrap-object` header (issue 16), if sent: refused when it
/// is not signed, too long or holds a control character.
fn object_header(headers: &hyper::HeaderMap) -> Result<Option<String>> {
    let Some(value) = headers.get(audit::OBJECT_HEADER) else {
        return Ok(None);
    };
    let bad =
        |why: &str| KmsError::validation(format!("The {} header {why}", audit::OBJECT_HEADER));
    let signed = headers
        .get(hyper::header::AUTHORIZATION)
        .and_then(|a| a.to_str().ok())
        .and_then(|a| sigv4::parse_authorization(a).ok())
        .is_some_and(|a| a.signed_headers.iter().any(|h| h == audit::OBJECT_HEADER));
    if !signed {
        return Err(bad("must be signed (named in SignedHeaders)"));
    }
    audit::decode_object_header(value.as_bytes())
        .map(Some)
        .map_err(bad)
}

fn check_content_type(headers: &hyper::HeaderMap) -> Result<()> {
    let value = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let media = value.split(';').next().unwrap_or("").trim();
    if media.eq_ignore_ascii_case(CONTENT_TYPE_JSON)
        || media.eq_ignore_ascii_case("application/x-amz-json-1.0")
    {
        Ok(())
    } else {
        Err(KmsError::new(
            ErrorCode::Serialization,
            format!("Content-Type must be {CONTENT_TYPE_JSON}"),
        ))
    }
}

/// A response body held in a zeroizing buffer until hyper has written it.
pub struct SecretBody(Option<SecretBuf>);

impl SecretBody {
    fn new(data: Secret) -> SecretBody {
        SecretBody(Some(SecretBuf { data, pos: 0 }))
    }
}

/// The one data frame of a [`SecretBody`].
pub struct SecretBuf {
    data: Secret,
    pos: usize,
}

impl Buf for SecretBuf {
    fn remaining(&self) -> usize {
        self.data.len() - self.pos
    }
    fn chunk(&self) -> &[u8] {
        &self.data.expose()[self.pos..]
    }
    fn advance(&mut self, cnt: usize) {
        self.pos = (self.pos + cnt).min(self.data.len());
    }
}

impl Body for SecretBody {
    type Data = SecretBuf;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<std::result::Result<Frame<SecretBuf>, Infallible>>> {
        Poll::Ready(self.get_mut().0.take().map(|b| Ok(Frame::data(b))))
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.0.as_ref().map_or(0, |b| b.remaining() as u64))
    }
}

#[cfg(test)]
mod tests;

//! Unit tests of `crate::server`.

use super::*;
use crate::api::{EncryptRequest, EncryptResponse, KeyIdRequest};
use crate::client::RemoteKms;
use crate::sigv4::Credentials;
use std::io::{Read, Write};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

const AKID: &str = "AKFAKE";
const SECRET: &[u8] = b"fake-secret";

/// Encrypt "encrypts" by reversing; DescribeKey is NotFound; GenerateRandom
/// takes 300 ms (for shutdown tests).
#[derive(Default)]
struct Fake {
    callers: Mutex<Vec<(CallerInfo, Operation)>>,
    rotations: AtomicUsize,
}

impl Backend for Fake {
    fn lookup_access_key(&self, id: &str) -> Result<(String, Secret)> {
        if id == AKID {
            Ok(("alice".into(), Secret::from_slice(SECRET)))
        } else {
            Err(KmsError::new(
                ErrorCode::UnrecognizedClient,
                "unknown access key",
            ))
        }
    }
    fn call(&self, caller: CallerInfo, op: Operation, body: &[u8]) -> Result<Secret> {
        self.callers.lock().unwrap().push((caller, op));
        match op {
            Operation::Encrypt => {
                let r: EncryptRequest = crate::kms::from_json(body)?;
                let mut c = r.plaintext.expose().to_vec();
                c.reverse();
                crate::kms::to_json(&EncryptResponse {
                    ciphertext_blob: crate::api::CiphertextBlob(c),
                    key_id: r.key_id,
                    encryption_algorithm: "SYMMETRIC_DEFAULT".into(),
                })
            }
            Operation::GenerateRandom => {
                std::thread::sleep(Duration::from_millis(300));
                Ok(Secret::from_slice(br#"{"Plaintext":"AAAA"}"#))
            }
            _ => Err(KmsError::not_found("no such key")),
        }
    }
    fn rotate_due_keys(&self) -> Result<Vec<String>> {
        self.rotations.fetch_add(1, Ordering::SeqCst);
        Ok(vec![])
    }
}

struct Running {
    addr: SocketAddr,
    fake: Arc<Fake>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    done: Option<std::sync::mpsc::Receiver<()>>,
    rt: tokio::runtime::Runtime,
}

impl Running {
    fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }
    fn stop(&mut self) -> std::sync::mpsc::Receiver<()> {
        let _ = self.stop.take().unwrap().send(());
        self.done.take().unwrap()
    }
}

fn start(config: ServerConfig) -> Running {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let fake = Arc::new(Fake::default());
    let listener = rt.block_on(TcpListener::bind("127.0.0.1:0")).unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let (done_tx, done) = std::sync::mpsc::channel();
    let backend = fake.clone();
    rt.spawn(async move {
        serve(listener, backend, config, async {
            let _ = stop_rx.await;
        })
        .await
        .unwrap();
        let _ = done_tx.send(());
    });
    Running {
        addr,
        fake,
        stop: Some(stop),
        done: Some(done),
        rt,
    }
}

fn quick() -> ServerConfig {
    ServerConfig {
        header_timeout: Duration::from_millis(300),
        body_timeout: Duration::from_millis(300),
        rotation_check_interval: None,
        max_body_bytes: 1024,
        ..ServerConfig::default()
    }
}

fn client(url: &str, secret: &[u8], akid: &str) -> RemoteKms {
    let creds = Credentials {
        access_key_id: akid.into(),
        secret_access_key: Secret::from_slice(secret),
        session_token: None,
    };
    RemoteKms::new(url, "us-east-1", creds, None).unwrap()
}

/// A raw request: `(status, __type or "", body)`.
fn raw(server: &Running, target: &str, body: &[u8], sign: bool) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(server.addr).unwrap();
    s.write_all(head(server, target, body, body.len(), sign).as_bytes())
        .unwrap();
    s.write_all(body).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let status: u16 = out[9..12].parse().unwrap();
    let json = out.split("\r\n\r\n").nth(1).unwrap_or("");
    let kind = serde_json::from_str::<serde_json::Value>(json)
        .ok()
        .and_then(|v| v["__type"].as_str().map(str::to_string))
        .unwrap_or_default();
    (status, kind)
}

/// A request head declaring `content_length` bytes, signed for `body` when
/// `sign`.
fn head(server: &Running, target: &str, body: &[u8], content_length: usize, sign: bool) -> String {
    let host = server.addr.to_string();
    let base = [
        ("host", host.as_str()),
        ("content-type", CONTENT_TYPE_JSON),
        ("x-amz-target", target),
    ];
    let mut headers: Vec<(String, String)> = base
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect();
    if sign {
        let parts = sigv4::RequestParts {
            method: "POST",
            path: "/",
            query: "",
            headers: &base,
        };
        let creds = Credentials {
            access_key_id: AKID.into(),
            secret_access_key: Secret::from_slice(SECRET),
            session_token: None,
        };
        for (n, v) in sigv4::sign(&parts, body, &creds, "us-east-1", "kms", chrono::Utc::now()) {
            headers.push((n.to_string(), v));
        }
    }
    let mut req =
        format!("POST / HTTP/1.1\r\ncontent-length: {content_length}\r\nconnection: close\r\n");
    for (n, v) in &headers {
        req.push_str(&format!("{n}: {v}\r\n"));
    }
    req + "\r\n"
}

#[test]
fn a_signed_call_runs_as_its_principal_with_its_address() {
    let server = start(quick());
    let kms = client(&server.url(), SECRET, AKID);
    let out = kms
        .encrypt(&EncryptRequest {
            key_id: "k".into(),
            plaintext: Secret::from_slice(b"abc"),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(out.ciphertext_blob.0, b"cba");
    let e = kms
        .describe_key(&KeyIdRequest {
            key_id: "nope".into(),
            grant_tokens: None,
        })
        .unwrap_err();
    assert_eq!(
        (e.code, e.message.as_str()),
        (ErrorCode::NotFound, "no such key")
    );
    let callers = server.fake.callers.lock().unwrap();
    assert_eq!(callers.len(), 2);
    let (caller, op) = &callers[0];
    assert_eq!(*op, Operation::Encrypt);
    assert_eq!(caller.principal, "alice");
    assert_eq!(caller.source_ip.as_deref(), Some("127.0.0.1"));
    assert!(caller.user_agent.as_deref().unwrap().starts_with("rewrap/"));
}

#[test]
fn bad_credentials_are_refused_before_the_backend_runs() {
    let server = start(quick());
    let e = client(&server.url(), b"wrong", AKID)
        .describe_key(&KeyIdRequest::default())
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::InvalidSignature);
    let e = client(&server.url(), SECRET, "AKOTHER")
        .describe_key(&KeyIdRequest::default())
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::UnrecognizedClient);
    assert_eq!(
        raw(&server, "TrentService.Encrypt", b"{}", false),
        (400, "MissingAuthenticationTokenException".into())
    );
    assert!(server.fake.callers.lock().unwrap().is_empty());
}

#[test]
fn framing_errors_have_aws_names() {
    let server = start(quick());
    // The authorization headers are checked first, then the size.
    assert_eq!(
        raw(&server, "TrentService.Encrypt", &[b' '; 2000], false).1,
        "MissingAuthenticationTokenException"
    );
    assert_eq!(
        raw(&server, "TrentService.Encrypt", &[b' '; 2000], true),
        (413, "ValidationException".into())
    );
    assert_eq!(
        raw(&server, "TrentService.Encrypt", b"{not json", true),
        (400, "SerializationException".into())
    );
    assert_eq!(
        raw(
            &server,
            "TrentService.Encrypt",
            br#"{"KeyId":"k","Plaintext":"!!!"}"#,
            true
        ),
        (400, "SerializationException".into())
    );
    assert_eq!(
        raw(&server, "TrentService.Nope", b"{}", true),
        (400, "UnknownOperationException".into())
    );
    assert_eq!(
        raw(&server, "Other.Encrypt", b"{}", true),
        (400, "UnknownOperationException".into())
    );
}

#[test]
fn a_slow_header_or_body_is_cut_off() {
    let server = start(quick());
    let started = std::time::Instant::now();
    let mut s = std::net::TcpStream::connect(server.addr).unwrap();
    s.write_all(b"POST / HTTP/1.1\r\nhost: x\r\n").unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    assert!(started.elapsed() < Duration::from_secs(3), "header timeout");

    // Signed headers (the body of a request that passed them is waited
    // for, up to the body deadline), then one byte of a 100-byte body.
    let mut s = std::net::TcpStream::connect(server.addr).unwrap();
    let body = [b'{'; 100];
    s.write_all(head(&server, "TrentService.ListKeys", &body, 100, true).as_bytes())
        .unwrap();
    s.write_all(&body[..1]).unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    assert!(out.starts_with("HTTP/1.1 408"), "{out}");
    assert!(out.contains("RequestTimeoutException"));
}

#[test]
fn shutdown_finishes_requests_in_flight() {
    let mut server = start(quick());
    let kms = client(&server.url(), SECRET, AKID);
    let slow = std::thread::spawn(move || {
        kms.generate_random(&crate::api::GenerateRandomRequest::default())
    });
    std::thread::sleep(Duration::from_millis(100));
    let done = server.stop();
    let out = slow.join().unwrap().unwrap();
    assert_eq!(out.plaintext.expose(), &[0, 0, 0]);
    done.recv_timeout(Duration::from_secs(5)).unwrap();
    assert!(std::net::TcpStream::connect(server.addr).is_err());
    drop(server.rt);
}

#[test]
fn rotation_runs_on_its_interval() {
    let server = start(ServerConfig {
        rotation_check_interval: Some(Duration::from_millis(50)),
        ..quick()
    });
    std::thread::sleep(Duration::from_millis(400));
    let n = server.fake.rotations.load(Ordering::SeqCst);
    assert!((3..=10).contains(&n), "{n} rotation checks");
}

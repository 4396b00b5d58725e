//! `rewrap serve` under a hostile neighbour (issue 12 finding 2): the real
//! binary on loopback, a slow-body flood bounded in count and time, and
//! unauthenticated requests refused before their body is read.
//!
//! The flood sends correctly signed headers (an access key id is not a
//! secret, and the date is fresh) and then never finishes its body: the
//! strongest slow-body client that holds no secret. The signed client
//! connects from 127.0.0.2 (all of 127/8 is loopback on Linux) so the
//! per-address limit can be seen sparing it, and from 127.0.0.1 so the
//! global limit can be seen shedding the flood for it.

mod support;

use rewrap::secret::Secret;
use rewrap::sigv4::{self, Credentials};
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};
use support::cli::{Env, Server};

/// `rewrap serve` on `env`'s keystore (and `extra` options), without the
/// background rotation check.
fn start(env: &Env, extra: &[&str]) -> Server {
    let mut args = vec!["--rotation-check-interval", "0"];
    args.extend(extra);
    Server::start(&env.home, &args)
}

/// A TCP connection to `to` from source address `from`.
fn connect_from(from: &str, to: SocketAddr) -> TcpStream {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .unwrap();
    let stream = rt.block_on(async {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket
            .bind(SocketAddr::new(from.parse::<IpAddr>().unwrap(), 0))
            .unwrap();
        socket.connect(to).await.unwrap()
    });
    let stream = stream.into_std().unwrap();
    stream.set_nonblocking(false).unwrap();
    stream
}

/// The head of a DescribeKey request for `key`, signed by the owner for
/// `body`, declaring `content_length` bytes of body.
fn signed_head(
    env: &Env,
    addr: SocketAddr,
    body: &[u8],
    content_length: usize,
    at: chrono::DateTime<chrono::Utc>,
) -> String {
    let host = addr.to_string();
    let base = [
        ("host", host.as_str()),
        ("content-type", "application/x-amz-json-1.1"),
        ("x-amz-target", "TrentService.ListKeys"),
    ];
    let parts = sigv4::RequestParts {
        method: "POST",
        path: "/",
        query: "",
        headers: &base,
    };
    let creds = Credentials {
        access_key_id: env.owner.id.clone(),
        secret_access_key: Secret::from_slice(env.owner.secret.as_bytes()),
        session_token: None,
    };
    let mut head = format!("POST / HTTP/1.1\r\ncontent-length: {content_length}\r\n");
    for (n, v) in base {
        head.push_str(&format!("{n}: {v}\r\n"));
    }
    for (n, v) in sigv4::sign(&parts, body, &creds, "us-east-1", "kms", at) {
        head.push_str(&format!("{n}: {v}\r\n"));
    }
    head + "\r\n"
}

/// Reads one response within `deadline`: `(status, __type or "")`.
fn response(stream: &mut TcpStream, deadline: Duration) -> (u16, String) {
    stream.set_read_timeout(Some(deadline)).unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let started = Instant::now();
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) => panic!("no complete response within {deadline:?}: {e} (got {out:?})"),
        }
        let text = String::from_utf8_lossy(&out);
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let len = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length: ")
                        .map(str::to_string)
                })
                .and_then(|v| v.trim().parse::<usize>().ok());
            if len.is_some_and(|n| body.len() >= n) {
                break;
            }
        }
        assert!(started.elapsed() < deadline, "response too slow");
    }
    let text = String::from_utf8_lossy(&out).into_owned();
    assert!(text.starts_with("HTTP/1.1 "), "not a response: {text:?}");
    let status = text[9..12].parse().unwrap();
    let kind = text
        .split_once("\r\n\r\n")
        .and_then(|(_, b)| serde_json::from_str::<serde_json::Value>(b).ok())
        .and_then(|v| v["__type"].as_str().map(str::to_string))
        .unwrap_or_default();
    (status, kind)
}

/// One signed ListKeys from `from`, answered within 5 s.
fn signed_call(env: &Env, server: &Server, from: &str) -> (u16, String) {
    let body = b"{}";
    let mut s = connect_from(from, server.addr());
    let head = signed_head(env, server.addr(), body, body.len(), chrono::Utc::now());
    // The server may refuse (and close) before it reads the request.
    let _ = s.write_all(head.as_bytes());
    let _ = s.write_all(body);
    response(&mut s, Duration::from_secs(5))
}

/// `n` connections from 127.0.0.1 that send correctly signed headers and
/// the first byte of a 100-byte body, then stall.
fn slow_body_flood(env: &Env, server: &Server, n: usize) -> Vec<TcpStream> {
    let body = [b'{'; 100];
    let head = signed_head(env, server.addr(), &body, body.len(), chrono::Utc::now());
    (0..n)
        .map(|_| {
            let mut s = connect_from("127.0.0.1", server.addr());
            let _ = s.write_all(head.as_bytes());
            let _ = s.write_all(&body[..1]);
            s
        })
        .collect()
}

/// How many of `flood` the server still holds open (nothing to read yet),
/// once the count is the same twice in a row 300 ms apart (the server may
/// still be accepting or shedding; at most 10 s).
fn still_held(flood: &[TcpStream]) -> usize {
    let count = || {
        flood
            .iter()
            .filter(|s| {
                s.set_nonblocking(true).unwrap();
                let mut b = [0u8; 1];
                let held = matches!(&(&**s).read(&mut b), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock);
                s.set_nonblocking(false).unwrap();
                held
            })
            .count()
    };
    let mut last = usize::MAX;
    for _ in 0..33 {
        std::thread::sleep(Duration::from_millis(300));
        let now = count();
        if now == last {
            return now;
        }
        last = now;
    }
    panic!("the number of held connections did not settle: {last}");
}

#[test]
fn slow_body_flood_from_one_address_is_capped_and_another_address_is_served() {
    let env = Env::new();
    let server = start(
        &env,
        &[
            "--max-connections-per-address",
            "50",
            "--max-connections",
            "1000",
            "--body-timeout",
            "60",
        ],
    );
    let flood = slow_body_flood(&env, &server, 300);
    assert_eq!(still_held(&flood), 50, "the per-address limit holds 50");
    for _ in 0..5 {
        assert_eq!(
            signed_call(&env, &server, "127.0.0.2"),
            (200, String::new())
        );
    }
    // The flooding address itself is refused at once, with a name.
    assert_eq!(
        signed_call(&env, &server, "127.0.0.1"),
        (400, "ThrottlingException".to_string())
    );
    drop(flood);
}

#[test]
fn slow_body_flood_at_the_global_limit_is_shed_for_a_signed_client() {
    let env = Env::new();
    let server = start(
        &env,
        &[
            "--max-connections-per-address",
            "1000",
            "--max-connections",
            "100",
            "--body-timeout",
            "60",
        ],
    );
    let flood = slow_body_flood(&env, &server, 300);
    assert_eq!(still_held(&flood), 100, "the newest 100 are held");
    // Five signed calls on one keep-alive connection: admitting it shed the
    // oldest stalled connection, and between its requests it is the newest
    // waiting one, so nothing else is shed: 99 stalled remain.
    let mut client = connect_from("127.0.0.1", server.addr());
    for _ in 0..5 {
        let head = signed_head(&env, server.addr(), b"{}", 2, chrono::Utc::now());
        client.write_all(head.as_bytes()).unwrap();
        client.write_all(b"{}").unwrap();
        assert_eq!(
            response(&mut client, Duration::from_secs(5)),
            (200, String::new())
        );
    }
    assert_eq!(still_held(&flood), 99);
}

#[test]
fn slow_body_unauthenticated_requests_are_refused_before_the_body_is_sent() {
    let env = Env::new();
    let server = start(&env, &["--body-timeout", "60"]);
    let fresh = chrono::Utc::now();
    let signed = signed_head(&env, server.addr(), b"{}", 200_000, fresh);
    let unknown = signed.replace(&env.owner.id, "AKIAUNKNOWNUNKNOWN00");
    let stale = signed_head(
        &env,
        server.addr(),
        b"{}",
        200_000,
        fresh - chrono::Duration::hours(1),
    );
    let unsigned = format!(
        "POST / HTTP/1.1\r\nhost: {}\r\ncontent-length: 200000\r\n\
         x-amz-target: TrentService.ListKeys\r\n\r\n",
        server.addr()
    );
    let garbled = unsigned.replace(
        "\r\n\r\n",
        "\r\nauthorization: AWS4-HMAC-SHA256 nonsense\r\n\r\n",
    );
    let huge = unsigned.replace("200000", "1000000000000");
    for (head, want) in [
        (unsigned, "MissingAuthenticationTokenException"),
        (huge, "MissingAuthenticationTokenException"),
        (garbled, "IncompleteSignatureException"),
        (unknown, "UnrecognizedClientException"),
        (stale, "InvalidSignatureException"),
    ] {
        let mut s = connect_from("127.0.0.1", server.addr());
        s.write_all(head.as_bytes()).unwrap();
        // Not one body byte is sent: the answer must come anyway.
        let (_, kind) = response(&mut s, Duration::from_secs(10));
        assert_eq!(kind, want);
    }
}

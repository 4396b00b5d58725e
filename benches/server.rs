//! Server benchmarks, run only by `cargo bench --bench server`.
//!
//! 1. ReEncrypt requests/s through `rewrap serve` (SigV4 verified, policy,
//!    audit) against a bare hyper server that returns a fixed ReEncrypt
//!    response, in the same run, with the same client ([`RemoteKms`]) and
//!    the same concurrency. Goal: at least 0.5 of the bare server. Each
//!    round also prints the CPU time per request of the whole process
//!    (the same clients, the server, the audit syncer and sealer), rewrap
//!    against bare: with the 2 cores busy, the ratio is at most their
//!    inverse ratio.
//! 2. Remote rotation (`rotate` through [`RemoteKms`] and `rewrap serve`)
//!    files/s against embedded rotation (a local session) on trees of the same shape,
//!    `REWRAP_BENCH_FILES` (2000) files of 1 KiB, `REWRAP_BENCH_ROTATE_JOBS` (32)
//!    workers each. Goal: at least 0.3.
//! 3. A sustained load: `REWRAP_BENCH_SUSTAINED_CLIENTS` (64) clients for
//!    `REWRAP_BENCH_SUSTAINED_SECS` (60) seconds; reports errors (must be 0)
//!    and p50 / p99 / max latency.
//!
//! Settings (environment): `REWRAP_BENCH_SECS` (5) per throughput round,
//! `REWRAP_BENCH_ROUNDS` (3) alternating bare / rewrap rounds,
//! `REWRAP_BENCH_CONCURRENCY` (32) client threads for phase 1,
//! `REWRAP_BENCH_INLINE` (unset: the shipped `ServerConfig` default, which
//! `rewrap serve` uses; 1 runs non-writing operations on the connection's
//! task, 0 runs every operation on the blocking pool).
//!
//! The audit trail is durable as shipped: every ReEncrypt's record is
//! fdatasynced (group commit) before the answer.

/// The allocator the `rewrap` binary ships with (src/main.rs), so the bench
/// measures the shipped configuration.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use http_body_util::Full;
use hyper::body::Bytes;
use rewrap::api::{CreateKeyRequest, EncryptRequest, ReEncryptRequest};
use rewrap::client::RemoteKms;
use rewrap::kms::{to_json, Kms};
use rewrap::secret::Secret;
use rewrap::server::{self, ServerConfig, ServiceBackend};
use rewrap::service::{Caller, KmsService};
use rewrap::sigv4::Credentials;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn setting(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

struct Fixture {
    _home: tempfile::TempDir,
    service: Arc<KmsService>,
    creds: (String, Secret),
    request: ReEncryptRequest,
}

fn fixture() -> Fixture {
    let home = tempfile::tempdir().unwrap();
    let owner = KmsService::init(home.path()).unwrap();
    let service = KmsService::open(home.path(), None).unwrap();
    let session = service.session(Caller {
        principal: owner.principal_name.clone(),
        ..Default::default()
    });
    let k1 = session
        .create_key(&CreateKeyRequest::default())
        .unwrap()
        .key_metadata;
    let k2 = session
        .create_key(&CreateKeyRequest::default())
        .unwrap()
        .key_metadata;
    let ct = session
        .encrypt(&EncryptRequest {
            key_id: k1.key_id,
            plaintext: Secret::random(32),
            ..Default::default()
        })
        .unwrap();
    Fixture {
        _home: home,
        service,
        creds: (owner.access_key_id, owner.secret_access_key),
        request: ReEncryptRequest {
            ciphertext_blob: ct.ciphertext_blob,
            destination_key_id: k2.key_id,
            ..Default::default()
        },
    }
}

fn client(url: &str, creds: &(String, Secret)) -> Arc<dyn Kms> {
    Arc::new(
        RemoteKms::new(
            url,
            "us-east-1",
            Credentials {
                access_key_id: creds.0.clone(),
                secret_access_key: creds.1.clone(),
                session_token: None,
            },
            None,
        )
        .unwrap(),
    )
}

/// The shipped configuration unless `REWRAP_BENCH_INLINE` says otherwise.
fn inline_operations() -> bool {
    let shipped = u64::from(ServerConfig::default().inline_operations);
    setting("REWRAP_BENCH_INLINE", shipped) == 1
}

/// Starts `rewrap serve` in this process; returns its URL.
fn start_rewrap(rt: &tokio::runtime::Runtime, service: Arc<KmsService>) -> String {
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let config = ServerConfig {
        inline_operations: inline_operations(),
        rotation_check_interval: None,
        ..ServerConfig::default()
    };
    rt.spawn(server::serve(
        listener,
        Arc::new(ServiceBackend(service)),
        config,
        std::future::pending(),
    ));
    format!("http://{addr}/")
}

/// Starts a bare hyper server that answers every request with `body`.
fn start_bare(rt: &tokio::runtime::Runtime, body: Bytes) -> String {
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    rt.spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            let body = body.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |_req| {
                    let body = body.clone();
                    async move {
                        let mut resp = hyper::Response::new(Full::new(body));
                        resp.headers_mut().insert(
                            "content-type",
                            hyper::header::HeaderValue::from_static("application/x-amz-json-1.1"),
                        );
                        Ok::<_, std::convert::Infallible>(resp)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    format!("http://{addr}/")
}

struct Load {
    /// CPU seconds the whole process (clients, servers, audit) used.
    cpu_secs: f64,
    ok: u64,
    errors: u64,
    elapsed: Duration,
    latencies_us: Vec<u64>,
}

/// `threads` clients call ReEncrypt back to back for `duration`.
fn run_load(
    kms: &Arc<dyn Kms>,
    req: &ReEncryptRequest,
    threads: usize,
    duration: Duration,
) -> Load {
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let (started, cpu) = (Instant::now(), cpu_seconds());
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let (kms, req, stop, ok, errors) = (
                kms.clone(),
                req.clone(),
                stop.clone(),
                ok.clone(),
                errors.clone(),
            );
            std::thread::spawn(move || {
                let mut lat = Vec::with_capacity(1 << 16);
                while !stop.load(Ordering::Relaxed) {
                    let t = Instant::now();
                    match kms.re_encrypt(&req) {
                        Ok(_) => {
                            ok.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => {
                            if errors.fetch_add(1, Ordering::Relaxed) < 5 {
                                eprintln!("error: {e}");
                            }
                        }
                    }
                    lat.push(t.elapsed().as_micros() as u64);
                }
                lat
            })
        })
        .collect();
    std::thread::sleep(duration);
    stop.store(true, Ordering::Relaxed);
    let mut latencies_us: Vec<u64> = handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    latencies_us.sort_unstable();
    Load {
        cpu_secs: cpu_seconds() - cpu,
        ok: ok.load(Ordering::Relaxed),
        errors: errors.load(Ordering::Relaxed),
        elapsed: started.elapsed(),
        latencies_us,
    }
}

/// CPU seconds this process has used so far, all threads (user and
/// system, from `/proc/self/stat`, in clock ticks of 10 ms).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    // The fields after the command name (which may hold spaces) in `(...)`.
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    ticks as f64 / 100.0
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i] as f64 / 1000.0
}

/// Encrypts `n` files of 1 KiB under `key` into a fresh folder.
fn sealed_tree(session: &dyn Kms, key: &str, n: usize) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = rewrap::files::EncryptOptions::new(key);
    opts.context.insert("purpose".into(), "app-data".into());
    for i in 0..n {
        let path = dir.path().join(format!("d{}/f{i}", i % 16));
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, vec![b'x'; 1024]).unwrap();
        rewrap::files::encrypt_file(session, &opts, &path, rewrap::files::Output::InPlace).unwrap();
    }
    dir
}

/// Rotates every file under `root` to `to`; returns files/s.
fn rotate_tree(kms: &dyn Kms, root: &std::path::Path, to: &str, jobs: usize, n: usize) -> f64 {
    use rewrap::worker::{self, FileStore, RewrapOptions};
    let mut opts = RewrapOptions::new(to);
    opts.jobs = jobs;
    let items = worker::walk_files(&[root.to_path_buf()], false);
    // Flush what creating the trees left dirty, so the rotation's own group
    // commits are what is measured.
    let _ = std::process::Command::new("sync").status();
    let started = Instant::now();
    let report = worker::rewrap_items(kms, &FileStore::default(), items, &opts).unwrap();
    let secs = started.elapsed().as_secs_f64();
    assert_eq!(
        (report.rotated, report.failed),
        (n as u64, 0),
        "rotation incomplete"
    );
    n as f64 / secs
}

fn main() {
    // `cargo bench` passes `--bench`; any other invocation (e.g. `cargo test
    // --benches`) must not start a minute-long load.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let secs = Duration::from_secs(setting("REWRAP_BENCH_SECS", 5));
    let threads = setting("REWRAP_BENCH_CONCURRENCY", 32) as usize;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let fx = fixture();
    let rewrap_url = start_rewrap(&rt, fx.service.clone());
    let rewrap = client(&rewrap_url, &fx.creds);
    // The bare server answers with a real ReEncrypt response, so the client
    // does the same parsing work against both.
    let sample = to_json(&rewrap.re_encrypt(&fx.request).unwrap()).unwrap();
    let bare_url = start_bare(&rt, Bytes::from(sample.expose().to_vec()));
    let bare = client(&bare_url, &fx.creds);

    let rounds = setting("REWRAP_BENCH_ROUNDS", 3).max(1);
    println!(
        "ReEncrypt over loopback HTTP, {threads} client threads, {rounds} alternating rounds of {secs:?}, \
         inline_operations {} (shipped: {}), durable audit:",
        inline_operations(),
        ServerConfig::default().inline_operations
    );
    let _ = run_load(&bare, &fx.request, threads, Duration::from_millis(500));
    let _ = run_load(&rewrap, &fx.request, threads, Duration::from_millis(500));
    // Alternating rounds, so load from elsewhere on the machine hits both alike.
    let (mut b_ok, mut b_secs, mut r_ok, mut r_secs) = (0u64, 0f64, 0u64, 0f64);
    let (mut b_lat, mut r_lat, mut errors) = (Vec::new(), Vec::new(), 0u64);
    for round in 1..=rounds {
        let b = run_load(&bare, &fx.request, threads, secs);
        let r = run_load(&rewrap, &fx.request, threads, secs);
        let (b_rps, r_rps) = (
            b.ok as f64 / b.elapsed.as_secs_f64(),
            r.ok as f64 / r.elapsed.as_secs_f64(),
        );
        println!(
            "  round {round}: bare {b_rps:>8.0} req/s, rewrap {r_rps:>8.0} req/s, ratio {:.2}; CPU per request {:.0} µs against {:.0} µs",
            r_rps / b_rps,
            r.cpu_secs * 1e6 / r.ok.max(1) as f64,
            b.cpu_secs * 1e6 / b.ok.max(1) as f64,
        );
        (b_ok, b_secs, r_ok, r_secs) = (
            b_ok + b.ok,
            b_secs + b.elapsed.as_secs_f64(),
            r_ok + r.ok,
            r_secs + r.elapsed.as_secs_f64(),
        );
        errors += b.errors + r.errors;
        b_lat.extend(b.latencies_us);
        r_lat.extend(r.latencies_us);
    }
    b_lat.sort_unstable();
    r_lat.sort_unstable();
    let (b_rps, r_rps) = (b_ok as f64 / b_secs, r_ok as f64 / r_secs);
    println!(
        "  bare hyper (fixed response):       {b_rps:>8.0} req/s  p99 {:.2} ms",
        percentile(&b_lat, 0.99)
    );
    println!(
        "  rewrap serve (SigV4+policy+audit): {r_rps:>8.0} req/s  p99 {:.2} ms",
        percentile(&r_lat, 0.99)
    );
    println!(
        "  ratio rewrap / bare: {:.2} (goal >= 0.5), errors {errors}",
        r_rps / b_rps
    );
    let direct: Arc<dyn Kms> = Arc::new(fx.service.session(Caller {
        principal: "owner".into(),
        ..Default::default()
    }));
    let d = run_load(&direct, &fx.request, threads, secs);
    let d_rps = d.ok as f64 / d.elapsed.as_secs_f64();
    println!("  for reference, the service in-process (no HTTP, same threads): {d_rps:>9.0} req/s");

    let files = setting("REWRAP_BENCH_FILES", 2000) as usize;
    let session = fx.service.session(Caller {
        principal: "owner".into(),
        ..Default::default()
    });
    let from = session
        .create_key(&CreateKeyRequest::default())
        .unwrap()
        .key_metadata
        .key_id;
    let to = session
        .create_key(&CreateKeyRequest::default())
        .unwrap()
        .key_metadata
        .key_id;
    let jobs = setting("REWRAP_BENCH_ROTATE_JOBS", 32) as usize;
    println!("Rotation of {files} files of 1 KiB, {jobs} jobs, two rounds in swapped order:");
    let (mut local, mut remote) = (0.0, 0.0);
    for round in 0..2 {
        let local_tree = sealed_tree(&session, &from, files);
        let remote_tree = sealed_tree(&session, &from, files);
        // Alternate which side goes first, so neither gets a warmer cache.
        let (l, r) = if round == 0 {
            let l = rotate_tree(&session, local_tree.path(), &to, jobs, files);
            (
                l,
                rotate_tree(&*rewrap, remote_tree.path(), &to, jobs, files),
            )
        } else {
            let r = rotate_tree(&*rewrap, remote_tree.path(), &to, jobs, files);
            (
                rotate_tree(&session, local_tree.path(), &to, jobs, files),
                r,
            )
        };
        println!(
            "  round {}: embedded {l:>7.0} files/s, remote {r:>7.0} files/s",
            round + 1
        );
        local += l / 2.0;
        remote += r / 2.0;
    }
    println!("  embedded (local session):           {local:>8.0} files/s");
    println!("  remote (RemoteKms -> rewrap serve): {remote:>8.0} files/s");
    println!(
        "  ratio remote / embedded: {:.2} (goal >= 0.3)",
        remote / local
    );

    let clients = setting("REWRAP_BENCH_SUSTAINED_CLIENTS", 64) as usize;
    let sustained = Duration::from_secs(setting("REWRAP_BENCH_SUSTAINED_SECS", 60));
    println!("Sustained ReEncrypt load: {clients} clients for {sustained:?}:");
    let s = run_load(&rewrap, &fx.request, clients, sustained);
    println!(
        "  {} requests, {} errors, {:.0} req/s, latency p50 {:.2} ms  p99 {:.2} ms  max {:.2} ms",
        s.ok,
        s.errors,
        s.ok as f64 / s.elapsed.as_secs_f64(),
        percentile(&s.latencies_us, 0.5),
        percentile(&s.latencies_us, 0.99),
        percentile(&s.latencies_us, 1.0)
    );
    assert_eq!(
        s.errors, 0,
        "well-formed requests failed under sustained load"
    );
}

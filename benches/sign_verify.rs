//! Sign and Verify per second in process (issue 15): the service call, with
//! its policy check, audit record and parsed-key cache, against the bare
//! aws-lc-rs calls in the same run (a key pair of the same spec already
//! parsed; Verify with the same public key, parsed once, and signature).
//! The goal is a ratio of at least 0.7.
//!
//! Both sides run as `rewrap serve` runs a request: on a tokio runtime
//! with its default worker threads (one per core), `REWRAP_BENCH_CALLERS`
//! (256) concurrent tasks each calling back to back, as a server's
//! concurrent requests do. A service call runs inline in its task inside
//! `audit::defer_durability` and awaits its audit record's write and
//! fdatasync before it counts (durable before answered, as the server
//! answers); the concurrent calls share the writes and syncs (group
//! commit). The bare side runs the aws-lc-rs call in the same tasks. Two
//! reference lines follow: 16 blocking threads (the CLI's and the blocking
//! pool's way: each call writes and syncs before it returns) and a single
//! caller, bound by one fdatasync per call.
//!
//! `cargo bench --bench sign_verify` prints one line per operation and
//! spec: `service N/s  bare M/s  ratio R`, then the CPU time per call of
//! each side (the whole process: the audit syncer and sealer threads
//! included), which says how much of the gap is CPU and how much is
//! waiting (with the 2 cores busy, the ratio is at most bare CPU / service
//! CPU). `REWRAP_BENCH_SECONDS` sets the
//! time per measurement (default 2); `REWRAP_BENCH_ONLY` (say
//! `Verify RSA_2048`) runs only the lines whose name contains it, for a
//! profiler.
#![allow(missing_docs)] // reason: a bench binary

/// The allocator the `rewrap` binary ships with (src/main.rs), so the bench
/// measures the shipped configuration.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa;
use aws_lc_rs::signature::{self, KeyPair as _};
use rewrap::api::{CreateKeyRequest, KeyIdRequest, SignRequest, VerifyRequest};
use rewrap::audit::defer_durability;
use rewrap::kms::Kms;
use rewrap::secret::Secret;
use rewrap::service::{Caller, KmsService, LocalSession};
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn setting(name: &str, default: f64) -> f64 {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// Operations per second of `f` called back to back on `threads` threads,
/// after a warm-up.
fn rate(threads: usize, f: impl Fn() + Sync) -> f64 {
    let budget = Duration::from_secs_f64(setting("REWRAP_BENCH_SECONDS", 2.0));
    for _ in 0..20 {
        f();
    }
    let start = Instant::now();
    let total: u64 = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| {
                    let mut n = 0u64;
                    while start.elapsed() < budget {
                        for _ in 0..10 {
                            f();
                        }
                        n += 10;
                    }
                    n
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap()).sum()
    });
    total as f64 / start.elapsed().as_secs_f64()
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

/// CPU microseconds per call of the last [`rate_async`] measurement.
static CPU_PER_CALL: std::sync::Mutex<f64> = std::sync::Mutex::new(0.0);

/// Operations per second of `f` called back to back by `callers` tasks on
/// `runtime`, after a warm-up; a call counts once its audit records are
/// durable (`defer_durability`, then the wait the server makes). Also
/// notes the CPU time per call (all of the process's threads: the audit
/// syncer and sealer included) in [`CPU_PER_CALL`].
fn rate_async(
    runtime: &tokio::runtime::Runtime,
    callers: usize,
    f: impl Fn() + Send + Sync + 'static,
) -> f64 {
    let budget = Duration::from_secs_f64(setting("REWRAP_BENCH_SECONDS", 2.0));
    let f = Arc::new(f);
    runtime.block_on(async {
        for _ in 0..20 {
            let ((), durable) = defer_durability(|| f());
            durable.wait().await.unwrap();
        }
        let (start, cpu) = (Instant::now(), cpu_seconds());
        let tasks: Vec<_> = (0..callers)
            .map(|_| {
                let f = Arc::clone(&f);
                tokio::spawn(async move {
                    let mut n = 0u64;
                    while start.elapsed() < budget {
                        let ((), durable) = defer_durability(|| f());
                        durable.wait().await.unwrap();
                        n += 1;
                    }
                    n
                })
            })
            .collect();
        let mut total = 0;
        for task in tasks {
            total += task.await.unwrap();
        }
        let elapsed = start.elapsed().as_secs_f64();
        *CPU_PER_CALL.lock().unwrap() = (cpu_seconds() - cpu) * 1e6 / total as f64;
        total as f64 / elapsed
    })
}

/// Milliseconds of one 8 KiB append and `fdatasync` of a file in `dir`
/// (the keystore's file system), averaged over half a second: the floor of
/// a durable wait on this disk, now.
fn sync_latency(dir: &std::path::Path) -> f64 {
    use std::io::Write;
    let path = dir.join("sync-latency");
    let mut file = std::fs::File::create(&path).unwrap();
    let (start, mut n) = (Instant::now(), 0u32);
    while start.elapsed() < Duration::from_millis(500) {
        file.write_all(&[b'x'; 8192]).unwrap();
        file.sync_data().unwrap();
        n += 1;
    }
    let ms = start.elapsed().as_secs_f64() * 1000.0 / f64::from(n);
    std::fs::remove_file(&path).unwrap();
    ms
}

/// Whether the line named `what` is to be measured (`REWRAP_BENCH_ONLY`).
fn wanted(what: &str) -> bool {
    std::env::var("REWRAP_BENCH_ONLY").map_or(true, |only| what.contains(&only))
}

/// Prints a line: both rates, their ratio, and the CPU time per call of
/// each side (`service_cpu`, then the last measurement's).
fn report(what: &str, service: f64, bare: f64, service_cpu: f64) {
    println!(
        "{what:<32} service {service:>9.0}/s  bare {bare:>9.0}/s  ratio {:.2}  (CPU per call: service {service_cpu:.1} µs, bare {:.1} µs)",
        service / bare,
        last_cpu()
    );
}

/// CPU microseconds per call of the last [`rate_async`] measurement.
fn last_cpu() -> f64 {
    *CPU_PER_CALL.lock().unwrap()
}

/// A bare signer of the spec: the baseline's key pair, parsed once.
/// Signs a message, returning the signature.
type Signer = Box<dyn Fn(&[u8]) -> Vec<u8> + Send + Sync>;

fn bare_signer(spec: &str) -> Signer {
    let rng = SystemRandom::new();
    if spec == "RSA_2048" {
        let pair = rsa::KeyPair::generate(rsa::KeySize::Rsa2048).unwrap();
        Box::new(move |m| {
            let mut sig = vec![0; pair.public_modulus_len()];
            pair.sign(&signature::RSA_PSS_SHA256, &rng, m, &mut sig)
                .unwrap();
            sig
        })
    } else {
        let pair =
            signature::EcdsaKeyPair::generate(&signature::ECDSA_P256_SHA256_ASN1_SIGNING).unwrap();
        let _ = pair.public_key().as_der().unwrap();
        Box::new(move |m| pair.sign(&rng, m).unwrap().as_ref().to_vec())
    }
}

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("ks");
    KmsService::init(&home).unwrap();
    let service = KmsService::open(&home, None).unwrap();
    let kms = service.session(Caller {
        principal: "owner".into(),
        ..Caller::default()
    });
    let message = Secret::from_slice(&[42u8; 32]);
    let threads = setting("REWRAP_BENCH_THREADS", 16.0) as usize;
    let callers = setting("REWRAP_BENCH_CALLERS", 256.0) as usize;
    // As `rewrap serve` builds its runtime (src/cli/serve.rs).
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let shared = |kms: &LocalSession| Arc::new(kms.clone());
    println!(
        "{callers} concurrent tasks per measurement on the server's runtime, durable audit (as shipped):"
    );
    let cases = [
        ("ECC_NIST_P256", "ECDSA_SHA_256"),
        ("RSA_2048", "RSASSA_PSS_SHA_256"),
    ];
    for (spec, algorithm) in cases {
        let key_id = kms
            .create_key(&CreateKeyRequest {
                key_spec: Some(spec.into()),
                key_usage: Some("SIGN_VERIFY".into()),
                ..Default::default()
            })
            .unwrap()
            .key_metadata
            .key_id;
        let sign = SignRequest {
            key_id: key_id.clone(),
            message: message.clone(),
            message_type: None,
            signing_algorithm: algorithm.into(),
            grant_tokens: None,
        };
        let signature = kms.sign(&sign).unwrap().signature;
        if wanted(&format!("Sign {spec}")) {
            let (k, req) = (shared(&kms), sign.clone());
            let service_sign = rate_async(&runtime, callers, move || {
                black_box(k.sign(black_box(&req)).unwrap());
            });
            let service_cpu = last_cpu();
            let bare: Arc<Signer> = Arc::new(bare_signer(spec));
            let (b, m) = (Arc::clone(&bare), message.clone());
            let bare_sign = rate_async(&runtime, callers, move || {
                black_box(b(black_box(m.expose())));
            });
            report(
                &format!("Sign {spec}"),
                service_sign,
                bare_sign,
                service_cpu,
            );
            let blocking = rate(threads, || {
                black_box(kms.sign(black_box(&sign)).unwrap());
            });
            let bare_blocking = rate(threads, || {
                black_box(bare(black_box(message.expose())));
            });
            let one_caller = rate(1, || {
                black_box(kms.sign(black_box(&sign)).unwrap());
            });
            println!(
            "  ({threads} blocking threads: service {blocking:.0}/s, bare {bare_blocking:.0}/s, ratio {:.2}; one caller: service {one_caller:.0}/s, bound by one fdatasync per call)",
            blocking / bare_blocking
        );
            if spec == "ECC_NIST_P256" {
                // At a fixed number of callers a call's rate is bound by the
                // durable wait (Little's law), so the ratio follows the
                // concurrency and this disk's sync latency, printed beside it.
                let mut line = String::new();
                for tasks in [64, 1024] {
                    let (k, req) = (shared(&kms), sign.clone());
                    let service = rate_async(&runtime, tasks, move || {
                        black_box(k.sign(black_box(&req)).unwrap());
                    });
                    let (b, m) = (Arc::clone(&bare), message.clone());
                    let bare = rate_async(&runtime, tasks, move || {
                        black_box(b(black_box(m.expose())));
                    });
                    line += &format!("{tasks} tasks: ratio {:.2}; ", service / bare);
                }
                println!(
                    "  (other concurrency: {line}this disk: 8 KiB append + fdatasync in {:.3} ms)",
                    sync_latency(dir.path())
                );
            }
        }
        if !wanted(&format!("Verify {spec}")) {
            continue;
        }
        let verify = VerifyRequest {
            key_id: key_id.clone(),
            message: message.clone(),
            message_type: None,
            signature: signature.clone(),
            signing_algorithm: algorithm.into(),
            grant_tokens: None,
        };
        let (k, req) = (shared(&kms), verify.clone());
        let service_verify = rate_async(&runtime, callers, move || {
            black_box(k.verify(black_box(&req)).unwrap());
        });
        let service_cpu = last_cpu();
        let public = kms
            .get_public_key(&KeyIdRequest {
                key_id,
                grant_tokens: None,
            })
            .unwrap()
            .public_key
            .0;
        let alg: &'static dyn signature::VerificationAlgorithm = if spec == "RSA_2048" {
            &signature::RSA_PSS_2048_8192_SHA256
        } else {
            &signature::ECDSA_P256_SHA256_ASN1
        };
        // Parsed once, as the service keeps it parsed (ParsedKeys).
        let key = signature::ParsedPublicKey::new(alg, public).unwrap();
        let (m, sig) = (message.clone(), signature.0.clone());
        let bare_verify = rate_async(&runtime, callers, move || {
            key.verify_sig(black_box(m.expose()), black_box(&sig))
                .unwrap();
        });
        report(
            &format!("Verify {spec}"),
            service_verify,
            bare_verify,
            service_cpu,
        );
    }
}

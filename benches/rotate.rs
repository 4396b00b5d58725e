//! Rotation throughput, each figure against a baseline measured in the same
//! run:
//!
//! 1. rotating N small envelope files (default 100,000; `REWRAP_BENCH_FILES`)
//!    against the same file I/O with no crypto and no KMS: open, read the
//!    header, write the slot bytes back, one `syncfs` at the end, with the
//!    same walker and thread count;
//! 2. re-wrapping a 1 GiB envelope against a 1 KiB one (median of
//!    `REWRAP_BENCH_REPS` single-file rotations each, alternating keys).
//!
//! `cargo bench --bench rotate`. Files go under `REWRAP_BENCH_DIR` (default:
//! a temporary folder). The page cache is warm for every measurement.

/// The allocator the `rewrap` binary ships with (src/main.rs), so the bench
/// measures the shipped configuration.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use rewrap::api::{CreateKeyRequest, PrincipalRequest};
use rewrap::envelope::{ParsedHeader, SLOT_SIZE};
use rewrap::files::EncryptOptions;
use rewrap::kms::Kms;
use rewrap::service::{Caller, KmsService, LocalSession};
use rewrap::worker::{self, FileStore, RewrapOptions};
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

struct Setup {
    temp_dir: Option<tempfile::TempDir>,
    base: PathBuf,
    service: Arc<KmsService>,
    owner: LocalSession,
    rotator: LocalSession,
    keys: [String; 2],
}

fn setup() -> Setup {
    let (dir, base) = if let Some(d) = std::env::var_os("REWRAP_BENCH_DIR") {
        let base = PathBuf::from(d).join(format!("rotate-{}", std::process::id()));
        (None, base)
    } else {
        let d = tempfile::tempdir().unwrap();
        let base = d.path().to_path_buf();
        (Some(d), base)
    };
    let home = base.join("home");
    KmsService::init(&home).unwrap();
    let policies = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("policies");
    let service = KmsService::open(&home, Some(&policies)).unwrap();
    let owner = service.session(Caller {
        principal: "owner".into(),
        ..Default::default()
    });
    owner
        .create_principal(&PrincipalRequest {
            principal_name: "storage-rotator".into(),
        })
        .unwrap();
    let rotator = service.session(Caller {
        principal: "storage-rotator".into(),
        ..Default::default()
    });
    let key = |d: &str| {
        owner
            .create_key(&CreateKeyRequest {
                description: Some(d.into()),
                ..Default::default()
            })
            .unwrap()
            .key_metadata
            .arn
    };
    let keys = [key("a"), key("b")];
    Setup {
        temp_dir: dir,
        base,
        service,
        owner,
        rotator,
        keys,
    }
}

/// Writes `n` small envelopes (100 bytes of plaintext) under `keys[0]`.
fn make_tree(s: &Setup, root: &Path, n: usize) {
    use rayon::prelude::*;
    let opts = EncryptOptions::new(&s.keys[0]);
    for d in 0..n.div_ceil(1000) {
        std::fs::create_dir_all(root.join(format!("{d:04}"))).unwrap();
    }
    (0..n).into_par_iter().for_each(|i| {
        let path = root
            .join(format!("{:04}", i / 1000))
            .join(format!("{i}.rwp"));
        let mut f = std::fs::File::create(&path).unwrap();
        rewrap::files::encrypt_stream(&s.owner, &opts, &mut &[7u8; 100][..], &mut f).unwrap();
    });
    sync(root);
}

fn sync(path: &Path) {
    let f = std::fs::File::open(path).unwrap();
    rustix::fs::syncfs(&f).unwrap();
}

/// The baseline: the same walk, queue (chunks of 64 paths) and threads, per
/// file open + header read + slot write-back, and one syncfs at the end.
fn baseline(root: &Path, jobs: usize) -> (u64, Duration) {
    io_only(root, jobs, false)
}

/// The file I/O of the rotation protocol with no crypto and no KMS: per file
/// open, lock, stat, header read, path check, slot write; per 256 files of
/// a thread one syncfs, the 256 wipes, one more syncfs; then close.
fn protocol_only(root: &Path, jobs: usize) -> (u64, Duration) {
    io_only(root, jobs, true)
}

fn io_only(root: &Path, jobs: usize, protocol: bool) -> (u64, Duration) {
    let start = Instant::now();
    let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<PathBuf>>(16);
    let rx = std::sync::Mutex::new(rx);
    let count = std::sync::atomic::AtomicU64::new(0);
    std::thread::scope(|s| {
        s.spawn(move || {
            let mut chunk = Vec::with_capacity(64);
            for p in worker::walk_files(&[root.to_path_buf()], false).flatten() {
                chunk.push(p);
                if chunk.len() == 64 {
                    tx.send(std::mem::take(&mut chunk)).unwrap();
                }
            }
            if !chunk.is_empty() {
                tx.send(chunk).unwrap();
            }
        });
        for _ in 0..jobs {
            s.spawn(|| {
                let mut held: Vec<(std::fs::File, usize)> = Vec::new();
                // One syncfs, the wipes, one more syncfs.
                let commit = |held: &mut Vec<(std::fs::File, usize)>| {
                    if let Some((first, _)) = held.first() {
                        rustix::fs::syncfs(first).unwrap();
                        for (f, at) in held.iter() {
                            f.write_all_at(&[0u8; SLOT_SIZE], *at as u64).unwrap();
                        }
                        rustix::fs::syncfs(first).unwrap();
                    }
                    held.clear();
                };
                while let Ok(chunk) = rx.lock().unwrap().recv() {
                    for path in chunk {
                        let f = std::fs::OpenOptions::new()
                            .read(true)
                            .write(true)
                            .open(&path)
                            .unwrap();
                        if protocol {
                            f.lock().unwrap();
                            f.metadata().unwrap();
                        }
                        let mut buf = [0u8; 4096];
                        let n = f.read_at(&mut buf, 0).unwrap();
                        let h = ParsedHeader::parse(&buf[..n]).unwrap().header;
                        let at = h.slot_offset(1) as usize;
                        if protocol {
                            std::fs::symlink_metadata(&path).unwrap();
                        }
                        f.write_all_at(&buf[at..at + SLOT_SIZE], at as u64).unwrap();
                        count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        if protocol {
                            held.push((f, at));
                        }
                    }
                    if held.len() >= 256 {
                        commit(&mut held);
                    }
                }
                commit(&mut held);
            });
        }
    });
    sync(root);
    (count.into_inner(), start.elapsed())
}

fn rotation(
    s: &Setup,
    roots: &[PathBuf],
    to: &str,
    jobs: usize,
) -> (worker::RewrapReport, Duration) {
    let start = Instant::now();
    let mut opts = RewrapOptions::new(to);
    opts.jobs = jobs;
    opts.batch = env_usize("REWRAP_BENCH_BATCH", opts.batch);
    let r = worker::rewrap_items(
        &s.rotator,
        &FileStore::default(),
        worker::walk_files(roots, false),
        &opts,
    )
    .unwrap();
    (r, start.elapsed())
}

fn small_files(s: &Setup) {
    let n = env_usize("REWRAP_BENCH_FILES", 100_000);
    let jobs = env_usize("REWRAP_BENCH_JOBS", 4);
    let root = s.base.join("tree");
    let t = Instant::now();
    make_tree(s, &root, n);
    println!("setup: {n} envelopes in {:.1} s", t.elapsed().as_secs_f64());
    let (c1, b1) = baseline(&root, jobs);
    // Before the rotation: it zeroes slot 1, which is empty until then.
    let (cp, bp) = protocol_only(&root, jobs);
    let (r, rt) = rotation(s, std::slice::from_ref(&root), &s.keys[1], jobs);
    let (c2, b2) = baseline(&root, jobs);
    let kms_alone = reencrypt_alone(s, &root, n, jobs);
    assert_eq!((c1, c2, cp), (n as u64, n as u64, n as u64));
    assert_eq!(
        (r.rotated, r.failed),
        (n as u64, 0),
        "{:?}",
        r.failures.first()
    );
    let rate = |c: u64, d: Duration| c as f64 / d.as_secs_f64();
    let base = f64::midpoint(rate(c1, b1), rate(c2, b2));
    println!("rotate {n} small files, {jobs} threads, batch 256, ReEncrypt batch 64:");
    println!(
        "  baseline before  {:>10.0} files/s  ({:.2} s)",
        rate(c1, b1),
        b1.as_secs_f64()
    );
    println!(
        "  protocol I/O     {:>10.0} files/s  ({:.2} s)  (no crypto, no KMS)",
        rate(cp, bp),
        bp.as_secs_f64()
    );
    println!(
        "  rotation         {:>10.0} files/s  ({:.2} s)",
        rate(n as u64, rt),
        rt.as_secs_f64()
    );
    println!(
        "  baseline after   {:>10.0} files/s  ({:.2} s)",
        rate(c2, b2),
        b2.as_secs_f64()
    );
    println!("  (KMS ReEncrypt alone, in process, batches of 64: {kms_alone:>8.0} calls/s)");
    println!(
        "  rotation / baseline = {:.2} (goal >= 0.70)",
        rate(n as u64, rt) / base
    );
    // If the rotation's file I/O cost no more than the baseline's, a file
    // would still cost the baseline's time plus one ReEncrypt.
    println!(
        "  bound with baseline I/O + ReEncrypt alone = {:.2}",
        (1.0 / (1.0 / base + 1.0 / kms_alone)) / base
    );
    println!(
        "  protocol I/O alone / baseline = {:.2}; + ReEncrypt alone = {:.2}",
        rate(cp, bp) / base,
        (1.0 / (1.0 / rate(cp, bp) + 1.0 / kms_alone)) / base
    );
    std::fs::remove_dir_all(&root).unwrap();
}

/// About `n` ReEncrypt calls on one envelope's slot from `jobs` threads, in
/// batches of 64 as the rotation makes them: the KMS share of a rotation.
fn reencrypt_alone(s: &Setup, root: &Path, n: usize, jobs: usize) -> f64 {
    let path = worker::walk_files(&[root.to_path_buf()], false)
        .flatten()
        .next()
        .unwrap();
    let parsed = ParsedHeader::read_from(&mut std::fs::File::open(path).unwrap()).unwrap();
    let (_, slot) = parsed.slots.active().unwrap();
    let req = rewrap::api::ReEncryptRequest {
        ciphertext_blob: rewrap::api::CiphertextBlob(slot.wrapped_key.clone()),
        source_encryption_context: Some(parsed.header.kms_context()),
        destination_key_id: s.keys[0].clone(),
        destination_encryption_context: Some(parsed.header.kms_context()),
        ..Default::default()
    };
    // As the rotation calls it: batches of 64 (one audit group commit each).
    let batch = vec![req; 64];
    let rounds = (n / jobs).div_ceil(batch.len());
    let start = Instant::now();
    std::thread::scope(|sc| {
        for _ in 0..jobs {
            sc.spawn(|| {
                for _ in 0..rounds {
                    for r in s.rotator.re_encrypt_many(&batch) {
                        r.unwrap();
                    }
                }
            });
        }
    });
    (jobs * rounds * batch.len()) as f64 / start.elapsed().as_secs_f64()
}

/// An endless pseudo-random reader, `len` bytes long.
struct Noise {
    left: u64,
    x: u64,
}

impl Read for Noise {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = (buf.len() as u64).min(self.left) as usize;
        for b in buf[..n].chunks_mut(8) {
            self.x ^= self.x << 13;
            self.x ^= self.x >> 7;
            self.x ^= self.x << 17;
            b.copy_from_slice(&self.x.to_le_bytes()[..b.len()]);
        }
        self.left -= n as u64;
        Ok(n)
    }
}

fn big_vs_small(s: &Setup) {
    let reps = env_usize("REWRAP_BENCH_REPS", 15);
    let opts = EncryptOptions::new(&s.keys[0]);
    let mut medians = Vec::new();
    for (name, len) in [("1 KiB", 1u64 << 10), ("1 GiB", 1u64 << 30)] {
        let path = s.base.join(format!("one-{len}.rwp"));
        let mut f = std::fs::File::create(&path).unwrap();
        let mut noise = Noise { left: len, x: 1 };
        rewrap::files::encrypt_stream(&s.owner, &opts, &mut noise, &mut f).unwrap();
        f.sync_all().unwrap();
        let mut times = Vec::new();
        for i in 0..reps {
            let to = &s.keys[(i + 1) % 2];
            let (r, t) = rotation(s, std::slice::from_ref(&path), to, 1);
            assert_eq!(r.rotated, 1, "{:?}", r.failures);
            times.push(t);
        }
        times.sort();
        let median = times[reps / 2];
        println!(
            "re-wrap one {name} envelope: median {:.3} ms, min {:.3} ms ({reps} runs)",
            median.as_secs_f64() * 1e3,
            times[0].as_secs_f64() * 1e3
        );
        medians.push(median);
        std::fs::remove_file(&path).unwrap();
    }
    println!(
        "  1 GiB / 1 KiB = {:.2} (goal <= 2)",
        medians[1].as_secs_f64() / medians[0].as_secs_f64()
    );
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` does not run us.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let s = setup();
    small_files(&s);
    big_vs_small(&s);
    drop(s.service);
    if s.temp_dir.is_none() {
        let _ = std::fs::remove_dir_all(&s.base);
    }
}

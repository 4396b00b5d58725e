//! Tree encryption and decryption (`encrypt-file -r`, `decrypt-file -r`)
//! against a same-run baseline that only copies: each file copied to a
//! temporary file beside its destination, one `syncfs` per batch, then
//! renamed into place, on as many threads. Both write crash-safely the same
//! way; the ratio is what encryption (a data key per file from the
//! in-process KMS, AES-GCM, the envelope header, its audit record) or
//! decryption (a Decrypt per file whose audit record is made durable before
//! the plaintext is staged, AES-GCM) costs on top of the copy. The
//! decryption's baseline copies the envelopes it decrypts.
//!
//! `cargo bench --bench tree_files`. Two shapes:
//! - `REWRAP_BENCH_FILES` (default 10,000) files of 1 KiB;
//! - one file of `REWRAP_BENCH_BYTES` (default 1 GiB), also against `cp`
//!   (page cache only) and `cp` + `sync FILE` (an fsync of the copy, timed
//!   together: as durable as rewrap's output), both copying the envelope
//!   (its size is the plaintext's + 0.02 %).
//!
//! The rewrap figures run [`rewrap::worker::transform_tree`] with the
//! options the CLI gives it (`encrypt-file -r SRC -o DST`, `decrypt-file -r
//! ENVELOPES -o DST`: default jobs and batch) and the allocator the binary
//! ships with. Best of `REWRAP_BENCH_REPS` (default 3); warm page cache;
//! folder `REWRAP_BENCH_DIR` (default: a temporary folder). Goal: ratio
//! >= 0.7 for both shapes.

/// The allocator the `rewrap` binary ships with (src/main.rs).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use rewrap::api::CreateKeyRequest;
use rewrap::files::{DecryptOptions, EncryptOptions};
use rewrap::kms::Kms;
use rewrap::service::{Caller, KmsService};
use rewrap::worker::{transform_tree, TreeOp, TreeOptions, DEFAULT_TREE_BATCH};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let base = std::env::var_os("REWRAP_BENCH_DIR")
        .map_or_else(|| tmp.path().to_path_buf(), PathBuf::from);
    std::fs::create_dir_all(&base).unwrap();
    let files = env_u64("REWRAP_BENCH_FILES", 10_000) as usize;
    let size = env_u64("REWRAP_BENCH_BYTES", 1 << 30);
    let reps = env_u64("REWRAP_BENCH_REPS", 3) as usize;

    let home = base.join("home");
    let _ = std::fs::remove_dir_all(&home);
    KmsService::init(&home).unwrap();
    let service = KmsService::open(&home, None).unwrap();
    let kms = service.session(Caller {
        principal: "owner".into(),
        ..Default::default()
    });
    let key = kms
        .create_key(&CreateKeyRequest::default())
        .unwrap()
        .key_metadata
        .arn;
    let enc = TreeOp::Encrypt(EncryptOptions::new(&key));
    let dec = TreeOp::Decrypt(DecryptOptions::default());
    let sealed = base.join("sealed");

    // Many small files.
    let small = base.join("small");
    for i in 0..files {
        let dir = small.join(format!("{:02}", i % 64));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("{i}")), noise(1024, i as u64)).unwrap();
    }
    let (enc_ours, enc_copy) = contest(&base, &small, reps, &kms, &enc);
    seal(&kms, &enc, &small, &sealed);
    let (dec_ours, dec_copy) = contest(&base, &sealed, reps, &kms, &dec);
    let n = files as f64;
    println!("{files} files of 1 KiB, to another folder (best of {reps}, warm cache):");
    report(
        n,
        "files",
        &[
            ("copy + rename, syncfs/batch", enc_copy),
            ("rewrap encrypt-file -r", enc_ours),
            ("copy envelopes, syncfs/batch", dec_copy),
            ("rewrap decrypt-file -r", dec_ours),
        ],
    );
    ratio("encrypt / copy", enc_copy, enc_ours);
    ratio("decrypt / copy of the envelopes", dec_copy, dec_ours);
    std::fs::remove_dir_all(&small).unwrap();
    std::fs::remove_dir_all(&sealed).unwrap();

    // One large file.
    let large = base.join("large");
    std::fs::create_dir_all(&large).unwrap();
    let src = large.join("plain.bin");
    write_noise(&src, size);
    let (enc_ours, enc_copy) = contest(&base, &large, reps, &kms, &enc);
    seal(&kms, &enc, &large, &sealed);
    std::fs::remove_dir_all(&large).unwrap();
    let envelope = sealed.join("plain.bin");
    let (dec_ours, dec_copy) = contest(&base, &sealed, reps, &kms, &dec);
    let out = base.join("cp.out");
    let cp = best(reps, || time_cp(&envelope, &out, false));
    let cp_sync = best(reps, || time_cp(&envelope, &out, true));
    let _ = std::fs::remove_file(&out);
    let mib = size as f64 / f64::from(1 << 20);
    println!("one file of {mib:.0} MiB, to another folder (best of {reps}, warm cache):");
    report(
        mib,
        "MiB",
        &[
            ("cp (page cache, no fsync)", cp),
            ("cp + sync FILE (durable)", cp_sync),
            ("copy + rename, syncfs", enc_copy),
            ("rewrap encrypt-file -r", enc_ours),
            ("copy envelope + rename, syncfs", dec_copy),
            ("rewrap decrypt-file -r", dec_ours),
        ],
    );
    ratio("encrypt / cp", cp, enc_ours);
    ratio("encrypt / cp + sync", cp_sync, enc_ours);
    ratio("encrypt / copy + syncfs", enc_copy, enc_ours);
    ratio("decrypt / cp", cp, dec_ours);
    ratio("decrypt / cp + sync", cp_sync, dec_ours);
    ratio("decrypt / copy + syncfs", dec_copy, dec_ours);
}

/// Prints the throughput ratio of `ours` to `baseline` (times given).
fn ratio(what: &str, baseline: Duration, ours: Duration) {
    println!(
        "  ratio {what:<32} {:.2} (goal >= 0.7)",
        baseline.as_secs_f64() / ours.as_secs_f64()
    );
}

/// The time of `cp SRC DST` (over no file), followed by `sync DST` (an
/// fsync of the copy) when `durable`.
fn time_cp(src: &Path, dst: &Path, durable: bool) -> Duration {
    let _ = std::fs::remove_file(dst);
    let t = Instant::now();
    let run = |cmd: &mut Command| assert!(cmd.status().unwrap().success());
    run(Command::new("cp").arg(src).arg(dst));
    if durable {
        run(Command::new("sync").arg(dst));
    }
    t.elapsed()
}

/// Encrypts the tree `src` into a fresh `sealed` (untimed): the envelopes
/// the decryption reads.
fn seal(kms: &dyn Kms, enc: &TreeOp, src: &Path, sealed: &Path) {
    let _ = std::fs::remove_dir_all(sealed);
    std::fs::create_dir_all(sealed).unwrap();
    let r = transform_tree(kms, enc, src, Some(sealed), &TreeOptions::default());
    assert!(r.failed.is_empty(), "{:?}", r.failed.first());
}

/// One line per `(what, time)`: `n` `unit`s in that time.
fn report(n: f64, unit: &str, rows: &[(&str, Duration)]) {
    for (what, d) in rows {
        println!(
            "  {what:<30} {:>10.0} {unit}/s  {:.3} s",
            n / d.as_secs_f64(),
            d.as_secs_f64()
        );
    }
}

/// Best times of rewrap's tree encryption or decryption (`op`) and of the
/// copying baseline, from `src` into a fresh folder each time, interleaved.
fn contest(
    base: &Path,
    src: &Path,
    reps: usize,
    kms: &dyn Kms,
    op: &TreeOp,
) -> (Duration, Duration) {
    let dst = base.join("out");
    let fresh = || {
        let _ = std::fs::remove_dir_all(&dst);
        std::fs::create_dir_all(&dst).unwrap();
    };
    let (mut ours, mut copy) = (Duration::MAX, Duration::MAX);
    for _ in 0..reps {
        fresh();
        let t = Instant::now();
        let r = transform_tree(kms, op, src, Some(&dst), &TreeOptions::default());
        ours = ours.min(t.elapsed());
        assert!(r.failed.is_empty(), "{:?}", r.failed.first());
        assert_eq!(r.skipped, 0, "every file is transformed");
        fresh();
        let t = Instant::now();
        copy_tree(src, &dst);
        copy = copy.min(t.elapsed());
    }
    let _ = std::fs::remove_dir_all(&dst);
    (ours, copy)
}

/// The baseline: every file of `src` copied to a temporary file beside
/// its destination under `out_root`, on one thread per core (as the tree
/// encryption runs), one `syncfs` per batch of `DEFAULT_TREE_BATCH`, then
/// renamed into place, then one more `syncfs`.
fn copy_tree(src: &Path, out_root: &Path) {
    let files: Vec<PathBuf> = walkdir::WalkDir::new(src)
        .into_iter()
        .map(Result::unwrap)
        .filter(|e| e.file_type().is_file())
        .map(walkdir::DirEntry::into_path)
        .collect();
    let jobs = std::thread::available_parallelism().map_or(2, std::num::NonZero::get);
    let next = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..jobs {
            s.spawn(|| {
                let mut batch = Vec::new();
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some(path) = files.get(i) else { break };
                    let dest = out_root.join(path.strip_prefix(src).unwrap());
                    let dir = dest.parent().unwrap();
                    std::fs::create_dir_all(dir).unwrap();
                    let mut tmp = tempfile::Builder::new()
                        .prefix(".rewrap-tmp-")
                        .tempfile_in(dir)
                        .unwrap();
                    std::io::copy(&mut std::fs::File::open(path).unwrap(), tmp.as_file_mut())
                        .unwrap();
                    batch.push((tmp, dest));
                    if batch.len() >= DEFAULT_TREE_BATCH {
                        commit(std::mem::take(&mut batch));
                    }
                }
                commit(batch);
            });
        }
    });
}

fn commit(batch: Vec<(tempfile::NamedTempFile, PathBuf)>) {
    let Some((first, _)) = batch.first() else {
        return;
    };
    rustix::fs::syncfs(first.as_file()).unwrap();
    let mut last = None;
    for (tmp, dest) in batch {
        last = Some(tmp.persist(&dest).unwrap());
    }
    rustix::fs::syncfs(last.as_ref().unwrap()).unwrap();
}

fn best(reps: usize, mut f: impl FnMut() -> Duration) -> Duration {
    (0..reps).map(|_| f()).min().unwrap()
}

fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn write_noise(path: &Path, size: u64) {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let block = noise(1 << 20, 42);
    let mut left = size;
    while left > 0 {
        let n = left.min(block.len() as u64) as usize;
        f.write_all(&block[..n]).unwrap();
        left -= n as u64;
    }
    f.flush().unwrap();
}

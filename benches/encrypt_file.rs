//! Encrypting a 1 GiB file, against `cp` and `age` on the same file in the
//! same run, with the peak memory of each rewrap process.
//!
//! `cargo bench --bench encrypt_file`. The size is `REWRAP_BENCH_BYTES`
//! (default 1 GiB), the folder `REWRAP_BENCH_DIR` (default: a temporary
//! folder), repetitions `REWRAP_BENCH_REPS` (best of, default 3). The page
//! cache is warm; outputs are not fsynced by cp, age or the "stream"
//! rewrap figure (the crash-safe `encrypt_file` figure includes the fsync).
//!
//! Each rewrap measurement runs in a fresh child process (this binary with
//! `--child`), which reports its wall time and peak RSS (VmHWM).

/// The allocator the `rewrap` binary ships with (src/main.rs), so the bench
/// measures the shipped configuration.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use rewrap::api::CreateKeyRequest;
use rewrap::files::{DecryptOptions, EncryptOptions, Output};
use rewrap::kms::Kms;
use rewrap::service::{Caller, KmsService};
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
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--child") {
        child(&args[2..]);
        return;
    }
    if !args.iter().any(|a| a == "--bench") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let base = std::env::var_os("REWRAP_BENCH_DIR")
        .map_or_else(|| tmp.path().to_path_buf(), PathBuf::from);
    std::fs::create_dir_all(&base).unwrap();
    let size = env_u64("REWRAP_BENCH_BYTES", 1 << 30);
    let reps = env_u64("REWRAP_BENCH_REPS", 3) as usize;
    let src = base.join("plain.bin");
    write_noise(&src, size);
    let home = base.join("home");
    let _ = std::fs::remove_dir_all(&home);
    KmsService::init(&home).unwrap();
    let service = KmsService::open(&home, None).unwrap();
    let owner = service.session(Caller {
        principal: "owner".into(),
        ..Default::default()
    });
    let key = owner
        .create_key(&CreateKeyRequest::default())
        .unwrap()
        .key_metadata
        .arn;
    drop(owner);
    drop(service);
    let out = base.join("out.bin");
    let mib = size as f64 / f64::from(1 << 20);
    let rate = |d: Duration| mib / d.as_secs_f64();
    // Read the source once so every contender starts with a warm cache.
    std::io::copy(
        &mut std::fs::File::open(&src).unwrap(),
        &mut std::io::sink(),
    )
    .unwrap();

    let cp = best(
        reps,
        || {
            let mut c = Command::new("cp");
            c.arg(&src).arg(&out);
            timed_cmd(c)
        },
        &out,
    );
    let age = age_cmd(&base, &src, &out).map(|mut c| best(reps, || timed_cmd(c()), &out));
    let child = |mode: &str| {
        let mut c = Command::new(std::env::current_exe().unwrap());
        c.args(["--child", mode])
            .arg(&home)
            .arg(&key)
            .arg(&src)
            .arg(&out);
        c
    };
    let mut rss = Vec::new();
    let stream = best(reps, || run_child(child("stream"), &mut rss), &out);
    let safe = best(reps, || run_child(child("file"), &mut rss), &out);
    // Decrypt (to a temporary file, verified, fsynced, renamed).
    run_child(child("stream"), &mut Vec::new());
    let enc = base.join("sealed.bin");
    std::fs::rename(&out, &enc).unwrap();
    let mut drss = Vec::new();
    let dec = best(
        reps,
        || {
            let mut c = Command::new(std::env::current_exe().unwrap());
            c.args(["--child", "decrypt"])
                .arg(&home)
                .arg(&key)
                .arg(&enc)
                .arg(&out);
            run_child(c, &mut drss)
        },
        &out,
    );
    println!("encrypt a {mib:.0} MiB file (best of {reps}, warm cache):");
    println!(
        "  cp                         {:>8.0} MiB/s  {:.2} s",
        rate(cp),
        cp.as_secs_f64()
    );
    match age {
        Some(a) => println!(
            "  age -r (X25519)            {:>8.0} MiB/s  {:.2} s",
            rate(a),
            a.as_secs_f64()
        ),
        None => println!("  age                        not installed (apt-get install -y age)"),
    }
    println!(
        "  rewrap stream, no fsync    {:>8.0} MiB/s  {:.2} s",
        rate(stream),
        stream.as_secs_f64()
    );
    println!(
        "  rewrap encrypt_file+fsync  {:>8.0} MiB/s  {:.2} s",
        rate(safe),
        safe.as_secs_f64()
    );
    println!(
        "  rewrap decrypt_file+fsync  {:>8.0} MiB/s  {:.2} s",
        rate(dec),
        dec.as_secs_f64()
    );
    println!(
        "  rewrap stream / cp time = {:.2} (goal <= 1.5)",
        stream.as_secs_f64() / cp.as_secs_f64()
    );
    if let Some(a) = age {
        println!(
            "  rewrap stream / age time = {:.2} (goal <= 1.0)",
            stream.as_secs_f64() / a.as_secs_f64()
        );
    }
    println!(
        "  peak RSS of a rewrap process: encrypt {} KiB, decrypt {} KiB (goal < 65536)",
        rss.iter().max().unwrap_or(&0),
        drss.iter().max().unwrap_or(&0)
    );
    let _ = std::fs::remove_file(&enc);
    let _ = std::fs::remove_file(&src);
}

fn best(reps: usize, mut f: impl FnMut() -> Duration, out: &Path) -> Duration {
    (0..reps)
        .map(|_| {
            let d = f();
            let _ = std::fs::remove_file(out);
            d
        })
        .min()
        .unwrap()
}

fn timed_cmd(mut c: Command) -> Duration {
    let t = Instant::now();
    let s = c.status().unwrap();
    assert!(s.success(), "{c:?} failed");
    t.elapsed()
}

/// A closure building the age command, after generating a recipient.
fn age_cmd(base: &Path, src: &Path, out: &Path) -> Option<impl FnMut() -> Command> {
    let key = base.join("age-key.txt");
    let _ = std::fs::remove_file(&key);
    let ok = Command::new("age-keygen")
        .arg("-o")
        .arg(&key)
        .output()
        .ok()?;
    if !ok.status.success() {
        return None;
    }
    let pubkey = Command::new("age-keygen")
        .arg("-y")
        .arg(&key)
        .output()
        .ok()?;
    let recipient = String::from_utf8(pubkey.stdout).ok()?.trim().to_string();
    let (src, out) = (src.to_path_buf(), out.to_path_buf());
    Some(move || {
        let mut c = Command::new("age");
        c.arg("-r").arg(&recipient).arg("-o").arg(&out).arg(&src);
        c
    })
}

/// Runs a child measurement; returns its wall time from spawn to exit (as
/// for cp and age: process start-up and keystore open included) and
/// records its peak RSS.
fn run_child(mut c: Command, rss: &mut Vec<u64>) -> Duration {
    let t = Instant::now();
    let out = c.output().unwrap();
    let wall = t.elapsed();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let mut it = text.split_whitespace();
    let _inner_nanos: u64 = it.next().unwrap().parse().unwrap();
    rss.push(it.next().unwrap().parse().unwrap());
    wall
}

fn child(args: &[String]) {
    let (mode, home, key, src, dst) = (
        args[0].as_str(),
        Path::new(&args[1]),
        &args[2],
        Path::new(&args[3]),
        Path::new(&args[4]),
    );
    let service = KmsService::open(home, None).unwrap();
    let kms = service.session(Caller {
        principal: "owner".into(),
        ..Default::default()
    });
    let opts = EncryptOptions::new(key.as_str());
    let t = Instant::now();
    match mode {
        "stream" => {
            let mut i = std::fs::File::open(src).unwrap();
            let mut o = std::fs::File::create(dst).unwrap();
            rewrap::files::encrypt_stream(&kms, &opts, &mut i, &mut o).unwrap();
        }
        "file" => {
            rewrap::files::encrypt_file(&kms, &opts, src, Output::To(dst)).unwrap();
        }
        _ => {
            rewrap::files::decrypt_file(&kms, &DecryptOptions::default(), src, Output::To(dst))
                .unwrap();
        }
    }
    let elapsed = t.elapsed();
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let hwm = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .unwrap_or("0");
    println!("{} {hwm}", elapsed.as_nanos());
}

fn write_noise(path: &Path, size: u64) {
    if std::fs::metadata(path).is_ok_and(|m| m.len() == size) {
        return;
    }
    let mut f = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(path).unwrap());
    let mut x = 0x1234_5678_9abc_def1u64;
    let mut block = vec![0u8; 1 << 20];
    let mut left = size;
    while left > 0 {
        for b in block.chunks_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            b.copy_from_slice(&x.to_le_bytes()[..b.len()]);
        }
        let n = left.min(block.len() as u64) as usize;
        f.write_all(&block[..n]).unwrap();
        left -= n as u64;
    }
    f.flush().unwrap();
}

//! Keys in a custom key store (a SoftHSM2 token in a temporary folder).
//!
//! 1. ReEncrypt of a 32-byte data key from an HSM key to itself, in process
//!    (policy check and audit record included), against a same-run baseline
//!    that calls `C_Decrypt` then `C_Encrypt` (AES-GCM, same token, same
//!    payload, one session per thread) directly through `cryptoki` on the
//!    token object, and a second baseline that does the same on a
//!    session-object copy of the key (as rewrap's token does). All
//!    with the same number of threads: `REWRAP_BENCH_THREADS` (32), as
//!    `rewrap serve` runs a custom-key-store operation on its blocking pool,
//!    one thread per request in flight (32 concurrent requests). Each
//!    ReEncrypt waits for its durable audit record, and the concurrent
//!    ones share the sync (group commit). Goal: >= 0.7.
//! 2. `rewrap rotate` of an envelope tree from a file-backed key to an HSM
//!    key, files/s, beside the same rotation onto another file-backed key.
//!
//! `cargo bench --bench hsm` (needs Debian's softhsm2).
#![allow(missing_docs)] // reason: a bench binary
#![allow(clippy::unwrap_used)] // reason: a bench binary fails loudly

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, ObjectClass};
use cryptoki::session::UserType;
use cryptoki::types::AuthPin;
use rewrap::api::{
    CreateCustomKeyStoreRequest, CreateKeyRequest, CustomKeyStoreIdRequest, GenerateDataKeyRequest,
    ReEncryptRequest,
};
use rewrap::kms::Kms;
use rewrap::service::{Caller, KmsService};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

const MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";
const PIN: &str = "bench-user-pin";
const LABEL: &str = "rewrap-bench";
const RUN: Duration = Duration::from_secs(3);

/// A SoftHSM2 token in `dir`; sets `SOFTHSM2_CONF` for this process (before
/// anything loads the module) and for the `rewrap` children.
fn token(dir: &Path) {
    let tokens = dir.join("tokens");
    std::fs::create_dir(&tokens).unwrap();
    let conf = dir.join("softhsm2.conf");
    std::fs::write(
        &conf,
        format!(
            "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
            tokens.display()
        ),
    )
    .unwrap();
    std::env::set_var("SOFTHSM2_CONF", &conf);
    let ok = Command::new("softhsm2-util")
        .args(["--init-token", "--free", "--label", LABEL])
        .args(["--so-pin", "bench-so-pin", "--pin", PIN])
        .output()
        .unwrap()
        .status
        .success();
    assert!(ok, "softhsm2-util --init-token failed");
    std::fs::write(dir.join("pin"), PIN).unwrap();
}

/// Runs `op` on `threads` threads for [`RUN`]; operations per second.
fn throughput(threads: usize, op: impl Fn() + Sync) -> f64 {
    let stop = AtomicBool::new(false);
    let done = AtomicU64::new(0);
    let start = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    op();
                    n += 1;
                }
                done.fetch_add(n, Ordering::Relaxed);
            });
        }
        std::thread::sleep(RUN);
        stop.store(true, Ordering::Relaxed);
    });
    done.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64()
}

fn main() {
    let dir = tempfile::tempdir().unwrap();
    token(dir.path());
    let home = dir.path().join("ks");
    let owner = KmsService::init(&home).unwrap();
    let service = KmsService::open(&home, None).unwrap();
    let kms = service.session(Caller {
        principal: "owner".into(),
        ..Caller::default()
    });
    let store = kms
        .create_custom_key_store(&CreateCustomKeyStoreRequest {
            custom_key_store_name: "bench".into(),
            pkcs11_module_path: Some(MODULE.into()),
            token_label: Some(LABEL.into()),
            pin_source: Some(format!("file:{}", dir.path().join("pin").display())),
            ..Default::default()
        })
        .unwrap()
        .custom_key_store_id;
    kms.connect_custom_key_store(&CustomKeyStoreIdRequest {
        custom_key_store_id: store.clone(),
    })
    .unwrap();
    let hsm_key = kms
        .create_key(&CreateKeyRequest {
            origin: Some("AWS_CLOUDHSM".into()),
            custom_key_store_id: Some(store.clone()),
            ..Default::default()
        })
        .unwrap()
        .key_metadata
        .key_id;
    let blob = kms
        .generate_data_key(&GenerateDataKeyRequest {
            key_id: hsm_key.clone(),
            key_spec: Some("AES_256".into()),
            ..Default::default()
        })
        .unwrap()
        .ciphertext_blob;

    // The baseline: the same token object through cryptoki, no rewrap.
    let pkcs11 = Pkcs11::new(MODULE).unwrap();
    let _ = pkcs11.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK));
    let slot = pkcs11
        .get_slots_with_token()
        .unwrap()
        .into_iter()
        .find(|s| pkcs11.get_token_info(*s).unwrap().label().trim_end() == LABEL)
        .unwrap();
    let label = format!("rewrap/{hsm_key}/v1");
    let threads = std::env::var("REWRAP_BENCH_THREADS")
        .ok()
        .and_then(|t| t.parse().ok())
        .unwrap_or(32);
    let header = &blob.0[..34];
    let sealed = &blob.0[34..];
    // The key as a session object (`C_CopyObject`, `CKA_TOKEN=false`), as
    // rewrap's token uses it; made by a session that lives to the end.
    let copier = pkcs11.open_rw_session(slot).unwrap();
    let _ = copier.login(UserType::User, Some(&AuthPin::new(PIN.into())));
    let token_key = copier
        .find_objects(&[
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::Token(true),
            Attribute::Label(label.as_bytes().to_vec()),
        ])
        .unwrap()[0];
    let session_key = copier
        .copy_object(token_key, &[Attribute::Token(false)])
        .unwrap();
    let baseline = |key: cryptoki::object::ObjectHandle| {
        thread_local! {
            static SESSION: std::cell::RefCell<Option<cryptoki::session::Session>> =
                const { std::cell::RefCell::new(None) };
        }
        SESSION.with(|cell| {
            let mut cell = cell.borrow_mut();
            let session = cell.get_or_insert_with(|| {
                let s = pkcs11.open_rw_session(slot).unwrap();
                let _ = s.login(UserType::User, Some(&AuthPin::new(PIN.into())));
                s
            });
            let mut aad = header.to_vec();
            aad.extend_from_slice(&[0, 0]); // the empty encryption context
            let mut iv: [u8; 12] = header[22..34].try_into().unwrap();
            let params = GcmParams::new(&mut iv, &aad, 128.into()).unwrap();
            let plain = session
                .decrypt(&Mechanism::AesGcm(params), key, sealed)
                .unwrap();
            let mut iv: [u8; 12] = rand::random();
            let params = GcmParams::new(&mut iv, &aad, 128.into()).unwrap();
            std::hint::black_box(
                session
                    .encrypt(&Mechanism::AesGcm(params), key, &plain)
                    .unwrap(),
            );
        });
    };
    let re_encrypt = || {
        let r = kms
            .re_encrypt(&ReEncryptRequest {
                ciphertext_blob: blob.clone(),
                destination_key_id: hsm_key.clone(),
                ..Default::default()
            })
            .unwrap();
        std::hint::black_box(r);
    };
    // Alternate, so drift in the machine's load hits every side.
    let (mut base, mut base_copy, mut ours) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..2 {
        base.push(throughput(threads, || baseline(token_key)));
        base_copy.push(throughput(threads, || baseline(session_key)));
        ours.push(throughput(threads, re_encrypt));
    }
    let best = |v: &[f64]| v.iter().copied().fold(0.0, f64::max);
    let (b, c, o) = (best(&base), best(&base_copy), best(&ours));
    println!(
        "hsm/re_encrypt ({threads} threads): rewrap ReEncrypt {o:.0}/s, cryptoki C_Decrypt+C_Encrypt {b:.0}/s, ratio {:.2} (goal >= 0.7)",
        o / b
    );
    println!(
        "hsm/re_encrypt ({threads} threads): against cryptoki on a session-object copy of the key (what rewrap uses) {c:.0}/s, ratio {:.2}",
        o / c
    );

    tree_rotation(dir.path(), &home, &owner, &hsm_key, &kms);
}

/// `rewrap rotate` of a tree from a file key onto an HSM key, and onto a
/// second file key, files/s.
fn tree_rotation(
    dir: &Path,
    home: &Path,
    owner: &rewrap::api::AccessKeyResponse,
    hsm_key: &str,
    kms: &rewrap::service::LocalSession,
) {
    const FILES: usize = 2000;
    let bin = env!("CARGO_BIN_EXE_rewrap");
    let secret = String::from_utf8(owner.secret_access_key.expose().to_vec()).unwrap();
    let rewrap = || {
        let mut c = Command::new(bin);
        c.env("REWRAP_HOME", home)
            .env("REWRAP_ACCESS_KEY_ID", &owner.access_key_id)
            .env("REWRAP_SECRET_ACCESS_KEY", &secret);
        c
    };
    let new_key = || {
        kms.create_key(&CreateKeyRequest::default())
            .unwrap()
            .key_metadata
            .key_id
    };
    let mut rates = Vec::new();
    for (name, to) in [
        ("file key -> file key", new_key()),
        ("file key -> HSM key", hsm_key.to_string()),
    ] {
        let from = new_key();
        let tree = dir.join(format!("tree-{}", rates.len()));
        std::fs::create_dir(&tree).unwrap();
        for i in 0..FILES {
            std::fs::write(tree.join(format!("f{i:05}")), [i as u8; 256]).unwrap();
        }
        let ok = rewrap()
            .args([
                "encrypt-file",
                "--key-id",
                &from,
                "--recursive",
                "--in-place",
                "--no-progress",
            ])
            .arg(&tree)
            .output()
            .unwrap()
            .status
            .success();
        assert!(ok, "encrypt-file failed");
        let start = Instant::now();
        let out = rewrap()
            .args(["rotate", "--to", &to, "--no-progress"])
            .arg(&tree)
            .output()
            .unwrap();
        let secs = start.elapsed().as_secs_f64();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let rate = FILES as f64 / secs;
        println!("hsm/tree_rotation {name}: {FILES} files in {secs:.2} s, {rate:.0} files/s");
        rates.push(rate);
    }
    println!(
        "hsm/tree_rotation: HSM target at {:.2} of the file-key target's files/s",
        rates[1] / rates[0]
    );
}

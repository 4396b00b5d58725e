//! Crash safety of `rewrap rotate` as a real process: it is killed with
//! SIGKILL at many random moments over a tree; after every kill each file
//! still decrypts to its original bytes, and a final run finishes the job.

mod support;

use rewrap::envelope::{ParsedHeader, SlotState};
use rewrap::kms::Kms;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use support::library::*;

const FILES: usize = 1200;
const KILLS: usize = 16;

struct Fixture {
    env: Env,
    keys: [String; 2],
    root: PathBuf,
    plain: Vec<(PathBuf, Vec<u8>)>,
    rotator_id: String,
    rotator_secret: String,
}

fn fixture() -> Fixture {
    let env = Env::new();
    let keys = [env.key("a"), env.key("b")];
    let writer = env.principal("app-writer");
    env.principal("app-reader");
    let creds = env
        .owner
        .create_principal(&rewrap::api::PrincipalRequest {
            principal_name: "storage-rotator".into(),
        })
        .unwrap();
    let root = env.path("tree");
    let mut plain = Vec::new();
    for i in 0..FILES {
        let dir = root.join(format!("{}", i % 7));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("{i}.rwp"));
        let data = bytes(i * 13 % 3000, i as u64);
        let mut f = std::fs::File::create(&path).unwrap();
        rewrap::files::encrypt_stream(&writer, &app_opts(&keys[0]), &mut &data[..], &mut f)
            .unwrap();
        plain.push((path, data));
    }
    Fixture {
        env,
        keys,
        root,
        plain,
        rotator_id: creds.access_key_id,
        rotator_secret: String::from_utf8(creds.secret_access_key.expose().to_vec()).unwrap(),
    }
}

impl Fixture {
    fn rotate_cmd(&self, to: &str) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_rewrap"));
        c.arg("--keystore")
            .arg(&self.env.home)
            .arg("--policies")
            .arg(repo().join("policies"))
            .args([
                "rotate",
                "--no-progress",
                "--batch",
                "8",
                "--jobs",
                "2",
                "--to",
                to,
            ])
            .arg(&self.root)
            .env("REWRAP_ACCESS_KEY_ID", &self.rotator_id)
            .env("REWRAP_SECRET_ACCESS_KEY", &self.rotator_secret)
            .env_remove("AWS_ACCESS_KEY_ID")
            .env_remove("AWS_SECRET_ACCESS_KEY")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        c
    }

    /// Every file opens to its original bytes; returns how many are under
    /// each key, and how many are mid-protocol (both slots valid: the new
    /// slot written, the old one not yet wiped).
    fn check_all(&self, moment: &str) -> ([usize; 2], usize) {
        let reader = self.env.session("app-reader");
        let mut under = [0, 0];
        let mut both = 0;
        for (path, data) in &self.plain {
            // In memory: no fsync per check, the kills are what is tested.
            let mut got = Vec::new();
            let mut file = std::fs::File::open(path).unwrap();
            rewrap::files::decrypt_stream(
                &reader,
                &rewrap::files::DecryptOptions::default(),
                &mut file,
                &mut got,
            )
            .unwrap_or_else(|e| panic!("{moment}: {path:?}: {e}"));
            assert!(got == *data, "{moment}: {path:?} differs");
            let p = header(path);
            let arn = &p.slots.active().unwrap().1.key_arn;
            under[usize::from(*arn == self.keys[1])] += 1;
            both += usize::from(p.slots.0.iter().all(|s| matches!(s, SlotState::Valid(_))));
        }
        (under, both)
    }
}

fn header(path: &Path) -> ParsedHeader {
    ParsedHeader::read_from(&mut std::fs::File::open(path).unwrap()).unwrap()
}

#[test]
fn sigkill_at_random_moments_never_loses_a_file_and_a_rerun_finishes() {
    let f = fixture();
    // How long an uninterrupted run takes, to spread the kills over it: the
    // shorter of a run to key b and one back to key a (the first run also
    // warms the caches).
    let timed = |to: &str| {
        let t = Instant::now();
        let out = f.rotate_cmd(to).output().unwrap();
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        t.elapsed()
    };
    let to_b = timed(&f.keys[1]);
    assert_eq!(f.check_all("after the first run"), ([0, FILES], 0));
    let to_a = timed(&f.keys[0]);
    assert_eq!(f.check_all("after the second run"), ([FILES, 0], 0));
    let full = to_b.min(to_a);

    let mut seed = 0x2545_F491_4F6C_DD1Du64;
    let mut kills_mid_run = 0;
    let mut kills_mid_protocol = 0;
    let mut under = [FILES, 0];
    for round in 0..KILLS {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let delay = Duration::from_micros(seed % (full.as_micros() as u64).max(1));
        // Always rotate towards the key fewer files are under: work to do.
        let to = &f.keys[usize::from(under[1] < under[0])];
        let mut child = f.rotate_cmd(to).spawn().unwrap();
        std::thread::sleep(delay);
        if child.try_wait().unwrap().is_none() {
            kills_mid_run += 1;
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let (now, both) = f.check_all(&format!("after kill {round} at {delay:?}"));
        under = now;
        kills_mid_protocol += usize::from(both > 0);
        eprintln!(
            "kill {round} at {delay:?} of {full:?}: files under a, b = {under:?}, \
             {both} with both slots valid"
        );
    }
    assert!(
        kills_mid_run >= KILLS / 4,
        "only {kills_mid_run} kills hit a running rotation"
    );
    assert!(
        kills_mid_protocol >= 1,
        "no kill landed between a new slot's write and the old slot's wipe"
    );

    // A final run completes the rotation: everything under key b, with the
    // old slot wiped.
    let out = f.rotate_cmd(&f.keys[1]).output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(f.check_all("after the final run"), ([0, FILES], 0));
    for (path, _) in &f.plain {
        let p = header(path);
        let (active, _) = p.slots.active().unwrap();
        assert_eq!(p.slots.0[1 - active], SlotState::Empty, "{path:?}");
    }
    // The run recorded what it saw for the key-deletion warning.
    assert_eq!(
        rewrap::worker::known_envelopes_for_key(&f.env.home, &f.keys[1]),
        FILES as u64
    );
}

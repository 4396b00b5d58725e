//! SoftHSM2 tokens for the custom key store tests: a fresh token per test,
//! in its own temporary folder (`SOFTHSM2_CONF` names a configuration whose
//! `directories.tokendir` is that folder), and a `rewrap serve` to reach it
//! through.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Debian's SoftHSM2 PKCS#11 module.
pub(crate) const MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";
/// The user PIN of every test token.
pub(crate) const USER_PIN: &str = "731-user-pin";
const SO_PIN: &str = "so-pin-8642";

/// A SoftHSM2 token in a temporary folder.
pub(crate) struct SoftHsm {
    pub dir: tempfile::TempDir,
    /// The `SOFTHSM2_CONF` file.
    pub conf: PathBuf,
    /// The token's label.
    pub label: String,
    /// A file holding the user PIN (mode 0600).
    pub pin_file: PathBuf,
    /// A tmpfs mounted as the token folder, unmounted on drop.
    mounted: Option<PathBuf>,
}

impl Drop for SoftHsm {
    fn drop(&mut self) {
        if let Some(tokens) = &self.mounted {
            let _ = Command::new("umount").arg(tokens).status();
        }
    }
}

impl SoftHsm {
    /// Initializes a token labelled `label`. Panics (never skips) when
    /// SoftHSM2 is not installed.
    pub(crate) fn new(label: &str) -> SoftHsm {
        SoftHsm::init(label, None)
    }

    /// A token whose folder is a tmpfs of `bytes` (mounted here: the test
    /// command runs as root), so that it fills up after a few key objects.
    pub(crate) fn new_on_small_disk(label: &str, bytes: usize) -> SoftHsm {
        SoftHsm::init(label, Some(bytes))
    }

    fn init(label: &str, small_disk: Option<usize>) -> SoftHsm {
        assert!(
            Path::new(MODULE).exists(),
            "{MODULE} is missing: apt-get install softhsm2 opensc (scripts/test installs them)"
        );
        let dir = tempfile::tempdir().unwrap();
        let tokens = dir.path().join("tokens");
        std::fs::create_dir(&tokens).unwrap();
        let mounted = small_disk.map(|bytes| {
            let out = Command::new("mount")
                .args([
                    "-t",
                    "tmpfs",
                    "-o",
                    &format!("size={bytes},mode=0700"),
                    "tmpfs",
                ])
                .arg(&tokens)
                .output()
                .expect("mount runs");
            assert!(
                out.status.success(),
                "mounting a tmpfs for a full token needs root: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            tokens.clone()
        });
        let conf = dir.path().join("softhsm2.conf");
        std::fs::write(
            &conf,
            format!(
                "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n",
                tokens.display()
            ),
        )
        .unwrap();
        let out = Command::new("softhsm2-util")
            .env("SOFTHSM2_CONF", &conf)
            .args(["--init-token", "--free", "--label", label])
            .args(["--so-pin", SO_PIN, "--pin", USER_PIN])
            .output()
            .expect("softhsm2-util runs");
        assert!(
            out.status.success(),
            "softhsm2-util --init-token: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let pin_file = dir.path().join("user.pin");
        write_private(&pin_file, format!("{USER_PIN}\n").as_bytes());
        SoftHsm {
            dir,
            conf,
            label: label.into(),
            pin_file,
            mounted,
        }
    }

    /// `file:PATH` of the PIN file.
    pub(crate) fn pin_source(&self) -> String {
        format!("file:{}", self.pin_file.display())
    }

    /// This token opened in the test's own process (two sessions). The
    /// module reads `SOFTHSM2_CONF` once per process: one test per binary
    /// may call this.
    pub(crate) fn open_in_process(&self) -> rewrap::hsm::Token {
        std::env::set_var("SOFTHSM2_CONF", &self.conf);
        rewrap::hsm::Token::open(
            Path::new(MODULE),
            &rewrap::hsm::TokenSelector::Label(self.label.clone()),
            &rewrap::hsm::PinSource::File(self.pin_file.clone()),
            2,
        )
        .unwrap()
    }

    /// `rewrap --keystore HOME init --root URI` with this token's
    /// configuration (the root key in the token).
    pub(crate) fn init_keystore(&self, home: &Path, uri: &str) -> std::process::Output {
        Command::new(super::cli::bin())
            .env("SOFTHSM2_CONF", &self.conf)
            .env_remove("REWRAP_HOME")
            .arg("--keystore")
            .arg(home)
            .args(["init", "--root", uri])
            .output()
            .unwrap()
    }

    /// OpenSC's `pkcs11-tool` on this token, logged in as the user.
    pub(crate) fn tool(&self) -> Command {
        let mut c = Command::new("pkcs11-tool");
        c.env("SOFTHSM2_CONF", &self.conf)
            .args(["--module", MODULE, "--token-label", &self.label])
            .args(["--login", "--pin", USER_PIN]);
        c
    }
}

/// Writes `bytes` to a new file of mode 0600.
pub(crate) fn write_private(path: &Path, bytes: &[u8]) {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .unwrap();
    f.write_all(bytes).unwrap();
}

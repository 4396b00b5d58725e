//! The keystore as another local user sees it (hostile-neighbour finding
//! 3): the folder is 0700 and the lock file 0600, so nobody else can hold
//! `keystore.lock` and stall every command; a keystore opened to others is
//! refused with the fix in the message, like `root.key`. Through the real
//! binary.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use support::cli::*;

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

#[test]
fn the_keystore_folder_and_lock_file_are_private_and_looser_ones_are_refused() {
    let env = Env::new();
    let o = &env.owner;
    env.ok(o, &["list-keys"]);
    let lock = env.home.join("keystore.lock");
    assert_eq!(mode(&env.home), 0o700);
    assert_eq!(mode(&lock), 0o600);
    assert_eq!(mode(&env.home.join("keystore.sealed")), 0o600);
    // No temporary file is left beside the sealed file.
    let names: Vec<String> = std::fs::read_dir(&env.home)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("tmp"))
        .collect();
    assert_eq!(names, Vec::<String>::new());

    let before = std::fs::read(env.home.join("keystore.sealed")).unwrap();
    chmod(&env.home, 0o755);
    let out = env.run(o, &["create-key", "--description", "refused"]);
    assert_eq!(out.status.code(), Some(253), "{}", stderr(&out));
    let home = env.home.display();
    assert_eq!(
        stderr(&out).trim_end(),
        format!(
            "rewrap: keystore {home}: permissions 755 are too open; it must be private to its owner (chmod 700 {home})"
        )
    );
    chmod(&env.home, 0o700);

    chmod(&lock, 0o644);
    let out = env.run(o, &["create-key", "--description", "refused"]);
    assert_eq!(out.status.code(), Some(253), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("permissions 644 are too open")
            && stderr(&out).contains("(chmod 600 "),
        "{}",
        stderr(&out)
    );
    // Nothing was written while refused.
    assert_eq!(
        std::fs::read(env.home.join("keystore.sealed")).unwrap(),
        before
    );
    chmod(&lock, 0o600);
    env.ok(o, &["create-key", "--description", "accepted"]);
}

//! The rotation pipeline over real file trees, in process: idempotence,
//! resumption, concurrent runs, compare-and-swap, dry runs, filters, and
//! the inventory.

mod support;

use rewrap::envelope::{ParsedHeader, SlotState, SLOT_SIZE};
use rewrap::worker::{
    self, EnvelopeStore, FileStore, FileVersion, RewrapOptions, RewrapReport, StoreError,
};
use std::path::{Path, PathBuf};
use support::library::*;

struct Tree {
    env: Env,
    key_a: String,
    key_b: String,
    root: PathBuf,
    plain: Vec<(PathBuf, Vec<u8>)>,
}

/// `n` envelopes under key A (in nested folders) and 3 plain files.
fn tree(n: usize) -> Tree {
    let env = Env::new();
    let key_a = env.key("old");
    let key_b = env.key("new");
    let writer = env.principal("app-writer");
    let root = env.path("tree");
    let mut plain = Vec::new();
    for i in 0..n {
        let dir = root.join(format!("d{}", i % 5));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("f{i}.rwp"));
        let data = bytes(i * 37 % 5000, i as u64);
        let mut f = std::fs::File::create(&path).unwrap();
        rewrap::files::encrypt_stream(&writer, &app_opts(&key_a), &mut &data[..], &mut f).unwrap();
        plain.push((path, data));
    }
    for i in 0..3 {
        std::fs::write(root.join(format!("notes{i}.txt")), bytes(100 + i, 99)).unwrap();
    }
    Tree {
        env,
        key_a,
        key_b,
        root,
        plain,
    }
}

fn run(t: &Tree, kms: &dyn rewrap::kms::Kms, opts: &RewrapOptions) -> RewrapReport {
    let items = worker::walk_files(std::slice::from_ref(&t.root), false);
    worker::rewrap_items(kms, &FileStore::default(), items, opts).unwrap()
}

fn slots(path: &Path) -> ParsedHeader {
    ParsedHeader::read_from(&mut std::fs::File::open(path).unwrap()).unwrap()
}

/// Every envelope decrypts to its original bytes, its active slot is under
/// `key` at `version`, and the other slot is empty.
fn assert_all_under(t: &Tree, key: &str, version: u32) {
    let reader = t.env.session("app-reader");
    for (path, data) in &t.plain {
        let p = slots(path);
        let (active, slot) = p.slots.active().unwrap();
        assert_eq!(
            (slot.key_arn.as_str(), slot.key_version),
            (key, version),
            "{path:?}"
        );
        assert_eq!(p.slots.0[1 - active], SlotState::Empty, "{path:?}");
        assert_eq!(&open(&reader, path).unwrap(), data, "{path:?}");
    }
}

fn notes_untouched(t: &Tree) {
    for i in 0..3 {
        let got = std::fs::read(t.root.join(format!("notes{i}.txt"))).unwrap();
        assert_eq!(got, bytes(100 + i, 99));
    }
}

#[test]
fn rotates_a_tree_then_does_nothing_on_a_rerun() {
    let t = tree(60);
    t.env.principal("app-reader");
    let rotator = t.env.principal("storage-rotator");
    let r = run(&t, &rotator, &RewrapOptions::new(&t.key_b));
    assert_eq!(
        (
            r.scanned,
            r.rotated,
            r.already_current,
            r.not_envelope,
            r.failed
        ),
        (63, 60, 0, 3, 0),
        "{:?}",
        r.failures
    );
    assert_eq!(r.target_key, t.key_b);
    assert_eq!(r.target_version, 1);
    assert_eq!(r.by_source[&t.key_a]["1"].rotated, 60);
    assert_eq!(r.after[&t.key_b]["1"], 60);
    assert_eq!(r.exit_code(), 0);
    assert_all_under(&t, &t.key_b, 1);
    notes_untouched(&t);
    let again = run(&t, &rotator, &RewrapOptions::new(&t.key_b));
    assert_eq!(
        (again.rotated, again.already_current, again.failed),
        (0, 60, 0)
    );
}

#[test]
fn new_key_material_of_the_same_key_is_a_rotation() {
    let t = tree(10);
    t.env.principal("app-reader");
    let rotator = t.env.principal("storage-rotator");
    assert_eq!(t.env.rotate_key(&t.key_a), 2);
    let r = run(&t, &rotator, &RewrapOptions::new(&t.key_a));
    assert_eq!((r.rotated, r.target_version), (10, 2));
    assert_eq!(r.by_source[&t.key_a]["1"].rotated, 10);
    assert_all_under(&t, &t.key_a, 2);
}

#[test]
fn dry_run_writes_nothing() {
    let t = tree(12);
    let rotator = t.env.principal("storage-rotator");
    let before: Vec<Vec<u8>> = t
        .plain
        .iter()
        .map(|(p, _)| std::fs::read(p).unwrap())
        .collect();
    let mut opts = RewrapOptions::new(&t.key_b);
    opts.dry_run = true;
    let r = run(&t, &rotator, &opts);
    assert!(r.dry_run);
    assert_eq!(
        (r.rotated, r.would_rotate, r.not_envelope, r.failed),
        (0, 12, 3, 0)
    );
    let after: Vec<Vec<u8>> = t
        .plain
        .iter()
        .map(|(p, _)| std::fs::read(p).unwrap())
        .collect();
    assert!(before == after, "a dry run changed a file");
}

#[test]
fn from_filter_leaves_other_keys_alone() {
    let t = tree(10);
    let key_c = t.env.key("third");
    let writer = t.env.session("app-writer");
    let other = t.root.join("other.rwp");
    seal(&writer, &app_opts(&key_c), &other, b"under C");
    let before = std::fs::read(&other).unwrap();
    let rotator = t.env.principal("storage-rotator");
    let mut opts = RewrapOptions::new(&t.key_b);
    opts.from = vec![t.key_a.rsplit('/').next().unwrap().to_string()];
    let r = run(&t, &rotator, &opts);
    assert_eq!((r.rotated, r.other_key, r.failed), (10, 1, 0));
    assert_eq!(r.by_source[&key_c]["1"].other_key, 1);
    assert_eq!(std::fs::read(&other).unwrap(), before);
}

#[test]
fn one_bad_file_never_stops_the_run() {
    let t = tree(20);
    let bad = t.root.join("d0/bad.rwp");
    let writer = t.env.session("app-writer");
    seal(&writer, &app_opts(&t.key_a), &bad, b"doomed");
    let at = slots(&bad).header.slot_offset(0) as usize;
    let mut b = std::fs::read(&bad).unwrap();
    b[at + 40] ^= 1;
    std::fs::write(&bad, &b).unwrap();
    let truncated = t.root.join("d1/short.rwp");
    std::fs::write(&truncated, &b[..30]).unwrap();
    let rotator = t.env.principal("storage-rotator");
    let r = run(&t, &rotator, &RewrapOptions::new(&t.key_b));
    assert_eq!((r.rotated, r.failed), (20, 2), "{:?}", r.failures);
    assert_eq!(r.exit_code(), 1);
    let reasons: Vec<(&str, &str)> = r
        .failures
        .iter()
        .map(|f| (f.path.rsplit('/').next().unwrap(), f.error.as_str()))
        .collect();
    assert_eq!(
        reasons,
        vec![
            ("bad.rwp", "corrupt header: both key slots invalid"),
            ("short.rwp", "truncated: header incomplete")
        ]
    );
    assert_eq!(
        std::fs::read(&bad).unwrap(),
        b,
        "a failed file was modified"
    );
}

#[test]
fn symlinks_are_not_followed() {
    let t = tree(3);
    let outside = t.env.path("outside.rwp");
    let writer = t.env.session("app-writer");
    seal(&writer, &app_opts(&t.key_a), &outside, b"outside the tree");
    std::os::unix::fs::symlink(&outside, t.root.join("link.rwp")).unwrap();
    let before = std::fs::read(&outside).unwrap();
    let rotator = t.env.principal("storage-rotator");
    let r = run(&t, &rotator, &RewrapOptions::new(&t.key_b));
    assert_eq!((r.scanned, r.rotated), (6, 3));
    assert_eq!(std::fs::read(&outside).unwrap(), before);
}

/// A store that makes every wipe fail: the state a crash between the two
/// group commits leaves behind.
struct NoWipe(FileStore);

impl EnvelopeStore for NoWipe {
    type Item = PathBuf;
    type Version = FileVersion;
    fn display(&self, item: &PathBuf) -> String {
        self.0.display(item)
    }
    fn read_header(
        &self,
        item: &PathBuf,
    ) -> Result<Option<(ParsedHeader, FileVersion)>, StoreError> {
        self.0.read_header(item)
    }
    fn write_slots(
        &self,
        item: &PathBuf,
        writes: &[(usize, &[u8; SLOT_SIZE])],
        expected: &FileVersion,
    ) -> Result<FileVersion, StoreError> {
        if writes.iter().any(|(_, b)| b.iter().all(|&x| x == 0)) {
            let crash = std::io::Error::other("simulated crash");
            return Err(StoreError::io("cannot wipe", crash));
        }
        self.0.write_slots(item, writes, expected)
    }
    fn commit(&self, written: &[&FileVersion]) -> Result<(), StoreError> {
        self.0.commit(written)
    }
}

#[test]
fn an_interrupted_rotation_is_finished_by_the_next_run() {
    let t = tree(15);
    t.env.principal("app-reader");
    let rotator = t.env.principal("storage-rotator");
    let items = worker::walk_files(std::slice::from_ref(&t.root), false);
    let r = worker::rewrap_items(
        &rotator,
        &NoWipe(FileStore::default()),
        items,
        &RewrapOptions::new(&t.key_b),
    )
    .unwrap();
    assert_eq!((r.rotated, r.failed), (0, 15));
    assert!(
        r.failures[0].error.contains("old slot not wiped"),
        "{:?}",
        r.failures[0]
    );
    // Both slots valid, the new one active: readable, and the inventory sees it.
    for (path, _) in &t.plain {
        let p = slots(path);
        assert!(matches!(
            p.slots.0,
            [SlotState::Valid(_), SlotState::Valid(_)]
        ));
        assert_eq!(p.slots.active().unwrap().1.key_arn, t.key_b);
    }
    let inv = worker::inventory_items(
        None,
        &FileStore {
            read_only: true,
            ..FileStore::default()
        },
        worker::walk_files(std::slice::from_ref(&t.root), false),
        None,
        2,
    )
    .unwrap();
    assert_eq!(inv.stale_slots, 15);
    let r = run(&t, &rotator, &RewrapOptions::new(&t.key_b));
    assert_eq!((r.rotated, r.already_current, r.failed), (0, 15, 0));
    assert_all_under(&t, &t.key_b, 1);
}

#[test]
fn concurrent_runs_never_clobber_each_other() {
    let t = tree(200);
    t.env.principal("app-reader");
    let rotator = t.env.principal("storage-rotator");
    let mut opts = RewrapOptions::new(&t.key_b);
    opts.batch = 16;
    opts.jobs = 3;
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| run(&t, &rotator, &opts));
        let b = s.spawn(|| run(&t, &rotator, &opts));
        (a.join().unwrap(), b.join().unwrap())
    });
    assert_eq!(
        (a.failed, b.failed),
        (0, 0),
        "{:?} {:?}",
        a.failures,
        b.failures
    );
    assert_eq!(a.rotated + a.already_current, 200);
    assert_eq!(b.rotated + b.already_current, 200);
    assert!(a.rotated + b.rotated >= 200);
    assert_all_under(&t, &t.key_b, 1);
}

#[test]
fn a_file_replaced_after_the_read_is_not_written() {
    let t = tree(1);
    let path = t.plain[0].0.clone();
    let store = FileStore::default();
    let (parsed, version) = store.read_header(&path).unwrap().unwrap();
    // Someone atomically replaces the file with a newer envelope.
    let writer = t.env.session("app-writer");
    let newer = t.env.path("newer.rwp");
    seal(&writer, &app_opts(&t.key_a), &newer, b"newer content");
    std::fs::rename(&newer, &path).unwrap();
    let before = std::fs::read(&path).unwrap();
    let slot = [7u8; SLOT_SIZE];
    let err = store
        .write_slots(&path, &[(1, &slot)], &version)
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err}");
    assert_eq!(std::fs::read(&path).unwrap(), before);
    // And a slot change since the read is a conflict too.
    let (_, v2) = store.read_header(&path).unwrap().unwrap();
    let ok = store.write_slots(&path, &[(1, &rewrap::envelope::EMPTY_SLOT)], &v2);
    assert!(ok.is_ok());
    let at = parsed.header.slot_offset(1);
    let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, &[1u8; 8], at).unwrap();
    let err = store.write_slots(&path, &[(1, &slot)], &v2).unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err}");
}

#[test]
fn inventory_counts_per_key_and_version_and_records_a_summary() {
    let t = tree(30);
    let rotator = t.env.principal("storage-rotator");
    let inv = worker::inventory_items(
        Some(&rotator),
        &FileStore {
            read_only: true,
            ..FileStore::default()
        },
        worker::walk_files(std::slice::from_ref(&t.root), false),
        Some(&t.key_b),
        2,
    )
    .unwrap();
    assert_eq!((inv.envelopes, inv.not_envelope, inv.failed), (30, 3, 0));
    assert_eq!(inv.keys[&t.key_a].versions["1"], 30);
    assert!(inv.keys[&t.key_a].oldest_wrap.is_some());
    assert_eq!(inv.stale, Some(30));
    let mut inv = inv;
    inv.roots = worker::canonical_roots(std::slice::from_ref(&t.root));
    worker::InventorySummary::from_inventory(&inv)
        .record(&t.env.home)
        .unwrap();
    let key_a_id = t.key_a.rsplit('/').next().unwrap();
    assert_eq!(worker::known_envelopes_for_key(&t.env.home, &t.key_a), 30);
    assert_eq!(worker::known_envelopes_for_key(&t.env.home, key_a_id), 30);
    assert_eq!(worker::known_envelopes_for_key(&t.env.home, &t.key_b), 0);
    // A rotation over the same roots replaces the summary with the new state.
    let r = run(&t, &rotator, &RewrapOptions::new(&t.key_b));
    let source = worker::Source::Tree {
        roots: vec![t.root.clone()],
        follow_links: false,
    };
    worker::InventorySummary::from_rewrap(&source, &r)
        .record(&t.env.home)
        .unwrap();
    assert_eq!(worker::known_envelopes_for_key(&t.env.home, &t.key_a), 0);
    assert_eq!(worker::known_envelopes_for_key(&t.env.home, &t.key_b), 30);
}

#[test]
fn a_file_locked_by_another_writer_is_waited_for_last_holding_no_locks() {
    let t = tree(40);
    let rotator = t.env.principal("storage-rotator");
    let locked = t.plain[17].0.clone();
    let mut opts = RewrapOptions::new(&t.key_b);
    opts.jobs = 2;
    opts.batch = 8;
    opts.kms_batch = 4;
    std::thread::scope(|s| {
        // Held inside the scope: a failed assertion drops it (releasing the
        // lock) before the scope waits for the run.
        let holder = std::fs::File::open(&locked).unwrap();
        holder.lock().unwrap();
        let run = s.spawn(|| run(&t, &rotator, &opts));
        // While the file is locked, every other file is rotated to its end
        // (new slot in, old slot wiped): the locked file is put aside, and
        // waited for only when its worker holds nothing else.
        let others: Vec<&PathBuf> = t
            .plain
            .iter()
            .map(|(p, _)| p)
            .filter(|p| **p != locked)
            .collect();
        let deadline = std::time::Instant::now() + std::time::Duration::from_mins(1);
        loop {
            let done = others.iter().all(|p| {
                let h = slots(p);
                let (active, slot) = h.slots.active().unwrap();
                slot.key_arn == t.key_b && matches!(h.slots.0[1 - active], SlotState::Empty)
            });
            if done {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the other files were not rotated while one file was locked"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        assert!(
            !run.is_finished(),
            "the run did not wait for the locked file"
        );
        let (_, slot) = slots(&locked)
            .slots
            .active()
            .map(|(i, s)| (i, s.clone()))
            .unwrap();
        assert_eq!(slot.key_arn, t.key_a);
        holder.unlock().unwrap();
        let r = run.join().unwrap();
        assert_eq!(
            (r.rotated, r.failed, r.not_envelope),
            (40, 0, 3),
            "{:?}",
            r.failures
        );
    });
    assert_all_under(&t, &t.key_b, 1);
    notes_untouched(&t);
}

#[test]
fn a_rotation_fits_its_open_files_in_the_limit() {
    let mut opts = RewrapOptions::new("alias/x");
    opts.jobs = 4;
    let limit = 1024;
    opts.fit_open_files(limit);
    assert!(4 * (opts.kms_batch + opts.batch) as u64 + 128 <= limit);
    let mut roomy = RewrapOptions::new("alias/x");
    roomy.jobs = 4;
    roomy.fit_open_files(4 * (64 + 256) + 128);
    assert_eq!((roomy.kms_batch, roomy.batch), (64, 256));
    // Far more workers than descriptors: one file per step each.
    opts.jobs = 1_000_000;
    opts.fit_open_files(limit);
    assert_eq!((opts.kms_batch, opts.batch), (1, 1));
}

#[test]
fn inventory_and_rotation_leave_access_times_alone() {
    let t = tree(12);
    let old = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_hours(271_752);
    for (path, _) in &t.plain {
        let f = std::fs::File::options().write(true).open(path).unwrap();
        f.set_times(std::fs::FileTimes::new().set_accessed(old))
            .unwrap();
    }
    let accessed = |p: &Path| std::fs::metadata(p).unwrap().accessed().unwrap();
    // A plain read does move the access time here (relatime: it is older
    // than the modification time), so the check below can fail.
    let probe = t.env.path("probe");
    std::fs::write(&probe, b"x").unwrap();
    let f = std::fs::File::options().write(true).open(&probe).unwrap();
    f.set_times(std::fs::FileTimes::new().set_accessed(old))
        .unwrap();
    std::fs::read(&probe).unwrap();
    assert_ne!(
        accessed(&probe),
        old,
        "reads do not update atime on this mount"
    );

    let rotator = t.env.principal("storage-rotator");
    let inv = worker::inventory_items(
        Some(&rotator),
        &FileStore {
            read_only: true,
            ..FileStore::default()
        },
        worker::walk_files(std::slice::from_ref(&t.root), false),
        None,
        2,
    )
    .unwrap();
    assert_eq!(inv.envelopes, 12);
    let r = run(&t, &rotator, &RewrapOptions::new(&t.key_b));
    assert_eq!((r.rotated, r.failed), (12, 0));
    for (path, _) in &t.plain {
        assert_eq!(accessed(path), old, "{path:?}");
    }
}

/// Hostile-neighbour finding 5: the walker saw a regular file, then it was
/// swapped for a FIFO. Opening it must not wait for a writer: the item
/// fails with a named kind and the run ends. (The swap itself is a race;
/// handing the store the FIFO's path is the moment after it.)
#[test]
fn a_fifo_in_place_of_a_walked_file_fails_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("swapped");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    let (tx, rx) = std::sync::mpsc::channel();
    let path = fifo.clone();
    std::thread::spawn(move || {
        let inv = worker::inventory_items(
            None,
            &FileStore {
                read_only: true,
                ..FileStore::default()
            },
            std::iter::once(Ok(path)),
            None,
            1,
        )
        .unwrap();
        tx.send(inv).unwrap();
    });
    // A bound for the test itself: before the fix the open never returned.
    let inv = rx
        .recv_timeout(std::time::Duration::from_mins(1))
        .expect("inventory blocked on a FIFO");
    assert_eq!(inv.failures.len(), 1);
    assert_eq!(inv.failures[0].kind, worker::FailureKind::Conflict);
    assert!(
        inv.failures[0]
            .error
            .ends_with("not a regular file now (replaced while the tree was walked)"),
        "{}",
        inv.failures[0].error
    );
}

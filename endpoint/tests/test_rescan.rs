//! Property test of accelerated rescans: after random changes to a real tree, rescanning only
//! the directories holding changed entries gives exactly what a full scan gives, cache
//! records included; so does a full scan that updates the earlier scan's cache in place.

use std::collections::{BTreeSet, HashMap};
use std::fs;
use std::path::Path;

use mutagen_endpoint::scan::{
    Cache, CacheRecord, PermissionsMode, ScanOptions, rescan, scan, scan_into,
};
use mutagen_reconcile::Entry;
use proptest::prelude::*;

/// Paths the operations pick from; parents come before children. `a-b` and `a.c` sort
/// between `a` and `a/x` as strings.
const PATHS: [&str; 11] =
    ["a", "b", "c", "a-b", "a.c", "a/x", "a/y", "b/z", "a/x/deep", "a/x/deep/leaf", "c/q"];

#[derive(Clone, Debug)]
enum Operation {
    WriteFile(usize, u8),
    MakeDirectory(usize),
    Remove(usize),
    Rename(usize, usize),
    /// Gives a file or a directory one of [`BITS`].
    Chmod(usize, usize),
    /// Gives the root one of [`BITS`].
    ChmodRoot(usize),
}

/// Permission bits the operations give (directories stay searchable by their owner).
const BITS: [u32; 4] = [0o755, 0o700, 0o2775, 0o750];

fn operation() -> impl Strategy<Value = Operation> {
    let index = 0..PATHS.len();
    prop_oneof![
        (index.clone(), any::<u8>()).prop_map(|(i, b)| Operation::WriteFile(i, b)),
        index.clone().prop_map(Operation::MakeDirectory),
        index.clone().prop_map(Operation::Remove),
        (index.clone(), index.clone()).prop_map(|(a, b)| Operation::Rename(a, b)),
        (index, 0..BITS.len()).prop_map(|(i, b)| Operation::Chmod(i, b)),
        (0..BITS.len()).prop_map(Operation::ChmodRoot),
    ]
}

fn parent(path: &str) -> String {
    path.rsplit_once('/').map(|(parent, _)| parent.to_owned()).unwrap_or_default()
}

/// The directories holding `path`, innermost first, ending with the root `""` (the root
/// itself for the root, whose own bits live in no listing).
fn ancestors(path: &str) -> impl Iterator<Item = String> + '_ {
    let mut next = Some(if path.is_empty() { String::new() } else { parent(path) });
    std::iter::from_fn(move || {
        let current = next.take()?;
        if !current.is_empty() {
            next = Some(parent(&current));
        }
        Some(current)
    })
}

/// Applies an operation; records the directories whose listing or entries changed, and the
/// paths that were created or moved in (what the watcher reports).
fn apply(
    root: &Path,
    op: &Operation,
    dirty: &mut BTreeSet<String>,
    created: &mut BTreeSet<String>,
) {
    let at = |i: usize| root.join(PATHS[i]);
    let touched: Vec<(&str, bool)> = match op {
        Operation::WriteFile(i, byte) => {
            let content = vec![*byte; usize::from(*byte % 7)];
            let ok = fs::write(at(*i), content).is_ok();
            vec![(PATHS[*i], ok)]
        }
        Operation::MakeDirectory(i) => vec![(PATHS[*i], fs::create_dir(at(*i)).is_ok())],
        Operation::Remove(i) => {
            let path = at(*i);
            let ok = fs::remove_file(&path).is_ok() || fs::remove_dir_all(&path).is_ok();
            vec![(PATHS[*i], ok)]
        }
        Operation::Rename(a, b) => {
            let ok = fs::rename(at(*a), at(*b)).is_ok();
            vec![(PATHS[*a], ok), (PATHS[*b], ok)]
        }
        Operation::Chmod(i, bits) => {
            use std::os::unix::fs::PermissionsExt;
            let ok = fs::set_permissions(at(*i), fs::Permissions::from_mode(BITS[*bits])).is_ok();
            vec![(PATHS[*i], ok)]
        }
        Operation::ChmodRoot(bits) => {
            use std::os::unix::fs::PermissionsExt;
            let ok = fs::set_permissions(root, fs::Permissions::from_mode(BITS[*bits])).is_ok();
            vec![("", ok)]
        }
    };
    for (index, (path, ok)) in touched.into_iter().enumerate() {
        if !ok {
            continue;
        }
        // The watcher marks the directory holding the entry, or the root for the root.
        dirty.insert(if path.is_empty() { String::new() } else { parent(path) });
        let arrived = match op {
            Operation::MakeDirectory(_) | Operation::WriteFile(..) => true,
            Operation::Rename(..) => index == 1,
            _ => false,
        };
        if arrived {
            created.insert(path.to_owned());
        }
    }
}

/// The records without their racy marks, which depend on when each scan ran.
fn unmarked(cache: &Cache) -> HashMap<&str, CacheRecord> {
    cache.records.iter().map(|(path, record)| (path.as_str(), record.unmarked())).collect()
}

/// Root-relative paths of the directories in a tree ("" for the root).
fn directories(content: &Option<Entry>) -> BTreeSet<String> {
    fn walk(entry: &Entry, path: &str, found: &mut BTreeSet<String>) {
        if let Entry::Directory(children) = entry {
            found.insert(path.to_owned());
            for (name, child) in children {
                let child_path =
                    if path.is_empty() { name.clone() } else { format!("{path}/{name}") };
                walk(child, &child_path, found);
            }
        }
    }
    let mut found = BTreeSet::new();
    if let Some(entry) = content {
        walk(entry, "", &mut found);
    }
    found
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn rescanning_dirty_directories_equals_a_full_scan(
        setup in prop::collection::vec(operation(), 0..12),
        changes in prop::collection::vec(operation(), 1..8),
        posix in any::<bool>(),
    ) {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("root");
        fs::create_dir(&root).expect("root");
        let (mut ignored_dirty, mut ignored_created) = (BTreeSet::new(), BTreeSet::new());
        for op in &setup {
            apply(&root, op, &mut ignored_dirty, &mut ignored_created);
        }
        let permissions_mode =
            if posix { PermissionsMode::Posix } else { PermissionsMode::Portable };
        let options = ScanOptions { permissions_mode, ..ScanOptions::default() };
        let before = scan(&root, &options, &Cache::default()).expect("scan");
        let (mut dirty, mut created) = (BTreeSet::new(), BTreeSet::new());
        for op in &changes {
            apply(&root, op, &mut dirty, &mut created);
        }
        let mut cache = before.cache.clone();
        let watched = std::cell::RefCell::new(Vec::new());
        let rescanned = rescan(
            &root,
            &options,
            before.snapshot.clone(),
            &mut cache,
            &dirty,
            &created,
            &|path| watched.borrow_mut().push(path.to_owned()),
        )
        .expect("the root is still a directory");
        let full = scan(&root, &options, &Cache::default()).expect("scan");
        prop_assert_eq!(&rescanned.snapshot, &full.snapshot);
        prop_assert_eq!(unmarked(&cache), unmarked(&full.cache));
        prop_assert_eq!(rescanned.changed, before.snapshot != full.snapshot);
        // A full scan that updates the earlier scan's cache in place (what a no-watch
        // session does each cycle) gives the same snapshot and records as a cold one.
        let mut warm = before.cache.clone();
        let snapshot = scan_into(&root, &options, &mut warm).expect("scan");
        prop_assert_eq!(&snapshot, &full.snapshot);
        prop_assert_eq!(unmarked(&warm), unmarked(&full.cache));
        // Every change lies in or below a directory the rescan read again (what a guided
        // reconcile takes whole).
        for change in mutagen_reconcile::diff(before.snapshot.content.as_ref(), full.snapshot.content.as_ref()) {
            prop_assert!(
                ancestors(&change.path).any(|path| rescanned.read.contains(&path)),
                "{} outside {:?}", change.path, rescanned.read
            );
        }
        // Every directory that is new since the first scan, below a directory that is not,
        // was handed to the watcher before it was read, or lies below one that was (a
        // directory created again is read in full; a recursive watch covers what is below).
        let (old, new) = (directories(&before.snapshot.content), directories(&full.snapshot.content));
        let watched: BTreeSet<String> = watched
            .into_inner()
            .iter()
            .map(|path| path.strip_prefix(&root).expect("under the root").to_string_lossy().into_owned())
            .collect();
        for path in new.iter().filter(|path| !old.contains(*path) && old.contains(&parent(path))) {
            prop_assert!(
                watched.contains(path) || ancestors(path).any(|above| watched.contains(&above)),
                "{path} was not watched: {watched:?}"
            );
        }
    }
}

/// In permissions mode posix, a `chmod` alone (of a file, a directory or the root) is a
/// change that an accelerated rescan of the directory holding it finds.
#[test]
fn a_chmod_alone_is_a_change_in_posix_mode() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("root");
    fs::create_dir_all(root.join("d/e")).expect("mkdir");
    fs::write(root.join("d/f"), b"f").expect("write");
    let options =
        ScanOptions { permissions_mode: PermissionsMode::Posix, ..ScanOptions::default() };
    for (path, bits) in [("d/f", 0o600), ("d/e", 0o2750), ("d", 0o700), ("", 0o750)] {
        let before = scan(&root, &options, &Cache::default()).expect("scan");
        fs::set_permissions(root.join(path), fs::Permissions::from_mode(bits)).expect("chmod");
        let dirty = BTreeSet::from([if path.is_empty() { String::new() } else { parent(path) }]);
        let mut cache = before.cache.clone();
        let rescanned =
            rescan(&root, &options, before.snapshot, &mut cache, &dirty, &BTreeSet::new(), &|_| {})
                .expect("rescanned");
        let full = scan(&root, &options, &Cache::default()).expect("scan");
        assert!(rescanned.changed, "{path}: the chmod went unnoticed");
        assert_eq!(rescanned.snapshot, full.snapshot, "{path}");
        let bits_now = match full.snapshot.content.as_ref().and_then(|c| c.get(path)) {
            Some(Entry::File { permissions, .. }) => *permissions,
            Some(Entry::Directory(directory)) => directory.permissions,
            other => panic!("{path}: {other:?}"),
        };
        assert_eq!(bits_now, Some(bits as u16), "{path}");
    }
}

/// A dirty directory below `a` is found even when a dirty sibling of `a` sorts between `a`
/// and `a/` (`a-b`: `-` comes before `/`).
#[test]
fn a_dirty_directory_is_found_past_a_sibling_that_sorts_before_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("root");
    for directory in ["a/x", "a-b"] {
        fs::create_dir_all(root.join(directory)).expect("mkdir");
    }
    let options = ScanOptions::default();
    let before = scan(&root, &options, &Cache::default()).expect("scan");
    fs::write(root.join("a/x/new"), b"n").expect("write");
    fs::write(root.join("a-b/new"), b"n").expect("write");
    let dirty = BTreeSet::from(["a/x".to_owned(), "a-b".to_owned()]);
    let mut cache = before.cache.clone();
    let rescanned =
        rescan(&root, &options, before.snapshot, &mut cache, &dirty, &BTreeSet::new(), &|_| {})
            .expect("rescanned");
    let full = scan(&root, &options, &Cache::default()).expect("scan");
    assert_eq!(rescanned.snapshot, full.snapshot);
}

/// A directory replaced by a new one of the same name (`rm -r c; mkdir -p c/q`) is read in
/// full below its parent, so its changes lie below a directory that was read, and a guided
/// reconciliation over what was read (which takes a read directory whole) sees them.
#[test]
fn a_directory_replaced_under_its_own_name_is_covered_by_its_parents_reading() {
    use mutagen_reconcile::{Mode, reconcile, reconcile_dirty};
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("root");
    fs::create_dir_all(root.join("c")).expect("mkdir");
    let options = ScanOptions::default();
    let before = scan(&root, &options, &Cache::default()).expect("scan");
    fs::remove_dir(root.join("c")).expect("rmdir");
    fs::create_dir_all(root.join("c/q")).expect("mkdir");
    let dirty = BTreeSet::from([String::new()]);
    let created = BTreeSet::from(["c".to_owned(), "c/q".to_owned()]);
    let mut cache = before.cache.clone();
    let rescanned =
        rescan(&root, &options, before.snapshot.clone(), &mut cache, &dirty, &created, &|_| {})
            .expect("rescanned");
    let full = scan(&root, &options, &Cache::default()).expect("scan");
    assert_eq!(rescanned.snapshot, full.snapshot);
    assert_eq!(rescanned.read, BTreeSet::from([String::new()]));
    // The other side still has the old tree; the ancestor is the old tree too.
    let (old, new) = (before.snapshot.content.as_ref(), full.snapshot.content.as_ref());
    let whole = reconcile(old, new, old, Mode::TwoWaySafe);
    let guided = reconcile_dirty(old, new, old, Mode::TwoWaySafe, &rescanned.read, &[]);
    assert_eq!(guided, whole);
    assert!(!whole.beta_transitions.is_empty(), "c/q goes to the other side");
}

/// A directory moved away and replaced by a file of its name (`mv b c/q; echo > b`), both
/// reported as arrivals, leaves no cache record behind for the files it held.
#[test]
fn a_directory_replaced_by_a_file_forgets_the_records_of_its_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("root");
    fs::create_dir_all(root.join("b")).expect("mkdir");
    fs::create_dir_all(root.join("c")).expect("mkdir");
    fs::write(root.join("b/z"), b"z").expect("write");
    let options = ScanOptions::default();
    let before = scan(&root, &options, &Cache::default()).expect("scan");
    fs::rename(root.join("b"), root.join("c/q")).expect("rename");
    fs::write(root.join("b"), b"b").expect("write");
    let dirty = BTreeSet::from([String::new(), "c".to_owned()]);
    let created = BTreeSet::from(["b".to_owned(), "c/q".to_owned()]);
    let mut cache = before.cache.clone();
    let rescanned = rescan(&root, &options, before.snapshot, &mut cache, &dirty, &created, &|_| {})
        .expect("rescanned");
    let full = scan(&root, &options, &Cache::default()).expect("scan");
    assert_eq!(rescanned.snapshot, full.snapshot);
    assert_eq!(unmarked(&cache), unmarked(&full.cache));
    assert!(!cache.records.contains_key("b/z"));
}

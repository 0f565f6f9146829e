//! Property test of accelerated rescans: after random changes to a real tree, rescanning only
//! the directories holding changed entries gives exactly what a full scan gives, cache
//! records included.

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;

use mutagen_endpoint::scan::{Cache, ScanOptions, rescan, scan};
use mutagen_reconcile::Entry;
use proptest::prelude::*;

/// Paths the operations pick from; parents come before children.
const PATHS: [&str; 9] = ["a", "b", "c", "a/x", "a/y", "b/z", "a/x/deep", "a/x/deep/leaf", "c/q"];

#[derive(Clone, Debug)]
enum Operation {
    WriteFile(usize, u8),
    MakeDirectory(usize),
    Remove(usize),
    Rename(usize, usize),
    Chmod(usize),
}

fn operation() -> impl Strategy<Value = Operation> {
    let index = 0..PATHS.len();
    prop_oneof![
        (index.clone(), any::<u8>()).prop_map(|(i, b)| Operation::WriteFile(i, b)),
        index.clone().prop_map(Operation::MakeDirectory),
        index.clone().prop_map(Operation::Remove),
        (index.clone(), index.clone()).prop_map(|(a, b)| Operation::Rename(a, b)),
        index.prop_map(Operation::Chmod),
    ]
}

fn parent(path: &str) -> String {
    path.rsplit_once('/').map(|(parent, _)| parent.to_owned()).unwrap_or_default()
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
        Operation::Chmod(i) => {
            use std::os::unix::fs::PermissionsExt;
            let path = at(*i);
            let ok = fs::metadata(&path).is_ok_and(|m| m.is_file())
                && fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).is_ok();
            vec![(PATHS[*i], ok)]
        }
    };
    for (index, (path, ok)) in touched.into_iter().enumerate() {
        if !ok {
            continue;
        }
        dirty.insert(parent(path));
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
    ) {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("root");
        fs::create_dir(&root).expect("root");
        let (mut ignored_dirty, mut ignored_created) = (BTreeSet::new(), BTreeSet::new());
        for op in &setup {
            apply(&root, op, &mut ignored_dirty, &mut ignored_created);
        }
        let options = ScanOptions::default();
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
        prop_assert_eq!(&cache, &full.cache);
        prop_assert_eq!(rescanned.changed, before.snapshot != full.snapshot);
        // Every directory that is new since the first scan, below a directory that is not,
        // was handed to the watcher before it was read (its own subdirectories are covered
        // by its recursive watch).
        let (old, new) = (directories(&before.snapshot.content), directories(&full.snapshot.content));
        let watched: BTreeSet<String> = watched
            .into_inner()
            .iter()
            .map(|path| path.strip_prefix(&root).expect("under the root").to_string_lossy().into_owned())
            .collect();
        for path in new.iter().filter(|path| !old.contains(*path) && old.contains(&parent(path))) {
            prop_assert!(watched.contains(path), "{path} was not watched: {watched:?}");
        }
    }
}

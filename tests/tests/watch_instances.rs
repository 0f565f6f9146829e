//! Watchers share a few process-wide inotify instances: hundreds of watched roots fit in the
//! kernel's per-user limit of instances, each root sees only its own events, and watchers of
//! one root (or of nested roots) keep each other watched when one of them goes away.

use std::fs;
use std::path::{Path, PathBuf};

use mutagen_endpoint::watch::{INSTANCES, held_paths};
use mutagen_endpoint::{Endpoint, LocalEndpoint, LocalOptions};
use mutagen_tests::write;

/// How many inotify instances this process has open.
fn inotify_instances() -> usize {
    fs::read_dir("/proc/self/fd")
        .expect("/proc/self/fd")
        .filter_map(|entry| fs::read_link(entry.ok()?.path()).ok())
        .filter(|target| target.as_os_str() == "anon_inode:inotify")
        .count()
}

/// A watching endpoint on `root`, staging under `dir` as `name`.
fn watched(dir: &Path, root: &Path, name: &str) -> LocalEndpoint {
    let mut options = LocalOptions::new(dir.join(format!("staging-{name}")));
    options.watch = true;
    let mut endpoint = LocalEndpoint::new(root.to_path_buf(), options);
    endpoint.scan().expect("first scan starts the watch");
    assert!(endpoint.watcher().is_some(), "{name}: {:?}", endpoint.watch_problem());
    endpoint
}

/// What the instances still hold under `dir`: held paths and kept orphans.
fn held_under(dir: &Path) -> (Vec<PathBuf>, Vec<PathBuf>) {
    held_paths(dir)
}

/// Whether the endpoint found a change, once every event queued so far was handled; a full
/// rescan fails the test (the watch must have told).
fn changed(endpoint: &mut LocalEndpoint, what: &str) -> bool {
    let full_scans = endpoint.full_scans();
    endpoint.watcher().expect("watching").barrier();
    let changed = endpoint.check().expect("check");
    assert_eq!(endpoint.full_scans(), full_scans, "{what}: a full rescan");
    if changed {
        // The next check reports only what happens after this one.
        endpoint.scan().expect("scan");
    }
    changed
}

/// The endpoint must find a change, from the watch.
fn sees_change(endpoint: &mut LocalEndpoint, what: &str) {
    assert!(changed(endpoint, what), "{what} was missed");
}

#[test]
fn three_hundred_watched_roots_share_a_few_instances_and_see_only_their_own_events() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut endpoints = Vec::new();
    for index in 0..300 {
        let root = dir.path().join(format!("root-{index:03}"));
        write(&root, "d/file", "before");
        endpoints.push(watched(dir.path(), &root, &format!("{index:03}")));
    }
    // The kernel's default limit is 128 instances per user: one per root would not fit.
    let instances = inotify_instances();
    assert!(instances <= INSTANCES, "{instances} inotify instances for 300 roots");

    let edited = [7, 150, 299];
    for index in edited {
        write(&dir.path().join(format!("root-{index:03}")), "d/file", "after");
    }
    for (index, endpoint) in endpoints.iter_mut().enumerate() {
        if edited.contains(&index) {
            sees_change(endpoint, &format!("the edit in root {index}"));
        } else {
            assert!(
                !changed(endpoint, &format!("root {index}")),
                "root {index} saw another's edit"
            );
        }
    }
    drop(endpoints);
    assert_eq!(held_under(dir.path()), (Vec::new(), Vec::new()), "watches left behind");
}

#[test]
fn watchers_of_one_root_and_of_a_nested_root_keep_each_other_watched() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("root");
    write(&root, "inner/file", "inner");
    let mut first = watched(dir.path(), &root, "first");
    // The first watcher adds the new directory to the watch itself.
    write(&root, "new/file", "one");
    sees_change(&mut first, "a new directory");
    // These start after it: they rely on the watches already there.
    let mut second = watched(dir.path(), &root, "second");
    let mut nested = watched(dir.path(), &root.join("inner"), "nested");

    // The first goes away: releasing what it added must not strip the second's watch of the
    // new directory.
    drop(first);
    write(&root, "new/file", "two");
    sees_change(&mut second, "an edit in the new directory after the first watcher left");
    write(&root, "inner/other", "other");
    sees_change(&mut nested, "an edit in the nested root");
    sees_change(&mut second, "an edit in the nested root, seen from the outer one");
    assert!(!changed(&mut nested, "the nested root"), "the nested root saw an event outside it");

    // The nested watcher goes away: the outer one still sees inside it.
    drop(nested);
    write(&root, "inner/file", "changed");
    sees_change(&mut second, "an edit inside the former nested root");

    // A nested watcher again, then the outer one goes away: the nested root stays watched,
    // directories created in it later too.
    let mut nested = watched(dir.path(), &root.join("inner"), "nested-again");
    drop(second);
    write(&root, "inner/deep/file", "deep");
    sees_change(&mut nested, "a new directory in the nested root");
    write(&root, "inner/deep/file", "deeper");
    sees_change(&mut nested, "an edit in it");

    drop(nested);
    assert_eq!(held_under(dir.path()), (Vec::new(), Vec::new()), "watches left behind");
}

#[test]
fn full_scan_mode_rescans_the_whole_tree_while_the_watch_says_when() {
    let dir = tempfile::tempdir().expect("tempdir");
    for full in [false, true] {
        let root = dir.path().join(format!("root-{full}"));
        write(&root, "d/deep/a", "a");
        let mut options = LocalOptions::new(dir.path().join(format!("staging-{full}")));
        options.watch = true;
        options.full_scans = full;
        let mut endpoint = LocalEndpoint::new(root.clone(), options);
        endpoint.scan().expect("scan");
        let before = endpoint.full_scans();
        for index in 0..3 {
            write(&root, &format!("d/deep/new-{index}"), "new");
            endpoint.watcher().expect("watching").barrier();
            assert!(endpoint.check().expect("check"), "the watch told of the change");
            endpoint.scan().expect("scan");
        }
        let full_scans = endpoint.full_scans() - before;
        if full {
            assert!(full_scans >= 3, "scan mode full rescanned in full {full_scans} times");
        } else {
            assert_eq!(full_scans, 0, "an accelerated rescan went full");
        }
    }
}

//! Watched endpoints (the queue overflow test has its own binary, `watch_overflow`: stalling
//! a shared inotify instance would stall every watcher of the process).

use std::fs;

use mutagen_endpoint::Endpoint;
use mutagen_reconcile::Mode;
use mutagen_tests::{Pair, write};

#[test]
fn a_watched_view_counts_what_its_own_transitions_placed() {
    let mut pair = Pair::watched(Mode::TwoWaySafe);
    write(&pair.alpha, "d/hello", "hello");
    pair.cycle();
    // Beta exists and is watched now: later transitions update its view instead of a full
    // rescan, and its counts and totals must still be those of the disk.
    write(&pair.alpha, "d/world", "world!");
    pair.cycle();
    let beta = pair.beta_endpoint.scan().expect("scan");
    assert_eq!((beta.directories, beta.files, beta.total_file_size), (2, 2, 11));
    fs::remove_file(pair.alpha.join("d/hello")).expect("remove");
    pair.cycle();
    let beta = pair.beta_endpoint.scan().expect("scan");
    assert_eq!((beta.directories, beta.files, beta.total_file_size), (2, 1, 6));
}

#[test]
fn changes_inside_our_hidden_directories_wake_nothing() {
    let mut pair = Pair::watched(Mode::TwoWaySafe);
    write(&pair.alpha, "kept", "k");
    pair.converge();
    // What an internal staging area does inside the root: files come and go deep inside it.
    let hidden = pair.alpha.join(".mutagen-temporary-staging-x/sub");
    fs::create_dir_all(&hidden).expect("mkdir");
    fs::write(hidden.join("staged"), "staged").expect("write");
    fs::remove_file(hidden.join("staged")).expect("rm");
    let watcher = pair.alpha_endpoint.watcher().expect("watching");
    watcher.barrier();
    let pending = watcher.take();
    assert!(!pending.rescan && pending.dirty.is_empty(), "{pending:?}");
    let report = pair.cycle();
    assert!(report.beta.transitions.is_empty(), "{report:?}");
    assert!(!pair.beta.join(".mutagen-temporary-staging-x").exists());
}

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

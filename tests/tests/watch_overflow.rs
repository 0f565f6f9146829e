//! A real inotify queue overflow leads to a full rescan with a correct result, and watching
//! goes on afterwards, for directories created while events were lost too.
//!
//! Its own binary: the test stalls the event handler of a shared inotify instance, which would
//! stall every other watcher of the process.

use std::fs;
use std::time::Duration;

use mutagen_endpoint::Endpoint;
use mutagen_reconcile::Mode;
use mutagen_tests::{Pair, read_tree, write};

/// Waits for the endpoint's watcher to report events, then asks whether content changed.
fn changed_after_events(endpoint: &mut mutagen_endpoint::LocalEndpoint) -> bool {
    let wakeups = endpoint.wakeups().expect("a watching endpoint");
    let _ = wakeups.recv_timeout(Duration::from_secs(10));
    endpoint.check().expect("check")
}

#[test]
fn an_event_queue_overflow_leads_to_a_full_rescan_with_a_correct_result() {
    let mut pair = Pair::watched(Mode::TwoWaySafe);
    write(&pair.alpha, "old/file", "to be deleted");
    write(&pair.alpha, "edited", "before");
    for index in 0..100 {
        fs::create_dir_all(pair.alpha.join(format!("burst/{index:03}"))).expect("mkdir");
    }
    pair.cycle();
    assert_eq!(read_tree(&pair.alpha), read_tree(&pair.beta));
    let full_scans = pair.alpha_endpoint.full_scans();

    // Stall the event handler and make more events than the kernel queues: each one-byte
    // file in a watched directory costs two (create, modify), and the queue drops everything
    // past its limit, replacing it with one overflow event.
    let limit: usize = fs::read_to_string("/proc/sys/fs/inotify/max_queued_events")
        .ok()
        .and_then(|text| text.trim().parse().ok())
        .unwrap_or(16_384);
    let files = limit / 2 + 1_000;
    {
        let watcher = pair.alpha_endpoint.watcher().expect("watcher");
        let _stalled = watcher.stall_events();
        for index in 0..files {
            let directory = pair.alpha.join(format!("burst/{:03}", index % 100));
            fs::write(directory.join(format!("f{index}")), b"x").expect("write");
        }
        fs::remove_dir_all(pair.alpha.join("old")).expect("remove");
        // Its creation is lost with the other events, so nothing watches it yet.
        fs::create_dir(pair.alpha.join("unannounced")).expect("mkdir");
        fs::write(pair.alpha.join("edited"), "after").expect("edit");
    }
    // The overflow is reported after the events that fit in the queue.
    let watcher = pair.alpha_endpoint.watcher().expect("still watching");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while watcher.overflows() == 0 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(watcher.overflows() >= 1, "the queue did not overflow ({files} files)");
    assert!(pair.alpha_endpoint.check().expect("check"), "the burst went unnoticed");
    assert!(pair.alpha_endpoint.full_scans() > full_scans, "no full rescan after the overflow");
    let status = pair.alpha_endpoint.watch_problem().expect("the fallback is reported");
    assert!(status.contains("the event queue overflowed"), "{status}");

    let report = pair.cycle();
    assert!(report.conflicts.is_empty(), "{:?}", report.conflicts);
    assert_eq!(read_tree(&pair.alpha), read_tree(&pair.beta));
    assert!(!pair.beta.join("old").exists());
    assert_eq!(fs::read_to_string(pair.beta.join("edited")).expect("edited"), "after");
    let last = files - 1;
    assert!(pair.beta.join(format!("burst/{:03}/f{last}", last % 100)).exists());

    // Watching goes on: a file created in a new directory is seen by an accelerated rescan.
    let full_scans = pair.alpha_endpoint.full_scans();
    write(&pair.alpha, "burst/new/late", "late");
    assert!(changed_after_events(&mut pair.alpha_endpoint), "a change after recovery was missed");
    pair.cycle();
    assert_eq!(fs::read_to_string(pair.beta.join("burst/new/late")).expect("late"), "late");
    assert_eq!(pair.alpha_endpoint.full_scans(), full_scans, "recovery should not repeat");

    // The directory whose creation was lost is watched too: the recovery walked the tree.
    write(&pair.alpha, "unannounced/file", "seen");
    assert!(
        changed_after_events(&mut pair.alpha_endpoint),
        "a change in a lost directory was missed"
    );
    pair.cycle();
    assert_eq!(fs::read_to_string(pair.beta.join("unannounced/file")).expect("file"), "seen");
    assert_eq!(
        pair.alpha_endpoint.full_scans(),
        full_scans,
        "a full rescan found it, not the watch"
    );
}

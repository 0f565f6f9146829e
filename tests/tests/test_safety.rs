//! The user's files come first: changes made while a cycle runs, safety halts, untracked and
//! ignored content, single-file roots.

use std::fs;
use std::sync::Arc;

use mutagen_endpoint::{Allowances, CycleError, HaltReason, Ignorer, ScanOptions};
use mutagen_reconcile::Mode;
use mutagen_tests::{Pair, read_tree, write};

fn read(path: &std::path::Path) -> String {
    fs::read_to_string(path).expect("readable")
}

#[test]
fn a_file_changed_between_scan_and_transition_survives_and_is_reported() {
    let mut pair = Pair::new(Mode::TwoWaySafe);
    write(&pair.alpha, "edited.txt", "v1");
    write(&pair.alpha, "deleted.txt", "v1");
    pair.converge();

    write(&pair.alpha, "edited.txt", "v2 from alpha");
    fs::remove_file(pair.alpha.join("deleted.txt")).expect("delete");
    // The user edits both files on beta after beta's scan, before its transition.
    let report = pair.cycle_with_beta_hook(|beta| {
        write(beta, "edited.txt", "user's precious edit");
        write(beta, "deleted.txt", "user's other edit");
    });
    assert_eq!(read(&pair.beta.join("edited.txt")), "user's precious edit");
    assert_eq!(read(&pair.beta.join("deleted.txt")), "user's other edit");
    let problems = &report.beta.transition_problems;
    assert_eq!(problems.len(), 2, "{problems:?}");
    assert!(problems.iter().all(|p| p.error.starts_with("modification detected")), "{problems:?}");

    // Next cycle sees both edits: a real conflict for one, modification beats deletion for the
    // other.
    let reports = pair.converge();
    let last = reports.last().expect("cycle");
    assert_eq!(last.conflicts.len(), 1);
    assert_eq!(last.conflicts[0].root, "edited.txt");
    assert_eq!(read(&pair.alpha.join("deleted.txt")), "user's other edit");
    assert_eq!(read(&pair.alpha.join("edited.txt")), "v2 from alpha");
    assert_eq!(read(&pair.beta.join("edited.txt")), "user's precious edit");
}

#[test]
fn emptying_one_root_halts_until_reset() {
    let mut pair = Pair::new(Mode::TwoWaySafe);
    write(&pair.alpha, "a", "a");
    write(&pair.alpha, "d/b", "b");
    pair.converge();
    fs::remove_file(pair.alpha.join("a")).expect("rm");
    fs::remove_dir_all(pair.alpha.join("d")).expect("rm");

    let report = pair.cycle();
    assert_eq!(report.halted, Some(HaltReason::RootEmptied));
    assert!(report.beta.transitions.is_empty());
    assert!(matches!(pair.try_cycle(), Err(CycleError::Halted(HaltReason::RootEmptied))));
    // Resuming re-checks: still emptied, so it halts again.
    pair.synchronizer.resume();
    assert_eq!(pair.cycle().halted, Some(HaltReason::RootEmptied));
    assert_eq!(read(&pair.beta.join("d/b")), "b", "beta must be untouched");

    // Reset forgets the ancestor: beta's content counts as new and flows back.
    pair.synchronizer.reset();
    pair.converge();
    assert_eq!(read(&pair.alpha.join("d/b")), "b");
}

#[test]
fn deleting_or_retyping_a_root_halts() {
    let mut pair = Pair::new(Mode::OneWayReplica);
    write(&pair.alpha, "only", "x");
    pair.converge();
    fs::remove_dir_all(&pair.alpha).expect("rm alpha");
    assert_eq!(pair.cycle().halted, Some(HaltReason::RootDeletion));
    assert_eq!(read(&pair.beta.join("only")), "x");

    let mut pair = Pair::new(Mode::TwoWaySafe);
    write(&pair.alpha, "only", "x");
    pair.converge();
    fs::remove_dir_all(&pair.alpha).expect("rm alpha");
    fs::write(&pair.alpha, "now a file").expect("file root");
    assert_eq!(pair.cycle().halted, Some(HaltReason::RootTypeChange));
    assert_eq!(read(&pair.beta.join("only")), "x");
}

/// A synchronizer of `pair` that allows what is given.
fn allow(pair: &mut Pair, root_emptying: bool, root_deletion: bool) {
    let synchronizer = std::mem::take(&mut pair.synchronizer);
    pair.synchronizer = synchronizer.allowing(Allowances { root_emptying, root_deletion });
}

#[test]
fn allowed_emptying_and_deletion_go_on_and_are_reported_and_only_they() {
    // An emptied build directory propagates when emptying is allowed.
    let mut pair = Pair::new(Mode::TwoWaySafe);
    allow(&mut pair, true, false);
    write(&pair.alpha, "a.o", "a");
    write(&pair.alpha, "objects/b.o", "b");
    pair.converge();
    fs::remove_file(pair.alpha.join("a.o")).expect("rm");
    fs::remove_dir_all(pair.alpha.join("objects")).expect("rm");
    let report = pair.cycle();
    assert_eq!(report.halted, None);
    assert_eq!(report.allowed, vec![HaltReason::RootEmptied]);
    assert_eq!(read_tree(&pair.beta).len(), 0, "the emptying did not propagate");
    // Deletion is still a halt in that session.
    fs::remove_dir_all(&pair.alpha).expect("rm alpha");
    assert_eq!(pair.cycle().halted, Some(HaltReason::RootDeletion));
    assert!(pair.beta.exists());

    // A deleted root propagates when deletion is allowed; a type change still halts.
    let mut pair = Pair::new(Mode::OneWayReplica);
    allow(&mut pair, false, true);
    write(&pair.alpha, "only", "x");
    pair.converge();
    fs::remove_dir_all(&pair.alpha).expect("rm alpha");
    let report = pair.cycle();
    assert_eq!((report.halted, report.allowed), (None, vec![HaltReason::RootDeletion]));
    assert!(!pair.beta.exists(), "the deletion did not propagate");
    fs::create_dir(&pair.alpha).expect("alpha again");
    write(&pair.alpha, "only", "x");
    pair.converge();
    fs::remove_dir_all(&pair.alpha).expect("rm alpha");
    fs::write(&pair.alpha, "now a file").expect("file root");
    assert_eq!(pair.cycle().halted, Some(HaltReason::RootTypeChange));
    assert_eq!(read(&pair.beta.join("only")), "x");

    // Nothing allowed by default: a cycle that passes no halt reports none.
    let mut pair = Pair::new(Mode::TwoWaySafe);
    write(&pair.alpha, "f", "f");
    assert!(pair.converge().iter().all(|report| report.allowed.is_empty()));
}

#[test]
fn untracked_content_blocks_a_deletion_instead_of_being_lost() {
    let mut pair = Pair::new(Mode::OneWayReplica);
    write(&pair.alpha, "d/tracked", "t");
    pair.converge();
    let socket = pair.beta.join("d/service.sock");
    let _listener = std::os::unix::net::UnixListener::bind(&socket).expect("socket");
    fs::remove_dir_all(pair.alpha.join("d")).expect("rm");
    let reports = pair.converge();
    assert_eq!(reports.last().expect("cycle").conflicts[0].root, "d");
    assert!(socket.exists(), "untracked content was removed");
    assert_eq!(read(&pair.beta.join("d/tracked")), "t");
}

#[test]
fn ignored_paths_are_neither_synchronized_nor_deleted() {
    let ignorer =
        Ignorer::new(&["build/".to_owned(), "*.log".to_owned(), "!keep.log".to_owned()], true)
            .expect("patterns");
    let scan = ScanOptions { ignorer: Arc::new(ignorer), ..ScanOptions::default() };
    let mut pair = Pair::with_scan(Mode::TwoWaySafe, scan);
    write(&pair.alpha, "src/main.rs", "fn main() {}");
    write(&pair.alpha, "build/out.o", "binary");
    write(&pair.alpha, "debug.log", "noise");
    write(&pair.alpha, "keep.log", "kept");
    write(&pair.alpha, ".git/HEAD", "ref");
    pair.converge();
    let beta = read_tree(&pair.beta);
    let names: Vec<&str> = beta.keys().map(String::as_str).collect();
    assert_eq!(names, ["keep.log", "src", "src/main.rs"]);
    write(&pair.beta, "build/beta.o", "beta's own");
    pair.converge();
    assert!(!pair.alpha.join("build/beta.o").exists());
    assert_eq!(read(&pair.alpha.join("build/out.o")), "binary");
}

#[test]
fn a_single_file_root_is_synchronized() {
    let mut pair = Pair::new(Mode::TwoWaySafe);
    fs::remove_dir(&pair.alpha).expect("rm");
    fs::write(&pair.alpha, "single file root").expect("write");
    pair.converge();
    assert_eq!(read(&pair.beta), "single file root");
    fs::write(&pair.beta, "edited on beta, longer").expect("write");
    pair.converge();
    assert_eq!(read(&pair.alpha), "edited on beta, longer");
}

/// An endpoint that claims its root holds `../escape`: what a malicious agent could send.
struct Malicious;

impl mutagen_endpoint::Endpoint for Malicious {
    fn check(&mut self) -> mutagen_endpoint::EndpointResult<bool> {
        Ok(false)
    }
    fn scan(
        &mut self,
    ) -> mutagen_endpoint::EndpointResult<std::sync::Arc<mutagen_endpoint::Snapshot>> {
        let file = mutagen_reconcile::Entry::file(mutagen_reconcile::Digest([7; 32]), false);
        let content = mutagen_reconcile::Entry::Directory(
            [("../escape".to_owned(), file)].into_iter().collect(),
        );
        Ok(std::sync::Arc::new(mutagen_endpoint::Snapshot {
            content: Some(content),
            ..Default::default()
        }))
    }
    fn stage(
        &mut self,
        _: Vec<mutagen_endpoint::StageRequest>,
    ) -> mutagen_endpoint::EndpointResult<Vec<mutagen_endpoint::StageRequest>> {
        panic!("must not be reached")
    }
    fn supply(
        &mut self,
        _: &[mutagen_endpoint::StageRequest],
        _: &mut dyn FnMut(mutagen_endpoint::Transmission) -> mutagen_endpoint::EndpointResult<()>,
    ) -> mutagen_endpoint::EndpointResult<()> {
        panic!("must not be reached")
    }
    fn receive(
        &mut self,
        _: mutagen_endpoint::Transmission,
    ) -> mutagen_endpoint::EndpointResult<()> {
        panic!("must not be reached")
    }
    fn transition(
        &mut self,
        _: Vec<mutagen_reconcile::Change>,
    ) -> mutagen_endpoint::EndpointResult<mutagen_endpoint::TransitionResult> {
        panic!("must not be reached")
    }
    fn shutdown(&mut self) -> mutagen_endpoint::EndpointResult<()> {
        Ok(())
    }
}

#[test]
fn a_snapshot_with_escaping_names_is_refused_before_anything_happens() {
    let mut pair = Pair::new(Mode::TwoWaySafe);
    write(&pair.alpha, "a", "a");
    let error = pair
        .synchronizer
        .cycle(&mut pair.alpha_endpoint, &mut Malicious)
        .expect_err("invalid snapshot must be refused");
    assert!(matches!(error, CycleError::InvalidSnapshot { .. }), "{error}");
    let message = format!("{error}: {}", std::error::Error::source(&error).expect("source"));
    assert!(message.contains("beta returned an invalid snapshot"), "{message}");
    assert!(message.contains("../escape"), "{message}");
    assert!(!pair.dir.path().join("escape").exists());
    assert_eq!(pair.synchronizer.ancestor(), None);
}

fn limit(pair: &mut Pair, entries: u64, staging_file_size: u64) {
    let synchronizer = std::mem::take(&mut pair.synchronizer);
    pair.synchronizer =
        synchronizer.limiting(mutagen_endpoint::Limits { entries, staging_file_size });
}

#[test]
fn the_entry_limit_stops_every_change_and_says_why() {
    let mut pair = Pair::new(Mode::TwoWaySafe);
    write(&pair.alpha, "a", "a");
    write(&pair.alpha, "d/b", "b");
    // The root, a, d and d/b: 4 entries.
    limit(&mut pair, 5, 0);
    pair.converge();
    assert_eq!(read_tree(&pair.alpha), read_tree(&pair.beta));

    // Each side grows to 5 and would grow to 6 with the other's file: neither changes, both
    // say why, and a conflict is still reported.
    write(&pair.alpha, "c", "c");
    write(&pair.beta, "e", "e");
    write(&pair.alpha, "a", "alpha's a");
    write(&pair.beta, "a", "beta's a");
    let report = pair.cycle();
    assert!(!pair.beta.join("c").exists() && !pair.alpha.join("e").exists());
    for side in [&report.alpha, &report.beta] {
        let problems = &side.transition_problems;
        assert!(
            problems.len() == 1
                && problems[0]
                    .error
                    .starts_with("transitioning would exceed the allowed entry count (6 > 5)"),
            "{problems:?}"
        );
    }
    assert_eq!(report.conflicts.len(), 1, "the conflict at a is still reported");

    // A root over the limit changes nothing on either side, even what would shrink the other.
    write(&pair.beta, "f", "f");
    fs::remove_file(pair.alpha.join("c")).expect("rm");
    let report = pair.cycle();
    assert!(report.alpha.transitions.is_empty() && report.beta.transitions.is_empty());
    let problems = &report.beta.transition_problems;
    assert!(
        problems[0].error.contains("6 synchronizable entries, more than the allowed 5"),
        "{problems:?}"
    );
    assert!(pair.beta.join("f").exists() && pair.beta.join("e").exists(), "nothing lost");
    assert_eq!(report.conflicts.len(), 1);

    // Raised, everything settles.
    limit(&mut pair, 100, 0);
    pair.converge();
    assert!(pair.alpha.join("e").exists() && pair.alpha.join("f").exists());
}

#[test]
fn a_file_over_the_staging_limit_is_left_out_and_named_and_the_rest_goes_on() {
    let mut pair = Pair::new(Mode::TwoWaySafe);
    write(&pair.alpha, "small", "tiny");
    write(&pair.alpha, "big", "x".repeat(4096));
    write(&pair.alpha, "d/big-too", "y".repeat(5000));
    limit(&mut pair, 0, 1024);
    let report = pair.cycle();
    assert_eq!(read(&pair.beta.join("small")), "tiny");
    assert!(!pair.beta.join("big").exists() && !pair.beta.join("d/big-too").exists());
    let mut problems: Vec<_> = report
        .beta
        .transition_problems
        .iter()
        .map(|p| (p.path.as_str(), p.error.as_str()))
        .collect();
    problems.sort_unstable();
    assert_eq!(problems.len(), 2, "{problems:?}");
    assert_eq!(problems[0].0, "big");
    assert!(
        problems[0].1.starts_with(
            "the file is 4096 bytes, more than the maximum staging file size of 1024 bytes"
        ),
        "{problems:?}"
    );
    assert_eq!(problems[1].0, "d/big-too");
    assert!(
        !report.needs_another_cycle() || !report.beta.missing_files,
        "no cycle loop for a known cause"
    );
    // Lifted, they cross.
    limit(&mut pair, 0, 0);
    pair.converge();
    assert_eq!(read_tree(&pair.alpha), read_tree(&pair.beta));
}

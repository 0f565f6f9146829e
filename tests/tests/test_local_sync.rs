//! A realistic tree synchronized in every mode: initial sync, then edits, deletions, a rename,
//! an executable-bit change and conflicting edits on both sides.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use mutagen_reconcile::Mode;
use mutagen_tests::{Node, Pair, Tree, file_node, pseudo_random, read_tree, write};

const BIG: usize = 20 << 20;

/// A few hundred files in nested directories, executables, symbolic links, Unicode names, an
/// empty directory and a 20 MiB file.
fn populate(root: &Path) {
    for i in 0..300 {
        write(
            root,
            &format!("src/mod{}/sub{}/file{i}.txt", i % 10, i % 3),
            format!("file {i}\n").repeat(i % 50 + 1),
        );
    }
    for k in 0..3 {
        let path = format!("bin/tool{k}.sh");
        write(root, &path, format!("#!/bin/sh\necho {k}\n"));
        fs::set_permissions(root.join(path), fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    fs::create_dir_all(root.join("links")).expect("links");
    std::os::unix::fs::symlink("../src/mod0/sub0/file0.txt", root.join("links/to-file"))
        .expect("link");
    std::os::unix::fs::symlink("../src/mod1", root.join("links/to-dir")).expect("link");
    write(root, "ünïcødé/日本語.txt", "konnichiwa\n");
    write(root, "café/naïve résumé.txt", "accents\n");
    write(root, "emoji-😀.md", "smile\n");
    fs::create_dir_all(root.join("empty")).expect("empty");
    write(root, "big/blob.bin", pseudo_random(BIG, 0x2545_f491_4f6c_dd1d));
}

const A: &str = "src/mod0/sub0/file0.txt"; // alpha edits
const B: &str = "src/mod1/sub1/file1.txt"; // alpha deletes
const C: &str = "src/mod2/sub2/file2.txt"; // alpha renames to C2
const C2: &str = "src/mod2/sub2/renamed.txt";
const X: &str = "src/mod3/sub0/file3.txt"; // alpha makes executable
const D: &str = "src/mod4/sub1/file4.txt"; // beta edits
const E: &str = "beta-only/new.txt"; // beta creates
const F: &str = "src/mod5/sub2/file5.txt"; // both edit differently

fn edit_both_sides(pair: &Pair) {
    write(&pair.alpha, A, "alpha edit");
    fs::remove_file(pair.alpha.join(B)).expect("delete");
    fs::rename(pair.alpha.join(C), pair.alpha.join(C2)).expect("rename");
    fs::set_permissions(pair.alpha.join(X), fs::Permissions::from_mode(0o755)).expect("chmod");
    write(&pair.beta, D, "beta edit");
    write(&pair.beta, E, "made on beta");
    write(&pair.alpha, F, "alpha version");
    write(&pair.beta, F, "beta version!");
}

/// The trees each side should hold afterwards, from the tree both held before.
fn expected(mode: Mode, before: &Tree) -> (Tree, Tree, Vec<&'static str>) {
    let mut alpha_changes = before.clone();
    alpha_changes.insert(A.into(), file_node(b"alpha edit", false));
    alpha_changes.remove(B);
    let moved = alpha_changes.remove(C).expect("C existed");
    alpha_changes.insert(C2.into(), moved);
    let Some(Node::File(hash, _)) = alpha_changes.get(X).cloned() else { panic!("X is a file") };
    alpha_changes.insert(X.into(), Node::File(hash, true));
    alpha_changes.insert(F.into(), file_node(b"alpha version", false));

    let mut with_beta = alpha_changes.clone();
    with_beta.insert(D.into(), file_node(b"beta edit", false));
    with_beta.insert("beta-only".into(), Node::Directory);
    with_beta.insert(E.into(), file_node(b"made on beta", false));
    let mut beta_f = with_beta.clone();
    beta_f.insert(F.into(), file_node(b"beta version!", false));
    match mode {
        Mode::TwoWaySafe => (with_beta, beta_f, vec![F]),
        Mode::TwoWayResolved => (with_beta.clone(), with_beta, vec![]),
        Mode::OneWaySafe => (alpha_changes, beta_f, vec![D, F]),
        Mode::OneWayReplica => (alpha_changes.clone(), alpha_changes, vec![]),
    }
}

fn run_mode(mode: Mode) {
    let mut pair = Pair::new(mode);
    populate(&pair.alpha);
    let reports = pair.converge();
    let initial = read_tree(&pair.alpha);
    assert!(initial.len() > 300, "{mode}: tree too small");
    assert_eq!(read_tree(&pair.beta), initial, "{mode}: initial sync");
    let staged: u64 = reports.iter().map(|r| r.beta.staged_bytes).sum();
    assert!(staged >= BIG as u64, "{mode}: only {staged} bytes staged");
    assert!(reports.iter().all(|r| r.conflicts.is_empty() && r.problems().next().is_none()));

    edit_both_sides(&pair);
    let reports = pair.converge();
    let (alpha, beta, conflicts) = expected(mode, &initial);
    assert_eq!(read_tree(&pair.alpha), alpha, "{mode}: alpha after edits");
    assert_eq!(read_tree(&pair.beta), beta, "{mode}: beta after edits");
    let last = reports.last().expect("a cycle ran");
    let mut roots: Vec<&str> = last.conflicts.iter().map(|c| c.root.as_str()).collect();
    roots.sort_unstable();
    assert_eq!(roots, conflicts, "{mode}: conflicts");
    assert_eq!(
        last.problems().count(),
        0,
        "{mode}: problems {:?}",
        last.problems().collect::<Vec<_>>()
    );

    // The rename cost no transfer: beta found the content in its own root. Only new content
    // crossed over: A's edit; F's where alpha wins; D's original content where the replica
    // reverts beta's edit.
    let transferred: u64 = reports.iter().map(|r| r.beta.staged_bytes).sum();
    let alpha_wins = matches!(mode, Mode::TwoWayResolved | Mode::OneWayReplica);
    let reverted = if mode == Mode::OneWayReplica { "file 4\n".repeat(5).len() } else { 0 };
    let expected_bytes =
        "alpha edit".len() + if alpha_wins { "alpha version".len() } else { 0 } + reverted;
    assert_eq!(transferred, expected_bytes as u64, "{mode}: bytes sent to beta");

    // Steady state: a further cycle changes nothing.
    let report = pair.cycle();
    assert!(
        !report.needs_another_cycle() && report.ancestor_changes.is_empty(),
        "{mode}: not settled"
    );
}

#[test]
fn two_way_safe() {
    run_mode(Mode::TwoWaySafe);
}

#[test]
fn two_way_resolved() {
    run_mode(Mode::TwoWayResolved);
}

#[test]
fn one_way_safe() {
    run_mode(Mode::OneWaySafe);
}

#[test]
fn one_way_replica() {
    run_mode(Mode::OneWayReplica);
}

#[test]
fn a_small_edit_in_a_large_file_transfers_only_the_difference() {
    let mut pair = Pair::new(Mode::TwoWaySafe);
    let mut content = pseudo_random(4 << 20, 0x9e37_79b9_7f4a_7c15);
    write(&pair.alpha, "large.bin", &content);
    pair.converge();

    content[2 << 20] ^= 0xff;
    content.extend_from_slice(b"appended");
    write(&pair.alpha, "large.bin", &content);
    let reports = pair.converge();
    assert_eq!(fs::read(pair.beta.join("large.bin")).expect("read"), content);
    let sent: u64 = reports.iter().map(|r| r.beta.staged_bytes).sum();
    assert!(sent > 0 && sent <= 64 * 1024, "{sent} bytes sent for a one-byte edit");

    // And back: an edit on beta travels to alpha the same way.
    content[100] ^= 0xff;
    write(&pair.beta, "large.bin", &content);
    let reports = pair.converge();
    assert_eq!(fs::read(pair.alpha.join("large.bin")).expect("read"), content);
    let sent: u64 = reports.iter().map(|r| r.alpha.staged_bytes).sum();
    assert!(sent <= 64 * 1024, "{sent} bytes sent to alpha");
}

#[test]
fn an_observer_sees_the_phases_in_order_and_every_staged_file() {
    use mutagen_endpoint::{Phase, Progress, Side};
    let mut pair = Pair::new(Mode::TwoWaySafe);
    for i in 0..5 {
        write(&pair.alpha, &format!("d/f{i}"), pseudo_random(1000 + i, i as u64));
    }
    let mut phases = Vec::new();
    let mut staged_paths = Vec::new();
    let mut totals = None;
    let report = pair
        .synchronizer
        .cycle_observed(&mut pair.alpha_endpoint, &mut pair.beta_endpoint, &mut |progress| {
            match progress {
                Progress::Phase(phase) => phases.push(phase),
                Progress::Scanned(report) => assert_eq!(report.alpha.files, 5),
                Progress::Staging(side, progress) => {
                    assert_eq!((side, progress.expected_files), (Side::Beta, 5));
                    staged_paths.push(progress.path.clone());
                }
                Progress::Staged { side, files, bytes } => totals = Some((side, files, bytes)),
            }
        })
        .expect("cycle");
    let expected = [Phase::Scanning, Phase::Reconciling, Phase::Staging(Side::Beta)];
    assert_eq!(phases, [&expected[..], &[Phase::Transitioning]].concat());
    staged_paths.dedup();
    assert_eq!(staged_paths.len(), 5);
    assert_eq!(totals, Some((Side::Beta, 5, report.beta.staged_bytes)));
    assert_eq!(report.beta.staged_bytes, (1000..1005).sum::<usize>() as u64);
}

/// A settled cycle leaves a memo; a cycle over the same content reuses it (its conflicts
/// included) instead of reconciling again, and any change, on disk or by the endpoints' own
/// transitions, makes the next cycle reconcile.
#[test]
fn settled_cycles_are_remembered_and_any_change_forgets_them() {
    for watched in [false, true] {
        let mut pair = Pair::watched_if(Mode::TwoWaySafe, watched);
        write(&pair.alpha, "a", "a");
        write(&pair.alpha, "c", "base");
        pair.converge();
        assert!(pair.synchronizer.memo().is_some(), "watched: {watched}");
        let remembered = pair.synchronizer.memo().cloned();
        pair.cycle();
        assert_eq!(pair.synchronizer.memo().cloned(), remembered, "the same content: reused");

        // A change on disk is reconciled and propagated, then remembered again.
        write(&pair.alpha, "b", "b");
        pair.converge();
        assert_eq!(fs::read_to_string(pair.beta.join("b")).expect("b"), "b");
        assert_ne!(pair.synchronizer.memo().cloned(), remembered);

        // A conflict is reported on every cycle, reused or not.
        write(&pair.alpha, "c", "alpha's");
        write(&pair.beta, "c", "beta's");
        let first = pair.cycle();
        assert_eq!(first.conflicts.len(), 1, "watched: {watched}");
        let again = pair.cycle();
        assert_eq!(again.conflicts, first.conflicts);
        assert!(pair.synchronizer.memo().is_some());
        // Settling it by hand changes the content, which the next cycle reconciles.
        write(&pair.beta, "c", "alpha's");
        let settled = pair.cycle();
        assert!(settled.conflicts.is_empty(), "watched: {watched}: {settled:?}");
    }
}

/// Many rounds of changes on both sides, each followed by cycles to convergence, in watched
/// and polled pairs: the guided cycles (after a settled one, and after one that
/// transitioned) must leave both roots equal every time, as whole reconciliations would.
#[test]
fn rounds_of_changes_on_both_sides_always_converge() {
    for watched in [false, true] {
        let mut pair = Pair::watched_if(Mode::TwoWaySafe, watched);
        write(&pair.alpha, "seed", "s");
        pair.converge();
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = |bound: u64| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state % bound
        };
        for round in 0..40 {
            for _ in 0..1 + next(4) {
                // Each side works in its own directories, so that no change conflicts.
                let (root, side) =
                    if next(2) == 0 { (&pair.alpha, "a") } else { (&pair.beta, "b") };
                let path = format!("{side}{}/{side}{}", next(3), next(3));
                let target = root.join(&path);
                match next(4) {
                    0 | 1 => write(root, &path, format!("round {round}")),
                    2 => {
                        let _ = fs::remove_file(&target);
                    }
                    _ => {
                        let _ = fs::remove_dir_all(target.parent().expect("parent"));
                    }
                }
            }
            pair.converge();
            assert_eq!(
                read_tree(&pair.alpha),
                read_tree(&pair.beta),
                "round {round}, watched: {watched}"
            );
        }
    }
}

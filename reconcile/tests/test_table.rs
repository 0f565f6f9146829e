//! Table-driven reconcile tests: every branch of every mode over named fixtures.
//!
//! Fixtures: `f(n)` a file with digest n, `x(n)` the executable variant, `s(n)` a symbolic link,
//! `U` untracked, `P` problematic, `d([...])` a directory; `pf(n, bits)` and `pd(bits, [...])`
//! carry permission bits (permissions mode posix). Most cases put the node under test at
//! path `x` inside a root directory that all three trees share (`at`); root cases say so.

use std::collections::{BTreeMap, BTreeSet};

use mutagen_reconcile::invariants;
use mutagen_reconcile::{Digest, Entry, Mode, reconcile};

const ALL: &[Mode] = &Mode::ALL;
const BIDIR: &[Mode] = &[Mode::TwoWaySafe, Mode::TwoWayResolved];
const SAFE: &[Mode] = &[Mode::TwoWaySafe];
const RESOLVED: &[Mode] = &[Mode::TwoWayResolved];
const ONE_WAY: &[Mode] = &[Mode::OneWaySafe, Mode::OneWayReplica];
const OWS: &[Mode] = &[Mode::OneWaySafe];
const OWR: &[Mode] = &[Mode::OneWayReplica];

fn f(n: u8) -> Option<Entry> {
    Some(Entry::file(Digest([n; 32]), false))
}
fn x(n: u8) -> Option<Entry> {
    Some(Entry::file(Digest([n; 32]), true))
}
fn s(n: u8) -> Option<Entry> {
    Some(Entry::SymbolicLink { target: format!("target{n}") })
}
#[allow(non_snake_case)]
fn U() -> Option<Entry> {
    Some(Entry::Untracked)
}
#[allow(non_snake_case)]
fn P() -> Option<Entry> {
    Some(Entry::Problematic { problem: "permission denied".into() })
}
fn d<const N: usize>(children: [(&str, Option<Entry>); N]) -> Option<Entry> {
    Some(Entry::Directory(
        children.into_iter().filter_map(|(n, e)| Some((n.to_owned(), e?))).collect(),
    ))
}
/// A file with permission bits (permissions mode posix).
fn pf(n: u8, bits: u16) -> Option<Entry> {
    Some(Entry::File {
        digest: Digest([n; 32]),
        executable: bits & 0o111 != 0,
        permissions: Some(bits),
    })
}
/// A directory with permission bits.
fn pd<const N: usize>(bits: u16, children: [(&str, Option<Entry>); N]) -> Option<Entry> {
    let Some(Entry::Directory(mut directory)) = d(children) else { unreachable!() };
    directory.permissions = Some(bits);
    Some(Entry::Directory(directory))
}
/// Puts `entry` at path `x` inside a root directory.
fn at(entry: Option<Entry>) -> Option<Entry> {
    d([("x", entry)])
}

type Changes = Vec<(&'static str, Option<Entry>)>;

struct Case {
    name: &'static str,
    modes: &'static [Mode],
    trees: [Option<Entry>; 3],
    ancestor: Changes,
    alpha: Changes,
    beta: Changes,
    conflicts: Vec<&'static str>,
}

fn case(name: &'static str, modes: &'static [Mode], trees: [Option<Entry>; 3]) -> Case {
    Case { name, modes, trees, ancestor: vec![], alpha: vec![], beta: vec![], conflicts: vec![] }
}

impl Case {
    fn ancestor(mut self, path: &'static str, new: Option<Entry>) -> Case {
        self.ancestor.push((path, new));
        self
    }
    fn alpha(mut self, path: &'static str, new: Option<Entry>) -> Case {
        self.alpha.push((path, new));
        self
    }
    fn beta(mut self, path: &'static str, new: Option<Entry>) -> Case {
        self.beta.push((path, new));
        self
    }
    fn conflict(mut self, root: &'static str) -> Case {
        self.conflicts.push(root);
        self
    }
}

/// The trees `[ancestor, alpha, beta]` with the node under test at `x`.
fn node(ancestor: Option<Entry>, alpha: Option<Entry>, beta: Option<Entry>) -> [Option<Entry>; 3] {
    [at(ancestor), at(alpha), at(beta)]
}

fn cases() -> Vec<Case> {
    vec![
        // Nothing to do.
        case("unchanged file", ALL, node(f(1), f(1), f(1))),
        case("unchanged tree", ALL, node(d([("y", f(1))]), d([("y", f(1))]), d([("y", f(1))]))),
        case("all absent", ALL, [None, None, None]),
        // One side created.
        case("alpha created file", ALL, node(None, f(1), None)).beta("x", f(1)),
        case("alpha created symlink", ALL, node(None, s(1), None)).beta("x", s(1)),
        case("alpha created directory", ALL, node(None, d([("y", f(1))]), None))
            .beta("x", d([("y", f(1))])),
        case("beta created file", BIDIR, node(None, None, f(1))).alpha("x", f(1)),
        case("beta created file is kept", OWS, node(None, None, f(1))),
        case("beta created file is removed", OWR, node(None, None, f(1))).beta("x", None),
        // One side modified.
        case("alpha modified", ALL, node(f(1), f(2), f(1))).beta("x", f(2)),
        case("alpha made executable", ALL, node(f(1), x(1), f(1))).beta("x", x(1)),
        case("beta modified", BIDIR, node(f(1), f(1), f(2))).alpha("x", f(2)),
        case("beta modified conflicts", OWS, node(f(1), f(1), f(2))).conflict("x"),
        case("beta modified is reverted", OWR, node(f(1), f(1), f(2))).beta("x", f(1)),
        // One side deleted.
        case("alpha deleted", ALL, node(f(1), None, f(1))).beta("x", None),
        case("beta deleted", BIDIR, node(f(1), f(1), None)).alpha("x", None),
        case("beta deleted is restored", ONE_WAY, node(f(1), f(1), None)).beta("x", f(1)),
        // Type changes.
        case("alpha file became directory", ALL, node(f(1), d([("y", f(2))]), f(1)))
            .beta("x", d([("y", f(2))])),
        case(
            "beta directory became symlink",
            BIDIR,
            node(d([("y", f(1))]), d([("y", f(1))]), s(1)),
        )
        .alpha("x", s(1)),
        case("beta directory became symlink", OWS, node(d([("y", f(1))]), d([("y", f(1))]), s(1)))
            .conflict("x"),
        case("beta directory became symlink", OWR, node(d([("y", f(1))]), d([("y", f(1))]), s(1)))
            .beta("x", d([("y", f(1))])),
        // Both sides agree.
        case("both modified the same", ALL, node(f(1), f(2), f(2))).ancestor("x", f(2)),
        case("both created the same", ALL, node(None, f(2), f(2))).ancestor("x", f(2)),
        case("both deleted", ALL, node(f(1), None, None)).ancestor("x", None),
        case("both made untracked", ALL, node(f(1), U(), U())).ancestor("x", None),
        case("both created same directory", ALL, node(None, d([("y", f(1))]), d([("y", f(1))])))
            .ancestor("x", d([]))
            .ancestor("x/y", f(1)),
        case("both turned directory into same file", ALL, node(d([("y", f(1))]), f(3), f(3)))
            .ancestor("x", f(3)),
        // Both sides changed differently.
        case("both modified", SAFE, node(f(1), f(2), f(3))).conflict("x"),
        case("both modified, alpha wins", RESOLVED, node(f(1), f(2), f(3))).beta("x", f(2)),
        case("both modified", OWS, node(f(1), f(2), f(3))).conflict("x"),
        case("both modified, alpha wins", OWR, node(f(1), f(2), f(3))).beta("x", f(2)),
        case("both created", SAFE, node(None, f(2), f(3))).conflict("x"),
        case("both created, alpha wins", RESOLVED, node(None, f(2), f(3))).beta("x", f(2)),
        case("both created", OWS, node(None, f(2), f(3))).conflict("x"),
        case("both created, alpha wins", OWR, node(None, f(2), f(3))).beta("x", f(2)),
        case("file vs symlink", SAFE, node(f(1), s(1), f(2))).conflict("x"),
        case("directory vs file", SAFE, node(None, d([("y", f(1))]), f(1))).conflict("x"),
        // Modification beats deletion.
        case("alpha modified, beta deleted", ALL, node(f(1), f(2), None)).beta("x", f(2)),
        case("alpha deleted, beta modified", BIDIR, node(f(1), None, f(2))).alpha("x", f(2)),
        case("alpha deleted, beta modified is kept", OWS, node(f(1), None, f(2)))
            .ancestor("x", None),
        case("alpha deleted, beta modified is removed", OWR, node(f(1), None, f(2)))
            .beta("x", None),
        case(
            "alpha deleted directory, beta added inside",
            BIDIR,
            node(d([("y", f(1))]), None, d([("y", f(1)), ("z", f(2))])),
        )
        .alpha("x", d([("y", f(1)), ("z", f(2))])),
        case(
            "alpha deleted directory, beta added inside",
            OWS,
            node(d([("y", f(1))]), None, d([("y", f(1)), ("z", f(2))])),
        )
        .conflict("x"),
        case(
            "alpha deleted directory, beta added inside",
            OWR,
            node(d([("y", f(1))]), None, d([("y", f(1)), ("z", f(2))])),
        )
        .beta("x", None),
        case(
            "alpha replaced directory, beta deleted a child",
            BIDIR,
            node(d([("y", f(1)), ("z", f(1))]), f(5), d([("y", f(1))])),
        )
        .beta("x", f(5)),
        // Both only deleted: the complete deletion wins over the partial one.
        case(
            "both deleted parts of a directory",
            ALL,
            node(d([("y", f(1)), ("z", f(2))]), None, d([("y", f(1))])),
        )
        .beta("x", None),
        case(
            "both deleted parts of a directory, mirrored",
            BIDIR,
            node(d([("y", f(1)), ("z", f(2))]), d([("y", f(1))]), None),
        )
        .alpha("x", None),
        // Nested changes are independent.
        case(
            "deep modification and sibling creation",
            BIDIR,
            node(
                d([("y", d([("f", f(1))]))]),
                d([("y", d([("f", f(2))]))]),
                d([("y", d([("f", f(1)), ("g", f(3))]))]),
            ),
        )
        .beta("x/y/f", f(2))
        .alpha("x/y/g", f(3)),
        case(
            "deep modification and sibling creation",
            OWS,
            node(
                d([("y", d([("f", f(1))]))]),
                d([("y", d([("f", f(2))]))]),
                d([("y", d([("f", f(1)), ("g", f(3))]))]),
            ),
        )
        .beta("x/y/f", f(2)),
        case(
            "deep modification and sibling creation",
            OWR,
            node(
                d([("y", d([("f", f(1))]))]),
                d([("y", d([("f", f(2))]))]),
                d([("y", d([("f", f(1)), ("g", f(3))]))]),
            ),
        )
        .beta("x/y/f", f(2))
        .beta("x/y/g", None),
        // Untracked content is never removed.
        case(
            "beta's untracked content blocks alpha's deletion",
            ALL,
            node(d([("y", f(1))]), None, d([("y", f(1)), ("u", U())])),
        )
        .conflict("x"),
        case("beta's untracked blocks alpha's creation", ALL, node(None, f(1), U())).conflict("x"),
        case("alpha's untracked blocks beta's creation", BIDIR, node(None, U(), f(1)))
            .conflict("x"),
        case("alpha's untracked, beta's creation kept", OWS, node(None, U(), f(1))),
        case("alpha's untracked, beta's creation removed", OWR, node(None, U(), f(1)))
            .beta("x", None),
        case(
            "alpha's untracked content blocks beta's deletion",
            BIDIR,
            node(d([("y", f(1))]), d([("y", f(1)), ("u", U())]), None),
        )
        .conflict("x"),
        case(
            "beta's deletion reverted around alpha's untracked",
            ONE_WAY,
            node(d([("y", f(1))]), d([("y", f(1)), ("u", U())]), None),
        )
        .beta("x", d([("y", f(1))])),
        case(
            "both changed, beta has untracked content",
            RESOLVED,
            node(d([("y", f(1))]), f(2), d([("y", f(1)), ("z", f(3)), ("u", U())])),
        )
        .conflict("x"),
        case("alpha's file became untracked", ALL, node(f(1), U(), f(1))).beta("x", None),
        // Problematic content blocks only its own path.
        case(
            "problematic alpha child, modified sibling",
            ALL,
            node(
                d([("p", f(1)), ("q", f(1))]),
                d([("p", P()), ("q", f(2))]),
                d([("p", f(1)), ("q", f(1))]),
            ),
        )
        .beta("x/q", f(2)),
        case("problematic beta, alpha deleted", ALL, node(f(1), None, P())),
        case("problematic alpha, beta modified", ALL, node(f(1), P(), f(2))),
        case("problematic both", ALL, node(f(1), P(), P())),
        case(
            "problematic child inside a directory alpha deleted",
            BIDIR,
            node(d([("y", f(1))]), None, d([("y", f(1)), ("p", P())])),
        )
        .conflict("x"),
        case(
            "alpha's new directory with a problematic child",
            ALL,
            node(None, d([("ok", f(1)), ("p", P())]), None),
        )
        .beta("x", d([("ok", f(1))])),
        // Root cases.
        case("root created on alpha only", ALL, [None, d([("a", f(1))]), None])
            .beta("", d([("a", f(1))])),
        case("root created on beta only", BIDIR, [None, None, d([("a", f(1))])])
            .alpha("", d([("a", f(1))])),
        case("root file created on alpha", ALL, [None, f(1), None]).beta("", f(1)),
        case("root deleted on alpha", ALL, [d([("a", f(1))]), None, d([("a", f(1))])])
            .beta("", None),
        case("both roots created equal", ALL, [None, d([]), d([])]).ancestor("", d([])),
        // Permission bits (permissions mode posix): a file's bits are part of its content.
        case("alpha changed a file's bits", ALL, node(pf(1, 0o644), pf(1, 0o600), pf(1, 0o644)))
            .beta("x", pf(1, 0o600)),
        case("beta changed a file's bits", BIDIR, node(pf(1, 0o644), pf(1, 0o644), pf(1, 0o640)))
            .alpha("x", pf(1, 0o640)),
        case("beta changed a file's bits", OWS, node(pf(1, 0o644), pf(1, 0o644), pf(1, 0o640)))
            .conflict("x"),
        case("beta changed a file's bits", OWR, node(pf(1, 0o644), pf(1, 0o644), pf(1, 0o640)))
            .beta("x", pf(1, 0o644)),
        case("both changed a file's bits", SAFE, node(pf(1, 0o644), pf(1, 0o600), pf(1, 0o640)))
            .conflict("x"),
        case(
            "both changed a file's bits",
            RESOLVED,
            node(pf(1, 0o644), pf(1, 0o600), pf(1, 0o640)),
        )
        .beta("x", pf(1, 0o600)),
        case(
            "alpha edited, beta changed bits",
            SAFE,
            node(pf(1, 0o644), pf(2, 0o644), pf(1, 0o600)),
        )
        .conflict("x"),
        // A directory's own bits are reconciled apart from its contents.
        case(
            "alpha changed a directory's bits",
            ALL,
            node(pd(0o755, [("y", f(1))]), pd(0o2775, [("y", f(1))]), pd(0o755, [("y", f(1))])),
        )
        .beta("x", pd(0o2775, [])),
        case(
            "beta changed a directory's bits",
            BIDIR,
            node(pd(0o755, [("y", f(1))]), pd(0o755, [("y", f(1))]), pd(0o700, [("y", f(1))])),
        )
        .alpha("x", pd(0o700, [])),
        case(
            "beta changed a directory's bits",
            OWS,
            node(pd(0o755, [("y", f(1))]), pd(0o755, [("y", f(1))]), pd(0o700, [("y", f(1))])),
        )
        .conflict("x"),
        case(
            "beta changed a directory's bits",
            OWR,
            node(pd(0o755, [("y", f(1))]), pd(0o755, [("y", f(1))]), pd(0o700, [("y", f(1))])),
        )
        .beta("x", pd(0o755, [])),
        case(
            "both changed a directory's bits, beta edited inside",
            SAFE,
            node(pd(0o755, [("y", f(1))]), pd(0o700, [("y", f(1))]), pd(0o750, [("y", f(2))])),
        )
        .conflict("x")
        .alpha("x/y", f(2)),
        case(
            "both changed a directory's bits, beta edited inside",
            RESOLVED,
            node(pd(0o755, [("y", f(1))]), pd(0o700, [("y", f(1))]), pd(0o750, [("y", f(2))])),
        )
        .beta("x", pd(0o700, []))
        .alpha("x/y", f(2)),
        case(
            "both changed a directory's bits the same",
            ALL,
            node(pd(0o755, [("y", f(1))]), pd(0o700, [("y", f(1))]), pd(0o700, [("y", f(1))])),
        )
        .ancestor("x", pd(0o700, [])),
        case(
            "both created a directory with different bits",
            SAFE,
            node(None, pd(0o755, [("y", f(1))]), pd(0o700, [("y", f(1))])),
        )
        .ancestor("x", d([]))
        .ancestor("x/y", f(1))
        .conflict("x"),
        case(
            "both created a directory with different bits",
            RESOLVED,
            node(None, pd(0o755, [("y", f(1))]), pd(0o700, [("y", f(1))])),
        )
        .ancestor("x", d([]))
        .ancestor("x/y", f(1))
        .beta("x", pd(0o755, [])),
        case(
            "both created a directory with the same bits",
            ALL,
            node(None, pd(0o750, []), pd(0o750, [])),
        )
        .ancestor("x", pd(0o750, [])),
        case(
            "alpha changed bits inside a directory beta deleted",
            BIDIR,
            node(pd(0o755, [("y", pd(0o755, []))]), pd(0o755, [("y", pd(0o700, []))]), None),
        )
        .beta("x", pd(0o755, [("y", pd(0o700, []))])),
        case(
            "beta changed bits inside a directory alpha deleted",
            SAFE,
            node(
                pd(0o755, [("y", pd(0o755, [])), ("z", f(1))]),
                None,
                pd(0o755, [("y", pd(0o700, [])), ("z", f(1))]),
            ),
        )
        .alpha("x", pd(0o755, [("y", pd(0o700, [])), ("z", f(1))])),
        case(
            "alpha changed the root's bits",
            ALL,
            [pd(0o755, [("a", f(1))]), pd(0o700, [("a", f(1))]), pd(0o755, [("a", f(1))])],
        )
        .beta("", pd(0o700, [])),
    ]
}

fn summarize(changes: &[mutagen_reconcile::Change]) -> BTreeMap<String, Option<Entry>> {
    changes.iter().map(|c| (c.path.clone(), c.new.clone())).collect()
}

fn expected(changes: &Changes) -> BTreeMap<String, Option<Entry>> {
    changes.iter().map(|(p, e)| ((*p).to_owned(), e.clone())).collect()
}

#[test]
fn reconcile_table() {
    let mut failures = Vec::new();
    let mut covered = BTreeSet::new();
    for case in cases() {
        let [ancestor, alpha, beta] = &case.trees;
        for &mode in case.modes {
            covered.insert((case.name, mode.name()));
            let out = reconcile(ancestor.as_ref(), alpha.as_ref(), beta.as_ref(), mode);
            let conflicts: BTreeSet<&str> = out.conflicts.iter().map(|c| c.root.as_str()).collect();
            let checks = [
                ("ancestor changes", summarize(&out.ancestor_changes) == expected(&case.ancestor)),
                ("alpha transitions", summarize(&out.alpha_transitions) == expected(&case.alpha)),
                ("beta transitions", summarize(&out.beta_transitions) == expected(&case.beta)),
                ("conflicts", conflicts == case.conflicts.iter().copied().collect()),
            ];
            for (what, ok) in checks {
                if !ok {
                    failures.push(format!("{} [{mode}]: {what} differ: {out:#?}", case.name));
                }
            }
            let invariants =
                invariants::check(ancestor.as_ref(), alpha.as_ref(), beta.as_ref(), mode);
            if let Err(message) = invariants {
                failures.push(format!("{} [{mode}]: invariant: {message}", case.name));
            }
        }
    }
    assert!(failures.is_empty(), "{} failures:\n{}", failures.len(), failures.join("\n"));
    assert!(covered.len() > 200, "table shrank to {} case/mode pairs", covered.len());
}

#[test]
fn conflict_reports_both_sides_changes() {
    let [ancestor, alpha, beta] = node(f(1), f(2), f(3));
    let out = reconcile(ancestor.as_ref(), alpha.as_ref(), beta.as_ref(), Mode::TwoWaySafe);
    let conflict = &out.conflicts[0];
    assert_eq!(conflict.alpha_changes[0].old, f(1));
    assert_eq!(conflict.alpha_changes[0].new, f(2));
    assert_eq!(conflict.beta_changes[0].new, f(3));
}

#[test]
fn blocking_unsynchronizable_content_is_reported() {
    let [ancestor, alpha, beta] = node(d([("y", f(1))]), None, d([("y", f(1)), ("u", U())]));
    let out = reconcile(ancestor.as_ref(), alpha.as_ref(), beta.as_ref(), Mode::TwoWaySafe);
    let conflict = &out.conflicts[0];
    assert_eq!(conflict.beta_changes.len(), 1);
    assert_eq!(conflict.beta_changes[0].path, "x/u");
    assert_eq!(conflict.beta_changes[0].new, U());
}

/// Guided reconciliation visits the way to each dirty directory in name order, also where a
/// sibling's name sorts between a directory's and its slash (`a-b` beside `a/x`).
#[test]
fn guided_reconciliation_keeps_the_order_of_a_whole_walk() {
    let tree =
        |n: u8| d([("a", d([("x", d([("f", f(n))]))])), ("a-b", d([("g", f(n))])), ("c", f(1))]);
    let (ancestor, alpha, beta) = (tree(1), tree(2), tree(1));
    let dirty: BTreeSet<String> = ["a/x".to_owned(), "a-b".to_owned()].into();
    let whole = reconcile(ancestor.as_ref(), alpha.as_ref(), beta.as_ref(), Mode::TwoWaySafe);
    let guided = mutagen_reconcile::reconcile_dirty(
        ancestor.as_ref(),
        alpha.as_ref(),
        beta.as_ref(),
        Mode::TwoWaySafe,
        &dirty,
        &[],
    );
    assert_eq!(guided, whole);
    let paths: Vec<&str> = guided.beta_transitions.iter().map(|c| c.path.as_str()).collect();
    assert_eq!(paths, ["a/x/f", "a-b/g"]);
}

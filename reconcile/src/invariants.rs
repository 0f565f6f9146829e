//! Properties every reconciliation must satisfy, and a byte-driven builder of input trees.
//!
//! The property tests (`cargo test`) and the fuzz target (`fuzz/`) both call
//! [`check_bytes`]: the same bytes always build the same trees, so a fuzz finding saved under
//! `fuzz/corpus/` or `fuzz/artifacts/` is replayed by the ordinary test suite.

use std::collections::BTreeMap;

use crate::change::{Change, apply, apply_change};
use crate::entry::{Digest, Entry};
use crate::mode::Mode;
use crate::reconcile::{Reconciliation, reconcile};

/// Checks every invariant of [`reconcile`] on one input; the error says which one failed.
///
/// 1. Every transition's `old` equals the side's content at that path (the directory alone,
///    for a change of its permission bits) and is fully synchronizable (so untracked and
///    problematic content is never removed); every `new` is fully synchronizable.
/// 2. One-way modes never transition alpha.
/// 3. No ancestor change, transition or conflict sits at a path where either side is
///    problematic.
/// 4. Convergence: after applying the transitions to the sides and updating the ancestor, a
///    second reconciliation produces no transitions or ancestor changes and the same conflicts,
///    the ancestor holds only synchronizable content, and where the two sides are now equal
///    (and fully synchronizable), the ancestor equals them.
/// 5. In two-way-safe, swapping alpha and beta swaps the outputs.
pub fn check(
    ancestor: Option<&Entry>,
    alpha: Option<&Entry>,
    beta: Option<&Entry>,
    mode: Mode,
) -> Result<(), String> {
    let result = reconcile(ancestor, alpha, beta, mode);
    check_transitions("alpha", alpha, &result.alpha_transitions)?;
    check_transitions("beta", beta, &result.beta_transitions)?;
    if !mode.is_bidirectional() && !result.alpha_transitions.is_empty() {
        return Err(format!("{mode} produced alpha transitions: {:?}", result.alpha_transitions));
    }
    check_problematic_paths(alpha, beta, &result)?;
    check_convergence(ancestor, alpha, beta, mode, &result)?;
    if mode == Mode::TwoWaySafe {
        check_symmetry(ancestor, alpha, beta, &result)?;
    }
    Ok(())
}

fn get<'a>(tree: Option<&'a Entry>, path: &str) -> Option<&'a Entry> {
    tree.and_then(|tree| tree.get(path))
}

fn check_transitions(side: &str, tree: Option<&Entry>, changes: &[Change]) -> Result<(), String> {
    for change in changes {
        let held = get(tree, &change.path);
        // A change of a directory's bits holds the directory without its children.
        let stale = if change.is_permissions_only() {
            held.map(Entry::slim) != change.old
        } else {
            held != change.old.as_ref()
        };
        if stale {
            return Err(format!("{side} transition at {:?} has a stale old", change.path));
        }
        let unsync =
            |entry: &Option<Entry>| entry.as_ref().is_some_and(|e| !e.is_fully_synchronizable());
        if unsync(&change.old) {
            return Err(format!(
                "{side} transition at {:?} removes unsynchronizable content",
                change.path
            ));
        }
        if unsync(&change.new) {
            return Err(format!(
                "{side} transition at {:?} creates unsynchronizable content",
                change.path
            ));
        }
    }
    Ok(())
}

fn check_problematic_paths(
    alpha: Option<&Entry>,
    beta: Option<&Entry>,
    result: &Reconciliation,
) -> Result<(), String> {
    let problematic = |path: &str| {
        [alpha, beta].iter().any(|tree| matches!(get(*tree, path), Some(Entry::Problematic { .. })))
    };
    let touched = result
        .ancestor_changes
        .iter()
        .chain(&result.alpha_transitions)
        .chain(&result.beta_transitions)
        .map(|change| change.path.as_str())
        .chain(result.conflicts.iter().map(|conflict| conflict.root.as_str()));
    match touched.into_iter().find(|path| problematic(path)) {
        Some(path) => Err(format!("output at problematic path {path:?}")),
        None => Ok(()),
    }
}

fn apply_transitions(tree: Option<&Entry>, changes: &[Change]) -> Result<Option<Entry>, String> {
    apply(tree.cloned(), changes).map_err(|e| e.to_string())
}

fn check_convergence(
    ancestor: Option<&Entry>,
    alpha: Option<&Entry>,
    beta: Option<&Entry>,
    mode: Mode,
    result: &Reconciliation,
) -> Result<(), String> {
    let new_alpha = apply_transitions(alpha, &result.alpha_transitions)?;
    let new_beta = apply_transitions(beta, &result.beta_transitions)?;
    let mut new_ancestor = apply_transitions(ancestor, &result.ancestor_changes)?;
    for change in result.alpha_transitions.iter().chain(&result.beta_transitions) {
        apply_change(&mut new_ancestor, change).map_err(|e| format!("ancestor update: {e}"))?;
    }
    if let Some(tree) = &new_ancestor {
        tree.validate(true).map_err(|e| format!("new ancestor: {e}"))?;
    }
    let synchronizable = new_alpha.as_ref().is_none_or(Entry::is_fully_synchronizable);
    if new_alpha == new_beta && synchronizable && new_ancestor != new_alpha {
        return Err(format!("the sides agree but the ancestor does not: {new_ancestor:?}"));
    }
    let again = reconcile(new_ancestor.as_ref(), new_alpha.as_ref(), new_beta.as_ref(), mode);
    if !again.is_settled() {
        return Err(format!("second reconciliation is not settled: {again:?}"));
    }
    let roots = |r: &Reconciliation| r.conflicts.iter().map(|c| c.root.clone()).collect::<Vec<_>>();
    if roots(&again) != roots(result) {
        return Err(format!("conflicts changed: {:?} -> {:?}", roots(result), roots(&again)));
    }
    Ok(())
}

fn check_symmetry(
    ancestor: Option<&Entry>,
    alpha: Option<&Entry>,
    beta: Option<&Entry>,
    result: &Reconciliation,
) -> Result<(), String> {
    let swapped = reconcile(ancestor, beta, alpha, Mode::TwoWaySafe);
    let mirrored = Reconciliation {
        ancestor_changes: swapped.ancestor_changes,
        alpha_transitions: swapped.beta_transitions,
        beta_transitions: swapped.alpha_transitions,
        conflicts: swapped
            .conflicts
            .into_iter()
            .map(|c| crate::Conflict {
                root: c.root,
                alpha_changes: c.beta_changes,
                beta_changes: c.alpha_changes,
            })
            .collect(),
    };
    if &mirrored != result {
        return Err(format!("swapping alpha and beta is not symmetric:\n{result:?}\n{mirrored:?}"));
    }
    Ok(())
}

/// Builds an input from bytes (see [`build`]) and checks it; inputs too short to build are
/// accepted. With the bytes left, also checks [`crate::reconcile_dirty`] against
/// [`reconcile`], from the settled state a cycle over the input leads to.
pub fn check_bytes(data: &[u8]) -> Result<(), String> {
    let mut bytes = Bytes(data, false);
    let (ancestor, alpha, beta, mode) = bytes.input();
    check(ancestor.as_ref(), alpha.as_ref(), beta.as_ref(), mode)?;
    check_dirty(&mut bytes, ancestor, alpha, beta, mode)
}

/// 6. Guided reconciliation: from the settled state a cycle over the input leads to, both
///    sides change at random (the rest of the bytes); [`reconcile_dirty`] over the parents
///    of what changed, with the settled conflicts, returns exactly what [`reconcile`] does,
///    and so it does over only the outermost of those parents (a dirty directory is
///    reconciled whole).
fn check_dirty(
    bytes: &mut Bytes<'_>,
    ancestor: Option<Entry>,
    alpha: Option<Entry>,
    beta: Option<Entry>,
    mode: Mode,
) -> Result<(), String> {
    // One cycle settles (convergence, checked above).
    let first = reconcile(ancestor.as_ref(), alpha.as_ref(), beta.as_ref(), mode);
    let alpha = apply_transitions(alpha.as_ref(), &first.alpha_transitions)?;
    let beta = apply_transitions(beta.as_ref(), &first.beta_transitions)?;
    let mut ancestor = apply_transitions(ancestor.as_ref(), &first.ancestor_changes)?;
    for change in first.alpha_transitions.iter().chain(&first.beta_transitions) {
        apply_change(&mut ancestor, change).map_err(|e| format!("ancestor update: {e}"))?;
    }
    let settled = reconcile(ancestor.as_ref(), alpha.as_ref(), beta.as_ref(), mode);
    let new_alpha = bytes.mutate(alpha.as_ref(), 0);
    let new_beta = bytes.mutate(beta.as_ref(), 0);
    let mut dirty = std::collections::BTreeSet::new();
    for change in crate::change::diff(alpha.as_ref(), new_alpha.as_ref())
        .into_iter()
        .chain(crate::change::diff(beta.as_ref(), new_beta.as_ref()))
    {
        dirty.insert(crate::entry::parent_path(&change.path).to_owned());
    }
    let (a, x, y) = (ancestor.as_ref(), new_alpha.as_ref(), new_beta.as_ref());
    let whole = reconcile(a, x, y, mode);
    let outermost = dirty
        .iter()
        .filter(|path| {
            !dirty.iter().any(|other| {
                (other.is_empty() && !path.is_empty())
                    || path.strip_prefix(other.as_str()).is_some_and(|rest| rest.starts_with('/'))
            })
        })
        .cloned()
        .collect();
    for dirty in [dirty, outermost] {
        let guided = crate::reconcile::reconcile_dirty(a, x, y, mode, &dirty, &settled.conflicts);
        if guided != whole {
            return Err(format!(
                "guided reconciliation over {dirty:?} differs:\n{guided:?}\nwhole:\n{whole:?}"
            ));
        }
    }
    Ok(())
}

/// Builds `(ancestor, alpha, beta, mode)` from bytes.
///
/// The first byte picks the mode, and whether files and directories carry permission bits
/// (permissions mode posix, from a set of three each); the ancestor is a random tree over a
/// tiny alphabet (names `a`-`d`, four digests, three link targets) so that collisions are
/// common; alpha and beta are independent random mutations of the ancestor (kept, deleted,
/// replaced, extended, bits changed), which is how real sides relate to their ancestor.
/// Running out of bytes keeps the rest unchanged.
pub fn build(data: &[u8]) -> (Option<Entry>, Option<Entry>, Option<Entry>, Mode) {
    Bytes(data, false).input()
}

impl Bytes<'_> {
    /// See [`build`].
    fn input(&mut self) -> (Option<Entry>, Option<Entry>, Option<Entry>, Mode) {
        let bytes = self;
        let first = bytes.next();
        let mode = Mode::ALL[usize::from(first) % 4];
        bytes.1 = first & 4 != 0;
        // The ancestor only ever holds synchronizable content.
        let ancestor = bytes.tree(0).and_then(|tree| tree.synchronizable());
        let alpha = bytes.mutate(ancestor.as_ref(), 0);
        let beta = bytes.mutate(ancestor.as_ref(), 0);
        (ancestor, alpha, beta, mode)
    }
}

const MAX_DEPTH: usize = 3;
const NAMES: [&str; 4] = ["a", "b", "c", "d"];

/// The bytes left, and whether entries carry permission bits.
struct Bytes<'a>(&'a [u8], bool);

const FILE_BITS: [u16; 3] = [0o644, 0o600, 0o755];
const DIRECTORY_BITS: [u16; 3] = [0o755, 0o700, 0o2775];

impl Bytes<'_> {
    fn bits(&mut self, set: &[u16; 3]) -> Option<u16> {
        if !self.1 {
            return None;
        }
        Some(set[usize::from(self.next()) % 3])
    }

    fn next(&mut self) -> u8 {
        let (first, rest) = self.0.split_first().unwrap_or((&0, &[]));
        self.0 = rest;
        *first
    }

    fn tree(&mut self, depth: usize) -> Option<Entry> {
        let byte = self.next();
        Some(match byte % 8 {
            0 => return None,
            1..=3 if depth < MAX_DEPTH => {
                let count = usize::from(self.next() % 4);
                let mut contents = BTreeMap::new();
                for _ in 0..count {
                    let name = NAMES[usize::from(self.next() % 4)].to_owned();
                    if let Some(child) = self.tree(depth + 1) {
                        contents.insert(name, child);
                    }
                }
                let permissions = self.bits(&DIRECTORY_BITS);
                Entry::Directory(crate::Directory { children: contents, permissions })
            }
            1..=4 => match self.bits(&FILE_BITS) {
                Some(bits) => Entry::File {
                    digest: Digest([byte / 8 % 4; 32]),
                    executable: bits & 0o111 != 0,
                    permissions: Some(bits),
                },
                None => Entry::file(Digest([byte / 8 % 4; 32]), byte >= 128),
            },
            5 => Entry::SymbolicLink { target: format!("t{}", byte / 8 % 3) },
            6 => Entry::Untracked,
            _ => Entry::Problematic { problem: format!("p{}", byte / 8 % 2) },
        })
    }

    fn mutate(&mut self, entry: Option<&Entry>, depth: usize) -> Option<Entry> {
        if self.0.is_empty() {
            return entry.cloned();
        }
        match self.next() % 8 {
            0 => None,
            1 => self.tree(depth),
            // The same content with other bits.
            2 if self.1 => match entry {
                Some(Entry::File { digest, .. }) => {
                    let bits = self.bits(&FILE_BITS).unwrap_or_default();
                    let executable = bits & 0o111 != 0;
                    Some(Entry::File { digest: *digest, executable, permissions: Some(bits) })
                }
                Some(Entry::Directory(contents)) => {
                    let permissions = self.bits(&DIRECTORY_BITS);
                    Some(Entry::Directory(crate::Directory { permissions, ..contents.clone() }))
                }
                other => other.cloned(),
            },
            _ => match entry {
                Some(Entry::Directory(contents)) => {
                    let mut mutated = BTreeMap::new();
                    for (name, child) in contents {
                        if let Some(child) = self.mutate(Some(child), depth + 1) {
                            mutated.insert(name.clone(), child);
                        }
                    }
                    if self.next().is_multiple_of(4) && depth < MAX_DEPTH {
                        let name = NAMES[usize::from(self.next() % 4)].to_owned();
                        if let Some(child) = self.tree(depth + 1) {
                            mutated.insert(name, child);
                        }
                    }
                    Some(Entry::Directory(crate::Directory {
                        children: mutated,
                        permissions: contents.permissions,
                    }))
                }
                other => other.cloned(),
            },
        }
    }
}

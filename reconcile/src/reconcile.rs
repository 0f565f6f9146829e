//! Three-way reconciliation of the ancestor, alpha and beta.
//!
//! The walk visits every path present in any of the three trees (below nodes where it can
//! continue) and decides, per node:
//!
//! 1. problematic content on either side: nothing happens at this path (the scan problem says
//!    why); paths elsewhere are unaffected;
//! 2. neither side holds synchronizable content: the ancestor forgets the path;
//! 3. both sides agree (shallow-equal): the ancestor takes that value and the walk continues into
//!    the children; where both hold a directory, its own permission bits (permissions mode
//!    posix) are reconciled first, apart from its contents, by the same rules as content
//!    (below), with two differences: a disagreement is a conflict about the bits alone, which
//!    blocks nothing inside the directory, and where the two sides created the directory with
//!    different bits the ancestor records none;
//! 4. otherwise the mode decides:
//!    - two-way modes: a side that did not change takes the other side's content; where both
//!      changed, a side that only deleted takes the other's content (modification beats
//!      deletion), two pure deletions complete each other, and anything else is a conflict
//!      (two-way-safe) or alpha's content wins (two-way-resolved);
//!    - one-way-safe: beta takes alpha's content if beta only deleted things; beta's own
//!      creations where alpha has nothing are left alone and forgotten; otherwise a conflict;
//!    - one-way-replica: beta takes alpha's content.
//!
//! Every transition produced carries as `old` exactly the side's scanned content at that path,
//! which is always fully synchronizable: where a side holds untracked or problematic content
//! that a transition would have to remove, a conflict is reported instead.

use serde::{Deserialize, Serialize};

use crate::change::{Change, Conflict, diff_at, merge_children};
use crate::entry::{Directory, Entry, children, join_path, shallow_eq};
use crate::mode::Mode;

/// The outcome of [`reconcile`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reconciliation {
    /// Updates to the ancestor for paths where both sides already agree.
    pub ancestor_changes: Vec<Change>,
    /// Changes to make on alpha (always empty in one-way modes).
    pub alpha_transitions: Vec<Change>,
    /// Changes to make on beta.
    pub beta_transitions: Vec<Change>,
    /// Disagreements left for the user.
    pub conflicts: Vec<Conflict>,
}

impl Reconciliation {
    /// Returns whether nothing needs to change on either side or in the ancestor.
    pub fn is_settled(&self) -> bool {
        self.ancestor_changes.is_empty()
            && self.alpha_transitions.is_empty()
            && self.beta_transitions.is_empty()
    }
}

/// Reconciles `alpha` and `beta` against their common `ancestor` under `mode`.
///
/// Outputs are depth-first; siblings are visited in name order.
pub fn reconcile(
    ancestor: Option<&Entry>,
    alpha: Option<&Entry>,
    beta: Option<&Entry>,
    mode: Mode,
) -> Reconciliation {
    let mut reconciler = Reconciler { mode, out: Reconciliation::default() };
    reconciler.reconcile("", ancestor, alpha, beta);
    reconciler.out
}

/// Like [`reconcile`], for trees that differ from those of an earlier reconciliation that
/// settled (no ancestor change, no transition; its conflicts `settled_conflicts`) only in
/// `dirty`: root-relative directories (`""` the root) whose listing may have changed on
/// either side, a changed entry's own bits and kind included. Every path whose entry changed
/// has its parent, or an ancestor of its parent, in `dirty` (the root: `""` itself), since a
/// dirty directory is reconciled whole.
///
/// Only the directories on the way to a dirty one are visited, and each dirty directory (or
/// a node on the way that is not a directory in all three trees) is reconciled whole; the
/// settled conflicts outside those are still true and are kept. The result equals what
/// [`reconcile`] returns, at a cost that grows with what changed rather than with the trees
/// (the property tests check both).
pub fn reconcile_dirty(
    ancestor: Option<&Entry>,
    alpha: Option<&Entry>,
    beta: Option<&Entry>,
    mode: Mode,
    dirty: &std::collections::BTreeSet<String>,
    settled_conflicts: &[Conflict],
) -> Reconciliation {
    let mut reconciler = Reconciler { mode, out: Reconciliation::default() };
    let mut whole = Vec::new();
    guided(&mut reconciler, dirty, &mut whole, "", [ancestor, alpha, beta]);
    let mut out = reconciler.out;
    let inside = |root: &str| {
        whole.iter().any(|region: &String| {
            region.is_empty()
                || root == region
                || root.strip_prefix(region.as_str()).is_some_and(|rest| rest.starts_with('/'))
        })
    };
    out.conflicts.extend(settled_conflicts.iter().filter(|c| !inside(&c.root)).cloned());
    // In the order of a whole walk: depth first, parents first, siblings by name.
    out.conflicts.sort_by(|a, b| a.root.split('/').cmp(b.root.split('/')));
    out
}

/// Visits `path` for [`reconcile_dirty`]; `whole` collects the paths reconciled whole.
fn guided(
    reconciler: &mut Reconciler,
    dirty: &std::collections::BTreeSet<String>,
    whole: &mut Vec<String>,
    path: &str,
    [ancestor, alpha, beta]: [Option<&Entry>; 3],
) {
    let prefix = if path.is_empty() { 0 } else { path.len() + 1 };
    let below = || crate::entry::paths_below(dirty, path);
    if dirty.contains(path) || (below().next().is_some() && !all_directories(ancestor, alpha, beta))
    {
        whole.push(path.to_owned());
        reconciler.reconcile(path, ancestor, alpha, beta);
        return;
    }
    // The children on the way to a dirty directory, in name order, once each.
    let mut names: Vec<&str> = below()
        .map(|dirty| dirty[prefix..].split('/').next().unwrap_or_default())
        .filter(|name| !name.is_empty())
        .collect();
    names.sort_unstable();
    names.dedup();
    let maps = [children(ancestor), children(alpha), children(beta)];
    for name in names {
        let entries = maps.map(|map| map.and_then(|map| map.get(name)));
        guided(reconciler, dirty, whole, &join_path(path, name), entries);
    }
}

fn all_directories(ancestor: Option<&Entry>, alpha: Option<&Entry>, beta: Option<&Entry>) -> bool {
    [ancestor, alpha, beta].iter().all(|entry| matches!(entry, Some(Entry::Directory(_))))
}

fn is_problematic(entry: Option<&Entry>) -> bool {
    matches!(entry, Some(Entry::Problematic { .. }))
}

fn is_nil_or_untracked(entry: Option<&Entry>) -> bool {
    matches!(entry, None | Some(Entry::Untracked))
}

fn has_unsynchronizable(entry: Option<&Entry>) -> bool {
    entry.is_some_and(|e| !e.is_fully_synchronizable())
}

fn non_deletions(changes: Vec<Change>) -> Vec<Change> {
    changes.into_iter().filter(|change| change.new.is_some()).collect()
}

#[derive(Clone, Copy)]
enum Side {
    Alpha,
    Beta,
}

/// The walk's accumulator.
struct Reconciler {
    mode: Mode,
    out: Reconciliation,
}

impl Reconciler {
    fn reconcile(
        &mut self,
        path: &str,
        ancestor: Option<&Entry>,
        alpha: Option<&Entry>,
        beta: Option<&Entry>,
    ) {
        // All three agree on the whole subtree: nothing can change below. (The ancestor holds
        // only synchronizable content, so neither side has anything unsynchronizable here.)
        // Comparing allocates nothing, unlike the walk it saves. Three directories are
        // compared child by child instead (in `agreement`): comparing them whole first would
        // compare the entries before a difference again at every level of its path.
        if !all_directories(ancestor, alpha, beta) && ancestor == alpha && alpha == beta {
            return;
        }
        // Problematic content blocks only its own path: the scan problem reports it, and
        // neither the ancestor nor the other side is touched until it is readable again.
        if is_problematic(alpha) || is_problematic(beta) {
            return;
        }
        // Nothing synchronizable on either side: the path is gone from the session's view.
        if is_nil_or_untracked(alpha) && is_nil_or_untracked(beta) {
            if ancestor.is_some() {
                self.ancestor_change(path, ancestor, None);
            }
            return;
        }
        if shallow_eq(alpha, beta) {
            self.agreement(path, ancestor, alpha, beta);
            return;
        }
        match self.mode {
            Mode::TwoWaySafe | Mode::TwoWayResolved => {
                self.bidirectional(path, ancestor, alpha, beta);
            }
            Mode::OneWaySafe => self.one_way_safe(path, ancestor, alpha, beta),
            Mode::OneWayReplica => self.one_way_replica(path, ancestor, alpha, beta),
        }
    }

    /// Both sides hold the same synchronizable node here (they are shallow-equal and neither is
    /// untracked nor problematic): record it in the ancestor and continue into the children.
    fn agreement(
        &mut self,
        path: &str,
        ancestor: Option<&Entry>,
        alpha: Option<&Entry>,
        beta: Option<&Entry>,
    ) {
        let mut ancestor = ancestor;
        let bits = match (alpha, beta) {
            (Some(Entry::Directory(alpha)), Some(Entry::Directory(beta))) => {
                Some((alpha.permissions, beta.permissions))
            }
            _ => None,
        };
        if !shallow_eq(ancestor, alpha) {
            // The ancestor's node is replaced by a slim copy; its old children no longer
            // describe anything and the recursion re-adds the ones both sides agree on. A
            // directory the sides created with different bits gets none.
            let new = match bits {
                Some((alpha_bits, beta_bits)) => {
                    let agreed = if alpha_bits == beta_bits { alpha_bits } else { None };
                    Some(Entry::Directory(Directory::with_permissions(agreed)))
                }
                None => alpha.map(Entry::slim),
            };
            self.ancestor_change(path, ancestor, new);
            ancestor = None;
        }
        if let Some((alpha_bits, beta_bits)) = bits {
            let ancestor_bits = match ancestor {
                Some(Entry::Directory(directory)) => Some(directory.permissions),
                _ => None,
            };
            self.directory_permissions(path, ancestor_bits, alpha_bits, beta_bits);
        }
        let (ancestor_children, alpha_children, beta_children) =
            (children(ancestor), children(alpha), children(beta));
        let maps = [ancestor_children, alpha_children, beta_children];
        merge_children(maps, |name, [ancestor, alpha, beta]| {
            // The common case, settled without building the child's path.
            if !all_directories(ancestor, alpha, beta) && ancestor == alpha && alpha == beta {
                return;
            }
            self.reconcile(&join_path(path, name), ancestor, alpha, beta);
        });
    }

    /// Reconciles the permission bits of a directory both sides hold at `path`;
    /// `ancestor` is the ancestor's bits there if it holds that directory (and `None` if the
    /// directory is new to it, in which case [`Reconciler::agreement`] has recorded it).
    fn directory_permissions(
        &mut self,
        path: &str,
        ancestor: Option<Option<u16>>,
        alpha: Option<u16>,
        beta: Option<u16>,
    ) {
        if alpha == beta {
            if let Some(ancestor) = ancestor.filter(|bits| *bits != alpha) {
                self.out.ancestor_changes.push(Change::permissions(path, ancestor, alpha));
            }
            return;
        }
        let alpha_changed = ancestor != Some(alpha);
        let beta_changed = ancestor != Some(beta);
        let to_beta = || Change::permissions(path, beta, alpha);
        let bidirectional = self.mode.is_bidirectional();
        match self.mode {
            // Only alpha changed, or beta is a replica: beta takes alpha's bits.
            _ if !alpha_changed && bidirectional => {
                self.out.alpha_transitions.push(Change::permissions(path, alpha, beta));
            }
            _ if !beta_changed => self.out.beta_transitions.push(to_beta()),
            Mode::OneWayReplica | Mode::TwoWayResolved => self.out.beta_transitions.push(to_beta()),
            Mode::TwoWaySafe | Mode::OneWaySafe => {
                let recorded = ancestor.flatten();
                self.conflict(
                    path,
                    vec![Change::permissions(path, recorded, alpha)],
                    vec![Change::permissions(path, recorded, beta)],
                );
            }
        }
    }

    /// Two-way modes. At this point the sides disagree and neither is problematic here.
    fn bidirectional(
        &mut self,
        path: &str,
        ancestor: Option<&Entry>,
        alpha: Option<&Entry>,
        beta: Option<&Entry>,
    ) {
        let alpha_sync = alpha.and_then(Entry::synchronizable);
        let beta_sync = beta.and_then(Entry::synchronizable);
        let alpha_delta = diff_at(path, ancestor, alpha_sync.as_ref());
        let beta_delta = diff_at(path, ancestor, beta_sync.as_ref());

        // Only alpha changed: beta still equals the ancestor and takes alpha's content.
        if beta_delta.is_empty() {
            self.overwrite(Side::Beta, path, beta, beta_sync, alpha_delta, alpha_sync);
            return;
        }
        // Only beta changed: the mirror image.
        if alpha_delta.is_empty() {
            self.overwrite(Side::Alpha, path, alpha, alpha_sync, beta_delta, beta_sync);
            return;
        }

        // Both changed. Modification beats deletion: a side that only deleted things takes the
        // other side's content.
        let alpha_creations = non_deletions(alpha_delta.clone());
        let beta_creations = non_deletions(beta_delta.clone());
        if alpha_creations.is_empty() && beta_creations.is_empty() {
            // Both only deleted, so one side is absent here and the other holds what is left
            // of the ancestor: complete the deletion on the partial side.
            if alpha_sync.is_none() {
                self.overwrite(Side::Beta, path, beta, beta_sync, alpha_delta, None);
            } else {
                self.overwrite(Side::Alpha, path, alpha, alpha_sync, beta_delta, None);
            }
        } else if beta_creations.is_empty() {
            self.overwrite(Side::Beta, path, beta, beta_sync, alpha_creations, alpha_sync);
        } else if alpha_creations.is_empty() {
            self.overwrite(Side::Alpha, path, alpha, alpha_sync, beta_creations, beta_sync);
        } else if self.mode == Mode::TwoWayResolved {
            // Both created or modified content: alpha wins in two-way-resolved.
            self.overwrite(Side::Beta, path, beta, beta_sync, alpha_creations, alpha_sync);
        } else {
            self.conflict(path, alpha_creations, beta_creations);
        }
    }

    /// One-way-safe: alpha's changes flow to beta, beta's own creations are kept.
    fn one_way_safe(
        &mut self,
        path: &str,
        ancestor: Option<&Entry>,
        alpha: Option<&Entry>,
        beta: Option<&Entry>,
    ) {
        let beta_sync = beta.and_then(Entry::synchronizable);
        let beta_creations = non_deletions(diff_at(path, ancestor, beta_sync.as_ref()));
        let alpha_change = || vec![Change::new(path, ancestor.cloned(), alpha.cloned())];
        if beta_creations.is_empty() {
            // Beta only deleted things (or nothing): restore it from alpha.
            let new = alpha.and_then(Entry::synchronizable);
            self.overwrite(Side::Beta, path, beta, beta_sync, alpha_change(), new);
        } else if is_nil_or_untracked(alpha)
            && !(ancestor.is_some_and(Entry::is_directory) && beta.is_some_and(Entry::is_directory))
        {
            // Beta created content where alpha has none: leave it alone and stop tracking the
            // path, so beta's content is never deleted.
            if ancestor.is_some() {
                self.ancestor_change(path, ancestor, None);
            }
        } else {
            self.conflict(path, alpha_change(), beta_creations);
        }
    }

    /// One-way-replica: beta becomes alpha's synchronizable content.
    fn one_way_replica(
        &mut self,
        path: &str,
        ancestor: Option<&Entry>,
        alpha: Option<&Entry>,
        beta: Option<&Entry>,
    ) {
        let beta_sync = beta.and_then(Entry::synchronizable);
        let alpha_change = vec![Change::new(path, ancestor.cloned(), alpha.cloned())];
        let new = alpha.and_then(Entry::synchronizable);
        self.overwrite(Side::Beta, path, beta, beta_sync, alpha_change, new);
    }

    /// Makes `side` hold `new` at `path`, replacing `content` (whose synchronizable part is
    /// `content_sync`), unless `content` holds untracked or problematic content: that would be
    /// removed without ever having been synchronized, so the result is a conflict between
    /// `other_changes` (the other side's) and that blocking content.
    ///
    /// When there is no such content, `content_sync` equals `content`, so the transition's `old`
    /// is exactly what the side holds.
    fn overwrite(
        &mut self,
        side: Side,
        path: &str,
        content: Option<&Entry>,
        content_sync: Option<Entry>,
        other_changes: Vec<Change>,
        new: Option<Entry>,
    ) {
        if has_unsynchronizable(content) {
            let blocking = diff_at(path, content_sync.as_ref(), content);
            match side {
                Side::Alpha => self.conflict(path, blocking, other_changes),
                Side::Beta => self.conflict(path, other_changes, blocking),
            }
            return;
        }
        let transition = Change::new(path, content_sync, new);
        match side {
            Side::Alpha => self.out.alpha_transitions.push(transition),
            Side::Beta => self.out.beta_transitions.push(transition),
        }
    }

    fn ancestor_change(&mut self, path: &str, old: Option<&Entry>, new: Option<Entry>) {
        // Only the new value matters when applying; a slim old keeps the record small.
        self.out.ancestor_changes.push(Change::new(path, old.map(Entry::slim), new));
    }

    fn conflict(&mut self, path: &str, alpha_changes: Vec<Change>, beta_changes: Vec<Change>) {
        self.out.conflicts.push(Conflict { root: path.to_owned(), alpha_changes, beta_changes });
    }
}

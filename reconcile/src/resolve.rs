//! Settling a conflict by hand: one side's version wins.
//!
//! The resolution changes only the ancestor: at the conflict's root it takes the **loser's
//! version as the conflict recorded it**. The next reconcile then sees the loser unchanged
//! and the winner changed, and propagates the winner's version to the loser through the
//! usual transition, which verifies before it mutates. If the loser changed again since the
//! conflict was recorded, it differs from that ancestor too: both sides changed, the conflict
//! comes back, and nothing is overwritten.
//!
//! In the one-way modes alpha is never written, so only alpha can win (the caller refuses
//! the other way).

use crate::change::{Change, Conflict, apply_change, diff_at};
use crate::entry::Entry;

/// Why a conflict cannot be resolved this way.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    /// The loser's recorded version holds content that cannot be synchronized.
    #[error(
        "the conflict at {path:?} involves content that cannot be synchronized; resolve it by hand"
    )]
    Unsynchronizable {
        /// The conflict's root.
        path: String,
    },
    /// The recorded changes do not apply to the ancestor.
    #[error("the conflict at {path:?} no longer matches the session's history: {detail}")]
    Stale {
        /// The conflict's root.
        path: String,
        /// What did not apply.
        detail: String,
    },
}

/// The ancestor changes that resolve `conflict` in favour of the side whose changes are not
/// `loser_changes` (one of the conflict's two change lists): the difference between the
/// ancestor's subtree at the conflict's root and the loser's version of it, so that a
/// conflict about a directory's permission bits changes those bits and nothing inside.
///
/// # Errors
/// [`ResolveError`] when the loser's version holds unsynchronizable content, or when the
/// recorded changes do not apply to `ancestor`.
pub fn resolution(
    ancestor: Option<&Entry>,
    conflict: &Conflict,
    loser_changes: &[Change],
) -> Result<Vec<Change>, ResolveError> {
    let root = &conflict.root;
    let stale = |detail: String| ResolveError::Stale { path: root.clone(), detail };
    let at_root = |tree: Option<&Entry>| tree.and_then(|tree| tree.get(root)).cloned();
    let old = at_root(ancestor);
    // The loser's version: the ancestor's subtree with the loser's recorded changes applied.
    let mut subtree = old.clone();
    for change in loser_changes {
        let relative = if root.is_empty() {
            change.path.as_str()
        } else if change.path == *root {
            ""
        } else {
            change
                .path
                .strip_prefix(root.as_str())
                .and_then(|rest| rest.strip_prefix('/'))
                .ok_or_else(|| stale(format!("{} lies outside the conflict", change.path)))?
        };
        let relative = Change::new(relative, change.old.clone(), change.new.clone());
        apply_change(&mut subtree, &relative).map_err(|error| stale(error.to_string()))?;
    }
    if subtree.as_ref().is_some_and(|entry| !entry.is_fully_synchronizable()) {
        return Err(ResolveError::Unsynchronizable { path: root.clone() });
    }
    Ok(diff_at(root, old.as_ref(), subtree.as_ref()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Digest, Mode, apply, reconcile};

    fn file(byte: u8) -> Entry {
        Entry::file(Digest([byte; 32]), false)
    }

    fn directory(children: &[(&str, Entry)]) -> Entry {
        Entry::Directory(children.iter().map(|(n, e)| ((*n).to_owned(), e.clone())).collect())
    }

    /// Reconciles, resolves every conflict for `winner`, reconciles again: returns what the
    /// second reconcile wants to do to each side, and its conflicts.
    fn resolve_then_reconcile(
        ancestor: &Entry,
        alpha: &Entry,
        beta: &Entry,
        mode: Mode,
        alpha_wins: bool,
    ) -> (Vec<Change>, Vec<Change>, usize) {
        let first = reconcile(Some(ancestor), Some(alpha), Some(beta), mode);
        assert!(!first.conflicts.is_empty(), "no conflict to resolve");
        let mut resolved = Some(ancestor.clone());
        for conflict in &first.conflicts {
            let loser = if alpha_wins { &conflict.beta_changes } else { &conflict.alpha_changes };
            let changes = resolution(resolved.as_ref(), conflict, loser).expect("resolves");
            resolved = apply(resolved, &changes).expect("applies");
        }
        let second = reconcile(resolved.as_ref(), Some(alpha), Some(beta), mode);
        (second.alpha_transitions, second.beta_transitions, second.conflicts.len())
    }

    #[test]
    fn the_winner_propagates_and_the_loser_is_what_changes() {
        let ancestor = directory(&[("f", file(1)), ("d", directory(&[("x", file(2))]))]);
        // (case, alpha, beta): file/file, file/directory, deletion/modification.
        let cases = [
            (
                "file/file",
                directory(&[("f", file(3)), ("d", directory(&[("x", file(2))]))]),
                directory(&[("f", file(4)), ("d", directory(&[("x", file(2))]))]),
            ),
            (
                "file/directory",
                directory(&[
                    ("f", directory(&[("y", file(5))])),
                    ("d", directory(&[("x", file(2))])),
                ]),
                directory(&[("f", file(6)), ("d", directory(&[("x", file(2))]))]),
            ),
            (
                "deletion/modification",
                directory(&[("f", file(1))]),
                directory(&[("f", file(1)), ("d", directory(&[("x", file(7))]))]),
            ),
        ];
        let mut resolved = 0;
        for (case, alpha, beta) in &cases {
            for mode in [Mode::TwoWaySafe, Mode::TwoWayResolved, Mode::OneWaySafe] {
                let first = reconcile(Some(&ancestor), Some(alpha), Some(beta), mode);
                if first.conflicts.is_empty() {
                    // Some modes settle this case themselves (two-way-resolved: alpha wins).
                    continue;
                }
                resolved += 1;
                // In one-way modes alpha is never written: only alpha can win (the daemon
                // refuses the other way).
                let winners: &[bool] =
                    if mode.is_bidirectional() { &[true, false] } else { &[true] };
                for &alpha_wins in winners {
                    let (to_alpha, to_beta, conflicts) =
                        resolve_then_reconcile(&ancestor, alpha, beta, mode, alpha_wins);
                    assert_eq!(conflicts, 0, "{case}, {mode}, alpha wins: {alpha_wins}");
                    let target = if alpha_wins { beta } else { alpha };
                    let changes = if alpha_wins { &to_beta } else { &to_alpha };
                    let winner = if alpha_wins { alpha } else { beta };
                    let after = apply(Some(target.clone()), changes).expect("applies");
                    assert_eq!(after.as_ref(), Some(winner), "{case}, {mode}, {alpha_wins}");
                    let other = if alpha_wins { &to_alpha } else { &to_beta };
                    assert!(other.is_empty(), "{case}, {mode}: the winner is left alone");
                }
            }
        }
        assert!(resolved >= 5, "only {resolved} mode and case pairs had a conflict");
    }

    #[test]
    fn a_loser_changed_since_the_conflict_conflicts_again() {
        let ancestor = directory(&[("f", file(1)), ("g", file(9))]);
        let alpha = directory(&[("f", file(2)), ("g", file(9))]);
        let beta = directory(&[("f", file(3)), ("g", file(9))]);
        let first = reconcile(Some(&ancestor), Some(&alpha), Some(&beta), Mode::TwoWaySafe);
        let conflict = &first.conflicts[0];
        let changes = resolution(Some(&ancestor), conflict, &conflict.beta_changes).expect("ok");
        assert_eq!(changes, vec![Change::new("f", Some(file(1)), Some(file(3)))]);
        let resolved = apply(Some(ancestor), &changes).expect("applies");
        // Beta edited again after the conflict was recorded: its new edit is not overwritten.
        let edited = directory(&[("f", file(4)), ("g", file(9))]);
        let second = reconcile(resolved.as_ref(), Some(&alpha), Some(&edited), Mode::TwoWaySafe);
        assert!(second.beta_transitions.is_empty(), "{:?}", second.beta_transitions);
        assert_eq!(second.conflicts.len(), 1);
    }

    #[test]
    fn untracked_content_and_stale_conflicts_are_refused() {
        let conflict = Conflict {
            root: "d".into(),
            alpha_changes: vec![],
            beta_changes: vec![Change::new("d", None, Some(directory(&[("s", Entry::Untracked)])))],
        };
        let ancestor = directory(&[]);
        let error =
            resolution(Some(&ancestor), &conflict, &conflict.beta_changes).expect_err("untracked");
        assert!(matches!(error, ResolveError::Unsynchronizable { .. }), "{error}");
        let outside = Conflict {
            root: "d".into(),
            alpha_changes: vec![Change::new("e/x", None, Some(file(1)))],
            beta_changes: vec![],
        };
        let error =
            resolution(Some(&ancestor), &outside, &outside.alpha_changes).expect_err("stale");
        assert!(error.to_string().contains("outside the conflict"), "{error}");
    }
}

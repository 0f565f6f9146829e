//! Changes between trees: [`Change`], [`Conflict`], [`Problem`], [`diff`] and [`apply`].

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::entry::{Directory, Entry, children, directory_permissions, join_path, shallow_eq};

/// A replacement of the content at one path: `old` becomes `new` (`None` = absent).
///
/// The path is root-relative and `/`-separated; `""` is the root.
///
/// A change whose `old` and `new` are both directories without children changes only that
/// directory's own permission bits ([`Change::is_permissions_only`]): the directory's
/// children are left as they are. No change made today has two directories otherwise (a
/// directory replaced by a directory is no difference: [`diff`] continues into it); a
/// journal written before permission bits existed can hold one with children, from a
/// resolved conflict, which replaces the subtree as it always did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    /// Where the change happens.
    pub path: String,
    /// The content before (the whole subtree).
    pub old: Option<Entry>,
    /// The content after (the whole subtree).
    pub new: Option<Entry>,
}

/// A disagreement the engine will not settle by itself.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Conflict {
    /// The path at which the two sides disagree.
    pub root: String,
    /// What alpha changed at or below `root` (relative to the ancestor, or its unsynchronizable
    /// content that blocks the change).
    pub alpha_changes: Vec<Change>,
    /// What beta changed at or below `root`.
    pub beta_changes: Vec<Change>,
}

/// Trouble at one path: reported as data, never as an error that stops the cycle.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Problem {
    /// The root-relative path concerned.
    pub path: String,
    /// What went wrong, lowercase.
    pub error: String,
}

impl Problem {
    /// Returns a new problem.
    pub fn new(path: impl Into<String>, error: impl Into<String>) -> Problem {
        Problem { path: path.into(), error: error.into() }
    }
}

impl Change {
    /// Returns a new change.
    pub fn new(path: impl Into<String>, old: Option<Entry>, new: Option<Entry>) -> Change {
        Change { path: path.into(), old, new }
    }

    /// Returns whether this change removes content without putting anything in its place.
    pub fn is_deletion(&self) -> bool {
        self.new.is_none()
    }

    /// Returns whether this change sets only the permission bits of a directory (its `old`
    /// and `new` are both directories without children).
    pub fn is_permissions_only(&self) -> bool {
        matches!(
            (&self.old, &self.new),
            (Some(Entry::Directory(old)), Some(Entry::Directory(new)))
                if old.is_empty() && new.is_empty()
        )
    }

    /// Returns a change of the permission bits of the directory at `path`.
    pub fn permissions(path: impl Into<String>, old: Option<u16>, new: Option<u16>) -> Change {
        let directory = |bits| Some(Entry::Directory(Directory::with_permissions(bits)));
        Change::new(path, directory(old), directory(new))
    }
}

/// Returns the minimal list of changes that turn `base` into `target`.
///
/// At the first path where the two are not shallow-equal, one change replaces the whole
/// subtree; below shallow-equal directories the walk continues into the union of their
/// children, after a change of permissions only where the two directories' bits differ.
/// Output is depth-first, parents before children, siblings in name order.
pub fn diff(base: Option<&Entry>, target: Option<&Entry>) -> Vec<Change> {
    diff_at("", base, target)
}

/// Like [`diff`], for subtrees located at `path`.
pub fn diff_at(path: &str, base: Option<&Entry>, target: Option<&Entry>) -> Vec<Change> {
    let mut changes = Vec::new();
    diff_into(path, base, target, &mut changes);
    changes
}

fn diff_into(path: &str, base: Option<&Entry>, target: Option<&Entry>, out: &mut Vec<Change>) {
    if !shallow_eq(base, target) {
        out.push(Change::new(path, base.cloned(), target.cloned()));
        return;
    }
    if let (Some(Entry::Directory(base)), Some(Entry::Directory(target))) = (base, target)
        && base.permissions != target.permissions
    {
        out.push(Change::permissions(path, base.permissions, target.permissions));
    }
    let (base_children, target_children) = (children(base), children(target));
    for name in union_names(&[base_children, target_children]) {
        diff_into(
            &join_path(path, name),
            base_children.and_then(|c| c.get(name)),
            target_children.and_then(|c| c.get(name)),
            out,
        );
    }
}

/// Returns the sorted union of the keys of several optional child maps.
pub(crate) fn union_names<'a>(
    maps: &[Option<&'a std::collections::BTreeMap<String, Entry>>],
) -> BTreeSet<&'a str> {
    maps.iter().flatten().flat_map(|map| map.keys().map(String::as_str)).collect()
}

/// Visits, in name order, every name in any of three sorted maps with the three entries it
/// has there: a merge of the maps' iterators, so nothing is collected, sorted or looked up
/// (reconciling an unchanged tree of 100,000 entries spent most of its time doing that).
pub(crate) fn merge_children<'a>(
    maps: [Option<&'a BTreeMap<String, Entry>>; 3],
    mut visit: impl FnMut(&'a str, [Option<&'a Entry>; 3]),
) {
    let mut iterators = maps.map(|map| map.map(|map| map.iter().peekable()));
    loop {
        let next = iterators
            .iter_mut()
            .filter_map(|iterator| iterator.as_mut()?.peek().map(|(name, _)| name.as_str()))
            .min();
        let Some(name) = next else { return };
        let entries = iterators.each_mut().map(|iterator| {
            let iterator = iterator.as_mut()?;
            match iterator.peek() {
                Some((key, _)) if key.as_str() == name => iterator.next().map(|(_, entry)| entry),
                _ => None,
            }
        });
        visit(name, entries);
    }
}

/// A change that cannot be applied to a tree.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ApplyError {
    /// The parent of the change's path is absent or not a directory.
    #[error("unable to apply change at {path:?}: parent is not a directory")]
    MissingParent {
        /// The change's path.
        path: String,
    },
    /// A change of permission bits at a path that holds no directory.
    #[error("unable to apply change at {path:?}: no directory to set permissions on")]
    MissingDirectory {
        /// The change's path.
        path: String,
    },
}

/// Applies changes in order to `base` (see [`apply_change`]) and returns the result.
pub fn apply(base: Option<Entry>, changes: &[Change]) -> Result<Option<Entry>, ApplyError> {
    let mut tree = base;
    for change in changes {
        apply_change(&mut tree, change)?;
    }
    Ok(tree)
}

/// What [`apply_change`] replaced, to put it back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Undo {
    /// The content that was at the path.
    Content(String, Option<Entry>),
    /// The permission bits the directory at the path had.
    Permissions(String, Option<u16>),
}

impl Undo {
    /// Returns whether applying `change` changed anything.
    pub fn changed(&self, change: &Change) -> bool {
        match self {
            Undo::Content(_, previous) => *previous != change.new,
            Undo::Permissions(_, previous) => {
                *previous != directory_permissions(change.new.as_ref())
            }
        }
    }

    /// Puts back what was replaced. Undoing changes in the reverse order of their application
    /// restores the tree exactly (and cannot fail then).
    pub fn undo(self, tree: &mut Option<Entry>) -> Result<(), ApplyError> {
        match self {
            Undo::Content(path, previous) => replace_at(tree, &path, previous).map(drop),
            Undo::Permissions(path, previous) => {
                directory_at(tree, &path)?.permissions = previous;
                Ok(())
            }
        }
    }
}

/// Applies one change to `tree`: a change of permissions only
/// ([`Change::is_permissions_only`]) sets the bits of the directory at its path and keeps
/// its children; any other change replaces the content at its path with its `new` (`None`
/// removes it). Its `old` is not compared with the tree.
pub fn apply_change(tree: &mut Option<Entry>, change: &Change) -> Result<Undo, ApplyError> {
    if change.is_permissions_only() {
        let directory = directory_at(tree, &change.path)?;
        let bits = directory_permissions(change.new.as_ref());
        let previous = std::mem::replace(&mut directory.permissions, bits);
        return Ok(Undo::Permissions(change.path.clone(), previous));
    }
    let previous = replace_at(tree, &change.path, change.new.clone())?;
    Ok(Undo::Content(change.path.clone(), previous))
}

/// Returns the directory at `path` in `tree`.
fn directory_at<'a>(
    tree: &'a mut Option<Entry>,
    path: &str,
) -> Result<&'a mut Directory, ApplyError> {
    match entry_at(tree, path) {
        Some(Entry::Directory(directory)) => Ok(directory),
        _ => Err(ApplyError::MissingDirectory { path: path.to_owned() }),
    }
}

/// Returns the entry at `path` in `tree` (`""` is the root).
fn entry_at<'a>(tree: &'a mut Option<Entry>, path: &str) -> Option<&'a mut Entry> {
    let mut entry = tree.as_mut()?;
    if !path.is_empty() {
        for component in path.split('/') {
            entry = match entry {
                Entry::Directory(contents) => contents.get_mut(component)?,
                _ => return None,
            };
        }
    }
    Some(entry)
}

/// Sets the content at `path` in `tree` to `new` (`None` removes it), whatever it is, and
/// returns what was there.
pub fn replace_at(
    tree: &mut Option<Entry>,
    path: &str,
    new: Option<Entry>,
) -> Result<Option<Entry>, ApplyError> {
    if path.is_empty() {
        return Ok(std::mem::replace(tree, new));
    }
    let missing = || ApplyError::MissingParent { path: path.to_owned() };
    let (parent_path, name) = path.rsplit_once('/').unwrap_or(("", path));
    let parent = entry_at(tree, parent_path).ok_or_else(missing)?;
    let Entry::Directory(contents) = parent else {
        return Err(missing());
    };
    Ok(match new {
        Some(entry) => contents.insert(name.to_owned(), entry),
        None => contents.remove(name),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Digest;

    fn file(d: u8) -> Entry {
        Entry::file(Digest([d; 32]), false)
    }

    fn dir<const N: usize>(children: [(&str, Entry); N]) -> Entry {
        Entry::Directory(children.into_iter().map(|(n, e)| (n.to_owned(), e)).collect())
    }

    #[test]
    fn diff_replaces_at_the_first_difference() {
        let base = dir([("a", file(1)), ("d", dir([("x", file(2))])), ("gone", file(3))]);
        let target = dir([("a", file(9)), ("d", dir([("x", file(2)), ("y", file(4))]))]);
        let changes = diff(Some(&base), Some(&target));
        let summary: Vec<_> =
            changes.iter().map(|c| (c.path.as_str(), c.old.is_some(), c.new.is_some())).collect();
        assert_eq!(summary, vec![("a", true, true), ("d/y", false, true), ("gone", true, false)]);
        assert_eq!(apply(Some(base), &changes), Ok(Some(target)));
    }

    #[test]
    fn diff_of_kind_change_replaces_whole_subtree() {
        let base = dir([("d", dir([("x", file(2))]))]);
        let target = dir([("d", file(5))]);
        let changes = diff(Some(&base), Some(&target));
        assert_eq!(changes.len(), 1);
        assert_eq!(changes[0].old, Some(dir([("x", file(2))])));
        assert!(diff(Some(&target), Some(&target)).is_empty());
        assert_eq!(diff(None, Some(&target)), vec![Change::new("", None, Some(target))]);
    }

    #[test]
    fn apply_rejects_missing_parents() {
        let err = apply(Some(dir([])), &[Change::new("a/b", None, Some(file(1)))]);
        assert_eq!(err, Err(ApplyError::MissingParent { path: "a/b".into() }));
        let err = apply(None, &[Change::new("a", None, Some(file(1)))]);
        assert!(err.is_err());
        let err = apply(Some(file(1)), &[Change::new("a", None, Some(file(1)))]);
        assert!(err.is_err());
        assert_eq!(apply(Some(file(1)), &[Change::new("", None, None)]), Ok(None));
    }
}

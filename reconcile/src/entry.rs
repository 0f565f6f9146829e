//! The tree model: [`Entry`] and its helpers.
//!
//! An absent path is `None` (`Option<Entry>`); an empty directory is
//! `Entry::Directory(BTreeMap::new())`. Children are kept in a `BTreeMap` so that every walk,
//! diff and serialization is deterministic.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// A BLAKE3 digest of a file's content.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Digest(pub [u8; 32]);

impl Digest {
    /// Returns the lowercase hexadecimal form.
    pub fn to_hex(&self) -> String {
        use fmt::Write as _;
        self.0.iter().fold(String::with_capacity(64), |mut s, b| {
            // Writing to a String cannot fail.
            let _ = write!(s, "{b:02x}");
            s
        })
    }

    /// Parses the lowercase or uppercase hexadecimal form produced by [`Digest::to_hex`].
    pub fn from_hex(text: &str) -> Option<Digest> {
        if text.len() != 64 || !text.is_ascii() {
            return None;
        }
        let mut bytes = [0u8; 32];
        for (i, byte) in bytes.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok()?;
        }
        Some(Digest(bytes))
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({})", &self.to_hex()[..12])
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// The kind of an [`Entry`], without its data.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EntryKind {
    /// A directory.
    Directory,
    /// A regular file.
    File,
    /// A symbolic link.
    SymbolicLink,
    /// Content deliberately not synchronized (ignored, a FIFO, a socket, a device...).
    Untracked,
    /// Content that should be synchronized but cannot be (unreadable, non-UTF-8 name...).
    Problematic,
}

impl EntryKind {
    /// Returns the lowercase name used in messages and JSON (`directory`, `file`, `symlink`,
    /// `untracked`, `problematic`).
    pub fn name(self) -> &'static str {
        match self {
            EntryKind::Directory => "directory",
            EntryKind::File => "file",
            EntryKind::SymbolicLink => "symlink",
            EntryKind::Untracked => "untracked",
            EntryKind::Problematic => "problematic",
        }
    }
}

/// One node of a scanned tree.
///
/// The three synchronizable kinds are `Directory`, `File` and `SymbolicLink`; `Untracked` and
/// `Problematic` are recorded so that the engine knows something is there and never deletes it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Entry {
    /// A directory and its children, by name.
    Directory(BTreeMap<String, Entry>),
    /// A regular file.
    File {
        /// The digest of its content.
        digest: Digest,
        /// Whether any execute bit is set.
        executable: bool,
    },
    /// A symbolic link.
    SymbolicLink {
        /// The link's target, as stored (never empty).
        target: String,
    },
    /// Content deliberately not synchronized.
    Untracked,
    /// Content that cannot be synchronized, with the reason.
    Problematic {
        /// Why the content cannot be synchronized (never empty).
        problem: String,
    },
}

/// A violation of the [`Entry`] invariants.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EntryError {
    /// A child name is empty, `.`, `..`, or contains `/` or NUL.
    #[error("invalid entry name {name:?} under {parent:?}")]
    InvalidName {
        /// The parent directory's path.
        parent: String,
        /// The offending name.
        name: String,
    },
    /// A symbolic link has an empty target.
    #[error("symbolic link at {path:?} has an empty target")]
    EmptyTarget {
        /// The link's path.
        path: String,
    },
    /// A problematic entry has no message.
    #[error("problematic entry at {path:?} has an empty message")]
    EmptyProblem {
        /// The entry's path.
        path: String,
    },
    /// Unsynchronizable content where only synchronizable content is allowed (the ancestor).
    #[error("unsynchronizable content at {path:?}")]
    Unsynchronizable {
        /// The entry's path.
        path: String,
    },
}

/// Checks that `name` can be a child name: non-empty, not `.` or `..`, no `/` and no NUL.
pub fn validate_name(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && !name.contains(['/', '\0'])
}

/// Joins a root-relative parent path and a child name (`""` is the root).
pub fn join_path(parent: &str, name: &str) -> String {
    if parent.is_empty() {
        name.to_owned()
    } else {
        let mut path = String::with_capacity(parent.len() + 1 + name.len());
        path.push_str(parent);
        path.push('/');
        path.push_str(name);
        path
    }
}

/// Returns whether two optional entries are shallow-equal (see [`Entry::shallow_eq`]).
pub fn shallow_eq(a: Option<&Entry>, b: Option<&Entry>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(a), Some(b)) => a.shallow_eq(b),
        _ => false,
    }
}

/// Returns the children of an optional entry if it is a directory.
pub fn children(entry: Option<&Entry>) -> Option<&BTreeMap<String, Entry>> {
    match entry {
        Some(Entry::Directory(contents)) => Some(contents),
        _ => None,
    }
}

impl Entry {
    /// Returns an empty directory.
    pub fn empty_directory() -> Entry {
        Entry::Directory(BTreeMap::new())
    }

    /// Returns this entry's kind.
    pub fn kind(&self) -> EntryKind {
        match self {
            Entry::Directory(_) => EntryKind::Directory,
            Entry::File { .. } => EntryKind::File,
            Entry::SymbolicLink { .. } => EntryKind::SymbolicLink,
            Entry::Untracked => EntryKind::Untracked,
            Entry::Problematic { .. } => EntryKind::Problematic,
        }
    }

    /// Returns whether this entry's own kind is synchronizable (its children may not be).
    pub fn is_synchronizable_kind(&self) -> bool {
        !matches!(self, Entry::Untracked | Entry::Problematic { .. })
    }

    /// Returns whether this entry is a directory.
    pub fn is_directory(&self) -> bool {
        matches!(self, Entry::Directory(_))
    }

    /// Compares two entries without looking at directory contents.
    ///
    /// Files compare digest and executability, links their target, problematic entries their
    /// message.
    pub fn shallow_eq(&self, other: &Entry) -> bool {
        match (self, other) {
            (Entry::Directory(_), Entry::Directory(_)) => true,
            (Entry::Directory(_), _) => false,
            (a, b) => a == b,
        }
    }

    /// Returns a copy without directory contents.
    pub fn slim(&self) -> Entry {
        match self {
            Entry::Directory(_) => Entry::empty_directory(),
            other => other.clone(),
        }
    }

    /// Returns a copy with every untracked and problematic subtree removed, or `None` if this
    /// entry itself is unsynchronizable.
    pub fn synchronizable(&self) -> Option<Entry> {
        match self {
            Entry::Untracked | Entry::Problematic { .. } => None,
            Entry::Directory(contents) => Some(Entry::Directory(
                contents
                    .iter()
                    .filter_map(|(name, child)| Some((name.clone(), child.synchronizable()?)))
                    .collect(),
            )),
            other => Some(other.clone()),
        }
    }

    /// Returns whether this entry contains no untracked or problematic content at all.
    pub fn is_fully_synchronizable(&self) -> bool {
        match self {
            Entry::Untracked | Entry::Problematic { .. } => false,
            Entry::Directory(contents) => contents.values().all(Entry::is_fully_synchronizable),
            _ => true,
        }
    }

    /// Returns the number of synchronizable entries, this one included.
    pub fn count(&self) -> u64 {
        match self {
            Entry::Untracked | Entry::Problematic { .. } => 0,
            Entry::Directory(contents) => 1 + contents.values().map(Entry::count).sum::<u64>(),
            _ => 1,
        }
    }

    /// Returns the entry at a root-relative, `/`-separated path (`""` is this entry).
    pub fn get(&self, path: &str) -> Option<&Entry> {
        if path.is_empty() {
            return Some(self);
        }
        path.split('/').try_fold(self, |entry, name| match entry {
            Entry::Directory(contents) => contents.get(name),
            _ => None,
        })
    }

    /// Calls `visit(path, entry)` for this entry and every descendant, parents first, children
    /// in name order. `path` is the path of this entry.
    pub fn walk<'a>(&'a self, path: &str, visit: &mut dyn FnMut(&str, &'a Entry)) {
        visit(path, self);
        if let Entry::Directory(contents) = self {
            for (name, child) in contents {
                child.walk(&join_path(path, name), visit);
            }
        }
    }

    /// Returns the problematic entries under (and including) this one as `(path, message)`.
    pub fn problems(&self, path: &str) -> Vec<crate::Problem> {
        // Runs on every scan: paths are joined only for problematic entries.
        fn collect<'a>(
            entry: &'a Entry,
            names: &mut Vec<&'a str>,
            base: &str,
            problems: &mut Vec<crate::Problem>,
        ) {
            match entry {
                Entry::Problematic { problem } => {
                    let relative = names.join("/");
                    let path = if relative.is_empty() {
                        base.to_owned()
                    } else {
                        join_path(base, &relative)
                    };
                    problems.push(crate::Problem::new(path, problem.clone()));
                }
                Entry::Directory(children) => {
                    for (name, child) in children {
                        names.push(name);
                        collect(child, names, base, problems);
                        names.pop();
                    }
                }
                _ => {}
            }
        }
        let mut problems = Vec::new();
        collect(self, &mut Vec::new(), path, &mut problems);
        problems
    }

    /// Checks the structural invariants: valid names, non-empty targets and messages, and, if
    /// `synchronizable_only`, no untracked or problematic content.
    pub fn validate(&self, synchronizable_only: bool) -> Result<(), EntryError> {
        self.validate_in(&mut Vec::new(), synchronizable_only)
    }

    /// Validates with `names` holding the path to this entry; the path is joined only for an
    /// error (this runs on every snapshot and ancestor, so it allocates nothing otherwise).
    fn validate_in<'a>(
        &'a self,
        names: &mut Vec<&'a str>,
        synchronizable_only: bool,
    ) -> Result<(), EntryError> {
        let path = |names: &Vec<&str>| names.join("/");
        match self {
            Entry::Directory(contents) => {
                for (name, child) in contents {
                    if !validate_name(name) {
                        return Err(EntryError::InvalidName {
                            parent: path(names),
                            name: name.clone(),
                        });
                    }
                    names.push(name);
                    child.validate_in(names, synchronizable_only)?;
                    names.pop();
                }
                Ok(())
            }
            Entry::File { .. } => Ok(()),
            Entry::SymbolicLink { target } if target.is_empty() => {
                Err(EntryError::EmptyTarget { path: path(names) })
            }
            Entry::SymbolicLink { .. } => Ok(()),
            _ if synchronizable_only => Err(EntryError::Unsynchronizable { path: path(names) }),
            Entry::Problematic { problem } if problem.is_empty() => {
                Err(EntryError::EmptyProblem { path: path(names) })
            }
            Entry::Untracked | Entry::Problematic { .. } => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(d: u8) -> Entry {
        Entry::File { digest: Digest([d; 32]), executable: false }
    }

    fn dir<const N: usize>(children: [(&str, Entry); N]) -> Entry {
        Entry::Directory(children.into_iter().map(|(n, e)| (n.to_owned(), e)).collect())
    }

    #[test]
    fn names_are_validated() {
        for bad in ["", ".", "..", "a/b", "/", "a\0"] {
            assert!(!validate_name(bad), "{bad:?} should be invalid");
        }
        for good in ["a", "...", ".hidden", "ünïcødé", "a b", "a:b"] {
            assert!(validate_name(good), "{good:?} should be valid");
        }
        let tree = dir([("..", file(1))]);
        assert!(matches!(tree.validate(false), Err(EntryError::InvalidName { .. })));
    }

    #[test]
    fn validation_errors_name_the_full_path() {
        let problem = Entry::Problematic { problem: "x".into() };
        let tree = dir([("a", dir([("b", dir([("p", problem)]))]))]);
        assert_eq!(tree.validate(true), Err(EntryError::Unsynchronizable { path: "a/b/p".into() }));
        let tree = dir([("a", dir([("b", dir([("..", file(1))]))]))]);
        let expected = EntryError::InvalidName { parent: "a/b".into(), name: "..".into() };
        assert_eq!(tree.validate(false), Err(expected));
    }

    #[test]
    fn digest_hex_round_trips() {
        let digest = Digest(std::array::from_fn(|i| i as u8 * 7));
        assert_eq!(Digest::from_hex(&digest.to_hex()), Some(digest));
        assert_eq!(Digest::from_hex("zz"), None);
        assert_eq!(Digest::from_hex(&"é".repeat(32)), None);
    }

    #[test]
    fn synchronizable_prunes_only_unsynchronizable_subtrees() {
        let problem = Entry::Problematic { problem: "unreadable".into() };
        let tree = dir([("a", file(1)), ("u", Entry::Untracked), ("d", dir([("p", problem)]))]);
        assert_eq!(tree.synchronizable(), Some(dir([("a", file(1)), ("d", dir([]))])));
        assert!(!tree.is_fully_synchronizable());
        assert_eq!(tree.count(), 3);
        assert_eq!(tree.problems(""), vec![crate::Problem::new("d/p", "unreadable")]);
        assert_eq!(Entry::Untracked.synchronizable(), None);
        assert!(tree.validate(true).is_err());
        assert!(tree.validate(false).is_ok());
    }

    #[test]
    fn get_and_shallow_eq() {
        let tree = dir([("d", dir([("f", file(2))]))]);
        assert_eq!(tree.get("d/f"), Some(&file(2)));
        assert_eq!(tree.get("d/f/x"), None);
        assert_eq!(tree.get(""), Some(&tree));
        assert!(tree.shallow_eq(&dir([])));
        assert!(!file(1).shallow_eq(&file(2)));
        assert!(shallow_eq(None, None));
        assert!(!shallow_eq(Some(&file(1)), None));
    }
}

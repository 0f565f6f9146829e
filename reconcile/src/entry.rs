//! The tree model: [`Entry`] and its helpers.
//!
//! An absent path is `None` (`Option<Entry>`); an empty directory is
//! `Entry::Directory(Directory::default())`. Children are kept in a `BTreeMap` so that every
//! walk, diff and serialization is deterministic.
//!
//! # Permissions
//! In permissions mode posix, files and directories carry their permission bits
//! ([`FILE_PERMISSION_BITS`] of a file, [`DIRECTORY_PERMISSION_BITS`] of a directory: setuid,
//! setgid on files and the sticky bit never travel). In the other modes they carry `None`, and
//! their encoding is the one they always had, byte for byte: the journal and the agent
//! protocol read what older builds wrote.

use std::collections::BTreeMap;
use std::fmt;
use std::ops::{Deref, DerefMut};

use serde::{Deserialize, Serialize};

/// A BLAKE3 digest of a file's content.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Digest(pub [u8; 32]);

impl Digest {
    /// Returns the lowercase hexadecimal form.
    pub fn to_hex(&self) -> String {
        // Not `write!("{b:02x}")` per byte: the staging store names every staged file by its
        // digest, and the formatter was 2% of an initial sync's samples.
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut hex = String::with_capacity(64);
        for b in self.0 {
            hex.push(char::from(DIGITS[usize::from(b >> 4)]));
            hex.push(char::from(DIGITS[usize::from(b & 0xf)]));
        }
        hex
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
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Entry {
    /// A directory and its children, by name.
    Directory(Directory),
    /// A regular file.
    File {
        /// The digest of its content.
        digest: Digest,
        /// Whether any execute bit is set.
        executable: bool,
        /// The permission bits (within [`FILE_PERMISSION_BITS`]), in permissions mode posix
        /// only; `executable` then says whether any of their execute bits is set.
        permissions: Option<u16>,
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

/// The permission bits a file's entry carries in permissions mode posix: read, write and
/// execute for user, group and other.
pub const FILE_PERMISSION_BITS: u16 = 0o777;

/// The permission bits a directory's entry carries in permissions mode posix: those of a file
/// and setgid (which makes new children inherit the directory's group).
pub const DIRECTORY_PERMISSION_BITS: u16 = 0o2777;

/// A directory: its children, by name, and (in permissions mode posix) its own permission
/// bits.
///
/// It dereferences to the map of its children, which is what most code wants of it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Directory {
    /// The children, by name.
    pub children: BTreeMap<String, Entry>,
    /// The permission bits (within [`DIRECTORY_PERMISSION_BITS`]) in permissions mode posix,
    /// else `None`. An ancestor also holds `None` where the two sides created the directory
    /// with different bits and have not agreed since.
    pub permissions: Option<u16>,
}

impl Directory {
    /// Returns a directory with `children` and no permission bits.
    pub fn new(children: BTreeMap<String, Entry>) -> Directory {
        Directory { children, permissions: None }
    }

    /// Returns an empty directory with `permissions`.
    pub fn with_permissions(permissions: Option<u16>) -> Directory {
        Directory { children: BTreeMap::new(), permissions }
    }
}

impl Deref for Directory {
    type Target = BTreeMap<String, Entry>;

    fn deref(&self) -> &BTreeMap<String, Entry> {
        &self.children
    }
}

impl DerefMut for Directory {
    fn deref_mut(&mut self) -> &mut BTreeMap<String, Entry> {
        &mut self.children
    }
}

impl From<BTreeMap<String, Entry>> for Directory {
    fn from(children: BTreeMap<String, Entry>) -> Directory {
        Directory::new(children)
    }
}

impl FromIterator<(String, Entry)> for Directory {
    fn from_iter<I: IntoIterator<Item = (String, Entry)>>(iter: I) -> Directory {
        Directory::new(iter.into_iter().collect())
    }
}

impl IntoIterator for Directory {
    type Item = (String, Entry);
    type IntoIter = std::collections::btree_map::IntoIter<String, Entry>;

    fn into_iter(self) -> Self::IntoIter {
        self.children.into_iter()
    }
}

impl<'a> IntoIterator for &'a Directory {
    type Item = (&'a String, &'a Entry);
    type IntoIter = std::collections::btree_map::Iter<'a, String, Entry>;

    fn into_iter(self) -> Self::IntoIter {
        self.children.iter()
    }
}

impl<'a> IntoIterator for &'a mut Directory {
    type Item = (&'a String, &'a mut Entry);
    type IntoIter = std::collections::btree_map::IterMut<'a, String, Entry>;

    fn into_iter(self) -> Self::IntoIter {
        self.children.iter_mut()
    }
}

/// How an [`Entry`] is encoded. The first five variants are the layout every build has
/// written; entries with permission bits use the two variants after them, so an older
/// record decodes as it always did and a newer one is refused by an older build (unknown
/// variant) rather than misread.
#[derive(Serialize)]
enum EncodedRef<'a> {
    Directory(&'a BTreeMap<String, Entry>),
    File { digest: &'a Digest, executable: bool },
    SymbolicLink { target: &'a str },
    Untracked,
    Problematic { problem: &'a str },
    PermittedDirectory { permissions: u16, children: &'a BTreeMap<String, Entry> },
    PermittedFile { digest: &'a Digest, executable: bool, permissions: u16 },
}

/// The owned form of [`EncodedRef`], which decoding produces.
#[derive(Deserialize)]
enum Encoded {
    Directory(BTreeMap<String, Entry>),
    File { digest: Digest, executable: bool },
    SymbolicLink { target: String },
    Untracked,
    Problematic { problem: String },
    PermittedDirectory { permissions: u16, children: BTreeMap<String, Entry> },
    PermittedFile { digest: Digest, executable: bool, permissions: u16 },
}

impl Serialize for Entry {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let encoded = match self {
            Entry::Directory(Directory { children, permissions: None }) => {
                EncodedRef::Directory(children)
            }
            Entry::Directory(Directory { children, permissions: Some(permissions) }) => {
                EncodedRef::PermittedDirectory { permissions: *permissions, children }
            }
            Entry::File { digest, executable, permissions: None } => {
                EncodedRef::File { digest, executable: *executable }
            }
            Entry::File { digest, executable, permissions: Some(permissions) } => {
                EncodedRef::PermittedFile {
                    digest,
                    executable: *executable,
                    permissions: *permissions,
                }
            }
            Entry::SymbolicLink { target } => EncodedRef::SymbolicLink { target },
            Entry::Untracked => EncodedRef::Untracked,
            Entry::Problematic { problem } => EncodedRef::Problematic { problem },
        };
        encoded.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Entry {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Entry, D::Error> {
        Ok(match Encoded::deserialize(deserializer)? {
            Encoded::Directory(children) => Entry::Directory(Directory::new(children)),
            Encoded::PermittedDirectory { permissions, children } => {
                Entry::Directory(Directory { children, permissions: Some(permissions) })
            }
            Encoded::File { digest, executable } => {
                Entry::File { digest, executable, permissions: None }
            }
            Encoded::PermittedFile { digest, executable, permissions } => {
                Entry::File { digest, executable, permissions: Some(permissions) }
            }
            Encoded::SymbolicLink { target } => Entry::SymbolicLink { target },
            Encoded::Untracked => Entry::Untracked,
            Encoded::Problematic { problem } => Entry::Problematic { problem },
        })
    }
}

/// Renders permission bits as `chmod` takes them (`0755`, `2775`).
pub fn format_permissions(permissions: Option<u16>) -> String {
    match permissions {
        Some(bits) => format!("{bits:04o}"),
        None => "none".to_owned(),
    }
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
    /// Permission bits outside those an entry of its kind carries, or a file whose executable
    /// flag disagrees with its bits.
    #[error("entry at {path:?} has invalid permissions {permissions:o}")]
    InvalidPermissions {
        /// The entry's path.
        path: String,
        /// The bits.
        permissions: u16,
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

/// Returns the directory whose listing holds `path`: its parent, `""` for a child of the
/// root and for the root itself.
pub fn parent_path(path: &str) -> &str {
    path.rsplit_once('/').map_or("", |(parent, _)| parent)
}

/// Returns the paths of `set` strictly below the directory `path` (`""` the root), in order.
///
/// They are the ones from `path/` on that start with it: a sibling such as `path-2` sorts
/// between `path` and `path/`, so a range from `path` would stop at it.
pub fn paths_below<'a>(
    set: &'a std::collections::BTreeSet<String>,
    path: &str,
) -> impl Iterator<Item = &'a String> {
    let prefix = if path.is_empty() { String::new() } else { format!("{path}/") };
    set.range::<str, _>((std::ops::Bound::Included(prefix.as_str()), std::ops::Bound::Unbounded))
        .take_while(move |below| below.starts_with(&prefix))
        .filter(|below| !below.is_empty())
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
        Some(Entry::Directory(contents)) => Some(&contents.children),
        _ => None,
    }
}

/// Returns the permission bits of an optional entry if it is a directory (`None` for a
/// directory without bits too).
pub fn directory_permissions(entry: Option<&Entry>) -> Option<u16> {
    match entry {
        Some(Entry::Directory(contents)) => contents.permissions,
        _ => None,
    }
}

impl Entry {
    /// Returns an empty directory.
    pub fn empty_directory() -> Entry {
        Entry::Directory(Directory::default())
    }

    /// Returns a file without permission bits (any mode but posix).
    pub fn file(digest: Digest, executable: bool) -> Entry {
        Entry::File { digest, executable, permissions: None }
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
    /// Files compare digest, executability and permission bits, links their target,
    /// problematic entries their message. Directories are always shallow-equal: their own
    /// permission bits are reconciled apart from their kind, so that a `chmod` of a directory
    /// never replaces what is inside it.
    pub fn shallow_eq(&self, other: &Entry) -> bool {
        match (self, other) {
            (Entry::Directory(_), Entry::Directory(_)) => true,
            (Entry::Directory(_), _) => false,
            (a, b) => a == b,
        }
    }

    /// Returns a copy without directory contents (a directory keeps its permission bits).
    pub fn slim(&self) -> Entry {
        match self {
            Entry::Directory(contents) => {
                Entry::Directory(Directory::with_permissions(contents.permissions))
            }
            other => other.clone(),
        }
    }

    /// Returns a copy with every untracked and problematic subtree removed, or `None` if this
    /// entry itself is unsynchronizable.
    pub fn synchronizable(&self) -> Option<Entry> {
        match self {
            Entry::Untracked | Entry::Problematic { .. } => None,
            Entry::Directory(contents) => Some(Entry::Directory(Directory {
                children: contents
                    .iter()
                    .filter_map(|(name, child)| Some((name.clone(), child.synchronizable()?)))
                    .collect(),
                permissions: contents.permissions,
            })),
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

    /// Checks the structural invariants: valid names, non-empty targets and messages,
    /// permission bits within their kind's and agreeing with a file's executable flag, and, if
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
        let invalid_permissions = |names: &Vec<&str>, permissions: u16| {
            Err(EntryError::InvalidPermissions { path: path(names), permissions })
        };
        match self {
            Entry::Directory(Directory { permissions: Some(bits), .. })
                if bits & !DIRECTORY_PERMISSION_BITS != 0 =>
            {
                invalid_permissions(names, *bits)
            }
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
            Entry::File { executable, permissions: Some(bits), .. }
                if bits & !FILE_PERMISSION_BITS != 0 || (bits & 0o111 != 0) != *executable =>
            {
                invalid_permissions(names, *bits)
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
        Entry::file(Digest([d; 32]), false)
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
        let expected: String = digest.0.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(digest.to_hex(), expected, "lowercase, two digits a byte");
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
    fn permission_bits_are_validated_and_compared() {
        let posix = |bits: u16| Entry::File {
            digest: Digest([1; 32]),
            executable: bits & 0o111 != 0,
            permissions: Some(bits),
        };
        assert!(posix(0o644).validate(true).is_ok());
        assert!(!posix(0o644).shallow_eq(&posix(0o600)), "a file's bits are its content");
        // Setuid, setgid and sticky bits never travel with a file.
        for bits in [0o4755, 0o2755, 0o1755] {
            let error = posix(bits).validate(false).expect_err("refused");
            assert_eq!(
                error,
                EntryError::InvalidPermissions { path: String::new(), permissions: bits }
            );
        }
        let lying =
            Entry::File { digest: Digest([1; 32]), executable: true, permissions: Some(0o644) };
        assert!(lying.validate(false).is_err(), "executable must follow the bits");
        let directory = |bits| Entry::Directory(Directory::with_permissions(Some(bits)));
        assert!(dir([("d", directory(0o2775))]).validate(true).is_ok());
        let error = dir([("d", directory(0o1777))]).validate(true).expect_err("sticky");
        assert_eq!(error, EntryError::InvalidPermissions { path: "d".into(), permissions: 0o1777 });
        // A directory's bits never make it differ in kind: they are reconciled apart.
        assert!(directory(0o700).shallow_eq(&directory(0o755)));
        assert_ne!(directory(0o700), directory(0o755));
        assert_eq!(directory(0o700).slim(), directory(0o700));
        assert_eq!(format_permissions(Some(0o2775)), "2775");
        assert_eq!(format_permissions(Some(0o644)), "0644");
    }

    #[test]
    fn entries_stay_small() {
        // Trees hold millions of entries: the bits must not make each one larger.
        assert!(std::mem::size_of::<Entry>() <= 40, "{}", std::mem::size_of::<Entry>());
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

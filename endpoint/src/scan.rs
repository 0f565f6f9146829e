//! Scanning a root into a [`Snapshot`].
//!
//! - An absent root is `None`; a root may be a directory or a single file; a root that is a
//!   symbolic link is an error.
//! - Unchanged files are never re-hashed: a [`Cache`] record keyed by path remembers (mode,
//!   mtime with nanoseconds, size, inode) and the digest. A record whose mtime was within the
//!   racy window of the scan is not trusted: the next scan hashes that file again (a write
//!   in the same clock tick can leave the metadata as it was).
//! - Unreadable entries and non-UTF-8 names are problematic; FIFOs, sockets and devices are
//!   untracked; ignored entries are untracked and not traversed; a directory on another file
//!   system is problematic (the scan never crosses a file-system boundary).
//! - Names starting with `.mutagen-temporary-` are ours and skipped.
//! - With `vcs_ignored`, what git ignores is untracked too; an accelerated rescan that sees a
//!   `.gitignore` change gives up (a full scan applies the new rules everywhere).
//! - Directories are walked in parallel (rayon), and files are hashed where they are found.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::ffi::CStr;
use std::os::fd::AsFd;
use std::path::Path;
use std::sync::{Arc, Mutex};

pub use mutagen_core::{PermissionsMode, SymlinkMode};
use mutagen_reconcile::{
    DIRECTORY_PERMISSION_BITS, Digest, Directory, Entry, FILE_PERMISSION_BITS, join_path,
};
use rayon::prelude::*;
use rustix::fs::{CWD, FileType, Stat};
use serde::{Deserialize, Serialize};

use crate::endpoint::{EndpointError, EndpointResult, Snapshot};
use crate::fsutil::{self, describe};
use crate::gitignore::GitIgnores;
use crate::ignore::{Decision, Ignorer};

/// The prefix of every name the engine creates inside a synchronized tree.
pub const TEMPORARY_PREFIX: &str = ".mutagen-temporary-";

/// The longest target a portable symbolic link may have, in bytes.
const MAX_PORTABLE_TARGET: usize = 247;

/// What a scan needs besides the root.
#[derive(Clone, Debug, Default)]
pub struct ScanOptions {
    /// How symbolic links are treated.
    pub symlink_mode: SymlinkMode,
    /// The compiled ignore patterns.
    pub ignorer: Arc<Ignorer>,
    /// What is recorded of permissions: executability (portable), nothing (manual: no file
    /// counts as executable), or the permission bits of files and directories (posix).
    pub permissions_mode: PermissionsMode,
    /// Also skip what the root's gitignore files, `.git/info/exclude` and the global
    /// excludes file ignore (see the `gitignore` module).
    pub vcs_ignored: bool,
}

/// What a scan remembers about one file so it need not hash it again.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheRecord {
    /// Type and permission bits.
    pub mode: u32,
    /// Modification time, seconds.
    pub mtime_sec: i64,
    /// Modification time, nanoseconds.
    pub mtime_nsec: u64,
    /// Size in bytes.
    pub size: u64,
    /// Inode number.
    pub inode: u64,
    /// The content digest.
    pub digest: Digest,
}

/// The mark in [`CacheRecord::mtime_nsec`] of a racy record (nanoseconds are below 10⁹).
const RACY: u64 = 1 << 63;

/// How recent a modification time makes a record racy: file systems take timestamps from a
/// clock that advances in ticks (a jiffy, at most 10 ms, on Linux before multigrain
/// timestamps), so a write in the same tick as an earlier one can leave the metadata as it
/// was. Whole-second timestamps (FAT, some network file systems) get [`RACY_WHOLE_SECONDS`].
pub const RACY_WINDOW: std::time::Duration = std::time::Duration::from_millis(20);

/// The racy window for a modification time with no nanoseconds.
pub const RACY_WHOLE_SECONDS: std::time::Duration = std::time::Duration::from_secs(2);

impl CacheRecord {
    // Field types of `Stat` differ across targets.
    #[allow(clippy::unnecessary_cast)]
    pub(crate) fn new(stat: &Stat, digest: Digest) -> CacheRecord {
        CacheRecord {
            mode: stat.st_mode,
            mtime_sec: stat.st_mtime,
            mtime_nsec: stat.st_mtime_nsec as u64,
            size: stat.st_size as u64,
            inode: stat.st_ino,
            digest,
        }
    }

    /// Marks the record racy if its modification time is within the racy window of `since`,
    /// a time no later than the moment its metadata was taken (for a placed file: than the
    /// moment it appeared in the root).
    ///
    /// # Invariant
    /// A record that is not racy describes content that cannot change without changing the
    /// metadata: any later write gets a later timestamp. A racy record is never trusted:
    /// the next scan hashes the file again, and a transition hashes it before replacing or
    /// removing it.
    pub(crate) fn marked(mut self, since: std::time::SystemTime) -> CacheRecord {
        let window = if self.mtime_nsec == 0 { RACY_WHOLE_SECONDS } else { RACY_WINDOW };
        let modified = u64::try_from(self.mtime_sec).ok().map(|seconds| {
            std::time::UNIX_EPOCH
                + std::time::Duration::from_secs(seconds)
                + std::time::Duration::from_nanos(self.mtime_nsec)
        });
        // Before the epoch is old; after `since` (a clock behind the file system's) is racy.
        if modified.is_some_and(|modified| modified + window >= since) {
            self.mtime_nsec |= RACY;
        }
        self
    }

    /// Returns whether the record is racy: its mtime was within [`RACY_WINDOW`] (or
    /// [`RACY_WHOLE_SECONDS`]) of its scan, so it is not trusted.
    pub fn is_racy(&self) -> bool {
        self.mtime_nsec & RACY != 0
    }

    /// Returns whether `stat` describes the same file, unchanged, and the record can be
    /// trusted for it (it is not racy).
    pub fn matches(&self, stat: &Stat) -> bool {
        let digest = self.digest;
        *self == CacheRecord::new(stat, digest)
    }

    /// Returns whether `stat` is the metadata the record holds, racy or not.
    pub fn describes(&self, stat: &Stat) -> bool {
        self.unmarked().matches(stat)
    }

    /// Returns the record without its racy mark (to compare records taken at different
    /// times: the mark depends on when they were taken).
    pub fn unmarked(&self) -> CacheRecord {
        CacheRecord { mtime_nsec: self.mtime_nsec & !RACY, ..*self }
    }
}

/// Digest records by root-relative path, from the latest scan.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cache {
    /// The records.
    pub records: HashMap<String, CacheRecord>,
}

impl Cache {
    /// Returns, for each of `digests` that some file has, one path holding that content.
    pub fn paths_by_digest(&self, digests: &HashSet<Digest>) -> HashMap<Digest, &str> {
        if digests.is_empty() {
            return HashMap::new();
        }
        self.records
            .iter()
            .filter(|(_, record)| digests.contains(&record.digest))
            .map(|(path, record)| (record.digest, path.as_str()))
            .collect()
    }
}

/// A snapshot and the cache that produced it.
#[derive(Clone, Debug, Default)]
pub struct ScanOutput {
    /// The snapshot.
    pub snapshot: Snapshot,
    /// Records for every file in the snapshot.
    pub cache: Cache,
}

/// Scans `root`, reusing digests from `previous` for unchanged files.
pub fn scan(root: &Path, options: &ScanOptions, previous: &Cache) -> EndpointResult<ScanOutput> {
    let mut cache = previous.clone();
    let snapshot = scan_into(root, options, &mut cache)?;
    Ok(ScanOutput { snapshot, cache })
}

/// Scans `root` in full, reusing digests from `cache` for unchanged files, and updates
/// `cache` in place to describe the new tree: the records of unchanged files stay where they
/// are (nothing is copied for them), changed and new files get new records, and the records
/// of files that are gone are removed. On error, `cache` is as it was.
pub fn scan_into(
    root: &Path,
    options: &ScanOptions,
    cache: &mut Cache,
) -> EndpointResult<Snapshot> {
    let fail = |reason: String| EndpointError::Scan { root: root.display().to_string(), reason };
    let stat = match rustix::fs::lstat(root) {
        Ok(stat) => stat,
        Err(rustix::io::Errno::NOENT) => {
            cache.records.clear();
            return Ok(Snapshot::default());
        }
        Err(e) => return Err(fail(describe(&e.into()))),
    };
    let scanner = Scanner::new(options, cache, root, stat.st_dev);
    let content = match FileType::from_raw_mode(stat.st_mode) {
        FileType::Symlink => return Err(fail("root is a symbolic link".into())),
        FileType::RegularFile => scanner.file(CWD, root, "", &stat),
        FileType::Directory => {
            let dir = fsutil::open_directory(CWD, root).map_err(|e| fail(describe(&e)))?;
            let children = scanner.directory(dir.as_fd(), "").map_err(|e| fail(describe(&e)))?;
            Entry::Directory(scanner.with_permissions(children, &stat))
        }
        _ => Entry::Untracked,
    };
    let changed = scanner.records.into_inner().unwrap_or_else(|poison| poison.into_inner());
    let mut snapshot = count(content);
    cache.records.extend(changed);
    // Every file entry has exactly one record: it either matched its record, which stayed,
    // or got a new one. More records than files means some are of files that are gone.
    if cache.records.len() as u64 != snapshot.files {
        let content = snapshot.content.as_ref().expect("counted");
        cache.records.retain(|path, _| matches!(content.get(path), Some(Entry::File { .. })));
    }
    snapshot.total_file_size = total_size(cache);
    Ok(snapshot)
}

/// The result of an accelerated rescan.
#[derive(Debug)]
pub struct Rescan {
    /// The root's content now.
    pub snapshot: Snapshot,
    /// Whether it differs from the previous content.
    pub changed: bool,
    /// The directories whose listing was read again (`""` the root, also when only the
    /// root's own bits changed): every entry that differs from the previous content lies in
    /// one of them or below one (a directory created or moved in since is read in full, its
    /// subdirectories not listed: a guided reconciliation takes a read directory whole).
    pub read: BTreeSet<String>,
}

/// Rescans only the directories in `dirty` (root-relative, "" for the root), taking every
/// other subtree from `previous` as it is, and updates `cache` to describe the new tree.
///
/// Directories at paths in `created` are read in full. `watch_new` is called with the
/// absolute path of each directory read in full (it was not a directory in `previous`, or it
/// is in `created`), before its contents are read. Returns `None` when an accelerated rescan cannot
/// be done (the root is not a directory in `previous` or on disk): a full scan is needed.
///
/// # Invariant
/// If `previous` was the tree on disk when the dirty directories started being recorded, and
/// every directory whose listing or entries changed since is in `dirty`, the result equals
/// what a full [`scan`] would return.
pub fn rescan(
    root: &Path,
    options: &ScanOptions,
    previous: Snapshot,
    cache: &mut Cache,
    dirty: &BTreeSet<String>,
    created: &BTreeSet<String>,
    watch_new: &dyn Fn(&Path),
) -> Option<Rescan> {
    let Snapshot { content: Some(Entry::Directory(previous_root)), .. } = previous else {
        return None;
    };
    let Directory { children, permissions: previous_permissions } = previous_root;
    let counts = Snapshot { content: None, ..previous };
    let stat = rustix::fs::lstat(root).ok()?;
    if FileType::from_raw_mode(stat.st_mode) != FileType::Directory {
        return None;
    }
    let dir = fsutil::open_directory(CWD, root).ok()?;
    let scanner = Scanner::new(options, cache, root, stat.st_dev);
    let updater = Updater {
        scanner: &scanner,
        root,
        dirty,
        created,
        watch_new,
        purged: RefCell::default(),
        read: RefCell::default(),
        changed: Cell::new(false),
        ignores_changed: Cell::new(false),
    };
    let content = updater.update(dir.as_fd(), "", children, false).ok()?;
    if options.vcs_ignored && updater.ignores_changed.get() {
        return None;
    }
    let content = scanner.with_permissions(content, &stat);
    if content.permissions != previous_permissions {
        updater.changed.set(true);
        updater.read.borrow_mut().insert(String::new());
    }
    let (purged, changed) = (updater.purged.into_inner(), updater.changed.get());
    let read = updater.read.into_inner();
    let records = scanner.records.into_inner().unwrap_or_else(|poison| poison.into_inner());
    for path in purged {
        cache.records.remove(&path);
    }
    cache.records.extend(records);
    let snapshot = if changed {
        summarize(Entry::Directory(content), cache)
    } else {
        // The same entries (same digests, so the same sizes): the same counts.
        Snapshot { content: Some(Entry::Directory(content)), ..counts }
    };
    Some(Rescan { snapshot, changed, read })
}

/// The state of one accelerated rescan.
struct Updater<'a, 's> {
    scanner: &'a Scanner<'s>,
    root: &'a Path,
    dirty: &'a BTreeSet<String>,
    created: &'a BTreeSet<String>,
    watch_new: &'a dyn Fn(&Path),
    /// Paths of files that are gone (their cache records go too).
    purged: RefCell<Vec<String>>,
    /// The directories whose listing was read again.
    read: RefCell<BTreeSet<String>>,
    changed: Cell<bool>,
    /// Whether some `.gitignore` changed.
    ignores_changed: Cell<bool>,
}

impl Updater<'_, '_> {
    /// Whether a dirty directory lies strictly below `path`.
    fn dirty_below(&self, path: &str) -> bool {
        mutagen_reconcile::paths_below(self.dirty, path).next().is_some()
    }

    /// Returns the new contents of the directory at `path`, open as `dir`, whose previous
    /// contents were `old`. Re-reads it if it is dirty (or `force`d), else only descends to
    /// dirty directories below it. On error, the records of everything in `old` are purged.
    fn update(
        &self,
        dir: std::os::fd::BorrowedFd<'_>,
        path: &str,
        mut old: BTreeMap<String, Entry>,
        force: bool,
    ) -> std::io::Result<BTreeMap<String, Entry>> {
        if !force && !self.dirty.contains(path) {
            for (name, entry) in &mut old {
                let Entry::Directory(directory) = entry else { continue };
                let child_path = join_path(path, name);
                if !self.dirty.contains(&child_path) && !self.dirty_below(&child_path) {
                    continue;
                }
                // Its own permission bits live in its parent's listing, which is not dirty:
                // they are unchanged.
                let children = std::mem::take(&mut directory.children);
                let updated = fsutil::open_directory(dir, name.as_str())
                    .inspect_err(|_| self.purge_children(&child_path, &children))
                    .and_then(|child| self.update(child.as_fd(), &child_path, children, false));
                match updated {
                    Ok(contents) => directory.children = contents,
                    // The directory is not what it was, yet its parent was not reported (its
                    // event is still on the way): read the parent again.
                    Err(_) => return self.update(dir, path, old, true),
                }
            }
            return Ok(old);
        }
        self.read.borrow_mut().insert(path.to_owned());
        let names = match fsutil::read_names(dir) {
            Ok(names) => names,
            Err(error) => {
                self.purge_children(path, &old);
                return Err(error);
            }
        };
        let mut contents = BTreeMap::new();
        for raw in &names {
            if raw.to_bytes().starts_with(TEMPORARY_PREFIX.as_bytes()) {
                continue;
            }
            let child_path = join_path(path, raw.to_str().unwrap_or_default());
            let previous = raw.to_str().ok().and_then(|name| old.remove(name));
            // A directory that was created (or moved in) since the previous scan is read in
            // full even if the previous scan already saw it: its watch may be younger than
            // some of its contents.
            let (previous_children, previous) = match previous {
                Some(Entry::Directory(directory)) if !self.created.contains(&child_path) => {
                    (Some(directory), None)
                }
                other => (None, other),
            };
            let was_directory = previous_children.is_some();
            let previous_permissions = previous_children.as_ref().map(|d| d.permissions);
            let previous_children = previous_children.map(|directory| directory.children);
            let previous_children = RefCell::new(previous_children);
            let mut subdirectory =
                |child: std::os::fd::BorrowedFd<'_>, child_path: &str| match previous_children
                    .borrow_mut()
                    .take()
                {
                    Some(children) => self.update(child, child_path, children, false),
                    None => {
                        (self.watch_new)(&self.root.join(child_path));
                        self.scanner.directory(child, child_path)
                    }
                };
            let scanned = self.scanner.child_with(dir, path, raw, &mut subdirectory);
            // Children not handed to a subdirectory update (the entry is no longer a
            // directory) are gone.
            if let Some(children) = previous_children.into_inner() {
                self.purge_children(&child_path, &children);
            }
            let Some((name, entry)) = scanned else {
                if was_directory || previous.is_some() {
                    self.changed.set(true);
                }
                if let Some(previous) = &previous {
                    self.purge(&child_path, previous);
                }
                continue;
            };
            let same = match (&previous, &entry) {
                (None, Entry::Directory(directory)) => {
                    was_directory && previous_permissions == Some(directory.permissions)
                }
                (None, _) => false,
                (Some(previous), entry) => previous == entry,
            };
            if !same {
                self.changed.set(true);
                if name == ".gitignore" {
                    self.ignores_changed.set(true);
                }
                // A file that stays a file has its record replaced; anything else that was
                // here is gone, a directory's files included (one that was created again
                // was not handed to an update that would purge them).
                let replaced =
                    matches!((&previous, &entry), (Some(Entry::File { .. }), Entry::File { .. }));
                if let Some(previous) = previous.as_ref().filter(|_| !replaced) {
                    self.purge(&child_path, previous);
                }
            }
            contents.insert(name, entry);
        }
        for (name, previous) in old {
            self.changed.set(true);
            if name == ".gitignore" {
                self.ignores_changed.set(true);
            }
            self.purge(&join_path(path, &name), &previous);
        }
        Ok(contents)
    }

    /// Forgets the cache records of the files in a subtree that is gone.
    fn purge(&self, path: &str, entry: &Entry) {
        match entry {
            Entry::File { .. } => self.purged.borrow_mut().push(path.to_owned()),
            Entry::Directory(children) => self.purge_children(path, children),
            _ => {}
        }
    }

    fn purge_children(&self, path: &str, children: &BTreeMap<String, Entry>) {
        for (name, child) in children {
            self.purge(&join_path(path, name), child);
        }
    }
}

/// Counts a scanned tree. Every file entry has exactly one cache record, so the total size is
/// the sum of the records' sizes and the walk needs no paths (it runs on every scan).
pub(crate) fn summarize(content: Entry, cache: &Cache) -> Snapshot {
    let mut snapshot = count(content);
    snapshot.total_file_size = total_size(cache);
    snapshot
}

/// Counts the entries of a tree and lists its problems; the total size is left at zero.
fn count(content: Entry) -> Snapshot {
    fn count(entry: &Entry, snapshot: &mut Snapshot) {
        match entry {
            Entry::Directory(children) => {
                snapshot.directories += 1;
                for child in children.values() {
                    count(child, snapshot);
                }
            }
            Entry::File { .. } => snapshot.files += 1,
            Entry::SymbolicLink { .. } => snapshot.symbolic_links += 1,
            Entry::Untracked => {}
            // Marks that there are problems; they are listed (with paths) by a second walk,
            // which most trees do not need.
            Entry::Problematic { .. } => snapshot.total_file_size = 1,
        }
    }
    let mut snapshot = Snapshot::default();
    count(&content, &mut snapshot);
    if snapshot.total_file_size != 0 {
        snapshot.problems = content.problems("");
        snapshot.total_file_size = 0;
    }
    snapshot.content = Some(content);
    snapshot
}

fn total_size(cache: &Cache) -> u64 {
    cache.records.values().map(|record| record.size).sum()
}

fn problematic(problem: impl Into<String>) -> Entry {
    Entry::Problematic { problem: problem.into() }
}

/// Reads the contents of an open directory at a root-relative path.
type ReadDirectory<'a> =
    dyn FnMut(std::os::fd::BorrowedFd<'_>, &str) -> std::io::Result<BTreeMap<String, Entry>> + 'a;

struct Scanner<'a> {
    options: &'a ScanOptions,
    previous: &'a Cache,
    root_device: u64,
    /// New cache records (of files whose record in `previous` did not match), from every
    /// worker thread.
    records: Mutex<Vec<(String, CacheRecord)>>,
    /// Git's ignore rules, when `vcs_ignored`.
    git: Option<GitIgnores>,
    /// When the scan began (before any metadata was read): records are racy against it.
    started: std::time::SystemTime,
}

impl<'a> Scanner<'a> {
    fn new(options: &'a ScanOptions, previous: &'a Cache, root: &Path, root_device: u64) -> Self {
        let git = options.vcs_ignored.then(|| GitIgnores::new(root));
        let started = std::time::SystemTime::now();
        Scanner { options, previous, root_device, records: Mutex::default(), git, started }
    }

    /// Scans the children of the open directory `dir` located at `path`.
    fn directory(
        &self,
        dir: std::os::fd::BorrowedFd<'_>,
        path: &str,
    ) -> std::io::Result<BTreeMap<String, Entry>> {
        let names = fsutil::read_names(dir)?;
        Ok(names
            .par_iter()
            .filter(|name| !name.to_bytes().starts_with(TEMPORARY_PREFIX.as_bytes()))
            .filter_map(|name| self.child(dir, path, name))
            .collect())
    }

    /// Scans one directory entry; `None` if it vanished meanwhile.
    fn child(
        &self,
        dir: std::os::fd::BorrowedFd<'_>,
        parent: &str,
        raw: &CStr,
    ) -> Option<(String, Entry)> {
        self.child_with(dir, parent, raw, &mut |dir, path| self.directory(dir, path))
    }

    /// Scans one directory entry, reading a directory's contents with `subdirectory`; `None`
    /// if the entry vanished meanwhile.
    fn child_with(
        &self,
        dir: std::os::fd::BorrowedFd<'_>,
        parent: &str,
        raw: &CStr,
        subdirectory: &mut ReadDirectory<'_>,
    ) -> Option<(String, Entry)> {
        let Ok(name) = raw.to_str() else {
            let lossy = format!("{} (non-UTF-8)", String::from_utf8_lossy(raw.to_bytes()));
            return Some((lossy, problematic("name is not valid utf-8")));
        };
        let path = join_path(parent, name);
        let stat = match fsutil::stat_at(dir, raw) {
            Ok(stat) => stat,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
            Err(e) => {
                return Some((
                    name.to_owned(),
                    problematic(format!("unable to read metadata: {}", describe(&e))),
                ));
            }
        };
        let kind = FileType::from_raw_mode(stat.st_mode);
        let is_directory = kind == FileType::Directory;
        // A directory the docker syntax excludes but may re-include below is traversed.
        let ignored = self.options.ignorer.decide(&path, is_directory) == Decision::Ignored
            || self.git.as_ref().is_some_and(|git| git.is_ignored(&path, is_directory));
        if ignored {
            return Some((name.to_owned(), Entry::Untracked));
        }
        let entry = match kind {
            FileType::Directory if stat.st_dev != self.root_device => {
                problematic("scan crossed filesystem boundary")
            }
            FileType::Directory => match fsutil::open_directory(dir, raw)
                .and_then(|child| subdirectory(child.as_fd(), &path))
            {
                Ok(contents) => Entry::Directory(self.with_permissions(contents, &stat)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
                Err(e) => problematic(format!("unable to read directory: {}", describe(&e))),
            },
            FileType::RegularFile => self.file(dir, raw, &path, &stat),
            FileType::Symlink => self.symlink(dir, raw, &path),
            _ => Entry::Untracked,
        };
        Some((name.to_owned(), entry))
    }

    /// Returns the entry for a regular file, hashing it only if the cache cannot vouch for it.
    fn file<P: rustix::path::Arg>(
        &self,
        dir: impl AsFd,
        name: P,
        path: &str,
        stat: &Stat,
    ) -> Entry {
        let executable =
            self.options.permissions_mode != PermissionsMode::Manual && stat.st_mode & 0o111 != 0;
        let permissions = (self.options.permissions_mode == PermissionsMode::Posix)
            .then_some(stat.st_mode as u16 & FILE_PERMISSION_BITS);
        // A record that matches stays as it is: only new records are collected.
        if let Some(record) = self.previous.records.get(path).filter(|record| record.matches(stat))
        {
            return Entry::File { digest: record.digest, executable, permissions };
        }
        let digest = match fsutil::open_file(dir, name).and_then(fsutil::hash_reader) {
            Ok((digest, hashed)) if hashed == stat.st_size as u64 => digest,
            Ok(_) => return problematic("file changed while it was being hashed"),
            Err(e) => return problematic(format!("unable to read file: {}", describe(&e))),
        };
        let record = CacheRecord::new(stat, digest).marked(self.started);
        self.records.lock().unwrap_or_else(|p| p.into_inner()).push((path.to_owned(), record));
        Entry::File { digest, executable, permissions }
    }

    /// Returns a directory of `children` with the bits of `stat` in permissions mode posix.
    fn with_permissions(&self, children: BTreeMap<String, Entry>, stat: &Stat) -> Directory {
        let permissions = (self.options.permissions_mode == PermissionsMode::Posix)
            .then_some(stat.st_mode as u16 & DIRECTORY_PERMISSION_BITS);
        Directory { children, permissions }
    }

    fn symlink(&self, dir: std::os::fd::BorrowedFd<'_>, raw: &CStr, path: &str) -> Entry {
        if self.options.symlink_mode == SymlinkMode::Ignore {
            return Entry::Untracked;
        }
        let target = match rustix::fs::readlinkat(dir, raw, Vec::new()) {
            Ok(target) => target,
            Err(e) => {
                return problematic(format!(
                    "unable to read symbolic link: {}",
                    describe(&e.into())
                ));
            }
        };
        let Ok(target) = target.into_string() else {
            return problematic("symbolic link target is not valid utf-8");
        };
        let check = match self.options.symlink_mode {
            SymlinkMode::Portable => check_portable_target(path, &target),
            _ if target.is_empty() => Err("empty target".to_owned()),
            _ => Ok(()),
        };
        match check {
            Ok(()) => Entry::SymbolicLink { target },
            Err(why) => problematic(format!("invalid symbolic link: {why}")),
        }
    }
}

/// Checks that a link at `path` with `target` is portable: non-empty, short, relative, free of
/// `:` and `\`, and never leading above the root.
pub fn check_portable_target(path: &str, target: &str) -> Result<(), String> {
    if target.is_empty() {
        return Err("empty target".into());
    }
    if target.len() > MAX_PORTABLE_TARGET {
        return Err(format!("target longer than {MAX_PORTABLE_TARGET} bytes"));
    }
    if target.contains(':') || target.contains('\\') {
        return Err("target contains ':' or '\\'".into());
    }
    if target.starts_with('/') {
        return Err("target is absolute".into());
    }
    // Depth of the link's parent directory below the root.
    let mut depth = path.matches('/').count() as i64;
    for component in target.split('/') {
        match component {
            "" | "." => {}
            ".." => {
                depth -= 1;
                if depth < 0 {
                    return Err("target escapes the synchronization root".into());
                }
            }
            _ => depth += 1,
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn portable_targets() {
        let table = [
            ("link", "file", true),
            ("link", "dir/file", true),
            ("d/link", "../file", true),
            ("link", "../outside", false),
            ("d/link", "../../outside", false),
            ("d/link", "x/../../file", true),
            ("link", "/etc/passwd", false),
            ("link", "c:/x", false),
            ("link", "a\\b", false),
            ("link", "", false),
        ];
        for (path, target, ok) in table {
            assert_eq!(check_portable_target(path, target).is_ok(), ok, "{path} -> {target}");
        }
        assert!(check_portable_target("l", &"a/".repeat(200)).is_err());
    }

    #[test]
    fn symlink_modes_parse() {
        assert_eq!("posix-raw".parse(), Ok(SymlinkMode::PosixRaw));
        assert!("raw".parse::<SymlinkMode>().expect_err("unknown mode").contains("\"raw\""));
    }
}

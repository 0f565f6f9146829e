//! Applying changes to disk.
//!
//! # Guarantees
//! - **Nothing the scan did not see is overwritten or deleted.** Before a file is replaced or
//!   removed, its current metadata (mode, mtime, size, inode) must equal the record of the scan
//!   this cycle used, and that record's digest must be the change's `old` digest; otherwise the
//!   path gets a "modification detected" problem and is left alone. Symbolic links are re-read.
//!   Directories are removed child by child, and one that still holds a name the change did not
//!   expect is kept and reported.
//! - Creation never replaces anything: files are moved into place with a non-replacing rename,
//!   directories and links are created with calls that fail if the name exists.
//! - Replacement of a file is one atomic rename of the staged copy over it.
//! - Every path below the root is reached through handles opened without following symbolic
//!   links, one `openat(O_NOFOLLOW)` per component.
//! - Each change reports what is on disk now, so the ancestor records reality and a failed
//!   operation is retried next cycle.
//!
//! The window between the metadata check and the rename or unlink is not closed (no portable
//! call can do that); it is microseconds wide, where the scan-to-transition window it guards is
//! seconds to minutes.
//!
//! # Modes
//! New files get `file_mode` (default 0644), with execute bits added for every class that can
//! read when the file is executable (0755); new directories get `directory_mode` (default
//! 0755). A replaced file keeps the permission bits of the file it replaces, with execute bits
//! set or cleared to match the source. In permissions mode `manual` ([`Modes::manual`]), new
//! files get the file mode exactly and a replaced file keeps its bits. A configured owner or
//! group is given to everything created, and to every file placed (before its rename, so it
//! never appears with another owner).

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::path::Path;

use mutagen_reconcile::{Change, Digest, Entry, Problem, join_path};
use rustix::fs::{AtFlags, CWD, Mode, OFlags, RenameFlags};
use rustix::io::Errno;

use crate::endpoint::TransitionResult;
use crate::fsutil::{self, Location, describe, with_executability};
use crate::scan::{Cache, CacheRecord, TEMPORARY_PREFIX};
use crate::staging::Staging;

/// Default permission bits for new files (before execute bits are added).
pub const DEFAULT_FILE_MODE: u32 = 0o644;
/// Default permission bits for new directories.
pub const DEFAULT_DIRECTORY_MODE: u32 = 0o755;

/// Permission bits given to what a transition creates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Modes {
    /// For new files, without execute bits (unless `manual`).
    pub file: u32,
    /// For new directories.
    pub directory: u32,
    /// Permissions mode `manual`: `file` applies as given and a replaced file keeps its bits
    /// exactly (executability is not synchronized).
    pub manual: bool,
    /// The owner given to what is created or replaced (`None`: the process's).
    pub owner: Option<u32>,
    /// The group given to what is created or replaced (`None`: the process's).
    pub group: Option<u32>,
}

impl Default for Modes {
    fn default() -> Modes {
        Modes {
            file: DEFAULT_FILE_MODE,
            directory: DEFAULT_DIRECTORY_MODE,
            manual: false,
            owner: None,
            group: None,
        }
    }
}

impl Modes {
    /// The bits of a new file.
    fn new_file(&self, executable: bool) -> u32 {
        if self.manual { self.file } else { with_executability(self.file, executable) }
    }

    /// The bits of a file that replaces one with `existing` bits.
    fn replacing(&self, existing: u32, executable: bool) -> u32 {
        if self.manual { existing & 0o7777 } else { with_executability(existing, executable) }
    }

    /// Gives our own staged file the configured owner and group, if any.
    fn chown_path(&self, path: &Path) -> rustix::io::Result<()> {
        if self.owner.is_none() && self.group.is_none() {
            return Ok(());
        }
        rustix::fs::chown(
            path,
            self.owner.map(rustix::fs::Uid::from_raw),
            self.group.map(rustix::fs::Gid::from_raw),
        )
    }

    /// Gives `name` in `dir` the configured owner and group, if any (never following a
    /// symbolic link).
    fn chown(&self, dir: BorrowedFd<'_>, name: &str) -> rustix::io::Result<()> {
        if self.owner.is_none() && self.group.is_none() {
            return Ok(());
        }
        rustix::fs::chownat(
            dir,
            name,
            self.owner.map(rustix::fs::Uid::from_raw),
            self.group.map(rustix::fs::Gid::from_raw),
            AtFlags::SYMLINK_NOFOLLOW,
        )
    }
}

/// Applies `changes` under `root`, checking against `cache` (the scan this cycle used) and
/// taking new files from `staging`. Also returns cache records for the files it placed, which
/// spare the next scan from hashing them.
pub fn transition(
    root: &Path,
    cache: &Cache,
    staging: &mut Staging,
    modes: Modes,
    changes: Vec<Change>,
) -> (TransitionResult, Vec<(String, CacheRecord)>) {
    staging.reserve(count_uses(&changes));
    let mut transitioner = Transitioner {
        root,
        cache,
        staging,
        modes,
        problems: Vec::new(),
        missing_files: false,
        placed: Vec::new(),
    };
    let results = changes.into_iter().map(|change| transitioner.apply(change)).collect();
    let result = TransitionResult {
        results,
        problems: transitioner.problems,
        missing_files: transitioner.missing_files,
    };
    (result, transitioner.placed)
}

/// Returns whether `change` only changes a file's executability (no content to stage).
pub fn is_mode_only(change: &Change) -> bool {
    matches!(
        (&change.old, &change.new),
        (Some(Entry::File { digest: a, .. }), Some(Entry::File { digest: b, .. })) if a == b
    )
}

/// Returns every file `changes` will take from staging, as (path, digest), in order: the files
/// inside each change's `new`, except for changes that only flip executability.
pub fn staged_files(changes: &[Change]) -> Vec<(String, Digest)> {
    let mut files = Vec::new();
    for change in changes.iter().filter(|c| !is_mode_only(c)) {
        if let Some(new) = &change.new {
            new.walk(&change.path, &mut |path, entry| {
                if let Entry::File { digest, .. } = entry {
                    files.push((path.to_owned(), *digest));
                }
            });
        }
    }
    files
}

/// Returns how many times each digest will be taken from staging.
fn count_uses(changes: &[Change]) -> HashMap<Digest, usize> {
    let mut uses = HashMap::new();
    for (_, digest) in staged_files(changes) {
        *uses.entry(digest).or_insert(0) += 1;
    }
    uses
}

struct Transitioner<'a> {
    root: &'a Path,
    cache: &'a Cache,
    staging: &'a mut Staging,
    modes: Modes,
    problems: Vec<Problem>,
    missing_files: bool,
    /// Cache records of the files placed from staging.
    placed: Vec<(String, CacheRecord)>,
}

impl Transitioner<'_> {
    fn problem(&mut self, path: &str, error: impl Into<String>) {
        self.problems.push(Problem::new(path, error));
    }

    /// Applies one change and returns what is at its path now.
    fn apply(&mut self, change: Change) -> Option<Entry> {
        let Location { parent, name } = match fsutil::locate(self.root, &change.path) {
            Ok(location) => location,
            Err(e) => {
                let reason = match e.raw_os_error().map(Errno::from_raw_os_error) {
                    Some(Errno::LOOP | Errno::NOTDIR) => {
                        "parent path is not a directory (it may have been replaced by a symbolic link)".to_owned()
                    }
                    _ => describe(&e),
                };
                self.problem(&change.path, format!("unable to locate parent: {reason}"));
                return change.old;
            }
        };
        let dir = parent.as_fd();
        let path = change.path.as_str();
        if let (
            Some(Entry::File { digest: old, .. }),
            Some(Entry::File { digest: new, executable }),
        ) = (&change.old, &change.new)
        {
            return self.replace_file(dir, &name, path, old, new, *executable, &change.old);
        }
        if let Some(old) = &change.old
            && let Some(remaining) = self.remove(dir, &name, path, old)
        {
            // Removal was incomplete: leave creation for a later cycle.
            return Some(remaining);
        }
        change.new.as_ref().and_then(|new| self.create(dir, &name, path, new))
    }

    /// Checks that the file at `name` is the one the scan recorded at `path` with `digest`.
    fn verify_file(
        &self,
        dir: BorrowedFd<'_>,
        name: &str,
        path: &str,
        digest: &Digest,
    ) -> Result<rustix::fs::Stat, String> {
        let stat = fsutil::stat_at(dir, name)
            .map_err(|e| format!("unable to read metadata: {}", describe(&e)))?;
        match self.cache.records.get(path) {
            Some(record) if record.digest == *digest && record.matches(&stat) => Ok(stat),
            _ => Err("modification detected: the file changed after it was scanned".into()),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn replace_file(
        &mut self,
        dir: BorrowedFd<'_>,
        name: &str,
        path: &str,
        old: &Digest,
        new: &Digest,
        executable: bool,
        unchanged: &Option<Entry>,
    ) -> Option<Entry> {
        let stat = match self.verify_file(dir, name, path, old) {
            Ok(stat) => stat,
            Err(error) => {
                self.problem(path, error);
                return unchanged.clone();
            }
        };
        let mode = self.modes.replacing(stat.st_mode, executable);
        let result = Some(Entry::File { digest: *new, executable });
        if old == new {
            return match rustix::fs::chmodat(dir, name, Mode::from_raw_mode(mode), AtFlags::empty())
            {
                Ok(()) => result,
                Err(e) => {
                    self.problem(
                        path,
                        format!("unable to set permissions: {}", describe(&e.into())),
                    );
                    unchanged.clone()
                }
            };
        }
        match self.place_staged(dir, name, path, new, mode, true) {
            Ok(()) => result,
            Err(()) => unchanged.clone(),
        }
    }

    /// Moves the staged file for `digest` to `name`, replacing what is there only if
    /// `replace`. Problems are recorded; `Err` means nothing changed at `name`.
    fn place_staged(
        &mut self,
        dir: BorrowedFd<'_>,
        name: &str,
        path: &str,
        digest: &Digest,
        mode: u32,
        replace: bool,
    ) -> Result<(), ()> {
        let Some(staged) = self.staging.take(digest) else {
            self.missing_files = true;
            self.problem(path, "unable to locate staged file (it will be transferred again)");
            return Err(());
        };
        // The staged file is private, verified content; a rename keeps its inode and mtime, so
        // its metadata taken before the rename is a true cache record for the placed file. Any
        // later change alters the metadata and forces a rehash.
        let outcome = rustix::fs::chmod(&staged, Mode::from_raw_mode(mode))
            .and_then(|()| self.modes.chown_path(&staged))
            .and_then(|()| rustix::fs::stat(&staged))
            .and_then(|stat| rename_into(CWD, &staged, dir, name, replace).map(|()| stat));
        let outcome = match outcome {
            Err(Errno::XDEV) => self.place_across_devices(&staged, dir, name, mode, replace),
            other => other.map_err(io::Error::from),
        };
        let stat = outcome.map_err(|e| {
            let _ = std::fs::remove_file(&staged);
            let reason = if e.kind() == io::ErrorKind::AlreadyExists {
                "unable to create file: something appeared at this path after it was scanned"
                    .to_owned()
            } else {
                format!("unable to place file: {}", describe(&e))
            };
            self.problem(path, reason);
        })?;
        self.placed.push((path.to_owned(), CacheRecord::new(&stat, *digest)));
        Ok(())
    }

    /// Copies a staged file next to its destination, then renames it into place.
    fn place_across_devices(
        &self,
        staged: &Path,
        dir: BorrowedFd<'_>,
        name: &str,
        mode: u32,
        replace: bool,
    ) -> io::Result<rustix::fs::Stat> {
        let temporary = format!("{TEMPORARY_PREFIX}cross-device-{}-{name}", std::process::id());
        let temporary = truncate_name(temporary);
        let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::CLOEXEC;
        let fd = rustix::fs::openat(dir, temporary.as_str(), flags, Mode::from_raw_mode(mode))?;
        let copied = (|| -> io::Result<rustix::fs::Stat> {
            let mut target = File::from(fd);
            io::copy(&mut File::open(staged)?, &mut target)?;
            rustix::fs::fchmod(&target, Mode::from_raw_mode(mode))?;
            if self.modes.owner.is_some() || self.modes.group.is_some() {
                rustix::fs::fchown(
                    &target,
                    self.modes.owner.map(rustix::fs::Uid::from_raw),
                    self.modes.group.map(rustix::fs::Gid::from_raw),
                )?;
            }
            let stat = rustix::fs::fstat(&target)?;
            rename_into(dir, temporary.as_str(), dir, name, replace)?;
            Ok(stat)
        })();
        if copied.is_err() {
            let _ = rustix::fs::unlinkat(dir, temporary.as_str(), AtFlags::empty());
        } else {
            let _ = std::fs::remove_file(staged);
        }
        copied
    }

    /// Removes `old` at `name`, verifying every item; returns what remains (`None` when all of
    /// it is gone).
    fn remove(
        &mut self,
        dir: BorrowedFd<'_>,
        name: &str,
        path: &str,
        old: &Entry,
    ) -> Option<Entry> {
        let outcome = match old {
            Entry::File { digest, .. } => self
                .verify_file(dir, name, path, digest)
                .and_then(|_| unlink(dir, name, AtFlags::empty())),
            Entry::SymbolicLink { target } => match rustix::fs::readlinkat(dir, name, Vec::new()) {
                Ok(current) if current.as_bytes() == target.as_bytes() => {
                    unlink(dir, name, AtFlags::empty())
                }
                Ok(_) => {
                    Err("modification detected: the symbolic link changed after it was scanned"
                        .into())
                }
                Err(e) => Err(format!("unable to read symbolic link: {}", describe(&e.into()))),
            },
            Entry::Directory(contents) => return self.remove_directory(dir, name, path, contents),
            // Never produced by reconcile; refuse rather than guess.
            Entry::Untracked | Entry::Problematic { .. } => {
                Err("refusing to remove unsynchronizable content".into())
            }
        };
        match outcome {
            Ok(()) => None,
            Err(error) => {
                self.problem(path, error);
                Some(old.clone())
            }
        }
    }

    fn remove_directory(
        &mut self,
        dir: BorrowedFd<'_>,
        name: &str,
        path: &str,
        contents: &BTreeMap<String, Entry>,
    ) -> Option<Entry> {
        let handle = match fsutil::open_directory(dir, name) {
            Ok(handle) => handle,
            Err(e) => {
                self.problem(path, format!("unable to open directory: {}", describe(&e)));
                return Some(Entry::Directory(contents.clone()));
            }
        };
        let mut remaining = BTreeMap::new();
        for (child_name, child) in contents {
            let child_path = join_path(path, child_name);
            if let Some(left) = self.remove(handle.as_fd(), child_name, &child_path, child) {
                remaining.insert(child_name.clone(), left);
            }
        }
        let unknown = match fsutil::read_names(handle.as_fd()) {
            Ok(names) => {
                names.iter().any(|n| n.to_str().map_or(true, |n| !remaining.contains_key(n)))
            }
            Err(e) => {
                self.problem(path, format!("unable to read directory: {}", describe(&e)));
                return Some(Entry::Directory(remaining));
            }
        };
        if unknown {
            self.problem(path, "unknown content encountered on disk: directory kept");
            return Some(Entry::Directory(remaining));
        }
        if !remaining.is_empty() {
            return Some(Entry::Directory(remaining));
        }
        match unlink(dir, name, AtFlags::REMOVEDIR) {
            Ok(()) => None,
            Err(error) => {
                self.problem(path, error);
                Some(Entry::Directory(remaining))
            }
        }
    }

    /// Creates `new` at `name`; returns what was created (`None` if nothing).
    fn create(
        &mut self,
        dir: BorrowedFd<'_>,
        name: &str,
        path: &str,
        new: &Entry,
    ) -> Option<Entry> {
        match new {
            Entry::File { digest, executable } => {
                let mode = self.modes.new_file(*executable);
                self.place_staged(dir, name, path, digest, mode, false).ok()?;
                Some(new.clone())
            }
            Entry::SymbolicLink { target } => {
                match rustix::fs::symlinkat(target.as_str(), dir, name)
                    .and_then(|()| self.modes.chown(dir, name))
                {
                    Ok(()) => Some(new.clone()),
                    Err(e) => {
                        self.problem(
                            path,
                            format!("unable to create symbolic link: {}", describe(&e.into())),
                        );
                        None
                    }
                }
            }
            Entry::Directory(contents) => self.create_directory(dir, name, path, contents),
            Entry::Untracked | Entry::Problematic { .. } => {
                self.problem(path, "refusing to create unsynchronizable content");
                None
            }
        }
    }

    fn create_directory(
        &mut self,
        dir: BorrowedFd<'_>,
        name: &str,
        path: &str,
        contents: &BTreeMap<String, Entry>,
    ) -> Option<Entry> {
        let mode = Mode::from_raw_mode(self.modes.directory);
        let created = rustix::fs::mkdirat(dir, name, mode)
            // mkdir applies the umask; set the documented mode exactly.
            .and_then(|()| rustix::fs::chmodat(dir, name, mode, AtFlags::empty()))
            .and_then(|()| self.modes.chown(dir, name))
            .map_err(io::Error::from)
            .and_then(|()| fsutil::open_directory(dir, name));
        let handle = match created {
            Ok(handle) => handle,
            Err(e) => {
                self.problem(path, format!("unable to create directory: {}", describe(&e)));
                // If mkdir succeeded but opening failed, an empty directory may exist; the next
                // scan will see it either way.
                return None;
            }
        };
        let mut done = BTreeMap::new();
        for (child_name, child) in contents {
            let child_path = join_path(path, child_name);
            if let Some(entry) = self.create(handle.as_fd(), child_name, &child_path, child) {
                done.insert(child_name.clone(), entry);
            }
        }
        Some(Entry::Directory(done))
    }
}

fn unlink(dir: BorrowedFd<'_>, name: &str, flags: AtFlags) -> Result<(), String> {
    rustix::fs::unlinkat(dir, name, flags)
        .map_err(|e| format!("unable to remove: {}", describe(&e.into())))
}

/// Renames `from` to `to`; without `replace`, fails with `EEXIST` if `to` exists.
fn rename_into<P: rustix::path::Arg, Q: rustix::path::Arg>(
    from_dir: impl AsFd,
    from: P,
    to_dir: impl AsFd,
    to: Q,
    replace: bool,
) -> rustix::io::Result<()> {
    if replace {
        return rustix::fs::renameat(from_dir, from, to_dir, to);
    }
    let from = from.into_c_str()?;
    let to = to.into_c_str()?;
    match rustix::fs::renameat_with(&from_dir, &*from, &to_dir, &*to, RenameFlags::NOREPLACE) {
        // File systems without RENAME_NOREPLACE: link (fails if `to` exists) then unlink.
        Err(Errno::INVAL | Errno::NOSYS) => {
            rustix::fs::linkat(&from_dir, &*from, &to_dir, &*to, AtFlags::empty())?;
            rustix::fs::unlinkat(&from_dir, &*from, AtFlags::empty())
        }
        other => other,
    }
}

/// Keeps a temporary name under the usual 255-byte limit.
fn truncate_name(mut name: String) -> String {
    while name.len() > 200 {
        name.pop();
    }
    name
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::os::unix::fs::PermissionsExt;
    use std::path::PathBuf;

    use rustix::fs::FileType;

    use super::*;
    use crate::scan::{self, ScanOptions};

    fn file_type(dir: &Path, name: &str) -> Option<FileType> {
        fsutil::stat_at(CWD, dir.join(name)).ok().map(|s| FileType::from_raw_mode(s.st_mode))
    }

    struct Fixture {
        _dir: tempfile::TempDir,
        root: PathBuf,
        staging: Staging,
    }

    fn fixture() -> Fixture {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("root");
        fs::create_dir(&root).expect("root");
        let staging = Staging::new(dir.path().join("staging"));
        Fixture { _dir: dir, root, staging }
    }

    fn digest(data: &[u8]) -> Digest {
        Digest(*blake3::hash(data).as_bytes())
    }

    fn file(data: &[u8]) -> Option<Entry> {
        Some(Entry::File { digest: digest(data), executable: false })
    }

    impl Fixture {
        fn scan(&self) -> scan::ScanOutput {
            scan::scan(&self.root, &ScanOptions::default(), &Cache::default()).expect("scan")
        }
        fn stage(&mut self, data: &[u8]) {
            assert!(self.staging.stage_from(data, digest(data)).expect("stage"));
        }
        fn run(&mut self, cache: &Cache, changes: Vec<Change>) -> TransitionResult {
            transition(&self.root, cache, &mut self.staging, Modes::default(), changes).0
        }
    }

    #[test]
    fn replaces_a_file_that_matches_the_scan() {
        let mut fx = fixture();
        fs::write(fx.root.join("a"), b"old").expect("write");
        fs::set_permissions(fx.root.join("a"), fs::Permissions::from_mode(0o640)).expect("chmod");
        let scanned = fx.scan();
        fx.stage(b"new");
        let out = fx.run(&scanned.cache, vec![Change::new("a", file(b"old"), file(b"new"))]);
        assert_eq!(out.problems, vec![]);
        assert_eq!(out.results, vec![file(b"new")]);
        assert_eq!(fs::read(fx.root.join("a")).expect("read"), b"new");
        let mode = fs::metadata(fx.root.join("a")).expect("stat").permissions().mode();
        assert_eq!(mode & 0o777, 0o640, "a replaced file keeps its permissions");
    }

    #[test]
    fn placed_files_come_with_true_cache_records() {
        let mut fx = fixture();
        fs::write(fx.root.join("a"), b"old").expect("write");
        let scanned = fx.scan();
        fx.stage(b"new");
        fx.stage(b"created");
        let changes = vec![
            Change::new("a", file(b"old"), file(b"new")),
            Change::new("b", None, file(b"created")),
        ];
        let (_, placed) =
            transition(&fx.root, &scanned.cache, &mut fx.staging, Modes::default(), changes);
        assert_eq!(placed.len(), 2);
        for (path, record) in placed {
            let stat = fsutil::stat_at(CWD, fx.root.join(&path)).expect("stat");
            assert!(record.matches(&stat), "{path}: record does not describe the placed file");
            let content = fs::read(fx.root.join(&path)).expect("read");
            assert_eq!(record.digest, digest(&content), "{path}");
        }
        // So the next scan reuses them rather than hashing.
        let rescanned =
            scan::scan(&fx.root, &ScanOptions::default(), &scanned.cache).expect("scan");
        assert_eq!(rescanned.snapshot.content.and_then(|c| c.get("b").cloned()), file(b"created"));
    }

    #[test]
    fn never_overwrites_a_file_changed_after_the_scan() {
        let mut fx = fixture();
        fs::write(fx.root.join("a"), b"old").expect("write");
        fs::write(fx.root.join("gone"), b"bye").expect("write");
        let scanned = fx.scan();
        // The user edits both files after the scan.
        fs::write(fx.root.join("a"), b"user edit").expect("write");
        fs::write(fx.root.join("gone"), b"also edited").expect("write");
        fx.stage(b"new");
        let out = fx.run(
            &scanned.cache,
            vec![
                Change::new("a", file(b"old"), file(b"new")),
                Change::new("gone", file(b"bye"), None),
            ],
        );
        assert_eq!(fs::read(fx.root.join("a")).expect("read"), b"user edit");
        assert_eq!(fs::read(fx.root.join("gone")).expect("read"), b"also edited");
        assert_eq!(out.results, vec![file(b"old"), file(b"bye")]);
        assert_eq!(out.problems.len(), 2);
        assert!(out.problems.iter().all(|p| p.error.starts_with("modification detected")));
    }

    #[test]
    fn keeps_a_directory_holding_unknown_content() {
        let mut fx = fixture();
        fs::create_dir(fx.root.join("d")).expect("mkdir");
        fs::write(fx.root.join("d/known"), b"k").expect("write");
        let scanned = fx.scan();
        fs::write(fx.root.join("d/new-after-scan"), b"precious").expect("write");
        let old = scanned.snapshot.content.as_ref().and_then(|c| c.get("d")).cloned();
        let out = fx.run(&scanned.cache, vec![Change::new("d", old, None)]);
        assert_eq!(fs::read(fx.root.join("d/new-after-scan")).expect("kept"), b"precious");
        assert!(!fx.root.join("d/known").exists(), "known content is removed");
        assert_eq!(out.results, vec![Some(Entry::empty_directory())]);
        assert!(out.problems[0].error.contains("unknown content"));
    }

    #[test]
    fn creation_never_replaces_what_appeared_meanwhile() {
        let mut fx = fixture();
        let scanned = fx.scan();
        fs::write(fx.root.join("a"), b"appeared").expect("write");
        fs::create_dir(fx.root.join("d")).expect("mkdir");
        fx.stage(b"new");
        let link = Some(Entry::SymbolicLink { target: "x".into() });
        fs::write(fx.root.join("l"), b"appeared too").expect("write");
        let out = fx.run(
            &scanned.cache,
            vec![
                Change::new("a", None, file(b"new")),
                Change::new("d", None, Some(Entry::empty_directory())),
                Change::new("l", None, link),
            ],
        );
        assert_eq!(fs::read(fx.root.join("a")).expect("read"), b"appeared");
        assert_eq!(out.results, vec![None, None, None]);
        assert_eq!(out.problems.len(), 3);
        assert_eq!(file_type(&fx.root, "l"), Some(FileType::RegularFile));
    }

    #[test]
    fn does_not_follow_a_directory_replaced_by_a_link() {
        let mut fx = fixture();
        let outside = tempfile::tempdir().expect("outside");
        fs::create_dir(fx.root.join("d")).expect("mkdir");
        let scanned = fx.scan();
        fs::remove_dir(fx.root.join("d")).expect("rmdir");
        std::os::unix::fs::symlink(outside.path(), fx.root.join("d")).expect("symlink");
        fx.stage(b"payload");
        let out = fx.run(&scanned.cache, vec![Change::new("d/f", None, file(b"payload"))]);
        assert!(!outside.path().join("f").exists(), "wrote through a symbolic link");
        assert_eq!(out.results, vec![None]);
        assert!(
            out.problems[0].error.contains("parent path is not a directory"),
            "{:?}",
            out.problems
        );
    }

    #[test]
    fn creates_trees_with_documented_modes_and_reports_missing_staged_files() {
        let mut fx = fixture();
        let scanned = fx.scan();
        fx.stage(b"x");
        let tree = Entry::Directory(BTreeMap::from([
            ("run".to_owned(), Entry::File { digest: digest(b"x"), executable: true }),
            ("same".to_owned(), Entry::File { digest: digest(b"x"), executable: false }),
            (
                "missing".to_owned(),
                Entry::File { digest: digest(b"not staged"), executable: false },
            ),
            ("link".to_owned(), Entry::SymbolicLink { target: "run".into() }),
        ]));
        let out = fx.run(&scanned.cache, vec![Change::new("t", None, Some(tree))]);
        assert!(out.missing_files);
        let Some(Some(Entry::Directory(created))) = out.results.first() else { panic!("{out:?}") };
        assert_eq!(created.keys().collect::<Vec<_>>(), ["link", "run", "same"]);
        let mode = |p: &str| {
            fs::symlink_metadata(fx.root.join(p)).expect("stat").permissions().mode() & 0o777
        };
        assert_eq!((mode("t"), mode("t/run"), mode("t/same")), (0o755, 0o755, 0o644));
        assert!(!fx.staging.path_of(&digest(b"x")).exists(), "last use moved the staged file");
    }

    #[test]
    fn executable_bit_change_needs_no_staging() {
        let mut fx = fixture();
        fs::write(fx.root.join("s"), b"#!/bin/sh").expect("write");
        let scanned = fx.scan();
        let new = Some(Entry::File { digest: digest(b"#!/bin/sh"), executable: true });
        let out = fx.run(&scanned.cache, vec![Change::new("s", file(b"#!/bin/sh"), new.clone())]);
        assert_eq!((out.results, out.problems), (vec![new], vec![]));
        let mode = fs::metadata(fx.root.join("s")).expect("stat").permissions().mode();
        assert_eq!(mode & 0o111, 0o111 & with_executability(mode, true));
    }
}

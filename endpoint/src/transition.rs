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
//!
//! In permissions mode posix, entries carry their bits and every file and directory created,
//! replaced or changed gets exactly those (within [`FILE_PERMISSION_BITS`] and
//! [`DIRECTORY_PERMISSION_BITS`], whatever a remote side sent). A change of a directory's
//! bits alone ([`Change::is_permissions_only`]) is verified like a file: the directory must
//! still have the bits the scan saw. A new directory is created writable by its owner and
//! gets its bits once its contents are in, and a change that takes the owner's write or
//! search bit from a directory is made after the other changes of the batch, so that a
//! read-only directory still receives its contents.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::path::Path;

use mutagen_reconcile::{
    Change, DIRECTORY_PERMISSION_BITS, Digest, Directory, Entry, FILE_PERMISSION_BITS, Problem,
    directory_permissions, join_path,
};
use rustix::fs::{AtFlags, CWD, FileType, Mode, OFlags, RenameFlags};
use rustix::io::Errno;

use crate::endpoint::TransitionResult;
use crate::fsutil::{self, Location, describe, with_executability};
use crate::scan::{Cache, CacheRecord, TEMPORARY_PREFIX};
use crate::staging::{Staging, Taken};

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
    /// The bits of a new file: its own `permissions` (mode posix), else the default mode.
    fn new_file(&self, executable: bool, permissions: Option<u16>) -> u32 {
        match permissions {
            Some(bits) => u32::from(bits & FILE_PERMISSION_BITS),
            None if self.manual => self.file,
            None => with_executability(self.file, executable),
        }
    }

    /// The bits of a file that replaces one with `existing` bits: its own `permissions`
    /// (mode posix), else the existing bits (with executability set as the source's).
    fn replacing(&self, existing: u32, executable: bool, permissions: Option<u16>) -> u32 {
        match permissions {
            Some(bits) => u32::from(bits & FILE_PERMISSION_BITS),
            None if self.manual => existing & 0o7777,
            None => with_executability(existing, executable),
        }
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
        started: std::time::SystemTime::now(),
    };
    // A directory that loses its owner's write or search bit would refuse the changes below
    // it: those come last, deepest first.
    let closes = |change: &Change| {
        change.is_permissions_only()
            && directory_permissions(change.new.as_ref()).is_some_and(|bits| bits & 0o300 != 0o300)
    };
    let mut results = vec![None; changes.len()];
    let mut last = Vec::new();
    for (index, change) in changes.into_iter().enumerate() {
        if closes(&change) {
            last.push((index, change));
        } else {
            results[index] = transitioner.apply(change);
        }
    }
    for (index, change) in last.into_iter().rev() {
        results[index] = transitioner.apply(change);
    }
    let result = TransitionResult {
        results,
        problems: transitioner.problems,
        missing_files: transitioner.missing_files,
    };
    (result, transitioner.placed)
}

/// Returns whether `change` only changes permissions: a file's executability or bits (no
/// content to stage), or a directory's bits.
pub fn is_mode_only(change: &Change) -> bool {
    change.is_permissions_only()
        || matches!(
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
    /// When the transition began (before anything was placed): placed files' records are
    /// racy against it.
    started: std::time::SystemTime,
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
                return change.old.clone();
            }
        };
        let dir = parent.as_fd();
        let path = change.path.as_str();
        if change.is_permissions_only() {
            return self.set_directory_permissions(dir, &name, &change);
        }
        if let (
            Some(Entry::File { digest: old, .. }),
            Some(Entry::File { digest: new, executable, permissions }),
        ) = (&change.old, &change.new)
        {
            let new = (new, *executable, *permissions);
            return self.replace_file(dir, &name, path, old, new, &change.old);
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
            // Its metadata may have stayed the same through a write: its content decides.
            Some(record)
                if record.digest == *digest
                    && record.describes(&stat)
                    && fsutil::holds(fsutil::open_file(dir, name), digest, record.size) =>
            {
                Ok(stat)
            }
            _ => Err("modification detected: the file changed after it was scanned".into()),
        }
    }

    /// Replaces the file at `name` (whose content the scan saw as `old`) with `new`'s
    /// content, executability and bits.
    fn replace_file(
        &mut self,
        dir: BorrowedFd<'_>,
        name: &str,
        path: &str,
        old: &Digest,
        (new, executable, permissions): (&Digest, bool, Option<u16>),
        unchanged: &Option<Entry>,
    ) -> Option<Entry> {
        let stat = match self.verify_file(dir, name, path, old) {
            Ok(stat) => stat,
            Err(error) => {
                self.problem(path, error);
                return unchanged.clone();
            }
        };
        let mode = self.modes.replacing(stat.st_mode, executable, permissions);
        let result = Some(Entry::File { digest: *new, executable, permissions });
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
        let Some(Taken { path: staged, record }) = self.staging.take(digest) else {
            self.missing_files = true;
            self.problem(path, "unable to locate staged file (it will be transferred again)");
            return Err(());
        };
        // The staged file is private, verified content; a rename keeps its inode and mtime, so
        // its metadata taken before the rename is a true cache record for the placed file. Any
        // later change alters the metadata and forces a rehash. A file committed with the bits
        // it needs (the default mode) is only renamed: its record is the one taken at commit.
        let owned = self.modes.owner.is_none() && self.modes.group.is_none();
        let outcome = if owned && record.mode & 0o7777 == mode {
            rename_into(CWD, &staged, dir, name, replace).map(|()| record)
        } else {
            rustix::fs::chmod(&staged, Mode::from_raw_mode(mode))
                .and_then(|()| self.modes.chown_path(&staged))
                .and_then(|()| rustix::fs::stat(&staged))
                .and_then(|stat| rename_into(CWD, &staged, dir, name, replace).map(|()| stat))
                .map(|stat| CacheRecord::new(&stat, *digest))
        };
        let outcome = match outcome {
            Err(Errno::XDEV) => self
                .place_across_devices(&staged, dir, name, mode, replace)
                .map(|stat| CacheRecord::new(&stat, *digest)),
            other => other.map_err(io::Error::from),
        };
        let record = match outcome {
            Ok(record) => record,
            // Removed from the store behind its back (the store trusts its index).
            Err(e) if e.kind() == io::ErrorKind::NotFound && staged.symlink_metadata().is_err() => {
                self.missing_files = true;
                self.problem(path, "unable to locate staged file (it will be transferred again)");
                return Err(());
            }
            Err(e) => {
                let _ = std::fs::remove_file(&staged);
                let reason = if e.kind() == io::ErrorKind::AlreadyExists {
                    "unable to create file: something appeared at this path after it was scanned"
                        .to_owned()
                } else {
                    format!("unable to place file: {}", describe(&e))
                };
                self.problem(path, reason);
                return Err(());
            }
        };
        self.placed.push((path.to_owned(), record.marked(self.started)));
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

    /// Sets the bits of the directory at `name` to those of `change.new`, if it still has
    /// the bits of `change.old` (what the scan saw); returns the directory's bits now.
    fn set_directory_permissions(
        &mut self,
        dir: BorrowedFd<'_>,
        name: &str,
        change: &Change,
    ) -> Option<Entry> {
        let path = change.path.as_str();
        let with_bits = |bits| Some(Entry::Directory(Directory::with_permissions(bits)));
        let (old, new) = (
            directory_permissions(change.old.as_ref()),
            directory_permissions(change.new.as_ref()),
        );
        let current = match fsutil::stat_at(dir, name) {
            Ok(stat) if FileType::from_raw_mode(stat.st_mode) == FileType::Directory => {
                stat.st_mode as u16 & DIRECTORY_PERMISSION_BITS
            }
            Ok(_) => {
                self.problem(
                    path,
                    "modification detected: the directory was replaced after it was scanned",
                );
                return change.old.clone();
            }
            Err(e) => {
                self.problem(path, format!("unable to read metadata: {}", describe(&e)));
                return change.old.clone();
            }
        };
        if old.is_some_and(|old| old != current) {
            self.problem(
                path,
                "modification detected: the directory's permissions changed after it was scanned",
            );
            return change.old.clone();
        }
        let Some(bits) = new.map(|bits| bits & DIRECTORY_PERMISSION_BITS) else {
            // Never produced: a side's directory always has bits in permissions mode posix.
            self.problem(path, "refusing to set permissions without bits");
            return change.old.clone();
        };
        if let Err(e) =
            rustix::fs::chmodat(dir, name, Mode::from_raw_mode(bits.into()), AtFlags::empty())
        {
            self.problem(path, format!("unable to set permissions: {}", describe(&e.into())));
            return change.old.clone();
        }
        self.directory_bits(dir, name, path, bits)
            .map_or(change.old.clone(), |now| with_bits(Some(now)))
    }

    /// Reads back the bits of the directory at `name` after they were set to `wanted`: the
    /// kernel drops setgid, without an error, for a directory whose group the process is not
    /// in. Returns what is there now (`None` if it cannot be read).
    fn directory_bits(
        &mut self,
        dir: BorrowedFd<'_>,
        name: &str,
        path: &str,
        wanted: u16,
    ) -> Option<u16> {
        match fsutil::stat_at(dir, name) {
            Ok(stat) => {
                let now = stat.st_mode as u16 & DIRECTORY_PERMISSION_BITS;
                if now != wanted {
                    self.problem(path, format!("unable to set permissions {wanted:04o}: the directory has {now:04o} (setgid needs membership in the directory's group)"));
                }
                Some(now)
            }
            Err(e) => {
                self.problem(path, format!("unable to read metadata: {}", describe(&e)));
                None
            }
        }
    }

    fn remove_directory(
        &mut self,
        dir: BorrowedFd<'_>,
        name: &str,
        path: &str,
        directory: &Directory,
    ) -> Option<Entry> {
        let contents = &directory.children;
        let remaining_directory = |children| {
            Some(Entry::Directory(Directory { children, permissions: directory.permissions }))
        };
        let handle = match fsutil::open_directory(dir, name) {
            Ok(handle) => handle,
            Err(e) => {
                self.problem(path, format!("unable to open directory: {}", describe(&e)));
                return Some(Entry::Directory(directory.clone()));
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
                return remaining_directory(remaining);
            }
        };
        if unknown {
            self.problem(path, "unknown content encountered on disk: directory kept");
            return remaining_directory(remaining);
        }
        if !remaining.is_empty() {
            return remaining_directory(remaining);
        }
        match unlink(dir, name, AtFlags::REMOVEDIR) {
            Ok(()) => None,
            Err(error) => {
                self.problem(path, error);
                remaining_directory(remaining)
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
            Entry::File { digest, executable, permissions } => {
                let mode = self.modes.new_file(*executable, *permissions);
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
        directory: &Directory,
    ) -> Option<Entry> {
        let contents = &directory.children;
        // In permissions mode posix, the directory's own bits, once its contents are in.
        let wanted = directory.permissions.map(|bits| bits & DIRECTORY_PERMISSION_BITS);
        let mode = match wanted {
            Some(bits) => Mode::from_raw_mode(u32::from(bits) | 0o700),
            None => Mode::from_raw_mode(self.modes.directory),
        };
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
        let permissions = wanted.and_then(|bits| {
            let set = rustix::fs::fchmod(&handle, Mode::from_raw_mode(bits.into()));
            if let Err(e) = set {
                self.problem(path, format!("unable to set permissions: {}", describe(&e.into())));
            }
            self.directory_bits(dir, name, path, bits)
        });
        Some(Entry::Directory(Directory { children: done, permissions }))
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
    use crate::scan::{self, PermissionsMode, ScanOptions};

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
        Some(Entry::file(digest(data), false))
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

    fn mode_of(path: &Path) -> u32 {
        fs::metadata(path).expect("stat").permissions().mode() & 0o7777
    }

    fn posix_scan(root: &Path) -> scan::ScanOutput {
        let options =
            ScanOptions { permissions_mode: PermissionsMode::Posix, ..ScanOptions::default() };
        scan::scan(root, &options, &Cache::default()).expect("scan")
    }

    fn posix_file(data: &[u8], bits: u16) -> Entry {
        Entry::File { digest: digest(data), executable: bits & 0o111 != 0, permissions: Some(bits) }
    }

    fn posix_directory(bits: u16, children: Vec<(&str, Entry)>) -> Entry {
        let children = children.into_iter().map(|(name, e)| (name.to_owned(), e)).collect();
        Entry::Directory(Directory { children, permissions: Some(bits) })
    }

    #[test]
    fn posix_bits_are_given_to_what_is_created_and_changed() {
        let mut fx = fixture();
        fs::create_dir(fx.root.join("d")).expect("mkdir");
        fs::set_permissions(fx.root.join("d"), fs::Permissions::from_mode(0o755)).expect("chmod");
        fs::write(fx.root.join("f"), b"f").expect("write");
        fs::set_permissions(fx.root.join("f"), fs::Permissions::from_mode(0o644)).expect("chmod");
        let scanned = posix_scan(&fx.root);
        let held =
            |path: &str| scanned.snapshot.content.as_ref().and_then(|c| c.get(path)).cloned();
        assert_eq!(held("f"), Some(posix_file(b"f", 0o644)));
        assert_eq!(held("d").map(|d| d.slim()), Some(posix_directory(0o755, vec![])));
        fx.stage(b"inner");
        fx.stage(b"run");
        // A read-only directory with contents, a setgid directory, an executable, a file's bits
        // and a directory's bits alone; setuid and sticky bits from a remote side are dropped.
        let new_tree = posix_directory(
            0o555,
            vec![("inner", posix_file(b"inner", 0o440)), ("g", posix_directory(0o2770, vec![]))],
        );
        let changes = vec![
            Change::new("ro", None, Some(new_tree.clone())),
            Change::new("run", None, Some(posix_file(b"run", 0o750))),
            Change::new("f", held("f"), Some(posix_file(b"f", 0o600))),
            Change::permissions("d", Some(0o755), Some(0o2750)),
            Change::new("sticky", None, Some(posix_directory(0o1777, vec![]))),
        ];
        let out = fx.run(&scanned.cache, changes);
        assert_eq!(out.problems, vec![]);
        assert_eq!(out.results[0], Some(new_tree));
        assert_eq!(out.results[3], Some(posix_directory(0o2750, vec![])));
        assert_eq!(out.results[4], Some(posix_directory(0o777, vec![])));
        for (path, bits) in [
            ("ro", 0o555),
            ("ro/inner", 0o440),
            ("ro/g", 0o2770),
            ("run", 0o750),
            ("f", 0o600),
            ("d", 0o2750),
            ("sticky", 0o777),
        ] {
            assert_eq!(mode_of(&fx.root.join(path)), bits, "{path}");
        }
        fs::set_permissions(fx.root.join("ro"), fs::Permissions::from_mode(0o755)).expect("chmod");
    }

    #[test]
    fn a_directory_whose_bits_changed_after_the_scan_keeps_them() {
        let mut fx = fixture();
        fs::create_dir(fx.root.join("d")).expect("mkdir");
        fs::set_permissions(fx.root.join("d"), fs::Permissions::from_mode(0o755)).expect("chmod");
        let scanned = posix_scan(&fx.root);
        fs::set_permissions(fx.root.join("d"), fs::Permissions::from_mode(0o700)).expect("chmod");
        let change = Change::permissions("d", Some(0o755), Some(0o775));
        let out = fx.run(&scanned.cache, vec![change.clone()]);
        assert_eq!(mode_of(&fx.root.join("d")), 0o700, "the user's bits are kept");
        assert_eq!(out.results, vec![change.old]);
        assert!(out.problems[0].error.contains("permissions changed after it was scanned"));
    }

    #[test]
    fn a_directory_closed_to_its_owner_still_receives_its_contents() {
        let mut fx = fixture();
        fs::create_dir(fx.root.join("d")).expect("mkdir");
        fs::set_permissions(fx.root.join("d"), fs::Permissions::from_mode(0o755)).expect("chmod");
        let scanned = posix_scan(&fx.root);
        fx.stage(b"late");
        // The parent's change comes first, as reconcile orders them; it is made last.
        let changes = vec![
            Change::permissions("d", Some(0o755), Some(0o555)),
            Change::new("d/late", None, Some(posix_file(b"late", 0o644))),
        ];
        let out = fx.run(&scanned.cache, changes);
        assert_eq!(out.problems, vec![]);
        assert_eq!(fs::read(fx.root.join("d/late")).expect("read"), b"late");
        assert_eq!(mode_of(&fx.root.join("d")), 0o555);
        assert_eq!(out.results[0], Some(posix_directory(0o555, vec![])));
        fs::set_permissions(fx.root.join("d"), fs::Permissions::from_mode(0o755)).expect("chmod");
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
            assert!(record.describes(&stat), "{path}: record does not describe the placed file");
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

    /// A write in the clock tick of the scan can leave size and mtime as the scan saw them
    /// (before multigrain timestamps, Linux stamps files from a clock that advances in
    /// ticks): such a racy record is checked by content before anything is replaced or
    /// removed, and a file whose content is still the scanned one is replaced as usual.
    #[test]
    fn never_overwrites_a_file_rewritten_in_the_tick_of_its_scan() {
        let mut fx = fixture();
        // Stamped ahead of the scan, so racy however long it takes to start (a file written in
        // the scan's tick is racy for the window only; a loaded machine may be slower).
        let modified = std::time::SystemTime::now() + std::time::Duration::from_secs(60);
        let stamp = |path: &Path| {
            fs::File::options()
                .write(true)
                .open(path)
                .and_then(|f| f.set_times(fs::FileTimes::new().set_modified(modified)))
                .expect("utimes");
        };
        for (name, data) in [("a", b"old"), ("gone", b"bye"), ("kept", b"abc")] {
            fs::write(fx.root.join(name), data).expect("write");
            stamp(&fx.root.join(name));
        }
        let scanned = fx.scan();
        assert!(scanned.cache.records.values().all(|record| record.is_racy()), "stamped ahead");
        // Same size, inode and mtime: what a same-tick edit leaves.
        for (name, data) in [("a", b"OLD"), ("gone", b"BYE")] {
            fs::write(fx.root.join(name), data).expect("write");
            stamp(&fx.root.join(name));
        }
        fx.stage(b"new");
        let out = fx.run(
            &scanned.cache,
            vec![
                Change::new("a", file(b"old"), file(b"new")),
                Change::new("gone", file(b"bye"), None),
                Change::new("kept", file(b"abc"), file(b"new")),
            ],
        );
        assert_eq!(fs::read(fx.root.join("a")).expect("read"), b"OLD");
        assert_eq!(fs::read(fx.root.join("gone")).expect("read"), b"BYE");
        assert_eq!(fs::read(fx.root.join("kept")).expect("read"), b"new");
        assert_eq!(out.results, vec![file(b"old"), file(b"bye"), file(b"new")]);
        assert_eq!(out.problems.len(), 2, "{:?}", out.problems);
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
        let tree = Entry::Directory(Directory::from(BTreeMap::from([
            ("run".to_owned(), Entry::file(digest(b"x"), true)),
            ("same".to_owned(), Entry::file(digest(b"x"), false)),
            ("missing".to_owned(), Entry::file(digest(b"not staged"), false)),
            ("link".to_owned(), Entry::SymbolicLink { target: "run".into() }),
        ])));
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
    fn a_staged_file_removed_behind_the_stores_back_is_reported_missing() {
        let mut fx = fixture();
        let scanned = fx.scan();
        fx.stage(b"gone");
        fs::remove_file(fx.staging.path_of(&digest(b"gone"))).expect("remove");
        let out = fx.run(&scanned.cache, vec![Change::new("f", None, file(b"gone"))]);
        assert!(out.missing_files, "{out:?}");
        assert_eq!(out.results, vec![None]);
        let problems: Vec<_> = out.problems.iter().map(|p| p.error.as_str()).collect();
        assert_eq!(problems, ["unable to locate staged file (it will be transferred again)"]);
        assert!(!fx.root.join("f").exists());
    }

    #[test]
    fn executable_bit_change_needs_no_staging() {
        let mut fx = fixture();
        fs::write(fx.root.join("s"), b"#!/bin/sh").expect("write");
        let scanned = fx.scan();
        let new = Some(Entry::file(digest(b"#!/bin/sh"), true));
        let out = fx.run(&scanned.cache, vec![Change::new("s", file(b"#!/bin/sh"), new.clone())]);
        assert_eq!((out.results, out.problems), (vec![new], vec![]));
        let mode = fs::metadata(fx.root.join("s")).expect("stat").permissions().mode();
        assert_eq!(mode & 0o111, 0o111 & with_executability(mode, true));
    }
}

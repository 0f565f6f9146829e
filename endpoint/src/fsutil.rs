//! Small file-system helpers over `rustix`'s `*at` calls.
//!
//! Everything below a root is reached through directory handles opened with `O_NOFOLLOW`, so a
//! path component that became a symbolic link fails with `ELOOP`/`ENOTDIR` instead of being
//! followed.

use std::ffi::CString;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use mutagen_reconcile::{Digest, validate_name};
use rustix::fs::{AtFlags, CWD, Dir, Mode, OFlags, Stat};

/// Opens a directory without following a symbolic link at `name`.
pub(crate) fn open_directory<P: rustix::path::Arg>(dir: impl AsFd, name: P) -> io::Result<OwnedFd> {
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    Ok(rustix::fs::openat(dir, name, flags, Mode::empty())?)
}

/// Opens a file for reading without following a symbolic link at `name`.
pub(crate) fn open_file<P: rustix::path::Arg>(dir: impl AsFd, name: P) -> io::Result<File> {
    let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NOCTTY;
    Ok(File::from(rustix::fs::openat(dir, name, flags, Mode::empty())?))
}

/// Returns the metadata of `name` in `dir`, not following a symbolic link.
pub(crate) fn stat_at<P: rustix::path::Arg>(dir: impl AsFd, name: P) -> io::Result<Stat> {
    Ok(rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW)?)
}

/// Returns the names in a directory, without `.` and `..`.
pub(crate) fn read_names(dir: impl AsFd) -> io::Result<Vec<CString>> {
    let mut names = Vec::new();
    for entry in Dir::read_from(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        if name.to_bytes() != b"." && name.to_bytes() != b".." {
            names.push(name.to_owned());
        }
    }
    Ok(names)
}

thread_local! {
    /// One read buffer per thread: allocating (and zeroing) one per file dominated scans of
    /// many small files.
    static HASH_BUFFER: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(vec![0u8; 64 * 1024]);
}

/// Hashes everything readable from `reader`; returns the digest and the number of bytes read.
pub(crate) fn hash_reader(reader: impl Read) -> io::Result<(Digest, u64)> {
    HASH_BUFFER.with(|buffer| hash_with(reader, &mut buffer.borrow_mut()))
}

/// Returns whether `file` opened and holds exactly `size` bytes hashing to `digest`.
pub(crate) fn holds(file: io::Result<File>, digest: &Digest, size: u64) -> bool {
    file.and_then(hash_reader).is_ok_and(|(hashed, read)| hashed == *digest && read == size)
}

fn hash_with(mut reader: impl Read, buffer: &mut [u8]) -> io::Result<(Digest, u64)> {
    let mut hasher = blake3::Hasher::new();
    let mut total = 0u64;
    loop {
        match reader.read(buffer) {
            Ok(0) => break,
            Ok(n) => {
                hasher.update(&buffer[..n]);
                total += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok((Digest(*hasher.finalize().as_bytes()), total))
}

/// Returns `mode`'s permission bits with execute bits set for every class that can read (when
/// `executable`) or cleared.
pub(crate) fn with_executability(mode: u32, executable: bool) -> u32 {
    let permissions = mode & 0o777;
    if executable { permissions | ((permissions & 0o444) >> 2) } else { permissions & !0o111 }
}

/// The location of a root-relative path: a handle on its parent directory and its name.
pub(crate) struct Location {
    pub(crate) parent: OwnedFd,
    pub(crate) name: String,
}

/// Opens the parent of `path` (root-relative, `""` = the root itself) without following links
/// below the root. The root's own parent is opened normally (links above the root are fine).
pub(crate) fn locate(root: &Path, path: &str) -> io::Result<Location> {
    if path.is_empty() {
        let name = root.file_name().and_then(|n| n.to_str()).ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidInput, "root has no usable name")
        })?;
        let parent = match root.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
        let parent = rustix::fs::openat(CWD, parent, flags, Mode::empty())?;
        return Ok(Location { parent, name: name.to_owned() });
    }
    let mut components: Vec<&str> = path.split('/').collect();
    if !components.iter().all(|c| validate_name(c)) {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "invalid path"));
    }
    let name = components.pop().unwrap_or_default().to_owned();
    let mut parent = open_directory(CWD, root)?;
    for component in components {
        parent = open_directory(&parent, component)?;
    }
    Ok(Location { parent, name })
}

/// Opens the regular file at a root-relative path, without following links on the way.
pub(crate) fn open_below(root: &Path, path: &str) -> io::Result<File> {
    let Location { parent, name } = locate(root, path)?;
    open_file(&parent, name.as_str())
}

/// Opens regular files below a root, without following links, for a run of paths in tree
/// order: the latest parent directory stays open, so the files of one directory cost one
/// `openat` each instead of one per component of their path (an initial sync of 100,000 files
/// four levels deep opened and closed 800,000 directories for them).
///
/// Invariant: the kept directory was reached from the root by [`locate`], component by
/// component without following links, under exactly the parent path it is kept for. Keep an
/// opener for one run of requests only: a directory renamed meanwhile is still read through
/// its open descriptor, which is harmless only because what is read is verified by digest.
pub(crate) struct Opener<'a> {
    root: &'a Path,
    parent: Option<(String, OwnedFd)>,
}

impl Opener<'_> {
    /// Returns an opener for files below `root`.
    pub(crate) fn new(root: &Path) -> Opener<'_> {
        Opener { root, parent: None }
    }

    /// Opens the regular file at the root-relative `path`.
    pub(crate) fn open(&mut self, path: &str) -> io::Result<File> {
        if path.is_empty() {
            return open_below(self.root, path);
        }
        let (directory, name) = path.rsplit_once('/').unwrap_or(("", path));
        if let Some((kept, parent)) = &self.parent
            && kept == directory
        {
            if !validate_name(name) {
                return Err(io::Error::new(io::ErrorKind::InvalidInput, "invalid path"));
            }
            return open_file(parent, name);
        }
        let Location { parent, name } = locate(self.root, path)?;
        let file = open_file(&parent, name.as_str());
        self.parent = Some((directory.to_owned(), parent));
        file
    }
}

/// Describes an I/O error in lowercase for a problem message.
pub(crate) fn describe(error: &io::Error) -> String {
    let text = match error.raw_os_error() {
        Some(code) => rustix::io::Errno::from_raw_os_error(code).to_string(),
        None => error.to_string(),
    };
    let mut text = text.trim_end_matches('.').to_owned();
    if let Some(first) = text.get_mut(0..1) {
        first.make_ascii_lowercase();
    }
    // Drop Rust's " (os error N)" suffix, if any.
    match text.find(" (os error") {
        Some(i) => text[..i].to_owned(),
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn executability_follows_read_bits() {
        assert_eq!(with_executability(0o644, true), 0o755);
        assert_eq!(with_executability(0o600, true), 0o700);
        assert_eq!(with_executability(0o755, false), 0o644);
        assert_eq!(with_executability(0o100644, false), 0o644);
    }

    #[test]
    fn describe_is_lowercase_without_os_suffix() {
        let text = describe(&io::Error::from_raw_os_error(2));
        assert!(!text.contains("os error"), "{text}");
        assert_eq!(text, text.to_lowercase());
    }

    #[test]
    fn locate_refuses_to_follow_links_below_the_root() {
        let dir = tempfile::tempdir().expect("tempdir");
        let outside = tempfile::tempdir().expect("tempdir");
        std::os::unix::fs::symlink(outside.path(), dir.path().join("link")).expect("symlink");
        assert!(locate(dir.path(), "link/file").is_err());
        assert!(locate(dir.path(), "../x").is_err());
        assert!(locate(dir.path(), "a//b").is_err());
        let location = locate(dir.path(), "link").expect("parent is the root");
        assert_eq!(location.name, "link");
    }

    #[test]
    fn an_opener_keeps_one_directory_and_never_follows_links() {
        let dir = tempfile::tempdir().expect("tempdir");
        let outside = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("a/b")).expect("mkdir");
        for (path, content) in [("top", "t"), ("a/b/one", "1"), ("a/b/two", "2"), ("a/x", "x")] {
            std::fs::write(dir.path().join(path), content).expect("write");
        }
        std::fs::write(outside.path().join("secret"), "s").expect("write");
        std::os::unix::fs::symlink(outside.path(), dir.path().join("a/b/link")).expect("link");
        std::os::unix::fs::symlink(outside.path().join("secret"), dir.path().join("a/b/file"))
            .expect("link");
        let mut opener = Opener::new(dir.path());
        let read = |opener: &mut Opener<'_>, path: &str| -> io::Result<String> {
            let mut text = String::new();
            opener.open(path)?.read_to_string(&mut text)?;
            Ok(text)
        };
        assert_eq!(read(&mut opener, "a/b/one").expect("one"), "1");
        // From the kept directory: the same checks as a walk from the root.
        assert_eq!(read(&mut opener, "a/b/two").expect("two"), "2");
        assert!(opener.open("a/b/file").is_err(), "a link to a file is not followed");
        assert!(opener.open("a/b/link/secret").is_err(), "a link to a directory is not followed");
        for invalid in ["a/b/..", "a/b/.", "a/b/"] {
            assert!(opener.open(invalid).is_err(), "{invalid} is refused");
        }
        assert!(opener.open("a/b/missing").is_err());
        // Another directory, the root, and back.
        assert_eq!(read(&mut opener, "a/x").expect("x"), "x");
        assert_eq!(read(&mut opener, "top").expect("top"), "t");
        assert_eq!(read(&mut opener, "a/b/one").expect("one again"), "1");
        assert!(opener.open("../x").is_err());
    }
}

//! The content-addressed staging store.
//!
//! An incoming file is written straight to `<store>/<first two hex digits>/<hex digest>` of
//! the digest it was asked for, created with no permission bits, while being hashed. It is
//! committed only if its content has that digest: then it gets [`COMMITTED_MODE`], and the
//! store remembers it. Otherwise it is deleted. Content that changed in flight never reaches
//! the tree.
//!
//! Invariants:
//! - A file this process committed is in the store's index, together with its metadata at
//!   commit (so that placing it needs no `stat`). Nothing else is taken from the store, except
//!   a file that an earlier process left behind *with* permission bits: only a commit gives
//!   bits, so such a file was verified before that process ended (a crash mid-write leaves
//!   mode 0, and that file is written again); it is hashed again before it is trusted.
//! - Committing is an `fchmod` on the open file, not a rename: one rename per file (the
//!   placement into the root) is what an initial sync costs, as for rsync.
//!
//! The store lives outside the synchronized root; transitions move files out of it by rename
//! (or copy across file systems). It is emptied after each transition.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use mutagen_core::StageMode;
use mutagen_reconcile::Digest;

use crate::endpoint::{EndpointError, EndpointResult, StageRequest, Transmission};
use crate::rsync;
use crate::scan::CacheRecord;

/// The bits of a committed file (and of the copies [`Staging::take`] makes). They are the
/// default mode of a new file, so that placing one usually needs no `chmod`.
pub const COMMITTED_MODE: u32 = 0o644;

/// Returns where a root's staging store lives, by `mode`:
/// - [`StageMode::Auto`]: `default` (normally in the data directory) when it is on the same
///   file system as the root's parent, so that placing a staged file is a rename; otherwise
///   next to the root. When the root's parent does not exist yet, `default`.
/// - [`StageMode::Mutagen`]: always `default`.
/// - [`StageMode::Neighboring`]: next to the root, `<parent>/.mutagen-temporary-staging-<name>`
///   (`default` when the root has no parent).
/// - [`StageMode::Internal`]: inside the root, `<root>/.mutagen-temporary-staging-<name>`.
///
/// Both hidden names carry the prefix every scan and watch skips, so they stay invisible
/// (even when the parent is itself synchronized by another session).
pub fn placement(root: &Path, default: &Path, name: &str, mode: StageMode) -> PathBuf {
    use std::os::unix::fs::MetadataExt;
    let hidden = format!("{}staging-{name}", crate::scan::TEMPORARY_PREFIX);
    let parent = root.parent().filter(|p| !p.as_os_str().is_empty());
    match mode {
        StageMode::Mutagen => return default.to_owned(),
        StageMode::Internal => return root.join(hidden),
        StageMode::Neighboring => {
            return parent.map_or_else(|| default.to_owned(), |parent| parent.join(hidden));
        }
        StageMode::Auto => {}
    }
    let device = |path: &Path| {
        path.ancestors().find_map(|ancestor| fs::metadata(ancestor).ok()).map(|m| m.dev())
    };
    let Some(parent) = parent.filter(|p| p.is_dir()) else {
        return default.to_owned();
    };
    match (device(parent), device(default)) {
        (Some(a), Some(b)) if a != b => parent.join(hidden),
        _ => default.to_owned(),
    }
}

/// A staging store rooted at a directory (created on first use, mode 0700).
#[derive(Debug)]
pub struct Staging {
    directory: PathBuf,
    /// The files this process committed (or found committed by an earlier one), with their
    /// metadata at commit.
    staged: HashMap<Digest, CacheRecord>,
    /// Whether the store existed when this process first used it, so that files an earlier
    /// process committed may be in it (`None`: not looked yet). Only then does a digest
    /// missing from `staged` cost a `stat`.
    leftovers: Option<bool>,
    /// Remaining uses of each staged digest in the current transition; a staged file with more
    /// than one use is copied for all but the last.
    uses: HashMap<Digest, usize>,
    /// The file being received, if any.
    receiving: Option<Receiving>,
    /// Counter for temporary names.
    next_temporary: u64,
    /// Reused by `stage_from` (allocated on first use).
    buffer: Vec<u8>,
    /// The directories of the store this round has created or found (the store itself and its
    /// 256 digest-prefix shards), so that each is created once per round rather than once per
    /// file: an initial sync of 100,000 files made 200,000 `mkdir` calls that failed with
    /// `EEXIST`, each followed by a `stat`. Forgotten by [`Staging::clear`], and whenever a
    /// creation in a remembered directory finds it gone.
    made: Made,
    /// This process's id, for temporary names (`getpid` is a system call each time).
    pid: u32,
}

/// Which of the store's directories are known to exist.
#[derive(Debug)]
struct Made {
    store: bool,
    shards: [bool; 256],
}

impl Default for Made {
    fn default() -> Made {
        Made { store: false, shards: [false; 256] }
    }
}

/// A staged file handed to a transition by [`Staging::take`].
#[derive(Debug)]
pub struct Taken {
    /// Where it is (in the store).
    pub path: PathBuf,
    /// Its metadata when it was committed (or copied); true while nobody touched it.
    pub record: CacheRecord,
}

#[derive(Debug)]
struct Receiving {
    request: StageRequest,
    /// Where the file is being written (its place in the store, uncommitted until `End`).
    path: PathBuf,
    writer: HashingWriter,
    /// The receiver's current file at the request's path, when the request carries its
    /// signature and it could be opened; `Blocks` are copied from it.
    base: Option<File>,
}

/// Writes to the temporary file and hashes what it writes.
#[derive(Debug)]
struct HashingWriter {
    file: File,
    hasher: blake3::Hasher,
}

impl Write for HashingWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = self.file.write(data)?;
        self.hasher.update(&data[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

impl Staging {
    /// Returns a store at `directory`; nothing is created yet.
    pub fn new(directory: PathBuf) -> Staging {
        Staging {
            directory,
            staged: HashMap::new(),
            leftovers: None,
            uses: HashMap::new(),
            receiving: None,
            next_temporary: 0,
            buffer: Vec::new(),
            made: Made::default(),
            pid: std::process::id(),
        }
    }

    /// Returns the store's directory.
    pub fn directory(&self) -> &Path {
        &self.directory
    }

    fn error(&self, source: io::Error) -> EndpointError {
        EndpointError::Staging { path: self.directory.display().to_string(), source }
    }

    /// Returns where content with `digest` is kept.
    pub fn path_of(&self, digest: &Digest) -> PathBuf {
        let hex = digest.to_hex();
        self.directory.join(&hex[..2]).join(hex)
    }

    /// Returns whether content with `digest` is staged (and committed).
    pub fn contains(&mut self, digest: &Digest) -> bool {
        self.find(digest).is_some()
    }

    /// Returns the record of the committed file with `digest`, looking for one an earlier
    /// process committed when the store may hold some.
    fn find(&mut self, digest: &Digest) -> Option<CacheRecord> {
        if let Some(record) = self.staged.get(digest) {
            return Some(*record);
        }
        if !self.may_hold_leftovers() {
            return None;
        }
        let stat = rustix::fs::lstat(self.path_of(digest)).ok()?;
        let regular = rustix::fs::FileType::from_raw_mode(stat.st_mode).is_file();
        // Bits say it was verified before that process ended; its content is checked again
        // all the same, since store files are not synced (after a power loss, a committed file
        // can come back short). Only leftovers cost this, once each.
        let verified =
            || crate::fsutil::holds(File::open(self.path_of(digest)), digest, stat.st_size as u64);
        let committed = regular && stat.st_mode & 0o777 != 0 && verified();
        let record = CacheRecord::new(&stat, *digest);
        committed.then(|| *self.staged.entry(*digest).or_insert(record))
    }

    /// Whether files an earlier process committed may be in the store (decided at first use).
    fn may_hold_leftovers(&mut self) -> bool {
        *self.leftovers.get_or_insert_with(|| self.directory.exists())
    }

    /// Creates `directory` (and its parents) unless `known` says it exists; sets `known`.
    fn make_directory(directory: &Path, known: &mut bool) -> io::Result<()> {
        if !*known {
            fs::DirBuilder::new().recursive(true).mode(0o700).create(directory)?;
            *known = true;
        }
        Ok(())
    }

    /// Runs `create` in the directory that `known` remembers: if the directory turns out to
    /// be gone (removed behind the store's back), it is made again and `create` retried once.
    fn in_directory<T>(
        directory: &Path,
        known: &mut bool,
        mut create: impl FnMut() -> io::Result<T>,
    ) -> io::Result<T> {
        Staging::make_directory(directory, known)?;
        match create() {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                *known = false;
                Staging::make_directory(directory, known)?;
                create()
            }
            other => other,
        }
    }

    /// Creates a file with a temporary name and `mode`.
    fn temporary(&mut self, mode: u32) -> EndpointResult<(PathBuf, File)> {
        self.may_hold_leftovers();
        self.next_temporary += 1;
        let path = self.directory.join(format!("incoming-{}-{}", self.pid, self.next_temporary));
        let open = || File::options().write(true).create_new(true).mode(mode).open(&path);
        let file = Staging::in_directory(&self.directory, &mut self.made.store, open)
            .map_err(|e| self.error(e))?;
        Ok((path, file))
    }

    /// Creates the file that content with `digest` is written to, with no permission bits
    /// until it is committed: at its place in the store (replacing an uncommitted leftover),
    /// or, when that content is committed already, under a temporary name, so that content
    /// received again replaces it only once it is verified.
    fn create(&mut self, digest: &Digest) -> EndpointResult<(PathBuf, File)> {
        if self.find(digest).is_some() {
            return self.temporary(0);
        }
        let path = self.path_of(digest);
        let open = || File::options().write(true).create_new(true).mode(0o0).open(&path);
        let make = |made: &mut Made| {
            Staging::make_directory(&self.directory, &mut made.store)?;
            let shard = &mut made.shards[usize::from(digest.0[0])];
            let parent = path.parent().unwrap_or(&self.directory);
            match Staging::in_directory(parent, shard, open) {
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    fs::remove_file(&path)?;
                    open()
                }
                other => other,
            }
        };
        let mut made = std::mem::take(&mut self.made);
        let file = make(&mut made);
        self.made = made;
        let file = file.map_err(|e| self.error(e))?;
        Ok((path, file))
    }

    /// Commits a fully written file if its digest is `expected`; otherwise deletes it.
    /// Returns whether it was committed.
    fn commit(
        &mut self,
        path: &Path,
        file: File,
        actual: Digest,
        expected: Digest,
    ) -> EndpointResult<bool> {
        if actual != expected {
            drop(file);
            let _ = fs::remove_file(path);
            return Ok(false);
        }
        let stat = rustix::fs::fchmod(&file, rustix::fs::Mode::from_raw_mode(COMMITTED_MODE))
            .and_then(|()| rustix::fs::fstat(&file))
            .map_err(io::Error::from);
        drop(file);
        let target = self.path_of(&expected);
        let committed = stat.and_then(|stat| {
            if path != target {
                let shard = &mut self.made.shards[usize::from(expected.0[0])];
                let parent = target.parent().unwrap_or(&self.directory);
                Staging::in_directory(parent, shard, || fs::rename(path, &target))?;
            }
            Ok(stat)
        });
        match committed {
            Ok(stat) => {
                self.staged.insert(expected, CacheRecord::new(&stat, expected));
                Ok(true)
            }
            Err(e) => {
                let _ = fs::remove_file(path);
                Err(self.error(e))
            }
        }
    }

    /// Copies `source` into the store if its content has `digest`; returns whether it did.
    pub fn stage_from(&mut self, mut source: impl Read, digest: Digest) -> EndpointResult<bool> {
        let (path, mut file) = self.create(&digest)?;
        let mut buffer = std::mem::take(&mut self.buffer);
        buffer.resize(256 * 1024, 0);
        let mut hasher = blake3::Hasher::new();
        let copied = loop {
            match source.read(&mut buffer) {
                Ok(0) => break Ok(true),
                Ok(n) => {
                    hasher.update(&buffer[..n]);
                    if let Err(e) = file.write_all(&buffer[..n]) {
                        break Err(e);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // The source changed or vanished: it is simply not staged from here.
                Err(_) => break Ok(false),
            }
        };
        self.buffer = buffer;
        match copied {
            Ok(true) => self.commit(&path, file, Digest(*hasher.finalize().as_bytes()), digest),
            other => {
                drop(file);
                let _ = fs::remove_file(&path);
                other.map_err(|e| self.error(e))
            }
        }
    }

    /// Accepts one transmission; returns the number of literal bytes it carried. `base` is the
    /// receiver's current file at the path of a `Begin` whose request carries a signature (it
    /// is ignored otherwise).
    pub fn receive(
        &mut self,
        transmission: Transmission,
        base: Option<File>,
    ) -> EndpointResult<u64> {
        let outside = |what: &str| EndpointError::Protocol(format!("{what} outside a file"));
        match transmission {
            Transmission::Begin { request, .. } => {
                if self.receiving.is_some() {
                    return Err(EndpointError::Protocol(
                        "file started before the previous ended".into(),
                    ));
                }
                let (path, file) = self.create(&request.digest)?;
                let writer = HashingWriter { file, hasher: blake3::Hasher::new() };
                let base = base.filter(|_| request.base.is_some());
                self.receiving = Some(Receiving { request, path, writer, base });
                Ok(0)
            }
            Transmission::Data(data) => {
                let receiving = self.receiving.as_mut().ok_or_else(|| outside("data"))?;
                let written = receiving.writer.write_all(&data);
                written.map_err(|e| self.error(e))?;
                Ok(data.len() as u64)
            }
            Transmission::Blocks { start, count } => {
                let receiving = self.receiving.as_mut().ok_or_else(|| outside("blocks"))?;
                let Some(signature) = &receiving.request.base else {
                    return Err(EndpointError::Protocol(
                        "blocks for a request without a base".into(),
                    ));
                };
                // A base that could not be opened leaves the content short: the digest check
                // at `End` discards it and the next cycle sends the file again.
                if let Some(base) = receiving.base.as_mut() {
                    let operation = rsync::Operation::Blocks { start, count };
                    let copied =
                        rsync::patch(base, signature.block_size, &operation, &mut receiving.writer);
                    if copied.is_err() {
                        receiving.base = None;
                    }
                }
                Ok(0)
            }
            Transmission::End => {
                let receiving = self.receiving.take().ok_or_else(|| outside("end"))?;
                let Receiving { request, path, writer, .. } = receiving;
                let actual = Digest(*writer.hasher.finalize().as_bytes());
                self.commit(&path, writer.file, actual, request.digest)?;
                Ok(0)
            }
            // The transition will report the missing file and the next cycle retries.
            Transmission::Unavailable { .. } => Ok(0),
        }
    }

    /// Discards a file left half-received by an interrupted supply, so a new round can start.
    pub fn abort_receive(&mut self) {
        if let Some(receiving) = self.receiving.take() {
            drop(receiving.writer);
            let _ = fs::remove_file(&receiving.path);
        }
    }

    /// Declares how many times each digest will be taken by the coming transition.
    pub fn reserve(&mut self, uses: HashMap<Digest, usize>) {
        self.uses = uses;
    }

    /// Returns a staged file with `digest` that the caller may move away, with its metadata
    /// as committed, or `None` if none is staged. While more uses of the digest remain, the
    /// caller gets a private copy. A file removed behind the store's back is still returned
    /// (the store does not look): moving it fails, and the caller reports it.
    pub fn take(&mut self, digest: &Digest) -> Option<Taken> {
        let record = self.find(digest)?;
        let path = self.path_of(digest);
        let remaining = self.uses.entry(*digest).or_insert(1);
        if *remaining <= 1 {
            *remaining = 0;
            self.staged.remove(digest);
            return Some(Taken { path, record });
        }
        *remaining -= 1;
        let (copy, mut file) = self.temporary(COMMITTED_MODE).ok()?;
        let copied = File::open(&path)
            .and_then(|mut source| io::copy(&mut source, &mut file))
            .and_then(|_| rustix::fs::fstat(&file).map_err(io::Error::from));
        match copied {
            Ok(stat) => Some(Taken { path: copy, record: CacheRecord::new(&stat, *digest) }),
            Err(_) => {
                let _ = fs::remove_file(&copy);
                None
            }
        }
    }

    /// Removes everything staged.
    pub fn clear(&mut self) -> EndpointResult<()> {
        self.uses.clear();
        self.staged.clear();
        self.leftovers = Some(false);
        self.receiving = None;
        self.made = Made::default();
        match fs::remove_dir_all(&self.directory) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(self.error(e)),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn digest_of(data: &[u8]) -> Digest {
        Digest(*blake3::hash(data).as_bytes())
    }

    #[test]
    fn staging_moves_next_to_a_root_on_another_file_system() {
        let dir = tempfile::tempdir().expect("tempdir");
        let default = dir.path().join("data/staging/s-beta");
        let root = dir.path().join("root");
        let auto = StageMode::Auto;
        assert_eq!(placement(&root, &default, "s-beta", auto), default, "same file system");
        assert_eq!(placement(Path::new("/no/such/parent/root"), &default, "x", auto), default);
        // /dev/shm is its own tmpfs on Linux: another file system than the data directory
        // (each tmpfs mount has its own device number, even when /tmp is one too).
        let device = |p: &Path| fs::metadata(p).map(|m| std::os::unix::fs::MetadataExt::dev(&m));
        let shm = tempfile::tempdir_in("/dev/shm").expect("a directory in /dev/shm");
        assert_ne!(device(shm.path()).expect("shm"), device(dir.path()).expect("tmp"));
        let placed = placement(&shm.path().join("root"), &default, "s-beta", auto);
        assert_eq!(placed, shm.path().join(".mutagen-temporary-staging-s-beta"));
        // An explicit mode wins over the file systems.
        let shm_root = shm.path().join("root");
        let forced = placement(&shm_root, &default, "s-beta", StageMode::Mutagen);
        assert_eq!(forced, default);
        assert_eq!(
            placement(&root, &default, "s-beta", StageMode::Neighboring),
            dir.path().join(".mutagen-temporary-staging-s-beta")
        );
        assert_eq!(
            placement(&root, &default, "s-beta", StageMode::Internal),
            root.join(".mutagen-temporary-staging-s-beta")
        );
    }

    #[test]
    fn receive_commits_only_matching_content() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut staging = Staging::new(dir.path().join("store"));
        let good = digest_of(b"hello");
        let request = StageRequest::new("a", good);
        for t in [
            Transmission::Begin { request, size: 5 },
            Transmission::Data(b"hel".to_vec()),
            Transmission::Data(b"lo".to_vec()),
            Transmission::End,
        ] {
            staging.receive(t, None).expect("receive");
        }
        assert!(staging.contains(&good));
        let bad = StageRequest::new("b", digest_of(b"other"));
        for t in [
            Transmission::Begin { request: bad.clone(), size: 5 },
            Transmission::Data(b"hello".to_vec()),
            Transmission::End,
        ] {
            staging.receive(t, None).expect("receive");
        }
        assert!(!staging.contains(&bad.digest), "content changed in flight must not be staged");
        assert!(staging.receive(Transmission::End, None).is_err());
    }

    #[test]
    fn a_store_removed_behind_its_back_is_made_again() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut staging = Staging::new(dir.path().join("store"));
        let (one, two) = (digest_of(b"one"), digest_of(b"two"));
        assert!(staging.stage_from(&b"one"[..], one).expect("stage"));
        // The store and its shards were made once; someone removes them all mid-round.
        fs::remove_dir_all(staging.directory()).expect("remove");
        assert!(staging.stage_from(&b"two"[..], two).expect("stage again"));
        assert_eq!(fs::read(staging.path_of(&two)).expect("staged"), b"two");
        // Only the shard went this time. The store trusts its index (it does not stat what it
        // committed), so the file still counts as staged: the transition that fails to move it
        // reports it missing. Staging it again makes the shard again.
        fs::remove_dir_all(staging.path_of(&two).parent().expect("shard")).expect("remove");
        assert!(staging.contains(&two));
        assert!(staging.stage_from(&b"two"[..], two).expect("stage into a new shard"));
        assert_eq!(fs::read(staging.path_of(&two)).expect("staged"), b"two");
        // After a clear, nothing is assumed to exist.
        staging.clear().expect("clear");
        assert!(staging.stage_from(&b"one"[..], one).expect("stage after clear"));
        assert!(staging.contains(&one));
    }

    #[test]
    fn take_copies_until_the_last_use() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut staging = Staging::new(dir.path().join("store"));
        let digest = digest_of(b"same");
        assert!(staging.stage_from(&b"same"[..], digest).expect("stage"));
        assert!(!staging.stage_from(&b"different"[..], digest).expect("stage"));
        staging.reserve(HashMap::from([(digest, 2)]));
        let first = staging.take(&digest).expect("first use");
        assert_ne!(first.path, staging.path_of(&digest));
        let second = staging.take(&digest).expect("last use");
        assert_eq!(second.path, staging.path_of(&digest));
        assert_eq!(fs::read(&first.path).expect("copy"), b"same");
        // Each record is the true metadata of its file, so placing it needs no stat.
        for taken in [&first, &second] {
            let stat = rustix::fs::stat(&taken.path).expect("stat");
            assert_eq!(taken.record, CacheRecord::new(&stat, digest));
            assert_eq!(taken.record.mode & 0o7777, COMMITTED_MODE);
        }
        staging.clear().expect("clear");
        assert!(staging.take(&digest).is_none());
    }

    #[test]
    fn only_committed_leftovers_of_an_earlier_process_are_trusted() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = dir.path().join("store");
        let (kept, cut) = (digest_of(b"kept"), digest_of(b"cut off"));
        let mut earlier = Staging::new(store.clone());
        assert!(earlier.stage_from(&b"kept"[..], kept).expect("stage"));
        // A crash mid-write leaves a file at its place in the store, with no bits (only a
        // commit gives them) and short content.
        let (path, mut file) = earlier.create(&cut).expect("create");
        file.write_all(b"cut").expect("write");
        drop(file);
        drop(earlier);
        assert_eq!(fs::metadata(&path).expect("left behind").permissions().mode() & 0o777, 0);

        // A committed file whose content came back short (a power loss: store files are not
        // synced) has its bits and the wrong content.
        let short = digest_of(b"short after a power loss");
        let mut earlier = Staging::new(store.clone());
        assert!(earlier.stage_from(&b"short after a power loss"[..], short).expect("stage"));
        drop(earlier);
        fs::write(Staging::new(store.clone()).path_of(&short), b"short").expect("cut");

        let mut later = Staging::new(store);
        assert!(later.contains(&kept), "a committed file is reused after a restart");
        assert!(!later.contains(&cut), "a file cut off mid-write is not");
        assert!(!later.contains(&short), "nor one whose content is not what its name says");
        assert!(later.take(&cut).is_none());
        // Receiving it again replaces the leftover.
        assert!(later.stage_from(&b"cut off"[..], cut).expect("stage again"));
        assert_eq!(fs::read(later.take(&cut).expect("staged").path).expect("read"), b"cut off");
    }

    #[test]
    fn content_received_again_replaces_a_committed_file_only_if_it_verifies() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut staging = Staging::new(dir.path().join("store"));
        let digest = digest_of(b"hello");
        assert!(staging.stage_from(&b"hello"[..], digest).expect("stage"));
        // The same digest arrives again with the wrong content: the committed file stays.
        assert!(!staging.stage_from(&b"bogus"[..], digest).expect("stage"));
        assert_eq!(fs::read(staging.path_of(&digest)).expect("kept"), b"hello");
        // With the right content, it replaces the committed file.
        assert!(staging.stage_from(&b"hello"[..], digest).expect("stage"));
        assert_eq!(fs::read(staging.take(&digest).expect("staged").path).expect("read"), b"hello");
        let leftovers = fs::read_dir(staging.directory()).expect("store").count();
        assert_eq!(leftovers, 1, "no temporary file remains beside the shard");
    }

    #[test]
    fn blocks_from_a_changed_base_are_discarded_not_committed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut staging = Staging::new(dir.path().join("store"));
        let old: Vec<u8> = (0..5000u32).map(|i| (i % 251) as u8).collect();
        let signature = rsync::signature(&old[..], old.len() as u64).expect("signature");
        let wanted = digest_of(&old);
        let request = StageRequest { base: Some(signature), ..StageRequest::new("f", wanted) };
        // The base changed on disk after its signature was taken.
        let changed = dir.path().join("base");
        fs::write(&changed, vec![7u8; 5000]).expect("write");
        let base = File::open(&changed).expect("open");
        staging.receive(Transmission::Begin { request, size: 5000 }, Some(base)).expect("begin");
        staging.receive(Transmission::Blocks { start: 0, count: 5 }, None).expect("blocks");
        staging.receive(Transmission::End, None).expect("end");
        assert!(!staging.contains(&wanted), "content rebuilt from a changed base was kept");

        // Blocks for a request that has no base are a protocol violation.
        let plain = StageRequest::new("g", wanted);
        staging.receive(Transmission::Begin { request: plain, size: 1 }, None).expect("begin");
        assert!(staging.receive(Transmission::Blocks { start: 0, count: 1 }, None).is_err());
    }

    #[test]
    fn an_interrupted_receive_does_not_block_the_next_round() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut staging = Staging::new(dir.path().join("store"));
        let request = |data: &[u8]| StageRequest::new("f", digest_of(data));
        staging
            .receive(Transmission::Begin { request: request(b"lost"), size: 4 }, None)
            .expect("begin");
        staging.receive(Transmission::Data(b"lo".to_vec()), None).expect("data");
        // The supply failed here; a new staging round starts.
        staging.abort_receive();
        for t in [
            Transmission::Begin { request: request(b"next"), size: 4 },
            Transmission::Data(b"next".to_vec()),
            Transmission::End,
        ] {
            staging.receive(t, None).expect("the next round works");
        }
        assert!(staging.contains(&digest_of(b"next")));
        assert!(!staging.path_of(&digest_of(b"lost")).exists(), "the cut-off file is removed");
        assert!(!staging.contains(&digest_of(b"lost")));
    }
}

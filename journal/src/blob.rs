//! Large records kept beside sled, one file each.
//!
//! sled keeps in memory every page it wrote in a process, whatever its cache capacity, so
//! the few records that hold a whole tree (a checkpoint, an initial cycle's changes: megabytes
//! at 100,000 files) stayed resident for as long as the daemon ran, terminated sessions'
//! included. A record at least [`BLOB_MINIMUM`] bytes long is therefore written to
//! `<journal>.blobs/<session>/<number>-<BLAKE3 of the record>`, and sled's value for it holds
//! a reference instead of the record:
//!
//! ```text
//! chain hash (32) | BLOB_MARKER | BLAKE3 of the record (32) | length (8, big-endian) | the
//! record's first STAMP_BYTES bytes (its time and cycle, for compaction)
//! ```
//!
//! # Invariants
//! - The chain hash covers the record itself, not the reference: a blob that changed, went
//!   missing or was cut short is damage, reported as such (never skipped).
//! - A blob is durable (written, synced, renamed into place, its directory synced) before
//!   the sled value that names it is appended, so an acknowledged record always has its blob.
//! - A record's own first byte is its format version, never `BLOB_MARKER` (0xB0): the two
//!   kinds of value cannot be confused.

use std::borrow::Cow;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Records at least this long are kept in a blob.
pub const BLOB_MINIMUM: usize = 64 << 10;
/// Marks a value that refers to a blob (never a format version).
pub(crate) const BLOB_MARKER: u8 = 0xB0;
/// How much of the record a reference repeats: the format version and the stamp (two
/// postcard varints) fit in it.
const STAMP_BYTES: usize = 32;
const DIGEST: usize = 32;

/// Returns the blob directory of the journal in `directory`: `<directory>.blobs`, beside it.
pub fn directory(journal: &Path) -> PathBuf {
    let mut name = journal.file_name().unwrap_or_default().to_owned();
    name.push(".blobs");
    journal.with_file_name(name)
}

/// Returns a session's blob directory; `None` for a name that is not an identifier (a tree
/// name read from a damaged journal must not lead outside the blob directory).
fn session_directory(blobs: &Path, identifier: &str) -> Option<PathBuf> {
    let valid = !identifier.is_empty()
        && identifier.bytes().all(|byte| byte.is_ascii_alphanumeric() || byte == b'_');
    valid.then(|| blobs.join(identifier))
}

fn path(blobs: &Path, identifier: &str, number: u64, digest: &[u8; DIGEST]) -> Option<PathBuf> {
    let name = format!("{number}-{}", blake3::Hash::from_bytes(*digest).to_hex());
    session_directory(blobs, identifier).map(|directory| directory.join(name))
}

fn not_an_identifier(identifier: &str) -> String {
    format!("{identifier:?} is not a session identifier")
}

/// Writes `record` (record `number` of session `identifier`) durably to its blob and returns
/// the reference to store after the chain hash.
pub(crate) fn write(
    blobs: &Path,
    identifier: &str,
    number: u64,
    record: &[u8],
) -> std::io::Result<Vec<u8>> {
    let digest = *blake3::hash(record).as_bytes();
    let target = path(blobs, identifier, number, &digest).ok_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, not_an_identifier(identifier))
    })?;
    let session = target.parent().unwrap_or(blobs);
    if !session.is_dir() {
        std::fs::create_dir_all(session)?;
        sync_directory(blobs)?;
        if let Some(parent) = blobs.parent() {
            sync_directory(parent)?;
        }
    }
    let temporary = session.join(format!("{number}.incoming"));
    let mut file = std::fs::File::create(&temporary)?;
    file.write_all(record)?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&temporary, &target)?;
    sync_directory(session)?;
    let mut reference = Vec::with_capacity(1 + DIGEST + 8 + STAMP_BYTES);
    reference.push(BLOB_MARKER);
    reference.extend_from_slice(&digest);
    reference.extend_from_slice(&(record.len() as u64).to_be_bytes());
    reference.extend_from_slice(&record[..record.len().min(STAMP_BYTES)]);
    Ok(reference)
}

fn sync_directory(directory: &Path) -> std::io::Result<()> {
    std::fs::File::open(directory)?.sync_all()
}

/// A stored value (after its chain hash), parsed.
enum Stored<'v> {
    Inline(&'v [u8]),
    Blob { digest: [u8; DIGEST], length: u64, stamp: &'v [u8] },
}

fn parse(stored: &[u8]) -> Result<Stored<'_>, String> {
    let Some((&BLOB_MARKER, rest)) = stored.split_first() else {
        return Ok(Stored::Inline(stored));
    };
    let malformed = || "its reference to a blob is malformed".to_owned();
    let (digest, rest) = rest.split_at_checked(DIGEST).ok_or_else(malformed)?;
    let (length, stamp) = rest.split_at_checked(8).ok_or_else(malformed)?;
    Ok(Stored::Blob {
        digest: digest.try_into().map_err(|_| malformed())?,
        length: u64::from_be_bytes(length.try_into().map_err(|_| malformed())?),
        stamp,
    })
}

/// Returns the record a stored value (after its chain hash) holds or names, reading and
/// checking its blob; the error says what is wrong, naming the blob's file.
pub(crate) fn resolve<'v>(
    blobs: &Path,
    identifier: &str,
    number: u64,
    stored: &'v [u8],
) -> Result<Cow<'v, [u8]>, String> {
    let (digest, length) = match parse(stored)? {
        Stored::Inline(record) => return Ok(Cow::Borrowed(record)),
        Stored::Blob { digest, length, .. } => (digest, length),
    };
    let file =
        path(blobs, identifier, number, &digest).ok_or_else(|| not_an_identifier(identifier))?;
    let record = std::fs::read(&file)
        .map_err(|e| format!("its blob {} cannot be read: {e}", file.display()))?;
    if record.len() as u64 != length || blake3::hash(&record).as_bytes() != &digest {
        return Err(format!(
            "its blob {} is not the record it was (changed on disk)",
            file.display()
        ));
    }
    Ok(Cow::Owned(record))
}

/// Returns the first bytes of the record a stored value holds or names (enough for its
/// stamp), without reading a blob.
pub(crate) fn stamp(stored: &[u8]) -> Result<&[u8], String> {
    Ok(match parse(stored)? {
        Stored::Inline(record) => record,
        Stored::Blob { stamp, .. } => stamp,
    })
}

/// Returns the blob file a stored value names, if it names one.
pub(crate) fn named(blobs: &Path, identifier: &str, number: u64, stored: &[u8]) -> Option<PathBuf> {
    match parse(stored).ok()? {
        Stored::Blob { digest, .. } => path(blobs, identifier, number, &digest),
        Stored::Inline(_) => None,
    }
}

/// Removes every blob of a session.
pub(crate) fn remove_session(blobs: &Path, identifier: &str) -> std::io::Result<()> {
    let Some(directory) = session_directory(blobs, identifier) else { return Ok(()) };
    match std::fs::remove_dir_all(directory) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Lists the blob files of each session directory: (session, files).
pub(crate) fn list(blobs: &Path) -> Vec<(String, Vec<PathBuf>)> {
    let Ok(sessions) = std::fs::read_dir(blobs) else { return Vec::new() };
    let mut found = Vec::new();
    for session in sessions.flatten() {
        let Some(identifier) = session.file_name().to_str().map(str::to_owned) else { continue };
        let files = std::fs::read_dir(session.path())
            .map(|files| files.flatten().map(|file| file.path()).collect())
            .unwrap_or_default();
        found.push((identifier, files));
    }
    found
}

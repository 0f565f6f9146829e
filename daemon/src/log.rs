//! The daemon log, bounded by rotation: `daemon.log` grows to a limit, then becomes
//! `daemon.log.1` (replacing the one before) and a new `daemon.log` starts.
//!
//! # Invariants
//! - At most two generations exist, each at most the limit plus one line: the log never
//!   takes more than about twice the limit.
//! - Standard error, where a panic's message goes, follows the current file when it was the
//!   log to begin with (an autostarted daemon); under systemd it stays the user journal.
//! - A failed rotation keeps writing to the file it has: a log is never a reason to stop.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// The default limit of one generation.
pub const DEFAULT_LIMIT: u64 = 16 << 20;

/// Returns the limit from `MUTAGEN_LOG_LIMIT` (bytes), else [`DEFAULT_LIMIT`].
///
/// # Errors
/// A value that is not a whole number of bytes of at least 1024.
pub fn limit_from_environment() -> Result<u64, String> {
    match std::env::var("MUTAGEN_LOG_LIMIT") {
        Err(_) => Ok(DEFAULT_LIMIT),
        Ok(text) => match text.trim().parse::<u64>() {
            Ok(limit) if limit >= 1024 => Ok(limit),
            _ => Err(format!("invalid MUTAGEN_LOG_LIMIT {text:?} (expected bytes, at least 1024)")),
        },
    }
}

/// An append-only log file that rotates at a size limit.
#[derive(Debug)]
pub struct RotatingLog {
    path: PathBuf,
    file: File,
    written: u64,
    limit: u64,
}

fn open(path: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).mode(0o600).open(path)
}

/// Returns `path` with `.1` appended: the previous generation.
pub fn previous(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".1");
    PathBuf::from(name)
}

impl RotatingLog {
    /// Opens (or creates) the log at `path`.
    ///
    /// # Errors
    /// The file cannot be opened.
    pub fn open(path: &Path, limit: u64) -> io::Result<RotatingLog> {
        let file = open(path)?;
        let written = file.metadata()?.len();
        Ok(RotatingLog { path: path.to_owned(), file, written, limit })
    }

    fn rotate(&mut self) -> io::Result<()> {
        let old = self.file.metadata()?;
        std::fs::rename(&self.path, previous(&self.path))?;
        let file = open(&self.path)?;
        // Standard error follows when it was this log.
        if let Ok(stderr) = rustix::fs::fstat(rustix::stdio::stderr())
            && stderr.st_dev == old.dev()
            && stderr.st_ino == old.ino()
        {
            rustix::stdio::dup2_stderr(&file)?;
        }
        self.file = file;
        self.written = 0;
        Ok(())
    }
}

impl Write for RotatingLog {
    fn write(&mut self, buffer: &[u8]) -> io::Result<usize> {
        if self.written > 0 && self.written + buffer.len() as u64 > self.limit {
            // Best effort: on failure, keep writing where we were.
            let _ = self.rotate();
        }
        let written = self.file.write(buffer)?;
        self.written += written as u64;
        Ok(written)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_rotates_at_its_limit_and_keeps_one_previous_generation() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("daemon.log");
        std::fs::write(&path, vec![b'o'; 600]).expect("old content");
        let mut log = RotatingLog::open(&path, 1024).expect("open");
        // Lines of 100 bytes, each written whole (as the subscriber writes an event).
        for number in 0..50 {
            log.write_all(format!("line {number:03} {}\n", "x".repeat(90)).as_bytes())
                .expect("write");
        }
        let current = std::fs::read_to_string(&path).expect("current");
        let before = std::fs::read_to_string(previous(&path)).expect("previous");
        assert!(current.len() <= 1024, "{}", current.len());
        assert!(before.len() <= 1024, "{}", before.len());
        assert!(!dir.path().join("daemon.log.2").exists());
        // No write is split across generations, and the two hold the latest lines in order.
        let lines: Vec<&str> = before.lines().chain(current.lines()).collect();
        for line in &lines {
            assert_eq!(line.len(), 99, "a split line: {line:?}");
        }
        let last = lines.last().expect("lines");
        assert!(last.starts_with("line 049 "), "{last}");
        let first: usize = lines[0][5..8].parse().expect("number");
        assert_eq!(lines.len(), 50 - first, "lines are missing between the generations");
        // The old content rotated out long ago.
        assert!(!before.contains('o'), "{before}");
    }
}

//! The sled store: one database per data directory, one tree per session.
//!
//! Tree `session/<identifier>` holds records under `r` + the big-endian record number, and the
//! number of the latest checkpoint under `m:checkpoint` (written in the same batch as the
//! checkpoint itself). Appends are not durable until [`Journal::flush`], which callers invoke
//! before they acknowledge anything that depends on them.

use std::path::{Path, PathBuf};

use crate::event::{DecodeError, Event, Record};
use crate::state::{FoldError, SessionState};

const TREE_PREFIX: &str = "session/";
const CHECKPOINT_KEY: &[u8] = b"m:checkpoint";
/// Bytes of records after a checkpoint that make the next one worthwhile (at least; a larger
/// state raises the bar to its own size, so replay reads at most about twice the state).
const CHECKPOINT_MINIMUM: u64 = 1 << 20;
/// sled's page cache; the journal is read in full only at startup.
const CACHE_CAPACITY: u64 = 16 << 20;

/// A journal failure, naming the session and the directory.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// The database could not be opened.
    #[error("unable to open the journal in {directory}")]
    Open {
        /// The journal directory.
        directory: PathBuf,
        /// The cause.
        #[source]
        source: sled::Error,
    },
    /// A read or write failed.
    #[error("unable to access the journal of {session} in {directory}")]
    Io {
        /// The session (or `all sessions`).
        session: String,
        /// The journal directory.
        directory: PathBuf,
        /// The cause.
        #[source]
        source: sled::Error,
    },
    /// A record does not decode or does not fit the history before it.
    #[error(
        "the journal of session {session} in {directory} is corrupt at record {record}: {detail}"
    )]
    Corrupt {
        /// The session.
        session: String,
        /// The journal directory.
        directory: PathBuf,
        /// The record number.
        record: u64,
        /// What is wrong.
        detail: String,
    },
    /// No such session.
    #[error("session {session} is not in the journal in {directory}")]
    NotFound {
        /// The session.
        session: String,
        /// The journal directory.
        directory: PathBuf,
    },
    /// A session with this identifier exists already.
    #[error("session {session} already exists in the journal in {directory}")]
    Exists {
        /// The session.
        session: String,
        /// The journal directory.
        directory: PathBuf,
    },
}

/// The journal of every session in a data directory.
#[derive(Clone, Debug)]
pub struct Journal {
    db: sled::Db,
    directory: PathBuf,
}

impl Journal {
    /// Opens (or creates) the journal in `directory`.
    ///
    /// # Errors
    /// [`JournalError::Open`], for example when another process holds it.
    pub fn open(directory: &Path) -> Result<Journal, JournalError> {
        let db = sled::Config::new()
            .path(directory)
            .cache_capacity(CACHE_CAPACITY)
            .open()
            .map_err(|source| JournalError::Open { directory: directory.to_owned(), source })?;
        Ok(Journal { db, directory: directory.to_owned() })
    }

    /// Returns the journal directory.
    pub fn directory(&self) -> &Path {
        &self.directory
    }

    /// Returns the identifiers of every session in the journal (terminated ones included).
    pub fn identifiers(&self) -> Vec<String> {
        let names = self.db.tree_names();
        let names = names.iter().filter_map(|name| std::str::from_utf8(name).ok());
        names.filter_map(|name| name.strip_prefix(TREE_PREFIX)).map(str::to_owned).collect()
    }

    fn tree(&self, identifier: &str) -> Result<sled::Tree, JournalError> {
        self.db
            .open_tree(format!("{TREE_PREFIX}{identifier}"))
            .map_err(|source| self.io(identifier, source))
    }

    fn io(&self, session: &str, source: sled::Error) -> JournalError {
        JournalError::Io { session: session.to_owned(), directory: self.directory.clone(), source }
    }

    fn contains(&self, identifier: &str) -> bool {
        let name = format!("{TREE_PREFIX}{identifier}");
        self.db.tree_names().iter().any(|n| n.as_ref() == name.as_bytes())
    }

    /// Starts the log of a new session with its `Created` record (not yet flushed).
    ///
    /// # Errors
    /// [`JournalError::Exists`] or a write failure.
    pub fn create(&self, identifier: &str, created: &Record) -> Result<SessionLog, JournalError> {
        if self.contains(identifier) {
            return Err(JournalError::Exists {
                session: identifier.to_owned(),
                directory: self.directory.clone(),
            });
        }
        let mut log = SessionLog {
            tree: self.tree(identifier)?,
            journal: self.clone(),
            identifier: identifier.to_owned(),
            next: 0,
            since_checkpoint: 0,
            checkpoint_size: 0,
        };
        log.append(created)?;
        Ok(log)
    }

    /// Opens a session's log and replays it from its latest checkpoint.
    ///
    /// # Errors
    /// [`JournalError::NotFound`], [`JournalError::Corrupt`] or a read failure.
    pub fn load(&self, identifier: &str) -> Result<(SessionLog, SessionState), JournalError> {
        if !self.contains(identifier) {
            return Err(JournalError::NotFound {
                session: identifier.to_owned(),
                directory: self.directory.clone(),
            });
        }
        let tree = self.tree(identifier)?;
        let start = match tree.get(CHECKPOINT_KEY).map_err(|e| self.io(identifier, e))? {
            Some(bytes) => decode_number(&bytes).ok_or_else(|| {
                self.corrupt(identifier, 0, "the checkpoint marker is malformed".to_owned())
            })?,
            None => 0,
        };
        let mut state = None;
        let (mut next, mut since_checkpoint, mut checkpoint_size) = (start, 0, 0);
        for item in tree.range(record_key(start)..record_key(u64::MAX)) {
            let (key, value) = item.map_err(|e| self.io(identifier, e))?;
            let number = decode_record_key(&key)
                .ok_or_else(|| self.corrupt(identifier, next, "malformed key".to_owned()))?;
            let record = Record::decode(&value)
                .map_err(|e| self.corrupt(identifier, number, e.to_string()))?;
            if matches!(record.event, Event::Checkpoint(_)) {
                checkpoint_size = value.len() as u64;
                since_checkpoint = 0;
            } else {
                since_checkpoint += value.len() as u64;
            }
            SessionState::step(&mut state, &record)
                .map_err(|e| self.corrupt(identifier, number, fold_detail(&e)))?;
            next = number + 1;
        }
        let state = state.ok_or_else(|| {
            self.corrupt(identifier, start, "the session has no creation record".to_owned())
        })?;
        let log = SessionLog {
            tree,
            journal: self.clone(),
            identifier: identifier.to_owned(),
            next,
            since_checkpoint,
            checkpoint_size,
        };
        Ok((log, state))
    }

    /// Returns a session's records numbered `from` and later, oldest first, without replaying
    /// them (for the history of a session another task is appending to).
    ///
    /// # Errors
    /// [`JournalError::NotFound`], [`JournalError::Corrupt`] or a read failure.
    pub fn records(&self, identifier: &str, from: u64) -> Result<Vec<(u64, Record)>, JournalError> {
        if !self.contains(identifier) {
            return Err(JournalError::NotFound {
                session: identifier.to_owned(),
                directory: self.directory.clone(),
            });
        }
        read_records(self, identifier, &self.tree(identifier)?, from)
    }

    /// Makes every append so far durable.
    ///
    /// # Errors
    /// A write failure.
    pub fn flush(&self) -> Result<(), JournalError> {
        self.db.flush().map(drop).map_err(|e| self.io("all sessions", e))
    }

    /// Deletes a session's log entirely.
    ///
    /// # Errors
    /// A write failure.
    pub fn remove(&self, identifier: &str) -> Result<(), JournalError> {
        self.db
            .drop_tree(format!("{TREE_PREFIX}{identifier}"))
            .map(drop)
            .map_err(|e| self.io(identifier, e))
    }

    fn corrupt(&self, session: &str, record: u64, detail: String) -> JournalError {
        JournalError::Corrupt {
            session: session.to_owned(),
            directory: self.directory.clone(),
            record,
            detail,
        }
    }
}

fn fold_detail(error: &FoldError) -> String {
    match error {
        FoldError::Ancestor(source) => format!("{error}: {source}"),
        _ => error.to_string(),
    }
}

fn record_key(number: u64) -> [u8; 9] {
    let mut key = [b'r'; 9];
    key[1..].copy_from_slice(&number.to_be_bytes());
    key
}

fn decode_record_key(key: &[u8]) -> Option<u64> {
    match key.split_first() {
        Some((b'r', rest)) => decode_number(rest),
        _ => None,
    }
}

fn decode_number(bytes: &[u8]) -> Option<u64> {
    bytes.try_into().ok().map(u64::from_be_bytes)
}

fn read_records(
    journal: &Journal,
    identifier: &str,
    tree: &sled::Tree,
    from: u64,
) -> Result<Vec<(u64, Record)>, JournalError> {
    let mut records = Vec::new();
    for item in tree.range(record_key(from)..record_key(u64::MAX)) {
        let (key, value) = item.map_err(|e| journal.io(identifier, e))?;
        let number = decode_record_key(&key).unwrap_or(u64::MAX);
        let record = Record::decode(&value)
            .map_err(|e: DecodeError| journal.corrupt(identifier, number, e.to_string()))?;
        records.push((number, record));
    }
    Ok(records)
}

/// One session's log.
#[derive(Debug)]
pub struct SessionLog {
    tree: sled::Tree,
    journal: Journal,
    identifier: String,
    next: u64,
    since_checkpoint: u64,
    checkpoint_size: u64,
}

impl SessionLog {
    /// Returns the session identifier.
    pub fn identifier(&self) -> &str {
        &self.identifier
    }

    /// Returns the journal this log belongs to.
    pub fn journal(&self) -> &Journal {
        &self.journal
    }

    /// Appends a record (durable after [`Journal::flush`]); returns its number.
    ///
    /// # Errors
    /// A write failure.
    pub fn append(&mut self, record: &Record) -> Result<u64, JournalError> {
        let bytes = record.encode().map_err(|e| {
            self.journal.corrupt(&self.identifier, self.next, format!("unable to encode: {e}"))
        })?;
        let number = self.next;
        let mut batch = sled::Batch::default();
        batch.insert(&record_key(number), bytes.as_slice());
        if matches!(record.event, Event::Checkpoint(_)) {
            batch.insert(CHECKPOINT_KEY, &number.to_be_bytes());
            self.checkpoint_size = bytes.len() as u64;
            self.since_checkpoint = 0;
        } else {
            self.since_checkpoint += bytes.len() as u64;
        }
        self.tree.apply_batch(batch).map_err(|e| self.journal.io(&self.identifier, e))?;
        self.next += 1;
        Ok(number)
    }

    /// Returns whether enough was appended since the latest checkpoint that replay would be
    /// faster from a new one.
    pub fn wants_checkpoint(&self) -> bool {
        self.since_checkpoint > CHECKPOINT_MINIMUM.max(self.checkpoint_size)
    }

    /// Returns the records numbered `from` and later, oldest first.
    ///
    /// # Errors
    /// [`JournalError::Corrupt`] or a read failure.
    pub fn records(&self, from: u64) -> Result<Vec<(u64, Record)>, JournalError> {
        read_records(&self.journal, &self.identifier, &self.tree, from)
    }

    /// Prunes old cycles: appends a checkpoint of `state` (which must be the current state),
    /// then removes every earlier record of a cycle older than the latest `retain_cycles`.
    /// The fold of what remains equals `state`. Returns how many records were removed.
    ///
    /// # Errors
    /// A read or write failure, or an undecodable record.
    pub fn compact(
        &mut self,
        state: &SessionState,
        retain_cycles: u64,
    ) -> Result<u64, JournalError> {
        let checkpoint =
            self.append(&Record::now(state.cycle, Event::Checkpoint(Box::new(state.clone()))))?;
        let oldest_kept = state.cycle.saturating_sub(retain_cycles.saturating_sub(1));
        let mut batch = sled::Batch::default();
        let mut removed = 0;
        for item in self.tree.range(record_key(0)..record_key(checkpoint)) {
            let (key, value) = item.map_err(|e| self.journal.io(&self.identifier, e))?;
            let number = decode_record_key(&key).unwrap_or(u64::MAX);
            let (_, cycle) = Record::decode_stamp(&value)
                .map_err(|e| self.journal.corrupt(&self.identifier, number, e.to_string()))?;
            if cycle >= oldest_kept {
                break;
            }
            batch.remove(key);
            removed += 1;
        }
        self.tree.apply_batch(batch).map_err(|e| self.journal.io(&self.identifier, e))?;
        Ok(removed)
    }
}

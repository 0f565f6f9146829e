//! The sled store: one database per data directory, one tree per session, and the head file
//! beside it.
//!
//! Tree `session/<identifier>` holds records under `c` + the big-endian record number. Each
//! value is the record's chain hash (32 bytes) followed by the encoded record; the chain hash
//! of record `n` is [`chain_hash`] of the hash before it, `n` and the encoded record, starting
//! from [`genesis`] (or from `m:base` once older records were pruned). The tree also holds the
//! number of the latest checkpoint under `m:checkpoint` (written in the same batch as the
//! checkpoint itself) and, after a compaction, `m:base`: the number of the oldest record kept
//! and the chain hash before it.
//!
//! Appends are not durable until [`Journal::flush`], which callers invoke before they
//! acknowledge anything that depends on them. A flush then writes the head file
//! ([`crate::head`]): every live session's record count and last chain hash.
//!
//! # Invariants
//! - [`Journal::open`] refuses ([`JournalError::Damaged`]) a journal that lacks anything the
//!   head file acknowledged: a session, a record, or a record as it was. Records after the
//!   acknowledged ones, and sessions the head does not list yet, are kept (they were written
//!   but never acknowledged).
//! - sled repairs what it finds damaged when it opens a database, by cutting the log. So the
//!   journal is first examined in a scratch copy; the real files are opened only once the
//!   copy proved intact, and a refused journal is left byte for byte as it was.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use crate::blob;
use crate::event::{DecodeError, Event, Record};
use crate::forward::ForwardState;
use crate::head::{self, Heads, Link};
use crate::state::{FoldError, SessionState};

const TREE_PREFIX: &str = "session/";
const RECORD_PREFIX: u8 = b'c';
/// Records of journals written before the hash chain (migrated at open).
const LEGACY_PREFIX: u8 = b'r';
const CHECKPOINT_KEY: &[u8] = b"m:checkpoint";
const BASE_KEY: &[u8] = b"m:base";
/// Present in the default tree of every journal that keeps a head file.
const MARKER_KEY: &[u8] = b"mutagen:chained";
const CHAIN_CONTEXT: &str = "mutagen-rs 2026-12 journal record chain";
const HASH: usize = 32;
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
    /// A file beside sled (the head file, the scratch copy) could not be written.
    #[error("unable to {action} {}", path.display())]
    File {
        /// What was being done.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
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
    /// The journal lacks something it acknowledged; its files were not touched.
    #[error(
        "the journal in {} does not hold everything it acknowledged: {}; its files were left as \
         they were",
        directory.display(),
        problems.join("; ")
    )]
    Damaged {
        /// The journal directory.
        directory: PathBuf,
        /// Each problem, naming the session.
        problems: Vec<String>,
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

/// Returns the chain hash before a session's first record.
pub fn genesis(identifier: &str) -> [u8; HASH] {
    let mut hasher = blake3::Hasher::new_derive_key(CHAIN_CONTEXT);
    hasher.update(b"genesis ");
    hasher.update(identifier.as_bytes());
    *hasher.finalize().as_bytes()
}

/// Returns the chain hash of record `number`, encoded as `record`, after `previous`.
pub fn chain_hash(previous: &[u8; HASH], number: u64, record: &[u8]) -> [u8; HASH] {
    let mut hasher = blake3::Hasher::new_derive_key(CHAIN_CONTEXT);
    hasher.update(previous);
    hasher.update(&number.to_be_bytes());
    hasher.update(record);
    *hasher.finalize().as_bytes()
}

#[derive(Debug)]
struct Shared {
    head: PathBuf,
    /// Every live session's position, as appended (durable after the next flush).
    heads: Mutex<Heads>,
    /// The head file as last written; held during a flush, so flushes are serialized.
    written: Mutex<Heads>,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The journal of every session in a data directory.
#[derive(Clone, Debug)]
pub struct Journal {
    db: sled::Db,
    directory: PathBuf,
    /// Where records of at least [`blob::BLOB_MINIMUM`] bytes are kept ([`crate::blob`]).
    blobs: PathBuf,
    shared: Arc<Shared>,
}

/// What [`Journal::examine`] found in one session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Finding {
    /// Everything acknowledged is there, chained as it was.
    Intact,
    /// Intact, but the head file does not list it yet (created just before a crash).
    Unacknowledged,
    /// Records are missing, changed or unreadable.
    Damaged(String),
    /// The head file lists the session, and sled has nothing of it.
    Missing,
}

/// One session in a [`Report`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionReport {
    /// The identifier.
    pub identifier: String,
    /// The session's name, when a readable record holds it.
    pub name: Option<String>,
    /// How many records in a row are readable and chained, from the oldest kept.
    pub records: u64,
    /// The verdict.
    pub finding: Finding,
}

impl SessionReport {
    fn label(&self) -> String {
        match self.name.as_deref().filter(|n| !n.is_empty()) {
            Some(name) => format!("session {} ({name})", self.identifier),
            None => format!("session {}", self.identifier),
        }
    }
}

/// What an examination of a journal found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    /// The journal directory.
    pub directory: PathBuf,
    /// The head file.
    pub head: PathBuf,
    /// A journal written before the hash chain: nothing to check it against yet.
    pub legacy: bool,
    /// Problems with the journal as a whole (the head file, sled itself).
    pub problems: Vec<String>,
    /// Every session sled or the head file knows.
    pub sessions: Vec<SessionReport>,
}

impl Report {
    /// Returns every problem, each naming the file or the session at fault.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = self.problems.clone();
        for session in &self.sessions {
            match &session.finding {
                Finding::Intact | Finding::Unacknowledged => {}
                Finding::Damaged(detail) => problems.push(format!("{}: {detail}", session.label())),
                Finding::Missing => problems.push(format!(
                    "{}: acknowledged in {}, and sled has none of its records",
                    session.label(),
                    self.head.display()
                )),
            }
        }
        problems
    }
}

/// How [`Journal::recover`] treated one session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Recovered {
    /// Copied as it was.
    Intact,
    /// Its readable records were kept; it was reset and paused, since its ancestor may be
    /// older than the files on disk.
    Reset(String),
    /// Nothing replayable survived.
    Lost(String),
}

/// The outcome of [`Journal::recover`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recovery {
    /// Where the damaged journal and its head file were moved.
    pub kept: PathBuf,
    /// Each session: identifier, name, outcome.
    pub sessions: Vec<(String, Option<String>, Recovered)>,
}

impl Journal {
    /// Opens (or creates) the journal in `directory`, after checking in a scratch copy that
    /// it holds everything its head file acknowledged. A journal written before the hash
    /// chain is migrated to it.
    ///
    /// # Errors
    /// [`JournalError::Damaged`] (the files are untouched), [`JournalError::Open`] (for
    /// example when another process holds it), or a failed copy or write.
    pub fn open(directory: &Path) -> Result<Journal, JournalError> {
        Journal::open_with(directory, blob::directory(directory))
    }

    /// [`Journal::open`], with the blobs in `blobs` (a recovery builds a new journal beside
    /// the damaged one whose sessions keep their blobs).
    fn open_with(directory: &Path, blobs: PathBuf) -> Result<Journal, JournalError> {
        let head_path = head::path(directory);
        let fresh = !head_path.exists() && is_empty_directory(directory);
        let mut unborn = Vec::new();
        if !fresh {
            let report = Journal::examine_with(directory, &blobs)?;
            let problems = report.problems();
            if !problems.is_empty() {
                return Err(JournalError::Damaged { directory: directory.to_owned(), problems });
            }
            // A creation cut short before its first record was flushed leaves an empty tree
            // that nothing acknowledged: it holds nothing, and goes.
            unborn.extend(
                report
                    .sessions
                    .into_iter()
                    .filter(|s| s.records == 0 && s.finding == Finding::Unacknowledged)
                    .map(|s| s.identifier),
            );
        }
        let db = open_db(directory)?;
        for identifier in unborn {
            let name = format!("{TREE_PREFIX}{identifier}");
            let empty = db.open_tree(&name).map(|tree| tree.is_empty()).unwrap_or(false);
            if empty {
                db.drop_tree(name).map_err(|source| JournalError::Io {
                    session: identifier,
                    directory: directory.to_owned(),
                    source,
                })?;
            }
        }
        let journal = Journal {
            db,
            directory: directory.to_owned(),
            blobs,
            shared: Arc::new(Shared {
                head: head_path,
                heads: Mutex::new(Heads::new()),
                written: Mutex::new(Heads::new()),
            }),
        };
        if journal.get(MARKER_KEY)?.is_none() {
            journal.migrate()?;
        }
        let mut heads = Heads::new();
        for identifier in journal.identifiers() {
            let tree = journal.tree(&identifier)?;
            heads.insert(identifier.clone(), journal.tip(&identifier, &tree)?);
        }
        // Write the head file now: it may be missing (a new or migrated journal) or behind.
        let path = &journal.shared.head;
        head::write(path, &heads)
            .map_err(|source| file_error("write the journal head", path, source))?;
        lock(&journal.shared.heads).clone_from(&heads);
        *lock(&journal.shared.written) = heads;
        journal.remove_stray_blobs();
        Ok(journal)
    }

    /// Removes the blobs no record names: those of removed sessions and compacted records
    /// (a crash came between the removal and theirs), and those written for a record that
    /// was never appended. Only at open, before anything is appended.
    fn remove_stray_blobs(&self) {
        let identifiers: BTreeSet<String> = self.identifiers().into_iter().collect();
        for (identifier, files) in blob::list(&self.blobs) {
            if !identifiers.contains(&identifier) {
                if let Err(error) = blob::remove_session(&self.blobs, &identifier) {
                    tracing::warn!("unable to remove the blobs of {identifier}: {error}");
                }
                continue;
            }
            let Ok(tree) = self.tree(&identifier) else { continue };
            let named: BTreeSet<PathBuf> = tree
                .range(record_key(0)..=record_key(u64::MAX))
                .flatten()
                .filter_map(|(key, value)| {
                    let number = decode_record_key(&key)?;
                    blob::named(&self.blobs, &identifier, number, value.get(HASH..)?)
                })
                .collect();
            for file in files.iter().filter(|file| !named.contains(*file)) {
                if let Err(error) = std::fs::remove_file(file) {
                    tracing::warn!("unable to remove the stray blob {}: {error}", file.display());
                }
            }
        }
    }

    /// Examines the journal in `directory` without changing it: it is copied, and the copy
    /// is opened and checked against the head file, record by record. The daemon must not be
    /// running (a journal being written does not copy consistently).
    ///
    /// # Errors
    /// Only when the copy cannot be made; what is wrong with the journal is in the report.
    pub fn examine(directory: &Path) -> Result<Report, JournalError> {
        Journal::examine_with(directory, &blob::directory(directory))
    }

    fn examine_with(directory: &Path, blobs: &Path) -> Result<Report, JournalError> {
        let scratch = Scratch::copy(directory)?;
        let head_path = head::path(directory);
        let mut report = Report {
            directory: directory.to_owned(),
            head: head_path.clone(),
            legacy: false,
            problems: Vec::new(),
            sessions: Vec::new(),
        };
        let heads = match head::read(&head_path) {
            Ok(heads) => heads,
            Err(problem) => {
                report.problems.push(problem);
                None
            }
        };
        let db = match catch(|| open_db(scratch.path())) {
            Ok(db) => db,
            Err(problem) => {
                report.problems.push(format!("sled cannot open it: {problem}"));
                return Ok(report);
            }
        };
        let examined = catch(|| {
            examine_db(&db, heads.as_ref(), blobs, &mut report);
            Ok(())
        });
        if let Err(problem) = examined {
            report.problems.push(format!("sled failed while reading it: {problem}"));
        }
        Ok(report)
    }

    /// Recovers a damaged journal: the sessions that are intact are kept as they are, a
    /// damaged session whose readable records still replay is kept reset and paused, and the
    /// damaged journal with its head file moves to `keep` (which must not exist). The daemon
    /// must not be running.
    ///
    /// # Errors
    /// A failed copy, write or rename; the damaged journal is never deleted.
    pub fn recover(directory: &Path, keep: &Path) -> Result<Recovery, JournalError> {
        let scratch = Scratch::copy(directory)?;
        let heads = head::read(&head::path(directory)).ok().flatten();
        let old = catch(|| open_db(scratch.path())).map_err(|detail| JournalError::Damaged {
            directory: directory.to_owned(),
            problems: vec![format!("sled cannot open it: {detail}")],
        })?;
        // The damaged journal's blobs are kept with it as they are now: recovering may remove
        // those of a session that is lost.
        let kept_blobs = sibling(directory, "kept-blobs");
        remove_if_present(&kept_blobs)?;
        copy_directory(&blob::directory(directory), &kept_blobs)?;
        let target = sibling(directory, "recovered");
        remove_if_present(&target)?;
        remove_if_present(&head::path(&target))?;
        let mut sessions = Vec::new();
        {
            let journal = Journal::open_with(&target, blob::directory(directory))?;
            let mut report = Report {
                directory: directory.to_owned(),
                head: head::path(directory),
                legacy: false,
                problems: Vec::new(),
                sessions: Vec::new(),
            };
            examine_db(&old, heads.as_ref(), &blob::directory(directory), &mut report);
            let legacy = report.legacy;
            for session in report.sessions {
                let outcome = if legacy {
                    Recovered::Lost("its journal predates the hash chain".to_owned())
                } else {
                    journal.adopt(&old, &session)?
                };
                sessions.push((session.identifier, session.name, outcome));
            }
            journal.flush()?;
        }
        drop(old);
        drop(scratch);
        std::fs::create_dir(keep).map_err(|source| file_error("create", keep, source))?;
        for (from, name) in [
            (directory.to_owned(), "journal"),
            (head::path(directory), "journal.head"),
            (kept_blobs, "journal.blobs"),
        ] {
            if from.exists() {
                let to = keep.join(name);
                std::fs::rename(&from, &to).map_err(|source| file_error("move", &from, source))?;
            }
        }
        for (from, to) in
            [(target.clone(), directory.to_owned()), (head::path(&target), head::path(directory))]
        {
            std::fs::rename(&from, &to).map_err(|source| file_error("move", &from, source))?;
        }
        sync_parent(directory)?;
        Ok(Recovery { kept: keep.to_owned(), sessions })
    }

    /// Copies one examined session from a damaged database into this (new) journal.
    fn adopt(&self, old: &sled::Db, session: &SessionReport) -> Result<Recovered, JournalError> {
        let identifier = &session.identifier;
        let damage = match &session.finding {
            Finding::Intact | Finding::Unacknowledged => None,
            Finding::Damaged(detail) => Some(detail.clone()),
            Finding::Missing => return Ok(Recovered::Lost("sled has none of its records".into())),
        };
        let from = old
            .open_tree(format!("{TREE_PREFIX}{identifier}"))
            .map_err(|source| self.io(identifier, source))?;
        let base = read_base(&from, identifier).unwrap_or((0, genesis(identifier)));
        let readable = base.0 + session.records;
        let mut batch = sled::Batch::default();
        let mut checkpoint = None;
        for item in from.range(record_key(base.0)..record_key(readable)) {
            let (key, value) = item.map_err(|source| self.io(identifier, source))?;
            let number = decode_record_key(&key).unwrap_or(u64::MAX);
            if let Some(record) = value
                .get(HASH..)
                .and_then(|stored| blob::resolve(&self.blobs, identifier, number, stored).ok())
                .and_then(|bytes| Record::decode(&bytes).ok())
                && matches!(record.event, Event::Checkpoint(_))
            {
                checkpoint = Some(number);
            }
            batch.insert(key, value);
        }
        if base.0 > 0 {
            batch.insert(BASE_KEY, encode_base(base.0, &base.1).as_slice());
        }
        if let Some(number) = checkpoint {
            batch.insert(CHECKPOINT_KEY, &number.to_be_bytes());
        }
        let tree = self.tree(identifier)?;
        tree.apply_batch(batch).map_err(|source| self.io(identifier, source))?;
        let tip = self.tip(identifier, &tree)?;
        lock(&self.shared.heads).insert(identifier.clone(), tip);
        let Some(damage) = damage else { return Ok(Recovered::Intact) };
        if identifier.starts_with(mutagen_session::identifier::FORWARD_PREFIX) {
            return self.adopt_forward(identifier, damage);
        }
        match self.load(identifier) {
            Ok((mut log, state)) => {
                let note = format!("recovered from a damaged journal ({damage})");
                let mut events = vec![Event::Error { message: note }, Event::Reset];
                if !state.paused && !state.terminated {
                    events.push(Event::Paused);
                }
                for event in events {
                    log.append(&Record::now(state.cycle, event))?;
                }
                Ok(Recovered::Reset(damage))
            }
            Err(error) => {
                self.remove(identifier)?;
                let why = match error {
                    JournalError::Corrupt { record, detail, .. } => {
                        format!("what remains does not replay (record {record}: {detail})")
                    }
                    error => mutagen_core::render_error(&error),
                };
                Ok(Recovered::Lost(format!("{damage}; {why}")))
            }
        }
    }

    /// Keeps a damaged forward session whose readable records still replay, paused.
    fn adopt_forward(&self, identifier: &str, damage: String) -> Result<Recovered, JournalError> {
        match self.load_forward(identifier) {
            Ok((mut log, state)) => {
                let note = format!("recovered from a damaged journal ({damage})");
                let mut events = vec![Event::Error { message: note }];
                if !state.paused && !state.terminated {
                    events.push(Event::Paused);
                }
                for event in events {
                    log.append(&Record::now(0, event))?;
                }
                Ok(Recovered::Reset(damage))
            }
            Err(error) => {
                self.remove(identifier)?;
                Ok(Recovered::Lost(format!("{damage}; {}", mutagen_core::render_error(&error))))
            }
        }
    }

    /// Returns the journal directory.
    pub fn directory(&self) -> &Path {
        &self.directory
    }

    /// Returns the identifiers of every session in the journal (terminated ones included).
    pub fn identifiers(&self) -> Vec<String> {
        tree_identifiers(&self.db)
    }

    fn get(&self, key: &[u8]) -> Result<Option<sled::IVec>, JournalError> {
        self.db.get(key).map_err(|source| self.io("all sessions", source))
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

    /// Returns the chain position after a session's last record.
    fn tip(&self, identifier: &str, tree: &sled::Tree) -> Result<Link, JournalError> {
        let last = tree
            .range(record_key(0)..=record_key(u64::MAX))
            .next_back()
            .transpose()
            .map_err(|source| self.io(identifier, source))?;
        match last {
            Some((key, value)) => {
                let number = decode_record_key(&key).unwrap_or(u64::MAX);
                let hash = value.get(..HASH).and_then(|h| h.try_into().ok()).ok_or_else(|| {
                    self.corrupt(identifier, number, "the record is truncated".to_owned())
                })?;
                Ok(Link { next: number.saturating_add(1), hash })
            }
            None => {
                let (next, hash) = read_base(tree, identifier)
                    .map_err(|detail| self.corrupt(identifier, 0, detail))?;
                Ok(Link { next, hash })
            }
        }
    }

    /// Chains the records of a journal written before the hash chain, then marks it.
    fn migrate(&self) -> Result<(), JournalError> {
        for identifier in self.identifiers() {
            let tree = self.tree(&identifier)?;
            let mut batch = sled::Batch::default();
            let mut previous = genesis(&identifier);
            let mut first = None;
            for item in tree.range([LEGACY_PREFIX]..[LEGACY_PREFIX + 1]) {
                let (key, value) = item.map_err(|source| self.io(&identifier, source))?;
                let number = match key.split_first() {
                    Some((&LEGACY_PREFIX, rest)) => decode_number(rest),
                    _ => None,
                }
                .ok_or_else(|| self.corrupt(&identifier, 0, "malformed key".to_owned()))?;
                if first.is_none() && number > 0 {
                    batch.insert(BASE_KEY, encode_base(number, &previous).as_slice());
                }
                first.get_or_insert(number);
                previous = chain_hash(&previous, number, &value);
                let mut chained = previous.to_vec();
                chained.extend_from_slice(&value);
                batch.remove(key);
                batch.insert(&record_key(number), chained);
            }
            tree.apply_batch(batch).map_err(|source| self.io(&identifier, source))?;
        }
        self.db.insert(MARKER_KEY, b"1").map_err(|source| self.io("all sessions", source))?;
        self.db.flush().map(drop).map_err(|source| self.io("all sessions", source))
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
            tip: Link { next: 0, hash: genesis(identifier) },
            since_checkpoint: 0,
            checkpoint_size: 0,
        };
        log.append(created)?;
        Ok(log)
    }

    /// Opens a session's log, checks its whole chain, and replays it from its latest
    /// checkpoint.
    ///
    /// # Errors
    /// [`JournalError::NotFound`], [`JournalError::Corrupt`] or a read failure.
    pub fn load(&self, identifier: &str) -> Result<(SessionLog, SessionState), JournalError> {
        self.load_with(identifier, SessionState::step)
    }

    /// Opens a forward session's log, checks its whole chain, and replays it.
    ///
    /// # Errors
    /// As [`Journal::load`].
    pub fn load_forward(
        &self,
        identifier: &str,
    ) -> Result<(SessionLog, ForwardState), JournalError> {
        self.load_with(identifier, ForwardState::step)
    }

    /// Opens a log and replays it from its latest checkpoint with `step`.
    fn load_with<S>(
        &self,
        identifier: &str,
        mut step: impl FnMut(&mut Option<S>, &Record) -> Result<(), FoldError>,
    ) -> Result<(SessionLog, S), JournalError> {
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
        let (mut since_checkpoint, mut checkpoint_size) = (0, 0);
        let walk = walk(&tree, identifier, &self.blobs, |number, bytes, record| {
            if number < start {
                return Ok(());
            }
            if matches!(record.event, Event::Checkpoint(_)) {
                checkpoint_size = bytes.len() as u64;
                since_checkpoint = 0;
            } else {
                since_checkpoint += bytes.len() as u64;
            }
            step(&mut state, record).map_err(|e| fold_detail(&e))
        });
        if let Some((record, detail)) = walk.damage {
            return Err(self.corrupt(identifier, record, detail));
        }
        let state = state.ok_or_else(|| {
            self.corrupt(identifier, start, "the session has no creation record".to_owned())
        })?;
        let log = SessionLog {
            tree,
            journal: self.clone(),
            identifier: identifier.to_owned(),
            tip: walk.tip,
            since_checkpoint,
            checkpoint_size,
        };
        lock(&self.shared.heads).insert(identifier.to_owned(), walk.tip);
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

    /// Makes every append so far durable, then records in the head file what is now
    /// acknowledged (when that changed).
    ///
    /// # Errors
    /// A write failure.
    pub fn flush(&self) -> Result<(), JournalError> {
        let mut written = lock(&self.shared.written);
        let heads = lock(&self.shared.heads).clone();
        self.db.flush().map_err(|e| self.io("all sessions", e))?;
        if *written != heads {
            head::write(&self.shared.head, &heads).map_err(|source| {
                file_error("write the journal head", &self.shared.head, source)
            })?;
            *written = heads;
        }
        Ok(())
    }

    /// Deletes a session's log entirely. The head file forgets it first, so that a crash in
    /// between never looks like a lost session.
    ///
    /// # Errors
    /// A write failure.
    pub fn remove(&self, identifier: &str) -> Result<(), JournalError> {
        lock(&self.shared.heads).remove(identifier);
        self.flush()?;
        self.db
            .drop_tree(format!("{TREE_PREFIX}{identifier}"))
            .map(drop)
            .map_err(|e| self.io(identifier, e))?;
        // A crash before this leaves them to the next open.
        blob::remove_session(&self.blobs, identifier).map_err(|source| {
            file_error("remove the blobs of", &self.blobs.join(identifier), source)
        })
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

fn open_db(directory: &Path) -> Result<sled::Db, JournalError> {
    sled::Config::new()
        .path(directory)
        .cache_capacity(CACHE_CAPACITY)
        .open()
        .map_err(|source| JournalError::Open { directory: directory.to_owned(), source })
}

fn tree_identifiers(db: &sled::Db) -> Vec<String> {
    let names = db.tree_names();
    let names = names.iter().filter_map(|name| std::str::from_utf8(name).ok());
    names.filter_map(|name| name.strip_prefix(TREE_PREFIX)).map(str::to_owned).collect()
}

/// Checks every session of `db` against `heads` into `report`.
fn examine_db(db: &sled::Db, heads: Option<&Heads>, blobs: &Path, report: &mut Report) {
    let marked = matches!(db.get(MARKER_KEY), Ok(Some(_)));
    let identifiers: BTreeSet<String> = tree_identifiers(db).into_iter().collect();
    match heads {
        None if marked => report.problems.push(format!(
            "the head file {} is missing, so nothing can be checked",
            report.head.display()
        )),
        None if !identifiers.is_empty() => {
            report.legacy = true;
            return;
        }
        Some(heads) if !marked && !heads.is_empty() => report.problems.push(format!(
            "sled lost the journal's own marker, so its content is not what {} describes",
            report.head.display()
        )),
        _ => {}
    }
    let empty = Heads::new();
    let heads = heads.unwrap_or(&empty);
    for identifier in identifiers.iter().chain(heads.keys().filter(|k| !identifiers.contains(*k))) {
        let acknowledged = heads.get(identifier).copied();
        let mut session = SessionReport {
            identifier: identifier.clone(),
            name: None,
            records: 0,
            finding: Finding::Intact,
        };
        if !identifiers.contains(identifier) {
            session.finding = Finding::Missing;
            report.sessions.push(session);
            continue;
        }
        let tree = match db.open_tree(format!("{TREE_PREFIX}{identifier}")) {
            Ok(tree) => tree,
            Err(error) => {
                session.finding = Finding::Damaged(format!("sled cannot open its tree: {error}"));
                report.sessions.push(session);
                continue;
            }
        };
        let walk = walk(&tree, identifier, blobs, |_, _, record| {
            session.records += 1;
            match &record.event {
                Event::Created { spec, .. } => session.name = Some(spec.name.clone()),
                Event::ForwardCreated { spec, .. } => session.name = Some(spec.name.clone()),
                Event::Checkpoint(state) => session.name = Some(state.spec.name.clone()),
                _ => {}
            }
            Ok(())
        });
        // A key the journal never writes (a legacy record in a chained tree, a key changed
        // on disk) is content it cannot classify: it is reported, not skipped.
        let damage = walk.damage.clone().or_else(|| {
            let stray = tree.iter().keys().flatten().find(|key| {
                key != CHECKPOINT_KEY && key != BASE_KEY && decode_record_key(key).is_none()
            })?;
            Some((
                walk.tip.next,
                format!(
                    "the tree holds a key the journal never writes: \"{}\"",
                    stray.escape_ascii()
                ),
            ))
        });
        session.finding = match (damage, acknowledged) {
            (Some((record, detail)), _) => Finding::Damaged(format!("record {record}: {detail}")),
            (None, None) => Finding::Unacknowledged,
            (None, Some(link)) if walk.base > link.next => Finding::Intact,
            (None, Some(link)) if walk.tip.next == walk.base => Finding::Damaged(format!(
                "none of its records survived, and {} were acknowledged",
                link.next - walk.base
            )),
            (None, Some(link)) if walk.tip.next < link.next => Finding::Damaged(format!(
                "its history ends before record {}, and {} records were acknowledged",
                walk.tip.next, link.next
            )),
            (None, Some(link)) if walk.hash_at(link.next) != Some(link.hash) => {
                Finding::Damaged(format!(
                    "record {} is not the one that was acknowledged",
                    link.next.saturating_sub(1)
                ))
            }
            (None, Some(_)) => Finding::Intact,
        };
        report.sessions.push(session);
    }
}

/// The outcome of walking a session's chain.
struct Walk {
    /// The number of the oldest record kept.
    base: u64,
    /// The position after the last readable, chained record.
    tip: Link,
    /// Every chain position passed (record count → hash), for matching against the head.
    positions: Vec<[u8; HASH]>,
    /// The first record that is missing, unchained, unreadable or refused by `visit`.
    damage: Option<(u64, String)>,
}

impl Walk {
    /// Returns the chain hash after `next` records, when the walk passed that position.
    fn hash_at(&self, next: u64) -> Option<[u8; HASH]> {
        let index = usize::try_from(next.checked_sub(self.base)?).ok()?;
        self.positions.get(index).copied()
    }
}

/// Walks a session's records from the oldest kept, checking numbering and chain and decoding
/// each; stops at the first damage.
fn walk(
    tree: &sled::Tree,
    identifier: &str,
    blobs: &Path,
    mut visit: impl FnMut(u64, &[u8], &Record) -> Result<(), String>,
) -> Walk {
    let (base, hash) = match read_base(tree, identifier) {
        Ok(base) => base,
        Err(detail) => {
            let tip = Link { next: 0, hash: genesis(identifier) };
            return Walk { base: 0, tip, positions: Vec::new(), damage: Some((0, detail)) };
        }
    };
    let mut walk =
        Walk { base, tip: Link { next: base, hash }, positions: vec![hash], damage: None };
    for item in tree.range(record_key(0)..=record_key(u64::MAX)) {
        let expected = walk.tip.next;
        let damage = match item {
            Err(error) => Some(format!("sled cannot read it: {error}")),
            Ok((key, value)) => match decode_record_key(&key) {
                None => Some("its key is malformed".to_owned()),
                Some(number) if number != expected => {
                    Some(format!("it is missing (the next record kept is {number})"))
                }
                Some(number) => match value
                    .split_at_checked(HASH)
                    .map(|(hash, stored)| (hash, blob::resolve(blobs, identifier, number, stored)))
                {
                    None => Some("it is truncated".to_owned()),
                    Some((_, Err(detail))) => Some(detail),
                    Some((stored, Ok(bytes))) => {
                        let computed = chain_hash(&walk.tip.hash, number, &bytes);
                        if stored != computed {
                            Some("it does not match its chain hash (changed on disk)".to_owned())
                        } else {
                            match Record::decode(&bytes) {
                                Err(error) => Some(error.to_string()),
                                Ok(record) => match visit(number, &bytes, &record) {
                                    Err(detail) => Some(detail),
                                    Ok(()) => {
                                        walk.tip = Link { next: number + 1, hash: computed };
                                        walk.positions.push(computed);
                                        None
                                    }
                                },
                            }
                        }
                    }
                },
            },
        };
        if let Some(detail) = damage {
            walk.damage = Some((expected, detail));
            break;
        }
    }
    walk
}

fn read_base(tree: &sled::Tree, identifier: &str) -> Result<(u64, [u8; HASH]), String> {
    match tree.get(BASE_KEY) {
        Ok(None) => Ok((0, genesis(identifier))),
        Ok(Some(value)) if value.len() == 8 + HASH => {
            let number = decode_number(&value[..8]).unwrap_or_default();
            let hash = value[8..].try_into().unwrap_or_default();
            Ok((number, hash))
        }
        Ok(Some(_)) => Err("its base marker is malformed".to_owned()),
        Err(error) => Err(format!("sled cannot read its base marker: {error}")),
    }
}

fn encode_base(number: u64, hash: &[u8; HASH]) -> Vec<u8> {
    let mut value = number.to_be_bytes().to_vec();
    value.extend_from_slice(hash);
    value
}

/// Runs `f`, turning a panic inside sled (it panics on some damage) into an error.
fn catch<T>(f: impl FnOnce() -> Result<T, JournalError>) -> Result<T, String> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(error)) => Err(mutagen_core::render_error(&error)),
        Err(panic) => Err(panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
            .unwrap_or_else(|| "it panicked".to_owned())),
    }
}

/// A throwaway copy of a journal directory, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn copy(directory: &Path) -> Result<Scratch, JournalError> {
        let scratch = Scratch(sibling(directory, "examining"));
        remove_if_present(&scratch.0)?;
        copy_directory(directory, &scratch.0)?;
        Ok(scratch)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Returns `<directory>.<suffix>`, beside it.
fn sibling(directory: &Path, suffix: &str) -> PathBuf {
    let mut name = directory.file_name().unwrap_or_default().to_owned();
    name.push(format!(".{suffix}"));
    directory.with_file_name(name)
}

fn copy_directory(from: &Path, to: &Path) -> Result<(), JournalError> {
    std::fs::create_dir_all(to).map_err(|source| file_error("create", to, source))?;
    let entries = match std::fs::read_dir(from) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(source) => return Err(file_error("read", from, source)),
    };
    for entry in entries {
        let entry = entry.map_err(|source| file_error("read", from, source))?;
        let (source_path, target) = (entry.path(), to.join(entry.file_name()));
        let kind = entry.file_type().map_err(|source| file_error("read", &source_path, source))?;
        if kind.is_dir() {
            copy_directory(&source_path, &target)?;
        } else if kind.is_file() {
            std::fs::copy(&source_path, &target)
                .map_err(|source| file_error("copy", &source_path, source))?;
        }
    }
    Ok(())
}

fn is_empty_directory(directory: &Path) -> bool {
    std::fs::read_dir(directory).map_or(true, |mut entries| entries.next().is_none())
}

fn remove_if_present(path: &Path) -> Result<(), JournalError> {
    let result =
        if path.is_dir() { std::fs::remove_dir_all(path) } else { std::fs::remove_file(path) };
    match result {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(file_error("remove", path, e)),
        _ => Ok(()),
    }
}

fn sync_parent(path: &Path) -> Result<(), JournalError> {
    let parent = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::File::open(parent)
        .and_then(|directory| directory.sync_all())
        .map_err(|source| file_error("sync", parent, source))
}

fn file_error(action: &'static str, path: &Path, source: std::io::Error) -> JournalError {
    JournalError::File { action, path: path.to_owned(), source }
}

fn fold_detail(error: &FoldError) -> String {
    match error {
        FoldError::Ancestor(source) => format!("{error}: {source}"),
        _ => error.to_string(),
    }
}

fn record_key(number: u64) -> [u8; 9] {
    let mut key = [RECORD_PREFIX; 9];
    key[1..].copy_from_slice(&number.to_be_bytes());
    key
}

fn decode_record_key(key: &[u8]) -> Option<u64> {
    match key.split_first() {
        Some((&RECORD_PREFIX, rest)) => decode_number(rest),
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
    for item in tree.range(record_key(from)..=record_key(u64::MAX)) {
        let (key, value) = item.map_err(|e| journal.io(identifier, e))?;
        let number = decode_record_key(&key).unwrap_or(u64::MAX);
        let stored = value.get(HASH..).unwrap_or_default();
        let bytes = blob::resolve(&journal.blobs, identifier, number, stored)
            .map_err(|detail| journal.corrupt(identifier, number, detail))?;
        let record = Record::decode(&bytes)
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
    tip: Link,
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
            self.journal.corrupt(&self.identifier, self.tip.next, format!("unable to encode: {e}"))
        })?;
        let number = self.tip.next;
        let hash = chain_hash(&self.tip.hash, number, &bytes);
        let mut value = Vec::with_capacity(HASH + bytes.len().min(blob::BLOB_MINIMUM));
        value.extend_from_slice(&hash);
        if bytes.len() >= blob::BLOB_MINIMUM {
            let blobs = &self.journal.blobs;
            let reference = blob::write(blobs, &self.identifier, number, &bytes)
                .map_err(|source| file_error("write a blob in", blobs, source))?;
            value.extend_from_slice(&reference);
        } else {
            value.extend_from_slice(&bytes);
        }
        let mut batch = sled::Batch::default();
        batch.insert(&record_key(number), value);
        if matches!(record.event, Event::Checkpoint(_)) {
            batch.insert(CHECKPOINT_KEY, &number.to_be_bytes());
        }
        self.tree.apply_batch(batch).map_err(|e| self.journal.io(&self.identifier, e))?;
        if matches!(record.event, Event::Checkpoint(_)) {
            self.checkpoint_size = bytes.len() as u64;
            self.since_checkpoint = 0;
        } else {
            self.since_checkpoint += bytes.len() as u64;
        }
        self.tip = Link { next: number + 1, hash };
        lock(&self.journal.shared.heads).insert(self.identifier.clone(), self.tip);
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
    /// then removes every earlier record of a cycle older than the latest `retain_cycles`,
    /// keeping the chain hash before the oldest record kept (`m:base`). The fold of what
    /// remains equals `state`. Returns how many records were removed.
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
        let mut base = None;
        let mut blobs = Vec::new();
        for item in self.tree.range(record_key(0)..record_key(checkpoint)) {
            let (key, value) = item.map_err(|e| self.journal.io(&self.identifier, e))?;
            let number = decode_record_key(&key).unwrap_or(u64::MAX);
            let stored = value.get(HASH..).unwrap_or_default();
            let stamp = blob::stamp(stored)
                .map_err(|detail| self.journal.corrupt(&self.identifier, number, detail))?;
            let (_, cycle) = Record::decode_stamp(stamp)
                .map_err(|e| self.journal.corrupt(&self.identifier, number, e.to_string()))?;
            if cycle >= oldest_kept {
                break;
            }
            blobs.extend(blob::named(&self.journal.blobs, &self.identifier, number, stored));
            let hash: [u8; HASH] = value[..HASH].try_into().unwrap_or_default();
            base = Some(encode_base(number + 1, &hash));
            batch.remove(key);
            removed += 1;
        }
        if let Some(base) = base {
            batch.insert(BASE_KEY, base);
        }
        self.tree.apply_batch(batch).map_err(|e| self.journal.io(&self.identifier, e))?;
        // Only once the records are gone for good (a crash before leaves them to the next
        // open, which removes blobs no record names).
        self.journal.flush()?;
        for file in blobs {
            if let Err(error) = std::fs::remove_file(&file) {
                tracing::warn!("unable to remove the blob {}: {error}", file.display());
            }
        }
        Ok(removed)
    }
}

//! The [`Endpoint`] contract and the messages its operations exchange.
//!
//! Every argument and result is an owned, serializable value: a remote endpoint (an agent over
//! SSH or in a container) implements the same trait by sending one request message per call and
//! reading the response, so the controller never knows where an endpoint lives.

use std::collections::BTreeSet;
use std::sync::Arc;

use mutagen_reconcile::{Change, Digest, Entry, Problem};

use crate::rsync::Signature;
use serde::{Deserialize, Serialize};

/// The result of scanning an endpoint's root.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// The root's content; `None` when the root does not exist.
    pub content: Option<Entry>,
    /// Synchronizable directories, the root included.
    pub directories: u64,
    /// Regular files.
    pub files: u64,
    /// Symbolic links.
    pub symbolic_links: u64,
    /// Total size of the regular files, in bytes.
    pub total_file_size: u64,
    /// The problematic entries, as problems (kept with the counts, so that a cycle need not
    /// walk the tree for them; recomputed for untrusted endpoints).
    pub problems: Vec<Problem>,
}

impl Snapshot {
    /// Computes the problematic entries of the scan, as problems.
    pub fn problems(&self) -> Vec<Problem> {
        self.content.as_ref().map(|content| content.problems("")).unwrap_or_default()
    }
}

/// One file an endpoint needs, identified by the path it will be placed at and its digest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StageRequest {
    /// Root-relative path where the file will be placed (on the supplying side, where to read
    /// it from: both sides use the same relative paths).
    pub path: String,
    /// The digest the content must have.
    pub digest: Digest,
    /// Set by the staging endpoint when it holds a file at `path` worth diffing against: the
    /// supplier then sends only what differs (see [`crate::rsync`]).
    pub base: Option<Signature>,
}

impl StageRequest {
    /// Returns a request without a base.
    pub fn new(path: impl Into<String>, digest: Digest) -> StageRequest {
        StageRequest { path: path.into(), digest, base: None }
    }
}

/// A piece of a file's content flowing from the supplying endpoint to the staging one.
///
/// For each requested file the supplier sends `Begin`, any number of `Data`, then `End`; or
/// `Unavailable` alone when it cannot read the file (it changed or vanished since its scan).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Transmission {
    /// A file starts.
    Begin {
        /// The request being answered.
        request: StageRequest,
        /// The size the supplier expects to send.
        size: u64,
    },
    /// Literal content (encoded as bytes: the same bytes on the wire as a sequence, without
    /// a serializer call per byte).
    Data(#[serde(with = "serde_bytes")] Vec<u8>),
    /// Content copied from blocks of the receiver's base file (see [`StageRequest::base`]).
    Blocks {
        /// The first block.
        start: u64,
        /// How many blocks.
        count: u64,
    },
    /// The current file is complete.
    End,
    /// The supplier could not provide the file.
    Unavailable {
        /// The request that cannot be answered.
        request: StageRequest,
        /// Why, lowercase.
        error: String,
    },
}

/// What a transition did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransitionResult {
    /// For each change, in order, what is on disk at its path now (the change's `new` on
    /// success; its `old`, or what is left of it, on failure).
    pub results: Vec<Option<Entry>>,
    /// Per-path trouble.
    pub problems: Vec<Problem>,
    /// Whether some staged file was missing (the cycle should be repeated once).
    pub missing_files: bool,
}

/// An error that stops an endpoint operation as a whole (per-path trouble is a [`Problem`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EndpointError {
    /// The root cannot be scanned at all.
    #[error("unable to scan root {root}: {reason}")]
    Scan {
        /// The root path.
        root: String,
        /// Why, lowercase.
        reason: String,
    },
    /// An operation needs a scan first (stage and transition check against the last scan).
    #[error("{operation} requested without a preceding scan")]
    NotScanned {
        /// The operation.
        operation: &'static str,
    },
    /// A write was requested on a read-only endpoint (alpha in one-way modes).
    #[error("endpoint is read-only: {operation} refused")]
    ReadOnly {
        /// The operation.
        operation: &'static str,
    },
    /// The staging area cannot be used.
    #[error("unable to use staging directory {path}")]
    Staging {
        /// The staging directory.
        path: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The transmission stream was out of order or malformed, or the connection to a remote
    /// endpoint failed.
    #[error("protocol violation: {0}")]
    Protocol(String),
    /// A remote endpoint reported that the operation failed (its message, lowercase).
    #[error("{0}")]
    Remote(String),
}

/// A shorthand for results of endpoint operations.
pub type EndpointResult<T> = Result<T, EndpointError>;

/// What the controller needs from an endpoint.
///
/// # Contract
/// - Calls are sequential per endpoint (`&mut self`); two endpoints may be driven from two
///   threads at once.
/// - `stage` and `transition` require a `scan` since the previous `transition`: they compare
///   against that scan.
/// - A watching endpoint announces possible changes on its [`Endpoint::wakeups`] channel; the
///   controller then asks [`Endpoint::check`] whether something really changed. Endpoints
///   without a channel are checked periodically.
/// - After an `Err`, only `shutdown` is meaningful; the controller reconnects.
pub trait Endpoint: Send {
    /// Returns a channel that receives a message when the root's content may have changed
    /// (a watcher saw events); `None` when the endpoint must be checked periodically.
    fn wakeups(&self) -> Option<crossbeam_channel::Receiver<()>> {
        None
    }

    /// Returns whether the root's content changed since the last `scan`: a watching endpoint
    /// rescans what its watcher reported, others rescan everything.
    fn check(&mut self) -> EndpointResult<bool>;

    /// Describes a watch that is missing or had to fall back to full rescans, if there is
    /// one (for the user).
    fn watch_problem(&self) -> Option<String> {
        None
    }

    /// Scans the root. The snapshot is shared: an endpoint may keep it as its own view of
    /// the root without a copy.
    fn scan(&mut self) -> EndpointResult<Arc<Snapshot>>;

    /// Whether this endpoint's snapshots are built by this process from the file system (and
    /// need no validation); snapshots from elsewhere (an agent) are untrusted input.
    fn trusted(&self) -> bool {
        false
    }

    /// A number for the content of the snapshot the latest `scan` returned: two scans that
    /// return the same number returned the same content. Numbers come from
    /// [`next_version`], so no two endpoints of a process ever share one. `None` (the
    /// default): unknown, and every cycle reconciles.
    fn version(&self) -> Option<u64> {
        None
    }

    /// The directories (`""` the root) whose listing may differ between the snapshot the
    /// latest `scan` returned and the one the scan before it returned: every entry that
    /// differs (its own bits and kind included) lies in one of them. `None` (the default):
    /// unknown, and a cycle reconciles the whole trees.
    fn changed_directories(&self) -> Option<&BTreeSet<String>> {
        None
    }

    /// Prepares to receive the files in `requests` and returns the ones that must be supplied
    /// by the other endpoint (the rest were already staged or found locally by digest).
    fn stage(&mut self, requests: Vec<StageRequest>) -> EndpointResult<Vec<StageRequest>>;

    /// Reads the requested files from this endpoint's root and hands them to `sink`.
    fn supply(
        &mut self,
        requests: &[StageRequest],
        sink: &mut dyn FnMut(Transmission) -> EndpointResult<()>,
    ) -> EndpointResult<()>;

    /// Accepts one transmission from the other endpoint's `supply`.
    fn receive(&mut self, transmission: Transmission) -> EndpointResult<()>;

    /// Applies changes to disk; see [`TransitionResult`].
    fn transition(&mut self, changes: Vec<Change>) -> EndpointResult<TransitionResult>;

    /// Releases resources (staged files, handles).
    fn shutdown(&mut self) -> EndpointResult<()>;
}

/// Returns a number no caller of this process got before (see [`Endpoint::version`]).
pub fn next_version() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

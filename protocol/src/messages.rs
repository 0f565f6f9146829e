//! The messages between the daemon's remote endpoint and the agent.
//!
//! # Compatibility
//! The agent starts by writing [`MAGIC`] and then a [`Hello`] frame, whose shape is fixed
//! forever: any daemon can read any agent's hello and then refuse (and reinstall) an agent of
//! another protocol version or build. Everything after the hello is only promised between an
//! agent and a daemon of the same build; [`PROTOCOL_VERSION`] is bumped whenever it changes,
//! and golden files in `tests/golden/` pin the encoding so that no change is accidental.

use mutagen_core::{IgnoreSyntax, PermissionsMode, StageMode};
use mutagen_endpoint::{Snapshot, StageRequest, SymlinkMode, TransitionResult, Transmission};
use mutagen_reconcile::{Change, Entry, Problem};
use serde::{Deserialize, Serialize};

/// What an agent writes before anything else: it lets the daemon skip whatever a login shell
/// printed first.
pub const MAGIC: [u8; 8] = *b"\x00MUTAGNT";

/// Bumped whenever a message after [`Hello`] changes.
pub const PROTOCOL_VERSION: u32 = 7;

/// The agent's first frame.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// [`PROTOCOL_VERSION`] of the agent.
    pub protocol: u32,
    /// The agent's program version.
    pub version: String,
    /// The BLAKE3 digest of the agent's own executable, in hex: the daemon compares it with the
    /// digest of the agent binary it would install, so any other build is replaced.
    pub build: String,
}

/// How the agent sets up its endpoint (the first request). The default is a root `""` with
/// every setting at its default.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointOptions {
    /// The root as the user wrote it: absolute, `~`, `~/x`, `~user/x`, or relative to the
    /// remote home.
    pub root: String,
    /// A name for the staging area, unique per session and side (`[A-Za-z0-9_-]+`).
    pub staging_name: String,
    /// Ignore patterns (in `ignore_syntax`).
    pub ignores: Vec<String>,
    /// Whether version-control directories are ignored.
    pub ignore_vcs: bool,
    /// How symbolic links are handled.
    pub symlink_mode: SymlinkMode,
    /// Refuse `stage` and `transition` (alpha in one-way modes).
    pub read_only: bool,
    /// Watch the root natively.
    pub watch: bool,
    /// Where received files are staged.
    pub stage_mode: StageMode,
    /// How the ignore patterns are read.
    pub ignore_syntax: IgnoreSyntax,
    /// Also skip what git ignores in the root.
    pub vcs_ignored: bool,
    /// Rescan the whole tree every cycle (scan mode `full`).
    pub full_scans: bool,
    /// What is synchronized of permissions. (Encoded where a `manual` flag used to be:
    /// portable is 0, manual 1.)
    pub permissions_mode: PermissionsMode,
    /// Permission bits of new files (`None`: the engine's default).
    pub file_mode: Option<u32>,
    /// Permission bits of new directories.
    pub directory_mode: Option<u32>,
    /// Owner of what is created: `id:N`, a number or a name, resolved by the endpoint.
    pub owner: Option<String>,
    /// Group of what is created.
    pub group: Option<String>,
}

/// A request from the daemon.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// Set up the endpoint; answered by [`Response::Initialized`].
    Initialize(EndpointOptions),
    /// [`mutagen_endpoint::Endpoint::check`]; answered by [`Response::Checked`].
    Check,
    /// Scan; answered by [`Response::Scanned`].
    Scan {
        /// The generation of the last snapshot the daemon received and still holds: the agent
        /// may answer with only what changed since then.
        base: Option<u64>,
    },
    /// Stage; answered by [`Response::Staged`].
    Stage(Vec<StageRequest>),
    /// Supply; answered by one [`Response::Transmission`] stream, then [`Response::Supplied`].
    Supply(Vec<StageRequest>),
    /// One transmission to receive; not answered (an error is reported by the next request).
    Receive(Transmission),
    /// Transition; answered by [`Response::Transitioned`].
    Transition(Vec<Change>),
    /// Release staged files; answered by [`Response::Done`].
    Shutdown,
    /// Answered by [`Response::Done`] at once: measures the round trip.
    Ping,
}

/// An answer from the agent, or a message it sends on its own.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    /// The endpoint is ready.
    Initialized {
        /// The root, resolved to an absolute path on the agent's host.
        root: String,
    },
    /// Whether the root changed since the last scan.
    Checked {
        /// It changed.
        changed: bool,
        /// The endpoint's watch problem, if any.
        watch_problem: Option<String>,
    },
    /// A scan.
    Scanned {
        /// The snapshot, whole or as changes.
        snapshot: SnapshotTransfer,
        /// The endpoint's watch problem, if any.
        watch_problem: Option<String>,
    },
    /// The requests that must be supplied.
    Staged(Vec<StageRequest>),
    /// One transmission of a supply stream.
    Transmission(Transmission),
    /// The supply stream is complete.
    Supplied,
    /// A transition's result.
    Transitioned(TransitionResult),
    /// Done.
    Done,
    /// The request failed; the message is lowercase, for the user.
    Error(String),
    /// Unsolicited: the watcher saw changes (sent at most once between checks).
    Wakeup,
    /// Unsolicited: the agent is alive and working on the current request.
    Heartbeat,
}

/// A snapshot as it travels: whole, or as the changes since one the daemon holds.
///
/// Generations number the snapshots an agent sent on one connection, from 1. A delta names
/// the generation it applies to; the daemon refuses one whose base it does not hold.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SnapshotTransfer {
    /// The whole snapshot.
    Full {
        /// Its generation.
        generation: u64,
        /// The snapshot.
        snapshot: Snapshot,
    },
    /// What changed since generation `base`.
    Delta {
        /// The generation the changes apply to.
        base: u64,
        /// The new generation.
        generation: u64,
        /// Replacements, parents before children: the content now at each path (`None`:
        /// removed). A directory where the base holds a directory changes only that
        /// directory's permission bits (its children are not part of it).
        changes: Vec<(String, Option<Entry>)>,
        /// The new snapshot's counts: directories.
        directories: u64,
        /// Files.
        files: u64,
        /// Symbolic links.
        symbolic_links: u64,
        /// Total file size.
        total_file_size: u64,
        /// Problematic entries, as problems.
        problems: Vec<Problem>,
    },
}

//! The IPC protocol between the command line and the daemon.
//!
//! A connection carries frames: a big-endian `u32` length, then that many bytes of postcard.
//! The client sends a [`Request`] and reads one [`Response`], as many times as it likes.
//!
//! # Compatibility
//! [`Request::Version`] and [`Response::Version`] are the first variants and keep their
//! shape forever: a client of any version can ask a daemon of any version what it is, and
//! then refuse to go on with a clear message. Nothing else is promised across versions.
//! This wire format is independent of the journal's disk format.

use mutagen_endpoint::{Side, StagingProgress};
use mutagen_journal::{Record, SideState};
use mutagen_reconcile::Conflict;
use mutagen_session::forward::ForwardSpec;
use mutagen_session::{Configuration, Labels, SessionSpec};
use serde::{Deserialize, Serialize};

/// Bumped whenever the messages change.
pub const PROTOCOL_VERSION: u32 = 5;

/// The largest frame either side accepts.
pub const MAX_FRAME: u32 = 256 << 20;

/// The version of this program.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Which sessions a command applies to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Selection {
    /// Every session.
    All,
    /// Sessions whose identifier or name equals one of these (each must match one at least).
    Specifications(Vec<String>),
    /// Sessions whose labels match this selector (it must match one at least).
    LabelSelector(String),
}

/// A request from the command line.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Request {
    /// What version is the daemon? (Must stay the first variant.)
    Version,
    /// Stop the daemon.
    Shutdown,
    /// Create a session. With `prompt`, the daemon may answer with [`Response::Prompt`]s
    /// (ssh's password, passphrase and host-key questions) before the final answer; the
    /// client answers each with [`Request::Answer`].
    Create {
        /// The session.
        spec: SessionSpec,
        /// Whether the client has a terminal to ask the user on.
        prompt: bool,
    },
    /// The user's answer to a [`Response::Prompt`] (`None`: declined).
    Answer(Option<String>),
    /// Describe sessions; when `since` equals the current state index, wait for a change.
    List {
        /// The sessions.
        selection: Selection,
        /// The state index the caller last saw (0: answer at once).
        since: u64,
    },
    /// Run a full cycle now.
    Flush {
        /// The sessions.
        selection: Selection,
        /// Answer once requested instead of once the cycle completed.
        skip_wait: bool,
    },
    /// Stop synchronizing.
    Pause(Selection),
    /// Start synchronizing again (also clears a halt) and connect disconnected endpoints;
    /// with `prompt`, ssh's questions are relayed as for [`Request::Create`], and the answer
    /// comes once the connection attempt ended.
    Resume {
        /// The sessions.
        selection: Selection,
        /// Whether the client has a terminal to ask the user on.
        prompt: bool,
    },
    /// Forget the ancestor.
    Reset(Selection),
    /// Delete sessions (their history stays in the journal for a week).
    Terminate(Selection),
    /// A session's journal.
    History {
        /// Name or identifier (terminated sessions included).
        specification: String,
    },
    /// Resolve a session's conflicts by hand: `winner`'s version propagates.
    Resolve {
        /// The session's name or identifier (it must name one session).
        specification: String,
        /// The side whose version wins.
        winner: Side,
        /// Conflict roots (root-relative paths); `None`: every conflict.
        paths: Option<Vec<String>>,
    },
    /// Create a forward session. A local listener is bound at once (its failure fails the
    /// create); remote endpoints connect in the background, their errors in `last_error`.
    ForwardCreate(ForwardSpec),
    /// Describe forward sessions, as [`Request::List`] does.
    ForwardList {
        /// The sessions.
        selection: Selection,
        /// The state index the caller last saw (0: answer at once).
        since: u64,
    },
    /// Stop forwarding: listeners close and open connections end.
    ForwardPause(Selection),
    /// Start forwarding again.
    ForwardResume(Selection),
    /// Delete forward sessions (their listeners close, a unix socket they made goes).
    ForwardTerminate(Selection),
}

/// The daemon's answer.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Response {
    /// The daemon's version (must stay the first variant).
    Version {
        /// The program version.
        version: String,
        /// [`PROTOCOL_VERSION`] of the daemon.
        protocol: u32,
        /// The daemon's process id.
        pid: u32,
    },
    /// The request failed; the message is for the user.
    Error(String),
    /// A question for the user, before the final answer (see [`Request::Create`]).
    Prompt {
        /// The question, as ssh asks it.
        message: String,
        /// Whether the answer must not be echoed.
        secret: bool,
    },
    /// A session was created.
    Created {
        /// Its identifier.
        identifier: String,
    },
    /// Session descriptions, oldest first.
    List {
        /// The state index they reflect.
        index: u64,
        /// The sessions.
        sessions: Vec<SessionInfo>,
    },
    /// The command was applied to these sessions.
    Done {
        /// Their identifiers.
        identifiers: Vec<String>,
    },
    /// Forward session descriptions, oldest first.
    ForwardList {
        /// The state index they reflect.
        index: u64,
        /// The sessions.
        sessions: Vec<ForwardInfo>,
    },
    /// A session's journal, oldest first (checkpoints without their ancestor).
    History {
        /// The session's identifier.
        identifier: String,
        /// Record numbers and records.
        records: Vec<(u64, Record)>,
    },
}

/// What a session is doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Status {
    /// Not connected (paused, or after an error).
    Disconnected,
    /// Connecting to alpha.
    ConnectingAlpha,
    /// Connecting to beta.
    ConnectingBeta,
    /// Waiting for changes.
    Watching,
    /// Scanning.
    Scanning,
    /// Waiting before retrying after an error.
    WaitingForRescan,
    /// Reconciling.
    Reconciling,
    /// Staging files on alpha.
    StagingAlpha,
    /// Staging files on beta.
    StagingBeta,
    /// Applying changes.
    Transitioning,
    /// Committing the cycle to the journal.
    Saving,
    /// Halted: one root was emptied.
    HaltedOnRootEmptied,
    /// Halted: a root would be deleted.
    HaltedOnRootDeletion,
    /// Halted: a root would change type.
    HaltedOnRootTypeChange,
    /// Halted: an endpoint was replaced (a recreated container).
    HaltedOnEndpointReplaced,
}

impl Status {
    /// Returns the machine name (`watching`, `staging-beta`...).
    pub fn name(self) -> &'static str {
        match self {
            Status::Disconnected => "disconnected",
            Status::ConnectingAlpha => "connecting-alpha",
            Status::ConnectingBeta => "connecting-beta",
            Status::Watching => "watching",
            Status::Scanning => "scanning",
            Status::WaitingForRescan => "waiting-for-rescan",
            Status::Reconciling => "reconciling",
            Status::StagingAlpha => "staging-alpha",
            Status::StagingBeta => "staging-beta",
            Status::Transitioning => "transitioning",
            Status::Saving => "saving",
            Status::HaltedOnRootEmptied => "halted-on-root-emptied",
            Status::HaltedOnRootDeletion => "halted-on-root-deletion",
            Status::HaltedOnRootTypeChange => "halted-on-root-type-change",
            Status::HaltedOnEndpointReplaced => "halted-on-endpoint-replaced",
        }
    }

    /// Returns the human description.
    pub fn description(self) -> &'static str {
        match self {
            Status::Disconnected => "Disconnected",
            Status::ConnectingAlpha => "Connecting to alpha",
            Status::ConnectingBeta => "Connecting to beta",
            Status::Watching => "Watching for changes",
            Status::Scanning => "Scanning files",
            Status::WaitingForRescan => "Waiting to retry",
            Status::Reconciling => "Reconciling changes",
            Status::StagingAlpha => "Staging files on alpha",
            Status::StagingBeta => "Staging files on beta",
            Status::Transitioning => "Applying changes",
            Status::Saving => "Saving archive",
            Status::HaltedOnRootEmptied => "Halted due to one-sided root emptying",
            Status::HaltedOnRootDeletion => "Halted due to root deletion",
            Status::HaltedOnRootTypeChange => "Halted due to root type change",
            Status::HaltedOnEndpointReplaced => {
                "Halted because an endpoint was replaced (reset the session to synchronize with it)"
            }
        }
    }

    /// Returns the status for a halt.
    pub fn halted(reason: mutagen_endpoint::HaltReason) -> Status {
        match reason {
            mutagen_endpoint::HaltReason::RootEmptied => Status::HaltedOnRootEmptied,
            mutagen_endpoint::HaltReason::RootDeletion => Status::HaltedOnRootDeletion,
            mutagen_endpoint::HaltReason::RootTypeChange => Status::HaltedOnRootTypeChange,
            mutagen_endpoint::HaltReason::EndpointReplaced => Status::HaltedOnEndpointReplaced,
        }
    }
}

/// One endpoint of a session, as listed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointInfo {
    /// The URL.
    pub url: String,
    /// The transport environment captured at creation (Docker endpoints).
    pub environment: mutagen_session::Environment,
    /// Whether the endpoint is connected.
    pub connected: bool,
    /// The latest scan's counts and problems, and the latest transition's problems.
    pub state: SideState,
    /// Why changes on this endpoint are found by full rescans instead of its native watch
    /// (portable watch mode only).
    pub watch_problem: Option<String>,
}

/// A session, as listed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionInfo {
    /// The identifier.
    pub identifier: String,
    /// The name (empty: none).
    pub name: String,
    /// The labels.
    pub labels: Labels,
    /// Creation time, nanoseconds since the Unix epoch.
    pub creation_time: u64,
    /// The version that created it.
    pub creating_version: String,
    /// The frozen configuration.
    pub configuration: Configuration,
    /// Whether it is paused.
    pub paused: bool,
    /// What it is doing.
    pub status: Status,
    /// The latest error, if the latest attempt failed.
    pub last_error: Option<String>,
    /// Committed cycles.
    pub successful_cycles: u64,
    /// Current conflicts.
    pub conflicts: Vec<Conflict>,
    /// Alpha.
    pub alpha: EndpointInfo,
    /// Beta.
    pub beta: EndpointInfo,
    /// Staging progress, while staging.
    pub staging: Option<(Side, StagingProgress)>,
}

/// What a forward session is doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ForwardStatus {
    /// Not connected (paused, or waiting to reconnect).
    Disconnected,
    /// Setting up the listener.
    ConnectingSource,
    /// Reaching the destination's agent.
    ConnectingDestination,
    /// Listening and relaying.
    Forwarding,
}

impl ForwardStatus {
    /// The machine name.
    pub fn name(self) -> &'static str {
        match self {
            ForwardStatus::Disconnected => "disconnected",
            ForwardStatus::ConnectingSource => "connecting-source",
            ForwardStatus::ConnectingDestination => "connecting-destination",
            ForwardStatus::Forwarding => "forwarding",
        }
    }

    /// The human description.
    pub fn description(self) -> &'static str {
        match self {
            ForwardStatus::Disconnected => "Disconnected",
            ForwardStatus::ConnectingSource => "Connecting to source",
            ForwardStatus::ConnectingDestination => "Connecting to destination",
            ForwardStatus::Forwarding => "Forwarding connections",
        }
    }
}

/// A forward session, as listed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForwardInfo {
    /// The identifier.
    pub identifier: String,
    /// The frozen specification (URLs, name, labels, socket settings).
    pub spec: ForwardSpec,
    /// Creation time, nanoseconds since the Unix epoch.
    pub creation_time: u64,
    /// The version that created it.
    pub creating_version: String,
    /// Whether it is paused.
    pub paused: bool,
    /// What it is doing.
    pub status: ForwardStatus,
    /// The latest error (a failed dial, a lost link), until the next success.
    pub last_error: Option<String>,
    /// Whether the source (listener) is up.
    pub source_connected: bool,
    /// Whether the destination is reachable (its agent connected, or local).
    pub destination_connected: bool,
    /// Connections being relayed.
    pub open_connections: u64,
    /// Connections accepted since the daemon started.
    pub total_connections: u64,
    /// Bytes from clients to the destination.
    pub total_outbound_data: u64,
    /// Bytes from the destination to clients.
    pub total_inbound_data: u64,
    /// Connections closed because the destination refused them.
    pub failed_connections: u64,
}

/// A protocol failure.
#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    /// The connection failed.
    #[error("connection to the daemon failed")]
    Io(#[from] std::io::Error),
    /// A frame exceeds [`MAX_FRAME`].
    #[error("message of {0} bytes exceeds the limit")]
    TooLarge(u64),
    /// A frame does not decode.
    #[error("malformed message")]
    Decode(#[from] postcard::Error),
}

/// Encodes a frame.
///
/// # Errors
/// When the message is too large or does not serialize.
pub fn encode<T: Serialize>(message: &T) -> Result<Vec<u8>, ProtocolError> {
    let mut bytes = vec![0; 4];
    bytes.extend(postcard::to_stdvec(message)?);
    let length = bytes.len() as u64 - 4;
    if length > u64::from(MAX_FRAME) {
        return Err(ProtocolError::TooLarge(length));
    }
    bytes[..4].copy_from_slice(&(length as u32).to_be_bytes());
    Ok(bytes)
}

/// Checks a frame length read from the peer.
///
/// # Errors
/// [`ProtocolError::TooLarge`].
pub fn check_length(header: [u8; 4]) -> Result<usize, ProtocolError> {
    let length = u32::from_be_bytes(header);
    if length > MAX_FRAME {
        return Err(ProtocolError::TooLarge(u64::from(length)));
    }
    Ok(length as usize)
}

/// Writes a frame to a blocking stream.
///
/// # Errors
/// I/O or encoding failures.
pub fn write_blocking<T: Serialize>(
    stream: &mut impl std::io::Write,
    message: &T,
) -> Result<(), ProtocolError> {
    stream.write_all(&encode(message)?)?;
    Ok(stream.flush()?)
}

/// Reads a frame from a blocking stream.
///
/// # Errors
/// I/O or decoding failures.
pub fn read_blocking<T: for<'de> Deserialize<'de>>(
    stream: &mut impl std::io::Read,
) -> Result<T, ProtocolError> {
    let mut header = [0; 4];
    stream.read_exact(&mut header)?;
    let mut body = vec![0; check_length(header)?];
    stream.read_exact(&mut body)?;
    Ok(postcard::from_bytes(&body)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_oversized_ones_are_refused() {
        let request =
            Request::List { selection: Selection::Specifications(vec!["web".into()]), since: 3 };
        let bytes = encode(&request).expect("encode");
        let decoded: Request = read_blocking(&mut bytes.as_slice()).expect("decode");
        assert!(matches!(decoded, Request::List { since: 3, .. }));
        let mut huge = (MAX_FRAME + 1).to_be_bytes().to_vec();
        huge.extend([0; 8]);
        let error = read_blocking::<Request>(&mut huge.as_slice()).expect_err("too large");
        assert!(matches!(error, ProtocolError::TooLarge(_)));
    }

    #[test]
    fn the_version_exchange_has_a_fixed_encoding() {
        // Variant 0 with no payload: any version of the daemon can answer it.
        assert_eq!(encode(&Request::Version).expect("encode"), [0, 0, 0, 1, 0]);
        let response = Response::Version { version: "9.9.9".into(), protocol: 7, pid: 1 };
        let bytes = encode(&response).expect("encode");
        assert_eq!(bytes[4], 0, "Response::Version is variant 0");
    }
}

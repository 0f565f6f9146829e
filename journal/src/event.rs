//! Events and their on-disk encoding.

use std::time::{SystemTime, UNIX_EPOCH};

use mutagen_core::{HaltReason, Side};
use mutagen_reconcile::{Change, Conflict, Problem};
use mutagen_session::SessionSpec;
use serde::{Deserialize, Serialize};

use crate::state::SessionState;

/// The encoding version written before every record. A reader refuses versions it does not
/// know instead of guessing.
///
/// - 1: the first format; specs and configurations were plain structs.
/// - 2: specs and configurations are lists of tagged fields
///   ([`mutagen_session::encoding`]), so that settings can be added without a new format;
///   format-1 records still load (their sessions keep an uncompressed agent link).
/// - 3: the session state of a checkpoint is a list of tagged fields too
///   ([`crate::state`]), and knows which endpoint (container) each side was synchronized
///   with; format-2 checkpoints load without that knowledge.
pub const FORMAT_VERSION: u8 = 3;

/// The oldest format this version reads.
const OLDEST_FORMAT: u8 = 1;

/// One journal entry.
///
/// Field order matters: compaction decodes only the `(time, cycle)` prefix.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// When it happened, in nanoseconds since the Unix epoch.
    pub time: u64,
    /// The cycle it belongs to (for lifecycle events: the latest cycle begun).
    pub cycle: u64,
    /// What happened.
    pub event: Event,
}

impl Record {
    /// Returns a record stamped with the current time.
    pub fn now(cycle: u64, event: Event) -> Record {
        let time = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
        Record { time, cycle, event }
    }

    /// Encodes the record for disk: the format version, then postcard.
    ///
    /// # Errors
    /// Only if serialization itself fails (it does not for these types).
    pub fn encode(&self) -> Result<Vec<u8>, postcard::Error> {
        let mut bytes = vec![FORMAT_VERSION];
        bytes.extend(postcard::to_stdvec(self)?);
        Ok(bytes)
    }

    /// Decodes a record; the error says what is wrong.
    ///
    /// # Errors
    /// [`DecodeError`] for an empty value, an unknown version or undecodable content.
    pub fn decode(bytes: &[u8]) -> Result<Record, DecodeError> {
        match bytes.split_first() {
            None => Err(DecodeError::Empty),
            Some((&FORMAT_VERSION, rest)) => {
                postcard::from_bytes(rest).map_err(|e| DecodeError::Content(e.to_string()))
            }
            Some((&version, rest)) if (OLDEST_FORMAT..FORMAT_VERSION).contains(&version) => {
                mutagen_session::encoding::read_format(version, || postcard::from_bytes(rest))
                    .map_err(|e| DecodeError::Content(e.to_string()))
            }
            Some((&version, _)) => Err(DecodeError::Version(version)),
        }
    }

    /// Decodes only the time and cycle.
    ///
    /// # Errors
    /// As [`Record::decode`].
    pub fn decode_stamp(bytes: &[u8]) -> Result<(u64, u64), DecodeError> {
        match bytes.split_first() {
            None => Err(DecodeError::Empty),
            Some((&version, rest)) if (OLDEST_FORMAT..=FORMAT_VERSION).contains(&version) => {
                postcard::take_from_bytes::<(u64, u64)>(rest)
                    .map(|(stamp, _)| stamp)
                    .map_err(|e| DecodeError::Content(e.to_string()))
            }
            Some((&version, _)) => Err(DecodeError::Version(version)),
        }
    }
}

/// Why a stored record does not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The value is empty.
    #[error("empty record")]
    Empty,
    /// The format version is unknown.
    #[error("unknown record format {0} (this version reads formats 1 to {FORMAT_VERSION})")]
    Version(u8),
    /// The content does not decode.
    #[error("undecodable record: {0}")]
    Content(String),
}

/// Something that happened to a session.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Event {
    /// The session was created with this frozen configuration.
    Created {
        /// The session identifier.
        identifier: String,
        /// The version of the program that created it.
        version: String,
        /// URLs, name, labels and configuration.
        spec: Box<SessionSpec>,
    },
    /// Synchronization was paused.
    Paused,
    /// Synchronization was resumed (this also clears a halt).
    Resumed,
    /// A flush was requested.
    FlushRequested,
    /// One side's scan finished.
    ScanCompleted {
        /// The side.
        side: Side,
        /// Directories found.
        directories: u64,
        /// Files found.
        files: u64,
        /// Symbolic links found.
        symbolic_links: u64,
        /// Bytes in files.
        total_file_size: u64,
        /// How long it took, in microseconds.
        duration_us: u64,
        /// Problematic entries.
        problems: Vec<Problem>,
    },
    /// Files were transferred to one side.
    Staged {
        /// The receiving side.
        side: Side,
        /// Files transferred.
        files: u64,
        /// Bytes transferred.
        bytes: u64,
    },
    /// Changes were applied to one side.
    TransitionApplied {
        /// The side.
        side: Side,
        /// The changes attempted.
        changes: Vec<Change>,
        /// Per-path trouble.
        problems: Vec<Problem>,
        /// Whether some staged file was missing.
        missing_files: bool,
    },
    /// The set of conflicts changed.
    ConflictsRecorded {
        /// The current conflicts.
        conflicts: Vec<Conflict>,
    },
    /// A cycle completed; its changes to the ancestor, in order.
    AncestorUpdated {
        /// The ancestor delta.
        changes: Vec<Change>,
    },
    /// The complete state, so that replay can start here.
    Checkpoint(Box<SessionState>),
    /// The session halted to protect data.
    Halted {
        /// Why.
        reason: HaltReason,
    },
    /// A cycle or connection failed.
    Error {
        /// The error chain, rendered.
        message: String,
    },
    /// The ancestor was forgotten: the next cycle behaves like a new session's first.
    Reset,
    /// The session was terminated.
    Terminated,
    /// A remote endpoint connected (its agent greeted and accepted the root).
    Connected {
        /// The side.
        side: Side,
        /// The endpoint's URL.
        url: String,
        /// The agent's program version.
        agent_version: String,
        /// The root as the agent resolved it.
        root: String,
        /// How long connecting took (ssh, agent start or install, initialization), in ms.
        duration_ms: u64,
        /// One request's round trip to the agent, in microseconds.
        round_trip_us: u64,
    },
    /// A remote endpoint's connection ended (after an error, or lost).
    Disconnected {
        /// The side.
        side: Side,
        /// Why, rendered.
        reason: String,
    },
    /// The session learned which endpoint one side is (a container's identifier), the first
    /// time it connected.
    Identified {
        /// The side.
        side: Side,
        /// The endpoint's identity.
        identity: String,
    },
    /// One side turned out to be another endpoint than before (a container recreated under
    /// the same name): the session halts, since the new file system's missing files are not
    /// deletions.
    EndpointReplaced {
        /// The side.
        side: Side,
        /// The identity synchronized so far.
        previous: String,
        /// The identity found now.
        current: String,
    },
    /// A forward session was created with this frozen specification (its later records are
    /// `Paused`, `Resumed`, `Error` and `Terminated`).
    ForwardCreated {
        /// The session identifier.
        identifier: String,
        /// The version of the program that created it.
        version: String,
        /// Endpoints, name, labels and socket settings.
        spec: mutagen_session::forward::ForwardSpec,
    },
    /// Conflicts were resolved by hand: `winner`'s version is to propagate. `changes` are
    /// the ancestor's changes (one per conflict root: the loser's version as recorded, with
    /// its digests), applied at once; the next cycle propagates the winner.
    ConflictResolved {
        /// The side whose version wins.
        winner: Side,
        /// The ancestor's changes, one per resolved conflict's root.
        changes: Vec<Change>,
    },
    /// A cycle passed a safety halt the session allows (a root emptied or deleted) and
    /// propagated it.
    HaltAllowed {
        /// The halt it would have been.
        reason: HaltReason,
    },
}

impl Event {
    /// Returns the event's kind as shown in the history.
    pub fn kind(&self) -> &'static str {
        match self {
            Event::Created { .. } => "created",
            Event::Paused => "paused",
            Event::Resumed => "resumed",
            Event::FlushRequested => "flush-requested",
            Event::ScanCompleted { .. } => "scan-completed",
            Event::Staged { .. } => "staged",
            Event::TransitionApplied { .. } => "transition-applied",
            Event::ConflictsRecorded { .. } => "conflicts-recorded",
            Event::AncestorUpdated { .. } => "ancestor-updated",
            Event::Checkpoint(_) => "checkpoint",
            Event::Halted { .. } => "halted",
            Event::Error { .. } => "error",
            Event::Reset => "reset",
            Event::Terminated => "terminated",
            Event::Connected { .. } => "connected",
            Event::Disconnected { .. } => "disconnected",
            Event::Identified { .. } => "identified",
            Event::EndpointReplaced { .. } => "endpoint-replaced",
            Event::ForwardCreated { .. } => "created",
            Event::HaltAllowed { .. } => "halt-allowed",
            Event::ConflictResolved { .. } => "conflict-resolved",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_behind_a_version_byte() {
        let record = Record::now(7, Event::Error { message: "boom".into() });
        let bytes = record.encode().expect("encode");
        assert_eq!(bytes[0], FORMAT_VERSION);
        assert_eq!(Record::decode(&bytes), Ok(record.clone()));
        assert_eq!(Record::decode_stamp(&bytes), Ok((record.time, 7)));
    }

    #[test]
    fn unknown_versions_and_garbage_are_refused() {
        let mut bytes = Record::now(1, Event::Paused).encode().expect("encode");
        bytes[0] = FORMAT_VERSION + 1;
        assert_eq!(Record::decode(&bytes), Err(DecodeError::Version(FORMAT_VERSION + 1)));
        assert_eq!(Record::decode(&[]), Err(DecodeError::Empty));
        let garbage = [FORMAT_VERSION, 0xff, 0xff, 0xff];
        assert!(matches!(Record::decode(&garbage), Err(DecodeError::Content(_))));
    }
}

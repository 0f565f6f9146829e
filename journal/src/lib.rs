//! The session journal: every step of a session as an immutable, versioned event in sled, and
//! the session's state as a fold over those events.
//!
//! # Layout
//! - [`event`]: [`Record`] (time, cycle, [`Event`]) and its on-disk encoding: one format
//!   version byte, then postcard. The disk format is independent of the daemon's wire format.
//! - [`state`]: [`SessionState`] and the fold ([`SessionState::step`]).
//! - [`store`]: [`Journal`] (one sled database) and [`SessionLog`] (one session's tree), with
//!   each session's records in a hash chain.
//! - [`blob`]: records of a whole tree (checkpoints, an initial cycle), kept in files beside
//!   sled, which would hold them in memory for as long as the daemon runs.
//! - [`head`]: the head file beside sled: what was acknowledged, so that damage sled repairs
//!   by cutting its log is told apart from a shorter history.
//!
//! # Invariants
//! - Records are only appended; a session's records are numbered in append order and the
//!   state is exactly the fold of its records from its latest checkpoint on.
//! - A checkpoint holds the complete state, so everything before it may be pruned
//!   ([`SessionLog::compact`]) without changing the current state.
//! - Nothing undecodable is skipped: a record that does not decode stops the load with
//!   [`JournalError::Corrupt`] naming the session, the directory and the record.
//! - Nothing acknowledged is silently lost: a journal that lacks an acknowledged session or
//!   record, or holds one changed, is refused whole ([`JournalError::Damaged`]) and left as it
//!   was; [`Journal::examine`] reports on it and [`Journal::recover`] keeps what is intact.

pub mod blob;
pub mod event;
pub mod forward;
#[doc(hidden)]
pub mod fuzzing;
pub mod head;
pub mod state;
pub mod store;

pub use event::{Event, FORMAT_VERSION, Record};
pub use forward::ForwardState;
pub use state::{FoldError, SessionState, SideState};
pub use store::{
    Finding, Journal, JournalError, Recovered, Recovery, Report, SessionLog, SessionReport,
};

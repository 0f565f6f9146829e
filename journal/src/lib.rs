//! The session journal: every step of a session as an immutable, versioned event in sled, and
//! the session's state as a fold over those events.
//!
//! # Layout
//! - [`event`]: [`Record`] (time, cycle, [`Event`]) and its on-disk encoding: one format
//!   version byte, then postcard. The disk format is independent of the daemon's wire format.
//! - [`state`]: [`SessionState`] and the fold ([`SessionState::step`]).
//! - [`store`]: [`Journal`] (one sled database) and [`SessionLog`] (one session's tree).
//!
//! # Invariants
//! - Records are only appended; a session's records are numbered in append order and the
//!   state is exactly the fold of its records from its latest checkpoint on.
//! - A checkpoint holds the complete state, so everything before it may be pruned
//!   ([`SessionLog::compact`]) without changing the current state.
//! - Nothing undecodable is skipped: a record that does not decode stops the load with
//!   [`JournalError::Corrupt`] naming the session, the directory and the record.

pub mod event;
pub mod state;
pub mod store;

pub use event::{Event, FORMAT_VERSION, Record};
pub use state::{FoldError, SessionState, SideState};
pub use store::{Journal, JournalError, SessionLog};

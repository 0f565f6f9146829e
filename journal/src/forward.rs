//! The state of a forward session, replayed from its records.
//!
//! A forward session's log holds `ForwardCreated` first, then only lifecycle records:
//! `Paused`, `Resumed`, `Error` (a failed connection or dial, journaled when the message
//! changes) and `Terminated`. Anything else is not a forward session's and fails the replay.

use mutagen_session::forward::ForwardSpec;

use crate::event::{Event, Record};
use crate::state::FoldError;

/// What replay knows about a forward session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ForwardState {
    /// The identifier (`fwrd_…`).
    pub identifier: String,
    /// When it was created, in nanoseconds since the Unix epoch.
    pub creation_time: u64,
    /// The version that created it.
    pub creating_version: String,
    /// The frozen specification.
    pub spec: ForwardSpec,
    /// Whether it is paused.
    pub paused: bool,
    /// Whether it was terminated.
    pub terminated: bool,
    /// The last error journaled, until a resume.
    pub last_error: Option<String>,
    /// How many errors were journaled.
    pub errors: u64,
}

impl ForwardState {
    /// Applies one record to an optional state (`None` before creation).
    ///
    /// # Errors
    /// [`FoldError`] when the record cannot follow the state.
    pub fn step(state: &mut Option<ForwardState>, record: &Record) -> Result<(), FoldError> {
        match (&record.event, state.as_mut()) {
            (Event::ForwardCreated { identifier, version, spec }, None) => {
                *state = Some(ForwardState {
                    identifier: identifier.clone(),
                    creation_time: record.time,
                    creating_version: version.clone(),
                    paused: spec.paused,
                    spec: spec.clone(),
                    terminated: false,
                    last_error: None,
                    errors: 0,
                });
                Ok(())
            }
            (Event::ForwardCreated { .. }, Some(_)) => Err(FoldError::CreatedTwice),
            (event, None) => Err(FoldError::MissingCreation(event.kind())),
            (Event::Paused, Some(state)) => {
                state.paused = true;
                Ok(())
            }
            (Event::Resumed, Some(state)) => {
                state.paused = false;
                state.last_error = None;
                Ok(())
            }
            (Event::Error { message }, Some(state)) => {
                state.last_error = Some(message.clone());
                state.errors += 1;
                Ok(())
            }
            (Event::Terminated, Some(state)) => {
                state.terminated = true;
                Ok(())
            }
            (event, Some(_)) => Err(FoldError::Foreign(event.kind())),
        }
    }
}

#[cfg(test)]
mod tests {
    use mutagen_session::forward::SocketOptions;

    use super::*;

    fn created() -> Record {
        let spec = ForwardSpec {
            source: "tcp:127.0.0.1:8080".into(),
            destination: "tcp:127.0.0.1:80".into(),
            name: "web".into(),
            labels: Default::default(),
            paused: false,
            socket: SocketOptions::default(),
            source_environment: Default::default(),
            destination_environment: Default::default(),
        };
        Record::now(
            0,
            Event::ForwardCreated { identifier: "fwrd_x".into(), version: "0".into(), spec },
        )
    }

    #[test]
    fn lifecycle_records_replay_and_others_are_refused() {
        let mut state = None;
        assert_eq!(
            ForwardState::step(&mut state, &Record::now(0, Event::Paused)),
            Err(FoldError::MissingCreation("paused"))
        );
        ForwardState::step(&mut state, &created()).expect("created");
        for event in [Event::Paused, Event::Error { message: "refused".into() }] {
            ForwardState::step(&mut state, &Record::now(0, event)).expect("lifecycle");
        }
        let replayed = state.clone().expect("state");
        assert!(replayed.paused);
        assert_eq!(replayed.last_error.as_deref(), Some("refused"));
        ForwardState::step(&mut state, &Record::now(0, Event::Resumed)).expect("resumed");
        assert!(!state.as_ref().expect("state").paused);
        assert_eq!(state.as_ref().expect("state").last_error, None);
        assert_eq!(ForwardState::step(&mut state, &created()), Err(FoldError::CreatedTwice));
        assert_eq!(
            ForwardState::step(&mut state, &Record::now(0, Event::Reset)),
            Err(FoldError::Foreign("reset"))
        );
        ForwardState::step(&mut state, &Record::now(0, Event::Terminated)).expect("terminated");
        assert!(state.expect("state").terminated);
    }
}

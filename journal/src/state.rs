//! A session's state as a fold over its events.

use mutagen_core::{HaltReason, Side};
use mutagen_reconcile::{ApplyError, Conflict, Entry, Problem, apply_change};
use mutagen_session::SessionSpec;
use serde::{Deserialize, Serialize};

use crate::event::{Event, Record};

/// What is known about one side.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SideState {
    /// Whether a scan has completed since the session (re)started counting.
    pub scanned: bool,
    /// Directories in the latest scan.
    pub directories: u64,
    /// Files in the latest scan.
    pub files: u64,
    /// Symbolic links in the latest scan.
    pub symbolic_links: u64,
    /// Bytes in files in the latest scan.
    pub total_file_size: u64,
    /// Problems of the latest scan.
    pub scan_problems: Vec<Problem>,
    /// Problems of the latest transition on this side.
    pub transition_problems: Vec<Problem>,
}

/// Everything the journal knows about a session.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionState {
    /// The identifier.
    pub identifier: String,
    /// Creation time, in nanoseconds since the Unix epoch.
    pub creation_time: u64,
    /// The version that created the session.
    pub creating_version: String,
    /// URLs, name, labels and the frozen configuration (`spec.paused` is the creation flag).
    pub spec: SessionSpec,
    /// Whether the session is paused now.
    pub paused: bool,
    /// The last synchronized state of both sides.
    pub ancestor: Option<Entry>,
    /// The latest cycle begun.
    pub cycle: u64,
    /// Cycles committed since creation.
    pub successful_cycles: u64,
    /// Set while halted.
    pub halted: Option<HaltReason>,
    /// The latest error, cleared by a committed cycle.
    pub last_error: Option<String>,
    /// The current conflicts.
    pub conflicts: Vec<Conflict>,
    /// Alpha's side.
    pub alpha: SideState,
    /// Beta's side.
    pub beta: SideState,
    /// Whether the session was terminated.
    pub terminated: bool,
}

/// Events that cannot be folded: the journal does not describe a possible history.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FoldError {
    /// The first event is not `Created` or a checkpoint.
    #[error("the first event is {0}, not created or checkpoint")]
    MissingCreation(&'static str),
    /// A second `Created`.
    #[error("the session is created twice")]
    CreatedTwice,
    /// An ancestor delta does not apply.
    #[error("the ancestor delta does not apply")]
    Ancestor(#[source] ApplyError),
}

impl SessionState {
    /// Returns the side's state.
    pub fn side_mut(&mut self, side: Side) -> &mut SideState {
        match side {
            Side::Alpha => &mut self.alpha,
            Side::Beta => &mut self.beta,
        }
    }

    /// Folds records from the beginning (or from a checkpoint).
    ///
    /// # Errors
    /// [`FoldError`] with the index of the offending record.
    pub fn fold<'a>(
        records: impl IntoIterator<Item = &'a Record>,
    ) -> Result<Option<SessionState>, (usize, FoldError)> {
        let mut state: Option<SessionState> = None;
        for (index, record) in records.into_iter().enumerate() {
            SessionState::step(&mut state, record).map_err(|e| (index, e))?;
        }
        Ok(state)
    }

    /// Applies one record to an optional state (`None` before creation).
    ///
    /// # Errors
    /// [`FoldError`] when the record cannot follow the state.
    pub fn step(state: &mut Option<SessionState>, record: &Record) -> Result<(), FoldError> {
        match (&record.event, state.as_mut()) {
            (Event::Created { identifier, version, spec }, None) => {
                *state = Some(SessionState {
                    identifier: identifier.clone(),
                    creation_time: record.time,
                    creating_version: version.clone(),
                    paused: spec.paused,
                    spec: spec.clone(),
                    ancestor: None,
                    cycle: record.cycle,
                    successful_cycles: 0,
                    halted: None,
                    last_error: None,
                    conflicts: Vec::new(),
                    alpha: SideState::default(),
                    beta: SideState::default(),
                    terminated: false,
                });
                Ok(())
            }
            (Event::Created { .. }, Some(_)) => Err(FoldError::CreatedTwice),
            (Event::Checkpoint(checkpoint), _) => {
                *state = Some((**checkpoint).clone());
                Ok(())
            }
            (event, None) => Err(FoldError::MissingCreation(event.kind())),
            (event, Some(state)) => {
                state.cycle = state.cycle.max(record.cycle);
                state.apply(event, true)
            }
        }
    }

    /// Like [`SessionState::step`], except that an `AncestorUpdated` record only counts the
    /// cycle: for a caller whose `ancestor` already holds the result (the synchronizer applied
    /// and validated the delta), so that it is not applied twice.
    ///
    /// # Errors
    /// [`FoldError`] when the record cannot follow the state.
    pub fn step_applied(state: &mut SessionState, record: &Record) -> Result<(), FoldError> {
        match &record.event {
            Event::Created { .. } => Err(FoldError::CreatedTwice),
            Event::Checkpoint(checkpoint) => {
                *state = (**checkpoint).clone();
                Ok(())
            }
            event => {
                state.cycle = state.cycle.max(record.cycle);
                state.apply(event, false)
            }
        }
    }

    /// Applies an event other than `Created` and `Checkpoint`.
    fn apply(&mut self, event: &Event, apply_ancestor: bool) -> Result<(), FoldError> {
        match event {
            Event::Created { .. } | Event::Checkpoint(_) => {}
            Event::Paused => self.paused = true,
            Event::Resumed => {
                self.paused = false;
                self.halted = None;
            }
            Event::FlushRequested
            | Event::Staged { .. }
            | Event::Connected { .. }
            | Event::Disconnected { .. } => {}
            Event::ScanCompleted {
                side,
                directories,
                files,
                symbolic_links,
                total_file_size,
                problems,
                ..
            } => {
                *self.side_mut(*side) = SideState {
                    scanned: true,
                    directories: *directories,
                    files: *files,
                    symbolic_links: *symbolic_links,
                    total_file_size: *total_file_size,
                    scan_problems: problems.clone(),
                    transition_problems: Vec::new(),
                };
            }
            Event::TransitionApplied { side, problems, .. } => {
                self.side_mut(*side).transition_problems.clone_from(problems);
            }
            Event::ConflictsRecorded { conflicts } => self.conflicts.clone_from(conflicts),
            Event::AncestorUpdated { changes } => {
                for change in changes.iter().filter(|_| apply_ancestor) {
                    apply_change(&mut self.ancestor, &change.path, change.new.clone())
                        .map_err(FoldError::Ancestor)?;
                }
                self.successful_cycles += 1;
                self.last_error = None;
            }
            Event::Halted { reason } => self.halted = Some(*reason),
            Event::Error { message } => self.last_error = Some(message.clone()),
            Event::Reset => {
                self.ancestor = None;
                self.halted = None;
                self.conflicts.clear();
            }
            Event::Terminated => self.terminated = true,
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mutagen_reconcile::{Change, Digest};

    fn spec() -> SessionSpec {
        SessionSpec {
            alpha: "/a".into(),
            beta: "/b".into(),
            name: "web".into(),
            labels: Default::default(),
            paused: false,
            configuration: Default::default(),
            alpha_environment: Default::default(),
            beta_environment: Default::default(),
        }
    }

    fn created() -> Record {
        let event =
            Event::Created { identifier: "sync_x".into(), version: "0".into(), spec: spec() };
        Record { time: 5, cycle: 0, event }
    }

    fn file(byte: u8) -> Option<Entry> {
        Some(Entry::File { digest: Digest([byte; 32]), executable: false })
    }

    fn update(cycle: u64, path: &str, new: Option<Entry>) -> Record {
        let changes = vec![Change::new(path, None, new)];
        Record { time: 10 + cycle, cycle, event: Event::AncestorUpdated { changes } }
    }

    #[test]
    fn the_fold_follows_lifecycle_and_cycles() {
        let root = Some(Entry::Directory(Default::default()));
        let records = vec![
            created(),
            update(1, "", root),
            update(2, "f", file(1)),
            Record { time: 20, cycle: 2, event: Event::Paused },
            Record { time: 21, cycle: 3, event: Event::Error { message: "gone".into() } },
            Record {
                time: 22,
                cycle: 3,
                event: Event::Halted { reason: HaltReason::RootDeletion },
            },
        ];
        let state = SessionState::fold(&records).expect("fold").expect("created");
        assert_eq!((state.creation_time, state.cycle, state.successful_cycles), (5, 3, 2));
        assert!(state.paused);
        assert_eq!(state.halted, Some(HaltReason::RootDeletion));
        assert_eq!(state.last_error.as_deref(), Some("gone"));
        assert_eq!(state.ancestor.as_ref().and_then(|a| a.get("f")), file(1).as_ref());

        let mut more = records;
        more.push(Record { time: 30, cycle: 3, event: Event::Resumed });
        more.push(Record { time: 31, cycle: 3, event: Event::Reset });
        let state = SessionState::fold(&more).expect("fold").expect("created");
        assert!(!state.paused && state.halted.is_none() && state.ancestor.is_none());
    }

    #[test]
    fn a_checkpoint_replaces_everything_before_it() {
        let records = vec![created(), update(1, "", file(1))];
        let state = SessionState::fold(&records).expect("fold").expect("created");
        let checkpoint = Record { time: 40, cycle: 1, event: Event::Checkpoint(Box::new(state)) };
        let after = vec![checkpoint, update(2, "", file(2))];
        let full: Vec<Record> = records.iter().chain(&after).cloned().collect();
        assert_eq!(SessionState::fold(&after), SessionState::fold(&full));
    }

    #[test]
    fn impossible_histories_are_errors() {
        let paused = Record { time: 1, cycle: 0, event: Event::Paused };
        assert_eq!(SessionState::fold(&[paused]), Err((0, FoldError::MissingCreation("paused"))));
        assert_eq!(SessionState::fold(&[created(), created()]), Err((1, FoldError::CreatedTwice)));
        let bad = update(1, "missing/parent", file(1));
        assert!(matches!(SessionState::fold(&[created(), bad]), Err((1, FoldError::Ancestor(_)))));
    }
}

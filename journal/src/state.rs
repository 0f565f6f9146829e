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
///
/// In a checkpoint it is encoded as a list of tagged fields (`StateField`), so that a
/// later version adds a field without a new journal format.
#[derive(Clone, Debug, PartialEq, Eq)]
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
    /// The endpoint alpha was synchronized with (a container's identifier), once known.
    pub alpha_identity: Option<String>,
    /// The same for beta.
    pub beta_identity: Option<String>,
}

/// One field of a checkpointed [`SessionState`]; the variant index is the tag on disk, so
/// variants are only ever appended. [`StateFieldRef`] must list the same variants in the same
/// order (the round-trip test fails otherwise).
#[derive(Deserialize)]
enum StateField {
    Identifier(String),
    CreationTime(u64),
    CreatingVersion(String),
    Spec(Box<SessionSpec>),
    Paused(bool),
    Ancestor(Option<Entry>),
    Cycle(u64),
    SuccessfulCycles(u64),
    Halted(Option<HaltReason>),
    LastError(Option<String>),
    Conflicts(Vec<Conflict>),
    Alpha(SideState),
    Beta(SideState),
    Terminated(bool),
    AlphaIdentity(Option<String>),
    BetaIdentity(Option<String>),
}

/// [`StateField`] by reference, for writing without copying the ancestor.
#[derive(Serialize)]
enum StateFieldRef<'a> {
    Identifier(&'a String),
    CreationTime(u64),
    CreatingVersion(&'a String),
    Spec(&'a SessionSpec),
    Paused(bool),
    Ancestor(&'a Option<Entry>),
    Cycle(u64),
    SuccessfulCycles(u64),
    Halted(Option<HaltReason>),
    LastError(&'a Option<String>),
    Conflicts(&'a [Conflict]),
    Alpha(&'a SideState),
    Beta(&'a SideState),
    Terminated(bool),
    AlphaIdentity(&'a Option<String>),
    BetaIdentity(&'a Option<String>),
}

/// The session state of journal formats 1 and 2: a plain struct.
#[derive(Deserialize)]
struct SessionStateFormat2 {
    identifier: String,
    creation_time: u64,
    creating_version: String,
    spec: SessionSpec,
    paused: bool,
    ancestor: Option<Entry>,
    cycle: u64,
    successful_cycles: u64,
    halted: Option<HaltReason>,
    last_error: Option<String>,
    conflicts: Vec<Conflict>,
    alpha: SideState,
    beta: SideState,
    terminated: bool,
}

impl Serialize for SessionState {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        [
            StateFieldRef::Identifier(&self.identifier),
            StateFieldRef::CreationTime(self.creation_time),
            StateFieldRef::CreatingVersion(&self.creating_version),
            StateFieldRef::Spec(&self.spec),
            StateFieldRef::Paused(self.paused),
            StateFieldRef::Ancestor(&self.ancestor),
            StateFieldRef::Cycle(self.cycle),
            StateFieldRef::SuccessfulCycles(self.successful_cycles),
            StateFieldRef::Halted(self.halted),
            StateFieldRef::LastError(&self.last_error),
            StateFieldRef::Conflicts(&self.conflicts),
            StateFieldRef::Alpha(&self.alpha),
            StateFieldRef::Beta(&self.beta),
            StateFieldRef::Terminated(self.terminated),
            StateFieldRef::AlphaIdentity(&self.alpha_identity),
            StateFieldRef::BetaIdentity(&self.beta_identity),
        ]
        .as_slice()
        .serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for SessionState {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<SessionState, D::Error> {
        use serde::de::Error as _;
        if mutagen_session::encoding::reading_format().is_some_and(|format| format <= 2) {
            let old = SessionStateFormat2::deserialize(deserializer)?;
            return Ok(SessionState {
                identifier: old.identifier,
                creation_time: old.creation_time,
                creating_version: old.creating_version,
                spec: old.spec,
                paused: old.paused,
                ancestor: old.ancestor,
                cycle: old.cycle,
                successful_cycles: old.successful_cycles,
                halted: old.halted,
                last_error: old.last_error,
                conflicts: old.conflicts,
                alpha: old.alpha,
                beta: old.beta,
                terminated: old.terminated,
                alpha_identity: None,
                beta_identity: None,
            });
        }
        let (mut identifier, mut spec) = (None, None);
        let mut state = SessionState {
            identifier: String::new(),
            creation_time: 0,
            creating_version: String::new(),
            spec: SessionSpec {
                alpha: String::new(),
                beta: String::new(),
                name: String::new(),
                labels: Default::default(),
                paused: false,
                configuration: Box::new(mutagen_session::Configuration::predating()),
                alpha_environment: Default::default(),
                beta_environment: Default::default(),
            },
            paused: false,
            ancestor: None,
            cycle: 0,
            successful_cycles: 0,
            halted: None,
            last_error: None,
            conflicts: Vec::new(),
            alpha: SideState::default(),
            beta: SideState::default(),
            terminated: false,
            alpha_identity: None,
            beta_identity: None,
        };
        let mut seen = std::collections::HashSet::new();
        for field in Vec::<StateField>::deserialize(deserializer)? {
            if !seen.insert(std::mem::discriminant(&field)) {
                return Err(D::Error::custom("a field is given twice"));
            }
            match field {
                StateField::Identifier(value) => identifier = Some(value),
                StateField::CreationTime(value) => state.creation_time = value,
                StateField::CreatingVersion(value) => state.creating_version = value,
                StateField::Spec(value) => spec = Some(*value),
                StateField::Paused(value) => state.paused = value,
                StateField::Ancestor(value) => state.ancestor = value,
                StateField::Cycle(value) => state.cycle = value,
                StateField::SuccessfulCycles(value) => state.successful_cycles = value,
                StateField::Halted(value) => state.halted = value,
                StateField::LastError(value) => state.last_error = value,
                StateField::Conflicts(value) => state.conflicts = value,
                StateField::Alpha(value) => state.alpha = value,
                StateField::Beta(value) => state.beta = value,
                StateField::Terminated(value) => state.terminated = value,
                StateField::AlphaIdentity(value) => state.alpha_identity = value,
                StateField::BetaIdentity(value) => state.beta_identity = value,
            }
        }
        state.identifier =
            identifier.ok_or_else(|| D::Error::custom("a state without identifier"))?;
        state.spec = spec.ok_or_else(|| D::Error::custom("a state without a spec"))?;
        Ok(state)
    }
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
    /// A record of the other kind of session (a forward session's in a synchronization
    /// session's log, or the reverse).
    #[error("a {0} record does not belong to this kind of session")]
    Foreign(&'static str),
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

    /// Returns the side's endpoint identity.
    pub fn identity_mut(&mut self, side: Side) -> &mut Option<String> {
        match side {
            Side::Alpha => &mut self.alpha_identity,
            Side::Beta => &mut self.beta_identity,
        }
    }

    /// Returns the side's endpoint identity, once known.
    pub fn identity(&self, side: Side) -> Option<&str> {
        match side {
            Side::Alpha => self.alpha_identity.as_deref(),
            Side::Beta => self.beta_identity.as_deref(),
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
                    spec: (**spec).clone(),
                    ancestor: None,
                    cycle: record.cycle,
                    successful_cycles: 0,
                    halted: None,
                    last_error: None,
                    conflicts: Vec::new(),
                    alpha: SideState::default(),
                    beta: SideState::default(),
                    terminated: false,
                    alpha_identity: None,
                    beta_identity: None,
                });
                Ok(())
            }
            (Event::Created { .. }, Some(_)) => Err(FoldError::CreatedTwice),
            (Event::ForwardCreated { .. }, _) => Err(FoldError::Foreign("forward creation")),
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
            Event::ForwardCreated { .. } => return Err(FoldError::Foreign("forward creation")),
            Event::Paused => self.paused = true,
            Event::Resumed => {
                self.paused = false;
                self.halted = None;
            }
            Event::FlushRequested
            | Event::Staged { .. }
            | Event::Connected { .. }
            | Event::Disconnected { .. }
            | Event::HaltAllowed { .. } => {}
            Event::Identified { side, identity } => {
                *self.identity_mut(*side) = Some(identity.clone());
            }
            Event::EndpointReplaced { side, current, .. } => {
                *self.identity_mut(*side) = Some(current.clone());
                self.halted = Some(HaltReason::EndpointReplaced);
            }
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
                    apply_change(&mut self.ancestor, change).map_err(FoldError::Ancestor)?;
                }
                self.successful_cycles += 1;
                self.last_error = None;
            }
            Event::ConflictResolved { changes, .. } => {
                // Not a synchronizer's delta: the ancestor takes it whoever replays.
                for change in changes {
                    apply_change(&mut self.ancestor, change).map_err(FoldError::Ancestor)?;
                }
                self.conflicts.retain(|conflict| changes.iter().all(|c| c.path != conflict.root));
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
        let event = Event::Created {
            identifier: "sync_x".into(),
            version: "0".into(),
            spec: Box::new(spec()),
        };
        Record { time: 5, cycle: 0, event }
    }

    fn file(byte: u8) -> Option<Entry> {
        Some(Entry::file(Digest([byte; 32]), false))
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

//! [`Synchronizer`]: one synchronization cycle between two endpoints.
//!
//! A cycle scans both endpoints (in parallel), checks the safety halts, reconciles, stages the
//! files each side needs from the other, applies both sides' transitions (in parallel) and
//! updates the ancestor from what the transitions report is now on disk.
//!
//! # Safety halts
//! Checked every cycle; a halted synchronizer changes nothing until [`Synchronizer::resume`]
//! (which re-checks on the next cycle) or [`Synchronizer::reset`]:
//! - root emptied: the ancestor's root directory had at least two entries, both roots are still
//!   directories, and exactly one of them is now empty (checked before reconciling);
//! - root deletion: a transition would delete a root;
//! - root type change: a transition would replace a root with another kind of entry.
//!
//! A session may allow the first two ([`Allowances`], for build-output directories that
//! tools wipe): the cycle then goes on, and its report says which halt it passed
//! ([`CycleReport::allowed`]) so that the daemon journals it.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mutagen_reconcile::{
    ApplyError, Change, Conflict, Digest, Entry, EntryError, Mode, Problem, Undo, apply_change,
    reconcile,
};
use serde::{Deserialize, Serialize};

use crate::endpoint::{
    Endpoint, EndpointError, EndpointResult, Snapshot, StageRequest, TransitionResult, Transmission,
};
use crate::transition::staged_files;

pub use mutagen_core::{HaltReason, Side};

/// A failure that ends a cycle early; the ancestor is unchanged unless noted.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CycleError {
    /// The synchronizer is halted; resume or reset it first.
    #[error("session is {}; resume or reset it", .0.description())]
    Halted(HaltReason),
    /// An endpoint operation failed as a whole.
    #[error("unable to {operation} on {side}")]
    Endpoint {
        /// The endpoint.
        side: Side,
        /// The operation (scan, stage, supply, transition).
        operation: &'static str,
        /// The error.
        #[source]
        source: EndpointError,
    },
    /// A transition result could not be recorded in the ancestor (an internal inconsistency;
    /// the ancestor keeps its previous value).
    #[error("unable to update the ancestor")]
    Ancestor(#[source] ApplyError),
    /// An endpoint returned a snapshot that breaks the entry invariants (a name such as `..` or
    /// `a/b`, an empty link target): a remote endpoint is untrusted input, so nothing is done.
    #[error("{side} returned an invalid snapshot")]
    InvalidSnapshot {
        /// The endpoint.
        side: Side,
        /// What is wrong.
        #[source]
        source: EntryError,
    },
    /// The updated ancestor would hold invalid or unsynchronizable content (only an endpoint
    /// that reports impossible transition results can cause this); it was not saved.
    #[error("refusing an invalid ancestor")]
    InvalidAncestor(#[source] EntryError),
}

/// What one side went through in a cycle.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SideReport {
    /// Counts from the scan (the content itself is left out).
    pub directories: u64,
    /// Files scanned.
    pub files: u64,
    /// Symbolic links scanned.
    pub symbolic_links: u64,
    /// Bytes in scanned files.
    pub total_file_size: u64,
    /// Problematic entries found by the scan.
    pub scan_problems: Vec<Problem>,
    /// How long the scan took.
    pub scan_duration: Duration,
    /// Files that had to be transferred to this side (after local reuse).
    pub staged_files: u64,
    /// Bytes transferred to this side.
    pub staged_bytes: u64,
    /// The changes applied to this side.
    pub transitions: Vec<Change>,
    /// Trouble while applying them.
    pub transition_problems: Vec<Problem>,
    /// Whether some staged file was missing.
    pub missing_files: bool,
}

impl SideReport {
    fn from_scan(snapshot: &Snapshot, scan_duration: Duration, trusted: bool) -> SideReport {
        SideReport {
            directories: snapshot.directories,
            files: snapshot.files,
            symbolic_links: snapshot.symbolic_links,
            total_file_size: snapshot.total_file_size,
            scan_problems: if trusted { snapshot.problems.clone() } else { snapshot.problems() },
            scan_duration,
            ..SideReport::default()
        }
    }
}

/// What a cycle did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CycleReport {
    /// Alpha's side.
    pub alpha: SideReport,
    /// Beta's side.
    pub beta: SideReport,
    /// Conflicts found (they persist until the content changes).
    pub conflicts: Vec<Conflict>,
    /// Every change applied to the ancestor, in order (the ancestor delta).
    pub ancestor_changes: Vec<Change>,
    /// Set when the cycle halted instead of changing anything.
    pub halted: Option<HaltReason>,
    /// Safety halts the session allows that this cycle passed (it went on).
    pub allowed: Vec<HaltReason>,
}

impl CycleReport {
    /// Returns whether another cycle may change something: transitions happened (whose
    /// results the next scan confirms) or staged files were missing.
    pub fn needs_another_cycle(&self) -> bool {
        self.halted.is_none()
            && (!self.alpha.transitions.is_empty()
                || !self.beta.transitions.is_empty()
                || self.alpha.missing_files
                || self.beta.missing_files)
    }

    /// Returns every scan and transition problem with the side it happened on.
    pub fn problems(&self) -> impl Iterator<Item = (Side, &Problem)> {
        fn of(side: Side, report: &SideReport) -> impl Iterator<Item = (Side, &Problem)> {
            report.scan_problems.iter().chain(&report.transition_problems).map(move |p| (side, p))
        }
        of(Side::Alpha, &self.alpha).chain(of(Side::Beta, &self.beta))
    }
}

/// A stage of a cycle, as reported to an observer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Phase {
    /// Scanning both endpoints.
    Scanning,
    /// Comparing the scans with the ancestor.
    Reconciling,
    /// Transferring files to one side.
    Staging(Side),
    /// Applying changes to both sides.
    Transitioning,
}

/// How far staging on one side has got.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StagingProgress {
    /// The file being received (root-relative).
    pub path: String,
    /// Files completely received so far.
    pub received_files: u64,
    /// Files to receive in all.
    pub expected_files: u64,
    /// Bytes received so far (all files).
    pub received_bytes: u64,
    /// Size of the file being received.
    pub current_size: u64,
}

/// What a cycle reports while it runs (see [`Synchronizer::cycle_observed`]).
#[derive(Debug)]
pub enum Progress<'a> {
    /// A new phase began.
    Phase(Phase),
    /// Both scans finished; the report holds their counts and problems.
    Scanned(&'a CycleReport),
    /// A file began or ended on the receiving side.
    Staging(Side, &'a StagingProgress),
    /// Staging on a side finished.
    Staged {
        /// The receiving side.
        side: Side,
        /// Files transferred.
        files: u64,
        /// Bytes transferred.
        bytes: u64,
    },
}

/// Safety halts a session opted out of (all off by default).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Allowances {
    /// One root emptied while the other is not: propagate the emptying.
    pub root_emptying: bool,
    /// A root deleted: delete the other.
    pub root_deletion: bool,
}

impl Allowances {
    fn allows(self, reason: HaltReason) -> bool {
        match reason {
            HaltReason::RootEmptied => self.root_emptying,
            HaltReason::RootDeletion => self.root_deletion,
            _ => false,
        }
    }
}

/// Limits a session sets (0: none).
///
/// # Invariants
/// - A root holding more synchronizable entries (the root, directories, files, symbolic
///   links) than `entries` is scanned and reconciled (its conflicts are still reported), but
///   neither side changes; its side reports why, at the root.
/// - A side whose transitions would bring it above `entries` is not changed at all; it
///   reports why, at the root.
/// - A file larger than `staging_file_size` is not staged; the transition reports it at its
///   path, and the rest of the cycle goes on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Limits {
    /// The most synchronizable entries a root may hold.
    pub entries: u64,
    /// The largest file staged, in bytes.
    pub staging_file_size: u64,
}

/// Synchronizable entries (directories, files, symbolic links) in a subtree.
fn entry_count(entry: Option<&Entry>) -> u64 {
    let mut count = 0;
    if let Some(entry) = entry {
        entry.walk("", &mut |_, entry| {
            count += u64::from(matches!(
                entry,
                Entry::Directory(_) | Entry::File { .. } | Entry::SymbolicLink { .. }
            ));
        });
    }
    count
}

/// Refuses transitions the entry limit forbids (see [`Limits`]); returns each side's
/// problems.
fn limit_entries(max: u64, counts: [u64; 2], changes: [&mut Vec<Change>; 2]) -> [Vec<Problem>; 2] {
    let mut problems = [Vec::new(), Vec::new()];
    if max == 0 {
        return problems;
    }
    let over: Vec<usize> = (0..2).filter(|&index| counts[index] > max).collect();
    let [alpha, beta] = changes;
    if !over.is_empty() {
        alpha.clear();
        beta.clear();
        for index in over {
            problems[index].push(Problem::new(
                "",
                format!(
                    "the root holds {} synchronizable entries, more than the allowed {max} \
                     (max entry count): nothing is synchronized until it holds fewer",
                    counts[index]
                ),
            ));
        }
        return problems;
    }
    for (index, changes) in [alpha, beta].into_iter().enumerate() {
        let added: u64 = changes.iter().map(|c| entry_count(c.new.as_ref())).sum();
        let removed: u64 = changes.iter().map(|c| entry_count(c.old.as_ref())).sum();
        let predicted = (counts[index] + added).saturating_sub(removed);
        if predicted > max {
            changes.clear();
            problems[index].push(Problem::new(
                "",
                format!(
                    "transitioning would exceed the allowed entry count ({predicted} > {max}): \
                     this side is left as it is"
                ),
            ));
        }
    }
    problems
}

/// The session state a cycle needs: the mode, the ancestor and the halt flag.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Synchronizer {
    mode: Mode,
    ancestor: Option<Entry>,
    halted: Option<HaltReason>,
    /// Configuration, not state: never saved.
    #[serde(skip)]
    allowances: Allowances,
    /// Configuration, not state: never saved.
    #[serde(skip)]
    limits: Limits,
    /// The last cycle, if it settled: what a cycle over the same content would find again.
    #[serde(skip)]
    memo: Option<Memo>,
}

/// What the next cycle may take from the last settled one.
///
/// A settled reconciliation (no ancestor change, no transition) over three trees `T0` found
/// `conflicts`. As long as the trees differ from `T0` only in known directories, a cycle
/// reconciles only the way to those ([`mutagen_reconcile::reconcile_dirty`]): the
/// directories the endpoints read again since their previous scan, and `carry`, what
/// differed already in the cycles since `T0` (what they found changed, the ancestor's
/// changes). When the last cycle settled (`carry` is then empty) and the endpoints'
/// [`Endpoint::version`]s are still `versions`, the trees are `T0`: the cycle finds the same
/// nothing to do and the same conflicts without walking them at all.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Memo {
    versions: [u64; 2],
    settled: bool,
    conflicts: Vec<Conflict>,
    carry: BTreeSet<String>,
}

impl Synchronizer {
    /// Returns a synchronizer with an empty ancestor (a new session).
    pub fn new(mode: Mode) -> Synchronizer {
        Synchronizer { mode, ancestor: None, ..Synchronizer::default() }
    }

    /// Returns a synchronizer that continues from a saved ancestor.
    pub fn with_ancestor(mode: Mode, ancestor: Option<Entry>) -> Synchronizer {
        Synchronizer { mode, ancestor, ..Synchronizer::default() }
    }

    /// Returns a synchronizer restored from saved state (a halt included).
    pub fn restore(
        mode: Mode,
        ancestor: Option<Entry>,
        halted: Option<HaltReason>,
    ) -> Synchronizer {
        Synchronizer { mode, ancestor, halted, ..Synchronizer::default() }
    }

    /// Lets cycles pass the safety halts in `allowances`.
    #[must_use]
    pub fn allowing(mut self, allowances: Allowances) -> Synchronizer {
        self.allowances = allowances;
        self
    }

    /// Applies `limits` to cycles.
    #[must_use]
    pub fn limiting(mut self, limits: Limits) -> Synchronizer {
        self.limits = limits;
        self
    }

    /// Continues from the memo of the previous cycle (see [`Synchronizer::memo`]). A caller
    /// that rebuilds the synchronizer for every cycle passes it on, and drops it whenever it
    /// changes the ancestor itself (a resolution, a reset).
    #[must_use]
    pub fn remembering(mut self, memo: Option<Memo>) -> Synchronizer {
        self.memo = memo;
        self
    }

    /// Returns the memo of the last cycle, if it settled.
    pub fn memo(&self) -> Option<&Memo> {
        self.memo.as_ref()
    }

    /// Returns the mode.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Returns the ancestor.
    pub fn ancestor(&self) -> Option<&Entry> {
        self.ancestor.as_ref()
    }

    /// Returns the ancestor, consuming the synchronizer (a caller that keeps the ancestor
    /// between cycles avoids a copy).
    pub fn into_ancestor(self) -> Option<Entry> {
        self.ancestor
    }

    /// Returns why the synchronizer is halted, if it is.
    pub fn halted(&self) -> Option<HaltReason> {
        self.halted
    }

    /// Clears a halt; the next cycle checks again.
    pub fn resume(&mut self) {
        self.halted = None;
    }

    /// Forgets the ancestor and any halt: the next cycle behaves like a new session's first.
    pub fn reset(&mut self) {
        self.ancestor = None;
        self.halted = None;
        self.memo = None;
    }

    /// Runs one cycle.
    pub fn cycle(
        &mut self,
        alpha: &mut dyn Endpoint,
        beta: &mut dyn Endpoint,
    ) -> Result<CycleReport, CycleError> {
        self.cycle_observed(alpha, beta, &mut |_| {})
    }

    /// Runs one cycle, telling `observer` about each phase as it begins, the scans as they
    /// finish and staging as it progresses (a daemon shows this and journals it).
    pub fn cycle_observed(
        &mut self,
        alpha: &mut dyn Endpoint,
        beta: &mut dyn Endpoint,
        observer: &mut dyn FnMut(Progress<'_>),
    ) -> Result<CycleReport, CycleError> {
        if let Some(reason) = self.halted {
            return Err(CycleError::Halted(reason));
        }
        observer(Progress::Phase(Phase::Scanning));
        let memo = self.memo.take();
        let (alpha_snapshot, beta_snapshot, mut report) = scan_both(alpha, beta)?;
        observer(Progress::Scanned(&report));
        let versions = match [alpha.version(), beta.version()] {
            [Some(alpha), Some(beta)] => Some([alpha, beta]),
            _ => None,
        };
        if let Some(memo) =
            memo.as_ref().filter(|memo| memo.settled && Some(memo.versions) == versions)
        {
            report.conflicts.clone_from(&memo.conflicts);
            self.memo = Some(memo.clone());
            return Ok(report);
        }
        let counts = [&alpha_snapshot, &beta_snapshot]
            .map(|snapshot| snapshot.directories + snapshot.files + snapshot.symbolic_links);
        let (alpha_content, beta_content) = (&alpha_snapshot.content, &beta_snapshot.content);
        if root_emptied(self.ancestor.as_ref(), alpha_content.as_ref(), beta_content.as_ref()) {
            if !self.allowances.allows(HaltReason::RootEmptied) {
                return Ok(self.halt(report, HaltReason::RootEmptied));
            }
            report.allowed.push(HaltReason::RootEmptied);
        }
        observer(Progress::Phase(Phase::Reconciling));
        // After a settled cycle, what changed since lies in the directories the endpoints
        // read again: only the way to those is walked.
        let dirty = match (&memo, alpha.changed_directories(), beta.changed_directories()) {
            (Some(memo), Some(alpha), Some(beta)) => {
                let mut dirty = memo.carry.clone();
                dirty.extend(alpha.iter().chain(beta).cloned());
                Some((memo, dirty))
            }
            _ => None,
        };
        let (ancestor, mode) = (self.ancestor.as_ref(), self.mode);
        let reconciliation = match &dirty {
            Some((memo, dirty)) => mutagen_reconcile::reconcile_dirty(
                ancestor,
                alpha_content.as_ref(),
                beta_content.as_ref(),
                mode,
                dirty,
                &memo.conflicts,
            ),
            None => reconcile(ancestor, alpha_content.as_ref(), beta_content.as_ref(), mode),
        };
        // Endpoints may share their snapshots with their own view of the root, which their
        // transitions update: release them so that no copy is made.
        drop((alpha_snapshot, beta_snapshot));
        let settled = reconciliation.is_settled();
        report.conflicts = reconciliation.conflicts;
        let transitions =
            reconciliation.alpha_transitions.iter().chain(&reconciliation.beta_transitions);
        if let Some(reason) = transitions.filter(|c| c.path.is_empty()).find_map(root_halt) {
            if !self.allowances.allows(reason) {
                return Ok(self.halt(report, reason));
            }
            report.allowed.push(reason);
        }

        let (mut alpha_changes, mut beta_changes) =
            (reconciliation.alpha_transitions, reconciliation.beta_transitions);
        let [alpha_limited, beta_limited] =
            limit_entries(self.limits.entries, counts, [&mut alpha_changes, &mut beta_changes]);
        let largest = self.limits.staging_file_size;
        let alpha_oversized =
            stage(Side::Alpha, alpha, beta, &alpha_changes, &mut report.alpha, largest, observer)?;
        let beta_oversized =
            stage(Side::Beta, beta, alpha, &beta_changes, &mut report.beta, largest, observer)?;
        if !alpha_changes.is_empty() || !beta_changes.is_empty() {
            observer(Progress::Phase(Phase::Transitioning));
        }
        let (alpha_result, beta_result) =
            transition_both(alpha, beta, &alpha_changes, &beta_changes);

        // Record what is on disk now. A side whose transition failed as a whole contributes
        // nothing; its changes are simply attempted again next cycle.
        let mut ancestor_delta = reconciliation.ancestor_changes;
        let mut first_error = None;
        for (side, changes, result, side_report, limited, oversized) in [
            (
                Side::Alpha,
                alpha_changes,
                alpha_result,
                &mut report.alpha,
                alpha_limited,
                alpha_oversized,
            ),
            (Side::Beta, beta_changes, beta_result, &mut report.beta, beta_limited, beta_oversized),
        ] {
            let result = result.and_then(|result| {
                if result.results.len() == changes.len() {
                    return Ok(result);
                }
                let message =
                    format!("{} results for {} changes", result.results.len(), changes.len());
                Err(EndpointError::Protocol(message))
            });
            match result {
                Ok(result) => {
                    ancestor_delta.extend(results_as_changes(&changes, &result));
                    side_report.transition_problems = result.problems;
                    side_report.missing_files = result.missing_files;
                    if !oversized.is_empty() {
                        side_report.missing_files &=
                            explain_oversized(&changes, &oversized, largest, side_report);
                    }
                    side_report.transition_problems.extend(limited);
                    side_report.transitions = changes;
                }
                Err(source) => {
                    first_error.get_or_insert(CycleError::Endpoint {
                        side,
                        operation: "transition",
                        source,
                    });
                }
            }
        }
        report.ancestor_changes = self.update_ancestor(ancestor_delta)?;
        match first_error {
            Some(error) => Err(error),
            None => {
                self.memo = match (versions, dirty) {
                    (Some(versions), _) if settled => Some(Memo {
                        versions,
                        settled,
                        conflicts: report.conflicts.clone(),
                        carry: BTreeSet::new(),
                    }),
                    // Not settled: the trees still differ from the settled ones where they
                    // did, and now also where the ancestor changed (the sides' own changes
                    // come with their next scans).
                    (Some(versions), Some((memo, mut carry))) => {
                        for change in &report.ancestor_changes {
                            carry.insert(mutagen_reconcile::parent_path(&change.path).to_owned());
                        }
                        Some(Memo { versions, settled, conflicts: memo.conflicts.clone(), carry })
                    }
                    _ => None,
                };
                Ok(report)
            }
        }
    }

    fn halt(&mut self, mut report: CycleReport, reason: HaltReason) -> CycleReport {
        self.halted = Some(reason);
        report.halted = Some(reason);
        report
    }

    /// Applies the delta to the ancestor, all of it or (on error) none of it.
    ///
    /// The ancestor is valid and every change's path was produced by reconciling valid
    /// trees, so checking each change's new content keeps the whole ancestor valid without
    /// walking it (it can hold millions of entries, and this runs every cycle).
    /// Applies `delta` to the ancestor and returns the changes that changed it: a result that
    /// equals what the ancestor already holds (a failed creation, say) is no change, so that a
    /// cycle that only failed again changes nothing and journals nothing.
    fn update_ancestor(&mut self, delta: Vec<Change>) -> Result<Vec<Change>, CycleError> {
        for change in &delta {
            // Transition results only ever hold synchronizable content; check them anyway,
            // since a remote endpoint's results are untrusted input.
            if let Some(new) = &change.new {
                new.validate(true).map_err(CycleError::InvalidAncestor)?;
            }
        }
        let mut undo: Vec<Undo> = Vec::with_capacity(delta.len());
        let mut effective = Vec::with_capacity(delta.len());
        for change in delta {
            match apply_change(&mut self.ancestor, &change) {
                Ok(previous) => {
                    let changed = previous.changed(&change);
                    undo.push(previous);
                    if changed {
                        effective.push(change);
                    }
                }
                Err(error) => {
                    for previous in undo.into_iter().rev() {
                        // Restoring what was just there cannot fail.
                        let _ = previous.undo(&mut self.ancestor);
                    }
                    return Err(CycleError::Ancestor(error));
                }
            }
        }
        Ok(effective)
    }
}

/// Scans both endpoints at once.
fn scan_both(
    alpha: &mut dyn Endpoint,
    beta: &mut dyn Endpoint,
) -> Result<(Arc<Snapshot>, Arc<Snapshot>, CycleReport), CycleError> {
    let trusted = [alpha.trusted(), beta.trusted()];
    let timed = |endpoint: &mut dyn Endpoint| {
        let start = Instant::now();
        endpoint.scan().map(|snapshot| (snapshot, start.elapsed()))
    };
    let (alpha_scan, beta_scan) = std::thread::scope(|scope| {
        let alpha_scan = scope.spawn(|| timed(alpha));
        let beta_scan = timed(beta);
        (alpha_scan.join(), beta_scan)
    });
    let alpha_scan = alpha_scan.unwrap_or_else(|panic| std::panic::resume_unwind(panic));
    let scan_error = |side| move |source| CycleError::Endpoint { side, operation: "scan", source };
    let (alpha_snapshot, alpha_duration) = alpha_scan.map_err(scan_error(Side::Alpha))?;
    let (beta_snapshot, beta_duration) = beta_scan.map_err(scan_error(Side::Beta))?;
    let sides = [(Side::Alpha, &alpha_snapshot), (Side::Beta, &beta_snapshot)];
    for ((side, snapshot), trusted) in sides.into_iter().zip(trusted) {
        if let Some(content) = snapshot.content.as_ref().filter(|_| !trusted) {
            content
                .validate(false)
                .map_err(|source| CycleError::InvalidSnapshot { side, source })?;
        }
    }
    let report = CycleReport {
        alpha: SideReport::from_scan(&alpha_snapshot, alpha_duration, trusted[0]),
        beta: SideReport::from_scan(&beta_snapshot, beta_duration, trusted[1]),
        ..CycleReport::default()
    };
    Ok((alpha_snapshot, beta_snapshot, report))
}

/// Applies both sides' transitions at once.
fn transition_both(
    alpha: &mut dyn Endpoint,
    beta: &mut dyn Endpoint,
    alpha_changes: &[Change],
    beta_changes: &[Change],
) -> (Result<TransitionResult, EndpointError>, Result<TransitionResult, EndpointError>) {
    let run = |endpoint: &mut dyn Endpoint, changes: &[Change]| {
        if changes.is_empty() {
            return Ok(TransitionResult::default());
        }
        endpoint.transition(changes.to_vec())
    };
    std::thread::scope(|scope| {
        let alpha_result = scope.spawn(|| run(alpha, alpha_changes));
        let beta_result = run(beta, beta_changes);
        (alpha_result.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)), beta_result)
    })
}

/// Returns the halt a transition of a root would cause, if any.
fn root_halt(change: &Change) -> Option<HaltReason> {
    match (&change.old, &change.new) {
        (Some(_), None) => Some(HaltReason::RootDeletion),
        (Some(old), Some(new)) if old.kind() != new.kind() => Some(HaltReason::RootTypeChange),
        _ => None,
    }
}

fn root_emptied(ancestor: Option<&Entry>, alpha: Option<&Entry>, beta: Option<&Entry>) -> bool {
    match (ancestor, alpha, beta) {
        (
            Some(Entry::Directory(a)),
            Some(Entry::Directory(alpha)),
            Some(Entry::Directory(beta)),
        ) => a.len() >= 2 && (alpha.is_empty() != beta.is_empty()),
        _ => false,
    }
}

/// Returns the files `receiver` needs for `changes`.
fn needed_files(changes: &[Change]) -> Vec<StageRequest> {
    let mut seen = BTreeSet::new();
    staged_files(changes)
        .into_iter()
        .filter(|(_, digest)| seen.insert(*digest))
        .map(|(path, digest)| StageRequest::new(path, digest))
        .collect()
}

/// The message of a transition that found no staged file.
const NOT_STAGED: &str = "unable to locate staged file";

/// Rewrites the transition problems of files left out for their size; returns whether a
/// staged file is missing for another reason.
fn explain_oversized(
    changes: &[Change],
    oversized: &HashMap<Digest, u64>,
    largest: u64,
    report: &mut SideReport,
) -> bool {
    let digests: HashMap<String, Digest> = staged_files(changes).into_iter().collect();
    let mut other_missing = false;
    for problem in &mut report.transition_problems {
        if !problem.error.starts_with(NOT_STAGED) {
            continue;
        }
        match digests.get(&problem.path).and_then(|digest| oversized.get(digest)) {
            Some(size) => {
                problem.error = format!(
                    "the file is {size} bytes, more than the maximum staging file size of \
                     {largest} bytes: it is not synchronized"
                );
            }
            None => other_missing = true,
        }
    }
    other_missing
}

/// How many batches of transmissions a supplier may get ahead of its receiver.
const SUPPLY_QUEUE: usize = 4;
/// The data in a batch of transmissions, beyond which it is sent.
const BATCH_BYTES: usize = 1 << 20;
/// The transmissions in a batch, beyond which it is sent (three per small file).
const BATCH_TRANSMISSIONS: usize = 384;

/// Stages on `receiver` what its `changes` need, supplied by `supplier`; files larger than
/// `largest` (when not 0) are left out, and returned by digest with their size.
fn stage(
    side: Side,
    receiver: &mut dyn Endpoint,
    supplier: &mut dyn Endpoint,
    changes: &[Change],
    report: &mut SideReport,
    largest: u64,
    observer: &mut dyn FnMut(Progress<'_>),
) -> Result<HashMap<Digest, u64>, CycleError> {
    let mut oversized = std::collections::HashMap::new();
    let requests = needed_files(changes);
    if requests.is_empty() {
        return Ok(oversized);
    }
    observer(Progress::Phase(Phase::Staging(side)));
    let needed = receiver.stage(requests).map_err(|source| CycleError::Endpoint {
        side,
        operation: "stage",
        source,
    })?;
    if needed.is_empty() {
        return Ok(oversized);
    }
    let other = match side {
        Side::Alpha => Side::Beta,
        Side::Beta => Side::Alpha,
    };
    let mut unavailable = 0;
    let mut progress =
        StagingProgress { expected_files: needed.len() as u64, ..StagingProgress::default() };
    // While a file too large to stage is being supplied, its data goes nowhere.
    let mut skipping = false;
    let mut receive = |transmission: Transmission| -> EndpointResult<()> {
        if let Transmission::Begin { request, size } = &transmission
            && largest > 0
            && *size > largest
        {
            skipping = true;
            oversized.insert(request.digest, *size);
            unavailable += 1;
            progress.received_files += 1;
            let error = "larger than the maximum staging file size".to_owned();
            return receiver.receive(Transmission::Unavailable { request: request.clone(), error });
        }
        if skipping {
            skipping =
                !matches!(transmission, Transmission::End | Transmission::Unavailable { .. });
            return Ok(());
        }
        match &transmission {
            Transmission::Begin { request, size } => {
                progress.path.clone_from(&request.path);
                progress.current_size = *size;
                observer(Progress::Staging(side, &progress));
            }
            Transmission::Data(data) => progress.received_bytes += data.len() as u64,
            Transmission::End | Transmission::Unavailable { .. } => {
                unavailable += u64::from(matches!(transmission, Transmission::Unavailable { .. }));
                progress.received_files += 1;
                observer(Progress::Staging(side, &progress));
            }
            Transmission::Blocks { .. } => {}
        }
        receiver.receive(transmission)
    };
    // The supplier reads on a thread of its own while the receiver writes here: the two
    // endpoints' system calls (or round trips) overlap, as rsync's sender and receiver do.
    // Transmissions travel in batches (a batch per thread wake-up rather than one per file,
    // which on a busy machine costs a scheduling delay each); the queue holds at most
    // SUPPLY_QUEUE batches of about BATCH_BYTES each (one 1 MiB chunk may exceed it).
    let (sender, batches) = crossbeam_channel::bounded::<Vec<Transmission>>(SUPPLY_QUEUE);
    let (supplied, received) = std::thread::scope(|scope| {
        let supplying = scope.spawn(|| {
            let sender = sender;
            // The receiving side stopped (its error is the one reported).
            let stopped = |_| EndpointError::Protocol("the receiving endpoint stopped".to_owned());
            let (mut batch, mut bytes) = (Vec::new(), 0);
            supplier.supply(&needed, &mut |transmission| {
                if let Transmission::Data(data) = &transmission {
                    bytes += data.len();
                }
                batch.push(transmission);
                if bytes >= BATCH_BYTES || batch.len() >= BATCH_TRANSMISSIONS {
                    bytes = 0;
                    sender.send(std::mem::take(&mut batch)).map_err(stopped)?;
                }
                Ok(())
            })?;
            if !batch.is_empty() {
                sender.send(batch).map_err(stopped)?;
            }
            Ok(())
        });
        let received = batches.iter().flatten().try_for_each(&mut receive);
        // Stops a supplier still sending after a receive error.
        drop(batches);
        (supplying.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)), received)
    });
    report.staged_files = progress.received_files - unavailable;
    report.staged_bytes = progress.received_bytes;
    observer(Progress::Staged { side, files: report.staged_files, bytes: report.staged_bytes });
    received.map_err(|source| CycleError::Endpoint { side, operation: "stage", source })?;
    supplied.map_err(|source| CycleError::Endpoint { side: other, operation: "supply", source })?;
    Ok(oversized)
}

/// Turns transition results into ancestor changes.
fn results_as_changes<'a>(
    changes: &'a [Change],
    result: &'a TransitionResult,
) -> impl Iterator<Item = Change> + 'a {
    changes.iter().zip(&result.results).map(|(change, now)| {
        if change.is_permissions_only() {
            // The directory's bits now: its children are not part of the change (a remote
            // side's result is taken for its bits only).
            let now = mutagen_reconcile::directory_permissions(now.as_ref());
            return Change::permissions(change.path.clone(), None, now);
        }
        Change { path: change.path.clone(), old: None, new: now.clone() }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(names: &[&str]) -> Option<Entry> {
        let file = Entry::file(Digest([1; 32]), false);
        Some(Entry::Directory(names.iter().map(|n| ((*n).to_owned(), file.clone())).collect()))
    }

    #[test]
    fn root_emptied_needs_two_ancestor_entries_and_one_empty_side() {
        let (full, empty) = (dir(&["a", "b"]), dir(&[]));
        assert!(root_emptied(full.as_ref(), empty.as_ref(), full.as_ref()));
        assert!(root_emptied(full.as_ref(), full.as_ref(), empty.as_ref()));
        assert!(!root_emptied(full.as_ref(), empty.as_ref(), empty.as_ref()));
        assert!(!root_emptied(dir(&["a"]).as_ref(), empty.as_ref(), full.as_ref()));
        assert!(!root_emptied(None, empty.as_ref(), full.as_ref()));
    }

    #[test]
    fn root_halts() {
        let file = Entry::file(Digest([1; 32]), false);
        let deletion = Change::new("", dir(&["a"]), None);
        let type_change = Change::new("", dir(&["a"]), Some(file.clone()));
        let creation = Change::new("", None, Some(file));
        assert_eq!(root_halt(&deletion), Some(HaltReason::RootDeletion));
        assert_eq!(root_halt(&type_change), Some(HaltReason::RootTypeChange));
        assert_eq!(root_halt(&creation), None);
    }

    #[test]
    fn needed_files_skip_mode_only_changes_and_duplicates() {
        let file = |exec| Some(Entry::file(Digest([1; 32]), exec));
        let changes = vec![
            Change::new("x", file(false), file(true)),
            Change::new("d", None, dir(&["a", "b"])),
        ];
        let needed = needed_files(&changes);
        assert_eq!(needed, vec![StageRequest::new("d/a", Digest([1; 32]))]);
    }
}

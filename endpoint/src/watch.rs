//! Native file-system watching (inotify through `notify`) that turns events into the set of
//! directories an accelerated rescan must re-read.
//!
//! # Invariants
//! - Every event under the root marks the directory that holds the changed entry dirty
//!   (except for our temporary names and whatever lies below them, which the scan skips), so
//!   re-reading the dirty directories (and nothing else) yields the current tree, provided no
//!   event was lost.
//! - Anything that may have lost events (a queue overflow, a watcher error, the root's own
//!   watch going away) sets [`Pending::rescan`]: the next scan is a full one.
//! - [`Watcher::barrier`] returns only once every event queued before it was called has been
//!   handled: a scan that starts after a barrier sees every change made before it.
//! - Newly created directories are added to the watch by the scan, through
//!   [`Watcher::watch_directory`], before their contents are read (notify adds its own watches
//!   only after it has delivered the batch of events that announced them).
//! - After events were lost ([`Pending::lost`]) the watch is walked again before the full
//!   rescan, so that directories created meanwhile are watched too.
//! - Watchers share a few process-wide inotify instances (see `watch/instance.rs`): a session costs
//!   watches, not instances, of which the kernel allows a user only 128 by default.

mod instance;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};
use notify::event::{EventKind, RenameMode};

use crate::scan::TEMPORARY_PREFIX;
pub use instance::INSTANCES;
use instance::Instance;
#[doc(hidden)]
pub use instance::held_paths;

/// How long a barrier waits for its own event before it gives up (and asks for a full rescan).
const BARRIER_TIMEOUT: Duration = Duration::from_secs(2);

/// More dirty directories than this and a full rescan is cheaper to bookkeep.
const MAX_DIRTY: usize = 16 * 1024;

/// Directories added below the root are pruned (the deleted ones released) past this many.
const NESTED_PRUNE: usize = 1024;

/// What the watcher has seen since the last [`Watcher::take`].
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Pending {
    /// Root-relative paths of directories whose listing or entries changed ("" is the root).
    pub dirty: BTreeSet<String>,
    /// Events may have been lost: only a full rescan is correct.
    pub rescan: bool,
    /// Why a full rescan is needed, for the user.
    pub reason: Option<String>,
    /// Root-relative paths that were created or moved in: if they are directories, the scan
    /// adds them to the watch and reads them in full.
    pub created: BTreeSet<String>,
    /// The root's own watch is gone (the root was deleted, moved or replaced): the watch must
    /// be established again.
    pub rewatch: bool,
    /// Events were lost (a queue overflow, a watcher error): directories created meanwhile
    /// may be unwatched, so the watch must be walked again.
    pub lost: bool,
}

#[derive(Debug, Default)]
struct State {
    pending: Pending,
    /// The highest barrier number seen so far.
    barriers: u64,
    /// The last barrier number handed out.
    barriers_issued: u64,
}

#[derive(Debug)]
struct Shared {
    root: PathBuf,
    barrier_directory: PathBuf,
    state: Mutex<State>,
    barrier_seen: Condvar,
    wakeup: Sender<()>,
    /// Queue overflows seen (for tests and the status).
    overflows: AtomicU64,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn wake(&self) {
        // A full channel already holds a wakeup.
        let _ = self.wakeup.try_send(());
    }

    /// An event about `path`, which is the root or lies below it.
    fn event(&self, path: &Path, kind: &EventKind) {
        let relevant = self.mark(&mut self.lock().pending, path, kind);
        if relevant {
            self.wake();
        }
    }

    /// An event in the barrier directory.
    fn barrier_event(&self, path: &Path) {
        if let Some(number) = barrier_number(path) {
            let mut state = self.lock();
            state.barriers = state.barriers.max(number);
            self.barrier_seen.notify_all();
        }
    }

    /// The instance's event queue overflowed.
    fn overflowed(&self) {
        self.overflows.fetch_add(1, Ordering::Relaxed);
        self.lost("the event queue overflowed".to_owned(), true);
    }

    /// Events may have been lost; `rewalk`: watches may be missing too.
    fn lost(&self, reason: String, rewalk: bool) {
        let mut state = self.lock();
        mark_rescan(&mut state.pending, reason);
        state.pending.lost |= rewalk;
        drop(state);
        self.wake();
    }

    /// Marks the directory holding `path` dirty; returns whether `path` concerns the root.
    fn mark(&self, pending: &mut Pending, path: &Path, kind: &EventKind) -> bool {
        let Ok(relative) = path.strip_prefix(&self.root) else { return false };
        let Some(relative) = relative.to_str() else {
            // A non-UTF-8 name: its parent's listing still shows it as problematic.
            if let Some(parent) = relative.parent().and_then(Path::to_str) {
                pending.dirty.insert(parent.to_owned());
            }
            return true;
        };
        if relative.is_empty() {
            // The root itself: its metadata changed, or it went away.
            let replaced = matches!(
                kind,
                EventKind::Remove(_) | EventKind::Modify(notify::event::ModifyKind::Name(_))
            );
            if matches!(kind, EventKind::Create(_)) {
                // The root appeared (a new session's first cycle creates it): watch it and
                // read it in full, without calling that a problem.
                pending.rewatch = true;
                pending.rescan = true;
                pending.dirty.clear();
                pending.created.clear();
            } else if replaced {
                pending.rewatch = true;
                mark_rescan(pending, "the root was removed or moved".to_owned());
            } else {
                pending.dirty.insert(String::new());
            }
            return true;
        }
        let parent = relative.rsplit_once('/').map_or("", |(parent, _)| parent);
        // Our temporary files, and anything inside our hidden directories (a staging area
        // inside the root, with `--stage-mode internal`): the scan skips them, so they change
        // nothing.
        if relative.split('/').any(|component| component.starts_with(TEMPORARY_PREFIX)) {
            return false;
        }
        if pending.dirty.len() >= MAX_DIRTY {
            mark_rescan(pending, "too many changed directories at once".to_owned());
            return true;
        }
        if !pending.rescan {
            pending.dirty.insert(parent.to_owned());
            let arrived = matches!(
                kind,
                EventKind::Create(_)
                    | EventKind::Modify(notify::event::ModifyKind::Name(
                        RenameMode::To | RenameMode::Both | RenameMode::Any
                    ))
            );
            if arrived {
                pending.created.insert(relative.to_owned());
            }
        }
        true
    }
}

/// Returns the number of a barrier file (`barrier-N`).
fn barrier_number(path: &Path) -> Option<u64> {
    path.file_name()?.to_str()?.strip_prefix("barrier-")?.parse().ok()
}

fn mark_rescan(pending: &mut Pending, reason: String) {
    pending.rescan = true;
    pending.dirty.clear();
    pending.created.clear();
    pending.reason = Some(reason);
}

/// Describes a watch error for the user; `context` says what failed.
fn describe(error: &notify::Error, context: &str) -> String {
    match error.kind {
        notify::ErrorKind::MaxFilesWatch => {
            "the inotify watch limit is reached (raise fs.inotify.max_user_watches)".to_owned()
        }
        _ => format!("{context}: {error}"),
    }
}

/// A recursive native watch on a root, served by one of the process's shared inotify
/// instances.
pub struct Watcher {
    instance: Arc<Instance>,
    id: u64,
    shared: Arc<Shared>,
    wakeups: Receiver<()>,
    holds: Mutex<Holds>,
}

/// The paths a watcher holds in its instance, besides its barrier directory.
#[derive(Debug, Default)]
struct Holds {
    barrier: bool,
    root: bool,
    parent: Option<PathBuf>,
    /// Directories below the root added by [`Watcher::watch_directory`], held recursively.
    nested: BTreeSet<PathBuf>,
    /// `nested` is pruned when it grows past this.
    prune_at: usize,
}

impl std::fmt::Debug for Watcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watcher").field("root", &self.shared.root).finish_non_exhaustive()
    }
}

/// Whether a watch error only says that the path is not there.
fn not_found(error: &notify::Error) -> bool {
    match &error.kind {
        notify::ErrorKind::PathNotFound => true,
        notify::ErrorKind::Io(io) => io.kind() == std::io::ErrorKind::NotFound,
        _ => false,
    }
}

impl Watcher {
    /// Watches `root` (a directory, recursively; or a single file) and its parent (to notice
    /// the root being replaced); `barrier_directory` is created and used for barrier files.
    pub fn new(root: &Path, barrier_directory: &Path) -> Result<Watcher, String> {
        std::fs::create_dir_all(barrier_directory).map_err(|e| {
            format!("unable to create watch directory {}: {e}", barrier_directory.display())
        })?;
        let instance = Instance::for_root(root)?;
        let (wakeup, wakeups) = crossbeam_channel::bounded(1);
        let shared = Arc::new(Shared {
            root: root.to_owned(),
            barrier_directory: barrier_directory.to_owned(),
            state: Mutex::default(),
            barrier_seen: Condvar::new(),
            wakeup,
            overflows: AtomicU64::new(0),
        });
        let id = instance.subscribe(shared.clone());
        let holds = Holds { prune_at: NESTED_PRUNE, ..Holds::default() };
        let watcher = Watcher { instance, id, shared, wakeups, holds: Mutex::new(holds) };
        // From here on, dropping the watcher undoes what was done.
        watcher.instance.hold(barrier_directory, false).map_err(|e| {
            describe(&e, &format!("unable to watch {}", barrier_directory.display()))
        })?;
        watcher.lock_holds().barrier = true;
        if let Some(parent) = root.parent().filter(|p| !p.as_os_str().is_empty()) {
            // Best effort: without it, a replaced root is noticed by the next barrier's rescan.
            if watcher.instance.hold(parent, false).is_ok() {
                watcher.lock_holds().parent = Some(parent.to_owned());
            }
        }
        watcher.watch_root(false)?;
        Ok(watcher)
    }

    fn lock_holds(&self) -> MutexGuard<'_, Holds> {
        self.holds.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// (Re-)establishes the recursive watch on the root; an absent root is not an error (its
    /// creation shows up in the parent's watch). `rewalk`: walk the whole tree again, for
    /// directories whose creation was lost with other events.
    pub fn watch_root(&self, rewalk: bool) -> Result<(), String> {
        let mut holds = self.lock_holds();
        let root = &self.shared.root;
        let result = if holds.root {
            self.instance.refresh(root, rewalk, self.id)
        } else {
            self.instance.hold(root, true).inspect(|()| holds.root = true)
        };
        match result {
            Ok(()) => Ok(()),
            Err(e) if not_found(&e) => Ok(()),
            Err(e) => Err(describe(&e, &format!("unable to watch {}", root.display()))),
        }
    }

    /// Adds a directory found by a scan to the watch, before the scan reads it. Failure is
    /// recorded as a reason for a full rescan.
    pub fn watch_directory(&self, path: &Path) {
        let mut holds = self.lock_holds();
        let result = if holds.nested.contains(path) {
            // Held already: the directory may have been replaced since.
            self.instance.refresh(path, false, self.id)
        } else {
            let result = self.instance.hold(path, true);
            if result.is_ok() {
                holds.nested.insert(path.to_owned());
            }
            result
        };
        if holds.nested.len() > holds.prune_at {
            let gone: Vec<PathBuf> = holds
                .nested
                .iter()
                .filter(|nested| !std::fs::symlink_metadata(nested).is_ok_and(|m| m.is_dir()))
                .cloned()
                .collect();
            for nested in gone {
                holds.nested.remove(&nested);
                self.instance.release(&nested, true);
            }
            holds.prune_at = (holds.nested.len() * 2).max(NESTED_PRUNE);
        }
        drop(holds);
        match result {
            Ok(()) => {}
            // Gone already: its parent's event covers it.
            Err(e) if not_found(&e) => {}
            Err(e) => {
                let reason = describe(&e, &format!("unable to watch {}", path.display()));
                mark_rescan(&mut self.shared.lock().pending, reason);
            }
        }
    }

    /// Receives a message when events arrived since the last [`Watcher::take`].
    pub fn wakeups(&self) -> Receiver<()> {
        self.wakeups.clone()
    }

    /// Waits until every event queued before the call has been handled. On failure the
    /// pending state asks for a full rescan.
    pub fn barrier(&self) {
        let number = {
            let mut state = self.shared.lock();
            state.barriers_issued += 1;
            state.barriers_issued
        };
        // Each barrier is a new name, so its creation event is unmistakable.
        let file = self.shared.barrier_directory.join(format!("barrier-{number}"));
        if let Err(error) = std::fs::File::create(&file) {
            let reason = format!("unable to write {}: {error}", file.display());
            mark_rescan(&mut self.shared.lock().pending, reason);
            return;
        }
        let _ = std::fs::remove_file(&file);
        let state = self.shared.lock();
        let (mut state, timeout) = self
            .shared
            .barrier_seen
            .wait_timeout_while(state, BARRIER_TIMEOUT, |state| state.barriers < number)
            .unwrap_or_else(PoisonError::into_inner);
        if timeout.timed_out() {
            mark_rescan(&mut state.pending, "the watcher did not answer in time".to_owned());
        }
    }

    /// Takes what was seen since the last call.
    pub fn take(&self) -> Pending {
        let pending = std::mem::take(&mut self.shared.lock().pending);
        while self.wakeups.try_recv().is_ok() {}
        pending
    }

    /// Queue overflows seen since the watcher started.
    pub fn overflows(&self) -> u64 {
        self.shared.overflows.load(Ordering::Relaxed)
    }

    /// Holds the event handler for as long as the guard lives, so that the kernel's queue
    /// fills up and overflows under load (for tests of the overflow path).
    #[doc(hidden)]
    pub fn stall_events(&self) -> impl Drop + '_ {
        self.shared.lock()
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.instance.unsubscribe(self.id);
        let holds = std::mem::take(&mut *self.lock_holds());
        // The root first: its nested holds then have nothing left to be covered by.
        if holds.root {
            self.instance.release(&self.shared.root, true);
        }
        for nested in &holds.nested {
            self.instance.release(nested, true);
        }
        if let Some(parent) = &holds.parent {
            self.instance.release(parent, false);
        }
        if holds.barrier {
            self.instance.release(&self.shared.barrier_directory, false);
        }
        let _ = std::fs::remove_dir_all(&self.shared.barrier_directory);
    }
}

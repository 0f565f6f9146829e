//! Native file-system watching (inotify through `notify`) that turns events into the set of
//! directories an accelerated rescan must re-read.
//!
//! # Invariants
//! - Every event under the root marks the directory that holds the changed entry dirty, so
//!   re-reading the dirty directories (and nothing else) yields the current tree, provided no
//!   event was lost.
//! - Anything that may have lost events (a queue overflow, a watcher error, the root's own
//!   watch going away) sets [`Pending::rescan`]: the next scan is a full one.
//! - [`Watcher::barrier`] returns only once every event queued before it was called has been
//!   handled: a scan that starts after a barrier sees every change made before it.
//! - Newly created directories are added to the watch by the scan, through
//!   [`Watcher::watch_directory`], before their contents are read (notify adds its own watches
//!   only after it has delivered the batch of events that announced them).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};
use notify::event::{EventKind, RenameMode};
use notify::{RecursiveMode, Watcher as _};

use crate::scan::TEMPORARY_PREFIX;

/// How long a barrier waits for its own event before it gives up (and asks for a full rescan).
const BARRIER_TIMEOUT: Duration = Duration::from_secs(2);

/// More dirty directories than this and a full rescan is cheaper to bookkeep.
const MAX_DIRTY: usize = 16 * 1024;

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

    fn handle(&self, event: notify::Result<notify::Event>) {
        let mut state = self.lock();
        let mut relevant = true;
        match event {
            Err(error) => mark_rescan(&mut state.pending, describe(&error, "watcher error")),
            Ok(event) if event.need_rescan() => {
                self.overflows.fetch_add(1, Ordering::Relaxed);
                mark_rescan(&mut state.pending, "the event queue overflowed".to_owned());
            }
            Ok(event) => {
                // Open and read events are not even asked for (`EventKindMask::CORE`).
                relevant = false;
                for path in &event.paths {
                    if path.parent() == Some(&self.barrier_directory) {
                        if let Some(number) = barrier_number(path) {
                            state.barriers = state.barriers.max(number);
                            self.barrier_seen.notify_all();
                        }
                        continue;
                    }
                    relevant |= self.mark(&mut state.pending, path, &event.kind);
                }
            }
        }
        drop(state);
        if relevant {
            // A full channel already holds a wakeup.
            let _ = self.wakeup.try_send(());
        }
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
        let (parent, name) = match relative.rsplit_once('/') {
            Some((parent, name)) => (parent, name),
            None => ("", relative),
        };
        if name.starts_with(TEMPORARY_PREFIX) {
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

/// A recursive native watch on a root.
pub struct Watcher {
    inner: Mutex<notify::RecommendedWatcher>,
    shared: Arc<Shared>,
    wakeups: Receiver<()>,
}

impl std::fmt::Debug for Watcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watcher").field("root", &self.shared.root).finish_non_exhaustive()
    }
}

impl Watcher {
    /// Watches `root` (a directory, recursively; or a single file) and its parent (to notice
    /// the root being replaced); `barrier_directory` is created and used for barrier files.
    pub fn new(root: &Path, barrier_directory: &Path) -> Result<Watcher, String> {
        std::fs::create_dir_all(barrier_directory).map_err(|e| {
            format!("unable to create watch directory {}: {e}", barrier_directory.display())
        })?;
        let (wakeup, wakeups) = crossbeam_channel::bounded(1);
        let shared = Arc::new(Shared {
            root: root.to_owned(),
            barrier_directory: barrier_directory.to_owned(),
            state: Mutex::default(),
            barrier_seen: Condvar::new(),
            wakeup,
            overflows: AtomicU64::new(0),
        });
        let handler = {
            let shared = shared.clone();
            move |event| shared.handle(event)
        };
        // Opening and reading files (our own scans do it all the time) changes nothing: keep
        // those events in the kernel.
        let config = notify::Config::default()
            .with_follow_symlinks(false)
            .with_event_kinds(notify::EventKindMask::CORE);
        let mut inner = notify::RecommendedWatcher::new(handler, config)
            .map_err(|e| format!("unable to start watching: {e}"))?;
        inner
            .watch(barrier_directory, RecursiveMode::NonRecursive)
            .map_err(|e| format!("unable to watch {}: {e}", barrier_directory.display()))?;
        if let Some(parent) = root.parent().filter(|p| !p.as_os_str().is_empty()) {
            // Best effort: without it, a replaced root is noticed by the next barrier's rescan.
            let _ = inner.watch(parent, RecursiveMode::NonRecursive);
        }
        let watcher = Watcher { inner: Mutex::new(inner), shared, wakeups };
        watcher.watch_root()?;
        Ok(watcher)
    }

    /// (Re-)establishes the recursive watch on the root; an absent root is not an error (its
    /// creation shows up in the parent's watch).
    pub fn watch_root(&self) -> Result<(), String> {
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        match inner.watch(&self.shared.root, RecursiveMode::Recursive) {
            Ok(()) => Ok(()),
            Err(e) if matches!(e.kind, notify::ErrorKind::PathNotFound) => Ok(()),
            Err(e) if matches!(&e.kind, notify::ErrorKind::Io(io) if io.kind() == std::io::ErrorKind::NotFound) => {
                Ok(())
            }
            Err(e) => Err(describe(&e, &format!("unable to watch {}", self.shared.root.display()))),
        }
    }

    /// Adds a directory found by a scan to the watch, before the scan reads it. Failure is
    /// recorded as a reason for a full rescan.
    pub fn watch_directory(&self, path: &Path) {
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        match inner.watch(path, RecursiveMode::Recursive) {
            Ok(()) => {}
            // Gone already: its parent's event covers it.
            Err(e) if matches!(e.kind, notify::ErrorKind::PathNotFound) => {}
            Err(e) => {
                drop(inner);
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
        let _ = std::fs::remove_dir_all(&self.shared.barrier_directory);
    }
}

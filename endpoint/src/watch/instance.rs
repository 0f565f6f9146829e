//! Process-wide inotify instances shared by every [`super::Watcher`].
//!
//! The kernel allows a user 128 inotify instances by default (`fs.inotify.max_user_instances`),
//! shared with every other program the user runs, so one instance per watched root would cap
//! a daemon at a few dozen sessions. Instead a few instances ([`INSTANCES`]) are created on
//! demand and kept for the life of the process; a root always goes to the same one (chosen by
//! a hash of its path), together with its parent and barrier directory, so that a barrier
//! orders after every event of its root.
//!
//! # Invariants
//! - A path is watched while at least one subscriber holds it, in the widest mode any holder
//!   asked for (recursive over flat). Each subscriber holds a path at most once per mode.
//! - An event reaches exactly the subscribers whose root is the event's path or one of its
//!   ancestors, or whose barrier directory holds it. An overflow or a watcher error reaches
//!   every subscriber of the instance: any of them may have lost events.
//! - No lock of the registry is held while notify is asked to change a watch (notify's event
//!   thread, which takes the registry lock, answers those requests).
//! - A released path that lies inside another holder's recursive watch keeps its notify watch
//!   (removing a nested user watch would strip the holder's coverage of that subtree); such
//!   orphans are removed together with the recursive watch that covers them.

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};

use notify::{RecursiveMode, Watcher as _};

use super::{Shared, describe};

/// How many inotify instances the process uses at most.
pub const INSTANCES: usize = 4;

/// The instances, created on first use (a failed creation is tried again next time).
static INSTANCE_SLOTS: [Mutex<Option<Arc<Instance>>>; INSTANCES] =
    [const { Mutex::new(None) }; INSTANCES];

/// Who receives the events of one instance.
#[derive(Default)]
struct Registry {
    next: u64,
    /// Root → subscribers watching it.
    roots: HashMap<PathBuf, Vec<(u64, Arc<Shared>)>>,
    /// Barrier directory → subscribers using it.
    barriers: HashMap<PathBuf, Vec<(u64, Arc<Shared>)>>,
    all: BTreeMap<u64, Arc<Shared>>,
}

/// How many holders want a path watched, by mode.
#[derive(Debug, Default, Clone, Copy)]
struct Count {
    recursive: usize,
    flat: usize,
}

impl Count {
    fn mode(self) -> Option<RecursiveMode> {
        if self.recursive > 0 {
            Some(RecursiveMode::Recursive)
        } else if self.flat > 0 {
            Some(RecursiveMode::NonRecursive)
        } else {
            None
        }
    }
}

struct Watches {
    notify: notify::RecommendedWatcher,
    counts: BTreeMap<PathBuf, Count>,
    /// Released paths whose notify watch was kept because a recursive holder covers them.
    orphans: BTreeSet<PathBuf>,
}

impl Watches {
    /// Whether a strict ancestor of `path` is held recursively.
    fn covered(&self, path: &Path) -> bool {
        path.ancestors()
            .skip(1)
            .any(|ancestor| self.counts.get(ancestor).is_some_and(|count| count.recursive > 0))
    }
}

/// One shared inotify instance.
pub struct Instance {
    watches: Mutex<Watches>,
    registry: Arc<RwLock<Registry>>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Instance {
    /// The instance that serves `root`.
    pub fn for_root(root: &Path) -> Result<Arc<Instance>, String> {
        let mut hasher = DefaultHasher::new();
        root.hash(&mut hasher);
        let slot = &INSTANCE_SLOTS[(hasher.finish() % INSTANCES as u64) as usize];
        let mut slot = lock(slot);
        if let Some(instance) = &*slot {
            return Ok(instance.clone());
        }
        let instance = Arc::new(Instance::new()?);
        *slot = Some(instance.clone());
        Ok(instance)
    }

    fn new() -> Result<Instance, String> {
        let registry = Arc::new(RwLock::new(Registry::default()));
        let handler = {
            let registry = registry.clone();
            move |event| dispatch(&registry, event)
        };
        // Opening and reading files (our own scans do it all the time) changes nothing: keep
        // those events in the kernel.
        let config = notify::Config::default()
            .with_follow_symlinks(false)
            .with_event_kinds(notify::EventKindMask::CORE);
        let notify = notify::RecommendedWatcher::new(handler, config)
            .map_err(|e| describe(&e, "unable to start watching"))?;
        let watches = Watches { notify, counts: BTreeMap::new(), orphans: BTreeSet::new() };
        Ok(Instance { watches: Mutex::new(watches), registry })
    }

    /// Registers a subscriber for events under `root` and in `barriers`; returns its number.
    pub fn subscribe(&self, shared: Arc<Shared>) -> u64 {
        let mut registry = self.registry.write().unwrap_or_else(PoisonError::into_inner);
        registry.next += 1;
        let id = registry.next;
        registry.roots.entry(shared.root.clone()).or_default().push((id, shared.clone()));
        registry
            .barriers
            .entry(shared.barrier_directory.clone())
            .or_default()
            .push((id, shared.clone()));
        registry.all.insert(id, shared);
        id
    }

    /// Removes a subscriber: it receives no more events.
    pub fn unsubscribe(&self, id: u64) {
        let mut registry = self.registry.write().unwrap_or_else(PoisonError::into_inner);
        let registry = &mut *registry;
        let Some(shared) = registry.all.remove(&id) else { return };
        for (map, key) in [
            (&mut registry.roots, &shared.root),
            (&mut registry.barriers, &shared.barrier_directory),
        ] {
            if let Some(list) = map.get_mut(key) {
                list.retain(|(other, _)| *other != id);
                if list.is_empty() {
                    map.remove(key);
                }
            }
        }
    }

    /// Takes a hold on `path` in the given mode (`recursive`, else the path alone).
    pub fn hold(&self, path: &Path, recursive: bool) -> Result<(), notify::Error> {
        let mut watches = lock(&self.watches);
        let count = watches.counts.entry(path.to_owned()).or_default();
        let before = count.mode();
        if recursive {
            count.recursive += 1;
        } else {
            count.flat += 1;
        }
        let after = count.mode().expect("just counted");
        // An orphan's notify watch is still there; watching it again sets the mode wanted now.
        watches.orphans.remove(path);
        if before == Some(after) {
            return Ok(());
        }
        if let Err(error) = watches.notify.watch(path, after) {
            let count = watches.counts.get_mut(path).expect("counted above");
            if recursive {
                count.recursive -= 1;
            } else {
                count.flat -= 1;
            }
            if count.mode().is_none() {
                watches.counts.remove(path);
            }
            return Err(error);
        }
        Ok(())
    }

    /// Asks notify to watch a held path again (after its directory was replaced, or events
    /// were lost). `rewalk`: drop the watch first, so that notify walks the tree again and
    /// adds watches for directories it never heard of; holders of paths below lose the events
    /// of that moment and are told to rescan.
    pub fn refresh(&self, path: &Path, rewalk: bool, caller: u64) -> Result<(), notify::Error> {
        let mut watches = lock(&self.watches);
        let Some(mode) = watches.counts.get(path).and_then(|count| count.mode()) else {
            return Ok(());
        };
        if rewalk {
            let _ = watches.notify.unwatch(path);
            let result = watches.notify.watch(path, mode);
            drop(watches);
            let registry = self.registry.read().unwrap_or_else(PoisonError::into_inner);
            for (root, subscribers) in &registry.roots {
                if root.starts_with(path) {
                    for (_, shared) in subscribers.iter().filter(|(id, _)| *id != caller) {
                        shared.lost("the watch was established again".to_owned(), false);
                    }
                }
            }
            return result;
        }
        watches.notify.watch(path, mode)
    }

    /// Gives up a hold taken by [`Instance::hold`].
    pub fn release(&self, path: &Path, recursive: bool) {
        let mut watches = lock(&self.watches);
        let Some(count) = watches.counts.get_mut(path) else { return };
        let before = count.mode();
        if recursive {
            count.recursive = count.recursive.saturating_sub(1);
        } else {
            count.flat = count.flat.saturating_sub(1);
        }
        let after = count.mode();
        if after.is_none() {
            watches.counts.remove(path);
        }
        if before == after {
            return;
        }
        if watches.covered(path) {
            // Inside another holder's recursive watch: removing it would strip that coverage.
            if after.is_none() {
                watches.orphans.insert(path.to_owned());
            }
            return;
        }
        match after {
            Some(mode) => {
                let _ = watches.notify.watch(path, mode);
            }
            None => {
                // Gone already when its directory was deleted: nothing to undo.
                let _ = watches.notify.unwatch(path);
                let freed: Vec<PathBuf> = watches
                    .orphans
                    .iter()
                    .filter(|orphan| orphan.starts_with(path))
                    .cloned()
                    .collect();
                for orphan in freed {
                    if !watches.covered(&orphan) {
                        watches.orphans.remove(&orphan);
                        let _ = watches.notify.unwatch(&orphan);
                    }
                }
            }
        }
    }
}

/// The paths under `prefix` that the instances hold, and those they keep watched as orphans
/// (for tests: both are empty once every watcher of roots under `prefix` is gone).
pub fn held_paths(prefix: &Path) -> (Vec<PathBuf>, Vec<PathBuf>) {
    let (mut held, mut orphans) = (Vec::new(), Vec::new());
    for slot in &INSTANCE_SLOTS {
        let Some(instance) = lock(slot).clone() else { continue };
        let watches = lock(&instance.watches);
        held.extend(watches.counts.keys().filter(|path| path.starts_with(prefix)).cloned());
        orphans.extend(watches.orphans.iter().filter(|path| path.starts_with(prefix)).cloned());
    }
    (held, orphans)
}

/// Hands an event to the subscribers it concerns.
fn dispatch(registry: &RwLock<Registry>, event: notify::Result<notify::Event>) {
    let registry = registry.read().unwrap_or_else(PoisonError::into_inner);
    let event = match event {
        Err(error) => {
            let reason = describe(&error, "watcher error");
            for shared in registry.all.values() {
                shared.lost(reason.clone(), true);
            }
            return;
        }
        Ok(event) if event.need_rescan() => {
            for shared in registry.all.values() {
                shared.overflowed();
            }
            return;
        }
        Ok(event) => event,
    };
    for path in &event.paths {
        if let Some(subscribers) = path.parent().and_then(|parent| registry.barriers.get(parent)) {
            for (_, shared) in subscribers {
                shared.barrier_event(path);
            }
        }
        for ancestor in path.ancestors() {
            if let Some(subscribers) = registry.roots.get(ancestor) {
                for (_, shared) in subscribers {
                    shared.event(path, &event.kind);
                }
            }
        }
    }
}

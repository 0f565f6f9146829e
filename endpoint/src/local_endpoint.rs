//! [`LocalEndpoint`]: the in-process endpoint over a directory on this machine.

use std::collections::{BTreeSet, HashSet};
use std::io::Read;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mutagen_reconcile::{Change, Entry, apply_change, join_path, parent_path, replace_at};

use crate::endpoint::{
    Endpoint, EndpointError, EndpointResult, Snapshot, StageRequest, TransitionResult, Transmission,
};
use crate::fsutil::{self, describe};
use crate::rsync::{self, Signature};
use crate::scan::{self, Cache, ScanOptions};
use crate::staging::Staging;
use crate::transition::{self, Modes};
use crate::watch::Watcher;

/// Size of the chunks a local endpoint supplies.
const CHUNK: usize = 1 << 20;

/// Default size from which files are received as deltas: below it, a signature costs about
/// as much as the file.
pub const DELTA_MINIMUM: u64 = 64 * 1024;

/// How a local endpoint is set up.
#[derive(Clone, Debug)]
pub struct LocalOptions {
    /// Scan settings (ignores, symbolic link mode).
    pub scan: ScanOptions,
    /// Where incoming files are staged; must be outside the root.
    pub staging_directory: PathBuf,
    /// Refuse `stage` and `transition` (alpha in one-way modes).
    pub read_only: bool,
    /// Permission bits for created files and directories.
    pub modes: Modes,
    /// Watch the root natively and rescan only what changed (else every check is a full
    /// rescan).
    pub watch: bool,
    /// Files at least this large that already exist at a path are received as deltas against
    /// the existing file (`None`: always whole files).
    pub delta_minimum: Option<u64>,
    /// Where the watch makes its barrier files (outside the root).
    pub watch_directory: PathBuf,
    /// Rescan the whole tree every time (scan mode `full`), even when the watcher says
    /// what changed; the watcher still tells when to.
    pub full_scans: bool,
}

impl LocalOptions {
    /// Returns options with defaults and the given staging directory.
    pub fn new(staging_directory: PathBuf) -> LocalOptions {
        LocalOptions {
            watch_directory: staging_directory.with_extension("watch"),
            scan: ScanOptions::default(),
            staging_directory,
            read_only: false,
            modes: Modes::default(),
            watch: false,
            delta_minimum: Some(DELTA_MINIMUM),
            full_scans: false,
        }
    }
}

/// An endpoint over a local directory (or single file).
///
/// Holds the digest cache of the latest scan (to avoid rehashing) and the scan the current
/// cycle uses (stage and transition check against it; transition consumes it).
#[derive(Debug)]
pub struct LocalEndpoint {
    root: PathBuf,
    options: LocalOptions,
    /// Records of the most recent scan, used to skip hashing unchanged files.
    cache: Cache,
    /// The endpoint's view of the root: the latest scan, updated by rescans of what the
    /// watcher reported and by this endpoint's own transitions. `None`: a full scan is needed.
    view: Option<Arc<Snapshot>>,
    /// Whether `view` changed since the last `scan` handed it out.
    changed: bool,
    /// The view's [`Endpoint::version`]: a new one whenever its content changes (its own
    /// transitions included).
    version: u64,
    /// The directories read again since the last `scan` (`None`: unknown, after a full scan
    /// that found a change or this endpoint's own transitions).
    reread: Option<BTreeSet<String>>,
    /// What `reread` was when the last `scan` returned ([`Endpoint::changed_directories`]).
    scan_changes: Option<BTreeSet<String>>,
    /// Whether a scan happened since the last transition (so `cache` describes this cycle).
    scanned: bool,
    staging: Staging,
    /// The native watch, when `options.watch` is set and it could be established.
    watcher: Option<Watcher>,
    /// Why there is no watch (changes are found by full rescans), if there is none.
    watch_problem: Option<String>,
    /// Fallbacks from the watch to a full rescan, and the latest one's cause.
    fallbacks: (u64, Option<String>),
    /// When the watch was last (re-)established or attempted.
    watch_attempt: Option<Instant>,
    /// Full scans done so far (the first one included).
    full_scans: u64,
}

/// How long a failed watch waits before it is attempted again.
const WATCH_RETRY: Duration = Duration::from_secs(10);

impl LocalEndpoint {
    /// Returns an endpoint for `root` (which need not exist yet).
    pub fn new(root: PathBuf, options: LocalOptions) -> LocalEndpoint {
        let staging = Staging::new(options.staging_directory.clone());
        LocalEndpoint {
            root,
            options,
            cache: Cache::default(),
            view: None,
            changed: false,
            version: crate::endpoint::next_version(),
            reread: None,
            scan_changes: None,
            scanned: false,
            staging,
            watcher: None,
            watch_problem: None,
            fallbacks: (0, None),
            watch_attempt: None,
            full_scans: 0,
        }
    }

    /// Full scans done so far (the first one included); the others were accelerated.
    pub fn full_scans(&self) -> u64 {
        self.full_scans
    }

    /// Returns the native watcher, if one is running (tests use it to stall events).
    #[doc(hidden)]
    pub fn watcher(&self) -> Option<&Watcher> {
        self.watcher.as_ref()
    }

    /// Starts the native watch if it is wanted and not running (at most every
    /// [`WATCH_RETRY`] after a failure). A new watch invalidates the view: events from before
    /// it are lost.
    fn ensure_watcher(&mut self) {
        if !self.options.watch || self.watcher.is_some() {
            return;
        }
        if self.watch_attempt.is_some_and(|at| at.elapsed() < WATCH_RETRY) {
            return;
        }
        self.watch_attempt = Some(Instant::now());
        let barrier = self.options.watch_directory.clone();
        match Watcher::new(&self.root, &barrier) {
            Ok(watcher) => {
                self.watcher = Some(watcher);
                self.watch_problem = None;
            }
            Err(problem) => self.watch_problem = Some(problem),
        }
        self.view = None;
    }

    /// Brings the view up to date: from the watcher's report when there is a trusted one,
    /// else by a full scan. `barrier`: first wait for every event queued so far.
    fn refresh(&mut self, barrier: bool) -> EndpointResult<()> {
        self.ensure_watcher();
        let Some(watcher) = &self.watcher else { return self.full_scan() };
        if barrier {
            watcher.barrier();
        }
        let pending = watcher.take();
        if pending.rescan || pending.rewatch {
            // Watches may be missing for directories whose events were lost.
            if let Err(problem) = watcher.watch_root(pending.lost || pending.rewatch) {
                self.watcher = None;
                self.watch_problem = Some(problem);
            }
            // A root that appeared (the first cycle created it) is expected, not trouble.
            if pending.reason.is_some() {
                self.fallbacks.0 += 1;
                self.fallbacks.1 = pending.reason;
            }
            return self.full_scan();
        }
        if self.options.full_scans {
            return self.full_scan();
        }
        if pending.dirty.is_empty() && self.view.is_some() {
            return Ok(());
        }
        let previous = self.view.take().map(Arc::unwrap_or_clone).unwrap_or_default();
        let rescanned = scan::rescan(
            &self.root,
            &self.options.scan,
            previous,
            &mut self.cache,
            &pending.dirty,
            &pending.created,
            &|path| watcher.watch_directory(path),
        );
        match rescanned {
            Some(rescan) => {
                self.changed |= rescan.changed;
                if rescan.changed {
                    self.version = crate::endpoint::next_version();
                    if let Some(reread) = &mut self.reread {
                        reread.extend(rescan.read);
                    }
                }
                self.view = Some(Arc::new(rescan.snapshot));
                Ok(())
            }
            None => self.full_scan(),
        }
    }

    /// Replaces the view with a full scan.
    fn full_scan(&mut self) -> EndpointResult<()> {
        let snapshot = scan::scan_into(&self.root, &self.options.scan, &mut self.cache)?;
        self.full_scans += 1;
        let previous = self.view.take();
        // No previous view: nothing to compare with, so assume a change.
        if previous.is_none_or(|view| view.content != snapshot.content) {
            self.changed = true;
            self.version = crate::endpoint::next_version();
            self.reread = None;
        }
        self.view = Some(Arc::new(snapshot));
        Ok(())
    }

    /// Records a transition's results in the view, so that the events it caused find nothing
    /// new; drops the cache records of files it removed.
    /// `replaced` holds each change's path and what the scan saw there.
    fn apply_to_view(&mut self, replaced: &[Change], results: &[Option<Entry>]) {
        if replaced.is_empty() {
            return;
        }
        let Some(view) = &mut self.view else { return };
        self.version = crate::endpoint::next_version();
        // What the transitions replaced lies in their paths' parents.
        if let Some(reread) = &mut self.reread {
            reread.extend(replaced.iter().map(|change| parent_path(&change.path).to_owned()));
        }
        // The cycle's own reference is gone by now, so this does not copy.
        let view = Arc::make_mut(view);
        for (change, result) in replaced.iter().zip(results) {
            let path = &change.path;
            if let Some(old) = &change.old {
                forget_removed(&mut self.cache, path, old, result.as_ref());
            }
            // A change of a directory's bits reports the bits it has now (and no children).
            let applied = if change.is_permissions_only() {
                let bits = mutagen_reconcile::directory_permissions(result.as_ref());
                apply_change(&mut view.content, &Change::permissions(path.clone(), None, bits))
                    .map(drop)
            } else {
                replace_at(&mut view.content, path, result.clone()).map(drop)
            };
            if applied.is_err() {
                self.view = None;
                return;
            }
        }
        *view = match view.content.take() {
            Some(content) => scan::summarize(content, &self.cache),
            None => Snapshot::default(),
        };
    }

    /// Returns the root.
    pub fn root(&self) -> &std::path::Path {
        &self.root
    }

    /// Returns the digest cache of the latest scan, for callers that keep it across runs.
    pub fn cache(&self) -> &Cache {
        &self.cache
    }

    /// Seeds the digest cache (saved by an earlier run): files whose metadata still match
    /// their records are not hashed again. Stage and transition still require a fresh scan.
    pub fn set_cache(&mut self, cache: Cache) {
        self.cache = cache;
    }

    fn require_scan(&self, operation: &'static str) -> EndpointResult<()> {
        if self.options.read_only {
            return Err(EndpointError::ReadOnly { operation });
        }
        if !self.scanned {
            return Err(EndpointError::NotScanned { operation });
        }
        Ok(())
    }

    /// Opens the regular file at a root-relative path, without following links.
    fn open(&self, path: &str) -> std::io::Result<std::fs::File> {
        fsutil::open_below(&self.root, path)
    }

    /// Adds the signature of the file currently at the request's path, if it is worth a delta.
    fn with_base(&self, mut request: StageRequest) -> StageRequest {
        let Some(minimum) = self.options.delta_minimum else { return request };
        // Only a file the latest scan saw, and large enough, can serve: the new files (all of
        // an initial sync) cost no failed open.
        if self.cache.records.get(&request.path).is_none_or(|record| record.size < minimum) {
            return request;
        }
        let Ok(file) = self.open(&request.path) else { return request };
        match file.metadata() {
            Ok(metadata) if metadata.is_file() && metadata.len() >= minimum => {
                request.base = rsync::signature(file, metadata.len()).ok();
            }
            _ => {}
        }
        request
    }

    /// Supplies one file; `Unavailable` if it cannot be read.
    fn supply_one(
        opener: &mut fsutil::Opener<'_>,
        request: &StageRequest,
        buffer: &mut [u8],
        sink: &mut dyn FnMut(Transmission) -> EndpointResult<()>,
    ) -> EndpointResult<()> {
        let mut file = match opener.open(&request.path) {
            Ok(file) => file,
            Err(e) => {
                let error = format!("unable to open file: {}", describe(&e));
                return sink(Transmission::Unavailable { request: request.clone(), error });
            }
        };
        let size = file.metadata().map(|m| m.len()).unwrap_or(0);
        sink(Transmission::Begin { request: request.clone(), size })?;
        if let Some(signature) = &request.base {
            return supply_delta(signature, file, sink);
        }
        loop {
            match file.read(buffer) {
                Ok(0) => return sink(Transmission::End),
                Ok(n) => sink(Transmission::Data(buffer[..n].to_vec()))?,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                // Ending the file here makes the receiver's digest check fail, so the partial
                // content is discarded and the transition reports the file as missing.
                Err(_) => return sink(Transmission::End),
            }
        }
    }
}

impl Endpoint for LocalEndpoint {
    fn wakeups(&self) -> Option<crossbeam_channel::Receiver<()>> {
        self.watcher.as_ref().map(Watcher::wakeups)
    }

    fn check(&mut self) -> EndpointResult<bool> {
        self.refresh(false)?;
        Ok(self.changed)
    }

    fn watch_problem(&self) -> Option<String> {
        if let Some(problem) = &self.watch_problem {
            return Some(format!("full rescans at the polling interval, not watching: {problem}"));
        }
        match &self.fallbacks {
            (0, _) => None,
            (count, reason) => Some(format!(
                "native (inotify); fell back to a full rescan {count} time{}, last because {}",
                if *count == 1 { "" } else { "s" },
                reason.as_deref().unwrap_or("events were lost")
            )),
        }
    }

    fn trusted(&self) -> bool {
        true
    }

    fn version(&self) -> Option<u64> {
        Some(self.version)
    }

    fn changed_directories(&self) -> Option<&BTreeSet<String>> {
        self.scan_changes.as_ref()
    }

    fn scan(&mut self) -> EndpointResult<Arc<Snapshot>> {
        self.refresh(true)?;
        self.scan_changes = self.reread.replace(BTreeSet::new());
        self.changed = false;
        self.scanned = true;
        Ok(self.view.clone().unwrap_or_default())
    }

    fn stage(&mut self, requests: Vec<StageRequest>) -> EndpointResult<Vec<StageRequest>> {
        self.require_scan("stage")?;
        // A previous round may have been cut off mid-file.
        self.staging.abort_receive();
        let wanted = requests.iter().map(|request| request.digest).collect();
        let local_copies = self.cache.paths_by_digest(&wanted);
        let mut seen = HashSet::new();
        let mut needed = Vec::new();
        for request in requests {
            if !seen.insert(request.digest) || self.staging.contains(&request.digest) {
                continue;
            }
            // A file with this content already exists in the root (a rename or a copy): stage
            // it from here instead of transferring it. The copy is hashed, so a file that
            // changed since the scan is not used.
            if let Some(path) = local_copies.get(&request.digest)
                && let Ok(file) = self.open(path)
                && self.staging.stage_from(file, request.digest)?
            {
                continue;
            }
            needed.push(self.with_base(request));
        }
        Ok(needed)
    }

    fn supply(
        &mut self,
        requests: &[StageRequest],
        sink: &mut dyn FnMut(Transmission) -> EndpointResult<()>,
    ) -> EndpointResult<()> {
        let mut buffer = vec![0u8; CHUNK];
        // Requests come in tree order, so consecutive ones mostly share their directory.
        let mut opener = fsutil::Opener::new(&self.root);
        requests.iter().try_for_each(|request| {
            LocalEndpoint::supply_one(&mut opener, request, &mut buffer, sink)
        })
    }

    fn receive(&mut self, transmission: Transmission) -> EndpointResult<()> {
        let base = match &transmission {
            Transmission::Begin { request, .. } if request.base.is_some() => {
                self.open(&request.path).ok()
            }
            _ => None,
        };
        self.staging.receive(transmission, base).map(|_| ())
    }

    fn transition(&mut self, changes: Vec<Change>) -> EndpointResult<TransitionResult> {
        self.require_scan("transition")?;
        self.scanned = false;
        // What the view needs afterwards: not the new content, which can be the whole tree.
        let replaced: Vec<Change> = changes
            .iter()
            .map(|change| {
                // A change of bits only keeps its (childless) `new`, which marks it as such.
                let new = change.new.as_ref().filter(|_| change.is_permissions_only()).cloned();
                Change { path: change.path.clone(), old: change.old.clone(), new }
            })
            .collect();
        let (result, placed) = transition::transition(
            &self.root,
            &self.cache,
            &mut self.staging,
            self.options.modes,
            changes,
        );
        // Files placed from verified staged content need no hashing by the next scan, unless
        // written within the racy window of the transition (and their sizes count in the
        // view's totals).
        self.cache.records.extend(placed);
        self.apply_to_view(&replaced, &result.results);
        self.staging.clear()?;
        Ok(result)
    }

    fn shutdown(&mut self) -> EndpointResult<()> {
        self.staging.clear()
    }
}

/// Sends `file` as operations against the receiver's base described by `signature`. A read
/// error ends the file early; the receiver's digest check then discards it.
fn supply_delta(
    signature: &Signature,
    file: std::fs::File,
    sink: &mut dyn FnMut(Transmission) -> EndpointResult<()>,
) -> EndpointResult<()> {
    let mut sink_error = None;
    let _ = rsync::deltify(signature, file, &mut |operation| {
        let transmission = match operation {
            rsync::Operation::Data(data) => Transmission::Data(data),
            rsync::Operation::Blocks { start, count } => Transmission::Blocks { start, count },
        };
        sink(transmission).map_err(|e| {
            sink_error = Some(e);
            std::io::Error::other("receiver failed")
        })
    });
    match sink_error {
        Some(error) => Err(error),
        None => sink(Transmission::End),
    }
}

/// Drops the cache records of the files under `path` in `old` that are not files in `now`.
fn forget_removed(cache: &mut Cache, path: &str, old: &Entry, now: Option<&Entry>) {
    match (old, now) {
        (Entry::File { .. }, Some(Entry::File { .. })) => {}
        (Entry::File { .. }, _) => {
            cache.records.remove(path);
        }
        (Entry::Directory(children), now) => {
            for (name, child) in children {
                let now_child = match now {
                    Some(Entry::Directory(now_children)) => now_children.get(name),
                    _ => None,
                };
                forget_removed(cache, &join_path(path, name), child, now_child);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Waits for a watching endpoint's wakeup (a polling one has none) and checks.
    fn changed_soon(endpoint: &mut LocalEndpoint) -> bool {
        if let Some(wakeups) = endpoint.wakeups() {
            let _ = wakeups.recv_timeout(Duration::from_secs(5));
        }
        endpoint.check().expect("check")
    }

    #[test]
    fn check_reports_changes_but_not_the_endpoints_own_transitions() {
        for watch in [false, true] {
            let dir = tempfile::tempdir().expect("tempdir");
            let root = dir.path().join("root");
            std::fs::create_dir(&root).expect("root");
            let mut options = LocalOptions::new(dir.path().join("staging"));
            options.watch = watch;
            let mut endpoint = LocalEndpoint::new(root.clone(), options);
            endpoint.scan().expect("scan");
            assert_eq!(endpoint.watcher().is_some(), watch);
            assert!(!endpoint.check().expect("check"), "nothing changed (watch: {watch})");

            std::fs::write(root.join("new"), "x").expect("write");
            assert!(changed_soon(&mut endpoint), "change not seen (watch: {watch})");
            let snapshot = endpoint.scan().expect("scan");
            assert_eq!(snapshot.files, 1);
            assert!(!endpoint.check().expect("check"), "a scan resets the flag");

            // Our own transition: a directory created by the endpoint.
            let change = Change {
                path: "made".into(),
                old: None,
                new: Some(Entry::Directory(Default::default())),
            };
            let result = endpoint.transition(vec![change]).expect("transition");
            assert!(result.problems.is_empty(), "{:?}", result.problems);
            assert!(root.join("made").is_dir());
            if watch {
                // Its events arrive, and the rescan they cause finds what the view expects.
                let _ = endpoint.wakeups().expect("wakeups").recv_timeout(Duration::from_secs(5));
            }
            assert!(!endpoint.check().expect("check"), "own transition seen as a change");
            assert_eq!(endpoint.scan().expect("scan").directories, 2);
        }
    }
}

//! [`LocalEndpoint`]: the in-process endpoint over a directory on this machine.

use std::collections::HashSet;
use std::io::Read;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use mutagen_reconcile::{Change, Digest, Entry};

use crate::endpoint::{
    Endpoint, EndpointError, EndpointResult, Snapshot, StageRequest, TransitionResult, Transmission,
};
use crate::fsutil::{self, describe};
use crate::rsync::{self, Signature};
use crate::scan::{self, Cache, ScanOptions};
use crate::staging::Staging;
use crate::transition::{self, Modes};

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
    /// How often `poll` rescans.
    pub poll_interval: Duration,
    /// Files at least this large that already exist at a path are received as deltas against
    /// the existing file (`None`: always whole files).
    pub delta_minimum: Option<u64>,
}

impl LocalOptions {
    /// Returns options with defaults and the given staging directory.
    pub fn new(staging_directory: PathBuf) -> LocalOptions {
        LocalOptions {
            scan: ScanOptions::default(),
            staging_directory,
            read_only: false,
            modes: Modes::default(),
            poll_interval: Duration::from_secs(10),
            delta_minimum: Some(DELTA_MINIMUM),
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
    /// A fingerprint of the most recent `scan`'s content, for `poll` to compare with (a copy
    /// of the tree would double the memory held per endpoint).
    last_fingerprint: Option<Digest>,
    /// Whether a scan happened since the last transition (so `cache` describes this cycle).
    scanned: bool,
    staging: Staging,
}

impl LocalEndpoint {
    /// Returns an endpoint for `root` (which need not exist yet).
    pub fn new(root: PathBuf, options: LocalOptions) -> LocalEndpoint {
        let staging = Staging::new(options.staging_directory.clone());
        LocalEndpoint {
            root,
            options,
            cache: Cache::default(),
            last_fingerprint: None,
            scanned: false,
            staging,
        }
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
        let location = fsutil::locate(&self.root, path)?;
        fsutil::open_file(&location.parent, location.name.as_str())
    }

    /// Adds the signature of the file currently at the request's path, if it is worth a delta.
    fn with_base(&self, mut request: StageRequest) -> StageRequest {
        let Some(minimum) = self.options.delta_minimum else { return request };
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
        &self,
        request: &StageRequest,
        buffer: &mut [u8],
        sink: &mut dyn FnMut(Transmission) -> EndpointResult<()>,
    ) -> EndpointResult<()> {
        let mut file = match self.open(&request.path) {
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
    /// Rescans every `poll_interval` (reusing cached digests) until the content differs from
    /// the last `scan`.
    fn poll(&mut self, timeout: Duration) -> EndpointResult<bool> {
        let deadline = Instant::now() + timeout;
        loop {
            let now = Instant::now();
            if now >= deadline {
                return Ok(false);
            }
            std::thread::sleep(self.options.poll_interval.min(deadline - now));
            let output = scan::scan(&self.root, &self.options.scan, &self.cache)?;
            self.cache = output.cache;
            if self.last_fingerprint != Some(fingerprint(output.snapshot.content.as_ref())) {
                return Ok(true);
            }
        }
    }

    fn scan(&mut self) -> EndpointResult<Snapshot> {
        let output = scan::scan(&self.root, &self.options.scan, &self.cache)?;
        self.cache = output.cache;
        self.last_fingerprint = Some(fingerprint(output.snapshot.content.as_ref()));
        self.scanned = true;
        Ok(output.snapshot)
    }

    fn stage(&mut self, requests: Vec<StageRequest>) -> EndpointResult<Vec<StageRequest>> {
        self.require_scan("stage")?;
        // A previous round may have been cut off mid-file.
        self.staging.abort_receive();
        let local_copies = self.cache.paths_by_digest();
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
        requests.iter().try_for_each(|request| self.supply_one(request, &mut buffer, sink))
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
        let (result, placed) = transition::transition(
            &self.root,
            &self.cache,
            &mut self.staging,
            self.options.modes,
            changes,
        );
        // Files placed from verified staged content need no hashing by the next scan.
        self.cache.records.extend(placed);
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

/// Returns a digest of a tree's structure and content: equal trees, equal fingerprints.
fn fingerprint(content: Option<&Entry>) -> Digest {
    fn feed_text(hasher: &mut blake3::Hasher, text: &str) {
        hasher.update(&(text.len() as u64).to_le_bytes());
        hasher.update(text.as_bytes());
    }
    fn feed(hasher: &mut blake3::Hasher, entry: &Entry) {
        match entry {
            Entry::Directory(children) => {
                hasher.update(b"d");
                hasher.update(&(children.len() as u64).to_le_bytes());
                for (name, child) in children {
                    feed_text(hasher, name);
                    feed(hasher, child);
                }
            }
            Entry::File { digest, executable } => {
                hasher.update(b"f");
                hasher.update(&digest.0);
                hasher.update(&[u8::from(*executable)]);
            }
            Entry::SymbolicLink { target } => {
                hasher.update(b"l");
                feed_text(hasher, target);
            }
            Entry::Untracked => {
                hasher.update(b"u");
            }
            Entry::Problematic { problem } => {
                hasher.update(b"p");
                feed_text(hasher, problem);
            }
        }
    }
    let mut hasher = blake3::Hasher::new();
    match content {
        None => {
            hasher.update(b"-");
        }
        Some(entry) => feed(&mut hasher, entry),
    }
    Digest(*hasher.finalize().as_bytes())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    #[test]
    fn fingerprints_tell_trees_apart() {
        let file = |d: u8, x: bool| Entry::File { digest: Digest([d; 32]), executable: x };
        let dir = |pairs: &[(&str, Entry)]| {
            let children: BTreeMap<_, _> =
                pairs.iter().map(|(n, e)| ((*n).to_owned(), e.clone())).collect();
            Entry::Directory(children)
        };
        let trees = [
            None,
            Some(dir(&[])),
            Some(dir(&[("a", file(1, false))])),
            Some(dir(&[("a", file(1, true))])),
            Some(dir(&[("b", file(1, false))])),
            Some(dir(&[("a", dir(&[]))])),
            Some(dir(&[("a", dir(&[])), ("b", dir(&[]))])),
            Some(dir(&[("ab", dir(&[]))])),
            Some(dir(&[("a", Entry::Untracked)])),
            Some(dir(&[("a", Entry::SymbolicLink { target: "x".into() })])),
            Some(dir(&[("a", Entry::Problematic { problem: "x".into() })])),
        ];
        let prints: Vec<Digest> = trees.iter().map(|t| fingerprint(t.as_ref())).collect();
        for (i, a) in prints.iter().enumerate() {
            for b in &prints[i + 1..] {
                assert_ne!(a, b);
            }
        }
        assert_eq!(fingerprint(trees[3].as_ref()), fingerprint(trees[3].clone().as_ref()));
    }

    #[test]
    fn poll_reports_a_change_and_times_out_without_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("root");
        std::fs::create_dir(&root).expect("root");
        let mut options = LocalOptions::new(dir.path().join("staging"));
        options.poll_interval = Duration::from_millis(5);
        let mut endpoint = LocalEndpoint::new(root.clone(), options);
        endpoint.scan().expect("scan");
        assert!(!endpoint.poll(Duration::from_millis(30)).expect("poll"), "nothing changed");
        std::fs::write(root.join("new"), "x").expect("write");
        assert!(endpoint.poll(Duration::from_secs(5)).expect("poll"), "change not seen");
    }
}

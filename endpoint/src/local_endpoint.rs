//! [`LocalEndpoint`]: the in-process endpoint over a directory on this machine.

use std::collections::HashSet;
use std::io::Read;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use mutagen_reconcile::{Change, Entry};

use crate::endpoint::{
    Endpoint, EndpointError, EndpointResult, Snapshot, StageRequest, TransitionResult, Transmission,
};
use crate::fsutil::{self, describe};
use crate::scan::{self, Cache, ScanOptions};
use crate::staging::Staging;
use crate::transition::{self, Modes};

/// Size of the chunks a local endpoint supplies.
const CHUNK: usize = 1 << 20;

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
    /// The content of the most recent `scan`, for `poll` to compare with.
    last_content: Option<Option<Entry>>,
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
            last_content: None,
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

    /// Supplies one file; `Unavailable` if it cannot be read.
    fn supply_one(
        &self,
        request: &StageRequest,
        buffer: &mut [u8],
        sink: &mut dyn FnMut(Transmission) -> EndpointResult<()>,
    ) -> EndpointResult<()> {
        let opened = fsutil::locate(&self.root, &request.path)
            .and_then(|location| fsutil::open_file(&location.parent, location.name.as_str()));
        let mut file = match opened {
            Ok(file) => file,
            Err(e) => {
                let error = format!("unable to open file: {}", describe(&e));
                return sink(Transmission::Unavailable { request: request.clone(), error });
            }
        };
        let size = file.metadata().map(|m| m.len()).unwrap_or(0);
        sink(Transmission::Begin { request: request.clone(), size })?;
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
            if self.last_content.as_ref() != Some(&output.snapshot.content) {
                return Ok(true);
            }
        }
    }

    fn scan(&mut self) -> EndpointResult<Snapshot> {
        let output = scan::scan(&self.root, &self.options.scan, &self.cache)?;
        self.cache = output.cache;
        self.last_content = Some(output.snapshot.content.clone());
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
            if let Some(path) = local_copies.get(&request.digest) {
                let opened = fsutil::locate(&self.root, path).and_then(|location| {
                    fsutil::open_file(&location.parent, location.name.as_str())
                });
                if let Ok(file) = opened
                    && self.staging.stage_from(file, request.digest)?
                {
                    continue;
                }
            }
            needed.push(request);
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
        self.staging.receive(transmission).map(|_| ())
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

//! Fixtures for end-to-end tests: a pair of real temporary roots driven by a
//! [`Synchronizer`], and a comparable view of what is on disk.

pub mod dockerd;
pub mod podman;
pub mod sshd;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use mutagen_endpoint::synchronizer::CycleReport;
use mutagen_endpoint::{Endpoint, LocalEndpoint, LocalOptions, ScanOptions, Synchronizer};
use mutagen_reconcile::Mode;

/// What is at one path on disk, for comparisons.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Node {
    /// A directory.
    Directory,
    /// A file: BLAKE3 of its content (hex) and whether it is executable.
    File(String, bool),
    /// A symbolic link and its target.
    Link(String),
}

/// A root's content: relative path → node (the root itself is not listed).
pub type Tree = BTreeMap<String, Node>;

/// Reads everything under `root` (which must exist) without following links.
pub fn read_tree(root: &Path) -> Tree {
    let mut tree = Tree::new();
    read_into(root, "", &mut tree);
    tree
}

fn read_into(dir: &Path, prefix: &str, tree: &mut Tree) {
    for entry in fs::read_dir(dir).expect("readable directory") {
        let entry = entry.expect("directory entry");
        let name = entry.file_name().into_string().expect("utf-8 name in test tree");
        let path = if prefix.is_empty() { name } else { format!("{prefix}/{name}") };
        let metadata = fs::symlink_metadata(entry.path()).expect("metadata");
        let node = if metadata.is_dir() {
            read_into(&entry.path(), &path, tree);
            Node::Directory
        } else if metadata.file_type().is_symlink() {
            let target = fs::read_link(entry.path()).expect("link");
            Node::Link(target.to_str().expect("utf-8 target").to_owned())
        } else {
            let content = fs::read(entry.path()).expect("file");
            let executable = metadata.permissions().mode() & 0o111 != 0;
            Node::File(blake3::hash(&content).to_hex().to_string(), executable)
        };
        tree.insert(path, node);
    }
}

/// Returns the node a file with `content` has.
pub fn file_node(content: &[u8], executable: bool) -> Node {
    Node::File(blake3::hash(content).to_hex().to_string(), executable)
}

/// Returns `length` deterministic pseudo-random bytes (xorshift64), different for each seed:
/// content that compresses badly and never matches by accident.
pub fn pseudo_random(length: usize, seed: u64) -> Vec<u8> {
    let mut state = seed | 1;
    (0..length)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

/// Writes `content` at `relative` under `root`, creating parents.
pub fn write(root: &Path, relative: &str, content: impl AsRef<[u8]>) {
    let path = root.join(relative);
    fs::create_dir_all(path.parent().expect("parent")).expect("create parents");
    fs::write(path, content).expect("write file");
}

/// Two real roots and the engine between them.
pub struct Pair {
    /// Holds both roots and the staging directories.
    pub dir: tempfile::TempDir,
    /// The alpha root.
    pub alpha: PathBuf,
    /// The beta root (absent until something creates it).
    pub beta: PathBuf,
    /// The session state.
    pub synchronizer: Synchronizer,
    /// Alpha's endpoint.
    pub alpha_endpoint: LocalEndpoint,
    /// Beta's endpoint.
    pub beta_endpoint: LocalEndpoint,
}

impl Pair {
    /// Returns a pair with an existing, empty alpha and no beta.
    pub fn new(mode: Mode) -> Pair {
        Pair::with_scan(mode, ScanOptions::default())
    }

    /// Like [`Pair::new`], with both endpoints watching their roots natively.
    pub fn watched(mode: Mode) -> Pair {
        Pair::with_options(mode, ScanOptions::default(), true)
    }

    /// [`Pair::watched`] if `watched`, else [`Pair::new`].
    pub fn watched_if(mode: Mode, watched: bool) -> Pair {
        Pair::with_options(mode, ScanOptions::default(), watched)
    }

    /// Like [`Pair::new`], with scan options (ignores, symbolic link mode).
    pub fn with_scan(mode: Mode, scan: ScanOptions) -> Pair {
        Pair::with_options(mode, scan, false)
    }

    fn with_options(mode: Mode, scan: ScanOptions, watch: bool) -> Pair {
        let dir = tempfile::tempdir().expect("tempdir");
        let (alpha, beta) = (dir.path().join("alpha"), dir.path().join("beta"));
        fs::create_dir(&alpha).expect("alpha");
        let endpoint = |root: &Path, side: &str, read_only: bool| {
            let mut options = LocalOptions::new(dir.path().join(format!("staging-{side}")));
            options.scan = scan.clone();
            options.read_only = read_only;
            options.watch = watch;
            LocalEndpoint::new(root.to_path_buf(), options)
        };
        let alpha_endpoint = endpoint(&alpha, "alpha", !mode.is_bidirectional());
        let beta_endpoint = endpoint(&beta, "beta", false);
        Pair {
            synchronizer: Synchronizer::new(mode),
            alpha,
            beta,
            alpha_endpoint,
            beta_endpoint,
            dir,
        }
    }

    /// Runs one cycle.
    pub fn cycle(&mut self) -> CycleReport {
        self.try_cycle().expect("cycle")
    }

    /// Runs one cycle, returning its error.
    pub fn try_cycle(&mut self) -> Result<CycleReport, mutagen_endpoint::CycleError> {
        self.synchronizer.cycle(&mut self.alpha_endpoint, &mut self.beta_endpoint)
    }

    /// Runs cycles until one needs no other; returns all reports. Panics after 10.
    pub fn converge(&mut self) -> Vec<CycleReport> {
        let mut reports = Vec::new();
        for _ in 0..10 {
            let report = self.cycle();
            let done = !report.needs_another_cycle();
            reports.push(report);
            if done {
                return reports;
            }
        }
        panic!("no convergence after 10 cycles: {:#?}", reports.last());
    }

    /// Cycles with `hook` run on beta's endpoint right before its transition.
    pub fn cycle_with_beta_hook(&mut self, hook: impl FnMut(&Path) + Send) -> CycleReport {
        let root = self.beta.clone();
        let mut beta = Intercept { inner: &mut self.beta_endpoint, root, hook };
        self.synchronizer.cycle(&mut self.alpha_endpoint, &mut beta).expect("cycle")
    }
}

/// An endpoint that runs `hook` before each transition: the user acting mid-cycle.
struct Intercept<'a, F> {
    inner: &'a mut LocalEndpoint,
    root: PathBuf,
    hook: F,
}

impl<F: FnMut(&Path) + Send> Endpoint for Intercept<'_, F> {
    fn check(&mut self) -> mutagen_endpoint::EndpointResult<bool> {
        self.inner.check()
    }
    fn scan(
        &mut self,
    ) -> mutagen_endpoint::EndpointResult<std::sync::Arc<mutagen_endpoint::Snapshot>> {
        self.inner.scan()
    }
    fn stage(
        &mut self,
        requests: Vec<mutagen_endpoint::StageRequest>,
    ) -> mutagen_endpoint::EndpointResult<Vec<mutagen_endpoint::StageRequest>> {
        self.inner.stage(requests)
    }
    fn supply(
        &mut self,
        requests: &[mutagen_endpoint::StageRequest],
        sink: &mut dyn FnMut(
            mutagen_endpoint::Transmission,
        ) -> mutagen_endpoint::EndpointResult<()>,
    ) -> mutagen_endpoint::EndpointResult<()> {
        self.inner.supply(requests, sink)
    }
    fn receive(
        &mut self,
        t: mutagen_endpoint::Transmission,
    ) -> mutagen_endpoint::EndpointResult<()> {
        self.inner.receive(t)
    }
    fn transition(
        &mut self,
        changes: Vec<mutagen_reconcile::Change>,
    ) -> mutagen_endpoint::EndpointResult<mutagen_endpoint::TransitionResult> {
        (self.hook)(&self.root);
        self.inner.transition(changes)
    }
    fn shutdown(&mut self) -> mutagen_endpoint::EndpointResult<()> {
        self.inner.shutdown()
    }
}

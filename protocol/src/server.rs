//! The agent's side: serve one endpoint over a byte stream.
//!
//! # Theory of operation
//! - A reader thread decodes requests from the input stream into a channel. When the stream
//!   ends (the daemon closed it, the link was cut) it calls `on_close` at once, even while a
//!   request is being served: the agent binary exits there, so nothing is left running on the
//!   remote host.
//! - The serving thread takes requests one by one, and also the endpoint's watch wakeups,
//!   which it forwards as one [`Response::Wakeup`] between two checks.
//! - A heartbeat thread writes [`Response::Heartbeat`] every [`HEARTBEAT`] while a request is
//!   being served, so the daemon can tell a long scan from a dead agent.
//! - All writes go through one mutex-guarded buffered writer; a response is flushed as soon as
//!   it is complete.

use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use mutagen_core::PermissionsMode;
use mutagen_endpoint::{Endpoint, Ignorer, LocalEndpoint, LocalOptions, ScanOptions, Snapshot};

use crate::ProtocolError;
use crate::codec::{MAX_FRAME, read_frame, write_frame};
use crate::compression::{self, Compression};
use crate::messages::{
    EndpointOptions, Hello, MAGIC, PROTOCOL_VERSION, Request, Response, SnapshotTransfer,
};

/// How often a busy agent says it is alive.
pub const HEARTBEAT: Duration = Duration::from_secs(5);

type SharedWriter = Arc<Mutex<BufWriter<Box<dyn Write + Send>>>>;

fn send(writer: &SharedWriter, response: &Response, flush: bool) -> Result<(), ProtocolError> {
    let mut guard = writer.lock().unwrap_or_else(PoisonError::into_inner);
    write_frame(&mut *guard, response)?;
    if flush {
        guard.flush().map_err(ProtocolError::Io)?;
    }
    Ok(())
}

/// Where the agent keeps its files on its host.
#[derive(Clone, Debug)]
pub struct AgentEnvironment {
    /// The login user's home directory.
    pub home: PathBuf,
    /// The user database (`/etc/passwd`'s text), for `~user` roots.
    pub passwd: String,
    /// The agent's data directory (`~/.mutagen`); staging areas live below it.
    pub data: PathBuf,
}

impl AgentEnvironment {
    /// Reads the environment of this process: `$HOME` and `/etc/passwd`.
    ///
    /// # Errors
    /// A message when `HOME` is not set.
    pub fn from_process() -> Result<AgentEnvironment, String> {
        let home = std::env::var_os("HOME")
            .filter(|home| !home.is_empty())
            .map(PathBuf::from)
            .ok_or("HOME is not set on the remote host")?;
        let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
        let data = home.join(".mutagen");
        Ok(AgentEnvironment { home, passwd, data })
    }
}

/// Returns the absolute root a user's root text names on this host: `~` and `~/x` are below
/// the home directory, `~user/x` below that user's home (from the user database, so that a
/// static agent needs no name-service library), a relative path is relative to the home
/// directory. The result is normalized lexically.
///
/// # Errors
/// A lowercase message for an empty root, an unknown user or the file-system root.
pub fn resolve_root(root: &str, environment: &AgentEnvironment) -> Result<PathBuf, String> {
    if root.is_empty() {
        return Err("the remote path is empty".to_owned());
    }
    let path = if let Some(rest) = root.strip_prefix('~') {
        let (user, rest) = rest.split_once('/').unwrap_or((rest, ""));
        let home = if user.is_empty() {
            environment.home.clone()
        } else {
            home_of(user, &environment.passwd)
                .ok_or_else(|| format!("unable to resolve ~{user}: no such user"))?
        };
        home.join(rest)
    } else {
        environment.home.join(root)
    };
    let normal = mutagen_core::normalize(&path);
    if normal.file_name().is_none() {
        return Err(format!("root {root:?} is the file-system root"));
    }
    Ok(normal)
}

fn home_of(user: &str, passwd: &str) -> Option<PathBuf> {
    passwd.lines().find_map(|line| {
        let fields: Vec<&str> = line.split(':').collect();
        (fields.len() >= 7 && fields[0] == user).then(|| PathBuf::from(fields[5]))
    })
}

fn valid_staging_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Builds the endpoint an [`EndpointOptions`] asks for.
///
/// # Errors
/// A lowercase message naming what is wrong.
pub fn open_endpoint(
    options: &EndpointOptions,
    environment: &AgentEnvironment,
) -> Result<(LocalEndpoint, PathBuf, Vec<PathBuf>), String> {
    if !valid_staging_name(&options.staging_name) {
        return Err(format!("invalid staging name {:?}", options.staging_name));
    }
    let root = resolve_root(&options.root, environment)?;
    let staging = environment.data.join("staging").join(&options.staging_name);
    let (endpoint, scratch) = local_endpoint(root.clone(), &staging, options)?;
    Ok((endpoint, root, scratch))
}

/// Builds a local endpoint over `root` (absolute) as `options` say, staging in
/// `default_staging` or next to the root (see [`mutagen_endpoint::staging::placement`]);
/// returns it with the directories it makes for itself (staging, and the watch's barrier
/// directory, which stays beside `default_staging` whatever the stage mode: never in the
/// root). The agent and the daemon's local endpoints are made the same way.
///
/// # Errors
/// A lowercase message for invalid ignore patterns, or a root that is a symbolic link (a
/// scan would refuse it; refusing it here makes `create` fail instead of the first cycle).
pub fn local_endpoint(
    root: PathBuf,
    default_staging: &Path,
    options: &EndpointOptions,
) -> Result<(LocalEndpoint, Vec<PathBuf>), String> {
    if std::fs::symlink_metadata(&root).is_ok_and(|m| m.file_type().is_symlink()) {
        return Err(format!(
            "root {} is a symbolic link: use the path it points to",
            root.display()
        ));
    }
    let ignorer = Ignorer::with_syntax(&options.ignores, options.ignore_syntax, options.ignore_vcs)
        .map_err(|e| e.to_string())?;
    let staging = mutagen_endpoint::staging::placement(
        &root,
        default_staging,
        &options.staging_name,
        options.stage_mode,
    );
    let mut local = LocalOptions::new(staging.clone());
    local.scan = ScanOptions {
        symlink_mode: options.symlink_mode,
        ignorer: Arc::new(ignorer),
        vcs_ignored: options.vcs_ignored,
        permissions_mode: options.permissions_mode,
    };
    local.read_only = options.read_only;
    local.watch = options.watch;
    local.full_scans = options.full_scans;
    let resolve = |kind, spec: &Option<String>, what: &str| {
        spec.as_deref()
            .map(|spec| mutagen_core::accounts::resolve(kind, spec))
            .transpose()
            .map_err(|e| format!("unable to use the default {what}: {e}"))
    };
    local.modes = mutagen_endpoint::transition::Modes {
        file: options.file_mode.unwrap_or(local.modes.file),
        directory: options.directory_mode.unwrap_or(local.modes.directory),
        manual: options.permissions_mode == PermissionsMode::Manual,
        owner: resolve(mutagen_core::accounts::Account::User, &options.owner, "owner")?,
        group: resolve(mutagen_core::accounts::Account::Group, &options.group, "group")?,
    };
    local.watch_directory = default_staging.with_extension("watch");
    let made = vec![staging, local.watch_directory.clone()];
    Ok((LocalEndpoint::new(root, local), made))
}

/// Returns this agent's hello.
pub fn hello(build: String) -> Hello {
    Hello { protocol: PROTOCOL_VERSION, version: env!("CARGO_PKG_VERSION").to_owned(), build }
}

/// Serves one endpoint: writes the magic and `hello`, reads the daemon's choice of
/// compression, then answers requests until the input ends. `on_close` runs on the reader thread as soon as the input ends or breaks.
///
/// # Errors
/// The first failure to write to the daemon (the stream is gone).
pub fn serve(
    mut input: Box<dyn Read + Send>,
    output: Box<dyn Write + Send>,
    hello: &Hello,
    environment: &AgentEnvironment,
    on_close: Box<dyn FnOnce() + Send>,
) -> Result<(), ProtocolError> {
    let mut output = output;
    output.write_all(&MAGIC).map_err(ProtocolError::Io)?;
    write_frame(&mut output, hello)?;
    output.flush().map_err(ProtocolError::Io)?;
    // The daemon's choice of compression, then everything else through it.
    let Some(compression) = read_frame::<Compression>(&mut input, 16)? else {
        on_close();
        return Ok(());
    };
    let mut input = compression::reader(input, compression).map_err(ProtocolError::Io)?;
    let output = compression::writer(output, compression).map_err(ProtocolError::Io)?;
    let writer: SharedWriter = Arc::new(Mutex::new(BufWriter::with_capacity(1 << 18, output)));
    let (requests, incoming) = crossbeam_channel::bounded::<Request>(16);
    let scratch: Arc<Mutex<Vec<PathBuf>>> = Arc::default();
    let leftovers = scratch.clone();
    std::thread::Builder::new()
        .name("agent-reader".into())
        .spawn(move || {
            while let Ok(Some(request)) = read_frame::<Request>(&mut input, MAX_FRAME) {
                if requests.send(request).is_err() {
                    break;
                }
            }
            // The agent is about to end without unwinding: its staging area and watch
            // directory (copies and markers only, never the user's files) go first.
            for path in leftovers.lock().unwrap_or_else(PoisonError::into_inner).iter() {
                let _ = std::fs::remove_dir_all(path);
            }
            on_close();
        })
        .map_err(ProtocolError::Io)?;
    let busy = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicBool::new(false));
    {
        let (writer, busy, done) = (writer.clone(), busy.clone(), done.clone());
        std::thread::Builder::new()
            .name("agent-heartbeat".into())
            .spawn(move || {
                while !done.load(Ordering::Relaxed) {
                    std::thread::sleep(HEARTBEAT);
                    if busy.load(Ordering::Relaxed)
                        && send(&writer, &Response::Heartbeat, true).is_err()
                    {
                        break;
                    }
                }
            })
            .map_err(ProtocolError::Io)?;
    }
    let server = Server {
        scratch,
        writer,
        endpoint: None,
        receive_error: None,
        wakeup_sent: false,
        sent: None,
    };
    let result = server.run(&incoming, &busy, environment);
    done.store(true, Ordering::Relaxed);
    result
}

/// Answers `requests` in order as [`serve`] does, writing the answers to `output`, on this
/// thread and without the heartbeat (the fuzz target's way in).
pub(crate) fn answer(
    requests: Vec<Request>,
    output: Box<dyn Write + Send>,
    environment: &AgentEnvironment,
) -> Result<(), ProtocolError> {
    let mut server = Server {
        scratch: Arc::default(),
        writer: Arc::new(Mutex::new(BufWriter::new(output))),
        endpoint: None,
        receive_error: None,
        wakeup_sent: false,
        sent: None,
    };
    for request in requests {
        server.handle(request, environment)?;
    }
    Ok(())
}

struct Server {
    /// Directories of ours to remove when the input ends (staging, watch barriers).
    scratch: Arc<Mutex<Vec<PathBuf>>>,
    writer: SharedWriter,
    endpoint: Option<LocalEndpoint>,
    /// The first failure of a `Receive` since the last answered request.
    receive_error: Option<String>,
    /// Whether a wakeup was sent since the last check or scan.
    wakeup_sent: bool,
    /// The last snapshot sent and its generation, for deltas. Holding it makes the endpoint's
    /// next in-place update of its view copy the tree once.
    sent: Option<(u64, Arc<Snapshot>)>,
}

impl Server {
    fn run(
        mut self,
        incoming: &crossbeam_channel::Receiver<Request>,
        busy: &AtomicBool,
        environment: &AgentEnvironment,
    ) -> Result<(), ProtocolError> {
        loop {
            let wakeups = self.endpoint.as_ref().and_then(Endpoint::wakeups);
            let request = match &wakeups {
                Some(wakeups) => crossbeam_channel::select! {
                    recv(incoming) -> request => request,
                    recv(wakeups) -> _ => {
                        if !self.wakeup_sent {
                            self.wakeup_sent = true;
                            send(&self.writer, &Response::Wakeup, true)?;
                        }
                        continue;
                    }
                },
                None => incoming.recv(),
            };
            let Ok(request) = request else { return Ok(()) };
            busy.store(true, Ordering::Relaxed);
            let result = self.handle(request, environment);
            busy.store(false, Ordering::Relaxed);
            result?;
        }
    }

    fn handle(
        &mut self,
        request: Request,
        environment: &AgentEnvironment,
    ) -> Result<(), ProtocolError> {
        if let Request::Receive(transmission) = request {
            if self.receive_error.is_none() {
                let result = match &mut self.endpoint {
                    Some(endpoint) => {
                        endpoint.receive(transmission).map_err(|e| mutagen_core::render_error(&e))
                    }
                    None => Err("receive requested before initialization".to_owned()),
                };
                self.receive_error = result.err();
            }
            return Ok(());
        }
        if let Some(error) = self.receive_error.take() {
            return send(&self.writer, &Response::Error(error), true);
        }
        if let Request::Initialize(options) = &request {
            let response = match open_endpoint(options, environment) {
                Ok((endpoint, root, made)) => {
                    self.endpoint = Some(endpoint);
                    let mut scratch = self.scratch.lock().unwrap_or_else(PoisonError::into_inner);
                    *scratch = made;
                    Response::Initialized { root: root.display().to_string() }
                }
                Err(message) => Response::Error(message),
            };
            return send(&self.writer, &response, true);
        }
        let Some(endpoint) = &mut self.endpoint else {
            let message = "request before initialization".to_owned();
            return send(&self.writer, &Response::Error(message), true);
        };
        let response = match request {
            Request::Initialize(_) | Request::Receive(_) => return Ok(()),
            Request::Check => {
                self.wakeup_sent = false;
                endpoint.check().map(|changed| Response::Checked {
                    changed,
                    watch_problem: endpoint.watch_problem(),
                })
            }
            Request::Scan { base } => {
                self.wakeup_sent = false;
                let sent = self.sent.take();
                endpoint.scan().map(|snapshot| {
                    let transfer = transfer(sent.as_ref(), base, &snapshot);
                    let generation = match &transfer {
                        SnapshotTransfer::Full { generation, .. }
                        | SnapshotTransfer::Delta { generation, .. } => *generation,
                    };
                    self.sent = Some((generation, snapshot));
                    Response::Scanned {
                        snapshot: transfer,
                        watch_problem: endpoint.watch_problem(),
                    }
                })
            }
            Request::Stage(requests) => endpoint.stage(requests).map(Response::Staged),
            Request::Supply(requests) => {
                let writer = &self.writer;
                let mut sink = |transmission| {
                    send(writer, &Response::Transmission(transmission), false)
                        .map_err(|e| mutagen_endpoint::EndpointError::Protocol(e.to_string()))
                };
                endpoint.supply(&requests, &mut sink).map(|()| Response::Supplied)
            }
            Request::Transition(changes) => {
                endpoint.transition(changes).map(Response::Transitioned)
            }
            Request::Shutdown => endpoint.shutdown().map(|()| Response::Done),
            Request::Ping => Ok(Response::Done),
        };
        let response =
            response.unwrap_or_else(|error| Response::Error(mutagen_core::render_error(&error)));
        send(&self.writer, &response, true)
    }
}

/// Returns `snapshot` as changes since `sent` when the daemon holds that generation (`base`),
/// whole otherwise.
fn transfer(
    sent: Option<&(u64, Arc<Snapshot>)>,
    base: Option<u64>,
    snapshot: &Snapshot,
) -> SnapshotTransfer {
    let generation = sent.map_or(1, |(generation, _)| generation + 1);
    match sent {
        Some((sent_generation, previous)) if base == Some(*sent_generation) => {
            let changes =
                mutagen_reconcile::diff(previous.content.as_ref(), snapshot.content.as_ref())
                    .into_iter()
                    .map(|change| (change.path, change.new))
                    .collect();
            SnapshotTransfer::Delta {
                base: *sent_generation,
                generation,
                changes,
                directories: snapshot.directories,
                files: snapshot.files,
                symbolic_links: snapshot.symbolic_links,
                total_file_size: snapshot.total_file_size,
                problems: snapshot.problems.clone(),
            }
        }
        _ => SnapshotTransfer::Full { generation, snapshot: snapshot.clone() },
    }
}

/// Returns the hex BLAKE3 digest of a file (an agent's build identity).
///
/// # Errors
/// The file cannot be read.
pub fn build_of(path: &Path) -> std::io::Result<String> {
    let mut hasher = blake3::Hasher::new();
    hasher.update_reader(std::fs::File::open(path)?)?;
    Ok(hasher.finalize().to_hex().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn environment() -> AgentEnvironment {
        AgentEnvironment {
            home: PathBuf::from("/home/me"),
            passwd: "root:x:0:0:root:/root:/bin/sh\nsync:x:1000:1000::/srv/sync:/bin/sh\n".into(),
            data: PathBuf::from("/home/me/.mutagen"),
        }
    }

    #[test]
    fn roots_resolve_against_homes() {
        let env = environment();
        for (root, expected) in [
            ("~", "/home/me"),
            ("~/", "/home/me"),
            ("~/src/app", "/home/me/src/app"),
            ("src/../app", "/home/me/app"),
            ("/abs/./x", "/abs/x"),
            ("~sync", "/srv/sync"),
            ("~sync/project", "/srv/sync/project"),
            ("~root/x", "/root/x"),
        ] {
            assert_eq!(resolve_root(root, &env).expect(root), Path::new(expected), "{root}");
        }
        for (root, message) in [
            ("", "empty"),
            ("~nobody/x", "no such user"),
            ("/", "file-system root"),
            ("~/../..", "file-system root"),
            ("../..", "file-system root"),
        ] {
            let error = resolve_root(root, &env).expect_err(root);
            assert!(error.contains(message), "{root}: {error}");
        }
    }

    #[test]
    fn staging_names_are_plain() {
        assert!(valid_staging_name("sync_abc-alpha"));
        for bad in ["", "../x", "a/b", ".", "a b"] {
            assert!(!valid_staging_name(bad), "{bad}");
        }
    }
}

//! The daemon's side: [`RemoteEndpoint`], the [`Endpoint`] contract served by an agent.
//!
//! # Theory of operation
//! - [`handshake`] reads the agent's [`MAGIC`] (skipping what a login shell may print first)
//!   and its [`Hello`]; the transport compares the build and reinstalls on a mismatch.
//! - A reader thread decodes every frame from the agent. Wakeups go to the endpoint's wakeup
//!   channel; everything else to a response channel. When the stream ends the thread drops
//!   the wakeup sender, so a controller waiting for changes notices a dead link at once.
//! - Each call writes its request and waits for the answer on the response channel. An agent
//!   that sends nothing at all (not even a heartbeat) for [`SILENCE`] is considered lost; a
//!   [`Canceller`] ends the wait at once. After any failure the endpoint is broken: every
//!   later call fails, as the [`Endpoint`] contract allows, and the controller reconnects.
//!
//! # Untrusted input
//! Everything the agent sends is checked before it is used: frames are bounded
//! ([`MAX_FRAME`]), snapshots are validated by the synchronizer (this endpoint is not
//! `trusted`), staged requests must be among those asked, supply streams must answer the
//! requests in order with no more data than announced, and delta signatures must be sane.
//! Staged content is verified by digest by the receiving endpoint before it is placed.

use std::collections::{BTreeSet, HashSet};
use std::io::{BufWriter, Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use mutagen_endpoint::{
    Endpoint, EndpointError, EndpointResult, Snapshot, StageRequest, TransitionResult, Transmission,
};
use mutagen_reconcile::{Change, Entry, apply_change};

use crate::ProtocolError;
use crate::codec::{CHUNK, MAX_FRAME, read_frame, write_frame};
use crate::compression::{self, Compression};
use crate::messages::{EndpointOptions, Hello, MAGIC, Request, Response, SnapshotTransfer};

/// How long an agent may stay completely silent while a request is outstanding.
pub const SILENCE: Duration = Duration::from_secs(30);

/// How many bytes before the magic are tolerated (a login banner).
const PREAMBLE_LIMIT: usize = 64 * 1024;

/// The largest hello frame.
const HELLO_LIMIT: u32 = 4096;

/// A byte stream to an agent process, as a transport opened it.
pub struct AgentStream {
    /// What the agent writes.
    pub reader: Box<dyn Read + Send>,
    /// What the agent reads.
    pub writer: Box<dyn Write + Send>,
    /// Kept as long as the stream is used; dropping it ends the agent process's transport
    /// (the agent exits when its input closes).
    pub guard: Box<dyn Send>,
    /// The tail of what the agent wrote to its standard error, for error messages.
    pub stderr: OutputTail,
}

/// The last bytes a process wrote to a stream, shared between the thread that collects them
/// and whoever reports an error.
#[derive(Clone, Debug, Default)]
pub struct OutputTail(Arc<Mutex<Vec<u8>>>);

impl OutputTail {
    /// How much is kept.
    pub const LIMIT: usize = 4096;

    /// Appends output, keeping only the last [`OutputTail::LIMIT`] bytes.
    pub fn push(&self, bytes: &[u8]) {
        let mut tail = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        tail.extend_from_slice(bytes);
        let excess = tail.len().saturating_sub(Self::LIMIT);
        tail.drain(..excess);
    }

    /// Returns the output so far, trimmed, lossily decoded.
    pub fn text(&self) -> String {
        let tail = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        String::from_utf8_lossy(&tail).trim().to_owned()
    }
}

impl std::fmt::Debug for AgentStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AgentStream")
    }
}

/// Reads the agent's magic and hello.
///
/// # Errors
/// [`ProtocolError::Closed`] when the stream ends first (with what was printed instead),
/// [`ProtocolError::Handshake`] for a stream that does not start like an agent's.
pub fn handshake(reader: &mut dyn Read) -> Result<Hello, ProtocolError> {
    let mut seen = Vec::new();
    let mut byte = [0u8; 1];
    while !seen.ends_with(&MAGIC) {
        match reader.read(&mut byte) {
            Ok(0) => {
                let printed = String::from_utf8_lossy(&seen).trim().to_owned();
                return Err(ProtocolError::Closed(printed));
            }
            Ok(_) => seen.push(byte[0]),
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
            Err(error) => return Err(ProtocolError::Io(error)),
        }
        if seen.len() > PREAMBLE_LIMIT + MAGIC.len() {
            return Err(ProtocolError::Handshake("no agent greeting in the first 64 KiB".into()));
        }
    }
    match read_frame::<Hello>(reader, HELLO_LIMIT) {
        Ok(Some(hello)) => Ok(hello),
        Ok(None) => Err(ProtocolError::Closed(String::new())),
        Err(error) => Err(ProtocolError::Handshake(format!("unreadable greeting: {error}"))),
    }
}

/// Ends a [`RemoteEndpoint`]'s current and future calls from another thread.
#[derive(Clone, Debug)]
pub struct Canceller {
    responses: Sender<Result<Response, ProtocolError>>,
    cancelled: Arc<AtomicBool>,
}

impl Canceller {
    /// Makes the call in flight (if any) and every later call fail at once.
    pub fn cancel(&self) {
        self.cancelled.store(true, Ordering::SeqCst);
        let _ = self.responses.try_send(Err(ProtocolError::Cancelled));
    }
}

/// An endpoint served by an agent over an [`AgentStream`].
pub struct RemoteEndpoint {
    writer: BufWriter<Box<dyn Write + Send>>,
    responses: Receiver<Result<Response, ProtocolError>>,
    canceller: Canceller,
    wakeups: Receiver<()>,
    watch_problem: Option<String>,
    /// Where the agent runs, for messages (`user@host`).
    description: String,
    /// The root as the agent resolved it.
    root: String,
    broken: bool,
    /// The round trip measured after initialization.
    round_trip: Duration,
    /// The last snapshot received and its generation (deltas apply to it).
    snapshot: Option<(u64, Arc<Snapshot>)>,
    /// Its [`Endpoint::version`]: a new one for a whole snapshot or a delta with changes.
    version: u64,
    /// The parents of the paths the last delta changed ([`Endpoint::changed_directories`];
    /// `None` after a whole snapshot).
    delta_directories: Option<BTreeSet<String>>,
    /// Bytes written to and read from the agent (frames), for measurements.
    traffic: Arc<Traffic>,
    silence: Duration,
    stderr: OutputTail,
    _guard: Box<dyn Send>,
}

impl std::fmt::Debug for RemoteEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteEndpoint").field("description", &self.description).finish()
    }
}

impl RemoteEndpoint {
    /// Chooses the `compression` of the stream and initializes the endpoint on an agent that
    /// has completed its [`handshake`].
    ///
    /// # Errors
    /// The agent refused the options (an invalid root, say) or the stream failed.
    pub fn initialize(
        stream: AgentStream,
        options: EndpointOptions,
        description: String,
        compression: Compression,
    ) -> Result<RemoteEndpoint, ProtocolError> {
        let AgentStream { reader, writer, guard, stderr } = stream;
        let traffic = Arc::new(Traffic::default());
        let reader = Counted { inner: reader, count: traffic.clone() };
        let mut writer = Counted { inner: writer, count: traffic.clone() };
        write_frame(&mut writer, &compression)?;
        writer.flush().map_err(ProtocolError::Io)?;
        let mut reader =
            compression::reader(Box::new(reader), compression).map_err(ProtocolError::Io)?;
        let writer =
            compression::writer(Box::new(writer), compression).map_err(ProtocolError::Io)?;
        let (responses_sender, responses) = crossbeam_channel::bounded(64);
        let (wakeup_sender, wakeups) = crossbeam_channel::bounded(1);
        let reader_responses = responses_sender.clone();
        std::thread::Builder::new()
            .name("remote-endpoint-reader".into())
            .spawn(move || {
                loop {
                    match read_frame::<Response>(&mut reader, MAX_FRAME) {
                        Ok(Some(Response::Wakeup)) => {
                            let _ = wakeup_sender.try_send(());
                        }
                        Ok(Some(response)) => {
                            if reader_responses.send(Ok(response)).is_err() {
                                return;
                            }
                        }
                        Ok(None) => {
                            let _ =
                                reader_responses.send(Err(ProtocolError::Closed(String::new())));
                            return;
                        }
                        Err(error) => {
                            let _ = reader_responses.send(Err(error));
                            return;
                        }
                    }
                }
            })
            .map_err(ProtocolError::Io)?;
        let canceller =
            Canceller { responses: responses_sender, cancelled: Arc::new(AtomicBool::new(false)) };
        let mut endpoint = RemoteEndpoint {
            writer: BufWriter::with_capacity(1 << 18, writer),
            responses,
            canceller,
            wakeups,
            watch_problem: None,
            description,
            root: String::new(),
            broken: false,
            round_trip: Duration::ZERO,
            snapshot: None,
            version: mutagen_endpoint::next_version(),
            delta_directories: None,
            traffic,
            silence: SILENCE,
            stderr,
            _guard: guard,
        };
        match endpoint.call(&Request::Initialize(options)) {
            Ok(Response::Initialized { root }) => {
                endpoint.root = root;
                let started = std::time::Instant::now();
                match endpoint.call(&Request::Ping) {
                    Ok(Response::Done) => endpoint.round_trip = started.elapsed(),
                    Ok(other) => return Err(ProtocolError::Unexpected(describe(&other))),
                    Err(error) => return Err(ProtocolError::Refused(error.to_string())),
                }
                Ok(endpoint)
            }
            Ok(other) => Err(ProtocolError::Unexpected(describe(&other))),
            Err(error) => Err(ProtocolError::Refused(error.to_string())),
        }
    }

    /// Returns the round trip to the agent, measured once after initialization.
    pub fn round_trip(&self) -> Duration {
        self.round_trip
    }

    /// Returns the root as the agent resolved it (absolute, on its host).
    pub fn root(&self) -> &str {
        &self.root
    }

    /// Returns the bytes sent to and received from the agent so far.
    pub fn traffic(&self) -> (u64, u64) {
        (self.traffic.sent.load(Ordering::Relaxed), self.traffic.received.load(Ordering::Relaxed))
    }

    /// Returns a handle that cancels this endpoint's calls from another thread.
    pub fn canceller(&self) -> Canceller {
        self.canceller.clone()
    }

    /// Sets how long the agent may stay silent (tests shorten it).
    pub fn set_silence(&mut self, silence: Duration) {
        self.silence = silence;
    }

    fn fail(&mut self, error: ProtocolError) -> EndpointError {
        self.broken = true;
        let stderr = self.stderr.text();
        let mut message =
            format!("connection to the agent on {} failed: {error}", self.description);
        if !stderr.is_empty() {
            message.push_str(&format!(" (agent said: {})", tail(&stderr, 512)));
        }
        EndpointError::Remote(message)
    }

    fn write(&mut self, request: &Request, flush: bool) -> EndpointResult<()> {
        if self.broken || self.canceller.cancelled.load(Ordering::SeqCst) {
            return Err(self.fail(ProtocolError::Cancelled));
        }
        let mut result = write_frame(&mut self.writer, request);
        if flush && result.is_ok() {
            result = self.writer.flush().map_err(ProtocolError::Io);
        }
        result.map_err(|error| self.fail(error))
    }

    /// Reads the next response that is not a heartbeat.
    fn next(&mut self) -> EndpointResult<Response> {
        loop {
            match self.responses.recv_timeout(self.silence) {
                Ok(Ok(Response::Heartbeat)) => {}
                Ok(Ok(Response::Error(message))) => return Err(EndpointError::Remote(message)),
                Ok(Ok(response)) => return Ok(response),
                Ok(Err(error)) => return Err(self.fail(error)),
                Err(RecvTimeoutError::Timeout) => {
                    let silence = self.silence;
                    return Err(self.fail(ProtocolError::Silent(silence)));
                }
                Err(RecvTimeoutError::Disconnected) => {
                    return Err(self.fail(ProtocolError::Closed(String::new())));
                }
            }
        }
    }

    fn call(&mut self, request: &Request) -> EndpointResult<Response> {
        self.write(request, true)?;
        self.next()
    }

    fn unexpected(&mut self, response: &Response) -> EndpointError {
        self.fail(ProtocolError::Unexpected(describe(response)))
    }
}

/// Byte counters of a connection.
#[derive(Debug, Default)]
struct Traffic {
    sent: std::sync::atomic::AtomicU64,
    received: std::sync::atomic::AtomicU64,
}

/// Counts what passes through a stream (reads as received, writes as sent).
struct Counted<T> {
    inner: T,
    count: Arc<Traffic>,
}

impl<T: Read> Read for Counted<T> {
    fn read(&mut self, buffer: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buffer)?;
        self.count.received.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

impl<T: Write> Write for Counted<T> {
    fn write(&mut self, buffer: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buffer)?;
        self.count.sent.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

fn tail(text: &str, limit: usize) -> &str {
    let mut start = text.len().saturating_sub(limit);
    while !text.is_char_boundary(start) {
        start += 1;
    }
    &text[start..]
}

fn describe(response: &Response) -> String {
    let name = match response {
        Response::Initialized { .. } => "initialized",
        Response::Checked { .. } => "checked",
        Response::Scanned { .. } => "scanned",
        Response::Staged(_) => "staged",
        Response::Transmission(_) => "transmission",
        Response::Supplied => "supplied",
        Response::Transitioned(_) => "transitioned",
        Response::Done => "done",
        Response::Error(_) => "error",
        Response::Wakeup => "wakeup",
        Response::Heartbeat => "heartbeat",
    };
    format!("an unexpected {name} message")
}

/// Checks a delta signature an agent computed for its base file: the supplier divides by the
/// block size and allocates per block.
fn valid_signature(request: &StageRequest) -> bool {
    let Some(signature) = &request.base else { return true };
    let block = signature.block_size;
    (1..=(1 << 24)).contains(&block)
        && (signature.blocks.is_empty() || (1..=block).contains(&signature.last_block_size))
        && signature.blocks.len() <= (1 << 24)
}

/// Tracks a supply stream against the requests it must answer, in order.
struct SupplyCheck<'a> {
    requests: &'a [StageRequest],
    next: usize,
    /// Bytes still allowed for the open file (announced size minus data so far).
    open: Option<u64>,
}

impl SupplyCheck<'_> {
    fn accept(&mut self, transmission: &Transmission) -> Result<(), String> {
        let expected = self.requests.get(self.next);
        match (transmission, self.open) {
            (Transmission::Begin { request, size }, None) => {
                let asked = expected.ok_or("a file nobody asked for")?;
                if (&request.path, request.digest) != (&asked.path, asked.digest) {
                    return Err(format!(
                        "{:?} out of order (expected {:?})",
                        request.path, asked.path
                    ));
                }
                self.open = Some(*size);
            }
            (Transmission::Unavailable { request, .. }, None) => {
                let asked = expected.ok_or("a file nobody asked for")?;
                if (&request.path, request.digest) != (&asked.path, asked.digest) {
                    return Err(format!(
                        "{:?} out of order (expected {:?})",
                        request.path, asked.path
                    ));
                }
                self.next += 1;
            }
            (Transmission::Data(data), Some(left)) => {
                let length = data.len() as u64;
                if data.len() > CHUNK || length > left {
                    return Err("more data than the file's announced size".to_owned());
                }
                self.open = Some(left - length);
            }
            (Transmission::Blocks { .. }, Some(_)) => {}
            (Transmission::End, Some(_)) => {
                self.open = None;
                self.next += 1;
            }
            _ => return Err("a transmission outside of a file".to_owned()),
        }
        Ok(())
    }
}

impl Endpoint for RemoteEndpoint {
    fn wakeups(&self) -> Option<Receiver<()>> {
        Some(self.wakeups.clone())
    }

    fn check(&mut self) -> EndpointResult<bool> {
        match self.call(&Request::Check)? {
            Response::Checked { changed, watch_problem } => {
                self.watch_problem = watch_problem;
                Ok(changed)
            }
            other => Err(self.unexpected(&other)),
        }
    }

    fn watch_problem(&self) -> Option<String> {
        self.watch_problem.clone()
    }

    fn version(&self) -> Option<u64> {
        Some(self.version)
    }

    fn changed_directories(&self) -> Option<&BTreeSet<String>> {
        self.delta_directories.as_ref()
    }

    fn scan(&mut self) -> EndpointResult<Arc<Snapshot>> {
        let held = self.snapshot.take();
        let base = held.as_ref().map(|(generation, _)| *generation);
        match self.call(&Request::Scan { base })? {
            Response::Scanned { snapshot, watch_problem } => {
                self.watch_problem = watch_problem;
                let (generation, snapshot) = match snapshot {
                    SnapshotTransfer::Full { generation, snapshot } => {
                        self.version = mutagen_endpoint::next_version();
                        self.delta_directories = None;
                        (generation, Arc::new(snapshot))
                    }
                    SnapshotTransfer::Delta {
                        base,
                        generation,
                        changes,
                        directories,
                        files,
                        symbolic_links,
                        total_file_size,
                        problems,
                    } => {
                        let Some((held_generation, mut snapshot)) =
                            held.filter(|(g, _)| *g == base)
                        else {
                            let message =
                                format!("a delta against snapshot {base}, which was never sent");
                            return Err(self.fail(ProtocolError::Unexpected(message)));
                        };
                        debug_assert_eq!(held_generation, base);
                        // The synchronizer released its copy after the last cycle: no clone.
                        let updated = Arc::make_mut(&mut snapshot);
                        if !changes.is_empty() {
                            self.version = mutagen_endpoint::next_version();
                        }
                        self.delta_directories = Some(
                            changes
                                .iter()
                                .map(|(path, _)| mutagen_reconcile::parent_path(path).to_owned())
                                .collect(),
                        );
                        for (path, new) in changes {
                            // A directory where a directory was: only its bits changed (a
                            // difference never replaces a directory with a directory).
                            let current = updated.content.as_ref().and_then(|tree| tree.get(&path));
                            let old = match (current, &new) {
                                (Some(Entry::Directory(_)), Some(Entry::Directory(_))) => {
                                    Some(Entry::empty_directory())
                                }
                                _ => None,
                            };
                            let change = Change { path, old, new };
                            if let Err(error) = apply_change(&mut updated.content, &change) {
                                let message = format!("a delta that does not apply: {error}");
                                return Err(self.fail(ProtocolError::Unexpected(message)));
                            }
                        }
                        updated.directories = directories;
                        updated.files = files;
                        updated.symbolic_links = symbolic_links;
                        updated.total_file_size = total_file_size;
                        updated.problems = problems;
                        (generation, snapshot)
                    }
                };
                self.snapshot = Some((generation, snapshot.clone()));
                Ok(snapshot)
            }
            other => Err(self.unexpected(&other)),
        }
    }

    fn stage(&mut self, requests: Vec<StageRequest>) -> EndpointResult<Vec<StageRequest>> {
        let asked: HashSet<(String, mutagen_reconcile::Digest)> =
            requests.iter().map(|r| (r.path.clone(), r.digest)).collect();
        match self.call(&Request::Stage(requests))? {
            Response::Staged(needed) => {
                let mut seen = HashSet::new();
                for request in &needed {
                    let key = (request.path.clone(), request.digest);
                    if !asked.contains(&key) || !seen.insert(key) || !valid_signature(request) {
                        let message = format!("staged an unrequested file {:?}", request.path);
                        return Err(self.fail(ProtocolError::Unexpected(message)));
                    }
                }
                Ok(needed)
            }
            other => Err(self.unexpected(&other)),
        }
    }

    fn supply(
        &mut self,
        requests: &[StageRequest],
        sink: &mut dyn FnMut(Transmission) -> EndpointResult<()>,
    ) -> EndpointResult<()> {
        self.write(&Request::Supply(requests.to_vec()), true)?;
        let mut check = SupplyCheck { requests, next: 0, open: None };
        loop {
            match self.next()? {
                Response::Transmission(transmission) => {
                    if let Err(message) = check.accept(&transmission) {
                        return Err(self.fail(ProtocolError::Unexpected(message)));
                    }
                    if let Err(error) = sink(transmission) {
                        // The rest of the stream is still on its way: this connection cannot
                        // be used any more.
                        self.broken = true;
                        return Err(error);
                    }
                }
                Response::Supplied if check.next == requests.len() && check.open.is_none() => {
                    return Ok(());
                }
                Response::Supplied => {
                    let message = "a supply stream that ended early".to_owned();
                    return Err(self.fail(ProtocolError::Unexpected(message)));
                }
                other => return Err(self.unexpected(&other)),
            }
        }
    }

    fn receive(&mut self, transmission: Transmission) -> EndpointResult<()> {
        // Not flushed: receives are never answered, and the next request (the transition)
        // flushes them ahead of itself, so small files travel many to a write.
        self.write(&Request::Receive(transmission), false)
    }

    fn transition(&mut self, changes: Vec<Change>) -> EndpointResult<TransitionResult> {
        match self.call(&Request::Transition(changes))? {
            Response::Transitioned(result) => Ok(result),
            other => Err(self.unexpected(&other)),
        }
    }

    fn shutdown(&mut self) -> EndpointResult<()> {
        if self.broken {
            return Ok(());
        }
        match self.call(&Request::Shutdown)? {
            Response::Done => Ok(()),
            other => Err(self.unexpected(&other)),
        }
    }
}

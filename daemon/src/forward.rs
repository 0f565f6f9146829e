//! Forward sessions: one controller per session, which keeps a source listening and relays
//! each connection it accepts to a connection the destination makes.
//!
//! # Invariants
//! - A failed dial closes that one inbound connection, counts it and sets `last_error`; the
//!   session goes on. Only a failed transport (a link to an agent, a local listener that
//!   broke) ends the attempt; the controller then reconnects after a backoff (1 s doubling
//!   to 15 s, `MAX_BACKOFF`).
//! - Pausing, terminating or stopping the daemon closes the listener before it answers
//!   (a unix socket the session created is removed), and ends every open connection.
//! - Every lifecycle step is journaled before it is acknowledged; errors are journaled when
//!   their message changes (or once a minute when it repeats), so a client retrying against
//!   a dead destination cannot flood the journal.

use std::collections::HashMap;
use std::net::Shutdown;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use mutagen_forward::agent::Init;
use mutagen_forward::mux::{Incoming, Mux};
use mutagen_forward::relay::{Counters, relay};
use mutagen_forward::socket::{Connection, Listener, dial};
use mutagen_journal::{Event, ForwardState, Record, SessionLog};
use mutagen_session::forward::{ForwardSpec, ForwardUrl, SocketOptions, SocketSpec};
use tokio::sync::{mpsc, oneshot, watch};

use crate::connect::Connector;
use crate::protocol::{ForwardInfo, ForwardStatus};

/// The longest wait before reconnecting.
const MAX_BACKOFF: Duration = Duration::from_secs(15);

/// A repeated error is journaled again after this long.
const REPEAT_JOURNAL: Duration = Duration::from_secs(60);

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// An answer to a command: `Err` with a message for the user.
pub type Reply = oneshot::Sender<Result<(), String>>;

/// What the manager asks of a forward controller.
pub enum ForwardCommand {
    /// Stop forwarding.
    Pause(Reply),
    /// Forward again.
    Resume(Reply),
    /// Stop for good (journaled).
    Terminate(Reply),
    /// The daemon stops.
    Shutdown(oneshot::Sender<()>),
}

/// The manager's handle on a forward controller.
pub struct ForwardHandle {
    /// The session identifier.
    pub identifier: String,
    /// The latest description (counters are read when listed).
    info: Arc<Mutex<ForwardInfo>>,
    counters: Arc<Counters>,
    /// Commands to the controller.
    pub commands: mpsc::UnboundedSender<ForwardCommand>,
}

impl std::fmt::Debug for ForwardHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ForwardHandle")
            .field("identifier", &self.identifier)
            .finish_non_exhaustive()
    }
}

impl ForwardHandle {
    /// The session as listed now.
    pub fn info(&self) -> ForwardInfo {
        let mut info = lock(&self.info).clone();
        let counters = &self.counters;
        info.open_connections = counters.open.load(Ordering::Relaxed);
        info.total_connections = counters.total.load(Ordering::Relaxed);
        info.total_outbound_data = counters.outbound.load(Ordering::Relaxed);
        info.total_inbound_data = counters.inbound.load(Ordering::Relaxed);
        info.failed_connections = counters.failed_dials.load(Ordering::Relaxed);
        info
    }
}

/// Starts the controller of a loaded or created session; `listener` is a local source bound
/// already (at creation).
pub fn spawn(
    connector: Arc<Connector>,
    log: SessionLog,
    state: ForwardState,
    listener: Option<Listener>,
    notify: Arc<watch::Sender<u64>>,
) -> ForwardHandle {
    let info = Arc::new(Mutex::new(ForwardInfo {
        identifier: state.identifier.clone(),
        spec: state.spec.clone(),
        creation_time: state.creation_time,
        creating_version: state.creating_version.clone(),
        paused: state.paused,
        status: ForwardStatus::Disconnected,
        last_error: None,
        source_connected: false,
        destination_connected: false,
        open_connections: 0,
        total_connections: 0,
        total_outbound_data: 0,
        total_inbound_data: 0,
        failed_connections: 0,
    }));
    let counters = Arc::new(Counters::default());
    let (sender, commands) = mpsc::unbounded_channel();
    let controller = Controller {
        connector,
        log,
        state,
        info: info.clone(),
        counters: counters.clone(),
        notify,
        journaled_error: None,
    };
    let identifier = controller.state.identifier.clone();
    tokio::spawn(controller.run(commands, listener));
    ForwardHandle { identifier, info, counters, commands: sender }
}

/// Parses a stored endpoint.
fn parse(text: &str) -> Result<ForwardUrl, String> {
    ForwardUrl::parse(text, std::path::Path::new("/")).map_err(|e| e.to_string())
}

/// The socket an endpoint names, wherever it is.
fn socket_of(url: &ForwardUrl) -> &SocketSpec {
    match url {
        ForwardUrl::Local(spec)
        | ForwardUrl::Ssh { spec, .. }
        | ForwardUrl::Docker { spec, .. } => spec,
    }
}

/// Checks a new session's endpoints, and binds its source when it is local and the session
/// is not paused (so that `create` fails when the address cannot be listened on).
///
/// # Errors
/// A message naming the endpoint or the address.
pub fn check_new(spec: &ForwardSpec) -> Result<Option<Listener>, String> {
    let (source, destination) = (parse(&spec.source)?, parse(&spec.destination)?);
    if source == destination && matches!(source, ForwardUrl::Local(_)) {
        return Err(format!("the source and the destination are the same socket ({source})"));
    }
    match source {
        ForwardUrl::Local(socket) if !spec.paused => bind_local(&socket, &spec.socket).map(Some),
        _ => Ok(None),
    }
}

/// Binds a local source listener; `~` in a unix socket path is the daemon's home.
fn bind_local(spec: &SocketSpec, options: &SocketOptions) -> Result<Listener, String> {
    let home = std::env::var_os("HOME").map(std::path::PathBuf::from);
    Listener::bind(spec, options, home.as_deref())
}

/// Where accepted connections come from.
enum Source {
    Local(Listener),
    Remote { mux: Mux, incoming: Receiver<Incoming> },
}

/// Where they go.
enum Destination {
    Local(SocketSpec),
    Remote(Mux),
}

impl Destination {
    fn dial(&self) -> Result<Connection, String> {
        match self {
            Destination::Local(spec) => dial(spec, None),
            Destination::Remote(mux) => mux.open().map(Connection::Stream),
        }
    }
}

/// A connection the source accepted.
enum Inbound {
    Local(Connection),
    Remote(Incoming),
}

/// Open local sockets, to end every connection at once.
#[derive(Default)]
struct Active {
    next: AtomicU64,
    sockets: Mutex<HashMap<u64, Connection>>,
}

impl Active {
    /// Keeps a duplicate of a local socket; returns its key.
    fn track(&self, connection: &Connection) -> Option<u64> {
        let duplicate = match connection {
            Connection::Tcp(stream) => Connection::Tcp(stream.try_clone().ok()?),
            Connection::Unix(stream) => Connection::Unix(stream.try_clone().ok()?),
            Connection::Stream(_) => return None,
        };
        let key = self.next.fetch_add(1, Ordering::Relaxed);
        lock(&self.sockets).insert(key, duplicate);
        Some(key)
    }

    fn forget(&self, key: Option<u64>) {
        if let Some(key) = key {
            lock(&self.sockets).remove(&key);
        }
    }

    fn end_all(&self) {
        for (_, connection) in lock(&self.sockets).drain() {
            match connection {
                Connection::Tcp(stream) => {
                    let _ = stream.shutdown(Shutdown::Both);
                }
                Connection::Unix(stream) => {
                    let _ = stream.shutdown(Shutdown::Both);
                }
                Connection::Stream(_) => {}
            }
        }
    }
}

/// A running attempt: its threads, and how to stop them.
struct Running {
    stop: Sender<()>,
    /// The forwarding loop's end: `Err` when a transport failed.
    ended: oneshot::Receiver<Result<(), String>>,
    /// Failed dials, for the journal.
    dial_errors: mpsc::UnboundedReceiver<String>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Running {
    /// Stops the attempt and waits until the listener is closed and connections ended.
    async fn stop(mut self) {
        drop(self.stop);
        if let Some(thread) = self.thread.take() {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
    }
}

/// Relays connections until `stop` is dropped or a transport fails.
fn forward_loop(
    source: Source,
    destination: Destination,
    counters: &Arc<Counters>,
    dial_errors: &mpsc::UnboundedSender<String>,
    stop: &Receiver<()>,
) -> Result<(), String> {
    let destination = Arc::new(destination);
    let active = Arc::new(Active::default());
    let (inbound_sender, inbound) = crossbeam_channel::unbounded::<Result<Inbound, String>>();
    let mut source_closing = crossbeam_channel::never();
    let mut remote_source = None;
    let mut accepter = None;
    match source {
        Source::Local(listener) => {
            let stopper = listener.stopper();
            let thread =
                std::thread::Builder::new().name("forward-accept".into()).spawn(move || {
                    loop {
                        match listener.accept() {
                            Ok(Some(connection)) => {
                                if inbound_sender.send(Ok(Inbound::Local(connection))).is_err() {
                                    break;
                                }
                            }
                            Ok(None) => break,
                            Err(error) => {
                                let _ = inbound_sender.send(Err(error));
                                break;
                            }
                        }
                    }
                    // The listener (and a unix socket it created) goes here.
                    drop(listener);
                });
            let thread = thread.map_err(|e| format!("unable to start a thread: {e}"))?;
            accepter = Some((stopper, thread));
        }
        Source::Remote { mux, incoming } => {
            source_closing = mux.closing();
            let forwarder = inbound_sender;
            std::thread::Builder::new()
                .name("forward-incoming".into())
                .spawn(move || {
                    for pending in &incoming {
                        if forwarder.send(Ok(Inbound::Remote(pending))).is_err() {
                            break;
                        }
                    }
                })
                .map_err(|e| format!("unable to start a thread: {e}"))?;
            remote_source = Some(mux);
        }
    }
    let destination_closing = match &*destination {
        Destination::Remote(mux) => mux.closing(),
        Destination::Local(_) => crossbeam_channel::never(),
    };
    let result = loop {
        crossbeam_channel::select! {
            recv(stop) -> _ => break Ok(()),
            recv(source_closing) -> _ => {
                let reason = remote_source.as_ref().and_then(Mux::closed);
                break Err(format!("the source's link closed: {}", reason.unwrap_or_default()));
            }
            recv(destination_closing) -> _ => {
                let reason = match &*destination {
                    Destination::Remote(mux) => mux.closed(),
                    Destination::Local(_) => None,
                };
                break Err(format!("the destination's link closed: {}", reason.unwrap_or_default()));
            }
            recv(inbound) -> accepted => match accepted {
                Ok(Ok(inbound)) => {
                    let (destination, counters, active) =
                        (destination.clone(), counters.clone(), active.clone());
                    let dial_errors = dial_errors.clone();
                    let _ = std::thread::Builder::new().name("forward-connection".into()).spawn(
                        move || connection(inbound, &destination, &counters, &active, &dial_errors),
                    );
                }
                Ok(Err(error)) => break Err(error),
                Err(_) => break Err("the source stopped accepting".to_owned()),
            },
        }
    };
    if let Some((stopper, thread)) = accepter {
        stopper.stop();
        let _ = thread.join();
    }
    if let Some(mux) = &remote_source {
        mux.close("the forward session stopped");
    }
    if let Destination::Remote(mux) = &*destination {
        mux.close("the forward session stopped");
    }
    active.end_all();
    result
}

/// Serves one accepted connection: dials, then relays.
fn connection(
    inbound: Inbound,
    destination: &Destination,
    counters: &Arc<Counters>,
    active: &Active,
    dial_errors: &mpsc::UnboundedSender<String>,
) {
    counters.total.fetch_add(1, Ordering::Relaxed);
    let outgoing = match destination.dial() {
        Ok(outgoing) => outgoing,
        Err(error) => {
            counters.failed_dials.fetch_add(1, Ordering::Relaxed);
            if let Inbound::Remote(pending) = inbound {
                pending.refuse(&error);
            }
            let _ = dial_errors.send(error);
            return;
        }
    };
    let client = match inbound {
        Inbound::Local(connection) => connection,
        Inbound::Remote(pending) => Connection::Stream(pending.accept()),
    };
    let keys = [active.track(&client), active.track(&outgoing)];
    counters.open.fetch_add(1, Ordering::Relaxed);
    let _ = relay(client, outgoing, counters);
    counters.open.fetch_sub(1, Ordering::Relaxed);
    for key in keys {
        active.forget(key);
    }
}

struct Controller {
    connector: Arc<Connector>,
    log: SessionLog,
    state: ForwardState,
    info: Arc<Mutex<ForwardInfo>>,
    counters: Arc<Counters>,
    notify: Arc<watch::Sender<u64>>,
    /// The last error journaled, and when.
    journaled_error: Option<(String, Instant)>,
}

/// What the controller does after a command.
enum After {
    Continue,
    Exit,
}

impl Controller {
    fn publish(&self, change: impl FnOnce(&mut ForwardInfo)) {
        change(&mut lock(&self.info));
        self.notify.send_modify(|index| *index += 1);
    }

    fn status(&self, status: ForwardStatus, source: bool, destination: bool) {
        self.publish(|info| {
            info.status = status;
            info.source_connected = source;
            info.destination_connected = destination;
        });
    }

    /// Journals a lifecycle event and makes it durable.
    fn journal(&mut self, event: Event) -> Result<(), String> {
        let record = Record::now(0, event);
        self.log.append(&record).map_err(|e| e.to_string())?;
        self.log.journal().flush().map_err(|e| e.to_string())?;
        let mut state = Some(self.state.clone());
        ForwardState::step(&mut state, &record).map_err(|e| e.to_string())?;
        if let Some(state) = state {
            self.state = state;
        }
        Ok(())
    }

    /// Records an error: shown at once, journaled when it is news.
    fn error(&mut self, message: String) {
        tracing::warn!("forward session {}: {message}", self.state.identifier);
        self.publish(|info| info.last_error = Some(message.clone()));
        let repeated = self
            .journaled_error
            .as_ref()
            .is_some_and(|(last, at)| *last == message && at.elapsed() < REPEAT_JOURNAL);
        if !repeated {
            if let Err(error) = self.journal(Event::Error { message: message.clone() }) {
                tracing::error!("unable to journal an error of {}: {error}", self.state.identifier);
            }
            self.journaled_error = Some((message, Instant::now()));
        }
    }

    /// Applies a command (the attempt, if any, is stopped already).
    fn command(&mut self, command: ForwardCommand) -> After {
        match command {
            ForwardCommand::Pause(reply) => {
                let result = if self.state.paused { Ok(()) } else { self.journal(Event::Paused) };
                self.publish(|info| info.paused = true);
                let _ = reply.send(result);
                After::Continue
            }
            ForwardCommand::Resume(reply) => {
                let result = if self.state.paused { self.journal(Event::Resumed) } else { Ok(()) };
                self.journaled_error = None;
                self.publish(|info| {
                    info.paused = false;
                    info.last_error = None;
                });
                let _ = reply.send(result);
                After::Continue
            }
            ForwardCommand::Terminate(reply) => {
                let result = self.journal(Event::Terminated);
                let failed = result.is_err();
                let _ = reply.send(result);
                if failed { After::Continue } else { After::Exit }
            }
            ForwardCommand::Shutdown(done) => {
                let _ = done.send(());
                After::Exit
            }
        }
    }

    /// Sets up the source and the destination.
    async fn connect(&self, listener: Option<Listener>) -> Result<(Source, Destination), String> {
        let spec = &self.state.spec;
        self.status(ForwardStatus::ConnectingSource, false, false);
        let source = match parse(&spec.source)? {
            ForwardUrl::Local(socket) => match listener {
                Some(listener) => Source::Local(listener),
                None => {
                    let options = spec.socket.clone();
                    let bound = tokio::task::spawn_blocking(move || bind_local(&socket, &options))
                        .await
                        .map_err(|e| e.to_string())??;
                    Source::Local(bound)
                }
            },
            remote => {
                let init =
                    Init::Listen { spec: socket_of(&remote).clone(), options: spec.socket.clone() };
                let (mux, incoming) = self
                    .connector
                    .connect_forward(&remote, init, &spec.source_environment)
                    .await
                    .map_err(|e| format!("unable to listen at the source: {e}"))?;
                Source::Remote { mux, incoming }
            }
        };
        self.status(ForwardStatus::ConnectingDestination, true, false);
        let destination = match parse(&spec.destination)? {
            ForwardUrl::Local(socket) => Destination::Local(socket),
            remote => {
                let init = Init::Dial { spec: socket_of(&remote).clone() };
                let connected = self
                    .connector
                    .connect_forward(&remote, init, &spec.destination_environment)
                    .await;
                match connected {
                    Ok((mux, _)) => Destination::Remote(mux),
                    Err(error) => {
                        if let Source::Remote { mux, .. } = &source {
                            mux.close("the destination could not be reached");
                        }
                        return Err(format!("unable to reach the destination: {error}"));
                    }
                }
            }
        };
        Ok((source, destination))
    }

    fn start(&self, source: Source, destination: Destination) -> Result<Running, String> {
        let (stop, stopped) = crossbeam_channel::bounded::<()>(0);
        let (ended_sender, ended) = oneshot::channel();
        let (errors, dial_errors) = mpsc::unbounded_channel();
        let counters = self.counters.clone();
        let thread = std::thread::Builder::new()
            .name("forward".into())
            .spawn(move || {
                let result = forward_loop(source, destination, &counters, &errors, &stopped);
                let _ = ended_sender.send(result);
            })
            .map_err(|e| format!("unable to start a thread: {e}"))?;
        Ok(Running { stop, ended, dial_errors, thread: Some(thread) })
    }

    async fn run(
        mut self,
        mut commands: mpsc::UnboundedReceiver<ForwardCommand>,
        mut listener: Option<Listener>,
    ) {
        let mut backoff = Duration::from_secs(1);
        loop {
            if self.state.paused {
                // A listener bound for a paused session is not kept.
                listener = None;
                self.status(ForwardStatus::Disconnected, false, false);
                match commands.recv().await {
                    None => return,
                    Some(command) => match self.command(command) {
                        After::Continue => continue,
                        After::Exit => return,
                    },
                }
            }
            let connected = tokio::select! {
                connected = self.connect(listener.take()) => connected,
                command = commands.recv() => {
                    let Some(command) = command else { return };
                    match self.command(command) {
                        After::Continue => continue,
                        After::Exit => return,
                    }
                }
            };
            let running =
                connected.and_then(|(source, destination)| self.start(source, destination));
            let mut running = match running {
                Ok(running) => running,
                Err(error) => {
                    self.error(error);
                    self.status(ForwardStatus::Disconnected, false, false);
                    tokio::select! {
                        () = tokio::time::sleep(backoff) => {}
                        command = commands.recv() => {
                            let Some(command) = command else { return };
                            if let After::Exit = self.command(command) {
                                return;
                            }
                        }
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    continue;
                }
            };
            backoff = Duration::from_secs(1);
            self.status(ForwardStatus::Forwarding, true, true);
            self.publish(|info| info.last_error = None);
            let after = loop {
                tokio::select! {
                    ended = &mut running.ended => {
                        let error = match ended {
                            Ok(Ok(())) => "the forwarding stopped".to_owned(),
                            Ok(Err(error)) => error,
                            Err(_) => "the forwarding thread ended".to_owned(),
                        };
                        self.error(error);
                        break None;
                    }
                    Some(error) = running.dial_errors.recv() => self.error(error),
                    command = commands.recv() => break Some(command),
                }
            };
            running.stop().await;
            self.status(ForwardStatus::Disconnected, false, false);
            match after {
                None => tokio::time::sleep(Duration::from_millis(250)).await,
                Some(None) => return,
                Some(Some(command)) => {
                    if let After::Exit = self.command(command) {
                        return;
                    }
                }
            }
        }
    }
}

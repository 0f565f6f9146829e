//! One task per session: connect the endpoints, cycle, journal, wait for changes or commands.
//!
//! # Invariants
//! - `Engine::state` is always the fold of the session's journal (records are appended and
//!   folded by the same call), with the ancestor the synchronizer produced.
//! - A cycle's records are flushed before the next cycle begins; a lifecycle command's record
//!   is flushed before the command is answered.
//! - All file-system and journal work runs on blocking threads, never on the async executor.
//! - A periodic rescan that finds nothing to do (no transition, no ancestor change, the same
//!   conflicts and problems) is not journaled: it is a poll, not a cycle.
//! - Endpoints come from the [`Connector`] and are used only while both are connected. After
//!   any failed cycle or check both are shut down and dropped (a remote one's agent exits);
//!   the controller connects again after a backoff of 1 s doubling to 30 s. A paused session
//!   holds no connection. `connected` in the listing is whether the endpoint exists.
//! - Commands are read while connecting and while a cycle runs: a pause, terminate or
//!   shutdown then cancels the remote endpoints' calls instead of waiting for them, and every
//!   command is handled as soon as the cycle returned.
//!
//! # Theory of operation
//! `run` loops: serve queued commands; disconnect if paused; connect what is missing (unless
//! a backoff is running); cycle when woken; otherwise wait for a command, a delay, or (on a
//! blocking thread) for the endpoints' wakeups. The engine (journal log, state, endpoints)
//! moves to a blocking thread for every cycle, check and journal write, and comes back.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use mutagen_endpoint::{
    Allowances, CycleReport, Endpoint, Limits, Memo, Phase, Progress, Side, Synchronizer,
};
use mutagen_journal::{Event, JournalError, Record, SessionLog, SessionState};
use mutagen_session::WatchMode;
use tokio::sync::{mpsc, oneshot, watch};

use crate::connect::{Cancel, Connected, Connector};
use crate::protocol::{EndpointInfo, SessionInfo, Status};
use mutagen_transports::ssh::Prompter;

/// Cycles kept in the journal; older ones are compacted away.
pub const RETAIN_CYCLES: u64 = 1000;
/// The longest wait before retrying after an error (the wait doubles from 1 s).
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// A command's answer: `Err` carries a message for the user.
pub type Reply = oneshot::Sender<Result<(), String>>;

/// What the manager asks of a controller.
#[derive(Debug)]
pub enum Command {
    /// Run a full cycle; answer when it completed (or at once when `reply` is `None`).
    Flush(Option<Reply>),
    /// Stop synchronizing.
    Pause(Reply),
    /// Synchronize again; clears a halt. With a prompter, connect now (asking it what ssh
    /// needs to know) and answer once the attempt ended.
    Resume(Reply, Option<Prompter>),
    /// Forget the ancestor.
    Reset(Reply),
    /// Record the termination and stop.
    Terminate(Reply),
    /// Resolve conflicts by hand: `winner`'s version propagates at `roots` (every conflict
    /// when `None`); a cycle follows at once.
    Resolve {
        /// The side whose version wins.
        winner: Side,
        /// Conflict roots; `None`: all of them.
        roots: Option<Vec<String>>,
        /// The answer, once the resolution is journaled.
        reply: Reply,
    },
    /// Stop (daemon shutdown); the session resumes on the next start.
    Shutdown(oneshot::Sender<()>),
}

/// The parts of a session that move to a blocking thread for each cycle.
struct Engine {
    log: SessionLog,
    state: SessionState,
    /// Alpha's endpoint while connected.
    alpha: Option<Box<dyn Endpoint>>,
    /// Beta's endpoint while connected.
    beta: Option<Box<dyn Endpoint>>,
    /// The last cycle's memo, if it settled (see `Synchronizer::remembering`). Recording
    /// what changes the ancestor (a resolution, a reset) drops it.
    memo: Option<Memo>,
}

impl Engine {
    fn side(&mut self, side: Side) -> &mut Option<Box<dyn Endpoint>> {
        match side {
            Side::Alpha => &mut self.alpha,
            Side::Beta => &mut self.beta,
        }
    }

    /// Shuts both endpoints down and drops them; returns what failed.
    fn disconnect(&mut self) -> Vec<String> {
        let mut errors = Vec::new();
        for (side, endpoint) in [(Side::Alpha, self.alpha.take()), (Side::Beta, self.beta.take())] {
            if let Some(mut endpoint) = endpoint
                && let Err(error) = endpoint.shutdown()
            {
                errors.push(format!("{side}: {}", render_error(&error)));
            }
        }
        errors
    }

    /// Appends a record and folds it into the state.
    fn record(&mut self, event: Event) -> Result<(), JournalError> {
        // What changes the ancestor outside a cycle makes the last cycle's memo stale.
        let changes_ancestor = match &event {
            Event::ConflictResolved { .. } | Event::Reset => true,
            Event::AncestorUpdated { changes } => !changes.is_empty(),
            _ => false,
        };
        if changes_ancestor {
            self.memo = None;
        }
        let record = Record::now(self.state.cycle, event);
        let number = self.log.append(&record)?;
        SessionState::step_applied(&mut self.state, &record).map_err(|e| JournalError::Corrupt {
            session: self.state.identifier.clone(),
            directory: self.log.journal().directory().to_owned(),
            record: number,
            detail: e.to_string(),
        })
    }

    fn flush(&self) -> Result<(), JournalError> {
        self.log.journal().flush()
    }
}

/// The longest wait before a cycle that met the same problems is tried again.
const MAX_RETRY_BACKOFF: Duration = Duration::from_secs(60);

/// How many follow-up cycles a flush waits for at most after its own.
const FLUSH_FOLLOW_UPS: u32 = 3;

/// How a cycle ended.
enum Outcome {
    /// Committed to the journal.
    Committed { again: bool },
    /// Not journaled: the cycle met the same transition problems as the one before and
    /// changed nothing else; it is retried after a backoff or a change, not at once.
    Repeated,
    /// Nothing to do, nothing journaled.
    Quiet,
    /// The session halted.
    Halted(String),
    /// The cycle failed.
    Failed(String),
}

/// A running controller's shared view, for the manager.
#[derive(Debug)]
pub struct Handle {
    /// The session identifier.
    pub identifier: String,
    /// The latest published description.
    pub info: Arc<Mutex<SessionInfo>>,
    /// Commands to the controller.
    pub commands: mpsc::UnboundedSender<Command>,
}

/// Starts a controller for a loaded (or created) session; it connects the endpoints itself.
pub fn spawn(
    connector: Arc<Connector>,
    log: SessionLog,
    state: SessionState,
    connected: [Option<Connected>; 2],
    notify: Arc<watch::Sender<u64>>,
) -> Result<Handle, String> {
    let identifier = state.identifier.clone();
    let info = Arc::new(Mutex::new(describe(&state, Status::Disconnected, [false, false])));
    let (sender, commands) = mpsc::unbounded_channel();
    let controller = Controller {
        engine: Some(Engine { log, state, alpha: None, beta: None, memo: None }),
        connector,
        cancellers: [None, None],
        remote: [false, false],
        retry_due: false,
        asking: None,
        deferred: Vec::new(),
        info: info.clone(),
        notify,
        commands,
        waiters: Vec::new(),
        follow_ups: 0,
        status: Status::Disconnected,
        journal_next: true,
        failures: 0,
        repeats: 0,
        cycles_since_compaction: 0,
        watch_problems: [None, None],
    };
    tokio::spawn(controller.run(connected));
    Ok(Handle { identifier, info, commands: sender })
}

/// Returns a side's position in the controller's per-side arrays (alpha first).
fn index(side: Side) -> usize {
    usize::from(side == Side::Beta)
}

/// Builds the listed description of a session.
fn describe(state: &SessionState, status: Status, connected: [bool; 2]) -> SessionInfo {
    let side = |url: &str,
                environment: &mutagen_session::Environment,
                side: &mutagen_journal::SideState,
                connected| EndpointInfo {
        url: url.to_owned(),
        environment: environment.clone(),
        connected,
        state: side.clone(),
        watch_problem: None,
    };
    SessionInfo {
        identifier: state.identifier.clone(),
        name: state.spec.name.clone(),
        labels: state.spec.labels.clone(),
        creation_time: state.creation_time,
        creating_version: state.creating_version.clone(),
        configuration: (*state.spec.configuration).clone(),
        paused: state.paused,
        status,
        last_error: state.last_error.clone(),
        successful_cycles: state.successful_cycles,
        conflicts: state.conflicts.clone(),
        alpha: side(&state.spec.alpha, &state.spec.alpha_environment, &state.alpha, connected[0]),
        beta: side(&state.spec.beta, &state.spec.beta_environment, &state.beta, connected[1]),
        staging: None,
    }
}

fn lock(info: &Mutex<SessionInfo>) -> std::sync::MutexGuard<'_, SessionInfo> {
    info.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Sets the status in the shared description and wakes listeners.
fn set_status(info: &Mutex<SessionInfo>, notify: &watch::Sender<u64>, status: Status) {
    let mut guard = lock(info);
    guard.status = status;
    if !matches!(status, Status::StagingAlpha | Status::StagingBeta) {
        guard.staging = None;
    }
    drop(guard);
    notify.send_modify(|index| *index += 1);
}

struct Controller {
    engine: Option<Engine>,
    /// Builds endpoints (shared by the daemon's controllers).
    connector: Arc<Connector>,
    /// Cancel the connected endpoints' calls (alpha, beta), where they can be cancelled.
    cancellers: [Option<Cancel>; 2],
    /// Which connected endpoints are remote (their connections are journaled).
    remote: [bool; 2],
    /// The backoff after a failure has passed: connect again.
    retry_due: bool,
    /// An interactive resume waiting for the next connection attempt: ssh asks the prompter,
    /// and the reply gets the outcome.
    asking: Option<(Prompter, Reply)>,
    /// Commands that arrived during a cycle and wait for its end.
    deferred: Vec<Command>,
    info: Arc<Mutex<SessionInfo>>,
    notify: Arc<watch::Sender<u64>>,
    commands: mpsc::UnboundedReceiver<Command>,
    /// Flushes waiting for the session to settle.
    waiters: Vec<Reply>,
    /// Follow-up cycles run since the waiting flushes' cycle (see [`FLUSH_FOLLOW_UPS`]).
    follow_ups: u32,
    status: Status,
    /// Journal the next cycle even if it is quiet (first cycle, flush, reset, resume).
    journal_next: bool,
    failures: u32,
    /// Cycles in a row that met only the same problems again (see [`Outcome::Repeated`]).
    repeats: u32,
    cycles_since_compaction: u64,
    /// The endpoints' watch problems, as last published (alpha, beta).
    watch_problems: [Option<String>; 2],
}

/// How the controller waits between cycles.
enum Waiting {
    /// For a command only.
    Commands,
    /// For a command, or until the delay passed (then cycle).
    Delay(Duration),
    /// For a command, or for the endpoints to report a change (each checked at least at its
    /// interval, never when it has none: a no-watch endpoint), or until the retry delay, if
    /// any, passed (then cycle).
    Changes([Option<Duration>; 2], Option<Duration>),
}

/// What ended a wait for changes.
enum Waited {
    /// A command (`None`: the manager is gone).
    Command(Option<Command>),
    /// An endpoint changed.
    Changed,
    /// Checking an endpoint failed.
    Failed(String),
}

/// How long a burst of events may go on before it is looked at.
const COALESCE: Duration = Duration::from_millis(10);

/// Whether the controller goes on.
#[derive(PartialEq, Eq)]
enum Next {
    Continue,
    Stop,
}

impl Controller {
    fn state(&self) -> Option<&SessionState> {
        self.engine.as_ref().map(|e| &e.state)
    }

    /// Publishes the state and status.
    fn publish(&mut self, status: Status) {
        self.status = status;
        if let Some(engine) = &self.engine {
            let connected = [engine.alpha.is_some(), engine.beta.is_some()];
            let mut described = describe(&engine.state, status, connected);
            described.alpha.watch_problem = self.watch_problems[0].clone();
            described.beta.watch_problem = self.watch_problems[1].clone();
            let mut guard = lock(&self.info);
            described.staging = guard
                .staging
                .take()
                .filter(|_| matches!(status, Status::StagingAlpha | Status::StagingBeta));
            *guard = described;
        }
        self.notify.send_modify(|index| *index += 1);
    }

    /// The status while idle.
    fn idle_status(&self) -> Status {
        match self.state() {
            Some(state) if state.paused => Status::Disconnected,
            Some(SessionState { halted: Some(reason), .. }) => Status::halted(*reason),
            Some(_) if self.failures > 0 || self.repeats > 0 => Status::WaitingForRescan,
            Some(_) => Status::Watching,
            None => Status::Disconnected,
        }
    }

    async fn run(mut self, connected: [Option<Connected>; 2]) {
        for (side, connected) in [Side::Alpha, Side::Beta].into_iter().zip(connected) {
            if let Some(connected) = connected {
                self.adopt(side, connected).await;
            }
        }
        let mut wake = true;
        loop {
            for command in std::mem::take(&mut self.deferred) {
                if self.handle(command, &mut wake).await == Next::Stop {
                    return;
                }
            }
            while let Ok(command) = self.commands.try_recv() {
                if self.handle(command, &mut wake).await == Next::Stop {
                    return;
                }
            }
            let Some(state) = self.state() else { return };
            let (paused, halted) = (state.paused, state.halted);
            let blocked = paused || halted.is_some();
            if paused && self.connected_sides() > 0 {
                self.disconnect(None).await;
            }
            if !paused && self.connected_sides() < 2 && (self.failures == 0 || self.retry_due) {
                self.retry_due = false;
                match self.connect().await {
                    Ok(()) => {}
                    Err(Some(command)) => {
                        self.deferred.push(command);
                        continue;
                    }
                    Err(None) => continue,
                }
            }
            if blocked {
                let reason = match (&paused, halted) {
                    (true, _) => "the session is paused; resume it first".to_owned(),
                    (false, Some(reason)) => {
                        format!("the session is {}; resume or reset it", reason.description())
                    }
                    _ => String::new(),
                };
                for waiter in self.waiters.drain(..) {
                    let _ = waiter.send(Err(reason.clone()));
                }
                wake = false;
            }
            if wake && !blocked && self.connected_sides() == 2 {
                wake = false;
                self.cycle(&mut wake).await;
                continue;
            }
            let status = self.idle_status();
            if status != self.status {
                self.publish(status);
            }
            let command = match self.waiting(blocked) {
                Waiting::Commands => self.commands.recv().await,
                Waiting::Delay(delay) => tokio::select! {
                    command = self.commands.recv() => command,
                    () = tokio::time::sleep(delay) => {
                        wake = true;
                        // Try again: reconnect first if the endpoints were lost.
                        self.retry_due = true;
                        continue;
                    }
                },
                Waiting::Changes(intervals, retry) => {
                    match self.wait_for_changes(intervals, retry).await {
                        Waited::Command(command) => command,
                        Waited::Changed => {
                            wake = true;
                            continue;
                        }
                        Waited::Failed(message) => {
                            tracing::warn!("checking for changes failed: {message}");
                            self.failures += 1;
                            self.disconnect(Some(message)).await;
                            continue;
                        }
                    }
                }
            };
            match command {
                Some(command) => {
                    if self.handle(command, &mut wake).await == Next::Stop {
                        return;
                    }
                }
                None => return,
            }
        }
    }

    /// How many endpoints are connected.
    fn connected_sides(&self) -> usize {
        self.engine
            .as_ref()
            .map_or(0, |e| usize::from(e.alpha.is_some()) + usize::from(e.beta.is_some()))
    }

    /// Connects the endpoints that are not connected, alpha first, serving commands meanwhile:
    /// `Err(Some(command))` when a command interrupted it (the attempt is abandoned),
    /// `Err(None)` when it failed (journaled, the error published, flushes answered).
    async fn connect(&mut self) -> Result<(), Option<Command>> {
        let asking = self.asking.take();
        let result = self.connect_sides(asking.as_ref().map(|(prompter, _)| prompter)).await;
        if let Some((_, reply)) = asking {
            let _ = reply.send(match &result {
                Ok(()) => Ok(()),
                Err(Some(_)) => Err("the connection attempt was interrupted".to_owned()),
                Err(None) => Err(self
                    .state()
                    .and_then(|s| s.last_error.clone())
                    .unwrap_or_else(|| "unable to connect".to_owned())),
            });
        }
        result
    }

    async fn connect_sides(&mut self, prompter: Option<&Prompter>) -> Result<(), Option<Command>> {
        for side in [Side::Alpha, Side::Beta] {
            let Some(engine) = &mut self.engine else { return Err(None) };
            if engine.side(side).is_some() {
                continue;
            }
            let (identifier, spec) = (engine.state.identifier.clone(), engine.state.spec.clone());
            self.publish(match side {
                Side::Alpha => Status::ConnectingAlpha,
                Side::Beta => Status::ConnectingBeta,
            });
            let connector = self.connector.clone();
            let result = tokio::select! {
                result = connector.connect(&identifier, &spec, side, prompter) => result,
                command = self.commands.recv() => {
                    return Err(Some(command.unwrap_or(Command::Shutdown(oneshot::channel().0))));
                }
            };
            match result {
                Ok(connected) => self.adopt(side, connected).await,
                Err(message) => {
                    let name = match spec.name.as_str() {
                        "" => identifier.clone(),
                        name => name.to_owned(),
                    };
                    let message = format!(
                        "unable to connect to {side}: {message} (run `mutagen sync resume {name}` \
                         in a terminal to connect interactively)"
                    );
                    tracing::warn!("{message}");
                    self.failures += 1;
                    let recorded = message.clone();
                    self.blocking(move |engine| {
                        let _ = engine.record(Event::Error { message: recorded });
                        let _ = engine.flush();
                    })
                    .await;
                    let status = self.idle_status();
                    self.publish(status);
                    for waiter in self.waiters.drain(..) {
                        let _ = waiter.send(Err(message.clone()));
                    }
                    return Err(None);
                }
            }
        }
        Ok(())
    }

    /// Takes a connected endpoint into the engine; a remote one is journaled.
    async fn adopt(&mut self, side: Side, connected: Connected) {
        let Connected { endpoint, canceller, remote, duration_ms, identity } = connected;
        self.cancellers[index(side)] = canceller;
        self.remote[index(side)] = remote.is_some();
        self.blocking(move |engine| {
            *engine.side(side) = Some(endpoint);
            let mut events = Vec::new();
            if let Some((agent_version, root, round_trip_us)) = remote {
                let url = match side {
                    Side::Alpha => engine.state.spec.alpha.clone(),
                    Side::Beta => engine.state.spec.beta.clone(),
                };
                events.push(Event::Connected {
                    side,
                    url,
                    agent_version,
                    root,
                    duration_ms,
                    round_trip_us,
                });
            }
            // Another endpoint under the same URL (a recreated container) halts the session:
            // its missing files are a fresh file system, not deletions to propagate.
            match (engine.state.identity(side), identity) {
                (_, None) => {}
                (None, Some(identity)) => events.push(Event::Identified { side, identity }),
                (Some(previous), Some(current)) if previous != current => {
                    tracing::warn!("{side} was {previous} and is now {current}: halting");
                    let previous = previous.to_owned();
                    events.push(Event::EndpointReplaced { side, previous, current });
                }
                (Some(_), Some(_)) => {}
            }
            for event in events {
                if let Err(error) = engine.record(event) {
                    tracing::warn!("unable to journal a connection: {error}");
                }
            }
            if let Err(error) = engine.flush() {
                tracing::warn!("unable to journal a connection: {error}");
            }
        })
        .await;
        let status = self.status;
        self.publish(status);
    }

    /// Shuts the endpoints down and drops them (a remote one's agent exits, its ssh master
    /// closes when nothing else uses it); journals it for remote ones when `reason` is given.
    async fn disconnect(&mut self, reason: Option<String>) {
        self.cancellers = [None, None];
        let remote = std::mem::take(&mut self.remote);
        self.blocking(move |engine| {
            let errors = engine.disconnect();
            if !errors.is_empty() {
                tracing::debug!("shutting endpoints down: {}", errors.join("; "));
            }
            if let Some(reason) = reason {
                for side in
                    [Side::Alpha, Side::Beta].into_iter().filter(|side| remote[index(*side)])
                {
                    let _ = engine.record(Event::Disconnected { side, reason: reason.clone() });
                }
                let _ = engine.flush();
            }
        })
        .await;
        self.watch_problems = [None, None];
        let status = self.idle_status();
        self.publish(status);
    }

    /// Makes remote endpoints' calls in flight fail at once.
    fn cancel_remote(&self) {
        for cancel in self.cancellers.iter().flatten() {
            cancel();
        }
    }

    /// How to wait before the next cycle.
    fn waiting(&self, blocked: bool) -> Waiting {
        let Some(state) = self.state() else { return Waiting::Commands };
        if blocked {
            return Waiting::Commands;
        }
        if self.failures > 0 {
            let backoff = Duration::from_secs(1 << (self.failures - 1).min(5));
            return Waiting::Delay(backoff.min(MAX_BACKOFF));
        }
        if self.connected_sides() < 2 {
            return Waiting::Commands;
        }
        let configuration = &state.spec.configuration;
        let intervals = [Side::Alpha, Side::Beta].map(|side| {
            let own = configuration.endpoint(side);
            (own.watch_mode != WatchMode::NoWatch)
                .then(|| Duration::from_secs(u64::from(own.watch_polling_interval.max(1))))
        });
        // After a cycle that only met the same problems again: retry after a backoff, or
        // sooner if something changes.
        let retry = (self.repeats > 0)
            .then(|| Duration::from_secs(1 << (self.repeats - 1).min(6)).min(MAX_RETRY_BACKOFF));
        match (intervals, retry) {
            ([None, None], None) => Waiting::Commands,
            ([None, None], Some(retry)) => Waiting::Delay(retry),
            (intervals, retry) => Waiting::Changes(intervals, retry),
        }
    }

    /// Waits on a blocking thread for the endpoints to change, until a command arrives.
    async fn wait_for_changes(
        &mut self,
        intervals: [Option<Duration>; 2],
        retry: Option<Duration>,
    ) -> Waited {
        let Some(mut engine) = self.engine.take() else { return Waited::Command(None) };
        let (interrupt, interrupted) = crossbeam_channel::bounded(1);
        let retry = retry.map(|delay| Instant::now() + delay);
        let mut task = tokio::task::spawn_blocking(move || {
            let result = watch_for_changes(&mut engine, &interrupted, intervals, retry);
            (engine, result)
        });
        let (command, joined) = tokio::select! {
            command = self.commands.recv() => {
                let _ = interrupt.send(());
                (Some(command), (&mut task).await)
            }
            joined = &mut task => (None, joined),
        };
        match joined {
            Ok((engine, result)) => {
                self.engine = Some(engine);
                self.note_watch_problems();
                match (command, result) {
                    (Some(command), _) => Waited::Command(command),
                    (None, Ok(())) => Waited::Changed,
                    (None, Err(message)) => Waited::Failed(message),
                }
            }
            Err(error) => {
                self.lost_engine(&error);
                Waited::Command(None)
            }
        }
    }

    /// Reports a blocking task that panicked with the engine: the session stops here.
    fn lost_engine(&self, error: &tokio::task::JoinError) {
        tracing::error!("session controller failed: {error}");
        let mut guard = lock(&self.info);
        guard.status = Status::Disconnected;
        guard.last_error = Some(format!("internal error: {error}; restart the daemon"));
    }

    /// Publishes the endpoints' watch problems when they changed, logging each change once.
    fn note_watch_problems(&mut self) {
        let Some(engine) = &self.engine else { return };
        let problem = |endpoint: &Option<Box<dyn Endpoint>>| {
            endpoint.as_ref().and_then(|endpoint| endpoint.watch_problem())
        };
        let now = [problem(&engine.alpha), problem(&engine.beta)];
        if now == self.watch_problems {
            return;
        }
        let sides = ["alpha", "beta"].into_iter().zip(self.watch_problems.iter().zip(&now));
        for (side, (before, after)) in sides {
            match (before, after) {
                (_, Some(problem)) if before.as_ref() != Some(problem) => {
                    tracing::warn!("{side}: watching: {problem}");
                }
                (Some(_), None) => tracing::info!("{side}: watching natively again"),
                _ => {}
            }
        }
        self.watch_problems = now;
        let status = self.status;
        self.publish(status);
    }

    /// Runs `work` on the engine on a blocking thread.
    async fn blocking<T: Send + 'static>(
        &mut self,
        work: impl FnOnce(&mut Engine) -> T + Send + 'static,
    ) -> Option<T> {
        let mut engine = self.engine.take()?;
        let joined = tokio::task::spawn_blocking(move || {
            let result = work(&mut engine);
            (engine, result)
        })
        .await;
        self.rejoin(joined)
    }

    /// Takes the engine back from a blocking task (or reports that the task lost it).
    fn rejoin<T>(&mut self, joined: Result<(Engine, T), tokio::task::JoinError>) -> Option<T> {
        match joined {
            Ok((engine, result)) => {
                self.engine = Some(engine);
                self.note_watch_problems();
                Some(result)
            }
            Err(error) => {
                self.lost_engine(&error);
                None
            }
        }
    }

    /// Runs `work` on the engine on a blocking thread like [`Controller::blocking`], reading
    /// commands meanwhile: a pause, terminate or shutdown cancels remote endpoints' calls (so
    /// it never waits on a stuck link) and, like every other command, is handled once the work
    /// returned.
    async fn interruptible<T: Send + 'static>(
        &mut self,
        work: impl FnOnce(&mut Engine) -> T + Send + 'static,
    ) -> Option<T> {
        let mut engine = self.engine.take()?;
        let mut task = tokio::task::spawn_blocking(move || {
            let result = work(&mut engine);
            (engine, result)
        });
        let mut open = true;
        let joined = loop {
            tokio::select! {
                joined = &mut task => break joined,
                command = self.commands.recv(), if open => match command {
                    Some(command) => {
                        if matches!(command, Command::Pause(_) | Command::Terminate(_) | Command::Shutdown(_)) {
                            self.cancel_remote();
                        }
                        self.deferred.push(command);
                    }
                    None => {
                        open = false;
                        self.cancel_remote();
                    }
                },
            }
        };
        self.rejoin(joined)
    }

    /// Applies a lifecycle event: journaled and flushed before the answer.
    async fn lifecycle(
        &mut self,
        event: Event,
        reply: Reply,
        also: impl FnOnce(&mut Engine) + Send + 'static,
    ) {
        let result = self
            .blocking(move |engine| {
                engine.record(event)?;
                also(engine);
                engine.flush()
            })
            .await;
        let answer = match result {
            Some(Ok(())) => Ok(()),
            Some(Err(error)) => Err(error.to_string()),
            None => Err("the session controller failed".to_owned()),
        };
        let status = self.idle_status();
        self.publish(status);
        let _ = reply.send(answer);
    }

    async fn handle(&mut self, command: Command, wake: &mut bool) -> Next {
        let Some(state) = self.state() else { return Next::Stop };
        let (paused, halted) = (state.paused, state.halted);
        match command {
            Command::Flush(reply) => {
                if paused || halted.is_some() {
                    if let Some(reply) = reply {
                        let message = match halted {
                            Some(reason) if !paused => {
                                format!(
                                    "the session is {}; resume or reset it",
                                    reason.description()
                                )
                            }
                            _ => "the session is paused; resume it first".to_owned(),
                        };
                        let _ = reply.send(Err(message));
                    }
                    return Next::Continue;
                }
                let recorded = self.blocking(|engine| engine.record(Event::FlushRequested)).await;
                if let Some(Err(error)) = recorded {
                    tracing::warn!("unable to journal a flush request: {error}");
                }
                self.waiters.extend(reply);
                self.journal_next = true;
                *wake = true;
            }
            Command::Pause(reply) => {
                if paused {
                    let _ = reply.send(Ok(()));
                } else {
                    self.lifecycle(Event::Paused, reply, |_| {}).await;
                }
            }
            Command::Resume(reply, prompter) => {
                let interactive = prompter.is_some() && self.connected_sides() < 2;
                let (reply, later) = match interactive {
                    // Answered by the connection attempt instead.
                    true => {
                        let (now, _) = oneshot::channel();
                        (now, Some(reply))
                    }
                    false => (reply, None),
                };
                if paused || halted.is_some() {
                    self.journal_next = true;
                    self.lifecycle(Event::Resumed, reply, |_| {}).await;
                    *wake = true;
                } else {
                    let _ = reply.send(Ok(()));
                }
                if paused || halted.is_some() || interactive {
                    self.failures = 0;
                }
                if let (Some(later), Some(prompter)) = (later, prompter) {
                    self.asking = Some((prompter, later));
                    *wake = true;
                }
            }
            Command::Reset(reply) => {
                self.journal_next = true;
                self.lifecycle(Event::Reset, reply, |engine| {
                    // The next replay must not need anything before the reset.
                    let state = Box::new(engine.state.clone());
                    if let Err(error) = engine.record(Event::Checkpoint(state)) {
                        tracing::warn!("unable to checkpoint after a reset: {error}");
                    }
                })
                .await;
                *wake = true;
            }
            Command::Terminate(reply) => {
                self.lifecycle(Event::Terminated, reply, |engine| {
                    for error in engine.disconnect() {
                        tracing::warn!("unable to clean up staging: {error}");
                    }
                })
                .await;
                return Next::Stop;
            }
            Command::Resolve { winner, roots, reply } => {
                let result = self.blocking(move |engine| resolve(engine, winner, roots)).await;
                let answer = result.unwrap_or_else(|| Err("the session controller failed".into()));
                if answer.is_ok() {
                    self.journal_next = true;
                    *wake = true;
                }
                let status = self.idle_status();
                self.publish(status);
                let _ = reply.send(answer);
            }
            Command::Shutdown(reply) => {
                let _ = reply.send(());
                return Next::Stop;
            }
        }
        Next::Continue
    }

    async fn cycle(&mut self, wake: &mut bool) {
        let info = self.info.clone();
        let notify = self.notify.clone();
        let journal_all = std::mem::take(&mut self.journal_next);
        self.publish(Status::Scanning);
        let outcome =
            self.interruptible(move |engine| run_cycle(engine, journal_all, &info, &notify)).await;
        let outcome =
            outcome.unwrap_or_else(|| Outcome::Failed("the session controller failed".to_owned()));
        if let Outcome::Failed(message) = &outcome {
            self.disconnect(Some(message.clone())).await;
        }
        let answer = match &outcome {
            Outcome::Committed { again } => {
                self.failures = 0;
                self.repeats = 0;
                *wake |= *again;
                self.cycles_since_compaction += 1;
                Ok(())
            }
            Outcome::Quiet => {
                self.failures = 0;
                self.repeats = 0;
                Ok(())
            }
            Outcome::Repeated => {
                self.failures = 0;
                self.repeats = self.repeats.saturating_add(1);
                tracing::debug!("the same problems again ({} in a row)", self.repeats);
                Ok(())
            }
            Outcome::Halted(message) => Err(message.clone()),
            Outcome::Failed(message) => {
                self.failures += 1;
                tracing::warn!("cycle failed: {message}");
                Err(message.clone())
            }
        };
        if self.cycles_since_compaction >= RETAIN_CYCLES {
            self.cycles_since_compaction = 0;
            self.blocking(|engine| {
                let state = engine.state.clone();
                if let Err(error) =
                    engine.log.compact(&state, RETAIN_CYCLES).and_then(|_| engine.flush())
                {
                    tracing::warn!("unable to compact the journal: {error}");
                }
            })
            .await;
        }
        // A cycle that transitioned runs a follow-up to confirm the results: a flush is
        // answered once the session has settled (or after a few follow-ups, when the files
        // keep changing), so that what it returns to is not a cycle still running.
        let again = matches!(outcome, Outcome::Committed { again: true });
        if again && !self.waiters.is_empty() && self.follow_ups < FLUSH_FOLLOW_UPS {
            self.follow_ups += 1;
            return;
        }
        self.follow_ups = 0;
        // The listing shows the idle status before any flush is answered: a `sync list`
        // right after `sync flush` must not see the cycle still running.
        let status = self.idle_status();
        self.publish(status);
        for waiter in self.waiters.drain(..) {
            let _ = waiter.send(answer.clone());
        }
    }
}

/// Waits until an endpoint reports a change, checking each one when its watcher wakes it
/// (after letting a burst of events settle) and all of them at every `interval`. Also returns
/// (`Ok`) when `interrupt` receives a message; `Err` when a check fails.
fn watch_for_changes(
    engine: &mut Engine,
    interrupt: &crossbeam_channel::Receiver<()>,
    intervals: [Option<Duration>; 2],
    retry: Option<Instant>,
) -> Result<(), String> {
    let check = |endpoint: &mut Option<Box<dyn Endpoint>>| match endpoint {
        Some(endpoint) => endpoint.check().map_err(|error| render_error(&error)),
        None => Err("the endpoint is not connected".to_owned()),
    };
    let wakeups =
        |endpoint: &Option<Box<dyn Endpoint>>| endpoint.as_ref().and_then(|e| e.wakeups());
    let start = Instant::now();
    let mut deadlines = intervals.map(|interval| interval.map(|interval| start + interval));
    loop {
        let (alpha, beta) = (wakeups(&engine.alpha), wakeups(&engine.beta));
        let mut select = crossbeam_channel::Select::new();
        let interrupted = select.recv(interrupt);
        let alpha_index = alpha.as_ref().map(|wakeups| select.recv(wakeups));
        if let Some(wakeups) = &beta {
            select.recv(wakeups);
        }
        let until = deadlines.iter().flatten().chain(&retry).min().copied();
        let selected = match until {
            Some(until) => select.select_deadline(until).ok(),
            None => Some(select.select()),
        };
        let Some(operation) = selected else {
            let now = Instant::now();
            if retry.is_some_and(|retry| now >= retry) {
                return Ok(());
            }
            // Each endpoint whose interval passed is checked: a polling one rescans.
            let mut changed = false;
            let [alpha_deadline, beta_deadline] = &mut deadlines;
            for (deadline, interval, endpoint) in [
                (alpha_deadline, intervals[0], &mut engine.alpha),
                (beta_deadline, intervals[1], &mut engine.beta),
            ] {
                if let (Some(due), Some(interval)) = (*deadline, interval)
                    && now >= due
                {
                    changed |= check(endpoint)?;
                    *deadline = Some(Instant::now() + interval);
                }
            }
            if changed {
                return Ok(());
            }
            continue;
        };
        let index = operation.index();
        if index == interrupted {
            let _ = operation.recv(interrupt);
            return Ok(());
        }
        let (endpoint, wakeups) = if Some(index) == alpha_index {
            (&mut engine.alpha, &alpha)
        } else {
            (&mut engine.beta, &beta)
        };
        if let Some(wakeups) = wakeups
            && operation.recv(wakeups).is_err()
        {
            // The channel closed: the endpoint's connection is gone.
            return Err("the endpoint's connection closed".to_owned());
        }
        if interrupt.recv_timeout(COALESCE).is_ok() {
            return Ok(());
        }
        if check(endpoint)? {
            return Ok(());
        }
    }
}

/// Runs one cycle on a blocking thread and journals it.
fn run_cycle(
    engine: &mut Engine,
    journal_all: bool,
    info: &Mutex<SessionInfo>,
    notify: &watch::Sender<u64>,
) -> Outcome {
    let configuration = engine.state.spec.configuration.clone();
    engine.state.cycle += 1;
    let mut synchronizer = Synchronizer::restore(
        configuration.mode,
        engine.state.ancestor.take(),
        engine.state.halted,
    )
    .allowing(Allowances {
        root_emptying: configuration.allow_root_emptying,
        root_deletion: configuration.allow_root_deletion,
    })
    .limiting(Limits {
        entries: configuration.max_entry_count,
        staging_file_size: configuration.max_staging_file_size,
    })
    .remembering(engine.memo.take());
    let Engine { log, state, alpha: Some(alpha), beta: Some(beta), .. } = engine else {
        return Outcome::Failed("the endpoints are not connected".to_owned());
    };
    let (alpha, beta) = (alpha.as_mut(), beta.as_mut());
    let mut pending: Vec<Event> = Vec::new();
    let mut journaling = journal_all;
    // After a cycle with transition problems, this one may only meet them again: then it is
    // not journaled at all, so its events wait for the end of the cycle.
    let defer = !journal_all && has_transition_problems(state);
    let mut write_error: Option<JournalError> = None;
    let mut append = |log: &mut SessionLog, state: &mut SessionState, event: Event| {
        let record = Record::now(state.cycle, event);
        let result = log.append(&record).and_then(|number| {
            SessionState::step_applied(state, &record).map_err(|e| JournalError::Corrupt {
                session: state.identifier.clone(),
                directory: log.journal().directory().to_owned(),
                record: number,
                detail: e.to_string(),
            })
        });
        if let Err(error) = result {
            write_error.get_or_insert(error);
        }
    };
    let result = synchronizer.cycle_observed(alpha, beta, &mut |progress| match progress {
        Progress::Phase(phase) => {
            let status = match phase {
                Phase::Scanning => Status::Scanning,
                Phase::Reconciling => Status::Reconciling,
                Phase::Staging(Side::Alpha) => Status::StagingAlpha,
                Phase::Staging(Side::Beta) => Status::StagingBeta,
                Phase::Transitioning => Status::Transitioning,
            };
            if matches!(phase, Phase::Staging(_) | Phase::Transitioning) && !journaling && !defer {
                journaling = true;
                for event in pending.drain(..) {
                    append(log, state, event);
                }
            }
            set_status(info, notify, status);
        }
        Progress::Scanned(report) => {
            let mut guard = lock(info);
            for (side, side_report) in [(Side::Alpha, &report.alpha), (Side::Beta, &report.beta)] {
                let listed = if side == Side::Alpha { &mut guard.alpha } else { &mut guard.beta };
                listed.connected = true;
                listed.state = mutagen_journal::SideState {
                    scanned: true,
                    directories: side_report.directories,
                    files: side_report.files,
                    symbolic_links: side_report.symbolic_links,
                    total_file_size: side_report.total_file_size,
                    scan_problems: side_report.scan_problems.clone(),
                    transition_problems: std::mem::take(&mut listed.state.transition_problems),
                };
                let event = Event::ScanCompleted {
                    side,
                    directories: side_report.directories,
                    files: side_report.files,
                    symbolic_links: side_report.symbolic_links,
                    total_file_size: side_report.total_file_size,
                    duration_us: u64::try_from(side_report.scan_duration.as_micros())
                        .unwrap_or(u64::MAX),
                    problems: side_report.scan_problems.clone(),
                };
                if journaling {
                    append(log, state, event);
                } else {
                    pending.push(event);
                }
            }
            drop(guard);
            notify.send_modify(|index| *index += 1);
        }
        Progress::Staging(side, progress) => {
            lock(info).staging = Some((side, progress.clone()));
            notify.send_modify(|index| *index += 1);
        }
        Progress::Staged { side, files, bytes } => {
            let event = Event::Staged { side, files, bytes };
            if journaling {
                append(log, state, event);
            } else {
                pending.push(event);
            }
        }
    });
    let halted = synchronizer.halted();
    let memo = synchronizer.memo().cloned();
    let ancestor = synchronizer.into_ancestor();
    engine.state.ancestor = ancestor;
    if let Some(error) = write_error {
        return Outcome::Failed(format!("unable to write the journal: {error}"));
    }
    let report = match result {
        Ok(report) => report,
        Err(error) => {
            let message = render_error(&error);
            let recorded = pending.into_iter().chain([Event::Error { message: message.clone() }]);
            for event in recorded {
                if let Err(error) = engine.record(event) {
                    tracing::warn!("unable to journal: {error}");
                }
            }
            let _ = engine.flush();
            return Outcome::Failed(message);
        }
    };
    if let Some(reason) = halted.filter(|_| report.halted.is_some()) {
        let events = pending.into_iter().chain([Event::Halted { reason }]);
        let written = events.into_iter().try_for_each(|event| engine.record(event));
        let _ = written.and_then(|()| engine.flush());
        return Outcome::Halted(format!(
            "the session is {}; resume or reset it",
            reason.description()
        ));
    }
    if !journaling && is_quiet(&engine.state, &report) {
        // Nothing is journaled, so the cycle number goes back to what the journal says.
        engine.state.cycle -= 1;
        engine.memo = memo;
        return Outcome::Quiet;
    }
    if !journaling && is_repeat(&engine.state, &report) {
        engine.state.cycle -= 1;
        engine.memo = memo;
        return Outcome::Repeated;
    }
    match commit(engine, pending, report) {
        Ok(again) => {
            engine.memo = memo;
            Outcome::Committed { again }
        }
        Err(error) => Outcome::Failed(format!("unable to write the journal: {error}")),
    }
}

/// Whether the journaled scan still describes a side: the scan that confirms a transition
/// finds other counts than the scan before it, and the listing shows the journaled ones.
fn same_scan(side: &mutagen_journal::SideState, report: &mutagen_endpoint::SideReport) -> bool {
    side.scanned
        && (side.directories, side.files, side.symbolic_links, side.total_file_size)
            == (report.directories, report.files, report.symbolic_links, report.total_file_size)
        && side.scan_problems == report.scan_problems
}

/// Whether the latest journaled cycle left transition problems.
fn has_transition_problems(state: &SessionState) -> bool {
    !state.alpha.transition_problems.is_empty() || !state.beta.transition_problems.is_empty()
}

/// Whether a cycle only met the journaled transition problems again: nothing else changed
/// (ancestor, conflicts, scans), and each side's transition problems are the same.
fn is_repeat(state: &SessionState, report: &CycleReport) -> bool {
    has_transition_problems(state)
        && report.ancestor_changes.is_empty()
        && report.conflicts == state.conflicts
        && same_scan(&state.alpha, &report.alpha)
        && same_scan(&state.beta, &report.beta)
        && report.alpha.transition_problems == state.alpha.transition_problems
        && report.beta.transition_problems == state.beta.transition_problems
}

/// Whether a cycle changed nothing worth recording.
fn is_quiet(state: &SessionState, report: &CycleReport) -> bool {
    report.ancestor_changes.is_empty()
        && report.alpha.transitions.is_empty()
        && report.beta.transitions.is_empty()
        && report.conflicts == state.conflicts
        && same_scan(&state.alpha, &report.alpha)
        && same_scan(&state.beta, &report.beta)
        && state.alpha.transition_problems.is_empty()
        && state.beta.transition_problems.is_empty()
}

/// Resolves the session's conflicts at `roots` (all when `None`) for `winner` and journals
/// the resolution (see [`mutagen_reconcile::resolve`]); the next cycle propagates it.
fn resolve(engine: &mut Engine, winner: Side, roots: Option<Vec<String>>) -> Result<(), String> {
    let mode = engine.state.spec.configuration.mode;
    if winner == Side::Beta && !mode.is_bidirectional() {
        return Err(format!(
            "in {mode} mode alpha is never written: only --alpha-wins resolves a conflict"
        ));
    }
    let conflicts = &engine.state.conflicts;
    if conflicts.is_empty() {
        return Err("the session has no conflicts".to_owned());
    }
    let selected: Vec<&mutagen_reconcile::Conflict> = match &roots {
        None => conflicts.iter().collect(),
        Some(roots) => {
            let mut selected = Vec::new();
            for root in roots {
                let Some(conflict) = conflicts.iter().find(|c| c.root == *root) else {
                    let known: Vec<String> =
                        conflicts.iter().map(|c| format!("{:?}", c.root)).collect();
                    return Err(format!(
                        "no conflict at {root:?} (the conflicts are at {})",
                        known.join(", ")
                    ));
                };
                if !selected.iter().any(|s: &&mutagen_reconcile::Conflict| s.root == *root) {
                    selected.push(conflict);
                }
            }
            selected
        }
    };
    let ancestor = engine.state.ancestor.as_ref();
    let changes = selected
        .iter()
        .map(|conflict| {
            let loser = match winner {
                Side::Alpha => &conflict.beta_changes,
                Side::Beta => &conflict.alpha_changes,
            };
            mutagen_reconcile::resolution(ancestor, conflict, loser).map_err(|e| e.to_string())
        })
        .collect::<Result<Vec<_>, _>>()?
        .concat();
    engine.record(Event::ConflictResolved { winner, changes }).map_err(|e| e.to_string())?;
    engine.flush().map_err(|e| e.to_string())
}

/// Journals a completed cycle and makes it durable; returns whether another cycle is needed.
fn commit(
    engine: &mut Engine,
    pending: Vec<Event>,
    report: CycleReport,
) -> Result<bool, JournalError> {
    for event in pending {
        engine.record(event)?;
    }
    let again = report.needs_another_cycle();
    let CycleReport { alpha, beta, conflicts, ancestor_changes, allowed, .. } = report;
    for reason in allowed {
        engine.record(Event::HaltAllowed { reason })?;
    }
    for (side, side_report) in [(Side::Alpha, alpha), (Side::Beta, beta)] {
        if side_report.transitions.is_empty() && side_report.transition_problems.is_empty() {
            continue;
        }
        engine.record(Event::TransitionApplied {
            side,
            changes: side_report.transitions,
            problems: side_report.transition_problems,
            missing_files: side_report.missing_files,
        })?;
    }
    if conflicts != engine.state.conflicts {
        engine.record(Event::ConflictsRecorded { conflicts })?;
    }
    engine.record(Event::AncestorUpdated { changes: ancestor_changes })?;
    if engine.log.wants_checkpoint() {
        let state = Box::new(engine.state.clone());
        engine.record(Event::Checkpoint(state))?;
    }
    engine.flush()?;
    Ok(again)
}

pub use mutagen_core::render_error;

#[cfg(test)]
mod tests {
    //! The controller in-process, with fake endpoints that fail, block or disconnect.

    use std::sync::atomic::{AtomicUsize, Ordering};

    use mutagen_endpoint::{
        EndpointError, EndpointResult, Snapshot, StageRequest, TransitionResult, Transmission,
    };
    use mutagen_journal::Journal;
    use mutagen_reconcile::{Change, Entry};
    use mutagen_session::SessionSpec;

    use super::*;
    use crate::connect::TransportSettings;
    use crate::paths::DataDirectory;

    /// What a fake endpoint does when scanned.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    enum Behaviour {
        /// An empty root that keeps what transitions write.
        Healthy,
        /// A root with one file that keeps what transitions write.
        WithFile,
        /// An empty root that forgets what transitions write.
        Forgetful,
        /// A root with one file that forgets what transitions write.
        ForgetfulWithFile,
        /// Every scan fails.
        Failing,
        /// Scans block until cancelled.
        Stuck,
    }

    struct Fake {
        behaviour: Behaviour,
        tree: Option<Entry>,
        scans: Arc<AtomicUsize>,
        cancelled: crossbeam_channel::Receiver<()>,
        wakeups: Option<crossbeam_channel::Receiver<()>>,
    }

    impl Endpoint for Fake {
        fn wakeups(&self) -> Option<crossbeam_channel::Receiver<()>> {
            self.wakeups.clone()
        }

        fn check(&mut self) -> EndpointResult<bool> {
            Ok(false)
        }

        fn scan(&mut self) -> EndpointResult<Arc<Snapshot>> {
            self.scans.fetch_add(1, Ordering::SeqCst);
            match self.behaviour {
                Behaviour::Healthy
                | Behaviour::WithFile
                | Behaviour::Forgetful
                | Behaviour::ForgetfulWithFile => {
                    let files = self.tree.as_ref().map_or(0, |tree| tree.count() - 1);
                    Ok(Arc::new(Snapshot {
                        content: self.tree.clone(),
                        directories: 1,
                        files,
                        ..Snapshot::default()
                    }))
                }
                Behaviour::Failing => Err(EndpointError::Remote("the fake failed".into())),
                Behaviour::Stuck => {
                    let _ = self.cancelled.recv();
                    Err(EndpointError::Remote("cancelled".into()))
                }
            }
        }

        fn stage(&mut self, requests: Vec<StageRequest>) -> EndpointResult<Vec<StageRequest>> {
            Ok(requests)
        }

        fn supply(
            &mut self,
            _: &[StageRequest],
            _: &mut dyn FnMut(Transmission) -> EndpointResult<()>,
        ) -> EndpointResult<()> {
            Ok(())
        }

        fn receive(&mut self, _: Transmission) -> EndpointResult<()> {
            Ok(())
        }

        fn transition(&mut self, changes: Vec<Change>) -> EndpointResult<TransitionResult> {
            if !matches!(self.behaviour, Behaviour::Forgetful | Behaviour::ForgetfulWithFile) {
                for change in &changes {
                    mutagen_reconcile::replace_at(&mut self.tree, &change.path, change.new.clone())
                        .expect("the fake applies the change");
                }
            }
            let results = changes.into_iter().map(|c| c.new).collect();
            Ok(TransitionResult { results, ..TransitionResult::default() })
        }

        fn shutdown(&mut self) -> EndpointResult<()> {
            Ok(())
        }
    }

    struct Harness {
        handle: Handle,
        connections: Arc<AtomicUsize>,
        /// Scans of beta.
        scans: Arc<AtomicUsize>,
        _dir: tempfile::TempDir,
    }

    /// A session whose beta behaves as `beta` says (alpha is healthy) and wakes through
    /// `beta_wakeups` (its sender is dropped to simulate a lost connection).
    fn harness(beta: Behaviour, beta_wakeups: Option<crossbeam_channel::Receiver<()>>) -> Harness {
        harness_with(Behaviour::Healthy, beta, beta_wakeups)
    }

    fn harness_with(
        alpha: Behaviour,
        beta: Behaviour,
        beta_wakeups: Option<crossbeam_channel::Receiver<()>>,
    ) -> Harness {
        harness_full(alpha, beta, beta_wakeups, false)
    }

    /// With `replaced`, beta reports an identity, and another one from its third connection
    /// on (a recreated container, say).
    fn harness_full(
        alpha: Behaviour,
        beta: Behaviour,
        beta_wakeups: Option<crossbeam_channel::Receiver<()>>,
        replaced: bool,
    ) -> Harness {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = DataDirectory::new(dir.path().join("data"));
        let journal = Journal::open(&data.journal()).expect("journal");
        let spec = SessionSpec {
            alpha: "/fake/alpha".into(),
            beta: "host:/fake/beta".into(),
            name: "fake".into(),
            labels: Default::default(),
            paused: false,
            configuration: Default::default(),
            alpha_environment: Default::default(),
            beta_environment: Default::default(),
        };
        let identifier = "sync_0000000000000000000000000000000000000000001".to_owned();
        let created = Record::now(
            0,
            Event::Created {
                identifier: identifier.clone(),
                version: "t".into(),
                spec: Box::new(spec),
            },
        );
        let log = journal.create(&identifier, &created).expect("create");
        let mut state = None;
        SessionState::step(&mut state, &created).expect("fold");
        let connections = Arc::new(AtomicUsize::new(0));
        let mut connector = Connector::new(data, &TransportSettings::default());
        let counted = connections.clone();
        let scans = Arc::new(AtomicUsize::new(0));
        let beta_scans = scans.clone();
        connector.fake = Some(Box::new(move |side| {
            counted.fetch_add(1, Ordering::SeqCst);
            let (cancel, cancelled) = crossbeam_channel::bounded(1);
            let behaviour = if side == Side::Beta { beta } else { alpha };
            let wakeups = if side == Side::Beta { beta_wakeups.clone() } else { None };
            let mut tree = Some(Entry::empty_directory());
            if matches!(behaviour, Behaviour::WithFile | Behaviour::ForgetfulWithFile) {
                let file = Entry::file(mutagen_reconcile::Digest([7; 32]), false);
                mutagen_reconcile::replace_at(&mut tree, "f", Some(file)).expect("a file");
            }
            let scans =
                if side == Side::Beta { beta_scans.clone() } else { Arc::new(AtomicUsize::new(0)) };
            let endpoint = Fake { behaviour, tree, scans, cancelled, wakeups };
            let canceller: Cancel = Arc::new(move || {
                let _ = cancel.try_send(());
            });
            Ok(Connected {
                endpoint: Box::new(endpoint),
                canceller: Some(canceller),
                remote: Some(("fake".into(), "/fake".into(), 1)),
                duration_ms: 0,
                identity: (replaced && side == Side::Beta).then(|| {
                    if counted.load(Ordering::SeqCst) <= 2 { "first" } else { "second" }.to_owned()
                }),
            })
        }));
        let (notify, _) = watch::channel(0);
        let handle = spawn(
            Arc::new(connector),
            log,
            state.expect("a session"),
            [None, None],
            Arc::new(notify),
        )
        .expect("spawn");
        Harness { handle, connections, scans, _dir: dir }
    }

    async fn command(handle: &Handle, make: impl FnOnce(Reply) -> Command) -> Result<(), String> {
        let (reply, answer) = oneshot::channel();
        handle.commands.send(make(reply)).expect("controller alive");
        let answer = tokio::time::timeout(Duration::from_secs(10), answer).await;
        answer.expect("answered within 10 s").expect("answered")
    }

    fn info(handle: &Handle) -> SessionInfo {
        handle.info.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    async fn until(what: &str, mut done: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !done() {
            assert!(Instant::now() < deadline, "{what} did not happen");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failing_endpoint_is_reconnected_with_backoff() {
        let harness = harness(Behaviour::Failing, None);
        let error = command(&harness.handle, |r| Command::Flush(Some(r))).await;
        assert!(error.expect_err("the scan fails").contains("the fake failed"));
        until("a reconnection after the backoff", || {
            harness.connections.load(Ordering::SeqCst) >= 4
        })
        .await;
        let listed = info(&harness.handle);
        assert!(listed.last_error.as_deref().is_some_and(|e| e.contains("the fake failed")));
        // The second failure waits 2 s: no storm of reconnections.
        let before = harness.connections.load(Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(harness.connections.load(Ordering::SeqCst) <= before + 2);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn commands_do_not_wait_for_a_stuck_endpoint() {
        let harness = harness(Behaviour::Stuck, None);
        until("the cycle to start", || info(&harness.handle).status == Status::Scanning).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        let started = Instant::now();
        command(&harness.handle, Command::Pause).await.expect("paused");
        assert!(started.elapsed() < Duration::from_secs(2), "pause took {:?}", started.elapsed());
        let listed = info(&harness.handle);
        assert!(listed.paused);
        assert!(!listed.alpha.connected && !listed.beta.connected, "a paused session disconnects");
        let started = Instant::now();
        command(&harness.handle, Command::Terminate).await.expect("terminated");
        assert!(started.elapsed() < Duration::from_secs(2));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_disconnecting_endpoint_is_noticed_while_watching() {
        let (lost, wakeups) = crossbeam_channel::bounded::<()>(1);
        let harness = harness(Behaviour::Healthy, Some(wakeups));
        command(&harness.handle, |r| Command::Flush(Some(r))).await.expect("a healthy cycle");
        assert!(info(&harness.handle).beta.connected);
        assert_eq!(harness.connections.load(Ordering::SeqCst), 2);
        drop(lost);
        until("a reconnection", || harness.connections.load(Ordering::SeqCst) >= 4).await;
        command(&harness.handle, |r| Command::Flush(Some(r))).await.expect("synchronizes again");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_flush_returns_once_the_session_settled() {
        // The flush's cycle copies beta's file to alpha; its follow-up confirms it.
        let harness = harness_with(Behaviour::Healthy, Behaviour::WithFile, None);
        command(&harness.handle, |r| Command::Flush(Some(r))).await.expect("flushed");
        // (Whether the session's own first cycle ran before the flush arrived is timing.)
        let scans = harness.scans.load(Ordering::SeqCst);
        assert!(scans >= 2, "the cycle that copied and the one that confirmed: {scans}");
        let listed = info(&harness.handle);
        assert_eq!(listed.status, Status::Watching, "nothing runs when the flush returns");
        // The listing shows what the confirming scan found, not the first cycle's scan.
        assert_eq!((listed.alpha.state.files, listed.beta.state.files), (1, 1));
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(harness.scans.load(Ordering::SeqCst), scans, "and nothing runs after it");

        // Files that never settle (a creation and a deletion, in turn, forever): the flush
        // still returns, after a bounded number of cycles, and the cycles go on.
        let harness = harness_with(Behaviour::Forgetful, Behaviour::ForgetfulWithFile, None);
        command(&harness.handle, |r| Command::Flush(Some(r))).await.expect("flushed");
        let scans = harness.scans.load(Ordering::SeqCst);
        assert!(scans <= 2 + FLUSH_FOLLOW_UPS as usize, "{scans} cycles before the answer");
        until("more cycles", || harness.scans.load(Ordering::SeqCst) > scans).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn another_endpoint_under_the_same_url_halts_the_session() {
        let (lost, wakeups) = crossbeam_channel::bounded::<()>(1);
        let harness = harness_full(Behaviour::Healthy, Behaviour::WithFile, Some(wakeups), true);
        command(&harness.handle, |r| Command::Flush(Some(r))).await.expect("a healthy cycle");
        let scans = harness.scans.load(Ordering::SeqCst);
        drop(lost);
        until("the replaced endpoint halting the session", || {
            info(&harness.handle).status == Status::HaltedOnEndpointReplaced
        })
        .await;
        let error = command(&harness.handle, |r| Command::Flush(Some(r))).await;
        assert!(error.expect_err("halted").contains("endpoint was replaced"));
        assert_eq!(harness.scans.load(Ordering::SeqCst), scans, "no cycle ran with it");

        // A reset synchronizes with the new endpoint.
        command(&harness.handle, Command::Reset).await.expect("reset");
        command(&harness.handle, |r| Command::Flush(Some(r))).await.expect("cycles again");
        assert!(harness.scans.load(Ordering::SeqCst) > scans);
    }
}

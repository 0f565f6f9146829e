//! The session manager: the set of controllers, selection, and request handling.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use mutagen_endpoint::Side;
use mutagen_journal::{Event, ForwardState, Journal, Record, SessionState};
use mutagen_session::forward::ForwardSpec;
use mutagen_session::url::Url;
use mutagen_session::{Selector, SessionSpec, identifier, url};
use tokio::sync::{oneshot, watch};

use crate::connect::{Connector, TransportSettings};
use crate::controller::{self, Command, Handle};
use crate::forward::{self, ForwardCommand, ForwardHandle};
use crate::paths::DataDirectory;
use crate::protocol::{
    ForwardInfo, PROTOCOL_VERSION, Request, Response, Selection, SessionInfo, VERSION,
};
use mutagen_transports::ssh::Prompter;

/// How long a terminated session's history is kept.
const TERMINATED_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);

/// Every session of the daemon.
#[derive(Debug)]
pub struct Manager {
    data: DataDirectory,
    /// Builds endpoints for every controller.
    connector: Arc<Connector>,
    journal: Journal,
    sessions: Mutex<Vec<Handle>>,
    /// Forward sessions.
    forwards: Mutex<Vec<ForwardHandle>>,
    /// Terminated sessions still in the journal: (identifier, name), for `history`.
    terminated: Mutex<Vec<(String, String)>>,
    notify: Arc<watch::Sender<u64>>,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn now_nanos() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}

impl Manager {
    /// Replays every session in the journal and starts a controller for each live one.
    /// A session that cannot be loaded stops the daemon with an error naming it: no session
    /// is ever dropped silently.
    ///
    /// # Errors
    /// The first session that fails to load.
    pub fn load(
        data: DataDirectory,
        journal: Journal,
        settings: &TransportSettings,
    ) -> anyhow::Result<Manager> {
        let connector = Arc::new(Connector::new(data.clone(), settings));
        let (notify, _) = watch::channel(1);
        let notify = Arc::new(notify);
        let mut loaded = Vec::new();
        let mut terminated = Vec::new();
        let mut forwards = Vec::new();
        for identifier in journal.identifiers() {
            if identifier.starts_with(identifier::FORWARD_PREFIX) {
                let (log, state) = journal.load_forward(&identifier)?;
                if state.terminated {
                    if expired(&log)? {
                        journal.remove(&identifier)?;
                    } else {
                        terminated.push((identifier, state.spec.name.clone()));
                    }
                } else {
                    forwards.push((log, state));
                }
                continue;
            }
            let (log, state) = journal.load(&identifier)?;
            if state.terminated {
                if expired(&log)? {
                    journal.remove(&identifier)?;
                } else {
                    terminated.push((identifier, state.spec.name.clone()));
                }
                continue;
            }
            loaded.push((log, state));
        }
        loaded.sort_by_key(|(_, state)| state.creation_time);
        let mut sessions = Vec::new();
        for (mut log, mut state) in loaded {
            if state.cycle > controller::RETAIN_CYCLES {
                let removed = log.compact(&state, controller::RETAIN_CYCLES)?;
                tracing::info!("compacted {removed} records of {}", state.identifier);
            }
            // Replay holds the ancestor; the controller keeps it in its engine.
            state.last_error = None;
            let identifier = state.identifier.clone();
            let handle =
                controller::spawn(connector.clone(), log, state, [None, None], notify.clone())
                    .map_err(|e| anyhow::anyhow!("unable to start session {identifier}: {e}"))?;
            tracing::info!("loaded session {identifier}");
            sessions.push(handle);
        }
        forwards.sort_by_key(|(_, state)| state.creation_time);
        let forwards = forwards
            .into_iter()
            .map(|(log, state)| {
                tracing::info!("loaded forward session {}", state.identifier);
                forward::spawn(connector.clone(), log, state, None, notify.clone())
            })
            .collect();
        journal.flush()?;
        Ok(Manager {
            data,
            connector,
            journal,
            sessions: Mutex::new(sessions),
            forwards: Mutex::new(forwards),
            terminated: Mutex::new(terminated),
            notify,
        })
    }

    /// Stops every controller (after its current cycle; forward sessions close their
    /// listeners) and flushes the journal.
    pub async fn shutdown(&self) {
        let senders: Vec<_> = lock(&self.sessions).iter().map(|h| h.commands.clone()).collect();
        for sender in senders {
            let (reply, done) = oneshot::channel();
            if sender.send(Command::Shutdown(reply)).is_ok() {
                let _ = done.await;
            }
        }
        let senders: Vec<_> = lock(&self.forwards).iter().map(|h| h.commands.clone()).collect();
        for sender in senders {
            let (reply, done) = oneshot::channel();
            if sender.send(ForwardCommand::Shutdown(reply)).is_ok() {
                let _ = done.await;
            }
        }
        let journal = self.journal.clone();
        let _ = tokio::task::spawn_blocking(move || journal.flush()).await;
    }

    /// Answers a request.
    pub async fn handle(&self, request: Request) -> Response {
        let result = match request {
            Request::Version => {
                return Response::Version {
                    version: VERSION.to_owned(),
                    protocol: PROTOCOL_VERSION,
                    pid: std::process::id(),
                };
            }
            Request::Shutdown => Ok(Response::Done { identifiers: Vec::new() }),
            Request::Create { spec, .. } => self.create(spec, None).await,
            Request::Answer(_) => Err("an answer without a question".to_owned()),
            Request::List { selection, since } => self.list(&selection, since).await,
            Request::Flush { selection, skip_wait } => {
                self.command(&selection, |reply| match skip_wait {
                    true => (Command::Flush(None), Some(reply)),
                    false => (Command::Flush(Some(reply)), None),
                })
                .await
            }
            Request::Pause(selection) => self.simple(&selection, Command::Pause).await,
            Request::Resume { selection, .. } => self.resume(&selection, None).await,
            Request::Reset(selection) => self.simple(&selection, Command::Reset).await,
            Request::Terminate(selection) => self.terminate(&selection).await,
            Request::History { specification } => self.history(&specification).await,
            Request::Resolve { specification, winner, paths } => {
                self.resolve(&specification, winner, paths).await
            }
            Request::ForwardCreate(spec) => self.forward_create(spec).await,
            Request::ForwardList { selection, since } => self.forward_list(&selection, since).await,
            Request::ForwardPause(selection) => {
                self.forward_command(&selection, ForwardCommand::Pause).await
            }
            Request::ForwardResume(selection) => {
                self.forward_command(&selection, ForwardCommand::Resume).await
            }
            Request::ForwardTerminate(selection) => self.forward_terminate(&selection).await,
        };
        result.unwrap_or_else(Response::Error)
    }

    /// Creates a session, asking `prompter` whatever ssh needs to know to connect.
    pub async fn create(
        &self,
        spec: SessionSpec,
        prompter: Option<Prompter>,
    ) -> Result<Response, String> {
        spec.validate().map_err(|e| e.to_string())?;
        let mut locals = Vec::new();
        for root in [&spec.alpha, &spec.beta] {
            if !root.starts_with('/') && !root.contains(':') {
                return Err(format!("invalid endpoint url {root:?}: expected an absolute path"));
            }
            if let Url::Local(path) = Url::stored(root).map_err(|e| e.to_string())? {
                locals.push(path);
            }
        }
        match locals.as_slice() {
            [alpha, beta] => url::check_disjoint(alpha, beta, self.data.root()),
            [root] => url::check_data_outside(root, self.data.root()),
            _ => Ok(()),
        }
        .map_err(|e| e.to_string())?;
        let identifier = identifier::new_identifier(identifier::SYNC_PREFIX)
            .map_err(|e| format!("unable to generate an identifier: {e}"))?;
        // Both endpoints are reached before anything is recorded: a session that cannot
        // connect is never created.
        let prompter = prompter.as_ref();
        let alpha = self.connector.connect(&identifier, &spec, Side::Alpha, prompter).await;
        let alpha = alpha.map_err(|e| format!("unable to connect to alpha: {e}"))?;
        let beta = self.connector.connect(&identifier, &spec, Side::Beta, prompter).await;
        let beta = beta.map_err(|e| format!("unable to connect to beta: {e}"))?;
        let event = Event::Created {
            identifier: identifier.clone(),
            version: VERSION.to_owned(),
            spec: Box::new(spec),
        };
        let (log, state) =
            record_creation(&self.journal, identifier, event, SessionState::step).await?;
        let identifier = state.identifier.clone();
        let handle = controller::spawn(
            self.connector.clone(),
            log,
            state,
            [Some(alpha), Some(beta)],
            self.notify.clone(),
        )?;
        lock(&self.sessions).push(handle);
        self.notify.send_modify(|index| *index += 1);
        tracing::info!("created session {identifier}");
        Ok(Response::Created { identifier })
    }

    /// Returns the selected sessions' (identifier, command sender, info), in creation order.
    fn select(
        &self,
        selection: &Selection,
    ) -> Result<Vec<(String, SessionInfo, tokio::sync::mpsc::UnboundedSender<Command>)>, String>
    {
        let sessions = lock(&self.sessions);
        let described: Vec<_> = sessions
            .iter()
            .map(|h| {
                let info = h.info.lock().unwrap_or_else(PoisonError::into_inner).clone();
                (h.identifier.clone(), info, h.commands.clone())
            })
            .collect();
        select(described, selection, |(identifier, info, _)| (identifier, &info.name, &info.labels))
    }

    /// Resolves one session's conflicts; answers once the resolution is journaled (a cycle
    /// follows at once).
    async fn resolve(
        &self,
        specification: &str,
        winner: Side,
        paths: Option<Vec<String>>,
    ) -> Result<Response, String> {
        let selected = self.select(&Selection::Specifications(vec![specification.to_owned()]))?;
        let [(identifier, _, sender)] = selected.as_slice() else {
            return Err(format!(
                "specification {specification:?} matches {} sessions; use an identifier",
                selected.len()
            ));
        };
        let (reply, answer) = oneshot::channel();
        if sender.send(Command::Resolve { winner, roots: paths, reply }).is_err() {
            return Err(format!("session {identifier} is not running"));
        }
        collect(vec![(identifier.clone(), answer)]).await
    }

    /// Returns the selected forward sessions' (info, command sender), in creation order.
    fn select_forwards(
        &self,
        selection: &Selection,
    ) -> Result<Vec<(ForwardInfo, tokio::sync::mpsc::UnboundedSender<ForwardCommand>)>, String>
    {
        let described: Vec<_> =
            lock(&self.forwards).iter().map(|h| (h.info(), h.commands.clone())).collect();
        select(described, selection, |(info, _)| {
            (&info.identifier, &info.spec.name, &info.spec.labels)
        })
    }

    /// Creates a forward session: a local source is bound at once (its failure fails the
    /// create); remote endpoints connect in the background.
    async fn forward_create(&self, spec: ForwardSpec) -> Result<Response, String> {
        if !spec.name.is_empty() {
            mutagen_session::validate_name(&spec.name).map_err(|e| e.to_string())?;
        }
        let checked = spec.clone();
        let listener = tokio::task::spawn_blocking(move || forward::check_new(&checked))
            .await
            .map_err(|e| e.to_string())??;
        let identifier = identifier::new_identifier(identifier::FORWARD_PREFIX)
            .map_err(|e| format!("unable to generate an identifier: {e}"))?;
        let event = Event::ForwardCreated {
            identifier: identifier.clone(),
            version: VERSION.to_owned(),
            spec,
        };
        let (log, state) =
            record_creation(&self.journal, identifier, event, ForwardState::step).await?;
        let identifier = state.identifier.clone();
        let handle =
            forward::spawn(self.connector.clone(), log, state, listener, self.notify.clone());
        lock(&self.forwards).push(handle);
        self.notify.send_modify(|index| *index += 1);
        tracing::info!("created forward session {identifier}");
        Ok(Response::Created { identifier })
    }

    async fn forward_list(&self, selection: &Selection, since: u64) -> Result<Response, String> {
        let mut receiver = self.notify.subscribe();
        if since != 0 && *receiver.borrow_and_update() == since {
            let _ = tokio::time::timeout(Duration::from_secs(60), receiver.changed()).await;
        }
        let index = *self.notify.borrow();
        let sessions = self.select_forwards(selection)?.into_iter().map(|(info, _)| info).collect();
        Ok(Response::ForwardList { index, sessions })
    }

    /// Sends a command to every selected forward session and waits for the answers.
    async fn forward_command(
        &self,
        selection: &Selection,
        make: fn(forward::Reply) -> ForwardCommand,
    ) -> Result<Response, String> {
        let mut answers = Vec::new();
        for (info, sender) in self.select_forwards(selection)? {
            let (reply, answer) = oneshot::channel();
            if sender.send(make(reply)).is_err() {
                return Err(format!("session {} is not running", info.identifier));
            }
            answers.push((info.identifier, answer));
        }
        let response = collect(answers).await;
        self.notify.send_modify(|index| *index += 1);
        response
    }

    async fn forward_terminate(&self, selection: &Selection) -> Result<Response, String> {
        let response = self.forward_command(selection, ForwardCommand::Terminate).await?;
        if let Response::Done { identifiers } = &response {
            let mut forwards = lock(&self.forwards);
            let mut terminated = lock(&self.terminated);
            forwards.retain(|handle| {
                let gone = identifiers.contains(&handle.identifier);
                if gone {
                    terminated.push((handle.identifier.clone(), handle.info().spec.name));
                }
                !gone
            });
        }
        self.notify.send_modify(|index| *index += 1);
        Ok(response)
    }

    async fn list(&self, selection: &Selection, since: u64) -> Result<Response, String> {
        let mut receiver = self.notify.subscribe();
        if since != 0 && *receiver.borrow_and_update() == since {
            // Long poll: wait for any change (or a minute, so idle clients notice a dead daemon).
            let _ = tokio::time::timeout(Duration::from_secs(60), receiver.changed()).await;
        }
        let index = *self.notify.borrow();
        let sessions = self.select(selection)?.into_iter().map(|(_, info, _)| info).collect();
        Ok(Response::List { index, sessions })
    }

    /// Sends a command to every selected session and waits for the answers.
    async fn command(
        &self,
        selection: &Selection,
        make: impl Fn(controller::Reply) -> (Command, Option<controller::Reply>),
    ) -> Result<Response, String> {
        let selected = self.select(selection)?;
        let mut answers = Vec::new();
        for (identifier, _, sender) in &selected {
            let (reply, answer) = oneshot::channel();
            let (command, immediate) = make(reply);
            if sender.send(command).is_err() {
                return Err(format!("session {identifier} is not running"));
            }
            if let Some(immediate) = immediate {
                let _ = immediate.send(Ok(()));
            }
            answers.push((identifier.clone(), answer));
        }
        collect(answers).await
    }

    async fn simple(
        &self,
        selection: &Selection,
        command: fn(controller::Reply) -> Command,
    ) -> Result<Response, String> {
        self.command(selection, |reply| (command(reply), None)).await
    }

    /// Resumes sessions; with a prompter, disconnected endpoints connect at once, asking it
    /// what ssh needs to know, and the answer waits for the attempt.
    pub async fn resume(
        &self,
        selection: &Selection,
        prompter: Option<Prompter>,
    ) -> Result<Response, String> {
        self.command(selection, |reply| (Command::Resume(reply, prompter.clone()), None)).await
    }

    async fn terminate(&self, selection: &Selection) -> Result<Response, String> {
        let response = self.simple(selection, Command::Terminate).await?;
        if let Response::Done { identifiers } = &response {
            let mut sessions = lock(&self.sessions);
            let mut terminated = lock(&self.terminated);
            sessions.retain(|handle| {
                let gone = identifiers.contains(&handle.identifier);
                if gone {
                    terminated.push((handle.identifier.clone(), lock(&handle.info).name.clone()));
                }
                !gone
            });
            for identifier in identifiers {
                for side in ["alpha", "beta"] {
                    let _ = std::fs::remove_dir_all(self.data.staging(identifier, side));
                }
            }
        }
        self.notify.send_modify(|index| *index += 1);
        Ok(response)
    }

    async fn history(&self, specification: &str) -> Result<Response, String> {
        let mut live: Vec<(String, String)> = lock(&self.sessions)
            .iter()
            .map(|h| (h.identifier.clone(), lock(&h.info).name.clone()))
            .collect();
        live.extend(
            lock(&self.forwards).iter().map(|h| (h.identifier.clone(), h.info().spec.name)),
        );
        let terminated = lock(&self.terminated).clone();
        let known = live.into_iter().chain(terminated);
        let matching: Vec<String> = known
            .filter(|(identifier, name)| identifier == specification || name == specification)
            .map(|(identifier, _)| identifier)
            .collect();
        let identifier = match matching.as_slice() {
            [] => {
                return Err(format!("specification {specification:?} did not match any sessions"));
            }
            [one] => one.clone(),
            _ => {
                return Err(format!(
                    "specification {specification:?} matches {} sessions; use an identifier",
                    matching.len()
                ));
            }
        };
        let journal = self.journal.clone();
        let id = identifier.clone();
        let records = tokio::task::spawn_blocking(move || journal.records(&id, 0))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
        let records = records
            .into_iter()
            .map(|(number, mut record)| {
                // Checkpoints travel without their ancestor: the history shows that one was
                // taken, not the whole tree.
                if let Event::Checkpoint(state) = &mut record.event {
                    state.ancestor = None;
                }
                (number, record)
            })
            .collect();
        Ok(Response::History { identifier, records })
    }
}

/// Whether a terminated session's history is past its retention.
fn expired(log: &mutagen_journal::SessionLog) -> anyhow::Result<bool> {
    let last = log.records(0)?.last().map_or(0, |(_, r)| r.time);
    Ok(Duration::from_nanos(now_nanos().saturating_sub(last)) > TERMINATED_RETENTION)
}

/// Selects among `items` (in creation order) by identifier or name, or by labels; `key`
/// gives an item's identifier, name and labels. Every specification must match one at
/// least.
fn select<T>(
    items: Vec<T>,
    selection: &Selection,
    key: impl Fn(&T) -> (&String, &String, &mutagen_session::Labels),
) -> Result<Vec<T>, String> {
    match selection {
        Selection::All => Ok(items),
        Selection::Specifications(specifications) => {
            let mut chosen = vec![false; items.len()];
            for specification in specifications {
                if specification.is_empty() {
                    return Err("empty session specification".to_owned());
                }
                let mut matched = false;
                for (index, item) in items.iter().enumerate() {
                    let (identifier, name, _) = key(item);
                    if identifier == specification || name == specification {
                        chosen[index] = true;
                        matched = true;
                    }
                }
                if !matched {
                    return Err(format!(
                        "specification {specification:?} did not match any sessions"
                    ));
                }
            }
            Ok(items
                .into_iter()
                .zip(chosen)
                .filter_map(|(item, chosen)| chosen.then_some(item))
                .collect())
        }
        Selection::LabelSelector(text) => {
            let selector = Selector::parse(text).map_err(|e| e.to_string())?;
            let selected: Vec<T> =
                items.into_iter().filter(|item| selector.matches(key(item).2)).collect();
            if selected.is_empty() {
                return Err(format!("label selector {text:?} did not match any sessions"));
            }
            Ok(selected)
        }
    }
}

/// Waits for the answers of the sessions a command went to: the identifiers that succeeded,
/// or every failure named by session.
async fn collect(
    answers: Vec<(String, oneshot::Receiver<Result<(), String>>)>,
) -> Result<Response, String> {
    let mut identifiers = Vec::new();
    let mut errors = Vec::new();
    for (identifier, answer) in answers {
        match answer.await {
            Ok(Ok(())) => identifiers.push(identifier),
            Ok(Err(message)) => errors.push(format!("session {identifier}: {message}")),
            Err(_) => errors.push(format!("session {identifier}: the controller stopped")),
        }
    }
    if !errors.is_empty() {
        return Err(errors.join("; "));
    }
    Ok(Response::Done { identifiers })
}

/// Journals a new session's creation record and makes it durable, then replays it with
/// `step` into the session's state (on a blocking thread).
async fn record_creation<S: Send + 'static>(
    journal: &Journal,
    identifier: String,
    event: Event,
    step: fn(&mut Option<S>, &Record) -> Result<(), mutagen_journal::FoldError>,
) -> Result<(mutagen_journal::SessionLog, S), String> {
    let journal = journal.clone();
    tokio::task::spawn_blocking(move || {
        let record = Record::now(0, event);
        let log = journal.create(&identifier, &record).map_err(|e| e.to_string())?;
        journal.flush().map_err(|e| e.to_string())?;
        let mut state = None;
        step(&mut state, &record).map_err(|e| e.to_string())?;
        let state = state.ok_or("the creation record did not create a session")?;
        Ok((log, state))
    })
    .await
    .map_err(|e| e.to_string())?
}

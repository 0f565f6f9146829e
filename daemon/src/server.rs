//! The daemon process: lock, log, journal, socket, signals.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::sync::Arc;

use anyhow::{Context, bail};
use mutagen_journal::{Journal, JournalError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;

use crate::connect::TransportSettings;
use crate::manager::Manager;
use crate::paths::DataDirectory;
use crate::protocol::{self, Request, Response};

/// Runs the daemon in the foreground until SIGTERM, SIGINT or a shutdown request.
///
/// # Errors
/// When another daemon holds the lock, the journal cannot be loaded (the error names the
/// session and the directory), or the socket cannot be bound.
pub fn run(data: &DataDirectory, settings: &TransportSettings) -> anyhow::Result<()> {
    data.ensure()?;
    let lock = acquire_lock(data)?;
    init_logging(data)?;
    tracing::info!("daemon {} starting (pid {})", protocol::VERSION, std::process::id());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("unable to start the async runtime")?;
    let result = runtime.block_on(serve(data.clone(), settings.clone()));
    if let Err(error) = &result {
        tracing::error!("daemon failed: {error:#}");
    }
    tracing::info!("daemon stopped");
    drop(lock);
    result
}

/// How long a starting daemon waits for the lock of one that is exiting.
const LOCK_PATIENCE: std::time::Duration = std::time::Duration::from_secs(10);

/// Takes the exclusive lock and writes our pid into the lock file.
///
/// # Errors
/// When a daemon that answers holds it, or a silent holder keeps it beyond `LOCK_PATIENCE`.
pub(crate) fn acquire_lock(data: &DataDirectory) -> anyhow::Result<std::fs::File> {
    let path = data.lock();
    let mut file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("unable to open the daemon lock {}", path.display()))?;
    // A daemon that was just killed holds its lock until its last thread has exited, which
    // can take a moment: the lock is awaited (for at most LOCK_PATIENCE) as long as nothing
    // answers on the socket. A daemon that answers is really running.
    let started = std::time::Instant::now();
    loop {
        match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => break,
            Err(rustix::io::Errno::WOULDBLOCK) => {
                let pid = std::fs::read_to_string(&path).unwrap_or_default();
                let pid = pid.trim();
                if crate::client::Client::connect(data).is_ok_and(|client| client.is_some()) {
                    bail!(
                        "another daemon (pid {pid}) is already running for data directory {}",
                        data.root().display()
                    );
                }
                if started.elapsed() > LOCK_PATIENCE {
                    bail!(
                        "the daemon lock {} is held by pid {pid}, which does not answer on {} \
                         (waited {} s)",
                        path.display(),
                        data.socket().display(),
                        LOCK_PATIENCE.as_secs()
                    );
                }
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            Err(error) => {
                return Err(error).with_context(|| format!("unable to lock {}", path.display()));
            }
        }
    }
    file.set_len(0)?;
    write!(file, "{}", std::process::id())?;
    Ok(file)
}

fn init_logging(data: &DataDirectory) -> anyhow::Result<()> {
    let level = match std::env::var("MUTAGEN_LOG_LEVEL").unwrap_or_default().to_lowercase().as_str()
    {
        "" | "info" => tracing::Level::INFO,
        "error" => tracing::Level::ERROR,
        "warn" | "warning" => tracing::Level::WARN,
        "debug" => tracing::Level::DEBUG,
        "trace" => tracing::Level::TRACE,
        other => bail!(
            "invalid MUTAGEN_LOG_LEVEL {other:?} (expected error, warn, info, debug or trace)"
        ),
    };
    let limit = crate::log::limit_from_environment().map_err(anyhow::Error::msg)?;
    let path = data.log();
    let file = crate::log::RotatingLog::open(&path, limit)
        .with_context(|| format!("unable to open the log {}", path.display()))?;
    let _ = tracing_subscriber::fmt()
        .with_max_level(level)
        .with_ansi(false)
        .with_writer(std::sync::Mutex::new(file))
        .try_init();
    Ok(())
}

async fn serve(data: DataDirectory, settings: TransportSettings) -> anyhow::Result<()> {
    let journal_directory = data.journal();
    let manager = tokio::task::spawn_blocking({
        let data = data.clone();
        move || -> anyhow::Result<Journal> {
            Journal::open(&data.journal()).map_err(|error| match error {
                JournalError::Damaged { .. } => {
                    anyhow::anyhow!("{error}; {}", crate::integrity::ADVICE)
                }
                error => error.into(),
            })
        }
    })
    .await??;
    // Loading replays every session on this thread's runtime (controllers are spawned).
    let manager = tokio::task::block_in_place(|| Manager::load(data.clone(), manager, &settings))
        .with_context(|| {
        format!("unable to load the sessions in {}", journal_directory.display())
    })?;
    let manager = Arc::new(manager);

    let socket = data.socket();
    match std::fs::remove_file(&socket) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("unable to remove {}", socket.display())),
    }
    let listener = UnixListener::bind(&socket)
        .with_context(|| format!("unable to listen on {}", socket.display()))?;
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o600))?;
    tracing::info!("listening on {}", socket.display());

    let (stop, mut stopped) = watch::channel(false);
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    tokio::spawn(connection(manager.clone(), stream, stop.clone()));
                }
                Err(error) => tracing::warn!("accept failed: {error}"),
            },
            _ = terminate.recv() => { tracing::info!("SIGTERM received"); break; }
            _ = interrupt.recv() => { tracing::info!("SIGINT received"); break; }
            _ = stopped.changed() => { tracing::info!("shutdown requested"); break; }
        }
    }
    manager.shutdown().await;
    let _ = std::fs::remove_file(&socket);
    Ok(())
}

/// Serves one client connection until it closes.
async fn connection(manager: Arc<Manager>, mut stream: UnixStream, stop: watch::Sender<bool>) {
    loop {
        let Some(request) = read_request(&mut stream).await else { return };
        let response = match request {
            Ok(Request::Create { spec, prompt: true }) => {
                let creating = |prompter| {
                    let manager = manager.clone();
                    async move { manager.create(spec, Some(prompter)).await }
                };
                match asking(&mut stream, creating).await {
                    Some(response) => response,
                    None => return,
                }
            }
            Ok(Request::Resume { selection, prompt: true }) => {
                let resuming = |prompter| {
                    let manager = manager.clone();
                    async move { manager.resume(&selection, Some(prompter)).await }
                };
                match asking(&mut stream, resuming).await {
                    Some(response) => response,
                    None => return,
                }
            }
            Ok(Request::Shutdown) => {
                let response = manager.handle(Request::Shutdown).await;
                let _ = write(&mut stream, &response).await;
                let _ = stop.send(true);
                return;
            }
            Ok(request) => manager.handle(request).await,
            Err(error) => Response::Error(format!(
                "malformed request: {error} (client/daemon version mismatch?)"
            )),
        };
        if write(&mut stream, &response).await.is_err() {
            return;
        }
    }
}

/// Runs a request while relaying ssh's questions to the client as [`Response::Prompt`]s and
/// its [`Request::Answer`]s back; `None` when the client went away (the request still
/// completes or fails on its own, every later question being declined).
async fn asking<F>(
    stream: &mut UnixStream,
    run: impl FnOnce(mutagen_transports::ssh::Prompter) -> F,
) -> Option<Response>
where
    F: std::future::Future<Output = Result<Response, String>>,
{
    let (prompter, mut questions) = tokio::sync::mpsc::channel(1);
    let running = run(prompter);
    tokio::pin!(running);
    let mut connected = true;
    loop {
        tokio::select! {
            result = &mut running => {
                let response = result.unwrap_or_else(Response::Error);
                return connected.then_some(response);
            }
            Some((message, secret, answer)) = questions.recv() => {
                let reply = if connected {
                    ask(stream, message, secret).await
                } else {
                    None
                };
                connected &= reply.is_some();
                let _ = answer.send(reply.flatten());
            }
        }
    }
}

/// Asks the client one question; `None` when the connection failed, `Some(None)` when the
/// user declined.
async fn ask(stream: &mut UnixStream, message: String, secret: bool) -> Option<Option<String>> {
    write(stream, &Response::Prompt { message, secret }).await.ok()?;
    match read_request(stream).await? {
        Ok(Request::Answer(answer)) => Some(answer),
        _ => None,
    }
}

/// Reads one request frame; `None` when the connection ended or sent an impossible length,
/// `Some(Err)` when the frame does not decode.
async fn read_request(stream: &mut UnixStream) -> Option<Result<Request, postcard::Error>> {
    let mut header = [0u8; 4];
    stream.read_exact(&mut header).await.ok()?;
    let length = protocol::check_length(header).ok()?;
    let mut body = vec![0; length];
    stream.read_exact(&mut body).await.ok()?;
    Some(postcard::from_bytes::<Request>(&body))
}

async fn write(stream: &mut UnixStream, response: &Response) -> std::io::Result<()> {
    let bytes = protocol::encode(response).map_err(std::io::Error::other)?;
    stream.write_all(&bytes).await
}

//! SSH through the system OpenSSH.
//!
//! # Theory of operation
//! - [`SshPool`] keeps one master connection per (user, host, port). It starts `ssh -M`
//!   itself (the program `ssh` from `PATH`, or from the directory the daemon was given), so the
//!   user's `~/.ssh/config`, aliases, keys, agents, `ProxyJump` and known hosts apply as they
//!   do for `ssh` on the command line. Commands then go through the master's control socket
//!   with the `openssh` crate's native multiplexing (no ssh process per command).
//! - The master runs in the foreground as the daemon's child and its own session runs
//!   `cat >/dev/null` fed by a pipe from the daemon: when the daemon exits, even by `kill -9`,
//!   the pipe closes, the remote `cat` ends and the master exits (`ControlPersist=no`) once its
//!   last channel is gone. When the last [`Lease`] on a master is dropped, the master is killed.
//! - A master started for a command that has a terminal (a [`Prompter`]) runs with
//!   `SSH_ASKPASS` pointing at the `mutagen` binary and `SSH_ASKPASS_REQUIRE=force`: each
//!   password, passphrase or host-key question ssh asks goes to a private socket in the
//!   master's control directory, through the prompter to the waiting command's terminal, and
//!   the answer back. Every other master (background reconnects, commands without a terminal)
//!   runs with `BatchMode=yes` and fails with ssh's message instead of prompting.
//! - An agent is started with `~/.mutagen/agents/<version>/mutagen-agent endpoint`. If it does
//!   not greet (missing), or greets with another protocol or build, the local agent binary is
//!   copied over the same master, atomically, and started again once.

use std::collections::HashMap;
use std::ffi::OsString;
use std::io::Read;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use mutagen_protocol::{AgentStream, Hello, OutputTail, PROTOCOL_VERSION};
use mutagen_session::url::SshUrl;
use openssh::{Session, Stdio};

use crate::agent::{self, AgentBinary, Role, Started};
use crate::{TransportError, TransportResult};

/// How long a master may take to connect and authenticate.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// (user, host, port): what identifies a master connection.
type Key = (Option<String>, String, Option<u16>);

/// One question for the user: the prompt as ssh wrote it, whether the answer is secret, and
/// where the answer goes (`None`: the user declined).
pub type Question = (String, bool, tokio::sync::oneshot::Sender<Option<String>>);

/// Where ssh's questions go while a master connects: to the terminal of the command that
/// caused the connection.
pub type Prompter = tokio::sync::mpsc::Sender<Question>;

/// The environment variable that tells a `mutagen` started by ssh as `SSH_ASKPASS` where to
/// ask (the socket of the connecting master).
pub const ASKPASS_SOCKET: &str = "MUTAGEN_ASKPASS_SOCKET";

/// The destination as the user would write it: `[user@]host[:port]`.
fn destination((user, host, port): &Key) -> String {
    let mut text = String::new();
    if let Some(user) = user {
        text.push_str(user);
        text.push('@');
    }
    text.push_str(host);
    if let Some(port) = port {
        text.push_str(&format!(":{port}"));
    }
    text
}

struct Master {
    session: Arc<Session>,
    /// The ssh process; killed on drop.
    process: Mutex<tokio::process::Child>,
    /// Holds the control socket and the master's log; removed on drop.
    _directory: tempfile::TempDir,
    /// Leases handed out and not yet dropped (guarded by the pool's map lock).
    leases: usize,
}

impl Master {
    fn alive(&self) -> bool {
        let mut process = self.process.lock().unwrap_or_else(PoisonError::into_inner);
        matches!(process.try_wait(), Ok(None))
    }
}

/// A share of a master connection; the master closes when its last lease is dropped.
pub struct Lease {
    pool: Arc<PoolInner>,
    key: Key,
    session: Arc<Session>,
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Lease({})", destination(&self.key))
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let mut masters = self.pool.masters.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(master) = masters.get_mut(&self.key) else { return };
        master.leases = master.leases.saturating_sub(1);
        if master.leases == 0
            && let Some(master) = masters.remove(&self.key)
        {
            tracing::debug!("closing the ssh master for {}", destination(&self.key));
            drop(master);
        }
    }
}

struct PoolInner {
    masters: Mutex<HashMap<Key, Master>>,
    /// Where masters' control sockets go (private to the daemon).
    control: PathBuf,
    /// The ssh program.
    ssh: OsString,
    /// The program ssh runs as `SSH_ASKPASS` (the `mutagen` binary), if prompting is possible.
    askpass: Option<PathBuf>,
}

/// One master connection per (user, host, port), shared by everything that reaches that host.
#[derive(Clone)]
pub struct SshPool {
    inner: Arc<PoolInner>,
    agent: Arc<AgentBinary>,
}

impl std::fmt::Debug for SshPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SshPool").field("control", &self.inner.control).finish()
    }
}

impl SshPool {
    /// Returns a pool whose control sockets live in `control` (created if needed), running
    /// `ssh` from `ssh_directory` when given (else from `PATH`).
    pub fn new(
        control: PathBuf,
        ssh_directory: Option<&Path>,
        agent: Arc<AgentBinary>,
        askpass: Option<PathBuf>,
    ) -> SshPool {
        let ssh = match ssh_directory {
            Some(directory) => directory.join("ssh").into_os_string(),
            None => OsString::from("ssh"),
        };
        let inner = PoolInner { masters: Mutex::new(HashMap::new()), control, ssh, askpass };
        SshPool { inner: Arc::new(inner), agent }
    }

    /// How many masters are open (tests check that none outlives its sessions).
    pub fn open_masters(&self) -> usize {
        self.inner.masters.lock().unwrap_or_else(PoisonError::into_inner).len()
    }

    /// Returns a lease on the master for `key`, connecting it if there is none (or it died).
    async fn lease(&self, key: &Key, prompter: Option<&Prompter>) -> TransportResult<Lease> {
        {
            let mut masters = self.inner.masters.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(master) = masters.get_mut(key) {
                if master.alive() {
                    master.leases += 1;
                    let session = master.session.clone();
                    return Ok(Lease { pool: self.inner.clone(), key: key.clone(), session });
                }
                masters.remove(key);
            }
        }
        let master = self.connect(key, prompter).await?;
        let session = master.session.clone();
        let mut masters = self.inner.masters.lock().unwrap_or_else(PoisonError::into_inner);
        match masters.get_mut(key) {
            // Another connection raced this one; use it and drop ours.
            Some(existing) if existing.alive() => {
                existing.leases += 1;
                let session = existing.session.clone();
                Ok(Lease { pool: self.inner.clone(), key: key.clone(), session })
            }
            _ => {
                masters.insert(key.clone(), Master { leases: 1, ..master });
                Ok(Lease { pool: self.inner.clone(), key: key.clone(), session })
            }
        }
    }

    async fn connect(&self, key: &Key, prompter: Option<&Prompter>) -> TransportResult<Master> {
        let host = destination(key);
        let failed = |reason: String| TransportError::Connect { host: host.clone(), reason };
        std::fs::create_dir_all(&self.inner.control).map_err(|e| {
            failed(format!("unable to create {}: {e}", self.inner.control.display()))
        })?;
        let directory = tempfile::Builder::new()
            .prefix("ssh-")
            .tempdir_in(&self.inner.control)
            .map_err(|e| failed(format!("unable to create a control directory: {e}")))?;
        let (control, log) = (directory.path().join("master"), directory.path().join("log"));
        let mut command = tokio::process::Command::new(&self.inner.ssh);
        command.arg("-E").arg(&log).arg("-S").arg(&control).arg("-M");
        let asking = match (prompter, &self.inner.askpass) {
            (Some(prompter), Some(program)) => {
                let socket = directory.path().join("askpass");
                let listener = tokio::net::UnixListener::bind(&socket)
                    .map_err(|e| failed(format!("unable to listen for prompts: {e}")))?;
                command
                    .env("SSH_ASKPASS", program)
                    .env("SSH_ASKPASS_REQUIRE", "force")
                    .env(ASKPASS_SOCKET, &socket);
                Some(tokio::spawn(relay_questions(listener, prompter.clone())))
            }
            _ => {
                command.arg("-o").arg("BatchMode=yes");
                None
            }
        };
        // Ends the relay however the connection attempt ends.
        let asking = asking.map(AbortOnDrop);
        for option in [
            "ControlPersist=no",
            "ConnectTimeout=20",
            "ServerAliveInterval=10",
            "ServerAliveCountMax=3",
        ] {
            command.arg("-o").arg(option);
        }
        let (user, name, port) = key;
        if let Some(user) = user {
            command.arg("-l").arg(user);
        }
        if let Some(port) = port {
            command.arg("-p").arg(port.to_string());
        }
        // The master's own session lives as long as this pipe: it ends when the daemon does.
        command.arg("--").arg(name).arg("cat >/dev/null");
        command
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true);
        let mut process = command.spawn().map_err(|e| {
            failed(format!("unable to run {}: {e}", self.inner.ssh.to_string_lossy()))
        })?;
        let started = Instant::now();
        loop {
            if control.exists() {
                break;
            }
            if let Ok(Some(status)) = process.try_wait() {
                let said = std::fs::read_to_string(&log).unwrap_or_default();
                let said = said.trim();
                let reason = if said.is_empty() {
                    format!("ssh exited with {status}")
                } else {
                    said.to_owned()
                };
                return Err(failed(reason));
            }
            // A user answering a prompt may take longer than a connection.
            if started.elapsed() > CONNECT_TIMEOUT && asking.is_none() {
                return Err(failed(format!("no connection after {} s", CONNECT_TIMEOUT.as_secs())));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tracing::info!("ssh master connected to {host}");
        let session = Session::resume_mux(control.into_boxed_path(), Some(log.into_boxed_path()));
        Ok(Master {
            session: Arc::new(session),
            process: Mutex::new(process),
            _directory: directory,
            leases: 0,
        })
    }

    /// Starts the agent for `url`'s host, installing it first when needed, and returns its
    /// stream after a successful handshake.
    ///
    /// # Errors
    /// A [`TransportError`] naming the host: the connection, the install or the agent failed.
    pub async fn connect_agent(
        &self,
        url: &SshUrl,
        role: Role,
        prompter: Option<&Prompter>,
    ) -> TransportResult<(AgentStream, Hello)> {
        let key: Key = (url.user.clone(), url.host.clone(), url.port);
        let host = destination(&key);
        let (binary, build) = self.agent.locate()?;
        let ours = |hello: &Hello| hello.protocol == PROTOCOL_VERSION && hello.build == build;
        // Held until the agent runs, so that the master is not closed between an attempt,
        // the install and the next attempt.
        let held = self.lease(&key, prompter).await?;
        let lease = self.lease(&key, None).await?;
        let mismatch = match start_agent(lease, &host, role).await {
            Ok((stream, hello)) if ours(&hello) => return Ok((stream, hello)),
            Ok((_, hello)) => {
                format!("found agent {} (build {})", hello.version, short(&hello.build))
            }
            Err(Started::Missing(output)) => output,
            Err(Started::Failed(error)) => return Err(error),
        };
        tracing::info!("installing the agent on {host} ({mismatch})");
        install(&held.session, &binary, &host).await?;
        match start_agent(held, &host, role).await {
            Ok((stream, hello)) if ours(&hello) => Ok((stream, hello)),
            Ok((_, hello)) => Err(TransportError::Start {
                host,
                reason: format!(
                    "the installed agent reports build {} instead of {}",
                    short(&hello.build),
                    short(&build)
                ),
            }),
            Err(Started::Missing(output)) => Err(TransportError::Start {
                host,
                reason: if output.is_empty() { "it exited at once".to_owned() } else { output },
            }),
            Err(Started::Failed(error)) => Err(error),
        }
    }
}

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Serves the askpass socket: each connection carries one question (a length-prefixed
/// prompt) and gets one answer (length-prefixed; a length of `u32::MAX` declines).
async fn relay_questions(listener: tokio::net::UnixListener, prompter: Prompter) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    while let Ok((mut stream, _)) = listener.accept().await {
        let mut header = [0u8; 4];
        if stream.read_exact(&mut header).await.is_err() {
            continue;
        }
        let length = u32::from_be_bytes(header) as usize;
        if length > 4096 {
            continue;
        }
        let mut prompt = vec![0u8; length];
        if stream.read_exact(&mut prompt).await.is_err() {
            continue;
        }
        let prompt = String::from_utf8_lossy(&prompt).into_owned();
        // Host-key questions are answered in the clear; passwords and passphrases are not.
        let lower = prompt.to_lowercase();
        let secret = !(lower.contains("(yes/no") || lower.contains("continue connecting"));
        let (answer, answered) = tokio::sync::oneshot::channel();
        let answer = match prompter.send((prompt, secret, answer)).await {
            Ok(()) => answered.await.ok().flatten(),
            Err(_) => None,
        };
        let reply = match &answer {
            Some(text) => [&(text.len() as u32).to_be_bytes()[..], text.as_bytes()].concat(),
            None => u32::MAX.to_be_bytes().to_vec(),
        };
        let _ = stream.write_all(&reply).await;
    }
}

/// Asks the daemon's relay (at `socket`) the question ssh gave an askpass program; returns the
/// answer (`None`: declined). This is what `mutagen` does when ssh runs it as `SSH_ASKPASS`.
///
/// # Errors
/// When the relay cannot be reached.
pub fn ask(socket: &Path, prompt: &str) -> std::io::Result<Option<String>> {
    use std::io::Write;
    let mut stream = std::os::unix::net::UnixStream::connect(socket)?;
    let prompt = prompt.as_bytes();
    stream.write_all(&(prompt.len() as u32).to_be_bytes())?;
    stream.write_all(prompt)?;
    let mut header = [0u8; 4];
    stream.read_exact(&mut header)?;
    let length = u32::from_be_bytes(header);
    if length == u32::MAX {
        return Ok(None);
    }
    let mut answer = vec![0u8; length.min(1 << 16) as usize];
    stream.read_exact(&mut answer)?;
    Ok(Some(String::from_utf8_lossy(&answer).into_owned()))
}

fn short(build: &str) -> &str {
    build.get(..12).unwrap_or(build)
}

/// Collects the tail of a stream in a thread.
fn collect_tail(mut reader: std::io::PipeReader) -> OutputTail {
    let tail = OutputTail::default();
    let shared = tail.clone();
    std::thread::spawn(move || {
        let mut buffer = [0u8; 1024];
        while let Ok(n) = reader.read(&mut buffer) {
            if n == 0 {
                break;
            }
            shared.push(&buffer[..n]);
        }
    });
    tail
}

/// Keeps a remote process's handle alive as long as its stream is used.
struct RemoteProcess {
    _lease: Lease,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for RemoteProcess {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn start_agent(
    lease: Lease,
    host: &str,
    role: Role,
) -> Result<(AgentStream, Hello), Started> {
    let failed =
        |reason: String| Started::Failed(TransportError::Start { host: host.to_owned(), reason });
    let pipes = (std::io::pipe(), std::io::pipe(), std::io::pipe());
    let (
        (stdin_reader, stdin_writer),
        (stdout_reader, stdout_writer),
        (stderr_reader, stderr_writer),
    ) = match pipes {
        (Ok(a), Ok(b), Ok(c)) => (a, b, c),
        _ => return Err(failed("unable to create pipes".to_owned())),
    };
    let mut command = lease.session.clone().arc_raw_command(agent::remote_command(role));
    command
        .stdin(Stdio::from(OwnedFd::from(stdin_reader)))
        .stdout(Stdio::from(OwnedFd::from(stdout_writer)))
        .stderr(Stdio::from(OwnedFd::from(stderr_writer)));
    let child =
        command.spawn().await.map_err(|e| failed(format!("unable to run the agent: {e}")))?;
    // The command still holds our copies of the remote ends: without them, the streams end
    // when the remote process does.
    drop(command);
    let task = tokio::spawn(async move {
        let _ = child.wait().await;
    });
    let stderr = collect_tail(stderr_reader);
    let guard = RemoteProcess { _lease: lease, task };
    agent::greet(Box::new(stdout_reader), Box::new(stdin_writer), Box::new(guard), stderr, host)
        .await
}

async fn install(session: &Arc<Session>, binary: &Path, host: &str) -> TransportResult<()> {
    let failed = |reason: String| TransportError::Install { host: host.to_owned(), reason };
    let (stdin_reader, mut stdin_writer) =
        std::io::pipe().map_err(|e| failed(format!("unable to create a pipe: {e}")))?;
    let (stderr_reader, stderr_writer) =
        std::io::pipe().map_err(|e| failed(format!("unable to create a pipe: {e}")))?;
    let mut command = session.clone().arc_raw_command(agent::install_command());
    command
        .stdin(Stdio::from(OwnedFd::from(stdin_reader)))
        .stdout(Stdio::null())
        .stderr(Stdio::from(OwnedFd::from(stderr_writer)));
    let child =
        command.spawn().await.map_err(|e| failed(format!("unable to run the installer: {e}")))?;
    drop(command);
    let stderr = collect_tail(stderr_reader);
    let path = binary.to_owned();
    let copied = tokio::task::spawn_blocking(move || {
        let mut file = std::fs::File::open(&path)?;
        std::io::copy(&mut file, &mut stdin_writer)
    });
    let copied = copied.await.map_err(|e| failed(e.to_string()))?;
    let status = child.wait().await.map_err(|e| failed(e.to_string()))?;
    let said = stderr.text();
    match (copied, status.success()) {
        (Ok(_), true) => Ok(()),
        (Err(error), _) => Err(failed(format!("unable to send the agent: {error} {said}"))),
        (_, false) => Err(failed(format!("the installer exited with {status}: {said}"))),
    }
}

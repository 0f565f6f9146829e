//! Docker containers through the Engine API (bollard), not the docker CLI.
//!
//! # Theory of operation
//! - The engine is the one the session's captured environment names (`DOCKER_HOST`, captured
//!   at `create` by [`capture`], with a Docker context resolved to its endpoint), so a daemon
//!   started later with another environment reaches the same engine.
//! - [`DockerTransport::connect_agent`] inspects the container (it must exist and run; its
//!   identifier is returned so that the daemon notices a container recreated under the same
//!   name), reads the user's home, uid and gid from the container's `/etc/passwd` through the
//!   archive API (no shell is needed in the container), and runs
//!   `~/.mutagen/agents/<version>/mutagen-agent endpoint` as that user with an attached-stdio
//!   exec.
//! - When the agent is missing or of another build, it is uploaded as a tar archive into the
//!   agent directory under a temporary name, owned by the user, and moved into place by
//!   `mutagen-agent install` (a rename), so a half-written agent is never run.
//! - The exec's streams are bridged to blocking [`std::io::Read`]/[`std::io::Write`] for the
//!   protocol by two tasks; dropping the stream's guard closes the agent's input, and the
//!   agent exits.

use std::io::{Read, Write};
use std::path::Path;

use bollard::Docker;
use bollard::container::LogOutput;
use bollard::exec::{CreateExecOptions, StartExecOptions, StartExecResults};
use bollard::query_parameters::{DownloadFromContainerOptions, UploadToContainerOptions};
use futures_util::StreamExt;
use mutagen_protocol::{OutputTail, PROTOCOL_VERSION};
use mutagen_session::Environment;
use mutagen_session::url::DockerUrl;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

use crate::agent::{self, AgentBinary, Role, Started};
use crate::{AgentStream, Hello, TransportError, TransportResult};

/// The variables that choose the engine, captured at `create` (in this order).
pub const ENVIRONMENT: &[&str] = &[
    "DOCKER_HOST",
    "DOCKER_TLS_VERIFY",
    "DOCKER_CERT_PATH",
    "DOCKER_API_VERSION",
    "DOCKER_CONTEXT",
    "DOCKER_CONFIG",
];

/// How long an API request may take (seconds).
const API_TIMEOUT: u64 = 30;

/// Captures the Docker environment for one endpoint: each variable of [`ENVIRONMENT`] from
/// `<prefix><VAR>` (`MUTAGEN_ALPHA_`, `MUTAGEN_BETA_`) or else `<VAR>`, as `lookup` finds them.
/// Without a `DOCKER_HOST`, the context (`DOCKER_CONTEXT`, else the CLI configuration's
/// `currentContext`) is resolved to its endpoint and stored as `DOCKER_HOST`.
///
/// # Errors
/// A context that is named but cannot be found or read.
pub fn capture(
    prefix: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<Environment, String> {
    let mut captured = Environment::new();
    for name in ENVIRONMENT {
        if let Some(value) = lookup(&format!("{prefix}{name}")).or_else(|| lookup(name)) {
            captured.insert((*name).to_owned(), value);
        }
    }
    // The CLI's default certificate directory, made explicit for a daemon with another HOME.
    if captured.get("DOCKER_TLS_VERIFY").is_some_and(|v| !v.is_empty())
        && !captured.contains_key("DOCKER_CERT_PATH")
    {
        let directory = match captured.get("DOCKER_CONFIG") {
            Some(directory) => Some(directory.clone()),
            None => lookup("HOME").map(|home| format!("{home}/.docker")),
        };
        if let Some(directory) = directory {
            captured.insert("DOCKER_CERT_PATH".to_owned(), directory);
        }
    }
    if captured.contains_key("DOCKER_HOST") {
        return Ok(captured);
    }
    let configuration = match captured.get("DOCKER_CONFIG") {
        Some(directory) => Path::new(directory).to_owned(),
        None => match lookup("HOME") {
            Some(home) => Path::new(&home).join(".docker"),
            None => return Ok(captured),
        },
    };
    let context = match captured.get("DOCKER_CONTEXT") {
        Some(context) => Some(context.clone()),
        None => current_context(&configuration.join("config.json")),
    };
    if let Some(context) = context.filter(|c| c != "default") {
        let host = context_host(&configuration, &context)?;
        captured.insert("DOCKER_HOST".to_owned(), host);
    }
    Ok(captured)
}

/// The CLI configuration's `currentContext`, if any.
fn current_context(path: &Path) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    let value: serde_json::Value = serde_json::from_str(&text).ok()?;
    value.get("currentContext")?.as_str().filter(|c| !c.is_empty()).map(str::to_owned)
}

/// The Docker endpoint of context `name` (`contexts/meta/*/meta.json` of the CLI
/// configuration, found by its `Name`).
fn context_host(configuration: &Path, name: &str) -> Result<String, String> {
    let meta = configuration.join("contexts/meta");
    let entries = std::fs::read_dir(&meta).map_err(|e| {
        format!("unable to read docker context {name:?} in {}: {e}", meta.display())
    })?;
    for entry in entries.flatten() {
        let Ok(text) = std::fs::read_to_string(entry.path().join("meta.json")) else {
            continue;
        };
        let Ok(value) = serde_json::from_str::<serde_json::Value>(&text) else {
            continue;
        };
        if value.get("Name").and_then(serde_json::Value::as_str) == Some(name) {
            return value
                .pointer("/Endpoints/docker/Host")
                .and_then(serde_json::Value::as_str)
                .map(str::to_owned)
                .ok_or_else(|| format!("docker context {name:?} has no docker endpoint"));
        }
    }
    Err(format!("docker context {name:?} was not found in {}", meta.display()))
}

/// Opens the engine named by a captured environment.
fn engine(environment: &Environment) -> Result<Docker, String> {
    let tls = environment.get("DOCKER_TLS_VERIFY").is_some_and(|v| !v.is_empty());
    let host = environment.get("DOCKER_HOST").map_or("unix:///var/run/docker.sock", String::as_str);
    let pinned = match environment.get("DOCKER_API_VERSION") {
        Some(text) => Some(api_version(text)?),
        None => None,
    };
    let version = pinned.as_ref().unwrap_or(bollard::API_DEFAULT_VERSION);
    let docker = if tls {
        // Verified TLS, with the CLI's file names in DOCKER_CERT_PATH (captured at create).
        let Some(directory) = environment.get("DOCKER_CERT_PATH").map(Path::new) else {
            return Err("DOCKER_TLS_VERIFY is set but DOCKER_CERT_PATH is not".to_owned());
        };
        for file in ["ca.pem", "cert.pem", "key.pem"] {
            if !directory.join(file).is_file() {
                return Err(format!("the TLS file {} is missing", directory.join(file).display()));
            }
        }
        Docker::connect_with_ssl(
            host,
            &directory.join("key.pem"),
            &directory.join("cert.pem"),
            &directory.join("ca.pem"),
            API_TIMEOUT,
            version,
        )
    } else if let Some(path) = host.strip_prefix("unix://") {
        Docker::connect_with_unix(path, API_TIMEOUT, version)
    } else if host.starts_with("tcp://") || host.starts_with("http://") {
        Docker::connect_with_http(host, API_TIMEOUT, version)
    } else {
        return Err(format!("unsupported DOCKER_HOST {host:?} (expected unix:// or tcp://)"));
    };
    docker.map_err(|e| format!("unable to use the Docker engine at {host}: {e}"))
}

/// Parses `DOCKER_API_VERSION` (`1.41`).
fn api_version(text: &str) -> Result<bollard::ClientVersion, String> {
    let parsed = text.trim_start_matches('v').split_once('.').and_then(|(major, minor)| {
        Some(bollard::ClientVersion {
            major_version: major.parse().ok()?,
            minor_version: minor.parse().ok()?,
        })
    });
    parsed.ok_or_else(|| format!("invalid DOCKER_API_VERSION {text:?} (expected, say, 1.41)"))
}

/// The engine's answer as a short, lowercase-first message.
fn api_error(error: &bollard::errors::Error) -> String {
    match error {
        bollard::errors::Error::DockerResponseServerError { message, .. } => message.clone(),
        other => other.to_string(),
    }
}

/// A running container, as the transport found it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Container {
    /// The container's full identifier: another one under the same name is another file
    /// system.
    pub identifier: String,
}

/// Connects to agents in containers; shared by every session of a daemon.
#[derive(Debug)]
pub struct DockerTransport {
    agent: std::sync::Arc<AgentBinary>,
}

impl DockerTransport {
    /// A transport that installs `agent` where needed.
    pub fn new(agent: std::sync::Arc<AgentBinary>) -> DockerTransport {
        DockerTransport { agent }
    }

    /// Starts an agent in the container `url` names (installing it first when needed) on the
    /// engine `environment` names.
    ///
    /// # Errors
    /// [`TransportError`] naming the container and the cause: an unreachable engine, no such
    /// container, a stopped container, a missing user, a failed install.
    pub async fn connect_agent(
        &self,
        url: &DockerUrl,
        role: Role,
        environment: &Environment,
    ) -> TransportResult<(AgentStream, Hello, Container)> {
        let host = format!("container {}", url.container);
        let connect = |reason: String| TransportError::Connect { host: host.clone(), reason };
        let docker = engine(environment).map_err(&connect)?;
        // A version the user pinned is used as it is; otherwise the engine's own, if older.
        let docker = if environment.contains_key("DOCKER_API_VERSION") {
            docker
        } else {
            docker.negotiate_version().await.map_err(|e| {
                connect(format!("the Docker engine did not answer: {}", api_error(&e)))
            })?
        };
        let inspected =
            docker.inspect_container(&url.container, None).await.map_err(|e| match &e {
                bollard::errors::Error::DockerResponseServerError { status_code: 404, .. } => {
                    connect("no such container".to_owned())
                }
                _ => connect(api_error(&e)),
            })?;
        let state = inspected.state.as_ref();
        if !state.and_then(|s| s.running).unwrap_or(false) {
            let status =
                state.and_then(|s| s.status).map_or("unknown".to_owned(), |s| s.to_string());
            return Err(connect(format!("the container is not running (status {status})")));
        }
        let identifier = inspected.id.clone().unwrap_or_default();
        let user = url.user.clone().or_else(|| {
            inspected.config.as_ref().and_then(|c| c.user.clone()).filter(|u| !u.is_empty())
        });
        let account = account(&docker, &url.container, user.as_deref()).await.map_err(&connect)?;
        let container = Container { identifier: identifier.clone() };
        let (_, build) = self.agent.locate()?;
        let ours = |hello: &Hello| hello.protocol == PROTOCOL_VERSION && hello.build == build;
        let exec_user = user.clone().unwrap_or_else(|| "0".to_owned());
        let mismatch =
            match start_agent(&docker, &identifier, &exec_user, &account, &host, role).await {
                Ok((stream, hello)) if ours(&hello) => return Ok((stream, hello, container)),
                Ok((_, hello)) => format!("found agent {} (another build)", hello.version),
                Err(Started::Missing(output)) => output,
                Err(Started::Failed(error)) => return Err(error),
            };
        tracing::info!("installing the agent in {host} ({mismatch})");
        self.install(&docker, &identifier, &exec_user, &account, &host).await?;
        match start_agent(&docker, &identifier, &exec_user, &account, &host, role).await {
            Ok((stream, hello)) if ours(&hello) => Ok((stream, hello, container)),
            Ok(_) => Err(TransportError::Start {
                host,
                reason: "the installed agent reports another build".to_owned(),
            }),
            Err(Started::Missing(output)) => Err(TransportError::Start {
                host,
                reason: if output.is_empty() { "it exited at once".to_owned() } else { output },
            }),
            Err(Started::Failed(error)) => Err(error),
        }
    }

    /// Uploads the agent under a temporary name, owned by the user, and renames it into place
    /// with `mutagen-agent install`.
    async fn install(
        &self,
        docker: &Docker,
        container: &str,
        user: &str,
        account: &Account,
        host: &str,
    ) -> TransportResult<()> {
        let failed = |reason: String| TransportError::Install { host: host.to_owned(), reason };
        let (binary, _) = self.agent.locate()?;
        let directory = agent::remote_directory();
        let temporary = format!(".mutagen-agent.{}", std::process::id());
        let archive = tokio::task::spawn_blocking({
            let (directory, temporary, account) =
                (directory.clone(), temporary.clone(), account.clone());
            move || agent_archive(&binary, &directory, &temporary, &account)
        })
        .await
        .map_err(|e| failed(e.to_string()))?
        .map_err(|e| failed(format!("unable to read the agent: {e}")))?;
        let options = UploadToContainerOptions { path: account.home.clone(), ..Default::default() };
        docker
            .upload_to_container(container, Some(options), bollard::body_full(archive.into()))
            .await
            .map_err(|e| match &e {
                bollard::errors::Error::DockerResponseServerError { status_code: 404, .. } => {
                    failed(format!("the home directory {} does not exist", account.home))
                }
                _ => failed(format!("unable to upload the agent: {}", api_error(&e))),
            })?;
        let path = format!("{}/{directory}/{temporary}", account.home);
        let (code, output) =
            run(docker, container, user, &account.home, vec![path, "install".into()])
                .await
                .map_err(failed)?;
        if code != Some(0) {
            return Err(failed(format!("the installer failed: {}", output.trim())));
        }
        Ok(())
    }
}

/// A container user's account, from the container's `/etc/passwd`.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Account {
    home: String,
    uid: u64,
    gid: u64,
}

/// Finds `user` (a name or a uid, optionally `:group`; `None` is root) in the container's
/// `/etc/passwd`, read through the archive API.
async fn account(docker: &Docker, container: &str, user: Option<&str>) -> Result<Account, String> {
    let options = DownloadFromContainerOptions { path: "/etc/passwd".to_owned() };
    let mut stream = docker.download_from_container(container, Some(options));
    let mut archive = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| format!("unable to read /etc/passwd: {}", api_error(&e)))?;
        archive.extend_from_slice(&chunk);
        if archive.len() > 16 << 20 {
            return Err("/etc/passwd is larger than 16 MiB".to_owned());
        }
    }
    let passwd = first_file(&archive).map_err(|e| format!("unable to read /etc/passwd: {e}"))?;
    let wanted = user.map_or("0", |u| u.split(':').next().unwrap_or(u));
    parse_passwd(&passwd, wanted)
        .ok_or_else(|| format!("unable to find user {wanted} in the container"))
}

/// The content of the first file of a tar archive.
fn first_file(archive: &[u8]) -> std::io::Result<String> {
    let mut archive = tar::Archive::new(archive);
    let mut entry =
        archive.entries()?.next().ok_or_else(|| std::io::Error::other("an empty archive"))??;
    let mut text = String::new();
    entry.read_to_string(&mut text)?;
    Ok(text)
}

/// Finds a user by name or uid in `passwd` text.
fn parse_passwd(passwd: &str, wanted: &str) -> Option<Account> {
    let by_uid = wanted.parse::<u64>().ok();
    passwd.lines().find_map(|line| {
        let fields: Vec<&str> = line.split(':').collect();
        let [name, _, uid, gid, _, home, ..] = fields.as_slice() else {
            return None;
        };
        let uid: u64 = uid.parse().ok()?;
        let matches = *name == wanted || by_uid == Some(uid);
        let trimmed = home.trim_end_matches('/');
        (matches && home.starts_with('/')).then(|| Account {
            home: if trimmed.is_empty() { "/".to_owned() } else { trimmed.to_owned() },
            uid,
            gid: gid.parse().unwrap_or(uid),
        })
    })
}

/// A tar archive holding the agent directory's parents (`.mutagen`, `.mutagen/agents`...),
/// owned by the account, and the agent under `temporary`.
fn agent_archive(
    binary: &Path,
    directory: &str,
    temporary: &str,
    account: &Account,
) -> std::io::Result<Vec<u8>> {
    let mut content = Vec::new();
    std::fs::File::open(binary)?.read_to_end(&mut content)?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut builder = tar::Builder::new(Vec::new());
    let mut path = String::new();
    for component in directory.split('/') {
        if !path.is_empty() {
            path.push('/');
        }
        path.push_str(component);
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Directory);
        header.set_mode(0o700);
        header.set_uid(account.uid);
        header.set_gid(account.gid);
        header.set_size(0);
        header.set_mtime(now);
        builder.append_data(&mut header, format!("{path}/"), std::io::empty())?;
    }
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(tar::EntryType::Regular);
    header.set_mode(0o700);
    header.set_uid(account.uid);
    header.set_gid(account.gid);
    header.set_size(content.len() as u64);
    header.set_mtime(now);
    builder.append_data(&mut header, format!("{directory}/{temporary}"), content.as_slice())?;
    builder.into_inner()
}

/// Runs a command to completion; returns its exit code and output.
async fn run(
    docker: &Docker,
    container: &str,
    user: &str,
    home: &str,
    command: Vec<String>,
) -> Result<(Option<i64>, String), String> {
    let exec = docker
        .create_exec(
            container,
            CreateExecOptions {
                attach_stdout: Some(true),
                attach_stderr: Some(true),
                user: Some(user.to_owned()),
                working_dir: Some(home.to_owned()),
                cmd: Some(command),
                ..Default::default()
            },
        )
        .await
        .map_err(|e| api_error(&e))?;
    let mut output = String::new();
    if let StartExecResults::Attached { output: mut stream, .. } =
        docker.start_exec(&exec.id, None).await.map_err(|e| api_error(&e))?
    {
        while let Some(Ok(chunk)) = stream.next().await {
            output.push_str(&String::from_utf8_lossy(&chunk.into_bytes()));
        }
    }
    let inspected = docker.inspect_exec(&exec.id).await.map_err(|e| api_error(&e))?;
    Ok((inspected.exit_code, output))
}

/// Runs the agent with an attached-stdio exec and reads its greeting.
async fn start_agent(
    docker: &Docker,
    container: &str,
    user: &str,
    account: &Account,
    host: &str,
    role: Role,
) -> Result<(AgentStream, Hello), Started> {
    let failed =
        |reason: String| Started::Failed(TransportError::Start { host: host.to_owned(), reason });
    let command = vec![
        format!("{}/{}", account.home, agent::remote_directory()) + "/mutagen-agent",
        role.subcommand().to_owned(),
    ];
    let exec = docker
        .create_exec(
            container,
            CreateExecOptions {
                attach_stdin: Some(true),
                attach_stdout: Some(true),
                attach_stderr: Some(true),
                tty: Some(false),
                user: Some(user.to_owned()),
                working_dir: Some(account.home.clone()),
                env: Some(vec![format!("HOME={}", account.home)]),
                cmd: Some(command),
                ..Default::default()
            },
        )
        .await
        .map_err(|e| failed(api_error(&e)))?;
    let options = StartExecOptions { detach: false, tty: false, output_capacity: Some(1 << 20) };
    let (mut output, mut input) = match docker.start_exec(&exec.id, Some(options)).await {
        Ok(StartExecResults::Attached { output, input }) => (output, input),
        Ok(StartExecResults::Detached) => return Err(failed("the exec detached".to_owned())),
        Err(e) => return Err(failed(api_error(&e))),
    };
    // Standard output into a channel read by a blocking reader; standard error into a tail.
    let stderr = OutputTail::default();
    let (stdout_sender, stdout_receiver) = mpsc::channel::<Vec<u8>>(64);
    let tail = stderr.clone();
    let reading = tokio::spawn(async move {
        while let Some(Ok(chunk)) = output.next().await {
            match chunk {
                LogOutput::StdOut { message } | LogOutput::Console { message } => {
                    if stdout_sender.send(message.to_vec()).await.is_err() {
                        break;
                    }
                }
                LogOutput::StdErr { message } => tail.push(&message),
                LogOutput::StdIn { .. } => {}
            }
        }
    });
    // Standard input from a channel a blocking writer fills; closing it ends the agent.
    let (stdin_sender, mut stdin_receiver) = mpsc::channel::<Vec<u8>>(64);
    let writing = tokio::spawn(async move {
        while let Some(bytes) = stdin_receiver.recv().await {
            if input.write_all(&bytes).await.is_err() || input.flush().await.is_err() {
                break;
            }
        }
        let _ = input.shutdown().await;
    });
    let guard = Tasks(vec![reading, writing]);
    let reader =
        Box::new(ChannelReader { receiver: stdout_receiver, pending: Vec::new(), position: 0 });
    let writer = Box::new(ChannelWriter { sender: Some(stdin_sender) });
    agent::greet(reader, writer, Box::new(guard), stderr, host).await
}

/// Aborts the bridging tasks when the stream is dropped.
struct Tasks(Vec<tokio::task::JoinHandle<()>>);

impl Drop for Tasks {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

/// Blocking reads from the exec's standard output.
struct ChannelReader {
    receiver: mpsc::Receiver<Vec<u8>>,
    pending: Vec<u8>,
    position: usize,
}

impl Read for ChannelReader {
    fn read(&mut self, buffer: &mut [u8]) -> std::io::Result<usize> {
        while self.position == self.pending.len() {
            match self.receiver.blocking_recv() {
                Some(chunk) => {
                    self.pending = chunk;
                    self.position = 0;
                }
                None => return Ok(0),
            }
        }
        let n = buffer.len().min(self.pending.len() - self.position);
        buffer[..n].copy_from_slice(&self.pending[self.position..self.position + n]);
        self.position += n;
        Ok(n)
    }
}

/// Blocking writes to the exec's standard input (each write is one chunk; the protocol
/// buffers before it writes).
struct ChannelWriter {
    sender: Option<mpsc::Sender<Vec<u8>>>,
}

impl Write for ChannelWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        let closed = || std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the exec ended");
        let sender = self.sender.as_ref().ok_or_else(closed)?;
        sender.blocking_send(bytes.to_vec()).map_err(|_| closed())?;
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    /// Looks a variable up in a map, as `capture` looks it up in the environment.
    fn lookup_in(map: &BTreeMap<String, String>) -> impl Fn(&str) -> Option<String> + '_ {
        move |name| map.get(name).cloned()
    }

    #[test]
    fn api_versions_parse() {
        let version = api_version("1.41").expect("1.41");
        assert_eq!((version.major_version, version.minor_version), (1, 41));
        assert!(api_version("latest").expect_err("bad").contains("DOCKER_API_VERSION"));
    }

    #[test]
    fn passwd_entries_are_found_by_name_or_uid() {
        let passwd = "root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1001:u:/home/user/:/bin/sh\nbad\n";
        let user = Account { home: "/home/user".into(), uid: 1000, gid: 1001 };
        assert_eq!(parse_passwd(passwd, "user"), Some(user.clone()));
        assert_eq!(parse_passwd(passwd, "1000"), Some(user));
        assert_eq!(parse_passwd(passwd, "0").map(|a| a.home), Some("/root".into()));
        assert_eq!(parse_passwd(passwd, "nobody"), None);
    }

    #[test]
    fn the_environment_and_contexts_are_captured() {
        let dir = tempfile::tempdir().expect("tempdir");
        let meta = dir.path().join(".docker/contexts/meta/0123");
        std::fs::create_dir_all(&meta).expect("meta");
        std::fs::write(
            meta.join("meta.json"),
            r#"{"Name":"remote","Endpoints":{"docker":{"Host":"tcp://10.0.0.1:2375"}}}"#,
        )
        .expect("meta.json");
        std::fs::write(dir.path().join(".docker/config.json"), r#"{"currentContext":"remote"}"#)
            .expect("config");
        let home = dir.path().display().to_string();
        let environment = BTreeMap::from([
            ("HOME".to_owned(), home.clone()),
            ("DOCKER_API_VERSION".to_owned(), "1.41".to_owned()),
        ]);
        let captured = capture("MUTAGEN_BETA_", &lookup_in(&environment)).expect("capture");
        assert_eq!(captured.get("DOCKER_HOST").map(String::as_str), Some("tcp://10.0.0.1:2375"));
        assert_eq!(captured.get("DOCKER_API_VERSION").map(String::as_str), Some("1.41"));

        // The per-endpoint override wins, and an explicit host needs no context.
        let mut environment = environment;
        environment.insert("DOCKER_HOST".into(), "unix:///a.sock".into());
        environment.insert("MUTAGEN_BETA_DOCKER_HOST".into(), "unix:///b.sock".into());
        let beta = capture("MUTAGEN_BETA_", &lookup_in(&environment)).expect("beta");
        assert_eq!(beta.get("DOCKER_HOST").map(String::as_str), Some("unix:///b.sock"));
        let alpha = capture("MUTAGEN_ALPHA_", &lookup_in(&environment)).expect("alpha");
        assert_eq!(alpha.get("DOCKER_HOST").map(String::as_str), Some("unix:///a.sock"));

        // A context that does not exist is an error naming it.
        environment.clear();
        environment.insert("HOME".into(), home);
        environment.insert("DOCKER_CONTEXT".into(), "gone".into());
        let error = capture("", &lookup_in(&environment)).expect_err("missing context");
        assert!(error.contains("docker context \"gone\" was not found"), "{error}");
    }
}

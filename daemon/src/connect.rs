//! Connecting a session's endpoints: one factory for every kind of URL.
//!
//! [`Connector::connect`] turns a session side into a `Box<dyn Endpoint>`: a
//! [`LocalEndpoint`](mutagen_endpoint::LocalEndpoint) (built by [`local_endpoint`], as the agent builds its own) for a local path, a [`RemoteEndpoint`] served by an agent for an SSH URL
//! (through the daemon's shared [`SshPool`]). The controller never knows which it drives.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use mutagen_endpoint::{Endpoint, Side};
use mutagen_forward::agent::Init;
use mutagen_forward::mux::{Incoming, Mux};
use mutagen_protocol::server::local_endpoint;
use mutagen_protocol::{EndpointOptions, RemoteEndpoint};
use mutagen_session::forward::ForwardUrl;
use mutagen_session::url::{DockerUrl, SshUrl, Url};
use mutagen_session::{SessionSpec, WatchMode};
use mutagen_transports::ssh::Prompter;
use mutagen_transports::{AgentBinary, DockerTransport, Role, SshPool};

use crate::paths::DataDirectory;

/// What the daemon was told about remote transports (by the environment of `daemon run`).
#[derive(Clone, Debug, Default)]
pub struct TransportSettings {
    /// The directory holding the `ssh` to run (`MUTAGEN_SSH_PATH`); `None`: `ssh` from `PATH`.
    pub ssh_directory: Option<PathBuf>,
    /// The agent binary to install (`MUTAGEN_AGENT_PATH`); `None`: found beside the daemon.
    pub agent_path: Option<PathBuf>,
    /// The program ssh runs to ask questions (the `mutagen` binary); `None`: never prompt.
    pub askpass: Option<PathBuf>,
}

/// Makes an endpoint's calls in flight (and later ones) fail at once, from another thread.
pub type Cancel = Arc<dyn Fn() + Send + Sync>;

/// A connected endpoint and what the controller needs to know about it.
pub struct Connected {
    /// The endpoint.
    pub endpoint: Box<dyn Endpoint>,
    /// Ends its calls at once (remote endpoints only).
    pub canceller: Option<Cancel>,
    /// For the journal, when it is remote: (agent version, resolved root, round trip in µs).
    pub remote: Option<(String, String, u64)>,
    /// How long connecting took.
    pub duration_ms: u64,
    /// Which endpoint this is, where that can change under the same URL (a container's
    /// identifier: a container recreated under the same name is another file system).
    pub identity: Option<String>,
}

/// Makes endpoints in the controller's tests.
#[cfg(test)]
pub type Fake = Box<dyn Fn(Side) -> Result<Connected, String> + Send + Sync>;

/// Builds endpoints for sessions; shared by every controller of a daemon.
pub struct Connector {
    data: DataDirectory,
    ssh: SshPool,
    docker: DockerTransport,
    /// Replaces every connection in the controller's tests.
    #[cfg(test)]
    pub fake: Option<Fake>,
}

impl std::fmt::Debug for Connector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connector").field("data", &self.data).field("ssh", &self.ssh).finish()
    }
}

impl Connector {
    /// Returns a connector; stale control sockets from an earlier daemon are removed.
    pub fn new(data: DataDirectory, settings: &TransportSettings) -> Connector {
        let control = data.ssh_control();
        let _ = std::fs::remove_dir_all(&control);
        let executable = std::env::current_exe().ok();
        let agent = Arc::new(AgentBinary::new(settings.agent_path.clone(), executable.as_deref()));
        let ssh = SshPool::new(
            control,
            settings.ssh_directory.as_deref(),
            agent.clone(),
            settings.askpass.clone(),
        );
        Connector {
            data,
            ssh,
            docker: DockerTransport::new(agent),
            #[cfg(test)]
            fake: None,
        }
    }

    /// Connects one side of a session; ssh asks `prompter` what it needs to know (without
    /// one, it never prompts).
    ///
    /// # Errors
    /// A message for the user naming the URL or host and the cause.
    pub async fn connect(
        &self,
        identifier: &str,
        spec: &SessionSpec,
        side: Side,
        prompter: Option<&Prompter>,
    ) -> Result<Connected, String> {
        #[cfg(test)]
        if let Some(fake) = &self.fake {
            return fake(side);
        }
        let started = Instant::now();
        let configuration = &spec.configuration;
        let own = configuration.endpoint(side);
        let text = match side {
            Side::Alpha => &spec.alpha,
            Side::Beta => &spec.beta,
        };
        let url = Url::stored(text).map_err(|e| e.to_string())?;
        let mut options = EndpointOptions {
            root: String::new(),
            staging_name: format!("{identifier}-{side}"),
            ignores: configuration.ignores.clone(),
            ignore_vcs: configuration.ignore_vcs,
            symlink_mode: configuration.symlink_mode,
            read_only: side == Side::Alpha && !configuration.mode.is_bidirectional(),
            watch: own.watch_mode == WatchMode::Portable,
            stage_mode: own.stage_mode,
            ignore_syntax: configuration.ignore_syntax,
            vcs_ignored: configuration.ignore_vcs_ignored,
            full_scans: own.scan_mode == mutagen_core::ScanMode::Full,
            permissions_mode: own.permissions_mode,
            file_mode: own.ownership.file_mode,
            directory_mode: own.ownership.directory_mode,
            owner: own.ownership.owner.clone(),
            group: own.ownership.group.clone(),
        };
        match url {
            Url::Local(root) => {
                let staging = self.data.staging(identifier, &side.to_string());
                let (endpoint, _) = local_endpoint(root, &staging, &options)?;
                Ok(Connected {
                    endpoint: Box::new(endpoint),
                    canceller: None,
                    remote: None,
                    duration_ms: 0,
                    identity: None,
                })
            }
            Url::Ssh(ssh) => {
                let (stream, hello) = self
                    .ssh
                    .connect_agent(&ssh, Role::Endpoint, prompter)
                    .await
                    .map_err(|e| e.to_string())?;
                options.root.clone_from(&ssh.path);
                remote(stream, hello, options, ssh.to_string(), own.compression, started).await
            }
            Url::Docker(docker) => {
                let environment = match side {
                    Side::Alpha => &spec.alpha_environment,
                    Side::Beta => &spec.beta_environment,
                };
                let (stream, hello, container) = self
                    .docker
                    .connect_agent(&docker, Role::Endpoint, environment)
                    .await
                    .map_err(|e| e.to_string())?;
                options.root.clone_from(&docker.path);
                let mut connected =
                    remote(stream, hello, options, docker.to_string(), own.compression, started)
                        .await?;
                connected.identity = Some(container.identifier);
                Ok(connected)
            }
        }
    }
}

impl Connector {
    /// Starts a forwarding agent for a remote forward endpoint and initializes it (to listen
    /// or to dial); returns its link and the streams it opens.
    ///
    /// # Errors
    /// A message naming the endpoint and the cause (the transport, or the agent's refusal,
    /// such as a listener that cannot bind).
    pub async fn connect_forward(
        &self,
        url: &ForwardUrl,
        init: Init,
        environment: &mutagen_session::Environment,
    ) -> Result<(Mux, crossbeam_channel::Receiver<Incoming>), String> {
        let (stream, description) = match url {
            ForwardUrl::Local(spec) => return Err(format!("{spec} is not remote")),
            ForwardUrl::Ssh { user, host, port, .. } => {
                let ssh = SshUrl {
                    user: user.clone(),
                    host: host.clone(),
                    port: *port,
                    path: String::new(),
                };
                let (stream, _) = self
                    .ssh
                    .connect_agent(&ssh, Role::Forwarder, None)
                    .await
                    .map_err(|e| e.to_string())?;
                (stream, url.to_string())
            }
            ForwardUrl::Docker { user, container, .. } => {
                let docker = DockerUrl {
                    user: user.clone(),
                    container: container.clone(),
                    path: String::new(),
                };
                let (stream, _, _) = self
                    .docker
                    .connect_agent(&docker, Role::Forwarder, environment)
                    .await
                    .map_err(|e| e.to_string())?;
                (stream, url.to_string())
            }
        };
        tokio::task::spawn_blocking(move || mutagen_forward::agent::initialize(stream, &init))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("{description}: {e}"))
    }
}

/// Initializes the endpoint an agent serves over `stream`.
async fn remote(
    stream: mutagen_protocol::AgentStream,
    hello: mutagen_protocol::Hello,
    options: EndpointOptions,
    description: String,
    compression: mutagen_core::Compression,
    started: Instant,
) -> Result<Connected, String> {
    let named = description.clone();
    let endpoint = tokio::task::spawn_blocking(move || {
        RemoteEndpoint::initialize(stream, options, description, compression)
    })
    .await
    .map_err(|e| e.to_string())?
    .map_err(|e| format!("unable to use {named}: {e}"))?;
    let canceller = endpoint.canceller();
    let canceller: Option<Cancel> = Some(Arc::new(move || canceller.cancel()));
    let round_trip = u64::try_from(endpoint.round_trip().as_micros()).unwrap_or(u64::MAX);
    let remote = Some((hello.version, endpoint.root().to_owned(), round_trip));
    let duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    Ok(Connected { endpoint: Box::new(endpoint), canceller, remote, duration_ms, identity: None })
}

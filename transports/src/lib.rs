//! Transports: how the daemon reaches an agent on another host.
//!
//! A transport turns an endpoint URL into an [`AgentStream`] to a `mutagen-agent` process on
//! the remote side, installing the agent there first when it is missing or of another build.
//! What flows over the stream is the business of `mutagen-protocol`.
//!
//! # Layout
//! - [`agent`]: finding the local agent binary, its build identity, and where it is installed
//!   on a remote host.
//! - [`docker`]: Docker containers through the Engine API (bollard): attached-stdio execs,
//!   archive uploads, the captured engine environment.
//! - [`ssh`]: SSH through the system OpenSSH (the `openssh` crate over a master connection this
//!   crate starts itself), one master per (user, host, port), shared and closed when unused.
//!
//! Libraries do not read the environment: the daemon passes the ssh directory and agent path
//! it was given (`MUTAGEN_SSH_PATH`, `MUTAGEN_AGENT_PATH`).

#![deny(unsafe_code)]

pub mod agent;
pub mod docker;
pub mod ssh;

pub use agent::{AgentBinary, Role};
pub use docker::DockerTransport;
pub use mutagen_protocol::{AgentStream, Hello};
pub use ssh::SshPool;

/// A failure to reach an agent, naming the host and the cause.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// The local agent binary is missing or unreadable.
    #[error("{0}")]
    AgentBinary(String),
    /// The SSH connection could not be established (unknown host, authentication...).
    #[error("unable to connect to {host}: {reason}")]
    Connect {
        /// `[user@]host[:port]`.
        host: String,
        /// What ssh said, lowercase where it was ours.
        reason: String,
    },
    /// The agent could not be installed.
    #[error("unable to install the agent on {host}: {reason}")]
    Install {
        /// `[user@]host[:port]`.
        host: String,
        /// Why.
        reason: String,
    },
    /// The agent did not start or did not greet properly.
    #[error("unable to start the agent on {host}: {reason}")]
    Start {
        /// `[user@]host[:port]`.
        host: String,
        /// Why.
        reason: String,
    },
}

/// A shorthand for transport results.
pub type TransportResult<T> = Result<T, TransportError>;

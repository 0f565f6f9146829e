//! The agent protocol: what flows between the daemon and a `mutagen-agent` on a remote host.
//!
//! A transport (SSH, Docker) gives the daemon a byte stream to an agent process; this crate
//! defines what flows over it and implements both ends of the [`mutagen_endpoint::Endpoint`]
//! contract on top of it. It is separate from the journal's disk format and from the
//! daemon's IPC, so none of them changes by accident when another does.
//!
//! # Layout
//! - [`codec`]: length-prefixed postcard frames with a size limit, over blocking streams.
//! - [`compression`]: the negotiated compression of everything after the handshake.
//! - [`messages`]: the handshake ([`Hello`]), [`Request`]s and [`Response`]s.
//! - [`client`]: [`RemoteEndpoint`], the endpoint the daemon drives, and the [`handshake`].
//! - [`server`]: [`serve`], the agent's loop around a [`mutagen_endpoint::LocalEndpoint`].
//!
//! # Wire format
//! The agent writes [`MAGIC`], then a [`Hello`] frame. The daemon answers with a frame naming
//! the [`compression::Compression`] of everything that follows, then sends
//! [`Request::Initialize`] and one request per endpoint call; the agent answers each in order
//! (a supply with a stream of transmissions), except [`Request::Receive`], which is
//! pipelined and never answered. Wakeups and heartbeats flow back unrequested.

#![deny(unsafe_code)]

pub mod client;
pub mod codec;
pub mod compression;
#[doc(hidden)]
pub mod fuzzing;
pub mod messages;
pub mod server;

use std::time::Duration;

pub use client::{AgentStream, Canceller, OutputTail, RemoteEndpoint, handshake};
pub use messages::{
    EndpointOptions, Hello, MAGIC, PROTOCOL_VERSION, Request, Response, SnapshotTransfer,
};
pub use server::{AgentEnvironment, build_of, serve};

/// A failure of the agent connection as a whole.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProtocolError {
    /// Reading or writing the stream failed.
    #[error("{0}")]
    Io(#[source] std::io::Error),
    /// The stream ended; holds what the peer printed instead of a greeting, if anything.
    #[error("the connection closed{}", if .0.is_empty() { String::new() } else { format!(" (output: {})", .0) })]
    Closed(String),
    /// A frame is beyond the limit.
    #[error("a message of {size} bytes exceeds the limit of {limit} bytes")]
    TooLarge {
        /// The announced size.
        size: u64,
        /// The limit.
        limit: u32,
    },
    /// A frame is not a message.
    #[error("unable to decode a message: {0}")]
    Decode(String),
    /// A message cannot be encoded.
    #[error("unable to encode a message: {0}")]
    Encode(String),
    /// The stream does not start with an agent greeting.
    #[error("handshake failed: {0}")]
    Handshake(String),
    /// The peer sent something the protocol does not allow here.
    #[error("protocol violation: {0}")]
    Unexpected(String),
    /// The agent refused a request.
    #[error("{0}")]
    Refused(String),
    /// Nothing arrived for too long.
    #[error("the agent sent nothing for {} s", .0.as_secs())]
    Silent(Duration),
    /// The call was cancelled (a pause, a terminate, a daemon shutdown).
    #[error("cancelled")]
    Cancelled,
}

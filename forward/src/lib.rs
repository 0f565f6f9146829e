//! Network forwarding: a source listens, a destination dials, and each connection accepted
//! by the source is relayed to a connection the destination makes.
//!
//! Either end may be local or behind an agent (over SSH, in a container). Everything here is
//! blocking and thread-based, so that the agent, which links no async runtime, runs the same
//! code as the daemon.
//!
//! # Layout
//! - [`socket`]: local listeners (tcp, tcp4, tcp6, unix with owner and permissions) whose
//!   accept another thread can stop, and dialing.
//! - [`mux`]: many streams over one agent link, with per-stream credit and half-close (our
//!   own framing over the protocol crate's codec rather than a multiplexer crate: the crates
//!   that exist, yamux among them, need an async runtime the agent does not link, and one
//!   frame type keeps the wire fuzzable and auditable).
//! - [`mod@relay`]: copying both ways with half-close and the session's counters.
//! - [`agent`]: the agent's forwarding role and the daemon's way to initialize it.

#![deny(unsafe_code)]

pub mod agent;
#[doc(hidden)]
pub mod fuzzing;
pub mod mux;
pub mod relay;
pub mod socket;

pub use agent::{Init, InitReply};
pub use mux::{Incoming, Mux, Stream};
pub use relay::{Counters, relay};
pub use socket::{Connection, Listener, OverwriteMode, SocketOptions, Stopper, dial};

//! The per-user daemon that hosts synchronization sessions, and the client the command line
//! uses to talk to it.
//!
//! # Layout
//! - [`paths`]: the data directory layout.
//! - [`protocol`]: length-prefixed postcard frames over the Unix socket; requests, responses and
//!   the listed session model.
//! - [`server`]: the daemon process (exclusive lock, log, journal, socket, signals).
//! - [`manager`]: the set of sessions, selections, request handling.
//! - [`connect`]: the endpoint factory (local paths, SSH agents) shared by controllers.
//! - [`controller`]: one task per session: cycle, journal, wait for changes or commands.
//! - [`client`]: connect with autostart and version check.
//! - [`log`]: the daemon log, rotated at a size limit.
//! - [`integrity`]: the journal verified or recovered while no daemon runs.
//! - [`service`]: the systemd user unit of `daemon register|unregister`.
//!
//! # Invariants
//! - One daemon per data directory (an exclusive `flock` on `daemon/daemon.lock`).
//! - The data and daemon directories are 0700 and the socket 0600: only the owner can talk
//!   to the daemon.
//! - Session state is only ever the fold of the journal; an event a command or a cycle depends
//!   on is flushed before the command is answered or the next cycle begins.

pub mod client;
pub mod connect;
pub mod controller;
pub mod forward;
pub mod integrity;
pub mod log;
pub mod manager;
pub mod paths;
pub mod protocol;
pub mod server;
pub mod service;

pub use client::Client;
pub use paths::DataDirectory;

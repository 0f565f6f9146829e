//! Configuration files, parsed and merged into the settings a session is created with.
//!
//! Three kinds of YAML file feed a session's configuration, lowest precedence first:
//! 1. the built-in defaults ([`mutagen_session::Configuration::default`]);
//! 2. the global file `~/.mutagen.yml` (skipped with `--no-global-configuration`);
//! 3. each `-c/--configuration-file` in the order given;
//! 4. the command line's flags (or, for a project, the session's own entry).
//!
//! Each level is a partial [`SyncSettings`] or [`ForwardSettings`]: a value it leaves unset
//! falls through to the level below, a value it sets wins (see [`SyncSettings::merge`]), and
//! ignore lists are concatenated, lowest level first. Per-endpoint settings
//! (`configurationAlpha`, `--watch-mode-beta` ...) then override the session's for that
//! endpoint. The merged result is frozen into the session when it is created: editing a file
//! later changes no existing session.
//!
//! # Invariants
//! - Every key is known: an unknown key, a bad value, a duplicated key or bad YAML is an
//!   error naming the file, the key's path (`sync.defaults.watch.mode`) and the line.
//! - Settings that only make sense for a whole session (mode, ignores, symbolic links) cannot
//!   appear in an endpoint's section; the error lists the keys that can.
//! - Nothing here touches the file system except to read the file named.

mod file;
mod project;
pub mod settings;
mod value;

use std::path::PathBuf;

pub use file::{ConfigurationFile, global_path, load_files};
pub use project::{ForwardEntry, Hooks, Project, SyncEntry};
pub use settings::{EndpointSettings, ForwardSettings, SyncSettings};

/// Why a configuration file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("unable to read the {kind} {}: {source}", path.display())]
    Read {
        /// Which kind of file ("configuration file", "project file").
        kind: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid: bad YAML, an unknown key, a bad value.
    #[error("invalid {kind} {}: {message}", path.display())]
    Invalid {
        /// Which kind of file.
        kind: &'static str,
        /// The file.
        path: PathBuf,
        /// The key's path, what is wrong, and the line.
        message: String,
    },
}

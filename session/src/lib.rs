//! The session model shared by the command line, the daemon and the journal.
//!
//! # Layout
//! - [`identifier`]: session identifiers (`sync_` + 43 base62 characters) and names.
//! - [`labels`]: Kubernetes-style labels and label selectors.
//! - [`url`]: synchronization endpoint URLs (local paths, SSH and Docker URLs).
//! - [`forward`]: forwarding endpoint URLs (`tcp:`, `unix:`... locally, over SSH, in a
//!   container), for forward sessions.
//! - [`configuration`]: the configuration frozen into a session when it is created.
//! - [`encoding`]: how specs and configurations are serialized, so that a later version can add
//!   settings and still read every stored session.
//!
//! Everything here is pure validation and data: no I/O beyond reading `HOME`, the working
//! directory and `/dev/urandom`.

pub mod configuration;
pub mod encoding;
pub mod forward;
pub mod identifier;
pub mod labels;
pub mod url;

pub use configuration::{
    Configuration, EndpointConfiguration, EndpointOverrides, Environment, Ownership, SessionSpec,
    WatchMode,
};
pub use identifier::{is_identifier, new_identifier, validate_name};
pub use labels::{Labels, Selector, parse_label};

/// Invalid user input, naming the thing at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    /// A session name breaks the naming rules.
    #[error("invalid session name {name:?}: {reason}")]
    InvalidName {
        /// The name.
        name: String,
        /// Which rule.
        reason: &'static str,
    },
    /// A label key or value breaks the Kubernetes rules.
    #[error("invalid label {label:?}: {reason}")]
    InvalidLabel {
        /// The label as given.
        label: String,
        /// Which rule.
        reason: String,
    },
    /// A label selector does not parse.
    #[error("invalid label selector {selector:?}: {reason}")]
    InvalidSelector {
        /// The selector.
        selector: String,
        /// What is wrong.
        reason: String,
    },
    /// An endpoint URL is malformed or not supported.
    #[error("invalid endpoint url {url:?}: {reason}")]
    InvalidUrl {
        /// The URL.
        url: String,
        /// What is wrong.
        reason: String,
    },
    /// A configuration value is invalid.
    #[error("invalid configuration: {0}")]
    InvalidConfiguration(String),
}

//! The endpoint contract and the local file-system endpoint.
//!
//! The controller talks to an endpoint only through the [`Endpoint`] trait, whose operations
//! take and return owned, serializable values so that a remote endpoint can carry them as
//! messages over a byte stream. [`LocalEndpoint`] is the in-process implementation over a real
//! directory; [`Synchronizer`] drives two endpoints through one synchronization cycle.
//!
//! # Layout
//! - [`endpoint`]: the [`Endpoint`] trait and its messages ([`Snapshot`], [`StageRequest`],
//!   [`Transmission`], [`TransitionResult`]).
//! - [`ignore`]: ignore patterns in the upstream or the docker syntax; `gitignore` adds
//!   what git ignores (`--ignore-vcs-ignored`).
//! - [`scan`]: turns a root into a [`Snapshot`], reusing digests through a [`scan::Cache`].
//! - [`staging`]: the content-addressed store that receives files before they are placed.
//! - [`transition`]: applies changes to disk without ever touching content the scan did not see.
//! - [`local_endpoint`]: [`LocalEndpoint`], which puts the above together.
//! - [`synchronizer`]: [`Synchronizer`], one cycle = scan, reconcile, safety checks, stage,
//!   transition, ancestor update.
//!
//! # Safety invariants
//! - Nothing the scan did not see is overwritten or deleted: before a file is replaced or
//!   removed its metadata is compared with the record of the scan this cycle used.
//! - All file-system work below the root goes through directory handles opened without
//!   following symbolic links, so a directory swapped for a link mid-cycle cannot redirect a
//!   write outside the root.
//! - The ancestor is built from what transitions report is on disk, not from what they intended,
//!   so a failed operation is simply retried on the next cycle.

#![deny(unsafe_code)]
#![deny(unused_must_use)]

pub mod endpoint;
pub mod local_endpoint;
pub mod rsync;
pub mod scan;
pub mod staging;
pub mod synchronizer;
pub mod transition;
pub mod watch;

mod fsutil;
mod gitignore;

pub use endpoint::{
    Endpoint, EndpointError, EndpointResult, Snapshot, StageRequest, TransitionResult,
    Transmission, next_version,
};
pub use local_endpoint::{LocalEndpoint, LocalOptions};
pub use mutagen_core::ignore;
pub use mutagen_core::{IgnoreError, IgnoreSyntax, Ignorer, StageMode};
pub use scan::{ScanOptions, SymlinkMode};
pub use synchronizer::{
    Allowances, CycleError, CycleReport, HaltReason, Limits, Memo, Phase, Progress, Side,
    SideReport, StagingProgress, Synchronizer,
};

//! The pure synchronization core: what a file-system tree looks like to the engine, and how three
//! such trees (the ancestor, alpha and beta) are reconciled into the changes that make alpha and
//! beta agree again.
//!
//! Nothing in this crate touches the file system, the clock or the network, which is what makes
//! the rules table-testable, property-testable and fuzzable.
//!
//! # Layout
//! - [`entry`]: [`Entry`], the tree model (directories, files, symbolic links, and the two
//!   unsynchronizable kinds, untracked and problematic), with name validation and helpers.
//! - [`change`]: [`Change`], [`Conflict`], [`Problem`], and [`diff`]/[`apply`] over trees.
//! - [`mode`]: the four synchronization [`Mode`]s.
//! - [`reconcile`](mod@reconcile): the three-way [`reconcile()`] function.
//! - [`invariants`]: the properties every reconciliation satisfies, checked by the property
//!   tests and the fuzz target, and a byte-driven tree builder they share.
//!
//! # Invariants
//! - The ancestor only ever holds synchronizable content (directories, files, symbolic links).
//! - A transition's `old` is exactly what the side held at that path when it was scanned and is
//!   fully synchronizable: no transition ever removes untracked or problematic content.
//! - Problematic content blocks synchronization of its own path only.

#![forbid(unsafe_code)]
#![deny(unused_must_use)]

pub mod change;
pub mod entry;
pub mod invariants;
pub mod mode;
pub mod reconcile;
pub mod resolve;

pub use change::{
    ApplyError, Change, Conflict, Problem, Undo, apply, apply_change, diff, replace_at,
};
pub use entry::{
    DIRECTORY_PERMISSION_BITS, Digest, Directory, Entry, EntryError, EntryKind,
    FILE_PERMISSION_BITS, directory_permissions, format_permissions, join_path, parent_path,
    paths_below, validate_name,
};
pub use mode::{Mode, ParseModeError};
pub use reconcile::{Reconciliation, reconcile, reconcile_dirty};
pub use resolve::{ResolveError, resolution};

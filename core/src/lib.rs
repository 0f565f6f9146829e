//! Domain types shared by every layer, with no I/O: which side, why a session halted, how
//! symbolic links are treated, and the ignore-pattern syntax.
//!
//! The journal, the session model, the protocol and the endpoint all use these; keeping them
//! here (rather than in the file-system crate) lets the journal and the session model depend
//! on pure code only.
//!
//! # Layout
//! - [`Side`], [`HaltReason`], [`SymlinkMode`], [`Compression`]: small enums, serialized in the journal and on
//!   the wire (their encoding is pinned by the golden files of those crates).
//! - [`ignore`]: ignore patterns in the upstream or the docker syntax ([`Ignorer`]),
//!   compiled with globset.
//! - [`normalize`] and [`render_error`]: lexical paths and one-line error chains.

#![deny(unsafe_code)]

/// Gives a fieldless enum its command-line names: `name()`, `Display`, and a `FromStr` whose
/// error names the text and lists what is accepted ("unknown stage mode \"x\" (expected auto,
/// mutagen, neighboring or internal)").
macro_rules! command_line_names {
    ($type:ident, $what:literal, { $($variant:ident => $name:literal),+ $(,)? }) => {
        impl $type {
            /// Returns the command-line name.
            pub fn name(self) -> &'static str {
                match self {
                    $($type::$variant => $name,)+
                }
            }
        }

        impl std::fmt::Display for $type {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.name())
            }
        }

        impl std::str::FromStr for $type {
            type Err = String;

            fn from_str(text: &str) -> Result<$type, String> {
                match text {
                    $($name => Ok($type::$variant),)+
                    other => Err(format!(
                        "unknown {} {other:?} (expected {})",
                        $what,
                        $crate::expected(&[$($name),+])
                    )),
                }
            }
        }
    };
}

/// `a`, `a or b`, `a, b or c`.
#[doc(hidden)]
pub fn expected(names: &[&str]) -> String {
    match names.split_last() {
        Some((last, [])) => (*last).to_owned(),
        Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
        None => String::new(),
    }
}

pub mod accounts;
pub mod ignore;

use std::path::{Component, Path, PathBuf};

pub use ignore::{Decision, IgnoreError, IgnoreSyntax, Ignorer};

use serde::{Deserialize, Serialize};

/// Returns `path` with `.` removed and `..` resolved lexically (without looking at the file
/// system; `..` at the top stays at the top).
pub fn normalize(path: &Path) -> PathBuf {
    let mut normal = PathBuf::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => {
                normal.pop();
            }
            other => normal.push(other),
        }
    }
    normal
}

/// Renders an error and its causes on one line, `: `-separated.
pub fn render_error(error: &dyn std::error::Error) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}

/// Why a session stopped changing anything.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum HaltReason {
    /// One side's root was emptied.
    RootEmptied,
    /// A root would be deleted.
    RootDeletion,
    /// A root would change kind.
    RootTypeChange,
    /// An endpoint is another one than the session synchronized so far (a container recreated
    /// under the same name: a fresh file system, whose missing files are not deletions).
    EndpointReplaced,
}

impl HaltReason {
    /// Returns the status name (`halted-on-root-emptied`...).
    pub fn status(self) -> &'static str {
        match self {
            HaltReason::RootEmptied => "halted-on-root-emptied",
            HaltReason::RootDeletion => "halted-on-root-deletion",
            HaltReason::RootTypeChange => "halted-on-root-type-change",
            HaltReason::EndpointReplaced => "halted-on-endpoint-replaced",
        }
    }

    /// Returns a human description.
    pub fn description(self) -> &'static str {
        match self {
            HaltReason::RootEmptied => "halted due to one-sided root emptying",
            HaltReason::RootDeletion => "halted due to root deletion",
            HaltReason::RootTypeChange => "halted due to root type change",
            HaltReason::EndpointReplaced => {
                "halted because an endpoint was replaced (reset the session to synchronize with it)"
            }
        }
    }
}

/// Which endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Side {
    /// The first endpoint.
    Alpha,
    /// The second endpoint.
    Beta,
}

impl std::fmt::Display for Side {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Side::Alpha => "alpha",
            Side::Beta => "beta",
        })
    }
}

/// How symbolic links are treated.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum SymlinkMode {
    /// Symbolic links are untracked.
    Ignore,
    /// Only relative links that stay inside the root are synchronized; others are problematic.
    #[default]
    Portable,
    /// Targets are synchronized as they are.
    PosixRaw,
}

command_line_names!(SymlinkMode, "symbolic link mode", {
    Ignore => "ignore",
    Portable => "portable",
    PosixRaw => "posix-raw",
});

/// Where an endpoint stages the files it receives before they are renamed into place.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum StageMode {
    /// In the data directory when it shares the root's file system, else next to the root
    /// (so that placing a file is always a rename).
    #[default]
    Auto,
    /// Always in the data directory (upstream's `mutagen`), even across file systems.
    Mutagen,
    /// Always next to the root, in a hidden `.mutagen-temporary-staging-…` directory.
    Neighboring,
    /// Inside the root, in a hidden directory every scan and watch skips.
    Internal,
}

command_line_names!(StageMode, "stage mode", {
    Auto => "auto",
    Mutagen => "mutagen",
    Neighboring => "neighboring",
    Internal => "internal",
});

/// How the stream to a remote agent is compressed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Compression {
    /// Frames travel as they are.
    None,
    /// One zstd stream in each direction, flushed with every batch of frames.
    #[default]
    Zstd,
}

command_line_names!(Compression, "compression", { None => "none", Zstd => "zstd" });

/// How an endpoint finds what changed when it rescans.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ScanMode {
    /// Rescan only what the watcher reported (the whole tree without a watch).
    #[default]
    Accelerated,
    /// Rescan the whole tree every cycle (still reusing digests of unchanged files).
    Full,
}

command_line_names!(ScanMode, "scan mode", { Accelerated => "accelerated", Full => "full" });

/// How an endpoint learns its file system's behaviour (executable bits, Unicode
/// decomposition).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ProbeMode {
    /// Ask the file system (on Linux, every supported file system keeps executable bits and
    /// does not decompose names, so no probe file is needed).
    #[default]
    Probe,
    /// Assume the platform's behaviour (the same answers on Linux).
    Assume,
}

command_line_names!(ProbeMode, "probe mode", { Probe => "probe", Assume => "assume" });

/// What is synchronized of permissions.
///
/// The order of the variants is their encoding (portable 0, manual 1): do not reorder.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum PermissionsMode {
    /// Only whether a file is executable; new entries get the default modes (execute bits
    /// added for the classes that can read an executable file).
    #[default]
    Portable,
    /// Nothing: every file counts as not executable, and new entries get the default modes
    /// exactly as given.
    Manual,
    /// The full permission bits of files (read, write, execute for user, group and other)
    /// and directories (the same, and setgid), reconciled like content. Ownership still
    /// follows the defaults; setuid, setgid on files and the sticky bit never travel.
    Posix,
}

command_line_names!(PermissionsMode, "permissions mode", {
    Portable => "portable",
    Manual => "manual",
    Posix => "posix",
});

/// Parses a size as people write it: `1048576`, `500MiB`, `1 GB`, `1.5GiB`, `64k`. Decimal
/// units (`k`, `KB`, `MB`, `GB`, `TB`) are powers of 1000, binary ones (`KiB`, `MiB`, `GiB`,
/// `TiB`) powers of 1024; case does not matter.
///
/// # Errors
/// A message naming the text.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let invalid =
        || format!("invalid size {text:?} (expected a number of bytes, or 500MiB, 1GB...)");
    let trimmed = text.trim();
    let split = trimmed.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(trimmed.len());
    let (number, unit) = trimmed.split_at(split);
    let unit = unit.trim().to_ascii_lowercase();
    let scale: u64 = match unit.as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1000,
        "m" | "mb" => 1000_u64.pow(2),
        "g" | "gb" => 1000_u64.pow(3),
        "t" | "tb" => 1000_u64.pow(4),
        "ki" | "kib" => 1 << 10,
        "mi" | "mib" => 1 << 20,
        "gi" | "gib" => 1 << 30,
        "ti" | "tib" => 1 << 40,
        _ => return Err(invalid()),
    };
    if number.is_empty() {
        return Err(invalid());
    }
    if let Ok(whole) = number.parse::<u64>() {
        return whole.checked_mul(scale).ok_or_else(invalid);
    }
    let fraction: f64 = number.parse().map_err(|_| invalid())?;
    let bytes = (fraction * scale as f64).round();
    if bytes.is_finite() && bytes >= 0.0 && bytes < u64::MAX as f64 {
        Ok(bytes as u64)
    } else {
        Err(invalid())
    }
}

#[cfg(test)]
mod size_tests {
    use super::parse_size;

    #[test]
    fn sizes_parse_as_people_write_them() {
        let table = [
            ("0", Some(0)),
            ("1048576", Some(1 << 20)),
            ("500MiB", Some(500 << 20)),
            ("500 mib", Some(500 << 20)),
            ("1 GB", Some(1_000_000_000)),
            ("1.5GiB", Some(3 << 29)),
            ("64k", Some(64_000)),
            ("2KiB", Some(2048)),
            ("10b", Some(10)),
            ("", None),
            ("MiB", None),
            ("5 parsecs", None),
            ("-1", None),
            ("1.2.3", None),
            ("99999999999999999999", None),
            ("20000000TiB", None),
        ];
        for (text, expected) in table {
            assert_eq!(parse_size(text).ok(), expected, "{text:?}");
        }
        assert!(parse_size("5 parsecs").expect_err("refused").contains("\"5 parsecs\""));
    }
}

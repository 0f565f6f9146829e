//! The settings one level of configuration gives: partial, merged level over level.

use mutagen_core::{
    Compression, IgnoreSyntax, PermissionsMode, ProbeMode, ScanMode, StageMode, SymlinkMode,
};
use mutagen_reconcile::Mode;
use mutagen_session::forward::{OverwriteMode, SocketOptions};
use mutagen_session::{Configuration, EndpointOverrides, Ownership, WatchMode};
use serde::{Deserialize, Deserializer};

use crate::value::{Octal, Parsed, Seconds, text};

fn parsed<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: std::str::FromStr,
    T::Err: std::fmt::Display,
{
    Parsed::<T>::deserialize(deserializer).map(|parsed| Some(parsed.0))
}

fn seconds<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<u32>, D::Error> {
    Seconds::deserialize(deserializer).map(|seconds| Some(seconds.0))
}

/// A size: a number of bytes, or text such as `500MiB`.
fn size<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<u64>, D::Error> {
    struct Size;
    impl serde::de::Visitor<'_> for Size {
        type Value = u64;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a size, such as 1048576 or \"500MiB\"")
        }
        fn visit_u64<E: serde::de::Error>(self, bytes: u64) -> Result<u64, E> {
            Ok(bytes)
        }
        fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<u64, E> {
            mutagen_core::parse_size(text).map_err(E::custom)
        }
    }
    deserializer.deserialize_any(Size).map(Some)
}

fn octal<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<u32>, D::Error> {
    Octal::deserialize(deserializer).map(|mode| Some(mode.0))
}

fn overwrite<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<OverwriteMode>, D::Error> {
    text(deserializer, "leave or overwrite", |text: &str| OverwriteMode::parse(text).map(Some))
}

/// Higher wins where it is set.
fn over<T>(lower: &mut Option<T>, higher: Option<T>) {
    if higher.is_some() {
        *lower = higher;
    }
}

/// A synchronization session's settings at one level, as YAML gives them under
/// `sync: defaults:` (and, in a project file, under each session's name).
///
/// `None` (or an empty list) is unset: the level below decides.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct SyncSettings {
    /// Alpha's URL (project files only).
    pub alpha: Option<String>,
    /// Beta's URL (project files only).
    pub beta: Option<String>,
    /// Whether `project start` flushes the session once it is created (project files only).
    pub flush_on_create: Option<bool>,
    /// The synchronization mode.
    #[serde(deserialize_with = "parsed")]
    pub mode: Option<Mode>,
    /// Ignores.
    pub ignore: IgnoreSettings,
    /// Symbolic links.
    pub symlink: SymlinkSettings,
    /// Where received files are staged.
    #[serde(deserialize_with = "parsed")]
    pub stage_mode: Option<StageMode>,
    /// Watching.
    pub watch: WatchSettings,
    /// The agent stream's compression.
    pub compression: CompressionSettings,
    /// The most synchronizable entries a root may hold (0: no limit).
    pub max_entry_count: Option<u64>,
    /// The largest file that is staged (0: no limit).
    #[serde(deserialize_with = "size")]
    pub max_staging_file_size: Option<u64>,
    /// How endpoints learn their file system's behaviour.
    #[serde(deserialize_with = "parsed")]
    pub probe_mode: Option<ProbeMode>,
    /// How endpoints rescan.
    #[serde(deserialize_with = "parsed")]
    pub scan_mode: Option<ScanMode>,
    /// Permissions.
    pub permissions: PermissionsSettings,
    /// Propagate one root being emptied instead of halting.
    pub allow_root_emptying: Option<bool>,
    /// Propagate a root's deletion instead of halting.
    pub allow_root_deletion: Option<bool>,
    /// Alpha's own settings.
    pub configuration_alpha: EndpointSettings,
    /// Beta's own settings.
    pub configuration_beta: EndpointSettings,
}

/// `ignore:`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct IgnoreSettings {
    /// How the patterns are read: `mutagen` or `docker`.
    #[serde(deserialize_with = "parsed")]
    pub syntax: Option<IgnoreSyntax>,
    /// Patterns; the levels' lists are concatenated, lowest first.
    pub paths: Vec<String>,
    /// Whether version-control directories are ignored.
    pub vcs: Option<bool>,
    /// Whether what git ignores is ignored too.
    pub vcs_ignored: Option<bool>,
}

/// `symlink:`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct SymlinkSettings {
    /// How symbolic links are handled.
    #[serde(deserialize_with = "parsed")]
    pub mode: Option<SymlinkMode>,
}

/// `watch:`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct WatchSettings {
    /// How changes are noticed.
    #[serde(deserialize_with = "parsed")]
    pub mode: Option<WatchMode>,
    /// Seconds between warm rescans (at least 1).
    #[serde(deserialize_with = "seconds")]
    pub polling_interval: Option<u32>,
}

/// `permissions:` of a session.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct PermissionsSettings {
    /// `portable` or `manual`.
    #[serde(deserialize_with = "parsed")]
    pub mode: Option<PermissionsMode>,
    /// Permission bits of new files.
    #[serde(deserialize_with = "octal")]
    pub default_file_mode: Option<u32>,
    /// Permission bits of new directories.
    #[serde(deserialize_with = "octal")]
    pub default_directory_mode: Option<u32>,
    /// Owner of what is created.
    pub default_owner: Option<String>,
    /// Group of what is created.
    pub default_group: Option<String>,
}

/// `permissions:` of one endpoint (the mode belongs to the session).
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct EndpointPermissionsSettings {
    /// Permission bits of new files.
    #[serde(deserialize_with = "octal")]
    pub default_file_mode: Option<u32>,
    /// Permission bits of new directories.
    #[serde(deserialize_with = "octal")]
    pub default_directory_mode: Option<u32>,
    /// Owner of what is created.
    pub default_owner: Option<String>,
    /// Group of what is created.
    pub default_group: Option<String>,
}

impl EndpointPermissionsSettings {
    fn merge(&mut self, higher: EndpointPermissionsSettings) {
        over(&mut self.default_file_mode, higher.default_file_mode);
        over(&mut self.default_directory_mode, higher.default_directory_mode);
        over(&mut self.default_owner, higher.default_owner);
        over(&mut self.default_group, higher.default_group);
    }

    fn ownership(&self) -> Ownership {
        Ownership {
            file_mode: self.default_file_mode,
            directory_mode: self.default_directory_mode,
            owner: self.default_owner.clone(),
            group: self.default_group.clone(),
        }
    }
}

/// `compression:`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct CompressionSettings {
    /// The algorithm.
    #[serde(deserialize_with = "parsed")]
    pub algorithm: Option<Compression>,
}

/// The settings one endpoint may have of its own (`configurationAlpha:`, `--stage-mode-beta`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct EndpointSettings {
    /// Watching.
    pub watch: WatchSettings,
    /// Where received files are staged.
    #[serde(deserialize_with = "parsed")]
    pub stage_mode: Option<StageMode>,
    /// The agent stream's compression.
    pub compression: CompressionSettings,
    /// How this endpoint learns its file system's behaviour.
    #[serde(deserialize_with = "parsed")]
    pub probe_mode: Option<ProbeMode>,
    /// How this endpoint rescans.
    #[serde(deserialize_with = "parsed")]
    pub scan_mode: Option<ScanMode>,
    /// Ownership and modes of what this endpoint creates.
    pub permissions: EndpointPermissionsSettings,
}

impl EndpointSettings {
    /// Lays `higher` over these settings.
    pub fn merge(&mut self, higher: EndpointSettings) {
        over(&mut self.watch.mode, higher.watch.mode);
        over(&mut self.watch.polling_interval, higher.watch.polling_interval);
        over(&mut self.stage_mode, higher.stage_mode);
        over(&mut self.compression.algorithm, higher.compression.algorithm);
        over(&mut self.probe_mode, higher.probe_mode);
        over(&mut self.scan_mode, higher.scan_mode);
        self.permissions.merge(higher.permissions);
    }

    /// The overrides these settings make.
    pub fn overrides(&self) -> EndpointOverrides {
        EndpointOverrides {
            watch_mode: self.watch.mode,
            watch_polling_interval: self.watch.polling_interval,
            stage_mode: self.stage_mode,
            compression: self.compression.algorithm,
            probe_mode: self.probe_mode,
            scan_mode: self.scan_mode,
            ownership: self.permissions.ownership(),
        }
    }
}

impl SyncSettings {
    /// Lays `higher` over these settings: each value `higher` sets wins, ignore patterns are
    /// appended after these.
    pub fn merge(&mut self, higher: SyncSettings) {
        over(&mut self.alpha, higher.alpha);
        over(&mut self.beta, higher.beta);
        over(&mut self.flush_on_create, higher.flush_on_create);
        over(&mut self.mode, higher.mode);
        self.ignore.paths.extend(higher.ignore.paths);
        over(&mut self.ignore.vcs, higher.ignore.vcs);
        over(&mut self.ignore.syntax, higher.ignore.syntax);
        over(&mut self.ignore.vcs_ignored, higher.ignore.vcs_ignored);
        over(&mut self.symlink.mode, higher.symlink.mode);
        over(&mut self.stage_mode, higher.stage_mode);
        over(&mut self.watch.mode, higher.watch.mode);
        over(&mut self.watch.polling_interval, higher.watch.polling_interval);
        over(&mut self.compression.algorithm, higher.compression.algorithm);
        over(&mut self.max_entry_count, higher.max_entry_count);
        over(&mut self.max_staging_file_size, higher.max_staging_file_size);
        over(&mut self.probe_mode, higher.probe_mode);
        over(&mut self.scan_mode, higher.scan_mode);
        over(&mut self.permissions.mode, higher.permissions.mode);
        over(&mut self.permissions.default_file_mode, higher.permissions.default_file_mode);
        over(
            &mut self.permissions.default_directory_mode,
            higher.permissions.default_directory_mode,
        );
        over(&mut self.permissions.default_owner, higher.permissions.default_owner);
        over(&mut self.permissions.default_group, higher.permissions.default_group);
        over(&mut self.allow_root_emptying, higher.allow_root_emptying);
        over(&mut self.allow_root_deletion, higher.allow_root_deletion);
        self.configuration_alpha.merge(higher.configuration_alpha);
        self.configuration_beta.merge(higher.configuration_beta);
    }

    /// The configuration to freeze into a session: these settings over the built-in
    /// defaults.
    pub fn configuration(&self) -> Configuration {
        let defaults = Configuration::default();
        Configuration {
            mode: self.mode.unwrap_or(defaults.mode),
            ignores: self.ignore.paths.clone(),
            ignore_vcs: self.ignore.vcs.unwrap_or(defaults.ignore_vcs),
            symlink_mode: self.symlink.mode.unwrap_or(defaults.symlink_mode),
            watch_mode: self.watch.mode.unwrap_or(defaults.watch_mode),
            watch_polling_interval: self
                .watch
                .polling_interval
                .unwrap_or(defaults.watch_polling_interval),
            compression: self.compression.algorithm.unwrap_or(defaults.compression),
            allow_root_emptying: self.allow_root_emptying.unwrap_or(defaults.allow_root_emptying),
            allow_root_deletion: self.allow_root_deletion.unwrap_or(defaults.allow_root_deletion),
            stage_mode: self.stage_mode.unwrap_or(defaults.stage_mode),
            ignore_syntax: self.ignore.syntax.unwrap_or(defaults.ignore_syntax),
            ignore_vcs_ignored: self.ignore.vcs_ignored.unwrap_or(defaults.ignore_vcs_ignored),
            max_entry_count: self.max_entry_count.unwrap_or(defaults.max_entry_count),
            max_staging_file_size: self
                .max_staging_file_size
                .unwrap_or(defaults.max_staging_file_size),
            probe_mode: self.probe_mode.unwrap_or(defaults.probe_mode),
            scan_mode: self.scan_mode.unwrap_or(defaults.scan_mode),
            permissions_mode: self.permissions.mode.unwrap_or(defaults.permissions_mode),
            ownership: Ownership {
                file_mode: self.permissions.default_file_mode,
                directory_mode: self.permissions.default_directory_mode,
                owner: self.permissions.default_owner.clone(),
                group: self.permissions.default_group.clone(),
            },
            alpha: self.configuration_alpha.overrides(),
            beta: self.configuration_beta.overrides(),
        }
    }
}

/// A forward session's settings at one level, as YAML gives them under `forward: defaults:`
/// (and, in a project file, under each session's name).
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct ForwardSettings {
    /// The listening endpoint's URL (project files only).
    pub source: Option<String>,
    /// The dialing endpoint's URL (project files only).
    pub destination: Option<String>,
    /// Unix-socket listeners.
    pub socket: SocketSettings,
}

/// `socket:`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct SocketSettings {
    /// `leave` or `overwrite`.
    #[serde(deserialize_with = "overwrite")]
    pub overwrite_mode: Option<OverwriteMode>,
    /// The owner, a name or an id.
    pub owner: Option<String>,
    /// The group, a name or an id.
    pub group: Option<String>,
    /// Permission bits.
    #[serde(deserialize_with = "octal")]
    pub permission_mode: Option<u32>,
}

impl ForwardSettings {
    /// Lays `higher` over these settings.
    pub fn merge(&mut self, higher: ForwardSettings) {
        over(&mut self.source, higher.source);
        over(&mut self.destination, higher.destination);
        over(&mut self.socket.overwrite_mode, higher.socket.overwrite_mode);
        over(&mut self.socket.owner, higher.socket.owner);
        over(&mut self.socket.group, higher.socket.group);
        over(&mut self.socket.permission_mode, higher.socket.permission_mode);
    }

    /// The socket options to freeze into a session.
    pub fn socket_options(&self) -> SocketOptions {
        let defaults = SocketOptions::default();
        SocketOptions {
            overwrite: self.socket.overwrite_mode.unwrap_or(defaults.overwrite),
            owner: self.socket.owner.clone().filter(|owner| !owner.is_empty()),
            group: self.socket.group.clone().filter(|group| !group.is_empty()),
            mode: self.socket.permission_mode.unwrap_or(defaults.mode),
        }
    }
}

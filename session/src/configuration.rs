//! The configuration frozen into a session when it is created.

use std::fmt;
use std::str::FromStr;

use mutagen_core::{
    Compression, IgnoreSyntax, PermissionsMode, ProbeMode, ScanMode, Side, StageMode, SymlinkMode,
};
use mutagen_reconcile::Mode;
use serde::{Deserialize, Serialize};

use crate::labels::Labels;
use crate::{SessionError, identifier};

/// How an endpoint notices changes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum WatchMode {
    /// Native watching where available (until native watching lands: warm rescans every polling
    /// interval).
    #[default]
    Portable,
    /// Warm rescans every polling interval.
    ForcePoll,
    /// Only explicit flushes (and the other side's changes) start a cycle.
    NoWatch,
}

impl WatchMode {
    /// Returns the command-line name.
    pub fn name(self) -> &'static str {
        match self {
            WatchMode::Portable => "portable",
            WatchMode::ForcePoll => "force-poll",
            WatchMode::NoWatch => "no-watch",
        }
    }
}

impl fmt::Display for WatchMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for WatchMode {
    type Err = SessionError;

    fn from_str(text: &str) -> Result<WatchMode, SessionError> {
        match text {
            "portable" => Ok(WatchMode::Portable),
            "force-poll" => Ok(WatchMode::ForcePoll),
            "no-watch" => Ok(WatchMode::NoWatch),
            _ => Err(SessionError::InvalidConfiguration(format!(
                "unknown watch mode {text:?} (expected portable, force-poll or no-watch)"
            ))),
        }
    }
}

/// Default seconds between warm rescans.
pub const DEFAULT_POLLING_INTERVAL: u32 = 10;

/// Synchronization settings.
///
/// Encoded as a list of tagged settings (see [`crate::encoding`]): add a setting there, not
/// only here.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Configuration {
    /// The synchronization mode.
    pub mode: Mode,
    /// Ignore patterns (in `ignore_syntax`).
    pub ignores: Vec<String>,
    /// Whether version-control directories are ignored.
    pub ignore_vcs: bool,
    /// How symbolic links are handled.
    pub symlink_mode: SymlinkMode,
    /// How changes are noticed.
    pub watch_mode: WatchMode,
    /// Seconds between warm rescans (`portable` and `force-poll`).
    pub watch_polling_interval: u32,
    /// How the stream to a remote agent is compressed (unused by local endpoints).
    pub compression: Compression,
    /// Propagate one root being emptied instead of halting (for build-output directories).
    pub allow_root_emptying: bool,
    /// Propagate a root's deletion instead of halting.
    pub allow_root_deletion: bool,
    /// Where each endpoint stages the files it receives.
    pub stage_mode: StageMode,
    /// How the ignore patterns are read.
    pub ignore_syntax: IgnoreSyntax,
    /// Also skip what git ignores in each root (its `.gitignore` files, `.git/info/exclude`
    /// and the global excludes file).
    pub ignore_vcs_ignored: bool,
    /// The most synchronizable entries (directories, files, symbolic links, the root
    /// included) a root may hold; 0 for no limit.
    pub max_entry_count: u64,
    /// The largest file that is staged, in bytes; 0 for no limit.
    pub max_staging_file_size: u64,
    /// How endpoints learn their file system's behaviour.
    pub probe_mode: ProbeMode,
    /// How endpoints rescan.
    pub scan_mode: ScanMode,
    /// What is synchronized of permissions.
    pub permissions_mode: PermissionsMode,
    /// Ownership and modes of what endpoints create (each `None`: the engine's default).
    pub ownership: Ownership,
    /// Alpha's own values for the endpoint settings, over the session's.
    pub alpha: EndpointOverrides,
    /// Beta's own values.
    pub beta: EndpointOverrides,
}

/// An endpoint's own values for the settings that may differ between the two endpoints
/// (`--watch-mode-alpha`, `configurationBeta` ...); `None` takes the session's value.
///
/// Encoded as a list of tagged settings, like [`Configuration`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EndpointOverrides {
    /// How changes are noticed.
    pub watch_mode: Option<WatchMode>,
    /// Seconds between warm rescans.
    pub watch_polling_interval: Option<u32>,
    /// Where received files are staged.
    pub stage_mode: Option<StageMode>,
    /// How the stream to this endpoint's agent is compressed.
    pub compression: Option<Compression>,
    /// How this endpoint learns its file system's behaviour.
    pub probe_mode: Option<ProbeMode>,
    /// How this endpoint rescans.
    pub scan_mode: Option<ScanMode>,
    /// Ownership and modes of what this endpoint creates (set fields win).
    pub ownership: Ownership,
}

/// The owner, group and permission bits an endpoint gives what it creates; `None` leaves the
/// engine's default (the endpoint's user and group, 0644 files and 0755 directories).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Ownership {
    /// Permission bits of new files (in portable mode, without execute bits: they follow
    /// each file's executability).
    pub file_mode: Option<u32>,
    /// Permission bits of new directories.
    pub directory_mode: Option<u32>,
    /// The owner: `id:N`, a number or a name.
    pub owner: Option<String>,
    /// The group: `id:N`, a number or a name.
    pub group: Option<String>,
}

impl Ownership {
    /// `higher`'s set fields over these.
    pub fn over(&self, higher: &Ownership) -> Ownership {
        Ownership {
            file_mode: higher.file_mode.or(self.file_mode),
            directory_mode: higher.directory_mode.or(self.directory_mode),
            owner: higher.owner.clone().or_else(|| self.owner.clone()),
            group: higher.group.clone().or_else(|| self.group.clone()),
        }
    }

    /// Checks the fields as upstream does: permission bits only, no execute bits for files
    /// in portable mode, well-formed ownership.
    ///
    /// # Errors
    /// The first bad field, named.
    pub fn validate(&self, mode: PermissionsMode, whose: &str) -> Result<(), SessionError> {
        let invalid = |message: String| SessionError::InvalidConfiguration(message);
        for (what, bits) in [("file", self.file_mode), ("directory", self.directory_mode)] {
            let Some(bits) = bits else { continue };
            if bits & !0o777 != 0 || bits == 0 {
                return Err(invalid(format!(
                    "invalid default {what} mode {bits:o}{whose}: only permission bits (0001-0777)"
                )));
            }
        }
        if mode == PermissionsMode::Posix
            && let Some((what, bits)) =
                [("file", self.file_mode), ("directory", self.directory_mode)]
                    .into_iter()
                    .find_map(|(what, bits)| Some((what, bits?)))
        {
            return Err(invalid(format!(
                "invalid default {what} mode {bits:o}{whose}: in the posix permissions mode every \
                 file and directory takes its bits from the other side"
            )));
        }
        if mode == PermissionsMode::Portable && self.file_mode.is_some_and(|bits| bits & 0o111 != 0)
        {
            return Err(invalid(format!(
                "invalid default file mode {:o}{whose}: in portable permissions mode it cannot \
                 hold execute bits (they follow each file's executability)",
                self.file_mode.unwrap_or_default()
            )));
        }
        use mutagen_core::accounts::{Account, check_specification};
        for (kind, spec) in [(Account::User, &self.owner), (Account::Group, &self.group)] {
            if let Some(spec) = spec {
                check_specification(kind, spec).map_err(|e| invalid(format!("{e}{whose}")))?;
            }
        }
        Ok(())
    }
}

impl EndpointOverrides {
    /// Whether nothing is overridden.
    pub fn is_empty(&self) -> bool {
        *self == EndpointOverrides::default()
    }
}

/// The endpoint settings in force at one endpoint: the session's, with the endpoint's own
/// overrides applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndpointConfiguration {
    /// How changes are noticed.
    pub watch_mode: WatchMode,
    /// Seconds between warm rescans (`portable` and `force-poll`).
    pub watch_polling_interval: u32,
    /// Where received files are staged.
    pub stage_mode: StageMode,
    /// How the stream to this endpoint's agent is compressed.
    pub compression: Compression,
    /// How this endpoint learns its file system's behaviour.
    pub probe_mode: ProbeMode,
    /// How this endpoint rescans.
    pub scan_mode: ScanMode,
    /// What is synchronized of permissions (the session's).
    pub permissions_mode: PermissionsMode,
    /// Ownership and modes of what this endpoint creates.
    pub ownership: Ownership,
}

impl Default for Configuration {
    fn default() -> Configuration {
        Configuration {
            mode: Mode::default(),
            ignores: Vec::new(),
            ignore_vcs: false,
            symlink_mode: SymlinkMode::default(),
            watch_mode: WatchMode::default(),
            watch_polling_interval: DEFAULT_POLLING_INTERVAL,
            compression: Compression::default(),
            allow_root_emptying: false,
            allow_root_deletion: false,
            stage_mode: StageMode::Auto,
            ignore_syntax: IgnoreSyntax::Mutagen,
            ignore_vcs_ignored: false,
            max_entry_count: 0,
            max_staging_file_size: 0,
            probe_mode: ProbeMode::Probe,
            scan_mode: ScanMode::Accelerated,
            permissions_mode: PermissionsMode::Portable,
            ownership: Ownership::default(),
            alpha: EndpointOverrides::default(),
            beta: EndpointOverrides::default(),
        }
    }
}

impl Configuration {
    /// The configuration of a session recorded before any optional setting existed: a
    /// setting missing from a stored record takes its value from here, which is how the
    /// program behaved before the setting was added (so an old session keeps its behaviour).
    pub fn predating() -> Configuration {
        Configuration { compression: Compression::None, ..Configuration::default() }
    }

    /// The overrides of one endpoint.
    pub fn overrides(&self, side: Side) -> &EndpointOverrides {
        match side {
            Side::Alpha => &self.alpha,
            Side::Beta => &self.beta,
        }
    }

    /// The settings in force at one endpoint.
    pub fn endpoint(&self, side: Side) -> EndpointConfiguration {
        let own = self.overrides(side);
        EndpointConfiguration {
            watch_mode: own.watch_mode.unwrap_or(self.watch_mode),
            watch_polling_interval: own
                .watch_polling_interval
                .unwrap_or(self.watch_polling_interval),
            stage_mode: own.stage_mode.unwrap_or(self.stage_mode),
            compression: own.compression.unwrap_or(self.compression),
            probe_mode: own.probe_mode.unwrap_or(self.probe_mode),
            scan_mode: own.scan_mode.unwrap_or(self.scan_mode),
            permissions_mode: self.permissions_mode,
            ownership: self.ownership.over(&own.ownership),
        }
    }
}

/// What a session is created from, and what it keeps for life.
///
/// Encoded as a list of tagged fields (see [`crate::encoding`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionSpec {
    /// Alpha's URL (an absolute local path today).
    pub alpha: String,
    /// Beta's URL.
    pub beta: String,
    /// The name; empty for none.
    pub name: String,
    /// The labels.
    pub labels: Labels,
    /// Whether the session starts paused.
    pub paused: bool,
    /// The settings.
    pub configuration: Box<Configuration>,
    /// The environment captured for alpha's transport at creation (`DOCKER_HOST`...), so that
    /// a daemon started later, elsewhere, reaches the same engine. Empty for most endpoints.
    pub alpha_environment: Environment,
    /// The same for beta.
    pub beta_environment: Environment,
}

/// Environment variables captured for a transport, by name.
pub type Environment = std::collections::BTreeMap<String, String>;

impl SessionSpec {
    /// Checks everything that does not need the file system: name, labels, patterns, interval.
    ///
    /// # Errors
    /// The first invalid field, by name.
    pub fn validate(&self) -> Result<(), SessionError> {
        identifier::validate_name(&self.name)?;
        for (key, value) in &self.labels {
            let label = if value.is_empty() { key.clone() } else { format!("{key}={value}") };
            let (k, v) = crate::labels::parse_label(&label)?;
            if (&k, &v) != (key, value) {
                return Err(SessionError::InvalidLabel { label, reason: "malformed".into() });
            }
        }
        mutagen_core::Ignorer::with_syntax(
            &self.configuration.ignores,
            self.configuration.ignore_syntax,
            self.configuration.ignore_vcs,
        )
        .map_err(|e| SessionError::InvalidConfiguration(e.to_string()))?;
        let configuration = &self.configuration;
        let intervals = [
            Some(configuration.watch_polling_interval),
            configuration.alpha.watch_polling_interval,
            configuration.beta.watch_polling_interval,
        ];
        let mode = configuration.permissions_mode;
        configuration.ownership.validate(mode, "")?;
        configuration.alpha.ownership.validate(mode, " (alpha)")?;
        configuration.beta.ownership.validate(mode, " (beta)")?;
        if intervals.contains(&Some(0)) {
            return Err(SessionError::InvalidConfiguration(
                "the watch polling interval must be at least 1 second".to_owned(),
            ));
        }
        Ok(())
    }
}

//! The global configuration file and `-c` files: `sync: defaults:` and `forward: defaults:`.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::ConfigError;
use crate::settings::{ForwardSettings, SyncSettings};

const KIND: &str = "configuration file";

/// One configuration file.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConfigurationFile {
    /// `sync:`.
    pub sync: SyncSection,
    /// `forward:`.
    pub forward: ForwardSection,
}

/// `sync:` in a configuration file.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SyncSection {
    /// The settings every new synchronization session starts from.
    pub defaults: SyncSettings,
}

/// `forward:` in a configuration file.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ForwardSection {
    /// The settings every new forward session starts from.
    pub defaults: ForwardSettings,
}

/// Parses YAML text as `T`, naming `path` in any error. An empty document is `T::default()`.
pub(crate) fn parse<T>(kind: &'static str, path: &Path, text: &str) -> Result<T, ConfigError>
where
    T: for<'de> Deserialize<'de> + Default,
{
    let invalid = |message: String| ConfigError::Invalid { kind, path: path.to_owned(), message };
    match serde_yaml_ng::from_str::<Option<T>>(text) {
        Ok(value) => Ok(value.unwrap_or_default()),
        Err(error) => Err(invalid(error.to_string())),
    }
}

/// Reads a file, naming it in any error.
pub(crate) fn read(kind: &'static str, path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        kind,
        path: path.to_owned(),
        source,
    })
}

impl ConfigurationFile {
    /// Parses a configuration file's text; `path` names it in errors.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`]: bad YAML, an unknown key, a bad value, or endpoint URLs
    /// (they belong in a project file).
    pub fn parse(path: &Path, text: &str) -> Result<ConfigurationFile, ConfigError> {
        let file: ConfigurationFile = parse(KIND, path, text)?;
        let sync = &file.sync.defaults;
        let forward = &file.forward.defaults;
        let misplaced = [
            ("sync.defaults.alpha", sync.alpha.is_some()),
            ("sync.defaults.beta", sync.beta.is_some()),
            ("sync.defaults.flushOnCreate", sync.flush_on_create.is_some()),
            ("forward.defaults.source", forward.source.is_some()),
            ("forward.defaults.destination", forward.destination.is_some()),
        ];
        if let Some((key, _)) = misplaced.into_iter().find(|(_, set)| *set) {
            return Err(ConfigError::Invalid {
                kind: KIND,
                path: path.to_owned(),
                message: format!("{key}: only a project file can name endpoints"),
            });
        }
        Ok(file)
    }

    /// Reads and parses a configuration file.
    ///
    /// # Errors
    /// [`ConfigError::Read`] or [`ConfigError::Invalid`].
    pub fn load(path: &Path) -> Result<ConfigurationFile, ConfigError> {
        ConfigurationFile::parse(path, &read(KIND, path)?)
    }
}

/// The global configuration file: `~/.mutagen.yml`.
pub fn global_path() -> Option<PathBuf> {
    std::env::var_os("HOME").filter(|home| !home.is_empty()).map(|home| {
        let mut path = PathBuf::from(home);
        path.push(".mutagen.yml");
        path
    })
}

/// The defaults the configuration files give, merged: the global file first (when `global`
/// and it exists), then each of `files` in order.
///
/// # Errors
/// The first file that cannot be read (a missing global file is no error) or parsed.
pub fn load_files(
    global: bool,
    files: &[PathBuf],
) -> Result<(SyncSettings, ForwardSettings), ConfigError> {
    let mut sync = SyncSettings::default();
    let mut forward = ForwardSettings::default();
    let global = global.then(global_path).flatten().filter(|path| path.exists());
    for path in global.iter().chain(files) {
        let file = ConfigurationFile::load(path)?;
        sync.merge(file.sync.defaults);
        forward.merge(file.forward.defaults);
    }
    Ok((sync, forward))
}

//! Project files (`mutagen.yml`): the sessions a project creates, its hooks and commands.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

use crate::ConfigError;
use crate::file::{parse, read};
use crate::settings::{ForwardSettings, SyncSettings};
use crate::value::Named;

const KIND: &str = "project file";

/// Shell commands run before and after each lifecycle step; each list runs in order and
/// stops at the first command that fails.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct Hooks {
    /// Before any session is created (`project start`).
    pub before_create: Vec<String>,
    /// After every session was created (and flushed where asked).
    pub after_create: Vec<String>,
    /// Before the sessions are paused.
    pub before_pause: Vec<String>,
    /// After they were paused.
    pub after_pause: Vec<String>,
    /// Before they are resumed.
    pub before_resume: Vec<String>,
    /// After they were resumed.
    pub after_resume: Vec<String>,
    /// Before they are terminated.
    pub before_terminate: Vec<String>,
    /// After they were terminated.
    pub after_terminate: Vec<String>,
}

/// The YAML layout: hooks at the top level beside the other keys.
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
struct ProjectFile {
    before_create: Vec<String>,
    after_create: Vec<String>,
    before_pause: Vec<String>,
    after_pause: Vec<String>,
    before_resume: Vec<String>,
    after_resume: Vec<String>,
    before_terminate: Vec<String>,
    after_terminate: Vec<String>,
    commands: BTreeMap<String, String>,
    sync: Named<SyncSettings>,
    forward: Named<ForwardSettings>,
}

/// A synchronization session of a project, its settings merged over the project's
/// `defaults` entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyncEntry {
    /// The session's name (the map key).
    pub name: String,
    /// Alpha's URL, as written (relative paths are relative to the project file).
    pub alpha: String,
    /// Beta's URL.
    pub beta: String,
    /// The settings (the URL fields included).
    pub settings: SyncSettings,
}

/// A forward session of a project.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ForwardEntry {
    /// The session's name.
    pub name: String,
    /// The listening endpoint's URL.
    pub source: String,
    /// The dialing endpoint's URL.
    pub destination: String,
    /// The settings.
    pub settings: ForwardSettings,
}

/// A parsed project file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Project {
    /// The lifecycle hooks.
    pub hooks: Hooks,
    /// `project run NAME` commands.
    pub commands: BTreeMap<String, String>,
    /// The synchronization sessions, by name.
    pub sync: Vec<SyncEntry>,
    /// The forward sessions, by name.
    pub forward: Vec<ForwardEntry>,
}

impl Project {
    /// Parses a project file's text; `path` names it in errors.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`]: bad YAML, an unknown key, a bad value, a key that is not a
    /// session name, or a session without both URLs.
    pub fn parse(path: &Path, text: &str) -> Result<Project, ConfigError> {
        let file: ProjectFile = parse(KIND, path, text)?;
        let invalid =
            |message: String| ConfigError::Invalid { kind: KIND, path: path.to_owned(), message };
        let mut sync_entries = file.sync.0;
        let sync_defaults = sync_entries.remove("defaults").unwrap_or_default();
        let mut sync = Vec::new();
        for (name, own) in sync_entries {
            let mut settings = sync_defaults.clone();
            settings.merge(own);
            let (Some(alpha), Some(beta)) = (settings.alpha.clone(), settings.beta.clone()) else {
                let missing = if settings.alpha.is_none() { "alpha" } else { "beta" };
                return Err(invalid(format!("sync.{name}: no {missing} URL")));
            };
            sync.push(SyncEntry { name, alpha, beta, settings });
        }
        let mut forward_entries = file.forward.0;
        let forward_defaults = forward_entries.remove("defaults").unwrap_or_default();
        let mut forward = Vec::new();
        for (name, own) in forward_entries {
            let mut settings = forward_defaults.clone();
            settings.merge(own);
            let (Some(source), Some(destination)) =
                (settings.source.clone(), settings.destination.clone())
            else {
                let missing = if settings.source.is_none() { "source" } else { "destination" };
                return Err(invalid(format!("forward.{name}: no {missing} URL")));
            };
            forward.push(ForwardEntry { name, source, destination, settings });
        }
        Ok(Project {
            hooks: Hooks {
                before_create: file.before_create,
                after_create: file.after_create,
                before_pause: file.before_pause,
                after_pause: file.after_pause,
                before_resume: file.before_resume,
                after_resume: file.after_resume,
                before_terminate: file.before_terminate,
                after_terminate: file.after_terminate,
            },
            commands: file.commands,
            sync,
            forward,
        })
    }

    /// Reads and parses a project file.
    ///
    /// # Errors
    /// [`ConfigError::Read`] or [`ConfigError::Invalid`].
    pub fn load(path: &Path) -> Result<Project, ConfigError> {
        Project::parse(path, &read(KIND, path)?)
    }
}

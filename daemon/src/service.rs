//! `mutagen daemon register|unregister`: a systemd user unit that starts the daemon at login
//! and restarts it when it fails.
//!
//! # Invariants
//! - The unit runs this executable's `daemon run` with the data directory it was registered
//!   for pinned in `MUTAGEN_DATA_DIRECTORY`, so that it serves the same journal as the
//!   commands that registered it.
//! - Once a unit is registered, autostart asks systemd to start it ([`start`]), so that the
//!   daemon the commands use is the supervised one; when systemd cannot be reached, the
//!   command starts the daemon itself as before.
//! - The daemon logs to `daemon.log` as always; its standard error (a panic's message)
//!   goes to the user journal (`journalctl --user -u mutagen`).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};

use crate::paths::DataDirectory;

/// The unit's name.
pub const UNIT: &str = "mutagen.service";

/// Returns where the user unit lives: `$XDG_CONFIG_HOME/systemd/user/mutagen.service`, else
/// `~/.config/systemd/user/mutagen.service`.
///
/// # Errors
/// Neither `XDG_CONFIG_HOME` nor `HOME` is set to an absolute path.
pub fn unit_path() -> anyhow::Result<PathBuf> {
    let absolute =
        |name: &str| std::env::var_os(name).map(PathBuf::from).filter(|path| path.is_absolute());
    let config = match absolute("XDG_CONFIG_HOME") {
        Some(config) => config,
        None => absolute("HOME")
            .map(|home| home.join(".config"))
            .context("neither XDG_CONFIG_HOME nor HOME is set to an absolute path")?,
    };
    Ok(config.join("systemd/user").join(UNIT))
}

/// Quotes a value for a unit file: in double quotes, with `\` and `"` escaped and `%`
/// doubled (systemd would read it as a specifier).
fn quote(value: &str) -> String {
    let mut quoted = String::from("\"");
    for character in value.chars() {
        match character {
            '\\' | '"' => {
                quoted.push('\\');
                quoted.push(character);
            }
            '%' => quoted.push_str("%%"),
            _ => quoted.push(character),
        }
    }
    quoted.push('"');
    quoted
}

/// Renders the unit for `executable` serving `data`.
///
/// # Errors
/// A path that is not UTF-8 or holds a newline (a unit file cannot say it).
pub fn render(executable: &Path, data: &DataDirectory) -> anyhow::Result<String> {
    let text = |path: &Path| -> anyhow::Result<String> {
        match path.to_str() {
            Some(text) if !text.contains(['\n', '\r']) => Ok(text.to_owned()),
            _ => bail!("the path {} cannot be written in a systemd unit", path.display()),
        }
    };
    let executable = quote(&text(executable)?);
    let environment = quote(&format!("MUTAGEN_DATA_DIRECTORY={}", text(data.root())?));
    Ok(format!(
        "# Written by `mutagen daemon register`; `mutagen daemon unregister` removes it.\n\
         [Unit]\n\
         Description=Mutagen file synchronization and forwarding daemon\n\
         \n\
         [Service]\n\
         Type=simple\n\
         ExecStart={executable} daemon run\n\
         Environment={environment}\n\
         Restart=on-failure\n\
         RestartSec=2\n\
         \n\
         [Install]\n\
         WantedBy=default.target\n"
    ))
}

/// What `register` or `unregister` did.
#[derive(Debug)]
pub struct Outcome {
    /// The unit file written or removed.
    pub unit: PathBuf,
    /// Why `systemctl --user` could not be told, when it could not (the unit file is in
    /// place or gone all the same).
    pub systemctl: Option<String>,
}

/// Writes the unit (atomically) and enables it.
///
/// # Errors
/// The unit cannot be rendered or written.
pub fn register(data: &DataDirectory) -> anyhow::Result<Outcome> {
    let executable = std::env::current_exe().context("unable to locate the mutagen executable")?;
    let unit = unit_path()?;
    let content = render(&executable, data)?;
    let parent = unit.parent().unwrap_or(Path::new("/"));
    std::fs::create_dir_all(parent)
        .with_context(|| format!("unable to create {}", parent.display()))?;
    let temporary = unit.with_extension("service.new");
    std::fs::write(&temporary, content)
        .and_then(|()| std::fs::rename(&temporary, &unit))
        .with_context(|| format!("unable to write {}", unit.display()))?;
    let systemctl = systemctl(&["daemon-reload"]).and_then(|()| systemctl(&["enable", UNIT])).err();
    Ok(Outcome { unit, systemctl })
}

/// Disables and removes the unit; a unit that is not there is not an error.
///
/// # Errors
/// The unit file exists and cannot be removed.
pub fn unregister() -> anyhow::Result<Outcome> {
    let unit = unit_path()?;
    let disabled = if unit.exists() { systemctl(&["disable", UNIT]).err() } else { None };
    match std::fs::remove_file(&unit) {
        Ok(()) => {}
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => {
            return Err(error).with_context(|| format!("unable to remove {}", unit.display()));
        }
    }
    let systemctl = disabled.or_else(|| systemctl(&["daemon-reload"]).err());
    Ok(Outcome { unit, systemctl })
}

/// Whether a unit is registered for `data`.
pub fn registered(data: &DataDirectory) -> bool {
    let Ok(unit) = unit_path() else { return false };
    let Ok(content) = std::fs::read_to_string(unit) else { return false };
    let Some(root) = data.root().to_str() else { return false };
    content.contains(&quote(&format!("MUTAGEN_DATA_DIRECTORY={root}")))
}

/// Asks systemd to start the registered unit.
///
/// # Errors
/// `systemctl --user start` failed (no user manager, for example).
pub fn start() -> Result<(), String> {
    systemctl(&["start", UNIT])
}

/// Runs `systemctl --user ARGS`; the error quotes what it said.
fn systemctl(args: &[&str]) -> Result<(), String> {
    let output = Command::new("systemctl")
        .arg("--user")
        .args(args)
        .output()
        .map_err(|error| format!("unable to run systemctl: {error}"))?;
    if output.status.success() {
        return Ok(());
    }
    let said = String::from_utf8_lossy(&output.stderr);
    let said = said.lines().find(|line| !line.trim().is_empty()).unwrap_or("no message");
    Err(format!("`systemctl --user {}` failed: {}", args.join(" "), said.trim()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_quoted_for_systemd() {
        let cases = [
            ("/usr/bin/mutagen", "\"/usr/bin/mutagen\""),
            ("/opt/my tools/mutagen", "\"/opt/my tools/mutagen\""),
            ("/a\"b\\c", "\"/a\\\"b\\\\c\""),
            ("/100%/x", "\"/100%%/x\""),
        ];
        for (value, quoted) in cases {
            assert_eq!(quote(value), quoted, "{value}");
        }
    }

    #[test]
    fn the_unit_pins_the_executable_and_the_data_directory() {
        let data = DataDirectory::new(PathBuf::from("/home/u/data dir"));
        let unit = render(Path::new("/usr/local/bin/mutagen"), &data).expect("render");
        assert!(unit.contains("ExecStart=\"/usr/local/bin/mutagen\" daemon run\n"), "{unit}");
        assert!(unit.contains("Environment=\"MUTAGEN_DATA_DIRECTORY=/home/u/data dir\"\n"));
        assert!(unit.contains("Restart=on-failure\n"), "{unit}");
        assert!(unit.contains("WantedBy=default.target\n"), "{unit}");
        let error = render(Path::new("/bad\nname"), &data).expect_err("newline");
        assert!(error.to_string().contains("cannot be written in a systemd unit"), "{error}");
    }
}

//! The agent binary: where the daemon finds it, what build it is, where it goes remotely.
//!
//! The daemon looks for the agent, in order: at the path it was given (`MUTAGEN_AGENT_PATH`);
//! in cargo's static-build directory beside its own executable
//! (`../x86_64-unknown-linux-gnu/<profile>/mutagen-agent`, which the README's build command
//! produces and which runs on any x86_64 Linux); and next to its own executable (a dynamically
//! linked `mutagen-agent`, as `cargo build` makes it, which runs on hosts with a glibc at least
//! as new as the build host's). On a remote host it lives in
//! `~/.mutagen/agents/<version>/mutagen-agent`.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

use std::io::{Read, Write};
use std::time::Duration;

use mutagen_protocol::{OutputTail, ProtocolError, handshake};

use crate::{AgentStream, Hello, TransportError, TransportResult};

/// How long an agent may take to greet.
const GREETING_TIMEOUT: Duration = Duration::from_secs(30);

/// Why an agent did not start.
pub(crate) enum Started {
    /// No greeting: the agent is missing or broken; what it printed.
    Missing(String),
    /// Something else failed.
    Failed(TransportError),
}

/// Reads the greeting of an agent just started (on a blocking thread, for at most
/// [`GREETING_TIMEOUT`]) and returns its stream; `host` names it in errors.
pub(crate) async fn greet(
    reader: Box<dyn Read + Send>,
    writer: Box<dyn Write + Send>,
    guard: Box<dyn Send>,
    stderr: OutputTail,
    host: &str,
) -> Result<(AgentStream, Hello), Started> {
    let failed =
        |reason: String| Started::Failed(TransportError::Start { host: host.to_owned(), reason });
    let mut reader = reader;
    let greeting = tokio::task::spawn_blocking(move || {
        let result = handshake(&mut reader);
        (reader, result)
    });
    let (reader, result) = match tokio::time::timeout(GREETING_TIMEOUT, greeting).await {
        Ok(Ok(joined)) => joined,
        Ok(Err(error)) => return Err(failed(format!("the greeting task failed: {error}"))),
        Err(_) => {
            return Err(failed(format!("no greeting within {} s", GREETING_TIMEOUT.as_secs())));
        }
    };
    let stream = AgentStream { reader, writer, guard, stderr };
    match result {
        Ok(hello) => Ok((stream, hello)),
        Err(ProtocolError::Closed(printed)) => {
            // Let the error output arrive before it is read.
            tokio::time::sleep(Duration::from_millis(50)).await;
            let said = stream.stderr.text();
            Err(Started::Missing([printed, said].join(" ").trim().to_owned()))
        }
        Err(error) => Err(failed(error.to_string())),
    }
}

/// The agent's directory on a remote host, relative to the login directory (the home).
pub fn remote_directory() -> String {
    format!(".mutagen/agents/{}", env!("CARGO_PKG_VERSION"))
}

/// What an agent is started for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Serving a synchronization endpoint (`mutagen-agent endpoint`).
    Endpoint,
    /// Listening or dialing for a forward session (`mutagen-agent forward`).
    Forwarder,
}

impl Role {
    /// The agent's subcommand.
    pub fn subcommand(self) -> &'static str {
        match self {
            Role::Endpoint => "endpoint",
            Role::Forwarder => "forward",
        }
    }
}

/// The command that starts the agent on a remote host (run by the login shell in the home).
pub fn remote_command(role: Role) -> String {
    format!("{}/mutagen-agent {}", remote_directory(), role.subcommand())
}

/// The shell command that installs an agent read from standard input: written under a
/// temporary name and renamed into place, so a half-written agent is never run.
pub fn install_command() -> String {
    let directory = remote_directory();
    format!(
        "umask 077 && mkdir -p {directory} && cat > {directory}/.mutagen-agent.$$ && \
         chmod 700 {directory}/.mutagen-agent.$$ && \
         mv -f {directory}/.mutagen-agent.$$ {directory}/mutagen-agent"
    )
}

/// The local agent binary and its build identity (the BLAKE3 of the file).
#[derive(Debug)]
pub struct AgentBinary {
    candidates: Vec<PathBuf>,
    /// The last file hashed: (path, modification time, length, build).
    cached: Mutex<Option<(PathBuf, SystemTime, u64, String)>>,
}

impl AgentBinary {
    /// Looks for the agent at `explicit`, or near `executable` (the daemon's own binary).
    pub fn new(explicit: Option<PathBuf>, executable: Option<&Path>) -> AgentBinary {
        let mut candidates = Vec::new();
        if let Some(path) = explicit {
            candidates.push(path);
        } else if let Some(directory) = executable.and_then(Path::parent) {
            if let (Some(profile), Some(target)) = (directory.file_name(), directory.parent()) {
                let triple = target.join("x86_64-unknown-linux-gnu").join(profile);
                candidates.push(triple.join("mutagen-agent"));
            }
            candidates.push(directory.join("mutagen-agent"));
        }
        AgentBinary { candidates, cached: Mutex::new(None) }
    }

    /// Returns the agent's path and build.
    ///
    /// # Errors
    /// [`TransportError::AgentBinary`] saying where it looked and how to build it.
    pub fn locate(&self) -> TransportResult<(PathBuf, String)> {
        let Some((path, metadata)) = self.candidates.iter().find_map(|path| {
            std::fs::metadata(path).ok().filter(|m| m.is_file()).map(|m| (path, m))
        }) else {
            let looked: Vec<String> =
                self.candidates.iter().map(|p| p.display().to_string()).collect();
            return Err(TransportError::AgentBinary(format!(
                "the agent binary was not found (looked for {}): build it with \
                 `RUSTFLAGS=\"-C target-feature=+crt-static\" cargo build --release \
                 --target x86_64-unknown-linux-gnu --bin mutagen-agent`, or set MUTAGEN_AGENT_PATH",
                looked.join(", ")
            )));
        };
        let modified = metadata.modified().unwrap_or(SystemTime::UNIX_EPOCH);
        let mut cached = self.cached.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((p, m, l, build)) = cached.as_ref()
            && (p, *m, *l) == (path, modified, metadata.len())
        {
            return Ok((path.clone(), build.clone()));
        }
        let build = mutagen_protocol::build_of(path).map_err(|e| {
            TransportError::AgentBinary(format!("unable to read the agent {}: {e}", path.display()))
        })?;
        *cached = Some((path.clone(), modified, metadata.len(), build.clone()));
        Ok((path.clone(), build))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_agent_is_found_beside_the_executable_and_static_builds_win() {
        let dir = tempfile::tempdir().expect("tempdir");
        let release = dir.path().join("target/release");
        let triple = dir.path().join("target/x86_64-unknown-linux-gnu/release");
        std::fs::create_dir_all(&release).expect("release");
        let binary = AgentBinary::new(None, Some(&release.join("mutagen")));
        let error = binary.locate().expect_err("nothing built").to_string();
        assert!(error.contains("--target x86_64-unknown-linux-gnu --bin mutagen-agent"), "{error}");
        std::fs::write(release.join("mutagen-agent"), b"dynamic").expect("write");
        let (path, build) = binary.locate().expect("beside");
        assert_eq!(path, release.join("mutagen-agent"));
        assert_eq!(build, blake3::hash(b"dynamic").to_hex().to_string());
        std::fs::create_dir_all(&triple).expect("triple");
        std::fs::write(triple.join("mutagen-agent"), b"static").expect("write");
        assert_eq!(binary.locate().expect("static").0, triple.join("mutagen-agent"));
        let explicit = AgentBinary::new(Some(dir.path().join("x")), Some(&release.join("mutagen")));
        assert!(explicit.locate().expect_err("explicit only").to_string().contains("/x"));
    }

    #[test]
    fn remote_commands_stay_in_the_versioned_directory() {
        let install = install_command();
        assert!(install.starts_with("umask 077 && mkdir -p .mutagen/agents/"), "{install}");
        assert!(install.ends_with("/mutagen-agent"), "{install}");
        assert!(remote_command(Role::Endpoint).ends_with("/mutagen-agent endpoint"));
        assert!(remote_command(Role::Forwarder).ends_with("/mutagen-agent forward"));
    }
}

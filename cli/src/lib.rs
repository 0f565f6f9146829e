//! The `mutagen` command line.
//!
//! # Layout
//! - [`commands`]: one module per verb (`sync create`, `sync list`, `daemon start`...).
//! - [`state`]: the ancestor file that lets `sync once` runs build on each other.
//! - [`render`]: human rendering of entries, conflicts and sizes.
//! - [`json`]: the JSON model of sessions and history (`--json`).
//! - [`template`]: `--template`, Go templates over that model.
//!
//! Exit codes: 0 success; 1 error (nothing left half-done on disk); 2 finished, but conflicts
//! or problems remain and were listed.

use std::ffi::OsString;
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

pub mod commands;
pub mod json;
pub mod prompt;
pub mod render;
pub mod state;
pub mod template;

/// Fast, safe, auditable file synchronization.
#[derive(Debug, Parser)]
#[command(name = "mutagen", version, about, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create and manage synchronization sessions
    #[command(subcommand)]
    Sync(commands::sync::SyncCommand),
    /// Create and manage forward sessions (network forwarding)
    #[command(subcommand)]
    Forward(commands::forward::ForwardCommand),
    /// Start and manage the sessions a project file (mutagen.yml) describes
    #[command(subcommand)]
    Project(commands::project::ProjectCommand),
    /// Control the background daemon that hosts sessions
    #[command(subcommand)]
    Daemon(commands::daemon::DaemonCommand),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell)
    Completion {
        /// The shell
        shell: clap_complete::Shell,
    },
}

/// How a command finished, when it did not fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Everything done.
    Success,
    /// Done, but conflicts or problems remain (exit code 2).
    Incomplete,
    /// A command that was run (`project run`) exited with this code.
    Exit(u8),
}

/// Parses `args` and runs the command; returns the process exit code.
pub fn run(args: impl IntoIterator<Item = OsString>) -> ExitCode {
    let args: Vec<OsString> = args.into_iter().collect();
    if let Some(socket) = std::env::var_os(prompt::ASKPASS_SOCKET) {
        // ssh runs us as its SSH_ASKPASS program.
        return prompt::askpass(socket, &args);
    }
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            // Help and version go to stdout with status 0; usage errors exit 1 (clap would use
            // 2, which keeps its documented meaning here).
            let code = if e.use_stderr() { 1 } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    let result = match cli.command {
        Command::Sync(command) => commands::sync::run(command),
        Command::Forward(command) => commands::forward::run(command),
        Command::Project(command) => commands::project::run(command),
        Command::Daemon(command) => commands::daemon::run(command),
        Command::Completion { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "mutagen", &mut std::io::stdout());
            Ok(Outcome::Success)
        }
    };
    match result {
        Ok(Outcome::Success) => ExitCode::SUCCESS,
        Ok(Outcome::Incomplete) => ExitCode::from(2),
        Ok(Outcome::Exit(code)) => ExitCode::from(code),
        Err(error) => {
            let chain: Vec<String> = error.chain().map(ToString::to_string).collect();
            eprintln!("error: {}", chain.join(": "));
            ExitCode::from(1)
        }
    }
}

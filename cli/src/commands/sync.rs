//! `mutagen sync ...`

use clap::Subcommand;

use crate::Outcome;

mod once;

/// The `sync` verbs.
#[derive(Debug, Subcommand)]
pub enum SyncCommand {
    /// Synchronize two local directories in the foreground until they agree, then exit
    Once(once::OnceArgs),
}

/// Runs a `sync` verb.
pub fn run(command: SyncCommand) -> anyhow::Result<Outcome> {
    match command {
        SyncCommand::Once(args) => once::cmd_once(args),
    }
}

//! `mutagen sync ...`

use clap::Subcommand;

use crate::Outcome;

mod history;
pub(crate) mod lifecycle;
pub(crate) mod list;
mod once;
mod resolve;

/// The `sync` verbs.
#[derive(Debug, Subcommand)]
pub enum SyncCommand {
    /// Create a session between two endpoints, hosted by the daemon
    Create(Box<lifecycle::CreateArgs>),
    /// List sessions and their status
    List(list::ListArgs),
    /// Show a live status line for a session (the newest matching one)
    Monitor(list::MonitorArgs),
    /// Run a full synchronization cycle now and wait for it
    Flush(lifecycle::FlushArgs),
    /// Pause sessions
    Pause(lifecycle::SelectionArgs),
    /// Resume paused or halted sessions
    Resume(lifecycle::SelectionArgs),
    /// Forget what sessions synchronized: the next cycle behaves like a new session's first
    Reset(lifecycle::SelectionArgs),
    /// Terminate sessions (their history stays available for a week)
    Terminate(lifecycle::SelectionArgs),
    /// Show a session's audit trail from the journal
    History(history::HistoryArgs),
    /// Resolve conflicts by hand: --alpha-wins or --beta-wins, for paths or --all
    Resolve(resolve::ResolveArgs),
    /// Synchronize two local directories in the foreground until they agree, then exit
    Once(once::OnceArgs),
}

/// Runs a `sync` verb.
pub fn run(command: SyncCommand) -> anyhow::Result<Outcome> {
    match command {
        SyncCommand::Create(args) => lifecycle::cmd_create(*args),
        SyncCommand::List(args) => list::cmd_list(args),
        SyncCommand::Monitor(args) => list::cmd_monitor(args),
        SyncCommand::Flush(args) => lifecycle::cmd_flush(args),
        SyncCommand::Pause(args) => lifecycle::cmd_simple(args, Verb::Pause),
        SyncCommand::Resume(args) => lifecycle::cmd_simple(args, Verb::Resume),
        SyncCommand::Reset(args) => lifecycle::cmd_simple(args, Verb::Reset),
        SyncCommand::Terminate(args) => lifecycle::cmd_simple(args, Verb::Terminate),
        SyncCommand::History(args) => history::cmd_history(args),
        SyncCommand::Resolve(args) => resolve::cmd_resolve(args),
        SyncCommand::Once(args) => once::cmd_once(args),
    }
}

/// The verbs that only take a selection.
#[derive(Debug, Clone, Copy)]
pub enum Verb {
    /// Pause.
    Pause,
    /// Resume.
    Resume,
    /// Reset.
    Reset,
    /// Terminate.
    Terminate,
}

//! `mutagen daemon start|stop|run|status|verify|recover|register|unregister`

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Subcommand;
use mutagen_daemon::connect::TransportSettings;
use mutagen_daemon::protocol::{Request, Response, Selection};
use mutagen_daemon::{Client, DataDirectory, client, integrity, server, service};
use mutagen_journal::{Finding, Recovered, Report};

use crate::Outcome;

/// The `daemon` verbs.
#[derive(Debug, Subcommand)]
pub enum DaemonCommand {
    /// Start the daemon in the background (does nothing if it runs)
    Start,
    /// Stop the daemon (sessions resume when it starts again)
    Stop,
    /// Run the daemon in the foreground
    Run,
    /// Say whether the daemon runs, with its pid, version and session count
    Status,
    /// Check, while the daemon is stopped, that the journal holds everything it acknowledged
    Verify,
    /// Keep the intact sessions of a damaged journal (damaged ones come back reset and
    /// paused) and move the damaged journal aside
    Recover,
    /// Install a systemd user unit that starts the daemon at login and restarts it if it
    /// fails; autostart then goes through systemd
    Register,
    /// Remove the systemd user unit of `register`
    Unregister,
}

/// The allocator settings of the daemon, which mimalloc reads when the process starts:
/// - `MIMALLOC_PURGE_DELAY=0` gives freed memory back to the system at once (mimalloc
///   otherwise keeps freed pages for a while), so a daemon that terminated its sessions holds
///   only what its remaining sessions need;
/// - `MIMALLOC_ALLOW_THP=0` keeps transparent huge pages out of the daemon: mimalloc asks for
///   them on its arenas, and where the kernel grants them (`madvise` mode, the common default)
///   every touched 2 MiB region is resident in full. An idle daemon held 48 MB with them and
///   10 MB without; a watched 100k-file session 153 MB and 106 MB (see `bench/README.md`).
const ALLOCATOR_SETTINGS: [(&str, &str); 2] =
    [("MIMALLOC_PURGE_DELAY", "0"), ("MIMALLOC_ALLOW_THP", "0")];

/// Makes sure the daemon runs with [`ALLOCATOR_SETTINGS`] (a value the user set is kept):
/// when one is missing, the daemon executes itself again with them set.
fn configure_allocator() -> anyhow::Result<()> {
    let missing: Vec<_> =
        ALLOCATOR_SETTINGS.iter().filter(|(name, _)| std::env::var_os(name).is_none()).collect();
    if missing.is_empty() {
        return Ok(());
    }
    use std::os::unix::process::CommandExt;
    let executable = std::env::current_exe().context("unable to find the mutagen executable")?;
    let error = std::process::Command::new(&executable)
        .args(std::env::args_os().skip(1))
        .envs(missing.iter().map(|(name, value)| (name, value)))
        .exec();
    Err(anyhow::anyhow!("unable to run {} again: {error}", executable.display()))
}

/// Runs a `daemon` verb.
pub fn run(command: DaemonCommand) -> anyhow::Result<Outcome> {
    let data = DataDirectory::from_environment()?;
    match command {
        DaemonCommand::Run => {
            configure_allocator()?;
            let settings = TransportSettings {
                ssh_directory: std::env::var_os("MUTAGEN_SSH_PATH")
                    .filter(|p| !p.is_empty())
                    .map(PathBuf::from),
                agent_path: std::env::var_os("MUTAGEN_AGENT_PATH")
                    .filter(|p| !p.is_empty())
                    .map(PathBuf::from),
                askpass: std::env::current_exe().ok(),
            };
            server::run(&data, &settings)?;
        }
        DaemonCommand::Start => match Client::connect(&data)? {
            Some(client) => println!("Daemon already running (pid {})", client.pid),
            None => {
                let client = client::start(&data)?;
                println!("Started Mutagen daemon (pid {})", client.pid);
            }
        },
        DaemonCommand::Stop => {
            let Some(mut client) = Client::connect(&data)? else {
                println!("Daemon not running");
                return Ok(Outcome::Success);
            };
            let pid = client.pid;
            client.call(&Request::Shutdown)?;
            drop(client);
            // Wait until the process is gone, not only its socket: until then it still holds
            // the journal and the lock, and a following start (or anything opening the
            // journal) would race it.
            let deadline = Instant::now() + Duration::from_secs(30);
            while (data.socket().exists() || running(pid)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            if data.socket().exists() || running(pid) {
                bail!("the daemon (pid {pid}) did not stop within 30 seconds");
            }
            println!("Stopped Mutagen daemon (pid {pid})");
        }
        DaemonCommand::Status => {
            let Some(mut client) = Client::connect(&data)? else {
                bail!("the daemon is not running (data directory {})", data.root().display());
            };
            let sessions =
                match client.call(&Request::List { selection: Selection::All, since: 0 })? {
                    Response::List { sessions, .. } => sessions.len(),
                    other => bail!("unexpected answer from the daemon: {other:?}"),
                };
            println!(
                "Daemon running: pid {}, version {}, {sessions} session{}, data directory {}",
                client.pid,
                mutagen_daemon::protocol::VERSION,
                if sessions == 1 { "" } else { "s" },
                data.root().display()
            );
        }
        DaemonCommand::Verify => {
            let report = integrity::verify(&data)?;
            print_report(&report);
            let problems = report.problems();
            if !problems.is_empty() {
                bail!(
                    "the journal {} is damaged ({} problem{}); `mutagen daemon recover` keeps the \
                     intact sessions",
                    report.directory.display(),
                    problems.len(),
                    if problems.len() == 1 { "" } else { "s" }
                );
            }
            println!("The journal is intact.");
        }
        DaemonCommand::Recover => {
            let (report, recovery) = integrity::recover(&data)?;
            print_report(&report);
            let Some(recovery) = recovery else {
                println!("The journal is intact; nothing was changed.");
                return Ok(Outcome::Success);
            };
            println!("Recovered:");
            for (identifier, name, outcome) in &recovery.sessions {
                let label = label(identifier, name.as_deref());
                match outcome {
                    Recovered::Intact => println!("  {label}: kept as it was"),
                    Recovered::Reset(_) => {
                        println!("  {label}: kept, reset and paused (resume it when ready)");
                    }
                    Recovered::Lost(detail) => println!("  {label}: lost: {detail}"),
                }
            }
            println!("The damaged journal was moved to {}", recovery.kept.display());
        }
        DaemonCommand::Register => {
            let outcome = service::register(&data)?;
            println!("Registered the daemon as the systemd user unit {}", outcome.unit.display());
            match outcome.systemctl {
                None => println!(
                    "It starts at login and restarts if it fails; `mutagen daemon stop` then \
                     `mutagen daemon start` moves a running daemon under systemd"
                ),
                Some(problem) => eprintln!(
                    "warning: {problem}; run `systemctl --user enable --now {}` in your login \
                     session",
                    service::UNIT
                ),
            }
        }
        DaemonCommand::Unregister => {
            let outcome = service::unregister()?;
            println!("Removed the systemd user unit {}", outcome.unit.display());
            if let Some(problem) = outcome.systemctl {
                eprintln!("warning: {problem}");
            }
        }
    }
    Ok(Outcome::Success)
}

/// Names a session in a report: its identifier, and its name when it has one.
fn label(identifier: &str, name: Option<&str>) -> String {
    match name.filter(|name| !name.is_empty()) {
        Some(name) => format!("{identifier} ({name})"),
        None => identifier.to_owned(),
    }
}

/// Prints a journal examination, one line per session.
fn print_report(report: &Report) {
    println!("Journal {} (head {})", report.directory.display(), report.head.display());
    if report.legacy {
        println!("  written before the hash chain: it is chained when the daemon next starts");
    }
    for problem in &report.problems {
        println!("  problem: {problem}");
    }
    for session in &report.sessions {
        let label = label(&session.identifier, session.name.as_deref());
        let records = session.records;
        match &session.finding {
            Finding::Intact => println!("  {label}: intact, {records} records"),
            Finding::Unacknowledged => {
                println!("  {label}: intact, {records} records (not acknowledged yet)");
            }
            Finding::Damaged(detail) => {
                println!("  {label}: damaged after {records} readable records: {detail}");
            }
            Finding::Missing => println!("  {label}: missing: sled has none of its records"),
        }
    }
}

/// Whether process `pid` still runs: some thread of it is not a zombie. (The leader thread
/// turns zombie before the other threads have closed the process's files, so the process
/// state alone would say "gone" too early.)
fn running(pid: u32) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return false };
    tasks.flatten().any(|task| {
        std::fs::read_to_string(task.path().join("stat")).is_ok_and(|stat| {
            // The state follows the parenthesized command name.
            stat.rsplit_once(") ").is_some_and(|(_, rest)| !rest.starts_with('Z'))
        })
    })
}

//! `mutagen daemon start|stop|run|status`

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::bail;
use clap::Subcommand;
use mutagen_daemon::connect::TransportSettings;
use mutagen_daemon::protocol::{Request, Response, Selection};
use mutagen_daemon::{Client, DataDirectory, client, server};

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
}

/// Runs a `daemon` verb.
pub fn run(command: DaemonCommand) -> anyhow::Result<Outcome> {
    let data = DataDirectory::from_environment()?;
    match command {
        DaemonCommand::Run => {
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
    }
    Ok(Outcome::Success)
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

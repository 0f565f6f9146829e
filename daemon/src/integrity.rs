//! `mutagen daemon verify|recover`: the journal examined or recovered while no daemon runs.
//!
//! Both hold the daemon lock for their whole run, so that no daemon starts on a journal that
//! is being copied or replaced.

use std::time::SystemTime;

use anyhow::{Context, bail};
use mutagen_journal::{Journal, Recovery, Report};

use crate::client::Client;
use crate::paths::DataDirectory;
use crate::server;

/// The advice that follows a refused journal.
pub const ADVICE: &str = "run `mutagen daemon verify` for a report, or `mutagen daemon \
                          recover` to keep the intact sessions (the damaged journal is kept)";

/// Examines the journal of `data` without changing it.
///
/// # Errors
/// A running daemon, or a journal that cannot be copied.
pub fn verify(data: &DataDirectory) -> anyhow::Result<Report> {
    let _lock = offline(data)?;
    Ok(Journal::examine(&data.journal())?)
}

/// Recovers the journal of `data` when it is damaged (see [`Journal::recover`]); `Ok(None)`
/// when it is intact and nothing was changed.
///
/// # Errors
/// A running daemon, or a failed copy, write or rename.
pub fn recover(data: &DataDirectory) -> anyhow::Result<(Report, Option<Recovery>)> {
    let _lock = offline(data)?;
    let report = Journal::examine(&data.journal())?;
    if report.problems().is_empty() {
        return Ok((report, None));
    }
    let stamp =
        humantime::format_rfc3339_seconds(SystemTime::now()).to_string().replace([':', '-'], "");
    let keep = data.root().join(format!("journal.damaged-{stamp}"));
    let recovery = Journal::recover(&data.journal(), &keep)
        .with_context(|| format!("unable to recover the journal {}", data.journal().display()))?;
    Ok((report, Some(recovery)))
}

/// Takes the daemon lock, refusing while a daemon runs.
fn offline(data: &DataDirectory) -> anyhow::Result<std::fs::File> {
    data.ensure()?;
    if let Some(client) = Client::connect(data)? {
        bail!(
            "the daemon (pid {}) is running on this journal; stop it first with `mutagen daemon \
             stop`",
            client.pid
        );
    }
    server::acquire_lock(data)
}

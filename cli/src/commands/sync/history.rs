//! `sync history`: a session's audit trail from the journal.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use clap::Args;
use mutagen_daemon::protocol::{Request, Response};
use mutagen_journal::{Event, Record};
use mutagen_reconcile::Change;

use super::lifecycle::client;
use crate::{Outcome, json, render};

/// Changes listed per transition record in human output.
const SHOWN: usize = 10;

/// Show a session's audit trail, oldest first: time, cycle, event, what changed on which side,
/// conflicts and problems. Terminated sessions stay available for a week.
#[derive(Debug, Args)]
pub struct HistoryArgs {
    /// The session's name or identifier
    session: String,
    /// Show only the newest N records
    #[arg(long, value_name = "N")]
    limit: Option<usize>,
    /// Show only records since TIME: RFC 3339 (2026-11-22T10:00:00Z) or a duration ago (10m, 2h)
    #[arg(long, value_name = "TIME")]
    since: Option<String>,
    /// Print a JSON array
    #[arg(long)]
    json: bool,
}

fn parse_since(text: &str) -> anyhow::Result<u64> {
    let time = match humantime::parse_rfc3339_weak(text) {
        Ok(time) => time,
        Err(_) => {
            let ago = humantime::parse_duration(text).with_context(|| {
                format!(
                    "invalid --since {text:?}: expected an RFC 3339 time or a duration such as 10m"
                )
            })?;
            SystemTime::now().checked_sub(ago).unwrap_or(UNIX_EPOCH)
        }
    };
    let since = time.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
    Ok(u64::try_from(since.as_nanos()).unwrap_or(u64::MAX))
}

/// Runs `sync history`.
pub fn cmd_history(args: HistoryArgs) -> anyhow::Result<Outcome> {
    let since = args.since.as_deref().map(parse_since).transpose()?;
    if args.session.is_empty() {
        bail!("empty session specification");
    }
    let request = Request::History { specification: args.session.clone() };
    let (identifier, mut records) = match client()?.call(&request)? {
        Response::History { identifier, records } => (identifier, records),
        other => bail!("unexpected answer from the daemon: {other:?}"),
    };
    if let Some(since) = since {
        records.retain(|(_, record)| record.time >= since);
    }
    if let Some(limit) = args.limit {
        let skip = records.len().saturating_sub(limit);
        records.drain(..skip);
    }
    if args.json {
        let array: Vec<_> = records.iter().map(|(n, r)| json::record(*n, r)).collect();
        println!("{}", serde_json::to_string(&array)?);
        return Ok(Outcome::Success);
    }
    println!("History of {identifier} ({} records)", records.len());
    for (_, record) in &records {
        for line in describe(record) {
            println!("{line}");
        }
    }
    Ok(Outcome::Success)
}

fn millis(nanos: u64) -> String {
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_nanos(nanos)).to_string()
}

fn change_line(change: &Change) -> String {
    let sign = match (&change.old, &change.new) {
        (None, Some(_)) => '+',
        (Some(_), None) => '-',
        _ => '~',
    };
    format!(
        "{sign} {} ({} -> {})",
        render::path(&change.path),
        render::entry(change.old.as_ref()),
        render::entry(change.new.as_ref())
    )
}

/// Renders a record as a heading line and indented details.
fn describe(record: &Record) -> Vec<String> {
    let mut lines = Vec::new();
    let summary = match &record.event {
        Event::Created { spec, version, .. } => format!(
            "alpha {}, beta {}, {}{} (version {version})",
            spec.alpha,
            spec.beta,
            spec.configuration.mode,
            if spec.name.is_empty() { String::new() } else { format!(", name {}", spec.name) }
        ),
        Event::ForwardCreated { spec, version, .. } => format!(
            "source {}, destination {}{} (version {version})",
            spec.source,
            spec.destination,
            if spec.name.is_empty() { String::new() } else { format!(", name {}", spec.name) }
        ),
        Event::ScanCompleted {
            side,
            directories,
            files,
            symbolic_links,
            total_file_size,
            duration_us,
            problems,
        } => {
            lines.extend(
                problems.iter().map(|p| format!("    ! {}: {}", render::path(&p.path), p.error)),
            );
            format!(
                "{side}: {}, {} ({}), {}, {} in {:.1} ms",
                render::count(*directories, "directory", "directories"),
                render::count(*files, "file", "files"),
                render::size(*total_file_size),
                render::count(*symbolic_links, "symbolic link", "symbolic links"),
                render::count(problems.len() as u64, "problem", "problems"),
                *duration_us as f64 / 1000.0
            )
        }
        Event::Staged { side, files, bytes } => format!(
            "{side}: received {} ({})",
            render::count(*files, "file", "files"),
            render::size(*bytes)
        ),
        Event::TransitionApplied { side, changes, problems, missing_files } => {
            lines.extend(changes.iter().take(SHOWN).map(|c| format!("    {}", change_line(c))));
            if changes.len() > SHOWN {
                lines.push(format!("    ...+{} more...", changes.len() - SHOWN));
            }
            lines.extend(
                problems.iter().map(|p| format!("    ! {}: {}", render::path(&p.path), p.error)),
            );
            format!(
                "{side}: {}, {}{}",
                render::count(changes.len() as u64, "change", "changes"),
                render::count(problems.len() as u64, "problem", "problems"),
                if *missing_files { ", some staged files missing" } else { "" }
            )
        }
        Event::ConflictResolved { winner, changes } => {
            // The loser's recorded version becomes the ancestor: the winner's then propagates.
            lines.extend(changes.iter().map(|c| format!("    {}", change_line(c))));
            let roots: Vec<&str> = changes.iter().map(|c| render::path(&c.path)).collect();
            format!("{winner} wins at {}", roots.join(", "))
        }
        Event::ConflictsRecorded { conflicts } => {
            for conflict in conflicts.iter().take(SHOWN) {
                lines.extend(render::conflict(conflict).into_iter().map(|l| format!("    {l}")));
            }
            render::count(conflicts.len() as u64, "conflict", "conflicts")
        }
        Event::AncestorUpdated { changes } => {
            format!(
                "cycle committed, {}",
                render::count(changes.len() as u64, "ancestor change", "ancestor changes")
            )
        }
        Event::Checkpoint(state) => {
            format!("state saved after {} successful cycles", state.successful_cycles)
        }
        Event::Halted { reason } => reason.description().to_owned(),
        Event::HaltAllowed { reason } => match reason {
            mutagen_core::HaltReason::RootEmptied => {
                "one root was emptied: propagated, as the session allows".to_owned()
            }
            mutagen_core::HaltReason::RootDeletion => {
                "a root was deleted: propagated, as the session allows".to_owned()
            }
            other => format!("{} (allowed)", other.description()),
        },
        Event::Error { message } => message.clone(),
        Event::Connected { side, url, agent_version, root, duration_ms, round_trip_us } => {
            format!(
                "{side} {url} (agent {agent_version}, root {root}) in {duration_ms} ms, \
                 round trip {:.1} ms",
                *round_trip_us as f64 / 1000.0
            )
        }
        Event::Disconnected { side, reason } => format!("{side}: {reason}"),
        Event::Identified { side, identity } => format!("{side} is {identity}"),
        Event::EndpointReplaced { side, previous, current } => {
            format!(
                "{side} was {previous}, is now {current}: halted, reset the session to re-seed it"
            )
        }
        Event::Paused
        | Event::Resumed
        | Event::FlushRequested
        | Event::Reset
        | Event::Terminated => String::new(),
    };
    let heading = format!(
        "{}  cycle {:<4} {:<18} {summary}",
        millis(record.time),
        record.cycle,
        record.event.kind()
    );
    std::iter::once(heading.trim_end().to_owned()).chain(lines).collect()
}

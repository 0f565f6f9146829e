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
    /// Show only what touched this path (relative to the roots; a directory takes in what is
    /// below it): which cycle, which side, old -> new, and why
    #[arg(long, value_name = "PATH")]
    path: Option<String>,
    /// Print a JSON array
    #[arg(long)]
    json: bool,
}

/// Checks a `--path` and returns it in the journal's form (`a/b`, `` for the root).
fn parse_path(text: &str) -> anyhow::Result<String> {
    let trimmed = text.trim_end_matches('/');
    let trimmed = trimmed.strip_prefix("./").unwrap_or(trimmed);
    let path = if trimmed == "." { "" } else { trimmed };
    let bad = path.starts_with('/')
        || path.split('/').any(|part| part.is_empty() || part == "." || part == "..");
    if bad && !path.is_empty() {
        bail!("invalid --path {text:?}: give a path relative to the roots, such as src/main.rs");
    }
    Ok(path.to_owned())
}

/// Whether an event at `at` touched `target`: the same path, a directory holding it, or
/// (when `target` is a directory) a path below it.
fn touches(at: &str, target: &str) -> bool {
    let within = |inner: &str, outer: &str| {
        outer.is_empty()
            || inner == outer
            || inner.strip_prefix(outer).is_some_and(|r| r.starts_with('/'))
    };
    within(target, at) || within(at, target)
}

/// One thing that happened at a path.
struct PathEvent<'a> {
    side: Option<mutagen_core::Side>,
    change: Option<&'a Change>,
    path: &'a str,
    why: String,
}

/// What a record did at or around `target`.
fn path_events<'a>(record: &'a Record, target: &str) -> Vec<PathEvent<'a>> {
    use mutagen_core::Side;
    let other = |side: Side| match side {
        Side::Alpha => Side::Beta,
        Side::Beta => Side::Alpha,
    };
    let mut events = Vec::new();
    match &record.event {
        Event::Created { .. } => {
            events.push(PathEvent {
                side: None,
                change: None,
                path: "",
                why: "session created".into(),
            });
        }
        Event::ScanCompleted { side, problems, .. } => {
            for problem in problems.iter().filter(|p| touches(&p.path, target)) {
                events.push(PathEvent {
                    side: Some(*side),
                    change: None,
                    path: &problem.path,
                    why: format!("scan problem: {}", problem.error),
                });
            }
        }
        Event::TransitionApplied { side, changes, problems, .. } => {
            for change in changes.iter().filter(|c| touches(&c.path, target)) {
                let failed = problems.iter().find(|p| touches(&p.path, &change.path));
                let why = match failed {
                    Some(problem) => format!(
                        "propagating from {} failed at {}: {}",
                        other(*side),
                        render::path(&problem.path),
                        problem.error
                    ),
                    None => format!("propagated from {}", other(*side)),
                };
                events.push(PathEvent {
                    side: Some(*side),
                    change: Some(change),
                    path: &change.path,
                    why,
                });
            }
        }
        Event::ConflictsRecorded { conflicts } => {
            for conflict in conflicts.iter().filter(|c| touches(&c.root, target)) {
                for (side, changes) in
                    [(Side::Alpha, &conflict.alpha_changes), (Side::Beta, &conflict.beta_changes)]
                {
                    for change in changes.iter().filter(|c| touches(&c.path, target)) {
                        events.push(PathEvent {
                            side: Some(side),
                            change: Some(change),
                            path: &change.path,
                            why: format!(
                                "conflict at {} (left as it is)",
                                render::path(&conflict.root)
                            ),
                        });
                    }
                }
            }
        }
        Event::ConflictResolved { winner, changes } => {
            for change in changes.iter().filter(|c| touches(&c.path, target)) {
                events.push(PathEvent {
                    side: None,
                    change: None,
                    path: &change.path,
                    why: format!("conflict resolved by hand: {winner} wins"),
                });
            }
        }
        Event::Reset => events.push(PathEvent {
            side: None,
            change: None,
            path: "",
            why: "reset: the ancestor was forgotten".into(),
        }),
        Event::Halted { reason } => events.push(PathEvent {
            side: None,
            change: None,
            path: "",
            why: format!("halted: {}", reason.description()),
        }),
        Event::HaltAllowed { reason } => events.push(PathEvent {
            side: None,
            change: None,
            path: "",
            why: format!("{} (propagated, as the session allows)", reason.description()),
        }),
        _ => {}
    }
    events
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
    if let Some(path) = &args.path {
        let target = parse_path(path)?;
        let touched: Vec<_> = records
            .iter()
            .flat_map(|(number, record)| {
                path_events(record, &target).into_iter().map(move |event| (*number, record, event))
            })
            .collect();
        if args.json {
            let array: Vec<_> = touched
                .iter()
                .map(|(number, record, event)| {
                    serde_json::json!({
                        "number": number,
                        "time": json::time(record.time),
                        "cycle": record.cycle,
                        "kind": record.event.kind(),
                        "side": event.side.map(|side| side.to_string()),
                        "path": event.path,
                        "old": event.change.map(|c| json::entry(c.old.as_ref())),
                        "new": event.change.map(|c| json::entry(c.new.as_ref())),
                        "why": event.why,
                    })
                })
                .collect();
            println!("{}", serde_json::to_string(&array)?);
            return Ok(Outcome::Success);
        }
        println!(
            "History of {} in {identifier} ({})",
            render::path(&target),
            render::count(touched.len() as u64, "event", "events")
        );
        for (_, record, event) in &touched {
            let side = event.side.map_or_else(String::new, |side| format!("{side}: "));
            let what =
                event.change.map_or_else(|| render::path(event.path).to_owned(), change_line);
            println!(
                "{}  cycle {:<4} {side}{what}: {}",
                millis(record.time),
                record.cycle,
                event.why
            );
        }
        return Ok(Outcome::Success);
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

//! The JSON model of sessions and history, as upstream's public model names things.
//!
//! Paths are relative to the session root, `/`-separated, `""` for the root. Entries are
//! `null` or `{kind: directory|file|symlink|untracked|problematic, digest?, executable?,
//! permissions?, target?, problem?}` (`permissions`, as octal text like `"0755"`, in
//! permissions mode posix only).

use std::time::{Duration, UNIX_EPOCH};

use mutagen_core::Side;
use mutagen_daemon::protocol::{EndpointInfo, ForwardInfo, SessionInfo};
use mutagen_journal::{Event, Record};
use mutagen_reconcile::{Change, Conflict, Entry, Problem, format_permissions};
use mutagen_session::EndpointConfiguration;
use mutagen_session::forward::ForwardUrl;
use serde_json::{Value, json};

/// Renders nanoseconds since the epoch as RFC 3339 (UTC, nanoseconds).
pub fn time(nanos: u64) -> String {
    humantime::format_rfc3339_nanos(UNIX_EPOCH + Duration::from_nanos(nanos)).to_string()
}

/// An entry, without its contents.
pub fn entry(entry: Option<&Entry>) -> Value {
    match entry {
        None => Value::Null,
        Some(Entry::Directory(directory)) => match directory.permissions {
            Some(_) => json!({
                "kind": "directory",
                "permissions": format_permissions(directory.permissions),
            }),
            None => json!({"kind": "directory"}),
        },
        Some(Entry::File { digest, executable, permissions }) => {
            let mut file =
                json!({"kind": "file", "digest": digest.to_hex(), "executable": executable});
            if permissions.is_some() {
                file["permissions"] = json!(format_permissions(*permissions));
            }
            file
        }
        Some(Entry::SymbolicLink { target }) => json!({"kind": "symlink", "target": target}),
        Some(Entry::Untracked) => json!({"kind": "untracked"}),
        Some(Entry::Problematic { problem }) => json!({"kind": "problematic", "problem": problem}),
    }
}

/// A change.
pub fn change(change: &Change) -> Value {
    json!({"path": change.path, "old": entry(change.old.as_ref()), "new": entry(change.new.as_ref())})
}

/// A conflict.
pub fn conflict(conflict: &Conflict) -> Value {
    json!({
        "root": conflict.root,
        "alphaChanges": conflict.alpha_changes.iter().map(change).collect::<Vec<_>>(),
        "betaChanges": conflict.beta_changes.iter().map(change).collect::<Vec<_>>(),
    })
}

/// A problem.
pub fn problem(problem: &Problem) -> Value {
    json!({"path": problem.path, "error": problem.error})
}

fn endpoint(info: &EndpointInfo, own: &EndpointConfiguration) -> Value {
    let endpoint = &info.state;
    let parsed = mutagen_session::url::Url::stored(&info.url);
    let (protocol, user, host, port, path) = match &parsed {
        Ok(mutagen_session::url::Url::Ssh(ssh)) => {
            ("ssh", ssh.user.clone(), Some(ssh.host.clone()), ssh.port, ssh.path.clone())
        }
        Ok(mutagen_session::url::Url::Docker(docker)) => (
            "docker",
            docker.user.clone(),
            Some(docker.container.clone()),
            None,
            docker.path.clone(),
        ),
        _ => ("local", None, None, None, info.url.clone()),
    };
    json!({
        "protocol": protocol,
        "user": user,
        "host": host,
        "port": port,
        "path": path,
        "url": info.url,
        "environment": info.environment,
        "connected": info.connected,
        "scanned": endpoint.scanned,
        "directories": endpoint.directories,
        "files": endpoint.files,
        "symbolicLinks": endpoint.symbolic_links,
        "totalFileSize": endpoint.total_file_size,
        "scanProblems": endpoint.scan_problems.iter().map(problem).collect::<Vec<_>>(),
        "transitionProblems": endpoint.transition_problems.iter().map(problem).collect::<Vec<_>>(),
        "watchProblem": info.watch_problem,
        "watch": {
            "mode": own.watch_mode.name(),
            "pollingInterval": own.watch_polling_interval,
        },
        "stageMode": own.stage_mode.name(),
        "compression": own.compression.name(),
        "probeMode": own.probe_mode.name(),
        "scanMode": own.scan_mode.name(),
        "permissions": {
            "defaultFileMode": own.ownership.file_mode.map(|bits| format!("{bits:04o}")),
            "defaultDirectoryMode": own.ownership.directory_mode.map(|bits| format!("{bits:04o}")),
            "defaultOwner": own.ownership.owner,
            "defaultGroup": own.ownership.group,
        },
    })
}

/// A session.
pub fn session(session: &SessionInfo) -> Value {
    let configuration = &session.configuration;
    let mut value = json!({
        "identifier": session.identifier,
        "version": 1,
        "creationTime": time(session.creation_time),
        "creatingVersion": session.creating_version,
        "name": session.name,
        "labels": session.labels,
        "paused": session.paused,
        "status": session.status.name(),
        "lastError": session.last_error,
        "successfulCycles": session.successful_cycles,
        "conflicts": session.conflicts.iter().map(conflict).collect::<Vec<_>>(),
        "mode": configuration.mode.to_string(),
        "ignore": {
            "syntax": configuration.ignore_syntax.name(),
            "paths": configuration.ignores,
            "vcs": configuration.ignore_vcs,
            "vcsIgnored": configuration.ignore_vcs_ignored,
        },
        "symlink": {"mode": configuration.symlink_mode.to_string()},
        "watch": {
            "mode": configuration.watch_mode.name(),
            "pollingInterval": configuration.watch_polling_interval,
        },
        "compression": configuration.compression.name(),
        "allowRootEmptying": configuration.allow_root_emptying,
        "allowRootDeletion": configuration.allow_root_deletion,
        "stageMode": configuration.stage_mode.name(),
        "maxEntryCount": configuration.max_entry_count,
        "maxStagingFileSize": configuration.max_staging_file_size,
        "probeMode": configuration.probe_mode.name(),
        "scanMode": configuration.scan_mode.name(),
        "permissions": {"mode": configuration.permissions_mode.name()},
        "alpha": endpoint(&session.alpha, &configuration.endpoint(Side::Alpha)),
        "beta": endpoint(&session.beta, &configuration.endpoint(Side::Beta)),
    });
    if let Some((side, progress)) = &session.staging {
        value[side.to_string()]["stagingProgress"] = json!({
            "path": progress.path,
            "receivedFiles": progress.received_files,
            "expectedFiles": progress.expected_files,
            "totalReceivedSize": progress.received_bytes,
            "expectedSize": progress.current_size,
        });
    }
    value
}

/// A history record.
pub fn record(number: u64, record: &Record) -> Value {
    let mut value = json!({
        "number": number,
        "time": time(record.time),
        "cycle": record.cycle,
        "kind": record.event.kind(),
    });
    let details = match &record.event {
        Event::Created { identifier, version, spec } => json!({
            "identifier": identifier,
            "version": version,
            "alpha": spec.alpha,
            "beta": spec.beta,
            "name": spec.name,
            "labels": spec.labels,
            "mode": spec.configuration.mode.to_string(),
        }),
        Event::ScanCompleted {
            side,
            directories,
            files,
            symbolic_links,
            total_file_size,
            duration_us,
            problems,
        } => json!({
            "side": side.to_string(),
            "directories": directories,
            "files": files,
            "symbolicLinks": symbolic_links,
            "totalFileSize": total_file_size,
            "durationMicroseconds": duration_us,
            "problems": problems.iter().map(problem).collect::<Vec<_>>(),
        }),
        Event::Staged { side, files, bytes } => {
            json!({"side": side.to_string(), "files": files, "bytes": bytes})
        }
        Event::TransitionApplied { side, changes, problems, missing_files } => json!({
            "side": side.to_string(),
            "changes": changes.iter().map(change).collect::<Vec<_>>(),
            "problems": problems.iter().map(problem).collect::<Vec<_>>(),
            "missingFiles": missing_files,
        }),
        Event::ConflictResolved { winner, changes } => json!({
            "winner": winner.to_string(),
            "changes": changes.iter().map(change).collect::<Vec<_>>(),
        }),
        Event::ConflictsRecorded { conflicts } => {
            json!({"conflicts": conflicts.iter().map(conflict).collect::<Vec<_>>()})
        }
        Event::AncestorUpdated { changes } => json!({"changes": changes.len()}),
        Event::Checkpoint(state) => json!({"successfulCycles": state.successful_cycles}),
        Event::Halted { reason } | Event::HaltAllowed { reason } => {
            json!({"reason": reason.status()})
        }
        Event::Error { message } => json!({"message": message}),
        Event::Connected { side, url, agent_version, root, duration_ms, round_trip_us } => json!({
            "side": side.to_string(),
            "url": url,
            "agentVersion": agent_version,
            "root": root,
            "durationMilliseconds": duration_ms,
            "roundTripMicroseconds": round_trip_us,
        }),
        Event::Disconnected { side, reason } => {
            json!({"side": side.to_string(), "reason": reason})
        }
        Event::Identified { side, identity } => {
            json!({"side": side.to_string(), "identity": identity})
        }
        Event::EndpointReplaced { side, previous, current } => {
            json!({"side": side.to_string(), "previous": previous, "current": current})
        }
        Event::ForwardCreated { identifier, version, spec } => json!({
            "identifier": identifier,
            "version": version,
            "source": spec.source,
            "destination": spec.destination,
            "name": spec.name,
            "labels": spec.labels,
        }),
        Event::Paused
        | Event::Resumed
        | Event::FlushRequested
        | Event::Reset
        | Event::Terminated => json!({}),
    };
    if let (Value::Object(target), Value::Object(details)) = (&mut value, details) {
        target.extend(details);
    }
    value
}

/// A forward endpoint: where it is, and the socket there (`endpoint`, as upstream names it).
fn forward_endpoint(url: &str, connected: bool) -> Value {
    let parsed = ForwardUrl::parse(url, std::path::Path::new("/"));
    let (protocol, user, host, port, socket) = match &parsed {
        Ok(ForwardUrl::Ssh { user, host, port, spec }) => {
            ("ssh", user.clone(), Some(host.clone()), *port, spec.to_string())
        }
        Ok(ForwardUrl::Docker { user, container, spec }) => {
            ("docker", user.clone(), Some(container.clone()), None, spec.to_string())
        }
        Ok(ForwardUrl::Local(spec)) => ("local", None, None, None, spec.to_string()),
        Err(_) => ("local", None, None, None, url.to_owned()),
    };
    json!({
        "protocol": protocol,
        "user": user,
        "host": host,
        "port": port,
        "endpoint": socket,
        "url": url,
        "connected": connected,
    })
}

/// A forward session.
pub fn forward(info: &ForwardInfo) -> Value {
    let spec = &info.spec;
    json!({
        "identifier": info.identifier,
        "version": 1,
        "creationTime": time(info.creation_time),
        "creatingVersion": info.creating_version,
        "source": forward_endpoint(&spec.source, info.source_connected),
        "destination": forward_endpoint(&spec.destination, info.destination_connected),
        "name": spec.name,
        "labels": spec.labels,
        "paused": info.paused,
        "status": info.status.name(),
        "lastError": info.last_error,
        "openConnections": info.open_connections,
        "totalConnections": info.total_connections,
        "totalOutboundData": info.total_outbound_data,
        "totalInboundData": info.total_inbound_data,
        "failedConnections": info.failed_connections,
        "socket": {
            "overwriteMode": spec.socket.overwrite.name(),
            "owner": spec.socket.owner,
            "group": spec.socket.group,
            "permissionMode": format!("{:04o}", spec.socket.mode),
        },
    })
}

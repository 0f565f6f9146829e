//! `mutagen forward ...`: create and manage forward sessions.

use std::collections::BTreeMap;
use std::io::Write;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use mutagen_config::ForwardSettings;
use mutagen_config::settings::SocketSettings;
use mutagen_daemon::protocol::{ForwardInfo, Request, Response, Selection};
use mutagen_session::forward::{
    ForwardSpec, ForwardUrl, OverwriteMode, SocketOptions, parse_permission_mode,
};
use mutagen_session::{Environment, validate_name};

use super::sync::lifecycle::{SelectionArgs, client};
use super::sync::list::{Format, ListArgs, print_sessions, selection, yes};
use crate::{Outcome, json, render};

/// The `forward` verbs.
#[derive(Debug, Subcommand)]
pub enum ForwardCommand {
    /// Create a forward session: SOURCE listens, DESTINATION dials
    Create(CreateArgs),
    /// List forward sessions and their status
    List(ListArgs),
    /// Show a live status line for a forward session (the newest matching one)
    Monitor(ListArgs),
    /// Pause forward sessions (listeners close, open connections end)
    Pause(SelectionArgs),
    /// Resume paused forward sessions
    Resume(SelectionArgs),
    /// Terminate forward sessions (their history stays available for a week)
    Terminate(SelectionArgs),
}

/// Create a forward session, hosted by the daemon (started if needed).
///
/// Endpoints are `tcp:HOST:PORT`, `tcp4:`, `tcp6:` or `unix:PATH`, on this machine, over SSH
/// as `[user@]host[:port]:<endpoint>`, or in a container as `docker://[user@]container:<endpoint>`.
/// Prints `Created session <identifier>`.
#[derive(Debug, Args)]
pub struct CreateArgs {
    /// The listening endpoint
    source: String,
    /// The dialing endpoint
    destination: String,
    /// A name for the session (a letter, then letters, digits and '-')
    #[arg(short, long, default_value = "")]
    name: String,
    /// A label, key=value or key (repeatable)
    #[arg(short, long = "label", value_name = "LABEL")]
    labels: Vec<String>,
    /// Create the session paused
    #[arg(short, long)]
    paused: bool,
    /// Do not read the global configuration file (~/.mutagen.yml)
    #[arg(long)]
    no_global_configuration: bool,
    /// A YAML file whose `forward: defaults:` apply, after the global file's (repeatable)
    #[arg(short = 'c', long = "configuration-file", value_name = "FILE")]
    configuration_files: Vec<std::path::PathBuf>,
    /// When a unix socket listener's path exists: leave (fail; the default) or overwrite (a
    /// socket only)
    #[arg(long, value_name = "MODE")]
    socket_overwrite_mode: Option<String>,
    /// The owner of a unix socket listener (a name or an id)
    #[arg(long, value_name = "USER")]
    socket_owner: Option<String>,
    /// The group of a unix socket listener (a name or an id)
    #[arg(long, value_name = "GROUP")]
    socket_group: Option<String>,
    /// The permission bits of a unix socket listener, in octal (default 600)
    #[arg(long, value_name = "MODE")]
    socket_permission_mode: Option<String>,
}

/// Runs a `forward` verb.
pub fn run(command: ForwardCommand) -> anyhow::Result<Outcome> {
    match command {
        ForwardCommand::Create(args) => cmd_create(args),
        ForwardCommand::List(args) => cmd_list(&args),
        ForwardCommand::Monitor(args) => cmd_monitor(&args),
        ForwardCommand::Pause(args) => simple(&args, Request::ForwardPause),
        ForwardCommand::Resume(args) => simple(&args, Request::ForwardResume),
        ForwardCommand::Terminate(args) => simple(&args, Request::ForwardTerminate),
    }
}

/// The Docker environment of a container endpoint, captured at creation
/// (`MUTAGEN_SOURCE_<VAR>` and `MUTAGEN_DESTINATION_<VAR>` override `<VAR>` for one side).
fn environment(url: &ForwardUrl, side: &str) -> anyhow::Result<Environment> {
    if !matches!(url, ForwardUrl::Docker { .. }) {
        return Ok(Environment::new());
    }
    let prefix = format!("MUTAGEN_{}_", side.to_ascii_uppercase());
    mutagen_transports::docker::capture(&prefix, &|name| std::env::var(name).ok())
        .map_err(|e| anyhow::anyhow!("unable to capture the docker environment of {url}: {e}"))
}

fn cmd_create(args: CreateArgs) -> anyhow::Result<Outcome> {
    let cwd = std::env::current_dir().context("unable to determine the working directory")?;
    let (_, mut settings) =
        mutagen_config::load_files(!args.no_global_configuration, &args.configuration_files)?;
    settings.merge(ForwardSettings {
        socket: SocketSettings {
            overwrite_mode: args
                .socket_overwrite_mode
                .as_deref()
                .map(OverwriteMode::parse)
                .transpose()?,
            owner: args.socket_owner,
            group: args.socket_group,
            permission_mode: args
                .socket_permission_mode
                .as_deref()
                .map(parse_permission_mode)
                .transpose()?,
        },
        ..ForwardSettings::default()
    });
    let labels = super::sync::lifecycle::parse_labels(&args.labels)?;
    let spec = forward_spec(
        &args.source,
        &args.destination,
        &cwd,
        args.name,
        labels,
        args.paused,
        settings.socket_options(),
    )?;
    let identifier = create(spec)?;
    println!("Created session {identifier}");
    Ok(Outcome::Success)
}

/// Builds and checks a forward session's spec (local socket paths are relative to `cwd`).
pub fn forward_spec(
    source_text: &str,
    destination_text: &str,
    cwd: &std::path::Path,
    name: String,
    labels: BTreeMap<String, String>,
    paused: bool,
    socket: SocketOptions,
) -> anyhow::Result<ForwardSpec> {
    let source = ForwardUrl::parse(source_text, cwd)?;
    let destination = ForwardUrl::parse(destination_text, cwd)?;
    if !name.is_empty() {
        validate_name(&name)?;
    }
    Ok(ForwardSpec {
        source_environment: environment(&source, "source")?,
        destination_environment: environment(&destination, "destination")?,
        source: source.to_string(),
        destination: destination.to_string(),
        name,
        labels,
        paused,
        socket,
    })
}

/// Asks the daemon (started if needed) to create a forward session; returns its identifier.
pub fn create(spec: ForwardSpec) -> anyhow::Result<String> {
    match client()?.call(&Request::ForwardCreate(spec))? {
        Response::Created { identifier } => Ok(identifier),
        other => bail!("unexpected answer from the daemon: {other:?}"),
    }
}

fn simple(args: &SelectionArgs, request: fn(Selection) -> Request) -> anyhow::Result<Outcome> {
    client()?.call(&request(args.selection(false)?))?;
    Ok(Outcome::Success)
}

pub(crate) fn list(
    client: &mut mutagen_daemon::Client,
    selection: &Selection,
) -> anyhow::Result<Vec<ForwardInfo>> {
    match client.call(&Request::ForwardList { selection: selection.clone(), since: 0 })? {
        Response::ForwardList { sessions, .. } => Ok(sessions),
        other => bail!("unexpected answer from the daemon: {other:?}"),
    }
}

fn cmd_list(args: &ListArgs) -> anyhow::Result<Outcome> {
    let format = args.output.format()?;
    let sessions = list(&mut client()?, &selection(args)?)?;
    print_sessions(&sessions, &format, args.output.long, "forwarding", json::forward, describe)
}

/// The human description of a session.
pub(crate) fn describe(info: &ForwardInfo, long: bool) -> String {
    let spec = &info.spec;
    let mut out = String::new();
    if !spec.name.is_empty() {
        out += &format!("Name: {}\n", spec.name);
    }
    out += &format!("Identifier: {}\n", info.identifier);
    if long {
        let labels: Vec<String> = spec
            .labels
            .iter()
            .map(|(k, v)| if v.is_empty() { k.clone() } else { format!("{k}={v}") })
            .collect();
        out += &format!(
            "Labels: {}\n",
            if labels.is_empty() { "None".to_owned() } else { labels.join(", ") }
        );
        out += &format!(
            "Socket overwrite mode: {}\nSocket owner: {}\nSocket group: {}\nSocket permission mode: {:04o}\n",
            spec.socket.overwrite.name(),
            spec.socket.owner.as_deref().unwrap_or("Default"),
            spec.socket.group.as_deref().unwrap_or("Default"),
            spec.socket.mode,
        );
    }
    out +=
        &format!("Source:\n\tURL: {}\n\tConnected: {}\n", spec.source, yes(info.source_connected));
    out += &format!(
        "Destination:\n\tURL: {}\n\tConnected: {}\n",
        spec.destination,
        yes(info.destination_connected)
    );
    if let Some(error) = &info.last_error {
        out += &format!("Last error: {error}\n");
    }
    out += &format!("Status: {}\n", status(info));
    out
}

/// `[Paused]`, or the status with the connection counts while forwarding.
fn status(info: &ForwardInfo) -> String {
    if info.paused {
        return "[Paused]".to_owned();
    }
    let mut line = info.status.description().to_owned();
    if info.status == mutagen_daemon::protocol::ForwardStatus::Forwarding {
        line += &format!(
            "\nConnections: {} open, {} total, {} outbound, {} inbound",
            info.open_connections,
            info.total_connections,
            render::size(info.total_outbound_data),
            render::size(info.total_inbound_data),
        );
        if info.failed_connections > 0 {
            line += &format!(", {} refused by the destination", info.failed_connections);
        }
    }
    line
}

fn cmd_monitor(args: &ListArgs) -> anyhow::Result<Outcome> {
    let format = args.output.format()?;
    let as_json = !matches!(format, Format::Human);
    let mut client = client()?;
    let sessions = list(&mut client, &selection(args)?)?;
    let Some(newest) = sessions.iter().max_by_key(|s| s.creation_time) else {
        bail!("no forwarding sessions to monitor");
    };
    let identifier = newest.identifier.clone();
    let only = Selection::Specifications(vec![identifier.clone()]);
    if !as_json {
        if !newest.spec.name.is_empty() {
            println!("Name: {}", newest.spec.name);
        }
        println!("Identifier: {identifier}");
    }
    let mut stdout = std::io::stdout();
    let mut previous = None;
    loop {
        let Some(current) = list(&mut client, &only)?.pop() else {
            if !as_json {
                println!();
            }
            bail!("session {identifier} is gone");
        };
        if previous.as_ref() != Some(&current) {
            if let Format::Template(template) = &format {
                let array = serde_json::Value::Array(vec![json::forward(&current)]);
                write!(stdout, "{}", template.render(&array)?)?;
            } else if as_json {
                writeln!(stdout, "{}", json::forward(&current))?;
            } else {
                let line = status(&current).replace('\n', ": ");
                write!(stdout, "\r\x1b[2K{line}")?;
            }
            stdout.flush()?;
            previous = Some(current);
        }
        // Counters change without a state change: poll.
        std::thread::sleep(Duration::from_millis(250));
    }
}

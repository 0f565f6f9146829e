//! `sync list` and `sync monitor`.

use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use mutagen_daemon::protocol::{EndpointInfo, Request, Response, Selection, SessionInfo};
use mutagen_reconcile::Problem;

use super::lifecycle::client;
use crate::template::Template;
use crate::{Outcome, json, render};

const DELIMITER: &str =
    "--------------------------------------------------------------------------------";
/// At most this many conflicts or problems are printed per list.
const SHOWN: usize = 10;

/// How to print sessions.
#[derive(Debug, Args)]
pub struct OutputArgs {
    /// Show labels, configuration and every problem
    #[arg(short, long)]
    pub(crate) long: bool,
    /// Print JSON (list: an array of sessions; monitor: one object per line per change)
    #[arg(long, conflicts_with_all = ["template", "template_file"])]
    json: bool,
    /// Print through a Go text/template over the array of sessions ('{{ json . }}',
    /// '{{ range . }}{{ .name }} {{ .status }}{{ "\n" }}{{ end }}'); a newline is added
    #[arg(long, value_name = "TEMPLATE", conflicts_with = "template_file")]
    template: Option<String>,
    /// Read the template from a file (printed without an added newline)
    #[arg(long, value_name = "FILE")]
    template_file: Option<std::path::PathBuf>,
}

/// How sessions are printed.
#[derive(Debug)]
pub(crate) enum Format {
    /// Described for people.
    Human,
    /// As JSON (`--json`, or the template `{{ json . }}`).
    Json,
    /// Through a template.
    Template(Template),
}

impl OutputArgs {
    pub(crate) fn format(&self) -> anyhow::Result<Format> {
        let text = match (&self.template, &self.template_file) {
            (Some(template), _) => format!("{template}\n"),
            (None, Some(path)) => std::fs::read_to_string(path)
                .with_context(|| format!("unable to read the template file {}", path.display()))?,
            (None, None) => return Ok(if self.json { Format::Json } else { Format::Human }),
        };
        let compact: String = text.split_whitespace().collect();
        if compact == "{{json.}}" && self.template.is_some() {
            return Ok(Format::Json);
        }
        Ok(Format::Template(Template::parse(&text)?))
    }
}

/// List sessions (all of them unless some are selected).
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Session names or identifiers
    sessions: Vec<String>,
    /// Select sessions by label
    #[arg(long, value_name = "SELECTOR")]
    label_selector: Option<String>,
    #[command(flatten)]
    pub(crate) output: OutputArgs,
}

/// Show a live status line for the newest matching session.
#[derive(Debug, Args)]
pub struct MonitorArgs {
    #[command(flatten)]
    list: ListArgs,
}

/// The sessions a listing names: all of them unless some are named or selected by label.
pub(crate) fn selection(args: &ListArgs) -> anyhow::Result<Selection> {
    match (&args.label_selector, args.sessions.is_empty()) {
        (Some(_), false) => bail!("use either session names or identifiers or --label-selector"),
        (Some(selector), true) => {
            mutagen_session::Selector::parse(selector)?;
            Ok(Selection::LabelSelector(selector.clone()))
        }
        (None, false) => Ok(Selection::Specifications(args.sessions.clone())),
        (None, true) => Ok(Selection::All),
    }
}

pub(crate) fn list(
    client: &mut mutagen_daemon::Client,
    selection: &Selection,
    since: u64,
) -> anyhow::Result<(u64, Vec<SessionInfo>)> {
    match client.call(&Request::List { selection: selection.clone(), since })? {
        Response::List { index, sessions } => Ok((index, sessions)),
        other => bail!("unexpected answer from the daemon: {other:?}"),
    }
}

/// Runs `sync list`.
pub fn cmd_list(args: ListArgs) -> anyhow::Result<Outcome> {
    let format = args.output.format()?;
    let selection = selection(&args)?;
    let (_, sessions) = list(&mut client()?, &selection, 0)?;
    print_sessions(&sessions, &format, args.output.long, "synchronization", json::session, describe)
}

/// Prints sessions as a JSON array, through a template, or described one by one between
/// delimiters.
pub(crate) fn print_sessions<T>(
    sessions: &[T],
    format: &Format,
    long: bool,
    kind: &str,
    to_json: fn(&T) -> serde_json::Value,
    describe: fn(&T, bool) -> String,
) -> anyhow::Result<Outcome> {
    let array = || serde_json::Value::Array(sessions.iter().map(to_json).collect());
    match format {
        Format::Json => {
            println!("{}", array());
            return Ok(Outcome::Success);
        }
        Format::Template(template) => {
            print!("{}", template.render(&array())?);
            std::io::stdout().flush()?;
            return Ok(Outcome::Success);
        }
        Format::Human => {}
    }
    if sessions.is_empty() {
        println!("No {kind} sessions found");
        return Ok(Outcome::Success);
    }
    for session in sessions {
        println!("{DELIMITER}");
        print!("{}", describe(session, long));
    }
    println!("{DELIMITER}");
    Ok(Outcome::Success)
}

/// `Yes` or `No`.
pub(crate) fn yes(value: bool) -> &'static str {
    if value { "Yes" } else { "No" }
}

fn problems(out: &mut String, title: &str, problems: &[Problem], long: bool) {
    if problems.is_empty() {
        return;
    }
    if !long {
        out.push_str(&format!("\t{title}: {}\n", problems.len()));
        return;
    }
    out.push_str(&format!("\t{title}:\n"));
    for problem in problems.iter().take(SHOWN) {
        out.push_str(&format!("\t\t{}: {}\n", render::path(&problem.path), problem.error));
    }
    if problems.len() > SHOWN {
        out.push_str(&format!("\t\t...+{} more...\n", problems.len() - SHOWN));
    }
}

fn endpoint(
    out: &mut String,
    title: &str,
    endpoint: &EndpointInfo,
    configuration: &mutagen_session::Configuration,
    side: mutagen_core::Side,
    long: bool,
) {
    out.push_str(&format!("{title}:\n\tURL: {}\n", endpoint.url));
    let own = configuration.endpoint(side);
    if long {
        for (name, value) in &endpoint.environment {
            out.push_str(&format!("\t\t{name}={value}\n"));
        }
        out.push_str(&format!("\tConfiguration:\n\t\tWatch mode: {}\n", own.watch_mode));
        if own.watch_mode != mutagen_session::WatchMode::NoWatch {
            out.push_str(&format!(
                "\t\tWatch polling interval: {} seconds\n",
                own.watch_polling_interval
            ));
        }
        out.push_str(&format!(
            "\t\tStage mode: {}\n\t\tProbe mode: {}\n\t\tScan mode: {}\n",
            own.stage_mode, own.probe_mode, own.scan_mode
        ));
        let bits = |bits: Option<u32>, default: u32| match bits {
            Some(bits) => format!("{bits:04o}"),
            None => format!("Default ({default:04o})"),
        };
        let account = |spec: &Option<String>| spec.clone().unwrap_or_else(|| "Default".to_owned());
        out.push_str(&format!(
            "\t\tFile mode: {}\n\t\tDirectory mode: {}\n\t\tDefault file/directory owner: {}\n\t\tDefault file/directory group: {}\n",
            bits(own.ownership.file_mode, mutagen_endpoint::transition::DEFAULT_FILE_MODE),
            bits(own.ownership.directory_mode, mutagen_endpoint::transition::DEFAULT_DIRECTORY_MODE),
            account(&own.ownership.owner),
            account(&own.ownership.group),
        ));
        if !matches!(
            mutagen_session::url::Url::stored(&endpoint.url),
            Ok(mutagen_session::url::Url::Local(_))
        ) {
            out.push_str(&format!("\t\tCompression: {}\n", own.compression));
        }
    }
    out.push_str(&format!("\tConnected: {}\n", yes(endpoint.connected)));
    if long {
        out.push_str(&format!("\tWatching: {}\n", watching(endpoint, &own)));
    }
    let endpoint = &endpoint.state;
    if endpoint.scanned {
        out.push_str(&format!(
            "\tSynchronizable contents:\n\t\t{}\n\t\t{} ({})\n\t\t{}\n",
            render::count(endpoint.directories, "directory", "directories"),
            render::count(endpoint.files, "file", "files"),
            render::size(endpoint.total_file_size),
            render::count(endpoint.symbolic_links, "symbolic link", "symbolic links"),
        ));
    }
    problems(out, "Scan problems", &endpoint.scan_problems, long);
    problems(out, "Transition problems", &endpoint.transition_problems, long);
}

/// Describes how changes on an endpoint are found.
pub fn watching(
    endpoint: &EndpointInfo,
    configuration: &mutagen_session::EndpointConfiguration,
) -> String {
    let interval = configuration.watch_polling_interval;
    match (configuration.watch_mode, &endpoint.watch_problem) {
        (mutagen_session::WatchMode::NoWatch, _) => "no (changes are found on flush)".to_owned(),
        (mutagen_session::WatchMode::ForcePoll, _) => {
            format!("polling (full rescans every {interval} s)")
        }
        (mutagen_session::WatchMode::Portable, None) => "native (inotify)".to_owned(),
        (mutagen_session::WatchMode::Portable, Some(problem)) => problem.clone(),
    }
}

/// Renders one session in upstream's layout.
pub fn describe(session: &SessionInfo, long: bool) -> String {
    let mut out = String::new();
    if !session.name.is_empty() {
        out.push_str(&format!("Name: {}\n", session.name));
    }
    out.push_str(&format!("Identifier: {}\n", session.identifier));
    if long {
        if session.labels.is_empty() {
            out.push_str("Labels: None\n");
        } else {
            out.push_str("Labels:\n");
            for (key, value) in &session.labels {
                let value = if value.is_empty() { "<empty>" } else { value };
                out.push_str(&format!("\t{key}: {value}\n"));
            }
        }
        let configuration = &session.configuration;
        out.push_str(&format!(
            "Configuration:\n\tSynchronization mode: {}\n\tSymbolic link mode: {}\n",
            configuration.mode, configuration.symlink_mode
        ));
        if configuration.ignores.is_empty() {
            out.push_str("\tIgnores: None\n");
        } else {
            out.push_str("\tIgnores:\n");
            for ignore in &configuration.ignores {
                out.push_str(&format!("\t\t{ignore}\n"));
            }
        }
        out.push_str(&format!(
            "\tIgnore VCS mode: {}\n",
            if configuration.ignore_vcs { "Ignore" } else { "Propagate" }
        ));
        out.push_str(&format!("\tIgnore syntax: {}\n", configuration.ignore_syntax));
        out.push_str(&format!("\tPermissions mode: {}\n", configuration.permissions_mode));
        let limit = |value: u64, text: String| {
            if value == 0 { "Default (no limit)".to_owned() } else { text }
        };
        out.push_str(&format!(
            "\tMaximum allowed entry count: {}\n\tMaximum staging file size: {}\n",
            limit(configuration.max_entry_count, configuration.max_entry_count.to_string()),
            limit(
                configuration.max_staging_file_size,
                render::size(configuration.max_staging_file_size)
            ),
        ));
        out.push_str(&format!(
            "\tIgnore VCS-ignored files: {}\n",
            yes(configuration.ignore_vcs_ignored)
        ));
        let allowed: Vec<&str> = [
            (configuration.allow_root_emptying, "root emptying"),
            (configuration.allow_root_deletion, "root deletion"),
        ]
        .into_iter()
        .filter_map(|(allowed, what)| allowed.then_some(what))
        .collect();
        if !allowed.is_empty() {
            out.push_str(&format!("\tAllowed (not halting): {}\n", allowed.join(", ")));
        }
        out.push_str(&format!("Successful cycles: {}\n", session.successful_cycles));
    }
    let configuration = &session.configuration;
    endpoint(&mut out, "Alpha", &session.alpha, configuration, mutagen_core::Side::Alpha, long);
    endpoint(&mut out, "Beta", &session.beta, configuration, mutagen_core::Side::Beta, long);
    if !session.conflicts.is_empty() {
        out.push_str(&format!("Conflicts: {}\n", session.conflicts.len()));
        for conflict in session.conflicts.iter().take(SHOWN) {
            for line in render::conflict(conflict) {
                out.push_str(&format!("\t{line}\n"));
            }
        }
        if session.conflicts.len() > SHOWN {
            out.push_str(&format!("\t...+{} more...\n", session.conflicts.len() - SHOWN));
        }
    }
    if let Some(error) = &session.last_error {
        out.push_str(&format!("Last error: {error}\n"));
    }
    if session.paused {
        out.push_str("Status: [Paused]\n");
    } else {
        let problems = session.alpha.state.transition_problems.len()
            + session.beta.state.transition_problems.len();
        if session.status == mutagen_daemon::protocol::Status::WaitingForRescan && problems > 0 {
            let noun = if problems == 1 { "transition problem" } else { "transition problems" };
            out.push_str(&format!(
                "Status: {} ({problems} {noun} again; retried after a backoff or a change)\n",
                session.status.description()
            ));
        } else {
            out.push_str(&format!("Status: {}\n", session.status.description()));
        }
        if let Some((_, progress)) = &session.staging {
            out.push_str(&format!(
                "Staging progress: {}/{} - {}\nCurrent file: {}\n",
                progress.received_files,
                progress.expected_files,
                render::size(progress.received_bytes),
                render::path(&progress.path)
            ));
        }
    }
    out
}

/// The single status line of `monitor`.
fn status_line(session: &SessionInfo) -> String {
    if session.paused {
        return "[Paused]".to_owned();
    }
    let mut line = String::new();
    if !session.conflicts.is_empty() {
        line.push_str("[C] ");
    }
    let problems = [&session.alpha, &session.beta]
        .iter()
        .any(|e| !e.state.scan_problems.is_empty() || !e.state.transition_problems.is_empty());
    if problems {
        line.push_str("[!] ");
    }
    if session.last_error.is_some() {
        line.push_str("[X] ");
    }
    match &session.staging {
        Some((side, progress)) => {
            let arrow = if *side == mutagen_endpoint::Side::Alpha { "[←]" } else { "[→]" };
            let total = progress.expected_files.max(1);
            let done = progress.received_files.min(total);
            let width = 20;
            let filled = (done * width / total) as usize;
            let bar = format!("{}{}", "#".repeat(filled), "-".repeat(width as usize - filled));
            let name = progress.path.rsplit('/').next().unwrap_or_default();
            line.push_str(&format!(
                "{arrow} [{bar}] {done}/{total} - {} - {name}",
                render::size(progress.received_bytes)
            ));
        }
        None => line.push_str(session.status.description()),
    }
    line
}

/// Runs `sync monitor`.
pub fn cmd_monitor(args: MonitorArgs) -> anyhow::Result<Outcome> {
    let format = args.list.output.format()?;
    let as_json = !matches!(format, Format::Human);
    let selection = selection(&args.list)?;
    let mut client = client()?;
    let (mut index, sessions) = list(&mut client, &selection, 0)?;
    let Some(newest) = sessions.iter().max_by_key(|s| s.creation_time) else {
        bail!("no synchronization sessions to monitor");
    };
    let identifier = newest.identifier.clone();
    let only = Selection::Specifications(vec![identifier.clone()]);
    if !as_json {
        if !newest.name.is_empty() {
            println!("Name: {}", newest.name);
        }
        println!("Identifier: {identifier}");
    }
    let mut current = newest.clone();
    let mut stdout = std::io::stdout();
    loop {
        if let Format::Template(template) = &format {
            let array = serde_json::Value::Array(vec![json::session(&current)]);
            write!(stdout, "{}", template.render(&array)?)?;
        } else if as_json {
            writeln!(stdout, "{}", json::session(&current))?;
        } else {
            let mut line = status_line(&current);
            line.truncate(line.char_indices().nth(79).map_or(line.len(), |(i, _)| i));
            write!(stdout, "\r\x1b[2K{line}")?;
        }
        stdout.flush()?;
        let asked = Instant::now();
        let (next, mut sessions) = match list(&mut client, &only, index) {
            Ok(answer) => answer,
            Err(error) => {
                if !as_json {
                    println!();
                }
                return Err(error.context(format!("session {identifier} is gone")));
            }
        };
        index = next;
        match sessions.pop() {
            Some(session) => current = session,
            None => bail!("session {identifier} is gone"),
        }
        // At most 20 updates a second.
        let elapsed = asked.elapsed();
        if elapsed < Duration::from_millis(50) {
            std::thread::sleep(Duration::from_millis(50) - elapsed);
        }
    }
}

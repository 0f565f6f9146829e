//! `sync create`, and the verbs that act on a selection of sessions.

use std::collections::BTreeMap;

use anyhow::{Context, bail};
use clap::Args;
use mutagen_core::Side;
use mutagen_core::{Compression, StageMode, SymlinkMode};
use mutagen_daemon::protocol::{Request, Response, Selection};
use mutagen_daemon::{Client, DataDirectory};
use mutagen_reconcile::Mode;
use mutagen_session::url::{self, Url};
use mutagen_session::{Configuration, Environment, Selector, SessionSpec, WatchMode, parse_label};

use super::Verb;
use crate::Outcome;

/// Create a session between two endpoints, hosted by the daemon (started if needed).
///
/// Endpoints are local paths today. Prints `Created session <identifier>`.
#[derive(Debug, Args)]
pub struct CreateArgs {
    /// The alpha endpoint
    alpha: String,
    /// The beta endpoint
    beta: String,
    /// A name for the session (a letter, then letters, digits and '-')
    #[arg(short, long, default_value = "")]
    name: String,
    /// A label, key=value or key (repeatable)
    #[arg(short, long = "label", value_name = "LABEL")]
    labels: Vec<String>,
    /// Create the session paused
    #[arg(short, long)]
    paused: bool,
    /// Synchronization mode: two-way-safe, two-way-resolved, one-way-safe, one-way-replica
    #[arg(short, long, default_value = "two-way-safe")]
    mode: Mode,
    /// Ignore paths matching this pattern (repeatable)
    #[arg(short, long = "ignore", value_name = "PATTERN")]
    ignores: Vec<String>,
    /// Ignore version-control directories
    #[arg(long)]
    ignore_vcs: bool,
    /// Symbolic link mode: portable, posix-raw, ignore
    #[arg(long, default_value = "portable")]
    symlink_mode: SymlinkMode,
    /// Watch mode: portable, force-poll, no-watch
    #[arg(long, default_value = "portable")]
    watch_mode: WatchMode,
    /// Seconds between rescans in portable and force-poll watch modes
    #[arg(long, default_value_t = 10, value_name = "SECONDS")]
    watch_polling_interval: u32,
    /// Compression of the link to a remote agent: zstd, none
    #[arg(long, default_value = "zstd")]
    compression: Compression,
    /// Propagate one root being emptied instead of halting (for build output that tools wipe)
    #[arg(long)]
    allow_root_emptying: bool,
    /// Propagate a root's deletion instead of halting
    #[arg(long)]
    allow_root_deletion: bool,
    /// Where received files are staged: auto (the data directory, or next to the root when
    /// that is another file system), mutagen (the data directory), neighboring, internal
    #[arg(long, default_value = "auto")]
    stage_mode: StageMode,
}

/// Which sessions: names or identifiers, `--all`, or `--label-selector`.
#[derive(Debug, Args)]
pub struct SelectionArgs {
    /// Session names or identifiers
    sessions: Vec<String>,
    /// Select every session
    #[arg(short, long)]
    all: bool,
    /// Select sessions by label (k=v, k!=v, k in (a,b), k notin (a,b), k, !k; comma = and)
    #[arg(long, value_name = "SELECTOR")]
    label_selector: Option<String>,
}

impl SelectionArgs {
    /// Returns the selection; exactly one mechanism must be used (none means all when
    /// `default_all`).
    pub fn selection(&self, default_all: bool) -> anyhow::Result<Selection> {
        let used = usize::from(self.all)
            + usize::from(!self.sessions.is_empty())
            + usize::from(self.label_selector.is_some());
        if used > 1 {
            bail!("use only one of session names or identifiers, --all and --label-selector");
        }
        if let Some(selector) = &self.label_selector {
            Selector::parse(selector)?;
            return Ok(Selection::LabelSelector(selector.clone()));
        }
        if !self.sessions.is_empty() {
            if self.sessions.iter().any(String::is_empty) {
                bail!("empty session specification");
            }
            return Ok(Selection::Specifications(self.sessions.clone()));
        }
        if self.all || default_all {
            return Ok(Selection::All);
        }
        bail!("no sessions selected: name them, or use --all or --label-selector")
    }
}

/// Run a full cycle now.
#[derive(Debug, Args)]
pub struct FlushArgs {
    #[command(flatten)]
    selection: SelectionArgs,
    /// Return once the flush is requested, without waiting for the cycle
    #[arg(long)]
    skip_wait: bool,
}

/// Connects to the daemon, starting it if needed.
pub fn client() -> anyhow::Result<Client> {
    Client::connect_or_start(&DataDirectory::from_environment()?)
}

/// Sends a request whose connections may ask the user (on this terminal when `prompt`).
fn call_prompting(request: &Request, prompt: bool) -> anyhow::Result<Response> {
    match prompt {
        true => client()?.call_asking(request, &mut crate::prompt::ask),
        false => client()?.call(request),
    }
}

/// Runs `sync create`.
pub fn cmd_create(args: CreateArgs) -> anyhow::Result<Outcome> {
    let cwd = std::env::current_dir().context("unable to determine the working directory")?;
    let alpha = Url::parse(&args.alpha, &cwd)?;
    let beta = Url::parse(&args.beta, &cwd)?;
    let data = DataDirectory::from_environment()?;
    match (&alpha, &beta) {
        (Url::Local(alpha), Url::Local(beta)) => url::check_disjoint(alpha, beta, data.root()),
        (Url::Local(root), _) | (_, Url::Local(root)) => url::check_data_outside(root, data.root()),
        _ => Ok(()),
    }?;
    for (parsed, url) in [(&alpha, &args.alpha), (&beta, &args.beta)] {
        if let Url::Local(path) = parsed
            && path.to_str().is_none()
        {
            bail!("invalid endpoint url {url:?}: the path is not valid UTF-8");
        }
    }
    let mut labels = BTreeMap::new();
    for label in &args.labels {
        let (key, value) = parse_label(label)?;
        labels.insert(key, value);
    }
    let spec = SessionSpec {
        alpha: alpha.to_text(),
        beta: beta.to_text(),
        name: args.name,
        labels,
        paused: args.paused,
        configuration: Configuration {
            mode: args.mode,
            ignores: args.ignores,
            ignore_vcs: args.ignore_vcs,
            symlink_mode: args.symlink_mode,
            watch_mode: args.watch_mode,
            watch_polling_interval: args.watch_polling_interval,
            compression: args.compression,
            allow_root_emptying: args.allow_root_emptying,
            allow_root_deletion: args.allow_root_deletion,
            stage_mode: args.stage_mode,
        },
        alpha_environment: transport_environment(&alpha, Side::Alpha)?,
        beta_environment: transport_environment(&beta, Side::Beta)?,
    };
    // Everything checkable here is checked before a daemon is started for nothing.
    spec.validate()?;
    // With a terminal, ssh's questions (passwords, passphrases, host keys) are asked here;
    // without one, connections never prompt and fail with ssh's message instead.
    let prompt = crate::prompt::interactive();
    match call_prompting(&Request::Create { spec, prompt }, prompt)? {
        Response::Created { identifier } => println!("Created session {identifier}"),
        other => bail!("unexpected answer from the daemon: {other:?}"),
    }
    Ok(Outcome::Success)
}

/// The variables that choose the Docker engine, captured for a Docker endpoint when the
/// session is created (a daemon started later, with another environment, must reach the same
/// engine). `MUTAGEN_ALPHA_<VAR>` and `MUTAGEN_BETA_<VAR>` override `<VAR>` for one side.
fn transport_environment(url: &Url, side: Side) -> anyhow::Result<Environment> {
    if !matches!(url, Url::Docker(_)) {
        return Ok(Environment::new());
    }
    let prefix = format!("MUTAGEN_{}_", side.to_string().to_ascii_uppercase());
    mutagen_transports::docker::capture(&prefix, &|name| std::env::var(name).ok()).map_err(|e| {
        anyhow::anyhow!(
            "unable to capture the docker environment of {url}: {e}",
            url = url.to_text()
        )
    })
}

/// Runs `sync flush`.
pub fn cmd_flush(args: FlushArgs) -> anyhow::Result<Outcome> {
    let selection = args.selection.selection(false)?;
    client()?.call(&Request::Flush { selection, skip_wait: args.skip_wait })?;
    Ok(Outcome::Success)
}

/// Runs `sync pause|resume|reset|terminate`.
pub fn cmd_simple(args: SelectionArgs, verb: Verb) -> anyhow::Result<Outcome> {
    let selection = args.selection(false)?;
    let request = match verb {
        Verb::Pause => Request::Pause(selection),
        Verb::Resume => {
            let prompt = crate::prompt::interactive();
            call_prompting(&Request::Resume { selection, prompt }, prompt)?;
            return Ok(Outcome::Success);
        }
        Verb::Reset => Request::Reset(selection),
        Verb::Terminate => Request::Terminate(selection),
    };
    client()?.call(&request)?;
    Ok(Outcome::Success)
}

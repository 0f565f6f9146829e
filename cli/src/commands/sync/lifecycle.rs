//! `sync create`, and the verbs that act on a selection of sessions.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::Args;
use mutagen_config::settings::{
    CompressionSettings, IgnoreSettings, SymlinkSettings, WatchSettings,
};
use mutagen_config::settings::{EndpointPermissionsSettings, PermissionsSettings};
use mutagen_config::{EndpointSettings, SyncSettings};
use mutagen_core::Side;
use mutagen_core::{
    Compression, IgnoreSyntax, PermissionsMode, ProbeMode, ScanMode, StageMode, SymlinkMode,
};
use mutagen_daemon::protocol::{Request, Response, Selection};
use mutagen_daemon::{Client, DataDirectory};
use mutagen_reconcile::Mode;
use mutagen_session::url::{self, Url};
use mutagen_session::{Configuration, Environment, Selector, SessionSpec, WatchMode, parse_label};

use super::Verb;
use crate::Outcome;

/// Create a session between two endpoints, hosted by the daemon (started if needed).
///
/// Endpoints are local paths, `[user@]host[:port]:path` over SSH, or
/// `docker://[user@]container/path`. Settings come from ~/.mutagen.yml, then each `-c` file,
/// then the flags. Prints `Created session <identifier>`.
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
    #[command(flatten)]
    settings: SyncFlags,
}

/// The settings flags give, over the configuration files' (a flag left out leaves the files'
/// value, or the default).
#[derive(Debug, Args)]
pub struct SyncFlags {
    /// Do not read the global configuration file (~/.mutagen.yml)
    #[arg(long)]
    no_global_configuration: bool,
    /// A YAML file whose `sync: defaults:` apply, after the global file's (repeatable: later
    /// files win, ignore lists add up)
    #[arg(short = 'c', long = "configuration-file", value_name = "FILE")]
    configuration_files: Vec<PathBuf>,
    /// Synchronization mode: two-way-safe (the default), two-way-resolved, one-way-safe,
    /// one-way-replica
    #[arg(short, long)]
    mode: Option<Mode>,
    /// Ignore paths matching this pattern (repeatable; added after the files' patterns)
    #[arg(short, long = "ignore", value_name = "PATTERN")]
    ignores: Vec<String>,
    /// How ignore patterns are read: mutagen (the default) or docker (.dockerignore rules:
    /// anchored at the root, negations may re-include below an excluded directory)
    #[arg(long, value_name = "SYNTAX")]
    ignore_syntax: Option<IgnoreSyntax>,
    /// Also ignore what git ignores in each root: its .gitignore files, .git/info/exclude and
    /// the global excludes file
    #[arg(long)]
    ignore_vcs_ignored: bool,
    /// Ignore version-control directories
    #[arg(long, conflicts_with = "no_ignore_vcs")]
    ignore_vcs: bool,
    /// Propagate version-control directories (the default; overrides a file's `vcs: true`)
    #[arg(long)]
    no_ignore_vcs: bool,
    /// Symbolic link mode: portable (the default), posix-raw, ignore
    #[arg(long)]
    symlink_mode: Option<SymlinkMode>,
    /// Watch mode: portable (the default), force-poll, no-watch
    #[arg(long, value_name = "MODE")]
    watch_mode: Option<WatchMode>,
    /// Alpha's own watch mode
    #[arg(long, value_name = "MODE")]
    watch_mode_alpha: Option<WatchMode>,
    /// Beta's own watch mode
    #[arg(long, value_name = "MODE")]
    watch_mode_beta: Option<WatchMode>,
    /// Seconds between rescans in portable and force-poll watch modes (default 10)
    #[arg(long, value_name = "SECONDS")]
    watch_polling_interval: Option<u32>,
    /// Alpha's own polling interval
    #[arg(long, value_name = "SECONDS")]
    watch_polling_interval_alpha: Option<u32>,
    /// Beta's own polling interval
    #[arg(long, value_name = "SECONDS")]
    watch_polling_interval_beta: Option<u32>,
    /// Compression of the link to a remote agent: zstd (the default), none
    #[arg(long, value_name = "ALGORITHM")]
    compression: Option<Compression>,
    /// Compression of the link to alpha's agent
    #[arg(long, value_name = "ALGORITHM")]
    compression_alpha: Option<Compression>,
    /// Compression of the link to beta's agent
    #[arg(long, value_name = "ALGORITHM")]
    compression_beta: Option<Compression>,
    /// The most synchronizable entries a root may hold (0, the default: no limit); over it,
    /// nothing is synchronized and the session says so
    #[arg(long, value_name = "COUNT")]
    max_entry_count: Option<u64>,
    /// The largest file that is staged, such as 500MiB or 1GB (0, the default: no limit);
    /// larger files are reported and left out
    #[arg(long, value_name = "SIZE")]
    max_staging_file_size: Option<String>,
    /// How endpoints learn their file system's behaviour: probe (the default), assume
    #[arg(long, value_name = "MODE")]
    probe_mode: Option<ProbeMode>,
    /// Alpha's own probe mode
    #[arg(long, value_name = "MODE")]
    probe_mode_alpha: Option<ProbeMode>,
    /// Beta's own probe mode
    #[arg(long, value_name = "MODE")]
    probe_mode_beta: Option<ProbeMode>,
    /// How endpoints rescan: accelerated (the default: only what the watcher reported), full
    /// (the whole tree every cycle)
    #[arg(long, value_name = "MODE")]
    scan_mode: Option<ScanMode>,
    /// Alpha's own scan mode
    #[arg(long, value_name = "MODE")]
    scan_mode_alpha: Option<ScanMode>,
    /// Beta's own scan mode
    #[arg(long, value_name = "MODE")]
    scan_mode_beta: Option<ScanMode>,
    /// What is synchronized of permissions: portable (the default: executability), manual
    /// (nothing; the default modes apply as given), posix (every permission bit of files
    /// and directories, and setgid on directories, both ways)
    #[arg(long, value_name = "MODE")]
    permissions_mode: Option<PermissionsMode>,
    /// Permission bits of new files, in octal (default 644; in portable mode without execute bits, which follow each file)
    #[arg(long, value_name = "MODE")]
    default_file_mode: Option<String>,
    /// Alpha's own permission bits of new files
    #[arg(long, value_name = "MODE")]
    default_file_mode_alpha: Option<String>,
    /// Beta's own permission bits of new files
    #[arg(long, value_name = "MODE")]
    default_file_mode_beta: Option<String>,
    /// Permission bits of new directories, in octal (default 755)
    #[arg(long, value_name = "MODE")]
    default_directory_mode: Option<String>,
    /// Alpha's own permission bits of new directories
    #[arg(long, value_name = "MODE")]
    default_directory_mode_alpha: Option<String>,
    /// Beta's own permission bits of new directories
    #[arg(long, value_name = "MODE")]
    default_directory_mode_beta: Option<String>,
    /// Owner of what is created: id:N, a number or a user name
    #[arg(long, value_name = "USER")]
    default_owner: Option<String>,
    /// Alpha's own owner of what is created
    #[arg(long, value_name = "USER")]
    default_owner_alpha: Option<String>,
    /// Beta's own owner of what is created
    #[arg(long, value_name = "USER")]
    default_owner_beta: Option<String>,
    /// Group of what is created: id:N, a number or a group name
    #[arg(long, value_name = "GROUP")]
    default_group: Option<String>,
    /// Alpha's own group of what is created
    #[arg(long, value_name = "GROUP")]
    default_group_alpha: Option<String>,
    /// Beta's own group of what is created
    #[arg(long, value_name = "GROUP")]
    default_group_beta: Option<String>,
    /// Propagate one root being emptied instead of halting (for build output that tools wipe)
    #[arg(long)]
    allow_root_emptying: bool,
    /// Propagate a root's deletion instead of halting
    #[arg(long)]
    allow_root_deletion: bool,
    /// Where received files are staged: auto (the default: the data directory, or next to the
    /// root when that is another file system), mutagen (the data directory), neighboring,
    /// internal
    #[arg(long, value_name = "MODE")]
    stage_mode: Option<StageMode>,
    /// Where alpha stages the files it receives
    #[arg(long, value_name = "MODE")]
    stage_mode_alpha: Option<StageMode>,
    /// Where beta stages the files it receives
    #[arg(long, value_name = "MODE")]
    stage_mode_beta: Option<StageMode>,
}

impl SyncFlags {
    /// The configuration files' settings with the flags' laid over them.
    fn settings(self) -> anyhow::Result<SyncSettings> {
        let (mut settings, _) =
            mutagen_config::load_files(!self.no_global_configuration, &self.configuration_files)?;
        let octal = |text: &Option<String>, flag: &str| {
            text.as_deref()
                .map(|text| {
                    let digits = text.strip_prefix("0o").unwrap_or(text);
                    u32::from_str_radix(digits, 8).map_err(|_| {
                        anyhow::anyhow!("invalid --{flag} {text:?}: expected octal permission bits")
                    })
                })
                .transpose()
        };
        let permissions = |file: &Option<String>,
                           directory: &Option<String>,
                           owner,
                           group,
                           side| {
            anyhow::Ok(EndpointPermissionsSettings {
                default_file_mode: octal(file, &format!("default-file-mode{side}"))?,
                default_directory_mode: octal(directory, &format!("default-directory-mode{side}"))?,
                default_owner: owner,
                default_group: group,
            })
        };
        let session_permissions = permissions(
            &self.default_file_mode,
            &self.default_directory_mode,
            self.default_owner.clone(),
            self.default_group.clone(),
            "",
        )?;
        let endpoint = |mode,
                        polling_interval,
                        stage_mode,
                        algorithm,
                        (probe_mode, scan_mode),
                        permissions| {
            EndpointSettings {
                watch: WatchSettings { mode, polling_interval },
                stage_mode,
                compression: CompressionSettings { algorithm },
                probe_mode,
                scan_mode,
                permissions,
            }
        };
        let max_staging_file_size = self
            .max_staging_file_size
            .as_deref()
            .map(|text| {
                mutagen_core::parse_size(text)
                    .map_err(|e| anyhow::anyhow!("invalid --max-staging-file-size: {e}"))
            })
            .transpose()?;
        let vcs = match (self.ignore_vcs, self.no_ignore_vcs) {
            (true, _) => Some(true),
            (false, true) => Some(false),
            (false, false) => None,
        };
        settings.merge(SyncSettings {
            mode: self.mode,
            ignore: IgnoreSettings {
                syntax: self.ignore_syntax,
                paths: self.ignores,
                vcs,
                vcs_ignored: self.ignore_vcs_ignored.then_some(true),
            },
            symlink: SymlinkSettings { mode: self.symlink_mode },
            stage_mode: self.stage_mode,
            watch: WatchSettings {
                mode: self.watch_mode,
                polling_interval: self.watch_polling_interval,
            },
            compression: CompressionSettings { algorithm: self.compression },
            max_entry_count: self.max_entry_count,
            max_staging_file_size,
            probe_mode: self.probe_mode,
            scan_mode: self.scan_mode,
            permissions: PermissionsSettings {
                mode: self.permissions_mode,
                default_file_mode: session_permissions.default_file_mode,
                default_directory_mode: session_permissions.default_directory_mode,
                default_owner: session_permissions.default_owner,
                default_group: session_permissions.default_group,
            },
            allow_root_emptying: self.allow_root_emptying.then_some(true),
            allow_root_deletion: self.allow_root_deletion.then_some(true),
            configuration_alpha: endpoint(
                self.watch_mode_alpha,
                self.watch_polling_interval_alpha,
                self.stage_mode_alpha,
                self.compression_alpha,
                (self.probe_mode_alpha, self.scan_mode_alpha),
                permissions(
                    &self.default_file_mode_alpha,
                    &self.default_directory_mode_alpha,
                    self.default_owner_alpha.clone(),
                    self.default_group_alpha.clone(),
                    "-alpha",
                )?,
            ),
            configuration_beta: endpoint(
                self.watch_mode_beta,
                self.watch_polling_interval_beta,
                self.stage_mode_beta,
                self.compression_beta,
                (self.probe_mode_beta, self.scan_mode_beta),
                permissions(
                    &self.default_file_mode_beta,
                    &self.default_directory_mode_beta,
                    self.default_owner_beta.clone(),
                    self.default_group_beta.clone(),
                    "-beta",
                )?,
            ),
            ..SyncSettings::default()
        });
        Ok(settings)
    }
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
pub(crate) fn call_prompting(request: &Request, prompt: bool) -> anyhow::Result<Response> {
    match prompt {
        true => client()?.call_asking(request, &mut crate::prompt::ask),
        false => client()?.call(request),
    }
}

/// Runs `sync create`.
pub fn cmd_create(args: CreateArgs) -> anyhow::Result<Outcome> {
    let cwd = std::env::current_dir().context("unable to determine the working directory")?;
    let labels = parse_labels(&args.labels)?;
    let configuration = args.settings.settings()?.configuration();
    let spec =
        session_spec(&args.alpha, &args.beta, &cwd, args.name, labels, args.paused, configuration)?;
    let identifier = create(spec)?;
    println!("Created session {identifier}");
    Ok(Outcome::Success)
}

/// Parses `key=value` and `key` labels.
pub fn parse_labels(labels: &[String]) -> anyhow::Result<BTreeMap<String, String>> {
    let mut parsed = BTreeMap::new();
    for label in labels {
        let (key, value) = parse_label(label)?;
        parsed.insert(key, value);
    }
    Ok(parsed)
}

/// Builds and checks a session's spec (local paths are relative to `cwd`), with everything
/// that can be checked before a daemon is asked.
pub fn session_spec(
    alpha_text: &str,
    beta_text: &str,
    cwd: &Path,
    name: String,
    labels: BTreeMap<String, String>,
    paused: bool,
    configuration: Configuration,
) -> anyhow::Result<SessionSpec> {
    let alpha = Url::parse(alpha_text, cwd)?;
    let beta = Url::parse(beta_text, cwd)?;
    let data = DataDirectory::from_environment()?;
    match (&alpha, &beta) {
        (Url::Local(alpha), Url::Local(beta)) => url::check_disjoint(alpha, beta, data.root()),
        (Url::Local(root), _) | (_, Url::Local(root)) => url::check_data_outside(root, data.root()),
        _ => Ok(()),
    }?;
    for (parsed, url) in [(&alpha, alpha_text), (&beta, beta_text)] {
        if let Url::Local(path) = parsed
            && path.to_str().is_none()
        {
            bail!("invalid endpoint url {url:?}: the path is not valid UTF-8");
        }
    }
    let spec = SessionSpec {
        alpha: alpha.to_text(),
        beta: beta.to_text(),
        name,
        labels,
        paused,
        configuration: Box::new(configuration),
        alpha_environment: transport_environment(&alpha, Side::Alpha)?,
        beta_environment: transport_environment(&beta, Side::Beta)?,
    };
    spec.validate()?;
    Ok(spec)
}

/// Asks the daemon (started if needed) to create a session; returns its identifier.
pub fn create(spec: SessionSpec) -> anyhow::Result<String> {
    // With a terminal, ssh's questions (passwords, passphrases, host keys) are asked here;
    // without one, connections never prompt and fail with ssh's message instead.
    let prompt = crate::prompt::interactive();
    match call_prompting(&Request::Create { spec, prompt }, prompt)? {
        Response::Created { identifier } => Ok(identifier),
        other => bail!("unexpected answer from the daemon: {other:?}"),
    }
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

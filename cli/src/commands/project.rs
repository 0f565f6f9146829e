//! `mutagen project ...`: the sessions a project file (`mutagen.yml`) describes, started,
//! driven and terminated together.
//!
//! # The lock file
//! `<project file>.lock` is held (an exclusive `flock`) by every project command while it
//! runs, so two commands never act on one project at once. Its content is the running
//! project's identifier (`proj_…`), written before the first session is created and removed
//! with the last: empty (or absent) means the project is not running. Every session of a
//! project carries the label `io.mutagen.project=<identifier>`, which is how the commands
//! find them.
//!
//! # Invariants
//! - `start` checks every session's URLs and settings before it runs a hook or creates a
//!   session; when a hook before creation fails, nothing is created, and when a creation
//!   fails, the sessions already created are terminated and the lock is cleared again.
//! - A failing hook stops the command at that point, and the error names the hook.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use mutagen_config::{Project, load_files};
use mutagen_daemon::protocol::{ForwardInfo, Request, Selection, SessionInfo};

use super::forward;
use super::sync::lifecycle::{self, client};
use super::sync::list::{self as sync_list, print_sessions};
use crate::{Outcome, json};

/// The label that marks a project's sessions.
pub const PROJECT_LABEL: &str = "io.mutagen.project";

/// The `project` verbs.
#[derive(Debug, Subcommand)]
pub enum ProjectCommand {
    /// Create the project's sessions (running its beforeCreate and afterCreate hooks)
    Start(StartArgs),
    /// Run one of the project file's `commands`
    Run(RunArgs),
    /// List the project's sessions
    List(ProjectListArgs),
    /// Run a full synchronization cycle in each of the project's sessions, and wait for them
    Flush(ProjectFlushArgs),
    /// Pause the project's sessions
    Pause(FileArgs),
    /// Resume the project's sessions
    Resume(FileArgs),
    /// Reset the project's synchronization sessions
    Reset(FileArgs),
    /// Terminate the project's sessions
    Terminate(FileArgs),
}

/// Which project.
#[derive(Debug, Args)]
pub struct FileArgs {
    /// The project file [default: mutagen.yml in the working directory]; relative paths in it
    /// are relative to its directory
    #[arg(short = 'f', long = "project-file", value_name = "FILE")]
    project_file: Option<PathBuf>,
}

/// `project start`.
#[derive(Debug, Args)]
pub struct StartArgs {
    #[command(flatten)]
    file: FileArgs,
    /// Create the sessions paused
    #[arg(short, long)]
    paused: bool,
    /// Do not read the global configuration file (~/.mutagen.yml)
    #[arg(long)]
    no_global_configuration: bool,
}

/// `project run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    file: FileArgs,
    /// The command's name in the project file's `commands`
    command: String,
}

/// `project list`.
#[derive(Debug, Args)]
pub struct ProjectListArgs {
    #[command(flatten)]
    file: FileArgs,
    /// Show each session's configuration, problems and conflicts
    #[arg(short, long)]
    long: bool,
    /// Print the sessions as JSON
    #[arg(long)]
    json: bool,
}

/// `project flush`.
#[derive(Debug, Args)]
pub struct ProjectFlushArgs {
    #[command(flatten)]
    file: FileArgs,
    /// Return once the flushes are requested, without waiting for the cycles
    #[arg(long)]
    skip_wait: bool,
}

/// Runs a `project` verb.
pub fn run(command: ProjectCommand) -> anyhow::Result<Outcome> {
    match command {
        ProjectCommand::Start(args) => cmd_start(&args),
        ProjectCommand::Run(args) => cmd_run(&args),
        ProjectCommand::List(args) => cmd_list(&args),
        ProjectCommand::Flush(args) => {
            let (_, mut lock) = open(&args.file)?;
            let (sync, _) = running(&mut lock)?.members()?;
            if !sync.is_empty() {
                let selection = Selection::Specifications(sync);
                client()?.call(&Request::Flush { selection, skip_wait: args.skip_wait })?;
            }
            Ok(Outcome::Success)
        }
        ProjectCommand::Pause(args) => lifecycle_step(&args, Step::Pause),
        ProjectCommand::Resume(args) => lifecycle_step(&args, Step::Resume),
        ProjectCommand::Reset(args) => lifecycle_step(&args, Step::Reset),
        ProjectCommand::Terminate(args) => lifecycle_step(&args, Step::Terminate),
    }
}

/// A project file, read, with its directory.
struct Opened {
    path: PathBuf,
    directory: PathBuf,
    project: Project,
}

/// Reads the project file and takes its lock.
fn open(args: &FileArgs) -> anyhow::Result<(Opened, Lock)> {
    let path = args.project_file.clone().unwrap_or_else(|| PathBuf::from("mutagen.yml"));
    let project = Project::load(&path)?;
    let absolute = std::path::absolute(&path)
        .with_context(|| format!("unable to resolve the project file {}", path.display()))?;
    let directory = absolute.parent().map(Path::to_path_buf).unwrap_or_else(|| "/".into());
    let lock = Lock::acquire(&absolute)?;
    Ok((Opened { path, directory, project }, lock))
}

/// The project's lock file, held.
struct Lock {
    file: File,
    path: PathBuf,
}

impl Lock {
    fn acquire(project_file: &Path) -> anyhow::Result<Lock> {
        let mut name = project_file.file_name().unwrap_or_default().to_os_string();
        name.push(".lock");
        let path = project_file.with_file_name(name);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .with_context(|| format!("unable to open the project lock {}", path.display()))?;
        rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive).map_err(
            |_| {
                anyhow::anyhow!(
                    "another mutagen command is using this project (its lock {} is held)",
                    path.display()
                )
            },
        )?;
        Ok(Lock { file, path })
    }

    /// The running project's identifier, if it runs.
    fn identifier(&mut self) -> anyhow::Result<Option<String>> {
        let mut text = String::new();
        self.file.rewind()?;
        self.file
            .read_to_string(&mut text)
            .with_context(|| format!("unable to read the project lock {}", self.path.display()))?;
        let identifier = text.trim();
        if identifier.is_empty() {
            return Ok(None);
        }
        if !identifier.starts_with("proj_") || !mutagen_session::is_identifier(identifier) {
            bail!(
                "the project lock {} holds {identifier:?}, not a project identifier",
                self.path.display()
            );
        }
        Ok(Some(identifier.to_owned()))
    }

    /// Records the running project, durably.
    fn set(&mut self, identifier: &str) -> anyhow::Result<()> {
        let write = |file: &mut File| -> std::io::Result<()> {
            file.set_len(0)?;
            file.rewind()?;
            file.write_all(identifier.as_bytes())?;
            file.sync_all()
        };
        write(&mut self.file)
            .with_context(|| format!("unable to write the project lock {}", self.path.display()))
    }

    /// Records that the project is not running: the lock file goes.
    fn clear(&mut self) -> anyhow::Result<()> {
        self.file.set_len(0)?;
        std::fs::remove_file(&self.path)
            .with_context(|| format!("unable to remove the project lock {}", self.path.display()))
    }
}

/// A running project.
struct Running(String);

impl Running {
    /// The identifiers of the project's synchronization and forward sessions.
    fn members(&self) -> anyhow::Result<(Vec<String>, Vec<String>)> {
        let (sync, forward) = self.sessions()?;
        Ok((
            sync.into_iter().map(|session| session.identifier).collect(),
            forward.into_iter().map(|session| session.identifier).collect(),
        ))
    }

    /// The project's sessions.
    fn sessions(&self) -> anyhow::Result<(Vec<SessionInfo>, Vec<ForwardInfo>)> {
        let mut client = client()?;
        let mine = |labels: &mutagen_session::Labels| {
            labels.get(PROJECT_LABEL).is_some_and(|value| *value == self.0)
        };
        let (_, sync) = sync_list::list(&mut client, &Selection::All, 0)?;
        let forward = forward::list(&mut client, &Selection::All)?;
        Ok((
            sync.into_iter().filter(|session| mine(&session.labels)).collect(),
            forward.into_iter().filter(|session| mine(&session.spec.labels)).collect(),
        ))
    }
}

/// The project's identifier, or "project not running".
fn running(lock: &mut Lock) -> anyhow::Result<Running> {
    match lock.identifier()? {
        Some(identifier) => Ok(Running(identifier)),
        None => bail!("project not running (no sessions were started from this project file)"),
    }
}

/// Runs a hook's commands in the project's directory, in order; the first failure stops them.
fn hooks(name: &str, commands: &[String], directory: &Path) -> anyhow::Result<()> {
    for command in commands {
        let status = std::process::Command::new("sh")
            .arg("-c")
            .arg(command)
            .current_dir(directory)
            .status()
            .with_context(|| format!("unable to run the {name} hook {command:?}"))?;
        if !status.success() {
            bail!("the {name} hook {command:?} failed ({status})");
        }
    }
    Ok(())
}

fn cmd_start(args: &StartArgs) -> anyhow::Result<Outcome> {
    let (opened, mut lock) = open(&args.file)?;
    if let Some(identifier) = lock.identifier()? {
        bail!("project already running ({identifier}; `mutagen project terminate` ends it)");
    }
    let (sync_defaults, forward_defaults) = load_files(!args.no_global_configuration, &[])?;
    let identifier = mutagen_session::new_identifier("proj")?;
    let labels = std::collections::BTreeMap::from([(PROJECT_LABEL.to_owned(), identifier.clone())]);
    let project = &opened.project;
    let directory = &opened.directory;
    let file = opened.path.display();
    // Every session is checked before anything runs.
    let mut forwards = Vec::new();
    for entry in &project.forward {
        let mut settings = forward_defaults.clone();
        settings.merge(entry.settings.clone());
        let spec = forward::forward_spec(
            &entry.source,
            &entry.destination,
            directory,
            entry.name.clone(),
            labels.clone(),
            args.paused,
            settings.socket_options(),
        )
        .with_context(|| format!("invalid project file {file}: forward.{}", entry.name))?;
        forwards.push(spec);
    }
    let mut syncs = Vec::new();
    for entry in &project.sync {
        let mut settings = sync_defaults.clone();
        settings.merge(entry.settings.clone());
        let spec = lifecycle::session_spec(
            &entry.alpha,
            &entry.beta,
            directory,
            entry.name.clone(),
            labels.clone(),
            args.paused,
            settings.configuration(),
        )
        .with_context(|| format!("invalid project file {file}: sync.{}", entry.name))?;
        syncs.push((spec, settings.flush_on_create.unwrap_or(false)));
    }
    hooks("beforeCreate", &project.hooks.before_create, directory)
        .context("no session was created")?;
    lock.set(&identifier)?;
    let mut created = (Vec::new(), Vec::new());
    let mut flush = Vec::new();
    let outcome = (|| -> anyhow::Result<()> {
        for spec in forwards {
            let name = spec.name.clone();
            let session = forward::create(spec)
                .with_context(|| format!("unable to create the forward session {name}"))?;
            println!("Created session {session}");
            created.1.push(session);
        }
        for (spec, flush_on_create) in syncs {
            let name = spec.name.clone();
            let session = lifecycle::create(spec)
                .with_context(|| format!("unable to create the synchronization session {name}"))?;
            println!("Created session {session}");
            if flush_on_create {
                flush.push(session.clone());
            }
            created.0.push(session);
        }
        Ok(())
    })();
    if let Err(error) = outcome {
        // No half-started project: what was created goes again.
        let undone = undo(&created);
        lock.clear()?;
        return match undone {
            Ok(()) => Err(error.context("the sessions already created were terminated")),
            Err(undo) => Err(error.context(format!(
                "terminating the sessions already created failed too ({undo:#}): terminate \
                 those labelled {PROJECT_LABEL}={identifier} by hand"
            ))),
        };
    }
    if !flush.is_empty() && !args.paused {
        let selection = Selection::Specifications(flush);
        client()?
            .call(&Request::Flush { selection, skip_wait: false })
            .context("the project started, but flushing its sessions failed")?;
    }
    hooks("afterCreate", &project.hooks.after_create, directory).context(
        "the project's sessions were created and run (`mutagen project terminate` ends them)",
    )?;
    println!("Started project {identifier}");
    Ok(Outcome::Success)
}

/// Terminates the sessions a failed `start` created.
fn undo((sync, forward): &(Vec<String>, Vec<String>)) -> anyhow::Result<()> {
    let mut client = client()?;
    if !forward.is_empty() {
        client.call(&Request::ForwardTerminate(Selection::Specifications(forward.clone())))?;
    }
    if !sync.is_empty() {
        client.call(&Request::Terminate(Selection::Specifications(sync.clone())))?;
    }
    Ok(())
}

fn cmd_run(args: &RunArgs) -> anyhow::Result<Outcome> {
    let (opened, _lock) = open(&args.file)?;
    let Some(command) = opened.project.commands.get(&args.command) else {
        let known: Vec<&str> = opened.project.commands.keys().map(String::as_str).collect();
        bail!(
            "the project file {} has no command {:?} ({})",
            opened.path.display(),
            args.command,
            if known.is_empty() {
                "it has none".to_owned()
            } else {
                format!("it has {}", known.join(", "))
            }
        );
    };
    let status = std::process::Command::new("sh")
        .arg("-c")
        .arg(command)
        .current_dir(&opened.directory)
        .status()
        .with_context(|| format!("unable to run the command {:?}", args.command))?;
    match status.code() {
        Some(0) => Ok(Outcome::Success),
        Some(code) => Ok(Outcome::Exit(u8::try_from(code).unwrap_or(1))),
        None => bail!("the command {:?} was killed ({status})", args.command),
    }
}

fn cmd_list(args: &ProjectListArgs) -> anyhow::Result<Outcome> {
    let (_, mut lock) = open(&args.file)?;
    let project = running(&mut lock)?;
    let (sync, forward) = project.sessions()?;
    if args.json {
        let value = serde_json::json!({
            "identifier": project.0,
            "forward": forward.iter().map(json::forward).collect::<Vec<_>>(),
            "sync": sync.iter().map(json::session).collect::<Vec<_>>(),
        });
        println!("{}", serde_json::to_string(&value)?);
        return Ok(Outcome::Success);
    }
    println!("Project: {}", project.0);
    println!("Forward sessions:");
    let human = sync_list::Format::Human;
    print_sessions(&forward, &human, args.long, "forwarding", json::forward, forward::describe)?;
    println!("Synchronization sessions:");
    print_sessions(&sync, &human, args.long, "synchronization", json::session, sync_list::describe)
}

/// The steps that act on every session of a running project.
#[derive(Clone, Copy)]
enum Step {
    Pause,
    Resume,
    Reset,
    Terminate,
}

fn lifecycle_step(args: &FileArgs, step: Step) -> anyhow::Result<Outcome> {
    let (opened, mut lock) = open(args)?;
    let project = running(&mut lock)?;
    let hooks_of = &opened.project.hooks;
    let (before, after, name): (&[String], &[String], &str) = match step {
        Step::Pause => (&hooks_of.before_pause, &hooks_of.after_pause, "Pause"),
        Step::Resume => (&hooks_of.before_resume, &hooks_of.after_resume, "Resume"),
        Step::Reset => (&[], &[], "Reset"),
        Step::Terminate => (&hooks_of.before_terminate, &hooks_of.after_terminate, "Terminate"),
    };
    hooks(&format!("before{name}"), before, &opened.directory)?;
    let (sync, forward) = project.members()?;
    let sync = (!sync.is_empty()).then_some(Selection::Specifications(sync));
    let forward = (!forward.is_empty()).then_some(Selection::Specifications(forward));
    let mut client = client()?;
    match step {
        Step::Pause => {
            if let Some(selection) = forward {
                client.call(&Request::ForwardPause(selection))?;
            }
            if let Some(selection) = sync {
                client.call(&Request::Pause(selection))?;
            }
        }
        Step::Resume => {
            if let Some(selection) = forward {
                client.call(&Request::ForwardResume(selection))?;
            }
            if let Some(selection) = sync {
                lifecycle::call_prompting(&Request::Resume { selection, prompt: false }, false)?;
            }
        }
        Step::Reset => {
            if let Some(selection) = sync {
                client.call(&Request::Reset(selection))?;
            }
        }
        Step::Terminate => {
            if let Some(selection) = forward {
                client.call(&Request::ForwardTerminate(selection))?;
            }
            if let Some(selection) = sync {
                client.call(&Request::Terminate(selection))?;
            }
            lock.clear()?;
        }
    }
    hooks(&format!("after{name}"), after, &opened.directory)?;
    Ok(Outcome::Success)
}

//! `mutagen sync once ALPHA BETA`: synchronize two local roots in the foreground.
//!
//! Runs cycles until one changes nothing (or makes no progress), saving the ancestor after
//! every cycle in `<data directory>/once/<key>.state`, so that the next run tells deletions
//! from creations exactly as a long-lived session would. Staging happens in
//! `<data directory>/staging/<key>-alpha|beta`, outside both roots.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, bail};
use clap::Args;
use mutagen_endpoint::synchronizer::{CycleReport, Side, SideReport};
use mutagen_endpoint::{
    Endpoint, Ignorer, LocalEndpoint, LocalOptions, ScanOptions, SymlinkMode, Synchronizer,
};
use mutagen_reconcile::Mode;
use mutagen_session::url;

use crate::{Outcome, render, state};

/// The most cycles one run performs before giving up on convergence.
const MAX_CYCLES: usize = 10;

/// Synchronize two local directories until they agree, then exit.
///
/// Remembers what was synchronized (in the data directory, `~/.mutagen` or
/// `$MUTAGEN_DATA_DIRECTORY`), so later runs propagate deletions. Exits with 0 when both sides
/// agree, 2 when conflicts or problems remain (they are listed), 1 on error.
#[derive(Debug, Args)]
pub struct OnceArgs {
    /// The alpha root (a local path)
    alpha: String,
    /// The beta root (a local path)
    beta: String,
    /// Synchronization mode: two-way-safe, two-way-resolved, one-way-safe, one-way-replica
    #[arg(short, long, default_value = "two-way-safe")]
    mode: Mode,
    /// Ignore paths matching this pattern (repeatable; `!` negates, leading `/` anchors,
    /// trailing `/` matches directories only)
    #[arg(short, long = "ignore", value_name = "PATTERN")]
    ignores: Vec<String>,
    /// Ignore version-control directories (.git, .svn, .hg, .bzr, _darcs)
    #[arg(long)]
    ignore_vcs: bool,
    /// Symbolic link mode: portable, posix-raw, ignore
    #[arg(long, default_value = "portable")]
    symlink_mode: SymlinkMode,
    /// Forget what earlier runs synchronized (the run behaves like a first run)
    #[arg(long)]
    reset: bool,
}

/// Runs `sync once`.
pub fn cmd_once(args: OnceArgs) -> anyhow::Result<Outcome> {
    let cwd = std::env::current_dir().context("unable to determine the working directory")?;
    let alpha = url::local_root(&args.alpha, &cwd)?;
    let beta = url::local_root(&args.beta, &cwd)?;
    let data = mutagen_daemon::DataDirectory::from_environment()?.root().to_path_buf();
    url::check_disjoint(&alpha, &beta, &data)?;
    let ignorer = Ignorer::new(&args.ignores, args.ignore_vcs)?;
    let key = session_key(&alpha, &beta);
    let state_path = data.join("once").join(format!("{key}.state"));
    let mut saved = match args.reset {
        true => state::OnceState::fresh(&alpha, &beta),
        false => state::load(&state_path, &alpha, &beta)?,
    };

    let scan = ScanOptions {
        symlink_mode: args.symlink_mode,
        ignorer: Arc::new(ignorer),
        ..ScanOptions::default()
    };
    let endpoint = |root: &Path, side: &str, read_only: bool| {
        let mut options = LocalOptions::new(data.join("staging").join(format!("{key}-{side}")));
        options.scan = scan.clone();
        options.read_only = read_only;
        LocalEndpoint::new(root.to_path_buf(), options)
    };
    let mut alpha_endpoint = endpoint(&alpha, "alpha", !args.mode.is_bidirectional());
    let mut beta_endpoint = endpoint(&beta, "beta", false);
    alpha_endpoint.set_cache(std::mem::take(&mut saved.alpha_cache));
    beta_endpoint.set_cache(std::mem::take(&mut saved.beta_cache));
    let mut synchronizer = Synchronizer::with_ancestor(args.mode, saved.ancestor.take());

    let start = Instant::now();
    let result = run_cycles(&mut synchronizer, &mut alpha_endpoint, &mut beta_endpoint, |s| {
        saved.ancestor = s.ancestor().cloned();
        state::save(&state_path, &saved)
    });
    let shutdown = [alpha_endpoint.shutdown(), beta_endpoint.shutdown()];
    let summary = result?;
    // The ancestor is saved after every cycle; the digest caches only spare the next run
    // from hashing, so once at the end is enough.
    saved.alpha_cache = alpha_endpoint.cache().clone();
    saved.beta_cache = beta_endpoint.cache().clone();
    state::save(&state_path, &saved)?;
    for outcome in shutdown {
        outcome.context("unable to clean up staging")?;
    }
    report(&alpha, &beta, args.mode, &summary, start.elapsed().as_secs_f64())
}

/// What the cycles of one run did.
struct Summary {
    cycles: usize,
    alpha: Totals,
    beta: Totals,
    last: CycleReport,
    converged: bool,
}

#[derive(Default)]
struct Totals {
    /// Changes applied in full.
    changes: usize,
    /// Changes that failed in the last cycle, in whole or in part (a transition problem at or
    /// under them): each cycle attempts them again, so they are not summed.
    failed: usize,
    staged_files: u64,
    staged_bytes: u64,
}

impl Totals {
    fn add(&mut self, side: &SideReport) {
        let failed = side
            .transitions
            .iter()
            .filter(|change| {
                side.transition_problems.iter().any(|problem| {
                    problem.path == change.path
                        || change.path.is_empty()
                        || problem.path.starts_with(&format!("{}/", change.path))
                })
            })
            .count();
        self.failed = failed;
        self.changes += side.transitions.len() - failed;
        self.staged_files += side.staged_files;
        self.staged_bytes += side.staged_bytes;
    }
}

fn run_cycles(
    synchronizer: &mut Synchronizer,
    alpha: &mut dyn Endpoint,
    beta: &mut dyn Endpoint,
    mut save: impl FnMut(&Synchronizer) -> anyhow::Result<()>,
) -> anyhow::Result<Summary> {
    let (mut totals_alpha, mut totals_beta) = (Totals::default(), Totals::default());
    let mut previous: Option<CycleReport> = None;
    for cycle in 1..=MAX_CYCLES {
        let outcome = synchronizer.cycle(alpha, beta);
        // Whatever happened, keep what the cycle learned about the disk.
        save(synchronizer)?;
        let report = outcome?;
        if let Some(halt) = report.halted {
            bail!(
                "{}: nothing was changed. If this is intended, run again with --reset",
                halt.description()
            );
        }
        totals_alpha.add(&report.alpha);
        totals_beta.add(&report.beta);
        let stalled = previous.as_ref().is_some_and(|p| {
            p.alpha.transitions == report.alpha.transitions
                && p.beta.transitions == report.beta.transitions
        });
        if !report.needs_another_cycle() || stalled {
            let summary = Summary {
                cycles: cycle,
                alpha: totals_alpha,
                beta: totals_beta,
                last: report,
                converged: true,
            };
            return Ok(summary);
        }
        previous = Some(report);
    }
    let last = previous.unwrap_or_default();
    Ok(Summary {
        cycles: MAX_CYCLES,
        alpha: totals_alpha,
        beta: totals_beta,
        last,
        converged: false,
    })
}

fn report(
    alpha: &Path,
    beta: &Path,
    mode: Mode,
    summary: &Summary,
    seconds: f64,
) -> anyhow::Result<Outcome> {
    println!(
        "Synchronized {} and {} ({mode}) in {} cycle{} ({seconds:.2}s)",
        alpha.display(),
        beta.display(),
        summary.cycles,
        if summary.cycles == 1 { "" } else { "s" },
    );
    for (name, totals, side) in [
        ("Alpha", &summary.alpha, &summary.last.alpha),
        ("Beta", &summary.beta, &summary.last.beta),
    ] {
        println!(
            "{name}: {}, {} ({}), {}; {} applied{}, {} transferred ({})",
            render::count(side.directories, "directory", "directories"),
            render::count(side.files, "file", "files"),
            render::size(side.total_file_size),
            render::count(side.symbolic_links, "symbolic link", "symbolic links"),
            render::count(totals.changes as u64, "change", "changes"),
            if totals.failed > 0 { format!(", {} failed", totals.failed) } else { String::new() },
            render::count(totals.staged_files, "file", "files"),
            render::size(totals.staged_bytes),
        );
    }
    let conflicts = &summary.last.conflicts;
    let problems: Vec<_> = summary.last.problems().collect();
    if !conflicts.is_empty() {
        println!("Conflicts: {}", conflicts.len());
        for conflict in conflicts {
            for line in render::conflict(conflict) {
                println!("    {line}");
            }
        }
    }
    if !problems.is_empty() {
        println!("Problems: {}", problems.len());
        for (side, problem) in &problems {
            let side = if *side == Side::Alpha { "alpha" } else { "beta" };
            println!("    ({side}) {}: {}", render::path(&problem.path), problem.error);
        }
    }
    if !summary.converged {
        println!("Not converged after {MAX_CYCLES} cycles: files are still changing");
    }
    let clean = conflicts.is_empty() && problems.is_empty() && summary.converged;
    Ok(if clean { Outcome::Success } else { Outcome::Incomplete })
}

/// Returns a stable name for the pair of roots.
fn session_key(alpha: &Path, beta: &Path) -> String {
    let mut hasher = blake3::Hasher::new();
    hasher.update(alpha.as_os_str().as_encoded_bytes());
    hasher.update(b"\0");
    hasher.update(beta.as_os_str().as_encoded_bytes());
    hasher.finalize().to_hex()[..32].to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_keys_depend_on_order() {
        let (a, b) = (Path::new("/a"), Path::new("/b"));
        assert_ne!(session_key(a, b), session_key(b, a));
        assert_eq!(session_key(a, b).len(), 32);
    }
}

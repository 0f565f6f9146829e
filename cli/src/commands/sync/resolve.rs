//! `sync resolve`: settle conflicts by hand (upstream #195 and #226).

use anyhow::bail;
use clap::Args;
use mutagen_core::Side;
use mutagen_daemon::protocol::{Request, Response, Selection};

use super::lifecycle::client;
use crate::Outcome;

/// Resolve a session's conflicts: the losing side takes the winner's version.
///
/// The winner's version propagates through the usual transition, which checks the loser
/// first: a version that changed since the conflict was recorded is never overwritten (the
/// conflict comes back instead). Journaled; `sync history` shows it.
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("winner").required(true).args(["alpha_wins", "beta_wins"])))]
#[command(group(clap::ArgGroup::new("which").required(true).args(["paths", "all"])))]
pub struct ResolveArgs {
    /// The session's name or identifier
    session: String,
    /// Conflict paths (as `sync list` shows them, relative to the roots)
    paths: Vec<String>,
    /// Every conflict of the session
    #[arg(long)]
    all: bool,
    /// Alpha's version wins
    #[arg(long)]
    alpha_wins: bool,
    /// Beta's version wins (two-way modes only)
    #[arg(long)]
    beta_wins: bool,
}

/// A path as a conflict names it: root-relative, `/`-separated, no `./`, no trailing `/`.
fn normalize(path: &str) -> anyhow::Result<String> {
    let trimmed = path.trim_start_matches("./").trim_end_matches('/');
    if trimmed.starts_with('/') || trimmed.split('/').any(|c| c == ".." || c == ".") {
        bail!(
            "invalid conflict path {path:?}: give it relative to the roots, as sync list shows it"
        );
    }
    Ok(trimmed.to_owned())
}

/// Runs `sync resolve`.
pub fn cmd_resolve(args: ResolveArgs) -> anyhow::Result<Outcome> {
    let winner = if args.alpha_wins { Side::Alpha } else { Side::Beta };
    let paths = match args.all {
        true => None,
        false => Some(args.paths.iter().map(|p| normalize(p)).collect::<anyhow::Result<Vec<_>>>()?),
    };
    let mut client = client()?;
    let request = Request::Resolve { specification: args.session, winner, paths };
    let Response::Done { identifiers } = client.call(&request)? else {
        bail!("unexpected answer from the daemon");
    };
    // Wait for the cycle that propagates the winner, when the session runs.
    let flush =
        Request::Flush { selection: Selection::Specifications(identifiers), skip_wait: false };
    match client.call(&flush) {
        Ok(_) => println!("Resolved: {winner}'s version propagated"),
        Err(error) => {
            println!("Resolved: {winner}'s version propagates once the session runs ({error})");
        }
    }
    Ok(Outcome::Success)
}

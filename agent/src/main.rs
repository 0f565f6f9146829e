//! `mutagen-agent`: runs on the remote host (over SSH, in a container) and serves one endpoint
//! over its standard input and output.
//!
//! It is a dependency firewall: it links the endpoint and the protocol only (no journal, no
//! daemon, no tokio), and it is built statically (`-C target-feature=+crt-static`), so that it
//! runs on any x86_64 Linux, a libc-less container included. It resolves `~user` from
//! `/etc/passwd` itself, so it needs no name-service library.
//!
//! Usage: `mutagen-agent endpoint` (serve), `mutagen-agent forward` (listen or dial for a
//! forward session), `mutagen-agent version`, `mutagen-agent install`
//! (renames this executable, uploaded under a temporary name, to `mutagen-agent` in the same
//! directory: the atomic last step of an install where no shell is available, as in a
//! container). It exits as soon as its
//! input closes, so nothing is left running after a link cut, a terminate or a daemon stop.

use std::os::fd::AsFd;
use std::process::ExitCode;

use mutagen_protocol::{AgentEnvironment, build_of, serve, server::hello};

fn main() -> ExitCode {
    let command = std::env::args().nth(1).unwrap_or_default();
    match command.as_str() {
        "version" => {
            println!("mutagen-agent {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        "install" => match install() {
            Ok(()) => ExitCode::SUCCESS,
            Err(message) => {
                eprintln!("mutagen-agent: {message}");
                ExitCode::FAILURE
            }
        },
        "forward" => match forward() {
            Ok(()) => ExitCode::SUCCESS,
            Err(message) => {
                eprintln!("mutagen-agent: {message}");
                ExitCode::FAILURE
            }
        },
        "endpoint" => match run() {
            Ok(()) => ExitCode::SUCCESS,
            Err(message) => {
                eprintln!("mutagen-agent: {message}");
                ExitCode::FAILURE
            }
        },
        _ => {
            eprintln!("usage: mutagen-agent endpoint|forward|version|install");
            ExitCode::from(2)
        }
    }
}

/// Moves this executable into place as `mutagen-agent` beside it (a rename: a half-written
/// agent is never found under the final name).
fn install() -> Result<(), String> {
    let executable = std::env::current_exe()
        .map_err(|e| format!("unable to find the agent's executable: {e}"))?;
    let target = executable.with_file_name("mutagen-agent");
    if executable == target {
        return Ok(());
    }
    std::fs::rename(&executable, &target)
        .map_err(|e| format!("unable to install {}: {e}", target.display()))
}

fn run() -> Result<(), String> {
    let environment = AgentEnvironment::from_process()?;
    let executable = std::env::current_exe()
        .map_err(|e| format!("unable to find the agent's executable: {e}"))?;
    let build = build_of(&executable)
        .map_err(|e| format!("unable to read {}: {e}", executable.display()))?;
    let hello = hello(build);
    let (input, output) = standard_streams()?;
    serve(
        Box::new(input),
        Box::new(output),
        &hello,
        &environment,
        // The daemon is gone: nothing may keep running on its behalf.
        Box::new(|| std::process::exit(0)),
    )
    .map_err(|e| format!("unable to talk to the daemon: {e}"))
}

/// Standard input and output as raw files: the standard library's stdout would flush at
/// every newline byte.
fn standard_streams() -> Result<(std::fs::File, std::fs::File), String> {
    let duplicate = |fd: std::os::fd::BorrowedFd<'_>| {
        fd.try_clone_to_owned()
            .map(std::fs::File::from)
            .map_err(|e| format!("unable to use the standard streams: {e}"))
    };
    Ok((duplicate(std::io::stdin().as_fd())?, duplicate(std::io::stdout().as_fd())?))
}

/// Serves the forwarding role: listens or dials as the daemon asks, until the link closes.
fn forward() -> Result<(), String> {
    let executable = std::env::current_exe()
        .map_err(|e| format!("unable to find the agent's executable: {e}"))?;
    let build = build_of(&executable)
        .map_err(|e| format!("unable to read {}: {e}", executable.display()))?;
    let (input, output) = standard_streams()?;
    let home = std::env::var_os("HOME").map(std::path::PathBuf::from);
    let result =
        mutagen_forward::agent::serve(Box::new(input), Box::new(output), &hello(build), home);
    // Connections still being relayed end with the process: the daemon is gone.
    result.map(|()| std::process::exit(0))
}

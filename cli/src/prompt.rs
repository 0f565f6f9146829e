//! Asking the user: ssh's questions on the terminal of `sync create`, and the `SSH_ASKPASS`
//! side that ssh runs.
//!
//! When ssh (started by the daemon for a command that has a terminal) needs a password, a
//! passphrase or a host-key confirmation, it runs this very binary as its `SSH_ASKPASS`
//! program, with the question as its argument and [`ASKPASS_SOCKET`] naming the daemon's
//! relay. [`askpass`] forwards the question there; the daemon passes it over IPC to the
//! `mutagen sync create` waiting for it, which [`ask`]s the user on its terminal.

use std::ffi::OsString;
use std::io::{BufRead, Write};
use std::process::ExitCode;

pub use mutagen_transports::ssh::ASKPASS_SOCKET;

/// Whether the user can be asked: standard input and standard error are terminals.
pub fn interactive() -> bool {
    rustix::termios::isatty(std::io::stdin()) && rustix::termios::isatty(std::io::stderr())
}

/// Asks `question` on the terminal; a secret answer is read without echo. `None` when the
/// terminal is gone (end of input).
pub fn ask(question: &str, secret: bool) -> Option<String> {
    let stdin = std::io::stdin();
    let mut stderr = std::io::stderr();
    // Echo goes off before the question shows: an answer typed as soon as it appears (or
    // typed ahead) is never echoed.
    let saved = secret.then(|| rustix::termios::tcgetattr(&stdin).ok()).flatten();
    if let Some(saved) = &saved {
        let mut quiet = saved.clone();
        quiet.local_modes.remove(rustix::termios::LocalModes::ECHO);
        let _ = rustix::termios::tcsetattr(&stdin, rustix::termios::OptionalActions::Now, &quiet);
    }
    let _ = write!(stderr, "{question}");
    let _ = stderr.flush();
    let mut line = String::new();
    let read = stdin.lock().read_line(&mut line);
    if let Some(saved) = &saved {
        let _ = rustix::termios::tcsetattr(&stdin, rustix::termios::OptionalActions::Now, saved);
        let _ = writeln!(stderr);
    }
    match read {
        Ok(0) | Err(_) => None,
        Ok(_) => Some(line.trim_end_matches(['\n', '\r']).to_owned()),
    }
}

/// Runs as ssh's `SSH_ASKPASS` when [`ASKPASS_SOCKET`] is set: forwards the question
/// (`args[1]`) to the daemon's relay and prints the answer for ssh.
pub fn askpass(socket: OsString, args: &[OsString]) -> ExitCode {
    let question = args.get(1).map(|q| q.to_string_lossy().into_owned()).unwrap_or_default();
    match mutagen_transports::ssh::ask(socket.as_ref(), &question) {
        Ok(Some(answer)) => {
            println!("{answer}");
            ExitCode::SUCCESS
        }
        Ok(None) => ExitCode::from(1),
        Err(error) => {
            eprintln!("error: unable to relay the question to mutagen: {error}");
            ExitCode::from(1)
        }
    }
}

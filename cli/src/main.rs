//! The `mutagen` binary: parses arguments and runs the command.

use std::process::ExitCode;

fn main() -> ExitCode {
    mutagen_cli::run(std::env::args_os())
}

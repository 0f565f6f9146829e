//! The `mutagen` binary: parses arguments and runs the command.

use std::process::ExitCode;

/// mimalloc returns freed pages to the system, where glibc's allocator kept a long-running
/// daemon at its peak after sessions were terminated (see `bench/README.md`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    mutagen_cli::run(std::env::args_os())
}

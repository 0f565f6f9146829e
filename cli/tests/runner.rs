//! End-to-end tests of the `mutagen` binary, in one test binary.

mod daemon_env;
mod test_config;
mod test_crash;
mod test_daemon;
mod test_docker;
mod test_forward;
mod test_ignore;
mod test_integrity;
mod test_project;
mod test_retry;
mod test_service;
mod test_ssh;
mod test_sync_once;
mod test_watch;

//! End-to-end engine tests on real directories, in one binary.

mod test_dependencies;
mod test_local_sync;
mod test_safety;
mod test_ssh_transport;
mod test_staging;
mod test_watch;

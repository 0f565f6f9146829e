//! The real `mutagen-agent` binary, spawned as a process.

mod test_agent;

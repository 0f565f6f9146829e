//! The endpoint crate's integration tests, in one binary.

mod test_messages;
mod test_rescan;
mod test_scan;
mod test_scan_model;

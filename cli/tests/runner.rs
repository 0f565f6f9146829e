//! End-to-end tests of the `mutagen` binary, in one test binary.

mod test_sync_once;

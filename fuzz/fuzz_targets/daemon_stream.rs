//! Everything a daemon could write to an agent, read by the agent's decoder and answered by
//! its request handler in a scratch directory. The same body runs in `cargo test`, which
//! replays `corpus/daemon_stream` and `artifacts/`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    mutagen_protocol::fuzzing::daemon_stream(data);
});

//! Everything an agent could write, read by the daemon's remote endpoint through the
//! handshake, initialization, scans (whole and delta), staging, supply and transition. The
//! same body runs in `cargo test`, which replays `corpus/agent_stream` and `artifacts/`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    mutagen_protocol::fuzzing::agent_stream(data);
});

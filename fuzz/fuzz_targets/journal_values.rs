//! What a damaged or hostile disk could hold: a session's stored records (decoded, checked
//! by a round trip, replayed) and the head file (parsed, checked by a round trip). The same
//! body runs in `cargo test`, which replays `corpus/journal_values` and `artifacts/`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    mutagen_journal::fuzzing::journal_values(data);
});

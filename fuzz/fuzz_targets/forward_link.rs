//! What a hostile agent could send over a forwarding link: every stream it opens is accepted
//! and read, and the link must end cleanly with nothing left registered. The same body runs
//! in `cargo test`, which replays `corpus/forward_link` and `artifacts/`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    mutagen_forward::fuzzing::link(data);
});

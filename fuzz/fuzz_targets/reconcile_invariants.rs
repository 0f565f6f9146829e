//! Builds (ancestor, alpha, beta, mode) from the input and checks every reconcile invariant.
//! The same builder and checks run in `cargo test`, which replays `corpus/` and `artifacts/`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(message) = mutagen_reconcile::invariants::check_bytes(data) {
        panic!("reconcile invariant violated: {message}");
    }
});

//! Property tests: every invariant of `invariants::check` over generated inputs.

use mutagen_reconcile::invariants;
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig { cases: 4096, ..ProptestConfig::default() })]

    /// Convergence, symmetry, no removal of unsynchronizable content, problematic paths
    /// untouched, one-way modes never touch alpha.
    #[test]
    fn reconcile_invariants_hold(data in proptest::collection::vec(any::<u8>(), 0..160)) {
        if let Err(message) = invariants::check_bytes(&data) {
            prop_assert!(false, "{}", message);
        }
    }
}

/// The builder is deterministic, so fuzz findings replay exactly.
#[test]
fn builder_is_deterministic() {
    let data: Vec<u8> = (0..=255).collect();
    assert_eq!(invariants::build(&data), invariants::build(&data));
}

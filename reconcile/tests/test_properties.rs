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

/// The builder reaches the cases of permission bits: inputs whose trees carry them, and
/// directories whose bits both sides changed, the same way or not.
#[test]
fn builder_changes_permission_bits() {
    use mutagen_reconcile::Entry;
    let (mut carrying, mut same, mut different) = (0, 0, 0);
    let mut seed: u64 = 1;
    for _ in 0..20_000 {
        let mut next = || {
            seed = seed
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (seed >> 33) as u8
        };
        let length = 20 + usize::from(next() % 100);
        let data: Vec<u8> = (0..length).map(|_| next()).collect();
        let trees = invariants::build(&data);
        let (
            Some(Entry::Directory(ancestor)),
            Some(Entry::Directory(alpha)),
            Some(Entry::Directory(beta)),
        ) = (&trees.0, &trees.1, &trees.2)
        else {
            continue;
        };
        if ancestor.permissions.is_none() {
            continue;
        }
        carrying += 1;
        let changed =
            |side: &mutagen_reconcile::Directory| side.permissions != ancestor.permissions;
        match (changed(alpha), changed(beta)) {
            (true, true) if alpha.permissions == beta.permissions => same += 1,
            (true, true) => different += 1,
            _ => {}
        }
    }
    assert!(carrying > 1000 && same > 5 && different > 10, "{carrying} {same} {different}");
}

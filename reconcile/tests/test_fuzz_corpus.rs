//! Replays the fuzz target's corpus and any saved crash artifacts through the same checks.

use std::path::Path;

use mutagen_reconcile::invariants;

#[test]
fn fuzz_corpus_replays_cleanly() {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    let mut replayed = 0;
    for folder in ["corpus/reconcile_invariants", "artifacts/reconcile_invariants"] {
        let Ok(entries) = std::fs::read_dir(fuzz.join(folder)) else {
            continue;
        };
        for entry in entries {
            let path = entry.expect("corpus entry").path();
            let data = std::fs::read(&path).expect("corpus file is readable");
            if let Err(message) = invariants::check_bytes(&data) {
                panic!("{}: {message}", path.display());
            }
            replayed += 1;
        }
    }
    assert!(replayed > 0, "the committed seed corpus under fuzz/corpus is missing");
}

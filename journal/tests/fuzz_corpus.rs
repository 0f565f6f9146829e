//! Replays the `journal_values` fuzz target's corpus and saved crash artifacts, and checks
//! that the committed seeds are current.

use std::path::Path;

use mutagen_journal::fuzzing;

#[test]
fn journal_values_corpus_replays_cleanly() {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    let mut replayed = 0;
    for folder in ["corpus/journal_values", "artifacts/journal_values"] {
        let Ok(entries) = std::fs::read_dir(fuzz.join(folder)) else { continue };
        for entry in entries {
            let path = entry.expect("corpus entry").path();
            fuzzing::journal_values(&std::fs::read(&path).expect("readable"));
            replayed += 1;
        }
    }
    assert!(replayed >= 2, "the committed seed corpus under fuzz/corpus/journal_values is missing");
}

/// A protocol change that makes the seeds stale fails here (rewrite them with
/// `MUTAGEN_WRITE_SEEDS=1 cargo test -p mutagen-journal --test fuzz_corpus`).
#[test]
fn journal_seeds_are_current_and_decode() {
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/journal_values");
    for (name, bytes) in fuzzing::journal_seeds() {
        let path = corpus.join(name);
        if std::env::var_os("MUTAGEN_WRITE_SEEDS").is_some() {
            std::fs::create_dir_all(&corpus).expect("corpus directory");
            std::fs::write(&path, &bytes).expect("seed written");
        }
        let committed = std::fs::read(&path).unwrap_or_default();
        assert!(committed == bytes, "the seed {} is stale", path.display());
        fuzzing::journal_values(&bytes);
    }
    let head =
        fuzzing::journal_seeds().into_iter().find(|(name, _)| *name == "head").expect("head");
    let text = String::from_utf8(head.1).expect("text");
    assert_eq!(mutagen_journal::head::parse(&text).expect("parses").len(), 1);
}

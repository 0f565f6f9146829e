//! Replays the `forward_link` fuzz target's corpus and saved crash artifacts, and checks
//! that the committed seeds are current.

use std::path::Path;

use mutagen_forward::fuzzing;

#[test]
fn forward_link_corpus_replays_cleanly() {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    let mut replayed = 0;
    for folder in ["corpus/forward_link", "artifacts/forward_link"] {
        let Ok(entries) = std::fs::read_dir(fuzz.join(folder)) else { continue };
        for entry in entries {
            let path = entry.expect("corpus entry").path();
            fuzzing::link(&std::fs::read(&path).expect("readable"));
            replayed += 1;
        }
    }
    assert!(replayed >= 4, "the committed seed corpus under fuzz/corpus/forward_link is missing");
}

/// A frame format change that makes the seeds stale fails here (rewrite them with
/// `MUTAGEN_WRITE_SEEDS=1 cargo test -p mutagen-forward link_seeds`).
#[test]
fn link_seeds_are_current() {
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/forward_link");
    for (name, bytes) in fuzzing::link_seeds() {
        let path = corpus.join(name);
        if std::env::var_os("MUTAGEN_WRITE_SEEDS").is_some() {
            std::fs::create_dir_all(&corpus).expect("corpus directory");
            std::fs::write(&path, &bytes).expect("seed written");
        }
        let committed = std::fs::read(&path).unwrap_or_default();
        assert!(committed == bytes, "the seed {} is stale", path.display());
        fuzzing::link(&bytes);
    }
}

//! Replays the `agent_stream` fuzz target's corpus and saved crash artifacts.

use std::path::Path;

#[test]
fn agent_stream_corpus_replays_cleanly() {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    let mut replayed = 0;
    for folder in ["corpus/agent_stream", "artifacts/agent_stream"] {
        let Ok(entries) = std::fs::read_dir(fuzz.join(folder)) else { continue };
        for entry in entries {
            let path = entry.expect("corpus entry").path();
            mutagen_protocol::fuzzing::agent_stream(&std::fs::read(&path).expect("readable"));
            replayed += 1;
        }
    }
    assert!(replayed >= 3, "the committed seed corpus under fuzz/corpus/agent_stream is missing");
}

//! Replays the fuzz targets' corpora and saved crash artifacts: `agent_stream` (what an agent
//! writes, read by the daemon) and `daemon_stream` (what a daemon writes, read by the agent).

use std::path::Path;

use mutagen_endpoint::Transmission;
use mutagen_protocol::messages::{Response, SnapshotTransfer};
use mutagen_reconcile::{Directory, Entry};

fn replay(target: &str, body: fn(&[u8])) -> usize {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    let mut replayed = 0;
    for folder in ["corpus", "artifacts"] {
        let Ok(entries) = std::fs::read_dir(fuzz.join(folder).join(target)) else { continue };
        for entry in entries {
            let path = entry.expect("corpus entry").path();
            body(&std::fs::read(&path).expect("readable"));
            replayed += 1;
        }
    }
    replayed
}

#[test]
fn agent_stream_corpus_replays_cleanly() {
    let replayed = replay("agent_stream", mutagen_protocol::fuzzing::agent_stream);
    assert!(replayed >= 3, "the committed seed corpus under fuzz/corpus/agent_stream is missing");
}

#[test]
fn daemon_stream_corpus_replays_cleanly() {
    let replayed = replay("daemon_stream", mutagen_protocol::fuzzing::daemon_stream);
    assert!(replayed >= 3, "the committed seed corpus under fuzz/corpus/daemon_stream is missing");
}

/// The committed seeds are what [`mutagen_protocol::fuzzing::daemon_seeds`] builds today: a
/// protocol change that makes them stale fails here (rewrite them with
/// `MUTAGEN_WRITE_SEEDS=1 cargo test -p mutagen-protocol daemon_seeds`).
#[test]
fn daemon_seeds_are_current_and_reach_the_handler() {
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/daemon_stream");
    for (name, bytes) in mutagen_protocol::fuzzing::daemon_seeds() {
        let path = corpus.join(name);
        if std::env::var_os("MUTAGEN_WRITE_SEEDS").is_some() {
            std::fs::create_dir_all(&corpus).expect("corpus directory");
            std::fs::write(&path, &bytes).expect("seed written");
        }
        let committed = std::fs::read(&path).unwrap_or_default();
        assert!(committed == bytes, "the seed {} is stale", path.display());
        let answers = mutagen_protocol::fuzzing::daemon_answers(&bytes);
        let transitions: Vec<_> = answers
            .iter()
            .filter_map(|answer| match answer {
                Response::Transitioned(result) => Some(result),
                _ => None,
            })
            .collect();
        match name {
            // Every request of a real session is answered, and its transitions succeed.
            "session" | "session-zstd" => {
                assert_eq!(answers.len(), 13, "{name}: {answers:?}");
                assert_eq!(transitions.len(), 2, "{name}: {answers:?}");
                for result in transitions {
                    assert!(result.problems.is_empty(), "{name}: {result:?}");
                }
            }
            // Whatever root it asked for, the agent stayed in its scratch root, and `..` is
            // refused: nothing of /etc/passwd is sent, only that it is unavailable.
            "escape" => {
                let refused = answers.iter().any(|answer| {
                    matches!(answer, Response::Transmission(Transmission::Unavailable { request, error })
                        if request.path == "../etc/passwd" && error.contains("invalid path"))
                });
                assert!(refused, "{name}: {answers:?}");
                let sent = answers
                    .iter()
                    .any(|answer| matches!(answer, Response::Transmission(Transmission::Data(_))));
                assert!(!sent, "{name}: content was sent: {answers:?}");
            }
            // Permissions mode posix: the root gets its bits, then a change of them alone,
            // which the next delta carries as a childless directory.
            "posix" => {
                assert_eq!(transitions.len(), 2, "{name}: {answers:?}");
                for result in &transitions {
                    assert!(result.problems.is_empty(), "{name}: {result:?}");
                }
                let bits_alone = Some(Entry::Directory(Directory::with_permissions(Some(0o700))));
                let carried = answers.iter().any(|answer| {
                    matches!(answer, Response::Scanned { snapshot: SnapshotTransfer::Delta { changes, .. }, .. }
                        if *changes == [(String::new(), bits_alone.clone())])
                });
                assert!(carried, "{name}: {answers:?}");
            }
            _ => unreachable!(),
        }
    }
}

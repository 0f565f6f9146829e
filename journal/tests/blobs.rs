//! Records of a whole tree live in blob files beside sled: they replay as if inline, damage
//! to a blob is refused naming its file, and no blob outlives the records that name it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use mutagen_journal::{Event, Journal, Record, SessionState, blob};
use mutagen_reconcile::{Change, Digest, Entry};
use mutagen_session::SessionSpec;

const ID: &str = "sync_0000000000000000000000000000000000000000001";

fn created() -> Record {
    let spec = SessionSpec {
        alpha: "/a".into(),
        beta: "/b".into(),
        name: "web".into(),
        labels: Default::default(),
        paused: false,
        configuration: Default::default(),
        alpha_environment: Default::default(),
        beta_environment: Default::default(),
    };
    Record::now(
        0,
        Event::Created { identifier: ID.into(), version: "0".into(), spec: Box::new(spec) },
    )
}

/// An initial cycle's ancestor update: a root of `files` files (content `byte`), far past
/// the blob minimum for a few thousand files.
fn tree(cycle: u64, files: usize, byte: u8) -> Record {
    let children: BTreeMap<String, Entry> = (0..files)
        .map(|i| (format!("file-{i:05}"), Entry::file(Digest([byte; 32]), false)))
        .collect();
    let root = Entry::Directory(mutagen_reconcile::Directory { children, permissions: None });
    let old = (cycle > 1).then(|| Entry::Directory(Default::default()));
    let changes = if cycle > 1 {
        // Replaces the root's content: first emptied by the cycle before.
        vec![Change::new("", old, Some(root))]
    } else {
        vec![Change::new("", None, Some(root))]
    };
    Record::now(cycle, Event::AncestorUpdated { changes })
}

fn emptied(cycle: u64) -> Record {
    let changes = vec![Change::new("", None, Some(Entry::Directory(Default::default())))];
    Record::now(cycle, Event::AncestorUpdated { changes })
}

fn blob_files(journal: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(blob::directory(journal).join(ID))
        .map(|entries| entries.flatten().map(|entry| entry.path()).collect())
        .unwrap_or_default();
    files.sort();
    files
}

/// Opens a database this process just closed (sled's flusher may hold its lock a moment).
fn reopen(directory: &Path) -> Journal {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match Journal::open(directory) {
            Err(_) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            result => return result.expect("reopen"),
        }
    }
}

fn fold(records: &[Record]) -> SessionState {
    SessionState::fold(records).expect("fold").expect("created")
}

#[test]
fn a_large_record_lives_in_a_blob_and_replays_as_if_inline() {
    let dir = tempfile::tempdir().expect("tempdir");
    let directory = dir.path().join("journal");
    let journal = Journal::open(&directory).expect("open");
    let records = vec![created(), tree(1, 5000, 7)];
    let size = records[1].encode().expect("encode").len();
    assert!(size >= blob::BLOB_MINIMUM, "the test record is {size} bytes");
    let mut log = journal.create(ID, &records[0]).expect("create");
    log.append(&records[1]).expect("append");
    journal.flush().expect("flush");
    drop((log, journal));

    let files = blob_files(&directory);
    assert_eq!(files.len(), 1, "{files:?}");
    assert_eq!(std::fs::metadata(&files[0]).expect("blob").len() as usize, size);
    let journal = reopen(&directory);
    let (log, state) = journal.load(ID).expect("load");
    assert_eq!(state, fold(&records));
    let read: Vec<Record> = log.records(0).expect("records").into_iter().map(|(_, r)| r).collect();
    assert_eq!(read, records);
    assert_eq!(blob_files(&directory), files, "a blob a record names stays");
}

#[test]
fn a_changed_or_missing_blob_is_refused_naming_its_file() {
    for damage in ["change", "remove", "truncate"] {
        let dir = tempfile::tempdir().expect("tempdir");
        let directory = dir.path().join("journal");
        let journal = Journal::open(&directory).expect("open");
        let mut log = journal.create(ID, &created()).expect("create");
        log.append(&tree(1, 5000, 7)).expect("append");
        journal.flush().expect("flush");
        drop((log, journal));
        let file = blob_files(&directory).pop().expect("a blob");
        let before = std::fs::read(&file).expect("read");
        match damage {
            "change" => {
                let mut bytes = before.clone();
                let middle = bytes.len() / 2;
                bytes[middle] ^= 1;
                std::fs::write(&file, bytes).expect("write");
            }
            "remove" => std::fs::remove_file(&file).expect("remove"),
            _ => std::fs::write(&file, &before[..before.len() / 2]).expect("truncate"),
        }
        let error = loop {
            match Journal::open(&directory) {
                Err(mutagen_journal::JournalError::Open { .. }) => {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                Err(error) => break error.to_string(),
                Ok(_) => panic!("{damage}: a damaged blob was accepted"),
            }
        };
        assert!(
            error.contains(ID) && error.contains(&file.display().to_string()),
            "{damage}: {error}"
        );
        assert!(error.contains("record 1"), "{damage}: {error}");
        // Refused, and left as it was (a missing blob stays missing, nothing is repaired).
        assert_eq!(file.exists(), damage != "remove", "{damage}");
    }
}

#[test]
fn no_blob_outlives_the_records_that_name_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let directory = dir.path().join("journal");
    let journal = Journal::open(&directory).expect("open");
    let mut records = vec![created()];
    let mut log = journal.create(ID, &records[0]).expect("create");
    // Cycles that alternately fill the root (a blob each) and empty it.
    for cycle in 1..=12 {
        let record = if cycle % 2 == 1 { tree(cycle, 4000, cycle as u8) } else { emptied(cycle) };
        log.append(&record).expect("append");
        records.push(record);
    }
    journal.flush().expect("flush");
    assert_eq!(blob_files(&directory).len(), 6);
    // Compaction drops the old cycles and their blobs; its checkpoint is small (the root is
    // empty after cycle 12), so only the blob of cycle 11 is named still.
    let state = fold(&records);
    log.compact(&state, 2).expect("compact");
    let kept = blob_files(&directory);
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert!(kept[0].file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("11-")));

    // A blob no record names (a crash between a compaction and its removal, or a record
    // never appended) goes at the next open.
    let stray = kept[0].with_file_name(format!("99-{}", "0".repeat(64)));
    std::fs::write(&stray, b"stray").expect("stray");
    drop((log, journal));
    let journal = reopen(&directory);
    assert_eq!(blob_files(&directory), kept);
    assert_eq!(journal.load(ID).expect("load").1, state);

    // Removing the session removes its blobs.
    journal.remove(ID).expect("remove");
    assert!(!blob::directory(&directory).join(ID).exists());
}

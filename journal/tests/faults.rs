//! Fault injection over a real journal: bytes flipped and files truncated at hundreds of
//! offsets, and each file deleted in turn. Every case must either reopen to exactly the
//! acknowledged state (same sessions, same states, same history length) or be refused as
//! damaged (or unopenable) with the files left as they were. Run with `--nocapture` for the
//! table of outcomes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use mutagen_core::Side;
use mutagen_journal::{Event, Journal, JournalError, Record, SessionState};
use mutagen_reconcile::{Change, Digest, Entry};
use mutagen_session::SessionSpec;

/// The acknowledged content: each session's state and history.
type Acknowledged = BTreeMap<String, (SessionState, Vec<(u64, Record)>)>;

fn spec(name: &str) -> SessionSpec {
    SessionSpec {
        alpha: format!("/{name}/a"),
        beta: format!("/{name}/b"),
        name: name.into(),
        labels: Default::default(),
        paused: false,
        configuration: Default::default(),
        alpha_environment: Default::default(),
        beta_environment: Default::default(),
    }
}

fn cycle(number: u64, files: u8) -> Vec<Record> {
    let mut changes = Vec::new();
    if number == 1 {
        changes.push(Change::new("", None, Some(Entry::Directory(Default::default()))));
    }
    for file in 0..files {
        let entry = Entry::file(Digest([file ^ number as u8; 32]), false);
        let path = format!("d{number}-{file}");
        changes.push(Change::new(&path, None, Some(entry)));
    }
    vec![
        Record::now(
            number,
            Event::ScanCompleted {
                side: Side::Alpha,
                directories: 1,
                files: u64::from(files),
                symbolic_links: 0,
                total_file_size: 1 << 20,
                duration_us: 5,
                problems: Vec::new(),
            },
        ),
        Record::now(number, Event::AncestorUpdated { changes }),
    ]
}

/// Three sessions, one paused and one compacted, flushed after each step as the daemon does;
/// the journal is reopened once on the way (so that sled writes its snapshot file).
fn build(directory: &Path) -> Acknowledged {
    for (index, name) in ["web", "api", "docs"].into_iter().enumerate() {
        let journal = reopen(directory);
        let identifier = format!("sync_{:0>43}", index + 1);
        let created = Record::now(
            0,
            Event::Created {
                identifier: identifier.clone(),
                version: "0".into(),
                spec: Box::new(spec(name)),
            },
        );
        let mut log = journal.create(&identifier, &created).expect("create");
        journal.flush().expect("flush");
        for number in 1..=8 {
            for record in cycle(number, 120) {
                log.append(&record).expect("append");
            }
            journal.flush().expect("flush");
        }
        if name == "api" {
            log.append(&Record::now(8, Event::Paused)).expect("pause");
        }
        if name == "docs" {
            let (_, state) = journal.load(&identifier).expect("load");
            log.compact(&state, 2).expect("compact");
        }
        journal.flush().expect("flush");
    }
    acknowledged(&reopen(directory))
}

/// Opens a journal this process may have just closed (sled's flusher releases it late).
fn reopen(directory: &Path) -> Journal {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match Journal::open(directory) {
            Err(JournalError::Open { .. }) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            result => return result.expect("open"),
        }
    }
}

fn acknowledged(journal: &Journal) -> Acknowledged {
    let mut states = Acknowledged::new();
    for identifier in journal.identifiers() {
        let (_, state) = journal.load(&identifier).expect("load");
        let history = journal.records(&identifier, 0).expect("records");
        states.insert(identifier, (state, history));
    }
    states
}

fn files(path: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut found = BTreeMap::new();
    for entry in std::fs::read_dir(path).expect("list").flatten() {
        let path = entry.path();
        if path.is_dir() {
            found.extend(files(&path));
        } else {
            found.insert(path.clone(), std::fs::read(&path).expect("read"));
        }
    }
    found
}

fn copy(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("list").flatten() {
        let target = to.join(entry.file_name());
        if entry.path().is_dir() {
            copy(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).expect("copy");
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Outcome {
    /// Reopened to exactly the acknowledged state.
    Restored,
    /// The same, with records that a compaction had pruned back in the history.
    Unpruned,
    /// Refused as damaged, naming what is missing.
    Refused,
    /// sled itself could not open the (real) files; nothing was replayed.
    Unopenable,
}

/// Opens the damaged journal in `root` and classifies the result; panics on any other.
fn outcome(root: &Path, expected: &Acknowledged, case: &str) -> Outcome {
    let directory = root.join("journal");
    let before = files(root);
    match Journal::open(&directory) {
        Ok(journal) => {
            let found =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| acknowledged(&journal)));
            let found = found.unwrap_or_else(|_| panic!("{case}: accepted, then failed to load"));
            assert_eq!(found.len(), expected.len(), "{case}: other sessions");
            let mut outcome = Outcome::Restored;
            for (identifier, (state, history)) in expected {
                let Some((found_state, found_history)) = found.get(identifier) else {
                    panic!("{case}: accepted without session {identifier}");
                };
                assert!(found_state == state, "{case}: {identifier}: another state");
                // A compaction whose removals sled lost brings pruned records back: the
                // acknowledged history must then be exactly the newest part of what is found.
                assert!(found_history.ends_with(history), "{case}: {identifier}: history");
                if found_history.len() > history.len() {
                    outcome = Outcome::Unpruned;
                }
            }
            outcome
        }
        Err(JournalError::Damaged { problems, .. }) => {
            assert!(!problems.is_empty(), "{case}");
            assert_eq!(files(root), before, "{case}: a refused journal was changed");
            Outcome::Refused
        }
        Err(JournalError::Open { .. }) => {
            assert_eq!(files(root), before, "{case}: an unopenable journal was changed");
            Outcome::Unopenable
        }
        Err(error) => panic!("{case}: unexpected error: {error}"),
    }
}

#[test]
fn every_injected_fault_restores_the_acknowledged_state_or_is_refused() {
    let pristine = tempfile::tempdir().expect("tempdir");
    let expected = build(&pristine.path().join("journal"));
    // Let sled's flusher release the files.
    std::thread::sleep(std::time::Duration::from_millis(200));
    let originals = files(pristine.path());
    let db = pristine.path().join("journal").join("db");
    let size = std::fs::metadata(&db).expect("db").len();
    let content = std::fs::read(&db).expect("db");
    // Offsets: every 4 KiB page of the file, plus 200 spread over the bytes in use.
    let used: Vec<u64> = (0..size).filter(|&o| content[o as usize] != 0).collect();
    let mut offsets: Vec<u64> = (0..size).step_by(4096).collect();
    offsets.extend((0..200).map(|i| used[i * used.len() / 200]));
    offsets.sort_unstable();
    offsets.dedup();

    let mut table: BTreeMap<(&str, Outcome), usize> = BTreeMap::new();
    let mut run = |kind: &'static str, case: String, damage: &dyn Fn(&Path)| {
        let dir = tempfile::tempdir().expect("tempdir");
        copy(pristine.path(), dir.path());
        damage(dir.path());
        *table.entry((kind, outcome(dir.path(), &expected, &case))).or_default() += 1;
    };
    for &offset in &offsets {
        run("flip a byte of db", format!("flip db at {offset}"), &|root| {
            let path = root.join("journal/db");
            let mut bytes = std::fs::read(&path).expect("read");
            bytes[offset as usize] ^= 0x5a;
            std::fs::write(&path, bytes).expect("write");
        });
    }
    for &offset in offsets.iter().step_by(4) {
        run("truncate db", format!("truncate db at {offset}"), &|root| {
            let file = std::fs::OpenOptions::new()
                .write(true)
                .open(root.join("journal/db"))
                .expect("open");
            file.set_len(offset).expect("truncate");
        });
    }
    for path in originals.keys() {
        let relative = path.strip_prefix(pristine.path()).expect("inside").to_owned();
        run("delete a file", format!("delete {}", relative.display()), &|root| {
            std::fs::remove_file(root.join(&relative)).expect("delete");
        });
    }
    println!(
        "| fault | cases | restored exactly | restored, pruned records back | refused as damaged \
         | sled cannot open |"
    );
    println!("|---|---:|---:|---:|---:|---:|");
    for kind in ["flip a byte of db", "truncate db", "delete a file"] {
        let count = |outcome| table.get(&(kind, outcome)).copied().unwrap_or_default();
        let counts = [Outcome::Restored, Outcome::Unpruned, Outcome::Refused, Outcome::Unopenable]
            .map(count);
        let [restored, unpruned, refused, unopenable] = counts;
        let total: usize = counts.iter().sum();
        println!("| {kind} | {total} | {restored} | {unpruned} | {refused} | {unopenable} |");
    }
    println!("db is {size} bytes, {} of them in use; files: {:?}", used.len(), originals.keys());
}

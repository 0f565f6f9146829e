//! The sled store on a real database: durability across reopen, checkpoints, compaction,
//! corruption, and replay equal to the fold of the full history.

use mutagen_core::{HaltReason, Side};
use mutagen_journal::{Event, Journal, JournalError, Record, SessionState};
use mutagen_reconcile::{Change, Digest, Entry};
use mutagen_session::SessionSpec;
use proptest::prelude::*;

const ID: &str = "sync_0000000000000000000000000000000000000000001";

fn spec() -> SessionSpec {
    SessionSpec {
        alpha: "/a".into(),
        beta: "/b".into(),
        name: "web".into(),
        labels: [("env".to_owned(), "dev".to_owned())].into(),
        paused: false,
        configuration: Default::default(),
        alpha_environment: Default::default(),
        beta_environment: Default::default(),
    }
}

fn created() -> Record {
    Record::now(
        0,
        Event::Created { identifier: ID.into(), version: "0.1.0".into(), spec: Box::new(spec()) },
    )
}

fn file(byte: u8) -> Option<Entry> {
    Some(Entry::file(Digest([byte; 32]), false))
}

/// The records of one cycle that writes `path` with content `byte`.
fn cycle(number: u64, path: &str, byte: u8) -> Vec<Record> {
    let change = Change::new(path, None, file(byte));
    vec![
        Record::now(
            number,
            Event::ScanCompleted {
                side: Side::Alpha,
                directories: 1,
                files: u64::from(byte),
                symbolic_links: 0,
                total_file_size: 0,
                duration_us: 5,
                problems: Vec::new(),
            },
        ),
        Record::now(number, Event::AncestorUpdated { changes: vec![change] }),
    ]
}

fn root() -> Record {
    let changes = vec![Change::new("", None, Some(Entry::Directory(Default::default())))];
    Record::now(1, Event::AncestorUpdated { changes })
}

fn fold(records: &[Record]) -> SessionState {
    SessionState::fold(records).expect("fold").expect("created")
}

#[test]
fn appended_records_survive_a_reopen_and_replay_to_the_fold() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut all = vec![created(), root()];
    all.extend((2..6).flat_map(|n| cycle(n, &format!("f{n}"), n as u8)));
    all.push(Record::now(5, Event::Paused));
    {
        let journal = Journal::open(&dir.path().join("journal")).expect("open");
        let mut log = journal.create(ID, &all[0]).expect("create");
        for record in &all[1..] {
            log.append(record).expect("append");
        }
        journal.flush().expect("flush");
    }
    let journal = after_release(|| Journal::open(&dir.path().join("journal"))).expect("reopen");
    assert_eq!(journal.identifiers(), vec![ID.to_owned()]);
    let (log, state) = journal.load(ID).expect("load");
    assert_eq!(state, fold(&all));
    assert!(state.paused);
    assert_eq!(state.successful_cycles, 5);
    let history: Vec<Record> = log.records(0).expect("records").into_iter().map(|r| r.1).collect();
    assert_eq!(history, all);
    let error = journal.create(ID, &created()).expect_err("duplicate");
    assert!(matches!(error, JournalError::Exists { .. }), "{error}");
}

#[test]
fn replay_starts_at_the_latest_checkpoint() {
    let dir = tempfile::tempdir().expect("tempdir");
    let journal = Journal::open(&dir.path().join("journal")).expect("open");
    let all = vec![created(), root()];
    let mut log = journal.create(ID, &all[0]).expect("create");
    log.append(&all[1]).expect("root");
    let mut all = all;
    for record in cycle(2, "a", 2) {
        log.append(&record).expect("append");
        all.push(record);
    }
    let checkpoint = Record::now(2, Event::Checkpoint(Box::new(fold(&all))));
    let at = log.append(&checkpoint).expect("checkpoint");
    for record in cycle(3, "b", 3) {
        log.append(&record).expect("append");
        all.push(record);
    }
    journal.flush().expect("flush");
    let (_, state) = journal.load(ID).expect("load from checkpoint");
    assert_eq!(state, fold(&all));
    drop((log, journal));
    // Load does not read records before the checkpoint, but the chain covers them: one
    // changed there is damage all the same, and the journal is refused.
    {
        let db = sled::open(dir.path().join("journal")).expect("raw");
        let tree = db.open_tree(format!("session/{ID}")).expect("tree");
        let mut key = vec![b'c'];
        key.extend(1u64.to_be_bytes());
        let mut value = tree.get(&key).expect("get").expect("record 1").to_vec();
        let last = value.len() - 1;
        value[last] ^= 1;
        tree.insert(key, value).expect("garble");
        db.flush().expect("flush");
    }
    let error = after_release(|| match Journal::open(&dir.path().join("journal")) {
        Err(error @ JournalError::Damaged { .. }) => Ok(error),
        Ok(_) => panic!("a changed record was accepted"),
        Err(error) => Err(error),
    })
    .expect("refused as damaged");
    assert!(error.to_string().contains("record 1: it does not match its chain hash"), "{error}");
    assert!(at > 1);
}

/// Opens a database this process just closed. sled's flusher thread can hold the file lock
/// for a moment after the last handle is dropped; the daemon never reopens its journal in
/// the same process, so only these tests, which garble records in between, wait for it.
fn after_release<T, E: std::fmt::Debug>(mut open: impl FnMut() -> Result<T, E>) -> Result<T, E> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match open() {
            Err(_) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            result => return result,
        }
    }
}

#[test]
fn an_impossible_history_is_reported_as_corruption() {
    let dir = tempfile::tempdir().expect("tempdir");
    let journal = Journal::open(&dir.path().join("journal")).expect("open");
    let mut log = journal.create(ID, &created()).expect("create");
    // A delta below a path that does not exist.
    log.append(&cycle(1, "no/parent", 1)[1]).expect("append");
    let error = journal.load(ID).expect_err("impossible").to_string();
    assert!(error.contains("ancestor delta does not apply"), "{error}");
}

#[test]
fn compaction_keeps_the_state_and_the_recent_cycles() {
    let dir = tempfile::tempdir().expect("tempdir");
    let journal = Journal::open(&dir.path().join("journal")).expect("open");
    let all = vec![created(), root()];
    let mut log = journal.create(ID, &all[0]).expect("create");
    log.append(&all[1]).expect("root");
    let mut all = all;
    for n in 2..=40 {
        for record in cycle(n, &format!("f{}", n % 7), n as u8) {
            log.append(&record).expect("append");
            all.push(record);
        }
    }
    let halted = Record::now(40, Event::Halted { reason: HaltReason::RootEmptied });
    log.append(&halted).expect("halt");
    all.push(halted);
    let state = fold(&all);
    let removed = log.compact(&state, 5).expect("compact");
    journal.flush().expect("flush");
    drop((log, journal));

    let journal = after_release(|| Journal::open(&dir.path().join("journal"))).expect("reopen");
    let (log, reloaded) = journal.load(ID).expect("load");
    assert_eq!(reloaded, state);
    let kept = log.records(0).expect("records");
    assert_eq!(kept.len() as u64 + removed, all.len() as u64 + 1);
    let oldest = kept.first().map(|(_, r)| r.cycle);
    assert_eq!(oldest, Some(36), "the last 5 cycles (36..=40) stay");
    assert!(matches!(kept.last().map(|(_, r)| &r.event), Some(Event::Checkpoint(_))));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Whatever the interleaving of cycles, lifecycle events, checkpoints and compactions,
    /// a reload equals the fold of the full history.
    #[test]
    fn reload_equals_the_fold_of_everything(ops in prop::collection::vec(0u8..8, 1..40)) {
        let dir = tempfile::tempdir().expect("tempdir");
        let journal = Journal::open(&dir.path().join("journal")).expect("open");
        let mut all = vec![created(), root()];
        let mut log = journal.create(ID, &all[0]).expect("create");
        log.append(&all[1]).expect("root");
        let mut number = 1;
        for op in ops {
            let records = match op {
                0..=2 => {
                    number += 1;
                    cycle(number, &format!("f{op}"), number as u8)
                }
                3 => vec![Record::now(number, Event::Paused)],
                4 => vec![Record::now(number, Event::Resumed)],
                5 => vec![Record::now(number, Event::Reset), root()],
                6 => {
                    let state = fold(&all);
                    log.compact(&state, 2).expect("compact");
                    Vec::new()
                }
                _ => vec![Record::now(number, Event::Checkpoint(Box::new(fold(&all))))],
            };
            for record in records {
                log.append(&record).expect("append");
                all.push(record);
            }
        }
        journal.flush().expect("flush");
        let (_, state) = journal.load(ID).expect("load");
        prop_assert_eq!(state, fold(&all));
    }
}

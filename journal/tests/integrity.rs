//! The journal against damage: every way of losing or changing an acknowledged record is
//! refused with the session and the cause named, the files stay byte for byte as they were,
//! and recovery keeps the intact sessions.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use mutagen_journal::store::chain_hash;
use mutagen_journal::{
    Event, Finding, Journal, JournalError, Record, Recovered, SessionState, head,
};
use mutagen_session::SessionSpec;

const A: &str = "sync_000000000000000000000000000000000000000000a";
const B: &str = "sync_000000000000000000000000000000000000000000b";

fn created(identifier: &str, name: &str) -> Record {
    let spec = SessionSpec {
        alpha: "/a".into(),
        beta: "/b".into(),
        name: name.into(),
        labels: Default::default(),
        paused: false,
        configuration: Default::default(),
        alpha_environment: Default::default(),
        beta_environment: Default::default(),
    };
    Record::now(
        0,
        Event::Created { identifier: identifier.into(), version: "0".into(), spec: Box::new(spec) },
    )
}

/// A journal with two sessions of three records each, flushed; returns its directory.
fn journal(root: &Path) -> PathBuf {
    let directory = root.join("journal");
    let journal = Journal::open(&directory).expect("open");
    for (identifier, name) in [(A, "alpha-one"), (B, "beta-two")] {
        let mut log = journal.create(identifier, &created(identifier, name)).expect("create");
        log.append(&Record::now(0, Event::FlushRequested)).expect("append");
        log.append(&Record::now(0, Event::Paused)).expect("append");
    }
    journal.flush().expect("flush");
    drop(journal);
    directory
}

/// Runs `change` on the raw sled database of `directory` (the head file is not touched).
fn raw(directory: &Path, change: impl FnOnce(&sled::Db)) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let db = loop {
        match sled::open(directory) {
            Ok(db) => break db,
            Err(_) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(error) => panic!("raw open: {error}"),
        }
    };
    change(&db);
    db.flush().expect("flush");
}

fn key(number: u64) -> Vec<u8> {
    let mut key = vec![b'c'];
    key.extend(number.to_be_bytes());
    key
}

/// Replaces record 1 of session `A` by `bytes`, with a valid chain hash when `chained`.
fn replace_record(db: &sled::Db, bytes: &[u8], chained: bool) {
    let tree = db.open_tree(format!("session/{A}")).expect("tree");
    let first = tree.get(key(0)).expect("get").expect("record 0");
    let previous: [u8; 32] = first[..32].try_into().expect("hash");
    let hash = if chained { chain_hash(&previous, 1, bytes) } else { [0; 32] };
    let mut value = hash.to_vec();
    value.extend_from_slice(bytes);
    tree.insert(key(1), value).expect("insert");
}

/// Every file under `path` with its content.
fn files(path: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut found = BTreeMap::new();
    for entry in std::fs::read_dir(path).expect("list") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            found.extend(files(&path));
        } else {
            found.insert(path.clone(), std::fs::read(&path).expect("read"));
        }
    }
    found
}

fn open_until_released(directory: &Path) -> Result<Journal, JournalError> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match Journal::open(directory) {
            Err(JournalError::Open { .. }) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            result => return result,
        }
    }
}

#[test]
fn an_intact_journal_reopens_with_every_session() {
    let dir = tempfile::tempdir().expect("tempdir");
    let directory = journal(dir.path());
    let journal = open_until_released(&directory).expect("reopen");
    let mut identifiers = journal.identifiers();
    identifiers.sort();
    assert_eq!(identifiers, [A, B]);
    let (_, state) = journal.load(A).expect("load");
    assert!(state.paused);
    let report = Journal::examine(&directory).expect("examine");
    assert_eq!(report.problems(), Vec::<String>::new());
    assert!(report.sessions.iter().all(|s| s.finding == Finding::Intact && s.records == 3));
}

#[test]
fn each_kind_of_damage_is_refused_naming_the_session_and_the_files_stay_as_they_were() {
    type Damage = fn(&Path);
    let cases: &[(&str, Damage, &str)] = &[
        (
            "an undecodable record",
            |d| raw(d, |db| replace_record(db, &[3, 0xff, 0xff, 0xff], true)),
            "record 1: undecodable record",
        ),
        (
            "an unknown format",
            |d| raw(d, |db| replace_record(db, &[9, 0], true)),
            "record 1: unknown record format 9",
        ),
        ("an empty record", |d| raw(d, |db| replace_record(db, &[], true)), "empty record"),
        (
            "a changed record",
            |d| {
                let bytes = Record::now(0, Event::Resumed).encode().expect("encode");
                raw(d, |db| replace_record(db, &bytes, false));
            },
            "record 1: it does not match its chain hash",
        ),
        (
            "a re-chained forgery",
            |d| {
                let bytes = Record::now(0, Event::Resumed).encode().expect("encode");
                raw(d, |db| replace_record(db, &bytes, true));
            },
            "record 2: it does not match its chain hash",
        ),
        (
            "a truncated value",
            |d| {
                raw(d, |db| {
                    let tree = db.open_tree(format!("session/{A}")).expect("tree");
                    tree.insert(key(1), vec![1, 2, 3]).expect("insert");
                });
            },
            "record 1: it is truncated",
        ),
        (
            "a record missing in the middle",
            |d| {
                raw(d, |db| {
                    db.open_tree(format!("session/{A}")).expect("tree").remove(key(1)).expect("rm");
                });
            },
            "record 1: it is missing (the next record kept is 2)",
        ),
        (
            "a shorter history",
            |d| {
                raw(d, |db| {
                    db.open_tree(format!("session/{A}")).expect("tree").remove(key(2)).expect("rm");
                });
            },
            "its history ends before record 2, and 3 records were acknowledged",
        ),
        (
            "a stray key (an unchained legacy record)",
            |d| {
                raw(d, |db| {
                    let tree = db.open_tree(format!("session/{A}")).expect("tree");
                    let mut legacy = vec![b'r'];
                    legacy.extend(7u64.to_be_bytes());
                    tree.insert(legacy, vec![1, 2, 3]).expect("insert");
                });
            },
            "record 3: the tree holds a key the journal never writes: \"r\\x00",
        ),
        (
            "a lost session",
            |d| raw(d, |db| assert!(db.drop_tree(format!("session/{A}")).expect("drop"))),
            "and sled has none of its records",
        ),
        (
            "a lost head file",
            |d| std::fs::remove_file(head::path(d)).expect("rm"),
            "journal.head is missing",
        ),
        (
            "a damaged head file",
            |d| {
                let path = head::path(d);
                let text = std::fs::read_to_string(&path).expect("read").replace(" 3 ", " 4 ");
                std::fs::write(path, text).expect("write");
            },
            "journal.head is damaged: its checksum does not match",
        ),
        (
            "a lost database",
            |d| std::fs::remove_dir_all(d).expect("rm"),
            "and sled has none of its records",
        ),
    ];
    for (what, damage, expected) in cases {
        let dir = tempfile::tempdir().expect("tempdir");
        let directory = journal(dir.path());
        damage(&directory);
        let before = files(dir.path());
        let error = open_until_released(&directory).expect_err(what);
        let JournalError::Damaged { problems, .. } = &error else {
            panic!("{what}: not refused as damaged: {error}");
        };
        let message = error.to_string();
        assert!(message.contains(expected), "{what}: {message}");
        assert!(message.contains(&directory.display().to_string()), "{what}: {message}");
        let named = problems.iter().any(|p| p.contains(A) && p.contains("alpha-one"));
        assert!(named || !expected.starts_with("record"), "{what}: {problems:?}");
        assert_eq!(files(dir.path()), before, "{what}: the files changed");
    }
}

/// `create` opens the session's tree, then appends its first record: a crash in between
/// leaves an empty tree that was never acknowledged. It holds nothing and must not stop the
/// journal from loading (it would, as a session without a creation record).
#[test]
fn a_creation_cut_before_its_first_record_is_dropped() {
    let dir = tempfile::tempdir().expect("tempdir");
    let directory = journal(dir.path());
    let unborn = format!("sync_{:0>43}", 9);
    raw(&directory, |db| {
        db.open_tree(format!("session/{unborn}")).expect("tree");
    });
    let journal = open_until_released(&directory).expect("open");
    let mut identifiers = journal.identifiers();
    identifiers.sort();
    assert_eq!(identifiers, vec![A.to_owned(), B.to_owned()]);
    for identifier in [A, B] {
        journal.load(identifier).expect("load");
    }
}

#[test]
fn records_written_after_the_last_acknowledgement_are_kept() {
    let dir = tempfile::tempdir().expect("tempdir");
    let directory = journal(dir.path());
    {
        let journal = open_until_released(&directory).expect("open");
        let (mut log, _) = journal.load(A).expect("load");
        log.append(&Record::now(0, Event::Resumed)).expect("append");
        // sled made it durable; the head file was not rewritten (a crash before it).
        journal.flush().expect("flush");
        let head = head::path(&directory);
        let text = std::fs::read_to_string(&head).expect("read");
        drop((log, journal));
        // Put back the head file of before the append.
        let mut heads = head::parse(&text).expect("parse");
        let link = heads.get_mut(A).expect("a");
        link.next -= 1;
        let tree_hash = {
            let mut hash = None;
            raw(&directory, |db| {
                let tree = db.open_tree(format!("session/{A}")).expect("tree");
                let value = tree.get(key(2)).expect("get").expect("record 2");
                hash = Some(<[u8; 32]>::try_from(&value[..32]).expect("hash"));
            });
            hash.expect("hash")
        };
        link.hash = tree_hash;
        head::write(&head, &heads).expect("write");
    }
    let journal = open_until_released(&directory).expect("the longer history is accepted");
    let (_, state) = journal.load(A).expect("load");
    assert!(!state.paused, "the unacknowledged resume stays");
}

#[test]
fn a_journal_without_a_chain_is_migrated_and_then_protected() {
    let dir = tempfile::tempdir().expect("tempdir");
    let directory = dir.path().join("journal");
    // The layout of the previous version: plain records under `r` keys, no head file.
    {
        let db = sled::open(&directory).expect("sled");
        let tree = db.open_tree(format!("session/{A}")).expect("tree");
        for (number, record) in
            [created(A, "old"), Record::now(0, Event::Paused)].iter().enumerate()
        {
            let mut key = vec![b'r'];
            key.extend((number as u64).to_be_bytes());
            tree.insert(key, record.encode().expect("encode")).expect("insert");
        }
        db.flush().expect("flush");
    }
    let journal = open_until_released(&directory).expect("migrated");
    let (_, state) = journal.load(A).expect("load");
    assert!(state.paused);
    assert_eq!(journal.records(A, 0).expect("records").len(), 2);
    drop(journal);
    assert!(head::read(&head::path(&directory)).expect("head").is_some_and(|h| h[A].next == 2));
    raw(&directory, |db| {
        db.open_tree(format!("session/{A}")).expect("tree").remove(key(1)).expect("rm");
    });
    let error = open_until_released(&directory).expect_err("now protected");
    assert!(error.to_string().contains("its history ends before record 1"), "{error}");
}

#[test]
fn recovery_keeps_intact_sessions_resets_damaged_ones_and_keeps_the_damaged_copy() {
    let dir = tempfile::tempdir().expect("tempdir");
    let directory = journal(dir.path());
    {
        // B gets a few more records, then loses its last two.
        let journal = open_until_released(&directory).expect("open");
        let (mut log, _) = journal.load(B).expect("load");
        log.append(&Record::now(0, Event::Resumed)).expect("append");
        log.append(&Record::now(0, Event::FlushRequested)).expect("append");
        journal.flush().expect("flush");
    }
    raw(&directory, |db| {
        let tree = db.open_tree(format!("session/{B}")).expect("tree");
        tree.remove(key(3)).expect("rm");
        tree.remove(key(4)).expect("rm");
    });
    let damaged = files(dir.path());
    let keep = dir.path().join("journal.damaged");
    let recovery = Journal::recover(&directory, &keep).expect("recover");
    let outcomes: BTreeMap<_, _> = recovery
        .sessions
        .iter()
        .map(|(id, name, outcome)| (id.as_str(), (name, outcome)))
        .collect();
    assert_eq!(outcomes[A].1, &Recovered::Intact);
    assert!(matches!(outcomes[B].1, Recovered::Reset(detail) if detail.contains("record 3")));
    assert_eq!(outcomes[B].0.as_deref(), Some("beta-two"));

    // The damaged journal moved whole into `keep`.
    let kept = files(&keep);
    assert_eq!(kept.len(), damaged.len());
    for (path, content) in &damaged {
        let moved = keep.join(path.strip_prefix(dir.path()).expect("inside"));
        assert_eq!(kept.get(&moved), Some(content), "{}", moved.display());
    }

    let journal = open_until_released(&directory).expect("the recovered journal opens");
    let (_, a) = journal.load(A).expect("a");
    assert!(a.paused);
    let (_, b): (_, SessionState) = journal.load(B).expect("b");
    assert!(b.paused, "a damaged session comes back paused");
    assert!(b.ancestor.is_none(), "and reset");
    let history = journal.records(B, 0).expect("history");
    assert!(
        matches!(&history[3].1.event, Event::Error { message } if message.contains("recovered"))
    );
}

#[test]
fn a_damaged_forward_session_is_recovered_paused_and_replays_as_one() {
    const F: &str = "fwrd_00000000000000000000000000000000000000000f";
    let dir = tempfile::tempdir().expect("tempdir");
    let directory = journal(dir.path());
    {
        let journal = open_until_released(&directory).expect("open");
        let spec = mutagen_session::forward::ForwardSpec {
            source: "tcp:127.0.0.1:8080".into(),
            destination: "tcp:127.0.0.1:80".into(),
            name: "web".into(),
            labels: Default::default(),
            paused: false,
            socket: Default::default(),
            source_environment: Default::default(),
            destination_environment: Default::default(),
        };
        let created = Record::now(
            0,
            Event::ForwardCreated { identifier: F.into(), version: "0".into(), spec },
        );
        let mut log = journal.create(F, &created).expect("create");
        for message in ["refused", "refused again"] {
            log.append(&Record::now(0, Event::Error { message: message.into() })).expect("append");
        }
        journal.flush().expect("flush");
        // A synchronization session's replay refuses a forward session's log.
        assert!(matches!(journal.load(F), Err(JournalError::Corrupt { .. })));
    }
    raw(&directory, |db| {
        let tree = db.open_tree(format!("session/{F}")).expect("tree");
        tree.remove(key(2)).expect("rm");
    });
    let keep = dir.path().join("journal.damaged");
    let recovery = Journal::recover(&directory, &keep).expect("recover");
    let outcome = recovery.sessions.iter().find(|(id, ..)| id == F).expect("listed");
    assert_eq!(outcome.1.as_deref(), Some("web"));
    assert!(
        matches!(&outcome.2, Recovered::Reset(detail) if detail.contains("record 2")),
        "{outcome:?}"
    );
    let journal = open_until_released(&directory).expect("the recovered journal opens");
    let (_, state) = journal.load_forward(F).expect("replays as a forward session");
    assert!(state.paused, "a damaged forward session comes back paused");
    assert!(state.last_error.as_deref().is_some_and(|e| e.contains("recovered")));
    let (_, a) = journal.load(A).expect("the others are kept");
    assert!(a.paused);
}

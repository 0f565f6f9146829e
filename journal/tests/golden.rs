//! Golden file for the journal's disk format: a record of every event kind, encoded, must
//! match `tests/golden/records.txt` byte for byte, and every stored line must decode back to
//! the same record. A failure means the disk format changed: old journals would no longer
//! load. Bump `FORMAT_VERSION` (with a migration) and re-bless with
//! `MUTAGEN_BLESS=1 cargo test -p mutagen-journal --test golden`.
//!
//! `tests/golden/records-format-1.txt` and `records-format-2.txt` are the same set as older
//! formats wrote it, frozen: they must keep decoding, into the same records except for what
//! those formats could not hold (format 1: compression and the Docker environment; both: the
//! endpoints' identities, and the event kinds added since).

use std::collections::BTreeMap;
use std::path::Path;

use mutagen_core::{HaltReason, Side};
use mutagen_journal::{Event, Record, SessionState, SideState};
use mutagen_reconcile::{Change, Conflict, Digest, Entry, Problem};
use mutagen_session::{Configuration, SessionSpec};

fn file(byte: u8) -> Option<Entry> {
    Some(Entry::file(Digest([byte; 32]), byte.is_multiple_of(2)))
}

/// The journal format a set of records is written in.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Format {
    One = 1,
    Two = 2,
    Current = 3,
}

/// The spec, as much of it as `format` could hold.
fn spec(format: Format) -> SessionSpec {
    let legacy = format == Format::One;
    let configuration = if legacy { Configuration::predating() } else { Configuration::default() };
    let docker = [("DOCKER_HOST".to_owned(), "unix:///run/d.sock".to_owned())];
    SessionSpec {
        alpha: "/home/u/a".into(),
        beta: "u@host:2222:~/b".into(),
        name: "web".into(),
        labels: BTreeMap::from([("env".to_owned(), "dev".to_owned())]),
        paused: false,
        configuration: Box::new(configuration),
        alpha_environment: Default::default(),
        beta_environment: if legacy { Default::default() } else { docker.into() },
    }
}

fn events(format: Format) -> Vec<(&'static str, Event)> {
    let change = Change::new("a", file(1), file(2));
    let problem = Problem::new("p", "permission denied");
    let conflict = Conflict {
        root: "c".into(),
        alpha_changes: vec![Change::new("c", None, file(3))],
        beta_changes: vec![Change::new("c", None, file(4))],
    };
    let state = SessionState {
        identifier: "sync_0000000000000000000000000000000000000000001".into(),
        creation_time: 1_700_000_000_000_000_000,
        creating_version: "0.1.0".into(),
        spec: spec(format),
        paused: true,
        ancestor: Some(Entry::Directory(
            BTreeMap::from([("a".to_owned(), Entry::file(Digest([2; 32]), false))]).into(),
        )),
        cycle: 9,
        successful_cycles: 7,
        halted: Some(HaltReason::RootEmptied),
        last_error: Some("boom".into()),
        conflicts: vec![conflict.clone()],
        alpha: SideState { scanned: true, directories: 1, files: 1, ..SideState::default() },
        beta: SideState::default(),
        terminated: false,
        alpha_identity: None,
        beta_identity: (format == Format::Current).then(|| "0e97d0a6cd62".to_owned()),
    };
    let mut events = vec![
        (
            "created",
            Event::Created {
                identifier: state.identifier.clone(),
                version: "0.1.0".into(),
                spec: Box::new(spec(format)),
            },
        ),
        ("paused", Event::Paused),
        ("resumed", Event::Resumed),
        ("flush-requested", Event::FlushRequested),
        (
            "scan-completed",
            Event::ScanCompleted {
                side: Side::Beta,
                directories: 2,
                files: 3,
                symbolic_links: 1,
                total_file_size: 4096,
                duration_us: 1234,
                problems: vec![problem.clone()],
            },
        ),
        ("staged", Event::Staged { side: Side::Alpha, files: 5, bytes: 6 }),
        (
            "transition-applied",
            Event::TransitionApplied {
                side: Side::Beta,
                changes: vec![change.clone()],
                problems: vec![problem],
                missing_files: true,
            },
        ),
        ("conflicts-recorded", Event::ConflictsRecorded { conflicts: vec![conflict] }),
        ("ancestor-updated", Event::AncestorUpdated { changes: vec![change] }),
        ("checkpoint", Event::Checkpoint(Box::new(state))),
        ("halted", Event::Halted { reason: HaltReason::RootDeletion }),
        ("error", Event::Error { message: "unable to scan".into() }),
        ("reset", Event::Reset),
        ("terminated", Event::Terminated),
        (
            "connected",
            Event::Connected {
                side: Side::Beta,
                url: "u@host:2222:~/b".into(),
                agent_version: "0.1.0".into(),
                root: "/home/u/b".into(),
                duration_ms: 321,
                round_trip_us: 456,
            },
        ),
        (
            "disconnected",
            Event::Disconnected { side: Side::Alpha, reason: "the connection closed".into() },
        ),
    ];
    if format == Format::Current {
        events.push((
            "identified",
            Event::Identified { side: Side::Beta, identity: "0e97d0a6cd62".into() },
        ));
        events.push((
            "endpoint-replaced",
            Event::EndpointReplaced {
                side: Side::Beta,
                previous: "0e97d0a6cd62".into(),
                current: "77aa01".into(),
            },
        ));
        let forward = mutagen_session::forward::ForwardSpec {
            source: "tcp:127.0.0.1:8080".into(),
            destination: "u@host:tcp:127.0.0.1:80".into(),
            name: "web".into(),
            labels: BTreeMap::from([("env".to_owned(), "dev".to_owned())]),
            paused: false,
            socket: mutagen_session::forward::SocketOptions {
                overwrite: mutagen_session::forward::OverwriteMode::Overwrite,
                owner: Some("www".into()),
                group: None,
                mode: 0o660,
            },
            source_environment: Default::default(),
            destination_environment: Default::default(),
        };
        events.push((
            "created",
            Event::ForwardCreated {
                identifier: "fwrd_0000000000000000000000000000000000000000001".into(),
                version: "0.1.0".into(),
                spec: forward,
            },
        ));
        events.push(("halt-allowed", Event::HaltAllowed { reason: HaltReason::RootEmptied }));
        events.push((
            "conflict-resolved",
            Event::ConflictResolved {
                winner: Side::Beta,
                changes: vec![Change::new("c", None, file(4))],
            },
        ));
        // Permissions mode posix: entries with bits, and a change of a directory's bits.
        let bits =
            Entry::File { digest: Digest([5; 32]), executable: true, permissions: Some(0o750) };
        let directory = mutagen_reconcile::Directory {
            children: BTreeMap::from([("run".to_owned(), bits)]),
            permissions: Some(0o2775),
        };
        events.push((
            "ancestor-updated",
            Event::AncestorUpdated {
                changes: vec![
                    Change::new("p", None, Some(Entry::Directory(directory))),
                    Change::permissions("q", Some(0o755), Some(0o700)),
                ],
            },
        ));
    }
    events
}

fn records(format: Format) -> Vec<(&'static str, Record)> {
    events(format)
        .into_iter()
        .enumerate()
        .map(|(i, (name, event))| {
            (name, Record { time: 1_700_000_000_000_000_000 + i as u64, cycle: 3, event })
        })
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).expect("hex"))
        .collect()
}

#[test]
fn records_match_the_golden_file() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/records.txt");
    let records = records(Format::Current);
    for (name, record) in &records {
        assert_eq!(*name, record.event.kind(), "every kind, named as history shows it");
    }
    let text: String = records
        .iter()
        .map(|(name, record)| format!("{name} {}\n", hex(&record.encode().expect("encode"))))
        .collect();
    if std::env::var_os("MUTAGEN_BLESS").is_some() {
        std::fs::write(&path, &text).expect("bless");
    }
    let golden = std::fs::read_to_string(&path).expect("golden file");
    assert_eq!(text, golden, "the disk format changed: bump FORMAT_VERSION and re-bless");
    for ((name, record), line) in records.iter().zip(golden.lines()) {
        let (_, bytes) = line.split_once(' ').expect("name hex");
        assert_eq!(&Record::decode(&unhex(bytes)).expect(name), record, "{name}");
    }
}

#[test]
fn older_formats_still_decode() {
    for (format, file) in
        [(Format::One, "records-format-1.txt"), (Format::Two, "records-format-2.txt")]
    {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden").join(file);
        let golden = std::fs::read_to_string(&path).expect("golden file");
        let expected = records(format);
        assert_eq!(golden.lines().count(), expected.len(), "{file}: one line per event kind");
        for ((name, record), line) in expected.iter().zip(golden.lines()) {
            let (stored_name, bytes) = line.split_once(' ').expect("name hex");
            assert_eq!(stored_name, *name);
            let bytes = unhex(bytes);
            assert_eq!(bytes[0], format as u8, "{file}: {name} is in its format");
            assert_eq!(&Record::decode(&bytes).expect(name), record, "{file}: {name}");
            assert_eq!(Record::decode_stamp(&bytes), Ok((record.time, record.cycle)), "{name}");
        }
    }
}

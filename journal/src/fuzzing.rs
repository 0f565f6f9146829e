//! The fuzz target's body, shared with `cargo test` (which replays the committed corpus).
//!
//! The input stands for what a damaged or hostile disk could hold: a session's stored values
//! and the head file. Whatever the bytes, decoding fails with an error or yields a record
//! that survives a round trip, and replay fails with an error, never a panic.

use crate::event::{Event, Record};
use crate::head;
use crate::state::SessionState;

/// Decodes `data` as a session's stored records (each value prefixed by a two-byte
/// big-endian length, as sled would hand them back one by one), replays the decodable ones,
/// and parses `data` as a head file, both as it is and with a valid checksum appended.
///
/// # Panics
/// When a decoded record does not survive `encode` then `decode` unchanged, when the stamp
/// decoder disagrees with the full decoder, or when a parsed head file does not survive
/// `render` then `parse`: each is a bug.
pub fn journal_values(data: &[u8]) {
    let mut rest = data;
    let mut state: Option<SessionState> = None;
    while let [high, low, tail @ ..] = rest {
        let length = usize::from(u16::from_be_bytes([*high, *low])).min(tail.len());
        let (value, tail) = tail.split_at(length);
        rest = tail;
        let stamp = Record::decode_stamp(value);
        let Ok(record) = Record::decode(value) else { continue };
        assert_eq!(stamp, Ok((record.time, record.cycle)), "the stamp decoder disagrees");
        let encoded = record.encode().expect("a decoded record encodes");
        assert_eq!(
            Record::decode(&encoded),
            Ok(record.clone()),
            "a record changed in a round trip"
        );
        // Replay refuses what cannot follow; it must never panic.
        if SessionState::step(&mut state, &record).is_err() {
            state = None;
        }
    }
    let text = String::from_utf8_lossy(data);
    parse_head(&text);
    // Random bytes almost never carry a matching checksum: sign them, so that the lines
    // behind it are parsed too (the appended end line is the last "end ", as parse wants).
    let body = &text;
    let signed = format!("{body}end {}\n", blake3::hash(body.as_bytes()).to_hex());
    parse_head(&signed);
}

fn parse_head(text: &str) {
    if let Ok(heads) = head::parse(text) {
        let rendered = head::render(&heads);
        assert_eq!(head::parse(&rendered), Ok(heads), "a head file changed in a round trip");
    }
}

/// Seed inputs for [`journal_values`]: a session's records as the daemon writes them
/// (created, a scan, an ancestor update, paused, resumed, checkpointed), each behind its
/// length, and a head file. `fuzz/corpus/journal_values` holds them as files.
///
/// # Panics
/// Never (the records encode).
pub fn journal_seeds() -> Vec<(&'static str, Vec<u8>)> {
    use mutagen_core::Side;
    use mutagen_reconcile::{Change, Digest, Entry};
    let identifier = format!("sync_{:0>43}", 1);
    let spec = mutagen_session::SessionSpec {
        alpha: "/seed/alpha".into(),
        beta: "/seed/beta".into(),
        name: "seed".into(),
        labels: Default::default(),
        paused: false,
        configuration: Default::default(),
        alpha_environment: Default::default(),
        beta_environment: Default::default(),
    };
    let file = Entry::file(Digest([7; 32]), true);
    let mut records = vec![
        Record {
            time: 1,
            cycle: 0,
            event: Event::Created {
                identifier: identifier.clone(),
                version: "0".into(),
                spec: Box::new(spec),
            },
        },
        Record {
            time: 2,
            cycle: 1,
            event: Event::ScanCompleted {
                side: Side::Alpha,
                directories: 1,
                files: 1,
                symbolic_links: 0,
                total_file_size: 5,
                duration_us: 9,
                problems: Vec::new(),
            },
        },
        Record {
            time: 3,
            cycle: 1,
            event: Event::AncestorUpdated {
                changes: vec![
                    Change::new("", None, Some(Entry::Directory(Default::default()))),
                    Change::new("f", None, Some(file)),
                    // Permissions mode posix: bits on a directory and a file, and a change of
                    // the directory's bits alone.
                    Change::new(
                        "d",
                        None,
                        Some(Entry::Directory(mutagen_reconcile::Directory {
                            children: [(
                                "x".to_owned(),
                                Entry::File {
                                    digest: Digest([8; 32]),
                                    executable: false,
                                    permissions: Some(0o640),
                                },
                            )]
                            .into(),
                            permissions: Some(0o2750),
                        })),
                    ),
                    Change::permissions("d", Some(0o2750), Some(0o700)),
                ],
            },
        },
        Record { time: 4, cycle: 1, event: Event::Paused },
        Record { time: 5, cycle: 1, event: Event::Resumed },
    ];
    let state = SessionState::fold(&records).expect("folds").expect("created");
    records.push(Record { time: 6, cycle: 1, event: Event::Checkpoint(Box::new(state)) });
    let mut values = Vec::new();
    for record in &records {
        let bytes = record.encode().expect("encodes");
        values.extend(u16::try_from(bytes.len()).expect("small").to_be_bytes());
        values.extend(bytes);
    }
    let mut heads = head::Heads::new();
    heads.insert(identifier, head::Link { next: 6, hash: [9; 32] });
    vec![("session", values), ("head", head::render(&heads).into_bytes())]
}

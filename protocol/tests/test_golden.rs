//! Golden files for the agent protocol: every message kind, encoded as a frame, must match
//! `tests/golden/frames.txt` byte for byte, and every line there must decode back to the same
//! message. A failure means the wire format changed: bump `PROTOCOL_VERSION` and re-bless with
//! `MUTAGEN_BLESS=1 cargo test -p mutagen-protocol --test runner golden`.

use std::collections::BTreeMap;
use std::path::Path;

use mutagen_endpoint::rsync::{BlockHash, Signature};
use mutagen_endpoint::{Snapshot, StageRequest, SymlinkMode, TransitionResult, Transmission};
use mutagen_protocol::codec::{decode, write_frame};
use mutagen_protocol::compression::Compression;
use mutagen_protocol::messages::SnapshotTransfer;
use mutagen_protocol::{EndpointOptions, Hello, MAGIC, Request, Response};
use mutagen_reconcile::{Change, Digest, Directory, Entry, Problem};

fn file(byte: u8, executable: bool) -> Entry {
    Entry::file(Digest([byte; 32]), executable)
}

fn tree() -> Entry {
    Entry::Directory(Directory::from(BTreeMap::from([
        ("a.txt".to_owned(), file(1, false)),
        (
            "bin".to_owned(),
            Entry::Directory([("run".to_owned(), file(2, true))].into_iter().collect()),
        ),
        ("link".to_owned(), Entry::SymbolicLink { target: "a.txt".into() }),
        ("fifo".to_owned(), Entry::Untracked),
        ("bad".to_owned(), Entry::Problematic { problem: "unreadable".into() }),
    ])))
}

fn requests() -> Vec<StageRequest> {
    let mut based = StageRequest::new("bin/run", Digest([2; 32]));
    based.base = Some(Signature {
        block_size: 1024,
        last_block_size: 10,
        blocks: vec![BlockHash { weak: 7, strong: [9; 16] }],
    });
    vec![StageRequest::new("a.txt", Digest([1; 32])), based]
}

fn requests_and_responses() -> Vec<(&'static str, Vec<u8>)> {
    let frame = |message: &dyn erased::Frame| message.frame();
    let options = EndpointOptions {
        root: "~/project".into(),
        staging_name: "sync_x-beta".into(),
        ignores: vec!["*.o".into(), "!keep.o".into()],
        ignore_vcs: true,
        symlink_mode: SymlinkMode::PosixRaw,
        read_only: false,
        watch: true,
        stage_mode: mutagen_core::StageMode::Auto,
        ..Default::default()
    };
    let change = Change::new("a.txt", Some(file(1, false)), Some(file(3, false)));
    vec![
        ("hello", frame(&Hello { protocol: 3, version: "0.1.0".into(), build: "ab".repeat(32) })),
        ("compression-none", frame(&Compression::None)),
        ("compression-zstd", frame(&Compression::Zstd)),
        ("request-initialize", frame(&Request::Initialize(options))),
        ("request-check", frame(&Request::Check)),
        ("request-scan", frame(&Request::Scan { base: Some(3) })),
        ("request-stage", frame(&Request::Stage(requests()))),
        ("request-supply", frame(&Request::Supply(requests()))),
        (
            "request-receive-begin",
            frame(&Request::Receive(Transmission::Begin {
                request: requests()[0].clone(),
                size: 5,
            })),
        ),
        ("request-receive-data", frame(&Request::Receive(Transmission::Data(b"hello".to_vec())))),
        (
            "request-receive-blocks",
            frame(&Request::Receive(Transmission::Blocks { start: 2, count: 3 })),
        ),
        ("request-receive-end", frame(&Request::Receive(Transmission::End))),
        (
            "request-receive-unavailable",
            frame(&Request::Receive(Transmission::Unavailable {
                request: requests()[0].clone(),
                error: "gone".into(),
            })),
        ),
        (
            "request-transition",
            frame(&Request::Transition(vec![change, Change::new("", None, Some(tree()))])),
        ),
        ("request-shutdown", frame(&Request::Shutdown)),
        ("request-ping", frame(&Request::Ping)),
        ("response-initialized", frame(&Response::Initialized { root: "/home/u/project".into() })),
        (
            "response-checked",
            frame(&Response::Checked { changed: true, watch_problem: Some("polling".into()) }),
        ),
        (
            "response-scanned",
            frame(&Response::Scanned {
                snapshot: SnapshotTransfer::Full {
                    generation: 1,
                    snapshot: Snapshot {
                        content: Some(tree()),
                        directories: 2,
                        files: 2,
                        symbolic_links: 1,
                        total_file_size: 99,
                        problems: vec![Problem::new("bad", "unreadable")],
                    },
                },
                watch_problem: None,
            }),
        ),
        (
            "response-scanned-delta",
            frame(&Response::Scanned {
                snapshot: SnapshotTransfer::Delta {
                    base: 1,
                    generation: 2,
                    changes: vec![("a.txt".into(), Some(file(4, false))), ("link".into(), None)],
                    directories: 2,
                    files: 2,
                    symbolic_links: 0,
                    total_file_size: 98,
                    problems: Vec::new(),
                },
                watch_problem: Some("polling".into()),
            }),
        ),
        (
            "response-scanned-delta-posix",
            frame(&Response::Scanned {
                snapshot: SnapshotTransfer::Delta {
                    base: 2,
                    generation: 3,
                    changes: vec![
                        (
                            "bin".into(),
                            Some(Entry::Directory(Directory::with_permissions(Some(0o2750)))),
                        ),
                        (
                            "a.txt".into(),
                            Some(Entry::File {
                                digest: Digest([4; 32]),
                                executable: false,
                                permissions: Some(0o640),
                            }),
                        ),
                    ],
                    directories: 2,
                    files: 2,
                    symbolic_links: 0,
                    total_file_size: 98,
                    problems: Vec::new(),
                },
                watch_problem: None,
            }),
        ),
        ("response-staged", frame(&Response::Staged(requests()))),
        ("response-transmission", frame(&Response::Transmission(Transmission::End))),
        ("response-supplied", frame(&Response::Supplied)),
        (
            "response-transitioned",
            frame(&Response::Transitioned(TransitionResult {
                results: vec![Some(file(3, false)), None],
                problems: vec![Problem::new("x", "modification detected")],
                missing_files: true,
            })),
        ),
        ("response-done", frame(&Response::Done)),
        ("response-error", frame(&Response::Error("unable to scan root /x: gone".into()))),
        ("response-wakeup", frame(&Response::Wakeup)),
        ("response-heartbeat", frame(&Response::Heartbeat)),
    ]
}

mod erased {
    /// Encodes any message as one frame.
    pub trait Frame {
        fn frame(&self) -> Vec<u8>;
    }

    impl<T: serde::Serialize> Frame for T {
        fn frame(&self) -> Vec<u8> {
            let mut bytes = Vec::new();
            super::write_frame(&mut bytes, self).expect("encode");
            bytes
        }
    }
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
fn frames_match_the_golden_file() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/frames.txt");
    let encoded = requests_and_responses();
    let text: String = std::iter::once(format!("magic {}\n", hex(&MAGIC)))
        .chain(encoded.iter().map(|(name, bytes)| format!("{name} {}\n", hex(bytes))))
        .collect();
    if std::env::var_os("MUTAGEN_BLESS").is_some() {
        std::fs::write(&path, &text).expect("bless");
    }
    let golden = std::fs::read_to_string(&path).expect("golden file");
    assert_eq!(text, golden, "the wire format changed: bump PROTOCOL_VERSION and re-bless");
    // And the stored bytes decode to the same messages.
    for line in golden.lines().skip(1) {
        let (name, bytes) = line.split_once(' ').expect("name hex");
        let body = &unhex(bytes)[4..];
        let again = if name == "hello" {
            erased::Frame::frame(&decode::<Hello>(body).expect(name))
        } else if name.starts_with("compression") {
            erased::Frame::frame(&decode::<Compression>(body).expect(name))
        } else if name.starts_with("request") {
            erased::Frame::frame(&decode::<Request>(body).expect(name))
        } else {
            erased::Frame::frame(&decode::<Response>(body).expect(name))
        };
        assert_eq!(hex(&again), bytes, "{name} decodes to the same message");
    }
}

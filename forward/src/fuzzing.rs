//! Entry points for fuzz targets (`fuzz/fuzz_targets/forward_link.rs`).

use std::io::{Cursor, Read, Write};
use std::time::Duration;

use crate::mux::{End, Frame, Mux, write_frame};

/// Plays `bytes` as what a (possibly malicious) agent sends over a link: every stream it
/// opens is accepted and read to its end, and the link must close cleanly, without a panic
/// and without a stream left registered.
pub fn link(bytes: &[u8]) {
    let reader: Box<dyn Read + Send> = Box::new(Cursor::new(bytes.to_vec()));
    let writer: Box<dyn Write + Send> = Box::new(std::io::sink());
    let Ok((mux, incoming)) = Mux::start(reader, writer, Box::new(()), End::Daemon) else {
        return;
    };
    let mut readers = Vec::new();
    for pending in &incoming {
        let (mut reader, mut writer) = pending.accept().split();
        let _ = writer.write(b"hello");
        readers.push(std::thread::spawn(move || {
            let mut sink = Vec::new();
            let _ = reader.read_to_end(&mut sink);
            drop(writer);
        }));
    }
    for reader in readers {
        let _ = reader.join();
    }
    let closing = mux.closing();
    let _ = closing.recv_timeout(Duration::from_secs(5));
    assert!(mux.closed().is_some(), "the link did not close at the end of its input");
    assert_eq!(mux.streams(), 0, "streams left registered");
}

/// Seeds for the `forward_link` corpus: well-formed conversations, and ones that break the
/// protocol (checked to be current by the crate's tests).
pub fn link_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let encode = |frames: &[Frame]| {
        let mut bytes = Vec::new();
        for frame in frames {
            write_frame(&mut bytes, frame).expect("a seed frame encodes");
        }
        bytes
    };
    let data = |id, bytes: &[u8]| Frame::Data { id, bytes: bytes.to_vec() };
    vec![
        (
            "conversation",
            encode(&[
                Frame::Open { id: 2 },
                data(2, b"hello"),
                Frame::Credit { id: 2, bytes: 5 },
                Frame::Close { id: 2 },
                Frame::Heartbeat,
            ]),
        ),
        (
            "two-streams-reset",
            encode(&[
                Frame::Open { id: 2 },
                Frame::Open { id: 4 },
                data(4, &[0; 300]),
                Frame::Reset { id: 2, error: "gone".into() },
                Frame::Opened { id: 1 },
                Frame::Refused { id: 3, error: "no".into() },
                Frame::Failed { error: "listener failed".into() },
            ]),
        ),
        ("wrong-parity", encode(&[Frame::Open { id: 1 }, data(1, b"x")])),
        ("unknown-stream", encode(&[data(8, b"nobody"), Frame::Close { id: 8 }])),
    ]
}

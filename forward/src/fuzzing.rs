//! Entry points for fuzz targets (`fuzz/fuzz_targets/forward_link.rs`).

use std::io::{Cursor, Read, Write};
use std::time::Duration;

use crate::mux::{End, Mux};

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

//! Compression of the frames after the handshake.
//!
//! # Negotiation
//! The agent greets uncompressed ([`crate::MAGIC`], [`crate::Hello`]). The daemon answers with
//! one uncompressed frame holding the [`Compression`] it chose; from the next byte on, both
//! directions use it. An agent of the same [`crate::PROTOCOL_VERSION`] supports every
//! variant (the daemon replaces an agent of another version before it gets this far).
//!
//! # Stream compression
//! With [`Compression::Zstd`] each direction is one zstd stream for the life of the
//! connection, so that names repeated across snapshots and requests compress against each
//! other. A writer's `flush` ends the current zstd block, so every frame written before a
//! flush can be decoded by the peer at once: compression never delays a message.

use std::io::{self, BufReader, Read, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

pub use mutagen_core::Compression;

/// The zstd level: the fastest of the regular levels. On loopback the link is CPU-bound, and
/// on slow links level 1 already gets most of the gain on source trees.
const LEVEL: i32 = 1;

/// Wraps what the peer writes in the chosen decompression.
///
/// # Errors
/// When the decompressor cannot be set up.
pub fn reader(
    inner: Box<dyn Read + Send>,
    compression: Compression,
) -> io::Result<Box<dyn Read + Send>> {
    match compression {
        Compression::None => Ok(inner),
        Compression::Zstd => {
            let ended = Arc::new(AtomicBool::new(false));
            let input = NoticesEnd { inner, ended: ended.clone() };
            let decoder =
                zstd::stream::read::Decoder::with_buffer(BufReader::with_capacity(1 << 16, input))?;
            Ok(Box::new(Decompressing { decoder, ended }))
        }
    }
}

/// Wraps what this side writes in the chosen compression.
///
/// # Errors
/// When the compressor cannot be set up.
pub fn writer(
    inner: Box<dyn Write + Send>,
    compression: Compression,
) -> io::Result<Box<dyn Write + Send>> {
    match compression {
        Compression::None => Ok(inner),
        Compression::Zstd => Ok(Box::new(zstd::stream::write::Encoder::new(inner, LEVEL)?)),
    }
}

/// Records that the underlying stream ended.
struct NoticesEnd {
    inner: Box<dyn Read + Send>,
    ended: Arc<AtomicBool>,
}

impl Read for NoticesEnd {
    fn read(&mut self, buffer: &mut [u8]) -> io::Result<usize> {
        let read = self.inner.read(buffer)?;
        if read == 0 && !buffer.is_empty() {
            self.ended.store(true, Ordering::Relaxed);
        }
        Ok(read)
    }
}

/// A zstd decoder whose stream may end without the zstd frame's epilogue: the peer never
/// finishes its stream, it just goes away. Everything it flushed before has been decoded by
/// then, so the end of the underlying stream is reported as an end of stream; the frame
/// decoder above tells a clean end (between frames) from a cut one.
struct Decompressing {
    decoder: zstd::stream::read::Decoder<'static, BufReader<NoticesEnd>>,
    ended: Arc<AtomicBool>,
}

impl Read for Decompressing {
    fn read(&mut self, buffer: &mut [u8]) -> io::Result<usize> {
        match self.decoder.read(buffer) {
            Err(_) if self.ended.load(Ordering::Relaxed) => Ok(0),
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::{BufWriter, Cursor};
    use std::sync::Mutex;

    use super::*;
    use crate::codec::{read_frame, write_frame};

    /// A writer whose bytes can be read while it lives.
    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);

    impl Write for Shared {
        fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
            self.0.lock().expect("lock").extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Shared {
        fn bytes(&self) -> Vec<u8> {
            self.0.lock().expect("lock").clone()
        }
    }

    #[test]
    fn every_flushed_frame_decodes_before_the_stream_ends() {
        for compression in [Compression::None, Compression::Zstd] {
            let wire = Shared::default();
            let mut writer =
                BufWriter::new(writer(Box::new(wire.clone()), compression).expect("writer"));
            let names: Vec<String> = (0..2000).map(|i| format!("src/module/file-{i}.rs")).collect();
            // Each frame flushed on its own, as the endpoint flushes each request: a cut in the
            // second leaves the first whole.
            write_frame(&mut writer, &names).expect("write");
            writer.flush().expect("flush");
            write_frame(&mut writer, &"second".to_owned()).expect("write");
            writer.flush().expect("flush");
            // The writer stays alive (a stream without an epilogue, as a peer that goes away).
            let bytes = wire.bytes();
            if compression == Compression::Zstd {
                let plain = postcard::to_stdvec(&names).expect("encode").len();
                assert!(bytes.len() * 4 < plain, "{} compressed of {plain}", bytes.len());
            }
            let mut reader =
                reader(Box::new(Cursor::new(bytes.clone())), compression).expect("reader");
            assert_eq!(
                read_frame::<Vec<String>>(&mut reader, 1 << 20).expect("first"),
                Some(names)
            );
            assert_eq!(
                read_frame::<String>(&mut reader, 64).expect("second"),
                Some("second".into())
            );
            assert_eq!(read_frame::<String>(&mut reader, 64).expect("end"), None, "{compression}");

            // Cut short: the first frame comes out whole, the second never does (an error
            // uncompressed; with zstd an error, or an end if none of its block decoded).
            let cut = &bytes[..bytes.len() - 3];
            let mut reader =
                super::reader(Box::new(Cursor::new(cut.to_vec())), compression).expect("reader");
            let first = read_frame::<Vec<String>>(&mut reader, 1 << 20).expect("first");
            assert_eq!(first.map(|names| names.len()), Some(2000), "{compression}");
            let second = read_frame::<String>(&mut reader, 64);
            assert!(!matches!(second, Ok(Some(_))), "{compression}: {second:?}");
            if compression == Compression::None {
                assert!(second.is_err(), "a cut inside a frame is an error: {second:?}");
            }
        }
    }

    #[test]
    fn garbage_yields_no_frame() {
        // A frame header that plain reading would accept, then garbage.
        let mut bytes = vec![0, 0, 0, 1, 0];
        bytes.extend([0x55; 64]);
        let mut reader = reader(Box::new(Cursor::new(bytes)), Compression::Zstd).expect("reader");
        let result = read_frame::<u8>(&mut reader, 64);
        assert!(!matches!(result, Ok(Some(_))), "{result:?}");
    }
}

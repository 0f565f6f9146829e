//! Length-prefixed postcard frames over blocking byte streams.
//!
//! A frame is a big-endian `u32` length, then that many bytes of postcard. Every reader names
//! a size limit and refuses a longer frame before allocating for it, so a peer cannot make
//! this process allocate more than the limit per frame.

use std::io::{ErrorKind, Read, Write};

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::ProtocolError;

/// The largest frame either side accepts (snapshots and transitions of large trees travel as
/// one frame; file content travels in chunks of at most [`CHUNK`]).
pub const MAX_FRAME: u32 = 256 << 20;

/// The largest piece of file content in one frame.
pub const CHUNK: usize = 1 << 20;

/// Writes one frame (not flushed).
///
/// # Errors
/// [`ProtocolError::Io`] when the stream fails, [`ProtocolError::TooLarge`] for a message
/// beyond [`MAX_FRAME`] (nothing is written then).
pub fn write_frame<T: Serialize>(writer: &mut dyn Write, message: &T) -> Result<(), ProtocolError> {
    let bytes = postcard::to_stdvec(message).map_err(|e| ProtocolError::Encode(e.to_string()))?;
    let length = u32::try_from(bytes.len())
        .ok()
        .filter(|length| *length <= MAX_FRAME)
        .ok_or(ProtocolError::TooLarge { size: bytes.len() as u64, limit: MAX_FRAME })?;
    writer.write_all(&length.to_be_bytes()).map_err(ProtocolError::Io)?;
    writer.write_all(&bytes).map_err(ProtocolError::Io)
}

/// Reads one frame of at most `limit` bytes; `Ok(None)` at a clean end of stream (before the
/// first byte of a frame).
///
/// # Errors
/// [`ProtocolError::Io`] (a stream cut inside a frame included), [`ProtocolError::TooLarge`],
/// [`ProtocolError::Decode`].
pub fn read_frame<T: DeserializeOwned>(
    reader: &mut dyn Read,
    limit: u32,
) -> Result<Option<T>, ProtocolError> {
    let mut header = [0u8; 4];
    let mut filled = 0;
    while filled < header.len() {
        match reader.read(&mut header[filled..]) {
            Ok(0) if filled == 0 => return Ok(None),
            Ok(0) => return Err(ProtocolError::Io(ErrorKind::UnexpectedEof.into())),
            Ok(n) => filled += n,
            Err(error) if error.kind() == ErrorKind::Interrupted => {}
            Err(error) => return Err(ProtocolError::Io(error)),
        }
    }
    let length = u32::from_be_bytes(header);
    if length > limit {
        return Err(ProtocolError::TooLarge { size: u64::from(length), limit });
    }
    let mut body = vec![0u8; length as usize];
    reader.read_exact(&mut body).map_err(ProtocolError::Io)?;
    decode(&body).map(Some)
}

/// Decodes a frame's body (a fuzz target's entry point).
///
/// # Errors
/// [`ProtocolError::Decode`] when the bytes are not exactly one message.
pub fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T, ProtocolError> {
    match postcard::take_from_bytes::<T>(body) {
        Ok((message, [])) => Ok(message),
        Ok((_, rest)) => Err(ProtocolError::Decode(format!("{} trailing bytes", rest.len()))),
        Err(error) => Err(ProtocolError::Decode(error.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_limits_hold() {
        let mut buffer = Vec::new();
        write_frame(&mut buffer, &(7u32, "seven".to_owned())).expect("write");
        assert_eq!(&buffer[..4], &[0, 0, 0, 7]);
        let mut reader = buffer.as_slice();
        let back: Option<(u32, String)> = read_frame(&mut reader, 64).expect("read");
        assert_eq!(back, Some((7, "seven".to_owned())));
        assert!(read_frame::<(u32, String)>(&mut reader, 64).expect("eof").is_none());

        let too_long = read_frame::<(u32, String)>(&mut buffer.as_slice(), 5);
        assert!(matches!(too_long, Err(ProtocolError::TooLarge { size: 7, limit: 5 })));
        let cut = read_frame::<(u32, String)>(&mut &buffer[..7], 64);
        assert!(matches!(cut, Err(ProtocolError::Io(_))), "{cut:?}");
        let cut_header = read_frame::<(u32, String)>(&mut &buffer[..2], 64);
        assert!(matches!(cut_header, Err(ProtocolError::Io(_))), "{cut_header:?}");
        let mut trailing = buffer.clone();
        trailing[3] = 8;
        trailing.push(0);
        let error = read_frame::<(u32, String)>(&mut trailing.as_slice(), 64);
        assert!(matches!(error, Err(ProtocolError::Decode(_))), "{error:?}");
    }
}

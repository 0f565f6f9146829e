//! rsync-style delta transfer: the receiver describes the file it already has at a path (a
//! [`Signature`] of per-block checksums); the supplier answers with [`Operation`]s that reuse
//! those blocks and carry only the bytes that differ; the receiver rebuilds the new content
//! from its old file and the literal bytes.
//!
//! - Blocks are `block_size` bytes (the last may be shorter), with block size
//!   clamp(√(24·length), 1 KiB, 64 KiB) as upstream.
//! - Weak checksum: rsync's rolling sum (two 16-bit halves), so the supplier can slide a window
//!   one byte at a time; strong checksum: BLAKE3 truncated to 16 bytes, computed only when the
//!   weak one matches.
//! - Nothing here trusts the result: the receiver hashes what it rebuilt and keeps it only if
//!   the digest is the one requested, so a base that changed in between, or a checksum
//!   collision, costs a retry, never wrong content.

use std::collections::HashMap;
use std::io::{self, Read, Seek, SeekFrom, Write};

use serde::{Deserialize, Serialize};

/// The most literal bytes one [`Operation::Data`] carries.
pub const MAX_DATA: usize = 64 * 1024;

/// Checksums of one block of the receiver's file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockHash {
    /// The rolling checksum.
    pub weak: u32,
    /// BLAKE3, first 16 bytes.
    pub strong: [u8; 16],
}

/// A description of the receiver's current file, block by block.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signature {
    /// Size of every block but possibly the last.
    pub block_size: u32,
    /// Size of the last block (equal to `block_size` when the length is a multiple of it).
    pub last_block_size: u32,
    /// The blocks, in order.
    pub blocks: Vec<BlockHash>,
}

/// One step of rebuilding the new content.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Operation {
    /// Bytes to write as they are.
    Data(#[serde(with = "serde_bytes")] Vec<u8>),
    /// Copy `count` consecutive blocks of the base, starting at block `start`.
    Blocks {
        /// The first block.
        start: u64,
        /// How many blocks.
        count: u64,
    },
}

/// Returns the block size for a base of `length` bytes.
pub fn block_size(length: u64) -> u32 {
    let root = (length.saturating_mul(24) as f64).sqrt() as u64;
    root.clamp(1024, 64 * 1024) as u32
}

fn weak(block: &[u8]) -> u32 {
    let (mut a, mut b) = (0u32, 0u32);
    let length = block.len() as u32;
    for (i, &byte) in block.iter().enumerate() {
        a = a.wrapping_add(u32::from(byte));
        b = b.wrapping_add((length - i as u32).wrapping_mul(u32::from(byte)));
    }
    (a & 0xffff) | (b << 16)
}

/// Slides the weak checksum of a `length`-byte window one byte: `out` leaves, `in_` enters.
fn roll(checksum: u32, length: u32, out: u8, in_: u8) -> u32 {
    let a = (checksum & 0xffff).wrapping_sub(u32::from(out)).wrapping_add(u32::from(in_)) & 0xffff;
    let b =
        (checksum >> 16).wrapping_sub(length.wrapping_mul(u32::from(out))).wrapping_add(a) & 0xffff;
    a | (b << 16)
}

fn strong(block: &[u8]) -> [u8; 16] {
    let mut out = [0u8; 16];
    out.copy_from_slice(&blake3::hash(block).as_bytes()[..16]);
    out
}

/// Reads `reader` (of `length` bytes) and returns its signature.
pub fn signature(mut reader: impl Read, length: u64) -> io::Result<Signature> {
    let size = block_size(length);
    let mut buffer = vec![0u8; size as usize];
    let mut blocks = Vec::new();
    let mut last = size;
    loop {
        let n = read_full(&mut reader, &mut buffer)?;
        if n == 0 {
            break;
        }
        blocks.push(BlockHash { weak: weak(&buffer[..n]), strong: strong(&buffer[..n]) });
        last = n as u32;
        if n < buffer.len() {
            break;
        }
    }
    Ok(Signature { block_size: size, last_block_size: last, blocks })
}

/// Reads until `buffer` is full or the input ends; returns the bytes read.
fn read_full(reader: &mut impl Read, buffer: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buffer.len() {
        match reader.read(&mut buffer[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// Emits operations that turn the base described by `signature` into `target`'s content.
///
/// Consecutive block matches are merged into one `Blocks` operation; literal runs are split
/// into `Data` operations of at most [`MAX_DATA`] bytes.
pub fn deltify(
    signature: &Signature,
    mut target: impl Read,
    emit: &mut dyn FnMut(Operation) -> io::Result<()>,
) -> io::Result<()> {
    let size = signature.block_size as usize;
    let full_blocks = if signature.last_block_size == signature.block_size {
        signature.blocks.len()
    } else {
        signature.blocks.len().saturating_sub(1)
    };
    let mut index: HashMap<u32, Vec<usize>> = HashMap::new();
    for (i, block) in signature.blocks.iter().enumerate().take(full_blocks) {
        index.entry(block.weak).or_default().push(i);
    }
    let mut delta = Delta { emit, pending: None };
    // `window` holds unsent bytes: literal bytes before `position`, then the candidate block.
    let mut window: Vec<u8> = Vec::new();
    let mut position = 0usize;
    let mut chunk = vec![0u8; 256 * 1024];
    let mut eof = false;
    let mut checksum: Option<u32> = None;
    loop {
        if window.len() < position + size && !eof {
            let n = read_full(&mut target, &mut chunk)?;
            eof = n < chunk.len();
            window.extend_from_slice(&chunk[..n]);
            continue;
        }
        if window.len() < position + size || size == 0 {
            break;
        }
        let candidate = &window[position..position + size];
        let sum = *checksum.get_or_insert_with(|| weak(candidate));
        let matched = index.get(&sum).and_then(|blocks| {
            let hash = strong(candidate);
            blocks.iter().copied().find(|&i| signature.blocks[i].strong == hash)
        });
        if let Some(block) = matched {
            delta.literal(&window[..position])?;
            delta.block(block as u64)?;
            window.drain(..position + size);
            position = 0;
            checksum = None;
            continue;
        }
        // No match: the window's first byte becomes literal; slide by one.
        if position + size < window.len() {
            checksum = Some(roll(sum, size as u32, window[position], window[position + size]));
        } else {
            checksum = None;
        }
        position += 1;
        if position >= MAX_DATA {
            delta.literal(&window[..position])?;
            window.drain(..position);
            position = 0;
        }
    }
    // The tail: the base's short last block, or literal bytes.
    let tail_matches = signature.last_block_size != signature.block_size
        && signature.blocks.last().is_some_and(|last| {
            let tail =
                &window[window.len() - (signature.last_block_size as usize).min(window.len())..];
            tail.len() == signature.last_block_size as usize
                && weak(tail) == last.weak
                && strong(tail) == last.strong
        });
    if tail_matches {
        let split = window.len() - signature.last_block_size as usize;
        delta.literal(&window[..split])?;
        delta.block(signature.blocks.len() as u64 - 1)?;
    } else {
        delta.literal(&window)?;
    }
    delta.flush()
}

struct Delta<'a> {
    emit: &'a mut dyn FnMut(Operation) -> io::Result<()>,
    /// A block run not yet emitted, so that consecutive blocks merge.
    pending: Option<(u64, u64)>,
}

impl Delta<'_> {
    fn flush(&mut self) -> io::Result<()> {
        match self.pending.take() {
            Some((start, count)) => (self.emit)(Operation::Blocks { start, count }),
            None => Ok(()),
        }
    }

    fn block(&mut self, block: u64) -> io::Result<()> {
        if let Some((start, count)) = &mut self.pending
            && *start + *count == block
        {
            *count += 1;
            return Ok(());
        }
        self.flush()?;
        self.pending = Some((block, 1));
        Ok(())
    }

    fn literal(&mut self, bytes: &[u8]) -> io::Result<()> {
        if bytes.is_empty() {
            return Ok(());
        }
        self.flush()?;
        bytes.chunks(MAX_DATA).try_for_each(|chunk| (self.emit)(Operation::Data(chunk.to_vec())))
    }
}

/// Writes the content `operation` stands for to `out`, reading blocks from `base`.
pub fn patch(
    base: &mut (impl Read + Seek),
    block_size: u32,
    operation: &Operation,
    out: &mut impl Write,
) -> io::Result<()> {
    match operation {
        Operation::Data(data) => out.write_all(data),
        Operation::Blocks { start, count } => {
            let size = u64::from(block_size);
            let offset =
                start.checked_mul(size).ok_or_else(|| invalid("block offset overflows"))?;
            let length = count.checked_mul(size).ok_or_else(|| invalid("block count overflows"))?;
            base.seek(SeekFrom::Start(offset))?;
            // The last block may be short: copying stops at the end of the base.
            io::copy(&mut base.take(length), out).map(|_| ())
        }
    }
}

fn invalid(message: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message)
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;

    use proptest::prelude::*;

    use super::*;

    fn round_trip(base: &[u8], target: &[u8]) -> (Vec<u8>, usize) {
        let signature = signature(base, base.len() as u64).expect("signature");
        let mut operations = Vec::new();
        deltify(&signature, target, &mut |op| {
            operations.push(op);
            Ok(())
        })
        .expect("deltify");
        let mut out = Vec::new();
        let mut base = Cursor::new(base);
        let mut literal = 0;
        for operation in &operations {
            if let Operation::Data(data) = operation {
                literal += data.len();
                assert!(data.len() <= MAX_DATA);
            }
            patch(&mut base, signature.block_size, operation, &mut out).expect("patch");
        }
        (out, literal)
    }

    fn pseudo_random(length: usize, seed: u64) -> Vec<u8> {
        let mut state = seed | 1;
        (0..length)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect()
    }

    #[test]
    fn rolling_equals_fresh_checksum() {
        let data = pseudo_random(5000, 3);
        let size = 1024;
        let mut sum = weak(&data[..size]);
        for start in 1..data.len() - size {
            sum = roll(sum, size as u32, data[start - 1], data[start + size - 1]);
            assert_eq!(sum, weak(&data[start..start + size]), "at {start}");
        }
    }

    #[test]
    fn one_byte_change_in_a_large_file_sends_about_one_block() {
        let base = pseudo_random(4 << 20, 7);
        let mut target = base.clone();
        target[2 << 20] ^= 0xff;
        let (out, literal) = round_trip(&base, &target);
        assert_eq!(out, target);
        let block = block_size(base.len() as u64) as usize;
        assert!(literal <= block, "{literal} literal bytes for a one-byte change (block {block})");
    }

    #[test]
    fn insertions_and_deletions_shift_without_resending_everything() {
        let base = pseudo_random(1 << 20, 11);
        let mut target = base[..300_000].to_vec();
        target.extend_from_slice(b"inserted bytes");
        target.extend_from_slice(&base[300_000..700_000]);
        target.extend_from_slice(&base[720_000..]);
        let (out, literal) = round_trip(&base, &target);
        assert_eq!(out, target);
        assert!(literal < 4 * block_size(base.len() as u64) as usize, "{literal}");
    }

    #[test]
    fn edge_cases() {
        for (base, target) in [
            (vec![], vec![]),
            (vec![], b"new".to_vec()),
            (b"old".to_vec(), vec![]),
            (b"same".to_vec(), b"same".to_vec()),
            (pseudo_random(3000, 5), pseudo_random(3000, 5)),
            (pseudo_random(2048, 5), pseudo_random(2047, 5)),
        ] {
            assert_eq!(round_trip(&base, &target).0, target);
        }
        let same = pseudo_random(10_000, 9);
        assert_eq!(round_trip(&same, &same).1, 0, "identical content sends no literal bytes");
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        /// Whatever the base and target, patching the delta reproduces the target exactly.
        #[test]
        fn patch_of_delta_is_the_target(
            base in proptest::collection::vec(0u8..4, 0..6000),
            edits in proptest::collection::vec((0usize..6000, 0usize..300, proptest::collection::vec(any::<u8>(), 0..50)), 0..5),
        ) {
            let mut target = base.clone();
            for (at, remove, insert) in edits {
                let at = at.min(target.len());
                let end = (at + remove).min(target.len());
                target.splice(at..end, insert);
            }
            prop_assert_eq!(round_trip(&base, &target).0, target);
        }
    }
}

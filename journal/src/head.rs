//! The head file: what the journal has acknowledged, kept outside sled.
//!
//! sled recovers a damaged log by cutting it at the damage, which looks like a clean shorter
//! history. The head file lets the journal tell the difference: it lists every live session
//! with the number of records acknowledged so far and the chain hash of the last of them
//! ([`Link`]). It is replaced atomically (temporary file, fsync, rename, fsync of the
//! directory) after each [`crate::Journal::flush`] that changed it.
//!
//! The format is text, so that a person can read it:
//!
//! ```text
//! mutagen journal head 1
//! session sync_… 42 5f1c…(64 hex digits)
//! end 9a0b…(the BLAKE3 of everything above, 64 hex digits)
//! ```

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

const MAGIC: &str = "mutagen journal head 1";

/// A position in a session's hash chain: `next` records exist (numbered below `next`), and
/// `hash` is the chain hash of the last of them (or of the chain's base when there are none).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Link {
    /// The number of the next record.
    pub next: u64,
    /// The chain hash up to and including record `next - 1`.
    pub hash: [u8; 32],
}

/// Every live session's acknowledged position.
pub type Heads = BTreeMap<String, Link>;

/// Returns the head file of the journal in `directory`: `<directory>.head`, beside it.
pub fn path(directory: &Path) -> PathBuf {
    let mut name = directory.file_name().unwrap_or_default().to_owned();
    name.push(".head");
    directory.with_file_name(name)
}

/// Renders the head file.
pub fn render(heads: &Heads) -> String {
    let mut text = format!("{MAGIC}\n");
    for (identifier, link) in heads {
        text.push_str(&format!("session {identifier} {} {}\n", link.next, hex(&link.hash)));
    }
    let end = blake3::hash(text.as_bytes());
    text.push_str(&format!("end {}\n", end.to_hex()));
    text
}

/// Parses a head file; the error says what is wrong with it.
///
/// # Errors
/// A wrong first line, a malformed line, or a checksum that does not match.
pub fn parse(text: &str) -> Result<Heads, String> {
    let Some(body_end) = text.rfind("end ") else {
        return Err("it has no end line (it was cut short)".to_owned());
    };
    let (body, end) = text.split_at(body_end);
    let expected = end.strip_prefix("end ").map(str::trim_end).unwrap_or_default();
    if blake3::hash(body.as_bytes()).to_hex().as_str() != expected {
        return Err("its checksum does not match its content".to_owned());
    }
    let mut lines = body.lines();
    if lines.next() != Some(MAGIC) {
        return Err(format!("its first line is not {MAGIC:?}"));
    }
    let mut heads = Heads::new();
    for (index, line) in lines.enumerate() {
        let malformed = || format!("line {} is malformed: {line:?}", index + 2);
        let mut words = line.split(' ');
        let (Some("session"), Some(identifier), Some(next), Some(hash), None) =
            (words.next(), words.next(), words.next(), words.next(), words.next())
        else {
            return Err(malformed());
        };
        let next = next.parse().map_err(|_| malformed())?;
        let hash = unhex(hash).ok_or_else(malformed)?;
        heads.insert(identifier.to_owned(), Link { next, hash });
    }
    Ok(heads)
}

/// Reads the head file at `path`: `None` when there is none.
///
/// # Errors
/// An unreadable or malformed file, as text naming it.
pub fn read(path: &Path) -> Result<Option<Heads>, String> {
    match std::fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8(bytes)
                .map_err(|_| format!("the head file {} is not text", path.display()))?;
            parse(&text)
                .map(Some)
                .map_err(|detail| format!("the head file {} is damaged: {detail}", path.display()))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("unable to read the head file {}: {e}", path.display())),
    }
}

/// Replaces the head file at `path` durably: a crash leaves either the old or the new one.
///
/// # Errors
/// Any failed write, fsync or rename.
pub fn write(path: &Path, heads: &Heads) -> std::io::Result<()> {
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(".new");
    let temporary = PathBuf::from(temporary);
    let mut file = std::fs::File::create(&temporary)?;
    file.write_all(render(heads).as_bytes())?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&temporary, path)?;
    let parent = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::File::open(parent)?.sync_all()
}

/// Renders bytes as lowercase hexadecimal.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<[u8; 32]> {
    if text.len() != 64 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let mut hash = [0; 32];
    for (index, byte) in hash.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[2 * index..2 * index + 2], 16).ok()?;
    }
    Some(hash)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn heads() -> Heads {
        let mut heads = Heads::new();
        heads.insert("sync_a".into(), Link { next: 42, hash: [7; 32] });
        heads.insert("sync_b".into(), Link { next: 0, hash: [0xab; 32] });
        heads
    }

    #[test]
    fn a_rendered_head_parses_back() {
        assert_eq!(parse(&render(&heads())), Ok(heads()));
        assert_eq!(parse(&render(&Heads::new())), Ok(Heads::new()));
    }

    #[test]
    fn any_damage_is_refused() {
        let text = render(&heads());
        for (damaged, detail) in [
            (text.replace("42", "41"), "checksum"),
            (text[..text.len() - 10].to_owned(), "checksum"),
            (text[..text.find("end").expect("end")].to_owned(), "no end line"),
            (String::new(), "no end line"),
        ] {
            let error = parse(&damaged).expect_err(&damaged);
            assert!(error.contains(detail), "{error}");
        }
        // A well-formed checksum over a malformed body is still refused.
        let body = format!("{MAGIC}\nsession sync_a x 00\n");
        let forged = format!("{body}end {}\n", blake3::hash(body.as_bytes()).to_hex());
        assert!(parse(&forged).expect_err("forged").contains("line 2 is malformed"));
    }

    #[test]
    fn the_head_sits_beside_the_journal_and_is_replaced_whole() {
        let dir = tempfile::tempdir().expect("tempdir");
        let journal = dir.path().join("journal");
        let head = path(&journal);
        assert_eq!(head, dir.path().join("journal.head"));
        assert_eq!(read(&head), Ok(None));
        write(&head, &heads()).expect("write");
        assert_eq!(read(&head), Ok(Some(heads())));
        write(&head, &Heads::new()).expect("rewrite");
        assert_eq!(read(&head), Ok(Some(Heads::new())));
        assert_eq!(std::fs::read_dir(dir.path()).expect("list").count(), 1, "no leftovers");
    }
}

//! Session identifiers and names.
//!
//! An identifier is `sync_` followed by 32 random bytes in base62 (alphabet `0-9a-zA-Z`),
//! left-padded with `0` to 43 characters, as upstream. A name may be empty; otherwise its first
//! character is a letter and the rest are letters, digits and `-`; `defaults` is reserved.

use std::io::Read;

use crate::SessionError;

/// The prefix of synchronization session identifiers.
pub const SYNC_PREFIX: &str = "sync";

/// The prefix of forward session identifiers.
pub const FORWARD_PREFIX: &str = "fwrd";

const ALPHABET: &[u8; 62] = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
const BODY_LENGTH: usize = 43;

/// Returns a fresh identifier with the given four-letter prefix.
///
/// # Errors
/// When the system's random source cannot be read.
pub fn new_identifier(prefix: &str) -> std::io::Result<String> {
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(format!("{prefix}_{}", base62(bytes)))
}

/// Encodes 32 bytes in base62, left-padded to 43 characters.
fn base62(mut number: [u8; 32]) -> String {
    let mut digits = Vec::with_capacity(BODY_LENGTH);
    while number.iter().any(|&b| b != 0) {
        // Long division of the big-endian number by 62.
        let mut remainder = 0u32;
        for byte in &mut number {
            let value = (remainder << 8) | u32::from(*byte);
            *byte = (value / 62) as u8;
            remainder = value % 62;
        }
        digits.push(ALPHABET[remainder as usize]);
    }
    digits.resize(BODY_LENGTH, b'0');
    digits.reverse();
    String::from_utf8(digits).unwrap_or_default()
}

/// Returns whether `text` has the shape of an identifier (`^[a-z]{4}_[0-9a-zA-Z]{43}$`).
pub fn is_identifier(text: &str) -> bool {
    let bytes = text.as_bytes();
    bytes.len() == 5 + BODY_LENGTH
        && bytes[..4].iter().all(u8::is_ascii_lowercase)
        && bytes[4] == b'_'
        && bytes[5..].iter().all(u8::is_ascii_alphanumeric)
}

/// Returns the short form used in logs: prefix, `_` and the first 8 body characters.
pub fn short(identifier: &str) -> &str {
    identifier.get(..13).unwrap_or(identifier)
}

/// Checks a session name (the empty name means "no name").
///
/// # Errors
/// [`SessionError::InvalidName`] naming the rule broken.
pub fn validate_name(name: &str) -> Result<(), SessionError> {
    let invalid = |reason| Err(SessionError::InvalidName { name: name.to_owned(), reason });
    let mut chars = name.chars();
    let Some(first) = chars.next() else { return Ok(()) };
    if !first.is_alphabetic() {
        return invalid("a name must start with a letter");
    }
    if !chars.all(|c| c.is_alphanumeric() || c == '-') {
        return invalid("a name may only hold letters, digits and '-'");
    }
    if name == "defaults" {
        return invalid("\"defaults\" is reserved");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_have_the_upstream_shape_and_differ() {
        let a = new_identifier(SYNC_PREFIX).expect("random");
        let b = new_identifier(SYNC_PREFIX).expect("random");
        assert!(is_identifier(&a), "{a}");
        assert!(a.starts_with("sync_"));
        assert_ne!(a, b);
        assert_eq!(short(&a).len(), 13);
    }

    #[test]
    fn base62_pads_and_encodes_big_endian() {
        assert_eq!(base62([0; 32]), "0".repeat(43));
        let mut one = [0; 32];
        one[31] = 61;
        assert_eq!(base62(one), format!("{}Z", "0".repeat(42)));
        one[31] = 62;
        assert_eq!(base62(one), format!("{}10", "0".repeat(41)));
        // The largest value still fits in 43 characters.
        assert_eq!(base62([0xff; 32]).len(), 43);
    }

    #[test]
    fn identifier_shapes() {
        let body = "a".repeat(43);
        assert!(is_identifier(&format!("sync_{body}")));
        for bad in [
            format!("Sync_{body}"),
            format!("sync-{body}"),
            format!("sync_{}", "a".repeat(42)),
            format!("sync_{}!", "a".repeat(42)),
            "web".to_owned(),
        ] {
            assert!(!is_identifier(&bad), "{bad}");
        }
    }

    #[test]
    fn names() {
        for good in ["", "web", "web-2", "Ünïcode", "a"] {
            assert_eq!(validate_name(good), Ok(()), "{good}");
        }
        for (bad, reason) in [
            ("2web", "start with a letter"),
            ("-web", "start with a letter"),
            ("web_app", "letters, digits and '-'"),
            ("web app", "letters, digits and '-'"),
            ("defaults", "reserved"),
        ] {
            let error = validate_name(bad).expect_err(bad).to_string();
            assert!(error.contains(reason) && error.contains(bad), "{error}");
        }
    }
}

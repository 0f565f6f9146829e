//! Labels and label selectors, with the Kubernetes rules upstream uses.
//!
//! A key is an optional DNS subdomain prefix and `/`, then a name of at most 63 characters that
//! starts and ends with an ASCII letter or digit and holds only those, `-`, `_` and `.`. A value
//! is empty or follows the name rule. A selector is a comma-separated conjunction of `k=v`,
//! `k==v`, `k!=v`, `k in (a,b)`, `k notin (a,b)`, `k` (exists) and `!k` (does not exist); as in
//! Kubernetes, `!=` and `notin` also match sessions without the key.

use std::collections::{BTreeMap, BTreeSet};

use crate::SessionError;

/// A session's labels.
pub type Labels = BTreeMap<String, String>;

fn name_rule(text: &str) -> Result<(), String> {
    let bytes = text.as_bytes();
    if bytes.is_empty() || bytes.len() > 63 {
        return Err("must be 1 to 63 characters".to_owned());
    }
    let inner = |b: &u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.');
    if !bytes[0].is_ascii_alphanumeric()
        || !bytes[bytes.len() - 1].is_ascii_alphanumeric()
        || !bytes.iter().all(inner)
    {
        return Err("must start and end with a letter or digit and hold only letters, digits, \
                    '-', '_' and '.'"
            .to_owned());
    }
    Ok(())
}

fn prefix_rule(prefix: &str) -> Result<(), String> {
    let valid_label = |label: &str| {
        let b = label.as_bytes();
        !b.is_empty()
            && b.len() <= 63
            && b[0].is_ascii_alphanumeric()
            && b[b.len() - 1].is_ascii_alphanumeric()
            && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
    };
    if prefix.len() > 253 || !prefix.split('.').all(valid_label) {
        return Err(format!("prefix {prefix:?} must be a lowercase DNS subdomain"));
    }
    Ok(())
}

/// Checks a label key.
fn check_key(key: &str) -> Result<(), String> {
    match key.split_once('/') {
        Some((prefix, name)) => {
            prefix_rule(prefix)?;
            name_rule(name).map_err(|e| format!("key name {e}"))
        }
        None => name_rule(key).map_err(|e| format!("key {e}")),
    }
}

/// Checks a label value.
fn check_value(value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Ok(());
    }
    name_rule(value).map_err(|e| format!("value {e}"))
}

/// Parses `key=value` or `key` (empty value).
///
/// # Errors
/// [`SessionError::InvalidLabel`] naming the label.
pub fn parse_label(text: &str) -> Result<(String, String), SessionError> {
    let (key, value) = text.split_once('=').unwrap_or((text, ""));
    let invalid = |reason| SessionError::InvalidLabel { label: text.to_owned(), reason };
    check_key(key).map_err(invalid)?;
    check_value(value).map_err(invalid)?;
    Ok((key.to_owned(), value.to_owned()))
}

/// One requirement of a selector.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Requirement {
    Equals(String, String),
    NotEquals(String, String),
    In(String, BTreeSet<String>),
    NotIn(String, BTreeSet<String>),
    Exists(String),
    NotExists(String),
}

impl Requirement {
    fn matches(&self, labels: &Labels) -> bool {
        match self {
            Requirement::Equals(k, v) => labels.get(k) == Some(v),
            Requirement::NotEquals(k, v) => labels.get(k) != Some(v),
            Requirement::In(k, set) => labels.get(k).is_some_and(|v| set.contains(v)),
            Requirement::NotIn(k, set) => !labels.get(k).is_some_and(|v| set.contains(v)),
            Requirement::Exists(k) => labels.contains_key(k),
            Requirement::NotExists(k) => !labels.contains_key(k),
        }
    }
}

/// A parsed label selector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selector {
    requirements: Vec<Requirement>,
}

impl Selector {
    /// Parses a selector.
    ///
    /// # Errors
    /// [`SessionError::InvalidSelector`] saying what is wrong.
    pub fn parse(text: &str) -> Result<Selector, SessionError> {
        let invalid =
            |reason: String| SessionError::InvalidSelector { selector: text.to_owned(), reason };
        if text.trim().is_empty() {
            return Err(invalid("the selector is empty".to_owned()));
        }
        let mut requirements = Vec::new();
        for part in split_top_level(text).map_err(invalid)? {
            requirements.push(requirement(part.trim()).map_err(invalid)?);
        }
        Ok(Selector { requirements })
    }

    /// Returns whether `labels` satisfy every requirement.
    pub fn matches(&self, labels: &Labels) -> bool {
        self.requirements.iter().all(|r| r.matches(labels))
    }
}

/// Splits at commas outside parentheses.
fn split_top_level(text: &str) -> Result<Vec<&str>, String> {
    let (mut parts, mut depth, mut start) = (Vec::new(), 0, 0);
    for (i, c) in text.char_indices() {
        match c {
            '(' if depth == 0 => depth = 1,
            '(' => return Err("nested parentheses".to_owned()),
            ')' if depth == 1 => depth = 0,
            ')' => return Err("unbalanced ')'".to_owned()),
            ',' if depth == 0 => {
                parts.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if depth != 0 {
        return Err("unbalanced '('".to_owned());
    }
    parts.push(&text[start..]);
    Ok(parts)
}

fn requirement(part: &str) -> Result<Requirement, String> {
    if part.is_empty() {
        return Err("empty requirement".to_owned());
    }
    let key = |k: &str| {
        let k = k.trim();
        check_key(k).map(|()| k.to_owned()).map_err(|e| format!("in {part:?}: {e}"))
    };
    let value = |v: &str| {
        let v = v.trim();
        check_value(v).map(|()| v.to_owned()).map_err(|e| format!("in {part:?}: {e}"))
    };
    if let Some(rest) = part.strip_prefix('!') {
        return Ok(Requirement::NotExists(key(rest)?));
    }
    if let Some(open) = part.find('(') {
        let words: Vec<&str> = part[..open].split_whitespace().collect();
        let Some(inner) = part[open + 1..].strip_suffix(')') else {
            return Err(format!("in {part:?}: expected ')' at the end"));
        };
        let set = inner.split(',').map(value).collect::<Result<BTreeSet<_>, _>>()?;
        return match words.as_slice() {
            [k, "in"] => Ok(Requirement::In(key(k)?, set)),
            [k, "notin"] => Ok(Requirement::NotIn(key(k)?, set)),
            _ => Err(format!("in {part:?}: expected 'key in (...)' or 'key notin (...)'")),
        };
    }
    if let Some((k, v)) = part.split_once("!=") {
        return Ok(Requirement::NotEquals(key(k)?, value(v)?));
    }
    if let Some((k, v)) = part.split_once("==").or_else(|| part.split_once('=')) {
        return Ok(Requirement::Equals(key(k)?, value(v)?));
    }
    if part.contains(['<', '>']) {
        return Err(format!("in {part:?}: numeric comparisons are not supported"));
    }
    Ok(Requirement::Exists(key(part)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    #[test]
    fn label_parsing() {
        assert_eq!(parse_label("env=prod"), Ok(("env".into(), "prod".into())));
        assert_eq!(parse_label("flag"), Ok(("flag".into(), String::new())));
        assert_eq!(parse_label("flag="), Ok(("flag".into(), String::new())));
        assert_eq!(
            parse_label("example.com/team=a.b_c"),
            Ok(("example.com/team".into(), "a.b_c".into()))
        );
        for bad in ["", "=x", "-a=b", "a=b-", "a b=c", "Example.com/x=y", "a=b=c", &"k".repeat(64)]
        {
            let error = parse_label(bad).expect_err(bad).to_string();
            assert!(error.starts_with("invalid label"), "{error}");
        }
    }

    #[test]
    fn selector_table() {
        let web = labels(&[("env", "prod"), ("tier", "web")]);
        let db = labels(&[("env", "dev"), ("tier", "db")]);
        let bare = labels(&[]);
        // selector, matches web, db, bare
        let table: &[(&str, [bool; 3])] = &[
            ("env=prod", [true, false, false]),
            ("env==prod", [true, false, false]),
            ("env!=prod", [false, true, true]),
            ("env in (prod, dev)", [true, true, false]),
            ("tier notin (web)", [false, true, true]),
            ("tier", [true, true, false]),
            ("!tier", [false, false, true]),
            ("env=prod,tier=web", [true, false, false]),
            ("env in (dev,prod),tier!=web", [false, true, false]),
            (" env = prod ", [true, false, false]),
        ];
        for (text, expected) in table {
            let selector = Selector::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
            let got = [&web, &db, &bare].map(|l| selector.matches(l));
            assert_eq!(&got, expected, "{text}");
        }
    }

    #[test]
    fn bad_selectors() {
        for bad in
            ["", "env in (a", "env in a)", "env=(a)", "a,,b", "env inn (a)", "x>1", "=v", "!"]
        {
            let error = Selector::parse(bad).expect_err(bad).to_string();
            assert!(error.starts_with("invalid label selector"), "{bad}: {error}");
        }
    }
}

//! Ignore patterns in the upstream (Mutagen) syntax.
//!
//! - Paths are root-relative and `/`-separated; the root itself is never ignored.
//! - `!pattern` un-ignores; the last matching pattern decides.
//! - A leading `/` anchors the pattern to the root; a trailing `/` restricts it to directories.
//! - `*` and `?` never match `/`; `**` matches any number of path components.
//! - A pattern without an inner `/` (and not anchored) also matches the basename of any path.
//! - An ignored directory is not traversed: nothing inside it can be un-ignored.
//! - With VCS ignoring on, directories named `.git`, `.svn`, `.hg`, `.bzr` and `_darcs` are
//!   ignored.

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};

/// A pattern that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IgnoreError {
    /// The pattern is empty, a lone `!`, or names the root.
    #[error("invalid ignore pattern {0:?}: {1}")]
    Invalid(String, &'static str),
    /// The glob does not parse.
    #[error("invalid ignore pattern {pattern:?}: {reason}")]
    Glob {
        /// The pattern as given.
        pattern: String,
        /// The parser's message.
        reason: String,
    },
}

const VCS_DIRECTORIES: [&str; 5] = [".git", ".svn", ".hg", ".bzr", "_darcs"];

#[derive(Debug, Clone)]
struct Rule {
    negated: bool,
    directory_only: bool,
}

/// Compiled ignore patterns.
#[derive(Debug, Clone)]
pub struct Ignorer {
    rules: Vec<Rule>,
    /// Matched against the full relative path; indexes into `rules`.
    full: GlobSet,
    /// Matched against the basename; holds only basename patterns, `basename_rules[i]` is the
    /// index into `rules` of its pattern `i`.
    basename: GlobSet,
    basename_rules: Vec<usize>,
    ignore_vcs: bool,
}

impl Default for Ignorer {
    fn default() -> Ignorer {
        Ignorer::new(&[], false).expect("no patterns always compile")
    }
}

impl Ignorer {
    /// Compiles `patterns` (in order); `ignore_vcs` adds the VCS directories.
    pub fn new(patterns: &[String], ignore_vcs: bool) -> Result<Ignorer, IgnoreError> {
        let mut rules = Vec::new();
        let mut full = GlobSetBuilder::new();
        let mut basename = GlobSetBuilder::new();
        let mut basename_rules = Vec::new();
        for raw in patterns {
            let (rule, glob, matches_basename) = parse(raw)?;
            let compiled = GlobBuilder::new(&glob)
                .literal_separator(true)
                .backslash_escape(true)
                .build()
                .map_err(|e| IgnoreError::Glob {
                    pattern: raw.clone(),
                    reason: e.kind().to_string(),
                })?;
            if matches_basename {
                basename.add(compiled.clone());
                basename_rules.push(rules.len());
            }
            full.add(compiled);
            rules.push(rule);
        }
        let build = |builder: GlobSetBuilder| {
            builder.build().map_err(|e| IgnoreError::Glob {
                pattern: patterns.join(", "),
                reason: e.kind().to_string(),
            })
        };
        Ok(Ignorer {
            rules,
            full: build(full)?,
            basename: build(basename)?,
            basename_rules,
            ignore_vcs,
        })
    }

    /// Returns whether the entry at `path` (non-empty) is ignored.
    pub fn is_ignored(&self, path: &str, is_directory: bool) -> bool {
        let name = path.rsplit('/').next().unwrap_or(path);
        if self.ignore_vcs && is_directory && VCS_DIRECTORIES.contains(&name) {
            return true;
        }
        if self.rules.is_empty() {
            return false;
        }
        let full = self.full.matches(path);
        let by_name = self.basename.matches(name).into_iter().map(|i| self.basename_rules[i]);
        full.into_iter()
            .chain(by_name)
            .filter(|&i| is_directory || !self.rules[i].directory_only)
            .max()
            .is_some_and(|i| !self.rules[i].negated)
    }
}

/// Splits a pattern into its rule, the glob to compile, and whether it matches basenames.
fn parse(raw: &str) -> Result<(Rule, String, bool), IgnoreError> {
    let invalid = |why| IgnoreError::Invalid(raw.to_owned(), why);
    let (negated, rest) = match raw.strip_prefix('!') {
        Some(rest) => (true, rest),
        None => (false, raw),
    };
    if rest.is_empty() {
        return Err(invalid("empty pattern"));
    }
    let directory_only = rest.ends_with('/');
    let anchored = rest.starts_with('/');
    let trimmed = rest.trim_matches('/');
    if trimmed.is_empty() {
        return Err(invalid("the root cannot be ignored"));
    }
    // Clean repeated separators (`a//b` means `a/b`).
    let glob = trimmed.split('/').filter(|c| !c.is_empty()).collect::<Vec<_>>().join("/");
    let matches_basename = !anchored && !glob.contains('/');
    Ok((Rule { negated, directory_only }, glob, matches_basename))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ignorer(patterns: &[&str]) -> Ignorer {
        let patterns: Vec<String> = patterns.iter().map(|p| (*p).to_owned()).collect();
        Ignorer::new(&patterns, false).expect("valid patterns")
    }

    #[test]
    fn pattern_table() {
        // (patterns, path, is_directory, ignored)
        let table: &[(&[&str], &str, bool, bool)] = &[
            (&["*.o"], "a.o", false, true),
            (&["*.o"], "src/deep/a.o", false, true),
            (&["*.o"], "a.c", false, false),
            (&["/build"], "build", true, true),
            (&["/build"], "src/build", true, false),
            (&["build"], "src/build", true, true),
            (&["node_modules/"], "node_modules", true, true),
            (&["node_modules/"], "node_modules", false, false),
            (&["src/*.tmp"], "src/a.tmp", false, true),
            (&["src/*.tmp"], "src/x/a.tmp", false, false),
            (&["src/*.tmp"], "other/src/a.tmp", false, false),
            (&["**/gen/*.rs"], "a/b/gen/x.rs", false, true),
            (&["**/gen/*.rs"], "gen/x.rs", false, true),
            (&["*.log", "!keep.log"], "keep.log", false, false),
            (&["*.log", "!keep.log"], "other.log", false, true),
            (&["!keep.log", "*.log"], "keep.log", false, true),
            (&["a//b"], "a/b", false, true),
            (&["?.txt"], "x.txt", false, true),
            (&["?.txt"], "xy.txt", false, false),
            (&["[ab].c"], "b.c", false, true),
        ];
        for (patterns, path, is_dir, expected) in table {
            let got = ignorer(patterns).is_ignored(path, *is_dir);
            assert_eq!(got, *expected, "{patterns:?} on {path:?} (dir: {is_dir})");
        }
    }

    #[test]
    fn invalid_patterns_are_rejected_with_the_pattern_named() {
        for bad in ["", "!", "/", "//", "!/", "a[", "{a,b"] {
            let err = Ignorer::new(&[bad.to_owned()], false).expect_err(bad);
            assert!(err.to_string().contains(&format!("{bad:?}")), "{err}");
        }
    }

    #[test]
    fn vcs_directories_only() {
        let ignorer = Ignorer::new(&[], true).expect("no patterns");
        assert!(ignorer.is_ignored("sub/.git", true));
        assert!(!ignorer.is_ignored(".git", false));
        assert!(!Ignorer::default().is_ignored(".git", true));
    }
}

//! Ignore patterns, in the upstream (Mutagen) syntax or the `.dockerignore` syntax.
//!
//! Both syntaxes:
//! - Paths are root-relative and `/`-separated; the root itself is never ignored.
//! - `!pattern` un-ignores; the last matching pattern decides.
//! - `*` and `?` never match `/`; `**` matches any number of path components.
//! - With VCS ignoring on, directories named `.git`, `.svn`, `.hg`, `.bzr` and `_darcs` are
//!   ignored.
//!
//! Mutagen syntax ([`IgnoreSyntax::Mutagen`]):
//! - A leading `/` anchors the pattern to the root; a trailing `/` restricts it to directories.
//! - A pattern without an inner `/` (and not anchored) also matches the basename of any path.
//! - An ignored directory is not traversed: nothing inside it can be un-ignored.
//!
//! Docker syntax ([`IgnoreSyntax::Docker`], `.dockerignore` as moby's patternmatcher reads
//! it):
//! - Patterns are trimmed; a leading `/` is dropped and every pattern is relative to the
//!   root (`*.o` matches only the root's `.o` files; `**/*.o` matches them everywhere).
//! - A pattern that matches a directory matches everything below it.
//! - Backslashes are refused (they would not mean the same on every platform).
//! - An excluded directory that a later `!` pattern could reach inside is still traversed
//!   ([`Decision::Traverse`]): only what is re-included below it is synchronized.

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};

/// A pattern that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IgnoreError {
    /// The pattern is empty, a lone `!`, or names the root.
    #[error("invalid ignore pattern {0:?}: {1}")]
    Invalid(String, &'static str),
    /// The pattern holds a backslash (docker syntax).
    #[error("invalid ignore pattern {0:?}: backslashes are not allowed (use / between names)")]
    Backslash(String),
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

/// How patterns are read.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize,
)]
pub enum IgnoreSyntax {
    /// Upstream Mutagen's own syntax.
    #[default]
    Mutagen,
    /// `.dockerignore` semantics.
    Docker,
}

command_line_names!(IgnoreSyntax, "ignore syntax", { Mutagen => "mutagen", Docker => "docker" });

/// What the patterns say of an entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Synchronized.
    Included,
    /// Untracked, and a directory is not traversed.
    Ignored,
    /// A directory that is excluded, but that a later negation could reach inside: it is
    /// traversed, and only what is re-included below it is synchronized (docker syntax).
    Traverse,
}

/// One component of a docker negation, to tell whether it could match below a directory.
#[derive(Debug, Clone)]
enum Component {
    /// `**`: any number of components.
    Any,
    /// A glob for one component.
    Glob(globset::GlobMatcher),
}

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
    syntax: IgnoreSyntax,
    /// Docker syntax: the components of each negation, by rule index.
    negations: Vec<(usize, Vec<Component>)>,
}

impl Default for Ignorer {
    fn default() -> Ignorer {
        Ignorer::new(&[], false).expect("no patterns always compile")
    }
}

impl Ignorer {
    /// Compiles `patterns` (in order) in the Mutagen syntax; `ignore_vcs` adds the VCS
    /// directories.
    pub fn new(patterns: &[String], ignore_vcs: bool) -> Result<Ignorer, IgnoreError> {
        Ignorer::with_syntax(patterns, IgnoreSyntax::Mutagen, ignore_vcs)
    }

    /// Compiles `patterns` (in order) in `syntax`; `ignore_vcs` adds the VCS directories.
    pub fn with_syntax(
        patterns: &[String],
        syntax: IgnoreSyntax,
        ignore_vcs: bool,
    ) -> Result<Ignorer, IgnoreError> {
        let mut negations = Vec::new();
        let mut rules = Vec::new();
        let mut full = GlobSetBuilder::new();
        let mut basename = GlobSetBuilder::new();
        let mut basename_rules = Vec::new();
        for raw in patterns {
            let (rule, glob, matches_basename) = match syntax {
                IgnoreSyntax::Mutagen => parse(raw)?,
                IgnoreSyntax::Docker => parse_docker(raw)?,
            };
            let glob_of = |text: &str| {
                GlobBuilder::new(text)
                    .literal_separator(true)
                    .backslash_escape(syntax == IgnoreSyntax::Mutagen)
                    .build()
                    .map_err(|e| IgnoreError::Glob {
                        pattern: raw.clone(),
                        reason: e.kind().to_string(),
                    })
            };
            let compiled = glob_of(&glob)?;
            if syntax == IgnoreSyntax::Docker && rule.negated {
                let components = glob
                    .split('/')
                    .map(|part| match part {
                        "**" => Ok(Component::Any),
                        part => glob_of(part).map(|glob| Component::Glob(glob.compile_matcher())),
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                negations.push((rules.len(), components));
            }
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
            syntax,
            negations,
        })
    }

    /// Returns whether the entry at `path` (non-empty) is ignored (a directory to traverse
    /// counts as ignored: see [`Ignorer::decide`]).
    pub fn is_ignored(&self, path: &str, is_directory: bool) -> bool {
        self.decide(path, is_directory) != Decision::Included
    }

    /// Decides the entry at `path` (non-empty).
    pub fn decide(&self, path: &str, is_directory: bool) -> Decision {
        let name = path.rsplit('/').next().unwrap_or(path);
        if self.ignore_vcs && is_directory && VCS_DIRECTORIES.contains(&name) {
            return Decision::Ignored;
        }
        if self.rules.is_empty() {
            return Decision::Included;
        }
        match self.syntax {
            IgnoreSyntax::Mutagen => {
                if self.mutagen_ignored(path, name, is_directory) {
                    Decision::Ignored
                } else {
                    Decision::Included
                }
            }
            IgnoreSyntax::Docker => self.docker_decision(path, is_directory),
        }
    }

    /// Docker syntax: the last pattern matching the path or one of its parents decides.
    fn docker_decision(&self, path: &str, is_directory: bool) -> Decision {
        let prefixes = path.match_indices('/').map(|(at, _)| &path[..at]).chain([path]);
        let Some(last) =
            prefixes.filter_map(|prefix| self.full.matches(prefix).into_iter().max()).max()
        else {
            return Decision::Included;
        };
        if self.rules[last].negated {
            return Decision::Included;
        }
        if !is_directory {
            return Decision::Ignored;
        }
        let parts: Vec<&str> = path.split('/').collect();
        let reachable = self
            .negations
            .iter()
            .filter(|(index, _)| *index > last)
            .any(|(_, components)| could_match_below(components, &parts));
        if reachable { Decision::Traverse } else { Decision::Ignored }
    }

    fn mutagen_ignored(&self, path: &str, name: &str, is_directory: bool) -> bool {
        let full = self.full.matches(path);
        let by_name = self.basename.matches(name).into_iter().map(|i| self.basename_rules[i]);
        full.into_iter()
            .chain(by_name)
            .filter(|&i| is_directory || !self.rules[i].directory_only)
            .max()
            .is_some_and(|i| !self.rules[i].negated)
    }
}

/// Whether a negation with these components could match a path strictly below the directory
/// whose components are `directory`.
fn could_match_below(components: &[Component], directory: &[&str]) -> bool {
    match (components.split_first(), directory.split_first()) {
        (Some((Component::Any, _)), _) => true,
        // The directory is used up and the pattern goes on: it may match a descendant.
        (Some(_), None) => true,
        // The pattern ends at the directory or above it: not below.
        (None, _) => false,
        (Some((Component::Glob(glob), rest)), Some((part, below))) => {
            glob.is_match(part) && could_match_below(rest, below)
        }
    }
}

/// Docker syntax: splits a pattern into its rule and the glob to compile (never by basename).
fn parse_docker(raw: &str) -> Result<(Rule, String, bool), IgnoreError> {
    let invalid = |why| IgnoreError::Invalid(raw.to_owned(), why);
    if raw.contains('\\') {
        return Err(IgnoreError::Backslash(raw.to_owned()));
    }
    let trimmed = raw.trim();
    if trimmed.is_empty() {
        return Err(invalid("empty pattern"));
    }
    let (negated, rest) = match trimmed.strip_prefix('!') {
        Some(rest) => (true, rest.trim()),
        None => (false, trimmed),
    };
    // Cleaned as a path: no empty or `.` components; `..` is refused (it leaves the root).
    let mut parts = Vec::new();
    for part in rest.split('/') {
        match part {
            "" | "." => {}
            ".." => return Err(invalid("patterns cannot leave the root")),
            part => parts.push(part),
        }
    }
    if parts.is_empty() {
        return Err(invalid("the root cannot be ignored"));
    }
    Ok((Rule { negated, directory_only: false }, parts.join("/"), false))
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

    fn docker(patterns: &[&str]) -> Ignorer {
        let patterns: Vec<String> = patterns.iter().map(|p| (*p).to_owned()).collect();
        Ignorer::with_syntax(&patterns, IgnoreSyntax::Docker, false).expect("valid patterns")
    }

    #[test]
    fn docker_pattern_table() {
        use Decision::{Ignored, Included, Traverse};
        // (patterns, path, is_directory, decision)
        let table: &[(&[&str], &str, bool, Decision)] = &[
            // Anchored at the root, never by basename.
            (&["*.o"], "a.o", false, Ignored),
            (&["*.o"], "src/a.o", false, Included),
            (&["**/*.o"], "src/deep/a.o", false, Ignored),
            (&["**/*.o"], "a.o", false, Ignored),
            (&["/build"], "build", true, Ignored),
            (&["  build  "], "build", true, Ignored),
            (&["build"], "src/build", true, Included),
            // A matched directory takes everything below it.
            (&["build"], "build/out/x", false, Ignored),
            (&["docs/*.md"], "docs/a.md", false, Ignored),
            (&["docs/*.md"], "docs/x/a.md", false, Included),
            (&["./docs//tmp"], "docs/tmp/a", false, Ignored),
            // Negations, last match wins, parents count.
            (&["*.log", "!keep.log"], "keep.log", false, Included),
            (&["!keep.log", "*.log"], "keep.log", false, Ignored),
            (&["node_modules", "!node_modules/keep"], "node_modules", true, Traverse),
            (&["node_modules", "!node_modules/keep"], "node_modules/keep", false, Included),
            (&["node_modules", "!node_modules/keep"], "node_modules/keep/inner", false, Included),
            (&["node_modules", "!node_modules/keep"], "node_modules/other", false, Ignored),
            (&["node_modules", "!node_modules/keep"], "node_modules/other", true, Ignored),
            (&["a", "!a/*/c"], "a/b", true, Traverse),
            (&["a", "!a/*/c"], "a/b/c", false, Included),
            (&["a", "!a/*/c"], "a/b/d", false, Ignored),
            (&["a", "!**/c"], "a/x/y", true, Traverse),
            (&["a", "!b/c"], "a", true, Ignored),
            // An earlier negation cannot reach below a later exclusion.
            (&["!a/b", "a"], "a", true, Ignored),
            (&["!a/b", "a"], "a/b", false, Ignored),
            (&["a", "!a"], "a/x", false, Included),
        ];
        for (patterns, path, is_dir, expected) in table {
            let got = docker(patterns).decide(path, *is_dir);
            assert_eq!(got, *expected, "{patterns:?} on {path:?} (dir: {is_dir})");
        }
    }

    #[test]
    fn docker_patterns_refused() {
        for bad in ["", "   ", "!", "/", "./", "a\\b", "../x", "a["] {
            let patterns = [bad.to_owned()];
            let err = Ignorer::with_syntax(&patterns, IgnoreSyntax::Docker, false).expect_err(bad);
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

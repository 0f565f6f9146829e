//! `--ignore-vcs-ignored`: what git would ignore in a root, the way git decides it.
//!
//! The sources, in git's order of precedence: the `.gitignore` of the entry's own directory,
//! then those of each directory above it up to the root, then the root's `.git/info/exclude`,
//! then the global excludes file (`core.excludesFile`, else `$XDG_CONFIG_HOME/git/ignore`).
//! The first that has an opinion (ignore, or `!` re-include) decides. Patterns follow
//! gitignore(5), through ripgrep's `ignore` crate. As in git, nothing below an ignored
//! directory can be re-included: the scan does not enter it.
//!
//! # Invariants
//! - The matchers are loaded per scan (one read attempt per directory), so a scan always
//!   uses the `.gitignore` files as they are when it reads their directories.
//! - An unreadable or malformed `.gitignore` ignores nothing more than its valid lines say
//!   (as git does); the scan goes on.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use ignore::Match;
use ignore::gitignore::{Gitignore, GitignoreBuilder};

/// The gitignore matchers of one root, loaded as the scan reaches their directories.
#[derive(Debug)]
pub(crate) struct GitIgnores {
    root: PathBuf,
    /// By root-relative directory path; `None` where a directory has no `.gitignore`.
    directories: Mutex<HashMap<String, Option<Arc<Gitignore>>>>,
    /// `.git/info/exclude`, then the global excludes file.
    base: Vec<Gitignore>,
}

impl GitIgnores {
    /// Prepares the matchers of `root`.
    pub(crate) fn new(root: &Path) -> GitIgnores {
        let mut base = Vec::new();
        let exclude = root.join(".git/info/exclude");
        if exclude.is_file() {
            let mut builder = GitignoreBuilder::new(root);
            let _ = builder.add(&exclude);
            base.extend(builder.build().ok());
        }
        let (global, _) = GitignoreBuilder::new(root).build_global();
        base.push(global);
        GitIgnores { root: root.to_owned(), directories: Mutex::default(), base }
    }

    /// The `.gitignore` matcher of the directory at `path` (root-relative), if it has one.
    fn directory(&self, path: &str) -> Option<Arc<Gitignore>> {
        if let Some(known) = self.lock().get(path) {
            return known.clone();
        }
        let directory = self.root.join(path);
        let file = directory.join(".gitignore");
        let matcher = file.is_file().then(|| {
            let mut builder = GitignoreBuilder::new(&directory);
            let _ = builder.add(&file);
            builder.build().map(Arc::new).ok()
        });
        let matcher = matcher.flatten();
        self.lock().insert(path.to_owned(), matcher.clone());
        matcher
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Option<Arc<Gitignore>>>> {
        self.directories.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether git ignores the entry at `path` (root-relative, non-empty), assuming that no
    /// directory above it is ignored.
    pub(crate) fn is_ignored(&self, path: &str, is_directory: bool) -> bool {
        let absolute = self.root.join(path);
        let mut parent = path;
        loop {
            parent = parent.rsplit_once('/').map_or("", |(head, _)| head);
            if let Some(matcher) = self.directory(parent) {
                match matcher.matched(&absolute, is_directory) {
                    Match::Ignore(_) => return true,
                    Match::Whitelist(_) => return false,
                    Match::None => {}
                }
            }
            if parent.is_empty() {
                break;
            }
        }
        for matcher in &self.base {
            match matcher.matched(&absolute, is_directory) {
                Match::Ignore(_) => return true,
                Match::Whitelist(_) => return false,
                Match::None => {}
            }
        }
        false
    }
}

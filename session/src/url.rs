//! Endpoint URLs.
//!
//! Upstream's grammar: `docker://[user@]container/path` is Docker, a `:` before any `/` makes
//! an scp-style SSH URL (`[user@]host[:port]:path`), anything else is a local path. Local paths
//! expand a leading `~`, become absolute against the working directory and are normalized
//! lexically. Remote transports do not exist yet, so SSH and Docker URLs are refused by name.

use std::path::{Component, Path, PathBuf};

use crate::SessionError;

/// Parses a local root: rejects remote URLs, expands `~`, makes it absolute and normal.
///
/// # Errors
/// [`SessionError::InvalidUrl`] for an empty URL, a remote URL or the file-system root.
pub fn local_root(text: &str, cwd: &Path) -> Result<PathBuf, SessionError> {
    let invalid = |reason: &str| {
        Err(SessionError::InvalidUrl { url: text.to_owned(), reason: reason.into() })
    };
    if text.is_empty() {
        return invalid("the url is empty");
    }
    if text.to_ascii_lowercase().starts_with("docker://") {
        return invalid("docker endpoints are not supported yet: use a local path");
    }
    if let Some(colon) = text.find(':')
        && !text[..colon].contains('/')
    {
        return invalid("ssh endpoints are not supported yet: use a local path");
    }
    let expanded = match text.strip_prefix('~') {
        Some(rest) if rest.is_empty() || rest.starts_with('/') => {
            let Some(home) = std::env::var_os("HOME").filter(|h| !h.is_empty()) else {
                return invalid("cannot expand '~': HOME is not set");
            };
            PathBuf::from(home).join(rest.trim_start_matches('/'))
        }
        _ => PathBuf::from(text),
    };
    let absolute = normalize(&cwd.join(expanded));
    if absolute.file_name().is_none() {
        return invalid("a root cannot be the file-system root");
    }
    Ok(absolute)
}

/// Returns `path` with its deepest existing ancestor resolved through symbolic links, so that
/// two roots can be compared by where they really lead.
pub fn resolved(path: &Path) -> PathBuf {
    let mut existing = path;
    let mut rest = Vec::new();
    loop {
        if let Ok(real) = existing.canonicalize() {
            return rest.iter().rev().fold(real, |acc, name| acc.join(name));
        }
        match (existing.parent(), existing.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name.to_owned());
                existing = parent;
            }
            _ => return path.to_path_buf(),
        }
    }
}

/// Checks that two roots, and a data directory, do not contain one another (through symbolic
/// links too): each cycle would otherwise nest the tree one level deeper.
///
/// # Errors
/// [`SessionError::InvalidConfiguration`] naming the paths.
pub fn check_disjoint(alpha: &Path, beta: &Path, data: &Path) -> Result<(), SessionError> {
    let (real_alpha, real_beta) = (resolved(alpha), resolved(beta));
    if real_alpha.starts_with(&real_beta) || real_beta.starts_with(&real_alpha) {
        return Err(SessionError::InvalidConfiguration(format!(
            "roots {} and {} overlap: one contains the other",
            alpha.display(),
            beta.display()
        )));
    }
    let real_data = resolved(data);
    for (root, real) in [(alpha, &real_alpha), (beta, &real_beta)] {
        if real_data.starts_with(real) {
            return Err(SessionError::InvalidConfiguration(format!(
                "data directory {} is inside root {}: set MUTAGEN_DATA_DIRECTORY elsewhere",
                data.display(),
                root.display()
            )));
        }
    }
    Ok(())
}

/// Removes `.` and resolves `..` lexically.
fn normalize(path: &Path) -> PathBuf {
    let mut normal = PathBuf::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => {
                normal.pop();
            }
            other => normal.push(other),
        }
    }
    normal
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_roots() {
        let cwd = Path::new("/work");
        assert_eq!(local_root("a/../b/./c", cwd).expect("relative"), Path::new("/work/b/c"));
        assert_eq!(local_root("/x@y", cwd).expect("at sign"), Path::new("/x@y"));
        assert_eq!(local_root("./a:b", cwd).expect("colon after slash"), Path::new("/work/a:b"));
        for (bad, message) in [
            ("", "the url is empty"),
            ("host:/path", "ssh endpoints are not supported"),
            ("user@host:path", "ssh endpoints"),
            ("docker://c/path", "docker endpoints"),
            ("/", "cannot be the file-system root"),
            ("..", "cannot be the file-system root"),
        ] {
            let err = local_root(bad, cwd).expect_err(bad).to_string();
            assert!(err.contains(message) && err.contains(&format!("{bad:?}")), "{bad:?}: {err}");
        }
    }

    #[test]
    fn overlapping_roots_and_data_inside_a_root_are_refused() {
        let (a, b, data) = (Path::new("/t/a"), Path::new("/t/b"), Path::new("/t/data"));
        assert_eq!(check_disjoint(a, b, data), Ok(()));
        assert!(check_disjoint(a, Path::new("/t/a/x"), data).is_err());
        assert!(check_disjoint(Path::new("/t"), b, data).is_err());
        let error = check_disjoint(a, b, Path::new("/t/b/.m")).expect_err("data in beta");
        assert!(error.to_string().contains("inside root /t/b"), "{error}");
    }
}

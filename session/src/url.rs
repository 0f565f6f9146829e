//! Endpoint URLs.
//!
//! Upstream's grammar: `docker://[user@]container/path` is Docker, a `:` before any `/` makes
//! an scp-style SSH URL (`[user@]host[:port]:path`), anything else is a local path. Local paths
//! expand a leading `~`, become absolute against the working directory and are normalized
//! lexically. SSH paths are kept as written: the agent resolves `~`, `~user` and relative
//! paths against the remote home. Docker paths are absolute, or home-relative as `/~…`
//! (`/~/x`, `/~user/x`), which the agent resolves in the container.

use std::fmt;
use std::path::{Path, PathBuf};

use mutagen_core::normalize;

use crate::SessionError;

/// An endpoint URL, parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Url {
    /// An absolute, normalized local path.
    Local(PathBuf),
    /// A path on a host reached over SSH.
    Ssh(SshUrl),
    /// A path in a Docker container.
    Docker(DockerUrl),
}

/// `docker://[user@]container/path`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct DockerUrl {
    /// The user the agent runs as; `None` is the container's default user.
    pub user: Option<String>,
    /// The container's name or identifier.
    pub container: String,
    /// The path in the container: absolute (`/srv/x`) or home-relative (`~`, `~/x`,
    /// `~user/x`), normalized lexically.
    pub path: String,
}

impl fmt::Display for DockerUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("docker://")?;
        if let Some(user) = &self.user {
            write!(f, "{user}@")?;
        }
        f.write_str(&self.container)?;
        if self.path.starts_with('~') {
            f.write_str("/")?;
        }
        f.write_str(&self.path)
    }
}

/// `[user@]host[:port]:path`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SshUrl {
    /// The login user; `None` lets ssh decide (its configuration, then the local user).
    pub user: Option<String>,
    /// The host, or an alias from the user's ssh configuration.
    pub host: String,
    /// The port; `None` lets ssh decide.
    pub port: Option<u16>,
    /// The remote path as written (never empty).
    pub path: String,
}

impl fmt::Display for SshUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(user) = &self.user {
            write!(f, "{user}@")?;
        }
        f.write_str(&self.host)?;
        if let Some(port) = self.port {
            write!(f, ":{port}")?;
        }
        write!(f, ":{}", self.path)
    }
}

impl Url {
    /// Parses an endpoint URL as the user wrote it (`cwd` makes local paths absolute).
    ///
    /// # Errors
    /// [`SessionError::InvalidUrl`] naming the URL and what is wrong.
    pub fn parse(text: &str, cwd: &Path) -> Result<Url, SessionError> {
        if text.to_ascii_lowercase().starts_with("docker://") {
            return parse_docker(text).map(Url::Docker);
        }
        match text.find(':') {
            Some(colon) if !text[..colon].contains('/') => parse_ssh(text).map(Url::Ssh),
            _ => local_root(text, cwd).map(Url::Local),
        }
    }

    /// Parses a URL stored in a session (local paths are absolute there).
    ///
    /// # Errors
    /// As [`Url::parse`].
    pub fn stored(text: &str) -> Result<Url, SessionError> {
        Url::parse(text, Path::new("/"))
    }

    /// Returns the canonical text, as stored and listed.
    pub fn to_text(&self) -> String {
        match self {
            Url::Local(path) => path.to_string_lossy().into_owned(),
            Url::Ssh(ssh) => ssh.to_string(),
            Url::Docker(docker) => docker.to_string(),
        }
    }

    /// Returns the protocol name (`local`, `ssh`, `docker`).
    pub fn protocol(&self) -> &'static str {
        match self {
            Url::Local(_) => "local",
            Url::Ssh(_) => "ssh",
            Url::Docker(_) => "docker",
        }
    }
}

/// Parses `[user@]host[:port]:path`, upstream's rules: the user ends at an `@` before the
/// first `:`; a segment of digits after the host is a port (0 means unset); the rest is the
/// path, which may hold `:` and `@` and must not be empty.
fn parse_ssh(text: &str) -> Result<SshUrl, SessionError> {
    let invalid =
        |reason: &str| SessionError::InvalidUrl { url: text.to_owned(), reason: reason.into() };
    let first_colon = text.find(':').ok_or_else(|| invalid("missing ':' before the path"))?;
    let (user, rest) = match text[..first_colon].find('@') {
        Some(at) => {
            let user = &text[..at];
            if user.is_empty() {
                return Err(invalid("empty user name"));
            }
            (Some(user.to_owned()), &text[at + 1..])
        }
        None => (None, text),
    };
    let (host, rest) =
        rest.split_once(':').ok_or_else(|| invalid("missing ':' before the path"))?;
    if host.is_empty() {
        return Err(invalid("empty host name"));
    }
    if host.starts_with('-') {
        return Err(invalid("a host name cannot start with '-'"));
    }
    let (port, path) = match rest.split_once(':') {
        Some((digits, path)) if digits.bytes().all(|b| b.is_ascii_digit()) => {
            let port: u16 = digits.parse().map_err(|_| invalid("invalid port"))?;
            (Some(port).filter(|p| *p != 0), path)
        }
        _ => (None, rest),
    };
    if path.is_empty() {
        return Err(invalid("the remote path is empty"));
    }
    Ok(SshUrl { user, host: host.to_owned(), port, path: path.to_owned() })
}

/// Parses `docker://[user@]container/path`, upstream's rules: the container ends at the first
/// `/`, the user at an `@` before it; `/~…` is home-relative; otherwise the path is absolute.
/// A container's root (`/`) is refused, as a local file-system root is.
fn parse_docker(text: &str) -> Result<DockerUrl, SessionError> {
    let invalid =
        |reason: &str| SessionError::InvalidUrl { url: text.to_owned(), reason: reason.into() };
    let rest = &text["docker://".len()..];
    let Some(slash) = rest.find('/') else {
        return Err(invalid("the path must be absolute: docker://[user@]container/path"));
    };
    let (target, path) = rest.split_at(slash);
    let (user, container) = match target.rsplit_once('@') {
        Some(("", _)) => return Err(invalid("empty user name")),
        Some((user, container)) => (Some(user.to_owned()), container),
        None => (None, target),
    };
    if container.is_empty() {
        return Err(invalid("empty container name"));
    }
    let valid = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-');
    if !container.starts_with(|c: char| c.is_ascii_alphanumeric()) || !container.chars().all(valid)
    {
        return Err(invalid(
            "a container is named by letters, digits, '_', '.' and '-', starting with a letter or \
             digit",
        ));
    }
    let path = match path.strip_prefix("/~") {
        Some(home) => {
            let (user_part, below) = home.split_once('/').unwrap_or((home, ""));
            let below = normalize(&Path::new("/").join(below));
            let below = below.to_string_lossy();
            match below.as_ref() {
                "/" => format!("~{user_part}"),
                below => format!("~{user_part}{below}"),
            }
        }
        None => {
            let absolute = normalize(Path::new(path));
            if absolute.file_name().is_none() {
                return Err(invalid("a root cannot be the container's file-system root"));
            }
            absolute.to_string_lossy().into_owned()
        }
    };
    Ok(DockerUrl { user, container: container.to_owned(), path })
}

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
        return invalid("docker endpoints are not supported here: use a local path");
    }
    if let Some(colon) = text.find(':')
        && !text[..colon].contains('/')
    {
        return invalid("ssh endpoints are not supported here: use a local path");
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
    check_data_outside(alpha, data)?;
    check_data_outside(beta, data)
}

/// Checks that the data directory is not inside a local root (through symbolic links too):
/// its journal and staging would be synchronized.
///
/// # Errors
/// [`SessionError::InvalidConfiguration`] naming both paths.
pub fn check_data_outside(root: &Path, data: &Path) -> Result<(), SessionError> {
    if resolved(data).starts_with(resolved(root)) {
        return Err(SessionError::InvalidConfiguration(format!(
            "data directory {} is inside root {}: set MUTAGEN_DATA_DIRECTORY elsewhere",
            data.display(),
            root.display()
        )));
    }
    Ok(())
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
            ("host:/path", "ssh endpoints are not supported here"),
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
    fn ssh_urls_follow_upstreams_grammar() {
        let cwd = Path::new("/work");
        let ssh = |user: Option<&str>, host: &str, port: Option<u16>, path: &str| {
            Url::Ssh(SshUrl {
                user: user.map(str::to_owned),
                host: host.to_owned(),
                port,
                path: path.to_owned(),
            })
        };
        for (text, expected, canonical) in [
            ("host:path", ssh(None, "host", None, "path"), "host:path"),
            ("me@host:~/src", ssh(Some("me"), "host", None, "~/src"), "me@host:~/src"),
            (
                "me@host:2222:/srv/x",
                ssh(Some("me"), "host", Some(2222), "/srv/x"),
                "me@host:2222:/srv/x",
            ),
            ("host:0:p", ssh(None, "host", None, "p"), "host:p"),
            ("host:aaa:path", ssh(None, "host", None, "aaa:path"), "host:aaa:path"),
            ("user@ho@st:path", ssh(Some("user"), "ho@st", None, "path"), "user@ho@st:path"),
            ("C:/local/path", ssh(None, "C", None, "/local/path"), "C:/local/path"),
            ("h:22:a@b:c", ssh(None, "h", Some(22), "a@b:c"), "h:22:a@b:c"),
            ("/local:x", Url::Local(PathBuf::from("/local:x")), "/local:x"),
            ("./a@b", Url::Local(PathBuf::from("/work/a@b")), "/work/a@b"),
        ] {
            let url = Url::parse(text, cwd).expect(text);
            assert_eq!(url, expected, "{text}");
            assert_eq!(url.to_text(), canonical, "{text}");
            assert_eq!(Url::stored(&url.to_text()).expect("stored"), url, "{text}");
        }
        for (text, message) in [
            ("@host:path", "empty user name"),
            (":path", "empty host name"),
            ("host:", "the remote path is empty"),
            ("host:22:", "the remote path is empty"),
            ("host:65536:p", "invalid port"),
            ("host::p", "invalid port"),
            ("-oProxyCommand=x:p", "cannot start with '-'"),
        ] {
            let error = Url::parse(text, cwd).expect_err(text).to_string();
            assert!(
                error.contains(message) && error.contains(&format!("{text:?}")),
                "{text}: {error}"
            );
        }
    }

    #[test]
    fn docker_urls_follow_upstreams_grammar() {
        let docker = |user: Option<&str>, container: &str, path: &str| {
            Url::Docker(DockerUrl {
                user: user.map(str::to_owned),
                container: container.to_owned(),
                path: path.to_owned(),
            })
        };
        for (text, expected, canonical) in [
            ("docker://web/srv/app", docker(None, "web", "/srv/app"), "docker://web/srv/app"),
            ("DOCKER://web/srv/", docker(None, "web", "/srv"), "docker://web/srv"),
            ("docker://me@web/a/../b", docker(Some("me"), "web", "/b"), "docker://me@web/b"),
            ("docker://web/~", docker(None, "web", "~"), "docker://web/~"),
            ("docker://web/~/src/./x", docker(None, "web", "~/src/x"), "docker://web/~/src/x"),
            ("docker://web/~bob/src", docker(None, "web", "~bob/src"), "docker://web/~bob/src"),
            ("docker://web/~/../x", docker(None, "web", "~/x"), "docker://web/~/x"),
            ("docker://a.b-c_1/x:y@z", docker(None, "a.b-c_1", "/x:y@z"), "docker://a.b-c_1/x:y@z"),
        ] {
            let url = Url::parse(text, Path::new("/work")).expect(text);
            assert_eq!(url, expected, "{text}");
            assert_eq!(url.to_text(), canonical, "{text}");
            assert_eq!(Url::stored(&url.to_text()).expect("stored"), url, "{text}");
            assert_eq!(url.protocol(), "docker");
        }
        for (text, message) in [
            ("docker://web", "the path must be absolute"),
            ("docker://web:rel", "the path must be absolute"),
            ("docker:///x", "empty container name"),
            ("docker://@web/x", "empty user name"),
            ("docker://web/", "file-system root"),
            ("docker://web/..", "file-system root"),
            ("docker://-web/x", "a container is named by"),
            ("docker://we b/x", "a container is named by"),
            ("docker://web:tcp:80/x", "a container is named by"),
        ] {
            let error = Url::parse(text, Path::new("/")).expect_err(text).to_string();
            assert!(
                error.contains(message) && error.contains(&format!("{text:?}")),
                "{text}: {error}"
            );
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

//! Forwarding endpoint URLs (upstream's §2.2), for forward sessions.
//!
//! An endpoint is `<protocol>:<address>`, split at the first `:`, with a protocol among
//! `tcp`, `tcp4`, `tcp6` and `unix` and a non-empty address (`tcp::3992` is address `:3992`).
//! It is local as it is; over SSH as `[user@]host[:port]:<spec>` (recognized when the text is
//! not a spec itself and holds at least two colons); in a container as
//! `docker://[user@]container:<spec>`. Local unix socket paths expand `~` and become absolute;
//! remote ones are kept as written for the agent to resolve.

use std::fmt;
use std::path::Path;

use mutagen_core::normalize;
use serde::{Deserialize, Serialize};

use crate::SessionError;

/// The kind of socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Protocol {
    /// TCP over IPv4 or IPv6.
    Tcp,
    /// TCP over IPv4 only.
    Tcp4,
    /// TCP over IPv6 only.
    Tcp6,
    /// A Unix domain socket.
    Unix,
}

impl Protocol {
    /// Returns the name as written in URLs.
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Tcp4 => "tcp4",
            Protocol::Tcp6 => "tcp6",
            Protocol::Unix => "unix",
        }
    }
}

/// `<protocol>:<address>`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SocketSpec {
    /// The protocol.
    pub protocol: Protocol,
    /// The address: `host:port`, `:port`, `[::1]:port`, or a socket path.
    pub address: String,
}

impl fmt::Display for SocketSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.protocol.name(), self.address)
    }
}

/// A forwarding endpoint, parsed.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ForwardUrl {
    /// A socket on this machine.
    Local(SocketSpec),
    /// A socket on a host reached over SSH.
    Ssh {
        /// The login user; `None` lets ssh decide.
        user: Option<String>,
        /// The host, or an alias from the ssh configuration.
        host: String,
        /// The port; `None` lets ssh decide.
        port: Option<u16>,
        /// The socket there.
        spec: SocketSpec,
    },
    /// A socket in a Docker container.
    Docker {
        /// The user the agent runs as.
        user: Option<String>,
        /// The container's name or identifier.
        container: String,
        /// The socket there.
        spec: SocketSpec,
    },
}

impl fmt::Display for ForwardUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ForwardUrl::Local(spec) => write!(f, "{spec}"),
            ForwardUrl::Ssh { user, host, port, spec } => {
                if let Some(user) = user {
                    write!(f, "{user}@")?;
                }
                f.write_str(host)?;
                if let Some(port) = port {
                    write!(f, ":{port}")?;
                }
                write!(f, ":{spec}")
            }
            ForwardUrl::Docker { user, container, spec } => {
                f.write_str("docker://")?;
                if let Some(user) = user {
                    write!(f, "{user}@")?;
                }
                write!(f, "{container}:{spec}")
            }
        }
    }
}

impl ForwardUrl {
    /// Parses a forwarding endpoint as the user wrote it (`cwd` makes local socket paths
    /// absolute).
    ///
    /// # Errors
    /// [`SessionError::InvalidUrl`] naming the URL and what is wrong.
    pub fn parse(text: &str, cwd: &Path) -> Result<ForwardUrl, SessionError> {
        let invalid =
            |reason: &str| SessionError::InvalidUrl { url: text.to_owned(), reason: reason.into() };
        if text.is_empty() {
            return Err(invalid("the url is empty"));
        }
        if text.to_ascii_lowercase().starts_with("docker://") {
            let rest = &text["docker://".len()..];
            let (target, spec) =
                rest.split_once(':').ok_or_else(|| invalid("missing ':' before the socket"))?;
            let (user, container) = split_user(target).map_err(&invalid)?;
            if container.is_empty() {
                return Err(invalid("empty container name"));
            }
            let spec = parse_spec(spec).map_err(|reason| invalid(&reason))?;
            return Ok(ForwardUrl::Docker { user, container: container.to_owned(), spec });
        }
        if let Ok(spec) = parse_spec(text) {
            return local(spec, cwd).map(ForwardUrl::Local).map_err(&invalid);
        }
        if text.matches(':').count() < 2 {
            return Err(invalid(&parse_spec(text).expect_err("not a spec")));
        }
        let first = text.find(':').unwrap_or(text.len());
        let (user, rest) = match text[..first].split_once('@') {
            Some(("", _)) => return Err(invalid("empty user name")),
            Some((user, _)) => (Some(user.to_owned()), &text[user.len() + 1..]),
            None => (None, text),
        };
        let (host, rest) = rest.split_once(':').ok_or_else(|| invalid("missing host"))?;
        if host.is_empty() {
            return Err(invalid("empty host name"));
        }
        if host.starts_with('-') {
            return Err(invalid("a host name cannot start with '-'"));
        }
        let (port, spec) = match rest.split_once(':') {
            Some((digits, spec))
                if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) =>
            {
                let port: u16 = digits.parse().map_err(|_| invalid("invalid port"))?;
                (Some(port).filter(|p| *p != 0), spec)
            }
            _ => (None, rest),
        };
        let spec = parse_spec(spec).map_err(|reason| invalid(&reason))?;
        Ok(ForwardUrl::Ssh { user, host: host.to_owned(), port, spec })
    }
}

/// What to do when a unix socket listener's path exists.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum OverwriteMode {
    /// Fail (the default).
    #[default]
    Leave,
    /// Replace an existing socket (never anything else).
    Overwrite,
}

impl OverwriteMode {
    /// Parses `leave` or `overwrite`.
    ///
    /// # Errors
    /// [`SessionError::InvalidConfiguration`] naming the value.
    pub fn parse(text: &str) -> Result<OverwriteMode, SessionError> {
        match text {
            "leave" => Ok(OverwriteMode::Leave),
            "overwrite" => Ok(OverwriteMode::Overwrite),
            other => Err(SessionError::InvalidConfiguration(format!(
                "unknown socket overwrite mode {other:?} (expected leave or overwrite)"
            ))),
        }
    }

    /// The name as written on the command line.
    pub fn name(self) -> &'static str {
        match self {
            OverwriteMode::Leave => "leave",
            OverwriteMode::Overwrite => "overwrite",
        }
    }
}

/// Settings of unix socket listeners.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SocketOptions {
    /// What to do when the path exists.
    pub overwrite: OverwriteMode,
    /// The socket's owner (a name or a numeric id); `None` keeps the listener's.
    pub owner: Option<String>,
    /// The socket's group (a name or a numeric id); `None` keeps the listener's.
    pub group: Option<String>,
    /// The socket's permission bits.
    pub mode: u32,
}

impl Default for SocketOptions {
    fn default() -> SocketOptions {
        SocketOptions { overwrite: OverwriteMode::Leave, owner: None, group: None, mode: 0o600 }
    }
}

/// Parses a permission mode given in octal (`600`, `0660`, `0o644`).
///
/// # Errors
/// [`SessionError::InvalidConfiguration`] naming the value.
pub fn parse_permission_mode(text: &str) -> Result<u32, SessionError> {
    let digits = text.strip_prefix("0o").unwrap_or(text);
    match u32::from_str_radix(digits, 8) {
        Ok(mode) if mode != 0 && mode <= 0o777 => Ok(mode),
        _ => Err(SessionError::InvalidConfiguration(format!(
            "invalid socket permission mode {text:?} (expected octal bits such as 600)"
        ))),
    }
}

/// A forward session's frozen specification.
///
/// Serialized as a list of tagged fields (as [`crate::SessionSpec`] is, see
/// [`crate::encoding`]), so that fields can be added without a new journal format.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ForwardSpec {
    /// The listening endpoint, as stored (its canonical text).
    pub source: String,
    /// The dialing endpoint, as stored.
    pub destination: String,
    /// The name ("" for none).
    pub name: String,
    /// Labels.
    pub labels: crate::Labels,
    /// Created paused.
    pub paused: bool,
    /// Unix socket listener settings.
    pub socket: SocketOptions,
    /// The Docker environment captured at creation for a container source.
    pub source_environment: crate::Environment,
    /// The same for a container destination.
    pub destination_environment: crate::Environment,
}

/// One field of a [`ForwardSpec`]; the variant index is the tag on disk.
#[derive(Serialize, Deserialize)]
enum ForwardField {
    Source(String),
    Destination(String),
    Name(String),
    Labels(crate::Labels),
    Paused(bool),
    Socket(SocketOptions),
    SourceEnvironment(crate::Environment),
    DestinationEnvironment(crate::Environment),
}

impl Serialize for ForwardSpec {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        [
            ForwardField::Source(self.source.clone()),
            ForwardField::Destination(self.destination.clone()),
            ForwardField::Name(self.name.clone()),
            ForwardField::Labels(self.labels.clone()),
            ForwardField::Paused(self.paused),
            ForwardField::Socket(self.socket.clone()),
            ForwardField::SourceEnvironment(self.source_environment.clone()),
            ForwardField::DestinationEnvironment(self.destination_environment.clone()),
        ]
        .as_slice()
        .serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for ForwardSpec {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<ForwardSpec, D::Error> {
        use serde::de::Error as _;
        let (mut source, mut destination) = (None, None);
        let mut spec = ForwardSpec {
            source: String::new(),
            destination: String::new(),
            name: String::new(),
            labels: crate::Labels::new(),
            paused: false,
            socket: SocketOptions::default(),
            source_environment: crate::Environment::new(),
            destination_environment: crate::Environment::new(),
        };
        let mut seen = std::collections::HashSet::new();
        for field in Vec::<ForwardField>::deserialize(deserializer)? {
            let tag = std::mem::discriminant(&field);
            if !seen.insert(tag) {
                return Err(D::Error::custom("a forward session field is given twice"));
            }
            match field {
                ForwardField::Source(url) => source = Some(url),
                ForwardField::Destination(url) => destination = Some(url),
                ForwardField::Name(name) => spec.name = name,
                ForwardField::Labels(labels) => spec.labels = labels,
                ForwardField::Paused(paused) => spec.paused = paused,
                ForwardField::Socket(socket) => spec.socket = socket,
                ForwardField::SourceEnvironment(environment) => {
                    spec.source_environment = environment;
                }
                ForwardField::DestinationEnvironment(environment) => {
                    spec.destination_environment = environment;
                }
            }
        }
        spec.source =
            source.ok_or_else(|| D::Error::custom("a forward session without a source"))?;
        spec.destination = destination
            .ok_or_else(|| D::Error::custom("a forward session without a destination"))?;
        Ok(spec)
    }
}

/// Splits `user@rest` (`None` without an `@`).
fn split_user(text: &str) -> Result<(Option<String>, &str), &'static str> {
    match text.split_once('@') {
        Some(("", _)) => Err("empty user name"),
        Some((user, rest)) => Ok((Some(user.to_owned()), rest)),
        None => Ok((None, text)),
    }
}

/// Parses `<protocol>:<address>`.
fn parse_spec(text: &str) -> Result<SocketSpec, String> {
    let (protocol, address) = text
        .split_once(':')
        .ok_or_else(|| "expected <protocol>:<address> (tcp:, tcp4:, tcp6: or unix:)".to_owned())?;
    let protocol = match protocol {
        "tcp" => Protocol::Tcp,
        "tcp4" => Protocol::Tcp4,
        "tcp6" => Protocol::Tcp6,
        "unix" => Protocol::Unix,
        "npipe" => return Err("named pipes exist only on Windows".to_owned()),
        other => {
            return Err(format!(
                "unknown socket protocol {other:?} (expected tcp, tcp4, tcp6 or unix)"
            ));
        }
    };
    if address.is_empty() {
        return Err("the socket address is empty".to_owned());
    }
    Ok(SocketSpec { protocol, address: address.to_owned() })
}

/// A local spec: unix socket paths expand `~` and become absolute.
fn local(spec: SocketSpec, cwd: &Path) -> Result<SocketSpec, &'static str> {
    if spec.protocol != Protocol::Unix {
        return Ok(spec);
    }
    let expanded = match spec.address.strip_prefix('~') {
        Some(rest) if rest.is_empty() || rest.starts_with('/') => {
            let home = std::env::var_os("HOME").filter(|h| !h.is_empty());
            let home = home.ok_or("cannot expand '~': HOME is not set")?;
            Path::new(&home).join(rest.trim_start_matches('/'))
        }
        _ => Path::new(&spec.address).to_owned(),
    };
    let absolute = normalize(&cwd.join(expanded));
    let address = absolute.to_str().ok_or("the socket path is not valid UTF-8")?.to_owned();
    Ok(SocketSpec { protocol: Protocol::Unix, address })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(protocol: Protocol, address: &str) -> SocketSpec {
        SocketSpec { protocol, address: address.to_owned() }
    }

    #[test]
    fn forwarding_urls_follow_upstreams_grammar() {
        let cwd = Path::new("/work");
        for (text, expected, canonical) in [
            (
                "tcp:localhost:5050",
                ForwardUrl::Local(spec(Protocol::Tcp, "localhost:5050")),
                "tcp:localhost:5050",
            ),
            ("tcp::3992", ForwardUrl::Local(spec(Protocol::Tcp, ":3992")), "tcp::3992"),
            ("tcp6:[::1]:80", ForwardUrl::Local(spec(Protocol::Tcp6, "[::1]:80")), "tcp6:[::1]:80"),
            (
                "unix:run/x.sock",
                ForwardUrl::Local(spec(Protocol::Unix, "/work/run/x.sock")),
                "unix:/work/run/x.sock",
            ),
            (
                "host:tcp4:localhost:5050",
                ForwardUrl::Ssh {
                    user: None,
                    host: "host".into(),
                    port: None,
                    spec: spec(Protocol::Tcp4, "localhost:5050"),
                },
                "host:tcp4:localhost:5050",
            ),
            (
                "me@host:2222:unix:~/socket.sock",
                ForwardUrl::Ssh {
                    user: Some("me".into()),
                    host: "host".into(),
                    port: Some(2222),
                    spec: spec(Protocol::Unix, "~/socket.sock"),
                },
                "me@host:2222:unix:~/socket.sock",
            ),
            (
                "docker://c:tcp6:[::1]:5543",
                ForwardUrl::Docker {
                    user: None,
                    container: "c".into(),
                    spec: spec(Protocol::Tcp6, "[::1]:5543"),
                },
                "docker://c:tcp6:[::1]:5543",
            ),
            (
                "docker://u@c:unix:/some/socket.sock",
                ForwardUrl::Docker {
                    user: Some("u".into()),
                    container: "c".into(),
                    spec: spec(Protocol::Unix, "/some/socket.sock"),
                },
                "docker://u@c:unix:/some/socket.sock",
            ),
        ] {
            let url = ForwardUrl::parse(text, cwd).expect(text);
            assert_eq!(url, expected, "{text}");
            assert_eq!(url.to_string(), canonical, "{text}");
        }
        for (text, message) in [
            ("", "the url is empty"),
            ("invalid::3992", "unknown socket protocol"),
            ("a:b", "unknown socket protocol \"a\""),
            ("a", "expected <protocol>:<address>"),
            ("tcp:", "the socket address is empty"),
            ("npipe:\\\\.\\pipe\\x", "named pipes exist only on Windows"),
            ("host:udp:1.2.3.4:5", "unknown socket protocol \"udp\""),
            ("@host:tcp:x:1", "empty user name"),
            ("docker://c", "missing ':' before the socket"),
            ("docker://:tcp:1", "empty container name"),
            ("docker://c:bad:1", "unknown socket protocol"),
            ("-oX=y:tcp:h:1", "cannot start with '-'"),
        ] {
            let error = ForwardUrl::parse(text, cwd).expect_err(text).to_string();
            assert!(
                error.contains(message) && error.contains(&format!("{text:?}")),
                "{text}: {error}"
            );
        }
    }
}

#[cfg(test)]
mod spec_tests {
    use super::*;

    #[test]
    fn forward_specs_round_trip_and_refuse_missing_or_repeated_fields() {
        let spec = ForwardSpec {
            source: "tcp:localhost:8080".into(),
            destination: "user@host:tcp:localhost:80".into(),
            name: "web".into(),
            labels: [("a".to_owned(), "b".to_owned())].into(),
            paused: true,
            socket: SocketOptions {
                overwrite: OverwriteMode::Overwrite,
                owner: Some("root".into()),
                group: None,
                mode: 0o660,
            },
            source_environment: crate::Environment::new(),
            destination_environment: [("DOCKER_HOST".to_owned(), "unix:///x".to_owned())].into(),
        };
        let bytes = postcard::to_stdvec(&spec).expect("encode");
        assert_eq!(postcard::from_bytes::<ForwardSpec>(&bytes).expect("decode"), spec);
        let missing =
            postcard::to_stdvec(&[ForwardField::Source("tcp::1".into())][..]).expect("encode");
        assert!(postcard::from_bytes::<ForwardSpec>(&missing).is_err(), "no destination");
        let twice = [ForwardField::Source("a".into()), ForwardField::Source("b".into())];
        assert!(
            postcard::from_bytes::<ForwardSpec>(&postcard::to_stdvec(&twice[..]).expect("encode"))
                .is_err()
        );
    }

    #[test]
    fn permission_modes_are_octal_and_bounded() {
        assert_eq!(parse_permission_mode("600").expect("600"), 0o600);
        assert_eq!(parse_permission_mode("0660").expect("0660"), 0o660);
        assert_eq!(parse_permission_mode("0o644").expect("0o644"), 0o644);
        for bad in ["", "0", "800", "7777", "rw"] {
            let error = parse_permission_mode(bad).expect_err(bad).to_string();
            assert!(error.contains("permission mode"), "{error}");
        }
        assert_eq!(OverwriteMode::parse("overwrite").expect("overwrite"), OverwriteMode::Overwrite);
        assert!(OverwriteMode::parse("replace").is_err());
    }
}

//! Local sockets: listeners that can be stopped from another thread, dialing, and the
//! connections both give.
//!
//! # Invariants
//! - A unix socket listener appears at its path only with its final owner and permissions: it
//!   is bound under a temporary name in the same directory, set up, then renamed into place
//!   (refusing to replace anything in `leave` mode).
//! - `overwrite` replaces only a socket: a regular file or a directory at the path is never
//!   removed.
//! - Dropping a unix listener removes its socket file if the file is still the one it
//!   created.

use mutagen_core::accounts::{Account, resolve};
use std::io::{ErrorKind, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

pub use mutagen_session::forward::{OverwriteMode, SocketOptions};
use mutagen_session::forward::{Protocol, SocketSpec};
use rustix::event::{EventfdFlags, PollFd, PollFlags};

use crate::mux::Stream;

/// How long a dial may take.
const DIAL_TIMEOUT: Duration = Duration::from_secs(10);

/// A local socket, written by the multiplexer's reader thread when that need not wait.
#[derive(Debug)]
pub enum Socket {
    /// TCP.
    Tcp(TcpStream),
    /// A unix socket.
    Unix(UnixStream),
}

impl Socket {
    /// Another handle on the same socket.
    ///
    /// # Errors
    /// The descriptor cannot be duplicated.
    pub fn try_clone(&self) -> std::io::Result<Socket> {
        Ok(match self {
            Socket::Tcp(stream) => Socket::Tcp(stream.try_clone()?),
            Socket::Unix(stream) => Socket::Unix(stream.try_clone()?),
        })
    }

    fn fd(&self) -> std::os::fd::BorrowedFd<'_> {
        match self {
            Socket::Tcp(stream) => stream.as_fd(),
            Socket::Unix(stream) => stream.as_fd(),
        }
    }

    /// Sends what fits in the socket's buffer now; `Ok(0)` when nothing does.
    ///
    /// # Errors
    /// The connection failed.
    pub fn send_now(&self, bytes: &[u8]) -> std::io::Result<usize> {
        let flags = rustix::net::SendFlags::DONTWAIT | rustix::net::SendFlags::NOSIGNAL;
        loop {
            match rustix::net::send(self.fd(), bytes, flags) {
                Ok(n) => return Ok(n),
                Err(rustix::io::Errno::AGAIN) => return Ok(0),
                Err(rustix::io::Errno::INTR) => {}
                Err(error) => return Err(error.into()),
            }
        }
    }

    /// Sends everything, waiting for room.
    ///
    /// # Errors
    /// The connection failed.
    pub fn send_all(&self, bytes: &[u8]) -> std::io::Result<()> {
        match self {
            Socket::Tcp(stream) => (&*stream).write_all(bytes),
            Socket::Unix(stream) => (&*stream).write_all(bytes),
        }
    }

    /// Ends one direction or both.
    pub fn shutdown(&self, how: Shutdown) {
        let _ = match self {
            Socket::Tcp(stream) => stream.shutdown(how),
            Socket::Unix(stream) => stream.shutdown(how),
        };
    }
}

/// A connection from a listener or a dial.
#[derive(Debug)]
pub enum Connection {
    /// TCP.
    Tcp(TcpStream),
    /// A unix socket.
    Unix(UnixStream),
    /// A stream over an agent link.
    Stream(Stream),
}

/// Resolves a TCP spec's address: `host:port`, `:port` (every interface), `[v6]:port`.
fn tcp_addresses(spec: &SocketSpec) -> Result<Vec<SocketAddr>, String> {
    let address = &spec.address;
    let text = match address.strip_prefix(':') {
        Some(port) if spec.protocol == Protocol::Tcp6 => format!("[::]:{port}"),
        Some(port) => format!("0.0.0.0:{port}"),
        None => address.clone(),
    };
    let addresses: Vec<SocketAddr> = text
        .to_socket_addrs()
        .map_err(|e| format!("unable to resolve {spec}: {e}"))?
        .filter(|address| match spec.protocol {
            Protocol::Tcp4 => address.is_ipv4(),
            Protocol::Tcp6 => address.is_ipv6(),
            _ => true,
        })
        .collect();
    if addresses.is_empty() {
        return Err(format!("{spec} names no {} address", spec.protocol.name()));
    }
    Ok(addresses)
}

/// Expands `~` and `~/…` in a unix socket path against `home`.
pub fn expand_home(path: &str, home: Option<&Path>) -> Result<PathBuf, String> {
    match (path.strip_prefix('~'), home) {
        (Some(""), Some(home)) => Ok(home.to_owned()),
        (Some(rest), Some(home)) if rest.starts_with('/') => Ok(home.join(&rest[1..])),
        (Some(_), None) => Err(format!("unable to expand {path}: no home directory")),
        (Some(_), Some(_)) => Err(format!("unable to expand {path}: only ~ and ~/ are supported")),
        (None, _) => Ok(PathBuf::from(path)),
    }
}

/// Dials `spec`.
///
/// # Errors
/// A message naming the address and the cause.
pub fn dial(spec: &SocketSpec, home: Option<&Path>) -> Result<Connection, String> {
    let failed = |e: std::io::Error| format!("unable to connect to {spec}: {e}");
    match spec.protocol {
        Protocol::Unix => {
            let path = expand_home(&spec.address, home)?;
            UnixStream::connect(&path).map(Connection::Unix).map_err(failed)
        }
        _ => {
            let mut last = None;
            for address in tcp_addresses(spec)? {
                match TcpStream::connect_timeout(&address, DIAL_TIMEOUT) {
                    Ok(stream) => {
                        let _ = stream.set_nodelay(true);
                        return Ok(Connection::Tcp(stream));
                    }
                    Err(error) => last = Some(error),
                }
            }
            Err(failed(last.unwrap_or_else(|| ErrorKind::AddrNotAvailable.into())))
        }
    }
}

enum Bound {
    Tcp(TcpListener),
    Unix { listener: UnixListener, path: PathBuf, identity: (u64, u64) },
}

/// A listening socket whose [`Listener::accept`] another thread can stop.
pub struct Listener {
    socket: Bound,
    stop: Arc<OwnedFd>,
    spec: SocketSpec,
}

/// Stops a [`Listener`]'s accepts, from any thread.
#[derive(Clone)]
pub struct Stopper(Arc<OwnedFd>);

impl Stopper {
    /// Makes every current and later accept return `None`.
    pub fn stop(&self) {
        let _ = rustix::io::write(&self.0, &1u64.to_ne_bytes());
    }
}

/// A temporary name for a socket being set up.
fn temporary_name(path: &Path) -> PathBuf {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let number = COUNTER.fetch_add(1, Ordering::Relaxed);
    path.with_file_name(format!(".{name}.mutagen-{}-{number}", std::process::id()))
}

fn bind_unix(spec: &SocketSpec, path: &Path, options: &SocketOptions) -> Result<Bound, String> {
    let failed = |what: &str, e: std::io::Error| format!("unable to listen on {spec}: {what}{e}");
    let owner = options.owner.as_deref().map(|o| resolve(Account::User, o)).transpose()?;
    let group = options.group.as_deref().map(|g| resolve(Account::Group, g)).transpose()?;
    match std::fs::symlink_metadata(path) {
        Ok(existing) if options.overwrite == OverwriteMode::Overwrite => {
            if !existing.file_type().is_socket() {
                return Err(format!(
                    "unable to listen on {spec}: {} exists and is not a socket",
                    path.display()
                ));
            }
        }
        Ok(_) => {
            return Err(format!(
                "unable to listen on {spec}: {} exists (use --socket-overwrite-mode overwrite)",
                path.display()
            ));
        }
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => return Err(failed("", e)),
    }
    let temporary = temporary_name(path);
    let listener = UnixListener::bind(&temporary).map_err(|e| failed("", e))?;
    let undo = |message: String| {
        let _ = std::fs::remove_file(&temporary);
        message
    };
    std::fs::set_permissions(&temporary, std::fs::Permissions::from_mode(options.mode & 0o7777))
        .map_err(|e| undo(failed("setting its permissions: ", e)))?;
    if owner.is_some() || group.is_some() {
        rustix::fs::chown(
            &temporary,
            owner.map(rustix::fs::Uid::from_raw),
            group.map(rustix::fs::Gid::from_raw),
        )
        .map_err(|e| undo(failed("setting its owner: ", e.into())))?;
    }
    let flags = match options.overwrite {
        OverwriteMode::Leave => rustix::fs::RenameFlags::NOREPLACE,
        OverwriteMode::Overwrite => rustix::fs::RenameFlags::empty(),
    };
    rustix::fs::renameat_with(rustix::fs::CWD, &temporary, rustix::fs::CWD, path, flags)
        .map_err(|e| undo(failed("", e.into())))?;
    let metadata = std::fs::symlink_metadata(path).map_err(|e| failed("", e))?;
    Ok(Bound::Unix { listener, path: path.to_owned(), identity: (metadata.dev(), metadata.ino()) })
}

impl std::fmt::Debug for Listener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Listener").field("spec", &self.spec).finish_non_exhaustive()
    }
}

impl Listener {
    /// Listens on `spec` (`home` expands `~` in unix socket paths).
    ///
    /// # Errors
    /// A message naming the address and the cause (in use, permission, not resolvable).
    pub fn bind(
        spec: &SocketSpec,
        options: &SocketOptions,
        home: Option<&Path>,
    ) -> Result<Listener, String> {
        let socket = match spec.protocol {
            Protocol::Unix => {
                let path = expand_home(&spec.address, home)?;
                bind_unix(spec, &path, options)?
            }
            _ => {
                let addresses = tcp_addresses(spec)?;
                let listener = TcpListener::bind(&addresses[..])
                    .map_err(|e| format!("unable to listen on {spec}: {e}"))?;
                Bound::Tcp(listener)
            }
        };
        let stop = rustix::event::eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK)
            .map_err(|e| format!("unable to listen on {spec}: {e}"))?;
        Ok(Listener { socket, stop: Arc::new(stop), spec: spec.clone() })
    }

    /// What it listens on.
    pub fn spec(&self) -> &SocketSpec {
        &self.spec
    }

    /// The bound address of a TCP listener (for a port chosen by the system).
    pub fn local_address(&self) -> Option<SocketAddr> {
        match &self.socket {
            Bound::Tcp(listener) => listener.local_addr().ok(),
            Bound::Unix { .. } => None,
        }
    }

    /// A handle that stops accepts.
    pub fn stopper(&self) -> Stopper {
        Stopper(self.stop.clone())
    }

    /// Waits for a connection; `Ok(None)` once stopped.
    ///
    /// # Errors
    /// The listener failed (transient errors such as an aborted connection are retried).
    pub fn accept(&self) -> Result<Option<Connection>, String> {
        loop {
            let fd = match &self.socket {
                Bound::Tcp(listener) => listener.as_fd(),
                Bound::Unix { listener, .. } => listener.as_fd(),
            };
            let mut fds =
                [PollFd::new(&fd, PollFlags::IN), PollFd::new(&*self.stop, PollFlags::IN)];
            match rustix::event::poll(&mut fds, None) {
                Ok(_) => {}
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => return Err(format!("listening on {} failed: {e}", self.spec)),
            }
            if !fds[1].revents().is_empty() {
                return Ok(None);
            }
            let accepted = match &self.socket {
                Bound::Tcp(listener) => listener.accept().map(|(stream, _)| {
                    let _ = stream.set_nodelay(true);
                    Connection::Tcp(stream)
                }),
                Bound::Unix { listener, .. } => {
                    listener.accept().map(|(stream, _)| Connection::Unix(stream))
                }
            };
            match accepted {
                Ok(connection) => return Ok(Some(connection)),
                Err(e)
                    if matches!(
                        e.kind(),
                        ErrorKind::Interrupted
                            | ErrorKind::ConnectionAborted
                            | ErrorKind::WouldBlock
                    ) => {}
                // Out of descriptors and the like: wait a little rather than spin.
                Err(e) if e.raw_os_error().is_some_and(|code| code == 24 || code == 23) => {
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(e) => return Err(format!("listening on {} failed: {e}", self.spec)),
            }
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let Bound::Unix { path, identity, .. } = &self.socket {
            let ours = std::fs::symlink_metadata(path)
                .is_ok_and(|m| (m.dev(), m.ino()) == *identity && m.file_type().is_socket());
            if ours {
                let _ = std::fs::remove_file(path);
            }
        }
    }
}

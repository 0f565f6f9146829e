//! The command line's side of the IPC: connect (starting the daemon if needed), check the
//! version, send requests.

use std::os::unix::net::UnixStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::paths::DataDirectory;
use crate::protocol::{self, PROTOCOL_VERSION, Request, Response, VERSION};

/// How long a daemon may take to answer the version request of a new connection.
const VERSION_TIMEOUT: Duration = Duration::from_secs(5);

/// How long `start` waits for a new daemon to answer.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// A connection to the daemon.
#[derive(Debug)]
pub struct Client {
    stream: UnixStream,
    /// The daemon's process id.
    pub pid: u32,
}

impl Client {
    /// Connects to a running daemon and checks its version; `Ok(None)` when none is running.
    ///
    /// # Errors
    /// A version mismatch or a broken daemon.
    pub fn connect(data: &DataDirectory) -> anyhow::Result<Option<Client>> {
        let socket = data.socket();
        let stream = match UnixStream::connect(&socket) {
            Ok(stream) => stream,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
                ) =>
            {
                return Ok(None);
            }
            Err(e) => {
                return Err(e)
                    .with_context(|| format!("unable to connect to {}", socket.display()));
            }
        };
        // A daemon answers its version at once; one that accepted while exiting never does.
        stream.set_read_timeout(Some(VERSION_TIMEOUT)).context("unable to set a timeout")?;
        let mut client = Client { stream, pid: 0 };
        let answer = client.request(&Request::Version);
        client.stream.set_read_timeout(None).context("unable to clear a timeout")?;
        let answer = match answer {
            Ok(answer) => answer,
            // A daemon that was killed (or is exiting) after it accepted: none is running.
            Err(error) if is_gone(&error) => return Ok(None),
            Err(error) => return Err(error),
        };
        match answer {
            Response::Version { version, protocol, pid } => {
                if version != VERSION || protocol != PROTOCOL_VERSION {
                    bail!(
                        "client/daemon version mismatch: this is {VERSION} (protocol \
                         {PROTOCOL_VERSION}), the daemon is {version} (protocol {protocol}); \
                         restart it with \"mutagen daemon stop\" and try again"
                    );
                }
                client.pid = pid;
                Ok(Some(client))
            }
            other => bail!("unexpected answer from the daemon: {other:?}"),
        }
    }

    /// Connects, starting the daemon first unless `MUTAGEN_DISABLE_AUTOSTART=1`.
    ///
    /// # Errors
    /// When no daemon runs and none can be started.
    pub fn connect_or_start(data: &DataDirectory) -> anyhow::Result<Client> {
        if let Some(client) = Client::connect(data)? {
            return Ok(client);
        }
        if std::env::var("MUTAGEN_DISABLE_AUTOSTART").is_ok_and(|v| v == "1") {
            bail!(
                "unable to reach the daemon at {} (autostart is disabled by \
                 MUTAGEN_DISABLE_AUTOSTART=1; run \"mutagen daemon start\")",
                data.socket().display()
            );
        }
        let client = start(data)?;
        eprintln!("Started Mutagen daemon in background (terminate with \"mutagen daemon stop\")");
        Ok(client)
    }

    /// Sends a request and reads the answer.
    ///
    /// # Errors
    /// When the connection fails.
    pub fn request(&mut self, request: &Request) -> anyhow::Result<Response> {
        protocol::write_blocking(&mut self.stream, request)
            .context("unable to talk to the daemon")?;
        protocol::read_blocking(&mut self.stream).context("the daemon did not answer")
    }

    /// Sends a request whose answer may be preceded by questions for the user, which `ask`
    /// answers (`None`: declined); the final answer must not be an error.
    ///
    /// # Errors
    /// The daemon's error message, or a connection failure.
    pub fn call_asking(
        &mut self,
        request: &Request,
        ask: &mut dyn FnMut(&str, bool) -> Option<String>,
    ) -> anyhow::Result<Response> {
        protocol::write_blocking(&mut self.stream, request)
            .context("unable to talk to the daemon")?;
        loop {
            let response: Response =
                protocol::read_blocking(&mut self.stream).context("the daemon did not answer")?;
            match response {
                Response::Prompt { message, secret } => {
                    let answer = ask(&message, secret);
                    protocol::write_blocking(&mut self.stream, &Request::Answer(answer))
                        .context("unable to talk to the daemon")?;
                }
                Response::Error(message) => bail!("{message}"),
                response => return Ok(response),
            }
        }
    }

    /// Sends a request whose answer must not be an error.
    ///
    /// # Errors
    /// The daemon's error message, or a connection failure.
    pub fn call(&mut self, request: &Request) -> anyhow::Result<Response> {
        // A request that does not offer to prompt gets no questions; decline any.
        self.call_asking(request, &mut |_, _| None)
    }
}

/// Starts a daemon in the background (a new process group running `mutagen daemon run`, its
/// output appended to the daemon log) and waits until it answers.
///
/// # Errors
/// When the daemon exits or does not answer in time; the message quotes its log.
pub fn start(data: &DataDirectory) -> anyhow::Result<Client> {
    data.ensure()?;
    // A registered daemon is started by systemd, which then supervises it.
    if crate::service::registered(data) && crate::service::start().is_ok() {
        let deadline = Instant::now() + START_TIMEOUT;
        while Instant::now() < deadline {
            if let Some(client) = Client::connect(data)? {
                return Ok(client);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        bail!(
            "the daemon that systemd started did not answer within {START_TIMEOUT:?} (see \
             `journalctl --user -u {}`)",
            crate::service::UNIT
        );
    }
    let executable = std::env::current_exe().context("unable to locate the mutagen executable")?;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(data.log())
        .with_context(|| format!("unable to open {}", data.log().display()))?;
    let mut child = {
        use std::os::unix::process::CommandExt;
        Command::new(executable)
            .args(["daemon", "run"])
            .env("MUTAGEN_DATA_DIRECTORY", data.root())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .process_group(0)
            .spawn()
            .context("unable to start the daemon")?
    };
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if let Some(client) = Client::connect(data)? {
            // Reap the child from a thread, so that it does not linger as a zombie while
            // this command runs.
            std::thread::spawn(move || child.wait());
            return Ok(client);
        }
        if let Some(status) = child.try_wait()? {
            // Another daemon may have won a race for the lock: use it.
            if let Some(client) = Client::connect(data)? {
                return Ok(client);
            }
            bail!("the daemon exited ({status}): {}", log_tail(data));
        }
        if Instant::now() > deadline {
            bail!("the daemon did not answer within {START_TIMEOUT:?}: {}", log_tail(data));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Whether a failed exchange means that the daemon went away (reset, broken pipe, end of
/// stream) rather than that it answered wrongly.
fn is_gone(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause.downcast_ref::<std::io::Error>().is_some_and(|e| {
            matches!(
                e.kind(),
                std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::ConnectionAborted
                    | std::io::ErrorKind::BrokenPipe
                    | std::io::ErrorKind::UnexpectedEof
                    | std::io::ErrorKind::WouldBlock
                    | std::io::ErrorKind::TimedOut
            )
        })
    })
}

/// Returns the last line of the daemon log, for error messages.
fn log_tail(data: &DataDirectory) -> String {
    let text = std::fs::read_to_string(data.log()).unwrap_or_default();
    match text.lines().rev().find(|line| !line.trim().is_empty()) {
        Some(line) => format!("{} (see {})", line.trim(), data.log().display()),
        None => format!("see {}", data.log().display()),
    }
}

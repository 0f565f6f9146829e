//! The forwarding role of an agent, and the daemon's side of starting one.
//!
//! After the agent's greeting (the protocol crate's magic and [`Hello`]), the daemon sends
//! one [`Init`] frame and the agent answers one [`InitReply`]; then the link carries the
//! multiplexer's frames (uncompressed: forwarded data is often compressed already, and
//! latency matters more).
//!
//! A listening agent turns each connection it accepts into a stream it opens; the daemon
//! answers once the destination accepted it, or refuses it, and the agent then closes that
//! one connection. A dialing agent dials for each stream the daemon opens, and refuses the
//! stream, with the reason, when the dial fails.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::sync::Arc;

use crossbeam_channel::Receiver;
use mutagen_protocol::codec::{read_frame, write_frame};
use mutagen_protocol::{AgentStream, Hello, MAGIC};
use mutagen_session::forward::SocketSpec;
use serde::{Deserialize, Serialize};

use crate::mux::{End, Incoming, Mux};
use crate::relay::{Counters, relay};
use crate::socket::{Connection, Listener, SocketOptions, dial};

/// What the daemon asks of a forwarding agent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Init {
    /// Listen there, and open a stream for each connection.
    Listen {
        /// The socket.
        spec: SocketSpec,
        /// Unix socket settings.
        options: SocketOptions,
    },
    /// Dial there for each stream the daemon opens.
    Dial {
        /// The socket.
        spec: SocketSpec,
    },
}

/// The agent's answer to [`Init`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum InitReply {
    /// Listening, or ready to dial.
    Ready,
    /// Why not (a listener that cannot bind, a path that cannot be expanded).
    Failed(String),
}

/// The largest [`Init`] accepted.
const INIT_LIMIT: u32 = 64 * 1024;

/// Serves a forwarding agent on `input` and `output` until the link closes; `home` expands
/// `~` in unix socket paths.
///
/// # Errors
/// The greeting or the initialization could not be exchanged, or the listener failed.
pub fn serve(
    mut input: Box<dyn Read + Send>,
    mut output: Box<dyn Write + Send>,
    hello: &Hello,
    home: Option<PathBuf>,
) -> Result<(), String> {
    let io = |e: std::io::Error| format!("unable to talk to the daemon: {e}");
    output.write_all(&MAGIC).map_err(io)?;
    write_frame(&mut output, hello).map_err(|e| e.to_string())?;
    output.flush().map_err(io)?;
    let Some(init) = read_frame::<Init>(&mut input, INIT_LIMIT).map_err(|e| e.to_string())? else {
        return Ok(());
    };
    let reply = |output: &mut Box<dyn Write + Send>, reply: &InitReply| {
        write_frame(output, reply).map_err(|e| e.to_string())?;
        output.flush().map_err(io)
    };
    match init {
        Init::Listen { spec, options } => {
            let listener = match Listener::bind(&spec, &options, home.as_deref()) {
                Ok(listener) => listener,
                Err(error) => {
                    reply(&mut output, &InitReply::Failed(error.clone()))?;
                    return Err(error);
                }
            };
            reply(&mut output, &InitReply::Ready)?;
            let (mux, incoming) =
                Mux::start(input, output, Box::new(()), End::Agent).map_err(io)?;
            // The daemon opens nothing here.
            drop(incoming);
            listen(&listener, &mux)
        }
        Init::Dial { spec } => {
            reply(&mut output, &InitReply::Ready)?;
            let (_mux, incoming) =
                Mux::start(input, output, Box::new(()), End::Agent).map_err(io)?;
            let counters = Arc::new(Counters::default());
            for pending in &incoming {
                let (spec, home, counters) = (spec.clone(), home.clone(), counters.clone());
                let _ = std::thread::Builder::new().name("dial".into()).spawn(move || {
                    dial_for(pending, &spec, home.as_deref(), &counters);
                });
            }
            Ok(())
        }
    }
}

/// Accepts until the link closes, opening a stream for each connection.
fn listen(listener: &Listener, mux: &Mux) -> Result<(), String> {
    let stopper = listener.stopper();
    {
        let closing = mux.closing();
        std::thread::spawn(move || {
            let _ = closing.recv();
            stopper.stop();
        });
    }
    let counters = Arc::new(Counters::default());
    loop {
        match listener.accept() {
            Ok(Some(connection)) => {
                let (mux, counters) = (mux.clone(), counters.clone());
                let _ = std::thread::Builder::new().name("accepted".into()).spawn(move || {
                    // Refused (the daemon could not reach the destination): this connection
                    // closes, and the listener goes on.
                    if let Ok(stream) = mux.open() {
                        let _ = relay(connection, Connection::Stream(stream), &counters);
                    }
                });
            }
            Ok(None) => return Ok(()),
            Err(error) => {
                mux.fail(&error);
                return Err(error);
            }
        }
    }
}

fn dial_for(
    pending: Incoming,
    spec: &SocketSpec,
    home: Option<&std::path::Path>,
    counters: &Arc<Counters>,
) {
    match dial(spec, home) {
        Ok(connection) => {
            let stream = pending.accept();
            let _ = relay(Connection::Stream(stream), connection, counters);
        }
        Err(error) => pending.refuse(&error),
    }
}

/// Initializes a forwarding agent the daemon started and returns its link, with the streams
/// the agent opens (a listening agent's connections).
///
/// # Errors
/// The agent refused (its listener could not bind) or the link failed; the message is the
/// agent's.
pub fn initialize(stream: AgentStream, init: &Init) -> Result<(Mux, Receiver<Incoming>), String> {
    let AgentStream { mut reader, mut writer, guard, stderr } = stream;
    write_frame(&mut writer, init).map_err(|e| e.to_string())?;
    writer.flush().map_err(|e| e.to_string())?;
    match read_frame::<InitReply>(&mut reader, INIT_LIMIT) {
        Ok(Some(InitReply::Ready)) => {}
        Ok(Some(InitReply::Failed(error))) => return Err(error),
        Ok(None) => {
            let said = stderr.text();
            return Err(format!(
                "the agent ended{}",
                if said.is_empty() { String::new() } else { format!(": {said}") }
            ));
        }
        Err(error) => return Err(error.to_string()),
    }
    Mux::start(reader, writer, guard, End::Daemon).map_err(|e| e.to_string())
}

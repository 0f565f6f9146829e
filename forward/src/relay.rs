//! Copying between two connections, both ways, with half-close and byte counts.
//!
//! A direction from a multiplexed stream to a local socket is delivered by the multiplexer
//! itself ([`StreamReader::deliver`]): its reader thread writes what the socket takes at once,
//! which saves a thread wakeup per message. Every other direction is a copy loop.

use std::io::{ErrorKind, Read, Write};
use std::net::Shutdown;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::mux::{StreamReader, StreamWriter};
use crate::socket::{Connection, Socket};

/// A forward session's accounting.
#[derive(Debug, Default)]
pub struct Counters {
    /// Connections being relayed.
    pub open: AtomicU64,
    /// Connections accepted in all.
    pub total: AtomicU64,
    /// Bytes from the source's clients to the destination.
    pub outbound: AtomicU64,
    /// Bytes from the destination back to the clients.
    pub inbound: AtomicU64,
    /// Connections closed because the destination could not be reached.
    pub failed_dials: AtomicU64,
}

/// Where a direction's bytes come from.
enum Inflow {
    Socket(Socket),
    Stream(StreamReader),
}

/// Where they go.
enum Outflow {
    Socket(Socket),
    Stream(StreamWriter),
}

impl Outflow {
    fn write_all(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        match self {
            Outflow::Socket(socket) => socket.send_all(bytes),
            Outflow::Stream(writer) => writer.write_all(bytes),
        }
    }

    /// Ends this direction.
    fn close(&mut self) {
        match self {
            Outflow::Socket(socket) => socket.shutdown(Shutdown::Write),
            Outflow::Stream(writer) => writer.close(),
        }
    }

    /// Aborts the connection in both directions (the other direction's reads end too).
    fn abort(&mut self) {
        match self {
            Outflow::Socket(socket) => socket.shutdown(Shutdown::Both),
            Outflow::Stream(writer) => writer.reset("the other side of the connection failed"),
        }
    }
}

/// Splits a connection into its two directions.
fn halves(connection: Connection) -> std::io::Result<(Inflow, Outflow)> {
    Ok(match connection {
        Connection::Tcp(stream) => {
            let socket = Socket::Tcp(stream);
            (Inflow::Socket(socket.try_clone()?), Outflow::Socket(socket))
        }
        Connection::Unix(stream) => {
            let socket = Socket::Unix(stream);
            (Inflow::Socket(socket.try_clone()?), Outflow::Socket(socket))
        }
        Connection::Stream(stream) => {
            let (reader, writer) = stream.split();
            (Inflow::Stream(reader), Outflow::Stream(writer))
        }
    })
}

/// Moves one direction to its end, then closes `to`'s direction.
fn pump(from: Inflow, to: &mut Outflow, count: &AtomicU64) -> std::io::Result<()> {
    let mut reader: Box<dyn Read + Send> = match (from, &*to) {
        (Inflow::Stream(reader), Outflow::Socket(socket)) => {
            return reader.deliver(socket.try_clone()?, count);
        }
        (Inflow::Stream(reader), _) => Box::new(reader),
        (Inflow::Socket(Socket::Tcp(stream)), _) => Box::new(stream),
        (Inflow::Socket(Socket::Unix(stream)), _) => Box::new(stream),
    };
    let mut buffer = vec![0u8; 256 * 1024];
    loop {
        let n = match reader.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        to.write_all(&buffer[..n])?;
        count.fetch_add(n as u64, Ordering::Relaxed);
    }
    to.close();
    Ok(())
}

/// Relays between a client (from the source's listener) and the destination until both
/// directions ended; an error in either aborts both. Returns the first error.
///
/// # Errors
/// A direction failed (a reset, a closed link, a socket error).
pub fn relay(
    client: Connection,
    destination: Connection,
    counters: &Arc<Counters>,
) -> Result<(), String> {
    let (client_in, mut client_out) = halves(client).map_err(|e| e.to_string())?;
    let (destination_in, mut destination_out) = halves(destination).map_err(|e| e.to_string())?;
    let outbound = {
        let counters = counters.clone();
        std::thread::Builder::new().name("relay".into()).spawn(move || {
            let result = pump(client_in, &mut destination_out, &counters.outbound);
            if result.is_err() {
                destination_out.abort();
            }
            (result, destination_out)
        })
    };
    let Ok(outbound) = outbound else {
        client_out.abort();
        return Err("unable to start a relay thread".to_owned());
    };
    let back = pump(destination_in, &mut client_out, &counters.inbound);
    if back.is_err() {
        client_out.abort();
    }
    let Ok((forth, mut destination_out)) = outbound.join() else {
        return Err("a relay thread panicked".to_owned());
    };
    if back.is_err() {
        destination_out.abort();
    }
    if forth.is_err() {
        client_out.abort();
    }
    back.and(forth).map_err(|e| e.to_string())
}

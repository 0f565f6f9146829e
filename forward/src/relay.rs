//! Copying between two connections, both ways, with half-close and byte counts.

use std::io::{ErrorKind, Read};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::socket::{Connection, ReadHalf, WriteHalf};

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

/// Copies until the end of `from`, then closes `to`'s direction; returns the first error.
fn copy(mut from: ReadHalf, to: &mut dyn WriteHalf, count: &AtomicU64) -> std::io::Result<()> {
    let mut buffer = vec![0u8; 256 * 1024];
    loop {
        let n = match from.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        to.write_all(&buffer[..n])?;
        to.flush()?;
        count.fetch_add(n as u64, Ordering::Relaxed);
    }
    to.close();
    Ok(())
}

/// Relays between a client (from the source's listener) and the destination until both
/// directions ended; an error in either aborts both. Returns the first error.
pub fn relay(
    client: Connection,
    destination: Connection,
    counters: &Arc<Counters>,
) -> Result<(), String> {
    let (client_reader, mut client_writer) = client.split().map_err(|e| e.to_string())?;
    let (destination_reader, mut destination_writer) =
        destination.split().map_err(|e| e.to_string())?;
    let outbound = {
        let counters = counters.clone();
        std::thread::Builder::new().name("relay".into()).spawn(move || {
            let result = copy(client_reader, &mut *destination_writer, &counters.outbound);
            if result.is_err() {
                destination_writer.abort();
            }
            (result, destination_writer)
        })
    };
    let Ok(outbound) = outbound else {
        client_writer.abort();
        return Err("unable to start a relay thread".to_owned());
    };
    let back = copy(destination_reader, &mut *client_writer, &counters.inbound);
    if back.is_err() {
        client_writer.abort();
    }
    let (forth, mut destination_writer) = match outbound.join() {
        Ok(joined) => joined,
        Err(_) => return Err("a relay thread panicked".to_owned()),
    };
    if back.is_err() {
        destination_writer.abort();
    }
    if forth.is_err() {
        client_writer.abort();
    }
    back.and(forth).map_err(|e| e.to_string())
}

//! Many byte streams over one agent link, each with its own flow control and half-close.
//!
//! The link carries length-prefixed [`Frame`]s: a big-endian `u32` length, a kind byte, then
//! for data the stream identifier and the raw bytes (no serializer touches the payload), and
//! for every other frame its postcard encoding. Either
//! side opens a stream with [`Frame::Open`]; the other answers [`Frame::Opened`] once it has
//! connected the stream to its socket, or [`Frame::Refused`] with the reason. Data flows in
//! [`Frame::Data`] frames of at most [`MAX_DATA`] bytes.
//!
//! # Invariants
//! - A side never has more than [`WINDOW`] bytes of a stream in flight: it starts with that
//!   much credit and regains it only through [`Frame::Credit`], which the receiver sends as
//!   its reader consumes. So the reader thread never blocks on a slow consumer: one slow
//!   client never stalls the other streams of the link. A peer that sends beyond its credit
//!   breaks the protocol and the link is closed.
//! - [`Frame::Close`] ends one direction (the reader sees the end of the stream, the other
//!   direction goes on); [`Frame::Reset`] aborts both.
//! - Identifiers are odd for streams the daemon opens and even for those the agent opens, so
//!   the two never collide; an `Open` with the other side's parity or a known identifier
//!   breaks the protocol.
//! - Silence (no frame at all) for [`DEAD_AFTER`] closes the link; each side sends a
//!   [`Frame::Heartbeat`] every [`HEARTBEAT`].
//! - Once the link is closed, every stream reads an error, every write fails, every open
//!   fails, and [`Mux::closed`] says why.

use std::collections::HashMap;
use std::io::{BufReader, BufWriter, ErrorKind, Read, Write};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};

use crate::socket::Socket;
use serde::{Deserialize, Serialize};

/// Bytes of one stream a side may have in flight before the receiver grants more.
pub const WINDOW: u32 = 1 << 20;

/// The largest payload of one data frame.
pub const MAX_DATA: usize = 256 * 1024;

/// The largest frame accepted (a data frame and its header, or an error text).
const FRAME_LIMIT: u32 = MAX_DATA as u32 + 1024;

/// The kind byte of a data frame.
const KIND_DATA: u8 = 0;

/// The kind byte of any other frame (postcard follows).
const KIND_CONTROL: u8 = 1;

/// Writes one frame (not flushed).
///
/// # Errors
/// The stream failed, or a control frame does not fit in a frame.
pub fn write_frame(writer: &mut dyn Write, frame: &Frame) -> std::io::Result<()> {
    match frame {
        Frame::Data { id, bytes } => {
            let length = u32::try_from(1 + 4 + bytes.len())
                .ok()
                .filter(|length| *length <= FRAME_LIMIT)
                .ok_or_else(|| {
                    std::io::Error::new(ErrorKind::InvalidInput, "a data frame too large")
                })?;
            let mut header = [0u8; 9];
            header[..4].copy_from_slice(&length.to_be_bytes());
            header[4] = KIND_DATA;
            header[5..].copy_from_slice(&id.to_be_bytes());
            writer.write_all(&header)?;
            writer.write_all(bytes)
        }
        control => {
            let body = postcard::to_stdvec(control)
                .map_err(|e| std::io::Error::new(ErrorKind::InvalidInput, e.to_string()))?;
            let length = u32::try_from(1 + body.len())
                .ok()
                .filter(|length| *length <= FRAME_LIMIT)
                .ok_or_else(|| std::io::Error::new(ErrorKind::InvalidInput, "a frame too large"))?;
            writer.write_all(&length.to_be_bytes())?;
            writer.write_all(&[KIND_CONTROL])?;
            writer.write_all(&body)
        }
    }
}

/// Reads one frame; `Ok(None)` at a clean end of the stream (before a frame).
///
/// # Errors
/// The stream failed or ended inside a frame, or the frame is malformed (too long, an unknown
/// kind, a control frame that does not decode to exactly one [`Frame`]).
pub fn read_frame(reader: &mut dyn Read) -> Result<Option<Frame>, String> {
    let mut header = [0u8; 5];
    let mut filled = 0;
    while filled < header.len() {
        match reader.read(&mut header[filled..]) {
            Ok(0) if filled == 0 => return Ok(None),
            Ok(0) => return Err("the link ended inside a frame".to_owned()),
            Ok(n) => filled += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e.to_string()),
        }
    }
    let length = u32::from_be_bytes([header[0], header[1], header[2], header[3]]);
    if length == 0 || length > FRAME_LIMIT {
        return Err(format!("a frame of {length} bytes"));
    }
    let mut rest = vec![0u8; length as usize - 1];
    reader.read_exact(&mut rest).map_err(|e| format!("the link ended inside a frame: {e}"))?;
    match header[4] {
        KIND_DATA => {
            if rest.len() < 4 {
                return Err("a data frame without its stream".to_owned());
            }
            let id = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]);
            rest.drain(..4);
            Ok(Some(Frame::Data { id, bytes: rest }))
        }
        KIND_CONTROL => match postcard::take_from_bytes::<Frame>(&rest) {
            Ok((Frame::Data { .. }, _)) => Err("a data frame in a control frame".to_owned()),
            Ok((frame, [])) => Ok(Some(frame)),
            Ok((_, extra)) => Err(format!("{} bytes after a control frame", extra.len())),
            Err(e) => Err(format!("an undecodable frame: {e}")),
        },
        kind => Err(format!("a frame of unknown kind {kind}")),
    }
}

/// How often each side says it is alive.
pub const HEARTBEAT: Duration = Duration::from_secs(5);

/// Silence after which the link counts as dead.
pub const DEAD_AFTER: Duration = Duration::from_secs(15);

/// How long an open waits for the peer's answer.
const OPEN_TIMEOUT: Duration = Duration::from_secs(30);

/// One message on the link.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Frame {
    /// A new stream: connect it to your side's socket and answer.
    Open {
        /// The stream.
        id: u32,
    },
    /// The stream is connected.
    Opened {
        /// The stream.
        id: u32,
    },
    /// The stream could not be connected.
    Refused {
        /// The stream.
        id: u32,
        /// Why.
        error: String,
    },
    /// Bytes of a stream.
    Data {
        /// The stream.
        id: u32,
        /// The payload (at most [`MAX_DATA`] bytes).
        #[serde(with = "serde_bytes")]
        bytes: Vec<u8>,
    },
    /// The receiver consumed this many bytes: the sender may send as many more.
    Credit {
        /// The stream.
        id: u32,
        /// Bytes consumed.
        bytes: u32,
    },
    /// The sender sends no more data on this stream.
    Close {
        /// The stream.
        id: u32,
    },
    /// The stream is aborted in both directions.
    Reset {
        /// The stream.
        id: u32,
        /// Why.
        error: String,
    },
    /// The sender is alive.
    Heartbeat,
    /// The sender's side failed as a whole (its listener broke): the link ends.
    Failed {
        /// Why.
        error: String,
    },
}

/// Which end of the link this is (it decides the parity of the identifiers it opens).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum End {
    /// The daemon: odd identifiers.
    Daemon,
    /// The agent: even identifiers.
    Agent,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// What a stream's reader receives.
enum Inbound {
    Data(Vec<u8>),
    End,
    Reset(String),
}

/// A stream's send credit, and whether it was aborted.
#[derive(Default)]
struct Credit {
    state: Mutex<CreditState>,
    changed: Condvar,
}

#[derive(Default)]
struct CreditState {
    available: u64,
    reset: Option<String>,
}

impl Credit {
    fn with(available: u64) -> Credit {
        Credit {
            state: Mutex::new(CreditState { available, reset: None }),
            changed: Condvar::new(),
        }
    }

    fn grant(&self, bytes: u64) {
        lock(&self.state).available += bytes;
        self.changed.notify_all();
    }

    fn reset(&self, error: &str) {
        let mut state = lock(&self.state);
        if state.reset.is_none() {
            state.reset = Some(error.to_owned());
        }
        self.changed.notify_all();
    }
}

/// The reader's view of one stream.
struct Slot {
    /// Once the stream delivers straight to a socket ([`StreamReader::deliver`]), its data
    /// goes there instead of to `inbound`.
    delivery: Option<Arc<Delivery>>,
    inbound: Sender<Inbound>,
    credit: Arc<Credit>,
    /// Bytes received and not yet consumed.
    unconsumed: Arc<AtomicU64>,
}

/// The sending side of the link, shared by every thread: whoever holds the lock writes.
///
/// Data is written by the thread that has it, straight from its buffer. Every other frame is
/// queued and written by whichever thread holds (or next takes) the lock, so that the reader
/// thread, which sends credit, never waits for the link: two peers whose links are full both
/// keep reading, and neither can deadlock the other. Frames go out in the order they were
/// queued or written.
struct Writer {
    link: Mutex<Option<BufWriter<Box<dyn Write + Send>>>>,
    queued: Mutex<std::collections::VecDeque<Frame>>,
}

impl Writer {
    /// Writes what is queued; the caller holds the link.
    fn drain(&self, link: &mut BufWriter<Box<dyn Write + Send>>) -> std::io::Result<()> {
        loop {
            let Some(frame) = lock(&self.queued).pop_front() else { return Ok(()) };
            write_frame(link, &frame)?;
        }
    }

    /// Queues a frame, and writes the queue unless another thread holds the link (it will).
    fn send(&self, inner: &Inner, frame: Frame) {
        lock(&self.queued).push_back(frame);
        self.write_queue(inner);
    }

    /// Writes the queue unless another thread holds the link.
    fn write_queue(&self, inner: &Inner) {
        loop {
            let mut link = match self.link.try_lock() {
                Ok(link) => link,
                Err(std::sync::TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
                // The holder writes the queue before it lets go, or looks again after.
                Err(std::sync::TryLockError::WouldBlock) => return,
            };
            let Some(writer) = link.as_mut() else {
                lock(&self.queued).clear();
                return;
            };
            if let Err(error) = self.drain(writer).and_then(|()| writer.flush()) {
                drop(link);
                inner.close(&format!("the link broke while sending: {error}"));
                return;
            }
            drop(link);
            if lock(&self.queued).is_empty() {
                return;
            }
        }
    }

    /// Writes a data frame from `bytes` (after what is queued), waiting for the link.
    fn data(&self, inner: &Inner, id: u32, bytes: &[u8]) -> std::io::Result<()> {
        let mut link = lock(&self.link);
        let Some(writer) = link.as_mut() else {
            return Err(std::io::Error::new(ErrorKind::BrokenPipe, "the link is closed"));
        };
        let written = self.drain(writer).and_then(|()| {
            let length = 1 + 4 + bytes.len() as u32;
            let mut header = [0u8; 9];
            header[..4].copy_from_slice(&length.to_be_bytes());
            header[4] = KIND_DATA;
            header[5..].copy_from_slice(&id.to_be_bytes());
            writer.write_all(&header)?;
            writer.write_all(bytes)?;
            self.drain(writer)?;
            writer.flush()
        });
        drop(link);
        if let Err(error) = &written {
            inner.close(&format!("the link broke while sending: {error}"));
        } else if !lock(&self.queued).is_empty() {
            // Queued while this thread wrote: written by the next holder, or now.
            self.write_queue(inner);
        }
        written
    }
}

struct Inner {
    end: End,
    writer: Writer,
    streams: Mutex<HashMap<u32, Slot>>,
    opening: Mutex<HashMap<u32, Sender<Result<(), String>>>>,
    next: AtomicU32,
    /// Why the link ended, once it has.
    closed: Mutex<Option<String>>,
    closed_signal: Mutex<Option<Sender<()>>>,
    closed_receiver: Receiver<()>,
    /// Dropped when the link is closed (ends the transport: an ssh process, an exec).
    guard: Mutex<Option<Box<dyn Send>>>,
}

impl Inner {
    fn send(&self, frame: Frame) {
        // A closed link's writer is gone; the error is reported through `closed`.
        self.writer.send(self, frame);
    }

    /// Ends the link: every stream and open fails with `reason`.
    fn close(&self, reason: &str) {
        {
            let mut closed = lock(&self.closed);
            if closed.is_some() {
                return;
            }
            *closed = Some(reason.to_owned());
        }
        for (_, slot) in lock(&self.streams).drain() {
            let _ = slot.inbound.send(Inbound::Reset(reason.to_owned()));
            slot.credit.reset(reason);
            if let Some(delivery) = &slot.delivery {
                delivery.fail(reason);
            }
        }
        for (_, waiter) in lock(&self.opening).drain() {
            let _ = waiter.send(Err(reason.to_owned()));
        }
        lock(&self.closed_signal).take();
        // Not under the link's lock: a writer blocked on a full link holds it. Ending the
        // transport (the guard) unblocks it, and the writer goes when it lets go.
        lock(&self.guard).take();
        if let Ok(mut link) = self.writer.link.try_lock()
            && let Some(mut writer) = link.take()
        {
            let _ = writer.flush();
        }
    }

    fn closed(&self) -> Option<String> {
        lock(&self.closed).clone()
    }

    /// Registers a stream and returns the pieces its handle holds.
    fn register(self: &Arc<Inner>, id: u32) -> Stream {
        let (inbound, receiver) = crossbeam_channel::unbounded();
        let credit = Arc::new(Credit::with(u64::from(WINDOW)));
        let unconsumed = Arc::new(AtomicU64::new(0));
        let slot = Slot {
            delivery: None,
            inbound,
            credit: credit.clone(),
            unconsumed: unconsumed.clone(),
        };
        lock(&self.streams).insert(id, slot);
        if let Some(reason) = self.closed() {
            // Closed meanwhile: the stream must not wait forever.
            credit.reset(&reason);
            if let Some(slot) = lock(&self.streams).remove(&id) {
                let _ = slot.inbound.send(Inbound::Reset(reason));
            }
        }
        let state = Arc::new(StreamState {
            id,
            inner: self.clone(),
            write_closed: AtomicBool::new(false),
            read_ended: AtomicBool::new(false),
        });
        Stream {
            reader: StreamReader {
                state: state.clone(),
                inbound: receiver,
                buffer: Vec::new(),
                position: 0,
                unconsumed,
                uncredited: 0,
                failed: None,
            },
            writer: StreamWriter { state, credit },
        }
    }
}

/// A multiplexed link.
#[derive(Clone)]
pub struct Mux {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Mux {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mux").field("end", &self.inner.end).finish_non_exhaustive()
    }
}

/// A stream the peer opened, waiting to be connected ([`Incoming::accept`]) or refused.
pub struct Incoming {
    id: u32,
    inner: Arc<Inner>,
    answered: bool,
}

impl Incoming {
    /// The stream is connected: tells the peer and returns it.
    pub fn accept(mut self) -> Stream {
        self.answered = true;
        let stream = self.inner.register(self.id);
        self.inner.send(Frame::Opened { id: self.id });
        stream
    }

    /// The stream could not be connected: tells the peer why.
    pub fn refuse(mut self, error: &str) {
        self.answered = true;
        self.inner.send(Frame::Refused { id: self.id, error: error.to_owned() });
    }
}

impl Drop for Incoming {
    fn drop(&mut self) {
        if !self.answered {
            self.inner.send(Frame::Refused { id: self.id, error: "not accepted".to_owned() });
        }
    }
}

impl Mux {
    /// Runs a link over `reader` and `writer` (an agent's stream after its greeting).
    /// Returns the link and the streams the peer opens; `guard` is dropped when the link
    /// closes.
    pub fn start(
        reader: Box<dyn Read + Send>,
        writer: Box<dyn Write + Send>,
        guard: Box<dyn Send>,
        end: End,
    ) -> std::io::Result<(Mux, Receiver<Incoming>)> {
        let (closed_signal, closed_receiver) = crossbeam_channel::bounded(0);
        let inner = Arc::new(Inner {
            end,
            writer: Writer {
                link: Mutex::new(Some(BufWriter::with_capacity(256 * 1024, writer))),
                queued: Mutex::default(),
            },
            streams: Mutex::default(),
            opening: Mutex::default(),
            next: AtomicU32::new(match end {
                End::Daemon => 1,
                End::Agent => 2,
            }),
            closed: Mutex::new(None),
            closed_signal: Mutex::new(Some(closed_signal)),
            closed_receiver,
            guard: Mutex::new(Some(guard)),
        });
        let (incoming, accepted) = crossbeam_channel::unbounded();
        let last_heard = Arc::new(Mutex::new(Instant::now()));
        {
            let (inner, last_heard) = (inner.clone(), last_heard.clone());
            std::thread::Builder::new()
                .name("mux-reader".into())
                .spawn(move || read_loop(&inner, reader, &incoming, &last_heard))?;
        }
        {
            let inner = inner.clone();
            std::thread::Builder::new()
                .name("mux-heartbeat".into())
                .spawn(move || heartbeat_loop(&inner, &last_heard))?;
        }
        Ok((Mux { inner }, accepted))
    }

    /// Opens a stream and waits until the peer connected it.
    ///
    /// # Errors
    /// The peer's reason for refusing it, or why the link is closed.
    pub fn open(&self) -> Result<Stream, String> {
        let id = self.inner.next.fetch_add(2, Ordering::Relaxed);
        let (answer, answered) = crossbeam_channel::bounded(1);
        lock(&self.inner.opening).insert(id, answer);
        if let Some(reason) = self.inner.closed() {
            lock(&self.inner.opening).remove(&id);
            return Err(reason);
        }
        // Registered before the peer can answer, so that no data frame finds no stream.
        let stream = self.inner.register(id);
        self.inner.send(Frame::Open { id });
        match answered.recv_timeout(OPEN_TIMEOUT) {
            Ok(Ok(())) => Ok(stream),
            Ok(Err(error)) => {
                stream.forget();
                Err(error)
            }
            Err(_) => {
                lock(&self.inner.opening).remove(&id);
                Err(self.inner.closed().unwrap_or_else(|| {
                    format!("the peer did not answer within {} s", OPEN_TIMEOUT.as_secs())
                }))
            }
        }
    }

    /// Why the link closed, if it has.
    pub fn closed(&self) -> Option<String> {
        self.inner.closed()
    }

    /// Disconnects when the link closes (for `select!`).
    pub fn closing(&self) -> Receiver<()> {
        self.inner.closed_receiver.clone()
    }

    /// Tells the peer this side failed as a whole, and closes the link.
    pub fn fail(&self, error: &str) {
        self.inner.send(Frame::Failed { error: error.to_owned() });
        // Let the writer send it before the transport goes.
        std::thread::sleep(Duration::from_millis(50));
        self.inner.close(error);
    }

    /// Closes the link (every stream is aborted).
    pub fn close(&self, reason: &str) {
        self.inner.close(reason);
    }

    /// How many streams are registered (for tests: finished streams must be forgotten).
    pub fn streams(&self) -> usize {
        lock(&self.inner.streams).len()
    }
}

fn read_loop(
    inner: &Arc<Inner>,
    mut reader: Box<dyn Read + Send>,
    incoming: &Sender<Incoming>,
    last_heard: &Mutex<Instant>,
) {
    let mut reader = BufReader::with_capacity(256 * 1024, &mut reader);
    let reason = loop {
        let frame = match read_frame(&mut reader) {
            Ok(Some(frame)) => frame,
            Ok(None) => break "the link closed".to_owned(),
            Err(error) => break format!("the link broke: {error}"),
        };
        *lock(last_heard) = Instant::now();
        if let Err(violation) = handle(inner, frame, incoming) {
            break format!("the peer broke the protocol: {violation}");
        }
        if let Some(reason) = inner.closed() {
            break reason;
        }
    };
    inner.close(&reason);
}

/// Applies one frame from the peer; an error is a protocol violation.
fn handle(inner: &Arc<Inner>, frame: Frame, incoming: &Sender<Incoming>) -> Result<(), String> {
    match frame {
        Frame::Open { id } => {
            let peer_parity = match inner.end {
                End::Daemon => 0,
                End::Agent => 1,
            };
            if id % 2 != peer_parity {
                return Err(format!("stream {id} has this side's parity"));
            }
            if lock(&inner.streams).contains_key(&id) {
                return Err(format!("stream {id} is open already"));
            }
            let pending = Incoming { id, inner: inner.clone(), answered: false };
            if let Err(unwanted) = incoming.send(pending) {
                unwanted.into_inner().refuse("nothing accepts streams here");
            }
        }
        Frame::Opened { id } => {
            if let Some(waiter) = lock(&inner.opening).remove(&id) {
                let _ = waiter.send(Ok(()));
            }
        }
        Frame::Refused { id, error } => {
            if let Some(waiter) = lock(&inner.opening).remove(&id) {
                let _ = waiter.send(Err(error));
            }
        }
        Frame::Data { id, bytes } => {
            if bytes.len() > MAX_DATA {
                return Err(format!("a data frame of {} bytes", bytes.len()));
            }
            let streams = lock(&inner.streams);
            // Data for a stream this side already dropped is discarded.
            if let Some(slot) = streams.get(&id) {
                let unconsumed = slot.unconsumed.fetch_add(bytes.len() as u64, Ordering::AcqRel)
                    + bytes.len() as u64;
                if unconsumed > u64::from(WINDOW) {
                    return Err(format!(
                        "stream {id} was sent {unconsumed} bytes beyond its credit"
                    ));
                }
                let credit = match &slot.delivery {
                    Some(delivery) => delivery.push(&slot.unconsumed, bytes),
                    None => {
                        let _ = slot.inbound.send(Inbound::Data(bytes));
                        None
                    }
                };
                drop(streams);
                // Sent without a lock held: a failed send closes the link, which takes them.
                if let Some(bytes) = credit {
                    inner.send(Frame::Credit { id, bytes });
                }
            }
        }
        Frame::Credit { id, bytes } => {
            if let Some(slot) = lock(&inner.streams).get(&id) {
                slot.credit.grant(u64::from(bytes));
            }
        }
        Frame::Close { id } => {
            if let Some(slot) = lock(&inner.streams).get(&id) {
                match &slot.delivery {
                    Some(delivery) => delivery.end(),
                    None => drop(slot.inbound.send(Inbound::End)),
                }
            }
        }
        Frame::Reset { id, error } => {
            if let Some(slot) = lock(&inner.streams).get(&id) {
                let _ = slot.inbound.send(Inbound::Reset(error.clone()));
                slot.credit.reset(&error);
                if let Some(delivery) = &slot.delivery {
                    delivery.fail(&error);
                }
            }
        }
        Frame::Heartbeat => {}
        Frame::Failed { error } => inner.close(&error),
    }
    Ok(())
}

fn heartbeat_loop(inner: &Arc<Inner>, last_heard: &Mutex<Instant>) {
    let tick = Duration::from_millis(250);
    let mut since_sent = Duration::ZERO;
    // Ends as soon as the link closes (its signal's sender is dropped then).
    let closing = inner.closed_receiver.clone();
    while let Err(crossbeam_channel::RecvTimeoutError::Timeout) = closing.recv_timeout(tick) {
        since_sent += tick;
        if since_sent >= HEARTBEAT {
            inner.send(Frame::Heartbeat);
            since_sent = Duration::ZERO;
        }
        let silent = lock(last_heard).elapsed();
        if silent > DEAD_AFTER {
            inner.close(&format!("the peer said nothing for {} s", silent.as_secs()));
        }
    }
}

/// What both halves of a stream share.
struct StreamState {
    id: u32,
    inner: Arc<Inner>,
    write_closed: AtomicBool,
    read_ended: AtomicBool,
}

impl Drop for StreamState {
    fn drop(&mut self) {
        lock(&self.inner.streams).remove(&self.id);
        let clean =
            self.write_closed.load(Ordering::Acquire) && self.read_ended.load(Ordering::Acquire);
        if !clean && self.inner.closed().is_none() {
            self.inner
                .send(Frame::Reset { id: self.id, error: "the stream was closed".to_owned() });
        }
    }
}

/// One multiplexed stream; [`Stream::split`] gives its halves to two threads.
pub struct Stream {
    reader: StreamReader,
    writer: StreamWriter,
}

impl std::fmt::Debug for Stream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stream").field("id", &self.reader.state.id).finish_non_exhaustive()
    }
}

impl Stream {
    /// The two directions.
    pub fn split(self) -> (StreamReader, StreamWriter) {
        (self.reader, self.writer)
    }

    /// Drops a stream the peer never connected, without telling it anything.
    fn forget(self) {
        self.reader.state.write_closed.store(true, Ordering::Release);
        self.reader.state.read_ended.store(true, Ordering::Release);
    }

    /// The stream's identifier.
    pub fn id(&self) -> u32 {
        self.reader.state.id
    }
}

/// The receiving half of a stream.
pub struct StreamReader {
    state: Arc<StreamState>,
    inbound: Receiver<Inbound>,
    buffer: Vec<u8>,
    position: usize,
    unconsumed: Arc<AtomicU64>,
    /// Consumed bytes not yet credited to the peer.
    uncredited: u32,
    failed: Option<String>,
}

impl Read for StreamReader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        if out.is_empty() {
            return Ok(0);
        }
        if let Some(error) = &self.failed {
            return Err(std::io::Error::new(ErrorKind::ConnectionReset, error.clone()));
        }
        while self.position == self.buffer.len() {
            if self.state.read_ended.load(Ordering::Acquire) {
                return Ok(0);
            }
            match self.inbound.recv() {
                Ok(Inbound::Data(bytes)) => {
                    self.buffer = bytes;
                    self.position = 0;
                }
                Ok(Inbound::End) => {
                    self.state.read_ended.store(true, Ordering::Release);
                    return Ok(0);
                }
                Ok(Inbound::Reset(error)) => {
                    self.failed = Some(error.clone());
                    return Err(std::io::Error::new(ErrorKind::ConnectionReset, error));
                }
                Err(_) => {
                    let error = self.state.inner.closed().unwrap_or_else(|| "closed".to_owned());
                    self.failed = Some(error.clone());
                    return Err(std::io::Error::new(ErrorKind::ConnectionReset, error));
                }
            }
        }
        let n = out.len().min(self.buffer.len() - self.position);
        out[..n].copy_from_slice(&self.buffer[self.position..self.position + n]);
        self.position += n;
        self.unconsumed.fetch_sub(n as u64, Ordering::AcqRel);
        self.uncredited += n as u32;
        // Credit in batches: a frame per read would double the frames on the link.
        if self.uncredited >= WINDOW / 4
            || (self.inbound.is_empty() && self.position == self.buffer.len())
        {
            self.state.inner.send(Frame::Credit { id: self.state.id, bytes: self.uncredited });
            self.uncredited = 0;
        }
        Ok(n)
    }
}

/// A stream's data on its way to a socket: written by the reader thread when the socket takes
/// it at once, else queued for the thread in [`StreamReader::deliver`], which waits.
///
/// Bytes reach the socket in order: the reader thread writes only while nothing is queued or
/// being written.
struct Delivery {
    id: u32,
    socket: Socket,
    state: Mutex<DeliveryState>,
    changed: Condvar,
}

#[derive(Default)]
struct DeliveryState {
    backlog: std::collections::VecDeque<Vec<u8>>,
    /// The deliverer is writing a chunk it took from the backlog.
    writing: bool,
    /// The peer closed its direction.
    ended: bool,
    failed: Option<String>,
    /// Bytes written and not yet credited to the peer.
    uncredited: u32,
    /// Bytes written in all.
    delivered: u64,
}

impl Delivery {
    /// Counts `n` bytes as consumed; returns the credit to give back, in batches (the caller
    /// sends it once it holds no lock).
    fn consumed(unconsumed: &AtomicU64, state: &mut DeliveryState, n: usize) -> Option<u32> {
        unconsumed.fetch_sub(n as u64, Ordering::AcqRel);
        state.delivered += n as u64;
        state.uncredited += n as u32;
        (state.uncredited >= WINDOW / 4).then(|| std::mem::take(&mut state.uncredited))
    }

    /// Data from the peer (on the reader thread, which must not wait); returns credit to send.
    fn push(&self, unconsumed: &AtomicU64, bytes: Vec<u8>) -> Option<u32> {
        let mut state = lock(&self.state);
        if state.failed.is_some() {
            return None;
        }
        let mut offset = 0;
        let mut credit = None;
        if state.backlog.is_empty() && !state.writing {
            match self.socket.send_now(&bytes) {
                Ok(n) => {
                    credit = Delivery::consumed(unconsumed, &mut state, n);
                    offset = n;
                }
                Err(error) => {
                    state.failed = Some(error.to_string());
                    self.changed.notify_all();
                    return None;
                }
            }
        }
        if offset < bytes.len() {
            let rest = if offset == 0 { bytes } else { bytes[offset..].to_vec() };
            state.backlog.push_back(rest);
            self.changed.notify_all();
        }
        credit
    }

    /// The peer closed its direction.
    fn end(&self) {
        lock(&self.state).ended = true;
        self.changed.notify_all();
    }

    fn fail(&self, error: &str) {
        let mut state = lock(&self.state);
        if state.failed.is_none() {
            state.failed = Some(error.to_owned());
        }
        self.changed.notify_all();
    }
}

impl StreamReader {
    /// Delivers the rest of the stream to `socket` (then ends the socket's sending direction)
    /// and returns once it is all written; `count` grows by the bytes written. The reader
    /// thread writes what the socket takes at once, so a reply needs no other thread to
    /// wake up; this thread waits for the rest.
    ///
    /// # Errors
    /// The stream was reset, the link closed, or the socket failed.
    pub fn deliver(mut self, socket: Socket, count: &AtomicU64) -> std::io::Result<()> {
        let inner = self.state.inner.clone();
        let delivery = Arc::new(Delivery {
            id: self.state.id,
            socket,
            state: Mutex::default(),
            changed: Condvar::new(),
        });
        {
            // What arrived before is delivered first: under the streams' lock, nothing else
            // arrives meanwhile.
            let mut streams = lock(&inner.streams);
            let mut state = lock(&delivery.state);
            if self.position < self.buffer.len() {
                state.backlog.push_back(self.buffer.split_off(self.position));
            }
            while let Ok(inbound) = self.inbound.try_recv() {
                match inbound {
                    Inbound::Data(bytes) => state.backlog.push_back(bytes),
                    Inbound::End => state.ended = true,
                    Inbound::Reset(error) => state.failed = Some(error),
                }
            }
            if let Some(error) = &self.failed {
                state.failed = Some(error.clone());
            }
            if self.state.read_ended.load(Ordering::Acquire) {
                state.ended = true;
            }
            state.uncredited = self.uncredited;
            match streams.get_mut(&self.state.id) {
                Some(slot) => slot.delivery = Some(delivery.clone()),
                None if state.failed.is_none() && !state.ended => {
                    state.failed = Some(inner.closed().unwrap_or_else(|| "closed".to_owned()));
                }
                None => {}
            }
        }
        let mut state = lock(&delivery.state);
        let result = loop {
            if let Some(error) = &state.failed {
                break Err(std::io::Error::new(ErrorKind::ConnectionReset, error.clone()));
            }
            if let Some(chunk) = state.backlog.pop_front() {
                state.writing = true;
                drop(state);
                let written = delivery.socket.send_all(&chunk);
                state = lock(&delivery.state);
                state.writing = false;
                if let Err(error) = written {
                    state.failed = Some(error.to_string());
                    continue;
                }
                if let Some(bytes) = Delivery::consumed(&self.unconsumed, &mut state, chunk.len()) {
                    drop(state);
                    inner.send(Frame::Credit { id: delivery.id, bytes });
                    state = lock(&delivery.state);
                }
                continue;
            }
            if state.ended {
                delivery.socket.shutdown(std::net::Shutdown::Write);
                self.state.read_ended.store(true, Ordering::Release);
                break Ok(());
            }
            state = delivery.changed.wait(state).unwrap_or_else(PoisonError::into_inner);
        };
        count.fetch_add(state.delivered, Ordering::Relaxed);
        result
    }
}

/// The sending half of a stream.
pub struct StreamWriter {
    state: Arc<StreamState>,
    credit: Arc<Credit>,
}

impl StreamWriter {
    /// Ends this direction: the peer reads the end of the stream; the other direction goes
    /// on.
    pub fn close(&mut self) {
        if !self.state.write_closed.swap(true, Ordering::AcqRel) {
            self.state.inner.send(Frame::Close { id: self.state.id });
        }
    }

    /// Aborts the stream in both directions: the peer is told, and this stream's own reader
    /// wakes with the error.
    pub fn reset(&mut self, error: &str) {
        self.state.write_closed.store(true, Ordering::Release);
        self.state.inner.send(Frame::Reset { id: self.state.id, error: error.to_owned() });
        self.credit.reset(error);
        if let Some(slot) = lock(&self.state.inner.streams).get(&self.state.id) {
            let _ = slot.inbound.send(Inbound::Reset(error.to_owned()));
        }
    }
}

impl Write for StreamWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        if bytes.is_empty() {
            return Ok(0);
        }
        if self.state.write_closed.load(Ordering::Acquire) {
            return Err(std::io::Error::new(ErrorKind::BrokenPipe, "the stream was closed"));
        }
        let mut state = lock(&self.credit.state);
        while state.available == 0 && state.reset.is_none() {
            state = self.credit.changed.wait(state).unwrap_or_else(PoisonError::into_inner);
        }
        if let Some(error) = &state.reset {
            return Err(std::io::Error::new(ErrorKind::BrokenPipe, error.clone()));
        }
        let n = bytes.len().min(MAX_DATA).min(usize::try_from(state.available).unwrap_or(MAX_DATA));
        state.available -= n as u64;
        drop(state);
        let inner = &self.state.inner;
        inner.writer.data(inner, self.state.id, &bytes[..n]).map(|()| n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

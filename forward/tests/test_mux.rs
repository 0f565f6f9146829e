//! The multiplexer over a real socket pair: integrity, concurrency, half-close, flow
//! control that keeps a stalled stream from stalling the others, refusals, and a peer that
//! breaks the protocol.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;
use mutagen_forward::mux::{End, Frame, Incoming, Mux, WINDOW, write_frame};

/// Both ends of a link over a socket pair.
fn link() -> ((Mux, Receiver<Incoming>), (Mux, Receiver<Incoming>)) {
    let (a, b) = UnixStream::pair().expect("socket pair");
    let start = |stream: UnixStream, end| {
        let reader = stream.try_clone().expect("clone");
        Mux::start(Box::new(reader), Box::new(stream), Box::new(()), end).expect("start")
    };
    (start(a, End::Daemon), start(b, End::Agent))
}

/// Serves every stream the agent end accepts as an echo.
fn echo_server(incoming: Receiver<Incoming>) {
    std::thread::spawn(move || {
        for pending in &incoming {
            std::thread::spawn(move || {
                let (mut reader, mut writer) = pending.accept().split();
                let mut buffer = vec![0u8; 10_000];
                loop {
                    match reader.read(&mut buffer) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            if writer.write_all(&buffer[..n]).is_err() {
                                return;
                            }
                        }
                    }
                }
                writer.close();
            });
        }
    });
}

/// Sends `data` on a new stream, half-closes, and returns everything read back.
fn round_trip(mux: &Mux, data: Vec<u8>) -> Vec<u8> {
    let (mut reader, mut writer) = mux.open().expect("open").split();
    let sender = std::thread::spawn(move || {
        writer.write_all(&data).expect("write");
        writer.close();
        writer
    });
    let mut back = Vec::new();
    reader.read_to_end(&mut back).expect("read to the end");
    drop(sender.join().expect("sender"));
    back
}

fn pattern(length: usize, seed: u8) -> Vec<u8> {
    (0..length).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect()
}

#[test]
fn one_mebibyte_comes_back_intact_and_the_stream_is_forgotten() {
    let ((daemon, _), (_agent, incoming)) = link();
    echo_server(incoming);
    let data = pattern(1 << 20, 7);
    assert_eq!(round_trip(&daemon, data.clone()), data);
    let deadline = Instant::now() + Duration::from_secs(5);
    while daemon.streams() != 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(daemon.streams(), 0, "a finished stream stays registered");
}

#[test]
fn fifty_concurrent_streams_are_all_intact() {
    let ((daemon, _), (_agent, incoming)) = link();
    echo_server(incoming);
    let threads: Vec<_> = (0..50)
        .map(|index| {
            let daemon = daemon.clone();
            std::thread::spawn(move || {
                let data = pattern(200_000 + index * 1_000, index as u8);
                assert_eq!(round_trip(&daemon, data.clone()), data, "stream {index}");
            })
        })
        .collect();
    for thread in threads {
        thread.join().expect("stream thread");
    }
}

#[test]
fn a_half_closed_stream_still_receives_the_whole_reply() {
    let ((daemon, _), (_agent, incoming)) = link();
    std::thread::spawn(move || {
        for pending in &incoming {
            let (mut reader, mut writer) = pending.accept().split();
            // Reads the whole request first: its end is the client's half-close.
            let mut request = Vec::new();
            reader.read_to_end(&mut request).expect("request");
            let reply = pattern(3 * WINDOW as usize, request.len() as u8);
            writer.write_all(&reply).expect("reply");
            writer.close();
        }
    });
    let (mut reader, mut writer) = daemon.open().expect("open").split();
    writer.write_all(b"request").expect("write");
    writer.close();
    let mut reply = Vec::new();
    reader.read_to_end(&mut reply).expect("the reply after the half-close");
    assert_eq!(reply, pattern(3 * WINDOW as usize, 7));
}

#[test]
fn a_stream_nobody_reads_does_not_stall_the_others() {
    let ((daemon, _), (_agent, incoming)) = link();
    let (stalled_tx, stalled_rx) = crossbeam_channel::unbounded();
    std::thread::spawn(move || {
        // The first stream is accepted and never read; the others echo.
        let first = incoming.recv().expect("first").accept();
        stalled_tx.send(first).expect("keep it");
        echo_server(incoming);
    });
    let (_stalled_reader, mut stalled_writer) = daemon.open().expect("open").split();
    let writer = std::thread::spawn(move || {
        // Blocks once the window is used up, and must not block anything else.
        let _ = stalled_writer.write_all(&pattern(4 * WINDOW as usize, 1));
    });
    std::thread::sleep(Duration::from_millis(200));
    for index in 0..5 {
        let data = pattern(2 * WINDOW as usize, index);
        assert_eq!(round_trip(&daemon, data.clone()), data, "stream {index} beside a stalled one");
    }
    assert!(!writer.is_finished(), "the stalled stream's writer went past its window");
    drop(stalled_rx);
    daemon.close("done");
    writer.join().expect("the stalled writer wakes when the link closes");
}

#[test]
fn a_refused_open_returns_the_reason() {
    let ((daemon, _), (_agent, incoming)) = link();
    std::thread::spawn(move || {
        for pending in &incoming {
            pending.refuse("unable to connect to tcp:127.0.0.1:1: connection refused");
        }
    });
    let error = daemon.open().expect_err("refused");
    assert!(error.contains("connection refused"), "{error}");
    assert_eq!(daemon.streams(), 0);
}

#[test]
fn a_peer_sending_beyond_its_credit_closes_the_link() {
    let (ours, theirs) = UnixStream::pair().expect("pair");
    let reader = ours.try_clone().expect("clone");
    let (daemon, incoming) =
        Mux::start(Box::new(reader), Box::new(ours), Box::new(()), End::Daemon).expect("start");
    let mut peer = theirs;
    write_frame(&mut peer, &Frame::Open { id: 2 }).expect("open");
    peer.flush().expect("flush");
    let _stream = incoming.recv_timeout(Duration::from_secs(5)).expect("incoming").accept();
    // Nobody reads the stream; the peer sends past the window anyway.
    for _ in 0..=(WINDOW as usize / 65_536) {
        let frame = Frame::Data { id: 2, bytes: vec![0; 65_536] };
        if write_frame(&mut peer, &frame).is_err() {
            break;
        }
    }
    let _ = peer.flush();
    let _ = daemon.closing().recv_timeout(Duration::from_secs(5));
    let reason = daemon.closed().expect("the link closed");
    assert!(reason.contains("beyond its credit"), "{reason}");
}

#[test]
fn an_open_with_the_wrong_parity_closes_the_link() {
    let (ours, theirs) = UnixStream::pair().expect("pair");
    let reader = ours.try_clone().expect("clone");
    let (daemon, _incoming) =
        Mux::start(Box::new(reader), Box::new(ours), Box::new(()), End::Daemon).expect("start");
    let mut peer = theirs;
    write_frame(&mut peer, &Frame::Open { id: 1 }).expect("open");
    peer.flush().expect("flush");
    let _ = daemon.closing().recv_timeout(Duration::from_secs(5));
    let reason = daemon.closed().expect("the link closed");
    assert!(reason.contains("parity"), "{reason}");
}

#[test]
fn a_link_cut_fails_every_stream_and_open() {
    let (a, b) = UnixStream::pair().expect("socket pair");
    let cut = b.try_clone().expect("clone");
    let reader = a.try_clone().expect("clone");
    let (daemon, _) =
        Mux::start(Box::new(reader), Box::new(a), Box::new(()), End::Daemon).expect("start");
    let reader = b.try_clone().expect("clone");
    let (_agent, incoming) =
        Mux::start(Box::new(reader), Box::new(b), Box::new(()), End::Agent).expect("start");
    echo_server(incoming);
    let (mut reader, mut writer) = daemon.open().expect("open").split();
    cut.shutdown(std::net::Shutdown::Both).expect("cut the link");
    let mut buffer = [0u8; 16];
    let error = reader.read(&mut buffer).expect_err("a read after the cut");
    assert!(error.to_string().contains("link"), "{error}");
    assert!(writer.write(b"x").is_err(), "a write after the cut");
    assert!(daemon.closed().is_some());
    assert!(daemon.open().is_err(), "an open after the cut");
}

#[test]
fn delivery_to_a_slow_socket_keeps_order_and_does_not_stall_other_streams() {
    use mutagen_forward::socket::Socket;
    use std::sync::atomic::{AtomicU64, Ordering};
    let ((daemon, _), (_agent, incoming)) = link();
    let (local, mut far) = UnixStream::pair().expect("socket pair");
    let delivered = std::sync::Arc::new(AtomicU64::new(0));
    let counted = delivered.clone();
    // The agent end delivers its first stream into a socket nobody reads for a while; the
    // others echo.
    std::thread::spawn(move || {
        let (reader, _writer) = incoming.recv().expect("first").accept().split();
        std::thread::spawn(move || reader.deliver(Socket::Unix(local), &counted));
        echo_server(incoming);
    });
    let data = pattern(6 * WINDOW as usize, 11);
    let (_reader, mut writer) = daemon.open().expect("open").split();
    let sent = data.clone();
    let sender = std::thread::spawn(move || {
        writer.write_all(&sent).expect("write");
        writer.close();
        writer
    });
    // Meanwhile another stream goes through.
    let other = pattern(WINDOW as usize, 2);
    assert_eq!(round_trip(&daemon, other.clone()), other, "a stream beside a stalled delivery");
    std::thread::sleep(Duration::from_millis(300));
    let mut received = Vec::new();
    far.read_to_end(&mut received).expect("everything, then the end");
    assert!(received == data, "the delivered bytes differ ({} of {})", received.len(), data.len());
    drop(sender.join().expect("sender"));
    let deadline = Instant::now() + Duration::from_secs(5);
    while delivered.load(Ordering::Relaxed) != data.len() as u64 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(delivered.load(Ordering::Relaxed), data.len() as u64);
}

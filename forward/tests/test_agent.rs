//! The agent's forwarding role, served over a real socket pair and initialized the way the
//! daemon does: a listening agent's connections reach the daemon, a dialing agent dials for
//! the daemon's streams, and failures are named.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener};
use std::os::unix::net::UnixStream;

use crossbeam_channel::Receiver;
use mutagen_forward::agent::{Init, initialize, serve};
use mutagen_forward::mux::{Incoming, Mux};
use mutagen_forward::socket::{OverwriteMode, SocketOptions};
use mutagen_protocol::{AgentStream, OutputTail, handshake, server::hello};
use mutagen_session::forward::{Protocol, SocketSpec};

/// Ends the transport when the link drops it, as an ssh process going away does.
struct Cut(UnixStream);

impl Drop for Cut {
    fn drop(&mut self) {
        let _ = self.0.shutdown(Shutdown::Both);
    }
}

/// Starts an agent serving on one end of a socket pair; returns the daemon's result.
fn agent(init: &Init) -> Result<(Mux, Receiver<Incoming>), String> {
    agent_with_thread(init).0
}

/// The same, with the agent's thread (it ends when the agent does).
#[allow(clippy::type_complexity)]
fn agent_with_thread(
    init: &Init,
) -> (Result<(Mux, Receiver<Incoming>), String>, std::thread::JoinHandle<()>) {
    let (daemon, agent) = UnixStream::pair().expect("pair");
    let agent_reader = agent.try_clone().expect("clone");
    let thread = std::thread::spawn(move || {
        let _ = serve(Box::new(agent_reader), Box::new(agent), &hello("test".into()), None);
    });
    let mut reader: Box<dyn Read + Send> = Box::new(daemon.try_clone().expect("clone"));
    handshake(&mut reader).expect("greeting");
    let cut = Cut(daemon.try_clone().expect("clone"));
    let stream = AgentStream {
        reader,
        writer: Box::new(daemon),
        guard: Box::new(cut),
        stderr: OutputTail::default(),
    };
    (initialize(stream, init), thread)
}

#[test]
fn a_listening_agent_hands_its_connections_to_the_daemon() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("listen.sock");
    let spec = SocketSpec { protocol: Protocol::Unix, address: path.display().to_string() };
    let init = Init::Listen { spec, options: SocketOptions::default() };
    let (_mux, incoming) = agent(&init).expect("listening");
    std::thread::spawn(move || {
        for pending in &incoming {
            let (mut reader, mut writer) = pending.accept().split();
            let mut request = Vec::new();
            reader.read_to_end(&mut request).expect("request");
            request.reverse();
            writer.write_all(&request).expect("reply");
            writer.close();
        }
    });
    for round in 0..3 {
        let mut client = UnixStream::connect(&path).expect("connect");
        client.write_all(format!("hello {round}").as_bytes()).expect("write");
        client.shutdown(Shutdown::Write).expect("half-close");
        let mut reply = String::new();
        client.read_to_string(&mut reply).expect("reply");
        assert_eq!(reply, format!("{round} olleh"));
    }
}

#[test]
fn a_listening_agent_ends_with_its_link_and_removes_its_socket() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("listen.sock");
    let spec = SocketSpec { protocol: Protocol::Unix, address: path.display().to_string() };
    let (link, agent) =
        agent_with_thread(&Init::Listen { spec, options: SocketOptions::default() });
    let (mux, _incoming) = link.expect("listening");
    assert!(path.exists());
    mux.close("the session was terminated");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !agent.is_finished() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert!(agent.is_finished(), "the agent outlived its link");
    assert!(!path.exists(), "the agent left its socket behind");
    assert!(UnixStream::connect(&path).is_err());

    // A dialing agent too.
    let spec = SocketSpec { protocol: Protocol::Tcp, address: "127.0.0.1:1".into() };
    let (link, agent) = agent_with_thread(&Init::Dial { spec });
    link.expect("dialing").0.close("the session was terminated");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !agent.is_finished() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert!(agent.is_finished(), "the dialing agent outlived its link");
}

#[test]
fn a_listener_that_cannot_bind_is_refused_with_its_address() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("regular");
    std::fs::write(&path, "data").expect("write");
    let spec = SocketSpec { protocol: Protocol::Unix, address: path.display().to_string() };
    let options = SocketOptions { overwrite: OverwriteMode::Overwrite, ..SocketOptions::default() };
    let error = agent(&Init::Listen { spec, options }).expect_err("refused");
    assert!(
        error.contains(&path.display().to_string()) && error.contains("not a socket"),
        "{error}"
    );
}

#[test]
fn a_dialing_agent_connects_each_stream_and_names_a_failed_dial() {
    let server = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = server.local_addr().expect("address").port();
    std::thread::spawn(move || {
        for client in server.incoming() {
            let mut client = client.expect("client");
            std::thread::spawn(move || {
                let mut request = Vec::new();
                client.read_to_end(&mut request).expect("request");
                client.write_all(&request).expect("echo");
            });
        }
    });
    let spec = SocketSpec { protocol: Protocol::Tcp, address: format!("127.0.0.1:{port}") };
    let (mux, _) = agent(&Init::Dial { spec }).expect("dialing");
    let (mut reader, mut writer) = mux.open().expect("open").split();
    let data: Vec<u8> = (0..1_000_000u32).map(|i| i as u8).collect();
    let sent = data.clone();
    let sender = std::thread::spawn(move || {
        writer.write_all(&sent).expect("write");
        writer.close();
        writer
    });
    let mut back = Vec::new();
    reader.read_to_end(&mut back).expect("echo");
    drop(sender.join().expect("sender"));
    assert_eq!(back, data);

    let closed = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = closed.local_addr().expect("address").port();
    drop(closed);
    let spec = SocketSpec { protocol: Protocol::Tcp, address: format!("127.0.0.1:{port}") };
    let (mux, _) = agent(&Init::Dial { spec }).expect("dialing");
    let error = mux.open().expect_err("nothing listens");
    assert!(
        error.contains(&format!("tcp:127.0.0.1:{port}")) && error.contains("refused"),
        "{error}"
    );
    // The link survives a failed dial.
    assert!(mux.closed().is_none());
}

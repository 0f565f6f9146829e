//! Local listeners: unix sockets appear with their permissions, existing paths are left or
//! (only when they are sockets) replaced, the socket goes when the listener does, and a
//! stopped listener's accept returns.

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use mutagen_forward::socket::{Listener, OverwriteMode, SocketOptions};
use mutagen_session::forward::{Protocol, SocketSpec};

fn unix(path: &std::path::Path) -> SocketSpec {
    SocketSpec { protocol: Protocol::Unix, address: path.display().to_string() }
}

#[test]
fn a_unix_listener_appears_with_its_mode_and_goes_with_the_listener() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("s.sock");
    let listener = Listener::bind(&unix(&path), &SocketOptions::default(), None).expect("bind");
    let metadata = std::fs::symlink_metadata(&path).expect("socket");
    assert!(metadata.file_type().is_socket());
    assert_eq!(metadata.permissions().mode() & 0o7777, 0o600);
    // Nothing but the socket is left in the directory.
    assert_eq!(std::fs::read_dir(dir.path()).expect("dir").count(), 1);
    let custom = SocketOptions { mode: 0o660, ..SocketOptions::default() };
    let other = dir.path().join("t.sock");
    let second = Listener::bind(&unix(&other), &custom, None).expect("bind");
    assert_eq!(std::fs::metadata(&other).expect("socket").permissions().mode() & 0o7777, 0o660);
    drop(listener);
    drop(second);
    assert!(!path.exists() && !other.exists(), "the sockets stayed");
}

#[test]
fn an_existing_path_is_left_unless_it_is_a_socket_to_overwrite() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("s.sock");
    let first = Listener::bind(&unix(&path), &SocketOptions::default(), None).expect("bind");
    let error = Listener::bind(&unix(&path), &SocketOptions::default(), None).expect_err("leave");
    assert!(error.contains("exists") && error.contains(&path.display().to_string()), "{error}");
    let overwrite =
        SocketOptions { overwrite: OverwriteMode::Overwrite, ..SocketOptions::default() };
    let second = Listener::bind(&unix(&path), &overwrite, None).expect("overwrite a socket");
    // The first listener must not remove the socket that replaced its own.
    drop(first);
    assert!(path.exists(), "the replaced listener removed its successor's socket");
    drop(second);

    let file = dir.path().join("file");
    std::fs::write(&file, "the user's data").expect("write");
    let error = Listener::bind(&unix(&file), &overwrite, None).expect_err("not a socket");
    assert!(error.contains("not a socket"), "{error}");
    assert_eq!(std::fs::read_to_string(&file).expect("kept"), "the user's data");
    assert_eq!(std::fs::read_dir(dir.path()).expect("dir").count(), 1, "a temporary was left");
}

#[test]
fn a_tcp_port_in_use_is_named_and_a_stopped_accept_returns() {
    let spec = SocketSpec { protocol: Protocol::Tcp, address: "127.0.0.1:0".into() };
    let listener = Listener::bind(&spec, &SocketOptions::default(), None).expect("bind");
    let port = listener.local_address().expect("address").port();
    let taken = SocketSpec { protocol: Protocol::Tcp4, address: format!("127.0.0.1:{port}") };
    let error = Listener::bind(&taken, &SocketOptions::default(), None).expect_err("in use");
    assert!(
        error.contains(&format!("tcp4:127.0.0.1:{port}")) && error.contains("in use"),
        "{error}"
    );

    let stopper = listener.stopper();
    let accepting = std::thread::spawn(move || listener.accept().map(|c| c.is_some()));
    std::thread::sleep(Duration::from_millis(100));
    stopper.stop();
    assert_eq!(accepting.join().expect("accept thread"), Ok(false));
}

#[test]
fn a_unix_dial_to_nothing_names_the_socket() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("absent.sock");
    let error = mutagen_forward::dial(&unix(&path), None).expect_err("nothing listens");
    assert!(error.contains(&format!("unix:{}", path.display())), "{error}");
    // And a listener's connection arrives through accept.
    let listener = Listener::bind(&unix(&path), &SocketOptions::default(), None).expect("bind");
    let _client = UnixStream::connect(&path).expect("connect");
    assert!(listener.accept().expect("accept").is_some());
}

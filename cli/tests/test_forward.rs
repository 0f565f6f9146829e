//! Forward sessions through the real binary: local tcp and unix listeners, over a real sshd
//! on loopback both ways, and into a container of a private dockerd; data intact, 50
//! concurrent connections, half-close, pause and resume, terminate, restarts (clean and
//! `kill -9`), and bind and dial failures that name the address.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use mutagen_tests::dockerd::Dockerd;
use mutagen_tests::sshd::Sshd;
use serde_json::Value;

use crate::daemon_env::DaemonEnv;

/// How long a session may take to (re)connect before the test fails.
const PATIENCE: Duration = Duration::from_secs(30);

/// A TCP server on loopback that answers each connection with `reply(request)` once the
/// client half-closed (so the reply arrives after the client's end of writing).
fn server(reply: fn(Vec<u8>) -> Vec<u8>) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("address").port();
    std::thread::spawn(move || {
        for client in listener.incoming() {
            let Ok(mut client) = client else { continue };
            std::thread::spawn(move || {
                let mut request = Vec::new();
                if client.read_to_end(&mut request).is_ok() {
                    let _ = client.write_all(&reply(request));
                }
            });
        }
    });
    port
}

fn echo(request: Vec<u8>) -> Vec<u8> {
    request
}

fn reversed(mut request: Vec<u8>) -> Vec<u8> {
    request.reverse();
    request
}

/// A port nothing listens on (bound, then released).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("address").port()
}

fn pattern(length: usize, seed: u8) -> Vec<u8> {
    (0..length).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect()
}

/// Sends `data` over a connection, half-closes, and returns the whole reply.
fn exchange(
    mut stream: impl Read + Write,
    shutdown: impl FnOnce(&mut dyn Write),
    data: &[u8],
) -> std::io::Result<Vec<u8>> {
    stream.write_all(data)?;
    shutdown(&mut stream);
    let mut reply = Vec::new();
    stream.read_to_end(&mut reply)?;
    Ok(reply)
}

fn tcp_exchange(port: u16, data: &[u8]) -> std::io::Result<Vec<u8>> {
    let stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(PATIENCE))?;
    let writer = stream.try_clone()?;
    exchange(stream, move |_| drop(writer.shutdown(Shutdown::Write)), data)
}

fn unix_exchange(path: &Path, data: &[u8]) -> std::io::Result<Vec<u8>> {
    let stream = UnixStream::connect(path)?;
    stream.set_read_timeout(Some(PATIENCE))?;
    let writer = stream.try_clone()?;
    exchange(stream, move |_| drop(writer.shutdown(Shutdown::Write)), data)
}

/// `forward list --json`, parsed.
fn forwards(env: &DaemonEnv) -> Vec<Value> {
    serde_json::from_str(&env.ok(&["forward", "list", "--json"])).expect("json")
}

fn session(env: &DaemonEnv, name: &str) -> Value {
    forwards(env).into_iter().find(|s| s["name"] == name).expect("the session is listed")
}

/// Creates a named forward session.
fn create(env: &DaemonEnv, source: &str, destination: &str, name: &str) {
    env.ok(&["forward", "create", source, destination, "--name", name]);
}

/// Waits until `done`; then fails with the forward sessions and the daemon log.
fn until(env: &DaemonEnv, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + PATIENCE;
    while !done() {
        if std::time::Instant::now() > deadline {
            let list = env.run(&["forward", "list", "--long"]);
            let log =
                std::fs::read_to_string(env.data().join("daemon/daemon.log")).unwrap_or_default();
            panic!("{what} did not happen\n{}{}\ndaemon log:\n{log}", list.stdout, list.stderr);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits until the session is forwarding.
fn forwarding(env: &DaemonEnv, name: &str) {
    until(env, &format!("{name} forwarding"), || session(env, name)["status"] == "forwarding");
}

/// Waits until a 1 MiB echo through `port` comes back intact (the listener may be coming up).
fn echoes(env: &DaemonEnv, port: u16) {
    let data = pattern(1 << 20, 3);
    until(env, "an intact 1 MiB echo", || tcp_exchange(port, &data).is_ok_and(|back| back == data));
}

/// 50 concurrent connections of `size` bytes and more through `port`, each echoed intact.
fn fifty_at_once(port: u16, size: usize) {
    let threads: Vec<_> = (0..50u8)
        .map(|index| {
            std::thread::spawn(move || {
                let data = pattern(size + usize::from(index) * 997, index);
                assert_eq!(
                    tcp_exchange(port, &data).expect("exchange"),
                    data,
                    "connection {index}"
                );
            })
        })
        .collect();
    for thread in threads {
        thread.join().expect("a concurrent connection");
    }
}

fn refused(port: u16) -> bool {
    TcpStream::connect(("127.0.0.1", port)).is_err()
}

#[test]
fn local_tcp_forwarding_relays_intact_concurrent_and_half_closed_connections() {
    let env = DaemonEnv::new();
    let destination = server(echo);
    let port = free_port();
    let source = format!("tcp:127.0.0.1:{port}");
    create(&env, &source, &format!("tcp:127.0.0.1:{destination}"), "web");
    forwarding(&env, "web");
    echoes(&env, port);

    fifty_at_once(port, 100_000);
    let listed = session(&env, "web");
    assert!(listed["totalConnections"].as_u64().expect("total") >= 51, "{listed}");
    assert!(
        listed["totalOutboundData"].as_u64().expect("outbound") >= (1 << 20) + 50 * 100_000,
        "{listed}"
    );
    assert_eq!(listed["totalOutboundData"], listed["totalInboundData"], "an echo: as much back");
    until(&env, "no connection open", || session(&env, "web")["openConnections"] == 0);
    let long = env.ok(&["forward", "list", "--long", "web"]);
    assert!(
        long.contains("Status: Forwarding connections")
            && long.contains("Socket permission mode: 0600"),
        "{long}"
    );

    // Another listener on the same address is refused at create, naming it; nothing is made.
    let run = env.run(&["forward", "create", &source, "tcp:127.0.0.1:1"]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(run.stderr.contains(&source) && run.stderr.contains("in use"), "{}", run.stderr);
    assert_eq!(forwards(&env).len(), 1);
}

#[test]
fn a_failed_dial_closes_only_its_connection_and_the_session_goes_on() {
    let env = DaemonEnv::new();
    let destination = free_port();
    let port = free_port();
    let source = format!("tcp:127.0.0.1:{port}");
    create(&env, &source, &format!("tcp:127.0.0.1:{destination}"), "later");
    forwarding(&env, "later");
    // Nothing listens at the destination: this connection is closed without data.
    let reply = tcp_exchange(port, b"hello").unwrap_or_default();
    assert!(reply.is_empty(), "{reply:?}");
    until(&env, "the failed dial is reported", || {
        let listed = session(&env, "later");
        listed["failedConnections"] == 1
            && listed["lastError"]
                .as_str()
                .is_some_and(|e| e.contains(&format!("tcp:127.0.0.1:{destination}")))
    });
    assert_eq!(session(&env, "later")["status"], "forwarding", "one failed dial ended the session");
    // An open connection is not disturbed by another's failed dial.
    let listener = TcpListener::bind(("127.0.0.1", destination)).expect("the destination comes up");
    std::thread::spawn(move || {
        for client in listener.incoming() {
            let Ok(mut client) = client else { continue };
            std::thread::spawn(move || {
                let mut request = Vec::new();
                let _ = client.read_to_end(&mut request);
                let _ = client.write_all(&request);
            });
        }
    });
    echoes(&env, port);
    let history = env.ok(&["sync", "history", "later"]);
    assert!(history.contains("error") && history.contains("unable to connect"), "{history}");
}

#[test]
fn pause_resume_restarts_and_terminate() {
    let env = DaemonEnv::new();
    let destination = server(reversed);
    let port = free_port();
    create(&env, &format!("tcp:127.0.0.1:{port}"), &format!("tcp:127.0.0.1:{destination}"), "p");
    forwarding(&env, "p");
    assert_eq!(tcp_exchange(port, b"abc").expect("exchange"), b"cba");

    env.ok(&["forward", "pause", "p"]);
    assert!(refused(port), "a paused session still accepts");
    assert_eq!(session(&env, "p")["paused"], true);
    env.ok(&["forward", "resume", "p"]);
    forwarding(&env, "p");
    assert_eq!(tcp_exchange(port, b"resumed").expect("exchange"), b"demuser");

    // A clean restart and a crash both bring the session back, listening on the same address.
    env.ok(&["daemon", "stop"]);
    assert!(refused(port), "the listener outlived the daemon");
    env.ok(&["daemon", "start"]);
    forwarding(&env, "p");
    assert_eq!(tcp_exchange(port, b"restart").expect("exchange"), b"tratser");
    env.kill9();
    forwarding(&env, "p");
    assert_eq!(tcp_exchange(port, b"crash").expect("exchange"), b"hsarc");

    // Paused across a restart stays paused; the journal verifies with the session in it.
    env.ok(&["forward", "pause", "p"]);
    env.ok(&["daemon", "stop"]);
    let verified = env.ok(&["daemon", "verify"]);
    assert!(verified.contains("(p): intact"), "{verified}");
    env.ok(&["daemon", "start"]);
    assert_eq!(session(&env, "p")["paused"], true);
    assert!(refused(port));
    env.ok(&["forward", "resume", "p"]);
    forwarding(&env, "p");

    env.ok(&["forward", "terminate", "p"]);
    assert!(refused(port), "a terminated session still accepts");
    assert!(forwards(&env).is_empty());
    let history = env.ok(&["sync", "history", "p"]);
    for kind in ["created", "paused", "resumed", "terminated"] {
        assert!(history.contains(kind), "{kind} is missing from\n{history}");
    }
}

#[test]
fn a_unix_listener_has_its_mode_and_goes_at_terminate() {
    let env = DaemonEnv::new();
    let destination = server(echo);
    let socket = env.path("app.sock");
    let source = format!("unix:{}", socket.display());
    create(&env, &source, &format!("tcp:127.0.0.1:{destination}"), "u");
    let metadata = std::fs::symlink_metadata(&socket).expect("the socket is there at create");
    assert!(metadata.file_type().is_socket());
    assert_eq!(metadata.permissions().mode() & 0o777, 0o600);
    let data = pattern(1 << 20, 9);
    assert_eq!(unix_exchange(&socket, &data).expect("exchange"), data);

    let other = env.path("group.sock");
    let other_source = format!("unix:{}", other.display());
    env.ok(&[
        "forward",
        "create",
        &other_source,
        &format!("tcp:127.0.0.1:{destination}"),
        "--name",
        "g",
        "--socket-permission-mode",
        "660",
    ]);
    assert_eq!(std::fs::metadata(&other).expect("socket").permissions().mode() & 0o777, 0o660);
    // Owner and group, by number and by name (the tests run as root, who may give sockets away).
    let owned = env.path("owned.sock");
    let owned_source = format!("unix:{}", owned.display());
    let to = format!("tcp:127.0.0.1:{destination}");
    env.ok(&[
        "forward",
        "create",
        &owned_source,
        &to,
        "--socket-owner",
        "65534",
        "--socket-group",
        "root",
    ]);
    let metadata = std::fs::metadata(&owned).expect("socket");
    assert_eq!((metadata.uid(), metadata.gid()), (65534, 0));
    let run = env.run(&["forward", "create", "unix:x.sock", &to, "--socket-owner", "no-such-user"]);
    assert!(
        run.code == 1 && run.stderr.contains("no such user \"no-such-user\""),
        "{}",
        run.stderr
    );
    // A path in use is left alone unless overwriting is asked for, and then only a socket.
    let run = env.run(&["forward", "create", &source, &format!("tcp:127.0.0.1:{destination}")]);
    assert!(run.code == 1 && run.stderr.contains("exists"), "{}", run.stderr);
    std::fs::write(env.path("file"), "data").expect("write");
    let file_source = format!("unix:{}", env.path("file").display());
    let run = env.run(&[
        "forward",
        "create",
        &file_source,
        "tcp:127.0.0.1:1",
        "--socket-overwrite-mode",
        "overwrite",
    ]);
    assert!(run.code == 1 && run.stderr.contains("not a socket"), "{}", run.stderr);
    assert_eq!(std::fs::read_to_string(env.path("file")).expect("kept"), "data");

    env.ok(&["forward", "terminate", "--all"]);
    assert!(!socket.exists() && !other.exists() && !owned.exists(), "terminate left a socket");
}

#[test]
fn monitor_follows_the_newest_session_as_json_lines() {
    let env = DaemonEnv::new();
    let destination = server(echo);
    let port = free_port();
    create(&env, &format!("tcp:127.0.0.1:{port}"), &format!("tcp:127.0.0.1:{destination}"), "m");
    forwarding(&env, "m");
    let mut monitor = env
        .command(&["forward", "monitor", "--json"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("monitor");
    let mut lines = std::io::BufReader::new(monitor.stdout.take().expect("stdout"));
    let mut next = || {
        let mut line = String::new();
        std::io::BufRead::read_line(&mut lines, &mut line).expect("a line");
        serde_json::from_str::<Value>(&line).expect("json")
    };
    let first = next();
    assert_eq!(first["name"], "m");
    assert_eq!(first["status"], "forwarding");
    // A connection changes the counters: a new line follows.
    assert_eq!(tcp_exchange(port, b"counted").expect("exchange"), b"counted");
    let mut seen = next();
    while seen["totalConnections"] != 1 || seen["openConnections"] != 0 {
        seen = next();
    }
    assert_eq!(seen["totalOutboundData"], 7);
    let _ = monitor.kill();
    let _ = monitor.wait();
}

fn ssh_env(sshd: &Sshd) -> DaemonEnv {
    let mut env = DaemonEnv::new();
    env.env.push(("MUTAGEN_SSH_PATH".into(), sshd.ssh_directory().display().to_string()));
    env
}

#[test]
fn over_ssh_forward_and_reverse_and_remote_failures_are_named() {
    let sshd = Sshd::start();
    let env = ssh_env(&sshd);
    let host = format!("root@127.0.0.1:{}", sshd.port);

    // Local listener → a service on the remote host.
    let remote_service = server(echo);
    let port = free_port();
    create(
        &env,
        &format!("tcp:127.0.0.1:{port}"),
        &format!("{host}:tcp:127.0.0.1:{remote_service}"),
        "to-ssh",
    );
    forwarding(&env, "to-ssh");
    echoes(&env, port);
    fifty_at_once(port, 50_000);

    // Reverse: a listener on the remote host → a service here.
    let local_service = server(reversed);
    let remote_port = free_port();
    create(
        &env,
        &format!("{host}:tcp:127.0.0.1:{remote_port}"),
        &format!("tcp:127.0.0.1:{local_service}"),
        "reverse",
    );
    forwarding(&env, "reverse");
    let data = pattern(1 << 20, 5);
    let mut expected = data.clone();
    expected.reverse();
    assert_eq!(tcp_exchange(remote_port, &data).expect("reverse exchange"), expected);

    // A killed link (the daemon's ssh master) reconnects both sessions, and they serve again.
    let master = env.data().join("daemon/ssh");
    let killed = std::process::Command::new("pkill")
        .args(["-9", "-f", &master.display().to_string()])
        .status()
        .expect("pkill");
    assert!(killed.success(), "no ssh master to kill");
    until(&env, "the lost link is reported", || {
        let listed = session(&env, "to-ssh");
        listed["status"] != "forwarding"
            || listed["lastError"].as_str().is_some_and(|e| e.contains("link"))
    });
    echoes(&env, port);
    until(&env, "the reverse session serves again", || {
        tcp_exchange(remote_port, &data).is_ok_and(|back| back == expected)
    });
    let history = env.ok(&["sync", "history", "to-ssh"]);
    assert!(history.contains("link closed"), "{history}");

    // A remote dial that fails closes that connection only.
    let nowhere = free_port();
    let listen = free_port();
    create(
        &env,
        &format!("tcp:127.0.0.1:{listen}"),
        &format!("{host}:tcp:127.0.0.1:{nowhere}"),
        "dead-end",
    );
    forwarding(&env, "dead-end");
    assert!(tcp_exchange(listen, b"x").unwrap_or_default().is_empty());
    until(&env, "the remote dial failure is reported", || {
        let listed = session(&env, "dead-end");
        listed["failedConnections"] == 1
            && listed["status"] == "forwarding"
            && listed["lastError"]
                .as_str()
                .is_some_and(|e| e.contains(&format!("tcp:127.0.0.1:{nowhere}")))
    });

    // A remote listener that cannot bind: the create succeeds, the error shows within seconds.
    create(&env, &format!("{host}:tcp:127.0.0.1:{remote_port}"), "tcp:127.0.0.1:1", "taken");
    until(&env, "the remote bind failure is reported", || {
        session(&env, "taken")["lastError"].as_str().is_some_and(|e| {
            e.contains(&format!("tcp:127.0.0.1:{remote_port}")) && e.contains("in use")
        })
    });
    env.ok(&["forward", "terminate", "--all"]);
    assert!(refused(remote_port) && refused(port), "a listener outlived terminate");
}

fn docker_env(dockerd: &Dockerd) -> DaemonEnv {
    let static_agent = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../target/x86_64-unknown-linux-gnu/debug/mutagen-agent");
    assert!(static_agent.exists(), "the docker tests need the static agent: run ./tests/setup.sh");
    let mut env = DaemonEnv::new();
    env.env.push(("DOCKER_HOST".into(), dockerd.host()));
    env
}

#[test]
fn into_a_container_from_here_and_from_an_ssh_host() {
    let dockerd = Dockerd::start();
    dockerd.run("web");
    // The container has only loopback: its service is reachable through the agent alone.
    dockerd.ok(&["exec", "-d", "web", "nc", "-ll", "-p", "8080", "-e", "cat"]);
    let env = docker_env(&dockerd);
    let port = free_port();
    create(&env, &format!("tcp:127.0.0.1:{port}"), "docker://web:tcp:127.0.0.1:8080", "box");
    forwarding(&env, "box");
    echoes(&env, port);

    let sshd = Sshd::start();
    let mut env2 = docker_env(&dockerd);
    env2.env.push(("MUTAGEN_SSH_PATH".into(), sshd.ssh_directory().display().to_string()));
    let remote_port = free_port();
    let source = format!("root@127.0.0.1:{}:tcp:127.0.0.1:{remote_port}", sshd.port);
    env2.ok(&["forward", "create", &source, "docker://web:tcp:127.0.0.1:8080", "--name", "relay"]);
    forwarding(&env2, "relay");
    echoes(&env2, remote_port);
}

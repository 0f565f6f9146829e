//! A [`RemoteEndpoint`] against the real agent loop over a socket pair, and against hostile
//! fake agents.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use mutagen_endpoint::{
    CycleError, Endpoint, LocalEndpoint, LocalOptions, Snapshot, StageRequest, Synchronizer,
    Transmission,
};
use mutagen_protocol::codec::{read_frame, write_frame};
use mutagen_protocol::compression::Compression;
use mutagen_protocol::{
    AgentEnvironment, AgentStream, EndpointOptions, MAGIC, RemoteEndpoint, Request, Response,
    SnapshotTransfer, handshake, serve, server::hello,
};
use mutagen_reconcile::{Digest, Entry, Mode};

fn options(root: &str, watch: bool) -> EndpointOptions {
    EndpointOptions {
        root: root.to_owned(),
        staging_name: "sync_test-beta".to_owned(),
        ignores: Vec::new(),
        ignore_vcs: false,
        symlink_mode: Default::default(),
        read_only: false,
        watch,
        stage_mode: mutagen_core::StageMode::Auto,
        ..Default::default()
    }
}

fn stream(socket: UnixStream) -> AgentStream {
    let reader = socket.try_clone().expect("clone socket");
    AgentStream {
        reader: Box::new(reader),
        writer: Box::new(socket),
        guard: Box::new(()),
        stderr: Default::default(),
    }
}

/// Starts the real agent loop in a thread; `home` is the agent's home directory.
fn agent(home: &Path) -> RemoteEndpoint {
    agent_with(home, options("beta", false))
}

fn agent_with(home: &Path, options: EndpointOptions) -> RemoteEndpoint {
    agent_compressed(home, options, Compression::Zstd)
}

fn agent_compressed(
    home: &Path,
    options: EndpointOptions,
    compression: Compression,
) -> RemoteEndpoint {
    let (daemon, agent) = UnixStream::pair().expect("socket pair");
    let environment = AgentEnvironment {
        home: home.to_owned(),
        passwd: String::new(),
        data: home.join(".mutagen"),
    };
    let input = agent.try_clone().expect("clone");
    std::thread::spawn(move || {
        let hello = hello("test-build".to_owned());
        let _ = serve(Box::new(input), Box::new(agent), &hello, &environment, Box::new(|| {}));
    });
    let mut stream = stream(daemon);
    let greeting = handshake(&mut stream.reader).expect("handshake");
    assert_eq!(greeting.build, "test-build");
    RemoteEndpoint::initialize(stream, options, "test-agent".to_owned(), compression)
        .expect("initialize")
}

fn local(root: PathBuf, staging: PathBuf) -> LocalEndpoint {
    LocalEndpoint::new(root, LocalOptions::new(staging))
}

fn write(root: &Path, relative: &str, content: &[u8]) {
    let path = root.join(relative);
    std::fs::create_dir_all(path.parent().expect("parent")).expect("parents");
    std::fs::write(path, content).expect("write");
}

#[test]
fn a_tree_syncs_both_ways_through_the_agent_loop() {
    for compression in [Compression::None, Compression::Zstd] {
        sync_both_ways(compression);
    }
}

fn sync_both_ways(compression: Compression) {
    let dir = tempfile::tempdir().expect("tempdir");
    let (alpha_root, home) = (dir.path().join("alpha"), dir.path().join("home"));
    std::fs::create_dir_all(&home).expect("home");
    write(&alpha_root, "a.txt", b"alpha");
    write(&alpha_root, "d/big.bin", &vec![7u8; 3 << 20]);
    let mut alpha = local(alpha_root.clone(), dir.path().join("staging"));
    let mut beta = agent_compressed(&home, options("beta", false), compression);
    assert_eq!(beta.root(), home.join("beta").display().to_string());

    let mut synchronizer = Synchronizer::new(Mode::TwoWaySafe);
    let report = synchronizer.cycle(&mut alpha, &mut beta).expect("first cycle");
    assert_eq!(report.beta.staged_files, 2);
    assert!(report.beta.transition_problems.is_empty(), "{report:?}");
    assert_eq!(std::fs::read(home.join("beta/a.txt")).expect("synced"), b"alpha");
    assert_eq!(std::fs::read(home.join("beta/d/big.bin")).expect("synced").len(), 3 << 20);
    // A run of one byte value: compression makes the wire a small fraction of it.
    let (sent, _) = beta.traffic();
    match compression {
        Compression::None => assert!(sent > 3 << 20, "{compression}: {sent} B sent"),
        Compression::Zstd => assert!(sent < 64 << 10, "{compression}: {sent} B sent"),
    }

    // Back from the remote side, as a delta of the big file.
    write(&home.join("beta"), "b.txt", b"beta");
    let mut big = vec![7u8; 3 << 20];
    big[1000] = 8;
    write(&home.join("beta"), "d/big.bin", &big);
    let report = synchronizer.cycle(&mut alpha, &mut beta).expect("second cycle");
    assert_eq!(report.alpha.staged_files, 2, "{report:?}");
    assert!(report.alpha.staged_bytes < 200_000, "delta: {} bytes", report.alpha.staged_bytes);
    assert_eq!(std::fs::read(alpha_root.join("b.txt")).expect("synced back"), b"beta");
    assert_eq!(std::fs::read(alpha_root.join("d/big.bin")).expect("synced back"), big);
    let report = synchronizer.cycle(&mut alpha, &mut beta).expect("third cycle");
    assert!(!report.needs_another_cycle(), "{report:?}");
    beta.shutdown().expect("shutdown");
}

#[test]
fn a_watching_agent_sends_wakeups_and_checks_report_changes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let home = dir.path().join("home");
    std::fs::create_dir_all(home.join("beta")).expect("root");
    let mut beta = agent_with(&home, options("~/beta", true));
    beta.scan().expect("scan");
    let wakeups = beta.wakeups().expect("a remote endpoint has wakeups");
    write(&home.join("beta"), "new.txt", b"x");
    wakeups.recv_timeout(Duration::from_secs(10)).expect("a wakeup for the change");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !beta.check().expect("check") {
        assert!(Instant::now() < deadline, "check never reported the change");
    }
}

#[test]
fn an_invalid_root_is_refused_at_initialization() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (daemon, agent) = UnixStream::pair().expect("socket pair");
    let environment = AgentEnvironment {
        home: dir.path().to_owned(),
        passwd: String::new(),
        data: dir.path().join(".mutagen"),
    };
    let input = agent.try_clone().expect("clone");
    std::thread::spawn(move || {
        let hello = hello("b".to_owned());
        let _ = serve(Box::new(input), Box::new(agent), &hello, &environment, Box::new(|| {}));
    });
    let mut stream = stream(daemon);
    handshake(&mut stream.reader).expect("handshake");
    let error = RemoteEndpoint::initialize(
        stream,
        options("~nobody/x", false),
        "t".into(),
        Compression::Zstd,
    )
    .expect_err("unknown user");
    assert!(error.to_string().contains("unable to resolve ~nobody"), "{error}");
}

#[test]
fn the_handshake_skips_a_banner_and_reports_a_closed_stream() {
    let mut bytes = b"welcome to the server\n".to_vec();
    bytes.extend_from_slice(&MAGIC);
    write_frame(&mut bytes, &hello("x".into())).expect("hello");
    assert_eq!(handshake(&mut bytes.as_slice()).expect("banner skipped").build, "x");
    let error = handshake(&mut &b"sh: mutagen-agent: not found\n"[..]).expect_err("closed");
    assert!(error.to_string().contains("not found"), "{error}");
}

/// A fake agent: greets, answers `Initialize`, then runs `script` on every later request.
fn hostile(script: impl FnMut(Request, &mut dyn Write) -> bool + Send + 'static) -> RemoteEndpoint {
    let (daemon, agent) = UnixStream::pair().expect("socket pair");
    let mut input = agent.try_clone().expect("clone");
    let mut output = agent;
    let mut script = script;
    std::thread::spawn(move || {
        output.write_all(&MAGIC).expect("magic");
        write_frame(&mut output, &hello("evil".into())).expect("hello");
        let choice = read_frame::<Compression>(&mut input, 16).expect("choice");
        assert_eq!(choice, Some(Compression::None));
        while let Ok(Some(request)) = read_frame::<Request>(&mut input, 1 << 30) {
            if let Request::Initialize(_) = request {
                let root = "/remote/root".to_owned();
                write_frame(&mut output, &Response::Initialized { root }).expect("init");
                continue;
            }
            if request == Request::Ping {
                write_frame(&mut output, &Response::Done).expect("pong");
                continue;
            }
            if !script(request, &mut output) {
                return;
            }
        }
    });
    let mut stream = stream(daemon);
    handshake(&mut stream.reader).expect("handshake");
    let mut endpoint = RemoteEndpoint::initialize(
        stream,
        options("x", false),
        "evil-agent".into(),
        Compression::None,
    )
    .expect("init");
    endpoint.set_silence(Duration::from_secs(2));
    endpoint
}

fn file(byte: u8) -> Entry {
    Entry::file(Digest([byte; 32]), false)
}

fn snapshot_with(name: &str) -> Snapshot {
    let contents = BTreeMap::from([(name.to_owned(), file(1))]);
    Snapshot {
        content: Some(Entry::Directory(contents.into())),
        directories: 1,
        files: 1,
        ..Default::default()
    }
}

#[test]
fn hostile_snapshots_are_refused_and_nothing_is_written() {
    for name in ["..", "a/b", "/etc", "."] {
        let dir = tempfile::tempdir().expect("tempdir");
        let alpha_root = dir.path().join("alpha");
        write(&alpha_root, "keep.txt", b"keep");
        let mut alpha = local(alpha_root.clone(), dir.path().join("staging"));
        let evil = name.to_owned();
        let mut beta = hostile(move |request, out| {
            if let Request::Scan { .. } = request {
                let snapshot =
                    SnapshotTransfer::Full { generation: 1, snapshot: snapshot_with(&evil) };
                let response = Response::Scanned { snapshot, watch_problem: None };
                write_frame(out, &response).expect("scan");
            }
            true
        });
        let error = Synchronizer::new(Mode::TwoWaySafe)
            .cycle(&mut alpha, &mut beta)
            .expect_err("an invalid snapshot");
        assert!(matches!(error, CycleError::InvalidSnapshot { .. }), "{name}: {error}");
        let mut names: Vec<_> = std::fs::read_dir(dir.path())
            .expect("dir")
            .map(|e| e.expect("entry").file_name().into_string().expect("utf-8"))
            .collect();
        names.sort();
        assert_eq!(names, ["alpha"], "{name}: nothing but alpha");
        assert_eq!(std::fs::read_dir(&alpha_root).expect("alpha").count(), 1);
    }
}

#[test]
fn oversized_frames_and_silence_break_the_connection() {
    let mut beta = hostile(|_, out| {
        out.write_all(&u32::MAX.to_be_bytes()).expect("length");
        true
    });
    let error = beta.scan().expect_err("oversized");
    assert!(error.to_string().contains("exceeds the limit"), "{error}");
    assert!(beta.check().is_err(), "a broken endpoint stays broken");

    let mut silent = hostile(|_, _| true);
    let started = Instant::now();
    let error = silent.scan().expect_err("silence");
    assert!(error.to_string().contains("sent nothing for 2 s"), "{error}");
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[test]
fn a_cancelled_call_returns_at_once() {
    let mut silent = hostile(|_, _| true);
    silent.set_silence(Duration::from_secs(600));
    let canceller = silent.canceller();
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(200));
        canceller.cancel();
    });
    let started = Instant::now();
    let error = silent.scan().expect_err("cancelled");
    assert!(error.to_string().contains("cancelled"), "{error}");
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[test]
fn staging_answers_for_files_never_asked_are_refused() {
    let mut beta = hostile(|request, out| {
        if let Request::Stage(_) = request {
            let response =
                Response::Staged(vec![StageRequest::new("../../etc/passwd", Digest([9; 32]))]);
            write_frame(out, &response).expect("staged");
        }
        true
    });
    let error = beta.stage(vec![StageRequest::new("a", Digest([1; 32]))]).expect_err("unasked");
    assert!(error.to_string().contains("unrequested file \"../../etc/passwd\""), "{error}");
}

fn supply_with(
    transmissions: Vec<Transmission>,
    cut: bool,
) -> Result<Vec<Transmission>, mutagen_endpoint::EndpointError> {
    let mut alpha = hostile(move |request, out| {
        if let Request::Supply(_) = request {
            for transmission in &transmissions {
                write_frame(out, &Response::Transmission(transmission.clone())).expect("t");
            }
            if cut {
                return false;
            }
            write_frame(out, &Response::Supplied).expect("supplied");
        }
        true
    });
    let requests =
        vec![StageRequest::new("a", Digest([1; 32])), StageRequest::new("b", Digest([2; 32]))];
    let mut received = Vec::new();
    alpha.supply(&requests, &mut |t| {
        received.push(t);
        Ok(())
    })?;
    Ok(received)
}

#[test]
fn supply_streams_must_answer_the_requests_in_order() {
    let begin = |path: &str, byte: u8, size| Transmission::Begin {
        request: StageRequest::new(path, Digest([byte; 32])),
        size,
    };
    let good = vec![
        begin("a", 1, 2),
        Transmission::Data(vec![0, 1]),
        Transmission::End,
        Transmission::Unavailable {
            request: StageRequest::new("b", Digest([2; 32])),
            error: "gone".into(),
        },
    ];
    assert_eq!(supply_with(good.clone(), false).expect("in order").len(), 4);
    for (what, stream, message) in [
        ("out of order", vec![begin("b", 2, 1)], "out of order"),
        ("wrong digest", vec![begin("a", 9, 1)], "out of order"),
        ("too much data", vec![begin("a", 1, 1), Transmission::Data(vec![0, 1])], "announced size"),
        ("data outside a file", vec![Transmission::Data(vec![1])], "outside of a file"),
        ("an extra file", [good.clone(), vec![begin("c", 3, 0)]].concat(), "nobody asked"),
        ("ended early", good[..3].to_vec(), "ended early"),
    ] {
        let error = supply_with(stream, false).expect_err(what);
        assert!(error.to_string().contains(message), "{what}: {error}");
    }
    let error = supply_with(good[..2].to_vec(), true).expect_err("cut mid-file");
    assert!(error.to_string().contains("connection closed"), "{error}");
}

#[test]
fn rescans_send_only_what_changed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let home = dir.path().join("home");
    for i in 0..10_000 {
        write(
            &home.join("beta"),
            &format!("d{:02}/e{:02}/f{i:05}.txt", i % 20, (i / 20) % 25),
            b"x",
        );
    }
    // Uncompressed, so that the sizes are the protocol's own.
    let mut beta = agent_compressed(&home, options("beta", false), Compression::None);
    let full = beta.scan().expect("first scan");
    let (sent, received) = beta.traffic();
    assert!(received > 300_000, "the first scan is the whole tree: {received} B");
    drop(full);
    let quiet = beta.scan().expect("a scan with no change");
    let (sent_quiet, received_quiet) = beta.traffic();
    let cost = (sent_quiet - sent) + (received_quiet - received);
    assert!(cost < 1024, "a no-change rescan of 10,000 files costs {cost} B");
    eprintln!("10,000 files: first scan {received} B, no-change rescan {cost} B");
    assert_eq!(quiet.files, 10_000);
    drop(quiet);

    write(&home.join("beta"), "d00/e00/new.txt", b"new");
    std::fs::remove_file(home.join("beta/d01/e00/f00001.txt")).expect("remove");
    let changed = beta.scan().expect("a scan with two changes");
    let (sent_changed, received_changed) = beta.traffic();
    let cost = (sent_changed - sent_quiet) + (received_changed - received_quiet);
    assert!(cost < 4096, "two changes cost {cost} B");
    eprintln!("rescan with two changes: {cost} B");
    assert_eq!(changed.files, 10_000);
    let content = changed.content.as_ref().expect("root");
    assert!(content.get("d00/e00/new.txt").is_some(), "the creation applied");
    assert!(content.get("d01/e00/f00001.txt").is_none(), "the removal applied");
    // And it equals a fresh full scan.
    let mut fresh = agent(&home);
    assert_eq!(*fresh.scan().expect("fresh scan"), *changed);
}

#[test]
fn deltas_against_unknown_snapshots_are_refused() {
    let mut beta = hostile(|request, out| {
        if let Request::Scan { .. } = request {
            let snapshot = SnapshotTransfer::Delta {
                base: 7,
                generation: 8,
                changes: vec![("x".into(), Some(file(1)))],
                directories: 1,
                files: 1,
                symbolic_links: 0,
                total_file_size: 1,
                problems: Vec::new(),
            };
            write_frame(out, &Response::Scanned { snapshot, watch_problem: None }).expect("scan");
        }
        true
    });
    let error = beta.scan().expect_err("unknown base");
    assert!(
        error.to_string().contains("a delta against snapshot 7, which was never sent"),
        "{error}"
    );
}

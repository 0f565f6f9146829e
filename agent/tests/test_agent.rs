//! Handshake, a scan, and exit on a closed input, through the real binary.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use mutagen_endpoint::Endpoint;
use mutagen_protocol::compression::Compression;
use mutagen_protocol::{AgentStream, EndpointOptions, RemoteEndpoint, build_of, handshake};

#[test]
fn the_agent_greets_with_its_own_build_serves_and_exits_cleaning_up_when_its_input_closes() {
    let home = tempfile::tempdir().expect("home");
    std::fs::create_dir_all(home.path().join("root/sub")).expect("root");
    std::fs::write(home.path().join("root/sub/f.txt"), b"hello").expect("file");
    let binary = env!("CARGO_BIN_EXE_mutagen-agent");
    let mut child = Command::new(binary)
        .arg("endpoint")
        .env("HOME", home.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn the agent");
    let pid = child.id();
    let mut stream = AgentStream {
        reader: Box::new(child.stdout.take().expect("stdout")),
        writer: Box::new(child.stdin.take().expect("stdin")),
        guard: Box::new(()),
        stderr: Default::default(),
    };
    let hello = handshake(&mut stream.reader).expect("handshake");
    assert_eq!(hello.build, build_of(binary.as_ref()).expect("hash the binary"));
    assert_eq!(hello.protocol, mutagen_protocol::PROTOCOL_VERSION);
    let options = EndpointOptions {
        root: "~/root".into(),
        staging_name: "sync_x-alpha".into(),
        ignores: Vec::new(),
        ignore_vcs: false,
        symlink_mode: Default::default(),
        read_only: false,
        watch: true,
        stage_mode: mutagen_endpoint::StageMode::Auto,
        ..Default::default()
    };
    let mut endpoint =
        RemoteEndpoint::initialize(stream, options, "local agent".into(), Compression::Zstd)
            .expect("initialize");
    assert_eq!(endpoint.root(), home.path().join("root").display().to_string());
    let snapshot = endpoint.scan().expect("scan");
    assert_eq!((snapshot.directories, snapshot.files, snapshot.total_file_size), (2, 1, 5));

    let watch = home.path().join(".mutagen/staging/sync_x-alpha.watch");
    assert!(watch.is_dir(), "the watch barrier directory exists while the agent runs");

    drop(endpoint);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            assert!(status.success(), "the agent exits cleanly: {status}");
            assert!(!watch.exists(), "the agent removed its watch directory");
            assert!(
                std::fs::read_dir(home.path().join(".mutagen/staging"))
                    .is_ok_and(|mut d| d.next().is_none()),
                "and its staging area"
            );
            break;
        }
        assert!(Instant::now() < deadline, "agent {pid} still runs after its input closed");
        std::thread::sleep(Duration::from_millis(20));
    }
}

//! The fuzz targets' bodies, shared with `cargo test` (which replays the committed corpora).
//!
//! - [`agent_stream`]: the input is everything an agent writes. A [`RemoteEndpoint`] reads it
//!   through the handshake and initialization and then through every call: whatever the
//!   bytes, the daemon's side must fail cleanly, never panic, hang or accept an invalid
//!   snapshot.
//! - [`daemon_stream`]: the input is everything a daemon writes to an agent. The agent's
//!   decoder reads it, and its request handler answers what decodes, in a scratch directory.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use mutagen_endpoint::{Endpoint, StageRequest};
use mutagen_reconcile::{Change, Digest};

use crate::client::{AgentStream, RemoteEndpoint, handshake};
use crate::codec::{MAX_FRAME, read_frame, write_frame};
use crate::compression::{self, Compression};
use crate::messages::{EndpointOptions, Request, Response};
use crate::server::{self, AgentEnvironment};

/// Drives a remote endpoint over `data` as the agent's output.
///
/// # Panics
/// When a call accepted a snapshot that breaks the entry invariants (the synchronizer
/// validates untrusted snapshots, so this only checks that the delta path keeps them valid
/// or reports them), or on any bug the input reaches.
pub fn agent_stream(data: &[u8]) {
    let mut reader = data;
    if handshake(&mut reader).is_err() {
        return;
    }
    let stream = AgentStream {
        reader: Box::new(std::io::Cursor::new(reader.to_vec())),
        writer: Box::new(std::io::sink()),
        guard: Box::new(()),
        stderr: Default::default(),
    };
    let options = EndpointOptions {
        root: "~/fuzz".into(),
        staging_name: "fuzz".into(),
        ignores: Vec::new(),
        ignore_vcs: false,
        symlink_mode: Default::default(),
        read_only: false,
        watch: true,
        stage_mode: mutagen_core::StageMode::Auto,
        ..Default::default()
    };
    let Ok(mut endpoint) =
        RemoteEndpoint::initialize(stream, options, "fuzz".into(), Compression::None)
    else {
        return;
    };
    endpoint.set_silence(Duration::from_millis(200));
    for _ in 0..2 {
        if let Ok(snapshot) = endpoint.scan()
            && let Some(content) = &snapshot.content
        {
            // Invalid content is possible (the synchronizer refuses it); validating it must
            // not panic.
            let _ = content.validate(false);
        }
    }
    let requests =
        vec![StageRequest::new("a", Digest([1; 32])), StageRequest::new("b/c", Digest([2; 32]))];
    let _ = endpoint.check();
    let _ = endpoint.stage(requests.clone());
    let _ = endpoint.supply(&requests, &mut |_| Ok(()));
    let _ = endpoint.transition(vec![Change::new("a", None, None)]);
    let _ = endpoint.shutdown();
}

/// Feeds `data` to the agent as the daemon's output: the compression frame, then requests
/// through the agent's own decoder, which stops at the first frame it cannot read (as the
/// agent's reader thread does). Every decoded request must survive a round trip, and the
/// agent's request handler then answers them in order.
///
/// The handler works on real files, so it is kept in a scratch directory: every
/// `Initialize` names the same root there, whatever root the input asked for (the root
/// resolution itself is tested on its own). Below that root, what a hostile daemon can reach
/// is exactly what a real one can: paths with `..` or `/` in them, symbolic links it had the
/// agent create, staged content that does not match its digest. Watching is off, so that an
/// execution leaves no thread behind.
///
/// # Panics
/// When a decoded request changes in a round trip, or on any bug the input reaches.
pub fn daemon_stream(data: &[u8]) {
    let _ = daemon_answers(data);
}

/// [`daemon_stream`], returning the agent's answers (for tests of the seeds).
///
/// # Panics
/// As [`daemon_stream`].
pub fn daemon_answers(data: &[u8]) -> Vec<Response> {
    let mut reader = data;
    let Ok(Some(compression)) = read_frame::<Compression>(&mut reader, 16) else {
        return Vec::new();
    };
    let Ok(mut input) =
        compression::reader(Box::new(std::io::Cursor::new(reader.to_vec())), compression)
    else {
        return Vec::new();
    };
    let mut requests = Vec::new();
    while let Ok(Some(request)) = read_frame::<Request>(&mut input, MAX_FRAME) {
        let mut encoded = Vec::new();
        write_frame(&mut encoded, &request).expect("a decoded request encodes");
        let decoded = read_frame::<Request>(&mut encoded.as_slice(), MAX_FRAME);
        assert_eq!(decoded.ok().flatten().as_ref(), Some(&request), "a request changed");
        requests.push(request);
    }
    let Ok(scratch) = tempfile::Builder::new().prefix("mutagen-fuzz-").tempdir() else {
        return Vec::new();
    };
    let environment = AgentEnvironment {
        home: scratch.path().join("home"),
        passwd: String::new(),
        data: scratch.path().join("home/.mutagen"),
    };
    for request in &mut requests {
        if let Request::Initialize(options) = request {
            options.root = "~/root".into();
            options.watch = false;
        }
    }
    let _ = std::fs::create_dir_all(&environment.home);
    let output = Output::default();
    let _ = server::answer(requests, Box::new(output.clone()), &environment);
    let bytes = std::mem::take(&mut *output.0.lock().unwrap_or_else(PoisonError::into_inner));
    let mut answers = Vec::new();
    let mut reader = bytes.as_slice();
    while let Ok(Some(response)) = read_frame::<Response>(&mut reader, MAX_FRAME) {
        answers.push(response);
    }
    answers
}

/// What the handler wrote.
#[derive(Clone, Default)]
struct Output(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Output {
    fn write(&mut self, buffer: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).extend_from_slice(buffer);
        Ok(buffer.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Seed inputs for [`daemon_stream`], as a real daemon would write them: a whole session
/// (initialize, scan, stage, receive, transition of a file, a directory and a link, scan
/// again from the last generation, shutdown), uncompressed and compressed, and one that asks
/// for a file outside the root. `fuzz/corpus/daemon_stream` holds them as files.
pub fn daemon_seeds() -> Vec<(&'static str, Vec<u8>)> {
    use mutagen_endpoint::Transmission;
    use mutagen_reconcile::Entry;
    let content = b"hello, agent\n".to_vec();
    let digest = Digest(*blake3::hash(&content).as_bytes());
    let options = EndpointOptions {
        root: "~/root".into(),
        staging_name: "seed".into(),
        ignores: vec!["*.tmp".into()],
        ignore_vcs: true,
        symlink_mode: Default::default(),
        read_only: false,
        watch: false,
        stage_mode: mutagen_core::StageMode::Auto,
        ..Default::default()
    };
    let file = Entry::file(digest, false);
    let link = Entry::SymbolicLink { target: "f".into() };
    // Permissions mode posix: a root with bits, then a change of its bits alone.
    let posix = vec![
        Request::Initialize(EndpointOptions {
            permissions_mode: mutagen_core::PermissionsMode::Posix,
            ..options.clone()
        }),
        Request::Scan { base: None },
        Request::Transition(vec![Change::new(
            "",
            None,
            Some(Entry::Directory(mutagen_reconcile::Directory::with_permissions(Some(0o2750)))),
        )]),
        Request::Scan { base: Some(1) },
        Request::Transition(vec![Change::permissions("", Some(0o2750), Some(0o700))]),
        Request::Scan { base: Some(2) },
        Request::Shutdown,
    ];
    let session = vec![
        Request::Initialize(options),
        Request::Ping,
        Request::Scan { base: None },
        Request::Stage(vec![StageRequest::new("f", digest)]),
        Request::Receive(Transmission::Begin {
            request: StageRequest::new("f", digest),
            size: content.len() as u64,
        }),
        Request::Receive(Transmission::Data(content)),
        Request::Receive(Transmission::End),
        Request::Transition(vec![
            Change::new("", None, Some(Entry::Directory(Default::default()))),
            Change::new("f", None, Some(file.clone())),
            Change::new("d", None, Some(Entry::Directory(Default::default()))),
            Change::new("d/l", None, Some(link)),
        ]),
        Request::Check,
        Request::Scan { base: Some(1) },
        Request::Supply(vec![StageRequest::new("f", digest)]),
        Request::Transition(vec![Change::new("f", Some(file), None)]),
        Request::Shutdown,
    ];
    let escape = vec![
        Request::Initialize(EndpointOptions {
            root: "/".into(),
            staging_name: "seed".into(),
            ignores: Vec::new(),
            ignore_vcs: false,
            symlink_mode: Default::default(),
            read_only: false,
            watch: true,
            stage_mode: mutagen_core::StageMode::Auto,
            ..Default::default()
        }),
        Request::Supply(vec![StageRequest::new("../etc/passwd", digest)]),
        Request::Transition(vec![Change::new(
            "d/l/x",
            None,
            Some(Entry::Directory(Default::default())),
        )]),
    ];
    let stream = |compression: Compression, requests: &[Request]| {
        let mut bytes = Vec::new();
        write_frame(&mut bytes, &compression).expect("encodes");
        let mut body = Vec::new();
        for request in requests {
            write_frame(&mut body, request).expect("encodes");
        }
        match compression {
            Compression::None => bytes.extend(body),
            Compression::Zstd => bytes.extend(zstd::encode_all(body.as_slice(), 3).expect("zstd")),
        }
        bytes
    };
    vec![
        ("session", stream(Compression::None, &session)),
        ("session-zstd", stream(Compression::Zstd, &session)),
        ("escape", stream(Compression::None, &escape)),
        ("posix", stream(Compression::None, &posix)),
    ]
}

//! The fuzz target's body, shared with `cargo test` (which replays the committed corpus).
//!
//! The input is everything an agent writes. A [`RemoteEndpoint`] reads it through the
//! handshake and initialization and then through every call: whatever the bytes, the
//! daemon's side must fail cleanly, never panic, hang or accept an invalid snapshot.

use std::time::Duration;

use mutagen_endpoint::{Endpoint, StageRequest};
use mutagen_reconcile::{Change, Digest};

use crate::client::{AgentStream, RemoteEndpoint, handshake};
use crate::compression::Compression;
use crate::messages::EndpointOptions;

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

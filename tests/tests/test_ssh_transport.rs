//! The SSH transport against a real sshd on loopback: master sharing, agent installation and
//! reinstallation, a synchronization cycle through the installed agent, and clear errors.

use std::path::PathBuf;
use std::sync::Arc;

use mutagen_endpoint::{Endpoint, LocalEndpoint, LocalOptions, Synchronizer};
use mutagen_protocol::compression::Compression;
use mutagen_protocol::{EndpointOptions, RemoteEndpoint};
use mutagen_reconcile::Mode;
use mutagen_session::url::{SshUrl, Url};
use mutagen_tests::sshd::Sshd;
use mutagen_tests::{read_tree, write};
use mutagen_transports::{AgentBinary, Role, SshPool};

/// The agent binary cargo built beside this test's own executable (`target/<profile>/`).
fn agent_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable");
    let profile = exe.parent().and_then(|deps| deps.parent()).expect("target/<profile>");
    profile.join("mutagen-agent")
}

fn pool(sshd: &Sshd, control: &std::path::Path) -> SshPool {
    let agent = Arc::new(AgentBinary::new(Some(agent_binary()), None));
    SshPool::new(control.to_owned(), Some(&sshd.ssh_directory()), agent, None)
}

fn url(sshd: &Sshd, path: &str) -> SshUrl {
    match Url::parse(&format!("root@127.0.0.1:{}:{path}", sshd.port), "/".as_ref()) {
        Ok(Url::Ssh(url)) => url,
        other => panic!("not an ssh url: {other:?}"),
    }
}

fn options(root: &str) -> EndpointOptions {
    EndpointOptions {
        root: root.to_owned(),
        staging_name: "sync_transport-beta".into(),
        ignores: Vec::new(),
        ignore_vcs: false,
        symlink_mode: Default::default(),
        read_only: false,
        watch: true,
        stage_mode: mutagen_endpoint::StageMode::Auto,
        ..Default::default()
    }
}

#[test]
fn an_agent_is_installed_over_ssh_and_serves_a_cycle() {
    let sshd = Sshd::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let pool = pool(&sshd, &dir.path().join("ssh"));
    let remote_root = dir.path().join("remote");
    let target = url(&sshd, &remote_root.display().to_string());
    // A stale agent from another build is replaced.
    let installed = sshd.exec("root", "echo $HOME").trim().to_owned();
    let installed = PathBuf::from(installed).join(mutagen_transports::agent::remote_directory());
    std::fs::create_dir_all(&installed).expect("agent directory");
    std::fs::write(installed.join("mutagen-agent"), "#!/bin/sh\necho not an agent\n")
        .expect("stale");

    let (stream, hello) =
        runtime.block_on(pool.connect_agent(&target, Role::Endpoint, None)).expect("connect");
    assert_eq!(hello.build, mutagen_protocol::build_of(&agent_binary()).expect("build"));
    assert_eq!(pool.open_masters(), 1);
    let (second, _) =
        runtime.block_on(pool.connect_agent(&target, Role::Endpoint, None)).expect("second agent");
    assert_eq!(pool.open_masters(), 1, "one master per (user, host, port)");
    drop(second);

    let mut beta = RemoteEndpoint::initialize(
        stream,
        options(&target.path),
        "root@127.0.0.1".into(),
        Compression::Zstd,
    )
    .expect("initialize");
    let alpha_root = dir.path().join("alpha");
    write(&alpha_root, "a/b.txt", "over ssh");
    let mut alpha =
        LocalEndpoint::new(alpha_root.clone(), LocalOptions::new(dir.path().join("st")));
    let mut synchronizer = Synchronizer::new(Mode::TwoWaySafe);
    synchronizer.cycle(&mut alpha, &mut beta).expect("cycle");
    assert_eq!(read_tree(&remote_root), read_tree(&alpha_root));
    beta.shutdown().expect("shutdown");
    drop(beta);
    assert_eq!(pool.open_masters(), 0, "the master closes with its last user");
}

#[test]
fn unknown_hosts_and_refused_logins_name_the_host() {
    let sshd = Sshd::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let pool = pool(&sshd, &dir.path().join("ssh"));
    let unknown =
        SshUrl { user: None, host: "no-such-host.invalid".into(), port: None, path: "x".into() };
    let error = runtime
        .block_on(pool.connect_agent(&unknown, Role::Endpoint, None))
        .expect_err("unknown host")
        .to_string();
    assert!(error.contains("unable to connect to no-such-host.invalid"), "{error}");
    assert!(error.to_lowercase().contains("could not resolve"), "{error}");
    let mut refused = url(&sshd, "x");
    refused.user = Some("nobody".into());
    let error = runtime
        .block_on(pool.connect_agent(&refused, Role::Endpoint, None))
        .expect_err("refused")
        .to_string();
    assert!(
        error.contains(&format!("unable to connect to nobody@127.0.0.1:{}", sshd.port)),
        "{error}"
    );
    assert!(error.contains("Permission denied"), "{error}");
    assert_eq!(pool.open_masters(), 0);
}

//! Docker endpoints through the real binary, against a private dockerd the test starts
//! itself (offline busybox image, no network): a tree into a container and back, checked by
//! hash inside it; container-side edits through the agent's watcher; a conflict; a non-root
//! user who owns what the agent writes; a stopped and restarted container; a container
//! recreated under the same name; clear errors that leave no session behind; and Podman,
//! reached through its Docker-compatible API; and an SSH endpoint synchronized with a
//! container through the daemon.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::time::Duration;

use mutagen_tests::dockerd::Dockerd;
use mutagen_tests::podman::Podman;

use crate::daemon_env::{DaemonEnv, write};

/// How long a propagated change may take before the test fails.
const PATIENCE: Duration = Duration::from_secs(30);

fn env_for(dockerd: &Dockerd) -> DaemonEnv {
    env_with_host(dockerd.host())
}

fn env_with_host(host: String) -> DaemonEnv {
    let static_agent = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../target/x86_64-unknown-linux-gnu/debug/mutagen-agent");
    assert!(
        static_agent.exists(),
        "the docker tests need the static agent at {}: run ./tests/setup.sh",
        static_agent.display()
    );
    let mut env = DaemonEnv::new();
    env.env.push(("DOCKER_HOST".into(), host));
    env
}

fn until(env: &DaemonEnv, what: &str, done: impl FnMut() -> bool) {
    env.until(what, PATIENCE, done);
}

/// `sha256sum` of every file under `root`, by relative path (computed by busybox).
fn hashes_in(dockerd: &Dockerd, container: &str, root: &str) -> BTreeMap<String, String> {
    let script = format!("cd {root} && find . -type f -exec sha256sum {{}} +");
    parse_hashes(&dockerd.exec(container, "root", &script))
}

/// `sha256sum` output, by relative path.
fn parse_hashes(listed: &str) -> BTreeMap<String, String> {
    listed
        .lines()
        .map(|line| {
            let (hash, path) = line.split_once("  ").expect("hash  path");
            (path.trim_start_matches("./").to_owned(), hash.to_owned())
        })
        .collect()
}

/// The same for a local root (computed by the system's sha256sum).
fn hashes_here(root: &Path) -> BTreeMap<String, String> {
    let output = std::process::Command::new("sh")
        .arg("-c")
        .arg("find . -type f -exec sha256sum {} +")
        .current_dir(root)
        .output()
        .expect("sha256sum");
    parse_hashes(&String::from_utf8_lossy(&output.stdout))
}

fn populate(root: &Path) {
    write(&root.join("src/main.rs"), "fn main() {}\n");
    write(&root.join("docs/ünïcødé.md"), "# title\n");
    write(&root.join("big.bin"), mutagen_tests::pseudo_random(3 << 20, 7));
    let script = root.join("run.sh");
    write(&script, "#!/bin/sh\necho run\n");
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).expect("chmod");
}

#[test]
fn a_tree_goes_into_a_container_and_back() {
    let dockerd = Dockerd::start();
    dockerd.run("web");
    let env = env_for(&dockerd);
    let alpha = env.path("alpha");
    populate(&alpha);
    env.ok(&["sync", "create", "alpha", "docker://web/~/project", "--name", "box"]);
    env.ok(&["sync", "flush", "box"]);
    assert_eq!(hashes_in(&dockerd, "web", "/root/project"), hashes_here(&alpha));
    let mode = dockerd.exec("web", "root", "stat -c %a /root/project/run.sh");
    assert_eq!(mode.trim(), "755", "the executable bit arrived");

    let sessions = env.sessions();
    let beta = &sessions[0]["beta"];
    assert_eq!(beta["protocol"], "docker");
    assert_eq!(beta["host"], "web");
    assert_eq!(beta["path"], "~/project");
    assert_eq!(beta["environment"]["DOCKER_HOST"], dockerd.host(), "captured at create");
    assert!(
        env.ok(&["sync", "list", "--long"]).contains(&format!("DOCKER_HOST={}", dockerd.host()))
    );

    // A container-side edit reaches alpha through the agent's watcher, without a flush.
    dockerd.exec("web", "root", "echo 'from the container' > /root/project/remote.txt");
    until(&env, "the container's edit reaching alpha", || {
        fs::read_to_string(alpha.join("remote.txt")).is_ok_and(|c| c == "from the container\n")
    });
    // And a local edit reaches the container.
    write(&alpha.join("src/main.rs"), "fn main() { v2() }\n");
    until(&env, "the local edit reaching the container", || {
        dockerd.exec("web", "root", "cat /root/project/src/main.rs").contains("v2")
    });

    // Conflicting edits keep both versions.
    env.ok(&["sync", "pause", "box"]);
    write(&alpha.join("conflict.txt"), "alpha's\n");
    dockerd.exec("web", "root", "echo \"beta's\" > /root/project/conflict.txt");
    env.ok(&["sync", "resume", "box"]);
    env.ok(&["sync", "flush", "box"]);
    let conflicts = env.sessions()[0]["conflicts"].as_array().expect("conflicts").len();
    assert_eq!(conflicts, 1);
    assert_eq!(fs::read_to_string(alpha.join("conflict.txt")).expect("alpha"), "alpha's\n");
    assert_eq!(dockerd.exec("web", "root", "cat /root/project/conflict.txt"), "beta's\n");

    // The daemon, started later with another environment, still reaches the same engine.
    env.ok(&["daemon", "stop"]);
    let mut elsewhere = env.command(&["daemon", "start"]);
    elsewhere.env("DOCKER_HOST", "unix:///nonexistent/docker.sock");
    assert!(elsewhere.status().expect("daemon start").success());
    dockerd.exec("web", "root", "echo later > /root/project/later.txt");
    env.ok(&["sync", "flush", "box"]);
    assert_eq!(fs::read_to_string(alpha.join("later.txt")).expect("later"), "later\n");

    // Nothing of ours keeps running in the container after daemon stop.
    env.ok(&["daemon", "stop"]);
    until(&env, "the agent exiting", || {
        !dockerd.exec("web", "root", "ps -o comm").contains("mutagen-agent")
    });
}

#[test]
fn a_user_owns_what_the_agent_writes_and_errors_are_clear() {
    let dockerd = Dockerd::start();
    dockerd.run("dev");
    let env = env_for(&dockerd);
    let alpha = env.path("alpha");
    populate(&alpha);
    // A pinned API version, for beta only, is captured and used.
    let mut create = env.command(&["sync", "create", "alpha", "docker://user@dev/~/work"]);
    create.args(["--name", "user"]).env("MUTAGEN_BETA_DOCKER_API_VERSION", "1.40");
    assert!(create.status().expect("create").success());
    let environment = env.sessions()[0]["beta"]["environment"].clone();
    assert_eq!(environment["DOCKER_API_VERSION"], "1.40", "{environment}");
    env.ok(&["sync", "flush", "user"]);
    assert_eq!(hashes_in(&dockerd, "dev", "/home/user/work"), hashes_here(&alpha));
    let owners = dockerd.exec(
        "dev",
        "root",
        "find /home/user/work /home/user/.mutagen -exec stat -c %u {} + | sort -u",
    );
    assert_eq!(owners.trim(), "1000", "everything the agent wrote belongs to the user");

    for (url, message) in [
        ("docker://nosuch/x", "unable to connect to container nosuch: no such container"),
        ("docker://nobody@dev/x", "unable to find user nobody in the container"),
        ("docker://dev", "the path must be absolute"),
        ("docker://dev:relative", "the path must be absolute"),
    ] {
        env.fails(&["sync", "create", "alpha", url, "--name", "bad"], message);
    }
    dockerd.run("homeless");
    dockerd.exec("homeless", "root", "rm -rf /home/user");
    env.fails(
        &["sync", "create", "alpha", "docker://user@homeless/~/x"],
        "the home directory /home/user does not exist",
    );
    dockerd.ok(&["run", "-d", "--name", "stopped", mutagen_tests::dockerd::IMAGE, "true"]);
    dockerd.ok(&["wait", "stopped"]);
    env.fails(&["sync", "create", "alpha", "docker://stopped/x"], "the container is not running");
    let mut unreachable = env.command(&["sync", "create", "alpha", "docker://dev/x"]);
    unreachable.env("DOCKER_HOST", "unix:///nonexistent/docker.sock");
    let output = unreachable.output().expect("create");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("/nonexistent/docker.sock"), "{stderr}");
    assert_eq!(env.sessions().len(), 1, "no session is left behind by a failed create");
}

#[test]
fn a_restarted_container_reconverges_and_a_recreated_one_never_propagates_deletions() {
    let dockerd = Dockerd::start();
    dockerd.run("app");
    let env = env_for(&dockerd);
    let alpha = env.path("alpha");
    populate(&alpha);
    env.ok(&["sync", "create", "alpha", "docker://app/tmp/app", "--name", "app"]);
    env.ok(&["sync", "flush", "app"]);

    // Stopped and started again: the session reconnects and converges.
    dockerd.ok(&["stop", "-t", "0", "app"]);
    write(&alpha.join("while-stopped.txt"), "queued\n");
    dockerd.ok(&["start", "app"]);
    until(&env, "the file written while stopped reaching the container", || {
        dockerd.docker(&["exec", "app", "cat", "/tmp/app/while-stopped.txt"]).status.success()
    });

    // Removed and recreated under the same name: a fresh file system. Nothing local may be
    // deleted because of it.
    let before = hashes_here(&alpha);
    dockerd.ok(&["rm", "-f", "app"]);
    dockerd.run("app");
    until(&env, "the session halting", || {
        env.sessions()[0]["status"] == "halted-on-endpoint-replaced"
    });
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(hashes_here(&alpha), before, "no local file was deleted");
    let history = env.ok(&["sync", "history", "app"]);
    let new_identity = dockerd.ok(&["inspect", "-f", "{{.Id}}", "app"]);
    assert!(history.contains("endpoint-replaced"), "{history}");
    assert!(history.contains(new_identity.trim()), "the new container is named: {history}");

    // A reset re-seeds the new container from the surviving side.
    env.ok(&["sync", "reset", "app"]);
    env.ok(&["sync", "flush", "app"]);
    assert_eq!(hashes_in(&dockerd, "app", "/tmp/app"), before);
    assert_eq!(hashes_here(&alpha), before);
}

#[test]
fn podman_serves_as_the_engine_through_its_docker_compatible_api() {
    let podman = Podman::start();
    podman.run("pod");
    let env = env_with_host(podman.host());
    let alpha = env.path("alpha");
    populate(&alpha);
    env.ok(&["sync", "create", "alpha", "docker://pod/~/project", "--name", "pod"]);
    env.ok(&["sync", "flush", "pod"]);
    let script = "cd /root/project && find . -type f -exec sha256sum {} +";
    let listed = podman.ok(&["exec", "pod", "sh", "-c", script]);
    assert_eq!(parse_hashes(&listed), hashes_here(&alpha));
    podman.ok(&["exec", "pod", "sh", "-c", "echo podman > /root/project/back.txt"]);
    until(&env, "the container's edit reaching alpha", || {
        fs::read_to_string(alpha.join("back.txt")).is_ok_and(|c| c == "podman\n")
    });
}

#[test]
fn an_ssh_endpoint_and_a_container_sync_through_the_daemon() {
    let sshd = mutagen_tests::sshd::Sshd::start();
    let dockerd = Dockerd::start();
    dockerd.run("relay");
    let mut env = env_for(&dockerd);
    let directory = sshd.ssh_directory().display().to_string();
    env.env.push(("MUTAGEN_SSH_PATH".into(), directory));
    fs::create_dir_all(env.path("remote")).expect("the remote root's parent");
    let remote = env.path("remote/alpha");
    populate(&remote);
    let ssh = format!("root@127.0.0.1:{}:{}", sshd.port, remote.display());
    env.ok(&["sync", "create", &ssh, "docker://relay/~/copy", "--name", "relay"]);
    env.ok(&["sync", "flush", "relay"]);
    assert_eq!(hashes_in(&dockerd, "relay", "/root/copy"), hashes_here(&remote));
    dockerd.exec("relay", "root", "echo back > /root/copy/back.txt");
    until(&env, "the container's edit reaching the ssh side", || {
        fs::read_to_string(remote.join("back.txt")).is_ok_and(|c| c == "back\n")
    });
    let sessions = env.sessions();
    assert_eq!(sessions[0]["alpha"]["protocol"], "ssh");
    assert_eq!(sessions[0]["beta"]["protocol"], "docker");
}

#[test]
fn an_engine_behind_verified_tls_is_reached_with_the_captured_certificates() {
    let dockerd = Dockerd::start_with_tls();
    dockerd.run("secure");
    let (host, certificates) = dockerd.tls().expect("a tls engine");
    let mut env = env_with_host(host.clone());
    env.env.push(("DOCKER_TLS_VERIFY".into(), "1".into()));
    env.env.push(("DOCKER_CERT_PATH".into(), certificates.display().to_string()));
    let alpha = env.path("alpha");
    populate(&alpha);
    env.ok(&["sync", "create", "alpha", "docker://secure/~/tls", "--name", "tls"]);
    env.ok(&["sync", "flush", "tls"]);
    assert_eq!(hashes_in(&dockerd, "secure", "/root/tls"), hashes_here(&alpha));
    let environment = env.sessions()[0]["beta"]["environment"].clone();
    assert_eq!(environment["DOCKER_HOST"], host.as_str());
    assert_eq!(environment["DOCKER_TLS_VERIFY"], "1");

    // Without the client certificate the engine refuses, and create says where it looked.
    let mut missing = env.command(&["sync", "create", "alpha", "docker://secure/~/x"]);
    missing.env("DOCKER_CERT_PATH", "/nonexistent/certs");
    let output = missing.output().expect("create");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("the TLS file /nonexistent/certs/ca.pem is missing"), "{stderr}");
}

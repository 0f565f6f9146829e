//! SSH endpoints through the real binary, against a real sshd on loopback: a tree to a remote
//! root and back, remote edits through the remote watcher, conflicts, `~` paths and a
//! non-root login, a killed connection, a deleted agent, clear errors, and no ssh process left
//! after `daemon stop`.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use mutagen_tests::read_tree;
use mutagen_tests::sshd::{Sshd, TEST_USER, ensure_test_user};

use crate::daemon_env::{DaemonEnv, write};

/// How long a propagated change may take before the test fails.
const PATIENCE: Duration = Duration::from_secs(30);

fn env_for(sshd: &Sshd) -> DaemonEnv {
    let mut env = DaemonEnv::new();
    let directory = sshd.ssh_directory().display().to_string();
    env.env.push(("MUTAGEN_SSH_PATH".into(), directory));
    env
}

fn remote(sshd: &Sshd, user: &str, path: &str) -> String {
    format!("{user}@127.0.0.1:{}:{path}", sshd.port)
}

fn until(env: &DaemonEnv, what: &str, done: impl FnMut() -> bool) {
    env.until(what, PATIENCE, done);
}

/// Processes whose command line mentions `needle`.
fn processes_mentioning(needle: &str) -> Vec<u32> {
    let mut found = Vec::new();
    for entry in fs::read_dir("/proc").expect("/proc").flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        let cmdline = fs::read(entry.path().join("cmdline")).unwrap_or_default();
        if String::from_utf8_lossy(&cmdline).contains(needle) {
            found.push(pid);
        }
    }
    found
}

fn populate(root: &Path) {
    write(&root.join("src/main.rs"), "fn main() {}\n");
    write(&root.join("src/lib/ünïcödé ✓.txt"), "unicode\n");
    write(&root.join("bin/run.sh"), "#!/bin/sh\necho run\n");
    fs::set_permissions(root.join("bin/run.sh"), fs::Permissions::from_mode(0o755)).expect("chmod");
    std::os::unix::fs::symlink("../src/main.rs", root.join("bin/main-link")).expect("symlink");
    write(&root.join("data/big.bin"), mutagen_tests::pseudo_random(3 << 20, 7));
    fs::create_dir_all(root.join("empty")).expect("empty dir");
}

#[test]
fn a_tree_goes_to_a_remote_root_and_back_in_real_time() {
    let sshd = Sshd::start();
    let env = env_for(&sshd);
    let alpha = env.path("alpha");
    populate(&alpha);
    fs::create_dir_all(env.path("remote")).expect("the remote root's parent");
    let beta = env.path("remote/beta");
    let url = remote(&sshd, "root", &beta.display().to_string());
    env.ok(&["sync", "create", "alpha", &url, "--name", "remote", "--symlink-mode", "posix-raw"]);
    env.ok(&["sync", "flush", "remote"]);
    assert_eq!(read_tree(&beta), read_tree(&alpha), "the tree arrived, hashes, modes and links");

    let sessions = env.sessions();
    let endpoint = &sessions[0]["beta"];
    assert_eq!(endpoint["protocol"], "ssh");
    assert_eq!(endpoint["user"], "root");
    assert_eq!(endpoint["host"], "127.0.0.1");
    assert_eq!(endpoint["port"], u64::from(sshd.port));
    assert_eq!(endpoint["path"], beta.display().to_string());
    assert_eq!(endpoint["url"], url);
    assert_eq!(endpoint["connected"], true);
    assert_eq!(sessions[0]["alpha"]["protocol"], "local");
    assert_eq!(sessions[0]["compression"], "zstd", "compressed by default");
    assert!(env.ok(&["sync", "list"]).contains(&url), "list shows the url");
    assert!(env.ok(&["sync", "list", "--long"]).contains("\tCompression: zstd\n"));

    // A remote edit reaches alpha through the agent's watcher, without a flush.
    write(&beta.join("src/remote.txt"), "from the remote side\n");
    until(&env, "the remote edit reaching alpha", || {
        fs::read_to_string(alpha.join("src/remote.txt"))
            .is_ok_and(|c| c == "from the remote side\n")
    });
    // And a local edit reaches the remote side the same way.
    write(&alpha.join("src/main.rs"), "fn main() { println!(\"v2\"); }\n");
    until(&env, "the local edit reaching beta", || {
        fs::read_to_string(beta.join("src/main.rs")).is_ok_and(|c| c.contains("v2"))
    });

    // Conflicting edits keep both versions.
    env.ok(&["sync", "pause", "remote"]);
    write(&alpha.join("conflict.txt"), "alpha's\n");
    write(&beta.join("conflict.txt"), "beta's\n");
    env.ok(&["sync", "resume", "remote"]);
    env.ok(&["sync", "flush", "remote"]);
    let sessions = env.sessions();
    let conflicts = sessions[0]["conflicts"].as_array().expect("conflicts");
    assert_eq!(conflicts.len(), 1, "{conflicts:?}");
    assert_eq!(conflicts[0]["root"], "conflict.txt");
    assert_eq!(fs::read_to_string(alpha.join("conflict.txt")).expect("alpha"), "alpha's\n");
    assert_eq!(fs::read_to_string(beta.join("conflict.txt")).expect("beta"), "beta's\n");

    let history = env.ok(&["sync", "history", "remote"]);
    assert!(history.contains(&format!("connected          beta {url} (agent ")), "{history}");

    // Nothing of ours outlives the daemon: no ssh master, no agent.
    let control = env.data().join("daemon/ssh").display().to_string();
    assert!(!processes_mentioning(&control).is_empty(), "a master runs while the session does");
    assert!(!agents_of(&sshd).is_empty(), "an agent runs while the session does");
    env.ok(&["daemon", "stop"]);
    until(&env, "every ssh process and agent ending", || {
        processes_mentioning(&control).is_empty() && agents_of(&sshd).is_empty()
    });
}

/// Agents started through this test's sshd (sshd puts its own port in `SSH_CONNECTION`).
fn agents_of(sshd: &Sshd) -> Vec<u32> {
    let server = format!(" 127.0.0.1 {}\0", sshd.port);
    processes_mentioning("mutagen-agent\0endpoint")
        .into_iter()
        .filter(|pid| {
            let environ = fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
            String::from_utf8_lossy(&environ).contains(&server)
        })
        .collect()
}

#[test]
fn home_relative_paths_and_a_non_root_login() {
    assert!(ensure_test_user(), "the test runs as root in CI and creates {TEST_USER}");
    let sshd = Sshd::start();
    let env = env_for(&sshd);
    write(&env.path("alpha/notes.txt"), "notes\n");
    let home = PathBuf::from(
        fs::read_to_string("/etc/passwd")
            .expect("passwd")
            .lines()
            .find(|l| l.starts_with(&format!("{TEST_USER}:")))
            .and_then(|l| l.split(':').nth(5).map(str::to_owned))
            .expect("home"),
    );
    let project = format!("proj-{}", std::process::id());
    let url = remote(&sshd, TEST_USER, &format!("~/{project}"));
    env.ok(&["sync", "create", "alpha", &url, "--name", "home"]);
    env.ok(&["sync", "flush", "home"]);
    let synced = home.join(&project).join("notes.txt");
    assert_eq!(fs::read_to_string(&synced).expect("synced into the user's home"), "notes\n");
    let owner = std::os::unix::fs::MetadataExt::uid(&fs::metadata(&synced).expect("metadata"));
    let user_id = fs::read_to_string("/etc/passwd")
        .expect("passwd")
        .lines()
        .find(|l| l.starts_with(&format!("{TEST_USER}:")))
        .and_then(|l| l.split(':').nth(2).and_then(|u| u.parse::<u32>().ok()))
        .expect("uid");
    assert_eq!(owner, user_id, "files belong to the login user");
    assert!(home.join(".mutagen/agents").is_dir(), "the agent went to the user's home");
    env.ok(&["sync", "terminate", "home"]);
    let _ = fs::remove_dir_all(home.join(&project));
}

#[test]
fn a_killed_connection_and_a_deleted_agent_are_recovered() {
    let sshd = Sshd::start();
    let env = env_for(&sshd);
    write(&env.path("alpha/one.txt"), "1\n");
    fs::create_dir_all(env.path("remote")).expect("the remote root's parent");
    let beta = env.path("remote/beta");
    let url = remote(&sshd, "root", &beta.display().to_string());
    env.ok(&["sync", "create", "alpha", &url, "--name", "cut"]);
    env.ok(&["sync", "flush", "cut"]);

    // The agent disappears from the remote host, then the link is cut.
    let agents = PathBuf::from(sshd.exec("root", "echo $HOME").trim()).join(".mutagen/agents");
    fs::remove_dir_all(&agents).expect("delete the installed agent");
    let control = env.data().join("daemon/ssh").display().to_string();
    let masters = processes_mentioning(&control);
    assert!(!masters.is_empty(), "an ssh master runs");
    for pid in masters {
        let _ = std::process::Command::new("kill").args(["-9", &pid.to_string()]).status();
    }
    until(&env, "the session noticing the cut", || {
        let sessions = env.sessions();
        sessions[0]["lastError"].is_string() || sessions[0]["beta"]["connected"] == false
    });
    write(&env.path("alpha/two.txt"), "2\n");
    until(&env, "reconnection and convergence", || {
        fs::read_to_string(beta.join("two.txt")).is_ok_and(|c| c == "2\n")
    });
    assert!(agents.is_dir(), "the agent was installed again");
    env.ok(&["sync", "flush", "cut"]);
    assert_eq!(read_tree(&beta), read_tree(&env.path("alpha")));
    let history = env.ok(&["sync", "history", "cut"]);
    assert!(history.contains("disconnected"), "{history}");
    assert!(history.matches("connected          beta").count() >= 2, "{history}");
}

#[test]
fn unreachable_hosts_and_empty_paths_fail_create_and_leave_nothing() {
    let sshd = Sshd::start();
    let env = env_for(&sshd);
    env.ok(&["daemon", "start"]);
    env.fails(
        &["sync", "create", "alpha", "no-such-host.invalid:/srv"],
        "unable to connect to beta: unable to connect to no-such-host.invalid",
    );
    env.fails(
        &["sync", "create", "alpha", &format!("nobody@127.0.0.1:{}:/x", sshd.port)],
        "Permission denied",
    );
    env.fails(&["sync", "create", "alpha", "host:"], "the remote path is empty");
    env.fails(
        &["sync", "create", "alpha", &remote(&sshd, "root", "~nosuchuser/x")],
        "unable to resolve ~nosuchuser: no such user",
    );
    assert!(env.sessions().is_empty(), "no session was left behind");
}

#[test]
fn two_remote_endpoints_sync_through_the_daemon() {
    let sshd = Sshd::start();
    let env = env_for(&sshd);
    fs::create_dir_all(env.path("remote")).expect("parent");
    let (alpha, beta) = (env.path("remote/alpha"), env.path("remote/beta"));
    populate(&alpha);
    let alpha_url = remote(&sshd, "root", &alpha.display().to_string());
    // The same host under another name: a second master, as for two hosts.
    let beta_url = format!("root@localhost:{}:{}", sshd.port, beta.display());
    let create = ["sync", "create", &alpha_url, &beta_url, "--name", "relay", "--compression"];
    env.fails(&[&create[..], &["lz4"]].concat(), "unknown compression \"lz4\"");
    env.ok(&[&create[..], &["none"]].concat());
    env.ok(&["sync", "flush", "relay"]);
    assert_eq!(read_tree(&beta), read_tree(&alpha), "staged through the daemon");
    write(&beta.join("back.txt"), "back\n");
    until(&env, "beta's edit reaching alpha", || alpha.join("back.txt").exists());
    let sessions = env.sessions();
    assert_eq!(sessions[0]["alpha"]["protocol"], "ssh");
    assert_eq!(sessions[0]["beta"]["host"], "localhost");
    assert_eq!(sessions[0]["compression"], "none");
}

/// Runs `mutagen ARGS` with a pseudo-terminal as its standard streams, answering each
/// question that ends with one of `answers`' keys; returns the exit status and the output.
fn run_on_a_terminal(env: &DaemonEnv, args: &[&str], answers: &[(&str, &str)]) -> (i32, String) {
    use std::io::{Read, Write};
    use std::os::fd::OwnedFd;
    let master =
        rustix::pty::openpt(rustix::pty::OpenptFlags::RDWR | rustix::pty::OpenptFlags::NOCTTY)
            .expect("openpt");
    rustix::pty::grantpt(&master).expect("grantpt");
    rustix::pty::unlockpt(&master).expect("unlockpt");
    let name = rustix::pty::ptsname(&master, Vec::new()).expect("ptsname");
    let slave: OwnedFd = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(name.to_str().expect("utf-8 pty name"))
        .expect("open the pty")
        .into();
    let mut command = env.command(args);
    command
        .stdin(slave.try_clone().expect("dup"))
        .stdout(slave.try_clone().expect("dup"))
        .stderr(slave);
    let mut child = command.spawn().expect("spawn on a pty");
    drop(command);
    let mut terminal = fs::File::from(master);
    let mut reader = terminal.try_clone().expect("dup the master");
    let (bytes, output) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut buffer = [0u8; 1024];
        while let Ok(n) = reader.read(&mut buffer) {
            if n == 0 || bytes.send(buffer[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    let mut seen = String::new();
    let mut answered = 0;
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Ok(chunk) = output.recv_timeout(Duration::from_millis(50)) {
            seen.push_str(&String::from_utf8_lossy(&chunk));
        }
        if let Some((_, answer)) = answers.get(answered)
            && seen.trim_end().ends_with(answers[answered].0)
        {
            terminal.write_all(format!("{answer}\n").as_bytes()).expect("answer");
            answered += 1;
        }
        if let Some(status) = child.try_wait().expect("wait") {
            while let Ok(chunk) = output.recv_timeout(Duration::from_millis(100)) {
                seen.push_str(&String::from_utf8_lossy(&chunk));
            }
            return (status.code().unwrap_or(-1), seen);
        }
        assert!(Instant::now() < deadline, "{args:?} still runs; its terminal shows:\n{seen}");
    }
}

#[test]
fn a_password_prompt_reaches_the_terminal_of_create() {
    let sshd = Sshd::start_with_passwords();
    let mut env = DaemonEnv::new();
    let directory = sshd.password_ssh_directory().display().to_string();
    env.env.push(("MUTAGEN_SSH_PATH".into(), directory));
    write(&env.path("alpha/secret-plan.txt"), "plan\n");
    env.ok(&["daemon", "start"]);
    let project = format!("pw-{}", std::process::id());
    let url = remote(&sshd, TEST_USER, &format!("~/{project}"));

    // Without a terminal nothing prompts: create fails at once with ssh's message.
    let started = Instant::now();
    env.fails(&["sync", "create", "alpha", &url, "--name", "pw"], "Permission denied");
    assert!(started.elapsed() < Duration::from_secs(15), "no hang without a terminal");
    assert!(env.sessions().is_empty());

    // On a terminal, ssh's password question is asked there and the answer goes back.
    let (code, shown) = run_on_a_terminal(
        &env,
        &["sync", "create", "alpha", &url, "--name", "pw"],
        &[("password:", mutagen_tests::sshd::TEST_PASSWORD)],
    );
    assert_eq!(code, 0, "create on a terminal: {shown}");
    assert!(shown.contains(&format!("{TEST_USER}@127.0.0.1's password:")), "{shown}");
    assert!(!shown.contains(mutagen_tests::sshd::TEST_PASSWORD), "the password was echoed");
    assert!(shown.contains("Created session"), "{shown}");
    env.ok(&["sync", "flush", "pw"]);
    let home = sshd.exec("root", &format!("getent passwd {TEST_USER} | cut -d: -f6"));
    let synced = PathBuf::from(home.trim()).join(&project).join("secret-plan.txt");
    assert_eq!(fs::read_to_string(&synced).expect("synced with a password login"), "plan\n");

    // A cut link cannot be mended in the background (that would need the password): the
    // session says how to reconnect, and `sync resume` on a terminal asks again.
    let control = env.data().join("daemon/ssh").display().to_string();
    for pid in processes_mentioning(&control) {
        let _ = std::process::Command::new("kill").args(["-9", &pid.to_string()]).status();
    }
    until(&env, "the failed background reconnection", || {
        env.sessions()[0]["lastError"]
            .as_str()
            .is_some_and(|e| e.contains("run `mutagen sync resume pw` in a terminal"))
    });
    let (code, shown) = run_on_a_terminal(
        &env,
        &["sync", "resume", "pw"],
        &[("password:", mutagen_tests::sshd::TEST_PASSWORD)],
    );
    assert_eq!(code, 0, "resume on a terminal: {shown}");
    assert!(shown.contains("password:"), "{shown}");
    assert_eq!(env.sessions()[0]["beta"]["connected"], true);
    write(&env.path("alpha/after.txt"), "after\n");
    env.ok(&["sync", "flush", "pw"]);
    assert!(synced.with_file_name("after.txt").exists(), "synchronizing again");
    env.ok(&["sync", "terminate", "pw"]);
    let _ = fs::remove_dir_all(synced.parent().expect("project"));
}

/// Permissions mode posix through the agent: the bits go out, and a remote `chmod` of a
/// directory alone comes back through the remote watch and a snapshot delta.
#[test]
fn posix_bits_travel_through_the_agent_both_ways() {
    let sshd = Sshd::start();
    let env = env_for(&sshd);
    let mode = |path: &Path| fs::metadata(path).ok().map(|m| m.permissions().mode() & 0o7777);
    let alpha = env.path("alpha");
    write(&alpha.join("d/f"), "f");
    fs::set_permissions(alpha.join("d"), fs::Permissions::from_mode(0o2750)).expect("chmod");
    fs::set_permissions(alpha.join("d/f"), fs::Permissions::from_mode(0o640)).expect("chmod");
    fs::create_dir_all(env.path("remote")).expect("the remote root's parent");
    let beta = env.path("remote/beta");
    let url = remote(&sshd, "root", &beta.display().to_string());
    env.ok(&["sync", "create", "alpha", &url, "--name", "posix", "--permissions-mode", "posix"]);
    env.ok(&["sync", "flush", "posix"]);
    assert_eq!((mode(&beta.join("d")), mode(&beta.join("d/f"))), (Some(0o2750), Some(0o640)));
    fs::set_permissions(beta.join("d"), fs::Permissions::from_mode(0o700)).expect("chmod");
    until(&env, "the remote directory's bits reach alpha", || {
        mode(&alpha.join("d")) == Some(0o700)
    });
    assert_eq!(fs::read_to_string(alpha.join("d/f")).expect("f"), "f", "its contents stay");
    assert_eq!(mode(&alpha.join("d/f")), Some(0o640));
}

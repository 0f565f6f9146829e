//! Projects through the binary: `mutagen project start|list|flush|pause|resume|reset|
//! terminate|run` over a real project file, its lock, labels, hooks and commands.

use std::fs;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::os::unix::net::UnixStream;

use crate::daemon_env::{DaemonEnv, write};

/// A TCP echo server on loopback: each connection gets back what it sent once it half-closed.
fn echo_server() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("address").port();
    std::thread::spawn(move || {
        for client in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut client = client;
                let mut request = Vec::new();
                if client.read_to_end(&mut request).is_ok() {
                    let _ = client.write_all(&request);
                }
            });
        }
    });
    port
}

fn project_file(port: u16) -> String {
    format!(
        "\
beforeCreate: ['echo beforeCreate >> hooks.log']
afterCreate: ['echo afterCreate >> hooks.log']
beforePause: ['echo beforePause >> hooks.log']
afterResume: ['echo afterResume >> hooks.log']
beforeTerminate: ['echo beforeTerminate >> hooks.log']
afterTerminate: ['echo afterTerminate >> hooks.log']
commands:
  hello: echo hello > said.txt
  fail: exit 3
sync:
  defaults:
    ignore:
      paths: ['*.tmp']
    watch:
      mode: no-watch
  code:
    alpha: src
    beta: dst
    flushOnCreate: true
forward:
  web:
    source: unix:web.sock
    destination: tcp:127.0.0.1:{port}
"
    )
}

fn hooks_log(env: &DaemonEnv) -> Vec<String> {
    let text = fs::read_to_string(env.path("project/hooks.log")).unwrap_or_default();
    text.lines().map(str::to_owned).collect()
}

#[test]
fn a_project_starts_runs_and_terminates_its_sessions() {
    let env = DaemonEnv::new();
    let port = echo_server();
    write(&env.path("project/mutagen.yml"), project_file(port));
    write(&env.path("project/src/main.rs"), "fn main() {}");
    write(&env.path("project/src/scratch.tmp"), "ignored");
    let file = env.path("project/mutagen.yml");
    let file = file.to_str().expect("utf-8");

    let out = env.ok(&["project", "start", "-f", file]);
    assert!(out.contains("Started project proj_"), "{out}");
    assert_eq!(hooks_log(&env), ["beforeCreate", "afterCreate"]);
    // flushOnCreate: the first cycle ran before start returned; the ignores merged.
    assert_eq!(
        fs::read_to_string(env.path("project/dst/main.rs")).expect("synced"),
        "fn main() {}"
    );
    assert!(!env.path("project/dst/scratch.tmp").exists());
    let lock = fs::read_to_string(env.path("project/mutagen.yml.lock")).expect("lock");
    assert!(lock.starts_with("proj_"), "{lock}");
    let sessions = env.sessions();
    assert_eq!(sessions.len(), 1);
    assert_eq!(sessions[0]["name"], "code");
    assert_eq!(sessions[0]["labels"]["io.mutagen.project"], lock.as_str());
    assert_eq!(sessions[0]["watch"]["mode"], "no-watch");

    // The forward session forwards, from a socket relative to the project file.
    let mut stream = UnixStream::connect(env.path("project/web.sock")).expect("the listener");
    stream.write_all(b"through the project").expect("send");
    stream.shutdown(std::net::Shutdown::Write).expect("half-close");
    let mut reply = String::new();
    stream.read_to_string(&mut reply).expect("reply");
    assert_eq!(reply, "through the project");

    let run = env.run(&["project", "start", "-f", file]);
    assert!(run.code == 1 && run.stderr.contains("project already running"), "{}", run.stderr);

    let listed = env.ok(&["project", "list", "-f", file]);
    let header = format!("Project: {lock}");
    for needle in [header.as_str(), "Name: web", "Name: code", "Forward sessions:"] {
        assert!(listed.contains(needle), "{needle:?} missing from\n{listed}");
    }
    let listed: serde_json::Value =
        serde_json::from_str(&env.ok(&["project", "list", "-f", file, "--json"])).expect("json");
    assert_eq!(listed["identifier"], lock.as_str());
    assert_eq!(listed["forward"][0]["name"], "web");

    // Flush, pause and resume reach every session, with their hooks.
    write(&env.path("project/src/later.rs"), "later");
    env.ok(&["project", "flush", "-f", file]);
    assert!(env.path("project/dst/later.rs").exists());
    env.ok(&["project", "pause", "-f", file]);
    assert_eq!(env.sessions()[0]["paused"], true);
    let forwards = env.ok(&["forward", "list", "--json"]);
    assert!(forwards.contains("\"paused\":true"), "{forwards}");
    env.ok(&["project", "resume", "-f", file]);
    assert_eq!(env.sessions()[0]["paused"], false);
    env.ok(&["project", "reset", "-f", file]);
    assert_eq!(hooks_log(&env)[2..], ["beforePause", "afterResume"]);

    // Commands run in the project's directory; their exit code is ours.
    env.ok(&["project", "run", "-f", file, "hello"]);
    assert_eq!(fs::read_to_string(env.path("project/said.txt")).expect("said"), "hello\n");
    assert_eq!(env.run(&["project", "run", "-f", file, "fail"]).code, 3);
    env.fails(
        &["project", "run", "-f", file, "nope"],
        "has no command \"nope\" (it has fail, hello)",
    );

    env.ok(&["project", "terminate", "-f", file]);
    assert_eq!(hooks_log(&env)[4..], ["beforeTerminate", "afterTerminate"]);
    assert!(env.sessions().is_empty());
    assert!(env.ok(&["forward", "list"]).contains("No forwarding sessions found"));
    assert!(!env.path("project/mutagen.yml.lock").exists());
    assert!(!env.path("project/web.sock").exists(), "terminate removes the socket");
    env.fails(&["project", "list", "-f", file], "project not running");
    env.fails(&["project", "terminate", "-f", file], "project not running");
    // The default file is mutagen.yml in the working directory.
    env.fails(&["project", "list"], "unable to read the project file mutagen.yml");
}

#[test]
fn a_failed_start_leaves_no_session_behind() {
    let env = DaemonEnv::new();
    let file = env.path("p/mutagen.yml");
    let file = file.to_str().expect("utf-8");
    write(&env.path("p/src/a"), "a");

    // A hook before creation fails: nothing is created, the project is not running.
    write(
        &env.path("p/mutagen.yml"),
        "beforeCreate: ['true', 'exit 4']\nsync:\n  code:\n    alpha: src\n    beta: dst\n",
    );
    env.fails(&["project", "start", "-f", file], "the beforeCreate hook \"exit 4\" failed");
    assert!(env.sessions().is_empty());
    env.fails(&["project", "list", "-f", file], "project not running");

    // A bad entry is found before any hook runs.
    write(
        &env.path("p/mutagen.yml"),
        "beforeCreate: ['echo ran >> hooks.log']\nsync:\n  code:\n    alpha: src\n    beta: 'docker://'\n",
    );
    env.fails(&["project", "start", "-f", file], "sync.code");
    assert!(!env.path("p/hooks.log").exists(), "a hook ran before the sessions were checked");

    // The second creation fails (its socket's path is taken by a file): the first goes again.
    write(&env.path("p/taken.sock"), "a file, not a socket");
    write(
        &env.path("p/mutagen.yml"),
        "forward:\n  a-first:\n    source: unix:first.sock\n    destination: tcp:127.0.0.1:9\n  \
         b-second:\n    source: unix:taken.sock\n    destination: tcp:127.0.0.1:9\n\
         sync:\n  code:\n    alpha: src\n    beta: dst\n",
    );
    let run = env.run(&["project", "start", "-f", file]);
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    for needle in ["b-second", "the sessions already created were terminated"] {
        assert!(run.stderr.contains(needle), "{needle:?} missing from {}", run.stderr);
    }
    assert!(env.sessions().is_empty());
    assert!(env.ok(&["forward", "list"]).contains("No forwarding sessions found"));
    assert!(!env.path("p/first.sock").exists());
    assert_eq!(fs::read_to_string(env.path("p/taken.sock")).expect("kept"), "a file, not a socket");
    env.fails(&["project", "terminate", "-f", file], "project not running");

    // Fixed, it starts.
    fs::remove_file(env.path("p/taken.sock")).expect("remove");
    env.ok(&["project", "start", "-f", file]);
    assert_eq!(env.sessions().len(), 1);
    env.ok(&["project", "terminate", "-f", file]);
}

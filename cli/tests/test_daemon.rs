//! The daemon and the session lifecycle, through the real binary in an isolated data
//! directory: create → list → flush → pause → resume → conflicts → reset → history →
//! terminate; selections; bad input; one daemon per user; socket permissions; a corrupt
//! journal.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use mutagen_tests::read_tree;
use serde_json::Value;

use crate::daemon_env::{DaemonEnv, write};

fn session<'a>(sessions: &'a [Value], name: &str) -> &'a Value {
    sessions.iter().find(|s| s["name"] == name).unwrap_or_else(|| panic!("no session {name}"))
}

#[test]
fn a_session_goes_through_its_whole_lifecycle() {
    let env = DaemonEnv::new();
    write(&env.path("alpha/src/main.rs"), "fn main() {}\n");
    write(&env.path("alpha/README"), "hello\n");

    // Create (auto-starting the daemon), with a name and labels, in no-watch mode so that
    // only flushes cycle.
    let run = env.run(&[
        "sync",
        "create",
        "alpha",
        "beta",
        "--name",
        "web",
        "-l",
        "env=dev",
        "-l",
        "team",
        "--watch-mode",
        "no-watch",
    ]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(run.stderr.contains("Started Mutagen daemon in background"), "{}", run.stderr);
    let identifier =
        run.stdout.trim().strip_prefix("Created session ").expect("created").to_owned();
    assert!(mutagen_session::is_identifier(&identifier), "{identifier}");

    // Flush waits for a complete cycle: the tree is on beta when it returns.
    env.ok(&["sync", "flush", "web"]);
    assert_eq!(read_tree(&env.path("beta")), read_tree(&env.path("alpha")));

    // list --json carries the documented fields.
    let sessions = env.sessions();
    assert_eq!(sessions.len(), 1);
    let web = session(&sessions, "web");
    assert_eq!(web["identifier"], identifier.as_str());
    assert_eq!(web["labels"]["env"], "dev");
    assert_eq!(web["labels"]["team"], "");
    assert_eq!(web["paused"], false);
    assert_eq!(web["status"], "watching");
    assert_eq!(web["lastError"], Value::Null);
    assert!(web["successfulCycles"].as_u64().expect("cycles") >= 1);
    assert_eq!(web["conflicts"], Value::Array(Vec::new()));
    for side in ["alpha", "beta"] {
        let endpoint = &web[side];
        assert_eq!(endpoint["connected"], true, "{side}");
        assert_eq!(endpoint["scanned"], true, "{side}");
        assert_eq!(
            (endpoint["directories"].as_u64(), endpoint["files"].as_u64()),
            (Some(2), Some(2))
        );
        assert_eq!(endpoint["symbolicLinks"], 0);
        assert_eq!(endpoint["totalFileSize"], 19);
        assert_eq!(endpoint["scanProblems"], Value::Array(Vec::new()));
        assert_eq!(endpoint["transitionProblems"], Value::Array(Vec::new()));
    }
    assert!(web["alpha"]["url"].as_str().expect("url").ends_with("/alpha"));
    let template = env.ok(&["sync", "list", "--template", "{{ json . }}"]);
    assert_eq!(
        serde_json::from_str::<Value>(&template).expect("json")[0]["identifier"],
        identifier.as_str()
    );
    // Go templates, with upstream's capitalized names or the JSON ones.
    let template = "{{ range . }}{{ .Name }} {{ .alpha.connected }} {{ len .Labels }}{{ end }}";
    assert_eq!(env.ok(&["sync", "list", "--template", template]), "web true 2\n");
    write(&env.path("list.tmpl"), "{{ range . }}{{ shellSanitize .Identifier }}{{ end }}");
    let from_file = env.ok(&["sync", "list", "--template-file", "list.tmpl"]);
    assert_eq!(from_file, format!("'{identifier}'"), "a file's template gets no newline");

    // Human list.
    let list = env.ok(&["sync", "list", "--long"]);
    for expected in [
        "Name: web",
        &format!("Identifier: {identifier}"),
        "env: dev",
        "team: <empty>",
        "Synchronization mode: two-way-safe",
        "Watch mode: no-watch",
        "Connected: Yes",
        "2 files (19 B)",
        "Status: Watching for changes",
    ] {
        assert!(list.contains(expected), "{expected:?} in\n{list}");
    }

    // Pause: nothing syncs, a flush is refused with a reason.
    env.ok(&["sync", "pause", &identifier]);
    write(&env.path("alpha/while-paused"), "x");
    env.fails(&["sync", "flush", "web"], "paused");
    assert!(!env.path("beta/while-paused").exists());
    assert_eq!(session(&env.sessions(), "web")["paused"], true);
    assert!(env.ok(&["sync", "list"]).contains("Status: [Paused]"));

    // Resume (by label selector) and flush: it syncs.
    env.ok(&["sync", "resume", "--label-selector", "env in (dev,prod),team"]);
    env.ok(&["sync", "flush", "--all"]);
    assert_eq!(fs::read_to_string(env.path("beta/while-paused")).expect("synced"), "x");

    // Conflicting edits show up with both sides' changes.
    write(&env.path("alpha/README"), "alpha edit\n");
    write(&env.path("beta/README"), "beta edit, longer\n");
    env.ok(&["sync", "flush", "web"]);
    let web = session(&env.sessions(), "web").clone();
    let conflicts = web["conflicts"].as_array().expect("conflicts");
    assert_eq!(conflicts.len(), 1, "{web}");
    assert_eq!(conflicts[0]["root"], "README");
    assert_eq!(conflicts[0]["alphaChanges"][0]["path"], "README");
    assert_eq!(conflicts[0]["alphaChanges"][0]["new"]["kind"], "file");
    assert_eq!(conflicts[0]["betaChanges"][0]["old"]["kind"], "file");
    let list = env.ok(&["sync", "list"]);
    assert!(list.contains("Conflicts: 1") && list.contains("(alpha) README (File ("), "{list}");
    assert_eq!(fs::read_to_string(env.path("beta/README")).expect("kept"), "beta edit, longer\n");

    // Resolve by hand; reset forgets the ancestor and the next cycle agrees again.
    write(&env.path("beta/README"), "alpha edit\n");
    env.ok(&["sync", "reset", "web"]);
    env.ok(&["sync", "flush", "web"]);
    let web = session(&env.sessions(), "web").clone();
    assert_eq!(web["conflicts"], Value::Array(Vec::new()), "{web}");
    assert_eq!(read_tree(&env.path("beta")), read_tree(&env.path("alpha")));

    // History: the audit trail of all of the above, oldest first.
    let history = env.ok(&["sync", "history", "web"]);
    let kinds = [
        "created",
        "scan-completed",
        "staged",
        "transition-applied",
        "ancestor-updated",
        "paused",
        "resumed",
        "flush-requested",
        "conflicts-recorded",
        "reset",
        "checkpoint",
    ];
    for kind in kinds {
        assert!(history.contains(kind), "{kind} in\n{history}");
    }
    assert!(history.contains("+ while-paused (<non-existent> -> File ("), "{history}");
    let records: Vec<Value> =
        serde_json::from_str(&env.ok(&["sync", "history", "web", "--json"])).expect("json");
    assert_eq!(records[0]["kind"], "created");
    assert_eq!(records[0]["labels"]["env"], "dev");
    let positions: Vec<usize> = ["paused", "resumed", "reset"]
        .iter()
        .map(|kind| records.iter().position(|r| r["kind"] == *kind).expect(kind))
        .collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "{positions:?}");
    let limited: Vec<Value> =
        serde_json::from_str(&env.ok(&["sync", "history", "web", "--json", "--limit", "3"]))
            .expect("json");
    assert_eq!(limited.len(), 3);
    assert_eq!(limited[2], records[records.len() - 1]);
    let future: Vec<Value> = serde_json::from_str(&env.ok(&[
        "sync",
        "history",
        "web",
        "--json",
        "--since",
        "2999-01-01T00:00:00Z",
    ]))
    .expect("json");
    assert!(future.is_empty());

    // Terminate: gone from the list, files untouched, history still readable.
    env.ok(&["sync", "terminate", "web"]);
    assert!(env.sessions().is_empty());
    assert!(env.ok(&["sync", "list"]).contains("No synchronization sessions found"));
    assert_eq!(read_tree(&env.path("beta")), read_tree(&env.path("alpha")));
    assert!(env.ok(&["sync", "history", &identifier]).contains("terminated"));
    env.fails(&["sync", "flush", "web"], "specification \"web\" did not match any sessions");
}

#[test]
fn sessions_survive_a_daemon_restart_with_their_configuration() {
    let env = DaemonEnv::new();
    write(&env.path("alpha/a"), "a");
    env.ok(&[
        "sync",
        "create",
        "alpha",
        "beta",
        "-n",
        "keep",
        "-l",
        "k=v",
        "--mode",
        "one-way-replica",
        "-i",
        "*.log",
    ]);
    env.ok(&["sync", "create", "alpha", "other", "-n", "idle", "--paused"]);
    env.ok(&["sync", "flush", "keep"]);
    env.ok(&["daemon", "stop"]);
    assert!(!env.data().join("daemon/daemon.sock").exists());
    write(&env.path("alpha/b"), "b");
    write(&env.path("alpha/skip.log"), "ignored");
    // The next command starts the daemon again, which replays both sessions.
    let before = env.ok(&["daemon", "start"]);
    assert!(before.contains("Started"), "{before}");
    env.ok(&["sync", "flush", "keep"]);
    let sessions = env.sessions();
    let keep = session(&sessions, "keep");
    assert_eq!(keep["mode"], "one-way-replica");
    assert_eq!(keep["labels"]["k"], "v");
    assert_eq!(keep["ignore"]["paths"][0], "*.log");
    assert_eq!(session(&sessions, "idle")["paused"], true);
    assert_eq!(fs::read_to_string(env.path("beta/b")).expect("synced after restart"), "b");
    assert!(!env.path("beta/skip.log").exists());
    assert!(!env.path("other").exists(), "a paused session stays paused across restarts");
    // Creation order is kept.
    assert_eq!(sessions[0]["name"], "keep");
}

#[test]
fn bad_input_gets_clear_errors() {
    let env = DaemonEnv::new();
    env.ok(&["sync", "create", "alpha", "beta", "--name", "web", "--paused"]);
    // A symbolic-link root is refused at create, not at the first scan.
    fs::create_dir_all(env.path("real")).expect("real");
    std::os::unix::fs::symlink(env.path("real"), env.path("linked")).expect("symlink");
    let cases: &[(&[&str], &str)] = &[
        (&["sync", "create", "linked", "beta2"], "linked is a symbolic link"),
        (
            &["sync", "create", "alpha", "host:/srv"],
            "unable to connect to beta: unable to connect to host: ssh: Could not resolve",
        ),
        (&["sync", "create", "alpha", "alpha/inner"], "overlap"),
        (&["sync", "create", "alpha", "beta", "--name", "2fast"], "invalid session name \"2fast\""),
        (&["sync", "create", "alpha", "beta", "--name", "a_b"], "invalid session name \"a_b\""),
        (&["sync", "create", "alpha", "beta", "-l", "bad_=x"], "invalid label \"bad_=x\""),
        (
            &["sync", "create", "alpha", "beta", "--watch-mode", "sometimes"],
            "unknown watch mode \"sometimes\"",
        ),
        (
            &["sync", "create", "alpha", "beta", "--watch-polling-interval", "0"],
            "at least 1 second",
        ),
        (&["sync", "pause", "nope"], "specification \"nope\" did not match any sessions"),
        (&["sync", "pause", "web", "--all"], "use only one of"),
        (&["sync", "pause"], "no sessions selected"),
        (
            &["sync", "pause", "--label-selector", "env in (a"],
            "invalid label selector \"env in (a\"",
        ),
        (
            &["sync", "pause", "--label-selector", "env=prod"],
            "label selector \"env=prod\" did not match any sessions",
        ),
        (&["sync", "list", "--template", "{{ range . }"], "invalid template"),
        (&["sync", "list", "--template", "{{ .Name }}"], "the template failed"),
        (&["sync", "list", "--template-file", "absent.tmpl"], "unable to read the template file"),
        (&["sync", "history", "nope"], "did not match any sessions"),
        (
            &["sync", "history", "web", "--since", "yesterday-ish"],
            "invalid --since \"yesterday-ish\"",
        ),
        (&["sync", "flush", "web"], "paused"),
    ];
    for (args, message) in cases {
        env.fails(args, message);
    }
    assert!(!env.path("beta").exists(), "a failed command created beta");
    assert_eq!(env.sessions().len(), 1, "a failed create left a session behind");
    env.ok(&["daemon", "stop"]);

    // With autostart disabled and no daemon, commands say how to start it.
    let run =
        env.command(&["sync", "list"]).env("MUTAGEN_DISABLE_AUTOSTART", "1").output().expect("run");
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(1));
    assert!(
        stderr.contains("unable to reach the daemon") && stderr.contains("mutagen daemon start"),
        "{stderr}"
    );
    env.fails(&["daemon", "status"], "the daemon is not running");
}

#[test]
fn one_daemon_per_user_and_only_the_owner_reaches_it() {
    let env = DaemonEnv::new();
    let started = env.ok(&["daemon", "start"]);
    assert!(started.contains("Started Mutagen daemon (pid"), "{started}");
    assert!(env.ok(&["daemon", "start"]).contains("already running"));
    assert!(env.ok(&["daemon", "status"]).contains("Daemon running: pid"));
    // The daemon runs with its allocator told to give freed memory back at once and to leave
    // huge pages alone (it executes itself again to set that), under the pid its lock file
    // names.
    let pid = env.pid().expect("pid");
    let environment = fs::read(format!("/proc/{pid}/environ")).expect("environ");
    for setting in [&b"MIMALLOC_PURGE_DELAY=0"[..], b"MIMALLOC_ALLOW_THP=0"] {
        assert!(
            environment.split(|byte| *byte == 0).any(|variable| variable == setting),
            "the daemon runs without {}",
            String::from_utf8_lossy(setting)
        );
    }

    // A second daemon in the foreground refuses to start and leaves the first one working.
    env.fails(&["daemon", "run"], "another daemon (pid");
    assert!(env.ok(&["daemon", "status"]).contains("Daemon running"));

    // The directories are 0700 and the socket 0600.
    let mode =
        |path: &std::path::Path| fs::metadata(path).expect("metadata").permissions().mode() & 0o777;
    assert_eq!(mode(&env.data()), 0o700);
    assert_eq!(mode(&env.data().join("daemon")), 0o700);
    assert_eq!(mode(&env.data().join("daemon/daemon.sock")), 0o600);

    // Another user cannot connect (when the test can become one: root with setpriv).
    let is_root = rustix::process::geteuid().is_root();
    let setpriv = std::path::Path::new("/usr/bin/setpriv").exists();
    if is_root && setpriv {
        let socket = env.data().join("daemon/daemon.sock");
        let output = std::process::Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
            .arg(env!("CARGO_BIN_EXE_mutagen"))
            .args(["daemon", "status"])
            .env("MUTAGEN_DATA_DIRECTORY", env.data())
            .output()
            .expect("setpriv");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{stderr}");
        assert!(
            stderr.contains("Permission denied") || stderr.contains("permission denied"),
            "{stderr}"
        );
        assert!(socket.exists());
    } else {
        eprintln!("skipped the other-user connection check (needs root and setpriv)");
    }
    let stopped = env.ok(&["daemon", "stop"]);
    assert!(stopped.contains("Stopped"), "{stopped}");
    assert!(env.ok(&["daemon", "stop"]).contains("not running"));
}

#[test]
fn a_corrupt_journal_stops_the_daemon_with_an_error_naming_the_session() {
    let env = DaemonEnv::new();
    let created = env.ok(&["sync", "create", "alpha", "beta", "--paused"]);
    let identifier = created.trim().strip_prefix("Created session ").expect("id").to_owned();
    env.ok(&["daemon", "stop"]);
    {
        let db = sled::open(env.data().join("journal")).expect("raw sled");
        let tree = db.open_tree(format!("session/{identifier}")).expect("tree");
        // Record 0 (key `c` + its number), replaced by garbage with a garbage chain hash.
        let mut key = vec![b'c'];
        key.extend(0u64.to_be_bytes());
        let mut value = vec![0u8; 32];
        value.extend([1u8, 0xff, 0xff, 0xff]);
        tree.insert(key, value).expect("garble");
        // A key the journal never writes is reported too, not skipped.
        tree.insert(b"r-stray", b"x".to_vec()).expect("stray");
        db.flush().expect("flush");
    }
    let run = env.run(&["daemon", "run"]);
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains(&identifier), "{}", run.stderr);
    assert!(
        run.stderr.contains(&env.data().join("journal").display().to_string()),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("record 0: it does not match its chain hash"), "{}", run.stderr);
    assert!(run.stderr.contains("mutagen daemon recover"), "{}", run.stderr);
    // Autostart reports the same cause.
    let run = env.run(&["sync", "list"]);
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains("does not match its chain hash"), "{}", run.stderr);
}

#[test]
fn the_daemon_log_is_bounded_by_rotation() {
    let mut env = DaemonEnv::new();
    env.env.push(("MUTAGEN_LOG_LIMIT".into(), "1024".into()));
    // Each creation logs a line of about 110 bytes: 25 of them fill the limit twice over.
    for _ in 0..25 {
        env.ok(&["sync", "create", "alpha", "beta", "--paused", "--name", "logged"]);
    }
    let log = env.data().join("daemon/daemon.log");
    let previous = env.data().join("daemon/daemon.log.1");
    let size = |path: &Path| fs::metadata(path).map(|m| m.len()).unwrap_or_default();
    assert!(previous.exists(), "no rotation happened ({} bytes)", size(&log));
    // A line that would cross the limit starts the next generation instead.
    assert!(size(&log) <= 1024, "{} bytes", size(&log));
    assert!(size(&previous) <= 1024, "{} bytes", size(&previous));
    assert!(!env.data().join("daemon/daemon.log.2").exists());
    env.ok(&["sync", "list"]);
    let run = env.run(&["daemon", "stop"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let mut bad = DaemonEnv::new();
    bad.env.push(("MUTAGEN_LOG_LIMIT".into(), "ten".into()));
    let run = bad.run(&["daemon", "run"]);
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains("invalid MUTAGEN_LOG_LIMIT \"ten\""), "{}", run.stderr);
}

#[test]
fn an_allowed_root_emptying_propagates_and_is_journaled_while_the_default_halts() {
    let env = DaemonEnv::new();
    for side in ["alpha", "other"] {
        write(&env.path(&format!("{side}/a.o")), "a");
        write(&env.path(&format!("{side}/objects/b.o")), "b");
    }
    env.ok(&["sync", "create", "alpha", "beta", "--name", "build", "--allow-root-emptying"]);
    env.ok(&["sync", "create", "other", "other-beta", "--name", "safe"]);
    env.ok(&["sync", "flush", "--all"]);
    let long = env.ok(&["sync", "list", "--long", "build"]);
    assert!(long.contains("Allowed (not halting): root emptying"), "{long}");
    for side in ["alpha", "other"] {
        fs::remove_file(env.path(&format!("{side}/a.o"))).expect("rm");
        fs::remove_dir_all(env.path(&format!("{side}/objects"))).expect("rm");
    }
    env.ok(&["sync", "flush", "build"]);
    assert!(read_tree(&env.path("beta")).is_empty(), "the emptying did not propagate");
    let history = env.ok(&["sync", "history", "build"]);
    assert!(history.contains("halt-allowed") && history.contains("root was emptied"), "{history}");
    // The session without the allowance halts and keeps beta's files.
    let run = env.run(&["sync", "flush", "safe"]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(env.path("other-beta/objects/b.o").exists());
    let sessions = env.sessions();
    assert_eq!(session(&sessions, "safe")["status"], "halted-on-root-emptied");
    assert_eq!(session(&sessions, "build")["allowRootEmptying"], true);
    assert_eq!(session(&sessions, "safe")["allowRootEmptying"], false);
}

#[test]
fn every_stage_mode_synchronizes_and_leaves_no_staging_behind() {
    let env = DaemonEnv::new();
    for (index, mode) in ["auto", "mutagen", "neighboring", "internal"].into_iter().enumerate() {
        let (alpha, beta, name) = (format!("a{index}"), format!("b{index}"), format!("s{index}"));
        write(&env.path(&format!("{alpha}/big.bin")), mutagen_tests::pseudo_random(1 << 20, 3));
        write(&env.path(&format!("{alpha}/d/small")), "small");
        env.ok(&["sync", "create", &alpha, &beta, "--name", &name, "--stage-mode", mode]);
        env.ok(&["sync", "flush", &name]);
        // Both ways: beta's edits are staged on alpha.
        write(&env.path(&format!("{beta}/d/back")), "from beta");
        env.ok(&["sync", "flush", &name]);
        assert_eq!(read_tree(&env.path(&alpha)), read_tree(&env.path(&beta)), "{mode}");
        let long = env.ok(&["sync", "list", "--long", &name]);
        assert!(long.contains(&format!("Stage mode: {mode}")), "{long}");
    }
    // No staging directory is left, inside a root or next to one.
    for entry in fs::read_dir(env.dir.path()).expect("dir").flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        assert!(!name.starts_with(".mutagen-temporary"), "left next to the roots: {name}");
    }
    for index in 0..4 {
        for side in ["a", "b"] {
            let root = env.path(&format!("{side}{index}"));
            let hidden = fs::read_dir(&root)
                .expect("root")
                .flatten()
                .any(|entry| entry.file_name().to_string_lossy().starts_with(".mutagen"));
            assert!(!hidden, "staging left inside {}", root.display());
        }
    }
    let run = env.run(&["sync", "create", "a0", "elsewhere", "--stage-mode", "sideways"]);
    assert!(
        run.code == 1 && run.stderr.contains("unknown stage mode \"sideways\""),
        "{}",
        run.stderr
    );
}

/// Creates a no-watch session over alpha and beta with `files` on alpha, synchronized.
fn session_with(env: &DaemonEnv, name: &str, mode: &str, files: &[(&str, &str)]) {
    for (path, content) in files {
        write(&env.path(&format!("{name}-alpha/{path}")), content);
    }
    let (alpha, beta) = (format!("{name}-alpha"), format!("{name}-beta"));
    let args = [
        "sync",
        "create",
        &alpha,
        &beta,
        "--name",
        name,
        "--mode",
        mode,
        "--watch-mode",
        "no-watch",
    ];
    env.ok(&args);
    env.ok(&["sync", "flush", name]);
}

#[test]
fn conflicts_are_resolved_from_the_command_line_without_overwriting_later_edits() {
    let env = DaemonEnv::new();
    let read = |path: &str| fs::read_to_string(env.path(path)).ok();
    // file/file, two-way-safe: beta wins at one path, alpha keeps the other until --all.
    session_with(&env, "ff", "two-way-safe", &[("a.txt", "base"), ("b.txt", "base")]);
    for (path, side) in
        [("a.txt", "alpha"), ("a.txt", "beta"), ("b.txt", "alpha"), ("b.txt", "beta")]
    {
        write(&env.path(&format!("ff-{side}/{path}")), format!("{side}'s {path}"));
    }
    env.ok(&["sync", "flush", "ff"]);
    assert_eq!(env.conflicts("ff"), ["a.txt", "b.txt"]);
    let run = env.run(&["sync", "resolve", "ff", "nowhere.txt", "--beta-wins"]);
    assert!(
        run.code == 1 && run.stderr.contains("no conflict at \"nowhere.txt\""),
        "{}",
        run.stderr
    );
    env.ok(&["sync", "resolve", "ff", "./a.txt", "--beta-wins"]);
    assert_eq!(read("ff-alpha/a.txt").as_deref(), Some("beta's a.txt"));
    assert_eq!(read("ff-beta/a.txt").as_deref(), Some("beta's a.txt"));
    assert_eq!(env.conflicts("ff"), ["b.txt"], "the other conflict stays");
    // The loser edits again before the resolution takes effect: its edit is not overwritten.
    env.ok(&["sync", "pause", "ff"]);
    env.ok(&["sync", "resolve", "ff", "--all", "--alpha-wins"]);
    write(&env.path("ff-beta/b.txt"), "beta's later edit");
    env.ok(&["sync", "resume", "ff"]);
    env.ok(&["sync", "flush", "ff"]);
    assert_eq!(read("ff-beta/b.txt").as_deref(), Some("beta's later edit"));
    assert_eq!(env.conflicts("ff"), ["b.txt"], "the conflict came back");
    env.ok(&["sync", "resolve", "ff", "--all", "--alpha-wins"]);
    assert_eq!(read("ff-beta/b.txt").as_deref(), Some("alpha's b.txt"));
    assert!(env.conflicts("ff").is_empty());
    let history = env.ok(&["sync", "history", "ff"]);
    assert!(
        history.contains("conflict-resolved") && history.contains("beta wins at a.txt"),
        "{history}"
    );
    assert!(history.contains("alpha wins at b.txt"), "{history}");

    // file/directory, two-way-resolved would settle it alone: two-way-safe, alpha wins.
    session_with(&env, "fd", "two-way-safe", &[("x", "file")]);
    fs::remove_file(env.path("fd-alpha/x")).expect("rm");
    write(&env.path("fd-alpha/x/inner"), "now a directory");
    write(&env.path("fd-beta/x"), "beta's edit");
    env.ok(&["sync", "flush", "fd"]);
    assert_eq!(env.conflicts("fd"), ["x"]);
    env.ok(&["sync", "resolve", "fd", "x", "--alpha-wins"]);
    assert_eq!(read("fd-beta/x/inner").as_deref(), Some("now a directory"));

    // deletion/modification in one-way-safe: alpha wins; beta cannot.
    session_with(&env, "dm", "one-way-safe", &[("d/f", "base"), ("keep", "k")]);
    write(&env.path("dm-alpha/d/f"), "alpha's edit");
    write(&env.path("dm-beta/d/f"), "beta's edit");
    env.ok(&["sync", "flush", "dm"]);
    assert_eq!(env.conflicts("dm"), ["d/f"]);
    let run = env.run(&["sync", "resolve", "dm", "--all", "--beta-wins"]);
    assert!(run.code == 1 && run.stderr.contains("only --alpha-wins"), "{}", run.stderr);
    env.ok(&["sync", "resolve", "dm", "--all", "--alpha-wins"]);
    assert_eq!(read("dm-beta/d/f").as_deref(), Some("alpha's edit"));

    // A deletion against a modification is not a conflict: the modification wins by
    // itself (nothing is lost), so there is nothing to resolve.
    session_with(&env, "del", "two-way-safe", &[("gone/f", "base"), ("keep", "k")]);
    fs::remove_dir_all(env.path("del-alpha/gone")).expect("rm");
    write(&env.path("del-beta/gone/f"), "beta's edit");
    env.ok(&["sync", "flush", "del"]);
    assert!(env.conflicts("del").is_empty());
    assert_eq!(read("del-alpha/gone/f").as_deref(), Some("beta's edit"));
    let run = env.run(&["sync", "resolve", "del", "--all", "--alpha-wins"]);
    assert!(run.code == 1 && run.stderr.contains("no conflicts"), "{}", run.stderr);
}

#[test]
fn history_by_path_says_who_deleted_a_file() {
    let env = DaemonEnv::new();
    session_with(&env, "hp", "two-way-safe", &[("notes/todo.txt", "buy milk"), ("c.txt", "base")]);
    // Beta deletes the note; the deletion reaches alpha.
    fs::remove_file(env.path("hp-beta/notes/todo.txt")).expect("rm");
    write(&env.path("hp-alpha/unrelated"), "x");
    env.ok(&["sync", "flush", "hp"]);
    assert!(!env.path("hp-alpha/notes/todo.txt").exists());
    // A conflict at c.txt, then resolved by hand.
    write(&env.path("hp-alpha/c.txt"), "alpha's");
    write(&env.path("hp-beta/c.txt"), "beta's");
    env.ok(&["sync", "flush", "hp"]);
    env.ok(&["sync", "resolve", "hp", "c.txt", "--beta-wins"]);

    let history = env.ok(&["sync", "history", "hp", "--path", "notes/todo.txt"]);
    let lines: Vec<&str> = history.lines().collect();
    assert!(lines[0].starts_with("History of notes/todo.txt in sync_"), "{history}");
    assert!(lines[1].ends_with("<root>: session created"), "{history}");
    // The first cycle created beta's root, holding it; then beta's deletion crossed.
    assert!(
        lines[2].contains("beta: + <root> (<non-existent> -> Directory): propagated from alpha"),
        "{history}"
    );
    assert!(
        lines[3].contains("alpha: - notes/todo.txt (File (")
            && lines[3].ends_with("-> <non-existent>): propagated from beta"),
        "{history}"
    );
    assert_eq!(lines.len(), 4, "nothing about other paths: {history}");
    assert!(!history.contains("unrelated") && !history.contains("c.txt"));
    // A directory takes in what is below it.
    let directory = env.ok(&["sync", "history", "hp", "--path", "notes/"]);
    assert!(directory.contains("- notes/todo.txt"), "{directory}");

    let conflict = env.ok(&["sync", "history", "hp", "--path", "c.txt"]);
    for needle in [
        "alpha: ~ c.txt (File (",
        "conflict at c.txt (left as it is)",
        "c.txt: conflict resolved by hand: beta wins",
        "alpha: ~ c.txt",
    ] {
        assert!(conflict.contains(needle), "{needle:?} missing from\n{conflict}");
    }
    let last = conflict.lines().last().expect("a line");
    assert!(
        last.contains("alpha: ~ c.txt") && last.ends_with("propagated from beta"),
        "{conflict}"
    );

    let json: Vec<Value> = serde_json::from_str(&env.ok(&[
        "sync",
        "history",
        "hp",
        "--path",
        "notes/todo.txt",
        "--json",
    ]))
    .expect("json");
    let deletion = json.last().expect("the deletion");
    assert_eq!(deletion["side"], "alpha");
    assert_eq!(deletion["kind"], "transition-applied");
    assert_eq!(deletion["old"]["kind"], "file");
    assert_eq!(deletion["new"], Value::Null);
    assert_eq!(deletion["why"], "propagated from beta");

    for bad in ["../x", "/etc/passwd", "a//b"] {
        env.fails(&["sync", "history", "hp", "--path", bad], "invalid --path");
    }
}

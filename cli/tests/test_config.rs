//! Configuration files through the binary: ~/.mutagen.yml, -c files, flags and per-endpoint
//! settings, merged and frozen into the session; bad files refused by name.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use crate::daemon_env::{DaemonEnv, write};

fn session<'a>(sessions: &'a [serde_json::Value], name: &str) -> &'a serde_json::Value {
    sessions.iter().find(|s| s["name"] == name).expect("the session")
}

#[test]
fn files_and_flags_merge_into_the_session_and_stay_frozen() {
    let env = DaemonEnv::new();
    write(
        &env.path("home/.mutagen.yml"),
        "sync:\n  defaults:\n    mode: one-way-replica\n    ignore:\n      paths: ['*.tmp']\n    \
         watch:\n      mode: no-watch\n",
    );
    write(
        &env.path("extra.yml"),
        "sync:\n  defaults:\n    ignore:\n      paths: [build/]\n    configurationBeta:\n      \
         watch:\n        mode: force-poll\n        pollingInterval: 3\n      stageMode: neighboring\n",
    );
    for file in ["keep.txt", "x.tmp", "y.log", "build/out"] {
        write(&env.path(&format!("alpha/{file}")), file);
    }
    env.ok(&[
        "sync",
        "create",
        "alpha",
        "beta",
        "--name",
        "merged",
        "-c",
        "extra.yml",
        "--ignore",
        "*.log",
        "--mode",
        "two-way-safe",
        "--watch-mode-alpha",
        "force-poll",
    ]);
    fs::create_dir(env.path("alpha2")).expect("alpha2");
    env.ok(&["sync", "create", "alpha2", "beta2", "--name", "plain", "--no-global-configuration"]);

    let sessions = env.sessions();
    let merged = session(&sessions, "merged");
    assert_eq!(merged["mode"], "two-way-safe", "the flag wins over the global file");
    assert_eq!(merged["ignore"]["paths"], serde_json::json!(["*.tmp", "build/", "*.log"]));
    assert_eq!(merged["watch"]["mode"], "no-watch", "the session's, from the global file");
    assert_eq!(merged["alpha"]["watch"]["mode"], "force-poll", "--watch-mode-alpha");
    assert_eq!(merged["beta"]["watch"]["mode"], "force-poll", "configurationBeta");
    assert_eq!(merged["beta"]["watch"]["pollingInterval"], 3);
    assert_eq!(merged["alpha"]["watch"]["pollingInterval"], 10);
    assert_eq!(merged["beta"]["stageMode"], "neighboring");
    assert_eq!(merged["alpha"]["stageMode"], "auto");
    let plain = session(&sessions, "plain");
    assert_eq!(plain["mode"], "two-way-safe");
    assert_eq!(plain["ignore"]["paths"], serde_json::json!([]));
    assert_eq!(plain["alpha"]["watch"]["mode"], "portable");

    // The ignores act: only keep.txt crosses.
    env.ok(&["sync", "flush", "merged"]);
    assert!(env.path("beta/keep.txt").exists());
    for ignored in ["x.tmp", "y.log", "build"] {
        assert!(!env.path(&format!("beta/{ignored}")).exists(), "{ignored} was ignored");
    }

    let long = env.ok(&["sync", "list", "--long", "merged"]);
    for line in [
        "\tIgnores:\n\t\t*.tmp\n\t\tbuild/\n\t\t*.log\n",
        "Alpha:\n\tURL: ",
        "\tConfiguration:\n\t\tWatch mode: force-poll\n\t\tWatch polling interval: 10 seconds\n\t\tStage mode: auto\n",
        "\tConfiguration:\n\t\tWatch mode: force-poll\n\t\tWatch polling interval: 3 seconds\n\t\tStage mode: neighboring\n",
    ] {
        assert!(long.contains(line), "{line:?} missing from\n{long}");
    }

    // Frozen at creation: a later edit of the file changes no session, even after a restart.
    write(&env.path("home/.mutagen.yml"), "sync:\n  defaults:\n    mode: one-way-safe\n");
    env.ok(&["daemon", "stop"]);
    let merged = env.sessions().into_iter().find(|s| s["name"] == "merged").expect("merged");
    assert_eq!(merged["mode"], "two-way-safe");
    assert_eq!(merged["beta"]["watch"]["pollingInterval"], 3);
}

#[test]
fn a_no_watch_endpoint_waits_for_a_flush_while_the_other_watches() {
    let env = DaemonEnv::new();
    write(&env.path("alpha/a"), "a");
    env.ok(&["sync", "create", "alpha", "beta", "--name", "s", "--watch-mode-alpha", "no-watch"]);
    env.ok(&["sync", "flush", "s"]);
    // Beta watches: its change crosses by itself.
    write(&env.path("beta/from-beta"), "b");
    env.until("beta's change crossing", Duration::from_secs(30), || {
        env.path("alpha/from-beta").exists()
    });
    // Alpha does not watch: its change waits for a flush (or a cycle beta starts; the flush
    // lets the cycles that beta's change started end first).
    env.ok(&["sync", "flush", "s"]);
    write(&env.path("alpha/from-alpha"), "a");
    std::thread::sleep(Duration::from_secs(2));
    assert!(!env.path("beta/from-alpha").exists(), "a no-watch endpoint's change crossed");
    env.ok(&["sync", "flush", "s"]);
    assert!(env.path("beta/from-alpha").exists());
}

#[test]
fn bad_configuration_is_refused_naming_the_file_and_the_key() {
    let env = DaemonEnv::new();
    let global = env.path("home/.mutagen.yml");
    write(&global, "sync:\n  defaults:\n    watch:\n      mode: sometimes\n");
    let run = env.run(&["sync", "create", "alpha", "beta"]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    for needle in
        [global.to_str().expect("utf-8"), "sync.defaults.watch.mode", "sometimes", "line 4"]
    {
        assert!(run.stderr.contains(needle), "{needle:?} missing from {}", run.stderr);
    }
    // The global file can be skipped.
    write(&env.path("bad.yml"), "sync:\n  defaults:\n    modes: one-way-safe\n");
    env.fails(
        &["sync", "create", "alpha", "beta", "--no-global-configuration", "-c", "bad.yml"],
        "bad.yml: sync.defaults: unknown field `modes`",
    );
    env.fails(
        &["sync", "create", "alpha", "beta", "--no-global-configuration", "-c", "absent.yml"],
        "unable to read the configuration file absent.yml",
    );
    env.fails(
        &["forward", "create", "tcp:127.0.0.1:0", "tcp:127.0.0.1:1", "-c", "bad.yml"],
        "invalid configuration file",
    );
    write(&env.path("bad.yml"), "sync:\n  defaults:\n    alpha: /somewhere\n");
    env.fails(
        &["sync", "create", "alpha", "beta", "--no-global-configuration", "-c", "bad.yml"],
        "sync.defaults.alpha: only a project file can name endpoints",
    );
    // Nothing was created by any of these.
    fs::remove_file(&global).expect("remove");
    assert!(env.sessions().is_empty());
}

#[test]
fn forward_defaults_apply_to_unix_listeners() {
    let env = DaemonEnv::new();
    write(
        &env.path("home/.mutagen.yml"),
        "forward:\n  defaults:\n    socket:\n      permissionMode: 0640\n",
    );
    let socket = env.path("listen.sock");
    let source = format!("unix:{}", socket.display());
    env.ok(&["forward", "create", "--name", "f", &source, "tcp:127.0.0.1:9"]);
    let mode = fs::metadata(&socket).expect("the socket").permissions().mode() & 0o777;
    assert_eq!(mode, 0o640);
    // A flag wins over the file.
    let other = env.path("other.sock");
    let source = format!("unix:{}", other.display());
    env.ok(&["forward", "create", &source, "tcp:127.0.0.1:9", "--socket-permission-mode", "0604"]);
    assert_eq!(fs::metadata(&other).expect("socket").permissions().mode() & 0o777, 0o604);
    env.ok(&["forward", "terminate", "--all"]);
}

#[test]
fn limits_and_scan_modes_come_from_flags_and_files() {
    let env = DaemonEnv::new();
    write(
        &env.path("limits.yml"),
        "sync:\n  defaults:\n    maxStagingFileSize: 1KiB\n    maxEntryCount: 100\n    probeMode: assume\n",
    );
    write(&env.path("alpha/small"), "tiny");
    write(&env.path("alpha/big"), "x".repeat(4096));
    env.ok(&[
        "sync",
        "create",
        "alpha",
        "beta",
        "--name",
        "l",
        "-c",
        "limits.yml",
        "--scan-mode-beta",
        "full",
        "--watch-mode",
        "no-watch",
    ]);
    env.ok(&["sync", "flush", "l"]);
    assert!(env.path("beta/small").exists() && !env.path("beta/big").exists());
    let session = &env.sessions()[0];
    assert_eq!(session["maxStagingFileSize"], 1024);
    assert_eq!(session["maxEntryCount"], 100);
    assert_eq!(session["beta"]["scanMode"], "full");
    assert_eq!(session["alpha"]["scanMode"], "accelerated");
    assert_eq!(session["alpha"]["probeMode"], "assume");
    let problem = &session["beta"]["transitionProblems"][0];
    assert_eq!(problem["path"], "big");
    let error = problem["error"].as_str().expect("error");
    assert!(error.contains("more than the maximum staging file size of 1024 bytes"), "{error}");
    let long = env.ok(&["sync", "list", "--long", "l"]);
    for line in [
        "\tMaximum allowed entry count: 100\n",
        "\tMaximum staging file size: 1.0 KiB\n",
        "\t\tScan mode: full\n",
        "\t\tProbe mode: assume\n",
    ] {
        assert!(long.contains(line), "{line:?} missing from\n{long}");
    }

    env.fails(
        &["sync", "create", "alpha", "b2", "--max-staging-file-size", "5 parsecs"],
        "invalid --max-staging-file-size: invalid size \"5 parsecs\"",
    );
    env.fails(&["sync", "create", "alpha", "b2", "--scan-mode", "partial"], "partial");
    write(&env.path("bad.yml"), "sync:\n  defaults:\n    maxStagingFileSize: lots\n");
    env.fails(
        &["sync", "create", "alpha", "b2", "-c", "bad.yml"],
        "sync.defaults.maxStagingFileSize",
    );
}

#[test]
fn permissions_follow_the_defaults_and_the_mode() {
    use std::os::unix::fs::MetadataExt;
    let env = DaemonEnv::new();
    let mode = |path: &str| fs::metadata(env.path(path)).expect(path).permissions().mode() & 0o7777;
    let set_mode = |path: &str, bits: u32| {
        fs::set_permissions(env.path(path), fs::Permissions::from_mode(bits)).expect("chmod");
    };
    write(&env.path("alpha/a"), "a");
    write(&env.path("alpha/x"), "#!/bin/sh");
    write(&env.path("alpha/d/inner"), "i");
    set_mode("alpha/x", 0o755);
    env.ok(&[
        "sync",
        "create",
        "alpha",
        "beta",
        "--name",
        "portable",
        "--mode",
        "one-way-replica",
        "--default-file-mode",
        "0600",
        "--default-directory-mode",
        "0700",
        "--default-file-mode-beta",
        "0640",
        "--default-owner",
        "id:1234",
        "--default-group",
        "id:2345",
    ]);
    env.ok(&["sync", "flush", "portable"]);
    assert_eq!(mode("beta/a"), 0o640, "beta's own file mode");
    assert_eq!(mode("beta/x"), 0o750, "execute bits for the classes that can read");
    assert_eq!(mode("beta/d"), 0o700);
    assert_eq!(mode("beta/d/inner"), 0o640);
    let owner = fs::metadata(env.path("beta/d/inner")).expect("inner");
    assert_eq!((owner.uid(), owner.gid()), (1234, 2345));
    let directory = fs::metadata(env.path("beta/d")).expect("d");
    assert_eq!((directory.uid(), directory.gid()), (1234, 2345));
    let session = &env.sessions()[0];
    assert_eq!(session["permissions"]["mode"], "portable");
    assert_eq!(session["beta"]["permissions"]["defaultFileMode"], "0640");
    assert_eq!(session["alpha"]["permissions"]["defaultFileMode"], "0600");
    assert_eq!(session["beta"]["permissions"]["defaultOwner"], "id:1234");
    let long = env.ok(&["sync", "list", "--long", "portable"]);
    assert!(long.contains("\t\tFile mode: 0640\n\t\tDirectory mode: 0700\n"), "{long}");

    // Manual: executability is not synchronized, and the file mode applies as given.
    fs::create_dir(env.path("m-alpha")).expect("mkdir");
    write(&env.path("m-alpha/y"), "y");
    set_mode("m-alpha/y", 0o755);
    write(
        &env.path("manual.yml"),
        "sync:\n  defaults:\n    permissions:\n      mode: manual\n      defaultFileMode: 0751\n",
    );
    env.ok(&["sync", "create", "m-alpha", "m-beta", "--name", "manual", "-c", "manual.yml"]);
    env.ok(&["sync", "flush", "manual"]);
    assert_eq!(mode("m-beta/y"), 0o751);
    set_mode("m-alpha/y", 0o644);
    env.ok(&["sync", "flush", "manual"]);
    assert_eq!(mode("m-beta/y"), 0o751, "a mode change is not propagated in manual mode");
    let manual = env.sessions().into_iter().find(|s| s["name"] == "manual").expect("manual");
    assert_eq!(manual["permissions"]["mode"], "manual");

    for (args, message) in [
        (&["--default-file-mode", "0755"][..], "cannot hold execute bits"),
        (&["--default-file-mode", "9"], "invalid --default-file-mode \"9\""),
        (&["--default-directory-mode-beta", "01777"], "only permission bits"),
        (&["--default-owner", "sid:S-1-5-18"], "sid: names exist only on windows"),
        (&["--default-group-alpha", "no-such-group-here"], "no such group \"no-such-group-here\""),
        (&["--permissions-mode", "posix", "--default-file-mode", "0640"], "takes its bits from"),
        (&["--permissions-mode", "unix"], "unknown permissions mode \"unix\" (expected portable"),
    ] {
        let mut command = vec!["sync", "create", "alpha", "b9"];
        command.extend(args);
        env.fails(&command, message);
    }
    assert!(!env.path("b9").exists());
}

#[test]
fn posix_permissions_travel_both_ways_and_disagreements_are_conflicts() {
    let env = DaemonEnv::new();
    let mode = |path: &str| env.mode(path).expect(path);
    let set_mode = |path: &str, bits: u32| env.set_mode(path, bits);
    for (path, content) in [("shared/run", "#!/bin/sh"), ("secret", "s"), ("ro/file", "r")] {
        write(&env.path(&format!("alpha/{path}")), content);
    }
    let tree = [
        ("alpha", 0o750),
        ("alpha/shared", 0o2775),
        ("alpha/shared/run", 0o750),
        ("alpha/secret", 0o600),
        ("alpha/ro/file", 0o444),
        ("alpha/ro", 0o555),
    ];
    for (path, bits) in tree {
        set_mode(path, bits);
    }
    env.ok(&[
        "sync",
        "create",
        "alpha",
        "beta",
        "--name",
        "posix",
        "--permissions-mode",
        "posix",
        "--watch-mode",
        "no-watch",
    ]);
    env.ok(&["sync", "flush", "posix"]);
    for (path, bits) in tree {
        let twin = path.replacen("alpha", "beta", 1);
        assert_eq!(mode(&twin), bits, "{twin} has the bits of {path}");
    }
    let long = env.ok(&["sync", "list", "--long", "posix"]);
    assert!(long.contains("\tPermissions mode: posix\n"), "{long}");

    // Beta's changes come back: a file's bits, a directory's bits (setgid off).
    set_mode("beta/secret", 0o640);
    set_mode("beta/shared", 0o770);
    env.ok(&["sync", "flush", "posix"]);
    assert_eq!((mode("alpha/secret"), mode("alpha/shared")), (0o640, 0o770));
    assert!(env.conflicts("posix").is_empty());

    // Both sides change the same bits differently: conflicts, and nothing is overwritten.
    // A conflict about a directory's bits blocks nothing inside it.
    set_mode("alpha/secret", 0o604);
    set_mode("beta/secret", 0o660);
    set_mode("alpha/shared", 0o2750);
    set_mode("beta/shared", 0o700);
    write(&env.path("beta/shared/run"), "#!/bin/sh\necho beta");
    set_mode("beta/shared/run", 0o750);
    env.ok(&["sync", "flush", "posix"]);
    assert_eq!(env.conflicts("posix"), ["secret", "shared"]);
    assert_eq!((mode("alpha/secret"), mode("beta/secret")), (0o604, 0o660));
    assert_eq!((mode("alpha/shared"), mode("beta/shared")), (0o2750, 0o700));
    let run = fs::read_to_string(env.path("alpha/shared/run")).expect("run");
    assert_eq!(run, "#!/bin/sh\necho beta", "the edit inside the directory went through");
    let listed = env.ok(&["sync", "list", "posix"]);
    assert!(listed.contains("Directory (2750)") && listed.contains("Directory (0700)"), "{listed}");

    env.ok(&["sync", "resolve", "posix", "--all", "--alpha-wins"]);
    assert_eq!((mode("beta/secret"), mode("beta/shared")), (0o604, 0o2750));
    assert_eq!((mode("alpha/secret"), mode("alpha/shared")), (0o604, 0o2750));
    assert!(env.conflicts("posix").is_empty());
    let history = env.ok(&["sync", "history", "posix", "--path", "shared"]);
    assert!(history.contains("2750"), "{history}");
}

#[test]
fn a_watched_posix_session_carries_a_chmod_alone() {
    let env = DaemonEnv::new();
    write(&env.path("alpha/d/f"), "f");
    env.ok(&["sync", "create", "alpha", "beta", "--name", "w", "--permissions-mode", "posix"]);
    env.ok(&["sync", "flush", "w"]);
    // No flush: the watch sees the metadata change, as it sees an edit.
    env.set_mode("alpha/d/f", 0o600);
    env.set_mode("alpha/d", 0o2700);
    env.until("the bits reach beta", Duration::from_secs(20), || {
        env.mode("beta/d/f") == Some(0o600) && env.mode("beta/d") == Some(0o2700)
    });
}

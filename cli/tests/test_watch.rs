//! Watching, through the real binary: changes propagate without a flush in portable mode
//! (files in directories created a moment before, directories deleted and recreated),
//! force-poll finds them at its interval, and no-watch only on flush.

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use mutagen_tests::read_tree;

use crate::daemon_env::{DaemonEnv, write};

/// How long a watched change may take to show up before the test fails (generous: CI
/// machines are shared; the benchmark measures the real latency).
const PATIENCE: Duration = Duration::from_secs(20);

/// Waits until `path` holds `content` (`None`: until it is gone).
fn eventually(env: &DaemonEnv, path: &Path, content: Option<&str>) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let now = fs::read_to_string(path).ok();
        if now.as_deref() == content {
            return;
        }
        if content.is_none() && !path.exists() {
            return;
        }
        if Instant::now() > deadline {
            let list = env.run(&["sync", "list", "--long"]);
            let log = fs::read_to_string(env.data().join("daemon/daemon.log")).unwrap_or_default();
            panic!(
                "{} never became {content:?} (is {now:?})\n{}{}\ndaemon log:\n{log}",
                path.display(),
                list.stdout,
                list.stderr
            );
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn create(env: &DaemonEnv, name: &str, mode: &[&str]) {
    let mut args = vec!["sync", "create", "alpha", "beta", "--name", name];
    args.extend_from_slice(mode);
    env.ok(&args);
    env.ok(&["sync", "flush", name]);
}

#[test]
fn portable_watching_propagates_new_directories_and_recreated_ones() {
    let env = DaemonEnv::new();
    write(&env.path("alpha/kept/file"), "kept");
    create(&env, "watched", &[]);
    let long = env.ok(&["sync", "list", "--long", "watched"]);
    assert!(long.contains("Watching: native (inotify)"), "{long}");
    // Beta did not exist: the first cycle created it, which is not a watch problem.
    assert!(!long.contains("fell back"), "{long}");

    // Files created right after their directories, at several depths, in quick succession:
    // each directory is watched before its contents are read, so none is missed.
    for round in 0..20 {
        let directory = env.path(&format!("alpha/new{round}/a/b"));
        fs::create_dir_all(&directory).expect("mkdir");
        fs::write(directory.join("file"), format!("round {round}")).expect("write");
        fs::write(env.path(&format!("alpha/new{round}/top")), "top").expect("write");
    }
    for round in 0..20 {
        let beta = env.path(&format!("beta/new{round}/a/b/file"));
        eventually(&env, &beta, Some(&format!("round {round}")));
    }
    eventually(&env, &env.path("beta/new19/top"), Some("top"));

    // A watched directory deleted and recreated keeps being watched.
    fs::remove_dir_all(env.path("alpha/kept")).expect("remove");
    eventually(&env, &env.path("beta/kept"), None);
    write(&env.path("alpha/kept/again"), "one");
    eventually(&env, &env.path("beta/kept/again"), Some("one"));
    std::thread::sleep(Duration::from_millis(50));
    write(&env.path("alpha/kept/later"), "two");
    fs::write(env.path("alpha/kept/again"), "one, edited").expect("edit");
    eventually(&env, &env.path("beta/kept/later"), Some("two"));
    eventually(&env, &env.path("beta/kept/again"), Some("one, edited"));

    // A directory moved within the tree: changes inside it at its new place are seen.
    fs::rename(env.path("alpha/new0"), env.path("alpha/moved")).expect("rename");
    eventually(&env, &env.path("beta/moved/top"), Some("top"));
    std::thread::sleep(Duration::from_millis(50));
    write(&env.path("alpha/moved/a/b/after"), "after the move");
    eventually(&env, &env.path("beta/moved/a/b/after"), Some("after the move"));

    // Changes on beta flow back as well.
    write(&env.path("beta/from-beta"), "hello alpha");
    eventually(&env, &env.path("alpha/from-beta"), Some("hello alpha"));

    env.ok(&["sync", "flush", "watched"]);
    assert_eq!(read_tree(&env.path("alpha")), read_tree(&env.path("beta")));
    let session = &env.sessions()[0];
    assert!(session["conflicts"].as_array().expect("conflicts").is_empty(), "{session}");
    assert_eq!(session["alpha"]["watchProblem"], serde_json::Value::Null, "{session}");
}

#[test]
fn no_watch_sessions_synchronize_only_on_flush() {
    let env = DaemonEnv::new();
    write(&env.path("alpha/first"), "1");
    create(&env, "manual", &["--watch-mode", "no-watch"]);
    assert_eq!(fs::read_to_string(env.path("beta/first")).expect("synced"), "1");
    let long = env.ok(&["sync", "list", "--long", "manual"]);
    assert!(long.contains("Watching: no (changes are found on flush)"), "{long}");

    write(&env.path("alpha/second"), "2");
    fs::write(env.path("alpha/first"), "1, edited").expect("edit");
    std::thread::sleep(Duration::from_secs(2));
    assert!(!env.path("beta/second").exists(), "synchronized without a flush");
    assert_eq!(fs::read_to_string(env.path("beta/first")).expect("first"), "1");

    env.ok(&["sync", "flush", "manual"]);
    assert_eq!(fs::read_to_string(env.path("beta/second")).expect("second"), "2");
    assert_eq!(fs::read_to_string(env.path("beta/first")).expect("first"), "1, edited");
}

#[test]
fn force_poll_finds_changes_at_its_interval() {
    let env = DaemonEnv::new();
    create(&env, "polled", &["--watch-mode", "force-poll", "--watch-polling-interval", "1"]);
    let long = env.ok(&["sync", "list", "--long", "polled"]);
    assert!(long.contains("Watching: polling (full rescans every 1 s)"), "{long}");
    fs::create_dir_all(env.path("alpha/d/e")).expect("mkdir");
    write(&env.path("alpha/d/e/f"), "polled");
    eventually(&env, &env.path("beta/d/e/f"), Some("polled"));
}

/// How many inotify instances process `pid` has open.
fn inotify_instances(pid: i32) -> usize {
    fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("the daemon's descriptors")
        .filter_map(|entry| fs::read_link(entry.ok()?.path()).ok())
        .filter(|target| target.as_os_str() == "anon_inode:inotify")
        .count()
}

#[test]
fn two_hundred_watched_sessions_share_a_few_inotify_instances() {
    // 400 watched roots: with an instance each, the kernel's default of 128 instances per
    // user would leave most sessions polling.
    let env = DaemonEnv::new();
    const SESSIONS: usize = 200;
    for index in 0..SESSIONS {
        write(&env.path(&format!("a{index}/file")), "before");
        let (alpha, beta, name) = (format!("a{index}"), format!("b{index}"), format!("s{index}"));
        env.ok(&["sync", "create", &alpha, &beta, "--name", &name]);
    }
    env.ok(&["sync", "flush", "--all"]);
    let pid = env.pid().expect("daemon pid");
    let instances = inotify_instances(pid);
    assert!(instances <= mutagen_endpoint::watch::INSTANCES, "{instances} instances");
    let sessions = env.sessions();
    assert_eq!(sessions.len(), SESSIONS);
    for session in &sessions {
        for side in ["alpha", "beta"] {
            assert_eq!(session[side]["watchProblem"], serde_json::Value::Null, "{session}");
        }
    }
    // Edits propagate by the watch alone, both ways, in the first and the last sessions.
    for index in [0, SESSIONS / 2, SESSIONS - 1] {
        fs::write(env.path(&format!("a{index}/file")), format!("after {index}")).expect("edit");
        write(&env.path(&format!("b{index}/back")), format!("back {index}"));
    }
    for index in [0, SESSIONS / 2, SESSIONS - 1] {
        let after = format!("after {index}");
        eventually(&env, &env.path(&format!("b{index}/file")), Some(&after));
        let back = format!("back {index}");
        eventually(&env, &env.path(&format!("a{index}/back")), Some(&back));
    }
}

//! Issue 12's retry storm: a lasting per-file error (a directory the daemon cannot write into)
//! used to make the daemon cycle hundreds of times a second, journaling each cycle. Now a cycle
//! that only meets the same problems again is not journaled and is retried after a backoff
//! (1 s doubling to 60 s) or a change.
//!
//! The directory is made immutable (`chattr +i`): unlike a 0555 mode, that stops root too, and
//! the test suite runs as root.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::daemon_env::{DaemonEnv, write};

/// Clears the immutable attribute when dropped, so that the temporary directory can go.
struct Immutable(PathBuf);

impl Immutable {
    fn set(path: &Path) -> Immutable {
        let status = Command::new("chattr").arg("+i").arg(path).status().expect("chattr");
        assert!(status.success(), "chattr +i {} (needs root)", path.display());
        Immutable(path.to_owned())
    }
}

impl Drop for Immutable {
    fn drop(&mut self) {
        let _ = Command::new("chattr").arg("-i").arg(&self.0).status();
    }
}

/// The daemon's user and system CPU time.
fn cpu_time(pid: i32) -> Duration {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    let fields: Vec<&str> = stat.rsplit_once(") ").expect("stat").1.split(' ').collect();
    // utime and stime are fields 14 and 15, the 12th and 13th after the command name.
    let ticks: u64 =
        fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime");
    // USER_HZ, which /proc reports in, is 100 on every Linux architecture we run on.
    Duration::from_millis(ticks * 10)
}

#[test]
fn a_lasting_transition_problem_waits_instead_of_spinning() {
    let env = DaemonEnv::new();
    write(&env.path("alpha/ro/file"), "blocked\n");
    write(&env.path("alpha/ok.txt"), "fine\n");
    fs::create_dir_all(env.path("beta/ro")).expect("beta/ro");
    let immutable = Immutable::set(&env.path("beta/ro"));
    env.ok(&["sync", "create", "alpha", "beta", "--name", "stuck"]);
    env.until("the transition problem", Duration::from_secs(30), || {
        let sessions = env.sessions();
        sessions[0]["status"] == "waiting-for-rescan"
            && sessions[0]["beta"]["transitionProblems"].as_array().is_some_and(|p| p.len() == 1)
    });
    assert_eq!(fs::read_to_string(env.path("beta/ok.txt")).expect("the rest synced"), "fine\n");
    let listed = env.ok(&["sync", "list", "stuck"]);
    assert!(listed.contains("Waiting to retry (1 transition problem again"), "{listed}");

    // 20 s of a permanent error: under 1% of a core, and nothing journaled.
    let pid = env.pid().expect("daemon pid");
    let history = env.ok(&["sync", "history", "stuck"]).lines().count();
    let before = cpu_time(pid);
    std::thread::sleep(Duration::from_secs(20));
    let spent = cpu_time(pid) - before;
    assert!(spent < Duration::from_millis(200), "{spent:?} of CPU in 20 s");
    assert_eq!(env.ok(&["sync", "history", "stuck"]).lines().count(), history, "journaled");

    // Writable again: fixed at the next retry at the latest (the backoff is at most 60 s; the
    // mode change wakes the watcher sooner).
    drop(immutable);
    let status = Command::new("chmod").arg("0755").arg(env.path("beta/ro")).status();
    assert!(status.expect("chmod").success());
    let started = Instant::now();
    env.until("the file placed", Duration::from_secs(65), || env.path("beta/ro/file").exists());
    eprintln!("fixed {:?} after the directory became writable", started.elapsed());
    env.until("the session watching again", Duration::from_secs(10), || {
        env.sessions()[0]["status"] == "watching"
    });
}

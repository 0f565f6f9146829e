//! A daemon in an isolated data directory, driven through the real binary.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

pub struct DaemonEnv {
    pub dir: tempfile::TempDir,
    /// Extra environment for every command (and so for the daemon it starts).
    pub env: Vec<(String, String)>,
}

pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl DaemonEnv {
    pub fn new() -> DaemonEnv {
        let env = DaemonEnv { dir: tempfile::tempdir().expect("tempdir"), env: Vec::new() };
        fs::create_dir(env.path("alpha")).expect("alpha");
        env
    }

    pub fn path(&self, relative: &str) -> PathBuf {
        self.dir.path().join(relative)
    }

    pub fn data(&self) -> PathBuf {
        self.path("data")
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_mutagen"));
        command
            .args(args)
            .current_dir(self.dir.path())
            .env("MUTAGEN_DATA_DIRECTORY", self.data())
            .env("HOME", self.path("home"))
            .env_remove("MUTAGEN_DISABLE_AUTOSTART")
            .envs(self.env.iter().map(|(k, v)| (k, v)));
        command
    }

    pub fn run(&self, args: &[&str]) -> Run {
        let output: Output = self.command(args).output().expect("run mutagen");
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        Run {
            code: output.status.code().unwrap_or(-1),
            stdout: text(&output.stdout),
            stderr: text(&output.stderr),
        }
    }

    /// Runs and requires success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let run = self.run(args);
        if run.code != 0 {
            let log = fs::read_to_string(self.data().join("daemon/daemon.log")).unwrap_or_default();
            panic!("{args:?} failed: {}{}\ndaemon log:\n{log}", run.stdout, run.stderr);
        }
        run.stdout
    }

    /// Runs and requires failure with `message` on stderr.
    pub fn fails(&self, args: &[&str], message: &str) {
        let run = self.run(args);
        assert_eq!(run.code, 1, "{args:?} should fail: {}{}", run.stdout, run.stderr);
        assert!(run.stderr.contains(message), "{args:?}: expected {message:?} in {}", run.stderr);
        assert!(run.stderr.starts_with("error: "), "{}", run.stderr);
    }

    /// `sync list --json`, parsed.
    pub fn sessions(&self) -> Vec<serde_json::Value> {
        let out = self.ok(&["sync", "list", "--json"]);
        serde_json::from_str(&out).expect("json")
    }

    /// The daemon's pid from its lock file.
    pub fn pid(&self) -> Option<i32> {
        let text = fs::read_to_string(self.data().join("daemon/daemon.lock")).ok()?;
        text.trim().parse().ok()
    }

    /// Waits until `done`, for at most `patience`; then fails with the long listing and the
    /// daemon log.
    pub fn until(&self, what: &str, patience: Duration, mut done: impl FnMut() -> bool) {
        let deadline = Instant::now() + patience;
        while !done() {
            if Instant::now() > deadline {
                let list = self.run(&["sync", "list", "--long"]);
                let log =
                    fs::read_to_string(self.data().join("daemon/daemon.log")).unwrap_or_default();
                panic!("{what} did not happen\n{}{}\ndaemon log:\n{log}", list.stdout, list.stderr);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the daemon with SIGKILL and returns at once, as a crash leaves things: the next
    /// command may find the process still exiting (its lock held, its socket refusing).
    pub fn kill9(&self) {
        let pid = self.pid().expect("daemon pid");
        let status = Command::new("kill").args(["-9", &pid.to_string()]).status().expect("kill");
        assert!(status.success());
    }
}

impl Drop for DaemonEnv {
    fn drop(&mut self) {
        let stop = self.command(&["daemon", "stop"]).output();
        if stop.map(|o| !o.status.success()).unwrap_or(true)
            && let Some(pid) = self.pid()
        {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
        }
    }
}

pub fn write(path: &Path, content: impl AsRef<[u8]>) {
    fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    fs::write(path, content).expect("write");
}

//! A daemon in an isolated data directory, driven through the real binary.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// How long one command may take before the test fails.
pub const COMMAND_LIMIT: Duration = Duration::from_secs(300);

/// Reads a child's pipe to its end on a thread of its own.
fn pipe(mut stream: impl Read + Send + 'static) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = stream.read_to_end(&mut bytes);
        bytes
    })
}

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

    /// Runs a command to its end; one still running after [`COMMAND_LIMIT`] is killed and
    /// fails the test (a command that hangs is a defect, and must not hang the suite).
    pub fn run(&self, args: &[&str]) -> Run {
        let mut child = self
            .command(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run mutagen");
        let deadline = Instant::now() + COMMAND_LIMIT;
        let mut readers = [child.stdout.take().map(pipe), child.stderr.take().map(pipe)];
        while child.try_wait().expect("wait").is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{args:?} did not finish within {} s", COMMAND_LIMIT.as_secs());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let status = child.wait().expect("wait");
        let [stdout, stderr] = readers
            .each_mut()
            .map(|reader| reader.take().map(|r| r.join().expect("reader")).unwrap_or_default());
        let output = Output { status, stdout, stderr };
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

    /// The permission bits of a path under the environment, if it exists.
    pub fn mode(&self, relative: &str) -> Option<u32> {
        use std::os::unix::fs::PermissionsExt;
        fs::metadata(self.path(relative)).ok().map(|m| m.permissions().mode() & 0o7777)
    }

    /// Sets the permission bits of a path under the environment.
    pub fn set_mode(&self, relative: &str, bits: u32) {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(self.path(relative), fs::Permissions::from_mode(bits)).expect("chmod");
    }

    /// The roots of a session's conflicts, as `sync list` reports them.
    pub fn conflicts(&self, name: &str) -> Vec<String> {
        let sessions = self.sessions();
        let session = sessions.iter().find(|s| s["name"] == name).expect("the session");
        let conflicts = session["conflicts"].as_array().expect("conflicts");
        conflicts.iter().map(|c| c["root"].as_str().expect("root").to_owned()).collect()
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

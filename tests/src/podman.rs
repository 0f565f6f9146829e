//! A private Podman API service (Podman's Docker-compatible Engine API), started by the test
//! that needs it.
//!
//! `podman system service` on a socket in a temporary directory, with its own storage root and
//! run root there (the machine's containers and images are never touched), and a
//! `containers.conf` that sets no default resource limits: Podman's defaults raise `nofile`
//! and `nproc` above what this sandbox allows, and runc then refuses to start containers. The
//! busybox image is imported offline from Debian's `busybox-static`. The product reaches the
//! service with `DOCKER_HOST=unix://…`, as users of Podman do.
//!
//! Needs root and `podman` (Debian: `apt-get install podman busybox-static`); `tests/setup.sh`
//! installs them.

use std::fs;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The image the fixture imports.
pub const IMAGE: &str = "localhost/mutagen-test-busybox:latest";

/// A running private Podman service.
pub struct Podman {
    dir: tempfile::TempDir,
    child: Child,
}

impl Podman {
    /// Starts the service and imports [`IMAGE`].
    ///
    /// # Panics
    /// When not root, when Podman or busybox is missing, or when the service does not answer.
    pub fn start() -> Podman {
        assert!(crate::sshd::is_root(), "the podman test starts its own service: run as root");
        let dir = tempfile::Builder::new().prefix("mtg-pm").tempdir_in("/tmp").expect("tempdir");
        fs::write(dir.path().join("containers.conf"), "[containers]\ndefault_ulimits = []\n")
            .expect("containers.conf");
        let log = fs::File::create(dir.path().join("service.log")).expect("log");
        let socket = format!("unix://{}", dir.path().join("podman.sock").display());
        let mut command = Self::command_in(dir.path());
        command.args(["system", "service", "--time=0", &socket]);
        let child = command
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("podman not found: apt-get install -y podman");
        let podman = Podman { dir, child };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !podman.dir.path().join("podman.sock").exists() {
            assert!(Instant::now() < deadline, "the podman service did not come up");
            std::thread::sleep(Duration::from_millis(50));
        }
        podman.import_busybox();
        podman
    }

    /// `podman` with this fixture's storage and configuration.
    fn command_in(dir: &Path) -> Command {
        let mut command = Command::new("podman");
        command
            .env("CONTAINERS_CONF", dir.join("containers.conf"))
            .arg("--root")
            .arg(dir.join("storage"))
            .arg("--runroot")
            .arg(dir.join("run"));
        command
    }

    /// The service's address, for `DOCKER_HOST`.
    pub fn host(&self) -> String {
        format!("unix://{}", self.dir.path().join("podman.sock").display())
    }

    /// Runs podman and returns its standard output; panics on failure.
    pub fn ok(&self, args: &[&str]) -> String {
        let output = Self::command_in(self.dir.path())
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run podman");
        assert!(
            output.status.success(),
            "podman {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// Starts a long-running container of [`IMAGE`] named `name`, without a network.
    pub fn run(&self, name: &str) {
        self.ok(&["run", "-d", "--name", name, "--network", "none", IMAGE, "sleep", "100000"]);
    }

    fn import_busybox(&self) {
        let root = self.dir.path().join("rootfs");
        for directory in ["bin", "tmp", "etc", "root"] {
            fs::create_dir_all(root.join(directory)).expect("rootfs");
        }
        fs::copy("/bin/busybox", root.join("bin/busybox"))
            .expect("busybox not found: apt-get install -y busybox-static");
        let listed = Command::new("/bin/busybox").arg("--list").output().expect("busybox --list");
        for applet in String::from_utf8_lossy(&listed.stdout).lines() {
            if applet != "busybox" {
                let _ = std::os::unix::fs::symlink("busybox", root.join("bin").join(applet));
            }
        }
        fs::write(root.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").expect("passwd");
        let archive = self.dir.path().join("rootfs.tar");
        let status =
            Command::new("tar").arg("-C").arg(&root).arg("-cf").arg(&archive).arg(".").status();
        assert!(status.expect("tar").success(), "tar the root file system");
        let archive = archive.display().to_string();
        self.ok(&["import", "--change", "ENV PATH=/bin", &archive, IMAGE]);
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        let _ = Self::command_in(self.dir.path())
            .args(["rm", "-f", "-a", "-t", "0"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
        // Podman leaves a conmon per exec for minutes after it ended (`--exit-delay`); ours
        // name this fixture's storage on their command lines.
        let _ = Command::new("pkill")
            .arg("-9")
            .arg("-f")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

//! A private Docker engine, started by the test that needs it.
//!
//! Modelled on the workplace's verified recipe: `dockerd` with its own data root, exec root,
//! socket and PID file in a temporary directory, no bridge network and no iptables changes
//! (containers get only loopback), and a busybox image imported offline from Debian's
//! `busybox-static` (no registry is reached). The engine is stopped, and its containers
//! removed, when the fixture is dropped. Tests never touch a system dockerd: clients are
//! pointed at [`Dockerd::host`] through `DOCKER_HOST`.
//!
//! Needs root, `dockerd` and `docker` (Debian: `apt-get install docker.io busybox-static`);
//! `tests/setup.sh` installs them. A missing engine is a test failure with that hint, never a
//! silent skip.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The image the fixture imports.
pub const IMAGE: &str = "mutagen-test/busybox:latest";

/// A running private engine.
pub struct Dockerd {
    dir: tempfile::TempDir,
    child: Child,
    /// With TLS: the verified TCP address (`tcp://127.0.0.1:PORT`).
    tls_host: Option<String>,
}

fn find(program: &str) -> PathBuf {
    for directory in ["/usr/local/bin", "/usr/bin", "/usr/sbin", "/bin", "/sbin"] {
        let path = Path::new(directory).join(program);
        if path.exists() {
            return path;
        }
    }
    panic!("{program} not found: install Docker (apt-get install -y docker.io busybox-static)");
}

impl Dockerd {
    /// Starts an engine and imports [`IMAGE`].
    ///
    /// # Panics
    /// When not root, when Docker or busybox is missing, or when the engine does not come up.
    pub fn start() -> Dockerd {
        Dockerd::launch(false)
    }

    /// Starts an engine that also listens on a loopback TCP port with verified TLS (a CA, a
    /// server and a client certificate made with openssl for the occasion); see
    /// [`Dockerd::tls`].
    ///
    /// # Panics
    /// As [`Dockerd::start`], and when openssl is missing.
    pub fn start_with_tls() -> Dockerd {
        Dockerd::launch(true)
    }

    /// With TLS: the address for `DOCKER_HOST` and the directory for `DOCKER_CERT_PATH`
    /// (`ca.pem`, `cert.pem`, `key.pem`, as the docker CLI names them).
    pub fn tls(&self) -> Option<(String, PathBuf)> {
        self.tls_host.clone().map(|host| (host, self.dir.path().join("client")))
    }

    fn launch(tls: bool) -> Dockerd {
        assert!(crate::sshd::is_root(), "the docker tests start their own dockerd: run as root");
        let dir = tempfile::Builder::new().prefix("mtg-dk").tempdir_in("/tmp").expect("tempdir");
        let path = dir.path();
        let log = fs::File::create(path.join("dockerd.log")).expect("log");
        let mut command = Command::new(find("dockerd"));
        let mut tls_host = None;
        if tls {
            make_certificates(path);
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|listener| listener.local_addr())
                .expect("a free port")
                .port();
            let host = format!("tcp://127.0.0.1:{port}");
            command.args(["-H", &host, "--tlsverify"]);
            command.arg("--tlscacert").arg(path.join("client/ca.pem"));
            command.arg("--tlscert").arg(path.join("server-cert.pem"));
            command.arg("--tlskey").arg(path.join("server-key.pem"));
            tls_host = Some(host);
        }
        let child = command
            .arg("--data-root")
            .arg(path.join("data"))
            .arg("--exec-root")
            .arg(path.join("x"))
            .arg("--pidfile")
            .arg(path.join("dockerd.pid"))
            .arg("-H")
            .arg(format!("unix://{}", path.join("docker.sock").display()))
            .args(["--storage-driver", "overlay2", "--bridge", "none"])
            .args(["--iptables=false", "--ip6tables=false"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start dockerd");
        let dockerd = Dockerd { dir, child, tls_host };
        let deadline = Instant::now() + Duration::from_secs(60);
        while !dockerd.docker(&["version"]).status.success() {
            assert!(
                Instant::now() < deadline,
                "dockerd did not come up; its log:\n{}",
                fs::read_to_string(dockerd.dir.path().join("dockerd.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        dockerd.import_busybox();
        dockerd
    }

    /// The engine's address, for `DOCKER_HOST`.
    pub fn host(&self) -> String {
        format!("unix://{}", self.dir.path().join("docker.sock").display())
    }

    /// Runs the docker CLI against this engine.
    pub fn docker(&self, args: &[&str]) -> std::process::Output {
        Command::new(find("docker"))
            .env("DOCKER_HOST", self.host())
            .env("DOCKER_CONFIG", self.dir.path().join("cli"))
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run docker")
    }

    /// Runs the docker CLI and returns its standard output; panics on failure.
    pub fn ok(&self, args: &[&str]) -> String {
        let output = self.docker(args);
        assert!(
            output.status.success(),
            "docker {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// Starts a long-running container of [`IMAGE`] named `name`.
    pub fn run(&self, name: &str) {
        self.ok(&["run", "-d", "--name", name, IMAGE, "sleep", "100000"]);
    }

    /// Runs `sh -c script` in a container as `user` and returns its output.
    pub fn exec(&self, container: &str, user: &str, script: &str) -> String {
        self.ok(&["exec", "-u", user, container, "sh", "-c", script])
    }

    /// Builds a busybox root file system (root, and `user` 1000 with a home) and imports it.
    fn import_busybox(&self) {
        let busybox = ["/bin/busybox", "/usr/bin/busybox"]
            .into_iter()
            .map(Path::new)
            .find(|p| p.exists())
            .expect("busybox not found: apt-get install -y busybox-static");
        let root = self.dir.path().join("rootfs");
        for directory in ["bin", "tmp", "etc", "root", "home/user"] {
            fs::create_dir_all(root.join(directory)).expect("rootfs");
        }
        fs::copy(busybox, root.join("bin/busybox")).expect("copy busybox");
        let listed = Command::new(busybox).arg("--list").output().expect("busybox --list");
        for applet in String::from_utf8_lossy(&listed.stdout).lines() {
            if applet != "busybox" {
                let _ = std::os::unix::fs::symlink("busybox", root.join("bin").join(applet));
            }
        }
        fs::write(
            root.join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000:user:/home/user:/bin/sh\n",
        )
        .expect("passwd");
        fs::write(root.join("etc/group"), "root:x:0:\nuser:x:1000:\n").expect("group");
        let status = Command::new("chown")
            .args(["1000:1000"])
            .arg(root.join("home/user"))
            .status()
            .expect("chown");
        assert!(status.success());
        let archive = self.dir.path().join("rootfs.tar");
        let status = Command::new("tar")
            .arg("-C")
            .arg(&root)
            .arg("-cf")
            .arg(&archive)
            .arg(".")
            .status()
            .expect("tar");
        assert!(status.success(), "tar the root file system");
        let archive = archive.display().to_string();
        self.ok(&["import", "-c", "ENV PATH=/bin", "-c", "CMD [\"/bin/sh\"]", &archive, IMAGE]);
    }
}

/// A CA, a server certificate for 127.0.0.1 and a client certificate, in `dir` (the client's
/// files in `dir/client`, with the docker CLI's names).
fn make_certificates(dir: &Path) {
    let client = dir.join("client");
    fs::create_dir_all(&client).expect("client directory");
    fs::write(dir.join("server.ext"), "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n")
        .expect("server.ext");
    fs::write(dir.join("client.ext"), "extendedKeyUsage=clientAuth\n").expect("client.ext");
    let steps = [
        "req -x509 -newkey rsa:2048 -nodes -keyout ca-key.pem -out client/ca.pem -days 2 \
         -subj /CN=mutagen-test-ca",
        "req -newkey rsa:2048 -nodes -keyout server-key.pem -out server.csr -subj /CN=127.0.0.1",
        "x509 -req -in server.csr -CA client/ca.pem -CAkey ca-key.pem -CAcreateserial \
         -out server-cert.pem -days 2 -extfile server.ext",
        "req -newkey rsa:2048 -nodes -keyout client/key.pem -out client.csr \
         -subj /CN=mutagen-test-client",
        "x509 -req -in client.csr -CA client/ca.pem -CAkey ca-key.pem -CAcreateserial \
         -out client/cert.pem -days 2 -extfile client.ext",
    ];
    for step in steps {
        let output = Command::new("openssl")
            .args(step.split_whitespace())
            .current_dir(dir)
            .output()
            .expect("openssl not found: apt-get install -y openssl");
        assert!(
            output.status.success(),
            "openssl {step:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        let listed = self.docker(&["ps", "-aq"]);
        let ids: Vec<String> =
            String::from_utf8_lossy(&listed.stdout).split_whitespace().map(str::to_owned).collect();
        if !ids.is_empty() {
            let mut args = vec!["rm", "-f"];
            args.extend(ids.iter().map(String::as_str));
            let _ = self.docker(&args);
        }
        let _ = Command::new("kill").arg(self.child.id().to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

//! A private OpenSSH server on loopback, started by the test that needs it.
//!
//! Modelled on the workplace's verified recipe: its own host key, client key, known hosts,
//! configuration and log in a temporary directory; key-only logins; listening on 127.0.0.1 on
//! a free port; run in the foreground (`sshd -D`) as a child that is killed when the fixture is
//! dropped. Clients reach it through a `ssh` wrapper in [`Sshd::ssh_directory`] that adds
//! `-F` with the fixture's client configuration, which is how a user's own `~/.ssh/config`
//! would apply: the product is pointed at it with `MUTAGEN_SSH_PATH`.
//!
//! Needs `sshd`, `ssh` and `ssh-keygen` (Debian: `apt-get install openssh-server`); `.ci/run`
//! installs them. A missing server is a test failure with that hint, never a silent skip.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The extra login user the fixture creates (when running as root) for non-root tests.
pub const TEST_USER: &str = "mutagen-test";

/// A running test sshd.
pub struct Sshd {
    /// Holds the keys, configurations and log.
    pub dir: tempfile::TempDir,
    /// The port on 127.0.0.1.
    pub port: u16,
    child: Child,
}

fn run(command: &mut Command) -> bool {
    command.stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok_and(|s| s.success())
}

fn find(program: &str) -> PathBuf {
    for directory in ["/usr/sbin", "/usr/bin", "/sbin", "/bin", "/usr/local/sbin", "/usr/local/bin"]
    {
        let path = Path::new(directory).join(program);
        if path.exists() {
            return path;
        }
    }
    panic!("{program} not found: install OpenSSH (apt-get install -y openssh-server)");
}

/// Whether the tests run as root (and can create users).
pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// Ensures that [`TEST_USER`] exists with a home directory; `false` when it cannot (not root).
pub fn ensure_test_user() -> bool {
    static CREATING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _guard = CREATING.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let entry = || {
        fs::read_to_string("/etc/passwd")
            .unwrap_or_default()
            .lines()
            .find(|line| line.split(':').next() == Some(TEST_USER))
            .map(str::to_owned)
    };
    if entry().is_none() {
        if !is_root() {
            return false;
        }
        let _ = run(Command::new(find("useradd")).args(["-m", "-s", "/bin/sh", TEST_USER]));
    }
    let Some(entry) = entry() else { return false };
    let fields: Vec<&str> = entry.split(':').collect();
    let (uid, home) = (fields[2], fields[5]);
    // A home left behind by an earlier user of the same name belongs to someone else.
    if is_root() {
        let _ = fs::create_dir_all(home);
        let _ =
            run(Command::new(find("chown")).args(["-R", &format!("{uid}:{}", fields[3]), home]));
    }
    true
}

/// The password [`Sshd::start_with_passwords`] gives [`TEST_USER`].
pub const TEST_PASSWORD: &str = "correct horse battery";

impl Sshd {
    /// Starts a server that lets the current user (and [`TEST_USER`] when it exists) log in.
    pub fn start() -> Sshd {
        Sshd::start_with(false)
    }

    /// Like [`Sshd::start`], and [`TEST_USER`] may also log in with [`TEST_PASSWORD`]; the
    /// client wrapper in [`Sshd::password_ssh_directory`] offers passwords only.
    pub fn start_with_passwords() -> Sshd {
        assert!(ensure_test_user() && is_root(), "password logins need root to set one");
        let mut chpasswd =
            Command::new(find("chpasswd")).stdin(Stdio::piped()).spawn().expect("chpasswd");
        std::io::Write::write_all(
            chpasswd.stdin.as_mut().expect("stdin"),
            format!("{TEST_USER}:{TEST_PASSWORD}\n").as_bytes(),
        )
        .expect("password");
        drop(chpasswd.stdin.take());
        assert!(chpasswd.wait().expect("chpasswd").success(), "chpasswd failed");
        Sshd::start_with(true)
    }

    fn start_with(passwords: bool) -> Sshd {
        let dir = tempfile::Builder::new().prefix("test-sshd").tempdir().expect("tempdir");
        let path = dir.path();
        // Other login users must reach authorized_keys.
        fs::set_permissions(path, fs::Permissions::from_mode(0o711)).expect("chmod");
        let keygen = find("ssh-keygen");
        for key in ["host_ed25519", "client_ed25519"] {
            let made = run(Command::new(&keygen)
                .args(["-q", "-t", "ed25519", "-N", "", "-f"])
                .arg(path.join(key)));
            assert!(made, "ssh-keygen failed");
        }
        fs::copy(path.join("client_ed25519.pub"), path.join("authorized_keys")).expect("keys");
        fs::set_permissions(path.join("authorized_keys"), fs::Permissions::from_mode(0o644))
            .expect("chmod");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let host_key = fs::read_to_string(path.join("host_ed25519.pub")).expect("host key");
        let host_key: Vec<&str> = host_key.split_whitespace().take(2).collect();
        let host_key = host_key.join(" ");
        fs::write(
            path.join("known_hosts"),
            format!("[127.0.0.1]:{port} {host_key}\n[localhost]:{port} {host_key}\n"),
        )
        .expect("known hosts");
        let me = rustix::process::getuid();
        let me = fs::read_to_string("/etc/passwd")
            .unwrap_or_default()
            .lines()
            .find(|l| l.split(':').nth(2) == Some(&me.as_raw().to_string()))
            .and_then(|l| l.split(':').next().map(str::to_owned))
            .expect("the current user in /etc/passwd");
        let mut users = me.clone();
        if ensure_test_user() && me != TEST_USER {
            users.push(' ');
            users.push_str(TEST_USER);
        }
        let use_pam = is_root() && Path::new("/etc/pam.d/sshd").exists();
        let config = format!(
            "Port {port}\nListenAddress 127.0.0.1\nHostKey {dir}/host_ed25519\n\
             AuthorizedKeysFile {dir}/authorized_keys\nAuthenticationMethods publickey\n\
             PubkeyAuthentication yes\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n\
             PermitRootLogin prohibit-password\nAllowUsers {users}\nUsePAM {pam}\nStrictModes no\n\
             UseDNS no\nPrintMotd no\nPrintLastLog no\nMaxStartups 200:30:400\nMaxSessions 200\n\
             PidFile {dir}/sshd.pid\nLogLevel VERBOSE\nAllowTcpForwarding yes\n",
            dir = path.display(),
            pam = if use_pam { "yes" } else { "no" },
        );
        let config = if passwords {
            config
                .replace(
                    "AuthenticationMethods publickey\n",
                    "AuthenticationMethods publickey password\n",
                )
                .replace("PasswordAuthentication no\n", "PasswordAuthentication yes\n")
        } else {
            config
        };
        fs::write(path.join("sshd_config"), config).expect("sshd_config");
        let client = format!(
            "Host testhost\n  HostName 127.0.0.1\n  Port {port}\n  User {me}\n\
             Host 127.0.0.1 localhost testhost\n  IdentityFile {dir}/client_ed25519\n\
             \x20 IdentitiesOnly yes\n  StrictHostKeyChecking yes\n\
             \x20 UserKnownHostsFile {dir}/known_hosts\n  KexAlgorithms curve25519-sha256\n\
             \x20 LogLevel ERROR\n",
            dir = path.display(),
        );
        fs::write(path.join("ssh_config"), client).expect("ssh_config");
        let bin = path.join("bin");
        fs::create_dir(&bin).expect("bin");
        let wrapper = format!("#!/bin/sh\nexec ssh -F {}/ssh_config \"$@\"\n", path.display());
        fs::write(bin.join("ssh"), wrapper).expect("wrapper");
        fs::set_permissions(bin.join("ssh"), fs::Permissions::from_mode(0o755)).expect("chmod");
        let password_bin = path.join("password-bin");
        fs::create_dir(&password_bin).expect("password-bin");
        let wrapper = format!(
            "#!/bin/sh\nexec ssh -F {}/ssh_config -o PubkeyAuthentication=no \
             -o PreferredAuthentications=password -o NumberOfPasswordPrompts=1 \"$@\"\n",
            path.display()
        );
        fs::write(password_bin.join("ssh"), wrapper).expect("wrapper");
        fs::set_permissions(password_bin.join("ssh"), fs::Permissions::from_mode(0o755))
            .expect("chmod");
        // The wrapper's own directory must be reachable by the daemon only.
        if is_root() {
            fs::create_dir_all("/run/sshd").expect("/run/sshd");
        }
        let child = Command::new(find("sshd"))
            .arg("-D")
            .arg("-f")
            .arg(path.join("sshd_config"))
            .arg("-E")
            .arg(path.join("sshd.log"))
            .stdin(Stdio::null())
            .spawn()
            .expect("start sshd");
        let sshd = Sshd { dir, port, child };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "sshd did not listen: {}", sshd.log());
            std::thread::sleep(Duration::from_millis(20));
        }
        sshd
    }

    /// The directory holding the `ssh` wrapper (for `MUTAGEN_SSH_PATH`).
    pub fn ssh_directory(&self) -> PathBuf {
        self.dir.path().join("bin")
    }

    /// The directory holding an `ssh` wrapper that logs in with passwords only.
    pub fn password_ssh_directory(&self) -> PathBuf {
        self.dir.path().join("password-bin")
    }

    /// The server's log.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("sshd.log")).unwrap_or_default()
    }

    /// Runs a command on the server as `user` through the wrapper; returns its stdout.
    pub fn exec(&self, user: &str, command: &str) -> String {
        let output = Command::new(self.ssh_directory().join("ssh"))
            .args(["-p", &self.port.to_string(), &format!("{user}@127.0.0.1"), command])
            .output()
            .expect("run ssh");
        assert!(
            output.status.success(),
            "ssh {command:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

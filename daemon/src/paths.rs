//! The data directory and what lives in it.
//!
//! ```text
//! <data>/                       0700 (~/.mutagen, or $MUTAGEN_DATA_DIRECTORY)
//!   daemon/daemon.lock          exclusive lock held by the running daemon; holds its pid
//!   daemon/daemon.sock          the IPC socket, 0600
//!   daemon/daemon.log           the daemon's log
//!   journal/                    the sled journal of every session
//!   journal.head                what the journal acknowledged (sessions, record counts, hashes)
//!   journal.examining/          a scratch copy, while the journal is checked before opening
//!   journal.damaged-<time>/     a damaged journal and its head, kept by `daemon recover`
//!   staging/<id>-alpha|beta/    files received for a session, before they are placed
//!   once/                       state of `mutagen sync once`
//! ```

use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

/// The data directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DataDirectory {
    root: PathBuf,
}

impl DataDirectory {
    /// Returns `$MUTAGEN_DATA_DIRECTORY` (which must be absolute), else `~/.mutagen`.
    ///
    /// # Errors
    /// A relative override, or no home directory.
    pub fn from_environment() -> anyhow::Result<DataDirectory> {
        let root = match std::env::var_os("MUTAGEN_DATA_DIRECTORY").filter(|d| !d.is_empty()) {
            Some(dir) => {
                let dir = PathBuf::from(dir);
                if !dir.is_absolute() {
                    bail!("MUTAGEN_DATA_DIRECTORY {} is not an absolute path", dir.display());
                }
                dir
            }
            None => std::env::var_os("HOME")
                .filter(|h| !h.is_empty())
                .map(|home| PathBuf::from(home).join(".mutagen"))
                .context("unable to determine the home directory: HOME is not set")?,
        };
        Ok(DataDirectory { root })
    }

    /// Returns a data directory at `root`.
    pub fn new(root: PathBuf) -> DataDirectory {
        DataDirectory { root }
    }

    /// Returns the root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Returns the daemon's directory.
    pub fn daemon(&self) -> PathBuf {
        self.root.join("daemon")
    }

    /// Returns the socket path.
    pub fn socket(&self) -> PathBuf {
        self.daemon().join("daemon.sock")
    }

    /// Returns the lock file path.
    pub fn lock(&self) -> PathBuf {
        self.daemon().join("daemon.lock")
    }

    /// Returns the log file path.
    pub fn log(&self) -> PathBuf {
        self.daemon().join("daemon.log")
    }

    /// Returns the journal directory.
    pub fn journal(&self) -> PathBuf {
        self.root.join("journal")
    }

    /// Returns the directory of the ssh masters' control sockets (emptied at every start: a
    /// master never outlives the daemon that started it).
    pub fn ssh_control(&self) -> PathBuf {
        self.daemon().join("ssh")
    }

    /// Returns a session side's staging directory.
    pub fn staging(&self, identifier: &str, side: &str) -> PathBuf {
        self.root.join("staging").join(format!("{identifier}-{side}"))
    }

    /// Creates the data and daemon directories with mode 0700 (and tightens existing ones).
    ///
    /// # Errors
    /// When a directory cannot be created or its mode set.
    pub fn ensure(&self) -> anyhow::Result<()> {
        for dir in [self.root.clone(), self.daemon()] {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&dir)
                .with_context(|| format!("unable to create {}", dir.display()))?;
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
                .with_context(|| format!("unable to set the mode of {}", dir.display()))?;
        }
        Ok(())
    }
}

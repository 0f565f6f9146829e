//! The ancestor file of `sync once`: what both roots held after the last run, so the next run
//! can tell deletions from creations.
//!
//! Format: the magic `MUTAGEN-ONCE`, a little-endian `u32` version, then a postcard-encoded
//! [`OnceState`]. Written to a temporary file, flushed to disk, then renamed over the old one:
//! a crash leaves either the old or the new state, never a torn one.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use mutagen_endpoint::scan::Cache;
use mutagen_reconcile::Entry;
use serde::{Deserialize, Serialize};

const MAGIC: &[u8] = b"MUTAGEN-ONCE";
const VERSION: u32 = 1;

/// What is remembered between runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OnceState {
    /// The alpha root the ancestor belongs to.
    pub alpha: PathBuf,
    /// The beta root.
    pub beta: PathBuf,
    /// The ancestor (`None` = nothing synchronized yet).
    pub ancestor: Option<Entry>,
    /// Alpha's digest cache, so unchanged files are not hashed again.
    pub alpha_cache: Cache,
    /// Beta's digest cache.
    pub beta_cache: Cache,
}

impl OnceState {
    /// Returns the state of roots never synchronized.
    pub fn fresh(alpha: &Path, beta: &Path) -> OnceState {
        OnceState {
            alpha: alpha.into(),
            beta: beta.into(),
            ancestor: None,
            alpha_cache: Cache::default(),
            beta_cache: Cache::default(),
        }
    }
}

/// Loads the state at `path`; a missing file is a fresh state.
pub fn load(path: &Path, alpha: &Path, beta: &Path) -> anyhow::Result<OnceState> {
    let fresh = OnceState::fresh(alpha, beta);
    let bytes = match fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(fresh),
        Err(e) => {
            return Err(e).with_context(|| format!("unable to read state file {}", path.display()));
        }
    };
    let corrupt =
        || format!("state file {} is corrupt (delete it or pass --reset)", path.display());
    let Some(rest) = bytes.strip_prefix(MAGIC) else { bail!(corrupt()) };
    let (version, body) = rest.split_at_checked(4).with_context(corrupt)?;
    let version = u32::from_le_bytes(version.try_into().with_context(corrupt)?);
    if version != VERSION {
        bail!("state file {} has version {version}, this build reads {VERSION}", path.display());
    }
    let state: OnceState = postcard::from_bytes(body).with_context(corrupt)?;
    if let Some(ancestor) = &state.ancestor {
        ancestor.validate(true).with_context(corrupt)?;
    }
    if state.alpha != alpha || state.beta != beta {
        bail!(
            "state file {} belongs to {} and {}",
            path.display(),
            state.alpha.display(),
            state.beta.display()
        );
    }
    Ok(state)
}

/// Saves `state` to `path` atomically and durably.
pub fn save(path: &Path, state: &OnceState) -> anyhow::Result<()> {
    let context = || format!("unable to write state file {}", path.display());
    let parent = path.parent().with_context(context)?;
    fs::create_dir_all(parent).with_context(context)?;
    let mut bytes = MAGIC.to_vec();
    bytes.extend_from_slice(&VERSION.to_le_bytes());
    bytes.extend(postcard::to_stdvec(state).with_context(context)?);
    let temporary = path.with_extension("tmp");
    let mut file = fs::File::create(&temporary).with_context(context)?;
    file.write_all(&bytes).and_then(|()| file.sync_all()).with_context(context)?;
    fs::rename(&temporary, path).with_context(context)?;
    // Make the rename itself durable.
    fs::File::open(parent).and_then(|dir| dir.sync_all()).with_context(context)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_corruption() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("s/state");
        let (a, b) = (Path::new("/a"), Path::new("/b"));
        assert_eq!(load(&path, a, b).expect("fresh").ancestor, None);
        let record = mutagen_endpoint::scan::CacheRecord {
            mode: 0o100644,
            mtime_sec: 1,
            mtime_nsec: 2,
            size: 3,
            inode: 4,
            digest: mutagen_reconcile::Digest([5; 32]),
        };
        let mut state =
            OnceState { ancestor: Some(Entry::empty_directory()), ..OnceState::fresh(a, b) };
        state.beta_cache.records.insert("f".into(), record);
        save(&path, &state).expect("save");
        assert_eq!(load(&path, a, b).expect("load"), state);
        assert!(load(&path, b, a).is_err(), "state of other roots is refused");
        let bytes = fs::read(&path).expect("read");
        for corrupt in
            [&bytes[..bytes.len() / 2], b"NOT-MUTAGEN".as_slice(), &bytes[..MAGIC.len() + 2]]
        {
            fs::write(&path, corrupt).expect("write");
            let err = load(&path, a, b).expect_err("corrupt");
            assert!(format!("{err:#}").contains("is corrupt"), "{err:#}");
        }
    }
}

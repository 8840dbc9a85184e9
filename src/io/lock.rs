//! The one way to lock: an exclusive advisory lock (`File::lock`, flock on Unix) on a lock file,
//! released when the file is closed, including when the process dies. A lock file is never
//! removed: another process may be waiting on it, and removing it would let a third lock a new
//! inode.
//!
//! Synchronous: waiting blocks the thread, so async callers go through [`crate::io::blocking`].
//! Used by `fetch` (one lock per download destination) and the runner (one per root).

use std::fs::{File, OpenOptions, TryLockError};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// The folder of a cache that holds lock files named after what they protect.
const LOCK_DIR: &str = "locks";

/// Why a lock was not taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Someone else holds it and the caller chose not to wait.
    #[error("{path}: locked by another process")]
    Held { path: PathBuf },
    #[error("{path}: cannot lock")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl From<super::blocking::TaskFailed> for LockError {
    fn from(failed: super::blocking::TaskFailed) -> LockError {
        LockError::Io {
            path: failed.path,
            source: std::io::Error::other(failed.reason),
        }
    }
}

/// A held lock; dropping it (and every [`FileLock::share`]d handle) releases it.
#[derive(Debug)]
pub struct FileLock {
    file: File,
    path: PathBuf,
}

impl FileLock {
    /// Locks the file at `path` (created, with its folder, if missing). `wait` queues behind a
    /// holder; otherwise a held lock is [`LockError::Held`].
    pub fn acquire(path: &Path, wait: bool) -> Result<FileLock, LockError> {
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| LockError::Io { path, source }
        };
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(io(parent))?;
        }
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .map_err(io(path))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) if wait => {
                tracing::info!(path = %path.display(), "another process holds the lock; waiting");
                file.lock().map_err(io(path))?;
            }
            Err(TryLockError::WouldBlock) => {
                return Err(LockError::Held {
                    path: path.to_owned(),
                })
            }
            Err(TryLockError::Error(source)) => return Err(io(path)(source)),
        }
        Ok(FileLock {
            file,
            path: path.to_owned(),
        })
    }

    /// Another handle on the same lock (a duplicate descriptor of the same open file, which
    /// flock treats as one holder): the lock is released when the last handle is dropped.
    pub fn share(&self) -> Result<FileLock, LockError> {
        let file = self.file.try_clone().map_err(|source| LockError::Io {
            path: self.path.clone(),
            source,
        })?;
        Ok(FileLock {
            file,
            path: self.path.clone(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// The lock file protecting `dest`: in `<cache>/locks/` when there is a cache, named by a hash
/// of the destination's absolute path (its folder canonicalised, so two spellings of one folder
/// share a lock; the output folder holds only what the user asked for), else `<dest>.lock`.
pub fn lock_path(dest: &Path, cache_dir: Option<&Path>) -> PathBuf {
    let Some(cache_dir) = cache_dir else {
        let mut path = dest.as_os_str().to_owned();
        path.push(".lock");
        return PathBuf::from(path);
    };
    let folder = match dest.parent().filter(|p| !p.as_os_str().is_empty()) {
        Some(parent) => parent.canonicalize().unwrap_or_else(|_| parent.to_owned()),
        None => std::env::current_dir().unwrap_or_default(),
    };
    let absolute = folder.join(dest.file_name().unwrap_or(dest.as_os_str()));
    let digest = Sha256::digest(absolute.as_os_str().as_encoded_bytes());
    cache_dir
        .join(LOCK_DIR)
        .join(format!("{}.lock", hex::encode(&digest[..16])))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_lock_is_refused_without_waiting_and_free_once_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("new").join("x.lock");
        let first = FileLock::acquire(&path, false).unwrap();
        let shared = first.share().unwrap();
        drop(first);
        let error = FileLock::acquire(&path, false).unwrap_err();
        assert!(
            matches!(&error, LockError::Held { path: p } if p == &path),
            "{error}"
        );
        drop(shared);
        FileLock::acquire(&path, false).unwrap();
        assert!(path.exists(), "lock files stay");
    }

    #[test]
    fn with_a_cache_the_lock_is_in_the_cache_and_one_per_destination() {
        let out = tempfile::tempdir().unwrap();
        let cache = tempfile::tempdir().unwrap();
        let dest = out.path().join("image.img");
        let path = lock_path(&dest, Some(cache.path()));
        assert_eq!(path.parent().unwrap(), cache.path().join(LOCK_DIR));
        // Another spelling of the same folder shares the lock; another file does not.
        let dotted = out.path().join(".").join("image.img");
        assert_eq!(lock_path(&dotted, Some(cache.path())), path);
        assert_ne!(
            lock_path(&out.path().join("other.img"), Some(cache.path())),
            path
        );
        assert_eq!(lock_path(&dest, None), out.path().join("image.img.lock"));
    }
}

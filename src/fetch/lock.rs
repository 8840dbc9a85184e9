//! One exclusive lock per destination, so concurrent downloads of the same file (other tasks or
//! other processes) take turns instead of interleaving writes into one `.part`.
//!
//! The lock is `std::fs::File::lock` (flock on Unix) on a lock file; it is released when the
//! file is closed, including when the process dies. Lock files live in the cache
//! (`<cache>/locks/<sha256 of the destination's absolute path>.lock`), not beside the
//! destination: the output folder holds only what the user asked for. Without a cache folder the
//! lock is `<dest>.lock`. A lock file is never removed: another process may be waiting on it,
//! and removing it would let a third lock a new inode.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use tracing::debug;

use super::FetchError;

/// The folder of the cache that holds lock files.
const LOCK_DIR: &str = "locks";

/// Held for the whole download; dropping it releases the lock.
#[derive(Debug)]
pub(crate) struct DestLock {
    file: File,
    path: PathBuf,
}

/// The lock file for `dest`: in `<cache>/locks/` when there is a cache, named by a hash of the
/// destination's absolute path (its folder canonicalised, so two spellings of one folder share
/// a lock), else `<dest>.lock`. The destination's folder must exist.
pub(crate) fn lock_path(dest: &Path, cache_dir: Option<&Path>) -> PathBuf {
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

impl DestLock {
    /// Another handle on the same lock (a duplicate descriptor of the same open file, which
    /// flock treats as one holder): the lock is released when the last handle is dropped. The
    /// writer thread holds one, so a cancelled download keeps the lock until its last buffered
    /// bytes are written.
    pub(crate) fn share(&self) -> Result<DestLock, FetchError> {
        let file = self
            .file
            .try_clone()
            .map_err(|source| FetchError::io(&self.path, source))?;
        Ok(DestLock {
            file,
            path: self.path.clone(),
        })
    }

    /// Waits (off the async runtime) until the lock of `dest` ([`lock_path`]) is ours; the
    /// lock's folder is created if missing.
    pub(crate) async fn acquire(
        dest: &Path,
        cache_dir: Option<&Path>,
    ) -> Result<DestLock, FetchError> {
        let (dest, cache_dir) = (dest.to_owned(), cache_dir.map(Path::to_owned));
        tokio::task::spawn_blocking(move || {
            let path = lock_path(&dest, cache_dir.as_deref());
            if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                std::fs::create_dir_all(parent).map_err(|source| FetchError::io(parent, source))?;
            }
            let file = OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&path)
                .map_err(|source| FetchError::io(&path, source))?;
            match file.try_lock() {
                Ok(()) => {}
                Err(std::fs::TryLockError::WouldBlock) => {
                    debug!(path = %path.display(), "waiting for another download of this file");
                    file.lock()
                        .map_err(|source| FetchError::io(&path, source))?;
                }
                Err(std::fs::TryLockError::Error(source)) => {
                    return Err(FetchError::io(&path, source))
                }
            }
            Ok(DestLock { file, path })
        })
        .await
        .map_err(|join| FetchError::io("lock", std::io::Error::other(join.to_string())))?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn second_lock_waits_for_the_first() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("image.img");
        let first = DestLock::acquire(&dest, None).await.unwrap();
        let second = tokio::spawn({
            let dest = dest.clone();
            async move { DestLock::acquire(&dest, None).await }
        });
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        assert!(
            !second.is_finished(),
            "second lock taken while the first is held"
        );
        drop(first);
        let second = tokio::time::timeout(std::time::Duration::from_secs(5), second)
            .await
            .unwrap();
        assert!(second.unwrap().is_ok());
        assert!(lock_path(&dest, None).exists());
    }

    #[tokio::test]
    async fn shared_lock_is_held_until_the_last_handle_drops() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("image.img");
        let first = DestLock::acquire(&dest, None).await.unwrap();
        let shared = first.share().unwrap();
        drop(first);
        let second = tokio::spawn({
            let dest = dest.clone();
            async move { DestLock::acquire(&dest, None).await }
        });
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        assert!(
            !second.is_finished(),
            "lock released while a shared handle lives"
        );
        drop(shared);
        let second = tokio::time::timeout(std::time::Duration::from_secs(5), second)
            .await
            .unwrap();
        assert!(second.unwrap().is_ok());
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
    }
}

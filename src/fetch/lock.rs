//! One exclusive lock per destination, so concurrent downloads of the same file (other tasks or
//! other processes) take turns instead of interleaving writes into one `.part`.
//!
//! The lock is `std::fs::File::lock` (flock on Unix) on `<dest>.lock`; it is released when the
//! file is closed, including when the process dies. The lock file itself is never removed:
//! another process may be waiting on it, and removing it would let a third lock a new inode.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};

use tracing::debug;

use super::FetchError;

/// Held for the whole download; dropping it releases the lock.
#[derive(Debug)]
pub(crate) struct DestLock {
    _file: File,
}

/// `<dest>.lock`.
pub(crate) fn lock_path(dest: &Path) -> PathBuf {
    let mut path = dest.as_os_str().to_owned();
    path.push(".lock");
    PathBuf::from(path)
}

impl DestLock {
    /// Another handle on the same lock (a duplicate descriptor of the same open file, which
    /// flock treats as one holder): the lock is released when the last handle is dropped. The
    /// writer thread holds one, so a cancelled download keeps the lock until its last buffered
    /// bytes are written.
    pub(crate) fn share(&self, dest: &Path) -> Result<DestLock, FetchError> {
        let file = self
            ._file
            .try_clone()
            .map_err(|source| FetchError::io(lock_path(dest), source))?;
        Ok(DestLock { _file: file })
    }

    /// Waits (off the async runtime) until the destination is ours.
    pub(crate) async fn acquire(dest: &Path) -> Result<DestLock, FetchError> {
        let path = lock_path(dest);
        tokio::task::spawn_blocking(move || {
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
            Ok(DestLock { _file: file })
        })
        .await
        .map_err(|join| FetchError::io(dest, std::io::Error::other(join.to_string())))?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn second_lock_waits_for_the_first() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("image.img");
        let first = DestLock::acquire(&dest).await.unwrap();
        let second = tokio::spawn({
            let dest = dest.clone();
            async move { DestLock::acquire(&dest).await }
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
        assert!(lock_path(&dest).exists());
    }

    #[tokio::test]
    async fn shared_lock_is_held_until_the_last_handle_drops() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("image.img");
        let first = DestLock::acquire(&dest).await.unwrap();
        let shared = first.share(&dest).unwrap();
        drop(first);
        let second = tokio::spawn({
            let dest = dest.clone();
            async move { DestLock::acquire(&dest).await }
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
}

//! One exclusive lock per destination, so concurrent downloads of the same file (other tasks or
//! other processes) take turns instead of interleaving writes into one `.part`.
//!
//! The lock is [`crate::io::lock`]'s (the one way to lock), on the lock file
//! [`lock_path`] names: in the cache (`<cache>/locks/<hash of the destination>.lock`), not
//! beside the destination, or `<dest>.lock` without a cache. Waiting happens on a blocking
//! thread.

use std::path::Path;

use super::FetchError;
pub(crate) use crate::io::lock::lock_path;
use crate::io::lock::{FileLock, LockError};

/// Held for the whole download; dropping it releases the lock.
#[derive(Debug)]
pub(crate) struct DestLock(FileLock);

fn fetch_error(error: LockError) -> FetchError {
    match error {
        LockError::Io { path, source } => FetchError::io(&path, source),
        // Only when not waiting, which downloads never do.
        LockError::Held { path } => FetchError::io(
            &path,
            std::io::Error::new(std::io::ErrorKind::WouldBlock, "locked"),
        ),
    }
}

impl DestLock {
    /// Another handle on the same lock, released when the last handle is dropped. The writer
    /// thread holds one, so a cancelled download keeps the lock until its last buffered bytes
    /// are written.
    pub(crate) fn share(&self) -> Result<DestLock, FetchError> {
        self.0.share().map(DestLock).map_err(fetch_error)
    }

    /// Waits (on a blocking thread) until the lock of `dest` ([`lock_path`]) is ours; the
    /// lock's folder is created if missing.
    pub(crate) async fn acquire(
        dest: &Path,
        cache_dir: Option<&Path>,
    ) -> Result<DestLock, FetchError> {
        let path = lock_path(dest, cache_dir);
        let owned = path.clone();
        crate::io::blocking::run(&path, move || FileLock::acquire(&owned, true))
            .await
            .map(DestLock)
            .map_err(fetch_error)
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
}

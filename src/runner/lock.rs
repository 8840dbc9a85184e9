//! The lock that keeps two runs on one root apart: an advisory lock on a file in the root,
//! held for the whole run and released when the process ends, however it ends.

use std::path::Path;

use super::RunnerError;
use crate::io::lock::{FileLock, LockError};

/// Holds a root's lock for a run; dropping it releases the lock.
#[derive(Debug)]
pub struct RootLock {
    _lock: FileLock,
}

/// A root's lock file and what a refusal says.
#[derive(Clone, Copy, Debug)]
pub struct LockSpec {
    /// The file's name in the root.
    pub file: &'static str,
    /// Who holds it, as the refusal says: "another sync holds …".
    pub command: &'static str,
    /// Said after "try again later" (", or pass --wait …").
    pub hint: &'static str,
}

/// Takes `spec`'s lock file in `root` (created with `root` if missing), the one way to lock
/// ([`crate::io::lock`]). `wait` queues behind a run holding it; otherwise that is
/// [`RunnerError::Locked`].
pub async fn lock_root(root: &Path, spec: LockSpec, wait: bool) -> Result<RootLock, RunnerError> {
    let path = root.join(spec.file);
    let owned = path.clone();
    let locked = crate::io::blocking::run(&path, move || FileLock::acquire(&owned, wait)).await;
    match locked {
        Ok(lock) => Ok(RootLock { _lock: lock }),
        Err(LockError::Held { path }) => Err(RunnerError::Locked {
            path,
            command: spec.command,
            hint: spec.hint,
        }),
        Err(LockError::Io { path, source }) => Err(RunnerError::Io { path, source }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_second_run_is_refused_while_the_first_holds_the_root() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("new");
        let spec = LockSpec {
            file: ".lock",
            command: "test run",
            hint: "; or wait",
        };
        let first = lock_root(&dir, spec, false).await.unwrap();
        let error = lock_root(&dir, spec, false).await.unwrap_err();
        assert!(error.is_locked());
        let text = error.to_string();
        assert!(text.starts_with("another test run holds "), "{text}");
        assert!(text.ends_with("try again later; or wait"), "{text}");
        drop(first);
        lock_root(&dir, spec, false).await.unwrap();
    }
}

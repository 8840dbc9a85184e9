//! The lock that keeps two runs on one root apart: an advisory lock on a file in the root,
//! held for the whole run and released when the process ends, however it ends.

use std::fs::{File, OpenOptions, TryLockError};
use std::path::{Path, PathBuf};

use super::RunnerError;

/// Holds a root's lock for a run; dropping it releases the lock.
#[derive(Debug)]
pub struct RootLock {
    _file: File,
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

/// Takes `spec`'s lock file in `root` (created with `root` if missing). `wait` queues behind a
/// run holding it; otherwise that is [`RunnerError::Locked`].
pub async fn lock_root(root: &Path, spec: LockSpec, wait: bool) -> Result<RootLock, RunnerError> {
    let (root, path) = (root.to_owned(), root.join(spec.file));
    crate::io::blocking::run(&path.clone(), move || lock(&root, path, spec, wait)).await
}

fn lock(root: &Path, path: PathBuf, spec: LockSpec, wait: bool) -> Result<RootLock, RunnerError> {
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| RunnerError::Io { path, source }
    };
    std::fs::create_dir_all(root).map_err(io(root))?;
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(io(&path))?;
    match file.try_lock() {
        Ok(()) => Ok(RootLock { _file: file }),
        Err(TryLockError::WouldBlock) if wait => {
            tracing::info!(path = %path.display(), "another run holds the lock; waiting for it");
            file.lock().map_err(io(&path))?;
            Ok(RootLock { _file: file })
        }
        Err(TryLockError::WouldBlock) => Err(RunnerError::Locked {
            path,
            command: spec.command,
            hint: spec.hint,
        }),
        Err(TryLockError::Error(source)) => Err(io(&path)(source)),
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

//! The async boundary: synchronous work (formats, hashing, file publication) runs on a blocking
//! thread with owned inputs, and async code awaits it without blocking its worker.
//!
//! This is the only way async code in the crate waits for the disk or the CPU; nothing calls
//! `block_in_place`. See `ARCHITECTURE.md`.

use std::path::{Path, PathBuf};

/// A blocking task that panicked or was cancelled, with what it was working on.
#[derive(Debug, thiserror::Error)]
#[error("{path}: work on a blocking thread ended abnormally: {reason}")]
pub struct TaskFailed {
    pub path: PathBuf,
    pub reason: String,
}

/// Runs `work` on tokio's blocking pool and returns its result; `path` names the work in the
/// error when the task panics.
pub async fn run<T, E>(
    path: &Path,
    work: impl FnOnce() -> Result<T, E> + Send + 'static,
) -> Result<T, E>
where
    T: Send + 'static,
    E: Send + 'static + From<TaskFailed>,
{
    // Log lines of the work carry the caller's context (the `sync` entry it belongs to).
    let span = tracing::Span::current();
    tokio::task::spawn_blocking(move || span.in_scope(work))
        .await
        .map_err(|error| {
            E::from(TaskFailed {
                path: path.to_owned(),
                reason: error.to_string(),
            })
        })?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    enum Error {
        Task(TaskFailed),
    }

    impl From<TaskFailed> for Error {
        fn from(error: TaskFailed) -> Error {
            Error::Task(error)
        }
    }

    #[tokio::test]
    async fn a_panic_is_an_error_naming_the_path() {
        let result: Result<(), Error> =
            run(Path::new("/x/disk.img"), || panic!("reader died")).await;
        let Err(Error::Task(failed)) = result else {
            panic!("not a task error");
        };
        assert_eq!(failed.path, Path::new("/x/disk.img"));
        assert!(failed.to_string().starts_with("/x/disk.img: "), "{failed}");
    }

    #[tokio::test]
    async fn results_pass_through() {
        let result: Result<u32, Error> = run(Path::new("x"), || Ok(7)).await;
        assert_eq!(result.unwrap(), 7);
    }
}

//! The user's command after a publication: `sh -c` with the publication's facts in the
//! environment, on a blocking thread; its output goes to stderr so `--json` on stdout stays
//! clean.

use std::os::fd::AsFd;
use std::path::Path;
use std::process::{Command, Stdio};

use super::SyncError;
use crate::io::blocking;

/// Runs `command` for `image`'s new `serial`; a non-zero exit is [`SyncError::Hook`].
pub(super) async fn run(
    command: &str,
    image: &str,
    serial: &str,
    serial_dir: &Path,
    root: &Path,
) -> Result<(), SyncError> {
    let stderr = std::io::stderr()
        .as_fd()
        .try_clone_to_owned()
        .map_err(|source| SyncError::Io {
            path: "stderr".into(),
            source,
        })?;
    let mut shell = Command::new("sh");
    shell
        .arg("-c")
        .arg(command)
        .env("CLOUDIMG_IMAGE", image)
        .env("CLOUDIMG_SERIAL", serial)
        .env("CLOUDIMG_DIR", serial_dir)
        .env("CLOUDIMG_ROOT", root)
        .stdin(Stdio::null())
        .stdout(Stdio::from(stderr));
    let status = blocking::run(Path::new("sh"), move || {
        shell.status().map_err(|source| SyncError::Io {
            path: "sh".into(),
            source,
        })
    })
    .await?;
    if status.success() {
        Ok(())
    } else {
        Err(SyncError::Hook {
            image: image.to_owned(),
            command: command.to_owned(),
            status: status.to_string(),
        })
    }
}

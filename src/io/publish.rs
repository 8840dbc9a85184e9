//! The one way a file gets its final name: write a hidden sibling, make it durable, rename it.
//!
//! Every writer of the crate (image conversion, small state and metadata files, the document
//! cache, containers, prepared artifacts, symlinks and artifact folders) publishes through this
//! module, so crash safety is argued once, here:
//!
//! - **One temporary name**: `.<name>.<random>.cloudimg-tmp` in the final name's folder (same
//!   file system, so the rename is atomic). Random, so concurrent writers of one name never
//!   share a temporary; the last rename wins, and each reader sees one whole file.
//! - **Durability**: the temporary is fsynced before the rename and the folder after it, so
//!   after a crash the final name holds the old file or the whole new one.
//! - **Failure**: a [`Publication`] dropped without [`Publication::commit`] removes its
//!   temporary; nothing partial ever carries the final name.
//! - **Stale temporaries** (a `kill -9`, a power cut): every publication first sweeps its
//!   folder. A temporary is removed only when (1) its name is ours, (2) it is a regular file,
//!   (3) its inode has not changed since before this process started, and (4) nobody holds its
//!   lock: each writer holds an exclusive `flock` on its temporary from creation to rename, and
//!   the kernel drops it when the writer dies. A live writer in another process is never
//!   touched, whatever its age; a temporary created after we started is left for its writer.
//! - **Outputs that are not regular files** are never replaced: [`resolve`] follows symbolic
//!   links (as qemu-img does, the file a link points to is what gets written) and reports
//!   block devices, which callers write in place; character devices, FIFOs, sockets and
//!   folders are refused.
//!
//! Resumable downloads keep their own `<dest>.part`: that is a download's state, resumed
//! across runs, not a publication temporary; its last step is [`rename_durably`].

use std::collections::HashSet;
use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::{LazyLock, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use tracing::debug;

/// The suffix of every temporary this module creates.
pub const TEMPORARY_SUFFIX: &str = ".cloudimg-tmp";

/// Symbolic links followed at most, like the kernel's own limit (`ELOOP`).
const MAX_SYMLINKS: usize = 40;

/// Attempts at a fresh temporary name before giving up (only a sweeping process or an
/// astronomically unlikely name collision makes an attempt fail).
const NAME_ATTEMPTS: usize = 8;

/// When this process began publishing, in seconds since the epoch: temporaries whose inode
/// changed before this instant belong to an earlier run.
static RUN_START: LazyLock<i64> = LazyLock::new(|| {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
});

/// Folders this process has already swept.
static SWEPT: LazyLock<Mutex<HashSet<PathBuf>>> = LazyLock::new(Mutex::default);

/// Why an output could not be published.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("{path}: {action}")]
    Io {
        path: PathBuf,
        action: &'static str,
        #[source]
        source: io::Error,
    },
    /// The output path names something cloudimg never replaces.
    #[error("{path}: the output is {what}; cloudimg writes regular files and block devices only, and never replaces anything else")]
    NotAFile { path: PathBuf, what: &'static str },
    #[error("{path}: more than {MAX_SYMLINKS} symbolic links to follow")]
    SymlinkLoop { path: PathBuf },
}

impl PublishError {
    fn io(path: &Path, action: &'static str, source: io::Error) -> PublishError {
        PublishError::Io {
            path: path.to_owned(),
            action,
            source,
        }
    }

    /// The exit-status class: refusing a path is the user's request being impossible.
    pub fn kind(&self) -> crate::ErrorKind {
        match self {
            PublishError::Io { .. } => crate::ErrorKind::Other,
            PublishError::NotAFile { .. } | PublishError::SymlinkLoop { .. } => {
                crate::ErrorKind::Usage
            }
        }
    }
}

impl From<PublishError> for io::Error {
    fn from(error: PublishError) -> io::Error {
        match error {
            PublishError::Io { source, .. } => source,
            other => io::Error::other(other),
        }
    }
}

/// What sits at an output path once symbolic links are followed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Resolved {
    /// A regular file, or nothing yet: publish by temporary and rename at `path`.
    File(PathBuf),
    /// A block device: written in place, never renamed over.
    BlockDevice(PathBuf),
}

/// Follows symbolic links at `path` (the way `open(2)` would, as qemu-img does) and says what
/// is there; refuses what must never be replaced.
pub fn resolve(path: &Path) -> Result<Resolved, PublishError> {
    let mut path = path.to_owned();
    for _ in 0..MAX_SYMLINKS {
        let metadata = match std::fs::symlink_metadata(&path) {
            Ok(metadata) => metadata,
            Err(error) if error.kind() == io::ErrorKind::NotFound => {
                return Ok(Resolved::File(path))
            }
            Err(source) => return Err(PublishError::io(&path, "inspect the output", source)),
        };
        let kind = metadata.file_type();
        let what = if kind.is_symlink() {
            let target = std::fs::read_link(&path)
                .map_err(|source| PublishError::io(&path, "read the symbolic link", source))?;
            path = match path.parent() {
                Some(parent) => parent.join(target),
                None => target,
            };
            continue;
        } else if kind.is_file() {
            return Ok(Resolved::File(path));
        } else if kind.is_block_device() {
            return Ok(Resolved::BlockDevice(path));
        } else if kind.is_char_device() {
            "a character device"
        } else if kind.is_fifo() {
            "a FIFO"
        } else if kind.is_socket() {
            "a socket"
        } else if kind.is_dir() {
            "a folder"
        } else {
            "not a regular file"
        };
        return Err(PublishError::NotAFile { path, what });
    }
    Err(PublishError::SymlinkLoop { path })
}

/// The folder a path lives in (`.` for a bare name).
fn parent_of(path: &Path) -> &Path {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    }
}

/// `.<name>.<random>.cloudimg-tmp` beside `path`.
pub fn temporary_path(path: &Path) -> io::Result<PathBuf> {
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "the path has no file name"))?;
    let mut temporary = OsString::from(".");
    temporary.push(name);
    temporary.push(format!(".{:08x}", rand::random::<u32>()));
    temporary.push(TEMPORARY_SUFFIX);
    Ok(path.with_file_name(temporary))
}

/// Whether `name` is one of our temporaries.
fn is_temporary_name(name: &std::ffi::OsStr) -> bool {
    let name = name.as_encoded_bytes();
    name.starts_with(b".") && name.ends_with(TEMPORARY_SUFFIX.as_bytes())
}

/// Removes the temporaries in `dir` left by runs that died (see the module doc for the four
/// conditions), once per folder and process. Best effort: what cannot be inspected or removed
/// is left and logged.
pub fn sweep_stale(dir: &Path) {
    let started = *RUN_START;
    let key = dir.canonicalize().unwrap_or_else(|_| dir.to_owned());
    if !SWEPT.lock().is_ok_and(|mut swept| swept.insert(key)) {
        return;
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        if !is_temporary_name(&entry.file_name()) {
            continue;
        }
        let path = entry.path();
        match remove_if_stale(&path, started) {
            Ok(true) => debug!(path = %path.display(), "removed a stale temporary"),
            Ok(false) => {}
            Err(error) => debug!(path = %path.display(), %error, "left a temporary"),
        }
    }
}

fn remove_if_stale(path: &Path, started: i64) -> io::Result<bool> {
    let metadata = std::fs::symlink_metadata(path)?;
    if !metadata.file_type().is_file() || metadata.ctime() >= started {
        return Ok(false);
    }
    let file = File::open(path)?;
    match file.try_lock() {
        // Removed while we hold its lock: no writer can be between create and lock on it.
        Ok(()) => std::fs::remove_file(path).map(|()| true),
        Err(std::fs::TryLockError::WouldBlock) => Ok(false),
        Err(std::fs::TryLockError::Error(error)) => Err(error),
    }
}

/// A file being written under a temporary name, renamed to its final name by [`commit`].
///
/// [`commit`]: Publication::commit
#[derive(Debug)]
pub struct Publication {
    final_path: PathBuf,
    temporary: PathBuf,
    /// The temporary, open for reading and writing; holds the lock that marks it alive.
    file: File,
    /// Files written beside the final name under their own names (a vmdk flat extent), made
    /// durable with the temporary.
    companions: Vec<PathBuf>,
    committed: bool,
}

impl Publication {
    /// Starts writing `final_path` (symbolic links followed, see [`resolve`]): sweeps stale
    /// temporaries from its folder, then creates and locks a fresh temporary. Block devices
    /// and anything else that is not a regular file are refused here.
    pub fn begin(final_path: &Path) -> Result<Publication, PublishError> {
        let final_path = match resolve(final_path)? {
            Resolved::File(path) => path,
            Resolved::BlockDevice(path) => {
                return Err(PublishError::NotAFile {
                    path,
                    what: "a block device, which this command cannot write in place",
                })
            }
        };
        sweep_stale(parent_of(&final_path));
        let mut last_error = None;
        for _ in 0..NAME_ATTEMPTS {
            let temporary = temporary_path(&final_path)
                .map_err(|source| PublishError::io(&final_path, "name a temporary", source))?;
            let file = match OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .open(&temporary)
            {
                Ok(file) => file,
                Err(error) if error.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(source) => {
                    return Err(PublishError::io(&temporary, "create a temporary", source))
                }
            };
            match file.try_lock() {
                Ok(()) => {
                    return Ok(Publication {
                        final_path,
                        temporary,
                        file,
                        companions: Vec::new(),
                        committed: false,
                    })
                }
                // Another process is sweeping this very name: leave it to them, pick another.
                Err(std::fs::TryLockError::WouldBlock) => {
                    last_error = Some(io::Error::from(io::ErrorKind::WouldBlock));
                }
                Err(std::fs::TryLockError::Error(error)) => {
                    let _ = std::fs::remove_file(&temporary);
                    return Err(PublishError::io(&temporary, "lock a temporary", error));
                }
            }
        }
        Err(PublishError::io(
            &final_path,
            "find a free temporary name",
            last_error.unwrap_or_else(|| io::Error::from(io::ErrorKind::AlreadyExists)),
        ))
    }

    /// The temporary being written.
    pub fn path(&self) -> &Path {
        &self.temporary
    }

    /// The name the file will have (symbolic links already followed).
    pub fn final_path(&self) -> &Path {
        &self.final_path
    }

    /// The temporary, open for reading and writing (other handles may be opened on
    /// [`path`](Publication::path) too; the lock stays with this one).
    pub fn file(&self) -> &File {
        &self.file
    }

    /// Turns the temporary into a hard link to `src` (its inode's change time becomes now, and
    /// the lock moves to it, so sweepers still see a live writer).
    fn become_link_to(&mut self, src: &Path) -> io::Result<()> {
        std::fs::remove_file(&self.temporary)?;
        std::fs::hard_link(src, &self.temporary)?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&self.temporary)?;
        file.lock()?;
        self.file = file;
        Ok(())
    }

    /// Makes `path`, written beside the final name under its own name, durable at commit.
    pub fn sync_also(&mut self, path: PathBuf) {
        self.companions.push(path);
    }

    /// Makes the temporary (and companions) durable, renames it to the final name and makes
    /// the rename durable.
    pub fn commit(mut self) -> Result<(), PublishError> {
        for companion in &self.companions {
            sync_file(companion)?;
        }
        self.file
            .sync_all()
            .map_err(|source| PublishError::io(&self.temporary, "sync", source))?;
        std::fs::rename(&self.temporary, &self.final_path)
            .map_err(|source| PublishError::io(&self.final_path, "rename into place", source))?;
        self.committed = true;
        // rename(2) does nothing when both names are links to one inode (a hard link
        // published over itself); the temporary name must not stay behind.
        if std::fs::symlink_metadata(&self.temporary).is_ok() {
            let _ = std::fs::remove_file(&self.temporary);
        }
        sync_dir(parent_of(&self.final_path))
    }
}

impl Drop for Publication {
    fn drop(&mut self) {
        if !self.committed {
            if let Err(error) = std::fs::remove_file(&self.temporary) {
                debug!(path = %self.temporary.display(), %error, "could not remove a temporary");
            }
        }
    }
}

fn sync_file(path: &Path) -> Result<(), PublishError> {
    match File::open(path) {
        Ok(file) => file
            .sync_all()
            .map_err(|source| PublishError::io(path, "sync", source)),
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(PublishError::io(path, "open to sync", source)),
    }
}

/// Makes the entries of `dir` (a rename, a new file) durable.
pub fn sync_dir(dir: &Path) -> Result<(), PublishError> {
    File::open(dir)
        .and_then(|dir| dir.sync_all())
        .map_err(|source| PublishError::io(dir, "sync the folder", source))
}

/// Gives the complete file `from` the name `to` durably: fsync, rename, fsync the folder. For
/// files that had a name of their own while written (a resumable download's `.part`).
pub fn rename_durably(from: &Path, to: &Path) -> Result<(), PublishError> {
    sync_file(from)?;
    std::fs::rename(from, to)
        .map_err(|source| PublishError::io(to, "rename into place", source))?;
    sync_dir(parent_of(to))
}

/// Replaces `path` with `bytes` (small files: state, metadata, documents). The error is a
/// plain `io::Error` because every caller's own error already names the path.
pub fn write(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let publication = Publication::begin(path)?;
    (&publication.file)
        .write_all(bytes)
        .map_err(|source| PublishError::io(publication.path(), "write", source))?;
    Ok(publication.commit()?)
}

/// Publishes `src` at `dst` as a hard link when both are on one file system, else as a copy.
pub fn link_or_copy(src: &Path, dst: &Path) -> Result<(), PublishError> {
    let mut publication = Publication::begin(dst)?;
    if publication.become_link_to(src).is_err() {
        let mut source = File::open(src).map_err(|e| PublishError::io(src, "open", e))?;
        io::copy(&mut source, &mut publication.file)
            .map_err(|e| PublishError::io(publication.path(), "copy", e))?;
    }
    publication.commit()
}

/// Points the symlink `link` at `target` in one rename (a new link over the old one), durably.
pub fn replace_symlink(target: &Path, link: &Path) -> io::Result<()> {
    Ok(swap_symlink(target, link)?)
}

fn swap_symlink(target: &Path, link: &Path) -> Result<(), PublishError> {
    let parent = parent_of(link);
    sweep_stale(parent);
    let mut last_error = None;
    for _ in 0..NAME_ATTEMPTS {
        let temporary = temporary_path(link)
            .map_err(|source| PublishError::io(link, "name a temporary", source))?;
        match std::os::unix::fs::symlink(target, &temporary) {
            Ok(()) => {
                std::fs::rename(&temporary, link).map_err(|source| {
                    let _ = std::fs::remove_file(&temporary);
                    PublishError::io(link, "rename into place", source)
                })?;
                return sync_dir(parent);
            }
            Err(error) if error.kind() == io::ErrorKind::AlreadyExists => last_error = Some(error),
            Err(source) => return Err(PublishError::io(&temporary, "create a symlink", source)),
        }
    }
    Err(PublishError::io(
        link,
        "find a free temporary name",
        last_error.unwrap_or_else(|| io::Error::from(io::ErrorKind::AlreadyExists)),
    ))
}

/// Replaces the folder `target` with the complete folder `staging` (a sibling): the files of
/// `staging` are made durable, the old folder is moved aside, `staging` takes its name, the
/// parent is synced and the old folder removed. A crash leaves the old or the new folder at
/// `target` (or, between the two renames, the old one at `<target>.old` for the next run).
pub fn replace_dir(staging: &Path, target: &Path) -> Result<(), PublishError> {
    let mut aside = target.as_os_str().to_owned();
    aside.push(".old");
    replace_dir_via(staging, target, Path::new(&aside))
}

/// [`replace_dir`] with the old folder moved aside to `aside` (a place of the caller's that a
/// rerun cleans, such as a staging area), on the same file system as `target`.
pub fn replace_dir_via(staging: &Path, target: &Path, aside: &Path) -> Result<(), PublishError> {
    for entry in std::fs::read_dir(staging).map_err(|e| PublishError::io(staging, "list", e))? {
        let entry = entry.map_err(|e| PublishError::io(staging, "list", e))?;
        if entry.file_type().is_ok_and(|kind| kind.is_file()) {
            sync_file(&entry.path())?;
        }
    }
    sync_dir(staging)?;
    let _ = std::fs::remove_dir_all(aside);
    let had_old = match std::fs::rename(target, aside) {
        Ok(()) => true,
        Err(error) if error.kind() == io::ErrorKind::NotFound => false,
        Err(source) => {
            return Err(PublishError::io(
                target,
                "move the old folder aside",
                source,
            ))
        }
    };
    std::fs::rename(staging, target)
        .map_err(|source| PublishError::io(target, "rename into place", source))?;
    sync_dir(parent_of(target))?;
    if had_old {
        let _ = std::fs::remove_dir_all(aside);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_tools::names;

    #[test]
    fn write_replaces_the_file_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        write(&path, b"old").unwrap();
        write(&path, b"new").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"new");
        assert_eq!(names(dir.path()), ["state.json"]);
    }

    #[test]
    fn an_uncommitted_publication_keeps_the_old_file_and_removes_its_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("disk.img");
        write(&path, b"old").unwrap();
        let publication = Publication::begin(&path).unwrap();
        (&publication.file).write_all(b"half").unwrap();
        let temporary = publication.path().to_owned();
        let name = temporary
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        assert!(
            name.starts_with(".disk.img.") && name.ends_with(TEMPORARY_SUFFIX),
            "{name}"
        );
        drop(publication);
        assert_eq!(std::fs::read(&path).unwrap(), b"old");
        assert_eq!(names(dir.path()), ["disk.img"]);
    }

    /// A temporary named like ours, its inode last changed before `started`.
    fn old_temporary(dir: &Path, name: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, b"left by kill -9").unwrap();
        path
    }

    #[test]
    fn stale_temporaries_are_swept_but_not_live_ones_nor_foreign_names() {
        let dir = tempfile::tempdir().unwrap();
        let dead = old_temporary(dir.path(), ".a.img.0badf00d.cloudimg-tmp");
        let live = old_temporary(dir.path(), ".b.img.12345678.cloudimg-tmp");
        let held = File::open(&live).unwrap();
        held.lock().unwrap();
        let not_ours = old_temporary(dir.path(), ".c.img.partial");
        let not_hidden = old_temporary(dir.path(), "d.img.cloudimg-tmp");
        // As a process that started a minute after they were made.
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        let later = now + 60;
        for path in [&dead, &live, &not_ours, &not_hidden] {
            let swept = is_temporary_name(path.file_name().unwrap())
                && remove_if_stale(path, later).unwrap();
            assert_eq!(swept, path == &dead, "{}", path.display());
        }
        assert!(!dead.exists() && live.exists() && not_ours.exists() && not_hidden.exists());
        // Made after this run started: left for its writer even when unlocked.
        let fresh = old_temporary(dir.path(), ".e.img.00000000.cloudimg-tmp");
        assert!(!remove_if_stale(&fresh, now - 60).unwrap());
        drop(held);
        assert!(remove_if_stale(&live, later).unwrap());
    }

    #[test]
    fn a_temporary_made_during_this_run_survives_a_publication_beside_it() {
        let dir = tempfile::tempdir().unwrap();
        let fresh = dir.path().join(".x.0.cloudimg-tmp");
        // Made after the run started (and so possibly by a writer about to lock it).
        let _ = *RUN_START;
        std::thread::sleep(std::time::Duration::from_millis(1100));
        std::fs::write(&fresh, b"").unwrap();
        write(&dir.path().join("y"), b"1").unwrap();
        assert!(fresh.exists(), "a temporary made during this run was swept");
    }

    #[test]
    fn outputs_that_are_not_files_are_refused_and_links_followed() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            resolve(Path::new("/dev/null")),
            Err(PublishError::NotAFile {
                what: "a character device",
                ..
            })
        ));
        assert!(write(dir.path(), b"x").is_err());
        let real = dir.path().join("real");
        let link = dir.path().join("link");
        std::os::unix::fs::symlink("real", &link).unwrap();
        assert_eq!(resolve(&link).unwrap(), Resolved::File(real.clone()));
        write(&link, b"through the link").unwrap();
        assert!(std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink());
        assert_eq!(std::fs::read(&real).unwrap(), b"through the link");
        let looped = dir.path().join("loop");
        std::os::unix::fs::symlink("loop", &looped).unwrap();
        assert!(matches!(
            resolve(&looped),
            Err(PublishError::SymlinkLoop { .. })
        ));
    }

    #[test]
    fn link_or_copy_publishes_the_same_bytes_and_tolerates_itself() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        std::fs::write(&src, b"image").unwrap();
        let dst = dir.path().join("dst");
        link_or_copy(&src, &dst).unwrap();
        assert_eq!(std::fs::read(&dst).unwrap(), b"image");
        // Publishing it again over the same inode leaves no temporary.
        link_or_copy(&src, &dst).unwrap();
        assert_eq!(names(dir.path()), ["dst", "src"]);
    }

    #[test]
    fn symlink_is_repointed_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let link = dir.path().join("current");
        replace_symlink(Path::new("a"), &link).unwrap();
        replace_symlink(Path::new("b"), &link).unwrap();
        assert_eq!(std::fs::read_link(&link).unwrap(), PathBuf::from("b"));
        assert_eq!(names(dir.path()), ["current"]);
    }

    #[test]
    fn replace_dir_swaps_whole_folders() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("pkg");
        std::fs::create_dir(&target).unwrap();
        std::fs::write(target.join("old"), b"1").unwrap();
        let staging = dir.path().join(".pkg.staging");
        std::fs::create_dir(&staging).unwrap();
        std::fs::write(staging.join("new"), b"2").unwrap();
        replace_dir(&staging, &target).unwrap();
        assert_eq!(names(&target), ["new"]);
        assert_eq!(names(dir.path()), ["pkg"]);
    }
}

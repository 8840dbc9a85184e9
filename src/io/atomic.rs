//! Replacing small files and symlinks so that readers see the old one or the new one, never a
//! half-written one: write a sibling, make it durable, rename it over the final name.

use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// A hidden sibling of `path` named for `purpose` (`.state.json.partial`).
fn sibling(path: &Path, purpose: &str) -> io::Result<PathBuf> {
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "the path has no file name"))?;
    let mut temporary = std::ffi::OsString::from(".");
    temporary.push(name);
    temporary.push(purpose);
    Ok(path.with_file_name(temporary))
}

/// Writes `bytes` to `path` through a synced temporary sibling; the temporary is removed when
/// anything fails.
pub fn write(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let temporary = sibling(path, ".partial")?;
    let written = File::create(&temporary).and_then(|mut file| {
        file.write_all(bytes)?;
        file.sync_all()
    });
    let result = written.and_then(|()| std::fs::rename(&temporary, path));
    if result.is_err() {
        let _ = std::fs::remove_file(&temporary);
    }
    result
}

/// Points the symlink `link` at `target` in one rename (a new link over the old one).
pub fn replace_symlink(target: &Path, link: &Path) -> io::Result<()> {
    let temporary = sibling(link, ".link")?;
    let _ = std::fs::remove_file(&temporary);
    std::os::unix::fs::symlink(target, &temporary)?;
    std::fs::rename(&temporary, link)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_replaces_the_file_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        write(&path, b"old").unwrap();
        write(&path, b"new").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"new");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn failed_write_keeps_the_old_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        write(&path, b"old").unwrap();
        // A directory where the temporary would go makes the write fail.
        std::fs::create_dir(dir.path().join(".state.json.partial")).unwrap();
        assert!(write(&path, b"new").is_err());
        assert_eq!(std::fs::read(&path).unwrap(), b"old");
    }

    #[test]
    fn symlink_is_repointed_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let link = dir.path().join("current");
        replace_symlink(Path::new("a"), &link).unwrap();
        replace_symlink(Path::new("b"), &link).unwrap();
        assert_eq!(std::fs::read_link(&link).unwrap(), PathBuf::from("b"));
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}

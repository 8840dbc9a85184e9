//! The tree on disk: paths from upstream kept inside the root, documents written atomically
//! (unchanged ones left alone), aliases, and removal of what retention gave up.

use super::*;

impl Run<'_> {
    /// Removes a file of the tree given up by every entry, then the folders that held only it
    /// and their checksum files and pages (aliases and folders of other entries stop this).
    pub(super) fn remove(&self, rel: &str) -> Result<(), MirrorError> {
        let path = self.dir.join(safe_relative(rel, "retained file")?);
        remove_if_present(&path)?;
        let mut folder = path.parent();
        while let Some(current) = folder.filter(|f| *f != self.dir && f.starts_with(self.dir)) {
            match holds_content(current, &self.bookkeeping) {
                Ok(true) => break,
                Ok(false) => std::fs::remove_dir_all(current).map_err(io_error(current))?,
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
                Err(error) => return Err(io_error(current)(error)),
            }
            folder = current.parent();
        }
        Ok(())
    }
}

/// Points a release folder's alias (`release/`, `current/`) at its newest serial folder, or
/// removes it when none is left.
pub(super) fn point_alias(place: &AliasPlace) -> Result<(), MirrorError> {
    let Some(alias) = &place.name else {
        return Ok(());
    };
    let link = place.release_dir.join(alias);
    let folders = serial_folders(&place.release_dir, &place.serial_dir, place.separator)?;
    let mut serials: Vec<String> = folders.iter().map(|(s, _)| s.clone()).collect();
    sort_serials_newest_first(&mut serials, place.separator);
    let newest = serials
        .first()
        .and_then(|serial| folders.iter().find(|(s, _)| s == serial))
        .map(|(_, folder)| folder);
    match newest {
        Some(folder) => {
            if std::fs::read_link(&link).ok().as_deref() != Some(Path::new(folder)) {
                replace_symlink(Path::new(folder), &link)?;
            }
        }
        None => remove_if_present(&link)?,
    }
    Ok(())
}

/// Whether a folder holds anything but checksum files, signatures, pages and hidden files:
/// an image, a link (an alias), or such a folder.
pub(super) fn holds_content(
    folder: &Path,
    bookkeeping: &BTreeSet<String>,
) -> std::io::Result<bool> {
    for item in std::fs::read_dir(folder)? {
        let item = item?;
        let name = item.file_name().to_string_lossy().into_owned();
        let kind = item.file_type()?;
        if kind.is_dir() {
            if holds_content(&item.path(), bookkeeping)? {
                return Ok(true);
            }
        } else if !name.starts_with('.') && !bookkeeping.contains(&name) {
            return Ok(true);
        }
    }
    Ok(false)
}

/// A relative folder or file path from a catalog or an upstream document, as a path that stays
/// under the mirror root: no empty, `.`, `..` or hidden segments, no absolute paths.
pub(super) fn safe_relative(text: &str, what: &'static str) -> Result<PathBuf, MirrorError> {
    let unsafe_path = || MirrorError::UnsafePath {
        what,
        value: text.to_owned(),
    };
    let trimmed = text.strip_suffix('/').unwrap_or(text);
    let mut path = PathBuf::new();
    if trimmed.is_empty() {
        return Ok(path);
    }
    for segment in trimmed.split('/') {
        path.push(safe_name(segment).map_err(|_| unsafe_path())?);
    }
    Ok(path)
}

/// One path segment from an upstream document: a plain, visible name.
pub(super) fn safe_name(name: &str) -> Result<&str, MirrorError> {
    let plain = !name.is_empty()
        && !name.starts_with('.')
        && name != INDEX_PAGE
        && !name.contains(['/', '\\', '\0']);
    if plain {
        Ok(name)
    } else {
        Err(MirrorError::UnsafePath {
            what: "file name",
            value: name.to_owned(),
        })
    }
}

/// Writes `bytes` to a hidden temporary name beside `path`, then renames it over `path`. Same
/// bytes already there are left alone, so reruns keep modification times (and `rsync` of the
/// tree to the lab side has nothing to do).
pub(super) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), MirrorError> {
    // Unchanged documents keep their mtime, so rsync and conditional requests see no change.
    if read_own(path).ok().flatten().as_deref() == Some(bytes) {
        return Ok(());
    }
    let parent = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(io_error(parent))?;
    crate::io::publish::write(path, bytes).map_err(io_error(path))
}

pub(super) fn remove_if_present(path: &Path) -> Result<(), MirrorError> {
    match std::fs::remove_file(path) {
        Err(error) if error.kind() != std::io::ErrorKind::NotFound => Err(io_error(path)(error)),
        _ => Ok(()),
    }
}

/// (Re)points the symlink `link` at `target`, atomically (a new link renamed over the old).
pub(super) fn replace_symlink(target: &Path, link: &Path) -> Result<(), MirrorError> {
    let parent = link.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(io_error(parent))?;
    crate::io::publish::replace_symlink(target, link).map_err(io_error(link))
}

/// A JSON document this tool wrote earlier; `None` when absent.
pub(super) fn read_own_json(path: &Path) -> Result<Option<Value>, MirrorError> {
    let Some(bytes) = read_own(path).map_err(io_error(path))? else {
        return Ok(None);
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|source| MirrorError::OwnJson {
            path: path.to_owned(),
            source,
        })
}

/// A file of the tree, size-bounded; `None` when absent.
pub(super) fn read_own(path: &Path) -> std::io::Result<Option<Vec<u8>>> {
    let file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(error),
    };
    let mut bytes = Vec::new();
    file.take(MAX_OWN_DOCUMENT + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_OWN_DOCUMENT {
        return Err(std::io::Error::other(format!(
            "larger than {MAX_OWN_DOCUMENT} bytes"
        )));
    }
    Ok(Some(bytes))
}

//! The publish tree: `ROOT/<name>/<serial>/` folders, the `ROOT/<name>/current` symlink, and
//! the hidden work areas (`ROOT/.staging/`, `ROOT/.downloads/`).
//!
//! Readers only ever see complete serials: a serial is built in staging and renamed into place,
//! and `current` is switched by renaming a new symlink over the old one.

use std::path::{Path, PathBuf};

use super::SyncError;
use crate::catalog::DigestAlgorithm;
use crate::container::glance::{ImageMetadata, METADATA_SUFFIX};
use crate::io::hashing::{self, ContentHasher};

/// The `current` symlink's name in each image folder.
pub const CURRENT: &str = "current";
/// Where serials are assembled before being renamed into place.
pub const STAGING: &str = ".staging";
/// Where upstream files are downloaded (and resumed from after a kill): one folder per upstream
/// build, shared by the entries built from it.
pub const DOWNLOADS: &str = ".downloads";

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SyncError + '_ {
    move |source| SyncError::Io {
        path: path.to_owned(),
        source,
    }
}

/// The folders of one image in the publish tree.
#[derive(Clone, Debug)]
pub struct ImageTree {
    pub root: PathBuf,
    pub name: String,
}

impl ImageTree {
    pub fn new(root: &Path, name: &str) -> ImageTree {
        ImageTree {
            root: root.to_owned(),
            name: name.to_owned(),
        }
    }

    pub fn dir(&self) -> PathBuf {
        self.root.join(&self.name)
    }

    pub fn serial_dir(&self, serial: &str) -> PathBuf {
        self.dir().join(serial)
    }

    pub fn staging_dir(&self, serial: &str) -> PathBuf {
        self.root
            .join(STAGING)
            .join(format!("{}-{serial}", self.name))
    }

    /// The serial `current` points to, if any.
    pub fn current(&self) -> Option<String> {
        let target = std::fs::read_link(self.dir().join(CURRENT)).ok()?;
        target
            .file_name()
            .and_then(|name| name.to_str())
            .map(str::to_owned)
    }

    /// Published serial folders (any order).
    pub fn serials(&self) -> Result<Vec<String>, SyncError> {
        let dir = self.dir();
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(error) => return Err(io(&dir)(error)),
        };
        let mut serials = Vec::new();
        for entry in entries {
            let entry = entry.map_err(io(&dir))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let is_dir = entry.file_type().map_err(io(&dir))?.is_dir();
            if is_dir && !name.starts_with('.') {
                serials.push(name);
            }
        }
        Ok(serials)
    }

    /// Moves a finished staging folder to `<name>/<serial>/`. A folder already there (a serial
    /// published but not verified, say) is moved aside first and removed after.
    pub fn publish(&self, staging: &Path, serial: &str) -> Result<PathBuf, SyncError> {
        let dir = self.dir();
        std::fs::create_dir_all(&dir).map_err(io(&dir))?;
        let target = self.serial_dir(serial);
        let aside = self
            .root
            .join(STAGING)
            .join(format!("{}-{serial}.replaced", self.name));
        crate::io::publish::replace_dir_via(staging, &target, &aside)
            .map_err(|e| io(&target)(e.into()))?;
        Ok(target)
    }

    /// Points `current` at `serial` in one rename.
    pub fn switch_current(&self, serial: &str) -> Result<(), SyncError> {
        let dir = self.dir();
        let link = dir.join(CURRENT);
        crate::io::publish::replace_symlink(Path::new(serial), &link).map_err(io(&link))?;
        sync_dir(&dir)
    }

    /// Removes serial folders beyond the newest `keep` (by `order`, newest first), never the
    /// one `current` points to. Returns the removed serials.
    pub fn prune(
        &self,
        keep: usize,
        order: impl Fn(&mut [String]),
        dry_run: bool,
    ) -> Result<Vec<String>, SyncError> {
        let mut serials = self.serials()?;
        order(&mut serials);
        let current = self.current();
        let mut removed = Vec::new();
        for serial in serials.into_iter().skip(keep) {
            if current.as_deref() == Some(serial.as_str()) {
                continue;
            }
            if !dry_run {
                let path = self.serial_dir(&serial);
                std::fs::remove_dir_all(&path).map_err(io(&path))?;
            }
            removed.push(serial);
        }
        Ok(removed)
    }
}

/// Makes renames in `dir` durable.
fn sync_dir(dir: &Path) -> Result<(), SyncError> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io(dir))
}

/// The metadata files of a published serial: in the folder and one level below (an OVF
/// package's folder).
pub fn metadata_files(dir: &Path) -> Result<Vec<PathBuf>, SyncError> {
    let mut found = Vec::new();
    let mut folders = vec![(dir.to_owned(), 0)];
    while let Some((folder, depth)) = folders.pop() {
        for entry in std::fs::read_dir(&folder).map_err(io(&folder))? {
            let entry = entry.map_err(io(&folder))?;
            let path = entry.path();
            let file_type = entry.file_type().map_err(io(&path))?;
            if file_type.is_dir() && depth == 0 {
                folders.push((path, depth + 1));
            } else if file_type.is_file()
                && path
                    .file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.ends_with(METADATA_SUFFIX))
            {
                found.push(path);
            }
        }
    }
    found.sort();
    Ok(found)
}

/// Whether a published serial is whole: it has metadata, and every artifact it describes has
/// the recorded size and SHA-256; or it is an OCI layout (a containerDisk) whose blobs match
/// their digests.
pub fn verify_serial(dir: &Path) -> Result<bool, SyncError> {
    if !dir.is_dir() {
        return Ok(false);
    }
    if crate::oci::layout::Layout::is_layout(dir) {
        // A containerDisk: the layout's documents and blobs must match their digests.
        return Ok(crate::oci::layout::Layout::open(dir, None)
            .and_then(|layout| layout.blobs_match())
            .unwrap_or_else(|error| {
                tracing::warn!(path = %dir.display(), %error, "published layout does not verify");
                false
            }));
    }
    let files = metadata_files(dir)?;
    if files.is_empty() {
        return Ok(false);
    }
    for metadata_path in files {
        let metadata = match ImageMetadata::read(&metadata_path) {
            Ok(metadata) => metadata,
            Err(error) => {
                tracing::warn!(path = %metadata_path.display(), %error, "unreadable metadata");
                return Ok(false);
            }
        };
        let folder = metadata_path.parent().unwrap_or(dir);
        let artifact = folder.join(&metadata.file);
        if metadata.file.contains('/') || !artifact.is_file() {
            return Ok(false);
        }
        let size = std::fs::metadata(&artifact).map_err(io(&artifact))?.len();
        if size != metadata.digests.size || sha256_file(&artifact)? != metadata.digests.sha256 {
            tracing::warn!(path = %artifact.display(), "published artifact does not match its metadata");
            return Ok(false);
        }
    }
    Ok(true)
}

/// What an entry asks of its published serial beyond its bytes.
pub struct Wanted {
    /// The `[image.bake]` recipe's digest; `None` for an entry that is not baked.
    pub recipe_digest: Option<String>,
    /// A containerDisk's OCI architectures, sorted; `None` for other entries.
    pub oci_arches: Option<Vec<String>>,
}

impl Wanted {
    /// What of it the serial in `dir` was built otherwise ("the recipe", "the architectures"),
    /// `None` when it was built as wanted. Blocking.
    pub fn changed(&self, dir: &Path) -> Result<Option<&'static str>, SyncError> {
        if recipe_digest(dir)? != self.recipe_digest {
            return Ok(Some("the recipe"));
        }
        let arches = self.oci_arches.as_ref();
        if arches.is_some_and(|wanted| layout_arches(dir).is_some_and(|held| held != *wanted)) {
            return Ok(Some("the architectures"));
        }
        Ok(None)
    }
}

/// The recipe digest a published serial was baked with (its artifacts' metadata property
/// `cloudimg_recipe_sha256`); `None` when it was not baked. Blocking.
fn recipe_digest(dir: &Path) -> Result<Option<String>, SyncError> {
    for metadata_path in metadata_files(dir)? {
        if let Ok(metadata) = ImageMetadata::read(&metadata_path) {
            let digest = metadata
                .properties
                .get(crate::pipeline::RECIPE_DIGEST_PROPERTY)
                .and_then(|value| value.as_str());
            if let Some(digest) = digest {
                return Ok(Some(digest.to_owned()));
            }
        }
    }
    Ok(None)
}

/// The OCI architectures a published containerDisk serial holds, sorted; `None` when `dir` is
/// not an OCI layout or cannot be read (then [`verify_serial`] says so). Blocking.
fn layout_arches(dir: &Path) -> Option<Vec<String>> {
    if !crate::oci::layout::Layout::is_layout(dir) {
        return None;
    }
    let layout = crate::oci::layout::Layout::open(dir, None).ok()?;
    let mut arches = layout.architectures().ok()?;
    arches.sort();
    Some(arches)
}

fn sha256_file(path: &Path) -> Result<String, SyncError> {
    let mut file = std::fs::File::open(path).map_err(io(path))?;
    let mut hasher = ContentHasher::new(DigestAlgorithm::Sha256);
    hashing::hash_reader(&mut file, &mut hasher).map_err(io(path))?;
    Ok(hashing::finish(hasher).to_hex())
}

/// Free bytes for unprivileged users on the filesystem holding `path`.
pub fn free_space(path: &Path) -> Result<u64, SyncError> {
    crate::io::sys::available_bytes(path).map_err(io(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn newest_first(serials: &mut [String]) {
        serials.sort_by(|a, b| b.cmp(a));
    }

    #[test]
    fn switching_current_replaces_the_link_in_place() {
        let root = tempfile::tempdir().unwrap();
        let tree = ImageTree::new(root.path(), "noble");
        for serial in ["20240821", "20241004"] {
            std::fs::create_dir_all(tree.serial_dir(serial)).unwrap();
            tree.switch_current(serial).unwrap();
            assert_eq!(tree.current().as_deref(), Some(serial));
        }
        let link = std::fs::read_link(tree.dir().join(CURRENT)).unwrap();
        assert_eq!(
            link,
            PathBuf::from("20241004"),
            "relative, so the tree can move"
        );
    }

    #[test]
    fn prune_keeps_the_newest_and_never_current() {
        let root = tempfile::tempdir().unwrap();
        let tree = ImageTree::new(root.path(), "noble");
        for serial in ["20240101", "20240201", "20240301", "20240401"] {
            std::fs::create_dir_all(tree.serial_dir(serial)).unwrap();
        }
        // A rollback left current on an old serial: it survives retention.
        tree.switch_current("20240101").unwrap();
        let planned = tree.prune(2, newest_first, true).unwrap();
        assert_eq!(planned, ["20240201"]);
        assert_eq!(tree.serials().unwrap().len(), 4, "dry run removes nothing");
        let removed = tree.prune(2, newest_first, false).unwrap();
        assert_eq!(removed, ["20240201"]);
        let mut left = tree.serials().unwrap();
        left.sort();
        assert_eq!(left, ["20240101", "20240301", "20240401"]);
    }

    #[test]
    fn serial_without_metadata_does_not_verify() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("20240821");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("disk.qcow2"), b"x").unwrap();
        assert!(!verify_serial(&dir).unwrap());
    }

    #[test]
    fn serial_with_a_changed_artifact_does_not_verify() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("20240821");
        std::fs::create_dir_all(&dir).unwrap();
        let artifact = dir.join("disk.qcow2");
        std::fs::write(&artifact, b"disk bytes").unwrap();
        let metadata = ImageMetadata::for_file(
            &artifact,
            "n",
            crate::glance::DiskFormat::Qcow2,
            crate::glance::ContainerFormat::Bare,
            10,
        )
        .unwrap();
        metadata.write_beside(&artifact).unwrap();
        assert!(verify_serial(&dir).unwrap());
        std::fs::write(&artifact, b"disk bytez").unwrap();
        assert!(!verify_serial(&dir).unwrap());
    }

    #[test]
    fn free_space_of_a_temporary_folder_is_known() {
        let root = tempfile::tempdir().unwrap();
        assert!(free_space(root.path()).unwrap() > 0);
    }
}

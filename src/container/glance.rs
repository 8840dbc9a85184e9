//! `<artifact>.glance.json`: what an operator (or `openstack image create`) needs to upload an
//! artifact, with the digests Glance will report so an upload can be checked.

use std::path::{Path, PathBuf};

use super::ContainerError;
use crate::glance::{ContainerFormat, DiskFormat};
pub use crate::io::digests::Digests;

/// Hashes a finished file once, streaming, for all three digests ([`crate::io::digests`]).
/// Artifacts a conversion writes are hashed as they are written instead; this serves files
/// that were not produced here (a hard-linked download, a seed ISO).
pub fn digests(path: &Path) -> Result<Digests, ContainerError> {
    let mut file = std::fs::File::open(path).map_err(|e| ContainerError::io(path, "open", e))?;
    crate::io::digests::digest_reader(&mut file).map_err(|e| ContainerError::io(path, "read", e))
}

/// Glance image metadata for one artifact, as written to `<artifact>.glance.json` and read back
/// by `upload`.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct ImageMetadata {
    pub name: String,
    pub disk_format: DiskFormat,
    pub container_format: ContainerFormat,
    /// GiB, rounded up from the virtual size.
    pub min_disk: u64,
    /// MiB.
    pub min_ram: u64,
    pub visibility: String,
    pub tags: Vec<String>,
    /// Glance image properties (`os_distro`, `architecture`, `hw_*`, provenance…), all strings.
    pub properties: serde_json::Map<String, serde_json::Value>,
    /// The artifact's file name, in the directory of the metadata file.
    pub file: String,
    pub digests: Digests,
    /// ami only: the artifact file of the kernel (aki) whose Glance id becomes `kernel_id`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel: Option<String>,
    /// ami only: the artifact file of the ramdisk (ari) whose Glance id becomes `ramdisk_id`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ramdisk: Option<String>,
    /// The equivalent `openstack image create` command line (informative; rendered on write).
    #[serde(default)]
    pub openstack_command: String,
}

/// What `<artifact>.glance.json` is called.
pub fn metadata_path(artifact: &Path) -> PathBuf {
    let mut name = artifact.as_os_str().to_owned();
    name.push(METADATA_SUFFIX);
    PathBuf::from(name)
}

/// Suffix of the metadata file written beside each artifact.
pub const METADATA_SUFFIX: &str = ".glance.json";

impl ImageMetadata {
    /// Metadata for `artifact` with its digests computed now; private, no properties yet.
    pub fn for_file(
        artifact: &Path,
        name: &str,
        disk_format: DiskFormat,
        container_format: ContainerFormat,
        virtual_size: u64,
    ) -> Result<ImageMetadata, ContainerError> {
        let digests = digests(artifact)?;
        Ok(ImageMetadata::with_digests(
            artifact,
            name,
            disk_format,
            container_format,
            virtual_size,
            digests,
        ))
    }

    /// Metadata for `artifact` whose digests were computed as it was written.
    pub fn with_digests(
        artifact: &Path,
        name: &str,
        disk_format: DiskFormat,
        container_format: ContainerFormat,
        virtual_size: u64,
        digests: Digests,
    ) -> ImageMetadata {
        let file = artifact
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        ImageMetadata {
            name: name.to_owned(),
            disk_format,
            container_format,
            min_disk: virtual_size.div_ceil(1 << 30),
            min_ram: 0,
            visibility: "private".to_owned(),
            tags: Vec::new(),
            properties: serde_json::Map::new(),
            file,
            digests,
            kernel: None,
            ramdisk: None,
            openstack_command: String::new(),
        }
    }

    /// Sets a string property.
    pub fn set_property(&mut self, key: &str, value: impl Into<String>) {
        self.properties
            .insert(key.to_owned(), serde_json::Value::String(value.into()));
    }

    /// The `openstack image create` command line that uploads the same image with the same
    /// metadata (kernel and ramdisk ids are placeholders naming their artifacts).
    pub fn render_openstack_command(&self) -> String {
        let mut words = vec![
            "openstack image create".to_owned(),
            format!("--disk-format {}", self.disk_format),
            format!("--container-format {}", self.container_format),
            format!("--min-disk {}", self.min_disk),
        ];
        if self.min_ram > 0 {
            words.push(format!("--min-ram {}", self.min_ram));
        }
        words.push(format!("--{}", shell_quote(&self.visibility)));
        for tag in &self.tags {
            words.push(format!("--tag {}", shell_quote(tag)));
        }
        for (key, value) in &self.properties {
            let value = match value {
                serde_json::Value::String(text) => text.clone(),
                other => other.to_string(),
            };
            words.push(format!(
                "--property {}",
                shell_quote(&format!("{key}={value}"))
            ));
        }
        for (key, file) in [("kernel_id", &self.kernel), ("ramdisk_id", &self.ramdisk)] {
            if let Some(file) = file {
                words.push(format!(
                    "--property {key}=\"<id of {}>\"",
                    file.replace('"', "")
                ));
            }
        }
        words.push(format!("--file {}", shell_quote(&self.file)));
        words.push(shell_quote(&self.name));
        words.join(" ")
    }

    /// Writes `<artifact>.glance.json` beside the artifact (temporary name, then rename).
    pub fn write_beside(&self, artifact: &Path) -> Result<PathBuf, ContainerError> {
        let path = metadata_path(artifact);
        let rendered = ImageMetadata {
            openstack_command: self.render_openstack_command(),
            ..self.clone()
        };
        let text = serde_json::to_string_pretty(&rendered)
            .map_err(|e| ContainerError::io(&path, "serialise", std::io::Error::other(e)))?;
        crate::io::publish::write(&path, (text + "\n").as_bytes())
            .map_err(|e| ContainerError::io(&path, "write", e))?;
        Ok(path)
    }

    /// Reads a metadata file written by [`ImageMetadata::write_beside`].
    pub fn read(path: &Path) -> Result<ImageMetadata, ContainerError> {
        let text =
            std::fs::read_to_string(path).map_err(|e| ContainerError::io(path, "read", e))?;
        serde_json::from_str(&text).map_err(|e| {
            ContainerError::invalid(
                "Glance metadata file",
                path.display().to_string(),
                e.to_string(),
            )
        })
    }
}

/// Quotes a word for a POSIX shell when it needs it.
fn shell_quote(word: &str) -> String {
    if !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.,:/+=@".contains(c))
    {
        word.to_owned()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::digests::HASH_BLOCK;
    use md5::Md5;
    use sha2::{Digest, Sha256, Sha512};

    #[test]
    fn digests_match_known_vectors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("abc");
        std::fs::write(&path, b"abc").unwrap();
        let d = digests(&path).unwrap();
        assert_eq!(d.size, 3);
        assert_eq!(d.md5, "900150983cd24fb0d6963f7d28e17f72");
        assert_eq!(
            d.sha256,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert!(d.sha512.starts_with("ddaf35a193617aba"));
    }

    #[test]
    fn digests_span_blocks_like_one_pass_hashing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("blocks");
        // Two and a half blocks, no two alike, so a lost or reordered block changes every digest.
        let bytes: Vec<u8> = (0..HASH_BLOCK * 5 / 2).map(|i| (i % 251) as u8).collect();
        std::fs::write(&path, &bytes).unwrap();
        let d = digests(&path).unwrap();
        assert_eq!(d.size, bytes.len() as u64);
        assert_eq!(d.md5, hex::encode(Md5::digest(&bytes)));
        assert_eq!(d.sha256, hex::encode(Sha256::digest(&bytes)));
        assert_eq!(d.sha512, hex::encode(Sha512::digest(&bytes)));
    }

    #[test]
    fn metadata_rounds_min_disk_up_and_quotes_the_command() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("seed.iso");
        std::fs::write(&path, b"x").unwrap();
        let mut meta = ImageMetadata::for_file(
            &path,
            "my seed",
            crate::glance::DiskFormat::Iso,
            crate::glance::ContainerFormat::Bare,
            (1 << 30) + 1,
        )
        .unwrap();
        meta.set_property("os_distro", "ubuntu");
        assert_eq!(meta.min_disk, 2);
        let command = meta.render_openstack_command();
        assert!(command.contains("--property os_distro=ubuntu"), "{command}");
        assert!(command.ends_with("--file seed.iso 'my seed'"), "{command}");
        let written = meta.write_beside(&path).unwrap();
        assert_eq!(ImageMetadata::read(&written).unwrap().digests, meta.digests);
        assert!(written.ends_with("seed.iso.glance.json"));
        let value: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(written).unwrap()).unwrap();
        assert_eq!(value["disk_format"], "iso");
        assert_eq!(value["digests"]["md5"], "9dd4e461268c8034f5c8564e155c67a6");
    }
}

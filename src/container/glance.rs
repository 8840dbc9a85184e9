//! `<artifact>.glance.json`: what an operator (or `openstack image create`) needs to upload an
//! artifact, with the digests Glance will report so an upload can be checked.

use std::io::Read;
use std::path::Path;

use md5::Md5;
use sha2::{Digest, Sha256, Sha512};

use super::ContainerError;

/// Digests of the bytes Glance will receive: `checksum` (MD5), `os_hash_value` (SHA-512), and
/// our SHA-256.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Digests {
    pub size: u64,
    pub md5: String,
    pub sha256: String,
    pub sha512: String,
}

/// Hashes a file once, streaming, for all three digests.
pub fn digests(path: &Path) -> Result<Digests, ContainerError> {
    let mut file = std::fs::File::open(path).map_err(|e| ContainerError::io(path, "open", e))?;
    let (mut md5, mut sha256, mut sha512) = (Md5::new(), Sha256::new(), Sha512::new());
    let mut buffer = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = file
            .read(&mut buffer)
            .map_err(|e| ContainerError::io(path, "read", e))?;
        if n == 0 {
            break;
        }
        md5.update(&buffer[..n]);
        sha256.update(&buffer[..n]);
        sha512.update(&buffer[..n]);
        size += n as u64;
    }
    Ok(Digests {
        size,
        md5: hex::encode(md5.finalize()),
        sha256: hex::encode(sha256.finalize()),
        sha512: hex::encode(sha512.finalize()),
    })
}

/// Glance image metadata for one artifact.
#[derive(Clone, Debug, serde::Serialize)]
pub struct ImageMetadata {
    pub name: String,
    pub disk_format: String,
    pub container_format: String,
    /// GiB, rounded up from the virtual size.
    pub min_disk: u64,
    pub min_ram: u64,
    pub visibility: String,
    pub tags: Vec<String>,
    pub properties: serde_json::Map<String, serde_json::Value>,
    pub file: String,
    pub digests: Digests,
    /// The equivalent `openstack image create` command line.
    pub openstack_command: String,
}

impl ImageMetadata {
    /// Metadata for `artifact` with its digests computed now.
    pub fn for_file(
        artifact: &Path,
        name: &str,
        disk_format: &str,
        container_format: &str,
        virtual_size: u64,
    ) -> Result<ImageMetadata, ContainerError> {
        let digests = digests(artifact)?;
        let file = artifact
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let min_disk = virtual_size.div_ceil(1 << 30);
        let openstack_command = format!(
            "openstack image create --disk-format {disk_format} --container-format \
             {container_format} --min-disk {min_disk} --file {} {}",
            shell_quote(&file),
            shell_quote(name)
        );
        Ok(ImageMetadata {
            name: name.to_owned(),
            disk_format: disk_format.to_owned(),
            container_format: container_format.to_owned(),
            min_disk,
            min_ram: 0,
            visibility: "private".to_owned(),
            tags: Vec::new(),
            properties: serde_json::Map::new(),
            file,
            digests,
            openstack_command,
        })
    }

    /// Writes `<artifact>.glance.json` beside the artifact (temporary name, then rename).
    pub fn write_beside(&self, artifact: &Path) -> Result<std::path::PathBuf, ContainerError> {
        let mut name = artifact.as_os_str().to_owned();
        name.push(".glance.json");
        let path = std::path::PathBuf::from(name);
        let mut partial = path.as_os_str().to_owned();
        partial.push(".partial");
        let partial = std::path::PathBuf::from(partial);
        let text = serde_json::to_string_pretty(self)
            .map_err(|e| ContainerError::io(&path, "serialise", std::io::Error::other(e)))?;
        std::fs::write(&partial, text + "\n")
            .and_then(|()| std::fs::rename(&partial, &path))
            .map_err(|e| ContainerError::io(&path, "write", e))?;
        Ok(path)
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
    fn metadata_rounds_min_disk_up_and_quotes_the_command() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("seed.iso");
        std::fs::write(&path, b"x").unwrap();
        let meta = ImageMetadata::for_file(&path, "my seed", "iso", "bare", (1 << 30) + 1).unwrap();
        assert_eq!(meta.min_disk, 2);
        assert!(meta
            .openstack_command
            .ends_with("--file seed.iso 'my seed'"));
        let written = meta.write_beside(&path).unwrap();
        assert!(written.ends_with("seed.iso.glance.json"));
        let value: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(written).unwrap()).unwrap();
        assert_eq!(value["disk_format"], "iso");
        assert_eq!(value["digests"]["md5"], "9dd4e461268c8034f5c8564e155c67a6");
    }
}

//! The OVF manifest (`.mf`): one `ALGO(name)= hex` line per file of the package (DSP0243 5.1).
//!
//! Digests are computed by streaming each file through a fixed buffer, never by loading it.

use std::fs::File;
use std::io::Read;
use std::path::Path;

use sha1::Sha1;
use sha2::{Digest, Sha256};

use super::{check_member_name, ContainerError};

/// Read size while hashing: large enough to keep the hasher busy, small enough to not matter.
const HASH_BUFFER: usize = 64 * 1024;

/// The digest algorithm of a manifest. SHA-256 is OVF 2.x and current VMware's default; older
/// VMware products (ESXi before 6.5, Workstation before 12) only accept SHA-1.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ManifestHash {
    Sha256,
    Sha1,
}

impl ManifestHash {
    /// Parses `sha256` or `sha1`, case-insensitively (the `--manifest-hash` words).
    pub fn from_name(name: &str) -> Result<ManifestHash, ContainerError> {
        match name.to_ascii_lowercase().as_str() {
            "sha256" => Ok(ManifestHash::Sha256),
            "sha1" => Ok(ManifestHash::Sha1),
            _ => Err(ContainerError::invalid(
                "manifest hash",
                name,
                "expected sha256 or sha1",
            )),
        }
    }

    /// The algorithm's name as written in manifest lines.
    pub fn label(self) -> &'static str {
        match self {
            ManifestHash::Sha256 => "SHA256",
            ManifestHash::Sha1 => "SHA1",
        }
    }
}

/// Where a manifest entry's bytes come from: the descriptor is in memory, disks are files.
#[derive(Clone, Copy, Debug)]
pub enum Source<'a> {
    Bytes(&'a [u8]),
    File(&'a Path),
}

/// One manifest line, newline included: `SHA256(disk.vmdk)= 0123…`.
pub fn line(hash: ManifestHash, name: &str, hex_digest: &str) -> String {
    format!("{}({})= {}\n", hash.label(), name, hex_digest)
}

/// The manifest for `entries`, in the given order (the package's order: descriptor first, then
/// the files of its References).
pub fn manifest(hash: ManifestHash, entries: &[(&str, Source)]) -> Result<String, ContainerError> {
    let mut text = String::new();
    for &(name, source) in entries {
        check_member_name(name)?;
        let digest = match source {
            Source::Bytes(bytes) => digest_reader(hash, bytes, Path::new(name))?,
            Source::File(path) => {
                let file = File::open(path).map_err(|e| ContainerError::io(path, "open", e))?;
                digest_reader(hash, file, path)?
            }
        };
        text.push_str(&line(hash, name, &digest));
    }
    Ok(text)
}

/// Hex digest of everything `reader` yields; `path` only names it in errors.
fn digest_reader(
    hash: ManifestHash,
    reader: impl Read,
    path: &Path,
) -> Result<String, ContainerError> {
    match hash {
        ManifestHash::Sha256 => stream::<Sha256>(reader, path),
        ManifestHash::Sha1 => stream::<Sha1>(reader, path),
    }
}

fn stream<D: Digest>(mut reader: impl Read, path: &Path) -> Result<String, ContainerError> {
    let mut hasher = D::new();
    let mut buffer = vec![0u8; HASH_BUFFER];
    loop {
        match reader.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => hasher.update(buffer.get(..n).unwrap_or_default()),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(ContainerError::io(path, "read", e)),
        }
    }
    Ok(hex::encode(hasher.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_tools::oracle;

    /// FIPS 180-2 test vectors for "abc".
    const ABC_SHA256: &str = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
    const ABC_SHA1: &str = "a9993e364706816aba3e25717850c26c9cd0d89d";

    #[test]
    fn lines_have_the_ovf_shape() {
        assert_eq!(
            line(ManifestHash::Sha256, "a.ovf", "00ff"),
            "SHA256(a.ovf)= 00ff\n"
        );
        assert_eq!(
            line(ManifestHash::Sha1, "b.vmdk", "ab"),
            "SHA1(b.vmdk)= ab\n"
        );
    }

    #[test]
    fn in_memory_entries_use_the_test_vectors() {
        let sha256 = manifest(ManifestHash::Sha256, &[("x.ovf", Source::Bytes(b"abc"))]).unwrap();
        assert_eq!(sha256, format!("SHA256(x.ovf)= {ABC_SHA256}\n"));
        let sha1 = manifest(ManifestHash::Sha1, &[("x.ovf", Source::Bytes(b"abc"))]).unwrap();
        assert_eq!(sha1, format!("SHA1(x.ovf)= {ABC_SHA1}\n"));
    }

    #[test]
    fn files_are_hashed_like_sha256sum() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("disk.vmdk");
        // Several buffers plus a partial one.
        let data: Vec<u8> = (0..(3 * HASH_BUFFER + 17))
            .map(|i| (i * 7 % 256) as u8)
            .collect();
        std::fs::write(&path, &data).unwrap();
        let text = manifest(
            ManifestHash::Sha256,
            &[
                ("a.ovf", Source::Bytes(b"abc")),
                ("disk.vmdk", Source::File(&path)),
            ],
        )
        .unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0], format!("SHA256(a.ovf)= {ABC_SHA256}"));
        let Some(sha256sum) = oracle("sha256sum") else {
            return;
        };
        let out = sha256sum.run([&path]).stdout;
        let expected = String::from_utf8_lossy(&out)
            .split_whitespace()
            .next()
            .unwrap()
            .to_owned();
        assert_eq!(lines[1], format!("SHA256(disk.vmdk)= {expected}"));
    }

    #[test]
    fn missing_file_is_an_io_error_naming_it() {
        let err = manifest(
            ManifestHash::Sha1,
            &[("d.vmdk", Source::File(Path::new("/nonexistent/d.vmdk")))],
        )
        .unwrap_err();
        assert!(err.to_string().contains("/nonexistent/d.vmdk"), "{err}");
    }

    #[test]
    fn names_that_would_break_the_line_are_refused() {
        for name in ["a)b", "a\nb", "", "dir/a"] {
            assert!(
                manifest(ManifestHash::Sha256, &[(name, Source::Bytes(b""))]).is_err(),
                "{name:?}"
            );
        }
    }

    #[test]
    fn hash_names_parse() {
        assert_eq!(
            ManifestHash::from_name("SHA1").ok(),
            Some(ManifestHash::Sha1)
        );
        assert_eq!(
            ManifestHash::from_name("sha256").ok(),
            Some(ManifestHash::Sha256)
        );
        assert!(ManifestHash::from_name("md5").is_err());
    }
}

//! The containerDisk layer: a tar with the folder `disk/` and one file, the VM disk, owned by
//! uid/gid 107 with mode 0440, streamed from the disk file into a blob file.
//!
//! The writer chain is `tar → [diff_id hasher → gzip] → blob hasher → file`: each byte is read
//! once from the disk and hashed as it passes; nothing holds more than a buffer. The blob is
//! written under a hidden temporary name in `blobs/sha256/` and renamed to its digest only once
//! complete and synced. Entries carry a fixed modification time so the same disk always makes
//! the same layer (and a second push finds every blob already there).

use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use flate2::write::GzEncoder;

use super::{OciError, DISK_FOLDER, DISK_MODE, KUBEVIRT_QEMU_ID};
use crate::io::hashing::{self, ContentHasher, HashingWriter};
use crate::io::progress::Reporter;
use crate::verify::digest::FileDigest;

/// Modification time of every entry: the epoch, for reproducible layers.
const ENTRY_MTIME: u64 = 0;
/// Mode of the `disk/` folder: everyone may enter and list it (KubeVirt copies the disk out).
const FOLDER_MODE: u32 = 0o555;
/// gzip level when compressing: 1, the fast end; qcow2 disks are often compressed already.
const GZIP_LEVEL: u32 = 1;
/// Write buffer of the blob file.
const WRITE_BUFFER: usize = 1 << 20;
/// Longest disk file name in the layer (a file name, not a path).
const MAX_DISK_NAME: usize = 200;

/// How the layer blob is stored.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Compression {
    /// A plain tar (`application/vnd.oci.image.layer.v1.tar`).
    #[default]
    None,
    /// A gzipped tar (`…tar+gzip`).
    Gzip,
}

/// A finished layer blob.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layer {
    /// SHA-256 of the blob as stored (compressed when gzipped), lowercase hex.
    pub digest: String,
    pub size: u64,
    /// SHA-256 of the uncompressed tar (the config's `rootfs.diff_ids`).
    pub diff_id: String,
    pub compression: Compression,
}

/// Checks the name the disk takes inside `disk/`.
pub fn check_disk_name(name: &str) -> Result<(), OciError> {
    let reason = if name.is_empty() || name.len() > MAX_DISK_NAME {
        Some(format!("must be 1 to {MAX_DISK_NAME} bytes"))
    } else if name == "." || name == ".." || name.contains(['/', '\\']) {
        Some("must be a plain file name".to_owned())
    } else if name.chars().any(char::is_control) {
        Some("must not contain control characters".to_owned())
    } else {
        None
    };
    match reason {
        Some(reason) => Err(OciError::invalid("disk name", name, reason)),
        None => Ok(()),
    }
}

/// Packs the disk at `disk` as `disk/<name>` into a new blob in `blob_dir` (the layout's
/// `blobs/sha256`), reporting bytes read to `reporter`.
pub fn write_layer(
    blob_dir: &Path,
    disk: &Path,
    name: &str,
    compression: Compression,
    reporter: &dyn Reporter,
) -> Result<Layer, OciError> {
    check_disk_name(name)?;
    let mut source = File::open(disk).map_err(|e| OciError::io(disk, "open", e))?;
    let size = source
        .metadata()
        .map_err(|e| OciError::io(disk, "stat", e))?
        .len();
    let temporary = blob_dir.join(format!(".layer-{}.partial", std::process::id()));
    let result = (|| {
        let file = File::create(&temporary).map_err(|e| OciError::io(&temporary, "create", e))?;
        let sink = HashingWriter::new(
            BufWriter::with_capacity(WRITE_BUFFER, file),
            ContentHasher::default(),
        );
        reporter.start(&format!("packing {name}"), Some(size), 0);
        let packed = pack(sink, &mut source, disk, name, size, compression, reporter);
        reporter.finish();
        let (sink, diff_id) = packed?;
        let (buffered, blob_hasher) = sink.into_parts();
        let stored = buffered
            .into_inner()
            .map_err(|e| OciError::io(&temporary, "write", e.into_error()))?;
        stored
            .sync_all()
            .map_err(|e| OciError::io(&temporary, "sync", e))?;
        let blob_size = stored
            .metadata()
            .map_err(|e| OciError::io(&temporary, "stat", e))?
            .len();
        let digest = hex_of(blob_hasher);
        let final_path = blob_dir.join(&digest);
        crate::io::publish::rename_durably(&temporary, &final_path)
            .map_err(|e| OciError::io(&final_path, "rename into place", e.into()))?;
        Ok(Layer {
            diff_id: diff_id.unwrap_or_else(|| digest.clone()),
            digest,
            size: blob_size,
            compression,
        })
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&temporary);
    }
    result
}

/// Writes the tar into `sink`, gzipped or not; returns the sink and, when gzipped, the
/// digest of the uncompressed tar.
fn pack<W: Write>(
    sink: W,
    source: &mut File,
    disk: &Path,
    name: &str,
    size: u64,
    compression: Compression,
    reporter: &dyn Reporter,
) -> Result<(W, Option<String>), OciError> {
    match compression {
        Compression::None => Ok((write_tar(sink, source, disk, name, size, reporter)?, None)),
        Compression::Gzip => {
            let gzip = GzEncoder::new(sink, flate2::Compression::new(GZIP_LEVEL));
            let tar_hasher = HashingWriter::new(gzip, ContentHasher::default());
            let tar_hasher = write_tar(tar_hasher, source, disk, name, size, reporter)?;
            let (gzip, hasher) = tar_hasher.into_parts();
            let sink = gzip
                .finish()
                .map_err(|e| OciError::io(disk, "compress", e))?;
            Ok((sink, Some(hex_of(hasher))))
        }
    }
}

fn write_tar<W: Write>(
    sink: W,
    source: &mut File,
    disk: &Path,
    name: &str,
    size: u64,
    reporter: &dyn Reporter,
) -> Result<W, OciError> {
    let write_error = |e| OciError::io(disk, "write the layer of", e);
    let mut builder = tar::Builder::new(sink);
    let mut folder = header(tar::EntryType::Directory, FOLDER_MODE, 0);
    builder
        .append_data(&mut folder, format!("{DISK_FOLDER}/"), io::empty())
        .map_err(write_error)?;
    let mut file = header(tar::EntryType::Regular, DISK_MODE, size);
    let mut counted = Counted {
        inner: source.take(size),
        read: 0,
        reporter,
    };
    builder
        .append_data(&mut file, format!("{DISK_FOLDER}/{name}"), &mut counted)
        .map_err(write_error)?;
    if counted.read != size {
        return Err(OciError::SizeChanged {
            path: disk.to_owned(),
            expected: size,
            actual: counted.read,
        });
    }
    builder.into_inner().map_err(write_error)
}

/// A GNU header (sizes beyond 8 GiB, long names) owned by KubeVirt's qemu user.
fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(kind);
    header.set_mode(mode);
    header.set_uid(KUBEVIRT_QEMU_ID);
    header.set_gid(KUBEVIRT_QEMU_ID);
    header.set_mtime(ENTRY_MTIME);
    header.set_size(size);
    header
}

/// Counts and reports the bytes read from the disk.
struct Counted<'a, R> {
    inner: R,
    read: u64,
    reporter: &'a dyn Reporter,
}

impl<R: Read> Read for Counted<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read += n as u64;
        self.reporter.advance(n as u64);
        Ok(n)
    }
}

fn hex_of(hasher: ContentHasher) -> String {
    match hashing::finish(hasher) {
        FileDigest::Sha256(digest) => hex::encode(digest.0),
        FileDigest::Sha512(digest) => hex::encode(digest.0),
    }
}

/// Path of the blob `hex` under `blob_dir`.
pub(crate) fn blob_path(blob_dir: &Path, hex: &str) -> PathBuf {
    blob_dir.join(hex)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256};

    fn entries(blob: &[u8]) -> Vec<(String, u64, u64, u32, Vec<u8>)> {
        let mut archive = tar::Archive::new(blob);
        archive
            .entries()
            .unwrap()
            .map(|entry| {
                let mut entry = entry.unwrap();
                let path = entry.path().unwrap().to_string_lossy().into_owned();
                let header = entry.header().clone();
                let mut data = Vec::new();
                entry.read_to_end(&mut data).unwrap();
                (
                    path,
                    header.uid().unwrap(),
                    header.gid().unwrap(),
                    header.mode().unwrap(),
                    data,
                )
            })
            .collect()
    }

    fn disk(dir: &Path, bytes: &[u8]) -> PathBuf {
        let path = dir.join("source.qcow2");
        std::fs::write(&path, bytes).unwrap();
        path
    }

    #[test]
    fn layer_holds_the_disk_owned_by_qemu_and_is_named_by_its_digest() {
        let dir = tempfile::tempdir().unwrap();
        let bytes = b"QFI\xfb not really a qcow2, but bytes to carry".repeat(1000);
        let source = disk(dir.path(), &bytes);
        let blobs = dir.path().join("blobs");
        std::fs::create_dir(&blobs).unwrap();
        let silent = crate::io::progress::Silent;
        let layer =
            write_layer(&blobs, &source, "noble.qcow2", Compression::None, &silent).unwrap();
        let blob = std::fs::read(blobs.join(&layer.digest)).unwrap();
        assert_eq!(hex::encode(Sha256::digest(&blob)), layer.digest);
        assert_eq!(layer.diff_id, layer.digest);
        assert_eq!(layer.size, blob.len() as u64);
        let found = entries(&blob);
        assert_eq!(found.len(), 2);
        assert_eq!(found[0].0, "disk/");
        assert_eq!((found[0].1, found[0].2), (107, 107));
        assert_eq!(found[1].0, "disk/noble.qcow2");
        assert_eq!((found[1].1, found[1].2, found[1].3), (107, 107, 0o440));
        assert_eq!(found[1].4, bytes);
        // Nothing else left in the blob folder.
        assert_eq!(std::fs::read_dir(&blobs).unwrap().count(), 1);
    }

    #[test]
    fn the_same_disk_makes_the_same_layer() {
        let dir = tempfile::tempdir().unwrap();
        let source = disk(dir.path(), b"same bytes");
        let silent = crate::io::progress::Silent;
        let first = write_layer(dir.path(), &source, "d.img", Compression::Gzip, &silent).unwrap();
        let second = write_layer(dir.path(), &source, "d.img", Compression::Gzip, &silent).unwrap();
        assert_eq!(first, second);
        assert_ne!(first.digest, first.diff_id);
        let blob = std::fs::read(dir.path().join(&first.digest)).unwrap();
        let mut tar = Vec::new();
        flate2::read::GzDecoder::new(&blob[..])
            .read_to_end(&mut tar)
            .unwrap();
        assert_eq!(hex::encode(Sha256::digest(&tar)), first.diff_id);
        assert_eq!(entries(&tar)[1].4, b"same bytes");
    }

    #[test]
    fn names_that_are_paths_are_refused() {
        for bad in ["", "..", "a/b", "x\ny"] {
            assert!(check_disk_name(bad).is_err(), "{bad:?}");
        }
        assert!(check_disk_name("noble-server-cloudimg-amd64.qcow2").is_ok());
    }

    #[test]
    fn a_failed_pack_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let silent = crate::io::progress::Silent;
        let missing = dir.path().join("absent.qcow2");
        assert!(write_layer(dir.path(), &missing, "d.qcow2", Compression::None, &silent).is_err());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}

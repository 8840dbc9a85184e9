//! Disks inside archives (`.tar.gz`, `.tar.xz`, `.ova`), read by streaming decompression.

use std::fs::File;
use std::path::Path;

use super::{DiskReader, FormatError, Probe};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArchiveKind {
    TarGz,
    TarXz,
    Tar,
}

pub fn probe(_probe: &Probe) -> Option<ArchiveKind> {
    None
}

pub fn open(
    path: &Path,
    _file: File,
    _kind: ArchiveKind,
) -> Result<Box<dyn DiskReader>, FormatError> {
    Err(FormatError::Unsupported {
        path: path.to_owned(),
        what: "archives are being implemented".into(),
    })
}

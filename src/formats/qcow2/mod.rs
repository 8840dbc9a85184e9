//! QEMU copy-on-write v2/v3.
//!
//! `header` parses cluster 0, `tables` the L1/L2 entries, `refcount` the refcount blocks,
//! `compress` one cluster at a time (deflate or zstd); `reader`, `writer`, `check` and
//! `resize` do the I/O.
//!
//! Read: v2/v3, zero clusters, compressed clusters (zlib, zstd), extended L2 subclusters.
//! Refused: backing files, external data files, encryption, dirty or corrupt images, unknown
//! incompatible features. Written: the layout of `qemu-img convert`, byte-identical for
//! uncompressed output with clusters of 4 KiB or more (preallocation off and metadata), and
//! compressed output packed like qemu's, compressed on `Options::threads` workers.

mod check;
mod compress;
mod header;
mod reader;
mod refcount;
mod resize;
mod tables;
#[cfg(test)]
mod tests;
mod writer;

use std::fs::File;
use std::path::Path;

use super::{CheckReport, DiskReader, DiskWriter, FormatError, Options, Probe, Target};

/// What a pure parser found wrong, before the file's path is known.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Defect {
    #[error("malformed at {offset:#x}: {reason}")]
    Malformed { offset: u64, reason: String },
    #[error("unsupported: {0}")]
    Unsupported(String),
}

impl Defect {
    fn at(self, path: &Path) -> FormatError {
        match self {
            Defect::Malformed { offset, reason } => {
                FormatError::malformed(path, "qcow2", offset, reason)
            }
            Defect::Unsupported(what) => FormatError::Unsupported {
                path: path.to_owned(),
                what,
            },
        }
    }
}

/// qcow2 starts with the magic `QFI\xfb`.
pub fn probe(probe: &Probe) -> bool {
    probe.head.starts_with(&header::MAGIC)
}

pub fn open(path: &Path, file: File) -> Result<Box<dyn DiskReader>, FormatError> {
    Ok(Box::new(reader::Qcow2Reader::open(path, file)?))
}

pub fn create(
    target: Target<'_>,
    virtual_size: u64,
    options: &Options,
) -> Result<Box<dyn DiskWriter>, FormatError> {
    writer::create(target, virtual_size, options)
}

pub use check::{RepairMode, Repaired};

pub fn check(path: &Path, file: File) -> Result<CheckReport, FormatError> {
    check::check(path, file)
}

/// `qemu-img check -r`: rewrites refcounts (and COPIED flags) from the references found.
pub fn repair(path: &Path, file: &File, mode: RepairMode) -> Result<Repaired, FormatError> {
    check::repair(path, file, mode)
}

pub fn resize(path: &Path, file: File, new_size: u64, shrink: bool) -> Result<(), FormatError> {
    resize::resize(path, file, new_size, shrink)
}

//! VMware virtual disks.

use std::fs::File;
use std::io::Read;
use std::path::Path;

use super::{CheckReport, DiskReader, DiskWriter, FormatError, Options, Probe, Target};

pub fn probe(_probe: &Probe) -> bool {
    false
}

pub fn open(path: &Path, _file: File) -> Result<Box<dyn DiskReader>, FormatError> {
    Err(todo_err(path))
}

/// Opens a streamOptimized vmdk that can only be read forwards (`len` bytes of `stream`), such
/// as the disk inside an OVA.
pub fn open_stream(
    path: &Path,
    _stream: Box<dyn Read + Send>,
    _len: u64,
) -> Result<Box<dyn DiskReader>, FormatError> {
    Err(todo_err(path))
}

pub fn create(
    target: Target<'_>,
    _virtual_size: u64,
    _options: &Options,
) -> Result<Box<dyn DiskWriter>, FormatError> {
    Err(todo_err(target.path))
}

pub fn check(path: &Path, _file: File) -> Result<CheckReport, FormatError> {
    Err(todo_err(path))
}

pub fn resize(path: &Path, _file: File, _new_size: u64, _shrink: bool) -> Result<(), FormatError> {
    Err(todo_err(path))
}

fn todo_err(path: &Path) -> FormatError {
    FormatError::Unsupported {
        path: path.to_owned(),
        what: "vmdk is being implemented".into(),
    }
}

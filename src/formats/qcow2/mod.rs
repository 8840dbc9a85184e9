//! QEMU copy-on-write v2/v3.

use std::fs::File;
use std::path::Path;

use super::{CheckReport, DiskReader, DiskWriter, FormatError, Options, Probe, Target};

pub fn probe(_probe: &Probe) -> bool {
    false
}

pub fn open(path: &Path, _file: File) -> Result<Box<dyn DiskReader>, FormatError> {
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
        what: "qcow2 is being implemented".into(),
    }
}

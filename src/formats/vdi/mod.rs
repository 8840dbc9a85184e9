//! VirtualBox disk images (version 1.1): dynamic and static, 1 MiB blocks.
//!
//! The file starts with a 512-byte header area, then the block map (one little-endian u32
//! per 1 MiB guest block: a block number, or unallocated/zero), then the blocks.

mod error;
mod header;
mod maintain;
mod reader;
#[cfg(test)]
mod tests;
mod writer;

use std::fs::File;
use std::path::Path;

pub use error::VdiError;

use super::uuid;
use super::{CheckReport, DiskReader, DiskWriter, FormatError, Options, Probe, Target};
use header::{swap_guid, VdiHeader, BLOCK_SIZE, MAX_BLOCKS};

/// Largest disk cloudimg creates or grows: 16 TiB, the block map cap at 1 MiB blocks.
const MAX_DISK_SIZE: u64 = MAX_BLOCKS as u64 * BLOCK_SIZE as u64;

/// The signature at offset 0x40 identifies a VDI.
pub fn probe(probe: &Probe) -> bool {
    probe
        .head
        .get(0x40..0x44)
        .is_some_and(|s| s == header::SIGNATURE.to_le_bytes())
}

pub fn open(path: &Path, file: File) -> Result<Box<dyn DiskReader>, FormatError> {
    Ok(Box::new(reader::VdiReader::new(path, file)?))
}

/// `-o` keys: `static=on|off` (qemu's), and cloudimg's `uuid=` and `uuid_last_snap=` (qemu
/// draws both at random) for reproducible output.
pub fn create(
    target: Target<'_>,
    virtual_size: u64,
    options: &Options,
) -> Result<Box<dyn DiskWriter>, FormatError> {
    let is_static = options.flag("static")?.unwrap_or(false);
    let uuid_of = |key: &str| -> Result<[u8; 16], FormatError> {
        let text_order = match options.get(key) {
            Some(text) => uuid::parse(key, text)?,
            None => uuid::random_v4(),
        };
        Ok(swap_guid(&text_order))
    };
    let uuid_image = uuid_of("uuid")?;
    let uuid_last_snap = uuid_of("uuid_last_snap")?;
    options.reject_unknown("vdi")?;
    if virtual_size > MAX_DISK_SIZE {
        return Err(too_large(target.path, virtual_size));
    }
    let disk_size = virtual_size.div_ceil(512) * 512;
    let header = VdiHeader::new(disk_size, is_static, uuid_image, uuid_last_snap)
        .map_err(|e| e.at(target.path))?;
    let file = target.create_file()?;
    Ok(Box::new(writer::VdiWriter::new(
        target.path.to_owned(),
        file,
        header,
    )))
}

pub fn check(path: &Path, file: File) -> Result<CheckReport, FormatError> {
    maintain::check(path, &file)
}

pub fn resize(path: &Path, file: File, new_size: u64, shrink: bool) -> Result<(), FormatError> {
    maintain::resize(path, &file, new_size, shrink)
}

fn too_large(path: &Path, size: u64) -> FormatError {
    FormatError::Unsupported {
        path: path.to_owned(),
        what: format!("VDI of {size} bytes; cloudimg's limit is 16 TiB"),
    }
}

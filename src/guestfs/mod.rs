//! Reading a guest's boot files out of its disk image: partition tables, ext2/3/4, GRUB's
//! configuration. Read-only, synchronous and native (no mount, no loop device, no libguestfs):
//! every byte comes through [`DiskReader::read_at`], so any format cloudimg reads works.
//!
//! The room sits below `bake` (which boots the kernel it finds directly, `-kernel`/`-initrd`/
//! `-append`) and above `formats`. Its layers, each usable alone:
//! - [`gpt`]: the partition table (GPT with its CRCs, or a plain MBR), as a list of
//!   [`gpt::Partition`]s numbered as Linux numbers them;
//! - [`ext4`]: a read-only ext2/3/4 reader over a [`Volume`] (a partition's byte range):
//!   path lookup with symbolic links, extent trees and classic block maps, streaming a file
//!   into a `Write` a few blocks at a time;
//! - [`grub`]: the first `menuentry` of a `grub.cfg` (a pure function over its bytes);
//! - [`boot`]: [`boot::find`] ties them together into [`boot::BootFiles`] (kernel, initrds,
//!   command line), and [`boot::extract`] streams the kernel and initrd into writers.
//!
//! Everything read from the image is untrusted: no allocation is sized by an on-disk field
//! (each is capped by a named constant), every walk (extent trees, block maps, directories,
//! symbolic links) has a work limit, and nothing panics on any input. Whatever is not
//! understood is a [`GuestFsError`] that says what, so that `bake` can fall back to booting
//! through the firmware.

pub mod boot;
mod error;
pub mod ext4;
pub mod gpt;
pub mod grub;
#[cfg(test)]
mod tests;

pub use error::GuestFsError;

use crate::formats::DiskReader;

/// A byte range of the guest disk (a partition, or the whole disk) read through a
/// [`DiskReader`]; reads outside the range are refused.
pub struct Volume<'a> {
    reader: &'a mut dyn DiskReader,
    start: u64,
    len: u64,
}

impl<'a> Volume<'a> {
    /// The whole disk.
    pub fn whole(reader: &'a mut dyn DiskReader) -> Volume<'a> {
        let len = reader.virtual_size();
        Volume {
            reader,
            start: 0,
            len,
        }
    }

    /// `len` bytes from `start`, which must lie within the disk.
    pub fn new(
        reader: &'a mut dyn DiskReader,
        start: u64,
        len: u64,
    ) -> Result<Volume<'a>, GuestFsError> {
        let size = reader.virtual_size();
        if start.checked_add(len).is_none_or(|end| end > size) {
            return Err(GuestFsError::OutOfRange {
                offset: start,
                len: usize::try_from(len).unwrap_or(usize::MAX),
                volume_start: 0,
                volume_len: size,
            });
        }
        Ok(Volume { reader, start, len })
    }

    /// The byte range, as (start on the disk, length).
    pub fn range(&self) -> (u64, u64) {
        (self.start, self.len)
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Fills `buf` from `offset` (relative to the volume's start).
    pub fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), GuestFsError> {
        let fits = offset
            .checked_add(buf.len() as u64)
            .is_some_and(|end| end <= self.len);
        if !fits {
            return Err(GuestFsError::OutOfRange {
                offset: self.start.saturating_add(offset),
                len: buf.len(),
                volume_start: self.start,
                volume_len: self.len,
            });
        }
        let disk_offset = self.start + offset;
        self.reader
            .read_at(disk_offset, buf)
            .map_err(|source| GuestFsError::Read {
                offset: disk_offset,
                len: buf.len(),
                source,
            })
    }
}

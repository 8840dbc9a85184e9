//! Writing fixed and dynamic VHDs laid out exactly as qemu-img lays them out.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;

use super::dynamic::{self, DynamicHeader, BAT_OFFSET, BLOCK_SIZE, HEADER_OFFSET, UNALLOCATED};
use super::footer::{DiskType, Footer, FOOTER_SIZE};
use crate::formats::{is_zero, DiskWriter, FormatError};

/// The sector bitmap qemu writes in front of every block: every sector present.
const FULL_BITMAP: [u8; 512] = [0xff; 512];

/// A VHD being written; the footer (and for dynamic disks header and BAT) go out in `finish`.
pub struct VhdWriter {
    path: PathBuf,
    file: File,
    footer: Footer,
    guest_size: u64,
    /// BAT of a dynamic disk and the next free byte after the last block; None for fixed.
    dynamic: Option<(Vec<u32>, u64)>,
    /// End of the last write, to enforce increasing offsets.
    written_to: u64,
}

impl VhdWriter {
    /// `footer` describes the disk; `guest_size` is its size in bytes (a sector multiple).
    pub fn new(path: PathBuf, file: File, footer: Footer, guest_size: u64) -> VhdWriter {
        let dynamic = match footer.disk_type {
            DiskType::Fixed => None,
            DiskType::Dynamic => {
                let entries = dynamic::entries_for(guest_size);
                // Entries ≤ 2040 GiB / 2 MiB, checked by `create`: the BAT fits in memory.
                let header = DynamicHeader::new(entries as u32);
                let first_block = BAT_OFFSET + header.bat_bytes();
                Some((vec![UNALLOCATED; entries as usize], first_block))
            }
        };
        VhdWriter {
            path,
            file,
            footer,
            guest_size,
            dynamic,
            written_to: 0,
        }
    }

    fn io(&self, source: std::io::Error) -> FormatError {
        FormatError::io(&self.path, source)
    }

    fn write_block(&mut self, index: usize, data: &[u8]) -> Result<(), FormatError> {
        let Some((bat, next)) = &mut self.dynamic else {
            return Ok(());
        };
        let host = *next;
        let sector = u32::try_from(host / 512)
            .ok()
            .filter(|s| *s != UNALLOCATED)
            .ok_or_else(|| {
                FormatError::malformed(
                    &self.path,
                    "vhd",
                    host,
                    "block offset beyond the 2 TiB a BAT entry can address",
                )
            })?;
        let slot = bat.get_mut(index).ok_or_else(|| {
            FormatError::malformed(
                &self.path,
                "vhd",
                host,
                format!("block {index} beyond the BAT"),
            )
        })?;
        *slot = sector;
        *next += FULL_BITMAP.len() as u64 + u64::from(BLOCK_SIZE);
        self.file
            .write_all_at(&FULL_BITMAP, host)
            .and_then(|()| {
                self.file
                    .write_all_at(data, host + FULL_BITMAP.len() as u64)
            })
            .map_err(|source| FormatError::io(&self.path, source))
    }
}

/// A fixed disk is raw data plus a footer: like qemu-img, leave 4 KiB runs of zeroes as holes
/// instead of writing them.
const FIXED_UNIT: u64 = 4096;

impl DiskWriter for VhdWriter {
    fn granularity(&self) -> u64 {
        if self.dynamic.is_some() {
            u64::from(BLOCK_SIZE)
        } else {
            FIXED_UNIT
        }
    }

    fn write_data(&mut self, offset: u64, data: &[u8]) -> Result<(), FormatError> {
        let end = offset + data.len() as u64;
        if end > self.guest_size {
            return Err(FormatError::malformed(
                &self.path,
                "vhd",
                offset,
                format!(
                    "write of {} bytes past the disk size {}",
                    data.len(),
                    self.guest_size
                ),
            ));
        }
        if offset < self.written_to || !offset.is_multiple_of(self.granularity()) {
            return Err(FormatError::OutOfOrder {
                path: self.path.clone(),
                offset,
                position: self.written_to,
            });
        }
        self.written_to = end;
        if self.dynamic.is_none() {
            return self.file.write_all_at(data, offset).map_err(|e| self.io(e));
        }
        for (i, block) in data.chunks(BLOCK_SIZE as usize).enumerate() {
            // Like qemu-img, never allocate a block for zeroes.
            if !is_zero(block) {
                let index = (offset / u64::from(BLOCK_SIZE)) as usize + i;
                self.write_block(index, block)?;
            }
        }
        Ok(())
    }

    fn finish(self: Box<Self>) -> Result<(), FormatError> {
        let footer = self.footer.encode();
        match &self.dynamic {
            None => {
                self.file
                    .set_len(self.guest_size + FOOTER_SIZE as u64)
                    .map_err(|e| self.io(e))?;
                self.file
                    .write_all_at(&footer, self.guest_size)
                    .map_err(|e| self.io(e))?;
            }
            Some((bat, end)) => {
                let header = DynamicHeader::new(bat.len() as u32).encode();
                let table = dynamic::encode_bat(bat);
                self.file.write_all_at(&footer, 0).map_err(|e| self.io(e))?;
                self.file
                    .write_all_at(&header, HEADER_OFFSET)
                    .map_err(|e| self.io(e))?;
                self.file
                    .write_all_at(&table, BAT_OFFSET)
                    .map_err(|e| self.io(e))?;
                self.file
                    .write_all_at(&footer, *end)
                    .map_err(|e| self.io(e))?;
                self.file
                    .set_len(*end + FOOTER_SIZE as u64)
                    .map_err(|e| self.io(e))?;
            }
        }
        Ok(())
    }
}

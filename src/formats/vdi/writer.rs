//! Writing dynamic and static VDIs laid out exactly as qemu-img lays them out.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;

use super::header::{VdiHeader, BLOCK_SIZE, UNALLOCATED};
use crate::formats::{is_zero, DiskWriter, FormatError};

/// A VDI being written: blocks in guest order, header and block map written by `finish`.
pub struct VdiWriter {
    path: PathBuf,
    file: File,
    header: VdiHeader,
    bmap: Vec<u32>,
    /// End of the last write, to enforce increasing offsets.
    written_to: u64,
}

impl VdiWriter {
    pub fn new(path: PathBuf, file: File, header: VdiHeader) -> VdiWriter {
        // blocks_in_image is capped by VdiHeader::new: the map fits in memory.
        let blocks = header.blocks_in_image;
        let bmap = if header.is_static() {
            (0..blocks).collect()
        } else {
            vec![UNALLOCATED; blocks as usize]
        };
        VdiWriter {
            path,
            file,
            header,
            bmap,
            written_to: 0,
        }
    }

    fn io(&self, source: std::io::Error) -> FormatError {
        FormatError::io(&self.path, source)
    }
}

impl DiskWriter for VdiWriter {
    fn granularity(&self) -> u64 {
        u64::from(BLOCK_SIZE)
    }

    fn write_data(&mut self, offset: u64, data: &[u8]) -> Result<(), FormatError> {
        let end = offset + data.len() as u64;
        if end > self.header.disk_size {
            return Err(FormatError::malformed(
                &self.path,
                "vdi",
                offset,
                format!(
                    "write of {} bytes past the disk size {}",
                    data.len(),
                    self.header.disk_size
                ),
            ));
        }
        if offset < self.written_to || !offset.is_multiple_of(u64::from(BLOCK_SIZE)) {
            return Err(FormatError::OutOfOrder {
                path: self.path.clone(),
                offset,
                position: self.written_to,
            });
        }
        self.written_to = end;
        let first = (offset / u64::from(BLOCK_SIZE)) as usize;
        for (i, block) in data.chunks(BLOCK_SIZE as usize).enumerate() {
            let index = first + i;
            let slot = if self.header.is_static() {
                index as u32
            } else {
                // Like qemu-img, never allocate a block for zeroes.
                if is_zero(block) {
                    continue;
                }
                let next = self.header.blocks_allocated;
                self.header.blocks_allocated += 1;
                if let Some(entry) = self.bmap.get_mut(index) {
                    *entry = next;
                }
                next
            };
            let host = u64::from(self.header.offset_data) + u64::from(slot) * u64::from(BLOCK_SIZE);
            self.file
                .write_all_at(block, host)
                .map_err(|e| self.io(e))?;
        }
        Ok(())
    }

    fn finish(self: Box<Self>) -> Result<(), FormatError> {
        let mut map =
            Vec::with_capacity((self.header.offset_data - self.header.offset_bmap) as usize);
        for entry in &self.bmap {
            map.extend_from_slice(&entry.to_le_bytes());
        }
        // qemu pads the map to its sector with zeroes.
        map.resize(
            (self.header.offset_data - self.header.offset_bmap) as usize,
            0,
        );
        let end = u64::from(self.header.offset_data)
            + u64::from(self.header.blocks_allocated) * u64::from(BLOCK_SIZE);
        self.file
            .write_all_at(&self.header.encode(), 0)
            .map_err(|e| self.io(e))?;
        self.file
            .write_all_at(&map, u64::from(self.header.offset_bmap))
            .map_err(|e| self.io(e))?;
        self.file.set_len(end).map_err(|e| self.io(e))?;
        Ok(())
    }
}

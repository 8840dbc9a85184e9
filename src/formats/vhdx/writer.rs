//! Writing dynamic and fixed VHDX laid out exactly as `qemu-img convert -O vhdx` lays them out.
//!
//! The layout (qemu's): header section (1 MiB), the log (`log_size`, 1 MiB by default), the
//! BAT rounded up to whole MiB, 1 MiB of metadata, 5 MiB left free, then the blocks. A dynamic
//! disk appends each block that holds data, in guest order. A fixed disk reserves room for
//! every block; with `block_state_zero=on` (qemu's default) its BAT still starts all "zero"
//! and qemu appends written blocks after the reserved room, so cloudimg does the same; with
//! `block_state_zero=off` every block is present at its reserved place.
//!
//! Differences from qemu-img, all in fields qemu fills at random or with its own name: the
//! creator string, the header sequence numbers and GUIDs, the page 83 identifier, and the log,
//! which qemu leaves holding its last few BAT updates (already applied; its GUID is cleared)
//! while cloudimg leaves it empty.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;

use super::bat::{self, Geometry, ENTRY_SIZE};
use super::guid;
use super::header::{self, Header, HEADER1_OFFSET, HEADER2_OFFSET, HEADER_SECTION_SIZE, MIB};
use super::metadata::{self, Metadata};
use super::reader::WINDOW;
use super::region::{self, Region, RegionTable};
use crate::formats::{is_zero, DiskWriter, FormatError};

/// Free space qemu leaves between the metadata region and the first block.
const DATA_GAP: u64 = 5 << 20;
/// The writer takes data in 4 KiB units and leaves all-zero units as holes, as qemu-img does.
const UNIT: u64 = 4096;
/// The logical and physical sector size qemu writes.
const SECTOR_SIZE: u32 = 512;

/// `dynamic` or `fixed`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Subformat {
    Dynamic,
    Fixed,
}

/// Everything that decides the layout of a new VHDX.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Plan {
    /// A multiple of 512.
    pub virtual_size: u64,
    /// A power of two from 1 MiB to 256 MiB.
    pub block_size: u32,
    /// A positive multiple of 1 MiB.
    pub log_size: u32,
    pub subformat: Subformat,
    /// qemu's `block_state_zero`: blocks not written are marked "zero" rather than "not
    /// present"; for fixed disks, written blocks are appended rather than put in place.
    pub zero_blocks: bool,
}

impl Plan {
    pub fn geometry(&self) -> Geometry {
        Geometry::new(self.virtual_size, self.block_size, SECTOR_SIZE)
    }

    pub fn log_offset(&self) -> u64 {
        HEADER_SECTION_SIZE
    }

    pub fn bat(&self) -> Region {
        Region {
            offset: self.log_offset() + u64::from(self.log_size),
            length: self.geometry().table_bytes(),
        }
    }

    pub fn metadata(&self) -> Region {
        Region {
            offset: self.bat().end(),
            length: MIB,
        }
    }

    /// Where the first block's room starts.
    pub fn data_offset(&self) -> u64 {
        self.bat().end() + DATA_GAP
    }

    /// Whether blocks sit at fixed places (fixed disk without zero blocks).
    fn in_place(&self) -> bool {
        self.subformat == Subformat::Fixed && !self.zero_blocks
    }

    /// Where appended blocks start: after the data offset, or after a fixed disk's room.
    fn first_appended(&self) -> u64 {
        match self.subformat {
            Subformat::Dynamic => self.data_offset(),
            Subformat::Fixed => (self.data_offset() + self.virtual_size).next_multiple_of(MIB),
        }
    }

    /// The file length before any block is appended.
    fn base_len(&self) -> u64 {
        match self.subformat {
            Subformat::Dynamic => self.data_offset(),
            Subformat::Fixed => self.data_offset() + self.virtual_size,
        }
    }

    /// The BAT entry at `index` before anything is written.
    fn initial_entry(&self, geometry: &Geometry, index: u64) -> u64 {
        if geometry.is_bitmap(index) {
            bat::NOT_PRESENT
        } else if self.in_place() {
            let block = geometry.block_of(index);
            bat::present(self.data_offset() + block * geometry.block_size)
        } else if self.zero_blocks {
            bat::ZERO
        } else {
            bat::NOT_PRESENT
        }
    }
}

/// The identity fields qemu draws at random.
#[derive(Clone, Copy, Debug)]
pub struct Identity {
    pub sequence_number: u64,
    pub file_write_guid: [u8; 16],
    pub data_write_guid: [u8; 16],
    pub page_83_data: [u8; 16],
}

impl Identity {
    pub fn random() -> Identity {
        Identity {
            // qemu starts from a random 32-bit number.
            sequence_number: u64::from(rand::random::<u32>()),
            file_write_guid: guid::random(),
            data_write_guid: guid::random(),
            page_83_data: guid::random(),
        }
    }
}

/// A VHDX being written; headers, tables and metadata go out in `finish`.
pub struct VhdxWriter {
    path: PathBuf,
    file: File,
    plan: Plan,
    identity: Identity,
    geometry: Geometry,
    /// The BAT entries of the window being filled (from `bat_first`).
    bat: Vec<u64>,
    bat_first: u64,
    /// Where the next appended block goes.
    next_block: u64,
    /// The last block given room, and where.
    current: Option<(u64, u64)>,
    /// End of the last write, to enforce increasing offsets.
    written_to: u64,
}

impl VhdxWriter {
    pub fn new(path: PathBuf, file: File, plan: Plan, identity: Identity) -> VhdxWriter {
        let geometry = plan.geometry();
        let mut writer = VhdxWriter {
            path,
            file,
            plan,
            identity,
            geometry,
            bat: Vec::new(),
            bat_first: 0,
            next_block: plan.first_appended(),
            current: None,
            written_to: 0,
        };
        writer.fill_window();
        writer
    }

    fn io(&self, source: std::io::Error) -> FormatError {
        FormatError::io(&self.path, source)
    }

    /// Resets the window at `bat_first` to the initial entries.
    fn fill_window(&mut self) {
        let end = (self.bat_first + WINDOW).min(self.geometry.entries);
        self.bat = (self.bat_first..end)
            .map(|i| self.plan.initial_entry(&self.geometry, i))
            .collect();
    }

    /// Writes the window out, unless it is all "not present" (zero bytes: left as a hole).
    fn flush_window(&self) -> Result<(), FormatError> {
        if self.bat.iter().all(|e| *e == 0) {
            return Ok(());
        }
        let bytes: Vec<u8> = self.bat.iter().flat_map(|e| e.to_le_bytes()).collect();
        let at = self.plan.bat().offset + self.bat_first * ENTRY_SIZE;
        self.file.write_all_at(&bytes, at).map_err(|e| self.io(e))
    }

    /// Moves the window forward until it holds `index`, writing the ones left behind.
    fn window_to(&mut self, index: u64) -> Result<(), FormatError> {
        while index >= self.bat_first + WINDOW {
            self.flush_window()?;
            self.bat_first += WINDOW;
            self.fill_window();
        }
        Ok(())
    }

    /// The file offset of block `block`'s data, giving it room first if it has none.
    fn room_for(&mut self, block: u64) -> Result<u64, FormatError> {
        if let Some((current, host)) = self.current {
            if current == block {
                return Ok(host);
            }
        }
        let host = if self.plan.in_place() {
            self.plan.data_offset() + block * self.geometry.block_size
        } else {
            let host = self.next_block;
            self.next_block += self.geometry.block_size;
            let index = self.geometry.index(block);
            self.window_to(index)?;
            let slot = (index - self.bat_first) as usize;
            match self.bat.get_mut(slot) {
                Some(entry) => *entry = bat::present(host),
                None => {
                    return Err(FormatError::malformed(
                        &self.path,
                        "vhdx",
                        host,
                        format!("block {block} beyond the BAT"),
                    ))
                }
            }
            host
        };
        self.current = Some((block, host));
        Ok(host)
    }

    /// The metadata, tables and headers.
    fn write_structures(&self) -> Result<(), FormatError> {
        let plan = &self.plan;
        let id = &self.identity;
        let mut header = Header {
            sequence_number: id.sequence_number,
            file_write_guid: id.file_write_guid,
            data_write_guid: id.data_write_guid,
            log_guid: guid::ZERO,
            log_version: header::LOG_VERSION,
            version: header::VERSION,
            log_length: plan.log_size,
            log_offset: plan.log_offset(),
        };
        let first = header.encode();
        header.sequence_number += 1;
        let second = header.encode();
        let regions = RegionTable {
            bat: plan.bat(),
            metadata: plan.metadata(),
        }
        .encode();
        let metadata = Metadata {
            block_size: plan.block_size,
            leave_blocks_allocated: plan.subformat == Subformat::Fixed,
            virtual_size: plan.virtual_size,
            page_83_data: id.page_83_data,
            logical_sector_size: SECTOR_SIZE,
            physical_sector_size: SECTOR_SIZE,
        };
        let (table, items) = metadata.encode();
        let creator = format!("cloudimg v{}", env!("CARGO_PKG_VERSION"));
        let writes: [(&[u8], u64); 7] = [
            (&header::encode_file_id(&creator), 0),
            (&first, HEADER1_OFFSET),
            (&second, HEADER2_OFFSET),
            (&regions, region::TABLE1_OFFSET),
            (&regions, region::TABLE2_OFFSET),
            (&table, plan.metadata().offset),
            (&items, plan.metadata().offset + metadata::TABLE_SIZE as u64),
        ];
        for (bytes, at) in writes {
            self.file.write_all_at(bytes, at).map_err(|e| self.io(e))?;
        }
        Ok(())
    }
}

impl DiskWriter for VhdxWriter {
    fn granularity(&self) -> u64 {
        UNIT
    }

    fn write_data(&mut self, offset: u64, data: &[u8]) -> Result<(), FormatError> {
        let end = offset + data.len() as u64;
        if end > self.plan.virtual_size {
            return Err(FormatError::malformed(
                &self.path,
                "vhdx",
                offset,
                format!(
                    "write of {} bytes past the disk size {}",
                    data.len(),
                    self.plan.virtual_size
                ),
            ));
        }
        if offset < self.written_to || !offset.is_multiple_of(UNIT) {
            return Err(FormatError::OutOfOrder {
                path: self.path.clone(),
                offset,
                position: self.written_to,
            });
        }
        self.written_to = end;
        let block_size = self.geometry.block_size;
        let mut at = offset;
        let mut rest = data;
        while !rest.is_empty() {
            // Up to the end of the block.
            let n = ((block_size - at % block_size) as usize).min(rest.len());
            let (piece, tail) = rest.split_at(n);
            // Like qemu-img, never give a block room for zeroes.
            if !is_zero(piece) {
                let host = self.room_for(at / block_size)?;
                self.file
                    .write_all_at(piece, host + at % block_size)
                    .map_err(|e| self.io(e))?;
            }
            at += n as u64;
            rest = tail;
        }
        Ok(())
    }

    fn finish(mut self: Box<Self>) -> Result<(), FormatError> {
        // The window in hand, then every later one (their initial entries).
        loop {
            self.flush_window()?;
            if self.bat_first + WINDOW >= self.geometry.entries {
                break;
            }
            self.bat_first += WINDOW;
            self.fill_window();
        }
        self.write_structures()?;
        // The end of the last appended block, else the room reserved from the start.
        let len = if self.next_block > self.plan.first_appended() {
            self.next_block
        } else {
            self.plan.base_len()
        };
        self.file.set_len(len).map_err(|e| self.io(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(subformat: Subformat, zero_blocks: bool) -> Plan {
        Plan {
            virtual_size: 100 << 20,
            block_size: 8 << 20,
            log_size: 1 << 20,
            subformat,
            zero_blocks,
        }
    }

    #[test]
    fn layout_matches_qemu() {
        // qemu-img 10.0, 100 MiB: BAT at 2 MiB, metadata at 3 MiB, first block at 8 MiB.
        let p = plan(Subformat::Dynamic, true);
        assert_eq!(p.bat().offset, 2 << 20);
        assert_eq!(p.metadata().offset, 3 << 20);
        assert_eq!(p.data_offset(), 8 << 20);
        assert_eq!(p.first_appended(), 8 << 20);
        // A fixed disk appends after its 100 MiB of room.
        let f = plan(Subformat::Fixed, true);
        assert_eq!(f.first_appended(), 108 << 20);
        assert_eq!(f.base_len(), 108 << 20);
        // A 3 MiB log moves everything by 2 MiB.
        let l = Plan {
            log_size: 3 << 20,
            ..p
        };
        assert_eq!(l.data_offset(), 10 << 20);
    }

    #[test]
    fn initial_entries_follow_the_mode() {
        let g = plan(Subformat::Dynamic, true).geometry();
        assert_eq!(
            plan(Subformat::Dynamic, true).initial_entry(&g, 3),
            bat::ZERO
        );
        assert_eq!(
            plan(Subformat::Dynamic, false).initial_entry(&g, 3),
            bat::NOT_PRESENT
        );
        assert_eq!(
            plan(Subformat::Fixed, false).initial_entry(&g, 1),
            bat::present(16 << 20)
        );
    }
}

//! The block allocation table: one little-endian u64 per payload block, with a sector bitmap
//! entry interleaved after every `chunk_ratio` payload entries.
//!
//! An entry holds a state in bits 0–2 and, in bits 20–63, the block's file offset in MiB. The
//! chunk ratio is how many payload blocks one 1 MiB sector bitmap covers: 2^23 sectors over the
//! sectors of a block. Sector bitmaps matter only to differencing disks, which cloudimg
//! refuses; here they are skipped.

use super::error::VhdxError;
use super::header::MIB;
use super::region::Region;

/// Bytes of one entry.
pub const ENTRY_SIZE: u64 = 8;
/// Payload states. Not present, undefined, zero and unmapped all read as zeroes on a disk
/// without a parent; fully present blocks hold their data; partially present blocks exist only
/// in differencing disks.
pub const NOT_PRESENT: u64 = 0;
pub const UNDEFINED: u64 = 1;
pub const ZERO: u64 = 2;
pub const UNMAPPED: u64 = 3;
/// What the 0.95 draft of the specification called "unmapped"; qemu reads it as zeroes too.
pub const UNMAPPED_V095: u64 = 5;
pub const FULLY_PRESENT: u64 = 6;
pub const PARTIALLY_PRESENT: u64 = 7;
const STATE_MASK: u64 = 0x7;
/// The file offset field: the entry with the low 20 bits cleared is the offset in bytes.
const OFFSET_MASK: u64 = !(MIB - 1);
/// Sectors one sector bitmap block covers (1 MiB of bits).
const SECTORS_PER_BITMAP: u64 = 1 << 23;

/// The shape of a BAT, derived from the metadata.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Geometry {
    pub virtual_size: u64,
    pub block_size: u64,
    /// Payload blocks per sector bitmap entry.
    pub chunk_ratio: u64,
    /// Blocks of guest data.
    pub payload_blocks: u64,
    /// Entries, sector bitmap entries included.
    pub entries: u64,
}

impl Geometry {
    /// For a disk without a parent. `block_size` and `logical_sector_size` are powers of two
    /// checked by the metadata parser, so the chunk ratio is a power of two ≥ 16.
    pub fn new(virtual_size: u64, block_size: u32, logical_sector_size: u32) -> Geometry {
        let block_size = u64::from(block_size);
        let chunk_ratio = SECTORS_PER_BITMAP * u64::from(logical_sector_size) / block_size;
        let payload_blocks = virtual_size.div_ceil(block_size);
        let entries = match payload_blocks {
            0 => 0,
            n => n + (n - 1) / chunk_ratio,
        };
        Geometry {
            virtual_size,
            block_size,
            chunk_ratio,
            payload_blocks,
            entries,
        }
    }

    /// The BAT index of payload block `block`.
    pub fn index(&self, block: u64) -> u64 {
        block + block / self.chunk_ratio
    }

    /// Whether BAT index `index` is a sector bitmap entry.
    pub fn is_bitmap(&self, index: u64) -> bool {
        (index + 1).is_multiple_of(self.chunk_ratio + 1)
    }

    /// The payload block of a (non-bitmap) BAT index.
    pub fn block_of(&self, index: u64) -> u64 {
        index - index / (self.chunk_ratio + 1)
    }

    /// Guest bytes payload block `block` holds (the last one may be short).
    pub fn span(&self, block: u64) -> u64 {
        self.block_size
            .min(self.virtual_size.saturating_sub(block * self.block_size))
    }

    /// Bytes of the table, rounded up to whole MiB as writers allocate it (at least 1 MiB:
    /// a region is never empty).
    pub fn table_bytes(&self) -> u64 {
        (self.entries * ENTRY_SIZE).next_multiple_of(MIB).max(MIB)
    }
}

/// What a payload entry says about its block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Block {
    /// Reads as zeroes.
    Zero,
    /// The block's data start at this file offset.
    Present(u64),
}

/// Decodes the payload entry of block `block` (found at file offset `at`) and checks that a
/// present block's guest bytes lie inside the file (`file_len`) and outside `reserved`
/// (header section, log, BAT, metadata).
pub fn classify(
    entry: u64,
    block: u64,
    geometry: &Geometry,
    file_len: u64,
    reserved: &[Region],
    at: u64,
) -> Result<Block, VhdxError> {
    let fail = |value, reason| VhdxError::Field {
        offset: at,
        field: "BAT entry",
        value,
        reason,
    };
    match entry & STATE_MASK {
        NOT_PRESENT | UNDEFINED | ZERO | UNMAPPED | UNMAPPED_V095 => Ok(Block::Zero),
        FULLY_PRESENT => {
            let host = entry & OFFSET_MASK;
            let data = Region {
                offset: host,
                length: geometry.span(block),
            };
            if host
                .checked_add(data.length)
                .is_none_or(|end| end > file_len)
            {
                return Err(fail(entry, "the block lies past the end of the file"));
            }
            if reserved.iter().any(|r| r.overlaps(&data)) {
                return Err(fail(
                    entry,
                    "the block overlaps the headers, the log, the BAT or the metadata",
                ));
            }
            Ok(Block::Present(host))
        }
        PARTIALLY_PRESENT => Err(fail(
            entry,
            "partially present block in a disk without a parent",
        )),
        _ => Err(fail(entry, "unknown block state")),
    }
}

/// The entry of a block whose data lie at `host` (1 MiB aligned).
pub fn present(host: u64) -> u64 {
    (host & OFFSET_MASK) | FULLY_PRESENT
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 100 MiB in 8 MiB blocks, the geometry of the qemu-made sample in the other tests.
    fn geometry() -> Geometry {
        Geometry::new(100 << 20, 8 << 20, 512)
    }

    const RESERVED: [Region; 2] = [
        Region {
            offset: 0,
            length: 2 << 20,
        },
        Region {
            offset: 2 << 20,
            length: 2 << 20,
        },
    ];

    #[test]
    fn chunk_ratio_and_entries_follow_the_specification() {
        let g = geometry();
        assert_eq!(g.chunk_ratio, 512);
        assert_eq!(g.payload_blocks, 13);
        assert_eq!(g.entries, 13);
        assert_eq!(g.span(12), 4 << 20);
        // 10 GiB in 1 MiB blocks: chunk ratio 4096, so two bitmap entries are interleaved.
        let big = Geometry::new(10 << 30, 1 << 20, 512);
        assert_eq!(big.chunk_ratio, 4096);
        assert_eq!(big.entries, 10240 + 2);
        assert_eq!(big.index(4096), 4097);
        assert!(big.is_bitmap(4096));
        assert!(!big.is_bitmap(4097));
        assert_eq!(big.block_of(4097), 4096);
        assert_eq!(Geometry::new(0, 1 << 20, 512).entries, 0);
    }

    #[test]
    fn qemu_entries_are_classified() {
        let g = geometry();
        // From qemu's BAT: block 0 at 8 MiB, fully present; the rest zero.
        let entry = u64::from_le_bytes([0x06, 0x00, 0x80, 0x00, 0, 0, 0, 0]);
        assert_eq!(
            classify(entry, 0, &g, 32 << 20, &RESERVED, 0).unwrap(),
            Block::Present(8 << 20)
        );
        assert_eq!(
            classify(ZERO, 1, &g, 32 << 20, &RESERVED, 8).unwrap(),
            Block::Zero
        );
        assert_eq!(present(8 << 20), entry);
    }

    #[test]
    fn entry_beyond_the_file_is_rejected() {
        let g = geometry();
        // Block at 24 MiB in a 32 MiB file: fits; at 25 MiB it would end past the file.
        let fits = present(24 << 20);
        assert!(classify(fits, 0, &g, 32 << 20, &RESERVED, 0).is_ok());
        let beyond = present(25 << 20);
        assert!(classify(beyond, 0, &g, 32 << 20, &RESERVED, 0).is_err());
        // The last block holds only 4 MiB of guest data: only those must be in the file.
        assert!(classify(present(28 << 20), 12, &g, 32 << 20, &RESERVED, 0).is_ok());
        // Offsets near 2^64 must not wrap around.
        assert!(classify(u64::MAX - 1, 0, &g, 32 << 20, &RESERVED, 0).is_err());
    }

    #[test]
    fn entry_inside_metadata_or_with_a_bad_state_is_rejected() {
        let g = geometry();
        assert!(classify(present(3 << 20), 0, &g, 32 << 20, &RESERVED, 0).is_err());
        assert!(classify(PARTIALLY_PRESENT, 0, &g, 32 << 20, &RESERVED, 0).is_err());
        assert!(classify(4, 0, &g, 32 << 20, &RESERVED, 0).is_err());
        assert_eq!(
            classify(UNMAPPED_V095, 0, &g, 32 << 20, &RESERVED, 0).unwrap(),
            Block::Zero
        );
    }
}

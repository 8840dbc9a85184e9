//! The dynamic disk header (`cxsparse`, 1024 bytes, big-endian) and the block allocation
//! table (BAT) it points to.

use super::error::VhdError;
use super::footer::checksum;
use crate::formats::fields::{be32, be64};

/// Size of the dynamic disk header.
pub const HEADER_SIZE: usize = 1024;
/// Magic at the start of the header.
pub const COOKIE: &[u8; 8] = b"cxsparse";
/// Header version 1.0.
pub const VERSION: u32 = 0x0001_0000;
/// Where qemu puts the header: right after the footer copy.
pub const HEADER_OFFSET: u64 = 512;
/// Where qemu puts the BAT: right after the header.
pub const BAT_OFFSET: u64 = 0x600;
/// Block size qemu writes (and the specification's default): 2 MiB.
pub const BLOCK_SIZE: u32 = 2 << 20;
/// BAT entry of a block that is not allocated (reads as zeroes).
pub const UNALLOCATED: u32 = 0xffff_ffff;
/// Largest block size accepted on reading; larger values are nonsense and would make the
/// per-block sector bitmap needlessly large.
pub const MAX_BLOCK_SIZE: u32 = 256 << 20;
/// Largest BAT accepted on reading, in entries (32 MiB of memory; 16 TiB at 2 MiB blocks,
/// well beyond the 2040 GiB VHD limit).
pub const MAX_TABLE_ENTRIES: u32 = 8 << 20;
/// Offset of the checksum field in the header.
const CHECKSUM_AT: usize = 36;

/// A decoded dynamic disk header. Parent fields (differencing disks) are not kept: an
/// encoded header has them zero.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DynamicHeader {
    pub table_offset: u64,
    pub max_table_entries: u32,
    pub block_size: u32,
    pub checksum: u32,
}

impl DynamicHeader {
    /// A header as qemu writes it for `entries` 2 MiB blocks.
    pub fn new(entries: u32) -> DynamicHeader {
        DynamicHeader {
            table_offset: BAT_OFFSET,
            max_table_entries: entries,
            block_size: BLOCK_SIZE,
            checksum: 0,
        }
    }

    /// Decodes and verifies cookie, checksum, block size and table size.
    pub fn parse(bytes: &[u8; HEADER_SIZE]) -> Result<DynamicHeader, VhdError> {
        let header = DynamicHeader::decode(bytes)?;
        let computed = checksum(bytes, CHECKSUM_AT);
        if computed != header.checksum {
            return Err(VhdError::Checksum {
                stored: header.checksum,
                computed,
            });
        }
        Ok(header)
    }

    /// Decodes without verifying the checksum (for `check`, which reports it).
    pub fn decode(bytes: &[u8; HEADER_SIZE]) -> Result<DynamicHeader, VhdError> {
        if &bytes[..8] != COOKIE {
            return Err(VhdError::BadCookie {
                expected: "cxsparse",
                found: String::from_utf8_lossy(&bytes[..8]).into_owned(),
            });
        }
        let header = DynamicHeader {
            table_offset: be64(bytes, 16),
            max_table_entries: be32(bytes, 28),
            block_size: be32(bytes, 32),
            checksum: be32(bytes, CHECKSUM_AT),
        };
        let bs = header.block_size;
        if !bs.is_power_of_two() || !(4096..=MAX_BLOCK_SIZE).contains(&bs) {
            return Err(VhdError::Field {
                field: "block size",
                value: bs.into(),
                reason: "expected a power of two from 4 KiB to 256 MiB",
            });
        }
        if header.max_table_entries > MAX_TABLE_ENTRIES {
            return Err(VhdError::Field {
                field: "max table entries",
                value: header.max_table_entries.into(),
                reason: "BAT larger than 8M entries",
            });
        }
        if !header.table_offset.is_multiple_of(512) {
            return Err(VhdError::Field {
                field: "table offset",
                value: header.table_offset,
                reason: "not sector aligned",
            });
        }
        Ok(header)
    }

    /// Encodes with a fresh checksum.
    pub fn encode(&self) -> [u8; HEADER_SIZE] {
        let mut b = [0u8; HEADER_SIZE];
        b[0..8].copy_from_slice(COOKIE);
        // The specification says 0xFFFFFFFF, but Microsoft's tools expect all 64 bits set.
        b[8..16].copy_from_slice(&u64::MAX.to_be_bytes());
        b[16..24].copy_from_slice(&self.table_offset.to_be_bytes());
        b[24..28].copy_from_slice(&VERSION.to_be_bytes());
        b[28..32].copy_from_slice(&self.max_table_entries.to_be_bytes());
        b[32..36].copy_from_slice(&self.block_size.to_be_bytes());
        let sum = checksum(&b, CHECKSUM_AT);
        b[CHECKSUM_AT..CHECKSUM_AT + 4].copy_from_slice(&sum.to_be_bytes());
        b
    }

    /// Bytes of the BAT on disk: 4 per entry, padded to a sector.
    pub fn bat_bytes(&self) -> u64 {
        (u64::from(self.max_table_entries) * 4).next_multiple_of(512)
    }

    /// Bytes of the sector bitmap in front of each block: one bit per sector, padded to a
    /// sector.
    pub fn bitmap_bytes(&self) -> u64 {
        (u64::from(self.block_size) / 512 / 8).next_multiple_of(512)
    }
}

/// Number of BAT entries qemu gives a disk of `guest_size` bytes.
pub fn entries_for(guest_size: u64) -> u64 {
    guest_size.div_ceil(u64::from(BLOCK_SIZE))
}

/// Decodes BAT bytes (big-endian u32 sector numbers).
pub fn parse_bat(bytes: &[u8]) -> Vec<u32> {
    bytes
        .chunks_exact(4)
        .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// Encodes a BAT padded with unallocated entries to whole sectors, as qemu writes it.
pub fn encode_bat(bat: &[u32]) -> Vec<u8> {
    let len = (bat.len() * 4).next_multiple_of(512);
    let mut out = Vec::with_capacity(len);
    for entry in bat {
        out.extend_from_slice(&entry.to_be_bytes());
    }
    out.resize(len, 0xff);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The first 48 bytes of the header qemu-img 10.0 wrote for `create -f vpc x 64M`; the
    /// rest of the 1024 bytes are zero.
    fn qemu_64m_header() -> [u8; HEADER_SIZE] {
        let head: [u8; 40] = [
            b'c', b'x', b's', b'p', b'a', b'r', b's', b'e', // cookie
            0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, // data offset (unused)
            0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x06, 0x00, // table offset 0x600
            0x00, 0x01, 0x00, 0x00, // version 1.0
            0x00, 0x00, 0x00, 0x21, // max table entries 33
            0x00, 0x20, 0x00, 0x00, // block size 2 MiB
            0xff, 0xff, 0xf4, 0x56, // checksum
        ];
        let mut b = [0u8; HEADER_SIZE];
        b[..head.len()].copy_from_slice(&head);
        b
    }

    #[test]
    fn qemu_header_is_parsed_and_reencoded() {
        let bytes = qemu_64m_header();
        let h = DynamicHeader::parse(&bytes).unwrap();
        assert_eq!(
            h,
            DynamicHeader {
                checksum: 0xffff_f456,
                ..DynamicHeader::new(33)
            }
        );
        assert_eq!(h.bat_bytes(), 512);
        assert_eq!(h.bitmap_bytes(), 512);
        assert_eq!(h.encode(), bytes);
    }

    #[test]
    fn one_flipped_byte_fails_the_checksum() {
        let mut bytes = qemu_64m_header();
        bytes[100] = 1;
        assert!(matches!(
            DynamicHeader::parse(&bytes),
            Err(VhdError::Checksum { .. })
        ));
    }

    #[test]
    fn odd_block_size_is_rejected() {
        let mut h = DynamicHeader::new(33);
        h.block_size = 3 << 20;
        assert!(matches!(
            DynamicHeader::parse(&h.encode()),
            Err(VhdError::Field {
                field: "block size",
                ..
            })
        ));
    }

    #[test]
    fn huge_table_is_rejected() {
        let h = DynamicHeader::new(u32::MAX - 1);
        assert!(matches!(
            DynamicHeader::parse(&h.encode()),
            Err(VhdError::Field {
                field: "max table entries",
                ..
            })
        ));
    }

    #[test]
    fn bat_is_padded_with_unallocated_entries() {
        let bytes = encode_bat(&[4, UNALLOCATED, 0x1005]);
        assert_eq!(bytes.len(), 512);
        assert_eq!(
            &bytes[..12],
            &[0, 0, 0, 4, 0xff, 0xff, 0xff, 0xff, 0, 0, 0x10, 5]
        );
        assert!(bytes[12..].iter().all(|b| *b == 0xff));
        assert_eq!(parse_bat(&bytes[..12]), vec![4, UNALLOCATED, 0x1005]);
    }
}

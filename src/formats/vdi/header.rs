//! The VDI pre-header and header (version 1.1), little-endian, in the first 512 bytes.

use super::error::VdiError;
use crate::formats::fields::{le32, le64};

/// Bytes qemu writes for the header area: text, pre-header, header and padding.
pub const HEADER_AREA: usize = 512;
/// Free text at the start of the file; qemu writes this one (VirtualBox names itself).
pub const TEXT: &[u8] = b"<<< QEMU VM Virtual Disk Image >>>\n";
/// Offset of the signature (after 64 bytes of text).
const SIGNATURE_AT: usize = 0x40;
/// The VDI signature.
pub const SIGNATURE: u32 = 0xbeda_107f;
/// Version 1.1, the only one qemu and cloudimg read.
pub const VERSION_1_1: u32 = 0x0001_0001;
/// Size of the version 1.1 header, from `header_size` to the end of the UUIDs.
pub const HEADER_SIZE_1_1: u32 = 0x180;
/// Image types.
pub const TYPE_DYNAMIC: u32 = 1;
pub const TYPE_STATIC: u32 = 2;
/// Sector size, the only one in use.
pub const SECTOR_SIZE: u32 = 512;
/// Block size qemu writes, and the only one cloudimg reads: 1 MiB.
pub const BLOCK_SIZE: u32 = 1 << 20;
/// Where qemu puts the block map: right after the header area.
pub const BMAP_OFFSET: u32 = 512;
/// Block map entry of a block never written (reads as zeroes).
pub const UNALLOCATED: u32 = 0xffff_ffff;
/// Block map entry of a block discarded to zeroes.
pub const ZERO: u32 = 0xffff_fffe;
/// Largest block map accepted, in entries: 64 MiB of memory, 16 TiB of disk at 1 MiB blocks.
pub const MAX_BLOCKS: u32 = 16 << 20;

/// The header fields cloudimg reads and writes. Geometry (unused by qemu) and the
/// description are written as zeroes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VdiHeader {
    pub image_type: u32,
    pub offset_bmap: u32,
    pub offset_data: u32,
    pub disk_size: u64,
    pub blocks_in_image: u32,
    pub blocks_allocated: u32,
    /// UUIDs as stored: the first three fields little-endian (Microsoft GUID order).
    pub uuid_image: [u8; 16],
    pub uuid_last_snap: [u8; 16],
}

fn field(
    field: &'static str,
    offset: usize,
    value: impl Into<u64>,
    reason: &'static str,
) -> VdiError {
    VdiError::Field {
        field,
        offset: offset as u64,
        value: value.into(),
        reason,
    }
}

/// Converts between a UUID in text order and the stored GUID order (the first three
/// fields byte-swapped); the conversion is its own inverse.
pub fn swap_guid(uuid: &[u8; 16]) -> [u8; 16] {
    let mut out = *uuid;
    out[0..4].reverse();
    out[4..6].reverse();
    out[6..8].reverse();
    out
}

impl VdiHeader {
    /// Block map bytes qemu reserves: one u32 per block, padded to a sector.
    pub fn bmap_bytes_for(blocks: u32) -> u32 {
        (blocks * 4).next_multiple_of(SECTOR_SIZE)
    }

    /// A header as qemu writes it for a disk of `disk_size` bytes (a sector multiple).
    pub fn new(
        disk_size: u64,
        is_static: bool,
        uuid_image: [u8; 16],
        uuid_last_snap: [u8; 16],
    ) -> Result<VdiHeader, VdiError> {
        let blocks = u32::try_from(disk_size.div_ceil(u64::from(BLOCK_SIZE)))
            .ok()
            .filter(|b| *b <= MAX_BLOCKS)
            .ok_or(VdiError::Unsupported {
                what: format!("VDI of {disk_size} bytes; cloudimg's limit is 16 TiB"),
            })?;
        Ok(VdiHeader {
            image_type: if is_static { TYPE_STATIC } else { TYPE_DYNAMIC },
            offset_bmap: BMAP_OFFSET,
            offset_data: BMAP_OFFSET + VdiHeader::bmap_bytes_for(blocks),
            disk_size,
            blocks_in_image: blocks,
            blocks_allocated: if is_static { blocks } else { 0 },
            uuid_image,
            uuid_last_snap,
        })
    }

    pub fn is_static(&self) -> bool {
        self.image_type == TYPE_STATIC
    }

    /// Decodes and validates the header area.
    pub fn parse(b: &[u8; HEADER_AREA]) -> Result<VdiHeader, VdiError> {
        let signature = le32(b, SIGNATURE_AT);
        if signature != SIGNATURE {
            return Err(VdiError::BadSignature { found: signature });
        }
        let version = le32(b, 0x44);
        if version != VERSION_1_1 {
            return Err(VdiError::Unsupported {
                what: format!(
                    "VDI version {}.{}; only 1.1 is read",
                    version >> 16,
                    version & 0xffff
                ),
            });
        }
        let header_size = le32(b, 0x48);
        if header_size < HEADER_SIZE_1_1 {
            return Err(field(
                "header size",
                0x48,
                header_size,
                "shorter than a version 1.1 header",
            ));
        }
        let image_type = le32(b, 0x4c);
        if image_type != TYPE_DYNAMIC && image_type != TYPE_STATIC {
            return Err(VdiError::Unsupported {
                what: format!(
                    "VDI image type {image_type}; only 1 (dynamic) and 2 (static) are read"
                ),
            });
        }
        let sector_size = le32(b, 0x168);
        if sector_size != SECTOR_SIZE {
            return Err(field("sector size", 0x168, sector_size, "expected 512"));
        }
        let block_size = le32(b, 0x178);
        if block_size != BLOCK_SIZE {
            return Err(VdiError::Unsupported {
                what: format!("VDI block size {block_size}; only 1 MiB blocks are read"),
            });
        }
        let block_extra = le32(b, 0x17c);
        if block_extra != 0 {
            return Err(VdiError::Unsupported {
                what: format!("VDI with {block_extra} extra bytes per block"),
            });
        }
        let uuid = |at: usize| {
            let mut u = [0u8; 16];
            u.copy_from_slice(&b[at..at + 16]);
            u
        };
        let (uuid_image, uuid_last_snap, uuid_link, uuid_parent) =
            (uuid(0x188), uuid(0x198), uuid(0x1a8), uuid(0x1b8));
        if uuid_link != [0; 16] || uuid_parent != [0; 16] {
            return Err(VdiError::Unsupported {
                what: "differencing VDI (it has a parent image)".into(),
            });
        }
        let header = VdiHeader {
            image_type,
            offset_bmap: le32(b, 0x154),
            offset_data: le32(b, 0x158),
            disk_size: le64(b, 0x170),
            blocks_in_image: le32(b, 0x180),
            blocks_allocated: le32(b, 0x184),
            uuid_image,
            uuid_last_snap,
        };
        header.validate()?;
        Ok(header)
    }

    fn validate(&self) -> Result<(), VdiError> {
        if !self.offset_bmap.is_multiple_of(SECTOR_SIZE) || self.offset_bmap < HEADER_AREA as u32 {
            return Err(field(
                "block map offset",
                0x154,
                self.offset_bmap,
                "not a sector after the header",
            ));
        }
        if !self.offset_data.is_multiple_of(SECTOR_SIZE) {
            return Err(field(
                "data offset",
                0x158,
                self.offset_data,
                "not sector aligned",
            ));
        }
        if self.blocks_in_image > MAX_BLOCKS {
            return Err(field(
                "blocks in image",
                0x180,
                self.blocks_in_image,
                "more than 16M blocks",
            ));
        }
        if u64::from(self.blocks_in_image) * u64::from(BLOCK_SIZE) < self.disk_size {
            return Err(field(
                "blocks in image",
                0x180,
                self.blocks_in_image,
                "too few blocks for the disk size",
            ));
        }
        if u64::from(self.offset_bmap) + u64::from(self.blocks_in_image) * 4
            > u64::from(self.offset_data)
        {
            return Err(field(
                "data offset",
                0x158,
                self.offset_data,
                "overlaps the block map",
            ));
        }
        if self.blocks_allocated > self.blocks_in_image {
            return Err(field(
                "blocks allocated",
                0x184,
                self.blocks_allocated,
                "more than blocks in image",
            ));
        }
        Ok(())
    }

    /// Encodes the 512-byte header area as qemu writes it.
    pub fn encode(&self) -> [u8; HEADER_AREA] {
        let mut b = [0u8; HEADER_AREA];
        b[..TEXT.len()].copy_from_slice(TEXT);
        let mut put32 = |at: usize, v: u32| b[at..at + 4].copy_from_slice(&v.to_le_bytes());
        put32(SIGNATURE_AT, SIGNATURE);
        put32(0x44, VERSION_1_1);
        put32(0x48, HEADER_SIZE_1_1);
        put32(0x4c, self.image_type);
        put32(0x154, self.offset_bmap);
        put32(0x158, self.offset_data);
        put32(0x168, SECTOR_SIZE);
        put32(0x178, BLOCK_SIZE);
        put32(0x180, self.blocks_in_image);
        put32(0x184, self.blocks_allocated);
        b[0x170..0x178].copy_from_slice(&self.disk_size.to_le_bytes());
        b[0x188..0x198].copy_from_slice(&self.uuid_image);
        b[0x198..0x1a8].copy_from_slice(&self.uuid_last_snap);
        b
    }

    /// Block map entries the space between the map and the data can hold.
    pub fn bmap_capacity(&self) -> u64 {
        u64::from(self.offset_data.saturating_sub(self.offset_bmap)) / 4
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// The header area qemu-img 10.0 wrote converting a 41943552-byte raw disk to a dynamic
    /// VDI (41 blocks, 6 allocated), as (offset, bytes) runs; everything else is zero.
    pub fn qemu_header() -> [u8; HEADER_AREA] {
        let runs: [(usize, &[u8]); 17] = [
            (0x00, TEXT),                                   // text
            (0x40, &[0x7f, 0x10, 0xda, 0xbe]),              // signature
            (0x44, &[0x01, 0x00, 0x01, 0x00]),              // version 1.1
            (0x48, &[0x80, 0x01, 0x00, 0x00]),              // header size 0x180
            (0x4c, &[0x01, 0x00, 0x00, 0x00]),              // image type: dynamic
            (0x50, &[0x00, 0x00, 0x00, 0x00]),              // image flags
            (0x154, &[0x00, 0x02, 0x00, 0x00]),             // block map at 0x200
            (0x158, &[0x00, 0x04, 0x00, 0x00]),             // data at 0x400
            (0x168, &[0x00, 0x02, 0x00, 0x00]),             // sector size 512
            (0x170, &[0x00, 0x02, 0x80, 0x02, 0, 0, 0, 0]), // disk size
            (0x178, &[0x00, 0x00, 0x10, 0x00]),             // block size 1 MiB
            (0x17c, &[0x00, 0x00, 0x00, 0x00]),             // block extra
            (0x180, &[0x29, 0x00, 0x00, 0x00]),             // blocks in image 41
            (0x184, &[0x06, 0x00, 0x00, 0x00]),             // blocks allocated 6
            (
                0x188,
                &[
                    0x7c, 0x55, 0xc9, 0x1c, 0xf6, 0x62, 0x3a, 0x4b, 0xad, 0xef, 0x64, 0x3a, 0xca,
                    0x34, 0xa3, 0xab,
                ],
            ), // image UUID
            (
                0x198,
                &[
                    0x11, 0x5c, 0x1b, 0x49, 0xf9, 0x25, 0xd0, 0x4d, 0xb0, 0xee, 0x04, 0x52, 0x20,
                    0x41, 0x3a, 0x3b,
                ],
            ), // last snapshot UUID
            (0x1a8, &[0; 32]),                              // link and parent UUIDs
        ];
        let mut b = [0u8; HEADER_AREA];
        for (at, bytes) in runs {
            b[at..at + bytes.len()].copy_from_slice(bytes);
        }
        b
    }

    #[test]
    fn qemu_header_is_parsed_and_reencoded() {
        let bytes = qemu_header();
        let h = VdiHeader::parse(&bytes).unwrap();
        assert_eq!(h.disk_size, 41_943_552);
        assert_eq!((h.blocks_in_image, h.blocks_allocated), (41, 6));
        assert_eq!((h.offset_bmap, h.offset_data), (0x200, 0x400));
        assert!(!h.is_static());
        assert_eq!(h.encode(), bytes);
    }

    #[test]
    fn new_matches_qemu_layout() {
        let h = VdiHeader::new(41_943_552, false, [0; 16], [0; 16]).unwrap();
        assert_eq!((h.blocks_in_image, h.offset_data), (41, 0x400));
        // 1 GiB: 1024 entries = 4 KiB of map; 513 MiB: 2052 bytes rounded to 2560.
        assert_eq!(
            VdiHeader::new(1 << 30, false, [0; 16], [0; 16])
                .unwrap()
                .offset_data,
            0x1200
        );
        assert_eq!(
            VdiHeader::new(513 << 20, false, [0; 16], [0; 16])
                .unwrap()
                .offset_data,
            0xc00
        );
    }

    #[test]
    fn bad_signature_is_rejected() {
        let mut b = qemu_header();
        b[0x40] = 0x7e;
        assert!(matches!(
            VdiHeader::parse(&b),
            Err(VdiError::BadSignature { .. })
        ));
    }

    #[test]
    fn version_1_0_is_unsupported() {
        let mut b = qemu_header();
        b[0x44] = 0x00;
        assert!(matches!(
            VdiHeader::parse(&b),
            Err(VdiError::Unsupported { .. })
        ));
    }

    #[test]
    fn other_block_size_is_unsupported() {
        let mut b = qemu_header();
        b[0x17a] = 0x20;
        assert!(matches!(
            VdiHeader::parse(&b),
            Err(VdiError::Unsupported { .. })
        ));
    }

    #[test]
    fn too_few_blocks_for_the_disk_is_rejected() {
        let mut b = qemu_header();
        b[0x180] = 0x28;
        assert!(matches!(
            VdiHeader::parse(&b),
            Err(VdiError::Field { offset: 0x180, .. })
        ));
    }

    #[test]
    fn huge_block_count_is_rejected() {
        let mut b = qemu_header();
        b[0x183] = 0x7f;
        assert!(matches!(
            VdiHeader::parse(&b),
            Err(VdiError::Field { offset: 0x180, .. })
        ));
    }

    #[test]
    fn block_map_overlapping_data_is_rejected() {
        let mut b = qemu_header();
        b[0x180] = 0x81; // 129 blocks need 516 bytes of map, more than 0x200..0x400
        assert!(matches!(
            VdiHeader::parse(&b),
            Err(VdiError::Field { offset: 0x158, .. })
        ));
    }

    #[test]
    fn parent_uuid_means_differencing_and_is_unsupported() {
        let mut b = qemu_header();
        b[0x1b8] = 1;
        assert!(matches!(
            VdiHeader::parse(&b),
            Err(VdiError::Unsupported { .. })
        ));
    }

    #[test]
    fn guid_swap_is_its_own_inverse() {
        let text_order = [
            0x1c, 0xc9, 0x55, 0x7c, 0x62, 0xf6, 0x4b, 0x3a, 0xad, 0xef, 0x64, 0x3a, 0xca, 0x34,
            0xa3, 0xab,
        ];
        let stored = swap_guid(&text_order);
        assert_eq!(
            &stored[..8],
            &[0x7c, 0x55, 0xc9, 0x1c, 0xf6, 0x62, 0x3a, 0x4b]
        );
        assert_eq!(swap_guid(&stored), text_order);
    }
}

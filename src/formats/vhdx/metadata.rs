//! The metadata region: a 64 KiB table of items, then the items themselves.
//!
//! The table (`metadata`, entry count, 32-byte entries: item GUID, offset from the region
//! start, length, flags) names five items every disk has: file parameters (block size, whether
//! blocks stay allocated (fixed), whether there is a parent (differencing)), virtual disk size,
//! page 83 data (the SCSI identifier), logical and physical sector size. A reader must refuse
//! a required item it does not know. The table has no checksum: the log protects it.

use super::error::VhdxError;
use super::guid;
use super::header::guid_at;
use super::region::Region;
use crate::formats::fields::{le16, le32, le64};

/// Bytes of the table at the start of the region; items lie after it.
pub const TABLE_SIZE: usize = 64 << 10;
/// `metadata`.
const SIGNATURE: &[u8; 8] = b"metadata";
const TABLE_HEADER_SIZE: usize = 32;
const ENTRY_SIZE: usize = 32;
/// The specification's limit on entries.
const MAX_ENTRIES: u16 = 2047;
/// Entry flags: a user item (ours are system items), an item of the virtual disk rather than
/// of the file, an item a reader must understand.
const IS_VIRTUAL_DISK: u32 = 2;
const IS_REQUIRED: u32 = 4;
/// File parameter flags.
const LEAVE_BLOCKS_ALLOCATED: u32 = 1;
const HAS_PARENT: u32 = 2;
/// Block sizes the specification allows: powers of two from 1 MiB to 256 MiB.
pub const MIN_BLOCK_SIZE: u32 = 1 << 20;
pub const MAX_BLOCK_SIZE: u32 = 256 << 20;
/// Largest virtual disk the specification allows: 64 TiB.
pub const MAX_VIRTUAL_SIZE: u64 = 64 << 40;
/// Sizes of the five items, in the order qemu lays them out after the table.
const FILE_PARAMETERS_LEN: u32 = 8;
const VIRTUAL_SIZE_LEN: u32 = 8;
const PAGE_83_LEN: u32 = 16;
const SECTOR_SIZE_LEN: u32 = 4;

/// Where an item lies, relative to the start of the metadata region.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Item {
    pub offset: u32,
    pub length: u32,
}

/// Where the five items lie.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MetadataTable {
    pub file_parameters: Item,
    pub virtual_disk_size: Item,
    pub page_83_data: Item,
    pub logical_sector_size: Item,
    pub physical_sector_size: Item,
}

/// The decoded items.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Metadata {
    pub block_size: u32,
    /// Fixed disks: every block stays allocated.
    pub leave_blocks_allocated: bool,
    pub virtual_size: u64,
    pub page_83_data: [u8; 16],
    pub logical_sector_size: u32,
    pub physical_sector_size: u32,
}

/// The raw bytes of the five items, as read from the file.
pub struct ItemBytes {
    pub file_parameters: [u8; 8],
    pub virtual_disk_size: [u8; 8],
    pub page_83_data: [u8; 16],
    pub logical_sector_size: [u8; 4],
    pub physical_sector_size: [u8; 4],
}

impl MetadataTable {
    /// Decodes the table of the metadata `region` (whose first 64 KiB are `bytes`).
    pub fn parse(bytes: &[u8; TABLE_SIZE], region: Region) -> Result<MetadataTable, VhdxError> {
        let offset = region.offset;
        if &bytes[..8] != SIGNATURE {
            return Err(VhdxError::BadSignature {
                offset,
                expected: "metadata",
                found: String::from_utf8_lossy(&bytes[..8]).into_owned(),
            });
        }
        let count = le16(bytes, 10);
        if count > MAX_ENTRIES {
            return Err(VhdxError::Field {
                offset: offset + 10,
                field: "metadata entry count",
                value: count.into(),
                reason: "more than the 2047 a table holds",
            });
        }
        let known: [([u8; 16], u32); 5] = [
            (guid::FILE_PARAMETERS, FILE_PARAMETERS_LEN),
            (guid::VIRTUAL_DISK_SIZE, VIRTUAL_SIZE_LEN),
            (guid::PAGE_83_DATA, PAGE_83_LEN),
            (guid::LOGICAL_SECTOR_SIZE, SECTOR_SIZE_LEN),
            (guid::PHYSICAL_SECTOR_SIZE, SECTOR_SIZE_LEN),
        ];
        let mut found: [Option<Item>; 5] = [None; 5];
        for index in 0..usize::from(count) {
            let at = TABLE_HEADER_SIZE + index * ENTRY_SIZE;
            let entry_offset = offset + at as u64;
            let id = guid_at(bytes, at);
            let item = Item {
                offset: le32(bytes, at + 16),
                length: le32(bytes, at + 20),
            };
            let flags = le32(bytes, at + 24);
            if id == guid::PARENT_LOCATOR {
                return Err(VhdxError::Differencing);
            }
            let Some(slot) = known.iter().position(|(g, _)| *g == id) else {
                if flags & IS_REQUIRED != 0 {
                    return Err(VhdxError::Unsupported {
                        what: format!(
                            "required metadata item {} (entry {index}), which cloudimg does \
                             not know",
                            hex::encode(id)
                        ),
                    });
                }
                continue;
            };
            check_item(item, known[slot].1, region, entry_offset)?;
            if found[slot].replace(item).is_some() {
                return Err(VhdxError::Field {
                    offset: entry_offset,
                    field: "metadata entry",
                    value: index as u64,
                    reason: "the same item twice",
                });
            }
        }
        let [Some(file_parameters), Some(virtual_disk_size), Some(page_83_data), Some(logical_sector_size), Some(physical_sector_size)] =
            found
        else {
            return Err(VhdxError::Field {
                offset: offset + 10,
                field: "metadata entry count",
                value: count.into(),
                reason: "a required item (file parameters, size, page 83, sector sizes) is missing",
            });
        };
        Ok(MetadataTable {
            file_parameters,
            virtual_disk_size,
            page_83_data,
            logical_sector_size,
            physical_sector_size,
        })
    }
}

/// An item lies after the table, inside the region, and is long enough for its value.
fn check_item(item: Item, needed: u32, region: Region, entry_offset: u64) -> Result<(), VhdxError> {
    let end = u64::from(item.offset) + u64::from(item.length);
    if (item.offset as usize) < TABLE_SIZE || end > region.length {
        return Err(VhdxError::Field {
            offset: entry_offset + 16,
            field: "metadata item offset",
            value: item.offset.into(),
            reason: "outside the metadata region, or inside its table",
        });
    }
    if item.length < needed {
        return Err(VhdxError::Field {
            offset: entry_offset + 20,
            field: "metadata item length",
            value: item.length.into(),
            reason: "too short for the item",
        });
    }
    Ok(())
}

impl Metadata {
    /// Decodes and checks the five items; `table` tells where they were (for error offsets).
    pub fn decode(
        items: &ItemBytes,
        table: &MetadataTable,
        region: Region,
    ) -> Result<Metadata, VhdxError> {
        let at = |item: Item| region.offset + u64::from(item.offset);
        let block_size = le32(&items.file_parameters, 0);
        let flags = le32(&items.file_parameters, 4);
        if flags & HAS_PARENT != 0 {
            return Err(VhdxError::Differencing);
        }
        if !block_size.is_power_of_two() || !(MIN_BLOCK_SIZE..=MAX_BLOCK_SIZE).contains(&block_size)
        {
            return Err(VhdxError::Field {
                offset: at(table.file_parameters),
                field: "block size",
                value: block_size.into(),
                reason: "not a power of two from 1 MiB to 256 MiB",
            });
        }
        let sector = |bytes: &[u8; 4], item: Item, field| {
            let value = le32(bytes, 0);
            if value == 512 || value == 4096 {
                Ok(value)
            } else {
                Err(VhdxError::Field {
                    offset: at(item),
                    field,
                    value: value.into(),
                    reason: "expected 512 or 4096",
                })
            }
        };
        let logical_sector_size = sector(
            &items.logical_sector_size,
            table.logical_sector_size,
            "logical sector size",
        )?;
        let physical_sector_size = sector(
            &items.physical_sector_size,
            table.physical_sector_size,
            "physical sector size",
        )?;
        let virtual_size = le64(&items.virtual_disk_size, 0);
        if !virtual_size.is_multiple_of(logical_sector_size.into()) {
            return Err(VhdxError::Field {
                offset: at(table.virtual_disk_size),
                field: "virtual disk size",
                value: virtual_size,
                reason: "not a multiple of the logical sector size",
            });
        }
        if virtual_size > MAX_VIRTUAL_SIZE {
            return Err(VhdxError::Unsupported {
                what: format!("VHDX of {virtual_size} bytes, beyond the 64 TiB limit"),
            });
        }
        Ok(Metadata {
            block_size,
            leave_blocks_allocated: flags & LEAVE_BLOCKS_ALLOCATED != 0,
            virtual_size,
            page_83_data: items.page_83_data,
            logical_sector_size,
            physical_sector_size,
        })
    }

    /// The table and the items as qemu writes them: the items packed right after the table,
    /// in the order file parameters, size, page 83, logical and physical sector size.
    pub fn encode(&self) -> ([u8; TABLE_SIZE], [u8; 40]) {
        let mut table = [0u8; TABLE_SIZE];
        table[..8].copy_from_slice(SIGNATURE);
        table[10..12].copy_from_slice(&5u16.to_le_bytes());
        let layout = [
            (guid::FILE_PARAMETERS, FILE_PARAMETERS_LEN, IS_REQUIRED),
            (
                guid::VIRTUAL_DISK_SIZE,
                VIRTUAL_SIZE_LEN,
                IS_REQUIRED | IS_VIRTUAL_DISK,
            ),
            (
                guid::PAGE_83_DATA,
                PAGE_83_LEN,
                IS_REQUIRED | IS_VIRTUAL_DISK,
            ),
            (
                guid::LOGICAL_SECTOR_SIZE,
                SECTOR_SIZE_LEN,
                IS_REQUIRED | IS_VIRTUAL_DISK,
            ),
            (
                guid::PHYSICAL_SECTOR_SIZE,
                SECTOR_SIZE_LEN,
                IS_REQUIRED | IS_VIRTUAL_DISK,
            ),
        ];
        let mut item_offset = TABLE_SIZE as u32;
        for (index, (id, length, flags)) in layout.into_iter().enumerate() {
            let at = TABLE_HEADER_SIZE + index * ENTRY_SIZE;
            table[at..at + 16].copy_from_slice(&id);
            table[at + 16..at + 20].copy_from_slice(&item_offset.to_le_bytes());
            table[at + 20..at + 24].copy_from_slice(&length.to_le_bytes());
            table[at + 24..at + 28].copy_from_slice(&flags.to_le_bytes());
            item_offset += length;
        }
        let mut items = [0u8; 40];
        items[0..4].copy_from_slice(&self.block_size.to_le_bytes());
        let flags = if self.leave_blocks_allocated {
            LEAVE_BLOCKS_ALLOCATED
        } else {
            0
        };
        items[4..8].copy_from_slice(&flags.to_le_bytes());
        items[8..16].copy_from_slice(&self.virtual_size.to_le_bytes());
        items[16..32].copy_from_slice(&self.page_83_data);
        items[32..36].copy_from_slice(&self.logical_sector_size.to_le_bytes());
        items[36..40].copy_from_slice(&self.physical_sector_size.to_le_bytes());
        (table, items)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const REGION: Region = Region {
        offset: 3 << 20,
        length: 1 << 20,
    };

    /// The first 192 bytes of the metadata table qemu-img 10.0 writes (the rest of the 64 KiB
    /// is zero), and the 40 bytes of items after it, for a 100 MiB dynamic disk.
    fn qemu_table() -> [u8; TABLE_SIZE] {
        let head = hex::decode(concat!(
            "6d65746164617461",                         // "metadata"
            "0000",                                     // reserved
            "0500",                                     // five entries
            "0000000000000000000000000000000000000000", // reserved
            // file parameters: at 64 KiB, 8 bytes, required
            "3767a1ca36fa434db3b633f0aa44e76b",
            "00000100",
            "08000000",
            "04000000",
            "00000000",
            // virtual disk size: at 64 KiB + 8, 8 bytes, required, of the virtual disk
            "2442a52f1bcd7648b2115dbed83bf4b8",
            "08000100",
            "08000000",
            "06000000",
            "00000000",
            // page 83 data: 16 bytes
            "ab12cabee6b2234593efc309e000c746",
            "10000100",
            "10000000",
            "06000000",
            "00000000",
            // logical sector size: 4 bytes
            "1dbf41816fa90947ba47f233a8faab5f",
            "20000100",
            "04000000",
            "06000000",
            "00000000",
            // physical sector size: 4 bytes
            "c748a3cd5d4471449cc9e9885251c556",
            "24000100",
            "04000000",
            "06000000",
            "00000000",
        ))
        .unwrap();
        let mut b = [0u8; TABLE_SIZE];
        b[..head.len()].copy_from_slice(&head);
        b
    }

    fn qemu_items() -> ItemBytes {
        ItemBytes {
            file_parameters: [0x00, 0x00, 0x80, 0x00, 0, 0, 0, 0], // 8 MiB blocks, no flags
            virtual_disk_size: (100u64 << 20).to_le_bytes(),
            page_83_data: [0xb0; 16],
            logical_sector_size: 512u32.to_le_bytes(),
            physical_sector_size: 512u32.to_le_bytes(),
        }
    }

    #[test]
    fn qemu_metadata_is_decoded_and_reencoded() {
        let table = MetadataTable::parse(&qemu_table(), REGION).unwrap();
        assert_eq!(
            table.page_83_data,
            Item {
                offset: 0x10010,
                length: 16
            }
        );
        let metadata = Metadata::decode(&qemu_items(), &table, REGION).unwrap();
        assert_eq!(metadata.block_size, 8 << 20);
        assert_eq!(metadata.virtual_size, 100 << 20);
        assert!(!metadata.leave_blocks_allocated);
        let (encoded, items) = metadata.encode();
        assert_eq!(encoded, qemu_table());
        assert_eq!(&items[..8], &qemu_items().file_parameters);
    }

    #[test]
    fn bad_signature_is_rejected() {
        let mut bytes = qemu_table();
        bytes[0] = b'M';
        assert!(matches!(
            MetadataTable::parse(&bytes, REGION),
            Err(VhdxError::BadSignature { .. })
        ));
    }

    #[test]
    fn item_outside_the_region_is_rejected() {
        let mut bytes = qemu_table();
        bytes[0x32] = 0x10; // the size item at 1 MiB + 8: past the 1 MiB region
        assert!(matches!(
            MetadataTable::parse(&bytes, REGION),
            Err(VhdxError::Field {
                field: "metadata item offset",
                ..
            })
        ));
    }

    #[test]
    fn missing_item_is_rejected() {
        let mut bytes = qemu_table();
        bytes[10] = 4; // the physical sector size entry is no longer counted
        assert!(MetadataTable::parse(&bytes, REGION).is_err());
    }

    #[test]
    fn parent_locator_means_differencing() {
        let mut bytes = qemu_table();
        bytes[0xa0..0xb0].copy_from_slice(&guid::PARENT_LOCATOR);
        assert!(matches!(
            MetadataTable::parse(&bytes, REGION),
            Err(VhdxError::Differencing)
        ));
        let table = MetadataTable::parse(&qemu_table(), REGION).unwrap();
        let mut items = qemu_items();
        items.file_parameters[4] = 2; // has parent
        assert!(matches!(
            Metadata::decode(&items, &table, REGION),
            Err(VhdxError::Differencing)
        ));
    }

    #[test]
    fn odd_block_and_sector_sizes_are_rejected() {
        let table = MetadataTable::parse(&qemu_table(), REGION).unwrap();
        let mut items = qemu_items();
        items.file_parameters[2] = 0x90; // 9 MiB
        assert!(Metadata::decode(&items, &table, REGION).is_err());
        let mut items = qemu_items();
        items.logical_sector_size = 1024u32.to_le_bytes();
        assert!(Metadata::decode(&items, &table, REGION).is_err());
        let mut items = qemu_items();
        items.virtual_disk_size = (65u64 << 40).to_le_bytes();
        assert!(matches!(
            Metadata::decode(&items, &table, REGION),
            Err(VhdxError::Unsupported { .. })
        ));
    }
}

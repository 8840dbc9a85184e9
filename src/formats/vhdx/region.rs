//! The region table: where the BAT and the metadata lie.
//!
//! Two identical 64 KiB copies at 192 KiB and 256 KiB, each a 16-byte header (`regi`, CRC-32C
//! over the 64 KiB, entry count) and 32-byte entries (GUID, file offset, length, required
//! flag). A reader must refuse a file with a required region it does not know; regions lie
//! past the header section, 1 MiB aligned, and never overlap.

use super::error::VhdxError;
use super::guid;
use super::header::{guid_at, seal, verify, HEADER_SECTION_SIZE, MIB};
use crate::formats::fields::{le32, le64};

/// Where the two copies lie.
pub const TABLE1_OFFSET: u64 = 192 << 10;
pub const TABLE2_OFFSET: u64 = 256 << 10;
/// Bytes of a table, all covered by its CRC.
pub const TABLE_SIZE: usize = 64 << 10;
/// `regi`.
const SIGNATURE: &[u8; 4] = b"regi";
/// The header before the entries.
const TABLE_HEADER_SIZE: usize = 16;
/// Bytes of one entry.
const ENTRY_SIZE: usize = 32;
/// The specification's limit, which also keeps the entries inside the 64 KiB.
pub const MAX_ENTRIES: u32 = 2047;
/// Bit 0 of an entry's flags: a reader that does not know the region must refuse the file.
const REQUIRED: u32 = 1;

/// A byte range of the file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Region {
    pub offset: u64,
    pub length: u64,
}

impl Region {
    pub fn end(&self) -> u64 {
        self.offset.saturating_add(self.length)
    }

    pub fn overlaps(&self, other: &Region) -> bool {
        self.offset < other.end() && other.offset < self.end()
    }
}

/// The two regions a reader needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RegionTable {
    pub bat: Region,
    pub metadata: Region,
}

impl RegionTable {
    /// Decodes and verifies a copy read at `offset`.
    pub fn parse(bytes: &[u8; TABLE_SIZE], offset: u64) -> Result<RegionTable, VhdxError> {
        if &bytes[..4] != SIGNATURE {
            return Err(VhdxError::BadSignature {
                offset,
                expected: "regi",
                found: String::from_utf8_lossy(&bytes[..4]).into_owned(),
            });
        }
        verify(bytes, offset)?;
        let count = le32(bytes, 8);
        if count > MAX_ENTRIES {
            return Err(VhdxError::Field {
                offset: offset + 8,
                field: "region entry count",
                value: count.into(),
                reason: "more than the 2047 a table holds",
            });
        }
        let mut bat = None;
        let mut metadata = None;
        let mut seen: Vec<Region> = Vec::new();
        for index in 0..count as usize {
            let at = TABLE_HEADER_SIZE + index * ENTRY_SIZE;
            let entry_offset = offset + at as u64;
            let id = guid_at(bytes, at);
            let region = Region {
                offset: le64(bytes, at + 16),
                length: le32(bytes, at + 24).into(),
            };
            let required = le32(bytes, at + 28) & REQUIRED != 0;
            check_region(&region, entry_offset)?;
            if seen.iter().any(|r| r.overlaps(&region)) {
                return Err(VhdxError::Field {
                    offset: entry_offset + 16,
                    field: "region offset",
                    value: region.offset,
                    reason: "overlaps another region",
                });
            }
            seen.push(region);
            let slot = if id == guid::BAT_REGION {
                &mut bat
            } else if id == guid::METADATA_REGION {
                &mut metadata
            } else if required {
                return Err(VhdxError::Unsupported {
                    what: format!(
                        "required region {} at entry {index}, which cloudimg does not know",
                        hex::encode(id)
                    ),
                });
            } else {
                continue;
            };
            if slot.replace(region).is_some() {
                return Err(VhdxError::Field {
                    offset: entry_offset,
                    field: "region entry",
                    value: index as u64,
                    reason: "a second BAT or metadata region",
                });
            }
        }
        let missing = |what: &'static str| VhdxError::Field {
            offset: offset + 8,
            field: what,
            value: count.into(),
            reason: "entries, and this region is not among them",
        };
        Ok(RegionTable {
            bat: bat.ok_or_else(|| missing("BAT region"))?,
            metadata: metadata.ok_or_else(|| missing("metadata region"))?,
        })
    }

    /// Encodes the two regions a writer makes: BAT first and neither flagged required, as qemu
    /// writes them (every reader knows both).
    pub fn encode(&self) -> [u8; TABLE_SIZE] {
        let mut b = [0u8; TABLE_SIZE];
        b[..4].copy_from_slice(SIGNATURE);
        b[8..12].copy_from_slice(&2u32.to_le_bytes());
        for (index, (id, region)) in [
            (guid::BAT_REGION, self.bat),
            (guid::METADATA_REGION, self.metadata),
        ]
        .into_iter()
        .enumerate()
        {
            let at = TABLE_HEADER_SIZE + index * ENTRY_SIZE;
            b[at..at + 16].copy_from_slice(&id);
            b[at + 16..at + 24].copy_from_slice(&region.offset.to_le_bytes());
            // Lengths are u32 on disk; writers keep regions far below 4 GiB.
            b[at + 24..at + 28].copy_from_slice(&(region.length as u32).to_le_bytes());
        }
        seal(&mut b);
        b
    }
}

/// A region lies past the header section, on 1 MiB boundaries.
fn check_region(region: &Region, entry_offset: u64) -> Result<(), VhdxError> {
    let fail = |field, value, reason| VhdxError::Field {
        offset: entry_offset + 16,
        field,
        value,
        reason,
    };
    if region.offset < HEADER_SECTION_SIZE {
        return Err(fail(
            "region offset",
            region.offset,
            "inside the header section",
        ));
    }
    if !region.offset.is_multiple_of(MIB) {
        return Err(fail(
            "region offset",
            region.offset,
            "not a multiple of 1 MiB",
        ));
    }
    if region.length == 0 || !region.length.is_multiple_of(MIB) {
        return Err(fail(
            "region length",
            region.length,
            "not a positive multiple of 1 MiB",
        ));
    }
    if region.offset.checked_add(region.length).is_none() {
        return Err(fail("region offset", region.offset, "overflows"));
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The region table qemu-img 10.0 writes for a 100 MiB disk with a 1 MiB log: the BAT at
    /// 2 MiB, the metadata at 3 MiB, 1 MiB each. The rest of the 64 KiB is zero.
    pub fn qemu_table() -> [u8; TABLE_SIZE] {
        let head: [u8; 80] = [
            b'r', b'e', b'g', b'i', // signature
            0x83, 0xce, 0x6f, 0x2c, // CRC-32C
            0x02, 0x00, 0x00, 0x00, // two entries
            0x00, 0x00, 0x00, 0x00, // reserved
            0x66, 0x77, 0xc2, 0x2d, 0x23, 0xf6, 0x00, 0x42, // BAT region GUID
            0x9d, 0x64, 0x11, 0x5e, 0x9b, 0xfd, 0x4a, 0x08, // (cont.)
            0x00, 0x00, 0x20, 0x00, 0x00, 0x00, 0x00, 0x00, // at 2 MiB
            0x00, 0x00, 0x10, 0x00, // 1 MiB long
            0x00, 0x00, 0x00, 0x00, // flags: qemu does not mark it required
            0x06, 0xa2, 0x7c, 0x8b, 0x90, 0x47, 0x9a, 0x4b, // metadata region GUID
            0xb8, 0xfe, 0x57, 0x5f, 0x05, 0x0f, 0x88, 0x6e, // (cont.)
            0x00, 0x00, 0x30, 0x00, 0x00, 0x00, 0x00, 0x00, // at 3 MiB
            0x00, 0x00, 0x10, 0x00, // 1 MiB long
            0x00, 0x00, 0x00, 0x00, // flags: qemu does not mark it required
        ];
        let mut b = [0u8; TABLE_SIZE];
        b[..head.len()].copy_from_slice(&head);
        b
    }

    fn resealed(mut bytes: [u8; TABLE_SIZE]) -> [u8; TABLE_SIZE] {
        seal(&mut bytes);
        bytes
    }

    #[test]
    fn qemu_table_is_parsed_and_reencoded() {
        let table = RegionTable::parse(&qemu_table(), TABLE1_OFFSET).unwrap();
        assert_eq!(
            table.bat,
            Region {
                offset: 2 << 20,
                length: 1 << 20
            }
        );
        assert_eq!(table.metadata.offset, 3 << 20);
        assert_eq!(table.encode(), qemu_table());
    }

    #[test]
    fn one_flipped_byte_fails_the_crc() {
        let mut bytes = qemu_table();
        bytes[40] ^= 0x10;
        assert!(matches!(
            RegionTable::parse(&bytes, TABLE1_OFFSET),
            Err(VhdxError::Checksum { .. })
        ));
    }

    #[test]
    fn bad_signature_is_rejected() {
        let mut bytes = qemu_table();
        bytes[3] = b'o';
        assert!(matches!(
            RegionTable::parse(&bytes, TABLE1_OFFSET),
            Err(VhdxError::BadSignature { .. })
        ));
    }

    #[test]
    fn entry_count_beyond_the_table_is_rejected() {
        let mut bytes = qemu_table();
        bytes[9] = 0x08; // 2050 entries
        let bytes = resealed(bytes);
        assert!(matches!(
            RegionTable::parse(&bytes, TABLE1_OFFSET),
            Err(VhdxError::Field {
                field: "region entry count",
                ..
            })
        ));
    }

    #[test]
    fn region_length_overflowing_the_file_offsets_is_rejected() {
        let mut bytes = qemu_table();
        // BAT offset 0xffff_ffff_fff0_0000: 1 MiB aligned, but offset + length overflows.
        bytes[32..40].copy_from_slice(&0xffff_ffff_fff0_0000u64.to_le_bytes());
        let bytes = resealed(bytes);
        assert!(matches!(
            RegionTable::parse(&bytes, TABLE1_OFFSET),
            Err(VhdxError::Field {
                field: "region offset",
                ..
            })
        ));
    }

    #[test]
    fn overlapping_regions_are_rejected() {
        let mut bytes = qemu_table();
        bytes[66] = 0x20; // metadata at 2 MiB, on top of the BAT
        let bytes = resealed(bytes);
        assert!(RegionTable::parse(&bytes, TABLE1_OFFSET).is_err());
    }

    #[test]
    fn region_in_the_header_section_is_rejected() {
        let mut bytes = qemu_table();
        bytes[34] = 0x00; // BAT at 0
        let bytes = resealed(bytes);
        assert!(RegionTable::parse(&bytes, TABLE1_OFFSET).is_err());
    }

    #[test]
    fn unknown_required_region_is_unsupported_and_optional_one_ignored() {
        let mut bytes = qemu_table();
        bytes[8] = 3;
        bytes[80..96].copy_from_slice(&[0x42; 16]);
        bytes[96..104].copy_from_slice(&(8u64 << 20).to_le_bytes());
        bytes[104..108].copy_from_slice(&(1u32 << 20).to_le_bytes());
        bytes[108] = 1;
        let required = resealed(bytes);
        assert!(matches!(
            RegionTable::parse(&required, TABLE1_OFFSET),
            Err(VhdxError::Unsupported { .. })
        ));
        bytes[108] = 0;
        let optional = resealed(bytes);
        assert!(RegionTable::parse(&optional, TABLE1_OFFSET).is_ok());
    }
}

//! The header section (the first MiB): the file identifier and the two headers.
//!
//! The file identifier at 0 is the signature `vhdxfile` and an optional UTF-16 creator. Two
//! 4 KiB headers follow at 64 KiB and 128 KiB; each carries a CRC-32C over its 4 KiB, and the
//! valid one with the larger sequence number is current (updates rewrite the other one, so a
//! torn write leaves the previous header intact). All integers are little-endian.

use super::error::VhdxError;
use super::guid;
use crate::formats::fields::{le16, le32, le64};

/// `vhdxfile`, the first eight bytes of every VHDX.
pub const FILE_SIGNATURE: &[u8; 8] = b"vhdxfile";
/// The creator string starts after the signature; up to 256 UTF-16 code units.
const CREATOR_AT: usize = 8;
/// Longest creator string, in bytes.
const CREATOR_MAX: usize = 512;
/// Size of the file identifier structure.
pub const FILE_ID_SIZE: usize = 64 << 10;
/// Where the first and second header lie.
pub const HEADER1_OFFSET: u64 = 64 << 10;
pub const HEADER2_OFFSET: u64 = 128 << 10;
/// Bytes a header's CRC covers.
pub const HEADER_SIZE: usize = 4 << 10;
/// `head`.
const HEADER_SIGNATURE: &[u8; 4] = b"head";
/// The only header version there is.
pub const VERSION: u16 = 1;
/// The only log version there is.
pub const LOG_VERSION: u16 = 0;
/// The header section: file identifier, headers, region tables; everything else lies after.
pub const HEADER_SECTION_SIZE: u64 = 1 << 20;
/// Alignment of the log, the regions and the payload blocks.
pub const MIB: u64 = 1 << 20;
/// Every checksummed structure stores its CRC-32C at offset 4.
pub const CHECKSUM_AT: usize = 4;

pub fn guid_at(b: &[u8], at: usize) -> [u8; 16] {
    let mut g = [0; 16];
    g.copy_from_slice(&b[at..at + 16]);
    g
}

/// CRC-32C of `bytes` with the four bytes at [`CHECKSUM_AT`] counted as zero.
pub fn checksum(bytes: &[u8]) -> u32 {
    let crc = crc32c::crc32c(&bytes[..CHECKSUM_AT]);
    let crc = crc32c::crc32c_append(crc, &[0; 4]);
    crc32c::crc32c_append(crc, &bytes[CHECKSUM_AT + 4..])
}

/// Stores the checksum of `bytes` in place.
pub fn seal(bytes: &mut [u8]) {
    let sum = checksum(bytes);
    bytes[CHECKSUM_AT..CHECKSUM_AT + 4].copy_from_slice(&sum.to_le_bytes());
}

/// Fails unless the stored checksum of `bytes` (a structure at `offset`) is right.
pub fn verify(bytes: &[u8], offset: u64) -> Result<(), VhdxError> {
    let stored = le32(bytes, CHECKSUM_AT);
    let computed = checksum(bytes);
    if stored == computed {
        Ok(())
    } else {
        Err(VhdxError::Checksum {
            offset,
            stored,
            computed,
        })
    }
}

/// Whether `head` starts like a VHDX.
pub fn has_signature(head: &[u8]) -> bool {
    head.get(..FILE_SIGNATURE.len()) == Some(FILE_SIGNATURE.as_slice())
}

/// The file identifier qemu-like writers put at offset 0: signature and creator.
pub fn encode_file_id(creator: &str) -> Vec<u8> {
    let mut bytes = vec![0u8; FILE_ID_SIZE];
    bytes[..8].copy_from_slice(FILE_SIGNATURE);
    let units = creator
        .encode_utf16()
        .flat_map(u16::to_le_bytes)
        .take(CREATOR_MAX);
    for (slot, byte) in bytes[CREATOR_AT..].iter_mut().zip(units) {
        *slot = byte;
    }
    bytes
}

/// A decoded header (reserved bytes are not kept: an encoded header has them zero).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    pub sequence_number: u64,
    /// Changes whenever the file is opened for writing.
    pub file_write_guid: [u8; 16],
    /// Changes whenever guest-visible data change.
    pub data_write_guid: [u8; 16],
    /// Zero when the log holds nothing to replay.
    pub log_guid: [u8; 16],
    pub log_version: u16,
    pub version: u16,
    pub log_length: u32,
    pub log_offset: u64,
}

impl Header {
    /// Decodes and verifies the header at `offset` (signature, CRC, versions).
    pub fn parse(bytes: &[u8; HEADER_SIZE], offset: u64) -> Result<Header, VhdxError> {
        if &bytes[..4] != HEADER_SIGNATURE {
            return Err(VhdxError::BadSignature {
                offset,
                expected: "head",
                found: String::from_utf8_lossy(&bytes[..4]).into_owned(),
            });
        }
        verify(bytes, offset)?;
        let header = Header {
            sequence_number: le64(bytes, 8),
            file_write_guid: guid_at(bytes, 16),
            data_write_guid: guid_at(bytes, 32),
            log_guid: guid_at(bytes, 48),
            log_version: le16(bytes, 64),
            version: le16(bytes, 66),
            log_length: le32(bytes, 68),
            log_offset: le64(bytes, 72),
        };
        if header.version != VERSION {
            return Err(VhdxError::Field {
                offset: offset + 66,
                field: "header version",
                value: header.version.into(),
                reason: "expected 1",
            });
        }
        Ok(header)
    }

    /// Encodes with a fresh checksum.
    pub fn encode(&self) -> [u8; HEADER_SIZE] {
        let mut b = [0u8; HEADER_SIZE];
        b[..4].copy_from_slice(HEADER_SIGNATURE);
        b[8..16].copy_from_slice(&self.sequence_number.to_le_bytes());
        b[16..32].copy_from_slice(&self.file_write_guid);
        b[32..48].copy_from_slice(&self.data_write_guid);
        b[48..64].copy_from_slice(&self.log_guid);
        b[64..66].copy_from_slice(&self.log_version.to_le_bytes());
        b[66..68].copy_from_slice(&self.version.to_le_bytes());
        b[68..72].copy_from_slice(&self.log_length.to_le_bytes());
        b[72..80].copy_from_slice(&self.log_offset.to_le_bytes());
        seal(&mut b);
        b
    }

    /// Whether the log may hold entries to replay (a zero log GUID or length says it cannot).
    pub fn log_in_use(&self) -> bool {
        self.log_guid != guid::ZERO && self.log_length != 0
    }
}

/// Picks the current header from the two copies, as the specification (and qemu) do: the only
/// valid one, else the one with the larger sequence number. Two valid copies with the same
/// number are accepted only when identical (Disk2VHD writes them so).
pub fn current(
    first: Result<Header, VhdxError>,
    second: Result<Header, VhdxError>,
) -> Result<Header, VhdxError> {
    match (first, second) {
        (Ok(a), Ok(b)) => {
            if a.sequence_number > b.sequence_number || a == b {
                Ok(a)
            } else if b.sequence_number > a.sequence_number {
                Ok(b)
            } else {
                Err(VhdxError::Field {
                    offset: HEADER2_OFFSET + 8,
                    field: "header sequence number",
                    value: b.sequence_number,
                    reason: "both headers carry it but differ",
                })
            }
        }
        (Ok(a), Err(_)) => Ok(a),
        (Err(_), Ok(b)) => Ok(b),
        (Err(first), Err(second)) => Err(VhdxError::NoValidHeader {
            first: first.to_string(),
            second: second.to_string(),
        }),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The first 80 bytes of the second header qemu-img 10.0 wrote when converting a 100 MiB
    /// raw image (`convert -O vhdx`); the rest of its 4 KiB are zero.
    pub fn qemu_header2() -> [u8; HEADER_SIZE] {
        let head: [u8; 80] = [
            b'h', b'e', b'a', b'd', // signature
            0x00, 0x00, 0x00, 0x00, // CRC-32C, computed below
            0x13, 0x34, 0xe7, 0x94, 0x00, 0x00, 0x00, 0x00, // sequence number
            0xbc, 0xba, 0x34, 0xce, 0x77, 0x91, 0x42, 0x0c, // file write GUID
            0xbf, 0xcb, 0x48, 0x43, 0x6d, 0x10, 0xf2, 0x87, // (cont.)
            0x11, 0x3c, 0x51, 0xfd, 0x99, 0x26, 0x42, 0x79, // data write GUID
            0x92, 0x18, 0x2b, 0x9c, 0xdf, 0xa1, 0xcd, 0x52, // (cont.)
            0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // log GUID: none
            0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // (cont.)
            0x00, 0x00, // log version 0
            0x01, 0x00, // version 1
            0x00, 0x00, 0x10, 0x00, // log length 1 MiB
            0x00, 0x00, 0x10, 0x00, 0x00, 0x00, 0x00, 0x00, // log offset 1 MiB
        ];
        let mut b = [0u8; HEADER_SIZE];
        b[..head.len()].copy_from_slice(&head);
        b[4..8].copy_from_slice(&[0xc1, 0x54, 0x8a, 0xc9]);
        b
    }

    #[test]
    fn qemu_header_is_parsed_with_its_crc() {
        let h = Header::parse(&qemu_header2(), HEADER2_OFFSET).unwrap();
        assert_eq!(h.sequence_number, 0x94e7_3413);
        assert_eq!(h.log_offset, 1 << 20);
        assert_eq!(h.log_length, 1 << 20);
        assert!(!h.log_in_use());
    }

    #[test]
    fn qemu_header_reencodes_identically() {
        let bytes = qemu_header2();
        let h = Header::parse(&bytes, HEADER2_OFFSET).unwrap();
        assert_eq!(h.encode(), bytes);
    }

    #[test]
    fn one_flipped_byte_fails_the_crc() {
        let mut bytes = qemu_header2();
        bytes[100] ^= 1;
        assert!(matches!(
            Header::parse(&bytes, HEADER2_OFFSET),
            Err(VhdxError::Checksum { .. })
        ));
    }

    #[test]
    fn bad_signature_is_rejected() {
        let mut bytes = qemu_header2();
        bytes[0] = b'H';
        assert!(matches!(
            Header::parse(&bytes, HEADER2_OFFSET),
            Err(VhdxError::BadSignature { .. })
        ));
    }

    #[test]
    fn unknown_version_is_rejected() {
        let mut bytes = qemu_header2();
        bytes[66] = 2;
        seal(&mut bytes);
        assert!(matches!(
            Header::parse(&bytes, HEADER2_OFFSET),
            Err(VhdxError::Field { .. })
        ));
    }

    #[test]
    fn the_larger_sequence_number_wins_and_a_bad_copy_is_skipped() {
        let h = Header::parse(&qemu_header2(), HEADER2_OFFSET).unwrap();
        let older = Header {
            sequence_number: h.sequence_number - 1,
            ..h.clone()
        };
        assert_eq!(current(Ok(older.clone()), Ok(h.clone())).unwrap(), h);
        assert_eq!(
            current(Ok(older.clone()), Err(VhdxError::Differencing)).unwrap(),
            older
        );
        let twin = Header {
            data_write_guid: [9; 16],
            ..h.clone()
        };
        assert!(current(Ok(h.clone()), Ok(twin)).is_err());
        assert_eq!(current(Ok(h.clone()), Ok(h.clone())).unwrap(), h);
        assert!(matches!(
            current(Err(VhdxError::Differencing), Err(VhdxError::Differencing)),
            Err(VhdxError::NoValidHeader { .. })
        ));
    }

    #[test]
    fn file_id_carries_signature_and_utf16_creator() {
        let id = encode_file_id("QEMU v10.0.2");
        assert!(has_signature(&id));
        assert_eq!(&id[8..12], &[b'Q', 0, b'E', 0]);
        assert_eq!(id.len(), FILE_ID_SIZE);
    }
}

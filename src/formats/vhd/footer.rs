//! The 512-byte hard disk footer: at the end of every VHD, and copied at offset 0 of dynamic
//! disks. All fields are big-endian.

use super::error::VhdError;
use super::geometry::{Geometry, MAX_CHS_SECTORS};
use crate::formats::fields::{be16, be32, be64};

/// Size of the footer and of a VHD sector.
pub const FOOTER_SIZE: usize = 512;
/// Magic at the start of the footer.
pub const COOKIE: &[u8; 8] = b"conectix";
/// Feature bit 1 ("reserved") must always be set.
pub const FEATURES: u32 = 0x0000_0002;
/// File format version 1.0.
pub const VERSION: u32 = 0x0001_0000;
/// `data_offset` of a fixed disk: there is no further structure.
pub const FIXED_DATA_OFFSET: u64 = u64::MAX;
/// VHD timestamps count seconds from 2000-01-01 00:00:00 UTC; this is that instant in Unix time.
pub const TIMESTAMP_EPOCH: u64 = 946_684_800;
/// Creator application qemu writes when the size follows the geometry.
pub const CREATOR_QEMU: &[u8; 4] = b"qemu";
/// Creator application qemu writes with `force_size` (size from `current_size`).
pub const CREATOR_QEMU_FORCE_SIZE: &[u8; 4] = b"qem2";
/// Creator version qemu writes: that of Virtual PC 2007 (5.3).
pub const CREATOR_VERSION: u32 = 0x0005_0003;
/// Creator host OS qemu writes ("Windows").
pub const CREATOR_OS: &[u8; 4] = b"Wi2k";
/// Creator applications whose disks take their size from `current_size`, not the geometry
/// (Hyper-V, qemu force_size, Disk2vhd, XenConverter, XenServer) — the list qemu uses.
const SIZE_FROM_CURRENT_SIZE: [&[u8; 4]; 5] = [b"win ", b"qem2", b"d2v ", b"CTXS", b"tap\0"];

/// Offset of the checksum field, zeroed while the checksum is computed.
const CHECKSUM_AT: usize = 64;

/// Disk types of the footer's `disk_type` field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DiskType {
    /// 2: the data precede the footer, byte for byte.
    Fixed,
    /// 3: a dynamic header and block allocation table.
    Dynamic,
}

impl DiskType {
    pub fn code(self) -> u32 {
        match self {
            DiskType::Fixed => 2,
            DiskType::Dynamic => 3,
        }
    }

    fn from_code(code: u32) -> Result<DiskType, VhdError> {
        match code {
            2 => Ok(DiskType::Fixed),
            3 => Ok(DiskType::Dynamic),
            4 => Err(VhdError::Differencing),
            other => Err(VhdError::Field {
                field: "disk type",
                value: other.into(),
                reason: "expected 2 (fixed) or 3 (dynamic)",
            }),
        }
    }
}

/// A decoded footer. Reserved bytes are not kept: an encoded footer has them zero.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Footer {
    pub data_offset: u64,
    pub timestamp: u32,
    pub creator_app: [u8; 4],
    pub creator_version: u32,
    pub creator_os: [u8; 4],
    pub original_size: u64,
    pub current_size: u64,
    pub geometry: Geometry,
    pub disk_type: DiskType,
    /// The checksum as stored.
    pub checksum: u32,
    pub uuid: [u8; 16],
    pub saved_state: u8,
}

/// One's complement of the sum of all bytes, the checksum field counted as zero. The header
/// of dynamic disks uses the same rule with its own field offset.
pub fn checksum(bytes: &[u8], checksum_at: usize) -> u32 {
    let sum = bytes.iter().enumerate().fold(0u32, |sum, (i, b)| {
        if (checksum_at..checksum_at + 4).contains(&i) {
            sum
        } else {
            sum.wrapping_add(u32::from(*b))
        }
    });
    !sum
}

/// Whether `bytes` start like a footer (used by the probe and to choose between the copies).
pub fn has_cookie(bytes: &[u8]) -> bool {
    bytes.get(..8) == Some(COOKIE.as_slice())
}

impl Footer {
    /// Decodes and verifies a footer (cookie, checksum, disk type).
    pub fn parse(bytes: &[u8; FOOTER_SIZE]) -> Result<Footer, VhdError> {
        let footer = Footer::decode(bytes)?;
        let computed = checksum(bytes, CHECKSUM_AT);
        if computed != footer.checksum {
            return Err(VhdError::Checksum {
                stored: footer.checksum,
                computed,
            });
        }
        Ok(footer)
    }

    /// Decodes without verifying the checksum (for `check`, which reports it).
    pub fn decode(bytes: &[u8; FOOTER_SIZE]) -> Result<Footer, VhdError> {
        if !has_cookie(bytes) {
            return Err(VhdError::BadCookie {
                expected: "conectix",
                found: String::from_utf8_lossy(&bytes[..8]).into_owned(),
            });
        }
        let mut creator_app = [0; 4];
        creator_app.copy_from_slice(&bytes[28..32]);
        let mut creator_os = [0; 4];
        creator_os.copy_from_slice(&bytes[36..40]);
        let mut uuid = [0; 16];
        uuid.copy_from_slice(&bytes[68..84]);
        Ok(Footer {
            data_offset: be64(bytes, 16),
            timestamp: be32(bytes, 24),
            creator_app,
            creator_version: be32(bytes, 32),
            creator_os,
            original_size: be64(bytes, 40),
            current_size: be64(bytes, 48),
            geometry: Geometry {
                cylinders: be16(bytes, 56),
                heads: bytes[58],
                sectors_per_track: bytes[59],
            },
            disk_type: DiskType::from_code(be32(bytes, 60))?,
            checksum: be32(bytes, CHECKSUM_AT),
            uuid,
            saved_state: bytes[84],
        })
    }

    /// Encodes with a freshly computed checksum (which is also stored in `self.checksum`'s
    /// place in the bytes, not in `self`).
    pub fn encode(&self) -> [u8; FOOTER_SIZE] {
        let mut b = [0u8; FOOTER_SIZE];
        b[0..8].copy_from_slice(COOKIE);
        b[8..12].copy_from_slice(&FEATURES.to_be_bytes());
        b[12..16].copy_from_slice(&VERSION.to_be_bytes());
        b[16..24].copy_from_slice(&self.data_offset.to_be_bytes());
        b[24..28].copy_from_slice(&self.timestamp.to_be_bytes());
        b[28..32].copy_from_slice(&self.creator_app);
        b[32..36].copy_from_slice(&self.creator_version.to_be_bytes());
        b[36..40].copy_from_slice(&self.creator_os);
        b[40..48].copy_from_slice(&self.original_size.to_be_bytes());
        b[48..56].copy_from_slice(&self.current_size.to_be_bytes());
        b[56..58].copy_from_slice(&self.geometry.cylinders.to_be_bytes());
        b[58] = self.geometry.heads;
        b[59] = self.geometry.sectors_per_track;
        b[60..64].copy_from_slice(&self.disk_type.code().to_be_bytes());
        b[68..84].copy_from_slice(&self.uuid);
        b[84] = self.saved_state;
        let sum = checksum(&b, CHECKSUM_AT);
        b[CHECKSUM_AT..CHECKSUM_AT + 4].copy_from_slice(&sum.to_be_bytes());
        b
    }

    /// Whether the guest size is `current_size` rather than the geometry: qemu's rule, by
    /// creator application, or when the geometry is the maximum (it cannot tell the size).
    pub fn size_from_current_size(&self) -> bool {
        SIZE_FROM_CURRENT_SIZE.contains(&&self.creator_app)
            || self.geometry.sectors() == MAX_CHS_SECTORS
    }

    /// Guest-visible size in bytes, as qemu computes it.
    pub fn guest_size(&self) -> u64 {
        if self.size_from_current_size() {
            self.current_size / 512 * 512
        } else {
            self.geometry.sectors() * 512
        }
    }
}

/// Test-only builder of valid footers.
#[cfg(test)]
pub fn test_footer(disk_type: DiskType, size: u64) -> Footer {
    Footer {
        data_offset: match disk_type {
            DiskType::Fixed => FIXED_DATA_OFFSET,
            DiskType::Dynamic => 512,
        },
        timestamp: 0x3299_40c7,
        creator_app: *CREATOR_QEMU_FORCE_SIZE,
        creator_version: CREATOR_VERSION,
        creator_os: *CREATOR_OS,
        original_size: size,
        current_size: size,
        geometry: super::geometry::MAX_CHS,
        disk_type,
        checksum: 0,
        uuid: [0x11; 16],
        saved_state: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The first 96 bytes of the footer qemu-img 10.0 wrote for `create -f vpc x 64M`; the
    /// rest of the 512 bytes are zero.
    fn qemu_64m_dynamic() -> [u8; FOOTER_SIZE] {
        let head: [u8; 88] = [
            b'c', b'o', b'n', b'e', b'c', b't', b'i', b'x', // cookie
            0x00, 0x00, 0x00, 0x02, // features: reserved bit
            0x00, 0x01, 0x00, 0x00, // version 1.0
            0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02, 0x00, // data offset: header at 512
            0x32, 0x99, 0x40, 0xc7, // timestamp (seconds since 2000)
            b'q', b'e', b'm', b'u', // creator application
            0x00, 0x05, 0x00, 0x03, // creator version 5.3
            b'W', b'i', b'2', b'k', // creator host OS
            0x00, 0x00, 0x00, 0x00, 0x04, 0x00, 0x40, 0x00, // original size
            0x00, 0x00, 0x00, 0x00, 0x04, 0x00, 0x40, 0x00, // current size
            0x03, 0xc4, // cylinders 964
            0x08, // heads
            0x11, // sectors per track 17
            0x00, 0x00, 0x00, 0x03, // disk type: dynamic
            0xff, 0xff, 0xed, 0x36, // checksum
            0xeb, 0x9e, 0xb6, 0x85, 0x2f, 0x80, 0x4d, 0xf8, // uuid
            0x81, 0xa4, 0xd5, 0x2a, 0x3a, 0xc8, 0xe4, 0x4b, // uuid (cont.)
            0x00, // saved state
            0x00, 0x00, 0x00, // reserved
        ];
        let mut b = [0u8; FOOTER_SIZE];
        b[..head.len()].copy_from_slice(&head);
        b
    }

    #[test]
    fn qemu_footer_is_parsed() {
        let f = Footer::parse(&qemu_64m_dynamic()).unwrap();
        assert_eq!(f.disk_type, DiskType::Dynamic);
        assert_eq!(f.data_offset, 512);
        assert_eq!(f.current_size, 0x0400_4000);
        assert_eq!(f.geometry.sectors(), 964 * 8 * 17);
        assert_eq!(f.guest_size(), 67_125_248);
        assert_eq!(f.creator_app, *b"qemu");
    }

    #[test]
    fn qemu_footer_reencodes_identically() {
        let bytes = qemu_64m_dynamic();
        assert_eq!(Footer::parse(&bytes).unwrap().encode(), bytes);
    }

    #[test]
    fn one_flipped_byte_fails_the_checksum() {
        let mut bytes = qemu_64m_dynamic();
        bytes[50] ^= 1;
        assert!(matches!(
            Footer::parse(&bytes),
            Err(VhdError::Checksum { .. })
        ));
    }

    #[test]
    fn wrong_cookie_is_rejected() {
        let mut bytes = qemu_64m_dynamic();
        bytes[0] = b'C';
        assert!(matches!(
            Footer::parse(&bytes),
            Err(VhdError::BadCookie { .. })
        ));
    }

    #[test]
    fn differencing_disk_is_refused() {
        let mut f = test_footer(DiskType::Dynamic, 1 << 20).encode();
        f[63] = 4;
        let sum = checksum(&f, CHECKSUM_AT);
        f[64..68].copy_from_slice(&sum.to_be_bytes());
        assert!(matches!(Footer::parse(&f), Err(VhdError::Differencing)));
    }

    #[test]
    fn unknown_disk_type_is_rejected() {
        let mut f = test_footer(DiskType::Fixed, 1 << 20).encode();
        f[63] = 9;
        let sum = checksum(&f, CHECKSUM_AT);
        f[64..68].copy_from_slice(&sum.to_be_bytes());
        assert!(matches!(Footer::parse(&f), Err(VhdError::Field { .. })));
    }

    #[test]
    fn force_size_footer_takes_current_size() {
        let f = test_footer(DiskType::Fixed, 64 << 20);
        assert!(f.size_from_current_size());
        assert_eq!(f.guest_size(), 64 << 20);
    }
}

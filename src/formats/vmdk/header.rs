//! The 512-byte sparse extent header (`KDMV`), little-endian, as in VMware's Virtual Disk
//! Format 1.1 and 5.0 specifications. The same structure serves as the stream footer.

/// Bytes in a sector; every VMDK offset and size is counted in these.
pub const SECTOR: u64 = 512;
/// `KDMV` read as a little-endian u32 (the spec's `SPARSE_MAGICNUMBER` 0x564d444b).
pub const MAGIC: [u8; 4] = *b"KDMV";
/// Header length on disk: one sector.
pub const HEADER_LEN: usize = 512;
/// `gdOffset` value meaning "the real grain directory offset is in the footer" (streams).
pub const GD_AT_END: u64 = u64::MAX;
/// Flag bit 0: the newline-detection bytes are valid.
pub const FLAG_NL_DETECT: u32 = 1 << 0;
/// Flag bit 1: a redundant grain directory and tables exist at `rgdOffset`.
pub const FLAG_RGD: u32 = 1 << 1;
/// Flag bit 2: grain table entry 1 means "grain reads as zero" (version 2 images).
pub const FLAG_ZERO_GRAIN: u32 = 1 << 2;
/// Flag bit 16: grains are compressed.
pub const FLAG_COMPRESSED: u32 = 1 << 16;
/// Flag bit 17: grains and metadata are preceded by stream markers.
pub const FLAG_MARKERS: u32 = 1 << 17;
/// Flags this reader understands; any other bit set is refused.
const KNOWN_FLAGS: u32 =
    FLAG_NL_DETECT | FLAG_RGD | FLAG_ZERO_GRAIN | FLAG_COMPRESSED | FLAG_MARKERS;
/// `compressAlgorithm` value for deflate (the only one defined).
pub const COMPRESS_DEFLATE: u16 = 1;
/// Grain table entries per table: the specs fix it at 512 and every producer uses it.
pub const GTES_PER_GT: u32 = 512;
/// Largest grain the spec allows, in sectors (a power of two of at least 8 sectors is
/// required by VMware; qemu accepts down to 1 sector and at most 128 sectors).
pub const MAX_GRAIN_SECTORS: u64 = 128;
/// Newline-detection bytes at offset 73: `\n`, ` `, `\r`, `\n`; FTP text mode would mangle them.
pub const NEWLINE_CHECK: [u8; 4] = [b'\n', b' ', b'\r', b'\n'];
/// Largest capacity accepted, in sectors: 2^32 grains of 128 sectors would be 256 TiB; VMware
/// sparse extents stop at 2 TiB, qemu at 64 TiB; we take qemu's limit.
pub const MAX_CAPACITY_SECTORS: u64 = (64u64 << 40) / SECTOR;

/// A parsed sparse extent header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SparseHeader {
    pub version: u32,
    pub flags: u32,
    /// Extent size in sectors.
    pub capacity: u64,
    /// Sectors per grain.
    pub grain_size: u64,
    pub descriptor_offset: u64,
    pub descriptor_size: u64,
    pub num_gtes_per_gt: u32,
    pub rgd_offset: u64,
    pub gd_offset: u64,
    /// Sectors of metadata before the first grain.
    pub overhead: u64,
    pub unclean_shutdown: bool,
    pub compress_algorithm: u16,
}

impl SparseHeader {
    pub fn compressed(&self) -> bool {
        self.flags & FLAG_COMPRESSED != 0
    }

    pub fn has_markers(&self) -> bool {
        self.flags & FLAG_MARKERS != 0
    }

    pub fn has_rgd(&self) -> bool {
        self.flags & FLAG_RGD != 0
    }

    /// Bytes per grain.
    pub fn grain_bytes(&self) -> u64 {
        self.grain_size * SECTOR
    }

    /// Number of grains covering the capacity.
    pub fn grains(&self) -> u64 {
        self.capacity.div_ceil(self.grain_size)
    }

    /// Number of grain tables (= grain directory entries).
    pub fn gt_count(&self) -> u64 {
        self.grains().div_ceil(u64::from(self.num_gtes_per_gt))
    }

    /// Parses and validates a header. Errors carry the offset of the offending field.
    pub fn parse(bytes: &[u8]) -> Result<SparseHeader, (u64, String)> {
        let b: &[u8; HEADER_LEN] = bytes
            .get(..HEADER_LEN)
            .and_then(|s| s.try_into().ok())
            .ok_or((
                0,
                format!("header needs {HEADER_LEN} bytes, got {}", bytes.len()),
            ))?;
        if b[0..4] != MAGIC {
            return Err((0, "no KDMV magic".into()));
        }
        let header = SparseHeader {
            version: u32_at(b, 4),
            flags: u32_at(b, 8),
            capacity: u64_at(b, 12),
            grain_size: u64_at(b, 20),
            descriptor_offset: u64_at(b, 28),
            descriptor_size: u64_at(b, 36),
            num_gtes_per_gt: u32_at(b, 44),
            rgd_offset: u64_at(b, 48),
            gd_offset: u64_at(b, 56),
            overhead: u64_at(b, 64),
            unclean_shutdown: b[72] != 0,
            compress_algorithm: u16::from_le_bytes([b[77], b[78]]),
        };
        if !(1..=3).contains(&header.version) {
            return Err((4, format!("unsupported version {}", header.version)));
        }
        if header.flags & !KNOWN_FLAGS != 0 {
            return Err((8, format!("unknown flags {:#x}", header.flags)));
        }
        if header.capacity > MAX_CAPACITY_SECTORS {
            return Err((
                12,
                format!("capacity {} sectors is too large", header.capacity),
            ));
        }
        if header.grain_size == 0
            || header.grain_size > MAX_GRAIN_SECTORS
            || !header.grain_size.is_power_of_two()
        {
            return Err((
                20,
                format!(
                    "grain size {} sectors is not a power of two in 1..=128",
                    header.grain_size
                ),
            ));
        }
        if header.num_gtes_per_gt != GTES_PER_GT {
            return Err((
                44,
                format!(
                    "{} grain table entries per table (expected 512)",
                    header.num_gtes_per_gt
                ),
            ));
        }
        if header.flags & FLAG_NL_DETECT != 0 && b[73..77] != NEWLINE_CHECK {
            return Err((
                73,
                "newline check bytes are mangled (file transferred in text mode?)".into(),
            ));
        }
        if header.compressed() && header.compress_algorithm != COMPRESS_DEFLATE {
            return Err((
                77,
                format!(
                    "unknown compression algorithm {}",
                    header.compress_algorithm
                ),
            ));
        }
        Ok(header)
    }

    /// The 512 bytes of this header.
    pub fn to_bytes(self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[0..4].copy_from_slice(&MAGIC);
        b[4..8].copy_from_slice(&self.version.to_le_bytes());
        b[8..12].copy_from_slice(&self.flags.to_le_bytes());
        b[12..20].copy_from_slice(&self.capacity.to_le_bytes());
        b[20..28].copy_from_slice(&self.grain_size.to_le_bytes());
        b[28..36].copy_from_slice(&self.descriptor_offset.to_le_bytes());
        b[36..44].copy_from_slice(&self.descriptor_size.to_le_bytes());
        b[44..48].copy_from_slice(&self.num_gtes_per_gt.to_le_bytes());
        b[48..56].copy_from_slice(&self.rgd_offset.to_le_bytes());
        b[56..64].copy_from_slice(&self.gd_offset.to_le_bytes());
        b[64..72].copy_from_slice(&self.overhead.to_le_bytes());
        b[72] = u8::from(self.unclean_shutdown);
        b[73..77].copy_from_slice(&NEWLINE_CHECK);
        b[77..79].copy_from_slice(&self.compress_algorithm.to_le_bytes());
        b
    }
}

pub fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut v = [0u8; 4];
    if let Some(s) = b.get(at..at + 4) {
        v.copy_from_slice(s);
    }
    u32::from_le_bytes(v)
}

pub fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut v = [0u8; 8];
    if let Some(s) = b.get(at..at + 8) {
        v.copy_from_slice(s);
    }
    u64::from_le_bytes(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The header qemu-img 10.0 writes for a 70 MiB monolithicSparse image.
    fn qemu_sparse_header() -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(b"KDMV"); // magic
        b.extend_from_slice(&1u32.to_le_bytes()); // version 1
        b.extend_from_slice(&3u32.to_le_bytes()); // flags: newline test | redundant GD
        b.extend_from_slice(&143360u64.to_le_bytes()); // capacity in sectors (70 MiB)
        b.extend_from_slice(&128u64.to_le_bytes()); // grain size: 128 sectors
        b.extend_from_slice(&1u64.to_le_bytes()); // descriptor at sector 1
        b.extend_from_slice(&20u64.to_le_bytes()); // descriptor 20 sectors long
        b.extend_from_slice(&512u32.to_le_bytes()); // 512 entries per grain table
        b.extend_from_slice(&21u64.to_le_bytes()); // redundant GD at sector 21
        b.extend_from_slice(&34u64.to_le_bytes()); // GD at sector 34
        b.extend_from_slice(&128u64.to_le_bytes()); // overhead: grains start at sector 128
        b.push(0); // clean shutdown
        b.extend_from_slice(b"\n \r\n"); // newline check
        b.extend_from_slice(&0u16.to_le_bytes()); // no compression
        b.resize(512, 0); // padding
        b
    }

    #[test]
    fn qemu_header_parses_and_round_trips() {
        let bytes = qemu_sparse_header();
        let h = SparseHeader::parse(&bytes).unwrap();
        assert_eq!(h.capacity, 143360);
        assert_eq!(h.gd_offset, 34);
        assert_eq!(h.rgd_offset, 21);
        assert_eq!(h.gt_count(), 3);
        assert!(h.has_rgd() && !h.compressed());
        assert_eq!(h.to_bytes().as_slice(), bytes.as_slice());
    }

    #[test]
    fn truncated_header_is_rejected() {
        assert!(SparseHeader::parse(&qemu_sparse_header()[..511]).is_err());
    }

    #[test]
    fn wrong_magic_is_rejected() {
        let mut b = qemu_sparse_header();
        b[0] = b'X';
        assert_eq!(SparseHeader::parse(&b).unwrap_err().0, 0);
    }

    #[test]
    fn grain_size_not_power_of_two_is_rejected() {
        let mut b = qemu_sparse_header();
        b[20] = 127;
        assert_eq!(SparseHeader::parse(&b).unwrap_err().0, 20);
    }

    #[test]
    fn huge_grain_size_is_rejected() {
        let mut b = qemu_sparse_header();
        b[21] = 1; // 0x180 sectors
        assert_eq!(SparseHeader::parse(&b).unwrap_err().0, 20);
    }

    #[test]
    fn odd_gtes_per_gt_is_rejected() {
        let mut b = qemu_sparse_header();
        b[45] = 4; // 0x400 entries
        assert_eq!(SparseHeader::parse(&b).unwrap_err().0, 44);
    }

    #[test]
    fn huge_capacity_is_rejected() {
        let mut b = qemu_sparse_header();
        b[19] = 0x01;
        assert_eq!(SparseHeader::parse(&b).unwrap_err().0, 12);
    }

    #[test]
    fn mangled_newline_check_is_rejected() {
        let mut b = qemu_sparse_header();
        b[75] = b'\n';
        assert_eq!(SparseHeader::parse(&b).unwrap_err().0, 73);
    }

    #[test]
    fn unknown_flag_is_rejected() {
        let mut b = qemu_sparse_header();
        b[11] = 0x80;
        assert_eq!(SparseHeader::parse(&b).unwrap_err().0, 8);
    }

    #[test]
    fn version_four_is_rejected() {
        let mut b = qemu_sparse_header();
        b[4] = 4;
        assert_eq!(SparseHeader::parse(&b).unwrap_err().0, 4);
    }
}

//! The qcow2 header (cluster 0): parsing, validation and the bytes qemu-img 10 writes.

use super::Defect;
use crate::formats::fields::{be32, be64};

/// Every qcow2 file starts with these four bytes.
pub const MAGIC: [u8; 4] = *b"QFI\xfb";
/// Length of the version 2 header; version 3 extends it.
pub const V2_HEADER_LEN: usize = 72;
/// The version 3 header length qemu 10 writes: the 104 fixed bytes, the compression type byte
/// and 7 bytes of padding to a multiple of 8.
pub const V3_HEADER_LEN: u32 = 112;
/// Smallest cluster the spec allows (512 bytes).
pub const MIN_CLUSTER_BITS: u32 = 9;
/// Largest cluster the spec allows (2 MiB).
pub const MAX_CLUSTER_BITS: u32 = 21;
/// qemu refuses L1 tables above 32 MiB; so do we (it bounds the memory an L1 takes).
pub const MAX_L1_BYTES: u64 = 32 << 20;
/// qemu's refcount table limit (8 MiB); bounds the memory a check or resize takes.
pub const MAX_REFTABLE_BYTES: u64 = 8 << 20;
/// The default refcount width, 16 bits (`refcount_order` 4).
pub const DEFAULT_REFCOUNT_ORDER: u32 = 4;

/// Incompatible feature bit 0: the image was not closed cleanly; refcounts may be stale.
pub const INCOMPAT_DIRTY: u64 = 1 << 0;
/// Incompatible feature bit 1: qemu found a corruption and marked the image.
pub const INCOMPAT_CORRUPT: u64 = 1 << 1;
/// Incompatible feature bit 2: guest data lives in an external data file.
pub const INCOMPAT_DATA_FILE: u64 = 1 << 2;
/// Incompatible feature bit 3: the compression type byte at offset 104 is meaningful.
pub const INCOMPAT_COMPRESSION: u64 = 1 << 3;
/// Incompatible feature bit 4: L2 entries are 128 bits with 32 subcluster bitmaps.
pub const INCOMPAT_EXTL2: u64 = 1 << 4;
/// Incompatible features this reader understands (the rest are refused).
const KNOWN_INCOMPAT: u64 =
    INCOMPAT_DIRTY | INCOMPAT_CORRUPT | INCOMPAT_DATA_FILE | INCOMPAT_COMPRESSION | INCOMPAT_EXTL2;

/// A header extension starts with a big-endian u32 type and a u32 length.
const EXTENSION_HEADER_LEN: usize = 8;
/// The extension type that ends the list.
const EXTENSION_END: u32 = 0;
/// Header extension type of the feature name table qemu writes after the v3 header.
pub const EXT_FEATURE_TABLE: u32 = 0x6803_f857;
/// Feature table entries qemu 10 writes: (type 0 incompat / 1 compat / 2 autoclear, bit, name).
const FEATURE_NAMES: [(u8, u8, &str); 8] = [
    (0, 0, "dirty bit"),
    (0, 1, "corrupt bit"),
    (0, 2, "external data file"),
    (0, 3, "compression type"),
    (0, 4, "extended L2 entries"),
    (1, 0, "lazy refcounts"),
    (2, 0, "bitmaps"),
    (2, 1, "raw external data"),
];
/// qemu 10 writes the feature table only with clusters above 4 KiB (observed with
/// `qemu-img create -o cluster_size=512|2048|4096|8192`).
const FEATURE_TABLE_MIN_CLUSTER: u64 = 4096;
/// Each feature table entry: type byte, bit byte, 46-byte NUL-padded name.
const FEATURE_ENTRY_LEN: usize = 48;

/// How compressed clusters are encoded (header byte 104, v3 only).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    /// Raw deflate, window 4 KiB (type 0, the only choice in v2).
    Zlib,
    /// One zstd frame per cluster (type 1).
    Zstd,
}

impl Compression {
    pub fn name(self) -> &'static str {
        match self {
            Compression::Zlib => "zlib",
            Compression::Zstd => "zstd",
        }
    }
}

/// The fields of a qcow2 header. v2 images get the v3 defaults for the v3-only fields.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    pub version: u32,
    pub backing_file_offset: u64,
    pub backing_file_size: u32,
    pub cluster_bits: u32,
    /// Virtual size in bytes.
    pub size: u64,
    pub crypt_method: u32,
    pub l1_size: u32,
    pub l1_table_offset: u64,
    pub refcount_table_offset: u64,
    pub refcount_table_clusters: u32,
    pub nb_snapshots: u32,
    pub snapshots_offset: u64,
    pub incompatible: u64,
    pub compatible: u64,
    pub autoclear: u64,
    pub refcount_order: u32,
    pub header_length: u32,
    pub compression: Compression,
}

fn malformed(offset: u64, reason: impl Into<String>) -> Defect {
    Defect::Malformed {
        offset,
        reason: reason.into(),
    }
}

impl Header {
    /// Parses and validates the structure of the header at the start of `buf`.
    pub fn parse(buf: &[u8]) -> Result<Header, Defect> {
        if buf.len() < V2_HEADER_LEN {
            return Err(malformed(
                0,
                format!("header truncated to {} bytes", buf.len()),
            ));
        }
        if buf[0..4] != MAGIC {
            return Err(malformed(0, "bad magic"));
        }
        let version = be32(buf, 4);
        if version != 2 && version != 3 {
            return Err(Defect::Unsupported(format!("qcow2 version {version}")));
        }
        let mut header = Header {
            version,
            backing_file_offset: be64(buf, 8),
            backing_file_size: be32(buf, 16),
            cluster_bits: be32(buf, 20),
            size: be64(buf, 24),
            crypt_method: be32(buf, 32),
            l1_size: be32(buf, 36),
            l1_table_offset: be64(buf, 40),
            refcount_table_offset: be64(buf, 48),
            refcount_table_clusters: be32(buf, 56),
            nb_snapshots: be32(buf, 60),
            snapshots_offset: be64(buf, 64),
            incompatible: 0,
            compatible: 0,
            autoclear: 0,
            refcount_order: DEFAULT_REFCOUNT_ORDER,
            header_length: V2_HEADER_LEN as u32,
            compression: Compression::Zlib,
        };
        if version == 3 {
            if buf.len() < 104 {
                return Err(malformed(0, "v3 header truncated"));
            }
            header.incompatible = be64(buf, 72);
            header.compatible = be64(buf, 80);
            header.autoclear = be64(buf, 88);
            header.refcount_order = be32(buf, 96);
            header.header_length = be32(buf, 100);
            if header.header_length < 104 || header.header_length as usize > buf.len() {
                return Err(malformed(
                    100,
                    format!("header length {} out of range", header.header_length),
                ));
            }
            if header.incompatible & INCOMPAT_COMPRESSION != 0 {
                if header.header_length < 105 {
                    return Err(malformed(100, "compression type bit set without the field"));
                }
                header.compression = match buf[104] {
                    0 => Compression::Zlib,
                    1 => Compression::Zstd,
                    other => return Err(Defect::Unsupported(format!("compression type {other}"))),
                };
            }
        }
        if !(MIN_CLUSTER_BITS..=MAX_CLUSTER_BITS).contains(&header.cluster_bits) {
            return Err(malformed(
                20,
                format!("cluster_bits {} not in 9..=21", header.cluster_bits),
            ));
        }
        if header.refcount_order > 6 {
            return Err(malformed(
                96,
                format!("refcount_order {} above 6", header.refcount_order),
            ));
        }
        let cluster = header.cluster_size();
        // Sizes above 2^61 cannot be addressed by L1/L2 offsets anyway (qemu's own limit).
        if header.size > 1 << 61 {
            return Err(malformed(
                24,
                format!("virtual size {} too large", header.size),
            ));
        }
        if u64::from(header.l1_size) * 8 > MAX_L1_BYTES {
            return Err(malformed(
                36,
                format!("L1 size {} too large", header.l1_size),
            ));
        }
        if u64::from(header.l1_size) < header.l1_entries_needed(header.size) {
            return Err(malformed(
                36,
                format!(
                    "L1 size {} too small for virtual size {}",
                    header.l1_size, header.size
                ),
            ));
        }
        if !header.l1_table_offset.is_multiple_of(cluster) {
            return Err(malformed(40, "L1 table offset not cluster aligned"));
        }
        if !header.refcount_table_offset.is_multiple_of(cluster)
            || header.refcount_table_offset == 0
        {
            return Err(malformed(48, "refcount table offset not cluster aligned"));
        }
        if u64::from(header.refcount_table_clusters) * cluster > MAX_REFTABLE_BYTES {
            return Err(malformed(
                56,
                format!(
                    "refcount table of {} clusters too large",
                    header.refcount_table_clusters
                ),
            ));
        }
        Ok(header)
    }

    /// Where the header extensions must end, as qemu reads them: the backing file name when
    /// there is one, else the end of the first cluster.
    pub fn extensions_end(&self) -> u64 {
        if self.backing_file_offset != 0 {
            self.backing_file_offset.min(self.cluster_size())
        } else {
            self.cluster_size()
        }
    }

    /// Walks the header extensions in `area` (the file's leading bytes, up to
    /// [`extensions_end`](Header::extensions_end) or the end of the file) the way qemu does and
    /// refuses an extension whose length passes that end ("Header extension too large"), or
    /// one that the file is too short to hold.
    pub fn check_extensions(&self, area: &[u8]) -> Result<(), Defect> {
        let end = self.extensions_end();
        let mut offset = u64::from(self.header_length);
        while offset < end {
            let at = offset as usize;
            let Some(ext) = area.get(at..at + EXTENSION_HEADER_LEN) else {
                return Err(malformed(
                    offset,
                    "header extension past the end of the file",
                ));
            };
            let kind = be32(ext, 0);
            let len = u64::from(be32(ext, 4));
            offset += EXTENSION_HEADER_LEN as u64;
            if offset > end || len > end - offset {
                return Err(malformed(
                    offset - 4,
                    format!(
                        "header extension {kind:#x} of {len:#x} bytes passes the end of the header area at {end:#x}"
                    ),
                ));
            }
            if kind == EXTENSION_END {
                return Ok(());
            }
            offset += len.next_multiple_of(8);
        }
        Ok(())
    }

    /// Refuses what cloudimg does not handle: backing files, encryption, external data,
    /// dirty or corrupt images, unknown incompatible features.
    pub fn check_supported(&self) -> Result<(), Defect> {
        let refuse = |what: &str| Err(Defect::Unsupported(what.to_owned()));
        if self.backing_file_offset != 0 {
            return refuse("backing files");
        }
        if self.crypt_method != 0 {
            return refuse("encrypted images");
        }
        if self.incompatible & !KNOWN_INCOMPAT != 0 {
            return Err(Defect::Unsupported(format!(
                "unknown incompatible features {:#x}",
                self.incompatible & !KNOWN_INCOMPAT
            )));
        }
        if self.incompatible & INCOMPAT_DATA_FILE != 0 {
            return refuse("external data files");
        }
        if self.incompatible & INCOMPAT_DIRTY != 0 {
            return refuse("a dirty image (not closed cleanly); run qemu-img check -r all");
        }
        if self.incompatible & INCOMPAT_CORRUPT != 0 {
            return refuse("an image marked corrupt");
        }
        Ok(())
    }

    pub fn cluster_size(&self) -> u64 {
        1 << self.cluster_bits
    }

    pub fn extended_l2(&self) -> bool {
        self.incompatible & INCOMPAT_EXTL2 != 0
    }

    /// Bytes per L2 entry: 8, or 16 with extended L2.
    pub fn l2_entry_size(&self) -> u64 {
        if self.extended_l2() {
            16
        } else {
            8
        }
    }

    /// Guest clusters one L2 table maps.
    pub fn l2_entries(&self) -> u64 {
        self.cluster_size() / self.l2_entry_size()
    }

    /// L1 entries needed for `size` guest bytes.
    pub fn l1_entries_needed(&self, size: u64) -> u64 {
        let per_l1 = self.cluster_size() * self.l2_entries();
        size.div_ceil(per_l1)
    }

    /// The header as qemu 10 writes it, with the feature name table and end marker for v3.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(512);
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&self.version.to_be_bytes());
        out.extend_from_slice(&self.backing_file_offset.to_be_bytes());
        out.extend_from_slice(&self.backing_file_size.to_be_bytes());
        out.extend_from_slice(&self.cluster_bits.to_be_bytes());
        out.extend_from_slice(&self.size.to_be_bytes());
        out.extend_from_slice(&self.crypt_method.to_be_bytes());
        out.extend_from_slice(&self.l1_size.to_be_bytes());
        out.extend_from_slice(&self.l1_table_offset.to_be_bytes());
        out.extend_from_slice(&self.refcount_table_offset.to_be_bytes());
        out.extend_from_slice(&self.refcount_table_clusters.to_be_bytes());
        out.extend_from_slice(&self.nb_snapshots.to_be_bytes());
        out.extend_from_slice(&self.snapshots_offset.to_be_bytes());
        if self.version < 3 {
            return out;
        }
        out.extend_from_slice(&self.incompatible.to_be_bytes());
        out.extend_from_slice(&self.compatible.to_be_bytes());
        out.extend_from_slice(&self.autoclear.to_be_bytes());
        out.extend_from_slice(&self.refcount_order.to_be_bytes());
        out.extend_from_slice(&V3_HEADER_LEN.to_be_bytes());
        out.push(match self.compression {
            Compression::Zlib => 0,
            Compression::Zstd => 1,
        });
        out.resize(V3_HEADER_LEN as usize, 0);
        if self.cluster_size() > FEATURE_TABLE_MIN_CLUSTER {
            self.encode_feature_table(&mut out);
        }
        // End-of-extensions marker: type 0, length 0.
        out.extend_from_slice(&[0; 8]);
        out
    }

    fn encode_feature_table(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&EXT_FEATURE_TABLE.to_be_bytes());
        out.extend_from_slice(&((FEATURE_NAMES.len() * FEATURE_ENTRY_LEN) as u32).to_be_bytes());
        for (kind, bit, name) in FEATURE_NAMES {
            let start = out.len();
            out.push(kind);
            out.push(bit);
            out.extend_from_slice(name.as_bytes());
            out.resize(start + FEATURE_ENTRY_LEN, 0);
        }
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// A valid v3 header of a 1 MiB image with 64 KiB clusters, as qemu-img create writes it.
    pub fn v3_header() -> Vec<u8> {
        let mut h = Vec::new();
        h.extend_from_slice(b"QFI\xfb"); // magic
        h.extend_from_slice(&3u32.to_be_bytes()); // version
        h.extend_from_slice(&0u64.to_be_bytes()); // backing_file_offset
        h.extend_from_slice(&0u32.to_be_bytes()); // backing_file_size
        h.extend_from_slice(&16u32.to_be_bytes()); // cluster_bits: 64 KiB
        h.extend_from_slice(&0x10_0000u64.to_be_bytes()); // size: 1 MiB
        h.extend_from_slice(&0u32.to_be_bytes()); // crypt_method
        h.extend_from_slice(&1u32.to_be_bytes()); // l1_size
        h.extend_from_slice(&0x3_0000u64.to_be_bytes()); // l1_table_offset
        h.extend_from_slice(&0x1_0000u64.to_be_bytes()); // refcount_table_offset
        h.extend_from_slice(&1u32.to_be_bytes()); // refcount_table_clusters
        h.extend_from_slice(&0u32.to_be_bytes()); // nb_snapshots
        h.extend_from_slice(&0u64.to_be_bytes()); // snapshots_offset
        h.extend_from_slice(&0u64.to_be_bytes()); // incompatible_features
        h.extend_from_slice(&0u64.to_be_bytes()); // compatible_features
        h.extend_from_slice(&0u64.to_be_bytes()); // autoclear_features
        h.extend_from_slice(&4u32.to_be_bytes()); // refcount_order: 16 bits
        h.extend_from_slice(&112u32.to_be_bytes()); // header_length
        h.extend_from_slice(&[0; 8]); // compression_type zlib + padding
        h
    }

    /// The 112-byte header, then the extensions, padded to `len` bytes.
    fn with_extensions(extensions: &[u8], len: usize) -> Vec<u8> {
        let mut area = v3_header();
        area.extend_from_slice(extensions);
        area.resize(len, 0);
        area
    }

    #[test]
    fn header_extensions_must_end_inside_the_header_cluster() {
        let h = Header::parse(&v3_header()).unwrap();
        let cluster = h.cluster_size() as usize;
        // An end marker right after the header.
        h.check_extensions(&with_extensions(&[0; 8], cluster))
            .unwrap();
        // A feature name table of 48 bytes, then the end marker.
        let mut table = 0x6803_f857u32.to_be_bytes().to_vec(); // type: feature name table
        table.extend_from_slice(&48u32.to_be_bytes()); // length
        table.extend_from_slice(&[0; 48]);
        table.extend_from_slice(&[0; 8]); // end marker
        h.check_extensions(&with_extensions(&table, cluster))
            .unwrap();
        // Length 0xFFFFFFF0 (qemu: "Header extension too large").
        let mut huge = table.clone();
        huge[4..8].copy_from_slice(&0xFFFF_FFF0u32.to_be_bytes());
        assert!(matches!(
            h.check_extensions(&with_extensions(&huge, cluster)),
            Err(Defect::Malformed { offset: 0x74, .. })
        ));
        // One byte past the cluster is too large; exactly to the end is not.
        let room = (cluster - 112 - 8) as u32;
        let mut fits = 0x6803_f857u32.to_be_bytes().to_vec();
        fits.extend_from_slice(&room.to_be_bytes());
        h.check_extensions(&with_extensions(&fits, cluster))
            .unwrap();
        fits[4..8].copy_from_slice(&(room + 1).to_be_bytes());
        assert!(h
            .check_extensions(&with_extensions(&fits, cluster))
            .is_err());
        // A file that ends before the extension list does.
        assert!(h.check_extensions(&with_extensions(&table, 120)).is_err());
    }

    #[test]
    fn valid_v3_header_parses() {
        let h = Header::parse(&v3_header()).unwrap();
        assert_eq!(h.version, 3);
        assert_eq!(h.cluster_size(), 65536);
        assert_eq!(h.size, 1 << 20);
        assert_eq!(h.l1_table_offset, 0x30000);
        assert_eq!(h.compression, Compression::Zlib);
        assert_eq!(h.l2_entries(), 8192);
        h.check_supported().unwrap();
    }

    #[test]
    fn encode_round_trips_and_matches_qemu_prefix() {
        let h = Header::parse(&v3_header()).unwrap();
        let bytes = h.encode();
        assert_eq!(&bytes[..112], &v3_header()[..]);
        // Feature table header, then the first entry "dirty bit", then the end marker at 504.
        assert_eq!(
            &bytes[112..120],
            &[0x68, 0x03, 0xf8, 0x57, 0, 0, 0x01, 0x80]
        );
        assert_eq!(&bytes[122..131], b"dirty bit");
        assert_eq!(bytes.len(), 512);
        assert_eq!(Header::parse(&bytes).unwrap(), h);
    }

    #[test]
    fn small_clusters_get_no_feature_table() {
        let mut h = Header::parse(&v3_header()).unwrap();
        h.cluster_bits = 12;
        let bytes = h.encode();
        assert_eq!(bytes.len(), 120);
        assert_eq!(&bytes[112..], &[0; 8]);
    }

    #[test]
    fn truncated_header_is_rejected() {
        assert!(matches!(
            Header::parse(&v3_header()[..71]),
            Err(Defect::Malformed { .. })
        ));
    }

    #[test]
    fn bad_magic_is_rejected() {
        let mut h = v3_header();
        h[3] = 0xfc;
        assert!(matches!(
            Header::parse(&h),
            Err(Defect::Malformed { offset: 0, .. })
        ));
    }

    #[test]
    fn cluster_bits_out_of_range_is_rejected() {
        let mut h = v3_header();
        h[23] = 22;
        assert!(matches!(
            Header::parse(&h),
            Err(Defect::Malformed { offset: 20, .. })
        ));
        h[23] = 8;
        assert!(Header::parse(&h).is_err());
    }

    #[test]
    fn huge_l1_is_rejected() {
        let mut h = v3_header();
        h[36..40].copy_from_slice(&0x4000_0000u32.to_be_bytes());
        assert!(matches!(
            Header::parse(&h),
            Err(Defect::Malformed { offset: 36, .. })
        ));
    }

    #[test]
    fn l1_too_small_for_size_is_rejected() {
        let mut h = v3_header();
        // 1 TiB needs 2048 L1 entries with 64 KiB clusters.
        h[24..32].copy_from_slice(&(1u64 << 40).to_be_bytes());
        assert!(matches!(
            Header::parse(&h),
            Err(Defect::Malformed { offset: 36, .. })
        ));
    }

    #[test]
    fn unaligned_l1_offset_is_rejected() {
        let mut h = v3_header();
        h[47] = 0x08;
        assert!(matches!(
            Header::parse(&h),
            Err(Defect::Malformed { offset: 40, .. })
        ));
    }

    #[test]
    fn huge_header_length_is_rejected() {
        let mut h = v3_header();
        h[100..104].copy_from_slice(&0xffff_ffffu32.to_be_bytes());
        assert!(matches!(
            Header::parse(&h),
            Err(Defect::Malformed { offset: 100, .. })
        ));
    }

    #[test]
    fn backing_file_is_unsupported() {
        let mut h = v3_header();
        h[15] = 0x70;
        let parsed = Header::parse(&h).unwrap();
        assert!(matches!(
            parsed.check_supported(),
            Err(Defect::Unsupported(_))
        ));
    }

    #[test]
    fn dirty_and_unknown_features_are_unsupported() {
        let mut h = v3_header();
        h[79] = 0x01; // dirty
        assert!(Header::parse(&h).unwrap().check_supported().is_err());
        h[79] = 0x20; // bit 5: unknown
        assert!(Header::parse(&h).unwrap().check_supported().is_err());
        h[79] = 0x10; // extended L2: supported
        Header::parse(&h).unwrap().check_supported().unwrap();
    }

    #[test]
    fn unknown_compression_type_is_unsupported() {
        let mut h = v3_header();
        h[79] = 0x08;
        h[104] = 2;
        assert!(matches!(Header::parse(&h), Err(Defect::Unsupported(_))));
        h[104] = 1;
        assert_eq!(Header::parse(&h).unwrap().compression, Compression::Zstd);
    }
}

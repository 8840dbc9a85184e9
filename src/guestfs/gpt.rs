//! Partition tables: GPT (UEFI spec, chapter 5) with a plain MBR fallback.
//!
//! Only 512-byte logical sectors are read: cloud images and QEMU's virtual disks use them, and
//! a GPT written for 4 KiB sectors has its header at byte 4096, where this finds none (the disk
//! then counts as unpartitioned). The primary header (LBA 1) and its partition entry array are
//! checked against their CRC32s; when the primary header is damaged, the backup header at the
//! last LBA is tried. The header's entry count and entry size are untrusted: the array read is
//! capped at [`MAX_ARRAY_BYTES`].
//!
//! A disk without the 0x55AA boot signature has no partition table; one whose MBR holds no
//! protective (0xEE) entry is read as an MBR of four primary partitions (extended partitions
//! are not followed).

use super::{GuestFsError, Volume};
use crate::formats::fields::{le16, le32, le64};

/// Logical sector size (bytes).
pub const SECTOR: u64 = 512;
/// Offset of the boot signature 0x55 0xAA in the MBR.
const MBR_SIGNATURE_AT: usize = 510;
/// Offset of the four 16-byte MBR partition entries.
const MBR_ENTRIES_AT: usize = 446;
const MBR_ENTRY_SIZE: usize = 16;
/// MBR partition type of a GPT's protective entry.
const MBR_TYPE_PROTECTIVE: u8 = 0xEE;
/// MBR partition types of extended partitions (containers, not filesystems).
const MBR_TYPES_EXTENDED: [u8; 3] = [0x05, 0x0F, 0x85];
/// "EFI PART".
const GPT_SIGNATURE: &[u8; 8] = b"EFI PART";
/// The smallest header (revision 1.0 fields, up to the entry array CRC).
const GPT_MIN_HEADER_SIZE: u32 = 92;
/// The smallest entry (fields up to the 72-byte name); sizes are 128 × 2^n.
const GPT_MIN_ENTRY_SIZE: u32 = 128;
/// The largest entry size accepted (the spec allows any 128 × 2^n; tools write 128).
const GPT_MAX_ENTRY_SIZE: u32 = 4096;
/// The largest partition entry array read (the usual one is 128 × 128 = 16 KiB).
pub const MAX_ARRAY_BYTES: u64 = 1 << 20;
/// Length of the UTF-16LE partition name field.
const GPT_NAME_BYTES: usize = 72;

/// A GUID as stored on disk (the first three fields little-endian).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Guid(pub [u8; 16]);

impl Guid {
    /// The GUID of the text form `d1-d2-d3-d4[0..2]-d4[2..8]`.
    pub const fn new(d1: u32, d2: u16, d3: u16, d4: [u8; 8]) -> Guid {
        let a = d1.to_le_bytes();
        let b = d2.to_le_bytes();
        let c = d3.to_le_bytes();
        Guid([
            a[0], a[1], a[2], a[3], b[0], b[1], c[0], c[1], d4[0], d4[1], d4[2], d4[3], d4[4],
            d4[5], d4[6], d4[7],
        ])
    }

    pub fn is_zero(&self) -> bool {
        self.0 == [0; 16]
    }
}

impl std::fmt::Display for Guid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let b = &self.0;
        write!(
            f,
            "{:08X}-{:04X}-{:04X}-{:02X}{:02X}-",
            le32(b, 0),
            le16(b, 4),
            le16(b, 6),
            b[8],
            b[9]
        )?;
        b[10..].iter().try_for_each(|byte| write!(f, "{byte:02X}"))
    }
}

/// Linux filesystem data (0FC63DAF-8483-4772-8E79-3D69D8477DE4).
pub const LINUX_FILESYSTEM: Guid = Guid::new(
    0x0FC6_3DAF,
    0x8483,
    0x4772,
    [0x8E, 0x79, 0x3D, 0x69, 0xD8, 0x47, 0x7D, 0xE4],
);
/// Linux extended boot / XBOOTLDR (BC13C2FF-59E6-4262-A352-B275FD6F7172), Ubuntu's /boot.
pub const LINUX_EXTENDED_BOOT: Guid = Guid::new(
    0xBC13_C2FF,
    0x59E6,
    0x4262,
    [0xA3, 0x52, 0xB2, 0x75, 0xFD, 0x6F, 0x71, 0x72],
);
/// BIOS boot partition (21686148-6449-6E6F-744E-656564454649): GRUB's core.img, no filesystem.
pub const BIOS_BOOT: Guid = Guid::new(
    0x2168_6148,
    0x6449,
    0x6E6F,
    [0x74, 0x4E, 0x65, 0x65, 0x64, 0x45, 0x46, 0x49],
);

/// A partition's type, in the vocabulary of its table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PartitionType {
    Gpt(Guid),
    Mbr(u8),
}

/// One partition. Sector numbers are in [`SECTOR`]-byte units; `last_lba` is inclusive.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Partition {
    /// 1-based, as Linux numbers it (`sda1`): the entry's index in the GPT array or MBR.
    pub number: u32,
    pub kind: PartitionType,
    /// The GPT unique partition GUID (`PARTUUID`), absent for MBR.
    pub unique: Option<Guid>,
    pub first_lba: u64,
    pub last_lba: u64,
    /// The GPT partition name (`PARTLABEL`), empty for MBR.
    pub name: String,
}

impl Partition {
    /// Byte offset of the partition on the disk.
    pub fn start(&self) -> u64 {
        self.first_lba * SECTOR
    }

    /// Length in bytes.
    pub fn len(&self) -> u64 {
        (self.last_lba - self.first_lba + 1) * SECTOR
    }

    pub fn is_empty(&self) -> bool {
        false
    }
}

/// What the disk is partitioned with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Table {
    Gpt(Vec<Partition>),
    Mbr(Vec<Partition>),
    /// No boot signature: the disk is one volume (or unknown).
    None,
}

impl Table {
    pub fn partitions(&self) -> &[Partition] {
        match self {
            Table::Gpt(parts) | Table::Mbr(parts) => parts,
            Table::None => &[],
        }
    }
}

fn bad(reason: impl Into<String>) -> GuestFsError {
    GuestFsError::PartitionTable {
        reason: reason.into(),
    }
}

/// Reads the partition table of `disk` (a whole-disk volume).
pub fn read(disk: &mut Volume<'_>) -> Result<Table, GuestFsError> {
    let sectors = disk.len() / SECTOR;
    if sectors < 1 {
        return Ok(Table::None);
    }
    let mut mbr = [0u8; SECTOR as usize];
    disk.read_at(0, &mut mbr)?;
    match parse_mbr(&mbr, sectors)? {
        MbrKind::None => Ok(Table::None),
        MbrKind::Mbr(parts) => Ok(Table::Mbr(parts)),
        MbrKind::Protective => read_gpt(disk, sectors).map(Table::Gpt),
    }
}

/// What sector 0 says.
#[derive(Debug, PartialEq, Eq)]
pub enum MbrKind {
    None,
    Protective,
    Mbr(Vec<Partition>),
}

/// Parses sector 0: no table, a GPT's protective MBR, or a classic MBR's primary partitions
/// (those that fit within `disk_sectors`; empty and extended entries skipped).
pub fn parse_mbr(sector: &[u8; 512], disk_sectors: u64) -> Result<MbrKind, GuestFsError> {
    if sector[MBR_SIGNATURE_AT..] != [0x55, 0xAA] {
        return Ok(MbrKind::None);
    }
    let entries = (0..4).map(|i| {
        let at = MBR_ENTRIES_AT + i * MBR_ENTRY_SIZE;
        &sector[at..at + MBR_ENTRY_SIZE]
    });
    if entries.clone().any(|e| e[4] == MBR_TYPE_PROTECTIVE) {
        return Ok(MbrKind::Protective);
    }
    let mut parts = Vec::new();
    for (i, entry) in entries.enumerate() {
        let kind = entry[4];
        let first = u64::from(le32(entry, 8));
        let count = u64::from(le32(entry, 12));
        if kind == 0 || count == 0 || MBR_TYPES_EXTENDED.contains(&kind) {
            continue;
        }
        let number = i as u32 + 1;
        if first == 0 || first + count > disk_sectors {
            return Err(bad(format!(
                "MBR partition {number} (sectors {first}+{count}) is not within the disk's {disk_sectors} sectors"
            )));
        }
        parts.push(Partition {
            number,
            kind: PartitionType::Mbr(kind),
            unique: None,
            first_lba: first,
            last_lba: first + count - 1,
            name: String::new(),
        });
    }
    Ok(MbrKind::Mbr(parts))
}

fn read_gpt(disk: &mut Volume<'_>, sectors: u64) -> Result<Vec<Partition>, GuestFsError> {
    let primary = read_gpt_at(disk, 1, sectors);
    match primary {
        Ok(parts) => Ok(parts),
        Err(primary_error) if sectors > 2 => {
            read_gpt_at(disk, sectors - 1, sectors).map_err(|_| primary_error)
        }
        Err(e) => Err(e),
    }
}

fn read_gpt_at(
    disk: &mut Volume<'_>,
    lba: u64,
    sectors: u64,
) -> Result<Vec<Partition>, GuestFsError> {
    if lba >= sectors {
        return Err(bad("the disk is too small for a GPT header"));
    }
    let mut sector = [0u8; SECTOR as usize];
    disk.read_at(lba * SECTOR, &mut sector)?;
    let header = parse_header(&sector, lba, sectors)?;
    let mut array = vec![0u8; header.array_bytes() as usize];
    disk.read_at(header.entries_lba * SECTOR, &mut array)?;
    parse_entries(&header, &array, sectors)
}

/// The fields of a GPT header that locate and check the partition entry array.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    pub entries_lba: u64,
    pub entry_count: u32,
    pub entry_size: u32,
    pub array_crc: u32,
}

impl Header {
    /// Bytes of the entry array (capped by [`parse_header`]).
    pub fn array_bytes(&self) -> u64 {
        u64::from(self.entry_count) * u64::from(self.entry_size)
    }
}

/// Parses and checks a GPT header found at `lba` of a disk of `disk_sectors` sectors.
pub fn parse_header(
    sector: &[u8; 512],
    lba: u64,
    disk_sectors: u64,
) -> Result<Header, GuestFsError> {
    if &sector[0..8] != GPT_SIGNATURE {
        return Err(bad(format!("no GPT signature at LBA {lba}")));
    }
    let header_size = le32(sector, 12);
    if !(GPT_MIN_HEADER_SIZE..=SECTOR as u32).contains(&header_size) {
        return Err(bad(format!("GPT header size {header_size} at LBA {lba}")));
    }
    let stored_crc = le32(sector, 16);
    let mut copy = *sector;
    copy[16..20].fill(0);
    let crc = crc32(&copy[..header_size as usize]);
    if crc != stored_crc {
        return Err(bad(format!(
            "GPT header CRC32 at LBA {lba} is {stored_crc:#010x}, computed {crc:#010x}"
        )));
    }
    let my_lba = le64(sector, 24);
    if my_lba != lba {
        return Err(bad(format!(
            "the GPT header at LBA {lba} says it is at LBA {my_lba}"
        )));
    }
    let entries_lba = le64(sector, 72);
    let entry_count = le32(sector, 80);
    let entry_size = le32(sector, 84);
    let header = Header {
        entries_lba,
        entry_count,
        entry_size,
        array_crc: le32(sector, 88),
    };
    if !(GPT_MIN_ENTRY_SIZE..=GPT_MAX_ENTRY_SIZE).contains(&entry_size)
        || !entry_size.is_power_of_two()
    {
        return Err(bad(format!("GPT entry size {entry_size}")));
    }
    if header.array_bytes() > MAX_ARRAY_BYTES {
        return Err(bad(format!(
            "GPT entry array of {entry_count} × {entry_size} bytes is larger than {MAX_ARRAY_BYTES}"
        )));
    }
    let array_sectors = header.array_bytes().div_ceil(SECTOR);
    let fits = entries_lba >= 1
        && entries_lba
            .checked_add(array_sectors)
            .is_some_and(|end| end <= disk_sectors);
    if !fits {
        return Err(bad(format!(
            "GPT entry array at LBA {entries_lba} ({array_sectors} sectors) is not within the disk's {disk_sectors} sectors"
        )));
    }
    Ok(header)
}

/// Checks the entry array's CRC and returns the used entries, in array order.
pub fn parse_entries(
    header: &Header,
    array: &[u8],
    disk_sectors: u64,
) -> Result<Vec<Partition>, GuestFsError> {
    let bytes = &array[..(header.array_bytes() as usize).min(array.len())];
    if bytes.len() as u64 != header.array_bytes() {
        return Err(bad("short GPT entry array"));
    }
    let crc = crc32(bytes);
    if crc != header.array_crc {
        return Err(bad(format!(
            "GPT entry array CRC32 is {:#010x}, computed {crc:#010x}",
            header.array_crc
        )));
    }
    let mut parts = Vec::new();
    for (i, entry) in bytes.chunks_exact(header.entry_size as usize).enumerate() {
        let kind = guid_at(entry, 0);
        if kind.is_zero() {
            continue;
        }
        let number = i as u32 + 1;
        let first_lba = le64(entry, 32);
        let last_lba = le64(entry, 40);
        if first_lba == 0 || first_lba > last_lba || last_lba >= disk_sectors {
            return Err(bad(format!(
                "GPT partition {number} spans LBA {first_lba}..={last_lba}, not within the disk's {disk_sectors} sectors"
            )));
        }
        parts.push(Partition {
            number,
            kind: PartitionType::Gpt(kind),
            unique: Some(guid_at(entry, 16)),
            first_lba,
            last_lba,
            name: utf16_name(&entry[56..56 + GPT_NAME_BYTES]),
        });
    }
    Ok(parts)
}

fn guid_at(bytes: &[u8], at: usize) -> Guid {
    let mut guid = [0u8; 16];
    guid.copy_from_slice(&bytes[at..at + 16]);
    Guid(guid)
}

/// The UTF-16LE name up to its first NUL (unpaired surrogates become U+FFFD).
fn utf16_name(bytes: &[u8]) -> String {
    let units = bytes
        .chunks_exact(2)
        .map(|pair| u16::from_le_bytes([pair[0], pair[1]]))
        .take_while(|unit| *unit != 0);
    char::decode_utf16(units)
        .map(|c| c.unwrap_or(char::REPLACEMENT_CHARACTER))
        .collect()
}

/// CRC-32 (IEEE 802.3, as zlib computes it), which GPT uses.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = flate2::Crc::new();
    crc.update(bytes);
    crc.sum()
}

#[cfg(test)]
mod unit {
    use super::*;

    const DISK_SECTORS: u64 = 2048;

    /// A protective MBR: one 0xEE entry covering the disk, and the boot signature.
    fn protective_mbr() -> [u8; 512] {
        let mut s = [0u8; 512];
        s[446 + 4] = 0xEE; // type
        s[446 + 8..446 + 12].copy_from_slice(&1u32.to_le_bytes()); // first LBA
        s[446 + 12..446 + 16].copy_from_slice(&(DISK_SECTORS as u32 - 1).to_le_bytes()); // sectors
        s[510] = 0x55;
        s[511] = 0xAA;
        s
    }

    /// Entry array: 4 entries of 128 bytes; entry 2 (number 2) is a Linux filesystem at LBA
    /// 34..=2014 named "root".
    fn array() -> Vec<u8> {
        let mut a = vec![0u8; 4 * 128];
        let e = &mut a[128..256];
        e[0..16].copy_from_slice(&LINUX_FILESYSTEM.0); // type GUID
        e[16..32].copy_from_slice(&[0x11; 16]); // unique GUID
        e[32..40].copy_from_slice(&34u64.to_le_bytes()); // first LBA
        e[40..48].copy_from_slice(&2014u64.to_le_bytes()); // last LBA (inclusive)
        for (i, c) in "root".encode_utf16().enumerate() {
            e[56 + 2 * i..58 + 2 * i].copy_from_slice(&c.to_le_bytes()); // name, UTF-16LE
        }
        a
    }

    /// A primary header at LBA 1 for `array`, CRCs filled in.
    fn header(array: &[u8]) -> [u8; 512] {
        let mut s = [0u8; 512];
        s[0..8].copy_from_slice(b"EFI PART"); // signature
        s[8..12].copy_from_slice(&0x0001_0000u32.to_le_bytes()); // revision 1.0
        s[12..16].copy_from_slice(&92u32.to_le_bytes()); // header size
        s[24..32].copy_from_slice(&1u64.to_le_bytes()); // my LBA
        s[32..40].copy_from_slice(&(DISK_SECTORS - 1).to_le_bytes()); // alternate LBA
        s[40..48].copy_from_slice(&34u64.to_le_bytes()); // first usable
        s[48..56].copy_from_slice(&(DISK_SECTORS - 34).to_le_bytes()); // last usable
        s[72..80].copy_from_slice(&2u64.to_le_bytes()); // entries LBA
        s[80..84].copy_from_slice(&4u32.to_le_bytes()); // entry count
        s[84..88].copy_from_slice(&128u32.to_le_bytes()); // entry size
        s[88..92].copy_from_slice(&crc32(array).to_le_bytes()); // array CRC
        let crc = crc32(&s[..92]);
        s[16..20].copy_from_slice(&crc.to_le_bytes()); // header CRC
        s
    }

    #[test]
    fn a_valid_gpt_gives_its_used_entries_numbered_from_one() {
        assert_eq!(
            parse_mbr(&protective_mbr(), DISK_SECTORS).unwrap(),
            MbrKind::Protective
        );
        let array = array();
        let h = parse_header(&header(&array), 1, DISK_SECTORS).unwrap();
        let parts = parse_entries(&h, &array, DISK_SECTORS).unwrap();
        assert_eq!(parts.len(), 1);
        assert_eq!(parts[0].number, 2);
        assert_eq!(parts[0].kind, PartitionType::Gpt(LINUX_FILESYSTEM));
        assert_eq!(parts[0].name, "root");
        assert_eq!(parts[0].start(), 34 * 512);
        assert_eq!(parts[0].len(), (2014 - 34 + 1) * 512);
        assert_eq!(
            LINUX_FILESYSTEM.to_string(),
            "0FC63DAF-8483-4772-8E79-3D69D8477DE4"
        );
    }

    #[test]
    fn one_flipped_byte_in_the_header_fails_its_crc() {
        let array = array();
        let mut h = header(&array);
        h[80] ^= 1; // entry count
        let err = parse_header(&h, 1, DISK_SECTORS).unwrap_err().to_string();
        assert!(err.contains("header CRC32"), "{err}");
    }

    #[test]
    fn one_flipped_byte_in_the_array_fails_its_crc() {
        let mut array = array();
        let h = parse_header(&header(&array), 1, DISK_SECTORS).unwrap();
        array[128 + 33] ^= 1;
        let err = parse_entries(&h, &array, DISK_SECTORS)
            .unwrap_err()
            .to_string();
        assert!(err.contains("entry array CRC32"), "{err}");
    }

    #[test]
    fn a_header_at_the_wrong_lba_or_with_a_huge_array_is_refused() {
        let array = array();
        let h = header(&array);
        assert!(parse_header(&h, 2047, DISK_SECTORS).is_err());
        // A valid CRC over a header claiming 2^32-1 entries: the cap refuses it.
        let mut huge = h;
        huge[80..84].copy_from_slice(&u32::MAX.to_le_bytes());
        huge[16..20].fill(0);
        let crc = crc32(&huge[..92]);
        huge[16..20].copy_from_slice(&crc.to_le_bytes());
        let err = parse_header(&huge, 1, DISK_SECTORS)
            .unwrap_err()
            .to_string();
        assert!(err.contains("larger than"), "{err}");
        let mut no_sig = h;
        no_sig[0] = b'F';
        assert!(parse_header(&no_sig, 1, DISK_SECTORS).is_err());
    }

    #[test]
    fn a_partition_past_the_disk_is_refused() {
        let array = array();
        let h = parse_header(&header(&array), 1, DISK_SECTORS).unwrap();
        assert!(parse_entries(&h, &array, 2014).is_err());
    }

    #[test]
    fn a_classic_mbr_lists_its_primary_partitions() {
        let mut s = [0u8; 512];
        s[446 + 16 + 4] = 0x83; // entry 2: Linux
        s[446 + 16 + 8..446 + 16 + 12].copy_from_slice(&2048u32.to_le_bytes());
        s[446 + 16 + 12..446 + 16 + 16].copy_from_slice(&4096u32.to_le_bytes());
        s[446 + 32 + 4] = 0x05; // entry 3: extended, skipped
        s[446 + 32 + 12] = 1;
        s[510] = 0x55;
        s[511] = 0xAA;
        let MbrKind::Mbr(parts) = parse_mbr(&s, 8192).unwrap() else {
            panic!("not an MBR")
        };
        assert_eq!(parts.len(), 1);
        assert_eq!(
            (parts[0].number, parts[0].first_lba, parts[0].last_lba),
            (2, 2048, 6143)
        );
        assert!(parse_mbr(&s, 6000).is_err());
        s[511] = 0xAB;
        assert_eq!(parse_mbr(&s, 8192).unwrap(), MbrKind::None);
    }
}

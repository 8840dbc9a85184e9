//! A small ISO 9660 writer for the cloud-init NoCloud seed (`user-data`, `meta-data`,
//! `network-config`, …): one flat root directory, three name spaces over the same file data.
//!
//! - the primary volume descriptor with ISO 9660 level 1 names (`USER_DAT.;1`), which every
//!   reader understands;
//! - Rock Ridge (SUSP `SP`/`CE`/`ER`, RRIP `RR`/`NM`/`PX`) in the primary tree, so POSIX readers
//!   such as Linux see the real names (`user-data`) with their case and dashes;
//! - a Joliet supplementary tree (UCS-2 names) for Windows and BSD readers.
//!
//! This mirrors what `genisoimage -volid cidata -joliet -rock` produces, minus its padding.
//! Output is deterministic: every date is [`SEED_TIME`], files are ordered by name.
//!
//! Layout, in 2048-byte sectors:
//! ```text
//! 0..16   system area (zeros)
//! 16      primary volume descriptor
//! 17      Joliet supplementary volume descriptor
//! 18      volume descriptor set terminator
//! 19, 20  primary path table, little- then big-endian
//! 21, 22  Joliet path table, little- then big-endian
//! 23..    primary root directory, then Joliet root directory
//! ..      SUSP continuation area holding the Rock Ridge `ER` entry
//! ..      file data, each file starting on a sector boundary
//! ```
//!
//! The continuation area follows the directories because sequential readers (libarchive)
//! refuse a `CE` entry pointing backwards.

use std::io::Write;
use std::path::Path;

use super::{write_atomically, ContainerError};

/// Logical sector (and block) size of a CD-ROM file system; ISO 9660 allows others but every
/// reader expects this one.
const SECTOR: usize = 2048;

/// Sectors 0–15 are the system area, reserved for boot code; volume descriptors start at 16.
const FIRST_DESCRIPTOR_SECTOR: u32 = 16;
// Sectors 16, 17 and 18 hold the primary, Joliet and terminator descriptors, in that order.
const PRIMARY_L_PATH_SECTOR: u32 = FIRST_DESCRIPTOR_SECTOR + 3;
const PRIMARY_M_PATH_SECTOR: u32 = FIRST_DESCRIPTOR_SECTOR + 4;
const JOLIET_L_PATH_SECTOR: u32 = FIRST_DESCRIPTOR_SECTOR + 5;
const JOLIET_M_PATH_SECTOR: u32 = FIRST_DESCRIPTOR_SECTOR + 6;
/// First sector of the primary root directory; everything after it depends on the content.
const FIRST_DIRECTORY_SECTOR: u32 = FIRST_DESCRIPTOR_SECTOR + 7;

/// Standard identifier of every volume descriptor (ECMA-119 8.1.2).
const STANDARD_ID: &[u8; 5] = b"CD001";
/// Volume descriptor type codes (ECMA-119 8.1.1).
const TYPE_PRIMARY: u8 = 1;
const TYPE_SUPPLEMENTARY: u8 = 2;
const TYPE_TERMINATOR: u8 = 255;

/// Escape sequence naming UCS-2 level 3 in a supplementary descriptor: this is what makes it
/// Joliet.
const JOLIET_ESCAPE: &[u8; 3] = b"%/E";

/// Directory record flag: the entry is a directory (ECMA-119 9.1.6).
const FLAG_DIRECTORY: u8 = 0x02;

/// A seed carries a few YAML documents; anything bigger is a mistake, and the bound keeps the
/// 32-bit ISO sizes and the in-memory metadata trivially safe.
pub const MAX_SEED_BYTES: u64 = 16 * 1024 * 1024;

/// A seed holds a handful of files; the bound keeps the directories (about 160 bytes a file)
/// at a few hundred KiB however the caller misbehaves.
pub const MAX_SEED_FILES: usize = 1024;

/// Longest file name accepted: Joliet's limit of 64 UCS-2 characters, which also keeps every
/// directory record well under its 255-byte maximum.
const MAX_NAME_LEN: usize = 64;

/// Joliet volume identifiers are 32 bytes of UCS-2, so at most 16 characters.
const MAX_VOLUME_ID_LEN: usize = 16;

/// Rock Ridge POSIX modes: read-only regular files and directories, as on a pressed disc.
const MODE_FILE: u32 = 0o100_444;
const MODE_DIRECTORY: u32 = 0o040_555;

/// Identifier, description and source of the `ER` entry announcing RRIP 1.09 (RRIP 4.3).
const RRIP_ID: &[u8] = b"RRIP_1991A";
const RRIP_DESCRIPTOR: &[u8] =
    b"THE ROCK RIDGE INTERCHANGE PROTOCOL PROVIDES SUPPORT FOR POSIX FILE SYSTEM SEMANTICS";
const RRIP_SOURCE: &[u8] = b"PLEASE CONTACT DISC PUBLISHER FOR SPECIFICATION SOURCE.  SEE PUBLISHER IDENTIFIER IN PRIMARY VOLUME DESCRIPTOR FOR CONTACT INFORMATION.";

// The `ER` entry's length is a single byte.
const _: () = assert!(8 + RRIP_ID.len() + RRIP_DESCRIPTOR.len() + RRIP_SOURCE.len() <= 255);

/// `RR` entry flags (RRIP 1.09 4.1.5): which Rock Ridge entries follow.
const RR_PX: u8 = 0x01;
const RR_NM: u8 = 0x08;

/// Identification strings written in the descriptors.
const SYSTEM_ID: &str = "LINUX";
const APPLICATION_ID: &str = "CLOUDIMG";

/// A date and time in UTC, as recorded in directory records and volume descriptors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IsoTime {
    pub year: u16,
    pub month: u8,
    pub day: u8,
    pub hour: u8,
    pub minute: u8,
    pub second: u8,
}

/// Every date in a seed: a fixed instant, so the same inputs give the same bytes.
pub const SEED_TIME: IsoTime = IsoTime {
    year: 2000,
    month: 1,
    day: 1,
    hour: 0,
    minute: 0,
    second: 0,
};

/// Writes a NoCloud seed image at `out` holding `files` (name in the image, content) in its root
/// directory, labelled `volume_id` (cloud-init looks for `cidata`).
pub fn write_seed(
    out: &Path,
    files: &[(&str, &[u8])],
    volume_id: &str,
) -> Result<(), ContainerError> {
    let image = plan(files, volume_id)?;
    write_atomically(out, |writer, temp| {
        let io = |e| ContainerError::io(temp, "write", e);
        writer.write_all(&image.metadata).map_err(io)?;
        for file in &image.files {
            writer.write_all(file.data).map_err(io)?;
            writer
                .write_all(&[0; SECTOR][..padding(file.data.len())])
                .map_err(io)?;
        }
        Ok(())
    })
}

/// One file of the seed, with its names in the three name spaces and its place on disc.
struct Entry<'a> {
    /// Real name, stored in Rock Ridge `NM` and (as UCS-2) in Joliet.
    name: &'a str,
    /// ISO 9660 level 1 identifier, e.g. `USER_DAT.;1`.
    level1: String,
    data: &'a [u8],
    extent: u32,
}

/// Everything before the file data, rendered; then the files in on-disc order.
struct Image<'a> {
    metadata: Vec<u8>,
    files: Vec<Entry<'a>>,
}

/// Checks the inputs and renders the metadata sectors. Pure: no I/O.
fn plan<'a>(files: &[(&'a str, &'a [u8])], volume_id: &str) -> Result<Image<'a>, ContainerError> {
    check_volume_id(volume_id)?;
    let total: u64 = files.iter().map(|(_, data)| data.len() as u64).sum();
    if total > MAX_SEED_BYTES {
        return Err(ContainerError::invalid(
            "seed content",
            format!("{total} bytes"),
            format!("a seed holds at most {MAX_SEED_BYTES} bytes"),
        ));
    }
    if files.len() > MAX_SEED_FILES {
        return Err(ContainerError::invalid(
            "seed content",
            format!("{} files", files.len()),
            format!("a seed holds at most {MAX_SEED_FILES} files"),
        ));
    }
    let mut entries = Vec::with_capacity(files.len());
    for &(name, data) in files {
        check_file_name(name)?;
        let level1 = level1_identifier(name);
        if let Some(other) = entries
            .iter()
            .find(|e: &&Entry| e.name == name || e.level1 == level1)
        {
            return Err(ContainerError::invalid(
                "seed file name",
                name,
                format!("collides with {:?} (ISO 9660 name {})", other.name, level1),
            ));
        }
        entries.push(Entry {
            name,
            level1,
            data,
            extent: 0,
        });
    }
    // Directory records must be sorted by identifier (ECMA-119 9.3); names are ASCII, so the
    // Joliet order (UCS-2 code units) is the byte order of the real names.
    entries.sort_by(|a, b| level1_sort_key(&a.level1).cmp(&level1_sort_key(&b.level1)));
    let mut joliet_order: Vec<usize> = (0..entries.len()).collect();
    joliet_order.sort_by_key(|&i| entries.get(i).map(|e| e.name));

    // Record sizes do not depend on extents, so directory sizes can be known before placing.
    let primary_sectors = directory_sectors(&primary_records(&entries, 0, 0, 0)?);
    let joliet_sectors = directory_sectors(&joliet_records(&entries, &joliet_order, 0, 0)?);
    let joliet_root = FIRST_DIRECTORY_SECTOR + primary_sectors;
    let continuation = joliet_root + joliet_sectors;
    let mut next = continuation + 1;
    for entry in &mut entries {
        entry.extent = next;
        next += sectors_for(entry.data.len());
    }
    let volume_sectors = next;

    let primary_dir = pack_directory(&primary_records(
        &entries,
        FIRST_DIRECTORY_SECTOR,
        primary_sectors,
        continuation,
    )?);
    let joliet_dir = pack_directory(&joliet_records(
        &entries,
        &joliet_order,
        joliet_root,
        joliet_sectors,
    )?);

    let mut metadata = vec![0u8; FIRST_DESCRIPTOR_SECTOR as usize * SECTOR];
    let descriptor = |kind, root_extent, root_sectors, l_path, m_path| {
        volume_descriptor(&VolumeDescriptor {
            kind,
            volume_id,
            volume_sectors,
            root: directory_record(
                &[0],
                root_extent,
                root_sectors * SECTOR as u32,
                FLAG_DIRECTORY,
                &SEED_TIME,
                &[],
            )?,
            l_path,
            m_path,
        })
    };
    metadata.extend(descriptor(
        Namespace::Primary,
        FIRST_DIRECTORY_SECTOR,
        primary_sectors,
        PRIMARY_L_PATH_SECTOR,
        PRIMARY_M_PATH_SECTOR,
    )?);
    metadata.extend(descriptor(
        Namespace::Joliet,
        joliet_root,
        joliet_sectors,
        JOLIET_L_PATH_SECTOR,
        JOLIET_M_PATH_SECTOR,
    )?);
    metadata.extend(sector(&terminator()));
    metadata.extend(sector(&path_table(FIRST_DIRECTORY_SECTOR, Endian::Little)));
    metadata.extend(sector(&path_table(FIRST_DIRECTORY_SECTOR, Endian::Big)));
    metadata.extend(sector(&path_table(joliet_root, Endian::Little)));
    metadata.extend(sector(&path_table(joliet_root, Endian::Big)));
    metadata.extend(primary_dir);
    metadata.extend(joliet_dir);
    metadata.extend(sector(&er_entry()));
    Ok(Image {
        metadata,
        files: entries,
    })
}

fn check_volume_id(volume_id: &str) -> Result<(), ContainerError> {
    let valid_char = |c: char| c.is_ascii_alphanumeric() || c == '_';
    if volume_id.is_empty()
        || volume_id.len() > MAX_VOLUME_ID_LEN
        || !volume_id.chars().all(valid_char)
    {
        return Err(ContainerError::invalid(
            "volume id",
            volume_id,
            format!("must be 1 to {MAX_VOLUME_ID_LEN} characters among A-Z, a-z, 0-9 and _"),
        ));
    }
    Ok(())
}

fn check_file_name(name: &str) -> Result<(), ContainerError> {
    let valid_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    if name.is_empty()
        || name.len() > MAX_NAME_LEN
        || name == "."
        || name == ".."
        || !name.chars().all(valid_char)
    {
        return Err(ContainerError::invalid(
            "seed file name",
            name,
            format!(
                "must be 1 to {MAX_NAME_LEN} characters among A-Z, a-z, 0-9, '.', '_' and '-', \
                 in the root directory"
            ),
        ));
    }
    Ok(())
}

/// Maps a portable file name to an ISO 9660 level 1 identifier: upper case, `_` for anything
/// that is not a d-character, 8.3, version `;1`. `network-config` becomes `NETWORK_.;1`.
fn level1_identifier(name: &str) -> String {
    let (stem, extension) = match name.rsplit_once('.') {
        Some((stem, extension)) if !stem.is_empty() => (stem, extension),
        _ => (name, ""),
    };
    let d_chars = |part: &str, max: usize| -> String {
        part.chars()
            .take(max)
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_uppercase()
                } else {
                    '_'
                }
            })
            .collect()
    };
    format!("{}.{};1", d_chars(stem, 8), d_chars(extension, 3))
}

/// ECMA-119 9.3 orders by name then extension, each padded with spaces; as every d-character
/// sorts after a space, comparing (name, extension) pairs as strings is the same order.
fn level1_sort_key(identifier: &str) -> (&str, &str) {
    let without_version = identifier.strip_suffix(";1").unwrap_or(identifier);
    without_version
        .split_once('.')
        .unwrap_or((without_version, ""))
}

fn sectors_for(len: usize) -> u32 {
    // Bounded by MAX_SEED_BYTES, so the sector count fits in u32.
    len.div_ceil(SECTOR) as u32
}

fn padding(len: usize) -> usize {
    (SECTOR - len % SECTOR) % SECTOR
}

/// Pads `bytes` (at most a sector) to a whole sector.
fn sector(bytes: &[u8]) -> Vec<u8> {
    let mut out = bytes.to_vec();
    out.resize(SECTOR, 0);
    out
}

/// A 32-bit value recorded both little- and big-endian (ECMA-119 7.3.3).
fn both_u32(value: u32) -> [u8; 8] {
    let mut out = [0; 8];
    out[..4].copy_from_slice(&value.to_le_bytes());
    out[4..].copy_from_slice(&value.to_be_bytes());
    out
}

/// A 16-bit value recorded both little- and big-endian (ECMA-119 7.2.3).
fn both_u16(value: u16) -> [u8; 4] {
    let mut out = [0; 4];
    out[..2].copy_from_slice(&value.to_le_bytes());
    out[2..].copy_from_slice(&value.to_be_bytes());
    out
}

/// The 7-byte date of a directory record (ECMA-119 9.1.5): years since 1900, month, day,
/// hour, minute, second, offset from GMT in 15-minute steps.
fn record_date(time: &IsoTime) -> [u8; 7] {
    [
        time.year.saturating_sub(1900).min(255) as u8,
        time.month,
        time.day,
        time.hour,
        time.minute,
        time.second,
        0,
    ]
}

/// The 17-byte date of a volume descriptor (ECMA-119 8.4.26.1): 16 ASCII digits
/// `YYYYMMDDHHMMSScc` and the GMT offset in 15-minute steps. `None` is "not specified": all
/// digits zero.
fn volume_date(time: Option<&IsoTime>) -> [u8; 17] {
    let digits = match time {
        Some(t) => format!(
            "{:04}{:02}{:02}{:02}{:02}{:02}00",
            t.year.min(9999),
            t.month,
            t.day,
            t.hour,
            t.minute,
            t.second
        ),
        None => "0".repeat(16),
    };
    let mut out = [0; 17];
    for (slot, byte) in out.iter_mut().zip(digits.bytes()) {
        *slot = byte;
    }
    out
}

/// One directory record (ECMA-119 9.1), with `system_use` (SUSP entries) appended.
fn directory_record(
    identifier: &[u8],
    extent: u32,
    size: u32,
    flags: u8,
    time: &IsoTime,
    system_use: &[u8],
) -> Result<Vec<u8>, ContainerError> {
    let too_long = || {
        ContainerError::invalid(
            "directory record identifier",
            String::from_utf8_lossy(identifier),
            "does not fit in a 255-byte directory record",
        )
    };
    let identifier_len = u8::try_from(identifier.len()).map_err(|_| too_long())?;
    // The identifier is followed by a pad byte when that makes the record length even.
    let pad = usize::from(identifier.len().is_multiple_of(2));
    let record_len =
        u8::try_from(33 + identifier.len() + pad + system_use.len()).map_err(|_| too_long())?;
    let mut record = Vec::with_capacity(usize::from(record_len));
    record.push(record_len);
    record.push(0); // extended attribute record length
    record.extend(both_u32(extent));
    record.extend(both_u32(size));
    record.extend(record_date(time));
    record.push(flags);
    record.push(0); // file unit size: not interleaved
    record.push(0); // interleave gap size
    record.extend(both_u16(1)); // volume sequence number
    record.push(identifier_len);
    record.extend(identifier);
    record.extend(std::iter::repeat_n(0, pad));
    record.extend(system_use);
    Ok(record)
}

/// Sectors taken by a directory: records may not straddle a sector boundary (ECMA-119 6.8.1.1).
fn directory_sectors(records: &[Vec<u8>]) -> u32 {
    sectors_for(pack_directory(records).len())
}

fn pack_directory(records: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::new();
    for record in records {
        let used = out.len() % SECTOR;
        if used + record.len() > SECTOR {
            out.resize(out.len() + SECTOR - used, 0);
        }
        out.extend(record);
    }
    let len = out.len();
    out.resize(len + padding(len), 0);
    out
}

/// SUSP `SP` entry: present in the root's first record, it says SUSP is in use (SUSP 5.3).
fn sp_entry() -> [u8; 7] {
    // signature, length, version, check bytes BE EF, bytes skipped in each record
    [b'S', b'P', 7, 1, 0xBE, 0xEF, 0]
}

/// RRIP 1.09 `RR` entry: which Rock Ridge entries the record carries.
fn rr_entry(flags: u8) -> [u8; 5] {
    [b'R', b'R', 5, 1, flags]
}

/// RRIP `PX` entry: POSIX mode, link count, owner and group (root).
fn px_entry(mode: u32, links: u32) -> Vec<u8> {
    let mut out = vec![b'P', b'X', 36, 1];
    out.extend(both_u32(mode));
    out.extend(both_u32(links));
    out.extend(both_u32(0)); // uid
    out.extend(both_u32(0)); // gid
    out
}

/// RRIP `NM` entry: the real file name. Names are at most [`MAX_NAME_LEN`] bytes.
fn nm_entry(name: &str) -> Vec<u8> {
    let mut out = vec![b'N', b'M', (5 + name.len()).min(255) as u8, 1, 0];
    out.extend(name.as_bytes());
    out
}

/// SUSP `CE` entry: the rest of the system use area is at `length` bytes in `sector`.
fn ce_entry(sector: u32, length: u32) -> Vec<u8> {
    let mut out = vec![b'C', b'E', 28, 1];
    out.extend(both_u32(sector));
    out.extend(both_u32(0)); // offset in that sector
    out.extend(both_u32(length));
    out
}

/// SUSP `ER` entry announcing the Rock Ridge extension; too long for the root record, it lives
/// in the continuation area.
fn er_entry() -> Vec<u8> {
    let len = 8 + RRIP_ID.len() + RRIP_DESCRIPTOR.len() + RRIP_SOURCE.len();
    let mut out = vec![
        b'E',
        b'R',
        len as u8,
        1,
        RRIP_ID.len() as u8,
        RRIP_DESCRIPTOR.len() as u8,
        RRIP_SOURCE.len() as u8,
        1, // extension version
    ];
    out.extend(RRIP_ID);
    out.extend(RRIP_DESCRIPTOR);
    out.extend(RRIP_SOURCE);
    out
}

/// `.`, `..` and one record per file of the primary tree, with Rock Ridge entries.
fn primary_records(
    entries: &[Entry],
    root_extent: u32,
    root_sectors: u32,
    continuation: u32,
) -> Result<Vec<Vec<u8>>, ContainerError> {
    let root_size = root_sectors * SECTOR as u32;
    let mut dot_su = Vec::new();
    dot_su.extend(sp_entry());
    dot_su.extend(rr_entry(RR_PX));
    dot_su.extend(px_entry(MODE_DIRECTORY, 2));
    dot_su.extend(ce_entry(continuation, er_entry().len() as u32));
    let mut dotdot_su = Vec::new();
    dotdot_su.extend(rr_entry(RR_PX));
    dotdot_su.extend(px_entry(MODE_DIRECTORY, 2));
    let mut records = vec![
        directory_record(
            &[0],
            root_extent,
            root_size,
            FLAG_DIRECTORY,
            &SEED_TIME,
            &dot_su,
        )?,
        directory_record(
            &[1],
            root_extent,
            root_size,
            FLAG_DIRECTORY,
            &SEED_TIME,
            &dotdot_su,
        )?,
    ];
    for entry in entries {
        let mut su = Vec::new();
        su.extend(rr_entry(RR_PX | RR_NM));
        su.extend(nm_entry(entry.name));
        su.extend(px_entry(MODE_FILE, 1));
        records.push(directory_record(
            entry.level1.as_bytes(),
            entry.extent,
            entry.data.len() as u32,
            0,
            &SEED_TIME,
            &su,
        )?);
    }
    Ok(records)
}

/// `.`, `..` and one record per file of the Joliet tree, names in UCS-2 big-endian.
fn joliet_records(
    entries: &[Entry],
    order: &[usize],
    root_extent: u32,
    root_sectors: u32,
) -> Result<Vec<Vec<u8>>, ContainerError> {
    let root_size = root_sectors * SECTOR as u32;
    let mut records = vec![
        directory_record(
            &[0],
            root_extent,
            root_size,
            FLAG_DIRECTORY,
            &SEED_TIME,
            &[],
        )?,
        directory_record(
            &[1],
            root_extent,
            root_size,
            FLAG_DIRECTORY,
            &SEED_TIME,
            &[],
        )?,
    ];
    for entry in order.iter().filter_map(|&i| entries.get(i)) {
        records.push(directory_record(
            &ucs2(entry.name),
            entry.extent,
            entry.data.len() as u32,
            0,
            &SEED_TIME,
            &[],
        )?);
    }
    Ok(records)
}

fn ucs2(text: &str) -> Vec<u8> {
    text.encode_utf16().flat_map(u16::to_be_bytes).collect()
}

#[derive(Clone, Copy)]
enum Endian {
    Little,
    Big,
}

/// A path table with the root as its only directory (ECMA-119 9.4).
fn path_table(root_extent: u32, endian: Endian) -> Vec<u8> {
    let (extent, parent) = match endian {
        Endian::Little => (root_extent.to_le_bytes(), 1u16.to_le_bytes()),
        Endian::Big => (root_extent.to_be_bytes(), 1u16.to_be_bytes()),
    };
    let mut out = vec![1, 0]; // identifier length, extended attribute length
    out.extend(extent);
    out.extend(parent); // the root is its own parent, directory number 1
    out.extend([0, 0]); // identifier (root) and pad to even length
    out
}

/// Size of [`path_table`]'s output, recorded in the volume descriptors.
const PATH_TABLE_SIZE: u32 = 10;

#[derive(Clone, Copy)]
enum Namespace {
    Primary,
    Joliet,
}

struct VolumeDescriptor<'a> {
    kind: Namespace,
    volume_id: &'a str,
    volume_sectors: u32,
    root: Vec<u8>,
    l_path: u32,
    m_path: u32,
}

/// Fills `field` with `text` padded with spaces: ASCII in the primary descriptor, UCS-2
/// big-endian in Joliet's (an odd last byte stays zero).
fn put_text(field: &mut [u8], text: &str, kind: Namespace) {
    let encoded: Vec<u8> = match kind {
        Namespace::Primary => text
            .bytes()
            .chain(std::iter::repeat(b' '))
            .take(field.len())
            .collect(),
        Namespace::Joliet => text
            .encode_utf16()
            .chain(std::iter::repeat(u16::from(b' ')))
            .flat_map(u16::to_be_bytes)
            .take(field.len() / 2 * 2)
            .collect(),
    };
    for (slot, byte) in field.iter_mut().zip(encoded) {
        *slot = byte;
    }
}

/// A primary or Joliet supplementary volume descriptor (ECMA-119 8.4 and 8.5).
fn volume_descriptor(d: &VolumeDescriptor) -> Result<Vec<u8>, ContainerError> {
    let mut out = vec![0u8; SECTOR];
    let text = |out: &mut Vec<u8>, range: std::ops::Range<usize>, value: &str| {
        if let Some(field) = out.get_mut(range) {
            put_text(field, value, d.kind);
        }
    };
    let bytes = |out: &mut Vec<u8>, at: usize, value: &[u8]| {
        if let Some(field) = out.get_mut(at..at + value.len()) {
            field.copy_from_slice(value);
        }
    };
    bytes(
        &mut out,
        0,
        &[match d.kind {
            Namespace::Primary => TYPE_PRIMARY,
            Namespace::Joliet => TYPE_SUPPLEMENTARY,
        }],
    );
    bytes(&mut out, 1, STANDARD_ID);
    bytes(&mut out, 6, &[1]); // descriptor version
    text(&mut out, 8..40, SYSTEM_ID);
    text(&mut out, 40..72, d.volume_id);
    bytes(&mut out, 80, &both_u32(d.volume_sectors));
    if let Namespace::Joliet = d.kind {
        bytes(&mut out, 88, JOLIET_ESCAPE);
    }
    bytes(&mut out, 120, &both_u16(1)); // volume set size
    bytes(&mut out, 124, &both_u16(1)); // volume sequence number
    bytes(&mut out, 128, &both_u16(SECTOR as u16)); // logical block size
    bytes(&mut out, 132, &both_u32(PATH_TABLE_SIZE));
    bytes(&mut out, 140, &d.l_path.to_le_bytes()); // type L path table
    bytes(&mut out, 148, &d.m_path.to_be_bytes()); // type M path table
    if d.root.len() != 34 {
        return Err(ContainerError::invalid(
            "root directory record",
            format!("{} bytes", d.root.len()),
            "must be 34 bytes",
        ));
    }
    bytes(&mut out, 156, &d.root);
    text(&mut out, 190..318, ""); // volume set identifier
    text(&mut out, 318..446, ""); // publisher
    text(&mut out, 446..574, ""); // data preparer
    text(&mut out, 574..702, APPLICATION_ID);
    text(&mut out, 702..739, ""); // copyright file
    text(&mut out, 739..776, ""); // abstract file
    text(&mut out, 776..813, ""); // bibliographic file
    bytes(&mut out, 813, &volume_date(Some(&SEED_TIME))); // creation
    bytes(&mut out, 830, &volume_date(Some(&SEED_TIME))); // modification
    bytes(&mut out, 847, &volume_date(None)); // expiration
    bytes(&mut out, 864, &volume_date(Some(&SEED_TIME))); // effective
    bytes(&mut out, 881, &[1]); // file structure version
    Ok(out)
}

/// The volume descriptor set terminator (ECMA-119 8.3).
fn terminator() -> Vec<u8> {
    let mut out = vec![TYPE_TERMINATOR];
    out.extend(STANDARD_ID);
    out.push(1);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_tools::oracle;

    #[test]
    fn directory_record_encodes_every_field() {
        let record = directory_record(b"A.;1", 0x1c, 0x800, 0, &SEED_TIME, &[]).unwrap();
        #[rustfmt::skip]
        let expected: &[u8] = &[
            38,                                             // record length: 33 + 4 + 1 pad
            0,                                              // extended attribute length
            0x1c, 0, 0, 0, 0, 0, 0, 0x1c,                   // extent, LE then BE
            0, 0x08, 0, 0, 0, 0, 0x08, 0,                   // data length 2048, LE then BE
            100, 1, 1, 0, 0, 0, 0,                          // 2000-01-01 00:00:00 GMT
            0,                                              // flags: plain file
            0,                                              // file unit size
            0,                                              // interleave gap
            1, 0, 0, 1,                                     // volume sequence number 1
            4,                                              // identifier length
            b'A', b'.', b';', b'1',                         // identifier
            0,                                              // pad: identifier length is even
        ];
        assert_eq!(record, expected);
    }

    #[test]
    fn odd_identifier_has_no_pad_and_system_use_follows() {
        let record = directory_record(&[0], 24, 2048, FLAG_DIRECTORY, &SEED_TIME, b"SP").unwrap();
        assert_eq!(record.len(), 33 + 1 + 2);
        assert_eq!(record[0], 36);
        assert_eq!(record[25], FLAG_DIRECTORY);
        assert_eq!(&record[33..], &[0, b'S', b'P']);
    }

    #[test]
    fn oversized_record_is_refused() {
        let name = [b'A'; 200];
        assert!(directory_record(&name, 0, 0, 0, &SEED_TIME, &[0; 40]).is_err());
    }

    #[test]
    fn rock_ridge_entries_encode_as_susp() {
        #[rustfmt::skip]
        let nm: &[u8] = &[
            b'N', b'M',     // signature
            14,             // entry length: 5 + name
            1,              // version
            0,              // flags: the name is complete
            b'u', b's', b'e', b'r', b'-', b'd', b'a', b't', b'a',
        ];
        assert_eq!(nm_entry("user-data"), nm);
        #[rustfmt::skip]
        let px: &[u8] = &[
            b'P', b'X', 36, 1,                  // signature, length, version
            0x24, 0x81, 0, 0, 0, 0, 0x81, 0x24, // mode 0o100444, LE then BE
            1, 0, 0, 0, 0, 0, 0, 1,             // links
            0, 0, 0, 0, 0, 0, 0, 0,             // uid
            0, 0, 0, 0, 0, 0, 0, 0,             // gid
        ];
        assert_eq!(px_entry(MODE_FILE, 1), px);
        #[rustfmt::skip]
        let ce: &[u8] = &[
            b'C', b'E', 28, 1,                  // signature, length, version
            0x1a, 0, 0, 0, 0, 0, 0, 0x1a,       // sector of the continuation area
            0, 0, 0, 0, 0, 0, 0, 0,             // offset in it
            237, 0, 0, 0, 0, 0, 0, 237,         // length: the ER entry
        ];
        assert_eq!(ce_entry(0x1a, 237), ce);
        let er = er_entry();
        assert_eq!(er.len(), 237);
        assert_eq!(&er[..8], &[b'E', b'R', 237, 1, 10, 84, 135, 1]);
        assert_eq!(&er[8..18], b"RRIP_1991A");
    }

    #[test]
    fn dates_encode_as_ecma_119() {
        let t = IsoTime {
            year: 2024,
            month: 2,
            day: 29,
            hour: 13,
            minute: 5,
            second: 9,
        };
        assert_eq!(record_date(&t), [124, 2, 29, 13, 5, 9, 0]);
        assert_eq!(&volume_date(Some(&t)), b"2024022913050900\0");
        assert_eq!(&volume_date(None), b"0000000000000000\0");
    }

    #[test]
    fn both_endian_values() {
        assert_eq!(both_u32(0x0102_0304), [4, 3, 2, 1, 1, 2, 3, 4]);
        assert_eq!(both_u16(0x0800), [0, 8, 8, 0]);
    }

    #[test]
    fn level1_names_are_upper_case_8_3() {
        assert_eq!(level1_identifier("user-data"), "USER_DAT.;1");
        assert_eq!(level1_identifier("network-config"), "NETWORK_.;1");
        assert_eq!(level1_identifier("meta.json"), "META.JSO;1");
        assert_eq!(level1_identifier(".hidden"), "_HIDDEN.;1");
    }

    #[test]
    fn level1_order_puts_shorter_extension_first() {
        let mut ids = vec!["A.B0;1", "A.B;1", "A0.;1", "A.;1"];
        ids.sort_by(|a, b| level1_sort_key(a).cmp(&level1_sort_key(b)));
        assert_eq!(ids, ["A.;1", "A.B;1", "A.B0;1", "A0.;1"]);
    }

    #[test]
    fn path_table_root_entry() {
        assert_eq!(
            path_table(0x18, Endian::Little),
            [1, 0, 0x18, 0, 0, 0, 1, 0, 0, 0]
        );
        assert_eq!(
            path_table(0x18, Endian::Big),
            [1, 0, 0, 0, 0, 0x18, 0, 1, 0, 0]
        );
        assert_eq!(
            path_table(0, Endian::Little).len(),
            PATH_TABLE_SIZE as usize
        );
    }

    #[test]
    fn records_never_straddle_a_sector() {
        let records = vec![vec![1u8; 2000], vec![2u8; 100]];
        let packed = pack_directory(&records);
        assert_eq!(packed.len(), 2 * SECTOR);
        assert_eq!(packed[2000], 0);
        assert_eq!(packed[SECTOR], 2);
    }

    #[test]
    fn colliding_level1_names_are_refused() {
        let err = plan(&[("user-data", b"a"), ("user-data2", b"b")], "cidata")
            .err()
            .unwrap();
        assert_eq!(err.kind(), crate::ErrorKind::Usage);
    }

    #[test]
    fn bad_names_and_volume_ids_are_refused() {
        assert!(plan(&[("sub/dir", b"a")], "cidata").is_err());
        assert!(plan(&[("..", b"a")], "cidata").is_err());
        assert!(plan(&[("", b"a")], "cidata").is_err());
        assert!(plan(&[("a", b"a")], "ci-data").is_err());
        assert!(plan(&[("a", b"a")], "").is_err());
        assert!(plan(&[("a", b"a")], "ABCDEFGHIJKLMNOPQ").is_err());
        assert!(plan(&[("a", b"a")], "cidata").is_ok());
    }

    #[test]
    fn oversized_seed_is_refused() {
        let big = vec![0u8; MAX_SEED_BYTES as usize / 2 + 1];
        assert!(plan(&[("a", &big), ("b", &big)], "cidata").is_err());
        assert!(plan(&[("a", &big)], "cidata").is_ok());
    }

    #[test]
    fn too_many_files_are_refused() {
        let names: Vec<String> = (0..=MAX_SEED_FILES).map(|i| format!("f{i}")).collect();
        let files: Vec<(&str, &[u8])> = names.iter().map(|n| (n.as_str(), &b""[..])).collect();
        assert!(plan(&files, "cidata").is_err());
        assert!(plan(&files[..MAX_SEED_FILES], "cidata").is_ok());
    }

    #[test]
    fn output_is_deterministic() {
        let files: &[(&str, &[u8])] = &[("user-data", b"#cloud-config\n"), ("meta-data", b"")];
        let a = plan(files, "cidata").unwrap().metadata;
        let b = plan(files, "cidata").unwrap().metadata;
        assert_eq!(a, b);
    }

    #[test]
    fn directories_spanning_sectors_list_every_file() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("many.iso");
        // 40 records of ~150 bytes need three sectors in the primary tree.
        let names: Vec<String> = (0..40)
            .map(|i| format!("{i:02}-{}", "x".repeat(60)))
            .collect();
        let files: Vec<(&str, &[u8])> = names.iter().map(|n| (n.as_str(), n.as_bytes())).collect();
        write_seed(&out, &files, "cidata").unwrap();
        let path = out.to_str().unwrap();
        let Some(rock) = isoinfo(&["-R", "-l", "-i", path]) else {
            return;
        };
        assert_eq!(listed_names(&rock), names);
        let joliet = isoinfo(&["-J", "-l", "-i", path]).unwrap();
        assert_eq!(listed_names(&joliet), names);
        let last = names.last().unwrap();
        let data = isoinfo(&["-R", "-x", &format!("/{last}"), "-i", path]).unwrap();
        assert_eq!(data, last.as_bytes());
    }

    /// isoinfo's (genisoimage's) standard output for `args`.
    fn isoinfo(args: &[&str]) -> Option<Vec<u8>> {
        Some(oracle("isoinfo")?.run(args).stdout)
    }

    fn listed_names(listing: &[u8]) -> Vec<String> {
        String::from_utf8_lossy(listing)
            .lines()
            .filter(|line| line.starts_with('-'))
            .filter_map(|line| line.split_whitespace().last().map(str::to_owned))
            .collect()
    }

    #[test]
    fn isoinfo_reads_label_names_and_content() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("seed.iso");
        let user_data = b"#cloud-config\npassword: ubuntu\nchpasswd: { expire: False }\n";
        // Larger than a sector, to exercise multi-sector extents.
        let network_config: Vec<u8> = (0..5000u32).map(|i| (i % 251) as u8).collect();
        let files: &[(&str, &[u8])] = &[
            ("user-data", user_data),
            ("meta-data", b"instance-id: iid-local01\n"),
            ("network-config", &network_config),
            ("vendor-data", b""),
        ];
        write_seed(&out, files, "cidata").unwrap();
        let path = out.to_str().unwrap();

        let Some(info) = isoinfo(&["-d", "-i", path]) else {
            return;
        };
        let info = String::from_utf8_lossy(&info);
        assert!(info.contains("Volume id: cidata"), "{info}");
        assert!(info.contains("Joliet"), "{info}");
        assert!(
            info.contains("Rock Ridge signatures version 1 found"),
            "{info}"
        );
        assert!(info.contains("Logical block size is: 2048"), "{info}");
        let size = std::fs::metadata(&out).unwrap().len();
        assert!(
            info.contains(&format!("Volume size is: {}", size / 2048)),
            "{info}"
        );

        let expected = ["meta-data", "network-config", "user-data", "vendor-data"];
        let rock = isoinfo(&["-R", "-l", "-i", path]).unwrap();
        assert_eq!(listed_names(&rock), expected);
        assert!(String::from_utf8_lossy(&rock).contains("-r--r--r--"));
        let joliet = isoinfo(&["-J", "-l", "-i", path]).unwrap();
        assert_eq!(listed_names(&joliet), expected);
        let plain = isoinfo(&["-l", "-i", path]).unwrap();
        assert_eq!(
            listed_names(&plain),
            ["META_DAT.;1", "NETWORK_.;1", "USER_DAT.;1", "VENDOR_D.;1"]
        );

        // cloud-init finds the seed through blkid's label, so ask blkid too.
        if let Some(blkid) = oracle("blkid") {
            let output = blkid.run(["-o", "export", path]);
            let text = String::from_utf8_lossy(&output.stdout);
            assert!(text.contains("LABEL=cidata"), "{text}");
            assert!(text.contains("TYPE=iso9660"), "{text}");
        }

        // libarchive is a third, sequential reader with its own Rock Ridge parser.
        if let Some(bsdtar) = oracle("bsdtar") {
            let output = bsdtar.run(["-tf", path]);
            let mut names: Vec<String> = String::from_utf8_lossy(&output.stdout)
                .lines()
                .filter(|l| *l != ".")
                .map(str::to_owned)
                .collect();
            names.sort();
            assert_eq!(names, expected);
            let user = bsdtar.run(["-xOf", path, "user-data"]);
            assert_eq!(user.stdout, user_data);
        }

        for &(name, data) in files {
            let rr = isoinfo(&["-R", "-x", &format!("/{name}"), "-i", path]).unwrap();
            assert_eq!(rr, data, "{name} via Rock Ridge");
            let j = isoinfo(&["-J", "-x", &format!("/{name}"), "-i", path]).unwrap();
            assert_eq!(j, data, "{name} via Joliet");
        }
    }
}

//! The log: a circular journal of metadata writes, and whether it must be replayed.
//!
//! Writers put metadata updates (BAT and metadata sectors) in the log first, then in place. A
//! header whose log GUID is non-zero says the log may hold entries not yet applied; a valid
//! entry carrying that GUID (signature `loge`, CRC-32C over the whole entry) means the file is
//! inconsistent until the log is replayed. cloudimg never replays (that writes to the input):
//! like `qemu-img` without `-r`, it refuses such a file and says why. Writers that close cleanly
//! leave the GUID zero, and then the log is ignored whatever it holds.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use super::error::VhdxError;
use super::header::{guid_at, Header, CHECKSUM_AT, HEADER_SECTION_SIZE, MIB};
use super::region::Region;
use crate::formats::fields::{le32, le64};
use crate::formats::FormatError;

/// Log entries start on 4 KiB boundaries and are whole 4 KiB sectors long.
pub const SECTOR: u64 = 4096;
/// `loge`.
const ENTRY_SIGNATURE: &[u8; 4] = b"loge";
/// Bytes of an entry header; descriptors follow, 32 bytes each.
const ENTRY_HEADER_SIZE: u64 = 64;
const DESCRIPTOR_SIZE: u64 = 32;
/// Most bytes checksummed while looking for a valid entry, so that a hostile log of many
/// near-valid long entries cannot make opening take quadratic time.
const VERIFY_BUDGET: u64 = 256 << 20;
/// Bytes checksummed per read.
const CHUNK: usize = 64 << 10;

/// A log entry header that claims to belong to the current log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EntryHeader {
    pub entry_length: u64,
    pub sequence_number: u64,
}

impl EntryHeader {
    /// The header in the first sector of a candidate entry, if it has the signature, the log's
    /// GUID and a plausible length (whole sectors, within the log, room for its descriptors).
    pub fn parse(sector: &[u8], log_guid: &[u8; 16], log_length: u64) -> Option<EntryHeader> {
        if sector.get(..4) != Some(ENTRY_SIGNATURE.as_slice()) || sector.len() < 64 {
            return None;
        }
        let entry_length = u64::from(le32(sector, 8));
        let descriptors = u64::from(le32(sector, 24));
        let plausible = entry_length >= SECTOR
            && entry_length.is_multiple_of(SECTOR)
            && entry_length <= log_length
            && ENTRY_HEADER_SIZE + descriptors * DESCRIPTOR_SIZE <= entry_length
            && &guid_at(sector, 32) == log_guid;
        plausible.then(|| EntryHeader {
            entry_length,
            sequence_number: le64(sector, 16),
        })
    }
}

/// The log's place in the file, checked: past the header section, whole MiB, inside the file.
pub fn region(header: &Header, file_len: u64) -> Result<Option<Region>, VhdxError> {
    if header.log_length == 0 {
        return Ok(None);
    }
    let region = Region {
        offset: header.log_offset,
        length: header.log_length.into(),
    };
    let fail = |field, value, reason| VhdxError::Field {
        offset: super::header::HEADER1_OFFSET,
        field,
        value,
        reason,
    };
    if region.offset < HEADER_SECTION_SIZE || !region.offset.is_multiple_of(MIB) {
        return Err(fail(
            "log offset",
            region.offset,
            "not a multiple of 1 MiB past the header section",
        ));
    }
    if !region.length.is_multiple_of(MIB) {
        return Err(fail("log length", region.length, "not a multiple of 1 MiB"));
    }
    if header.log_in_use()
        && region
            .offset
            .checked_add(region.length)
            .is_none_or(|e| e > file_len)
    {
        return Err(fail(
            "log offset",
            region.offset,
            "the log lies past the end of the file",
        ));
    }
    Ok(Some(region))
}

/// Fails with [`VhdxError::LogNeedsReplay`] when the log holds a valid entry of the current
/// log, i.e. writes that may not have reached their place.
pub fn refuse_if_replay_needed(
    path: &Path,
    file: &File,
    header: &Header,
    log: Option<Region>,
) -> Result<(), FormatError> {
    let Some(log) = log.filter(|_| header.log_in_use()) else {
        return Ok(());
    };
    let mut sector = [0u8; SECTOR as usize];
    let mut budget = VERIFY_BUDGET;
    let mut position = 0;
    while position < log.length {
        let at = log.offset + position;
        file.read_exact_at(&mut sector, at)
            .map_err(|source| FormatError::io(path, source))?;
        if let Some(entry) = EntryHeader::parse(&sector, &header.log_guid, log.length) {
            if entry.entry_length > budget {
                return Err(VhdxError::Unsupported {
                    what: "the log holds too many damaged entries to tell whether it needs \
                           replaying"
                        .into(),
                }
                .at(path));
            }
            budget -= entry.entry_length;
            if entry_is_valid(path, file, log, position, &entry)? {
                return Err(VhdxError::LogNeedsReplay {
                    offset: at,
                    sequence: entry.sequence_number,
                }
                .at(path));
            }
        }
        position += SECTOR;
    }
    Ok(())
}

/// Whether the CRC-32C over the entry (read around the end of the circular log) is right.
fn entry_is_valid(
    path: &Path,
    file: &File,
    log: Region,
    start: u64,
    entry: &EntryHeader,
) -> Result<bool, FormatError> {
    let mut buf = vec![0u8; CHUNK];
    let mut crc = 0u32;
    let mut stored = 0u32;
    let mut done = 0u64;
    while done < entry.entry_length {
        let within = (start + done) % log.length;
        // Stop at the end of the log (then wrap) and at the end of the entry.
        let n = (CHUNK as u64)
            .min(entry.entry_length - done)
            .min(log.length - within) as usize;
        let piece = &mut buf[..n];
        file.read_exact_at(piece, log.offset + within)
            .map_err(|source| FormatError::io(path, source))?;
        if done == 0 {
            stored = le32(piece, CHECKSUM_AT);
            piece[CHECKSUM_AT..CHECKSUM_AT + 4].fill(0);
        }
        crc = crc32c::crc32c_append(crc, piece);
        done += n as u64;
    }
    Ok(crc == stored)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GUID: [u8; 16] = [0xfe; 16];

    /// An entry header as qemu writes one for a BAT update: 8 KiB (header sector and one data
    /// sector), sequence 3, one descriptor.
    fn entry_sector() -> Vec<u8> {
        let mut s = vec![0u8; SECTOR as usize];
        s[..4].copy_from_slice(b"loge");
        s[8..12].copy_from_slice(&0x2000u32.to_le_bytes()); // entry length
        s[12..16].copy_from_slice(&0x4000u32.to_le_bytes()); // tail
        s[16..24].copy_from_slice(&3u64.to_le_bytes()); // sequence number
        s[24..28].copy_from_slice(&1u32.to_le_bytes()); // descriptor count
        s[32..48].copy_from_slice(&GUID); // log GUID
        s[48..56].copy_from_slice(&(16u64 << 20).to_le_bytes()); // flushed file offset
        s[56..64].copy_from_slice(&(16u64 << 20).to_le_bytes()); // last file offset
        s
    }

    #[test]
    fn entry_of_the_current_log_is_recognised() {
        let entry = EntryHeader::parse(&entry_sector(), &GUID, 1 << 20).unwrap();
        assert_eq!(entry.entry_length, 0x2000);
        assert_eq!(entry.sequence_number, 3);
    }

    #[test]
    fn entries_of_another_log_or_implausible_ones_are_ignored() {
        assert!(EntryHeader::parse(&entry_sector(), &[0xfd; 16], 1 << 20).is_none());
        let mut bad = entry_sector();
        bad[0] = b'L';
        assert!(EntryHeader::parse(&bad, &GUID, 1 << 20).is_none());
        let mut long = entry_sector();
        long[8..12].copy_from_slice(&(2u32 << 20).to_le_bytes()); // longer than the log
        assert!(EntryHeader::parse(&long, &GUID, 1 << 20).is_none());
        let mut odd = entry_sector();
        odd[8] = 0x01; // not whole sectors
        assert!(EntryHeader::parse(&odd, &GUID, 1 << 20).is_none());
        let mut crowded = entry_sector();
        crowded[24..28].copy_from_slice(&1000u32.to_le_bytes()); // descriptors overflow
        assert!(EntryHeader::parse(&crowded, &GUID, 1 << 20).is_none());
    }

    #[test]
    fn log_region_must_be_aligned_and_inside_the_file() {
        let header = Header {
            sequence_number: 1,
            file_write_guid: [1; 16],
            data_write_guid: [2; 16],
            log_guid: GUID,
            log_version: 0,
            version: 1,
            log_length: 1 << 20,
            log_offset: 1 << 20,
        };
        assert!(region(&header, 8 << 20).unwrap().is_some());
        assert!(region(&header, (3 << 20) / 2).is_err());
        let misaligned = Header {
            log_offset: (1 << 20) + 4096,
            ..header.clone()
        };
        assert!(region(&misaligned, 8 << 20).is_err());
        let inside_headers = Header {
            log_offset: 0,
            ..header
        };
        assert!(region(&inside_headers, 8 << 20).is_err());
    }
}

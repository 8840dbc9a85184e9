//! Grain directory (GD) and grain tables (GT): arrays of little-endian u32 sector offsets.
//! A GT entry of 0 is an unallocated grain, 1 (with the zeroed-grain flag) a zero grain.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use super::header::{SparseHeader, SECTOR};
use super::FORMAT;
use crate::formats::FormatError;

/// Largest grain directory we hold in memory, in bytes (8 Mi tables, 4 TiB of 512-sector...
/// far beyond any real disk with 64 KiB grains: 2 TiB needs 256 KiB).
pub const MAX_GD_BYTES: u64 = 32 << 20;
/// Bytes in one grain table (512 entries).
pub const GT_BYTES: usize = 512 * 4;
/// Sectors in one grain table.
pub const GT_SECTORS: u64 = GT_BYTES as u64 / SECTOR;

/// Decodes little-endian u32 entries.
pub fn parse_table(bytes: &[u8]) -> Vec<u32> {
    bytes
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// Encodes entries as little-endian bytes.
pub fn table_bytes(entries: &[u32]) -> Vec<u8> {
    entries.iter().flat_map(|e| e.to_le_bytes()).collect()
}

/// Reads `count` u32 entries at `sector`, refusing tables that pass the end of the file.
pub fn read_table(
    path: &Path,
    file: &File,
    file_len: u64,
    sector: u64,
    count: u64,
    what: &str,
) -> Result<Vec<u32>, FormatError> {
    let bytes = count * 4;
    if bytes > MAX_GD_BYTES {
        return Err(FormatError::Unsupported {
            path: path.to_owned(),
            what: format!("{what} of {bytes} bytes (more than {MAX_GD_BYTES})"),
        });
    }
    let offset = sector
        .checked_mul(SECTOR)
        .filter(|o| o.checked_add(bytes).is_some_and(|end| end <= file_len));
    let Some(offset) = offset else {
        return Err(FormatError::malformed(
            path,
            FORMAT,
            sector.saturating_mul(SECTOR),
            format!("{what} at sector {sector:#x} passes the end of the file ({file_len:#x})"),
        ));
    };
    let mut buf = vec![0u8; bytes as usize];
    file.read_exact_at(&mut buf, offset)
        .map_err(|e| FormatError::io(path, e))?;
    Ok(parse_table(&buf))
}

/// Reads the grain directory a header points at (`gd_sector`), checking its size is sane.
pub fn read_gd(
    path: &Path,
    file: &File,
    file_len: u64,
    header: &SparseHeader,
    gd_sector: u64,
) -> Result<Vec<u32>, FormatError> {
    read_table(
        path,
        file,
        file_len,
        gd_sector,
        header.gt_count(),
        "grain directory",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_round_trips() {
        let bytes = [
            0x16, 0, 0, 0, // GT 0 at sector 0x16
            0x1a, 0, 0, 0, // GT 1 at sector 0x1a
            0, 0, 0, 0, // GT 2 unallocated
        ];
        let t = parse_table(&bytes);
        assert_eq!(t, vec![0x16, 0x1a, 0]);
        assert_eq!(table_bytes(&t), bytes);
    }

    #[test]
    fn table_past_eof_is_rejected() {
        let f = tempfile::tempfile().unwrap();
        f.set_len(4096).unwrap();
        let e = read_table(Path::new("x"), &f, 4096, 8, 1, "GT").unwrap_err();
        assert!(matches!(e, FormatError::Malformed { offset: 0x1000, .. }));
    }

    #[test]
    fn huge_table_is_refused_before_allocating() {
        let f = tempfile::tempfile().unwrap();
        let e = read_table(Path::new("x"), &f, 0, 1, 1 << 40, "GD").unwrap_err();
        assert!(matches!(e, FormatError::Unsupported { .. }));
    }
}

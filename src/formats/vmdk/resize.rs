//! Growing a monolithicSparse extent in place: new (empty) grain tables are appended at the
//! end of the file for the primary and redundant directories, which must already have room for
//! their entries (a directory is never moved). Streams and shrinking are refused.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use super::grain::{GT_BYTES, GT_SECTORS};
use super::header::SECTOR;
use super::reader::SparseExtent;
use crate::formats::FormatError;

/// Rewrites the extent line's sector count and the cylinder count for `capacity` sectors.
pub fn resize_descriptor(text: &str, capacity: u64) -> String {
    let heads = text
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once('=')?;
            (k.trim() == "ddb.geometry.heads")
                .then(|| v.trim().trim_matches('"').parse::<u64>().ok())?
        })
        .filter(|&h| h > 0)
        .unwrap_or(16);
    let mut out = String::with_capacity(text.len() + 8);
    for line in text.split_inclusive('\n') {
        let mut words = line.splitn(3, ' ');
        let first = words.next().unwrap_or_default();
        if matches!(first, "RW" | "RDONLY" | "NOACCESS") {
            if let (Some(_), Some(rest)) = (words.next(), words.next()) {
                out.push_str(&format!("{first} {capacity} {rest}"));
                continue;
            }
        }
        if line.trim_start().starts_with("ddb.geometry.cylinders") {
            let nl = if line.ends_with('\n') { "\n" } else { "" };
            out.push_str(&format!(
                "ddb.geometry.cylinders = \"{}\"{nl}",
                capacity * SECTOR / (63 * heads * SECTOR)
            ));
            continue;
        }
        out.push_str(line);
    }
    out
}

pub fn resize_sparse(
    path: &Path,
    file: &File,
    new_size: u64,
    shrink: bool,
) -> Result<(), FormatError> {
    let extent = SparseExtent::open(path, file)?;
    let mut h = extent.header;
    let unsupported = |what: String| FormatError::Unsupported {
        path: path.to_owned(),
        what,
    };
    if h.compressed() || extent.footer {
        return Err(unsupported(
            "resizing a streamOptimized VMDK (compressed, write-once); convert it to another subformat first".into(),
        ));
    }
    let capacity = new_size.div_ceil(SECTOR);
    let current = h.capacity * SECTOR;
    if capacity < h.capacity {
        return Err(if shrink {
            unsupported("shrinking a VMDK".into())
        } else {
            FormatError::ShrinkRefused {
                path: path.to_owned(),
                current,
                requested: new_size,
            }
        });
    }
    if capacity == h.capacity {
        return Ok(());
    }
    let old_gts = h.gt_count();
    // Each directory owns whole sectors; its slack entries are the room to grow into.
    let room = (old_gts * 4).div_ceil(SECTOR) * (SECTOR / 4);
    let grown = SparseExtent {
        header: super::header::SparseHeader { capacity, ..h },
        ..extent
    };
    let new_gts = grown.header.gt_count();
    if new_gts > room {
        return Err(unsupported(format!(
            "growing to {} bytes needs {new_gts} grain tables; the grain directory has room for {room}",
            capacity * SECTOR
        )));
    }
    let mut descriptor_text = String::new();
    if h.descriptor_offset != 0 && h.descriptor_size != 0 {
        let mut buf = vec![0u8; (h.descriptor_size * SECTOR) as usize];
        file.read_exact_at(&mut buf, h.descriptor_offset * SECTOR)
            .map_err(|e| FormatError::io(path, e))?;
        let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
        let text = std::str::from_utf8(buf.get(..end).unwrap_or_default()).map_err(|_| {
            FormatError::malformed(
                path,
                super::FORMAT,
                h.descriptor_offset * SECTOR,
                "descriptor is not UTF-8",
            )
        })?;
        descriptor_text = resize_descriptor(text, capacity);
        if descriptor_text.len() as u64 > h.descriptor_size * SECTOR {
            return Err(unsupported(
                "the resized descriptor does not fit its sectors".into(),
            ));
        }
    }

    // Append the new tables, then point the directories at them, then publish the capacity.
    let mut end = grown.file_len.next_multiple_of(SECTOR);
    let mut directories = vec![h.gd_offset];
    if h.has_rgd() {
        directories.push(h.rgd_offset);
    }
    for gd in directories {
        for k in old_gts..new_gts {
            file.write_all_at(&[0u8; GT_BYTES], end)
                .map_err(|e| FormatError::io(path, e))?;
            let sector = u32::try_from(end / SECTOR)
                .map_err(|_| unsupported("file too large for 32-bit sectors".into()))?;
            file.write_all_at(&sector.to_le_bytes(), gd * SECTOR + k * 4)
                .map_err(|e| FormatError::io(path, e))?;
            end += GT_SECTORS * SECTOR;
        }
    }
    if !descriptor_text.is_empty() {
        let mut buf = descriptor_text.into_bytes();
        buf.resize((h.descriptor_size * SECTOR) as usize, 0);
        file.write_all_at(&buf, h.descriptor_offset * SECTOR)
            .map_err(|e| FormatError::io(path, e))?;
    }
    h.capacity = capacity;
    file.write_all_at(&h.to_bytes(), 0)
        .map_err(|e| FormatError::io(path, e))?;
    file.sync_all().map_err(|e| FormatError::io(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptor_sectors_and_cylinders_are_rewritten() {
        let text = "CID=1\nRW 143360 SPARSE \"a.vmdk\"\nddb.geometry.cylinders = \"142\"\nddb.geometry.heads = \"16\"\n";
        assert_eq!(
            resize_descriptor(text, 286720),
            "CID=1\nRW 286720 SPARSE \"a.vmdk\"\nddb.geometry.cylinders = \"284\"\nddb.geometry.heads = \"16\"\n"
        );
    }
}

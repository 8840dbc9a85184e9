//! `check` and `resize` of VDIs.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use super::header::{BLOCK_SIZE, MAX_BLOCKS, UNALLOCATED, ZERO};
use super::reader::{self, Layout};
use super::{too_large, MAX_DISK_SIZE};
use crate::formats::{CheckReport, FormatError};

/// qemu's checks (each allocated entry below `blocks_allocated` and used once, the count
/// matching the header) plus every block lying inside the file.
pub fn check(path: &Path, file: &File) -> Result<CheckReport, FormatError> {
    let layout = reader::load(path, file)?;
    let header = &layout.header;
    let mut report = CheckReport::default();
    // Which host blocks are used, by which guest block; bounded by blocks_in_image.
    let mut owner: Vec<Option<usize>> = vec![None; header.blocks_allocated as usize];
    let mut allocated = 0u64;
    for (index, &entry) in layout.bmap.iter().enumerate() {
        if entry >= ZERO {
            continue;
        }
        match owner.get_mut(entry as usize) {
            None => report.corruptions.push(format!(
                "block {index} maps to block {entry}, beyond the {} allocated",
                header.blocks_allocated
            )),
            Some(Some(first)) => report.corruptions.push(format!(
                "blocks {first} and {index} both map to block {entry}"
            )),
            Some(slot) => {
                *slot = Some(index);
                allocated += 1;
            }
        }
        if layout.host_offset(entry) + u64::from(BLOCK_SIZE) > layout.file_len {
            report.corruptions.push(format!(
                "block {index} (at {:#x}) lies past the end of the file",
                layout.host_offset(entry)
            ));
        }
    }
    if allocated != u64::from(header.blocks_allocated) {
        report.corruptions.push(format!(
            "header says {} blocks allocated, the block map uses {allocated}",
            header.blocks_allocated
        ));
    }
    report.allocated_clusters = Some(allocated);
    report.total_clusters = Some(u64::from(header.blocks_in_image));
    Ok(report)
}

/// Grows a VDI when its block map has room for the new blocks; a static VDI is extended
/// with preallocated blocks. Shrinking and moving data are refused.
pub fn resize(path: &Path, file: &File, requested: u64, shrink: bool) -> Result<(), FormatError> {
    let Layout {
        mut header, bmap, ..
    } = reader::load(path, file)?;
    if requested > MAX_DISK_SIZE {
        return Err(too_large(path, requested));
    }
    let new_size = requested.div_ceil(512) * 512;
    if new_size < header.disk_size {
        if !shrink {
            return Err(FormatError::ShrinkRefused {
                path: path.to_owned(),
                current: header.disk_size,
                requested,
            });
        }
        return Err(FormatError::Unsupported {
            path: path.to_owned(),
            what: "shrinking a VDI; convert it to a smaller image instead".into(),
        });
    }
    let old_blocks = header.blocks_in_image;
    let new_blocks = new_size.div_ceil(u64::from(BLOCK_SIZE));
    if new_blocks > header.bmap_capacity() || new_blocks > u64::from(MAX_BLOCKS) {
        return Err(FormatError::Unsupported {
            path: path.to_owned(),
            what: format!(
                "growing to {new_size} bytes needs {new_blocks} block map entries, the map has room for {}; the data would have to move, convert to a new image instead",
                header.bmap_capacity()
            ),
        });
    }
    // Checked against MAX_BLOCKS just above.
    let new_blocks = new_blocks as u32;
    let added = old_blocks..new_blocks.max(old_blocks);
    let entries: Vec<u32> = if header.is_static() {
        let identity = bmap.iter().zip(0u32..).all(|(e, i)| *e == i);
        if !identity || header.blocks_allocated != old_blocks {
            return Err(FormatError::Unsupported {
                path: path.to_owned(),
                what: "growing a static VDI whose blocks are not laid out in order".into(),
            });
        }
        header.blocks_allocated = new_blocks.max(old_blocks);
        added.collect()
    } else {
        added.map(|_| UNALLOCATED).collect()
    };
    header.disk_size = new_size;
    header.blocks_in_image = new_blocks.max(old_blocks);
    let bytes: Vec<u8> = entries.iter().flat_map(|e| e.to_le_bytes()).collect();
    let io = |source| FormatError::io(path, source);
    if header.is_static() {
        let end = u64::from(header.offset_data)
            + u64::from(header.blocks_in_image) * u64::from(BLOCK_SIZE);
        file.set_len(end).map_err(io)?;
    }
    file.write_all_at(
        &bytes,
        u64::from(header.offset_bmap) + u64::from(old_blocks) * 4,
    )
    .map_err(io)?;
    file.write_all_at(&header.encode(), 0).map_err(io)?;
    Ok(())
}

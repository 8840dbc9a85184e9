//! `check` and `resize` of VHDs.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use super::dynamic::{DynamicHeader, HEADER_SIZE, UNALLOCATED};
use super::footer::{self, DiskType, Footer, FOOTER_SIZE};
use super::geometry::{self, MAX_CHS, MAX_SECTORS};
use super::reader::{self, Layout};
use super::{too_large, AZURE_ALIGNMENT};
use crate::formats::{CheckReport, FormatError};

fn io(path: &Path) -> impl Fn(std::io::Error) -> FormatError + '_ {
    move |source| FormatError::io(path, source)
}

/// Checks footer and header checksums, the footer copy, and that BAT entries lie inside the
/// file without overlapping each other or the metadata.
pub fn check(path: &Path, file: &File) -> Result<CheckReport, FormatError> {
    let len = file.metadata().map_err(io(path))?.len();
    if len < FOOTER_SIZE as u64 {
        return Err(FormatError::malformed(
            path,
            "vhd",
            0,
            "file shorter than a footer",
        ));
    }
    let mut report = CheckReport::default();
    let footer_at = len - FOOTER_SIZE as u64;
    let mut tail = [0u8; FOOTER_SIZE];
    file.read_exact_at(&mut tail, footer_at).map_err(io(path))?;
    let mut head = [0u8; FOOTER_SIZE];
    file.read_exact_at(&mut head, 0).map_err(io(path))?;
    let (bytes, at) = if footer::has_cookie(&tail) {
        (tail, footer_at)
    } else if footer::has_cookie(&head) {
        report.corruptions.push(format!(
            "no footer at the end of the file (offset {footer_at:#x})"
        ));
        (head, 0)
    } else {
        return Err(FormatError::malformed(
            path,
            "vhd",
            footer_at,
            "no VHD footer",
        ));
    };
    let footer = Footer::decode(&bytes).map_err(|e| e.at(path, at))?;
    if let Err(e) = Footer::parse(&bytes) {
        report.corruptions.push(format!("footer at {at:#x}: {e}"));
    }
    if footer.disk_type == DiskType::Fixed {
        let size = footer.guest_size();
        if size > footer_at {
            report.corruptions.push(format!(
                "fixed disk of {size} bytes holds only {footer_at} bytes"
            ));
        } else if size < footer_at {
            report.leaks.push(format!(
                "{} bytes between the end of the disk and the footer",
                footer_at - size
            ));
        }
        return Ok(report);
    }
    if head != bytes {
        report
            .corruptions
            .push("the footer copy at offset 0 differs from the footer at the end".into());
    }
    let header_at = footer.data_offset;
    if header_at
        .checked_add(HEADER_SIZE as u64)
        .is_none_or(|end| end > len)
    {
        report.corruptions.push(format!(
            "dynamic header at {header_at:#x} lies past the end of the file"
        ));
        return Ok(report);
    }
    let mut raw = [0u8; HEADER_SIZE];
    file.read_exact_at(&mut raw, header_at).map_err(io(path))?;
    let header = match DynamicHeader::decode(&raw) {
        Ok(header) => header,
        Err(e) => {
            report
                .corruptions
                .push(format!("dynamic header at {header_at:#x}: {e}"));
            return Ok(report);
        }
    };
    if let Err(e) = DynamicHeader::parse(&raw) {
        report
            .corruptions
            .push(format!("dynamic header at {header_at:#x}: {e}"));
    }
    let entries = u64::from(header.max_table_entries);
    let table_end = header.table_offset.saturating_add(entries * 4);
    if table_end > len {
        report.corruptions.push(format!(
            "BAT at {:#x} ({entries} entries) lies past the end of the file",
            header.table_offset
        ));
        return Ok(report);
    }
    if entries * u64::from(header.block_size) < footer.guest_size() {
        report.corruptions.push(format!(
            "BAT of {entries} blocks cannot cover the disk size"
        ));
    }
    // Bounded: the header parser caps entries and the table lies inside the file.
    let mut table = vec![0u8; entries as usize * 4];
    file.read_exact_at(&mut table, header.table_offset)
        .map_err(io(path))?;
    let bat = super::dynamic::parse_bat(&table);
    let span = header.bitmap_bytes() + u64::from(header.block_size);
    let metadata_end = table_end.max(header_at + HEADER_SIZE as u64);
    let mut blocks: Vec<(u64, usize)> = Vec::new();
    for (index, &entry) in bat.iter().enumerate() {
        if entry == UNALLOCATED {
            continue;
        }
        let start = u64::from(entry) * 512;
        if start + span > footer_at {
            report.corruptions.push(format!(
                "block {index} at {start:#x} runs past the footer at {footer_at:#x}"
            ));
        } else if start < metadata_end {
            report.corruptions.push(format!(
                "block {index} at {start:#x} overlaps the header or BAT"
            ));
        }
        blocks.push((start, index));
    }
    blocks.sort_unstable();
    for pair in blocks.windows(2) {
        if let [(a, ia), (b, ib)] = pair {
            if a + span > *b {
                report
                    .corruptions
                    .push(format!("blocks {ia} ({a:#x}) and {ib} ({b:#x}) overlap"));
            }
        }
    }
    report.allocated_clusters = Some(blocks.len() as u64);
    report.total_clusters = Some(entries);
    Ok(report)
}

/// The guest size a resize to `requested` bytes gives, following how the disk records its
/// size: exact (force_size; kept a whole MiB if it was one, as Azure needs) or CHS-rounded.
fn new_guest_size(footer: &Footer, requested: u64) -> (geometry::Geometry, u64) {
    let sectors = requested.div_ceil(512);
    if footer.size_from_current_size() {
        let old = footer.guest_size();
        let bytes = if old.is_multiple_of(AZURE_ALIGNMENT) {
            let rounded = (sectors * 512).next_multiple_of(AZURE_ALIGNMENT);
            if rounded != sectors * 512 {
                tracing::info!(
                    from = requested,
                    to = rounded,
                    "kept the VHD size a whole MiB"
                );
            }
            rounded
        } else {
            sectors * 512
        };
        let geometry = if footer.geometry == MAX_CHS {
            MAX_CHS
        } else {
            geometry::chs_for(bytes / 512)
        };
        (geometry, bytes)
    } else {
        let (geometry, sectors) = geometry::round_up(sectors);
        (geometry, sectors * 512)
    }
}

/// Grows (or, with `shrink`, shrinks) a fixed disk; grows a dynamic disk within its BAT.
pub fn resize(path: &Path, file: &File, requested: u64, shrink: bool) -> Result<(), FormatError> {
    let Layout {
        footer,
        footer_offset,
        from_copy,
        guest_size,
        dynamic,
    } = reader::load(path, file)?;
    if from_copy {
        return Err(FormatError::Unsupported {
            path: path.to_owned(),
            what: "resizing a VHD whose end footer is damaged; run check".into(),
        });
    }
    if requested > MAX_SECTORS * 512 {
        return Err(too_large(path, requested));
    }
    let (geometry, new_size) = new_guest_size(&footer, requested);
    if new_size < guest_size && !shrink {
        return Err(FormatError::ShrinkRefused {
            path: path.to_owned(),
            current: guest_size,
            requested,
        });
    }
    if new_size / 512 > MAX_SECTORS {
        return Err(too_large(path, new_size));
    }
    let mut new_footer = footer.clone();
    new_footer.current_size = new_size;
    new_footer.geometry = geometry;
    let bytes = new_footer.encode();
    match dynamic {
        None => {
            // The data end where the footer starts: move the footer to the new end, and zero
            // the old footer if it is now inside the disk.
            file.set_len(new_size + FOOTER_SIZE as u64)
                .map_err(io(path))?;
            file.write_all_at(&bytes, new_size).map_err(io(path))?;
            if new_size > footer_offset {
                file.write_all_at(&[0u8; FOOTER_SIZE], footer_offset)
                    .map_err(io(path))?;
            }
        }
        Some(dynamic) => {
            if new_size < guest_size {
                return Err(FormatError::Unsupported {
                    path: path.to_owned(),
                    what: "shrinking a dynamic VHD; convert it to a smaller image instead".into(),
                });
            }
            let block_size = u64::from(dynamic.header.block_size);
            let capacity = u64::from(dynamic.header.max_table_entries) * block_size;
            if new_size > capacity {
                return Err(FormatError::Unsupported {
                    path: path.to_owned(),
                    what: format!(
                        "growing to {new_size} bytes: the BAT holds {} blocks ({capacity} bytes); convert to a new image instead",
                        dynamic.header.max_table_entries
                    ),
                });
            }
            file.write_all_at(&bytes, footer_offset).map_err(io(path))?;
            file.write_all_at(&bytes, 0).map_err(io(path))?;
        }
    }
    Ok(())
}

//! Structural checks: GD/GT entries inside the file, no grain claimed twice, redundant tables
//! equal to the primary ones, stream markers matching their tables, footer vs header.

use std::collections::HashSet;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use super::flat::{flat_extent, read_descriptor_file};
use super::grain::read_table;
use super::header::{SparseHeader, HEADER_LEN, SECTOR};
use super::marker::{Marker, GRAIN_MARKER_LEN};
use super::reader::{max_compressed_len, SparseExtent};
use super::FORMAT;
use crate::formats::{CheckReport, FormatError};

/// Loads the grain tables a directory points at; unreadable ones become corruptions.
fn load_gts(
    path: &Path,
    file: &File,
    extent: &SparseExtent,
    gd: &[u32],
    what: &str,
    report: &mut CheckReport,
) -> Vec<Option<Vec<u32>>> {
    let per_gt = u64::from(extent.header.num_gtes_per_gt);
    gd.iter()
        .enumerate()
        .map(|(k, &sector)| {
            if sector == 0 {
                return None;
            }
            match read_table(
                path,
                file,
                extent.file_len,
                u64::from(sector),
                per_gt,
                "grain table",
            ) {
                Ok(t) => Some(t),
                Err(e) => {
                    report.corruptions.push(format!("{what} entry {k}: {e}"));
                    None
                }
            }
        })
        .collect()
}

pub fn check_sparse(path: &Path, file: &File) -> Result<CheckReport, FormatError> {
    let extent = SparseExtent::open(path, file)?;
    let h = extent.header;
    let mut report = CheckReport::default();
    let gts = load_gts(
        path,
        file,
        &extent,
        &extent.gd,
        "grain directory",
        &mut report,
    );

    if extent.footer {
        // The footer is the header with the real GD offset; nothing else may differ.
        let mut b = [0u8; HEADER_LEN];
        file.read_exact_at(&mut b, 0)
            .map_err(|e| FormatError::io(path, e))?;
        let front = SparseHeader::parse(&b)
            .map_err(|(at, reason)| FormatError::malformed(path, FORMAT, at, reason))?;
        if (SparseHeader {
            gd_offset: h.gd_offset,
            ..front
        }) != h
        {
            report
                .corruptions
                .push("footer differs from the header beyond the GD offset".into());
        }
    }

    if h.has_rgd() && !extent.footer {
        match read_table(
            path,
            file,
            extent.file_len,
            h.rgd_offset,
            h.gt_count(),
            "redundant grain directory",
        ) {
            Ok(rgd) => {
                let rgts = load_gts(
                    path,
                    file,
                    &extent,
                    &rgd,
                    "redundant grain directory",
                    &mut report,
                );
                for (k, (a, b)) in gts.iter().zip(&rgts).enumerate() {
                    if a != b {
                        report
                            .corruptions
                            .push(format!("grain table {k} differs from its redundant copy"));
                    }
                }
            }
            Err(e) => report.corruptions.push(e.to_string()),
        }
    }

    let grain_bytes = h.grain_bytes();
    let grains = h.grains();
    let mut claimed = HashSet::new();
    let mut allocated = 0u64;
    for (k, table) in gts.iter().enumerate() {
        let Some(table) = table else { continue };
        for (i, &entry) in table.iter().enumerate() {
            let grain = k as u64 * u64::from(h.num_gtes_per_gt) + i as u64;
            if extent.is_zero_entry(entry) {
                continue;
            }
            if grain >= grains {
                report.corruptions.push(format!(
                    "grain {grain} is past the disk's end but allocated"
                ));
                continue;
            }
            let at = u64::from(entry) * SECTOR;
            if u64::from(entry) < h.overhead && !extent.footer {
                report
                    .corruptions
                    .push(format!("grain {grain} at {at:#x} overlaps the metadata"));
            }
            if !claimed.insert(entry) {
                report
                    .corruptions
                    .push(format!("grain {grain} at {at:#x} is claimed twice"));
                continue;
            }
            allocated += 1;
            if h.compressed() {
                if let Err(reason) =
                    check_compressed(file, at, grain * h.grain_size, grain_bytes, extent.file_len)
                {
                    report
                        .corruptions
                        .push(format!("grain {grain} at {at:#x}: {reason}"));
                }
            } else if at >= extent.file_len {
                report.corruptions.push(format!(
                    "grain {grain} at {at:#x} points past the end of the file"
                ));
            }
        }
    }
    report.allocated_clusters = Some(allocated);
    report.total_clusters = Some(grains);
    Ok(report)
}

fn check_compressed(
    file: &File,
    at: u64,
    lba: u64,
    grain_bytes: u64,
    file_len: u64,
) -> Result<(), String> {
    if at + GRAIN_MARKER_LEN as u64 > file_len {
        return Err("marker points past the end of the file".into());
    }
    let mut m = [0u8; 16];
    file.read_exact_at(&mut m[..GRAIN_MARKER_LEN], at)
        .map_err(|e| e.to_string())?;
    match Marker::parse(&m) {
        Marker::Grain { lba: found, size } => {
            if found != lba {
                Err(format!("marker LBA {found:#x}, expected {lba:#x}"))
            } else if u64::from(size) > max_compressed_len(grain_bytes)
                || at + GRAIN_MARKER_LEN as u64 + u64::from(size) > file_len
            {
                Err(format!("compressed size {size} is out of bounds"))
            } else {
                Ok(())
            }
        }
        Marker::Meta { .. } => Err("points at a metadata marker".into()),
    }
}

pub fn check_flat(path: &Path, file: &File) -> Result<CheckReport, FormatError> {
    let d = read_descriptor_file(path, file)?;
    let (extent, _, _) = flat_extent(path, &d)?;
    let mut report = CheckReport::default();
    if let Err(e) = std::fs::metadata(&extent) {
        report
            .corruptions
            .push(format!("extent {}: {e}", extent.display()));
    }
    Ok(report)
}

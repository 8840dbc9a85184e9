//! Structural checks: GD/GT entries inside the file, no grain claimed twice, redundant tables
//! equal to the primary ones, stream markers matching their tables, footer vs header.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use super::flat::{check_extent_fits, flat_extent, read_descriptor_file};
use super::grain::read_table;
use super::header::{SparseHeader, HEADER_LEN, SECTOR};
use super::marker::{Marker, GRAIN_MARKER_LEN};
use super::reader::{max_compressed_len, SparseExtent};
use super::FORMAT;
use crate::formats::{CheckReport, FormatError};

/// Problems listed one by one before the rest are only counted (hostile images could
/// otherwise produce billions of messages).
const MAX_MESSAGES: usize = 100;
/// Grain offsets remembered to find grains claimed twice (4 bytes each: 256 MiB).
const MAX_TRACKED_GRAINS: usize = 64 << 20;

/// Collects corruptions, listing the first [`MAX_MESSAGES`].
#[derive(Default)]
struct Findings {
    messages: Vec<String>,
    more: u64,
}

impl Findings {
    fn push(&mut self, message: String) {
        if self.messages.len() < MAX_MESSAGES {
            self.messages.push(message);
        } else {
            self.more += 1;
        }
    }

    fn into_vec(mut self) -> Vec<String> {
        if self.more > 0 {
            self.messages.push(format!("… and {} more", self.more));
        }
        self.messages
    }
}

/// Reads grain table `k` of a directory; a failure becomes a finding.
fn load_gt(
    path: &Path,
    file: &File,
    extent: &SparseExtent,
    sector: u32,
    what: &str,
    k: usize,
    findings: &mut Findings,
) -> Option<Vec<u32>> {
    if sector == 0 {
        return None;
    }
    let per_gt = u64::from(extent.header.num_gtes_per_gt);
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
            findings.push(format!("{what} entry {k}: {e}"));
            None
        }
    }
}

pub fn check_sparse(path: &Path, file: &File) -> Result<CheckReport, FormatError> {
    let extent = SparseExtent::open(path, file)?;
    let h = extent.header;
    let mut findings = Findings::default();

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
            findings.push("footer differs from the header beyond the GD offset".into());
        }
    }

    let rgd = if h.has_rgd() && !extent.footer {
        match read_table(
            path,
            file,
            extent.file_len,
            h.rgd_offset,
            h.gt_count(),
            "redundant grain directory",
        ) {
            Ok(rgd) => Some(rgd),
            Err(e) => {
                findings.push(e.to_string());
                None
            }
        }
    } else {
        None
    };

    let grain_bytes = h.grain_bytes();
    let grains = h.grains();
    let mut tables_seen = Vec::new();
    let mut claimed: Vec<u32> = Vec::new();
    let mut allocated = 0u64;
    // One table at a time: memory stays at one GT however large the directory.
    for (k, &gt_sector) in extent.gd.iter().enumerate() {
        if gt_sector != 0 {
            tables_seen.push(gt_sector);
        }
        let table = load_gt(
            path,
            file,
            &extent,
            gt_sector,
            "grain directory",
            k,
            &mut findings,
        );
        if let Some(rgd) = &rgd {
            let sector = rgd.get(k).copied().unwrap_or(0);
            let copy = load_gt(
                path,
                file,
                &extent,
                sector,
                "redundant grain directory",
                k,
                &mut findings,
            );
            if copy != table {
                findings.push(format!("grain table {k} differs from its redundant copy"));
            }
        }
        let Some(table) = table else { continue };
        for (i, &entry) in table.iter().enumerate() {
            let grain = k as u64 * u64::from(h.num_gtes_per_gt) + i as u64;
            if extent.is_zero_entry(entry) {
                continue;
            }
            if grain >= grains {
                findings.push(format!(
                    "grain {grain} is past the disk's end but allocated"
                ));
                continue;
            }
            let at = u64::from(entry) * SECTOR;
            if u64::from(entry) < h.overhead && !extent.footer {
                findings.push(format!("grain {grain} at {at:#x} overlaps the metadata"));
            }
            allocated += 1;
            if claimed.len() < MAX_TRACKED_GRAINS {
                claimed.push(entry);
            }
            if h.compressed() {
                if let Err(reason) =
                    check_compressed(file, at, grain * h.grain_size, grain_bytes, extent.file_len)
                {
                    findings.push(format!("grain {grain} at {at:#x}: {reason}"));
                }
            } else if at >= extent.file_len {
                findings.push(format!(
                    "grain {grain} at {at:#x} points past the end of the file"
                ));
            }
        }
    }
    for (list, what) in [(&mut tables_seen, "grain table"), (&mut claimed, "grain")] {
        list.sort_unstable();
        for pair in list.windows(2) {
            if pair[0] == pair[1] {
                findings.push(format!(
                    "{what} at {:#x} is claimed twice",
                    u64::from(pair[0]) * SECTOR
                ));
            }
        }
    }
    Ok(CheckReport {
        corruptions: findings.into_vec(),
        leaks: Vec::new(),
        allocated_clusters: Some(allocated),
        total_clusters: Some(grains),
        ..CheckReport::default()
    })
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
    let (extent, size, base) = flat_extent(path, &d)?;
    let mut report = CheckReport::default();
    match std::fs::metadata(&extent) {
        Ok(metadata) => check_extent_fits(path, &extent, size, base, metadata.len())?,
        Err(e) => report
            .corruptions
            .push(format!("extent {}: {e}", extent.display())),
    }
    Ok(report)
}

//! `check` of a VHDX: what opening verifies, then both copies of each header structure and
//! every BAT entry, reporting each problem instead of stopping at the first.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use super::bat::Block;
use super::header::{Header, HEADER1_OFFSET, HEADER2_OFFSET, HEADER_SIZE};
use super::reader::{self, BatWindow};
use super::region::{self, RegionTable};
use crate::formats::{CheckReport, FormatError};

/// Checks headers, region tables, the log and metadata (a failure there is an error, as the
/// disk cannot be read at all), then reports damaged copies and bad or overlapping blocks.
pub fn check(path: &Path, file: &File) -> Result<CheckReport, FormatError> {
    let layout = reader::load(path, file)?;
    let mut report = CheckReport::default();
    for at in [HEADER1_OFFSET, HEADER2_OFFSET] {
        let mut bytes = [0u8; HEADER_SIZE];
        file.read_exact_at(&mut bytes, at)
            .map_err(|source| FormatError::io(path, source))?;
        if let Err(e) = Header::parse(&bytes, at) {
            report.corruptions.push(format!("header at {at:#x}: {e}"));
        }
    }
    let mut tables = Vec::new();
    for at in [region::TABLE1_OFFSET, region::TABLE2_OFFSET] {
        let mut bytes = vec![0u8; region::TABLE_SIZE];
        file.read_exact_at(&mut bytes, at)
            .map_err(|source| FormatError::io(path, source))?;
        tables.push(bytes);
    }
    if tables[0] != tables[1] {
        let second: Result<&[u8; region::TABLE_SIZE], _> = tables[1].as_slice().try_into();
        let why = match second.map(|b| RegionTable::parse(b, region::TABLE2_OFFSET)) {
            Ok(Err(e)) => e.to_string(),
            _ => "differs from the first".into(),
        };
        report.corruptions.push(format!(
            "region table copy at {:#x}: {why}",
            region::TABLE2_OFFSET
        ));
    }
    let mut window = BatWindow::new();
    // Bounded by the file: every present block lies inside it and is at least 1 MiB.
    let mut present: Vec<(u64, u64)> = Vec::new();
    for block in 0..layout.geometry.payload_blocks {
        match window.block(path, file, &layout, block) {
            Ok(Block::Present(host)) => present.push((host, block)),
            Ok(Block::Zero) => {}
            Err(e) => report.corruptions.push(e.to_string()),
        }
    }
    present.sort_unstable();
    for pair in present.windows(2) {
        let ((host, block), (next_host, next_block)) = (pair[0], pair[1]);
        if host + layout.geometry.span(block) > next_host {
            report.corruptions.push(format!(
                "blocks {block} (at {host:#x}) and {next_block} (at {next_host:#x}) overlap"
            ));
        }
    }
    report.allocated_clusters = Some(present.len() as u64);
    report.total_clusters = Some(layout.geometry.payload_blocks);
    Ok(report)
}

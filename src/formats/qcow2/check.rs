//! `check`: rebuilds every refcount from the metadata and compares it with the stored one,
//! and verifies the COPIED flags, as `qemu-img check` does; `repair` then rewrites the stored
//! refcounts (and, for `-r all`, the COPIED flags) from that analysis, as `qemu-img check -r`.
//!
//! A refcount for a cluster past the end of the file is a leak. The qcow2 specification defines
//! a cluster's refcount as the number of references to it and says nothing bounds the refcounted
//! space by the file's length; no metadata can reference a cluster past the end (that would be a
//! corruption), so such a refcount counts references that do not exist, the definition of a
//! leak. It costs space: qemu's allocator skips clusters whose refcount is not zero, so it grows
//! the file past them. qemu-img only compares refcounts up to the end of the file and misses
//! these; cloudimg reports them (exit 3) and `-r leaks` frees them.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use super::header::Header;
use super::refcount;
use super::tables::{self, L2Entry, COPIED};
use super::Defect;
use crate::formats::{CheckReport, FormatError};

/// Refuse to rebuild refcounts for more host clusters than this (8 bytes each in memory:
/// expected and stored counts).
const MAX_CHECKED_CLUSTERS: u64 = 1 << 24;
/// Autoclear bit 0: persistent dirty bitmaps, whose clusters this check does not count.
const AUTOCLEAR_BITMAPS: u64 = 1;
/// Stop listing individual problems after this many; the count is still reported.
const MAX_LISTED: usize = 100;

struct Findings {
    report: CheckReport,
}

impl Findings {
    fn corrupt(&mut self, message: String) {
        if self.report.corruptions.len() < MAX_LISTED {
            self.report.corruptions.push(message);
        } else {
            self.report.unlisted_corruptions += 1;
        }
    }

    fn leak(&mut self, message: String) {
        if self.report.leaks.len() < MAX_LISTED {
            self.report.leaks.push(message);
        } else {
            self.report.unlisted_leaks += 1;
        }
    }
}

/// Which inconsistencies `repair` fixes (qemu-img check's `-r leaks` and `-r all`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RepairMode {
    /// Lower refcounts that are too high.
    Leaks,
    /// Also raise refcounts that are too low and correct COPIED flags.
    All,
}

/// What `repair` changed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Repaired {
    pub leaks_fixed: u64,
    pub corruptions_fixed: u64,
}

/// An L1 or L2 entry whose COPIED flag must say whether the cluster it points to has
/// refcount 1.
struct CopiedCheck {
    /// Where the 8-byte entry is in the file.
    entry_at: u64,
    host: u64,
    copied: bool,
    what: String,
}

/// Everything the check learnt, kept for `repair`.
struct Analysis {
    findings: Findings,
    header: Header,
    expected: Vec<u32>,
    stored: Vec<u32>,
    /// (refcount block index, its offset) of every valid refcount block.
    blocks: Vec<(u64, u64)>,
    copied_checks: Vec<CopiedCheck>,
}

/// Expected refcounts of every host cluster of the file.
struct Expected {
    counts: Vec<u32>,
    cluster_bits: u32,
    file_len: u64,
}

impl Expected {
    /// Counts one reference to every cluster of `offset..offset + len`; false if it leaves
    /// the file.
    fn reference(&mut self, offset: u64, len: u64) -> bool {
        if len == 0 {
            return true;
        }
        let Some(end) = offset.checked_add(len) else {
            return false;
        };
        if end > self.file_len.next_multiple_of(1 << self.cluster_bits) {
            return false;
        }
        for c in offset >> self.cluster_bits..=(end - 1) >> self.cluster_bits {
            if let Some(count) = self.counts.get_mut(c as usize) {
                *count = count.saturating_add(1);
            }
        }
        true
    }
}

fn read(path: &Path, file: &File, offset: u64, len: u64) -> Result<Vec<u8>, FormatError> {
    let mut buf = vec![0; len as usize];
    file.read_exact_at(&mut buf, offset)
        .map_err(|e| FormatError::io(path, e))?;
    Ok(buf)
}

fn words(bytes: &[u8]) -> impl Iterator<Item = u64> + '_ {
    bytes
        .chunks_exact(8)
        .map(|c| u64::from_be_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
}

pub fn check(path: &Path, file: File) -> Result<CheckReport, FormatError> {
    Ok(analyse(path, &file)?.findings.report)
}

fn analyse(path: &Path, file: &File) -> Result<Analysis, FormatError> {
    let file_len = crate::io::sys::file_len(file).map_err(|e| FormatError::io(path, e))?;
    let head = read(path, file, 0, 4096.min(file_len))?;
    let header = Header::parse(&head).map_err(|d| d.at(path))?;
    header.check_supported().map_err(|d| d.at(path))?;
    super::reader::check_extensions(path, file, file_len, &header)?;
    if header.nb_snapshots != 0 {
        return Err(Defect::Unsupported("checking images with internal snapshots".into()).at(path));
    }
    if header.autoclear & AUTOCLEAR_BITMAPS != 0 {
        return Err(Defect::Unsupported("checking images with persistent bitmaps".into()).at(path));
    }
    let cs = header.cluster_size();
    let host_clusters = file_len.div_ceil(cs);
    if host_clusters > MAX_CHECKED_CLUSTERS {
        return Err(
            Defect::Unsupported(format!("checking {host_clusters} host clusters")).at(path),
        );
    }
    let mut expected = Expected {
        counts: vec![0; host_clusters as usize],
        cluster_bits: header.cluster_bits,
        file_len,
    };
    let mut f = Findings {
        report: CheckReport::default(),
    };
    expected.reference(0, cs);

    // Active L1 table and its L2 tables.
    let l1_bytes = u64::from(header.l1_size) * 8;
    if !expected.reference(header.l1_table_offset, l1_bytes) {
        return Err(Defect::Malformed {
            offset: header.l1_table_offset,
            reason: "L1 table past end of file".into(),
        }
        .at(path));
    }
    let l1 = read(path, file, header.l1_table_offset, l1_bytes)?;
    let zero_flag = header.version >= 3 && !header.extended_l2();
    let step = if header.extended_l2() { 2 } else { 1 };
    let guest_clusters = header.size.div_ceil(cs);
    let mut allocated = 0u64;
    let mut fragmented = 0u64;
    let mut compressed = 0u64;
    // Every L1 entry and standard L2 entry, checked once the stored refcounts are known.
    let mut copied_checks: Vec<CopiedCheck> = Vec::new();
    for (i, entry) in words(&l1).enumerate() {
        let l2_offset = match tables::l1_l2_offset(entry, cs) {
            Ok(0) => continue,
            Ok(o) => o,
            Err(d) => {
                f.corrupt(format!("L1 entry {i}: {d}"));
                continue;
            }
        };
        if !expected.reference(l2_offset, cs) {
            f.corrupt(format!(
                "L2 table {l2_offset:#x} (L1 entry {i}) is past the end of the file"
            ));
            continue;
        }
        copied_checks.push(CopiedCheck {
            entry_at: header.l1_table_offset + i as u64 * 8,
            host: l2_offset,
            copied: entry & COPIED != 0,
            what: format!("L2 table {l2_offset:#x}"),
        });
        let l2 = read(path, file, l2_offset, cs)?;
        // qemu counts fragmentation within one L2 table.
        let mut next_contiguous = 0u64;
        for (j, raw) in words(&l2).step_by(step).enumerate() {
            let guest = i as u64 * header.l2_entries() + j as u64;
            let entry_at = l2_offset + (j * step) as u64 * 8;
            let entry = match tables::decode_l2(raw, header.cluster_bits, zero_flag) {
                Ok(e) => e,
                Err(d) => {
                    f.corrupt(format!("L2 entry for guest cluster {guest}: {d}"));
                    continue;
                }
            };
            // Allocated as qemu counts it: clusters with host storage.
            match entry {
                L2Entry::Normal { host, .. } | L2Entry::Zero { host } if host != 0 => {
                    allocated += 1;
                    if next_contiguous != 0 && host != next_contiguous {
                        fragmented += 1;
                    }
                    next_contiguous = host + cs;
                }
                L2Entry::Compressed { .. } => {
                    // Compressed clusters are fragmented by nature (qemu's words).
                    allocated += 1;
                    compressed += 1;
                    fragmented += 1;
                }
                _ => {}
            }
            let (host, len, copied) = match entry {
                L2Entry::Unallocated | L2Entry::Zero { host: 0 } => continue,
                L2Entry::Zero { host } => (host, cs, Some(raw & COPIED != 0)),
                L2Entry::Normal { host, copied } => (host, cs, Some(copied)),
                L2Entry::Compressed { host, len } => {
                    // qemu counts whole sectors: from the sector holding the first byte.
                    let start = host & !(tables::SECTOR - 1);
                    (start, len + (host - start), None)
                }
            };
            if !expected.reference(host, len) {
                f.corrupt(format!(
                    "guest cluster {guest} points to {host:#x}, past the end of the file"
                ));
                continue;
            }
            if let Some(copied) = copied {
                copied_checks.push(CopiedCheck {
                    entry_at,
                    host,
                    copied,
                    what: format!("data cluster {host:#x}"),
                });
            }
        }
    }

    // Refcount table and blocks.
    let reftable_bytes = u64::from(header.refcount_table_clusters) * cs;
    if !expected.reference(header.refcount_table_offset, reftable_bytes) {
        return Err(Defect::Malformed {
            offset: header.refcount_table_offset,
            reason: "refcount table past end of file".into(),
        }
        .at(path));
    }
    let reftable = read(path, file, header.refcount_table_offset, reftable_bytes)?;
    let per_block = refcount::entries_per_block(header.cluster_bits, header.refcount_order);
    let mut stored = vec![0u32; host_clusters as usize];
    let mut blocks = Vec::new();
    for (b, entry) in words(&reftable).enumerate() {
        if entry == 0 {
            continue;
        }
        let offset = entry & tables::OFFSET_MASK;
        if entry != offset || !offset.is_multiple_of(cs) || !expected.reference(offset, cs) {
            f.corrupt(format!(
                "refcount block {b} at {entry:#x} is invalid or past the end of the file"
            ));
            continue;
        }
        blocks.push((b as u64, offset));
        let block = read(path, file, offset, cs)?;
        let first = b as u64 * per_block;
        for k in 0..per_block {
            let count = refcount::get(&block, k, header.refcount_order).unwrap_or(0);
            let cluster = first + k;
            match stored.get_mut(cluster as usize) {
                Some(slot) => *slot = u32::try_from(count).unwrap_or(u32::MAX),
                None if count != 0 => f.leak(format!(
                    "cluster {cluster} past the end of the file has refcount {count}"
                )),
                None => {}
            }
        }
    }

    for (cluster, (&want, &have)) in expected.counts.iter().zip(&stored).enumerate() {
        if have < want {
            f.corrupt(format!(
                "ERROR cluster {cluster} refcount={have} reference={want}"
            ));
        } else if have > want {
            f.leak(format!(
                "Leaked cluster {cluster} refcount={have} reference={want}"
            ));
        }
    }
    for check in &copied_checks {
        let count = stored.get((check.host / cs) as usize).copied().unwrap_or(0);
        if (count == 1) != check.copied {
            f.corrupt(format!(
                "ERROR OFLAG_COPIED {}: refcount={count}, COPIED {}",
                check.what,
                if check.copied { "set" } else { "clear" }
            ));
        }
    }
    let last_used = (0..host_clusters as usize)
        .rev()
        .find(|&c| expected.counts[c] != 0 || stored[c] != 0);
    f.report.image_end_offset = last_used.map(|c| (c as u64 + 1) * cs);
    f.report.allocated_clusters = Some(allocated);
    f.report.total_clusters = Some(guest_clusters);
    f.report.fragmented_clusters = Some(fragmented);
    f.report.compressed_clusters = Some(compressed);
    Ok(Analysis {
        findings: f,
        header,
        expected: expected.counts,
        stored,
        blocks,
        copied_checks,
    })
}

/// Rewrites the stored refcounts from the references found (`Leaks`: only those too high;
/// `All`: every mismatch, then the COPIED flags). Refcounts with no refcount block to hold
/// them, or too large for the refcount width, stay as they are; the caller checks again.
/// As qemu-img, `Leaks` changes nothing and fails when a refcount is too low.
pub fn repair(path: &Path, file: &File, mode: RepairMode) -> Result<Repaired, FormatError> {
    let analysis = analyse(path, file)?;
    let too_low = analysis
        .expected
        .iter()
        .zip(&analysis.stored)
        .filter(|(want, have)| want > have)
        .count();
    if mode == RepairMode::Leaks && too_low != 0 {
        return Err(FormatError::Unsupported {
            path: path.to_owned(),
            what: format!(
                "repairing only leaks: {too_low} refcounts are lower than their references; \
                 repair them with -r all"
            ),
        });
    }
    let header = &analysis.header;
    let cs = header.cluster_size();
    let order = header.refcount_order;
    let per_block = refcount::entries_per_block(header.cluster_bits, order);
    let max = refcount::max_value(order);
    let mut repaired = Repaired::default();
    for &(b, offset) in &analysis.blocks {
        let mut block = read(path, file, offset, cs)?;
        let mut changed = false;
        for k in 0..per_block {
            let cluster = b * per_block + k;
            let have = refcount::get(&block, k, order).unwrap_or(0);
            // Past the end of the file nothing can reference a cluster: 0 is right.
            let want = analysis
                .expected
                .get(cluster as usize)
                .map_or(0, |&count| u64::from(count));
            let fix = if have > want {
                repaired.leaks_fixed += 1;
                true
            } else if have < want && mode == RepairMode::All && want <= max {
                repaired.corruptions_fixed += 1;
                true
            } else {
                false
            };
            if fix {
                refcount::set(&mut block, k, order, want);
                changed = true;
            }
        }
        if changed {
            file.write_all_at(&block, offset)
                .map_err(|e| FormatError::io(path, e))?;
        }
    }
    if mode == RepairMode::All {
        for check in &analysis.copied_checks {
            let count = analysis
                .expected
                .get((check.host / cs) as usize)
                .copied()
                .unwrap_or(0);
            if (count == 1) == check.copied {
                continue;
            }
            let mut entry = [0u8; 8];
            file.read_exact_at(&mut entry, check.entry_at)
                .map_err(|e| FormatError::io(path, e))?;
            let value = u64::from_be_bytes(entry);
            let value = if count == 1 {
                value | COPIED
            } else {
                value & !COPIED
            };
            file.write_all_at(&value.to_be_bytes(), check.entry_at)
                .map_err(|e| FormatError::io(path, e))?;
            repaired.corruptions_fixed += 1;
        }
    }
    file.sync_all().map_err(|e| FormatError::io(path, e))?;
    Ok(repaired)
}

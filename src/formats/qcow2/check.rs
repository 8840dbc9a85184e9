//! `check`: rebuilds every refcount from the metadata and compares it with the stored one,
//! and verifies the COPIED flags, as `qemu-img check` does.

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
    corruptions: u64,
    leaks: u64,
}

impl Findings {
    fn corrupt(&mut self, message: String) {
        self.corruptions += 1;
        if self.report.corruptions.len() < MAX_LISTED {
            self.report.corruptions.push(message);
        }
    }

    fn leak(&mut self, message: String) {
        self.leaks += 1;
        if self.report.leaks.len() < MAX_LISTED {
            self.report.leaks.push(message);
        }
    }
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
    let file_len = file.metadata().map_err(|e| FormatError::io(path, e))?.len();
    let head = read(path, &file, 0, 4096.min(file_len))?;
    let header = Header::parse(&head).map_err(|d| d.at(path))?;
    header.check_supported().map_err(|d| d.at(path))?;
    super::reader::check_extensions(path, &file, file_len, &header)?;
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
        corruptions: 0,
        leaks: 0,
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
    let l1 = read(path, &file, header.l1_table_offset, l1_bytes)?;
    let zero_flag = header.version >= 3 && !header.extended_l2();
    let step = if header.extended_l2() { 2 } else { 1 };
    let guest_clusters = header.size.div_ceil(cs);
    let mut allocated = 0u64;
    // (offset, whether COPIED is set) of every L1 entry and standard L2 entry, checked once
    // the stored refcounts are known.
    let mut copied_checks: Vec<(u64, bool, String)> = Vec::new();
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
        copied_checks.push((
            l2_offset,
            entry & COPIED != 0,
            format!("L2 table {l2_offset:#x}"),
        ));
        let l2 = read(path, &file, l2_offset, cs)?;
        for (j, raw) in words(&l2).step_by(step).enumerate() {
            let guest = i as u64 * header.l2_entries() + j as u64;
            let entry = match tables::decode_l2(raw, header.cluster_bits, zero_flag) {
                Ok(e) => e,
                Err(d) => {
                    f.corrupt(format!("L2 entry for guest cluster {guest}: {d}"));
                    continue;
                }
            };
            if entry != L2Entry::Unallocated && guest < guest_clusters {
                allocated += 1;
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
                copied_checks.push((host, copied, format!("data cluster {host:#x}")));
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
    let reftable = read(path, &file, header.refcount_table_offset, reftable_bytes)?;
    let per_block = refcount::entries_per_block(header.cluster_bits, header.refcount_order);
    let mut stored = vec![0u32; host_clusters as usize];
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
        let block = read(path, &file, offset, cs)?;
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
    for (host, copied, what) in copied_checks {
        let count = stored.get((host / cs) as usize).copied().unwrap_or(0);
        if (count == 1) != copied {
            f.corrupt(format!(
                "ERROR OFLAG_COPIED {what}: refcount={count}, COPIED {}",
                if copied { "set" } else { "clear" }
            ));
        }
    }
    if f.corruptions as usize > f.report.corruptions.len() {
        let more = f.corruptions as usize - f.report.corruptions.len();
        f.report
            .corruptions
            .push(format!("... and {more} more errors"));
    }
    if f.leaks as usize > f.report.leaks.len() {
        let more = f.leaks as usize - f.report.leaks.len();
        f.report
            .leaks
            .push(format!("... and {more} more leaked clusters"));
    }
    f.report.allocated_clusters = Some(allocated);
    f.report.total_clusters = Some(guest_clusters);
    Ok(f.report)
}

//! `resize`: changes the virtual size in place, growing the L1 table when needed.
//!
//! Growing past the L1 table's reach writes a new L1 at the end of the file, counts it in the
//! refcounts, then switches the header, then frees the old L1: a crash at any point leaves a
//! consistent image (at worst with leaked clusters).

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use super::header::Header;
use super::refcount;
use super::tables::{self, L2Entry};
use super::Defect;
use crate::formats::FormatError;

/// Header offset of the virtual size field.
const SIZE_FIELD: u64 = 24;

struct Image<'a> {
    path: &'a Path,
    file: File,
    header: Header,
}

impl Image<'_> {
    fn read(&self, offset: u64, len: u64) -> Result<Vec<u8>, FormatError> {
        let mut buf = vec![0; len as usize];
        self.file
            .read_exact_at(&mut buf, offset)
            .map_err(|e| FormatError::io(self.path, e))?;
        Ok(buf)
    }

    fn write(&self, offset: u64, bytes: &[u8]) -> Result<(), FormatError> {
        self.file
            .write_all_at(bytes, offset)
            .map_err(|e| FormatError::io(self.path, e))
    }

    fn sync(&self) -> Result<(), FormatError> {
        self.file
            .sync_data()
            .map_err(|e| FormatError::io(self.path, e))
    }

    fn malformed(&self, offset: u64, reason: &str) -> FormatError {
        FormatError::malformed(self.path, "qcow2", offset, reason)
    }

    /// Host offset of the refcount block covering `cluster` (0 if none) and its table slot.
    fn refblock_of(&self, cluster: u64) -> Result<(u64, u64), FormatError> {
        let per_block = refcount::entries_per_block(self.header.cluster_bits, 4);
        let index = cluster / per_block;
        let table_len = u64::from(self.header.refcount_table_clusters) * self.header.cluster_size();
        if index * 8 >= table_len {
            return Err(FormatError::Unsupported {
                path: self.path.to_owned(),
                what: "growing the refcount table".into(),
            });
        }
        let slot = self.header.refcount_table_offset + index * 8;
        let raw = self.read(slot, 8)?;
        let entry = u64::from_be_bytes([
            raw[0], raw[1], raw[2], raw[3], raw[4], raw[5], raw[6], raw[7],
        ]);
        Ok((entry & tables::OFFSET_MASK, slot))
    }

    /// Sets the 16-bit refcount of one cluster whose refcount block exists.
    fn set_refcount(&self, cluster: u64, count: u16) -> Result<(), FormatError> {
        let per_block = refcount::entries_per_block(self.header.cluster_bits, 4);
        let (block, _) = self.refblock_of(cluster)?;
        if block == 0 {
            return Err(self.malformed(cluster * self.header.cluster_size(), "no refcount block"));
        }
        self.write(block + (cluster % per_block) * 2, &count.to_be_bytes())
    }
}

pub fn resize(path: &Path, file: File, new_size: u64, shrink: bool) -> Result<(), FormatError> {
    let file_len = file.metadata().map_err(|e| FormatError::io(path, e))?.len();
    let mut head = vec![0; 4096.min(file_len as usize)];
    file.read_exact_at(&mut head, 0)
        .map_err(|e| FormatError::io(path, e))?;
    let header = Header::parse(&head).map_err(|d| d.at(path))?;
    header.check_supported().map_err(|d| d.at(path))?;
    super::reader::check_extensions(path, &file, file_len, &header)?;
    if header.nb_snapshots != 0 {
        return Err(Defect::Unsupported("resizing images with internal snapshots".into()).at(path));
    }
    if header.refcount_order != 4 {
        return Err(
            Defect::Unsupported("resizing with refcounts other than 16 bits".into()).at(path),
        );
    }
    if !new_size.is_multiple_of(512) {
        return Err(FormatError::InvalidOption {
            key: "size".into(),
            value: new_size.to_string(),
            reason: "a qcow2 size must be a multiple of 512".into(),
        });
    }
    let image = Image { path, file, header };
    let current = image.header.size;
    if new_size < current {
        if !shrink {
            return Err(FormatError::ShrinkRefused {
                path: path.to_owned(),
                current,
                requested: new_size,
            });
        }
        refuse_allocated_beyond(&image, new_size)?;
        image.write(SIZE_FIELD, &new_size.to_be_bytes())?;
        return image.sync();
    }
    let needed = image.header.l1_entries_needed(new_size);
    if needed * 8 > super::header::MAX_L1_BYTES {
        return Err(FormatError::InvalidOption {
            key: "size".into(),
            value: new_size.to_string(),
            reason: "too large for this cluster size (L1 table above 32 MiB)".into(),
        });
    }
    if needed > u64::from(image.header.l1_size) {
        grow_l1(&image, file_len, needed, new_size)?;
    } else {
        image.write(SIZE_FIELD, &new_size.to_be_bytes())?;
    }
    image.sync()
}

/// Errors unless every guest cluster starting at or beyond `new_size` is unallocated.
fn refuse_allocated_beyond(image: &Image<'_>, new_size: u64) -> Result<(), FormatError> {
    let h = &image.header;
    let cs = h.cluster_size();
    let first = new_size.div_ceil(cs);
    let l2_entries = h.l2_entries();
    let step = if h.extended_l2() { 2 } else { 1 };
    let l1 = image.read(h.l1_table_offset, u64::from(h.l1_size) * 8)?;
    for (i, raw) in l1.chunks_exact(8).enumerate() {
        let entry = u64::from_be_bytes([
            raw[0], raw[1], raw[2], raw[3], raw[4], raw[5], raw[6], raw[7],
        ]);
        let l2 = tables::l1_l2_offset(entry, cs).map_err(|d| d.at(image.path))?;
        let base = i as u64 * l2_entries;
        if l2 == 0 || base + l2_entries <= first {
            continue;
        }
        let table = image.read(l2, cs)?;
        for (j, e) in table.chunks_exact(8).step_by(step).enumerate() {
            let guest = base + j as u64;
            let raw = u64::from_be_bytes([e[0], e[1], e[2], e[3], e[4], e[5], e[6], e[7]]);
            let decoded =
                tables::decode_l2(raw, h.cluster_bits, h.version >= 3 && !h.extended_l2())
                    .map_err(|d| d.at(image.path))?;
            if guest >= first && decoded != L2Entry::Unallocated {
                return Err(FormatError::Unsupported {
                    path: image.path.to_owned(),
                    what: format!(
                        "shrinking to {new_size}: guest offset {:#x} holds data",
                        guest * cs
                    ),
                });
            }
        }
    }
    Ok(())
}

/// Writes a bigger L1 at the end of the file, counts it, switches the header, frees the old.
fn grow_l1(
    image: &Image<'_>,
    file_len: u64,
    entries: u64,
    new_size: u64,
) -> Result<(), FormatError> {
    let h = &image.header;
    let cs = h.cluster_size();
    let old_bytes = u64::from(h.l1_size) * 8;
    let mut l1 = image.read(h.l1_table_offset, old_bytes)?;
    l1.resize((entries * 8) as usize, 0);
    let clusters = (entries * 8).div_ceil(cs);
    let first = file_len.div_ceil(cs);
    // New refcount blocks for the new clusters go right after them, describing themselves.
    let mut next = first + clusters;
    let mut new_blocks: Vec<(u64, u64)> = Vec::new(); // (block host cluster, table slot)
    let mut c = first;
    while c < next {
        let (block, slot) = image.refblock_of(c)?;
        if block == 0 && !new_blocks.iter().any(|b| b.1 == slot) {
            new_blocks.push((next, slot));
            next += 1;
        }
        c += 1;
    }
    image.write(first * cs, &l1)?;
    for &(block, _) in &new_blocks {
        image.write(block * cs, &vec![0; cs as usize])?;
    }
    for &(block, slot) in &new_blocks {
        image.write(slot, &(block * cs).to_be_bytes())?;
    }
    // Counts for the new L1 and the new blocks, now reachable from the refcount table.
    for cluster in first..next {
        image.set_refcount(cluster, 1)?;
    }
    image.sync()?;
    // Size, crypt_method, l1_size and l1_table_offset in one write.
    let mut fields = Vec::with_capacity(24);
    fields.extend_from_slice(&new_size.to_be_bytes());
    fields.extend_from_slice(&h.crypt_method.to_be_bytes());
    fields.extend_from_slice(&(entries as u32).to_be_bytes());
    fields.extend_from_slice(&(first * cs).to_be_bytes());
    image.write(SIZE_FIELD, &fields)?;
    image.sync()?;
    if old_bytes > 0 {
        let old_first = h.l1_table_offset / cs;
        for cluster in old_first..old_first + old_bytes.div_ceil(cs) {
            image.set_refcount(cluster, 0)?;
        }
    }
    Ok(())
}

//! L1 and L2 table entries: pure decoding and encoding.

use super::Defect;

/// Bit 63 of L1 and standard L2 entries: the cluster's refcount is exactly one, so it may be
/// written in place.
pub const COPIED: u64 = 1 << 63;
/// Bit 62 of L2 entries: the cluster is compressed.
pub const COMPRESSED: u64 = 1 << 62;
/// Bit 0 of a standard L2 entry (v3, without extended L2): the cluster reads as zeroes.
pub const ZERO_FLAG: u64 = 1;
/// Bits 9..=55 of L1 and standard L2 entries: a host offset.
pub const OFFSET_MASK: u64 = 0x00ff_ffff_ffff_fe00;
/// Bits of an L1 entry that must be zero (1..=8 and 56..=62).
const L1_RESERVED: u64 = !(OFFSET_MASK | COPIED);
/// Size unit of a compressed cluster's length field.
pub const SECTOR: u64 = 512;

/// The L2 table offset an L1 entry points to (0 = not allocated).
pub fn l1_l2_offset(entry: u64, cluster_size: u64) -> Result<u64, Defect> {
    let offset = entry & OFFSET_MASK;
    if entry & L1_RESERVED != 0 || !offset.is_multiple_of(cluster_size) {
        return Err(Defect::Malformed {
            offset,
            reason: format!("invalid L1 entry {entry:#x}"),
        });
    }
    Ok(offset)
}

/// What one L2 entry says about a guest cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum L2Entry {
    /// Not allocated: reads as zeroes (no backing files here).
    Unallocated,
    /// Reads as zeroes; `host` is kept allocated when non-zero (v3 zero flag).
    Zero { host: u64 },
    /// Guest bytes at `host`.
    Normal { host: u64, copied: bool },
    /// A compressed cluster: `len` bytes at byte offset `host` hold at least the stream.
    Compressed { host: u64, len: u64 },
}

/// Decodes a standard L2 entry (the first 64 bits of an extended one).
/// `zero_flag` is false for v2 and for extended L2, where bit 0 is reserved.
pub fn decode_l2(entry: u64, cluster_bits: u32, zero_flag: bool) -> Result<L2Entry, Defect> {
    let cluster_size = 1u64 << cluster_bits;
    if entry & COMPRESSED != 0 {
        // x = 62 - (cluster_bits - 8): bits 0..x are the byte offset, x..62 extra sectors.
        let shift = 62 - (cluster_bits - 8);
        let host = entry & ((1 << shift) - 1);
        let sectors = ((entry & !COPIED & !COMPRESSED) >> shift) + 1;
        if entry & COPIED != 0 {
            return Err(Defect::Malformed {
                offset: host,
                reason: format!("compressed L2 entry {entry:#x} has COPIED set"),
            });
        }
        return Ok(L2Entry::Compressed {
            host,
            len: sectors * SECTOR - (host % SECTOR),
        });
    }
    let host = entry & OFFSET_MASK;
    let reserved = entry & !(OFFSET_MASK | COPIED | ZERO_FLAG);
    if reserved != 0 || (!zero_flag && entry & ZERO_FLAG != 0) || !host.is_multiple_of(cluster_size)
    {
        return Err(Defect::Malformed {
            offset: host,
            reason: format!("invalid L2 entry {entry:#x}"),
        });
    }
    Ok(if zero_flag && entry & ZERO_FLAG != 0 {
        L2Entry::Zero { host }
    } else if host == 0 {
        L2Entry::Unallocated
    } else {
        L2Entry::Normal {
            host,
            copied: entry & COPIED != 0,
        }
    })
}

/// The descriptor of a compressed cluster of `len` bytes at byte offset `host`.
pub fn encode_compressed(host: u64, len: u64, cluster_bits: u32) -> u64 {
    let shift = 62 - (cluster_bits - 8);
    let extra_sectors = (host + len - 1) / SECTOR - host / SECTOR;
    COMPRESSED | (extra_sectors << shift) | host
}

/// The subcluster bitmaps of an extended L2 entry: bit i of `alloc` = subcluster i holds
/// data, bit i of `zero` = subcluster i reads as zeroes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Subclusters {
    pub alloc: u32,
    pub zero: u32,
}

impl Subclusters {
    pub fn decode(bitmap: u64, at: u64) -> Result<Subclusters, Defect> {
        let sub = Subclusters {
            alloc: bitmap as u32,
            zero: (bitmap >> 32) as u32,
        };
        if sub.alloc & sub.zero != 0 {
            return Err(Defect::Malformed {
                offset: at,
                reason: format!(
                    "subcluster bitmap {bitmap:#x} marks subclusters both allocated and zero"
                ),
            });
        }
        Ok(sub)
    }
}

/// Subclusters per cluster with extended L2 entries.
pub const SUBCLUSTERS: u64 = 32;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normal_entry_decodes_with_copied() {
        // COPIED | host 0x50000
        let e = 0x8000_0000_0005_0000;
        assert_eq!(
            decode_l2(e, 16, true).unwrap(),
            L2Entry::Normal {
                host: 0x50000,
                copied: true
            }
        );
    }

    #[test]
    fn compressed_entry_from_qemu_decodes() {
        // Observed in a qemu-img convert -c image: compressed, 1 extra sector, host 0x501a2.
        let e = 0x4040_0000_0005_01a2;
        assert_eq!(
            decode_l2(e, 16, true).unwrap(),
            L2Entry::Compressed {
                host: 0x501a2,
                len: 2 * 512 - 0x1a2
            }
        );
        assert_eq!(encode_compressed(0x501a2, 0x1b5, 16), e);
    }

    #[test]
    fn zero_flag_only_counts_in_v3() {
        assert_eq!(decode_l2(1, 16, true).unwrap(), L2Entry::Zero { host: 0 });
        assert!(decode_l2(1, 16, false).is_err());
    }

    #[test]
    fn unaligned_host_offset_is_rejected() {
        // 0x50200 is 512-aligned but not 64 KiB aligned.
        assert!(decode_l2(0x8000_0000_0005_0200, 16, true).is_err());
    }

    #[test]
    fn reserved_l1_bits_are_rejected() {
        assert_eq!(l1_l2_offset(0x8000_0000_0004_0000, 65536).unwrap(), 0x40000);
        assert!(l1_l2_offset(0x8000_0000_0004_0001, 65536).is_err());
        assert!(l1_l2_offset(0x0100_0000_0004_0000, 65536).is_err());
    }

    #[test]
    fn subcluster_bitmap_overlap_is_rejected() {
        assert_eq!(
            Subclusters::decode(0x0000_0002_0000_0001, 0).unwrap(),
            Subclusters { alloc: 1, zero: 2 }
        );
        assert!(Subclusters::decode(0x0000_0001_0000_0001, 0).is_err());
    }
}

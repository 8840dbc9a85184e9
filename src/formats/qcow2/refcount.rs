//! Refcount blocks: entries of 2^refcount_order bits, big-endian for whole bytes and
//! least-significant-bit first below a byte (as qemu packs them).

/// Refcount entries one refcount block holds.
pub fn entries_per_block(cluster_bits: u32, refcount_order: u32) -> u64 {
    (8u64 << cluster_bits) >> refcount_order
}

/// The refcount at `index` of a refcount block; `None` if the block is too short.
pub fn get(block: &[u8], index: u64, refcount_order: u32) -> Option<u64> {
    let bits = 1u64 << refcount_order;
    if bits >= 8 {
        let width = (bits / 8) as usize;
        let start = usize::try_from(index).ok()?.checked_mul(width)?;
        let bytes = block.get(start..start.checked_add(width)?)?;
        Some(bytes.iter().fold(0, |acc, b| (acc << 8) | u64::from(*b)))
    } else {
        let bit = index * bits;
        let byte = *block.get(usize::try_from(bit / 8).ok()?)?;
        Some(u64::from(byte >> (bit % 8)) & ((1 << bits) - 1))
    }
}

/// Encodes 16-bit refcounts (the only width cloudimg writes) into a block of `cluster_size`.
pub fn encode16(counts: &[u16], cluster_size: usize) -> Vec<u8> {
    let mut block = vec![0; cluster_size];
    for (slot, count) in block.chunks_exact_mut(2).zip(counts) {
        slot.copy_from_slice(&count.to_be_bytes());
    }
    block
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sixteen_bit_entries_are_big_endian() {
        let block = [0x00, 0x01, 0x12, 0x34];
        assert_eq!(get(&block, 0, 4), Some(1));
        assert_eq!(get(&block, 1, 4), Some(0x1234));
        assert_eq!(get(&block, 2, 4), None);
    }

    #[test]
    fn sub_byte_entries_are_lsb_first() {
        // Four 2-bit entries in one byte: 1, 2, 3, 0.
        let block = [0b00_11_10_01];
        assert_eq!(get(&block, 0, 1), Some(1));
        assert_eq!(get(&block, 1, 1), Some(2));
        assert_eq!(get(&block, 2, 1), Some(3));
        assert_eq!(get(&block, 3, 1), Some(0));
        assert_eq!(get(&block, 0, 0), Some(1));
        assert_eq!(get(&block, 1, 0), Some(0));
    }

    #[test]
    fn encode16_round_trips() {
        let block = encode16(&[1, 2, 65535], 512);
        assert_eq!(block.len(), 512);
        assert_eq!(get(&block, 2, 4), Some(65535));
        assert_eq!(get(&block, 3, 4), Some(0));
        assert_eq!(entries_per_block(16, 4), 32768);
    }
}

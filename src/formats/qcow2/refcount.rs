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

/// The largest refcount an entry of 2^`refcount_order` bits holds.
pub fn max_value(refcount_order: u32) -> u64 {
    let bits = 1u32 << refcount_order;
    if bits >= 64 {
        u64::MAX
    } else {
        (1u64 << bits) - 1
    }
}

/// Stores `value` (at most [`max_value`]) at `index` of a refcount block, in the packing
/// [`get`] reads; indexes past the block are ignored.
pub fn set(block: &mut [u8], index: u64, refcount_order: u32, value: u64) {
    let bits = 1u64 << refcount_order;
    if bits >= 8 {
        let width = (bits / 8) as usize;
        let Some(start) = usize::try_from(index)
            .ok()
            .and_then(|i| i.checked_mul(width))
        else {
            return;
        };
        if let Some(bytes) = start
            .checked_add(width)
            .and_then(|end| block.get_mut(start..end))
        {
            bytes.copy_from_slice(&value.to_be_bytes()[8 - width..]);
        }
    } else {
        let bit = index * bits;
        let mask = ((1u64 << bits) - 1) as u8;
        if let Some(byte) = usize::try_from(bit / 8).ok().and_then(|i| block.get_mut(i)) {
            let shift = bit % 8;
            *byte = (*byte & !(mask << shift)) | (((value as u8) & mask) << shift);
        }
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
    fn set_writes_what_get_reads_at_every_width() {
        for order in 0..=6 {
            let mut block = vec![0u8; 64];
            let max = max_value(order);
            set(&mut block, 3, order, max);
            set(&mut block, 4, order, 1);
            assert_eq!(get(&block, 3, order), Some(max), "order {order}");
            assert_eq!(get(&block, 4, order), Some(1), "order {order}");
            assert_eq!(get(&block, 2, order), Some(0), "order {order}");
            set(&mut block, 3, order, 0);
            assert_eq!(get(&block, 3, order), Some(0), "order {order}");
            assert_eq!(get(&block, 4, order), Some(1), "order {order}");
        }
        // Past the end: nothing happens.
        let mut block = [0u8; 2];
        set(&mut block, 5, 4, 7);
        assert_eq!(block, [0, 0]);
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

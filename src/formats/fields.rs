//! Fixed-width integers at byte offsets of on-disk structures (headers, tables, entries), in
//! the byte order each format defines. The caller has checked that the slice holds the field:
//! a short slice is a bug, and panics.

pub fn le16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes(field(b, at))
}

pub fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(field(b, at))
}

pub fn le64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(field(b, at))
}

pub fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes(field(b, at))
}

pub fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(field(b, at))
}

pub fn be64(b: &[u8], at: usize) -> u64 {
    u64::from_be_bytes(field(b, at))
}

fn field<const N: usize>(b: &[u8], at: usize) -> [u8; N] {
    let mut bytes = [0; N];
    bytes.copy_from_slice(&b[at..at + N]);
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_byte_orders_at_an_offset() {
        let b = [0xFF, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08];
        assert_eq!(le16(&b, 1), 0x0201);
        assert_eq!(be16(&b, 1), 0x0102);
        assert_eq!(le32(&b, 1), 0x0403_0201);
        assert_eq!(be32(&b, 1), 0x0102_0304);
        assert_eq!(le64(&b, 1), 0x0807_0605_0403_0201);
        assert_eq!(be64(&b, 1), 0x0102_0304_0506_0708);
    }
}

//! streamOptimized markers. Each grain is `{u64 lba, u32 size}` followed by `size` bytes of
//! compressed data, padded to a sector. Metadata markers fill one sector:
//! `{u64 sectors, u32 0, u32 type, 496 bytes of padding}`, followed by `sectors` of metadata.

use super::header::{u32_at, u64_at, SECTOR};

/// Length of a grain marker's head (`lba` and `size`), before the compressed bytes.
pub const GRAIN_MARKER_LEN: usize = 12;
/// Metadata marker type: end of stream.
pub const TYPE_EOS: u32 = 0;
/// Metadata marker type: a grain table follows.
pub const TYPE_GT: u32 = 1;
/// Metadata marker type: the grain directory follows.
pub const TYPE_GD: u32 = 2;
/// Metadata marker type: the footer (a header copy) follows.
pub const TYPE_FOOTER: u32 = 3;

/// What a marker announces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Marker {
    /// A compressed grain for guest sector `lba`, `size` bytes long.
    Grain { lba: u64, size: u32 },
    /// Metadata of `kind` (a `TYPE_*` value) spanning `sectors` sectors after the marker.
    Meta { kind: u32, sectors: u64 },
}

impl Marker {
    /// Parses the first 16 bytes of a marker (a grain's data starts at byte 12).
    pub fn parse(b: &[u8; 16]) -> Marker {
        let value = u64_at(b, 0);
        match u32_at(b, 8) {
            0 => Marker::Meta {
                kind: u32_at(b, 12),
                sectors: value,
            },
            size => Marker::Grain { lba: value, size },
        }
    }
}

/// A metadata marker sector.
pub fn meta_marker(kind: u32, sectors: u64) -> [u8; SECTOR as usize] {
    let mut b = [0u8; SECTOR as usize];
    b[0..8].copy_from_slice(&sectors.to_le_bytes());
    b[12..16].copy_from_slice(&kind.to_le_bytes());
    b
}

/// The head of a grain marker.
pub fn grain_marker(lba: u64, size: u32) -> [u8; GRAIN_MARKER_LEN] {
    let mut b = [0u8; GRAIN_MARKER_LEN];
    b[0..8].copy_from_slice(&lba.to_le_bytes());
    b[8..12].copy_from_slice(&size.to_le_bytes());
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grain_marker_parses() {
        let b: [u8; 16] = [
            0x00, 0x05, 0, 0, 0, 0, 0, 0, // lba 0x500
            0x1a, 0x00, 0x01, 0x00, // size 0x1001a
            0x78, 0x9c, 0x00, 0x01, // first compressed bytes
        ];
        assert_eq!(
            Marker::parse(&b),
            Marker::Grain {
                lba: 0x500,
                size: 0x1001a
            }
        );
    }

    #[test]
    fn gt_marker_parses() {
        let b: [u8; 16] = [
            4, 0, 0, 0, 0, 0, 0, 0, // 4 sectors of grain table follow
            0, 0, 0, 0, // size 0: metadata
            1, 0, 0, 0, // type GT
        ];
        assert_eq!(
            Marker::parse(&b),
            Marker::Meta {
                kind: TYPE_GT,
                sectors: 4
            }
        );
    }

    #[test]
    fn written_markers_parse_back() {
        let m = meta_marker(TYPE_FOOTER, 1);
        let head: [u8; 16] = m[..16].try_into().unwrap();
        assert_eq!(
            Marker::parse(&head),
            Marker::Meta {
                kind: TYPE_FOOTER,
                sectors: 1
            }
        );
        let mut g = [0u8; 16];
        g[..12].copy_from_slice(&grain_marker(128, 77));
        assert_eq!(Marker::parse(&g), Marker::Grain { lba: 128, size: 77 });
    }
}

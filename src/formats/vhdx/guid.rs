//! GUIDs as VHDX stores them: Microsoft's mixed-endian layout (the first three fields
//! little-endian, the last eight bytes as written), and the well-known ones the format uses.

/// The 16 bytes on disk of the GUID written `d1-d2-d3-d4[0..2]-d4[2..8]`.
pub const fn guid(d1: u32, d2: u16, d3: u16, d4: [u8; 8]) -> [u8; 16] {
    let a = d1.to_le_bytes();
    let b = d2.to_le_bytes();
    let c = d3.to_le_bytes();
    [
        a[0], a[1], a[2], a[3], b[0], b[1], c[0], c[1], d4[0], d4[1], d4[2], d4[3], d4[4], d4[5],
        d4[6], d4[7],
    ]
}

/// The all-zero GUID: "no log" in a header's log GUID.
pub const ZERO: [u8; 16] = [0; 16];

/// Region 2DC27766-F623-4200-9D64-115E9BFD4A08: the block allocation table.
pub const BAT_REGION: [u8; 16] = guid(
    0x2dc2_7766,
    0xf623,
    0x4200,
    [0x9d, 0x64, 0x11, 0x5e, 0x9b, 0xfd, 0x4a, 0x08],
);
/// Region 8B7CA206-4790-4B9A-B8FE-575F050F886E: the metadata table and its items.
pub const METADATA_REGION: [u8; 16] = guid(
    0x8b7c_a206,
    0x4790,
    0x4b9a,
    [0xb8, 0xfe, 0x57, 0x5f, 0x05, 0x0f, 0x88, 0x6e],
);
/// Item CAA16737-FA36-4D43-B3B6-33F0AA44E76B: file parameters (block size, flags).
pub const FILE_PARAMETERS: [u8; 16] = guid(
    0xcaa1_6737,
    0xfa36,
    0x4d43,
    [0xb3, 0xb6, 0x33, 0xf0, 0xaa, 0x44, 0xe7, 0x6b],
);
/// Item 2FA54224-CD1B-4876-B211-5DBED83BF4B8: virtual disk size.
pub const VIRTUAL_DISK_SIZE: [u8; 16] = guid(
    0x2fa5_4224,
    0xcd1b,
    0x4876,
    [0xb2, 0x11, 0x5d, 0xbe, 0xd8, 0x3b, 0xf4, 0xb8],
);
/// Item BECA12AB-B2E6-4523-93EF-C309E000C746: SCSI page 83 data (a disk identifier).
pub const PAGE_83_DATA: [u8; 16] = guid(
    0xbeca_12ab,
    0xb2e6,
    0x4523,
    [0x93, 0xef, 0xc3, 0x09, 0xe0, 0x00, 0xc7, 0x46],
);
/// Item 8141BF1D-A96F-4709-BA47-F233A8FAAB5F: logical sector size.
pub const LOGICAL_SECTOR_SIZE: [u8; 16] = guid(
    0x8141_bf1d,
    0xa96f,
    0x4709,
    [0xba, 0x47, 0xf2, 0x33, 0xa8, 0xfa, 0xab, 0x5f],
);
/// Item CDA348C7-445D-4471-9CC9-E9885251C556: physical sector size.
pub const PHYSICAL_SECTOR_SIZE: [u8; 16] = guid(
    0xcda3_48c7,
    0x445d,
    0x4471,
    [0x9c, 0xc9, 0xe9, 0x88, 0x52, 0x51, 0xc5, 0x56],
);
/// Item A8D35F2D-B30B-454D-ABF7-D3D84834AB0C: where a differencing disk's parent is.
pub const PARENT_LOCATOR: [u8; 16] = guid(
    0xa8d3_5f2d,
    0xb30b,
    0x454d,
    [0xab, 0xf7, 0xd3, 0xd8, 0x48, 0x34, 0xab, 0x0c],
);

/// A random (version 4) GUID, in the on-disk layout.
pub fn random() -> [u8; 16] {
    // The text-order bytes of a v4 UUID, swapped into Microsoft's layout; a random GUID is
    // just as random in either order, but the version nibble then lands where readers look.
    let t = crate::formats::uuid::random_v4();
    let d1 = u32::from_be_bytes([t[0], t[1], t[2], t[3]]);
    let d2 = u16::from_be_bytes([t[4], t[5]]);
    let d3 = u16::from_be_bytes([t[6], t[7]]);
    guid(
        d1,
        d2,
        d3,
        [t[8], t[9], t[10], t[11], t[12], t[13], t[14], t[15]],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_guids_have_the_bytes_qemu_writes() {
        // From the region table of a `qemu-img create -f vhdx` file.
        assert_eq!(
            BAT_REGION,
            [
                0x66, 0x77, 0xc2, 0x2d, 0x23, 0xf6, 0x00, 0x42, 0x9d, 0x64, 0x11, 0x5e, 0x9b, 0xfd,
                0x4a, 0x08
            ]
        );
        assert_eq!(METADATA_REGION[..4], [0x06, 0xa2, 0x7c, 0x8b]);
    }

    #[test]
    fn random_guids_are_version_4() {
        let g = random();
        assert_eq!(g[7] >> 4, 4);
        assert_eq!(g[8] >> 6, 2);
        assert_ne!(g, random());
    }
}

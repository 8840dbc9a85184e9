//! Cylinder/head/sector geometry, as the VHD specification's appendix computes it.
//!
//! Virtual PC and qemu (creator `qemu`) take the disk size from the geometry, so a size that
//! is not exactly representable is rounded **up** to the next CHS size on creation.

/// Largest geometry the footer can hold: 65535 cylinders, 16 heads, 255 sectors per track.
/// qemu writes it with `force_size` and then reads the size from `current_size`.
pub const MAX_CHS: Geometry = Geometry {
    cylinders: 65535,
    heads: 16,
    sectors_per_track: 255,
};

/// Sectors covered by [`MAX_CHS`]: about 127 GiB.
pub const MAX_CHS_SECTORS: u64 = 65535 * 16 * 255;

/// The largest disk qemu creates or opens: 2040 GiB, in 512-byte sectors.
pub const MAX_SECTORS: u64 = 0xff00_0000;

/// Disk geometry as stored in the footer (cylinders big-endian u16, heads u8, sectors u8).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Geometry {
    pub cylinders: u16,
    pub heads: u8,
    pub sectors_per_track: u8,
}

impl Geometry {
    /// Sectors addressed by this geometry.
    pub fn sectors(self) -> u64 {
        u64::from(self.cylinders) * u64::from(self.heads) * u64::from(self.sectors_per_track)
    }
}

/// The specification's CHS algorithm: the geometry covering at most `total_sectors`.
pub fn chs_for(total_sectors: u64) -> Geometry {
    let total = total_sectors.min(MAX_CHS_SECTORS);
    let (sectors_per_track, heads, cylinders_times_heads) = if total >= 65535 * 16 * 63 {
        (255u64, 16u64, total / 255)
    } else {
        let mut spt = 17u64;
        let mut cth = total / spt;
        let mut heads = cth.div_ceil(1024).max(4);
        if cth >= heads * 1024 || heads > 16 {
            spt = 31;
            heads = 16;
            cth = total / spt;
        }
        if cth >= heads * 1024 {
            spt = 63;
            heads = 16;
            cth = total / spt;
        }
        (spt, heads, cth)
    };
    // The branches above bound every value: heads ≤ 16, spt ≤ 255, cylinders ≤ 65535.
    Geometry {
        cylinders: u16::try_from(cylinders_times_heads / heads).unwrap_or(u16::MAX),
        heads: u8::try_from(heads).unwrap_or(16),
        sectors_per_track: u8::try_from(sectors_per_track).unwrap_or(255),
    }
}

/// The geometry and guest size (in sectors) qemu gives a new disk of `requested` sectors
/// without `force_size`: the smallest CHS size not below the request, or the exact request
/// with [`MAX_CHS`] when no geometry is large enough.
pub fn round_up(requested: u64) -> (Geometry, u64) {
    let target = requested.min(MAX_CHS_SECTORS);
    let mut geometry = Geometry {
        cylinders: 0,
        heads: 0,
        sectors_per_track: 0,
    };
    // Each step adds one sector to the request; the geometry grows in steps of at most
    // 16 × 255 sectors, and MAX_CHS covers the capped target, so this ends.
    let mut extra = 0;
    while target > geometry.sectors() {
        geometry = chs_for(target + extra);
        extra += 1;
    }
    if geometry.sectors() == MAX_CHS_SECTORS {
        (geometry, requested)
    } else {
        (geometry, geometry.sectors())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sixty_four_mib_rounds_up_like_qemu() {
        // qemu-img create -f vpc x 64M: 964/8/17, 67125248 bytes.
        let (g, sectors) = round_up(64 << 11);
        assert_eq!(
            g,
            Geometry {
                cylinders: 964,
                heads: 8,
                sectors_per_track: 17
            }
        );
        assert_eq!(sectors * 512, 67_125_248);
    }

    #[test]
    fn forty_mib_and_a_sector_rounds_up_like_qemu() {
        // qemu-img convert -O vpc of a 41943552-byte raw file: 964/5/17.
        let (g, sectors) = round_up(41_943_552 / 512);
        assert_eq!((g.cylinders, g.heads, g.sectors_per_track), (964, 5, 17));
        assert_eq!(sectors, 964 * 5 * 17);
    }

    #[test]
    fn huge_disk_keeps_exact_size_with_max_geometry() {
        let requested = 200 << 21; // 200 GiB in sectors
        let (g, sectors) = round_up(requested);
        assert_eq!(g, MAX_CHS);
        assert_eq!(sectors, requested);
    }

    #[test]
    fn exact_chs_size_is_kept() {
        let (_, sectors) = round_up(964 * 8 * 17);
        assert_eq!(sectors, 964 * 8 * 17);
    }
}

//! The superblock (1024 bytes at byte 1024 of the volume) and group descriptors.

use super::super::GuestFsError;
use crate::formats::fields::{le16, le32};

/// Byte offset of the superblock in the volume, and its size.
pub const SUPERBLOCK_AT: u64 = 1024;
pub const SUPERBLOCK_SIZE: usize = 1024;
/// `s_magic`, and its offset in the superblock.
pub const MAGIC: u16 = 0xEF53;
pub const MAGIC_AT: usize = 0x38;
/// Block size is `1024 << s_log_block_size`; Linux reads up to 64 KiB blocks.
const MIN_BLOCK_SIZE: u64 = 1024;
const MAX_LOG_BLOCK_SIZE: u32 = 6;
/// Inode size of revision 0 filesystems, and the smallest valid one.
const GOOD_OLD_INODE_SIZE: u16 = 128;
/// Group descriptor size without the 64bit feature, and its largest with it.
const DESC_SIZE_32: u16 = 32;
const DESC_SIZE_64_MIN: u16 = 64;
const DESC_SIZE_MAX: u16 = 1024;

/// Incompatible features (`s_feature_incompat`) and whether this reader handles them.
const INCOMPAT_COMPRESSION: u32 = 0x1;
const INCOMPAT_FILETYPE: u32 = 0x2;
const INCOMPAT_RECOVER: u32 = 0x4;
const INCOMPAT_JOURNAL_DEV: u32 = 0x8;
const INCOMPAT_META_BG: u32 = 0x10;
const INCOMPAT_EXTENTS: u32 = 0x40;
const INCOMPAT_64BIT: u32 = 0x80;
const INCOMPAT_MMP: u32 = 0x100;
const INCOMPAT_FLEX_BG: u32 = 0x200;
const INCOMPAT_EA_INODE: u32 = 0x400;
const INCOMPAT_DIRDATA: u32 = 0x1000;
const INCOMPAT_CSUM_SEED: u32 = 0x2000;
const INCOMPAT_LARGEDIR: u32 = 0x4000;
const INCOMPAT_INLINE_DATA: u32 = 0x8000;
const INCOMPAT_ENCRYPT: u32 = 0x10000;
const INCOMPAT_CASEFOLD: u32 = 0x20000;
/// What this reader reads correctly (case-folded names are still matched exactly).
const INCOMPAT_HANDLED: u32 = INCOMPAT_FILETYPE
    | INCOMPAT_META_BG
    | INCOMPAT_EXTENTS
    | INCOMPAT_64BIT
    | INCOMPAT_MMP
    | INCOMPAT_FLEX_BG
    | INCOMPAT_EA_INODE
    | INCOMPAT_CSUM_SEED
    | INCOMPAT_LARGEDIR
    | INCOMPAT_CASEFOLD;
/// Refused features, with the words for the error.
const INCOMPAT_REFUSED: [(u32, &str); 6] = [
    (INCOMPAT_COMPRESSION, "compression"),
    (
        INCOMPAT_RECOVER,
        "a journal that needs recovery (not cleanly unmounted)",
    ),
    (INCOMPAT_JOURNAL_DEV, "the external journal device format"),
    (INCOMPAT_DIRDATA, "dirdata"),
    (INCOMPAT_INLINE_DATA, "inline_data"),
    (INCOMPAT_ENCRYPT, "encryption"),
];
/// `s_feature_compat` sparse_super2 is ignored; `s_feature_ro_compat` sparse_super decides
/// which groups hold superblock backups (needed to place meta_bg descriptors).
const RO_COMPAT_SPARSE_SUPER: u32 = 0x1;

/// The facts of a superblock this reader uses, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Superblock {
    pub block_size: u64,
    pub blocks_count: u64,
    pub first_data_block: u64,
    pub blocks_per_group: u64,
    pub inodes_per_group: u64,
    pub inodes_count: u64,
    pub inode_size: u64,
    pub desc_size: u64,
    pub group_count: u64,
    pub incompat: u32,
    pub ro_compat: u32,
    pub first_meta_bg: u64,
    pub uuid: [u8; 16],
    pub label: String,
}

impl Superblock {
    pub fn has_filetype(&self) -> bool {
        self.incompat & INCOMPAT_FILETYPE != 0
    }

    pub fn has_extents(&self) -> bool {
        self.incompat & INCOMPAT_EXTENTS != 0
    }

    /// The block holding group `group`'s descriptor, and the descriptor's offset within it.
    pub fn descriptor_location(&self, group: u64) -> (u64, u64) {
        let per_block = self.block_size / self.desc_size;
        let meta_group = group / per_block;
        let within = (group % per_block) * self.desc_size;
        let block = if self.incompat & INCOMPAT_META_BG != 0 && meta_group >= self.first_meta_bg {
            // meta_bg: the descriptors of a meta group live in its own first group.
            let first = meta_group * per_block;
            self.group_first_block(first) + u64::from(self.has_super(first))
        } else {
            self.first_data_block + 1 + meta_group
        };
        (block, within)
    }

    fn group_first_block(&self, group: u64) -> u64 {
        self.first_data_block + group * self.blocks_per_group
    }

    /// Whether `group` holds a superblock backup (all do without sparse_super; else 0, 1 and
    /// powers of 3, 5 and 7).
    fn has_super(&self, group: u64) -> bool {
        if self.ro_compat & RO_COMPAT_SPARSE_SUPER == 0 || group <= 1 {
            return true;
        }
        [3u64, 5, 7].iter().any(|&base| {
            let mut n = base;
            while n < group {
                match n.checked_mul(base) {
                    Some(next) => n = next,
                    None => return false,
                }
            }
            n == group
        })
    }

    /// The filesystem UUID in text form (`root=UUID=` names it so).
    pub fn uuid_text(&self) -> String {
        let h = hex::encode(self.uuid);
        format!(
            "{}-{}-{}-{}-{}",
            &h[0..8],
            &h[8..12],
            &h[12..16],
            &h[16..20],
            &h[20..32]
        )
    }
}

/// Parses a superblock; `volume_offset` (the volume's start on the disk) only names it in
/// errors.
pub fn parse(sb: &[u8; SUPERBLOCK_SIZE], volume_offset: u64) -> Result<Superblock, GuestFsError> {
    let at = volume_offset + SUPERBLOCK_AT;
    let bad = |reason: String| GuestFsError::Malformed {
        structure: "superblock",
        offset: at,
        reason,
    };
    let magic = le16(sb, MAGIC_AT);
    if magic != MAGIC {
        return Err(bad(format!("magic {magic:#06x}, not {MAGIC:#06x}")));
    }
    let log_block = le32(sb, 0x18);
    if log_block > MAX_LOG_BLOCK_SIZE {
        return Err(bad(format!("block size 1024 << {log_block}")));
    }
    let block_size = MIN_BLOCK_SIZE << log_block;
    let rev_level = le32(sb, 0x4C);
    let incompat = if rev_level == 0 { 0 } else { le32(sb, 0x60) };
    let ro_compat = if rev_level == 0 { 0 } else { le32(sb, 0x64) };
    if let Some((_, what)) = INCOMPAT_REFUSED.iter().find(|(bit, _)| incompat & bit != 0) {
        return Err(GuestFsError::Unsupported {
            offset: volume_offset,
            what: (*what).to_owned(),
        });
    }
    let unknown = incompat & !INCOMPAT_HANDLED;
    if unknown != 0 {
        return Err(GuestFsError::Unsupported {
            offset: volume_offset,
            what: format!("unknown incompatible features {unknown:#x}"),
        });
    }
    let inode_size = if rev_level == 0 {
        GOOD_OLD_INODE_SIZE
    } else {
        le16(sb, 0x58)
    };
    if inode_size < GOOD_OLD_INODE_SIZE
        || !inode_size.is_power_of_two()
        || u64::from(inode_size) > block_size
    {
        return Err(bad(format!("inode size {inode_size}")));
    }
    let desc_size = if incompat & INCOMPAT_64BIT != 0 {
        let size = le16(sb, 0xFE);
        if !(DESC_SIZE_64_MIN..=DESC_SIZE_MAX).contains(&size) || !size.is_power_of_two() {
            return Err(bad(format!("group descriptor size {size}")));
        }
        size
    } else {
        DESC_SIZE_32
    };
    let blocks_hi = if incompat & INCOMPAT_64BIT != 0 {
        le32(sb, 0x150)
    } else {
        0
    };
    let blocks_count = u64::from(le32(sb, 0x04)) | (u64::from(blocks_hi) << 32);
    let first_data_block = u64::from(le32(sb, 0x14));
    let blocks_per_group = u64::from(le32(sb, 0x20));
    let inodes_per_group = u64::from(le32(sb, 0x28));
    let inodes_count = u64::from(le32(sb, 0x00));
    if blocks_per_group == 0 || inodes_per_group == 0 || first_data_block >= blocks_count {
        return Err(bad(format!(
            "{blocks_count} blocks from {first_data_block}, {blocks_per_group} blocks and {inodes_per_group} inodes per group"
        )));
    }
    if blocks_count.checked_mul(block_size).is_none() {
        return Err(bad(format!("{blocks_count} blocks of {block_size} bytes")));
    }
    let group_count = (blocks_count - first_data_block).div_ceil(blocks_per_group);
    let mut uuid = [0u8; 16];
    uuid.copy_from_slice(&sb[0x68..0x78]);
    let label_bytes = &sb[0x78..0x88];
    let label_len = label_bytes.iter().position(|b| *b == 0).unwrap_or(16);
    Ok(Superblock {
        block_size,
        blocks_count,
        first_data_block,
        blocks_per_group,
        inodes_per_group,
        inodes_count,
        inode_size: u64::from(inode_size),
        desc_size: u64::from(desc_size),
        group_count,
        incompat,
        ro_compat,
        first_meta_bg: u64::from(le32(sb, 0x104)),
        uuid,
        label: String::from_utf8_lossy(&label_bytes[..label_len]).into_owned(),
    })
}

/// The inode table's first block from a group descriptor (`desc` is `desc_size` bytes).
pub fn inode_table(desc: &[u8], desc_size: u64) -> u64 {
    let lo = u64::from(le32(desc, 0x08));
    let hi = if desc_size >= u64::from(DESC_SIZE_64_MIN) {
        u64::from(le32(desc, 0x28))
    } else {
        0
    };
    lo | (hi << 32)
}

#[cfg(test)]
pub(crate) mod unit {
    use super::*;

    /// A 4 KiB-block ext4 superblock: 64bit, extents, filetype, flex_bg; label "root".
    pub fn superblock() -> [u8; SUPERBLOCK_SIZE] {
        let mut s = [0u8; SUPERBLOCK_SIZE];
        s[0x00..0x04].copy_from_slice(&8192u32.to_le_bytes()); // s_inodes_count
        s[0x04..0x08].copy_from_slice(&32768u32.to_le_bytes()); // s_blocks_count_lo
        s[0x14..0x18].copy_from_slice(&0u32.to_le_bytes()); // s_first_data_block
        s[0x18..0x1C].copy_from_slice(&2u32.to_le_bytes()); // s_log_block_size: 4096
        s[0x20..0x24].copy_from_slice(&32768u32.to_le_bytes()); // s_blocks_per_group
        s[0x28..0x2C].copy_from_slice(&8192u32.to_le_bytes()); // s_inodes_per_group
        s[0x38..0x3A].copy_from_slice(&MAGIC.to_le_bytes()); // s_magic
        s[0x4C..0x50].copy_from_slice(&1u32.to_le_bytes()); // s_rev_level: dynamic
        s[0x58..0x5A].copy_from_slice(&256u16.to_le_bytes()); // s_inode_size
        s[0x60..0x64].copy_from_slice(&0x2C2u32.to_le_bytes()); // incompat: filetype extents 64bit flex_bg
        s[0x68..0x78].copy_from_slice(&[0xAB; 16]); // s_uuid
        s[0x78..0x7C].copy_from_slice(b"root"); // s_volume_name
        s[0xFE..0x100].copy_from_slice(&64u16.to_le_bytes()); // s_desc_size
        s
    }

    #[test]
    fn a_valid_superblock_gives_its_geometry() {
        let sb = parse(&superblock(), 0).unwrap();
        assert_eq!(sb.block_size, 4096);
        assert_eq!(sb.group_count, 1);
        assert_eq!(sb.inode_size, 256);
        assert_eq!(sb.desc_size, 64);
        assert_eq!(sb.label, "root");
        assert!(sb.has_extents() && sb.has_filetype());
        assert_eq!(sb.descriptor_location(0), (1, 0));
    }

    #[test]
    fn one_byte_off_in_the_magic_is_not_ext4() {
        let mut s = superblock();
        s[0x38] ^= 1;
        assert!(parse(&s, 0).unwrap_err().to_string().contains("magic"));
    }

    #[test]
    fn refused_and_unknown_incompatible_features_are_named() {
        for (byte, word) in [
            (0x80u8, "inline_data"),
            (0x04, "recovery"),
            (0x10, "dirdata"),
        ] {
            let mut s = superblock();
            // inline_data is 0x8000 (byte 0x61), recover 0x4 (byte 0x60), dirdata 0x1000.
            match word {
                "recovery" => s[0x60] |= byte,
                _ => s[0x61] |= byte,
            }
            let err = parse(&s, 0).unwrap_err().to_string();
            assert!(err.contains(word), "{err}");
        }
        let mut s = superblock();
        s[0x63] = 0x80; // an incompat bit nobody defined
        let err = parse(&s, 0).unwrap_err().to_string();
        assert!(err.contains("unknown incompatible features"), "{err}");
    }

    #[test]
    fn impossible_geometry_is_refused() {
        let mut s = superblock();
        s[0x18] = 7; // 128 KiB blocks
        assert!(parse(&s, 0).is_err());
        let mut s = superblock();
        s[0x58] = 0x7F; // inode size 383
        assert!(parse(&s, 0).is_err());
        let mut s = superblock();
        s[0x20..0x24].fill(0); // no blocks per group
        assert!(parse(&s, 0).is_err());
        let mut s = superblock();
        s[0xFE] = 48; // 64bit descriptors of 48 bytes
        assert!(parse(&s, 0).is_err());
    }

    /// Fuzz crash ext4/crash-4c55f69e: a 64bit superblock with `s_blocks_count_hi`
    /// 0x7d7d7d7d and 1 KiB blocks put an inode table past 2^64 bytes, and the inode's offset
    /// overflowed. Such a size is refused when the superblock is read.
    #[test]
    fn a_filesystem_larger_than_2_64_bytes_is_refused() {
        let mut s = superblock();
        s[0x18..0x1C].copy_from_slice(&0u32.to_le_bytes()); // 1 KiB blocks
        s[0x14..0x18].copy_from_slice(&1u32.to_le_bytes()); // s_first_data_block
        s[0x150..0x154].copy_from_slice(&0x7d7d_7d7du32.to_le_bytes()); // s_blocks_count_hi
        let err = parse(&s, 0).unwrap_err().to_string();
        assert!(err.contains("blocks of 1024 bytes"), "{err}");
    }
}

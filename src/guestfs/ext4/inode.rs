//! Inodes: the 128 bytes every revision has (mode, size, flags, the 60-byte `i_block`).

use crate::formats::fields::{le16, le32};

/// Bytes of an inode this reader uses (the revision 0 inode; larger inodes only add fields).
pub const INODE_BYTES: usize = 128;
/// The root directory's inode number.
pub const ROOT: u32 = 2;
/// Length of `i_block`: 15 block pointers, an extent tree root, or a fast symlink's target.
pub const I_BLOCK_BYTES: usize = 60;

const S_IFMT: u16 = 0xF000;
const S_IFREG: u16 = 0x8000;
const S_IFDIR: u16 = 0x4000;
const S_IFLNK: u16 = 0xA000;
/// `i_flags`: the inode's blocks are an extent tree.
const EXTENTS_FL: u32 = 0x0008_0000;
/// `i_flags`: the data is inside the inode (refused with the inline_data feature; checked
/// here too in case the flag appears without it).
const INLINE_DATA_FL: u32 = 0x1000_0000;

/// What an inode is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    File,
    Directory,
    Symlink,
    Other,
}

/// An inode's fields this reader uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Inode {
    pub number: u32,
    pub mode: u16,
    pub size: u64,
    pub flags: u32,
    /// `i_blocks_lo`: 512-byte sectors allocated (data, tree nodes, extended attribute block).
    pub sectors: u32,
    /// `i_file_acl`: the extended attribute block, 0 if none.
    pub file_acl: u64,
    pub block: [u8; I_BLOCK_BYTES],
}

impl Inode {
    /// Parses the first [`INODE_BYTES`] of inode `number`.
    pub fn parse(number: u32, raw: &[u8; INODE_BYTES]) -> Inode {
        let mut block = [0u8; I_BLOCK_BYTES];
        block.copy_from_slice(&raw[0x28..0x28 + I_BLOCK_BYTES]);
        Inode {
            number,
            mode: le16(raw, 0x00),
            size: u64::from(le32(raw, 0x04)) | (u64::from(le32(raw, 0x6C)) << 32),
            flags: le32(raw, 0x20),
            sectors: le32(raw, 0x1C),
            file_acl: u64::from(le32(raw, 0x68)) | (u64::from(le16(raw, 0x76)) << 32),
            block,
        }
    }

    pub fn kind(&self) -> Kind {
        match self.mode & S_IFMT {
            S_IFREG => Kind::File,
            S_IFDIR => Kind::Directory,
            S_IFLNK => Kind::Symlink,
            _ => Kind::Other,
        }
    }

    pub fn uses_extents(&self) -> bool {
        self.flags & EXTENTS_FL != 0
    }

    pub fn has_inline_data(&self) -> bool {
        self.flags & INLINE_DATA_FL != 0
    }

    /// A symbolic link whose target is stored in `i_block` (no data block allocated, as the
    /// kernel's `ext4_inode_is_fast_symlink` decides: `i_blocks` counts only an extended
    /// attribute block, if any).
    pub fn is_fast_symlink(&self, block_size: u64) -> bool {
        let xattr_sectors = if self.file_acl != 0 {
            block_size / 512
        } else {
            0
        };
        self.kind() == Kind::Symlink
            && u64::from(self.sectors) <= xattr_sectors
            && self.size < I_BLOCK_BYTES as u64
    }
}

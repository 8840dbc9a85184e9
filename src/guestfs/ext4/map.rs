//! Where a file's blocks are: extent trees (ext4) and classic block maps (ext2/3), walked in
//! logical order one run at a time, reading one tree node (or indirect block) at a time.
//!
//! The walk is bounded: an extent tree deeper than [`MAX_EXTENT_DEPTH`] or a child whose depth
//! is not its parent's minus one is refused, at most [`MAX_NODES`] nodes are read per file,
//! and extents must move forwards (no overlap): a cycle or a shared subtree ends in an error.

use super::super::{GuestFsError, Volume};
use super::inode::{Inode, I_BLOCK_BYTES};
use super::superblock::Superblock;
use crate::formats::fields::{le16, le32};

/// `eh_magic`.
pub const EXTENT_MAGIC: u16 = 0xF30A;
/// Header and entry size of extent tree nodes.
const EXTENT_ENTRY: usize = 12;
/// ext4 trees are at most 5 levels below the inode.
pub const MAX_EXTENT_DEPTH: u16 = 5;
/// `ee_len` above this marks an unwritten (preallocated, reads as zeroes) extent.
const EXTENT_INIT_MAX: u16 = 32768;
/// Tree nodes or indirect blocks read per file at most (a 4 KiB-block indirect map of 65 536
/// blocks covers 256 GiB; an extent leaf block covers up to 340 × 128 MiB).
pub const MAX_NODES: u64 = 65536;
/// Direct block pointers in `i_block`, then the indirect, double and triple indirect ones.
const DIRECT_BLOCKS: usize = 12;

/// A run of a file's logical blocks: stored at `physical..` or, when `None`, reading as zeroes
/// (an unwritten extent). Logical blocks that no run covers are holes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Run {
    pub logical: u64,
    pub physical: Option<u64>,
    pub len: u64,
}

/// A parsed extent node header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExtentHeader {
    pub entries: u16,
    pub depth: u16,
}

/// Parses and checks an extent node header in `node` (the 60-byte `i_block` or a block).
pub fn extent_header(node: &[u8]) -> Result<ExtentHeader, String> {
    if node.len() < EXTENT_ENTRY {
        return Err("node shorter than its header".into());
    }
    let magic = le16(node, 0);
    if magic != EXTENT_MAGIC {
        return Err(format!(
            "extent magic {magic:#06x}, not {EXTENT_MAGIC:#06x}"
        ));
    }
    let entries = le16(node, 2);
    let max = le16(node, 4);
    let depth = le16(node, 6);
    let room = (node.len() - EXTENT_ENTRY) / EXTENT_ENTRY;
    if entries > max || usize::from(max) > room {
        return Err(format!(
            "{entries} entries of at most {max} in a node with room for {room}"
        ));
    }
    if depth > MAX_EXTENT_DEPTH {
        return Err(format!("depth {depth}"));
    }
    Ok(ExtentHeader { entries, depth })
}

/// Walks one file's runs in order.
pub enum Mapper {
    Extents(ExtentWalk),
    BlockMap(BlockMapWalk),
}

impl Mapper {
    /// The walk over `inode`'s blocks, up to logical block `limit` (exclusive), on a volume
    /// starting at `volume_start` on the disk (which errors name).
    pub fn new(
        sb: &Superblock,
        inode: &Inode,
        limit: u64,
        volume_start: u64,
    ) -> Result<Mapper, GuestFsError> {
        if inode.uses_extents() {
            ExtentWalk::new(sb, inode, volume_start).map(Mapper::Extents)
        } else {
            Ok(Mapper::BlockMap(BlockMapWalk::new(
                sb,
                inode,
                limit,
                volume_start,
            )))
        }
    }

    /// The next run, or `None` at the end.
    pub fn next(&mut self, vol: &mut Volume<'_>) -> Result<Option<Run>, GuestFsError> {
        match self {
            Mapper::Extents(walk) => walk.next(vol),
            Mapper::BlockMap(walk) => walk.next(vol),
        }
    }
}

struct Frame {
    /// Where the node is on the disk (the volume's start for the root in the inode).
    at: u64,
    node: Vec<u8>,
    next: usize,
    entries: usize,
    depth: u16,
}

pub struct ExtentWalk {
    stack: Vec<Frame>,
    block_size: u64,
    blocks_count: u64,
    inode: u32,
    nodes: u64,
    /// The first logical block the next leaf extent may start at.
    next_logical: u64,
    volume_start: u64,
}

impl ExtentWalk {
    fn new(sb: &Superblock, inode: &Inode, volume_start: u64) -> Result<ExtentWalk, GuestFsError> {
        let root = inode.block.to_vec();
        let header = extent_header(&root).map_err(|reason| GuestFsError::Malformed {
            structure: "extent tree root",
            offset: volume_start,
            reason: format!("inode {}: {reason}", inode.number),
        })?;
        Ok(ExtentWalk {
            stack: vec![Frame {
                at: volume_start,
                node: root,
                next: 0,
                entries: usize::from(header.entries),
                depth: header.depth,
            }],
            block_size: sb.block_size,
            blocks_count: sb.blocks_count,
            inode: inode.number,
            nodes: 0,
            next_logical: 0,
            volume_start,
        })
    }

    fn next(&mut self, vol: &mut Volume<'_>) -> Result<Option<Run>, GuestFsError> {
        loop {
            let Some(frame) = self.stack.last_mut() else {
                return Ok(None);
            };
            if frame.next >= frame.entries {
                self.stack.pop();
                continue;
            }
            let at = EXTENT_ENTRY * (frame.next + 1);
            let entry = &frame.node[at..at + EXTENT_ENTRY];
            frame.next += 1;
            let logical = u64::from(le32(entry, 0));
            if frame.depth == 0 {
                let raw_len = le16(entry, 4);
                let start = u64::from(le32(entry, 8)) | (u64::from(le16(entry, 6)) << 32);
                let (len, written) = if raw_len > EXTENT_INIT_MAX {
                    (raw_len - EXTENT_INIT_MAX, false)
                } else {
                    (raw_len, true)
                };
                let len = u64::from(len);
                if len == 0
                    || start
                        .checked_add(len)
                        .is_none_or(|end| end > self.blocks_count)
                {
                    return Err(self.bad(
                        "extent",
                        format!(
                            "{len} blocks at {start} (the filesystem has {})",
                            self.blocks_count
                        ),
                    ));
                }
                if logical < self.next_logical {
                    return Err(self.bad(
                        "extent",
                        format!(
                            "logical block {logical} after an extent ending at {}",
                            self.next_logical
                        ),
                    ));
                }
                self.next_logical = logical + len;
                return Ok(Some(Run {
                    logical,
                    physical: written.then_some(start),
                    len,
                }));
            }
            let child = u64::from(le32(entry, 4)) | (u64::from(le16(entry, 8)) << 32);
            let parent_depth = frame.depth;
            self.nodes += 1;
            if self.nodes > MAX_NODES {
                return Err(GuestFsError::TooMuchWork {
                    what: "extent tree walk",
                    limit: MAX_NODES,
                });
            }
            if child >= self.blocks_count {
                return Err(self.bad("extent index", format!("child block {child}")));
            }
            let mut node = vec![0u8; self.block_size as usize];
            vol.read_at(child * self.block_size, &mut node)?;
            let header = extent_header(&node)
                .map_err(|reason| self.bad("extent node", format!("block {child}: {reason}")))?;
            if header.depth + 1 != parent_depth {
                return Err(self.bad(
                    "extent node",
                    format!(
                        "block {child} has depth {}, under a node of depth {parent_depth}",
                        header.depth
                    ),
                ));
            }
            self.stack.push(Frame {
                at: self.volume_start + child * self.block_size,
                node,
                next: 0,
                entries: usize::from(header.entries),
                depth: header.depth,
            });
        }
    }

    fn bad(&self, structure: &'static str, reason: String) -> GuestFsError {
        GuestFsError::Malformed {
            structure,
            offset: self
                .stack
                .last()
                .map_or(self.volume_start, |frame| frame.at),
            reason: format!("inode {}: {reason}", self.inode),
        }
    }
}

/// A pending pointer of a block map: `level` 0 is a data block, 1–3 an indirect block whose
/// pointers cover `per_block^(level-1)` blocks each, starting at `logical`.
#[derive(Clone, Copy)]
struct Pointer {
    block: u32,
    level: u8,
    logical: u64,
}

pub struct BlockMapWalk {
    /// Pointers still to visit, the next on top.
    pending: Vec<Pointer>,
    block_size: u64,
    blocks_count: u64,
    limit: u64,
    inode: u32,
    nodes: u64,
    volume_start: u64,
}

impl BlockMapWalk {
    fn new(sb: &Superblock, inode: &Inode, limit: u64, volume_start: u64) -> BlockMapWalk {
        let per_block = sb.block_size / 4;
        let pointer = |i: usize| le32(&inode.block, 4 * i);
        let direct = DIRECT_BLOCKS as u64;
        let mut pending = vec![
            Pointer {
                block: pointer(14),
                level: 3,
                logical: direct + per_block + per_block * per_block,
            },
            Pointer {
                block: pointer(13),
                level: 2,
                logical: direct + per_block,
            },
            Pointer {
                block: pointer(12),
                level: 1,
                logical: direct,
            },
        ];
        pending.extend((0..DIRECT_BLOCKS).rev().map(|i| Pointer {
            block: pointer(i),
            level: 0,
            logical: i as u64,
        }));
        debug_assert_eq!(I_BLOCK_BYTES, 4 * (DIRECT_BLOCKS + 3));
        BlockMapWalk {
            pending,
            block_size: sb.block_size,
            blocks_count: sb.blocks_count,
            limit,
            inode: inode.number,
            nodes: 0,
            volume_start,
        }
    }

    fn next(&mut self, vol: &mut Volume<'_>) -> Result<Option<Run>, GuestFsError> {
        let mut run: Option<Run> = None;
        while let Some(pointer) = self.pending.last().copied() {
            if pointer.logical >= self.limit || pointer.block == 0 {
                self.pending.pop();
                if pointer.block == 0 && run.is_some() {
                    break; // a hole ends the run
                }
                continue;
            }
            let block = u64::from(pointer.block);
            if block >= self.blocks_count {
                return Err(GuestFsError::Malformed {
                    structure: "block map",
                    offset: self.volume_start,
                    reason: format!(
                        "inode {}: block {block} (the filesystem has {})",
                        self.inode, self.blocks_count
                    ),
                });
            }
            if pointer.level == 0 {
                match &mut run {
                    None => {
                        run = Some(Run {
                            logical: pointer.logical,
                            physical: Some(block),
                            len: 1,
                        })
                    }
                    Some(r)
                        if r.logical + r.len == pointer.logical
                            && r.physical.map(|p| p + r.len) == Some(block) =>
                    {
                        r.len += 1
                    }
                    Some(_) => break,
                }
                self.pending.pop();
                continue;
            }
            if run.is_some() {
                break; // hand out the run before reading the next indirect block
            }
            self.pending.pop();
            self.expand(vol, pointer)?;
        }
        Ok(run)
    }

    /// Reads an indirect block and queues its pointers.
    fn expand(&mut self, vol: &mut Volume<'_>, pointer: Pointer) -> Result<(), GuestFsError> {
        self.nodes += 1;
        if self.nodes > MAX_NODES {
            return Err(GuestFsError::TooMuchWork {
                what: "block map walk",
                limit: MAX_NODES,
            });
        }
        let mut node = vec![0u8; self.block_size as usize];
        vol.read_at(u64::from(pointer.block) * self.block_size, &mut node)?;
        let per_block = self.block_size / 4;
        let span = per_block.pow(u32::from(pointer.level) - 1);
        for (i, bytes) in node.chunks_exact(4).enumerate().rev() {
            self.pending.push(Pointer {
                block: le32(bytes, 0),
                level: pointer.level - 1,
                logical: pointer.logical + i as u64 * span,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod unit {
    use super::*;

    /// An inode's extent root: header (magic, 1 entry, max 4, depth 0), one leaf extent of
    /// 3 blocks from logical 0 at physical block 1000.
    fn root() -> [u8; 60] {
        let mut r = [0u8; 60];
        r[0..2].copy_from_slice(&EXTENT_MAGIC.to_le_bytes()); // eh_magic
        r[2..4].copy_from_slice(&1u16.to_le_bytes()); // eh_entries
        r[4..6].copy_from_slice(&4u16.to_le_bytes()); // eh_max
        r[6..8].copy_from_slice(&0u16.to_le_bytes()); // eh_depth
        r[12..16].copy_from_slice(&0u32.to_le_bytes()); // ee_block
        r[16..18].copy_from_slice(&3u16.to_le_bytes()); // ee_len
        r[18..20].copy_from_slice(&0u16.to_le_bytes()); // ee_start_hi
        r[20..24].copy_from_slice(&1000u32.to_le_bytes()); // ee_start_lo
        r
    }

    #[test]
    fn a_valid_extent_header_is_read() {
        assert_eq!(
            extent_header(&root()).unwrap(),
            ExtentHeader {
                entries: 1,
                depth: 0
            }
        );
    }

    #[test]
    fn one_byte_off_in_an_extent_header_is_refused() {
        let mut r = root();
        r[0] ^= 1; // magic
        assert!(extent_header(&r).unwrap_err().contains("magic"));
        let mut r = root();
        r[2] = 5; // more entries than max
        assert!(extent_header(&r).is_err());
        let mut r = root();
        r[4] = 5; // max larger than the 60-byte root holds (4)
        assert!(extent_header(&r).is_err());
        let mut r = root();
        r[6] = 6; // depth beyond 5
        assert!(extent_header(&r).is_err());
    }
}

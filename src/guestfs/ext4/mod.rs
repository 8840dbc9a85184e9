//! A read-only ext2/3/4 reader over a [`Volume`].
//!
//! What it reads: the superblock (refusing incompatible features it cannot honour, such as
//! inline data, encryption, compression or a journal that needs recovery), 32- and 64-bit group
//! descriptors (meta_bg included), inodes, extent trees of any depth and classic indirect block
//! maps, directories by a linear scan of their blocks (which also reads htree directories),
//! fast and block symbolic links. Paths resolve as the kernel resolves them inside a chroot at
//! the filesystem's root: `..` of the root is the root, an absolute link restarts at the root,
//! at most [`MAX_SYMLINKS`] links are followed.
//!
//! What it does not do: the journal is not replayed (a filesystem needing recovery is
//! refused), checksums are not verified (every field is bounds-checked instead), extended
//! attributes are not read.
//!
//! Files stream into a `Write` through one buffer of [`COPY_BUFFER`] bytes; holes and unwritten
//! extents are written as zeroes. Nothing is sized by the image: node buffers are one block
//! (at most 64 KiB), symbolic link targets are capped at [`MAX_SYMLINK_LEN`], directory scans
//! at [`MAX_DIR_BLOCKS`] blocks.

mod dir;
mod inode;
mod map;
mod superblock;

use std::io::Write;

pub use inode::{Inode, Kind, ROOT};
pub use map::{Mapper, Run, MAX_NODES};
pub use superblock::{Superblock, MAGIC, MAGIC_AT, SUPERBLOCK_AT, SUPERBLOCK_SIZE};

use super::{GuestFsError, Volume};
use inode::INODE_BYTES;

/// Symbolic links followed while resolving one path (Linux's `MAXSYMLINKS`).
pub const MAX_SYMLINKS: u32 = 40;
/// Longest symbolic link target read (Linux's `PATH_MAX`).
pub const MAX_SYMLINK_LEN: u64 = 4096;
/// Path components looked up while resolving one path, links included.
pub const MAX_PATH_STEPS: u32 = 4096;
/// Directory blocks scanned per path resolution or listing (256 MiB of 4 KiB blocks; real
/// directories are far smaller).
pub const MAX_DIR_BLOCKS: u64 = 65536;
/// The copy buffer: 64 blocks of 4 KiB (a multiple of every block size).
pub const COPY_BUFFER: usize = 256 * 1024;
static ZEROES: [u8; 64 * 1024] = [0; 64 * 1024];

/// An open ext2/3/4 filesystem.
pub struct Ext4<'a> {
    vol: Volume<'a>,
    sb: Superblock,
}

/// Whether `vol` starts with an ext2/3/4 superblock (the magic only).
pub fn probe(vol: &mut Volume<'_>) -> Result<bool, GuestFsError> {
    let mut magic = [0u8; 2];
    if vol.len() < SUPERBLOCK_AT + SUPERBLOCK_SIZE as u64 {
        return Ok(false);
    }
    vol.read_at(SUPERBLOCK_AT + MAGIC_AT as u64, &mut magic)?;
    Ok(u16::from_le_bytes(magic) == MAGIC)
}

impl<'a> Ext4<'a> {
    /// Reads and checks the superblock.
    pub fn open(mut vol: Volume<'a>) -> Result<Ext4<'a>, GuestFsError> {
        let mut raw = [0u8; SUPERBLOCK_SIZE];
        vol.read_at(SUPERBLOCK_AT, &mut raw)?;
        let sb = superblock::parse(&raw, vol.range().0)?;
        Ok(Ext4 { vol, sb })
    }

    pub fn superblock(&self) -> &Superblock {
        &self.sb
    }

    fn bad(&self, structure: &'static str, offset: u64, reason: String) -> GuestFsError {
        GuestFsError::Malformed {
            structure,
            offset: self.vol.range().0.saturating_add(offset),
            reason,
        }
    }

    /// Reads inode `number`.
    pub fn inode(&mut self, number: u32) -> Result<Inode, GuestFsError> {
        let sb = &self.sb;
        if number == 0 || u64::from(number) > sb.inodes_count {
            return Err(self.bad(
                "inode number",
                0,
                format!("{number} (the filesystem has {})", sb.inodes_count),
            ));
        }
        let index = u64::from(number - 1);
        let group = index / sb.inodes_per_group;
        if group >= sb.group_count {
            return Err(self.bad(
                "inode number",
                0,
                format!("{number} is in group {group} of {}", sb.group_count),
            ));
        }
        let (desc_block, within) = sb.descriptor_location(group);
        let desc_at = desc_block
            .checked_mul(sb.block_size)
            .and_then(|at| at.checked_add(within))
            .ok_or_else(|| self.bad("group descriptor", 0, format!("group {group}")))?;
        let mut desc = [0u8; 64];
        let desc_len = (sb.desc_size as usize).min(desc.len());
        self.vol.read_at(desc_at, &mut desc[..desc_len])?;
        let table = superblock::inode_table(&desc, sb.desc_size);
        if table >= sb.blocks_count {
            return Err(self.bad(
                "group descriptor",
                desc_at,
                format!("group {group}: inode table at block {table}"),
            ));
        }
        let at = (index % sb.inodes_per_group)
            .checked_mul(sb.inode_size)
            .and_then(|within| within.checked_add(table * sb.block_size))
            .ok_or_else(|| self.bad("inode number", 0, format!("{number}")))?;
        let mut raw = [0u8; INODE_BYTES];
        self.vol.read_at(at, &mut raw)?;
        Ok(Inode::parse(number, &raw))
    }

    /// Resolves `path` from the root, following every symbolic link (the last one too).
    pub fn resolve(&mut self, path: &str) -> Result<Inode, GuestFsError> {
        self.walk(path, true)
    }

    /// Resolves `path` from the root without following a link in its last component.
    pub fn resolve_nofollow(&mut self, path: &str) -> Result<Inode, GuestFsError> {
        self.walk(path, false)
    }

    fn walk(&mut self, path: &str, follow_last: bool) -> Result<Inode, GuestFsError> {
        let mut pending: Vec<Vec<u8>> = components(path.as_bytes());
        let mut current = self.inode(ROOT)?;
        let mut links = 0;
        let mut steps = 0;
        let mut budget = MAX_DIR_BLOCKS;
        while let Some(name) = pending.pop() {
            steps += 1;
            if steps > MAX_PATH_STEPS {
                return Err(GuestFsError::TooMuchWork {
                    what: "path resolution",
                    limit: u64::from(MAX_PATH_STEPS),
                });
            }
            if current.kind() != Kind::Directory {
                return Err(GuestFsError::NotADirectory { path: path.into() });
            }
            let number = self
                .find_entry(&current, &name, &mut budget)?
                .ok_or_else(|| GuestFsError::NotFound { path: path.into() })?;
            let found = self.inode(number)?;
            if found.kind() == Kind::Symlink && (follow_last || !pending.is_empty()) {
                links += 1;
                if links > MAX_SYMLINKS {
                    return Err(GuestFsError::SymlinkLoop { path: path.into() });
                }
                let target = self.read_link(&found)?;
                if target.is_empty() {
                    return Err(GuestFsError::NotFound { path: path.into() });
                }
                if target.first() == Some(&b'/') {
                    current = self.inode(ROOT)?;
                }
                pending.extend(components(&target));
                continue;
            }
            current = found;
        }
        Ok(current)
    }

    /// The target of a symbolic link.
    pub fn read_link(&mut self, inode: &Inode) -> Result<Vec<u8>, GuestFsError> {
        if inode.kind() != Kind::Symlink {
            return Err(self.bad(
                "symbolic link",
                0,
                format!("inode {} is not a link", inode.number),
            ));
        }
        if inode.size > MAX_SYMLINK_LEN {
            return Err(self.bad(
                "symbolic link",
                0,
                format!("inode {}: target of {} bytes", inode.number, inode.size),
            ));
        }
        if inode.is_fast_symlink(self.sb.block_size) {
            return Ok(inode.block[..inode.size as usize].to_vec());
        }
        let mut target = Vec::with_capacity(inode.size as usize);
        self.copy(inode, &mut target)?;
        Ok(target)
    }

    /// The inode of `name` in directory `dir`, if present.
    fn find_entry(
        &mut self,
        dir: &Inode,
        name: &[u8],
        budget: &mut u64,
    ) -> Result<Option<u32>, GuestFsError> {
        let mut found = None;
        self.scan(dir, budget, &mut |entry_name, inode| {
            if entry_name == name {
                found = Some(inode);
                false
            } else {
                true
            }
        })?;
        Ok(found)
    }

    /// Calls `f(name, inode)` for each live entry of directory `dir` until it returns false.
    pub fn for_each_entry(
        &mut self,
        dir: &Inode,
        f: &mut dyn FnMut(&[u8], u32) -> bool,
    ) -> Result<(), GuestFsError> {
        self.scan(dir, &mut { MAX_DIR_BLOCKS }, f)
    }

    /// [`Ext4::for_each_entry`], reading at most `budget` blocks (decremented as they are
    /// read), so that one path resolution scans at most [`MAX_DIR_BLOCKS`] in all.
    fn scan(
        &mut self,
        dir: &Inode,
        budget: &mut u64,
        f: &mut dyn FnMut(&[u8], u32) -> bool,
    ) -> Result<(), GuestFsError> {
        if dir.kind() != Kind::Directory {
            return Err(self.bad(
                "directory",
                0,
                format!("inode {} is not a directory", dir.number),
            ));
        }
        if dir.has_inline_data() {
            return Err(GuestFsError::Unsupported {
                offset: self.vol.range().0,
                what: format!("inline data (directory inode {})", dir.number),
            });
        }
        let bs = self.sb.block_size;
        let limit = dir.size.div_ceil(bs);
        let mut mapper = Mapper::new(&self.sb, dir, limit, self.vol.range().0)?;
        let mut block = vec![0u8; bs as usize];
        while let Some(run) = mapper.next(&mut self.vol)? {
            let Some(physical) = run.physical else {
                continue;
            };
            let len = run.len.min(limit.saturating_sub(run.logical));
            for i in 0..len {
                if *budget == 0 {
                    return Err(GuestFsError::TooMuchWork {
                        what: "directory scan",
                        limit: MAX_DIR_BLOCKS,
                    });
                }
                *budget -= 1;
                let at = (physical + i) * bs;
                self.vol.read_at(at, &mut block)?;
                let entries = dir::entries(&block, self.sb.has_filetype()).map_err(|e| {
                    self.bad(
                        "directory entry",
                        at + e.offset as u64,
                        format!("directory inode {}: {}", dir.number, e.reason),
                    )
                })?;
                for entry in entries {
                    if !f(entry.name, entry.inode) {
                        return Ok(());
                    }
                }
            }
        }
        Ok(())
    }

    /// Calls `f` with each run of `inode`'s block map (up to its size), in logical order.
    pub fn for_each_run(
        &mut self,
        inode: &Inode,
        f: &mut dyn FnMut(Run),
    ) -> Result<(), GuestFsError> {
        let limit = inode.size.div_ceil(self.sb.block_size);
        let mut mapper = Mapper::new(&self.sb, inode, limit, self.vol.range().0)?;
        while let Some(run) = mapper.next(&mut self.vol)? {
            if run.logical >= limit {
                break;
            }
            f(run);
        }
        Ok(())
    }

    /// Writes the bytes of `inode` (a regular file or a block symlink) to `out`; holes and
    /// unwritten extents as zeroes. Returns the bytes written (the inode's size). The caller
    /// bounds the size it accepts: a sparse file may be large.
    pub fn copy(&mut self, inode: &Inode, out: &mut dyn Write) -> Result<u64, GuestFsError> {
        if inode.has_inline_data() {
            return Err(GuestFsError::Unsupported {
                offset: self.vol.range().0,
                what: format!("inline data (inode {})", inode.number),
            });
        }
        let bs = self.sb.block_size;
        let size = inode.size;
        if size == 0 {
            return Ok(0);
        }
        let limit = size.div_ceil(bs);
        let mut mapper = Mapper::new(&self.sb, inode, limit, self.vol.range().0)?;
        let mut buf = vec![0u8; COPY_BUFFER];
        let mut pos = 0u64;
        while let Some(run) = mapper.next(&mut self.vol)? {
            if run.logical >= limit {
                break;
            }
            let start = run.logical * bs;
            if start < pos {
                return Err(self.bad(
                    "block mapping",
                    0,
                    format!(
                        "inode {}: logical block {} comes after byte {pos}",
                        inode.number, run.logical
                    ),
                ));
            }
            write_zeroes(out, start - pos)?;
            pos = start;
            let end = (run.logical + run.len).saturating_mul(bs).min(size);
            match run.physical {
                None => write_zeroes(out, end - pos)?,
                Some(physical) => {
                    let mut disk = physical * bs;
                    while pos < end {
                        let n = ((end - pos) as usize).min(buf.len());
                        self.vol.read_at(disk, &mut buf[..n])?;
                        out.write_all(&buf[..n]).map_err(write_error)?;
                        pos += n as u64;
                        disk += n as u64;
                    }
                }
            }
            pos = end;
        }
        write_zeroes(out, size - pos)?;
        Ok(size)
    }

    /// The whole content of a regular file of at most `max` bytes.
    pub fn read_file(
        &mut self,
        inode: &Inode,
        max: u64,
        path: &str,
    ) -> Result<Vec<u8>, GuestFsError> {
        if inode.kind() != Kind::File {
            return Err(GuestFsError::NotAFile { path: path.into() });
        }
        if inode.size > max {
            return Err(GuestFsError::TooLarge {
                path: path.into(),
                size: inode.size,
                limit: max,
            });
        }
        let mut bytes = Vec::with_capacity(inode.size as usize);
        self.copy(inode, &mut bytes)?;
        Ok(bytes)
    }
}

fn write_error(source: std::io::Error) -> GuestFsError {
    GuestFsError::Write {
        what: "file",
        source,
    }
}

fn write_zeroes(out: &mut dyn Write, mut len: u64) -> Result<(), GuestFsError> {
    while len > 0 {
        let n = (len as usize).min(ZEROES.len());
        out.write_all(&ZEROES[..n]).map_err(write_error)?;
        len -= n as u64;
    }
    Ok(())
}

/// A path's components, last first (a stack to pop); empty ones and `.` dropped.
fn components(path: &[u8]) -> Vec<Vec<u8>> {
    path.split(|b| *b == b'/')
        .filter(|c| !c.is_empty() && *c != b".")
        .rev()
        .map(<[u8]>::to_vec)
        .collect()
}

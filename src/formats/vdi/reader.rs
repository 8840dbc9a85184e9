//! Reading dynamic and static VDIs through their block map.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::header::{VdiHeader, BLOCK_SIZE, HEADER_AREA, ZERO};
use crate::formats::holes;
use crate::formats::{DiskFormat, DiskReader, FormatError, ImageInfo, Mapping};

/// Longest data run one `map` answer covers, in blocks: keeps each answer cheap.
const MAX_DATA_RUN_BLOCKS: usize = 64;

/// Header and block map of an opened VDI.
pub struct Layout {
    pub header: VdiHeader,
    pub bmap: Vec<u32>,
    pub file_len: u64,
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> FormatError + '_ {
    move |source| FormatError::io(path, source)
}

/// Reads and validates the header and the block map (without checking the entries).
pub fn load(path: &Path, file: &File) -> Result<Layout, FormatError> {
    let file_len = crate::io::sys::file_len(file).map_err(io(path))?;
    if file_len < HEADER_AREA as u64 {
        return Err(FormatError::malformed(
            path,
            "vdi",
            0,
            "file shorter than a VDI header",
        ));
    }
    let mut area = [0u8; HEADER_AREA];
    file.read_exact_at(&mut area, 0).map_err(io(path))?;
    let header = VdiHeader::parse(&area).map_err(|e| e.at(path))?;
    let map_len = u64::from(header.blocks_in_image) * 4;
    if u64::from(header.offset_bmap) + map_len > file_len {
        return Err(FormatError::malformed(
            path,
            "vdi",
            u64::from(header.offset_bmap),
            format!(
                "block map of {} entries runs past the end of the file",
                header.blocks_in_image
            ),
        ));
    }
    // Bounded by MAX_BLOCKS (header parser) and by the file length.
    let mut raw = vec![0u8; map_len as usize];
    file.read_exact_at(&mut raw, u64::from(header.offset_bmap))
        .map_err(io(path))?;
    let bmap = raw
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    Ok(Layout {
        header,
        bmap,
        file_len,
    })
}

impl Layout {
    /// File offset of block number `entry` (a block map value below [`ZERO`]).
    pub fn host_offset(&self, entry: u32) -> u64 {
        u64::from(self.header.offset_data) + u64::from(entry) * u64::from(BLOCK_SIZE)
    }
}

/// Guest view of a VDI.
pub struct VdiReader {
    path: PathBuf,
    file: File,
    layout: Layout,
}

impl VdiReader {
    pub fn new(path: &Path, file: File) -> Result<VdiReader, FormatError> {
        let layout = load(path, &file)?;
        for (index, &entry) in layout.bmap.iter().enumerate() {
            if entry < ZERO && layout.host_offset(entry) + u64::from(BLOCK_SIZE) > layout.file_len {
                return Err(FormatError::malformed(
                    path,
                    "vdi",
                    u64::from(layout.header.offset_bmap) + index as u64 * 4,
                    format!("block {index} maps to block {entry}, past the end of the file"),
                ));
            }
        }
        Ok(VdiReader {
            path: path.to_owned(),
            file,
            layout,
        })
    }

    /// From `offset`: where the bytes are (None: zeroes) and for how many bytes the answer
    /// holds (consecutive blocks of the same kind are joined; data runs only while the
    /// blocks are also contiguous in the file, so that one read serves them).
    fn extent(&self, offset: u64) -> (Option<u64>, u64) {
        let size = self.layout.header.disk_size;
        let block_size = u64::from(BLOCK_SIZE);
        let index = (offset / block_size) as usize;
        let entry = self.layout.bmap.get(index).copied().unwrap_or(ZERO);
        let rest = self.layout.bmap.get(index + 1..).unwrap_or(&[]);
        let (host, following) = if entry >= ZERO {
            (None, rest.iter().take_while(|e| **e >= ZERO).count())
        } else {
            let contiguous = rest
                .iter()
                .take(MAX_DATA_RUN_BLOCKS)
                .zip(1u32..)
                .take_while(|(e, step)| entry.checked_add(*step) == Some(**e))
                .count();
            (
                Some(self.layout.host_offset(entry) + offset % block_size),
                contiguous,
            )
        };
        let end = ((index + 1 + following) as u64 * block_size).min(size);
        (host, end - offset)
    }
}

impl DiskReader for VdiReader {
    fn virtual_size(&self) -> u64 {
        self.layout.header.disk_size
    }

    fn map(&mut self, offset: u64) -> Result<Mapping, FormatError> {
        if offset >= self.virtual_size() {
            return Err(FormatError::malformed(
                &self.path,
                "vdi",
                offset,
                "map past the virtual size",
            ));
        }
        let (host, len) = self.extent(offset);
        // Holes in the file: a static VDI made by qemu-img is sparse.
        holes::mapping_at(&self.file, host, len).map_err(io(&self.path))
    }

    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), FormatError> {
        let end = offset
            .checked_add(buf.len() as u64)
            .filter(|end| *end <= self.layout.header.disk_size)
            .ok_or_else(|| {
                FormatError::malformed(&self.path, "vdi", offset, "read past the virtual size")
            })?;
        let mut done = 0usize;
        while offset + (done as u64) < end {
            let at = offset + done as u64;
            let (host, len) = self.extent(at);
            let n = len.min(end - at) as usize;
            let part = &mut buf[done..done + n];
            match host {
                Some(host) => self
                    .file
                    .read_exact_at(part, host)
                    .map_err(io(&self.path))?,
                None => part.fill(0),
            }
            done += n;
        }
        Ok(())
    }

    fn info(&self) -> ImageInfo {
        let mut info = ImageInfo::new(DiskFormat::Vdi, self.layout.header.disk_size);
        info.cluster_size = Some(u64::from(BLOCK_SIZE));
        info.subformat = Some(
            if self.layout.header.is_static() {
                "static"
            } else {
                "dynamic"
            }
            .into(),
        );
        info
    }
}

//! Opening a VHDX (headers, log, region table, metadata, BAT) and reading its guest.
//!
//! The BAT is never loaded whole: it can reach 512 MiB for a 64 TiB disk of 1 MiB blocks.
//! Opening streams through it once to check every entry; reads then keep one 64 KiB window of
//! it, which sequential copies move through in order.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::bat::{self, Block, Geometry, ENTRY_SIZE};
use super::error::VhdxError;
use super::header::{
    self, Header, HEADER1_OFFSET, HEADER2_OFFSET, HEADER_SECTION_SIZE, HEADER_SIZE,
};
use super::log;
use super::metadata::{self, ItemBytes, Metadata, MetadataTable};
use super::region::{self, Region, RegionTable};
use crate::formats::holes;
use crate::formats::{DiskFormat, DiskReader, FormatError, ImageInfo, Mapping};

/// BAT entries read at once (64 KiB).
pub const WINDOW: u64 = 8192;

/// The structures of an opened VHDX, checked.
#[derive(Clone, Debug)]
pub struct Layout {
    pub regions: RegionTable,
    pub metadata: Metadata,
    pub geometry: Geometry,
    /// What payload blocks must not overlap: header section, log, BAT, metadata.
    pub reserved: Vec<Region>,
    pub file_len: u64,
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> FormatError + '_ {
    move |source| FormatError::io(path, source)
}

fn read_array<const N: usize>(
    path: &Path,
    file: &File,
    at: u64,
) -> Result<Box<[u8; N]>, FormatError> {
    let mut buf = Box::new([0u8; N]);
    file.read_exact_at(buf.as_mut_slice(), at)
        .map_err(io(path))?;
    Ok(buf)
}

/// The current header, from the two copies.
pub fn read_header(path: &Path, file: &File) -> Result<Header, FormatError> {
    let first = read_array::<HEADER_SIZE>(path, file, HEADER1_OFFSET)?;
    let second = read_array::<HEADER_SIZE>(path, file, HEADER2_OFFSET)?;
    header::current(
        Header::parse(&first, HEADER1_OFFSET),
        Header::parse(&second, HEADER2_OFFSET),
    )
    .map_err(|e| e.at(path))
}

/// Checks a region lies inside the file.
fn inside(path: &Path, region: Region, what: &str, file_len: u64) -> Result<(), FormatError> {
    if region.end() > file_len {
        return Err(FormatError::malformed(
            path,
            "vhdx",
            region.offset,
            format!("the {what} lies past the end of the file ({file_len} bytes)"),
        ));
    }
    Ok(())
}

/// Reads and checks everything but the BAT entries.
pub fn load(path: &Path, file: &File) -> Result<Layout, FormatError> {
    let file_len = crate::io::sys::file_len(file).map_err(io(path))?;
    if file_len < HEADER_SECTION_SIZE {
        return Err(FormatError::malformed(
            path,
            "vhdx",
            0,
            format!("{file_len} bytes: shorter than the 1 MiB header section"),
        ));
    }
    let mut signature = [0u8; 8];
    file.read_exact_at(&mut signature, 0).map_err(io(path))?;
    if !header::has_signature(&signature) {
        return Err(VhdxError::BadSignature {
            offset: 0,
            expected: "vhdxfile",
            found: String::from_utf8_lossy(&signature).into_owned(),
        }
        .at(path));
    }
    let header = read_header(path, file)?;
    let log = log::region(&header, file_len).map_err(|e| e.at(path))?;
    // A log to replay means the rest may be half-updated: look at it before anything else.
    log::refuse_if_replay_needed(path, file, &header, log)?;

    let table = read_array::<{ region::TABLE_SIZE }>(path, file, region::TABLE1_OFFSET)?;
    let regions = RegionTable::parse(&table, region::TABLE1_OFFSET).map_err(|e| e.at(path))?;
    let mut reserved = vec![Region {
        offset: 0,
        length: HEADER_SECTION_SIZE,
    }];
    reserved.extend(log);
    for region in [regions.bat, regions.metadata] {
        if reserved.iter().any(|r| r.overlaps(&region)) {
            return Err(FormatError::malformed(
                path,
                "vhdx",
                region.offset,
                "a region overlaps the log",
            ));
        }
    }
    reserved.extend([regions.bat, regions.metadata]);

    let metadata = read_metadata(path, file, regions.metadata, file_len)?;
    let geometry = Geometry::new(
        metadata.virtual_size,
        metadata.block_size,
        metadata.logical_sector_size,
    );
    let table_bytes = geometry.entries * ENTRY_SIZE;
    if table_bytes > regions.bat.length {
        return Err(FormatError::malformed(
            path,
            "vhdx",
            regions.bat.offset,
            format!(
                "BAT region of {} bytes cannot hold the {} entries of a {}-byte disk",
                regions.bat.length, geometry.entries, geometry.virtual_size
            ),
        ));
    }
    inside(
        path,
        Region {
            offset: regions.bat.offset,
            length: table_bytes,
        },
        "BAT",
        file_len,
    )?;
    Ok(Layout {
        regions,
        metadata,
        geometry,
        reserved,
        file_len,
    })
}

fn read_metadata(
    path: &Path,
    file: &File,
    region: Region,
    file_len: u64,
) -> Result<Metadata, FormatError> {
    inside(
        path,
        Region {
            offset: region.offset,
            length: metadata::TABLE_SIZE as u64,
        },
        "metadata table",
        file_len,
    )?;
    let bytes = read_array::<{ metadata::TABLE_SIZE }>(path, file, region.offset)?;
    let table = MetadataTable::parse(&bytes, region).map_err(|e| e.at(path))?;
    let item = |item: metadata::Item, buf: &mut [u8]| -> Result<(), FormatError> {
        let at = region.offset + u64::from(item.offset);
        inside(
            path,
            Region {
                offset: at,
                length: buf.len() as u64,
            },
            "metadata item",
            file_len,
        )?;
        file.read_exact_at(buf, at).map_err(io(path))
    };
    let mut items = ItemBytes {
        file_parameters: [0; 8],
        virtual_disk_size: [0; 8],
        page_83_data: [0; 16],
        logical_sector_size: [0; 4],
        physical_sector_size: [0; 4],
    };
    item(table.file_parameters, &mut items.file_parameters)?;
    item(table.virtual_disk_size, &mut items.virtual_disk_size)?;
    item(table.page_83_data, &mut items.page_83_data)?;
    item(table.logical_sector_size, &mut items.logical_sector_size)?;
    item(table.physical_sector_size, &mut items.physical_sector_size)?;
    Metadata::decode(&items, &table, region).map_err(|e| e.at(path))
}

/// A 64 KiB window of BAT entries.
pub struct BatWindow {
    first: u64,
    entries: Vec<u64>,
}

impl BatWindow {
    pub fn new() -> BatWindow {
        BatWindow {
            first: 0,
            entries: Vec::new(),
        }
    }

    /// The entry at `index` (< geometry.entries), reading its window when needed.
    pub fn get(
        &mut self,
        path: &Path,
        file: &File,
        layout: &Layout,
        index: u64,
    ) -> Result<u64, FormatError> {
        let loaded = self.first..self.first + self.entries.len() as u64;
        if !loaded.contains(&index) {
            let first = index / WINDOW * WINDOW;
            let count = WINDOW.min(layout.geometry.entries - first) as usize;
            let mut raw = vec![0u8; count * ENTRY_SIZE as usize];
            file.read_exact_at(&mut raw, layout.regions.bat.offset + first * ENTRY_SIZE)
                .map_err(io(path))?;
            self.entries = raw
                .chunks_exact(ENTRY_SIZE as usize)
                .map(|e| crate::formats::fields::le64(e, 0))
                .collect();
            self.first = first;
        }
        Ok(self.entries[(index - self.first) as usize])
    }

    /// What payload block `block` holds.
    pub fn block(
        &mut self,
        path: &Path,
        file: &File,
        layout: &Layout,
        block: u64,
    ) -> Result<Block, FormatError> {
        let index = layout.geometry.index(block);
        let entry = self.get(path, file, layout, index)?;
        let at = layout.regions.bat.offset + index * ENTRY_SIZE;
        bat::classify(
            entry,
            block,
            &layout.geometry,
            layout.file_len,
            &layout.reserved,
            at,
        )
        .map_err(|e| e.at(path))
    }
}

/// Guest view of a VHDX.
pub struct VhdxReader {
    path: PathBuf,
    file: File,
    layout: Layout,
    bat: BatWindow,
}

impl VhdxReader {
    /// Opens and checks every structure, BAT entries included.
    pub fn new(path: &Path, file: File) -> Result<VhdxReader, FormatError> {
        let layout = load(path, &file)?;
        let mut bat = BatWindow::new();
        for block in 0..layout.geometry.payload_blocks {
            bat.block(path, &file, &layout, block)?;
        }
        Ok(VhdxReader {
            path: path.to_owned(),
            file,
            layout,
            bat,
        })
    }

    /// From `offset`: where the bytes are in the file (None: zeroes) and for how long.
    fn extent(&mut self, offset: u64) -> Result<(Option<u64>, u64), FormatError> {
        let g = self.layout.geometry;
        let block = offset / g.block_size;
        let within = offset % g.block_size;
        let block_end = ((block + 1) * g.block_size).min(g.virtual_size);
        match self
            .bat
            .block(&self.path, &self.file, &self.layout, block)?
        {
            Block::Present(host) => Ok((Some(host + within), block_end - offset)),
            Block::Zero => {
                // Join the following zero blocks into one run.
                let mut next = block + 1;
                while next < g.payload_blocks
                    && self.bat.block(&self.path, &self.file, &self.layout, next)? == Block::Zero
                {
                    next += 1;
                }
                Ok((None, (next * g.block_size).min(g.virtual_size) - offset))
            }
        }
    }

    fn past_end(&self, offset: u64, what: &str) -> FormatError {
        FormatError::malformed(
            &self.path,
            "vhdx",
            offset,
            format!("{what} past the virtual size"),
        )
    }
}

impl DiskReader for VhdxReader {
    fn virtual_size(&self) -> u64 {
        self.layout.geometry.virtual_size
    }

    fn map(&mut self, offset: u64) -> Result<Mapping, FormatError> {
        if offset >= self.virtual_size() {
            return Err(self.past_end(offset, "map"));
        }
        let (host, len) = self.extent(offset)?;
        // qemu leaves the unwritten parts of blocks as holes in the file.
        holes::mapping_at(&self.file, host, len).map_err(io(&self.path))
    }

    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), FormatError> {
        let end = offset
            .checked_add(buf.len() as u64)
            .filter(|end| *end <= self.virtual_size())
            .ok_or_else(|| self.past_end(offset, "read"))?;
        let mut done = 0usize;
        while offset + (done as u64) < end {
            let at = offset + done as u64;
            let (host, len) = self.extent(at)?;
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
        let metadata = &self.layout.metadata;
        let mut info = ImageInfo::new(DiskFormat::Vhdx, metadata.virtual_size);
        info.cluster_size = Some(metadata.block_size.into());
        info.subformat = Some(
            if metadata.leave_blocks_allocated {
                "fixed"
            } else {
                "dynamic"
            }
            .into(),
        );
        info
    }
}

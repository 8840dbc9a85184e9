//! Writers of sparse extents, grains appended in guest order:
//! - monolithicSparse exactly as `qemu-img convert -O vmdk` lays it out (header, descriptor in
//!   sectors 1–20, redundant GD + GTs at 21, GD + GTs, grains from the rounded overhead);
//! - streamOptimized in qemu's layout (same front metadata, version 3, marker + zlib grains);
//! - streamOptimized in VMware's layout (header with GD_AT_END, grains, each GT after its
//!   grains behind a GT marker, GD marker + GD, footer marker + footer, end-of-stream marker).

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::grain::{table_bytes, GT_BYTES, GT_SECTORS};
use super::header::{
    SparseHeader, COMPRESS_DEFLATE, FLAG_COMPRESSED, FLAG_MARKERS, FLAG_NL_DETECT, FLAG_RGD,
    FLAG_ZERO_GRAIN, GD_AT_END, GTES_PER_GT, SECTOR,
};
use super::marker::{meta_marker, TYPE_EOS, TYPE_FOOTER, TYPE_GD, TYPE_GT};
use super::pipeline::{Done, Pipeline};
use super::FORMAT;
use crate::formats::{DiskWriter, FormatError};

/// Sectors per grain cloudimg writes (64 KiB, as qemu and VMware).
pub const GRAIN_SECTORS: u64 = 128;
/// Sector of the embedded descriptor.
const DESCRIPTOR_SECTOR: u64 = 1;
/// Sectors reserved for the embedded descriptor (qemu's and VMware's 10 KiB).
pub const DESCRIPTOR_SECTORS: u64 = 20;
/// Bytes buffered before a write to the file.
const WRITE_BUFFER: usize = 4 << 20;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// monolithicSparse, uncompressed grains.
    Sparse,
    /// streamOptimized as qemu writes it: GD and GTs in front.
    QemuStream,
    /// streamOptimized as VMware writes it: GTs and GD after the grains, footer, EOS.
    VmwareStream,
}

/// Where the tables of a front layout go.
#[derive(Clone, Copy)]
struct Front {
    rgd: u64,
    gd: u64,
    gd_sectors: u64,
}

/// Appends bytes at the end of the extent and keeps the grain table being filled.
struct Sink {
    path: PathBuf,
    file: File,
    layout: Layout,
    /// File offset where the next appended byte goes.
    cursor: u64,
    buf: Vec<u8>,
    gt_count: u64,
    gt_index: u64,
    gt: Vec<u32>,
    gt_dirty: bool,
    /// VMware layout: the first GT not yet written, and the GD being filled.
    next_gt: u64,
    gd: Vec<u32>,
    front: Option<Front>,
}

impl Sink {
    fn io(&self, e: std::io::Error) -> FormatError {
        FormatError::io(&self.path, e)
    }

    fn flush(&mut self) -> Result<(), FormatError> {
        if !self.buf.is_empty() {
            let at = self.cursor - self.buf.len() as u64;
            self.file
                .write_all_at(&self.buf, at)
                .map_err(|e| FormatError::io(&self.path, e))?;
            self.buf.clear();
        }
        Ok(())
    }

    fn append(&mut self, bytes: &[u8]) -> Result<(), FormatError> {
        if self.buf.len() + bytes.len() > WRITE_BUFFER {
            self.flush()?;
        }
        if bytes.len() >= WRITE_BUFFER {
            self.file
                .write_all_at(bytes, self.cursor)
                .map_err(|e| self.io(e))?;
        } else {
            self.buf.extend_from_slice(bytes);
        }
        self.cursor += bytes.len() as u64;
        Ok(())
    }

    /// Moves to grain table `index`, writing the tables left behind.
    fn enter_gt(&mut self, index: u64) -> Result<(), FormatError> {
        if index == self.gt_index && self.layout != Layout::VmwareStream {
            return Ok(());
        }
        match self.front {
            Some(front) => {
                if self.gt_dirty {
                    let bytes = table_bytes(&self.gt);
                    let slot = front.gd_sectors + self.gt_index * GT_SECTORS;
                    for base in [front.rgd, front.gd] {
                        self.file
                            .write_all_at(&bytes, (base + slot) * SECTOR)
                            .map_err(|e| self.io(e))?;
                    }
                }
            }
            None => {
                // Every table before `index` is complete: write them, empty ones included, so
                // every GD entry points at a table.
                while self.next_gt < index.min(self.gt_count) {
                    let k = self.next_gt;
                    let bytes = if k == self.gt_index {
                        table_bytes(&self.gt)
                    } else {
                        vec![0u8; GT_BYTES]
                    };
                    self.append(&meta_marker(TYPE_GT, GT_SECTORS))?;
                    let sector = self.cursor / SECTOR;
                    if let Some(e) = self.gd.get_mut(k as usize) {
                        *e = u32::try_from(sector).map_err(|_| too_big(&self.path))?;
                    }
                    self.append(&bytes)?;
                    self.next_gt += 1;
                }
            }
        }
        if index != self.gt_index {
            self.gt_index = index;
            self.gt.fill(0);
            self.gt_dirty = false;
        }
        Ok(())
    }

    fn set_entry(&mut self, grain: u64, sector: u64) -> Result<(), FormatError> {
        let e = u32::try_from(sector).map_err(|_| too_big(&self.path))?;
        if let Some(slot) = self.gt.get_mut((grain % u64::from(GTES_PER_GT)) as usize) {
            *slot = e;
        }
        self.gt_dirty = true;
        Ok(())
    }

    /// Appends a compressed grain record.
    fn record(&mut self, done: &Done) -> Result<(), FormatError> {
        self.enter_gt(done.index / u64::from(GTES_PER_GT))?;
        let sector = self.cursor / SECTOR;
        self.set_entry(done.index, sector)?;
        self.append(&done.record)
    }
}

fn too_big(path: &Path) -> FormatError {
    FormatError::Unsupported {
        path: path.to_owned(),
        what: "VMDK extent would pass 2 TiB of file offsets (32-bit sector numbers)".into(),
    }
}

pub struct SparseWriter {
    sink: Sink,
    pipeline: Option<Pipeline>,
    header: SparseHeader,
    descriptor: String,
    size: u64,
    /// The last grain written, to enforce increasing offsets.
    next_grain: u64,
}

impl SparseWriter {
    /// `size` must be a multiple of 512; `descriptor` must fit in 20 sectors.
    pub fn create(
        path: &Path,
        layout: Layout,
        size: u64,
        zeroed_grain: bool,
        descriptor: String,
        threads: usize,
    ) -> Result<SparseWriter, FormatError> {
        if descriptor.len() as u64 > DESCRIPTOR_SECTORS * SECTOR {
            return Err(FormatError::InvalidOption {
                key: "hwversion/toolsversion".into(),
                value: String::new(),
                reason: "descriptor longer than 20 sectors".into(),
            });
        }
        let capacity = size / SECTOR;
        let grains = capacity.div_ceil(GRAIN_SECTORS);
        let gt_count = grains.div_ceil(u64::from(GTES_PER_GT));
        let gd_sectors = (gt_count * 4).div_ceil(SECTOR);
        let compressed = layout != Layout::Sparse;
        let mut header = SparseHeader {
            version: if compressed {
                3
            } else if zeroed_grain {
                2
            } else {
                1
            },
            flags: FLAG_NL_DETECT
                | if compressed {
                    FLAG_COMPRESSED | FLAG_MARKERS
                } else {
                    0
                }
                | if zeroed_grain { FLAG_ZERO_GRAIN } else { 0 },
            capacity,
            grain_size: GRAIN_SECTORS,
            descriptor_offset: DESCRIPTOR_SECTOR,
            descriptor_size: DESCRIPTOR_SECTORS,
            num_gtes_per_gt: GTES_PER_GT,
            rgd_offset: 0,
            gd_offset: GD_AT_END,
            overhead: 0,
            unclean_shutdown: false,
            compress_algorithm: if compressed { COMPRESS_DEFLATE } else { 0 },
        };
        let front = match layout {
            Layout::VmwareStream => {
                header.overhead = GRAIN_SECTORS;
                None
            }
            Layout::Sparse | Layout::QemuStream => {
                // qemu's layout: RGD + GTs, then GD + GTs, grains from the next grain boundary.
                let rgd = DESCRIPTOR_SECTOR + DESCRIPTOR_SECTORS;
                let gd = rgd + gd_sectors + GT_SECTORS * gt_count;
                header.flags |= FLAG_RGD;
                header.rgd_offset = rgd;
                header.gd_offset = gd;
                header.overhead =
                    (gd + gd_sectors + GT_SECTORS * gt_count).next_multiple_of(GRAIN_SECTORS);
                Some(Front {
                    rgd,
                    gd,
                    gd_sectors,
                })
            }
        };
        let file = File::create(path).map_err(|e| FormatError::io(path, e))?;
        let sink = Sink {
            path: path.to_owned(),
            file,
            layout,
            cursor: header.overhead * SECTOR,
            buf: Vec::new(),
            gt_count,
            gt_index: 0,
            gt: vec![0; GTES_PER_GT as usize],
            gt_dirty: false,
            next_gt: 0,
            gd: vec![
                0;
                if front.is_some() {
                    0
                } else {
                    gt_count as usize
                }
            ],
            front,
        };
        Ok(SparseWriter {
            sink,
            pipeline: compressed.then(|| Pipeline::new(path, threads)),
            header,
            descriptor,
            size,
            next_grain: 0,
        })
    }

    fn write_front(&mut self) -> Result<(), FormatError> {
        let s = &self.sink;
        s.file
            .write_all_at(&self.header.to_bytes(), 0)
            .map_err(|e| s.io(e))?;
        s.file
            .write_all_at(self.descriptor.as_bytes(), DESCRIPTOR_SECTOR * SECTOR)
            .map_err(|e| s.io(e))?;
        if let Some(front) = s.front {
            // Every GD entry points at its preallocated table, written or not (as qemu).
            let gd_len = (front.gd_sectors * SECTOR) as usize;
            for base in [front.rgd, front.gd] {
                let mut entries = Vec::with_capacity(gd_len / 4);
                for k in 0..s.gt_count {
                    let sector = base + front.gd_sectors + k * GT_SECTORS;
                    entries.push(u32::try_from(sector).map_err(|_| too_big(&s.path))?);
                }
                let mut bytes = table_bytes(&entries);
                bytes.resize(gd_len, 0);
                s.file
                    .write_all_at(&bytes, base * SECTOR)
                    .map_err(|e| s.io(e))?;
            }
        }
        Ok(())
    }
}

impl DiskWriter for SparseWriter {
    fn granularity(&self) -> u64 {
        GRAIN_SECTORS * SECTOR
    }

    fn write_data(&mut self, offset: u64, data: &[u8]) -> Result<(), FormatError> {
        let grain_bytes = GRAIN_SECTORS * SECTOR;
        let first = offset / grain_bytes;
        if !offset.is_multiple_of(grain_bytes)
            || first < self.next_grain
            || offset + data.len() as u64 > self.size
        {
            return Err(FormatError::malformed(
                &self.sink.path,
                FORMAT,
                offset,
                "write is not grain-aligned, goes backwards, or passes the virtual size",
            ));
        }
        let sink = &mut self.sink;
        for (k, chunk) in data.chunks(grain_bytes as usize).enumerate() {
            let index = first + k as u64;
            match &mut self.pipeline {
                Some(pipeline) => {
                    pipeline.push(index, index * GRAIN_SECTORS, chunk, &mut |done| {
                        sink.record(done)
                    })?;
                }
                None => {
                    sink.enter_gt(index / u64::from(GTES_PER_GT))?;
                    let sector = sink.cursor / SECTOR;
                    sink.set_entry(index, sector)?;
                    sink.append(chunk)?;
                    // qemu stores the disk's last, short grain in full.
                    let pad = grain_bytes as usize - chunk.len();
                    if pad > 0 {
                        sink.append(&vec![0u8; pad])?;
                    }
                }
            }
        }
        self.next_grain = first + data.len().div_ceil(grain_bytes as usize) as u64;
        Ok(())
    }

    fn finish(mut self: Box<Self>) -> Result<(), FormatError> {
        if let Some(pipeline) = self.pipeline.take() {
            let sink = &mut self.sink;
            pipeline.finish(&mut |done| sink.record(done))?;
        }
        let gt_count = self.sink.gt_count;
        match self.sink.layout {
            Layout::Sparse | Layout::QemuStream => {
                // Flush the last table by moving past every table.
                self.sink.enter_gt(u64::MAX)?;
            }
            Layout::VmwareStream => {
                self.sink.enter_gt(gt_count)?;
                let gd_sectors = (gt_count * 4).div_ceil(SECTOR);
                self.sink.append(&meta_marker(TYPE_GD, gd_sectors))?;
                let gd_sector = self.sink.cursor / SECTOR;
                let mut gd = table_bytes(&self.sink.gd);
                gd.resize((gd_sectors * SECTOR) as usize, 0);
                self.sink.append(&gd)?;
                let footer = SparseHeader {
                    gd_offset: gd_sector,
                    ..self.header
                };
                self.sink.append(&meta_marker(TYPE_FOOTER, 1))?;
                self.sink.append(&footer.to_bytes())?;
                self.sink.append(&meta_marker(TYPE_EOS, 0))?;
            }
        }
        self.sink.flush()?;
        let len = self.sink.cursor;
        self.sink.file.set_len(len).map_err(|e| self.sink.io(e))?;
        self.write_front()?;
        self.sink.file.sync_all().map_err(|e| self.sink.io(e))
    }
}

//! Random-access reader of sparse extents: monolithicSparse and streamOptimized (qemu's layout
//! with the GD in front, and VMware's with the GD found through the footer).

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use flate2::Decompress;

use super::codec::inflate_grain;
use super::descriptor::{Descriptor, MAX_DESCRIPTOR_LEN, NO_PARENT};
use super::grain::{read_gd, read_table};
use super::header::{SparseHeader, FLAG_ZERO_GRAIN, GD_AT_END, HEADER_LEN, SECTOR};
use super::marker::{Marker, GRAIN_MARKER_LEN, TYPE_FOOTER};
use super::FORMAT;
use crate::formats::{DiskFormat, DiskReader, Extent, FormatError, ImageInfo, Mapping};

/// Largest compressed grain accepted: a grain that does not shrink grows by zlib's stored-block
/// overhead only, so twice the grain is generous.
pub fn max_compressed_len(grain_bytes: u64) -> u64 {
    grain_bytes * 2 + 1024
}

/// A sparse extent opened and checked: header (the footer for VMware streams), descriptor, GD.
pub struct SparseExtent {
    pub header: SparseHeader,
    pub gd: Vec<u32>,
    pub descriptor: Descriptor,
    pub file_len: u64,
    /// Whether the GD was found through a footer (VMware stream layout).
    pub footer: bool,
}

fn malformed(path: &Path, offset: u64, reason: impl Into<String>) -> FormatError {
    FormatError::malformed(path, FORMAT, offset, reason)
}

fn read_header_at(path: &Path, file: &File, offset: u64) -> Result<SparseHeader, FormatError> {
    let mut b = [0u8; HEADER_LEN];
    file.read_exact_at(&mut b, offset)
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::UnexpectedEof => {
                malformed(path, offset, "file too short for a header")
            }
            _ => FormatError::io(path, e),
        })?;
    SparseHeader::parse(&b).map_err(|(at, reason)| malformed(path, offset + at, reason))
}

/// Reads and parses the embedded descriptor the header points at, if any.
pub fn read_embedded_descriptor(
    path: &Path,
    file: &File,
    file_len: u64,
    header: &SparseHeader,
) -> Result<Descriptor, FormatError> {
    if header.descriptor_offset == 0 || header.descriptor_size == 0 {
        return Ok(Descriptor::default());
    }
    let start = header.descriptor_offset.saturating_mul(SECTOR);
    let len = header.descriptor_size.saturating_mul(SECTOR);
    if len > MAX_DESCRIPTOR_LEN || start.saturating_add(len) > file_len {
        return Err(malformed(
            path,
            28,
            format!("descriptor at {start:#x}, {len} bytes, is out of bounds"),
        ));
    }
    let mut buf = vec![0u8; len as usize];
    file.read_exact_at(&mut buf, start)
        .map_err(|e| FormatError::io(path, e))?;
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    let text = std::str::from_utf8(buf.get(..end).unwrap_or_default())
        .map_err(|_| malformed(path, start, "descriptor is not UTF-8 text"))?;
    Descriptor::parse(text).map_err(|(line, reason)| {
        malformed(path, start, format!("descriptor line {line}: {reason}"))
    })
}

impl SparseExtent {
    pub fn open(path: &Path, file: &File) -> Result<SparseExtent, FormatError> {
        let file_len = crate::io::sys::file_len(file).map_err(|e| FormatError::io(path, e))?;
        let mut header = read_header_at(path, file, 0)?;
        let descriptor = read_embedded_descriptor(path, file, file_len, &header)?;
        let mut footer = false;
        if header.gd_offset == GD_AT_END {
            if !header.has_markers() {
                return Err(malformed(path, 56, "GD_AT_END without stream markers"));
            }
            // Stream end: footer marker, footer, end-of-stream marker, one sector each.
            let footer_at = file_len
                .checked_sub(2 * SECTOR)
                .filter(|&f| f >= 2 * SECTOR)
                .ok_or_else(|| malformed(path, file_len, "stream too short for a footer"))?;
            let mut m = [0u8; 16];
            file.read_exact_at(&mut m, footer_at - SECTOR)
                .map_err(|e| FormatError::io(path, e))?;
            if Marker::parse(&m)
                != (Marker::Meta {
                    kind: TYPE_FOOTER,
                    sectors: 1,
                })
            {
                return Err(malformed(
                    path,
                    footer_at - SECTOR,
                    "no footer marker before the footer",
                ));
            }
            let found = read_header_at(path, file, footer_at)?;
            if found.gd_offset == GD_AT_END {
                return Err(malformed(
                    path,
                    footer_at + 56,
                    "footer has no grain directory offset",
                ));
            }
            if found.capacity != header.capacity || found.grain_size != header.grain_size {
                return Err(malformed(
                    path,
                    footer_at,
                    "footer disagrees with the header on capacity or grain size",
                ));
            }
            header = found;
            footer = true;
        }
        if header.compressed() && !header.has_markers() {
            return Err(FormatError::Unsupported {
                path: path.to_owned(),
                what: "compressed VMDK grains without markers".into(),
            });
        }
        if descriptor.has_parent() {
            return Err(FormatError::Unsupported {
                path: path.to_owned(),
                what: "VMDK with a parent disk (snapshot/delta link)".into(),
            });
        }
        if descriptor.extents.len() > 1 {
            return Err(FormatError::Unsupported {
                path: path.to_owned(),
                what: format!("VMDK with {} extents", descriptor.extents.len()),
            });
        }
        let gd = read_gd(path, file, file_len, &header, header.gd_offset)?;
        Ok(SparseExtent {
            header,
            gd,
            descriptor,
            file_len,
            footer,
        })
    }

    pub fn create_type(&self) -> String {
        match &self.descriptor.create_type {
            Some(t) => t.clone(),
            None if self.header.compressed() => "streamOptimized".into(),
            None => "monolithicSparse".into(),
        }
    }

    /// Facts in `qemu-img info`'s order: cid, parent-cid, create-type (the reader adds the
    /// extents).
    pub fn info(&self) -> ImageInfo {
        let mut info = ImageInfo::new(DiskFormat::Vmdk, self.header.capacity * SECTOR);
        info.cluster_size = Some(self.header.grain_bytes());
        info.subformat = Some(self.create_type());
        if self.header.compressed() {
            info.compression = Some("deflate".into());
        }
        let fs = &mut info.format_specific;
        if let Some(cid) = self.descriptor.cid {
            fs.insert("cid".into(), cid.into());
        }
        fs.insert(
            "parent-cid".into(),
            self.descriptor.parent_cid.unwrap_or(NO_PARENT).into(),
        );
        fs.insert("create-type".into(), self.create_type().into());
        info
    }

    /// One sparse extent as `qemu-img info` lists it under `extents`.
    pub fn extent_info(&self, filename: &Path) -> serde_json::Value {
        let mut extent = serde_json::Map::new();
        if self.header.compressed() {
            extent.insert("compressed".into(), true.into());
        }
        extent.insert(
            "virtual-size".into(),
            (self.header.capacity * SECTOR).into(),
        );
        extent.insert("filename".into(), filename.display().to_string().into());
        extent.insert("cluster-size".into(), self.header.grain_bytes().into());
        // qemu names the kind of FLAT extents only; a sparse extent's is empty.
        extent.insert("format".into(), "".into());
        serde_json::Value::Object(extent)
    }

    /// Whether a GT entry reads as zero.
    pub fn is_zero_entry(&self, entry: u32) -> bool {
        entry == 0 || (entry == 1 && self.header.flags & FLAG_ZERO_GRAIN != 0)
    }
}

/// Reader over a [`SparseExtent`].
pub struct SparseReader {
    path: PathBuf,
    file: File,
    extent: SparseExtent,
    /// The grain table last loaded: (GD index, entries).
    gt: Option<(u64, Vec<u32>)>,
    /// For compressed images: the grain last inflated.
    grain: Option<u64>,
    grain_buf: Vec<u8>,
    compressed_buf: Vec<u8>,
    inflater: Decompress,
}

impl SparseReader {
    pub fn open(path: &Path, file: File) -> Result<SparseReader, FormatError> {
        let extent = SparseExtent::open(path, &file)?;
        Ok(SparseReader {
            path: path.to_owned(),
            file,
            extent,
            gt: None,
            grain: None,
            grain_buf: Vec::new(),
            compressed_buf: Vec::new(),
            inflater: Decompress::new(true),
        })
    }

    /// The GT entry of grain `index`.
    fn entry(&mut self, index: u64) -> Result<u32, FormatError> {
        let per_gt = u64::from(self.extent.header.num_gtes_per_gt);
        let gt_index = index / per_gt;
        let in_gt = (index % per_gt) as usize;
        if let Some((loaded, entries)) = &self.gt {
            if *loaded == gt_index {
                return Ok(entries.get(in_gt).copied().unwrap_or(0));
            }
        }
        let gd_entry = self.extent.gd.get(gt_index as usize).copied().unwrap_or(0);
        if gd_entry == 0 {
            return Ok(0);
        }
        let entries = read_table(
            &self.path,
            &self.file,
            self.extent.file_len,
            u64::from(gd_entry),
            per_gt,
            "grain table",
        )?;
        let e = entries.get(in_gt).copied().unwrap_or(0);
        self.gt = Some((gt_index, entries));
        Ok(e)
    }

    fn load_compressed(&mut self, index: u64, entry: u32) -> Result<(), FormatError> {
        if self.grain == Some(index) {
            return Ok(());
        }
        let grain_bytes = self.extent.header.grain_bytes();
        let at = u64::from(entry) * SECTOR;
        let mut head = [0u8; 16];
        // A marker is 12 bytes; reading 16 is fine unless the data is under 4 bytes at EOF.
        let head_len = GRAIN_MARKER_LEN.min((self.extent.file_len.saturating_sub(at)) as usize);
        if head_len < GRAIN_MARKER_LEN {
            return Err(malformed(
                &self.path,
                at,
                "grain marker passes the end of the file",
            ));
        }
        self.file
            .read_exact_at(&mut head[..GRAIN_MARKER_LEN], at)
            .map_err(|e| FormatError::io(&self.path, e))?;
        let Marker::Grain { lba, size } = Marker::parse(&head) else {
            return Err(malformed(
                &self.path,
                at,
                "grain table points at a metadata marker",
            ));
        };
        if lba != index * self.extent.header.grain_size {
            return Err(malformed(
                &self.path,
                at,
                format!("grain marker says LBA {lba:#x}, table says grain {index}"),
            ));
        }
        let size = u64::from(size);
        let data_at = at + GRAIN_MARKER_LEN as u64;
        if size > max_compressed_len(grain_bytes) || data_at + size > self.extent.file_len {
            return Err(malformed(
                &self.path,
                at,
                format!("compressed grain of {size} bytes is out of bounds"),
            ));
        }
        self.compressed_buf.resize(size as usize, 0);
        self.file
            .read_exact_at(&mut self.compressed_buf, data_at)
            .map_err(|e| FormatError::io(&self.path, e))?;
        self.grain_buf.resize(grain_bytes as usize, 0);
        self.grain = None;
        inflate_grain(
            &mut self.inflater,
            &self.compressed_buf,
            &mut self.grain_buf,
        )
        .map_err(|reason| malformed(&self.path, data_at, reason))?;
        self.grain = Some(index);
        Ok(())
    }
}

impl DiskReader for SparseReader {
    fn virtual_size(&self) -> u64 {
        self.extent.header.capacity * SECTOR
    }

    fn map(&mut self, offset: u64) -> Result<Mapping, FormatError> {
        let size = self.virtual_size();
        let grain_bytes = self.extent.header.grain_bytes();
        let per_gt = u64::from(self.extent.header.num_gtes_per_gt);
        let first = offset / grain_bytes;
        let zero = {
            let e = self.entry(first)?;
            self.extent.is_zero_entry(e)
        };
        // Extend the run over grains of the same kind: absent tables are skipped whole; at
        // most one further table is scanned, so a call costs at most two tables' entries.
        let grains = self.extent.header.grains();
        let mut next = first + 1;
        let mut scanned_boundary = false;
        while next < grains {
            if next.is_multiple_of(per_gt) {
                let present = self
                    .extent
                    .gd
                    .get((next / per_gt) as usize)
                    .is_some_and(|&e| e != 0);
                if !present {
                    if !zero {
                        break;
                    }
                    next += per_gt;
                    continue;
                }
                if scanned_boundary {
                    break;
                }
                scanned_boundary = true;
            }
            let e = self.entry(next)?;
            if self.extent.is_zero_entry(e) != zero {
                break;
            }
            next += 1;
        }
        let end = (next * grain_bytes).min(size);
        Ok(Mapping {
            extent: if zero { Extent::Zero } else { Extent::Data },
            len: end - offset,
        })
    }

    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), FormatError> {
        let size = self.virtual_size();
        if offset
            .checked_add(buf.len() as u64)
            .is_none_or(|end| end > size)
        {
            return Err(malformed(&self.path, offset, "read past the virtual size"));
        }
        let grain_bytes = self.extent.header.grain_bytes();
        let mut done = 0usize;
        while done < buf.len() {
            let pos = offset + done as u64;
            let index = pos / grain_bytes;
            let in_grain = pos % grain_bytes;
            let mut n = ((grain_bytes - in_grain) as usize).min(buf.len() - done);
            let entry = self.entry(index)?;
            if !self.extent.header.compressed() && !self.extent.is_zero_entry(entry) {
                // Grains stored back to back are read with one pread.
                let mut last = (index, u64::from(entry));
                while done + n < buf.len() {
                    let next = self.entry(last.0 + 1)?;
                    if u64::from(next) != last.1 + self.extent.header.grain_size {
                        break;
                    }
                    last = (last.0 + 1, u64::from(next));
                    n = (n + grain_bytes as usize).min(buf.len() - done);
                }
            }
            let out = &mut buf[done..done + n];
            if self.extent.is_zero_entry(entry) {
                out.fill(0);
            } else if self.extent.header.compressed() {
                self.load_compressed(index, entry)?;
                let src = self
                    .grain_buf
                    .get(in_grain as usize..in_grain as usize + n)
                    .ok_or_else(|| malformed(&self.path, pos, "grain buffer too short"))?;
                out.copy_from_slice(src);
            } else {
                let at = u64::from(entry) * SECTOR + in_grain;
                if at + n as u64 > self.extent.file_len {
                    return Err(malformed(
                        &self.path,
                        at,
                        format!("grain {index} passes the end of the file"),
                    ));
                }
                self.file
                    .read_exact_at(out, at)
                    .map_err(|e| FormatError::io(&self.path, e))?;
            }
            done += n;
        }
        Ok(())
    }

    fn info(&self) -> ImageInfo {
        let mut info = self.extent.info();
        info.format_specific.insert(
            "extents".into(),
            vec![self.extent.extent_info(&self.path)].into(),
        );
        info
    }
}

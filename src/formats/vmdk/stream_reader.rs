//! Forward-only reader of streamOptimized extents from a non-seekable input (a disk inside an
//! `.ova` tar stream). Grains carry their LBA and come in increasing LBA order in both qemu's
//! and VMware's layouts, so walking the markers answers every query in increasing order.

use std::io::Read;
use std::path::{Path, PathBuf};

use flate2::Decompress;

use super::codec::inflate_grain;
use super::descriptor::{Descriptor, MAX_DESCRIPTOR_LEN, NO_PARENT};
use super::header::{SparseHeader, HEADER_LEN, SECTOR};
use super::marker::{Marker, GRAIN_MARKER_LEN, TYPE_EOS, TYPE_FOOTER, TYPE_GD, TYPE_GT};
use super::reader::max_compressed_len;
use super::FORMAT;
use crate::formats::{DiskFormat, DiskReader, Extent, FormatError, ImageInfo, Mapping};

/// A grain announced by a marker whose data has not been consumed yet.
#[derive(Clone, Copy)]
struct Pending {
    start: u64,
    end: u64,
    size: u64,
}

pub struct StreamReader {
    path: PathBuf,
    input: Box<dyn Read + Send>,
    /// Input bytes consumed so far.
    pos: u64,
    len: u64,
    header: SparseHeader,
    descriptor: Descriptor,
    size: u64,
    /// Guest range of the grain in `grain_buf`.
    current: Option<(u64, u64)>,
    grain_buf: Vec<u8>,
    compressed_buf: Vec<u8>,
    inflater: Decompress,
    /// The next grain in the input, `None` once the end of stream is reached.
    next: Option<Pending>,
    /// Smallest guest offset still answerable.
    floor: u64,
}

/// Opens a streamOptimized VMDK read straight from `reader` (`len` bytes long).
pub fn open_stream(
    path: &Path,
    reader: Box<dyn Read + Send>,
    len: u64,
) -> Result<Box<dyn DiskReader>, FormatError> {
    Ok(Box::new(StreamReader::open(path, reader, len)?))
}

impl StreamReader {
    pub fn open(
        path: &Path,
        input: Box<dyn Read + Send>,
        len: u64,
    ) -> Result<StreamReader, FormatError> {
        let mut r = StreamReader {
            path: path.to_owned(),
            input,
            pos: 0,
            len,
            header: SparseHeader {
                version: 0,
                flags: 0,
                capacity: 0,
                grain_size: 1,
                descriptor_offset: 0,
                descriptor_size: 0,
                num_gtes_per_gt: 0,
                rgd_offset: 0,
                gd_offset: 0,
                overhead: 0,
                unclean_shutdown: false,
                compress_algorithm: 0,
            },
            descriptor: Descriptor::default(),
            size: 0,
            current: None,
            grain_buf: Vec::new(),
            compressed_buf: Vec::new(),
            inflater: Decompress::new(true),
            next: None,
            floor: 0,
        };
        let mut head = [0u8; HEADER_LEN];
        r.read_exact(&mut head)?;
        r.header = SparseHeader::parse(&head).map_err(|(at, reason)| r.malformed(at, reason))?;
        if !(r.header.compressed() && r.header.has_markers()) {
            return Err(FormatError::Unsupported {
                path: path.to_owned(),
                what: "only streamOptimized VMDK can be read from a stream".into(),
            });
        }
        r.size = r.header.capacity * SECTOR;
        let desc_at = r.header.descriptor_offset.saturating_mul(SECTOR);
        let desc_len = r.header.descriptor_size.saturating_mul(SECTOR);
        if desc_at >= r.pos && desc_len > 0 && desc_len <= MAX_DESCRIPTOR_LEN {
            r.skip_to(desc_at)?;
            let mut buf = vec![0u8; desc_len as usize];
            r.read_exact(&mut buf)?;
            let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
            let text = std::str::from_utf8(buf.get(..end).unwrap_or_default())
                .map_err(|_| r.malformed(desc_at, "descriptor is not UTF-8 text"))?;
            r.descriptor = Descriptor::parse(text).map_err(|(line, reason)| {
                r.malformed(desc_at, format!("descriptor line {line}: {reason}"))
            })?;
        }
        if r.descriptor.has_parent() {
            return Err(FormatError::Unsupported {
                path: path.to_owned(),
                what: "VMDK with a parent disk (snapshot/delta link)".into(),
            });
        }
        let grains_at = r.header.overhead.saturating_mul(SECTOR);
        if grains_at < r.pos || grains_at > len {
            return Err(r.malformed(
                64,
                format!("overhead {:#x} sectors is out of bounds", r.header.overhead),
            ));
        }
        r.skip_to(grains_at)?;
        r.advance()?;
        Ok(r)
    }

    fn malformed(&self, offset: u64, reason: impl Into<String>) -> FormatError {
        FormatError::malformed(&self.path, FORMAT, offset, reason)
    }

    fn read_exact(&mut self, buf: &mut [u8]) -> Result<(), FormatError> {
        if self.pos + buf.len() as u64 > self.len {
            return Err(self.malformed(self.pos, "stream ends early"));
        }
        self.input
            .read_exact(buf)
            .map_err(|e| FormatError::io(&self.path, e))?;
        self.pos += buf.len() as u64;
        Ok(())
    }

    /// Discards input up to byte `to`.
    fn skip_to(&mut self, to: u64) -> Result<(), FormatError> {
        if to > self.len {
            return Err(self.malformed(self.pos, format!("stream ends before {to:#x}")));
        }
        let n = to.saturating_sub(self.pos);
        let copied = std::io::copy(&mut (&mut self.input).take(n), &mut std::io::sink())
            .map_err(|e| FormatError::io(&self.path, e))?;
        if copied != n {
            return Err(self.malformed(self.pos + copied, "stream ends early"));
        }
        self.pos += n;
        Ok(())
    }

    /// Walks metadata markers up to the next grain marker (or the end of stream).
    fn advance(&mut self) -> Result<(), FormatError> {
        self.next = None;
        // Every iteration consumes at least one sector, so this ends by `len`.
        loop {
            let at = self.pos.next_multiple_of(SECTOR);
            if at + GRAIN_MARKER_LEN as u64 > self.len {
                // qemu's layout has no end-of-stream marker: the file just ends.
                return Ok(());
            }
            self.skip_to(at)?;
            let mut m = [0u8; 16];
            self.read_exact(&mut m[..GRAIN_MARKER_LEN])?;
            if m[8..12] != [0, 0, 0, 0] {
                let Marker::Grain { lba, size } = Marker::parse(&m) else {
                    return Err(self.malformed(at, "bad marker"));
                };
                return self.announce(at, lba, u64::from(size));
            }
            self.read_exact(&mut m[12..16])?;
            let Marker::Meta { kind, sectors } = Marker::parse(&m) else {
                return Err(self.malformed(at, "bad marker"));
            };
            let body = sectors
                .checked_mul(SECTOR)
                .and_then(|b| b.checked_add(at + SECTOR))
                .filter(|&end| end <= self.len)
                .ok_or_else(|| {
                    self.malformed(
                        at,
                        format!("marker announces {sectors:#x} sectors past the end"),
                    )
                })?;
            match kind {
                TYPE_EOS => return Ok(()),
                TYPE_GT | TYPE_GD | TYPE_FOOTER => self.skip_to(body)?,
                other => {
                    return Err(self.malformed(at + 12, format!("unknown marker type {other}")))
                }
            }
        }
    }

    fn announce(&mut self, at: u64, lba: u64, size: u64) -> Result<(), FormatError> {
        let grain_bytes = self.header.grain_bytes();
        let start = lba
            .checked_mul(SECTOR)
            .filter(|&s| s < self.size && lba.is_multiple_of(self.header.grain_size))
            .ok_or_else(|| {
                self.malformed(
                    at,
                    format!("grain LBA {lba:#x} is not a grain inside the disk"),
                )
            })?;
        let previous_end = self
            .current
            .map_or(self.floor, |(_, end)| end.max(self.floor));
        if start < previous_end {
            return Err(self.malformed(
                at,
                format!("grain at LBA {lba:#x} comes after a later grain"),
            ));
        }
        if size > max_compressed_len(grain_bytes) || self.pos + size > self.len {
            return Err(self.malformed(
                at,
                format!("compressed grain of {size} bytes is out of bounds"),
            ));
        }
        self.next = Some(Pending {
            start,
            end: (start + grain_bytes).min(self.size),
            size,
        });
        Ok(())
    }

    /// Makes `offset` answerable: returns `(end, true)` when it lies in the loaded grain, or
    /// `(end, false)` for a zero run ending at `end`.
    fn locate(&mut self, offset: u64) -> Result<(u64, bool), FormatError> {
        // Each iteration consumes a grain, so this ends with the input.
        loop {
            if let Some((start, end)) = self.current {
                if (start..end).contains(&offset) {
                    return Ok((end, true));
                }
            }
            if offset < self.floor {
                return Err(FormatError::OutOfOrder {
                    path: self.path.clone(),
                    offset,
                    position: self.floor,
                });
            }
            let Some(g) = self.next else {
                return Ok((self.size, false));
            };
            if offset < g.start {
                return Ok((g.start, false));
            }
            self.compressed_buf.resize(g.size as usize, 0);
            let mut data = std::mem::take(&mut self.compressed_buf);
            let data_at = self.pos;
            let read = self.read_exact(&mut data);
            self.compressed_buf = data;
            read?;
            if offset < g.end {
                self.grain_buf.resize(self.header.grain_bytes() as usize, 0);
                self.current = None;
                inflate_grain(
                    &mut self.inflater,
                    &self.compressed_buf,
                    &mut self.grain_buf,
                )
                .map_err(|reason| self.malformed(data_at, reason))?;
                self.current = Some((g.start, g.end));
                self.floor = g.start;
            } else {
                self.floor = g.end;
            }
            self.advance()?;
        }
    }
}

impl DiskReader for StreamReader {
    fn virtual_size(&self) -> u64 {
        self.size
    }

    fn map(&mut self, offset: u64) -> Result<Mapping, FormatError> {
        let (end, data) = self.locate(offset)?;
        Ok(Mapping {
            extent: if data { Extent::Data } else { Extent::Zero },
            len: end.min(self.size).saturating_sub(offset),
        })
    }

    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), FormatError> {
        if offset
            .checked_add(buf.len() as u64)
            .is_none_or(|end| end > self.size)
        {
            return Err(self.malformed(offset, "read past the virtual size"));
        }
        let mut done = 0usize;
        while done < buf.len() {
            let pos = offset + done as u64;
            let (end, data) = self.locate(pos)?;
            let n = (end - pos).min((buf.len() - done) as u64) as usize;
            let out = &mut buf[done..done + n];
            match (data, self.current) {
                (true, Some((start, _))) => {
                    let from = (pos - start) as usize;
                    let src = self
                        .grain_buf
                        .get(from..from + n)
                        .ok_or_else(|| self.malformed(pos, "grain buffer too short"))?;
                    out.copy_from_slice(src);
                }
                _ => out.fill(0),
            }
            done += n;
        }
        Ok(())
    }

    fn info(&self) -> ImageInfo {
        let mut info = ImageInfo::new(DiskFormat::Vmdk, self.size);
        info.cluster_size = Some(self.header.grain_bytes());
        let create_type = self
            .descriptor
            .create_type
            .clone()
            .unwrap_or_else(|| "streamOptimized".into());
        info.subformat = Some(create_type.clone());
        info.compression = Some("deflate".into());
        let fs = &mut info.format_specific;
        if let Some(cid) = self.descriptor.cid {
            fs.insert("cid".into(), cid.into());
        }
        fs.insert(
            "parent-cid".into(),
            self.descriptor.parent_cid.unwrap_or(NO_PARENT).into(),
        );
        fs.insert("create-type".into(), create_type.into());
        // One extent, as `qemu-img info` lists it (only FLAT extents name their kind).
        let mut extent = serde_json::Map::new();
        extent.insert("compressed".into(), true.into());
        extent.insert("virtual-size".into(), self.size.into());
        extent.insert("filename".into(), self.path.display().to_string().into());
        extent.insert("cluster-size".into(), self.header.grain_bytes().into());
        extent.insert("format".into(), "".into());
        fs.insert(
            "extents".into(),
            vec![serde_json::Value::Object(extent)].into(),
        );
        info
    }
}

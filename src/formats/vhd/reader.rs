//! Reading fixed and dynamic VHDs: locating footer, header and BAT, and guest reads.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::dynamic::{self, DynamicHeader, HEADER_SIZE, UNALLOCATED};
use super::footer::{self, DiskType, Footer, FOOTER_SIZE};
use super::geometry::MAX_SECTORS;
use crate::formats::holes;
use crate::formats::{DiskFormat, DiskReader, Extent, FormatError, ImageInfo, Mapping};

/// The structures of an opened VHD, checksums verified and BAT bounds checked.
pub struct Layout {
    pub footer: Footer,
    /// Where the (end) footer lies; the copy at 0 is used only when this one is damaged.
    pub footer_offset: u64,
    /// The end footer was damaged and the copy at offset 0 was used.
    pub from_copy: bool,
    pub guest_size: u64,
    pub dynamic: Option<Dynamic>,
}

/// A dynamic disk's header and BAT.
pub struct Dynamic {
    pub header: DynamicHeader,
    pub bat: Vec<u32>,
}

fn read_block<const N: usize>(
    path: &Path,
    file: &File,
    offset: u64,
) -> Result<[u8; N], FormatError> {
    let mut buf = [0u8; N];
    file.read_exact_at(&mut buf, offset)
        .map_err(|source| FormatError::io(path, source))?;
    Ok(buf)
}

/// Finds the footer (end of file, else the copy at 0), checks it, and loads header and BAT.
pub fn load(path: &Path, file: &File) -> Result<Layout, FormatError> {
    let len = crate::io::sys::file_len(file).map_err(|source| FormatError::io(path, source))?;
    if len < FOOTER_SIZE as u64 {
        return Err(FormatError::malformed(
            path,
            "vhd",
            0,
            "file shorter than a footer",
        ));
    }
    let footer_offset = len - FOOTER_SIZE as u64;
    let tail: [u8; FOOTER_SIZE] = read_block(path, file, footer_offset)?;
    let (footer, from_copy) = if footer::has_cookie(&tail) {
        (
            Footer::parse(&tail).map_err(|e| e.at(path, footer_offset))?,
            false,
        )
    } else {
        // Some tools leave the end footer out of date; qemu reads the copy at 0 then.
        let head: [u8; FOOTER_SIZE] = read_block(path, file, 0)?;
        let footer = Footer::parse(&head).map_err(|e| e.at(path, 0))?;
        if footer.disk_type == DiskType::Fixed {
            return Err(FormatError::malformed(
                path,
                "vhd",
                footer_offset,
                "fixed disk without an end footer",
            ));
        }
        (footer, true)
    };
    let guest_size = footer.guest_size();
    check_guest_size(path, guest_size)?;
    let dynamic = match footer.disk_type {
        DiskType::Fixed => {
            check_fixed_data(path, footer_offset, guest_size)?;
            None
        }
        DiskType::Dynamic => Some(load_dynamic(path, file, &footer, len, guest_size)?),
    };
    Ok(Layout {
        footer,
        footer_offset,
        from_copy,
        guest_size,
        dynamic,
    })
}

/// The one rule for the footer of a fixed disk, whether in a file or streamed out of an
/// archive: the footer at `footer_offset` (after that many bytes of data) is valid (cookie,
/// checksum), says fixed, and its guest size fits the data. Returns the guest size.
pub(crate) fn check_fixed_footer(
    path: &Path,
    footer_offset: u64,
    bytes: &[u8; FOOTER_SIZE],
) -> Result<u64, FormatError> {
    let footer = Footer::parse(bytes).map_err(|e| e.at(path, footer_offset))?;
    if footer.disk_type != DiskType::Fixed {
        return Err(FormatError::malformed(
            path,
            "vhd",
            footer_offset,
            format!(
                "footer says a {:?} disk where a fixed one ends",
                footer.disk_type
            ),
        ));
    }
    let guest_size = footer.guest_size();
    check_guest_size(path, guest_size)?;
    check_fixed_data(path, footer_offset, guest_size)?;
    Ok(guest_size)
}

fn check_guest_size(path: &Path, guest_size: u64) -> Result<(), FormatError> {
    if guest_size / 512 > MAX_SECTORS {
        return Err(FormatError::Unsupported {
            path: path.to_owned(),
            what: format!("VHD of {guest_size} bytes, beyond the 2040 GiB limit"),
        });
    }
    Ok(())
}

fn check_fixed_data(path: &Path, footer_offset: u64, guest_size: u64) -> Result<(), FormatError> {
    if guest_size > footer_offset {
        return Err(FormatError::malformed(
            path,
            "vhd",
            footer_offset,
            format!("fixed disk of {guest_size} bytes has only {footer_offset} bytes of data"),
        ));
    }
    Ok(())
}

fn load_dynamic(
    path: &Path,
    file: &File,
    footer: &Footer,
    len: u64,
    guest_size: u64,
) -> Result<Dynamic, FormatError> {
    let at = footer.data_offset;
    if at
        .checked_add(HEADER_SIZE as u64)
        .is_none_or(|end| end > len)
    {
        return Err(FormatError::malformed(
            path,
            "vhd",
            at,
            "dynamic header past end of file",
        ));
    }
    let bytes: [u8; HEADER_SIZE] = read_block(path, file, at)?;
    let header = DynamicHeader::parse(&bytes).map_err(|e| e.at(path, at))?;
    let entries = u64::from(header.max_table_entries);
    if entries * u64::from(header.block_size) < guest_size {
        return Err(FormatError::malformed(
            path,
            "vhd",
            at + 28,
            format!("BAT of {entries} blocks cannot cover {guest_size} bytes"),
        ));
    }
    let table_end = header.table_offset.checked_add(entries * 4);
    if table_end.is_none_or(|end| end > len) {
        return Err(FormatError::malformed(
            path,
            "vhd",
            header.table_offset,
            "BAT past end of file",
        ));
    }
    // Bounded by MAX_TABLE_ENTRIES (checked by the header parser) and by the file length.
    let mut raw = vec![0u8; entries as usize * 4];
    file.read_exact_at(&mut raw, header.table_offset)
        .map_err(|source| FormatError::io(path, source))?;
    let bat = dynamic::parse_bat(&raw);
    let span = header.bitmap_bytes() + u64::from(header.block_size);
    for (index, &entry) in bat.iter().enumerate() {
        if entry != UNALLOCATED && u64::from(entry) * 512 + span > len {
            return Err(FormatError::malformed(
                path,
                "vhd",
                header.table_offset + index as u64 * 4,
                format!("block {index} at sector {entry:#x} lies past the end of the file"),
            ));
        }
    }
    Ok(Dynamic { header, bat })
}

/// Guest view of a VHD.
pub struct VhdReader {
    path: PathBuf,
    file: File,
    layout: Layout,
    /// The sector bitmap of the last dynamic block looked at: (block index, bitmap).
    bitmap: Option<(usize, Vec<u8>)>,
}

impl VhdReader {
    pub fn new(path: &Path, file: File) -> Result<VhdReader, FormatError> {
        let layout = load(path, &file)?;
        Ok(VhdReader {
            path: path.to_owned(),
            file,
            layout,
            bitmap: None,
        })
    }

    /// From `offset`: where the bytes are in the file (None: zeroes) and for how long.
    fn extent(&mut self, offset: u64) -> Result<(Option<u64>, u64), FormatError> {
        let size = self.layout.guest_size;
        let Some(dynamic) = &self.layout.dynamic else {
            return Ok((Some(offset), size - offset));
        };
        let block_size = u64::from(dynamic.header.block_size);
        let index = (offset / block_size) as usize;
        let within = offset % block_size;
        let block_end = ((index as u64 + 1) * block_size).min(size);
        let entry = dynamic.bat.get(index).copied().unwrap_or(UNALLOCATED);
        if entry == UNALLOCATED {
            // Join the following unallocated blocks into one run.
            let free = dynamic
                .bat
                .get(index + 1..)
                .unwrap_or(&[])
                .iter()
                .take_while(|e| **e == UNALLOCATED)
                .count() as u64;
            let end = (block_end + free * block_size).min(size);
            return Ok((None, end - offset));
        }
        let bitmap_bytes = dynamic.header.bitmap_bytes();
        let bitmap_at = u64::from(entry) * 512;
        if self.bitmap.as_ref().is_none_or(|(i, _)| *i != index) {
            // bitmap_bytes ≤ 8 KiB: bounded by MAX_BLOCK_SIZE.
            let mut bitmap = vec![0u8; bitmap_bytes as usize];
            self.file
                .read_exact_at(&mut bitmap, bitmap_at)
                .map_err(|source| FormatError::io(&self.path, source))?;
            self.bitmap = Some((index, bitmap));
        }
        let bitmap = self
            .bitmap
            .as_ref()
            .map(|(_, b)| b.as_slice())
            .unwrap_or(&[]);
        let sector = within / 512;
        let last = (block_end - index as u64 * block_size).div_ceil(512);
        let present = bit(bitmap, sector);
        let run_end = same_bits_until(bitmap, sector, last, present);
        let len = (index as u64 * block_size + run_end * 512).min(block_end) - offset;
        let host = present.then_some(bitmap_at + bitmap_bytes + within);
        Ok((host, len))
    }
}

/// Bit `sector` of a sector bitmap (most significant bit first).
fn bit(bitmap: &[u8], sector: u64) -> bool {
    bitmap
        .get((sector / 8) as usize)
        .is_some_and(|byte| byte & (0x80 >> (sector % 8)) != 0)
}

/// The first sector from `start` (below `end`) whose bit differs from `value`, else `end`.
fn same_bits_until(bitmap: &[u8], start: u64, end: u64, value: bool) -> u64 {
    let full = if value { 0xff } else { 0x00 };
    let mut sector = start;
    while sector < end {
        if sector.is_multiple_of(8) && bitmap.get((sector / 8) as usize) == Some(&full) {
            sector += 8;
        } else if bit(bitmap, sector) == value {
            sector += 1;
        } else {
            return sector;
        }
    }
    end
}

impl DiskReader for VhdReader {
    fn virtual_size(&self) -> u64 {
        self.layout.guest_size
    }

    fn map(&mut self, offset: u64) -> Result<Mapping, FormatError> {
        if offset >= self.virtual_size() {
            return Err(FormatError::malformed(
                &self.path,
                "vhd",
                offset,
                "map past the virtual size",
            ));
        }
        let (host, len) = self.extent(offset)?;
        let Some(host) = host else {
            return Ok(Mapping {
                extent: Extent::Zero,
                len,
            });
        };
        // Holes in the file: qemu leaves unwritten parts of fixed disks and blocks sparse.
        let (data, end) = holes::run_at(&self.file, host, host + len)
            .map_err(|source| FormatError::io(&self.path, source))?;
        Ok(Mapping {
            extent: if data { Extent::Data } else { Extent::Zero },
            len: end - host,
        })
    }

    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), FormatError> {
        let end = offset
            .checked_add(buf.len() as u64)
            .filter(|end| *end <= self.layout.guest_size)
            .ok_or_else(|| {
                FormatError::malformed(&self.path, "vhd", offset, "read past the virtual size")
            })?;
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
                    .map_err(|source| FormatError::io(&self.path, source))?,
                None => part.fill(0),
            }
            done += n;
        }
        Ok(())
    }

    fn info(&self) -> ImageInfo {
        let mut info = ImageInfo::new(DiskFormat::Vhd, self.layout.guest_size);
        match &self.layout.dynamic {
            Some(d) => {
                info.cluster_size = Some(u64::from(d.header.block_size));
                info.subformat = Some("dynamic".into());
            }
            None => info.subformat = Some("fixed".into()),
        }
        info
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bitmap_runs_stop_at_the_first_different_bit() {
        // Sectors 0–9 present, 10–15 absent, 16–23 present.
        let bitmap = [0xff, 0xc0, 0xff];
        assert_eq!(same_bits_until(&bitmap, 0, 24, true), 10);
        assert_eq!(same_bits_until(&bitmap, 10, 24, false), 16);
        assert_eq!(same_bits_until(&bitmap, 16, 24, true), 24);
        assert!(!bit(&bitmap, 12));
        assert!(!bit(&bitmap, 1000));
    }
}

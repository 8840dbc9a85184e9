//! Raw disks: the guest bytes, nothing else. Holes in the host file read as zeroes.
//!
//! The reader asks the filesystem where the data is (`SEEK_DATA`/`SEEK_HOLE`) so a sparse
//! raw file converts without reading its holes; the writer leaves everything the copy loop
//! skips as a hole unless preallocation is asked for.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::{
    CheckReport, DiskFormat, DiskReader, DiskWriter, Extent, FormatError, ImageInfo, Mapping,
    Options, Probe, Target,
};
use crate::io::device::Device;
use crate::io::sys::{self, Seek};

/// The unit the raw writer asks for. Any size works for raw; 4 KiB is the filesystem block and
/// qemu-img convert's default hole grain (`-S 4k`), so all-zero blocks stay holes as with qemu.
const GRANULARITY: u64 = 4096;

/// Size of the zero-filled buffer used by `preallocation=full`.
const ZERO_FILL_CHUNK: usize = 1 << 20;

/// Raw is the fallback when nothing else matches: it never claims a file by content.
pub fn probe(_probe: &Probe) -> bool {
    false
}

pub fn open(path: &Path, file: File) -> Result<Box<dyn DiskReader>, FormatError> {
    let size = sys::file_len(&file).map_err(|source| FormatError::io(path, source))?;
    Ok(Box::new(RawReader {
        path: path.to_owned(),
        file,
        size,
    }))
}

struct RawReader {
    path: PathBuf,
    file: File,
    size: u64,
}

impl DiskReader for RawReader {
    fn virtual_size(&self) -> u64 {
        self.size
    }

    fn map(&mut self, offset: u64) -> Result<Mapping, FormatError> {
        let rest = self.size.saturating_sub(offset);
        let io = |source| FormatError::io(&self.path, source);
        let data_start = match sys::seek_data(&self.file, offset).map_err(io)? {
            Seek::Unsupported => offset,
            Seek::NoMore => {
                return Ok(Mapping {
                    extent: Extent::Zero,
                    len: rest,
                })
            }
            Seek::At(start) => start,
        };
        if data_start > offset {
            return Ok(Mapping {
                extent: Extent::Zero,
                len: (data_start - offset).min(rest),
            });
        }
        let data_end = match sys::seek_hole(&self.file, offset).map_err(io)? {
            Seek::At(end) if end > offset => end,
            _ => self.size,
        };
        Ok(Mapping {
            extent: Extent::Data,
            len: (data_end - offset).min(rest),
        })
    }

    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), FormatError> {
        self.file
            .read_exact_at(buf, offset)
            .map_err(|source| FormatError::io(&self.path, source))
    }

    fn info(&self) -> ImageInfo {
        ImageInfo::new(DiskFormat::Raw, self.size)
    }
}

/// qemu-img's `preallocation` values for raw.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Preallocation {
    /// Sparse: only written data takes space.
    Off,
    /// Reserve every block with `posix_fallocate` (reads as zero, no zeroes written).
    Falloc,
    /// Write zeroes over the whole disk.
    Full,
}

pub fn create(
    target: Target<'_>,
    virtual_size: u64,
    options: &Options,
) -> Result<Box<dyn DiskWriter>, FormatError> {
    let preallocation = match options.choice("preallocation", &["off", "falloc", "full"])? {
        None | Some("off") => Preallocation::Off,
        Some("falloc") => Preallocation::Falloc,
        Some(_) => Preallocation::Full,
    };
    options.reject_unknown("raw")?;
    let path = target.path;
    let io = |source| FormatError::io(path, source);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .map_err(io)?;
    file.set_len(virtual_size).map_err(io)?;
    match preallocation {
        Preallocation::Off => {}
        Preallocation::Falloc => sys::allocate(&file, virtual_size).map_err(io)?,
        Preallocation::Full => zero_fill(&file, virtual_size).map_err(io)?,
    }
    Ok(Box::new(RawWriter {
        path: path.to_owned(),
        file,
        size: virtual_size,
    }))
}

fn zero_fill(file: &File, len: u64) -> Result<(), std::io::Error> {
    let zeroes = vec![0u8; ZERO_FILL_CHUNK];
    let mut offset = 0;
    while offset < len {
        let n = (len - offset).min(ZERO_FILL_CHUNK as u64) as usize;
        file.write_all_at(&zeroes[..n], offset)?;
        offset += n as u64;
    }
    Ok(())
}

struct RawWriter {
    path: PathBuf,
    file: File,
    size: u64,
}

impl DiskWriter for RawWriter {
    fn granularity(&self) -> u64 {
        GRANULARITY
    }

    fn write_data(&mut self, offset: u64, data: &[u8]) -> Result<(), FormatError> {
        let end = offset.checked_add(data.len() as u64);
        if end.is_none_or(|end| end > self.size) {
            return Err(FormatError::Io {
                path: self.path.clone(),
                source: std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    format!(
                        "write of {:#x} bytes at {offset:#x} passes the disk end {:#x}",
                        data.len(),
                        self.size
                    ),
                ),
            });
        }
        self.file
            .write_all_at(data, offset)
            .map_err(|source| FormatError::io(&self.path, source))
    }

    fn finish(self: Box<Self>) -> Result<(), FormatError> {
        // The length was set at creation; set it again in case something truncated the file.
        self.file
            .set_len(self.size)
            .map_err(|source| FormatError::io(&self.path, source))
    }
}

/// Writes a raw image of `size` bytes in place onto `device`. The copy loop skips zero units,
/// which on a device would keep old data: every gap between written runs, and the rest up to
/// `size` at `finish`, is zeroed ([`Device::zero`]). Nothing past `size` is touched.
pub fn device_writer(device: Device, size: u64) -> Box<dyn DiskWriter> {
    Box::new(DeviceWriter {
        device,
        size,
        settled: 0,
    })
}

struct DeviceWriter {
    device: Device,
    size: u64,
    /// Bytes from the start that hold their final content.
    settled: u64,
}

impl DiskWriter for DeviceWriter {
    fn granularity(&self) -> u64 {
        GRANULARITY
    }

    fn write_data(&mut self, offset: u64, data: &[u8]) -> Result<(), FormatError> {
        let end = offset
            .checked_add(data.len() as u64)
            .filter(|end| *end <= self.size && offset >= self.settled);
        let Some(end) = end else {
            return Err(FormatError::Io {
                path: self.device.path().to_owned(),
                source: std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    format!("write of {:#x} bytes at {offset:#x} out of order or past the disk end {:#x}", data.len(), self.size),
                ),
            });
        };
        self.device.zero(self.settled, offset)?;
        self.device.write_at(data, offset)?;
        self.settled = end;
        Ok(())
    }

    fn finish(mut self: Box<Self>) -> Result<(), FormatError> {
        self.device.zero(self.settled, self.size)?;
        self.settled = self.size;
        Ok(self.device.sync()?)
    }
}

/// A raw file has no structure to check.
pub fn check(_path: &Path, _file: File) -> Result<CheckReport, FormatError> {
    Ok(CheckReport::default())
}

pub fn resize(path: &Path, file: File, new_size: u64, shrink: bool) -> Result<(), FormatError> {
    let io = |source| FormatError::io(path, source);
    let current = file.metadata().map_err(io)?.len();
    if new_size < current && !shrink {
        return Err(FormatError::ShrinkRefused {
            path: path.to_owned(),
            current,
            requested: new_size,
        });
    }
    file.set_len(new_size).map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(path: &Path) -> Target<'_> {
        Target {
            path,
            final_path: path,
        }
    }

    /// Collects the whole map of a reader as (kind, start, len) runs.
    fn runs(reader: &mut dyn DiskReader) -> Vec<(Extent, u64, u64)> {
        let mut out: Vec<(Extent, u64, u64)> = Vec::new();
        let mut offset = 0;
        while offset < reader.virtual_size() {
            let m = reader.map(offset).unwrap();
            assert!(m.len > 0);
            match out.last_mut() {
                Some(last) if last.0 == m.extent => last.2 += m.len,
                _ => out.push((m.extent, offset, m.len)),
            }
            offset += m.len;
        }
        assert_eq!(offset, reader.virtual_size());
        out
    }

    #[test]
    fn holes_are_mapped_as_zero_and_data_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("disk.raw");
        let size = 4 << 20;
        let file = File::create(&path).unwrap();
        file.set_len(size).unwrap();
        // One data run in the middle; tmpfs and ext4 both report holes at 4 KiB grain.
        file.write_all_at(&[0xab; 8192], 1 << 20).unwrap();
        drop(file);
        let mut reader = open(&path, File::open(&path).unwrap()).unwrap();
        assert_eq!(reader.virtual_size(), size);
        let map = runs(reader.as_mut());
        let data: Vec<_> = map.iter().filter(|r| r.0 == Extent::Data).collect();
        assert_eq!(data.len(), 1, "{map:?}");
        assert!(data[0].1 <= 1 << 20 && data[0].1 + data[0].2 >= (1 << 20) + 8192);
        assert!(data[0].2 < size, "the holes must not be reported as data");
        let mut buf = [0u8; 16];
        reader.read_at((1 << 20) + 8184, &mut buf).unwrap();
        assert_eq!(buf[..8], [0xab; 8]);
        assert_eq!(buf[8..], [0; 8]);
    }

    #[test]
    fn empty_file_has_no_runs() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("empty.raw");
        File::create(&path).unwrap();
        let mut reader = open(&path, File::open(&path).unwrap()).unwrap();
        assert_eq!(reader.virtual_size(), 0);
        assert!(runs(reader.as_mut()).is_empty());
    }

    #[test]
    fn reading_past_the_end_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("small.raw");
        std::fs::write(&path, [1u8; 1000]).unwrap();
        let mut reader = open(&path, File::open(&path).unwrap()).unwrap();
        let mut buf = [0u8; 100];
        assert!(matches!(
            reader.read_at(950, &mut buf),
            Err(FormatError::Io { .. })
        ));
    }

    #[test]
    fn writer_leaves_holes_and_sets_the_length() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.raw");
        let unit = GRANULARITY as usize;
        let size = 3 * GRANULARITY + 512;
        let mut writer = create(target(&path), size, &Options::default()).unwrap();
        assert_eq!(writer.granularity(), GRANULARITY);
        writer.write_data(GRANULARITY, &vec![7; unit]).unwrap();
        // The short unit that ends the disk.
        writer.write_data(3 * GRANULARITY, &[9; 512]).unwrap();
        writer.finish().unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(bytes.len() as u64, size);
        assert!(bytes[..unit].iter().all(|&b| b == 0));
        assert!(bytes[unit..2 * unit].iter().all(|&b| b == 7));
        assert!(bytes[2 * unit..3 * unit].iter().all(|&b| b == 0));
        assert!(bytes[3 * unit..].iter().all(|&b| b == 9));
        // The unwritten units are holes.
        use std::os::unix::fs::MetadataExt;
        let blocks = std::fs::metadata(&path).unwrap().blocks();
        assert!(blocks * 512 <= 2 * GRANULARITY, "{blocks} blocks allocated");
    }

    #[test]
    fn write_past_the_end_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.raw");
        let mut writer = create(target(&path), GRANULARITY, &Options::default()).unwrap();
        assert!(writer.write_data(GRANULARITY, &[1]).is_err());
    }

    #[test]
    fn preallocation_reserves_blocks() {
        let dir = tempfile::tempdir().unwrap();
        for mode in ["falloc", "full"] {
            let path = dir.path().join(format!("{mode}.raw"));
            let options = Options::parse(&format!("preallocation={mode}")).unwrap();
            create(target(&path), 1 << 20, &options)
                .unwrap()
                .finish()
                .unwrap();
            let meta = std::fs::metadata(&path).unwrap();
            use std::os::unix::fs::MetadataExt;
            assert_eq!(meta.len(), 1 << 20);
            assert!(meta.blocks() * 512 >= 1 << 20, "{mode}: {}", meta.blocks());
        }
    }

    #[test]
    fn unknown_option_and_bad_preallocation_are_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.raw");
        for text in ["cluster_size=64K", "preallocation=metadata"] {
            let options = Options::parse(text).unwrap();
            assert!(matches!(
                create(target(&path), 1 << 20, &options),
                Err(FormatError::InvalidOption { .. })
            ));
        }
    }

    #[test]
    fn shrink_needs_the_flag() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.raw");
        std::fs::write(&path, [0u8; 4096]).unwrap();
        let rw = || OpenOptions::new().write(true).open(&path).unwrap();
        assert!(matches!(
            resize(&path, rw(), 1024, false),
            Err(FormatError::ShrinkRefused {
                current: 4096,
                requested: 1024,
                ..
            })
        ));
        resize(&path, rw(), 8192, false).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 8192);
        resize(&path, rw(), 1024, true).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 1024);
    }
}

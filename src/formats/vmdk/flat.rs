//! monolithicFlat: a text descriptor file naming one raw extent file beside it.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Component, Path, PathBuf};

use super::descriptor::{Descriptor, DescriptorSpec, MAX_DESCRIPTOR_LEN, NO_PARENT};
use super::header::SECTOR;
use super::FORMAT;
use crate::formats::{DiskFormat, DiskReader, DiskWriter, Extent, FormatError, ImageInfo, Mapping};

/// Reads and parses a descriptor file.
pub fn read_descriptor_file(path: &Path, file: &File) -> Result<Descriptor, FormatError> {
    let len = crate::io::sys::file_len(file).map_err(|e| FormatError::io(path, e))?;
    if len > MAX_DESCRIPTOR_LEN {
        return Err(FormatError::malformed(
            path,
            FORMAT,
            0,
            format!("descriptor file of {len} bytes is too large"),
        ));
    }
    let mut buf = vec![0u8; len as usize];
    file.read_exact_at(&mut buf, 0)
        .map_err(|e| FormatError::io(path, e))?;
    let text = std::str::from_utf8(&buf)
        .map_err(|_| FormatError::malformed(path, FORMAT, 0, "descriptor is not UTF-8 text"))?;
    Descriptor::parse(text).map_err(|(line, reason)| {
        FormatError::malformed(path, FORMAT, 0, format!("descriptor line {line}: {reason}"))
    })
}

/// The extent file named by `name`, resolved in the descriptor's folder; names that are
/// absolute or climb out of the folder are refused (a descriptor must not reach other files).
pub fn resolve_extent(descriptor_path: &Path, name: &str) -> Result<PathBuf, FormatError> {
    let rel = Path::new(name);
    if name.is_empty() || !rel.components().all(|c| matches!(c, Component::Normal(_))) {
        return Err(FormatError::Unsupported {
            path: descriptor_path.to_owned(),
            what: format!("extent file {name:?} is absolute or leaves the descriptor's folder"),
        });
    }
    let folder = descriptor_path.parent().unwrap_or(Path::new(""));
    Ok(folder.join(rel))
}

/// Checks a descriptor describes exactly one flat extent without a parent; returns it.
pub fn flat_extent(path: &Path, d: &Descriptor) -> Result<(PathBuf, u64, u64), FormatError> {
    let unsupported = |what: String| FormatError::Unsupported {
        path: path.to_owned(),
        what,
    };
    if d.has_parent() {
        return Err(unsupported(
            "VMDK with a parent disk (snapshot/delta link)".into(),
        ));
    }
    let [extent] = d.extents.as_slice() else {
        return Err(unsupported(format!(
            "VMDK descriptor with {} extents (only single-extent monolithicFlat is read)",
            d.extents.len()
        )));
    };
    if !matches!(extent.kind.as_str(), "FLAT" | "VMFS") {
        return Err(unsupported(format!(
            "descriptor file with a {} extent",
            extent.kind
        )));
    }
    let sectors_to_bytes = |s: u64| {
        s.checked_mul(SECTOR)
            .ok_or_else(|| FormatError::malformed(path, FORMAT, 0, "extent size overflows"))
    };
    Ok((
        resolve_extent(path, &extent.file)?,
        sectors_to_bytes(extent.sectors)?,
        sectors_to_bytes(extent.offset)?,
    ))
}

/// Largest disk a descriptor may describe: file offsets are signed 64-bit (`off_t`).
const MAX_FLAT_BYTES: u64 = i64::MAX as u64;

/// Refuses a descriptor whose disk (`size` bytes from `base` in the extent) does not fit in
/// the extent file of `extent_len` bytes, or passes 2^63 bytes. Named after the descriptor
/// (`path`), the file the user gave.
pub fn check_extent_fits(
    path: &Path,
    extent_path: &Path,
    size: u64,
    base: u64,
    extent_len: u64,
) -> Result<(), FormatError> {
    let end = base.checked_add(size).filter(|end| *end <= MAX_FLAT_BYTES);
    let Some(end) = end else {
        return Err(FormatError::malformed(
            path,
            FORMAT,
            0,
            format!("extent of {size} bytes at {base:#x} passes 2^63 bytes"),
        ));
    };
    if end > extent_len {
        return Err(FormatError::malformed(
            path,
            FORMAT,
            0,
            format!(
                "the descriptor claims {} sectors but extent {} holds {extent_len} bytes",
                size / SECTOR,
                extent_path.display()
            ),
        ));
    }
    Ok(())
}

pub struct FlatReader {
    extent_path: PathBuf,
    extent: File,
    size: u64,
    /// Byte offset of the disk inside the extent file.
    base: u64,
    extent_len: u64,
    create_type: String,
    cid: Option<u32>,
    parent_cid: Option<u32>,
}

impl FlatReader {
    pub fn open(path: &Path, file: &File) -> Result<FlatReader, FormatError> {
        let d = read_descriptor_file(path, file)?;
        let (extent_path, size, base) = flat_extent(path, &d)?;
        let extent = File::open(&extent_path).map_err(|e| FormatError::io(&extent_path, e))?;
        let extent_len = extent
            .metadata()
            .map_err(|e| FormatError::io(&extent_path, e))?
            .len();
        check_extent_fits(path, &extent_path, size, base, extent_len)?;
        Ok(FlatReader {
            extent_path,
            extent,
            size,
            base,
            extent_len,
            create_type: d.create_type.unwrap_or_else(|| "monolithicFlat".into()),
            cid: d.cid,
            parent_cid: d.parent_cid,
        })
    }
}

impl DiskReader for FlatReader {
    fn virtual_size(&self) -> u64 {
        self.size
    }

    fn map(&mut self, offset: u64) -> Result<Mapping, FormatError> {
        Ok(Mapping {
            extent: Extent::Data,
            len: self.size.saturating_sub(offset),
        })
    }

    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), FormatError> {
        if offset
            .checked_add(buf.len() as u64)
            .is_none_or(|end| end > self.size)
        {
            return Err(FormatError::malformed(
                &self.extent_path,
                FORMAT,
                offset,
                "read past the virtual size",
            ));
        }
        // `open` checked that the extent holds the whole disk; should the file shrink while
        // it is read, the rest reads as zeroes rather than failing half-way.
        let start = self.base.saturating_add(offset);
        let avail = self.extent_len.saturating_sub(start).min(buf.len() as u64) as usize;
        let (head, tail) = buf.split_at_mut(avail);
        self.extent
            .read_exact_at(head, start)
            .map_err(|e| FormatError::io(&self.extent_path, e))?;
        tail.fill(0);
        Ok(())
    }

    /// Facts in `qemu-img info`'s order; the extent file is also a child node there.
    fn info(&self) -> ImageInfo {
        let mut info = ImageInfo::new(DiskFormat::Vmdk, self.size);
        info.subformat = Some(self.create_type.clone());
        let fs = &mut info.format_specific;
        if let Some(cid) = self.cid {
            fs.insert("cid".into(), cid.into());
        }
        fs.insert(
            "parent-cid".into(),
            self.parent_cid.unwrap_or(NO_PARENT).into(),
        );
        fs.insert("create-type".into(), self.create_type.clone().into());
        let mut extent = serde_json::Map::new();
        extent.insert("virtual-size".into(), self.size.into());
        extent.insert(
            "filename".into(),
            self.extent_path.display().to_string().into(),
        );
        extent.insert("format".into(), "FLAT".into());
        fs.insert(
            "extents".into(),
            vec![serde_json::Value::Object(extent)].into(),
        );
        info.extent_files.push(self.extent_path.clone());
        info
    }
}

/// The extent name for a descriptor named `final_path`: `disk.vmdk` → `disk-flat.vmdk`, as qemu.
pub fn extent_name(final_path: &Path) -> String {
    let name = final_path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    match name.rfind('.') {
        Some(dot) => format!("{}-flat{}", &name[..dot], &name[dot..]),
        None => format!("{name}-flat"),
    }
}

/// Writes raw data into the extent file and the descriptor at `finish`.
pub struct FlatWriter {
    path: PathBuf,
    descriptor: String,
    extent_path: PathBuf,
    extent: File,
    size: u64,
}

impl FlatWriter {
    pub fn create(
        path: &Path,
        final_path: &Path,
        size: u64,
        spec: DescriptorSpec<'_>,
    ) -> Result<FlatWriter, FormatError> {
        let name = extent_name(final_path);
        let extent_path = path.parent().unwrap_or(Path::new("")).join(&name);
        let extent = File::create(&extent_path).map_err(|e| FormatError::io(&extent_path, e))?;
        let descriptor = DescriptorSpec {
            extent_file: &name,
            ..spec
        }
        .render_qemu();
        Ok(FlatWriter {
            path: path.to_owned(),
            descriptor,
            extent_path,
            extent,
            size,
        })
    }
}

impl DiskWriter for FlatWriter {
    fn granularity(&self) -> u64 {
        // Any unit works for raw data; 1 MiB keeps the copy loop's I/O large.
        1 << 20
    }

    fn write_data(&mut self, offset: u64, data: &[u8]) -> Result<(), FormatError> {
        if offset
            .checked_add(data.len() as u64)
            .is_none_or(|end| end > self.size)
        {
            return Err(FormatError::malformed(
                &self.extent_path,
                FORMAT,
                offset,
                "write past the virtual size",
            ));
        }
        self.extent
            .write_all_at(data, offset)
            .map_err(|e| FormatError::io(&self.extent_path, e))
    }

    fn finish(self: Box<Self>) -> Result<(), FormatError> {
        self.extent
            .set_len(self.size)
            .map_err(|e| FormatError::io(&self.extent_path, e))?;
        self.extent
            .sync_all()
            .map_err(|e| FormatError::io(&self.extent_path, e))?;
        std::fs::write(&self.path, self.descriptor.as_bytes())
            .map_err(|e| FormatError::io(&self.path, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extent_name_follows_qemu() {
        assert_eq!(extent_name(Path::new("/x/disk.vmdk")), "disk-flat.vmdk");
        assert_eq!(extent_name(Path::new("disk")), "disk-flat");
    }

    #[test]
    fn escaping_extent_paths_are_refused() {
        let d = Path::new("/images/d.vmdk");
        assert!(resolve_extent(d, "../etc/passwd").is_err());
        assert!(resolve_extent(d, "/etc/passwd").is_err());
        assert!(resolve_extent(d, "").is_err());
        assert_eq!(
            resolve_extent(d, "d-flat.vmdk").unwrap(),
            Path::new("/images/d-flat.vmdk")
        );
    }

    #[test]
    fn split_descriptor_is_refused() {
        let d = Descriptor::parse("RW 100 FLAT \"a-f001.vmdk\" 0\nRW 100 FLAT \"a-f002.vmdk\" 0\n")
            .unwrap();
        assert!(matches!(
            flat_extent(Path::new("a.vmdk"), &d),
            Err(FormatError::Unsupported { .. })
        ));
    }

    #[test]
    fn child_descriptor_is_refused() {
        let d = Descriptor::parse(
            "parentCID=1234abcd\nparentFileNameHint=\"base.vmdk\"\nRW 100 FLAT \"a-flat.vmdk\" 0\n",
        )
        .unwrap();
        assert!(matches!(
            flat_extent(Path::new("a.vmdk"), &d),
            Err(FormatError::Unsupported { .. })
        ));
    }
}

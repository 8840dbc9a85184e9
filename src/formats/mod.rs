//! Disk image formats: one reader and one writer per format, one generic copy loop.
//!
//! A reader answers "what is at this guest offset, for how long: data or zeroes" ([`DiskReader::map`])
//! and reads guest bytes; a writer takes whole allocation units at strictly increasing offsets
//! and writes its tables and footers in [`DiskWriter::finish`]. [`convert::convert`] connects any
//! reader to any writer and never touches a hole. Everything here is synchronous.
//!
//! Formats are detected by content ([`detect`]), never by file name.

pub mod archive;
pub mod compare;
pub mod convert;
mod error;
pub mod fields;
pub mod foreign;
pub(crate) mod holes;
pub mod measure;
pub mod options;
pub mod qcow2;
pub mod raw;
pub(crate) mod uuid;
pub mod vdi;
pub mod vhd;
pub mod vhdx;
pub mod vmdk;
mod writeback;

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

pub use error::FormatError;
pub use foreign::ForeignFormat;
pub use options::Options;

/// Disk formats, named as Glance names them (`disk_format`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DiskFormat {
    Raw,
    Qcow2,
    Vmdk,
    Vhd,
    Vhdx,
    Vdi,
}

impl DiskFormat {
    pub const ALL: [DiskFormat; 6] = [
        DiskFormat::Raw,
        DiskFormat::Qcow2,
        DiskFormat::Vmdk,
        DiskFormat::Vhd,
        DiskFormat::Vhdx,
        DiskFormat::Vdi,
    ];

    /// Parses a Glance name or a qemu-img alias (`vpc` is qemu's name for VHD).
    pub fn from_name(name: &str) -> Option<DiskFormat> {
        match name.to_ascii_lowercase().as_str() {
            "raw" | "img" => Some(DiskFormat::Raw),
            "qcow2" => Some(DiskFormat::Qcow2),
            "vmdk" => Some(DiskFormat::Vmdk),
            "vhd" | "vpc" => Some(DiskFormat::Vhd),
            "vhdx" => Some(DiskFormat::Vhdx),
            "vdi" => Some(DiskFormat::Vdi),
            _ => None,
        }
    }

    /// The Glance `disk_format` word.
    pub fn name(self) -> &'static str {
        match self {
            DiskFormat::Raw => "raw",
            DiskFormat::Qcow2 => "qcow2",
            DiskFormat::Vmdk => "vmdk",
            DiskFormat::Vhd => "vhd",
            DiskFormat::Vhdx => "vhdx",
            DiskFormat::Vdi => "vdi",
        }
    }

    /// The name qemu-img prints and accepts for `-f` (`vpc` for VHD).
    pub fn qemu_name(self) -> &'static str {
        match self {
            DiskFormat::Vhd => "vpc",
            other => other.name(),
        }
    }

    /// The usual file extension, without the dot.
    pub fn extension(self) -> &'static str {
        self.name()
    }
    /// Glance's word for this format.
    pub fn glance(self) -> crate::glance::DiskFormat {
        use crate::glance::DiskFormat as Glance;
        match self {
            DiskFormat::Raw => Glance::Raw,
            DiskFormat::Qcow2 => Glance::Qcow2,
            DiskFormat::Vmdk => Glance::Vmdk,
            DiskFormat::Vhd => Glance::Vhd,
            DiskFormat::Vhdx => Glance::Vhdx,
            DiskFormat::Vdi => Glance::Vdi,
        }
    }

    /// The format cloudimg writes for a Glance word, if it writes one (not aki/ari/ami, iso,
    /// ploop).
    pub fn from_glance(word: crate::glance::DiskFormat) -> Option<DiskFormat> {
        DiskFormat::ALL
            .into_iter()
            .find(|format| format.glance() == word)
    }
}

impl std::fmt::Display for DiskFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// What a run of guest bytes holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Extent {
    /// Bytes stored in the image (they may still happen to be zero).
    Data,
    /// Reads as zeroes: unallocated, a zero cluster, a hole.
    Zero,
}

/// The answer to [`DiskReader::map`]: from the queried offset, `len` bytes of one kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mapping {
    pub extent: Extent,
    pub len: u64,
}

/// Guest view of an image of any format.
///
/// The generic copy loop queries and reads at increasing, non-overlapping offsets; readers of
/// non-seekable inputs (archives) may rely on that and fail with [`FormatError::OutOfOrder`]
/// otherwise. Random-access readers accept any order.
pub trait DiskReader: Send {
    /// Guest-visible size in bytes.
    fn virtual_size(&self) -> u64;
    /// The run starting at `offset` (< virtual size): its kind and a length > 0 that does not
    /// pass the virtual size. A reader may answer with shorter runs than the longest possible.
    fn map(&mut self, offset: u64) -> Result<Mapping, FormatError>;
    /// Fills `buf` with the guest bytes at `offset`; zero runs read as zeroes.
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), FormatError>;
    /// What `cloudimg info` shows.
    fn info(&self) -> ImageInfo;
}

/// A new image being written.
///
/// `write_data` receives whole allocation units (`granularity()` bytes, or a multiple of it) at
/// strictly increasing unit-aligned offsets; only the unit that ends the disk may be shorter.
/// Units never written read as zero. Nothing is complete before `finish`, which writes tables,
/// footers and descriptors and flushes (the caller fsyncs and renames).
pub trait DiskWriter: Send {
    /// The unit the writer allocates in (qcow2 cluster, VMDK grain, VHD/VDI block, …).
    fn granularity(&self) -> u64;
    fn write_data(&mut self, offset: u64, data: &[u8]) -> Result<(), FormatError>;
    fn finish(self: Box<Self>) -> Result<(), FormatError>;
}

/// Facts about an image, serialised with `qemu-img info --output=json` key names where
/// qemu-img has them.
#[derive(Clone, Debug, serde::Serialize)]
pub struct ImageInfo {
    pub format: DiskFormat,
    #[serde(rename = "virtual-size")]
    pub virtual_size: u64,
    #[serde(rename = "cluster-size", skip_serializing_if = "Option::is_none")]
    pub cluster_size: Option<u64>,
    /// vmdk createType, vhd fixed/dynamic, vdi dynamic/static.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subformat: Option<String>,
    /// qcow2 `0.10`/`1.1`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compat: Option<String>,
    /// `zlib`, `zstd`, `deflate` (vmdk) when the image holds compressed data.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compression: Option<String>,
    /// Further per-format facts, as `qemu-img info`'s `format-specific.data` shows them: the
    /// same keys, value types and order (qemu-img's human form prints them in this order).
    #[serde(
        rename = "format-specific",
        skip_serializing_if = "serde_json::Map::is_empty"
    )]
    pub format_specific: serde_json::Map<String, serde_json::Value>,
    /// Files other than the image's own that hold its data (a monolithicFlat VMDK's extent),
    /// which `qemu-img info` lists as child nodes `extents.N`.
    #[serde(skip)]
    pub extent_files: Vec<std::path::PathBuf>,
}

impl ImageInfo {
    pub fn new(format: DiskFormat, virtual_size: u64) -> ImageInfo {
        ImageInfo {
            format,
            virtual_size,
            cluster_size: None,
            subformat: None,
            compat: None,
            compression: None,
            format_specific: serde_json::Map::new(),
            extent_files: Vec::new(),
        }
    }
}

/// Result of a structural check, with qemu-img check's exit-code meaning and the facts of
/// its `--output=json` (`ImageCheck`).
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct CheckReport {
    /// Inconsistencies that make data unreliable (exit 2), one message each.
    pub corruptions: Vec<String>,
    /// Allocated but unused space (exit 3), one message each.
    pub leaks: Vec<String>,
    /// Corruptions and leaks found but not listed (the lists stop after a hundred entries).
    #[serde(skip)]
    pub unlisted_corruptions: u64,
    #[serde(skip)]
    pub unlisted_leaks: u64,
    /// Guest clusters backed by host clusters, when the format tracks it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allocated_clusters: Option<u64>,
    /// Guest clusters of the virtual disk.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub total_clusters: Option<u64>,
    /// Allocated clusters not stored right after the previous one (qemu's definition:
    /// compressed clusters always count).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fragmented_clusters: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compressed_clusters: Option<u64>,
    /// The end of the last host cluster in use (qemu-img's "Image end offset").
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image_end_offset: Option<u64>,
}

impl CheckReport {
    /// How many corruptions were found.
    pub fn corruption_count(&self) -> u64 {
        self.corruptions.len() as u64 + self.unlisted_corruptions
    }

    /// How many leaked clusters were found.
    pub fn leak_count(&self) -> u64 {
        self.leaks.len() as u64 + self.unlisted_leaks
    }

    /// `qemu-img check` exit status: 0 clean, 2 corruptions, 3 leaks only.
    pub fn exit_code(&self) -> i32 {
        if self.corruption_count() != 0 {
            2
        } else if self.leak_count() != 0 {
            3
        } else {
            0
        }
    }
}

/// Where a writer puts its output: `path` is written now (a temporary name); `final_path` is
/// the name it will have once renamed, which multi-file formats (vmdk monolithicFlat) record in
/// their descriptor.
#[derive(Clone, Copy, Debug)]
pub struct Target<'a> {
    pub path: &'a Path,
    pub final_path: &'a Path,
}

impl Target<'_> {
    /// Creates (or truncates) the file a writer fills, open for reading and writing.
    pub(crate) fn create_file(&self) -> Result<File, FormatError> {
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(self.path)
            .map_err(|source| FormatError::io(self.path, source))
    }
}

/// Whether every byte is zero, 256 bytes at a time (OR-folded as u128, which vectorises).
pub(crate) fn is_zero(data: &[u8]) -> bool {
    let (blocks, rest) = data.as_chunks::<256>();
    rest.iter().all(|&b| b == 0)
        && blocks.iter().all(|block| {
            let (words, _) = block.as_chunks::<16>();
            words
                .iter()
                .fold(0u128, |acc, word| acc | u128::from_ne_bytes(*word))
                == 0
        })
}

/// Bytes read from the start and end of a file, enough for every probe.
pub struct Probe {
    pub head: Vec<u8>,
    pub tail: Vec<u8>,
    pub len: u64,
}

/// How many leading bytes a probe reads: through the first ISO 9660 volume descriptor (sector
/// 16 of 2 KiB), the deepest signature any probe looks for.
const PROBE_HEAD: usize = 0x8000 + 2048;
/// How many trailing bytes a probe reads (a VHD footer is the last 512).
const PROBE_TAIL: usize = 512;

impl Probe {
    pub fn read(file: &mut File) -> Result<Probe, std::io::Error> {
        let len = crate::io::sys::file_len(file)?;
        let mut head = vec![0; PROBE_HEAD.min(len as usize)];
        file.seek(SeekFrom::Start(0))?;
        file.read_exact(&mut head)?;
        let tail_len = PROBE_TAIL.min(len as usize);
        let mut tail = vec![0; tail_len];
        file.seek(SeekFrom::Start(len - tail_len as u64))?;
        file.read_exact(&mut tail)?;
        Ok(Probe { head, tail, len })
    }
}

/// What `detect` found: a disk format, an archive that holds one, or a format cloudimg
/// recognises but does not read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Detected {
    Disk(DiskFormat),
    Archive(archive::ArchiveKind),
    Foreign(ForeignFormat),
}

/// Recognises a file by its content. Raw is the answer only when no format qemu-img knows
/// (supported or [foreign](foreign)) matches.
pub fn detect(probe: &Probe) -> Detected {
    if qcow2::probe(probe) {
        Detected::Disk(DiskFormat::Qcow2)
    } else if vmdk::probe(probe) {
        Detected::Disk(DiskFormat::Vmdk)
    } else if vhdx::probe(probe) {
        Detected::Disk(DiskFormat::Vhdx)
    } else if vdi::probe(probe) {
        Detected::Disk(DiskFormat::Vdi)
    } else if vhd::probe(probe) {
        Detected::Disk(DiskFormat::Vhd)
    } else if let Some(foreign) = foreign::probe(probe) {
        Detected::Foreign(foreign)
    } else if let Some(kind) = archive::probe(probe) {
        Detected::Archive(kind)
    } else {
        Detected::Disk(DiskFormat::Raw)
    }
}

/// Opens an image for reading; `format` forces a format instead of detecting it.
pub fn open(path: &Path, format: Option<DiskFormat>) -> Result<Box<dyn DiskReader>, FormatError> {
    let mut file = File::open(path).map_err(|source| FormatError::io(path, source))?;
    let probe = Probe::read(&mut file).map_err(|source| FormatError::io(path, source))?;
    let detected = match format {
        Some(format) => Detected::Disk(format),
        None => detect(&probe),
    };
    match detected {
        Detected::Disk(DiskFormat::Raw) => raw::open(path, file),
        Detected::Disk(DiskFormat::Qcow2) => qcow2::open(path, file),
        Detected::Disk(DiskFormat::Vmdk) => vmdk::open(path, file),
        Detected::Disk(DiskFormat::Vhd) => vhd::open(path, file),
        Detected::Disk(DiskFormat::Vhdx) => vhdx::open(path, file),
        Detected::Disk(DiskFormat::Vdi) => vdi::open(path, file),
        Detected::Archive(kind) => archive::open(path, file, kind),
        Detected::Foreign(format) => Err(FormatError::foreign(path, format)),
    }
}

/// Starts a new image of `format` with `virtual_size` bytes; `options` are qemu-img's `-o`
/// settings for that format (each format rejects keys it does not know).
pub fn create(
    target: Target<'_>,
    format: DiskFormat,
    virtual_size: u64,
    options: &Options,
) -> Result<Box<dyn DiskWriter>, FormatError> {
    match format {
        DiskFormat::Raw => raw::create(target, virtual_size, options),
        DiskFormat::Qcow2 => qcow2::create(target, virtual_size, options),
        DiskFormat::Vmdk => vmdk::create(target, virtual_size, options),
        DiskFormat::Vhd => vhd::create(target, virtual_size, options),
        DiskFormat::Vhdx => vhdx::create(target, virtual_size, options),
        DiskFormat::Vdi => vdi::create(target, virtual_size, options),
    }
}

/// Checks an image's structure.
pub fn check(path: &Path, format: Option<DiskFormat>) -> Result<CheckReport, FormatError> {
    let mut file = File::open(path).map_err(|source| FormatError::io(path, source))?;
    match disk_format(path, &mut file, format, "checking")? {
        DiskFormat::Raw => Ok(CheckReport::default()),
        DiskFormat::Qcow2 => qcow2::check(path, file),
        DiskFormat::Vmdk => vmdk::check(path, file),
        DiskFormat::Vhd => vhd::check(path, file),
        DiskFormat::Vhdx => vhdx::check(path, file),
        DiskFormat::Vdi => vdi::check(path, file),
    }
}

/// The format of the image at `path`: `forced`, or detected by content (archives refused).
pub fn disk_format_of(path: &Path, forced: Option<DiskFormat>) -> Result<DiskFormat, FormatError> {
    let mut file = File::open(path).map_err(|source| FormatError::io(path, source))?;
    disk_format(path, &mut file, forced, "checking")
}

/// Repairs a qcow2 image's refcounts in place (`qemu-img check -r leaks|all`); other formats
/// have nothing to repair.
pub fn repair(
    path: &Path,
    format: Option<DiskFormat>,
    mode: qcow2::RepairMode,
) -> Result<qcow2::Repaired, FormatError> {
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|source| FormatError::io(path, source))?;
    match disk_format(path, &mut file, format, "repairing")? {
        DiskFormat::Qcow2 => qcow2::repair(path, &file, mode),
        other => Err(FormatError::Unsupported {
            path: path.to_owned(),
            what: format!("repairing {other} images (only qcow2 has refcounts to repair)"),
        }),
    }
}

/// Changes the virtual size in place. Shrinking is refused unless `shrink`.
pub fn resize(
    path: &Path,
    format: Option<DiskFormat>,
    new_size: u64,
    shrink: bool,
) -> Result<(), FormatError> {
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|source| FormatError::io(path, source))?;
    match disk_format(path, &mut file, format, "resizing")? {
        DiskFormat::Raw => raw::resize(path, file, new_size, shrink),
        DiskFormat::Qcow2 => qcow2::resize(path, file, new_size, shrink),
        DiskFormat::Vmdk => vmdk::resize(path, file, new_size, shrink),
        DiskFormat::Vhd => vhd::resize(path, file, new_size, shrink),
        DiskFormat::Vhdx => vhdx::resize(path, file, new_size, shrink),
        DiskFormat::Vdi => vdi::resize(path, file, new_size, shrink),
    }
}

/// The forced format, or the detected one; archives can only be read, not modified in place.
fn disk_format(
    path: &Path,
    file: &mut File,
    forced: Option<DiskFormat>,
    action: &str,
) -> Result<DiskFormat, FormatError> {
    if let Some(format) = forced {
        return Ok(format);
    }
    let probe = Probe::read(file).map_err(|source| FormatError::io(path, source))?;
    match detect(&probe) {
        Detected::Disk(format) => Ok(format),
        Detected::Archive(_) => Err(FormatError::Unsupported {
            path: path.to_owned(),
            what: format!("{action} an archive; convert it to a disk format first"),
        }),
        Detected::Foreign(format) => Err(FormatError::foreign(path, format)),
    }
}

//! Microsoft Virtual Hard Disk (qemu's vpc): fixed and dynamic disks.
//!
//! A fixed disk is the raw data followed by a 512-byte footer; a dynamic disk starts with a
//! copy of the footer, a `cxsparse` header and a block allocation table, then 2 MiB blocks
//! each preceded by a sector bitmap, and ends with the footer.

mod dynamic;
mod error;
mod footer;
mod geometry;
mod maintain;
mod reader;
#[cfg(test)]
pub(crate) mod tests;
mod writer;

use std::fs::File;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

pub use error::VhdError;
pub(crate) use reader::check_fixed_footer;

use super::uuid;
use super::{CheckReport, DiskReader, DiskWriter, FormatError, Options, Probe, Target};
use footer::{DiskType, Footer};
use geometry::{MAX_CHS, MAX_SECTORS};

/// Azure wants fixed disks whose size is a whole number of MiB.
const AZURE_ALIGNMENT: u64 = 1 << 20;

/// A dynamic VHD starts with the footer copy; a fixed one ends with a valid footer.
pub fn probe(probe: &Probe) -> bool {
    if footer::has_cookie(&probe.head) {
        return true;
    }
    <&[u8; footer::FOOTER_SIZE]>::try_from(probe.tail.as_slice())
        .ok()
        .and_then(|tail| Footer::parse(tail).ok())
        .is_some_and(|f| f.disk_type == DiskType::Fixed)
}

pub fn open(path: &Path, file: File) -> Result<Box<dyn DiskReader>, FormatError> {
    Ok(Box::new(reader::VhdReader::new(path, file)?))
}

/// `-o` keys: `subformat=dynamic|fixed`, `force_size=on|off` (qemu's), and cloudimg's
/// `azure=on` (fixed, force_size, size rounded up to a whole MiB), `uuid=`, `timestamp=`
/// (seconds since 2000-01-01 UTC) for reproducible output.
pub fn create(
    target: Target<'_>,
    virtual_size: u64,
    options: &Options,
) -> Result<Box<dyn DiskWriter>, FormatError> {
    let subformat = options.choice("subformat", &["dynamic", "fixed"])?;
    let force_size = options.flag("force_size")?;
    let azure = options.flag("azure")?.unwrap_or(false);
    let uuid = match options.get("uuid") {
        Some(text) => uuid::parse("uuid", text)?,
        None => uuid::random_v4(),
    };
    let timestamp = match options.number("timestamp")? {
        Some(t) => u32::try_from(t).map_err(|_| FormatError::InvalidOption {
            key: "timestamp".into(),
            value: t.to_string(),
            reason: "beyond the 32-bit VHD timestamp".into(),
        })?,
        None => now_since_2000(),
    };
    options.reject_unknown("vhd")?;

    if virtual_size > MAX_SECTORS * 512 {
        return Err(too_large(target.path, virtual_size));
    }
    let mut size = virtual_size;
    let (disk_type, force_size) = if azure {
        if subformat == Some("dynamic") || force_size == Some(false) {
            return Err(FormatError::InvalidOption {
                key: "azure".into(),
                value: "on".into(),
                reason: "Azure needs subformat=fixed and force_size=on".into(),
            });
        }
        size = virtual_size.next_multiple_of(AZURE_ALIGNMENT);
        if size != virtual_size {
            tracing::info!(
                from = virtual_size,
                to = size,
                "azure: rounded the VHD size up to a whole MiB"
            );
        }
        (DiskType::Fixed, true)
    } else {
        let disk_type = match subformat {
            Some("fixed") => DiskType::Fixed,
            _ => DiskType::Dynamic,
        };
        (disk_type, force_size.unwrap_or(false))
    };
    let sectors = size.div_ceil(512);
    let (geometry, sectors) = if force_size {
        (MAX_CHS, sectors)
    } else {
        geometry::round_up(sectors)
    };
    if sectors > MAX_SECTORS {
        return Err(too_large(target.path, size));
    }
    let guest_size = sectors * 512;
    let footer = Footer {
        data_offset: match disk_type {
            DiskType::Fixed => footer::FIXED_DATA_OFFSET,
            DiskType::Dynamic => dynamic::HEADER_OFFSET,
        },
        timestamp,
        creator_app: if force_size {
            *footer::CREATOR_QEMU_FORCE_SIZE
        } else {
            *footer::CREATOR_QEMU
        },
        creator_version: footer::CREATOR_VERSION,
        creator_os: *footer::CREATOR_OS,
        original_size: guest_size,
        current_size: guest_size,
        geometry,
        disk_type,
        checksum: 0,
        uuid,
        saved_state: 0,
    };
    let file = target.create_file()?;
    Ok(Box::new(writer::VhdWriter::new(
        target.path.to_owned(),
        file,
        footer,
        guest_size,
    )))
}

pub fn check(path: &Path, file: File) -> Result<CheckReport, FormatError> {
    maintain::check(path, &file)
}

pub fn resize(path: &Path, file: File, new_size: u64, shrink: bool) -> Result<(), FormatError> {
    maintain::resize(path, &file, new_size, shrink)
}

/// Seconds since 2000-01-01 UTC, saturating (a clock before 2000 gives 0).
fn now_since_2000() -> u32 {
    let unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    u32::try_from(unix.saturating_sub(footer::TIMESTAMP_EPOCH)).unwrap_or(u32::MAX)
}

/// The error for a disk beyond the 2040 GiB qemu (and Hyper-V) allow.
fn too_large(path: &Path, size: u64) -> FormatError {
    FormatError::Unsupported {
        path: path.to_owned(),
        what: format!("VHD of {size} bytes; the format's limit is 2040 GiB"),
    }
}

//! Microsoft's Hyper-V virtual hard disk v2 (VHDX): dynamic and fixed disks.
//!
//! A VHDX starts with a 1 MiB header section: the file identifier (`vhdxfile`), two headers
//! (CRC-32C, sequence numbers; the newer valid one counts) and two copies of the region table,
//! which locates the BAT and the metadata. The metadata give the block size, the virtual size
//! and the sector sizes; the BAT maps each block to its place in the file (or says it reads
//! as zeroes). A log, replayed after a crash, protects metadata updates: cloudimg refuses a
//! file whose log still holds writes, as qemu-img does without `-r`. Differencing disks are
//! refused.
//!
//! One file per on-disk structure: [`header`], [`region`], [`log`], [`metadata`], [`bat`];
//! [`reader`] and [`writer`] put them together, [`check`] verifies them.

mod bat;
mod check;
mod error;
mod guid;
mod header;
mod log;
mod metadata;
mod reader;
mod region;
#[cfg(test)]
mod tests;
mod writer;

use std::fs::File;
use std::path::Path;

pub use error::VhdxError;

use super::{CheckReport, DiskReader, DiskWriter, FormatError, Options, Probe, Target};
use header::MIB;
use metadata::{MAX_BLOCK_SIZE, MAX_VIRTUAL_SIZE};
use writer::{Identity, Plan, Subformat};

/// qemu's default log size.
const DEFAULT_LOG_SIZE: u64 = 1 << 20;
/// Largest log a header can describe (its length is a u32), in whole MiB.
const MAX_LOG_SIZE: u64 = (u32::MAX as u64) / MIB * MIB;
/// The logical sector size of the disks cloudimg writes.
const SECTOR: u64 = 512;

/// A VHDX starts with `vhdxfile`.
pub fn probe(probe: &Probe) -> bool {
    starts_like_vhdx(&probe.head)
}

/// Whether leading bytes (of a file, or of a disk inside an archive) are a VHDX's.
pub fn starts_like_vhdx(head: &[u8]) -> bool {
    header::has_signature(head)
}

pub fn open(path: &Path, file: File) -> Result<Box<dyn DiskReader>, FormatError> {
    Ok(Box::new(reader::VhdxReader::new(path, file)?))
}

/// qemu-img's block size for a disk of `size` bytes when none is asked for.
fn default_block_size(size: u64) -> u64 {
    const GIB: u64 = 1 << 30;
    if size > 32 << 40 {
        64 << 20
    } else if size > 100 * GIB {
        32 << 20
    } else if size > GIB {
        16 << 20
    } else {
        8 << 20
    }
}

fn invalid(key: &str, value: u64, reason: &str) -> FormatError {
    FormatError::InvalidOption {
        key: key.into(),
        value: value.to_string(),
        reason: reason.into(),
    }
}

/// `-o` keys, as qemu-img has them: `subformat=dynamic|fixed`, `block_size` (0 or absent:
/// chosen from the size; rounded up to whole MiB, at most 256 MiB, a power of two),
/// `log_size` (rounded up to whole MiB, 1 MiB by default), `block_state_zero=on|off`.
pub fn create(
    target: Target<'_>,
    virtual_size: u64,
    options: &Options,
) -> Result<Box<dyn DiskWriter>, FormatError> {
    let subformat = match options.choice("subformat", &["dynamic", "fixed"])? {
        Some("fixed") => Subformat::Fixed,
        _ => Subformat::Dynamic,
    };
    let block_size = options.size("block_size")?.unwrap_or(0);
    let log_size = options.size("log_size")?.unwrap_or(DEFAULT_LOG_SIZE);
    let zero_blocks = options.flag("block_state_zero")?.unwrap_or(true);
    options.reject_unknown("vhdx")?;

    if virtual_size > MAX_VIRTUAL_SIZE {
        return Err(FormatError::Unsupported {
            path: target.path.to_owned(),
            what: format!("VHDX of {virtual_size} bytes; the format's limit is 64 TiB"),
        });
    }
    let virtual_size = virtual_size.next_multiple_of(SECTOR);
    let block_size = match block_size {
        0 => default_block_size(virtual_size),
        asked => asked.next_multiple_of(MIB).min(u64::from(MAX_BLOCK_SIZE)),
    };
    if !block_size.is_power_of_two() {
        return Err(invalid("block_size", block_size, "must be a power of two"));
    }
    if log_size == 0 || log_size.next_multiple_of(MIB) > MAX_LOG_SIZE {
        return Err(invalid(
            "log_size",
            log_size,
            "must be a multiple of 1 MiB, from 1 MiB to 4095 MiB",
        ));
    }
    let plan = Plan {
        virtual_size,
        // Both bounded above: 256 MiB and 4095 MiB.
        block_size: block_size as u32,
        log_size: log_size.next_multiple_of(MIB) as u32,
        subformat,
        zero_blocks,
    };
    let file = target.create_file()?;
    Ok(Box::new(writer::VhdxWriter::new(
        target.path.to_owned(),
        file,
        plan,
        Identity::random(),
    )))
}

pub fn check(path: &Path, file: File) -> Result<CheckReport, FormatError> {
    check::check(path, &file)
}

/// Resizing rewrites the BAT and the metadata through the log; cloudimg does not do that.
pub fn resize(path: &Path, _file: File, _new_size: u64, _shrink: bool) -> Result<(), FormatError> {
    Err(FormatError::Unsupported {
        path: path.to_owned(),
        what: "resizing a VHDX in place; convert it (e.g. to qcow2), resize, and convert back"
            .into(),
    })
}

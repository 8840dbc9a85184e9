//! VMware virtual disks: monolithicSparse, streamOptimized (qemu's and VMware's layouts) and
//! monolithicFlat, detected by content (`KDMV` magic or a `# Disk DescriptorFile` text).
//!
//! Creation options (qemu-img's `-o` names, plus two of cloudimg's own):
//! - `subformat=monolithicSparse|streamOptimized|monolithicFlat` (default monolithicSparse);
//! - `adapter_type=ide|lsilogic|buslogic|legacyESX` (default ide; lsilogic for VMware streams);
//! - `hwversion=N` (`ddb.virtualHWVersion`, default 4), `compat6` (= hwversion 6);
//! - `toolsversion=N` (`ddb.toolsVersion`, default 2147483647);
//! - `zeroed_grain=on|off` (version 2 header with the zeroed-grain flag; not for flat);
//! - `cid=<up to 8 hex digits>`: fixed content ID for reproducible output (default random);
//! - `stream_layout=vmware|qemu` (streamOptimized only; default vmware, the layout ESXi and OVF
//!   imports accept: GD at the end, footer, end-of-stream marker).
//!
//! Resizing grows monolithicSparse in place when its grain directory has room; streamOptimized
//! (compressed, write-once) and monolithicFlat (the extent is a separate raw file) are refused.

mod check;
mod codec;
mod descriptor;
mod flat;
mod grain;
mod header;
mod marker;
mod pipeline;
mod reader;
mod resize;
mod stream_reader;
mod writer;

#[cfg(test)]
mod tests;

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use super::{CheckReport, DiskReader, DiskWriter, FormatError, Options, Probe, Target};
use descriptor::{DescriptorSpec, DEFAULT_TOOLS_VERSION, SIGNATURE};
use header::{MAGIC, SECTOR};
use writer::{Layout, SparseWriter};

pub use stream_reader::open_stream;

/// The descriptor parser, for the fuzz target (descriptors are untrusted text from downloads).
#[doc(hidden)]
pub use descriptor::Descriptor;

/// Format name used in error messages.
const FORMAT: &str = "vmdk";

pub fn probe(probe: &Probe) -> bool {
    probe.head.starts_with(&MAGIC) || probe.head.starts_with(SIGNATURE.as_bytes())
}

fn starts_with_magic(path: &Path, file: &File) -> Result<bool, FormatError> {
    let mut magic = [0u8; 4];
    match file.read_exact_at(&mut magic, 0) {
        Ok(()) => Ok(magic == MAGIC),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(false),
        Err(e) => Err(FormatError::io(path, e)),
    }
}

pub fn open(path: &Path, file: File) -> Result<Box<dyn DiskReader>, FormatError> {
    if starts_with_magic(path, &file)? {
        Ok(Box::new(reader::SparseReader::open(path, file)?))
    } else {
        Ok(Box::new(flat::FlatReader::open(path, &file)?))
    }
}

pub fn create(
    target: Target<'_>,
    virtual_size: u64,
    options: &Options,
) -> Result<Box<dyn DiskWriter>, FormatError> {
    let subformat = options
        .choice(
            "subformat",
            &["monolithicSparse", "streamOptimized", "monolithicFlat"],
        )?
        .unwrap_or("monolithicSparse");
    let stream_layout = options.choice("stream_layout", &["vmware", "qemu"])?;
    let adapter = options.choice(
        "adapter_type",
        &["ide", "lsilogic", "buslogic", "legacyESX"],
    )?;
    let hwversion = options.get("hwversion");
    let compat6 = options.flag("compat6")?.unwrap_or(false);
    let toolsversion = options.get("toolsversion").unwrap_or(DEFAULT_TOOLS_VERSION);
    let zeroed_grain = options.flag("zeroed_grain")?.unwrap_or(false);
    let cid = match options.get("cid") {
        None => rand::random::<u32>(),
        Some(text) => parse_cid(text)?,
    };
    options.reject_unknown("vmdk")?;

    let invalid = |key: &str, value: &str, reason: &str| FormatError::InvalidOption {
        key: key.into(),
        value: value.into(),
        reason: reason.into(),
    };
    for (key, value) in [
        ("hwversion", hwversion.unwrap_or("4")),
        ("toolsversion", toolsversion),
    ] {
        if value.is_empty() || value.len() > 10 || !value.bytes().all(|b| b.is_ascii_digit()) {
            return Err(invalid(key, value, "expected a number"));
        }
    }
    let hw_version = match (compat6, hwversion) {
        (true, Some(v)) => {
            return Err(invalid(
                "hwversion",
                v,
                "compat6 cannot be combined with hwversion",
            ))
        }
        (true, None) => "6",
        (false, v) => v.unwrap_or("4"),
    };
    let layout = match (subformat, stream_layout) {
        ("streamOptimized", Some("qemu")) => Layout::QemuStream,
        ("streamOptimized", _) => Layout::VmwareStream,
        (_, Some(v)) => {
            return Err(invalid(
                "stream_layout",
                v,
                "only for subformat=streamOptimized",
            ))
        }
        _ => Layout::Sparse,
    };
    let adapter_type = adapter.unwrap_or(if layout == Layout::VmwareStream {
        "lsilogic"
    } else {
        "ide"
    });
    // qemu rounds the size up to whole sectors.
    let size = virtual_size.next_multiple_of(SECTOR);
    let name = target
        .final_path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let spec = DescriptorSpec {
        cid,
        create_type: subformat,
        extent_kind: "SPARSE",
        extent_file: &name,
        size,
        hw_version,
        adapter_type,
        tools_version: toolsversion,
    };
    if subformat == "monolithicFlat" {
        if zeroed_grain {
            return Err(invalid("zeroed_grain", "on", "a flat image has no grains"));
        }
        let spec = DescriptorSpec {
            extent_kind: "FLAT",
            ..spec
        };
        return Ok(Box::new(flat::FlatWriter::create(
            target.path,
            target.final_path,
            size,
            spec,
        )?));
    }
    let text = match layout {
        Layout::VmwareStream => spec.render_vmware(&format!(
            "{:032x}",
            u128::from(cid) * 0x0000_0001_0000_0001_0000_0001_0000_0001
        )),
        Layout::Sparse | Layout::QemuStream => spec.render_qemu(),
    };
    Ok(Box::new(SparseWriter::create(
        target.path,
        layout,
        size,
        zeroed_grain,
        text,
        options.threads(),
    )?))
}

fn parse_cid(text: &str) -> Result<u32, FormatError> {
    (!text.is_empty() && text.len() <= 8)
        .then(|| u32::from_str_radix(text, 16).ok())
        .flatten()
        .ok_or_else(|| FormatError::InvalidOption {
            key: "cid".into(),
            value: text.into(),
            reason: "expected up to 8 hex digits".into(),
        })
}

pub fn check(path: &Path, file: File) -> Result<CheckReport, FormatError> {
    if starts_with_magic(path, &file)? {
        check::check_sparse(path, &file)
    } else {
        check::check_flat(path, &file)
    }
}

pub fn resize(path: &Path, file: File, new_size: u64, shrink: bool) -> Result<(), FormatError> {
    if starts_with_magic(path, &file)? {
        resize::resize_sparse(path, &file, new_size, shrink)
    } else {
        Err(FormatError::Unsupported {
            path: path.to_owned(),
            what: "resizing a monolithicFlat VMDK (resize its -flat extent and descriptor instead, or convert)".into(),
        })
    }
}

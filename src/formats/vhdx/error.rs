//! What can be wrong with the bytes of a VHDX structure, before a path is attached.

use std::path::Path;

use crate::formats::FormatError;

/// A defect, or a feature cloudimg does not read, found by the pure parsers of this module.
/// `offset` is where in the file the faulty structure or field lies.
#[derive(Debug, thiserror::Error)]
pub enum VhdxError {
    #[error("signature is {found:?}, expected {expected:?}")]
    BadSignature {
        offset: u64,
        expected: &'static str,
        found: String,
    },
    #[error("stored CRC-32C {stored:#010x} differs from computed {computed:#010x}")]
    Checksum {
        offset: u64,
        stored: u32,
        computed: u32,
    },
    #[error("{field} is {value:#x}: {reason}")]
    Field {
        offset: u64,
        field: &'static str,
        value: u64,
        reason: &'static str,
    },
    #[error("neither header is valid (header 1: {first}; header 2: {second})")]
    NoValidHeader { first: String, second: String },
    #[error("differencing VHDX: it needs its parent image, which cloudimg does not follow")]
    Differencing,
    /// The log holds writes that were never applied: the file is inconsistent until replayed.
    #[error(
        "the log holds writes that were never applied (entry {sequence} at {offset:#x}); \
         replay it first, e.g. `qemu-img check -r all` or by attaching the disk in Hyper-V"
    )]
    LogNeedsReplay { offset: u64, sequence: u64 },
    /// A valid VHDX using something cloudimg does not read.
    #[error("{what}")]
    Unsupported { what: String },
}

impl VhdxError {
    /// Places the defect in a file.
    pub fn at(self, path: &Path) -> FormatError {
        let offset = match &self {
            VhdxError::BadSignature { offset, .. }
            | VhdxError::Checksum { offset, .. }
            | VhdxError::Field { offset, .. } => *offset,
            VhdxError::NoValidHeader { .. } => super::header::HEADER1_OFFSET,
            // Valid files that cloudimg will not read as they are.
            VhdxError::Differencing
            | VhdxError::LogNeedsReplay { .. }
            | VhdxError::Unsupported { .. } => {
                return FormatError::Unsupported {
                    path: path.to_owned(),
                    what: self.to_string(),
                }
            }
        };
        FormatError::malformed(path, "vhdx", offset, self.to_string())
    }
}

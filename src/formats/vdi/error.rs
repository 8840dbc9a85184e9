//! What can be wrong with the bytes of a VDI header, before a path is attached.

use std::path::Path;

use crate::formats::FormatError;
use crate::ErrorKind;

/// A defect or an unsupported feature found by the header parser.
#[derive(Debug, thiserror::Error)]
pub enum VdiError {
    #[error("signature is {found:#010x}, expected 0xbeda107f")]
    BadSignature { found: u32 },
    #[error("{field} at offset {offset:#x} is {value:#x}: {reason}")]
    Field {
        field: &'static str,
        offset: u64,
        value: u64,
        reason: &'static str,
    },
    /// A valid VDI using something cloudimg does not read.
    #[error("{what}")]
    Unsupported { what: String },
}

impl VdiError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            VdiError::BadSignature { .. }
            | VdiError::Field { .. }
            | VdiError::Unsupported { .. } => ErrorKind::Other,
        }
    }

    /// Attaches the file the header came from.
    pub fn at(self, path: &Path) -> FormatError {
        match self {
            VdiError::Unsupported { what } => FormatError::Unsupported {
                path: path.to_owned(),
                what,
            },
            VdiError::BadSignature { .. } => {
                FormatError::malformed(path, "vdi", 0x40, self.to_string())
            }
            VdiError::Field { offset, .. } => {
                FormatError::malformed(path, "vdi", offset, self.to_string())
            }
        }
    }
}

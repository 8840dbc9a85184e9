//! What can be wrong with the bytes of a VHD structure, before a path and offset are attached.

use std::path::Path;

use crate::formats::FormatError;
use crate::ErrorKind;

/// A defect found by the pure parsers of this module.
#[derive(Debug, thiserror::Error)]
pub enum VhdError {
    #[error("cookie is {found:?}, expected {expected:?}")]
    BadCookie {
        expected: &'static str,
        found: String,
    },
    #[error("stored checksum {stored:#010x} differs from computed {computed:#010x}")]
    Checksum { stored: u32, computed: u32 },
    #[error("{field} is {value:#x}: {reason}")]
    Field {
        field: &'static str,
        value: u64,
        reason: &'static str,
    },
    #[error("differencing VHD: it needs its parent image, which cloudimg does not follow")]
    Differencing,
}

impl VhdError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            VhdError::BadCookie { .. }
            | VhdError::Checksum { .. }
            | VhdError::Field { .. }
            | VhdError::Differencing => ErrorKind::Other,
        }
    }

    /// Places the defect in a file: `offset` is where the structure starts.
    pub fn at(self, path: &Path, offset: u64) -> FormatError {
        match self {
            VhdError::Differencing => FormatError::Unsupported {
                path: path.to_owned(),
                what: self.to_string(),
            },
            other => FormatError::malformed(path, "vhd", offset, other.to_string()),
        }
    }
}

use std::path::{Path, PathBuf};

use crate::ErrorKind;

/// Why an image could not be read, written or understood. Offsets are shown in hex, the way
/// format specs and hex dumps show them.
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    #[error("{path}: I/O error")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The bytes are not a valid image of the expected format.
    #[error("{path}: malformed {format} image at offset {offset:#x}: {reason}")]
    Malformed {
        path: PathBuf,
        format: &'static str,
        offset: u64,
        reason: String,
    },
    /// A valid image using a feature cloudimg refuses (backing files, encryption, …).
    #[error("{path}: unsupported: {what}")]
    Unsupported { path: PathBuf, what: String },
    /// A `-o key=value` option that the format does not know or cannot take.
    #[error("invalid option {key}={value}: {reason}")]
    InvalidOption {
        key: String,
        value: String,
        reason: String,
    },
    /// The copy loop's reader thread panicked (a defect in a reader), while reading `path`.
    #[error("{path}: the reader thread of the conversion panicked")]
    ReaderPanicked { path: PathBuf },
    /// A streaming reader was asked to go backwards.
    #[error("{path}: offset {offset:#x} requested after {position:#x}; this input can only be read forwards")]
    OutOfOrder {
        path: PathBuf,
        offset: u64,
        position: u64,
    },
    /// A format qemu-img knows that cloudimg does not read (unknown is not raw).
    #[error("{path}: {described} (format {format}), which cloudimg does not read; {advice}", described = format.described(), advice = format.advice())]
    Foreign {
        path: PathBuf,
        format: super::ForeignFormat,
    },
    /// The output could not be published (or is not something cloudimg may replace).
    #[error(transparent)]
    Publish(#[from] crate::io::publish::PublishError),
    /// A block device output that cannot be written (too small, in use).
    #[error(transparent)]
    Device(#[from] crate::io::device::DeviceError),
    #[error("{path}: new size {requested} is smaller than the current {current}; pass --shrink to allow losing data")]
    ShrinkRefused {
        path: PathBuf,
        current: u64,
        requested: u64,
    },
}

impl FormatError {
    pub fn io(path: &Path, source: std::io::Error) -> FormatError {
        FormatError::Io {
            path: path.to_owned(),
            source,
        }
    }

    pub fn foreign(path: &Path, format: super::ForeignFormat) -> FormatError {
        FormatError::Foreign {
            path: path.to_owned(),
            format,
        }
    }

    pub fn malformed(
        path: &Path,
        format: &'static str,
        offset: u64,
        reason: impl Into<String>,
    ) -> FormatError {
        FormatError::Malformed {
            path: path.to_owned(),
            format,
            offset,
            reason: reason.into(),
        }
    }

    pub fn kind(&self) -> ErrorKind {
        match self {
            FormatError::InvalidOption { .. }
            | FormatError::ShrinkRefused { .. }
            | FormatError::Foreign { .. } => ErrorKind::Usage,
            FormatError::Publish(error) => error.kind(),
            FormatError::Device(error) => error.kind(),
            FormatError::Io { .. }
            | FormatError::Malformed { .. }
            | FormatError::Unsupported { .. }
            | FormatError::ReaderPanicked { .. }
            | FormatError::OutOfOrder { .. } => ErrorKind::Other,
        }
    }
}

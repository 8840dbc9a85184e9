use crate::formats::FormatError;

/// Why the guest's boot files could not be found or read. Each variant says what was not
/// understood, so that a caller falling back to firmware boot can log a useful reason.
/// Offsets are bytes from the start of the guest disk, in hex.
#[derive(Debug, thiserror::Error)]
pub enum GuestFsError {
    /// The disk image itself could not be read.
    #[error("reading {len} bytes of the guest disk at {offset:#x}")]
    Read {
        offset: u64,
        len: usize,
        #[source]
        source: FormatError,
    },
    /// A structure points outside the partition (or disk) that holds it.
    #[error("{len} bytes at {offset:#x} pass the end of the volume ({volume_start:#x} + {volume_len:#x})")]
    OutOfRange {
        offset: u64,
        len: usize,
        volume_start: u64,
        volume_len: u64,
    },
    /// The partition table is present but not valid.
    #[error("partition table: {reason}")]
    PartitionTable { reason: String },
    /// An ext2/3/4 structure is not valid.
    #[error("ext4 {structure} at {offset:#x}: {reason}")]
    Malformed {
        structure: &'static str,
        offset: u64,
        reason: String,
    },
    /// A valid filesystem using a feature this reader refuses.
    #[error("ext4 filesystem at {offset:#x} uses {what}, which cloudimg does not read")]
    Unsupported { offset: u64, what: String },
    #[error("{path}: no such file or directory")]
    NotFound { path: String },
    #[error("{path}: not a directory")]
    NotADirectory { path: String },
    #[error("{path}: not a regular file")]
    NotAFile { path: String },
    /// More symbolic links than the kernel follows (40) while resolving `path`.
    #[error("{path}: too many levels of symbolic links")]
    SymlinkLoop { path: String },
    /// A structure asked for more work than any real filesystem needs (a loop or a hostile image).
    #[error("{what}: more than {limit} steps; the filesystem is corrupt or hostile")]
    TooMuchWork { what: &'static str, limit: u64 },
    /// A file larger than the reader accepts for its purpose.
    #[error("{path}: {size} bytes, more than the {limit} accepted")]
    TooLarge { path: String, size: u64, limit: u64 },
    /// No partition (nor the whole disk) holds an ext2/3/4 filesystem.
    #[error("no ext2/3/4 filesystem on the disk ({searched})")]
    NoLinuxFilesystem { searched: String },
    /// No GRUB configuration nor /vmlinuz fallback on any Linux filesystem.
    #[error("no boot configuration found: {searched}")]
    NoBootConfig { searched: String },
    /// The GRUB configuration does not say plainly what to boot.
    #[error("{path}, line {line}: {reason}")]
    GrubConfig {
        path: String,
        line: usize,
        reason: String,
    },
    /// Writing an extracted file failed.
    #[error("writing the extracted {what}")]
    Write {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
}

//! The one home of the crate's raw system calls: hole queries, space reservation, write-back
//! hints and block-device ioctls. Everything else calls these safe wrappers, so each call's
//! semantics (which errors mean "not supported", what happens past `off_t`) is decided once.
//!
//! File locks are not here: `std::fs::File::lock`/`try_lock` (flock on Linux) is the crate's
//! one way to lock.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;

/// What a `SEEK_DATA`/`SEEK_HOLE` query found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Seek {
    /// The offset `lseek` returned.
    At(u64),
    /// `ENXIO`: no data (for `SEEK_DATA`) at or after the offset before the end of the file.
    NoMore,
    /// The file system cannot answer (`EINVAL`, `EOPNOTSUPP`), or the offset does not fit an
    /// `off_t`. Callers treat the rest of the file as data: never wrong, only slower.
    Unsupported,
}

/// Where the next data or hole starts, from `offset`; `whence` is `SEEK_DATA` or `SEEK_HOLE`.
fn seek(file: &File, offset: u64, whence: libc::c_int) -> io::Result<Seek> {
    let Ok(at) = libc::off_t::try_from(offset) else {
        return Ok(Seek::Unsupported);
    };
    // SAFETY: lseek on a valid, owned descriptor has no memory effects; all I/O in this crate is
    // positioned (pread/pwrite), so moving the file position is harmless.
    let found = unsafe { libc::lseek(file.as_raw_fd(), at, whence) };
    if let Ok(found) = u64::try_from(found) {
        return Ok(Seek::At(found));
    }
    let error = io::Error::last_os_error();
    match error.raw_os_error() {
        Some(libc::ENXIO) => Ok(Seek::NoMore),
        Some(libc::EINVAL) | Some(libc::EOPNOTSUPP) => Ok(Seek::Unsupported),
        _ => Err(error),
    }
}

/// The first data at or after `offset` (`SEEK_DATA`).
pub fn seek_data(file: &File, offset: u64) -> io::Result<Seek> {
    seek(file, offset, libc::SEEK_DATA)
}

/// The first hole at or after `offset` (`SEEK_HOLE`); the end of the file counts as a hole.
pub fn seek_hole(file: &File, offset: u64) -> io::Result<Seek> {
    seek(file, offset, libc::SEEK_HOLE)
}

/// Reserves `len` bytes from the start of `file` (`posix_fallocate`): they read as zero and
/// later writes cannot fail for lack of space.
pub fn allocate(file: &File, len: u64) -> io::Result<()> {
    if len == 0 {
        return Ok(());
    }
    let len =
        libc::off_t::try_from(len).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: plain syscall on an owned descriptor; posix_fallocate returns the error number.
    match unsafe { libc::posix_fallocate(file.as_raw_fd(), 0, len) } {
        0 => Ok(()),
        errno => Err(io::Error::from_raw_os_error(errno)),
    }
}

/// Asks the kernel to start writing back `len` bytes from `offset` (0, 0: the whole file)
/// without waiting. Only a hint: a failure loses overlap, never data, so it is ignored.
pub fn start_writeback(file: &File, offset: u64, len: u64) {
    #[cfg(target_os = "linux")]
    {
        let (Ok(offset), Ok(len)) = (
            libc::off64_t::try_from(offset),
            libc::off64_t::try_from(len),
        ) else {
            return;
        };
        // SAFETY: a valid descriptor; SYNC_FILE_RANGE_WRITE only starts write-back.
        let _ = unsafe {
            libc::sync_file_range(file.as_raw_fd(), offset, len, libc::SYNC_FILE_RANGE_WRITE)
        };
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (file, offset, len);
}

/// Free bytes for unprivileged users on the file system holding `path` (`statvfs`).
pub fn available_bytes(path: &Path) -> io::Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::other("path contains a NUL byte"))?;
    let mut stats = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: c_path is NUL-terminated and stats points to writable memory of the right type.
    let status = unsafe { libc::statvfs(c_path.as_ptr(), stats.as_mut_ptr()) };
    if status != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: statvfs returned 0, so it filled the structure.
    let stats = unsafe { stats.assume_init() };
    // The field types vary by platform (32-bit ones use narrower integers).
    #[allow(clippy::useless_conversion)]
    let (blocks, block_size) = (u64::from(stats.f_bavail), u64::from(stats.f_frsize));
    Ok(blocks.saturating_mul(block_size))
}

/// `_IOR(0x12, 114, size_t)`: a block device's size in bytes.
const BLKGETSIZE64: libc::c_ulong = 0x8008_1272;
/// `_IO(0x12, 127)`: write zeroes over a byte range `[u64 start, u64 len]` of a block device,
/// with the device's write-zeroes offload when it has one, else by the kernel writing zero
/// pages. Never a discard that might leave old data readable.
const BLKZEROOUT: libc::c_ulong = 0x127f;

/// The length of `file` in bytes: a regular file's length, or the size of a block device (whose
/// metadata says 0), so that images on LVM volumes, loop devices and disks read whole.
pub fn file_len(file: &File) -> io::Result<u64> {
    use std::os::unix::fs::FileTypeExt;
    let metadata = file.metadata()?;
    if metadata.file_type().is_block_device() {
        block_device_size(file)
    } else {
        Ok(metadata.len())
    }
}

/// The size of the block device open as `file`.
pub fn block_device_size(file: &File) -> io::Result<u64> {
    let mut size: u64 = 0;
    // SAFETY: BLKGETSIZE64 writes one u64 through the pointer, which points at a live u64.
    let rc = unsafe { libc::ioctl(file.as_raw_fd(), BLKGETSIZE64 as _, &mut size as *mut u64) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(size)
}

/// Makes `len` bytes at `offset` of the block device `file` read as zeroes (`BLKZEROOUT`);
/// both must be multiples of the logical block size.
pub fn zero_block_range(file: &File, offset: u64, len: u64) -> io::Result<()> {
    let range: [u64; 2] = [offset, len];
    // SAFETY: BLKZEROOUT reads two u64 through the pointer, which points at a live [u64; 2].
    let rc = unsafe { libc::ioctl(file.as_raw_fd(), BLKZEROOUT as _, range.as_ptr()) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileExt;

    #[test]
    fn holes_and_data_are_found() {
        let file = tempfile::tempfile().unwrap();
        file.set_len(8 << 20).unwrap();
        file.write_all_at(&[1; 4096], 4 << 20).unwrap();
        match seek_data(&file, 0).unwrap() {
            // A file system without hole support: nothing more to check.
            Seek::Unsupported | Seek::At(0) => return,
            found => assert_eq!(found, Seek::At(4 << 20)),
        }
        assert_eq!(
            seek_hole(&file, 4 << 20).unwrap(),
            Seek::At((4 << 20) + 4096)
        );
        assert_eq!(seek_data(&file, (4 << 20) + 4096).unwrap(), Seek::NoMore);
    }

    #[test]
    fn offsets_past_off_t_are_unsupported_not_holes() {
        let file = tempfile::tempfile().unwrap();
        assert_eq!(seek_data(&file, u64::MAX).unwrap(), Seek::Unsupported);
        assert_eq!(seek_hole(&file, 1 << 63).unwrap(), Seek::Unsupported);
    }

    #[test]
    fn allocation_reserves_and_reads_as_zero() {
        let file = tempfile::tempfile().unwrap();
        allocate(&file, 1 << 20).unwrap();
        assert_eq!(file.metadata().unwrap().len(), 1 << 20);
        allocate(&file, 0).unwrap();
        assert!(allocate(&file, u64::MAX).is_err());
    }

    #[test]
    fn free_space_is_reported_and_bad_paths_fail() {
        let dir = tempfile::tempdir().unwrap();
        assert!(available_bytes(dir.path()).unwrap() > 0);
        assert!(available_bytes(&dir.path().join("absent")).is_err());
        assert!(available_bytes(Path::new("a\0b")).is_err());
    }

    #[test]
    fn block_ioctls_fail_cleanly_on_a_regular_file() {
        let file = tempfile::tempfile().unwrap();
        assert!(block_device_size(&file).is_err());
        assert!(zero_block_range(&file, 0, 512).is_err());
    }
}

//! Holes of sparse files (SEEK_DATA / SEEK_HOLE): a fixed VHD or a static VDI made by
//! qemu-img is mostly holes, and reporting them as zeroes spares the copy loop from reading
//! them.

use std::fs::File;
use std::os::fd::AsRawFd;

/// From `offset` (below `end`): whether the file holds data there (`true`) or a hole, and
/// where that run ends (at most `end`). A file system without hole support reports data.
pub fn run_at(file: &File, offset: u64, end: u64) -> std::io::Result<(bool, u64)> {
    match seek(file, offset, libc::SEEK_DATA)? {
        Seek::Unsupported => Ok((true, end)),
        // No data from here to the end of the file.
        Seek::NoMore => Ok((false, end)),
        Seek::At(data) if data > offset => Ok((false, data.min(end))),
        Seek::At(_) => match seek(file, offset, libc::SEEK_HOLE)? {
            Seek::At(hole) => Ok((true, hole.clamp(offset + 1, end))),
            Seek::NoMore | Seek::Unsupported => Ok((true, end)),
        },
    }
}

/// What lseek answered.
enum Seek {
    At(u64),
    /// ENXIO: no such region before the end of the file.
    NoMore,
    /// EINVAL: the file system does not support SEEK_DATA/SEEK_HOLE.
    Unsupported,
}

fn seek(file: &File, offset: u64, whence: libc::c_int) -> std::io::Result<Seek> {
    let Ok(at) = libc::off_t::try_from(offset) else {
        return Ok(Seek::NoMore);
    };
    // SAFETY: lseek on a descriptor we own; it only moves the file position, which this
    // crate never uses (all I/O is positioned).
    let result = unsafe { libc::lseek(file.as_raw_fd(), at, whence) };
    if let Ok(found) = u64::try_from(result) {
        return Ok(Seek::At(found));
    }
    let error = std::io::Error::last_os_error();
    match error.raw_os_error() {
        Some(libc::ENXIO) => Ok(Seek::NoMore),
        Some(libc::EINVAL) => Ok(Seek::Unsupported),
        _ => Err(error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileExt;

    #[test]
    fn holes_and_data_are_told_apart() {
        let file = tempfile::tempfile().unwrap();
        file.set_len(8 << 20).unwrap();
        file.write_all_at(&[1; 4096], 4 << 20).unwrap();
        let (data, end) = run_at(&file, 0, 8 << 20).unwrap();
        // A file system without hole support reports everything as data.
        if data {
            assert_eq!(end, 8 << 20);
            return;
        }
        assert_eq!(end, 4 << 20);
        assert_eq!(
            run_at(&file, 4 << 20, 8 << 20).unwrap(),
            (true, (4 << 20) + 4096)
        );
        assert_eq!(
            run_at(&file, (4 << 20) + 4096, 8 << 20).unwrap(),
            (false, 8 << 20)
        );
        assert_eq!(run_at(&file, 100, 200).unwrap(), (false, 200));
    }
}

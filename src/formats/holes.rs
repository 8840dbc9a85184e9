//! Holes of sparse files (SEEK_DATA / SEEK_HOLE): a fixed VHD or a static VDI made by
//! qemu-img is mostly holes, and reporting them as zeroes spares the copy loop from reading
//! them. Shared by every format reader that maps host files (vhd, vdi, vhdx).

use std::fs::File;

use super::{Extent, Mapping};

use crate::io::sys::{seek_data, seek_hole, Seek};

/// From `offset` (below `end`): whether the file holds data there (`true`) or a hole, and
/// where that run ends (at most `end`). A file system without hole support reports data.
pub fn run_at(file: &File, offset: u64, end: u64) -> std::io::Result<(bool, u64)> {
    match seek_data(file, offset)? {
        Seek::Unsupported => Ok((true, end)),
        // No data from here to the end of the file.
        Seek::NoMore => Ok((false, end)),
        Seek::At(data) if data > offset => Ok((false, data.min(end))),
        Seek::At(_) => match seek_hole(file, offset)? {
            Seek::At(hole) => Ok((true, hole.clamp(offset + 1, end))),
            Seek::NoMore | Seek::Unsupported => Ok((true, end)),
        },
    }
}

/// The mapping of a guest run whose `len` bytes sit at `host` in `file`, or nowhere (`None`,
/// an unallocated block, which reads as zeroes): holes inside an allocated run read as zeroes
/// too. Shared by the block-table readers (vdi, vhdx).
pub fn mapping_at(file: &File, host: Option<u64>, len: u64) -> std::io::Result<Mapping> {
    let Some(host) = host else {
        return Ok(Mapping {
            extent: Extent::Zero,
            len,
        });
    };
    let (data, end) = run_at(file, host, host + len)?;
    Ok(Mapping {
        extent: if data { Extent::Data } else { Extent::Zero },
        len: end - host,
    })
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

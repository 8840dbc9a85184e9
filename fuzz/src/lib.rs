//! What every fuzz target does: put the input in a file, open it as one format, and read the
//! whole guest through `map`/`read_at` with a cap on the work. Errors are fine; panics, hangs
//! and huge allocations are the bugs being looked for.

use std::io::Write;

use cloudimg::formats::archive::{self, ArchiveKind};
use cloudimg::formats::{DiskFormat, DiskReader, Extent};

/// Guest bytes read at most per input, so a hostile virtual size cannot make a run slow.
const MAX_GUEST_BYTES: u64 = 64 << 20;
/// `map` calls at most per input (readers may answer with tiny runs).
const MAX_RUNS: u32 = 100_000;
/// Largest single read.
const READ_CHUNK: usize = 1 << 20;

/// Opens `data` as `format` and reads its guest.
pub fn fuzz_format(format: DiskFormat, data: &[u8]) {
    let Some(file) = input_file(data) else { return };
    if let Ok(mut reader) = cloudimg::formats::open(file.path(), Some(format)) {
        read_guest(reader.as_mut());
    }
}

/// The first byte picks the compression (so plain tar is reachable too); the rest is the file.
pub fn fuzz_archive(data: &[u8]) {
    let Some((&selector, rest)) = data.split_first() else { return };
    let kind = match selector % 3 {
        0 => ArchiveKind::Tar,
        1 => ArchiveKind::TarGz,
        _ => ArchiveKind::TarXz,
    };
    let Some(file) = input_file(rest) else { return };
    let Ok(handle) = std::fs::File::open(file.path()) else { return };
    if let Ok(mut reader) = archive::open(file.path(), handle, kind) {
        read_guest(reader.as_mut());
    }
}

fn input_file(data: &[u8]) -> Option<tempfile::NamedTempFile> {
    let mut file = tempfile::NamedTempFile::new().ok()?;
    file.write_all(data).ok()?;
    file.flush().ok()?;
    Some(file)
}

/// Walks the guest in increasing order, as the copy loop does.
pub fn read_guest(reader: &mut dyn DiskReader) {
    let _ = reader.info();
    let end = reader.virtual_size().min(MAX_GUEST_BYTES);
    let mut buf = vec![0u8; READ_CHUNK];
    let mut offset = 0;
    for _ in 0..MAX_RUNS {
        if offset >= end {
            break;
        }
        let Ok(run) = reader.map(offset) else { return };
        assert!(run.len > 0, "map({offset:#x}) answered an empty run");
        let len = run.len.min(READ_CHUNK as u64).min(end - offset);
        if run.extent == Extent::Data {
            let Some(slice) = buf.get_mut(..len as usize) else { return };
            if reader.read_at(offset, slice).is_err() {
                return;
            }
        }
        offset += len;
    }
}

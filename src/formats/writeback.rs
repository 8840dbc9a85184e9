//! Starts writing a new image back to disk while it is still being converted.
//!
//! Every output is fsynced before it is renamed to its final name. Left alone, the kernel
//! writes most of a freshly converted image back only when that fsync asks, so the conversion
//! waits for the whole image twice over: once to compute it, once to store it. Asking for
//! write-back of what is already written, every few dozen MiB, overlaps the two; the fsync at
//! the end then has little left to wait for. Nothing is skipped: the fsync still runs.

use std::fs::File;
use std::path::Path;

use super::{DiskWriter, FormatError};

/// Output bytes between two write-back requests: large enough that the requests cost nothing,
/// small enough that the disk never idles for long.
const KICK_EVERY: u64 = 64 << 20;

/// A [`DiskWriter`] that forwards everything and asks the kernel to start writing back the
/// output file every [`KICK_EVERY`] bytes.
pub struct Writeback {
    inner: Box<dyn DiskWriter>,
    /// Any descriptor of the output will do: write-back is per file, not per descriptor.
    /// `None` when the writer has not created the file (yet): nothing to overlap then.
    file: Option<File>,
    since_kick: u64,
}

impl Writeback {
    /// Wraps `inner`, the writer of the file at `path`.
    pub fn wrap(inner: Box<dyn DiskWriter>, path: &Path) -> Box<dyn DiskWriter> {
        Box::new(Writeback {
            inner,
            file: File::open(path).ok(),
            since_kick: 0,
        })
    }

    fn kick(&self) {
        if let Some(file) = &self.file {
            crate::io::sys::start_writeback(file, 0, 0);
        }
    }
}

impl DiskWriter for Writeback {
    fn granularity(&self) -> u64 {
        self.inner.granularity()
    }

    fn write_data(&mut self, offset: u64, data: &[u8]) -> Result<(), FormatError> {
        self.inner.write_data(offset, data)?;
        self.since_kick += data.len() as u64;
        if self.since_kick >= KICK_EVERY {
            self.since_kick = 0;
            self.kick();
        }
        Ok(())
    }

    fn finish(self: Box<Self>) -> Result<(), FormatError> {
        self.inner.finish()
    }
}

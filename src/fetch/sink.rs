//! The writer thread of a download: appends to the part file and hashes, beside the network.
//!
//! Received chunks are copied into a small pool of fixed buffers that cycle between the network
//! task and a blocking thread. Copying lets hyper reuse its read buffer at once (handing its
//! chunks over instead makes it allocate fresh memory for every read, which costs more in page
//! faults than the copy), bounds memory to the pool, and turns uneven chunks into even
//! writes. Hashing on the writer thread overlaps SHA-256 with the transfer.

use std::fs::File;
use std::io::{self, Write};

use tokio::sync::mpsc;
use tokio::task::{JoinError, JoinHandle};

use crate::io::hashing::{ContentHasher, HashingWriter};
use crate::io::sys::start_writeback;

/// Size of each pooled buffer, and so of each write to the part file. Small enough to stay in
/// the writer core's cache while it is written and hashed (1 MiB buffers measured about twice
/// the system time on a 1 GiB download), large enough to keep syscalls few.
const BUFFER_SIZE: usize = 128 << 10;

/// Buffers in the pool: enough to ride out a slow write, few enough to keep memory flat
/// (at most `POOL_BUFFERS * BUFFER_SIZE` = 4 MiB in flight).
const POOL_BUFFERS: usize = 32;

/// Bytes written between requests to the kernel to start writing them back (Linux), so dirty
/// pages do not pile up and the final fsync finds little left to do.
const WRITEBACK_STEP: u64 = 16 << 20;

/// What the writer thread leaves: the hasher continued over every byte written, the count of
/// those bytes, and the first write error if any.
pub(crate) struct Written {
    pub(crate) hasher: ContentHasher,
    pub(crate) bytes: u64,
    pub(crate) result: io::Result<()>,
}

/// The network side of the pool.
pub(crate) struct Sink {
    current: Vec<u8>,
    allocated: usize,
    full: mpsc::Sender<Vec<u8>>,
    empty: mpsc::Receiver<Vec<u8>>,
    writer: JoinHandle<Written>,
}

impl Sink {
    /// Starts the writer thread appending to `file` (which holds `offset` bytes already),
    /// continuing `hasher`. The thread keeps `guard` (the destination lock) until it is done,
    /// even if the network side is dropped first.
    pub(crate) fn start<G: Send + 'static>(
        file: File,
        offset: u64,
        hasher: ContentHasher,
        guard: G,
    ) -> Sink {
        let (full, mut full_rx) = mpsc::channel::<Vec<u8>>(POOL_BUFFERS);
        let (empty_tx, empty) = mpsc::channel::<Vec<u8>>(POOL_BUFFERS);
        let writer = tokio::task::spawn_blocking(move || {
            let mut writer = HashingWriter::new(file, hasher);
            let mut result = Ok(());
            let mut clean = offset;
            while let Some(mut buffer) = full_rx.blocking_recv() {
                result = writer.write_all(&buffer);
                if result.is_err() {
                    break;
                }
                let end = offset + writer.written();
                if end - clean >= WRITEBACK_STEP {
                    start_writeback(writer.get_ref(), clean, end - clean);
                    clean = end;
                }
                buffer.clear();
                // Never full (the pool has at most as many buffers as the channel has room);
                // closed once the network side is done, and then the buffer is not needed.
                let _ = empty_tx.try_send(buffer);
            }
            let bytes = writer.written();
            drop(guard);
            Written {
                hasher: writer.into_parts().1,
                bytes,
                result,
            }
        });
        Sink {
            current: Vec::with_capacity(BUFFER_SIZE),
            allocated: 1,
            full,
            empty,
            writer,
        }
    }

    /// Copies `bytes` in, handing full buffers to the writer. `false` when the writer has
    /// stopped (its error comes out of [`Sink::finish`]).
    pub(crate) async fn push(&mut self, mut bytes: &[u8]) -> bool {
        while !bytes.is_empty() {
            let room = BUFFER_SIZE.saturating_sub(self.current.len());
            let (head, tail) = bytes.split_at(room.min(bytes.len()));
            self.current.extend_from_slice(head);
            bytes = tail;
            if self.current.len() >= BUFFER_SIZE && !self.hand_over().await {
                return false;
            }
        }
        true
    }

    async fn hand_over(&mut self) -> bool {
        let next = if self.allocated < POOL_BUFFERS {
            self.allocated += 1;
            Vec::with_capacity(BUFFER_SIZE)
        } else {
            match self.empty.recv().await {
                Some(buffer) => buffer,
                None => return false,
            }
        };
        let full = std::mem::replace(&mut self.current, next);
        self.full.send(full).await.is_ok()
    }

    /// Hands over the last partial buffer and waits for the writer to finish.
    pub(crate) async fn finish(self) -> Result<Written, JoinError> {
        let Sink {
            current,
            full,
            writer,
            ..
        } = self;
        if !current.is_empty() {
            // A closed channel means the writer already stopped; its result says why.
            let _ = full.send(current).await;
        }
        drop(full);
        writer.await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::hashing;
    use sha2::{Digest, Sha256};

    #[tokio::test]
    async fn odd_sized_pushes_arrive_whole_and_hashed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("part");
        let data: Vec<u8> = (0..BUFFER_SIZE * 9 + 12345)
            .map(|i| (i % 251) as u8)
            .collect();
        let mut sink = Sink::start(
            File::create(&path).unwrap(),
            0,
            ContentHasher::default(),
            (),
        );
        // Sizes that straddle buffer boundaries, and more data than the pool holds at once.
        for piece in data.chunks(BUFFER_SIZE / 3 + 7) {
            assert!(sink.push(piece).await);
        }
        let written = sink.finish().await.unwrap();
        written.result.unwrap();
        assert_eq!(written.bytes, data.len() as u64);
        assert_eq!(
            hashing::finish(written.hasher).as_bytes(),
            Sha256::digest(&data).as_slice()
        );
        assert!(std::fs::read(&path).unwrap() == data);
    }

    #[tokio::test]
    async fn write_error_stops_the_sink_and_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("part");
        std::fs::write(&path, b"").unwrap();
        // Read-only: every write fails.
        let mut sink = Sink::start(File::open(&path).unwrap(), 0, ContentHasher::default(), ());
        let mut accepted = true;
        for _ in 0..POOL_BUFFERS * 4 {
            accepted &= sink.push(&[0u8; BUFFER_SIZE]).await;
        }
        assert!(!accepted, "pushes kept succeeding after the writer failed");
        let written = sink.finish().await.unwrap();
        assert!(written.result.is_err());
        assert_eq!(written.bytes, 0);
    }
}

//! The digests Glance reports for an image — MD5 (`checksum`), SHA-512 (`os_hash_value`) — and
//! our SHA-256, computed in one pass over a byte stream as it is produced.
//!
//! A [`DigestTee`] is fed in stream order: bytes ([`DigestTee::update`]) and runs of zeroes
//! ([`DigestTee::zeros`]), which are hashed from a static zero buffer so a hole is never read
//! back from disk. Each algorithm runs on its own thread: MD5 and SHA-512 are about a third of
//! SHA-256's speed here, so the slowest sets the pace rather than the sum (a 2.2 GiB raw image
//! took 12.7 s on one thread, 6.8–7.1 s on three). The producer (a conversion, an archive
//! writer) keeps going while the hashers work on what it already handed over; memory stays at
//! [`BLOCKS_IN_FLIGHT`] blocks per hasher.

use std::sync::mpsc::{sync_channel, SyncSender};
use std::sync::Arc;
use std::thread::JoinHandle;

use md5::Md5;
use sha2::{Digest, Sha256, Sha512};

/// Digests of the bytes Glance will receive: `checksum` (MD5), `os_hash_value` (SHA-512), and
/// our SHA-256.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Digests {
    pub size: u64,
    pub md5: String,
    pub sha256: String,
    pub sha512: String,
}

/// Bytes gathered before a block goes to the hashers: small writes (archive headers) are
/// batched, large ones (conversion buffers) go as they are.
pub const HASH_BLOCK: usize = 1 << 20;
/// Blocks queued per hasher: enough to keep every thread busy, bounded memory.
const BLOCKS_IN_FLIGHT: usize = 4;
/// Zeroes hashed per call for a zero run: small enough to stay in cache.
const ZERO_BLOCK: usize = 128 << 10;
static ZEROS: [u8; ZERO_BLOCK] = [0; ZERO_BLOCK];

/// A hasher thread died (a panic in a hash implementation: a bug, reported, not propagated).
#[derive(Debug, thiserror::Error)]
#[error("a {algorithm} hasher thread panicked")]
pub struct HasherFailed {
    pub algorithm: &'static str,
}

/// What a hasher thread receives, in stream order.
enum Block {
    Bytes(Arc<Vec<u8>>),
    Zeros(u64),
}

/// One algorithm's thread and the way to feed it.
struct Lane {
    algorithm: &'static str,
    sender: SyncSender<Block>,
    handle: JoinHandle<String>,
}

impl Lane {
    fn spawn<D: Digest + Send + 'static>(algorithm: &'static str) -> Lane {
        let (sender, receiver) = sync_channel::<Block>(BLOCKS_IN_FLIGHT);
        let handle = std::thread::spawn(move || {
            let mut hasher = D::new();
            for block in receiver {
                match block {
                    Block::Bytes(bytes) => hasher.update(bytes.as_slice()),
                    Block::Zeros(mut len) => {
                        while len > 0 {
                            let n = len.min(ZERO_BLOCK as u64) as usize;
                            hasher.update(&ZEROS[..n]);
                            len -= n as u64;
                        }
                    }
                }
            }
            hex::encode(hasher.finalize())
        });
        Lane {
            algorithm,
            sender,
            handle,
        }
    }

    fn send(&self, block: Block) {
        // Fails only if the thread panicked, which `finish` reports.
        let _ = self.sender.send(block);
    }

    fn finish(self) -> Result<String, HasherFailed> {
        drop(self.sender);
        self.handle.join().map_err(|_| HasherFailed {
            algorithm: self.algorithm,
        })
    }
}

/// MD5, SHA-256 and SHA-512 of one stream, each on its own thread.
pub struct DigestTee {
    lanes: [Lane; 3],
    /// Small updates gathered into one block.
    pending: Vec<u8>,
    size: u64,
}

impl Default for DigestTee {
    fn default() -> DigestTee {
        DigestTee::new()
    }
}

impl DigestTee {
    pub fn new() -> DigestTee {
        DigestTee {
            lanes: [
                Lane::spawn::<Md5>("MD5"),
                Lane::spawn::<Sha256>("SHA-256"),
                Lane::spawn::<Sha512>("SHA-512"),
            ],
            pending: Vec::new(),
            size: 0,
        }
    }

    /// Bytes hashed so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The next bytes of the stream.
    pub fn update(&mut self, bytes: &[u8]) {
        self.size += bytes.len() as u64;
        if self.pending.len() + bytes.len() < HASH_BLOCK {
            self.pending.extend_from_slice(bytes);
            return;
        }
        self.flush();
        self.send(Block::Bytes(Arc::new(bytes.to_vec())));
    }

    /// The next bytes of the stream, handed over without a copy.
    pub fn update_owned(&mut self, bytes: Vec<u8>) {
        self.size += bytes.len() as u64;
        self.flush();
        self.send(Block::Bytes(Arc::new(bytes)));
    }

    /// `len` zero bytes next in the stream (a hole): hashed from a static buffer, never read.
    pub fn zeros(&mut self, len: u64) {
        if len == 0 {
            return;
        }
        self.size += len;
        self.flush();
        self.send(Block::Zeros(len));
    }

    /// The digests of everything fed, once every thread is done.
    pub fn finish(mut self) -> Result<Digests, HasherFailed> {
        self.flush();
        let [md5, sha256, sha512] = self.lanes;
        Ok(Digests {
            size: self.size,
            md5: md5.finish()?,
            sha256: sha256.finish()?,
            sha512: sha512.finish()?,
        })
    }

    fn flush(&mut self) {
        if !self.pending.is_empty() {
            let block = std::mem::take(&mut self.pending);
            self.send(Block::Bytes(Arc::new(block)));
        }
    }

    fn send(&self, block: Block) {
        match block {
            Block::Bytes(bytes) => {
                for lane in &self.lanes {
                    lane.send(Block::Bytes(Arc::clone(&bytes)));
                }
            }
            Block::Zeros(len) => {
                for lane in &self.lanes {
                    lane.send(Block::Zeros(len));
                }
            }
        }
    }
}

/// A writer that hashes everything written through it into a [`DigestTee`], when it has one.
pub struct DigestWriter<'a, W> {
    pub inner: W,
    pub tee: Option<&'a mut DigestTee>,
}

impl<W: std::io::Write> std::io::Write for DigestWriter<'_, W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let accepted = self.inner.write(buf)?;
        // Only what the inner writer took: a short write must not be hashed twice.
        if let Some(tee) = self.tee.as_deref_mut() {
            tee.update(buf.get(..accepted).unwrap_or(buf));
        }
        Ok(accepted)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Hashes everything `reader` yields.
pub fn digest_reader(reader: &mut impl std::io::Read) -> Result<Digests, std::io::Error> {
    let mut tee = DigestTee::new();
    loop {
        let mut block = vec![0u8; HASH_BLOCK];
        let n = match reader.read(&mut block) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        block.truncate(n);
        tee.update_owned(block);
    }
    tee.finish().map_err(std::io::Error::other)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expected(bytes: &[u8]) -> Digests {
        Digests {
            size: bytes.len() as u64,
            md5: hex::encode(Md5::digest(bytes)),
            sha256: hex::encode(Sha256::digest(bytes)),
            sha512: hex::encode(Sha512::digest(bytes)),
        }
    }

    #[test]
    fn known_vectors() {
        let mut tee = DigestTee::new();
        tee.update(b"abc");
        let d = tee.finish().unwrap();
        assert_eq!(d.size, 3);
        assert_eq!(d.md5, "900150983cd24fb0d6963f7d28e17f72");
        assert_eq!(
            d.sha256,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert!(d.sha512.starts_with("ddaf35a193617aba"));
    }

    #[test]
    fn bytes_zero_runs_and_small_writes_hash_as_one_stream() {
        // Small pieces, a large one, a zero run longer than the zero buffer, a tail.
        let mut stream = Vec::new();
        let mut tee = DigestTee::new();
        for i in 0..1000u32 {
            let piece = i.to_le_bytes();
            tee.update(&piece);
            stream.extend_from_slice(&piece);
        }
        let big: Vec<u8> = (0..HASH_BLOCK * 3 / 2).map(|i| (i % 251) as u8).collect();
        tee.update(&big);
        stream.extend_from_slice(&big);
        let hole = (ZERO_BLOCK * 2 + 17) as u64;
        tee.zeros(hole);
        stream.resize(stream.len() + hole as usize, 0);
        tee.update_owned(vec![7; 5]);
        stream.extend_from_slice(&[7; 5]);
        assert_eq!(tee.size(), stream.len() as u64);
        assert_eq!(tee.finish().unwrap(), expected(&stream));
    }

    #[test]
    fn a_single_zero_byte_changes_the_digests() {
        let mut tee = DigestTee::new();
        tee.update(b"x");
        tee.zeros(1);
        assert_eq!(tee.finish().unwrap(), expected(b"x\0"));
        let mut tee = DigestTee::new();
        tee.update(b"x");
        assert_ne!(tee.finish().unwrap(), expected(b"x\0"));
    }

    #[test]
    fn writer_and_reader_agree() {
        use std::io::Write;
        let bytes: Vec<u8> = (0..HASH_BLOCK * 5 / 2).map(|i| (i % 253) as u8).collect();
        let mut tee = DigestTee::new();
        let mut out = Vec::new();
        let mut writer = DigestWriter {
            inner: &mut out,
            tee: Some(&mut tee),
        };
        writer.write_all(&bytes).unwrap();
        assert_eq!(out, bytes);
        assert_eq!(tee.finish().unwrap(), expected(&bytes));
        assert_eq!(digest_reader(&mut &bytes[..]).unwrap(), expected(&bytes));
    }
}

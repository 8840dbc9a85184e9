//! A digest beside a byte stream: a writer that hashes what passes through it, and a reader
//! loop that feeds a file into an existing hasher (to rebuild its state before a resume).

use std::io::{self, Read, Write};

use sha2::{Digest, Sha256, Sha512};

use crate::verify::digest::{DigestAlgorithm, FileDigest, Sha256Digest, Sha512Digest};

/// The hasher of the algorithm a source publishes. An enum rather than a trait object: the
/// match costs one branch per block (128 KiB), and the state stays `Clone` for resume checks.
#[derive(Clone, Debug)]
pub enum ContentHasher {
    Sha256(Sha256),
    Sha512(Sha512),
}

impl ContentHasher {
    pub fn new(algorithm: DigestAlgorithm) -> ContentHasher {
        match algorithm {
            DigestAlgorithm::Sha256 => ContentHasher::Sha256(Sha256::new()),
            DigestAlgorithm::Sha512 => ContentHasher::Sha512(Sha512::new()),
        }
    }

    pub fn algorithm(&self) -> DigestAlgorithm {
        match self {
            ContentHasher::Sha256(_) => DigestAlgorithm::Sha256,
            ContentHasher::Sha512(_) => DigestAlgorithm::Sha512,
        }
    }

    pub fn update(&mut self, bytes: &[u8]) {
        match self {
            ContentHasher::Sha256(hasher) => hasher.update(bytes),
            ContentHasher::Sha512(hasher) => hasher.update(bytes),
        }
    }
}

/// SHA-256, the default when no digest is expected.
impl Default for ContentHasher {
    fn default() -> ContentHasher {
        ContentHasher::new(DigestAlgorithm::Sha256)
    }
}

/// Read size when hashing a file: large enough to amortise syscalls, small enough to stay in
/// cache between the read's copy and the hash (1 MiB measured markedly slower).
pub const HASH_BLOCK: usize = 128 << 10;

/// Writes through to `inner`, hashing and counting every byte accepted.
#[derive(Debug)]
pub struct HashingWriter<W> {
    inner: W,
    hasher: ContentHasher,
    written: u64,
}

impl<W: Write> HashingWriter<W> {
    /// Continues `hasher` (fresh, or already fed with earlier bytes of the same stream).
    pub fn new(inner: W, hasher: ContentHasher) -> HashingWriter<W> {
        HashingWriter {
            inner,
            hasher,
            written: 0,
        }
    }

    /// Bytes accepted so far by this writer (not counting what `hasher` saw before).
    pub fn written(&self) -> u64 {
        self.written
    }

    pub fn get_ref(&self) -> &W {
        &self.inner
    }

    /// The inner writer and the hasher, to continue or finalize.
    pub fn into_parts(self) -> (W, ContentHasher) {
        (self.inner, self.hasher)
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let accepted = self.inner.write(buf)?;
        // Only what the inner writer took: a short write must not be hashed twice.
        let taken = buf.get(..accepted).unwrap_or(buf);
        self.hasher.update(taken);
        self.written += taken.len() as u64;
        Ok(accepted)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Feeds everything `reader` yields into `hasher`; returns the byte count.
pub fn hash_reader<R: Read>(reader: &mut R, hasher: &mut ContentHasher) -> io::Result<u64> {
    let mut buffer = vec![0u8; HASH_BLOCK];
    let mut total = 0u64;
    loop {
        let read = match reader.read(&mut buffer) {
            Ok(0) => return Ok(total),
            Ok(read) => read,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            Err(error) => return Err(error),
        };
        let block = buffer
            .get(..read)
            .ok_or_else(|| io::Error::other("reader claimed more bytes than the buffer holds"))?;
        hasher.update(block);
        total += read as u64;
    }
}

/// The digest a hasher has reached.
pub fn finish(hasher: ContentHasher) -> FileDigest {
    match hasher {
        ContentHasher::Sha256(hasher) => FileDigest::Sha256(Sha256Digest(hasher.finalize().into())),
        ContentHasher::Sha512(hasher) => FileDigest::Sha512(Sha512Digest(hasher.finalize().into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SHA-256("abc"), FIPS 180-2 appendix B.1.
    const ABC: &str = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";

    #[test]
    fn writer_hashes_and_passes_bytes_through() {
        let mut writer = HashingWriter::new(Vec::new(), ContentHasher::default());
        writer.write_all(b"ab").unwrap();
        writer.write_all(b"c").unwrap();
        assert_eq!(writer.written(), 3);
        let (bytes, hasher) = writer.into_parts();
        assert_eq!(bytes, b"abc");
        assert_eq!(finish(hasher).to_hex(), ABC);
    }

    #[test]
    fn short_writes_are_hashed_once() {
        /// Accepts at most one byte per call.
        struct OneByte(Vec<u8>);
        impl Write for OneByte {
            fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
                self.0.extend(buf.iter().take(1));
                Ok(buf.len().min(1))
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let mut writer = HashingWriter::new(OneByte(Vec::new()), ContentHasher::default());
        writer.write_all(b"abc").unwrap();
        let (inner, hasher) = writer.into_parts();
        assert_eq!(inner.0, b"abc");
        assert_eq!(finish(hasher).to_hex(), ABC);
    }

    #[test]
    fn resuming_from_a_rehashed_prefix_gives_the_whole_digest() {
        let mut hasher = ContentHasher::default();
        let prefix = hash_reader(&mut &b"a"[..], &mut hasher).unwrap();
        assert_eq!(prefix, 1);
        let mut writer = HashingWriter::new(io::sink(), hasher);
        writer.write_all(b"bc").unwrap();
        assert_eq!(finish(writer.into_parts().1).to_hex(), ABC);
    }

    /// SHA-512("abc"), FIPS 180-2 appendix C.1.
    const ABC_512: &str = "ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a\
                           2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f";

    #[test]
    fn sha512_hasher_resumes_like_sha256() {
        let mut hasher = ContentHasher::new(DigestAlgorithm::Sha512);
        hash_reader(&mut &b"a"[..], &mut hasher).unwrap();
        let mut writer = HashingWriter::new(io::sink(), hasher);
        writer.write_all(b"bc").unwrap();
        let digest = finish(writer.into_parts().1);
        assert_eq!(digest.algorithm(), DigestAlgorithm::Sha512);
        assert_eq!(digest.to_hex(), ABC_512);
    }

    #[test]
    fn hash_reader_crosses_block_boundaries() {
        let data = vec![7u8; HASH_BLOCK * 2 + 3];
        let mut hasher = ContentHasher::default();
        assert_eq!(
            hash_reader(&mut &data[..], &mut hasher).unwrap(),
            data.len() as u64
        );
        assert_eq!(
            finish(hasher),
            FileDigest::Sha256(Sha256Digest(Sha256::digest(&data).into()))
        );
    }
}

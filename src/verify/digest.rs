//! Content digests as published in checksum files (`SHA256SUMS`, Debian's `SHA512SUMS`) and
//! simplestreams.

use std::fmt;
use std::str::FromStr;

use serde::Deserialize;

/// The digest algorithm of a checksum file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DigestAlgorithm {
    Sha256,
    Sha512,
}

impl DigestAlgorithm {
    /// Length of the digest in bytes.
    pub fn byte_len(self) -> usize {
        match self {
            DigestAlgorithm::Sha256 => 32,
            DigestAlgorithm::Sha512 => 64,
        }
    }

    /// Length of the digest in hexadecimal digits.
    pub fn hex_len(self) -> usize {
        self.byte_len() * 2
    }

    /// The lower-case name used in messages and JSON: `sha256`.
    pub fn name(self) -> &'static str {
        match self {
            DigestAlgorithm::Sha256 => "sha256",
            DigestAlgorithm::Sha512 => "sha512",
        }
    }
}

impl fmt::Display for DigestAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A SHA-256 digest.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Sha256Digest(pub [u8; 32]);

impl Sha256Digest {
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Display for Sha256Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Sha256Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Sha256Digest({})", self.to_hex())
    }
}

/// The text was not 64 hexadecimal digits.
#[derive(Debug, thiserror::Error)]
#[error("not a SHA-256 digest (64 hex digits): {0:?}")]
pub struct BadDigest(pub String);

impl FromStr for Sha256Digest {
    type Err = BadDigest;

    fn from_str(text: &str) -> Result<Sha256Digest, BadDigest> {
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(text.trim(), &mut bytes).map_err(|_| BadDigest(text.to_owned()))?;
        Ok(Sha256Digest(bytes))
    }
}

impl serde::Serialize for Sha256Digest {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_hex())
    }
}

/// A SHA-512 digest (Debian's `SHA512SUMS`).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Sha512Digest(pub [u8; 64]);

impl Sha512Digest {
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Display for Sha512Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Sha512Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Sha512Digest({})", self.to_hex())
    }
}

impl serde::Serialize for Sha512Digest {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_hex())
    }
}

/// The digest a downloaded file must have, in whichever algorithm the source publishes.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub enum FileDigest {
    Sha256(Sha256Digest),
    Sha512(Sha512Digest),
}

impl FileDigest {
    /// A digest from its raw bytes; `None` when the length does not fit the algorithm.
    pub fn from_bytes(algorithm: DigestAlgorithm, bytes: &[u8]) -> Option<FileDigest> {
        match algorithm {
            DigestAlgorithm::Sha256 => <[u8; 32]>::try_from(bytes)
                .ok()
                .map(|b| FileDigest::Sha256(Sha256Digest(b))),
            DigestAlgorithm::Sha512 => <[u8; 64]>::try_from(bytes)
                .ok()
                .map(|b| FileDigest::Sha512(Sha512Digest(b))),
        }
    }

    pub fn algorithm(&self) -> DigestAlgorithm {
        match self {
            FileDigest::Sha256(_) => DigestAlgorithm::Sha256,
            FileDigest::Sha512(_) => DigestAlgorithm::Sha512,
        }
    }

    pub fn as_bytes(&self) -> &[u8] {
        match self {
            FileDigest::Sha256(digest) => &digest.0,
            FileDigest::Sha512(digest) => &digest.0,
        }
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.as_bytes())
    }

    /// The SHA-256 digest, when this is one.
    pub fn sha256(&self) -> Option<Sha256Digest> {
        match self {
            FileDigest::Sha256(digest) => Some(*digest),
            FileDigest::Sha512(_) => None,
        }
    }

    /// The SHA-512 digest, when this is one.
    pub fn sha512(&self) -> Option<Sha512Digest> {
        match self {
            FileDigest::Sha512(digest) => Some(*digest),
            FileDigest::Sha256(_) => None,
        }
    }
}

impl From<Sha256Digest> for FileDigest {
    fn from(digest: Sha256Digest) -> FileDigest {
        FileDigest::Sha256(digest)
    }
}

impl From<Sha512Digest> for FileDigest {
    fn from(digest: Sha512Digest) -> FileDigest {
        FileDigest::Sha512(digest)
    }
}

/// Hex only, as checksum files print it; the algorithm is said beside it where it matters.
impl fmt::Display for FileDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for FileDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.algorithm(), self.to_hex())
    }
}

impl serde::Serialize for FileDigest {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_hex())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_hex() {
        let hex = "b5b1d8f4a1b4c7e2f0e6b0f5a0c0d5e1f2a3b4c5d6e7f8091a2b3c4d5e6f7081";
        let digest: Sha256Digest = hex.parse().unwrap();
        assert_eq!(digest.to_string(), hex);
    }

    #[test]
    fn rejects_short_and_non_hex() {
        assert!("abcd".parse::<Sha256Digest>().is_err());
        let mut bad = "b5b1d8f4a1b4c7e2f0e6b0f5a0c0d5e1f2a3b4c5d6e7f8091a2b3c4d5e6f7081".to_owned();
        bad.replace_range(0..1, "g");
        assert!(bad.parse::<Sha256Digest>().is_err());
    }

    #[test]
    fn file_digest_takes_only_its_algorithms_length() {
        let sha512 = FileDigest::from_bytes(DigestAlgorithm::Sha512, &[0xab; 64]).unwrap();
        assert_eq!(sha512.algorithm(), DigestAlgorithm::Sha512);
        assert_eq!(sha512.to_hex(), "ab".repeat(64));
        assert_eq!(sha512.sha256(), None);
        assert_eq!(format!("{sha512:?}"), format!("sha512:{}", "ab".repeat(64)));
        // One byte short or long of either length is refused.
        assert_eq!(
            FileDigest::from_bytes(DigestAlgorithm::Sha512, &[0; 63]),
            None
        );
        assert_eq!(
            FileDigest::from_bytes(DigestAlgorithm::Sha512, &[0; 65]),
            None
        );
        assert_eq!(
            FileDigest::from_bytes(DigestAlgorithm::Sha256, &[0; 64]),
            None
        );
        let sha256 = FileDigest::from_bytes(DigestAlgorithm::Sha256, &[1; 32]).unwrap();
        assert_eq!(sha256.sha256(), Some(Sha256Digest([1; 32])));
        assert_ne!(
            FileDigest::from(Sha512Digest([0; 64])),
            FileDigest::from(Sha512Digest({
                let mut b = [0; 64];
                b[63] = 1;
                b
            }))
        );
    }
}

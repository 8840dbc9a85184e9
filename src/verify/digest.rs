//! SHA-256 digests as published in SHA256SUMS and simplestreams.

use std::fmt;
use std::str::FromStr;

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
}

//! Checksum files in `sha256sum` / `sha512sum` format (`SHA256SUMS`, Debian's `SHA512SUMS`).
//!
//! Each line is `<hex digest><space><mode><name>` where mode is `*` (binary) or a space (text).
//! Names are plain file names of the same folder: anything that could reach elsewhere (`/`,
//! `..`) is rejected, so a checksum file cannot vouch for a path outside its folder.

use std::collections::HashSet;

use crate::catalog::DigestAlgorithm;
use crate::verify::digest::{FileDigest, Sha256Digest};

/// Upper bound for a checksum file: real ones list under a hundred files (about 7 KiB).
pub const MAX_SUMS_BYTES: usize = 4 * 1024 * 1024;

/// How `sha256sum` read the file when it wrote the line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// `*name`
    Binary,
    /// ` name`
    Text,
}

/// One checksum line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SumEntry {
    pub name: String,
    /// The raw digest (32 bytes for SHA-256, 64 for SHA-512).
    pub digest: Vec<u8>,
    pub mode: Mode,
}

impl SumEntry {
    /// The digest as SHA-256, when it is one.
    pub fn sha256(&self) -> Option<Sha256Digest> {
        <[u8; 32]>::try_from(self.digest.as_slice())
            .ok()
            .map(Sha256Digest)
    }

    /// The digest in the file's algorithm (the parser only accepts that algorithm's length).
    pub fn file_digest(&self, algorithm: DigestAlgorithm) -> Option<FileDigest> {
        FileDigest::from_bytes(algorithm, &self.digest)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SumsError {
    #[error("checksum file is {size} bytes, more than the {limit}-byte limit")]
    TooLarge { size: usize, limit: usize },
    #[error("checksum file is not UTF-8 (at byte {offset:#x})")]
    NotUtf8 { offset: usize },
    #[error("line {line}: {reason}")]
    BadLine { line: usize, reason: String },
    #[error("line {line}: {name:?} is listed twice")]
    Duplicate { line: usize, name: String },
}

/// Parses a whole checksum file. Blank lines are skipped; anything else malformed is an error
/// naming the (1-based) line.
pub fn parse(bytes: &[u8], algorithm: DigestAlgorithm) -> Result<Vec<SumEntry>, SumsError> {
    if bytes.len() > MAX_SUMS_BYTES {
        return Err(SumsError::TooLarge {
            size: bytes.len(),
            limit: MAX_SUMS_BYTES,
        });
    }
    let text = std::str::from_utf8(bytes).map_err(|e| SumsError::NotUtf8 {
        offset: e.valid_up_to(),
    })?;
    let mut entries: Vec<SumEntry> = Vec::new();
    let mut seen = HashSet::new();
    for (index, raw) in text.lines().enumerate() {
        let line = index + 1;
        if raw.trim().is_empty() {
            continue;
        }
        let entry = parse_line(raw, algorithm).map_err(|reason| SumsError::BadLine {
            line,
            reason: reason.to_owned(),
        })?;
        if !seen.insert(entry.name.clone()) {
            return Err(SumsError::Duplicate {
                line,
                name: entry.name,
            });
        }
        entries.push(entry);
    }
    Ok(entries)
}

fn parse_line(line: &str, algorithm: DigestAlgorithm) -> Result<SumEntry, &'static str> {
    let hex_len = algorithm.hex_len();
    let hex = line.get(..hex_len).ok_or("too short for a digest")?;
    if !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err("digest is not hexadecimal of the expected length");
    }
    let rest = &line[hex_len..];
    let (mode, name) = if let Some(name) = rest.strip_prefix(" *") {
        (Mode::Binary, name)
    } else if let Some(name) = rest.strip_prefix("  ") {
        (Mode::Text, name)
    } else {
        return Err("expected \" *\" or two spaces after the digest");
    };
    let name = name.strip_suffix('\r').unwrap_or(name);
    if name.is_empty() {
        return Err("empty file name");
    }
    if name.contains('/') || name.contains('\\') || name == "." || name == ".." {
        return Err("file name must be a plain name of this folder");
    }
    if name.chars().any(char::is_control) {
        return Err("control character in file name");
    }
    let digest = hex::decode(hex).map_err(|_| "digest is not hexadecimal")?;
    Ok(SumEntry {
        name: name.to_owned(),
        digest,
        mode,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &[u8] =
        include_bytes!("../../tests/data/ubuntu/sums/noble-current-20260926/SHA256SUMS");

    const HEX: &str = "6a81c37564db9b1ee84e141922625e1d7c5b389b99bb3c572e0243607d5bb4d2";

    #[test]
    fn real_2026_sample_parses() {
        let entries = parse(SAMPLE, DigestAlgorithm::Sha256).unwrap();
        assert_eq!(entries.len(), 66);
        assert!(entries.iter().all(|e| e.mode == Mode::Binary));
        let img = entries
            .iter()
            .find(|e| e.name == "noble-server-cloudimg-amd64.img")
            .unwrap();
        assert_eq!(img.sha256().unwrap().to_hex(), HEX);
        // The sample is sorted by digest, not by name: the first line is an arm64 file.
        assert_eq!(
            entries[0].name,
            "noble-server-cloudimg-arm64-azure.vhd.tar.gz"
        );
    }

    #[test]
    fn text_mode_line_is_accepted() {
        let line = format!("{HEX}  disk.img\n");
        let entries = parse(line.as_bytes(), DigestAlgorithm::Sha256).unwrap();
        assert_eq!(entries[0].mode, Mode::Text);
        assert_eq!(entries[0].name, "disk.img");
    }

    #[test]
    fn sha512_lines_are_read_with_their_own_length() {
        let hex = "ab".repeat(64);
        let line = format!("{hex}  debian-12-genericcloud-amd64.qcow2\r\n");
        let entries = parse(line.as_bytes(), DigestAlgorithm::Sha512).unwrap();
        assert_eq!(entries[0].digest.len(), 64);
        assert_eq!(entries[0].sha256(), None);
        let digest = entries[0].file_digest(DigestAlgorithm::Sha512).unwrap();
        assert_eq!(digest.to_hex(), hex);
        assert_eq!(entries[0].name, "debian-12-genericcloud-amd64.qcow2");
        // The same line is not a SHA-256 line.
        assert!(parse(line.as_bytes(), DigestAlgorithm::Sha256).is_err());
    }

    /// A line as Debian writes SHA512SUMS: 128 hex digits, two spaces, no `*`.
    fn debian_line(hex: &str) -> String {
        format!("{hex}  debian-12-genericcloud-amd64-20240717-1811.qcow2\n")
    }

    #[test]
    fn debian_sha512_line_and_its_one_byte_damages() {
        let hex = "0123456789abcdef".repeat(8);
        let good = parse(debian_line(&hex).as_bytes(), DigestAlgorithm::Sha512).unwrap();
        assert_eq!(good[0].mode, Mode::Text);
        assert_eq!(
            good[0]
                .file_digest(DigestAlgorithm::Sha512)
                .unwrap()
                .to_hex(),
            hex
        );
        let damaged = [
            // One digit short: the name's first character is read as a digit, then no separator.
            debian_line(&hex[..127]),
            // One digit too many.
            debian_line(&format!("{hex}0")),
            // One non-hex digit.
            debian_line(&format!("{}x", &hex[..127])),
            // One space instead of two.
            format!("{hex} debian-12-genericcloud-amd64-20240717-1811.qcow2\n"),
        ];
        for line in damaged {
            assert!(
                matches!(
                    parse(line.as_bytes(), DigestAlgorithm::Sha512),
                    Err(SumsError::BadLine { line: 1, .. })
                ),
                "{line:?}"
            );
        }
    }

    fn rejected(line: &str) -> SumsError {
        parse(line.as_bytes(), DigestAlgorithm::Sha256).unwrap_err()
    }

    #[test]
    fn name_with_slash_is_rejected() {
        assert!(matches!(
            rejected(&format!("{HEX} *unpacked/vmlinuz")),
            SumsError::BadLine { line: 1, .. }
        ));
        assert!(matches!(
            rejected(&format!("{HEX} *..")),
            SumsError::BadLine { .. }
        ));
    }

    #[test]
    fn one_non_hex_digit_is_rejected() {
        let mut hex = HEX.to_owned();
        hex.replace_range(10..11, "g");
        assert!(matches!(
            rejected(&format!("{hex} *a.img")),
            SumsError::BadLine { .. }
        ));
    }

    #[test]
    fn short_digest_is_rejected() {
        assert!(matches!(
            rejected(&format!("{} *a.img", &HEX[..63])),
            SumsError::BadLine { .. }
        ));
    }

    #[test]
    fn single_space_separator_is_rejected() {
        assert!(matches!(
            rejected(&format!("{HEX} a.img")),
            SumsError::BadLine { .. }
        ));
    }

    #[test]
    fn duplicate_name_is_rejected() {
        let text = format!("{HEX} *a.img\n\n{HEX} *a.img\n");
        assert_eq!(
            rejected(&text),
            SumsError::Duplicate {
                line: 3,
                name: "a.img".into()
            }
        );
    }

    #[test]
    fn non_utf8_is_rejected() {
        let mut bytes = format!("{HEX} *a.img").into_bytes();
        bytes.push(0xff);
        assert_eq!(
            parse(&bytes, DigestAlgorithm::Sha256),
            Err(SumsError::NotUtf8 { offset: 71 })
        );
    }

    #[test]
    fn multibyte_text_at_digest_boundary_does_not_panic() {
        // 63 ASCII digits then a 2-byte character straddling the 64-byte cut.
        let text = format!("{}é *a.img", &HEX[..63]);
        assert!(matches!(rejected(&text), SumsError::BadLine { .. }));
    }

    #[test]
    fn corrupted_files_never_panic() {
        let mut rejected = 0;
        for text in crate::index::corruptions(SAMPLE, 600) {
            if parse(&text, DigestAlgorithm::Sha256).is_err() {
                rejected += 1;
            }
        }
        // Most single-byte damage (a digit, a separator) must be caught, not silently accepted.
        assert!(rejected > 100, "{rejected}");
    }

    #[test]
    fn oversized_file_is_rejected() {
        let big = vec![b'\n'; MAX_SUMS_BYTES + 1];
        assert!(matches!(
            parse(&big, DigestAlgorithm::Sha256),
            Err(SumsError::TooLarge { .. })
        ));
    }
}

//! UUIDs for the `uuid=` option (VHD footer, VDI header): parsed from text or drawn at random.

use crate::formats::FormatError;

/// Parses `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx` (dashes optional) into its 16 bytes in text
/// order (RFC 4122 / big-endian fields).
pub fn parse(key: &str, text: &str) -> Result<[u8; 16], FormatError> {
    let invalid = || FormatError::InvalidOption {
        key: key.to_owned(),
        value: text.to_owned(),
        reason: "expected a UUID such as 01234567-89ab-cdef-0123-456789abcdef".into(),
    };
    let digits: Vec<u8> = text.bytes().filter(|b| *b != b'-').collect();
    if digits.len() != 32 {
        return Err(invalid());
    }
    let mut out = [0u8; 16];
    for (byte, pair) in out.iter_mut().zip(digits.chunks_exact(2)) {
        let pair = std::str::from_utf8(pair).map_err(|_| invalid())?;
        *byte = u8::from_str_radix(pair, 16).map_err(|_| invalid())?;
    }
    Ok(out)
}

/// A random (version 4, RFC 4122 variant) UUID, in text order.
pub fn random_v4() -> [u8; 16] {
    let mut bytes: [u8; 16] = rand::random();
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    bytes
}

/// Formats 16 bytes in text order as `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`.
#[cfg(test)]
pub fn format(bytes: &[u8; 16]) -> String {
    let hex = hex::encode(bytes);
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_round_trips() {
        let text = "eb9eb685-2f80-4df8-81a4-d52a3ac8e44b";
        let bytes = parse("uuid", text).unwrap();
        assert_eq!(bytes[0], 0xeb);
        assert_eq!(bytes[15], 0x4b);
        assert_eq!(format(&bytes), text);
    }

    #[test]
    fn short_or_non_hex_uuid_is_rejected() {
        assert!(parse("uuid", "eb9eb685-2f80-4df8-81a4-d52a3ac8e44").is_err());
        assert!(parse("uuid", "zb9eb685-2f80-4df8-81a4-d52a3ac8e44b").is_err());
    }

    #[test]
    fn random_uuid_is_version_4() {
        let u = random_v4();
        assert_eq!(u[6] >> 4, 4);
        assert_eq!(u[8] >> 6, 2);
    }
}

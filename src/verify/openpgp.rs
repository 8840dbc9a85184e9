//! OpenPGP detached signatures (`SHA256SUMS.gpg`) checked against a keyring of trusted keys.
//!
//! The keyring is what the user trusts: the catalog's built-in Ubuntu keys or a `--keyring` file.
//! A signature is good when it was made, over exactly these bytes, by a primary key of the ring or
//! by one of its signing subkeys whose binding to the primary verifies. Key expiry and revocation
//! are not evaluated (as `gpgv`, the keyring is trusted as given).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use pgp::composed::{Deserializable, DetachedSignature, SignedPublicKey};
use pgp::crypto::hash::HashAlgorithm;
use pgp::packet::{PublicKey, PublicSubkey, Signature, SignatureType};
use pgp::types::{Fingerprint, KeyDetails, KeyId};
use tracing::debug;

use crate::ErrorKind;

/// Largest keyring accepted, in bytes. One armored RSA-4096 key with its certifications is 2–4 KiB;
/// a keyring of a few hundred such keys stays below this, so anything bigger is not a keyring.
pub const MAX_KEYRING_BYTES: usize = 8 << 20;

/// Most certificates (primary keys) one keyring may hold: bounds the parse loop on hostile input.
pub const MAX_KEYS: usize = 1024;

/// Largest signature file accepted, in bytes. One armored RSA-4096 signature is about 850 bytes;
/// a file holding [`MAX_SIGNATURES`] of them stays far below this.
pub const MAX_SIGNATURE_BYTES: usize = 64 << 10;

/// Most signatures examined in one signature file (several keys may sign the same SHA256SUMS).
pub const MAX_SIGNATURES: usize = 16;

/// Line opening an ASCII-armored block (RFC 9580 section 6.2), e.g. `-----BEGIN PGP SIGNATURE-----`.
const ARMOR_BEGIN: &[u8] = b"-----BEGIN PGP ";

/// Digest algorithms accepted in data signatures. MD5, SHA-1 and RIPEMD-160 allow forgeries
/// (SHA-1 chosen-prefix collisions, 2020); Ubuntu signs with SHA-512.
const ACCEPTED_HASHES: [HashAlgorithm; 5] = [
    HashAlgorithm::Sha256,
    HashAlgorithm::Sha384,
    HashAlgorithm::Sha512,
    HashAlgorithm::Sha3_256,
    HashAlgorithm::Sha3_512,
];

/// The keyring could not be loaded: the user pointed at something that is not a usable keyring.
#[derive(Debug, thiserror::Error)]
pub enum KeyringError {
    #[error("cannot read keyring {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("keyring {what} is larger than {max} bytes")]
    TooLarge { what: String, max: usize },
    #[error("keyring {what} is not an OpenPGP public key (armored or binary)")]
    Parse {
        what: String,
        #[source]
        source: pgp::errors::Error,
    },
    #[error("keyring {what} holds more than {max} keys")]
    TooManyKeys { what: String, max: usize },
    #[error("keyring {what} holds no public key")]
    Empty { what: String },
}

impl KeyringError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            KeyringError::Read { .. }
            | KeyringError::TooLarge { .. }
            | KeyringError::Parse { .. }
            | KeyringError::TooManyKeys { .. }
            | KeyringError::Empty { .. } => ErrorKind::Usage,
        }
    }
}

/// The signature does not vouch for the data.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("BAD signature by key {fingerprint}: the data was altered or is not what was signed")]
    BadSignature {
        fingerprint: String,
        #[source]
        source: pgp::errors::Error,
    },
    #[error("signed by key {issuer}, which is not in the keyring")]
    UnknownKey { issuer: String },
    #[error("signature by key {fingerprint} uses the {algorithm} digest, which is refused as too weak (SHA-256, SHA-384, SHA-512 accepted)")]
    WeakHash {
        fingerprint: String,
        algorithm: String,
    },
    #[error("not an OpenPGP detached signature: {what}")]
    Malformed {
        what: String,
        #[source]
        source: Option<pgp::errors::Error>,
    },
    #[error("the signature file holds no signature")]
    NoSignature,
}

impl VerifyError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            VerifyError::BadSignature { .. }
            | VerifyError::UnknownKey { .. }
            | VerifyError::WeakHash { .. }
            | VerifyError::Malformed { .. }
            | VerifyError::NoSignature => ErrorKind::Integrity,
        }
    }

    /// How much the error tells about the data when several signatures failed: a key of the ring
    /// that rejects the data outranks a weak digest, which outranks a stranger's signature.
    fn weight(&self) -> u8 {
        match self {
            VerifyError::BadSignature { .. } => 4,
            VerifyError::WeakHash { .. } => 3,
            VerifyError::UnknownKey { .. } => 2,
            VerifyError::Malformed { .. } => 1,
            VerifyError::NoSignature => 0,
        }
    }
}

/// A signature that verified.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GoodSignature {
    /// Fingerprint of the signer's primary key, upper-case hex, as `gpg --fingerprint` shows it.
    pub fingerprint: String,
    /// Fingerprint of the key that made the signature: the primary key or a signing subkey.
    pub signing_key: String,
    /// When the signature was made (its signature-creation-time subpacket).
    pub created: SystemTime,
}

/// The verifying half of one key, primary or subkey.
#[derive(Clone, Debug)]
enum Material {
    Primary(PublicKey),
    Subkey(PublicSubkey),
}

#[derive(Clone, Debug)]
struct TrustedKey {
    material: Material,
    fingerprint: Fingerprint,
    key_id: KeyId,
    /// Fingerprint of the certificate's primary key (the key itself when primary).
    primary: Fingerprint,
}

impl TrustedKey {
    fn verify(&self, signature: &Signature, data: &[u8]) -> pgp::errors::Result<()> {
        match &self.material {
            Material::Primary(key) => signature.verify(key, data),
            Material::Subkey(key) => signature.verify(key, data),
        }
    }

    fn is_issuer_of(&self, signature: &Signature) -> bool {
        signature.issuer_fingerprint().contains(&&self.fingerprint)
            || signature.issuer_key_id().contains(&&self.key_id)
    }
}

/// Public keys trusted to sign checksums.
#[derive(Clone, Debug, Default)]
pub struct Keyring {
    keys: Vec<TrustedKey>,
    /// Primary fingerprints, upper-case hex, in load order.
    certificates: Vec<String>,
}

impl Keyring {
    /// Loads one or more public keys, ASCII-armored or binary (a `gpg --export` file).
    pub fn from_bytes(bytes: &[u8]) -> Result<Keyring, KeyringError> {
        let mut ring = Keyring::default();
        ring.add(bytes, "data")?;
        Ok(ring)
    }

    /// Loads the armored keys of a catalog, one or more keys per text.
    pub fn from_armored_texts(texts: &[&str]) -> Result<Keyring, KeyringError> {
        let mut ring = Keyring::default();
        for (index, text) in texts.iter().enumerate() {
            ring.add(text.as_bytes(), &format!("text #{index}"))?;
        }
        Ok(ring)
    }

    /// Loads a keyring file given by the user (`--keyring FILE`), armored or binary.
    pub fn from_file(path: &Path) -> Result<Keyring, KeyringError> {
        let read_error = |source| KeyringError::Read {
            path: path.to_owned(),
            source,
        };
        let file = std::fs::File::open(path).map_err(read_error)?;
        let mut bytes = Vec::new();
        // One byte past the limit tells "too large" from "exactly the limit" without trusting
        // the file's announced length.
        file.take(MAX_KEYRING_BYTES as u64 + 1)
            .read_to_end(&mut bytes)
            .map_err(read_error)?;
        let mut ring = Keyring::default();
        ring.add(&bytes, &path.display().to_string())?;
        Ok(ring)
    }

    /// Adds the keys of `other` to this ring (e.g. the catalog's keys plus `--keyring`).
    pub fn merge(&mut self, other: Keyring) {
        self.keys.extend(other.keys);
        self.certificates.extend(other.certificates);
    }

    /// Fingerprints of the primary keys, upper-case hex, for messages.
    pub fn fingerprints(&self) -> &[String] {
        &self.certificates
    }

    /// Checks a detached signature (armored or binary) over `data`.
    ///
    /// When the file holds several signatures, one good signature by a key of the ring suffices.
    pub fn verify_detached(
        &self,
        data: &[u8],
        signature: &[u8],
    ) -> Result<GoodSignature, VerifyError> {
        let mut failure: Option<VerifyError> = None;
        for candidate in parse_signatures(signature)? {
            match self.verify_one(data, &candidate) {
                Ok(good) => return Ok(good),
                Err(error) => {
                    debug!(%error, "signature did not verify");
                    failure = match failure {
                        Some(kept) if kept.weight() >= error.weight() => Some(kept),
                        _ => Some(error),
                    };
                }
            }
        }
        Err(failure.unwrap_or(VerifyError::NoSignature))
    }

    fn verify_one(&self, data: &[u8], signature: &Signature) -> Result<GoodSignature, VerifyError> {
        match signature.typ() {
            Some(SignatureType::Binary | SignatureType::Text) => {}
            other => {
                return Err(VerifyError::Malformed {
                    what: format!("signature of type {other:?}, not a data signature"),
                    source: None,
                })
            }
        }
        let has_issuer =
            !signature.issuer_fingerprint().is_empty() || !signature.issuer_key_id().is_empty();
        // A signature naming no issuer is tried against every key, as gpg does.
        let candidates: Vec<&TrustedKey> = self
            .keys
            .iter()
            .filter(|key| !has_issuer || key.is_issuer_of(signature))
            .collect();
        let Some(first) = candidates.first() else {
            return Err(VerifyError::UnknownKey {
                issuer: describe_issuer(signature),
            });
        };
        let hash = signature.hash_alg();
        if !hash.is_some_and(|hash| ACCEPTED_HASHES.contains(&hash)) {
            return Err(VerifyError::WeakHash {
                fingerprint: upper_hex(&first.primary),
                algorithm: hash.map_or_else(|| "unknown".to_owned(), |hash| hash.to_string()),
            });
        }
        let Some(created) = signature.created() else {
            return Err(VerifyError::Malformed {
                what: "signature has no creation time".to_owned(),
                source: None,
            });
        };
        let good = |key: &TrustedKey| GoodSignature {
            fingerprint: upper_hex(&key.primary),
            signing_key: upper_hex(&key.fingerprint),
            created: UNIX_EPOCH + Duration::from_secs(created.as_secs().into()),
        };
        let rejection = match first.verify(signature, data) {
            Ok(()) => return Ok(good(first)),
            Err(source) => source,
        };
        // Key ids can collide: another key of the ring may still be the real signer.
        for key in candidates.iter().skip(1) {
            if key.verify(signature, data).is_ok() {
                return Ok(good(key));
            }
        }
        Err(VerifyError::BadSignature {
            fingerprint: upper_hex(&first.primary),
            source: rejection,
        })
    }

    /// Parses `bytes` and adds every certificate's primary key and signing subkeys.
    fn add(&mut self, bytes: &[u8], what: &str) -> Result<(), KeyringError> {
        if bytes.len() > MAX_KEYRING_BYTES {
            return Err(KeyringError::TooLarge {
                what: what.to_owned(),
                max: MAX_KEYRING_BYTES,
            });
        }
        let parse_error = |source| KeyringError::Parse {
            what: what.to_owned(),
            source,
        };
        let mut count = 0usize;
        for block in armor_blocks(bytes) {
            let (certificates, _headers) =
                SignedPublicKey::from_reader_many(block).map_err(parse_error)?;
            for certificate in certificates {
                count += 1;
                if count > MAX_KEYS {
                    return Err(KeyringError::TooManyKeys {
                        what: what.to_owned(),
                        max: MAX_KEYS,
                    });
                }
                self.add_certificate(certificate.map_err(parse_error)?);
            }
        }
        if count == 0 {
            return Err(KeyringError::Empty {
                what: what.to_owned(),
            });
        }
        Ok(())
    }

    fn add_certificate(&mut self, certificate: SignedPublicKey) {
        let primary = certificate.primary_key.fingerprint();
        debug!(fingerprint = %upper_hex(&primary), "trusting key");
        for subkey in &certificate.public_subkeys {
            let signs = subkey.signatures.iter().any(|sig| sig.key_flags().sign());
            if !signs {
                continue;
            }
            // An unbound subkey could have been grafted onto the certificate by anyone.
            if let Err(error) = subkey.verify_bindings(&certificate.primary_key) {
                debug!(subkey = %upper_hex(&subkey.key.fingerprint()), %error, "ignoring subkey with a bad binding");
                continue;
            }
            self.keys.push(TrustedKey {
                fingerprint: subkey.key.fingerprint(),
                key_id: subkey.key.legacy_key_id(),
                primary: primary.clone(),
                material: Material::Subkey(subkey.key.clone()),
            });
        }
        self.certificates.push(upper_hex(&primary));
        self.keys.push(TrustedKey {
            fingerprint: primary.clone(),
            key_id: certificate.primary_key.legacy_key_id(),
            primary,
            material: Material::Primary(certificate.primary_key),
        });
    }
}

/// Parses every signature packet of a detached signature file, armored or binary.
fn parse_signatures(bytes: &[u8]) -> Result<Vec<Signature>, VerifyError> {
    if bytes.len() > MAX_SIGNATURE_BYTES {
        return Err(VerifyError::Malformed {
            what: format!("{} bytes, more than {MAX_SIGNATURE_BYTES}", bytes.len()),
            source: None,
        });
    }
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(VerifyError::NoSignature);
    }
    let malformed = |source| VerifyError::Malformed {
        what: "unreadable signature packets".to_owned(),
        source: Some(source),
    };
    let mut signatures = Vec::new();
    for block in armor_blocks(bytes) {
        let (parsed, _headers) = DetachedSignature::from_reader_many(block).map_err(malformed)?;
        for signature in parsed {
            if signatures.len() == MAX_SIGNATURES {
                return Err(VerifyError::Malformed {
                    what: format!("more than {MAX_SIGNATURES} signatures"),
                    source: None,
                });
            }
            signatures.push(signature.map_err(malformed)?.signature);
        }
    }
    if signatures.is_empty() {
        return Err(VerifyError::NoSignature);
    }
    Ok(signatures)
}

/// Splits concatenated armored blocks (`cat a.asc b.asc`), which rPGP would read as one block,
/// dropping the rest. Binary input (first byte has the packet-tag bit 0x80), and text without any
/// armor line, stay whole; text before the first armor line is ignored, as gpg does.
fn armor_blocks(bytes: &[u8]) -> Vec<&[u8]> {
    if bytes.first().is_some_and(|first| first & 0x80 != 0) {
        return vec![bytes];
    }
    let starts: Vec<usize> = (0..bytes.len())
        .filter(|&at| {
            let at_line_start = at == 0 || bytes.get(at - 1) == Some(&b'\n');
            at_line_start
                && bytes
                    .get(at..)
                    .is_some_and(|rest| rest.starts_with(ARMOR_BEGIN))
        })
        .collect();
    if starts.is_empty() {
        return vec![bytes];
    }
    let ends = starts.iter().skip(1).copied().chain([bytes.len()]);
    starts
        .iter()
        .zip(ends)
        .filter_map(|(&start, end)| bytes.get(start..end))
        .collect()
}

/// The issuer a signature names, for "not in the keyring" messages: fingerprint, else key id.
fn describe_issuer(signature: &Signature) -> String {
    if let Some(fingerprint) = signature.issuer_fingerprint().first() {
        return upper_hex(fingerprint);
    }
    match signature.issuer_key_id().first() {
        Some(key_id) => hex::encode_upper(key_id),
        None => "(no issuer named)".to_owned(),
    }
}

fn upper_hex(fingerprint: &Fingerprint) -> String {
    hex::encode_upper(fingerprint.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use pgp::composed::{KeyType, SecretKeyParamsBuilder, SignedSecretKey, SubkeyParamsBuilder};
    use pgp::ser::Serialize;
    use pgp::types::Password;
    use rand_chacha::rand_core::SeedableRng;
    use rand_chacha::ChaCha20Rng;

    const SUMS: &[u8] = include_bytes!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/ubuntu-sums/SHA256SUMS"
    ));
    const SUMS_GPG: &[u8] = include_bytes!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/ubuntu-sums/SHA256SUMS.gpg"
    ));
    const UEC_KEY: &str = include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/ubuntu-sums/uec-image-automatic-signing-key.asc"
    ));
    const BUILDER_KEY: &str = include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/ubuntu-sums/ubuntu-cloud-image-builder.asc"
    ));
    const UEC_FINGERPRINT: &str = "D2EB44626FDDC30B513D5BB71A5D6C4C7DB87C81";
    const BUILDER_FINGERPRINT: &str = "4A3CE3CD565D7EB5C810E2B97FF3F408476CF100";

    fn uec_ring() -> Keyring {
        Keyring::from_armored_texts(&[UEC_KEY]).unwrap()
    }

    /// An Ed25519 key made on the spot; `subkey` moves signing to a subkey.
    fn generated_key(seed: u64, subkey: bool) -> SignedSecretKey {
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let mut params = SecretKeyParamsBuilder::default();
        params
            .key_type(KeyType::Ed25519Legacy)
            .can_certify(true)
            .can_sign(!subkey)
            .primary_user_id("Test <test@example.invalid>".into());
        if subkey {
            params.subkeys(vec![SubkeyParamsBuilder::default()
                .key_type(KeyType::Ed25519Legacy)
                .can_sign(true)
                .build()
                .unwrap()]);
        }
        params.build().unwrap().generate(&mut rng).unwrap()
    }

    fn armored_public(key: &SignedSecretKey) -> String {
        key.to_public_key()
            .to_armored_string(Default::default())
            .unwrap()
    }

    fn sign(key: &impl pgp::types::SigningKey, hash: HashAlgorithm, data: &[u8]) -> Vec<u8> {
        let rng = ChaCha20Rng::seed_from_u64(7);
        DetachedSignature::sign_binary_data(rng, key, &Password::empty(), hash, data)
            .unwrap()
            .to_armored_bytes(Default::default())
            .unwrap()
    }

    #[test]
    fn real_ubuntu_sums_verify_with_the_uec_key() {
        let good = uec_ring().verify_detached(SUMS, SUMS_GPG).unwrap();
        assert_eq!(good.fingerprint, UEC_FINGERPRINT);
        assert_eq!(good.signing_key, UEC_FINGERPRINT);
        // Serial 20260926 was signed in September 2026 (2026-09-01 = 1788220800).
        let since = good.created.duration_since(UNIX_EPOCH).unwrap().as_secs();
        assert!((1_788_220_800..1_790_812_800).contains(&since), "{since}");
    }

    #[test]
    fn real_ubuntu_sums_verify_with_both_ubuntu_keys_in_the_ring() {
        let ring = Keyring::from_armored_texts(&[BUILDER_KEY, UEC_KEY]).unwrap();
        assert_eq!(ring.fingerprints(), [BUILDER_FINGERPRINT, UEC_FINGERPRINT]);
        let good = ring.verify_detached(SUMS, SUMS_GPG).unwrap();
        assert_eq!(good.fingerprint, UEC_FINGERPRINT);
    }

    #[test]
    fn concatenated_armored_keys_load_from_one_file() {
        let both = format!("{UEC_KEY}\n{BUILDER_KEY}");
        let ring = Keyring::from_bytes(both.as_bytes()).unwrap();
        assert_eq!(ring.fingerprints(), [UEC_FINGERPRINT, BUILDER_FINGERPRINT]);
    }

    #[test]
    fn binary_keyring_and_binary_signature_verify() {
        let (key, _) = SignedPublicKey::from_string(UEC_KEY).unwrap();
        let ring = Keyring::from_bytes(&key.to_bytes().unwrap()).unwrap();
        let (signature, _) = DetachedSignature::from_armor_single(SUMS_GPG).unwrap();
        let good = ring
            .verify_detached(SUMS, &signature.to_bytes().unwrap())
            .unwrap();
        assert_eq!(good.fingerprint, UEC_FINGERPRINT);
    }

    #[test]
    fn one_flipped_byte_in_the_sums_is_a_bad_signature() {
        let mut altered = SUMS.to_vec();
        altered[100] ^= 0x01;
        let error = uec_ring().verify_detached(&altered, SUMS_GPG).unwrap_err();
        assert!(
            matches!(&error, VerifyError::BadSignature { fingerprint, .. } if fingerprint == UEC_FINGERPRINT),
            "{error:?}"
        );
        assert_eq!(error.kind(), ErrorKind::Integrity);
    }

    #[test]
    fn signature_by_a_key_outside_the_ring_is_unknown_key() {
        let ring = Keyring::from_armored_texts(&[BUILDER_KEY]).unwrap();
        let error = ring.verify_detached(SUMS, SUMS_GPG).unwrap_err();
        assert!(
            matches!(&error, VerifyError::UnknownKey { issuer } if issuer == UEC_FINGERPRINT),
            "{error:?}"
        );
        assert_eq!(error.kind(), ErrorKind::Integrity);
    }

    #[test]
    fn garbage_signature_is_malformed() {
        let error = uec_ring()
            .verify_detached(SUMS, b"this is not a signature\n")
            .unwrap_err();
        assert!(matches!(error, VerifyError::Malformed { .. }), "{error:?}");
        assert_eq!(error.kind(), ErrorKind::Integrity);
    }

    #[test]
    fn public_key_given_as_signature_is_malformed() {
        let error = uec_ring()
            .verify_detached(SUMS, UEC_KEY.as_bytes())
            .unwrap_err();
        assert!(matches!(error, VerifyError::Malformed { .. }), "{error:?}");
    }

    #[test]
    fn truncated_signature_is_malformed() {
        let (signature, _) = DetachedSignature::from_armor_single(SUMS_GPG).unwrap();
        let binary = signature.to_bytes().unwrap();
        let error = uec_ring()
            .verify_detached(SUMS, &binary[..binary.len() - 1])
            .unwrap_err();
        assert!(matches!(error, VerifyError::Malformed { .. }), "{error:?}");
    }

    #[test]
    fn empty_signature_file_is_no_signature() {
        let error = uec_ring().verify_detached(SUMS, b"\n").unwrap_err();
        assert!(matches!(error, VerifyError::NoSignature), "{error:?}");
        assert_eq!(error.kind(), ErrorKind::Integrity);
    }

    #[test]
    fn oversized_signature_file_is_malformed() {
        let huge = vec![b'A'; MAX_SIGNATURE_BYTES + 1];
        let error = uec_ring().verify_detached(SUMS, &huge).unwrap_err();
        assert!(matches!(error, VerifyError::Malformed { .. }), "{error:?}");
    }

    #[test]
    fn armor_blocks_split_at_each_begin_line() {
        let text = b"junk\n-----BEGIN PGP A-----\nx\n-----BEGIN PGP B-----\ny\n";
        let blocks = armor_blocks(text);
        assert_eq!(
            blocks,
            [
                &b"-----BEGIN PGP A-----\nx\n"[..],
                b"-----BEGIN PGP B-----\ny\n"
            ]
        );
        // A BEGIN marker inside a line is not a block start.
        assert_eq!(armor_blocks(b"a -----BEGIN PGP A-----\n").len(), 1);
        // Binary input is never split.
        assert_eq!(armor_blocks(b"\x89\n-----BEGIN PGP A-----\n").len(), 1);
    }

    #[test]
    fn garbage_keyring_is_a_usage_error() {
        let error = Keyring::from_bytes(b"not a key at all").unwrap_err();
        assert!(matches!(error, KeyringError::Parse { .. }), "{error:?}");
        assert_eq!(error.kind(), ErrorKind::Usage);
    }

    #[test]
    fn missing_keyring_file_is_a_usage_error() {
        let dir = tempfile::tempdir().unwrap();
        let error = Keyring::from_file(&dir.path().join("absent.asc")).unwrap_err();
        assert!(matches!(error, KeyringError::Read { .. }), "{error:?}");
        assert_eq!(error.kind(), ErrorKind::Usage);
    }

    #[test]
    fn keyring_file_loads_and_verifies() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("uec.asc");
        std::fs::write(&path, UEC_KEY).unwrap();
        let ring = Keyring::from_file(&path).unwrap();
        assert!(ring.verify_detached(SUMS, SUMS_GPG).is_ok());
    }

    #[test]
    fn merged_rings_verify_with_either_key() {
        let mut ring = Keyring::from_armored_texts(&[BUILDER_KEY]).unwrap();
        ring.merge(uec_ring());
        assert!(ring.verify_detached(SUMS, SUMS_GPG).is_ok());
    }

    /// The real signature in binary form, its digest algorithm octet replaced by `hash`.
    fn real_signature_claiming(hash: u8) -> Vec<u8> {
        let (signature, _) = DetachedSignature::from_armor_single(SUMS_GPG).unwrap();
        let mut binary = signature.to_bytes().unwrap();
        // 0x89: old-format packet, tag 2 (signature), two-octet length; 0x02 0x33: length 563;
        // then version 4, type 0x00 (binary document), public-key algorithm 1 (RSA),
        // digest algorithm 10 (SHA-512).
        assert_eq!(binary[..7], [0x89, 0x02, 0x33, 0x04, 0x00, 0x01, 0x0a]);
        binary[6] = hash;
        binary
    }

    #[test]
    fn sha1_signature_is_refused_as_weak() {
        let error = uec_ring()
            .verify_detached(SUMS, &real_signature_claiming(2))
            .unwrap_err();
        assert!(
            matches!(&error, VerifyError::WeakHash { algorithm, fingerprint } if algorithm == "SHA1" && fingerprint == UEC_FINGERPRINT),
            "{error:?}"
        );
        assert_eq!(error.kind(), ErrorKind::Integrity);
    }

    #[test]
    fn md5_signature_is_refused_as_weak() {
        let error = uec_ring()
            .verify_detached(SUMS, &real_signature_claiming(1))
            .unwrap_err();
        assert!(
            matches!(&error, VerifyError::WeakHash { algorithm, .. } if algorithm == "MD5"),
            "{error:?}"
        );
    }

    #[test]
    fn sha256_signature_by_a_generated_key_verifies() {
        let key = generated_key(1, false);
        let ring = Keyring::from_armored_texts(&[&armored_public(&key)]).unwrap();
        let data = b"abc *file\n";
        let good = ring
            .verify_detached(data, &sign(&key.primary_key, HashAlgorithm::Sha256, data))
            .unwrap();
        assert_eq!(good.fingerprint, upper_hex(&key.primary_key.fingerprint()));
    }

    #[test]
    fn signature_by_a_signing_subkey_names_the_primary_key() {
        let key = generated_key(2, true);
        let ring = Keyring::from_armored_texts(&[&armored_public(&key)]).unwrap();
        let subkey = &key.secret_subkeys[0].key;
        let data = b"abc *file\n";
        let good = ring
            .verify_detached(data, &sign(subkey, HashAlgorithm::Sha512, data))
            .unwrap();
        assert_eq!(good.fingerprint, upper_hex(&key.primary_key.fingerprint()));
        assert_eq!(good.signing_key, upper_hex(&subkey.fingerprint()));
        assert_ne!(good.fingerprint, good.signing_key);
    }

    #[test]
    fn a_good_signature_among_strangers_is_enough() {
        let stranger = generated_key(3, false);
        let data = SUMS;
        let mut both = sign(&stranger.primary_key, HashAlgorithm::Sha256, data);
        both.extend_from_slice(SUMS_GPG);
        // Two armored blocks in one file: the stranger's first, Ubuntu's second.
        let good = uec_ring().verify_detached(data, &both);
        assert!(good.is_ok(), "{good:?}");
    }
}

//! OpenPGP keys made at test time, and detached signatures like `gpg --armor --detach-sign`.
//!
//! Two Ed25519 keys (fast to make even unoptimised): the mirror's signing key, which tests trust
//! through `--keyring`, and an attacker's key, which no test trusts. Each is generated once per
//! test process from a fixed seed, so its fingerprint is the same on every run.

use std::path::Path;
use std::sync::OnceLock;

use pgp::composed::{
    ArmorOptions, DetachedSignature, KeyType, SecretKeyParamsBuilder, SignedSecretKey,
};
use pgp::crypto::hash::HashAlgorithm;
use pgp::types::{KeyDetails, Password, Timestamp};
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;

/// Creation time of the test keys (2024-01-01): part of the fingerprint, so fixed, not "now".
const KEYS_CREATED: u32 = 1_704_067_200;

/// A secret key with its public half ready to hand to the CLI.
pub struct TestKey {
    secret: SignedSecretKey,
    public_armored: String,
    fingerprint: String,
}

/// The key the test mirror signs with; trust it with [`TestKey::write_public_key`] + `--keyring`.
pub fn signing_key() -> &'static TestKey {
    static KEY: OnceLock<TestKey> = OnceLock::new();
    KEY.get_or_init(|| {
        TestKey::generate(
            0x5eed_0001,
            "cloudimg test mirror <mirror@cloudimg.invalid>",
        )
    })
}

/// A key nobody trusts, for "signed by the wrong key" tests.
pub fn attacker_key() -> &'static TestKey {
    static KEY: OnceLock<TestKey> = OnceLock::new();
    KEY.get_or_init(|| TestKey::generate(0x5eed_0002, "Mallory <mallory@attacker.invalid>"))
}

impl TestKey {
    fn generate(seed: u64, user_id: &str) -> TestKey {
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let secret = SecretKeyParamsBuilder::default()
            .key_type(KeyType::Ed25519Legacy)
            .can_certify(true)
            .can_sign(true)
            .created_at(Timestamp::from_secs(KEYS_CREATED))
            .primary_user_id(user_id.into())
            .build()
            .expect("test key parameters are valid")
            .generate(&mut rng)
            .expect("Ed25519 key generation cannot fail");
        let public_armored = secret
            .to_public_key()
            .to_armored_string(ArmorOptions::default())
            .expect("a fresh public key serialises");
        let fingerprint = hex::encode_upper(secret.primary_key.fingerprint().as_bytes());
        TestKey {
            secret,
            public_armored,
            fingerprint,
        }
    }

    /// The public key, ASCII-armored (`gpg --armor --export`).
    pub fn public_key_armored(&self) -> &str {
        &self.public_armored
    }

    /// The primary key's fingerprint, upper-case hex, as `Keyring` reports it.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// Writes the armored public key to `path`, for `--keyring FILE`.
    pub fn write_public_key(&self, path: &Path) -> std::io::Result<()> {
        std::fs::write(path, &self.public_armored)
    }

    /// An armored detached signature of `data` (binary mode, SHA-512 as Ubuntu uses), ending
    /// with a newline as gpg's does; `gpgv` accepts it.
    pub fn sign(&self, data: &[u8]) -> String {
        // The seed only feeds v6 salts; v4 Ed25519 signatures are deterministic anyway.
        let rng = ChaCha20Rng::seed_from_u64(0);
        DetachedSignature::sign_binary_data(
            rng,
            &self.secret.primary_key,
            &Password::empty(),
            HashAlgorithm::Sha512,
            data,
        )
        .and_then(|signature| signature.to_armored_string(ArmorOptions::default()))
        .map(|armored| format!("{}\n", armored.trim_end()))
        .expect("signing with an unlocked Ed25519 key cannot fail")
    }
}

//! Integrity: content digests and OpenPGP signatures.

pub mod digest;
pub mod openpgp;

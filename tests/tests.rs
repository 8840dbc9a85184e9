//! The one integration-test binary (one link instead of one per file).

mod common;

/// OpenPGP verification of the generated mirror, and the mirror's own shape.
mod verify;

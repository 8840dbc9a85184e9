//! Helpers shared by the integration tests.

pub mod mirror;
pub mod pgp;

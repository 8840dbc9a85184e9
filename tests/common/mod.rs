//! Helpers shared by the integration tests.
#![allow(dead_code)]

/// The binary under test with a cache of its own.
pub mod bin;
pub mod debian_mirror;
/// Disk images built at test time.
pub mod glance;
pub mod images;
pub mod mirror;
pub mod pgp;
pub mod registry;
/// Temporary folders that a later test process removes if this one leaks them.
pub mod scratch;
pub mod server;
pub mod site;
/// A private CA made with openssl, and an HTTPS proxy presenting a certificate it signed.
pub mod tls;
/// A registry token server (the `WWW-Authenticate: Bearer` realm) issuing signed JWTs.
pub mod token;
pub mod tools;

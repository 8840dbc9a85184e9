//! Helpers shared by the integration tests.

/// Disk images built at test time.
pub mod images;

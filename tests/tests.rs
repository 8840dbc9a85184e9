//! The integration tests, one binary (one link) with a module per area.

mod common;

/// Downloads and documents against the loopback server: resume, retries, cache, locks.
mod fetch;

//! The one integration-test binary (one link instead of one per file), a module per area.

mod common;

/// The binary against a loopback mirror: discovery, verified fetches, exit codes, resume.
mod cli;
/// Downloads and documents against the loopback server: resume, retries, cache, locks.
mod fetch;
/// Conversions through the `cloudimg` binary, checked with qemu-img.
mod formats;
/// The cloud-init seed ISO, read back with isoinfo.
mod seed;
/// `cloudimg upload` and the Glance library against a real Glance API.
mod upload;
/// OpenPGP verification of the generated mirror, and the mirror's own shape.
mod verify;

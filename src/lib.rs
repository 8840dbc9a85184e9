//! cloudimg: discover, download, verify, convert and prepare cloud images.
//!
//! The library is layered: `index` discovers what a mirror offers, `fetch` moves bytes over
//! HTTP (async), `verify` checks digests and OpenPGP signatures, `formats` reads and writes disk
//! images (synchronous), and `pipeline` strings them together for the CLI;
//! `upload` sends prepared artifacts to OpenStack Glance (async); `oci` writes KubeVirt
//! containerDisks as OCI image layouts and pushes them to registries (async). Progress and logging
//! are injected (`io::progress::Reporter`, `tracing`): nothing here prints.

// Errors carry their facts (URLs, paths, digests) by value; they are the cold path, so their
// size does not matter.
#![allow(clippy::result_large_err)]

pub mod bake;
pub mod catalog;
pub mod container;
pub mod error;
pub mod fetch;
pub mod formats;
pub mod glance;
pub mod guestfs;
pub mod index;
pub mod io;
pub mod mirror;
pub mod oci;
pub mod pipeline;
pub mod runner;
pub mod sync;
pub mod upload;
pub mod verify;

#[cfg(test)]
mod test_tools;

pub use error::ErrorKind;

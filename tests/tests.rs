//! The one integration-test binary (one link instead of one per file).

mod common;
/// Conversions through the `cloudimg` binary, checked with qemu-img.
mod formats;

//! External tools the tests use as fixture makers and oracles (qemu-img, mkfs.ext4, gpg, …).
//!
//! One helper and one rule for unit and integration tests: this module includes the library's
//! `src/test_tools.rs` (`oracle`, `oracles`, `Tool`, `missing`, the qemu-img helpers), so the
//! names and the behaviour are the same in both crates. A missing tool skips the test loudly on
//! a developer machine; under CI (`.ci/run` sets `CLOUDIMG_REQUIRE_TOOLS=1`) it fails the test
//! instead, so nothing is skipped silently.

#[path = "../../src/test_tools.rs"]
mod shared;

pub use shared::*;

/// Whether `tool` can be run; reports it [`missing`] otherwise (a failure under CI).
pub fn available(tool: &str) -> bool {
    oracle(tool).is_some()
}

/// Skips the calling test (returns from it) unless every tool is available.
#[macro_export]
macro_rules! require_tools {
    ($($tool:expr),+ $(,)?) => {
        if !( $( $crate::common::tools::available($tool) )&&+ ) {
            return;
        }
    };
}

/// Reports a tool that is installed but cannot be used here (no loop devices in a container,
/// say): fails the test under CI, skips loudly otherwise. The caller returns after it.
pub fn unusable(tool: &str, why: impl std::fmt::Display) {
    if std::env::var_os(REQUIRE_TOOLS).is_some() {
        panic!("{tool} is required ({REQUIRE_TOOLS} is set) but unusable: {why}");
    }
    skipped(&format!("{tool} is unusable here ({why})"));
}

//! External tools the tests use as fixture makers and oracles (qemu-img, mkfs.ext4, gpg, …).
//!
//! A missing tool skips the test loudly on a developer machine; under CI (`.ci/run` sets
//! `CLOUDIMG_REQUIRE_TOOLS=1`) it fails the test instead, so nothing is skipped silently.

use std::process::Command;

/// Whether `tool` can be run. Panics when tools are required and it is missing.
pub fn available(tool: &str) -> bool {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !found {
        if std::env::var_os("CLOUDIMG_REQUIRE_TOOLS").is_some() {
            panic!("{tool} is required (CLOUDIMG_REQUIRE_TOOLS is set) but not installed");
        }
        eprintln!("SKIPPED: {tool} is not installed; install it (see .ci/run) to run this test");
    }
    found
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
    if std::env::var_os("CLOUDIMG_REQUIRE_TOOLS").is_some() {
        panic!("{tool} is required (CLOUDIMG_REQUIRE_TOOLS is set) but unusable: {why}");
    }
    eprintln!("SKIPPED: {tool} is unusable here ({why})");
}

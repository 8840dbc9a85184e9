//! For unit tests that use an outside tool as an oracle (isoinfo, bsdtar, libvmdk, …).

/// Reports a missing tool: fails the test under CI (`.ci/run` sets `CLOUDIMG_REQUIRE_TOOLS`),
/// skips loudly on a developer machine. The caller returns after it.
pub fn missing(tool: &str, why: impl std::fmt::Display) {
    if std::env::var_os("CLOUDIMG_REQUIRE_TOOLS").is_some() {
        panic!("{tool} is required (CLOUDIMG_REQUIRE_TOOLS is set) but unavailable: {why}");
    }
    eprintln!("SKIPPED: {tool} is unavailable ({why}); .ci/run lists what to install");
}

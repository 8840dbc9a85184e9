//! The binary under test, kept off the user's cache.

use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The variable the binary reads its cache folder from (`--cache-dir` wins over it).
pub const CACHE_DIR: &str = "CLOUDIMG_CACHE_DIR";

/// A command running the binary under test with a cache of its own: [`CACHE_DIR`] names a fresh
/// folder below `dir` (the test's temporary folder), so no run reads or writes the user's
/// `~/.cache/cloudimg` and no two runs share cached documents or locks by accident. A test whose
/// runs must share a cache says so: `--cache-dir DIR` on each run, or its own [`CACHE_DIR`].
pub fn cloudimg_in(dir: &Path) -> Command {
    static RUNS: AtomicUsize = AtomicUsize::new(0);
    let run = RUNS.fetch_add(1, Ordering::Relaxed);
    let mut command = Command::new(env!("CARGO_BIN_EXE_cloudimg"));
    command.env(CACHE_DIR, dir.join(format!("cache-{run}")));
    command
}

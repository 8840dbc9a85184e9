//! Temporary folders for fixtures that may outlive their test: the shared sites and images live
//! in statics, which are never dropped, so their `TempDir`s are never removed (each test run
//! left ~0.4 GB behind in /tmp). They are made below `<tmp>/cloudimg-tests/<pid>/`, and the
//! first one a test process makes removes the folders of processes that are gone.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Once;

use tempfile::TempDir;

/// The folder under the system's temporary folder that holds one folder per test process.
const ROOT: &str = "cloudimg-tests";

/// A new temporary folder below this process's folder; removed on drop like any `TempDir`, and
/// by a later test process if this one never drops it.
pub fn tempdir() -> TempDir {
    let root = std::env::temp_dir().join(ROOT);
    static SWEEP: Once = Once::new();
    SWEEP.call_once(|| sweep(&root));
    let mine = root.join(std::process::id().to_string());
    fs::create_dir_all(&mine).expect("a folder for this test process");
    TempDir::new_in(&mine).expect("a temporary folder")
}

/// Removes the folders of test processes that no longer run.
fn sweep(root: &Path) {
    let Ok(entries) = fs::read_dir(root) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        if !process_runs(pid) {
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}

fn process_runs(pid: u32) -> bool {
    PathBuf::from("/proc").join(pid.to_string()).exists()
}

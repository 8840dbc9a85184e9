//! Outside programs the unit tests use as fixture makers and oracles (qemu-img, qemu-io,
//! mkfs.ext4, isoinfo, bsdtar, libvmdk, …), with one rule for a missing one.
//!
//! A test asks for its tools first — `let Some([qemu]) = oracles(["qemu-img"]) else { return };`
//! — and then runs them through [`Tool`], which fails the test with the tool's output when a run
//! does not succeed. A missing tool fails the test under CI (`.ci/run` sets
//! `CLOUDIMG_REQUIRE_TOOLS`) and skips it loudly on a developer machine ([`missing`]). The
//! integration tests include this file (`tests/common/tools.rs`): the same names and rule there.

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The variable that turns a missing tool from a loud skip into a failure.
pub const REQUIRE_TOOLS: &str = "CLOUDIMG_REQUIRE_TOOLS";

/// Reports a missing tool: fails the test under CI (`.ci/run` sets `CLOUDIMG_REQUIRE_TOOLS`),
/// skips loudly on a developer machine. The caller returns after it.
pub fn missing(tool: &str, why: impl std::fmt::Display) {
    if std::env::var_os(REQUIRE_TOOLS).is_some() {
        panic!("{tool} is required ({REQUIRE_TOOLS} is set) but unavailable: {why}");
    }
    skipped(&format!(
        "{tool} is unavailable ({why}); .ci/run lists what to install"
    ));
}

/// Says on the terminal that a test is skipped, past the test harness's capture of `eprintln!`
/// (which shows a passing test's output only with `--nocapture`).
pub fn skipped(why: &str) {
    use std::io::Write;
    let thread = std::thread::current();
    let test = thread.name().unwrap_or("a test");
    let _ = writeln!(std::io::stderr(), "SKIPPED {test}: {why}");
}

/// An outside program found on `PATH` (or at an absolute path).
#[derive(Debug, Clone)]
pub struct Tool {
    path: PathBuf,
}

/// The tool named `program`, or `None` after reporting it [`missing`].
pub fn oracle(program: &str) -> Option<Tool> {
    match find(program) {
        Some(path) => Some(Tool { path }),
        None => {
            missing(program, "not found on PATH");
            None
        }
    }
}

/// Every tool of `programs`, or `None` after reporting each missing one.
pub fn oracles<const N: usize>(programs: [&str; N]) -> Option<[Tool; N]> {
    let found = programs.map(oracle);
    if found.iter().any(Option::is_none) {
        return None;
    }
    Some(found.map(|tool| tool.expect("checked above")))
}

/// The Python the oracle scripts run under (the distribution's, where its modules install).
pub const PYTHON: &str = "/usr/bin/python3";

/// [`PYTHON`] when it imports `module` (a libyal binding, say), else `None` after reporting
/// `package` (what provides the module) missing.
pub fn python_module(module: &str, package: &str) -> Option<Tool> {
    let python = oracle(PYTHON)?;
    if !python
        .output(["-c", &format!("import {module}")])
        .status
        .success()
    {
        missing(package, format!("{module} does not import in {PYTHON}"));
        return None;
    }
    Some(python)
}

/// The executable `program` names: itself when it holds a `/`, else the first on `PATH`.
fn find(program: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let executable = |path: &Path| {
        std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if program.contains('/') {
        let path = PathBuf::from(program);
        return executable(&path).then_some(path);
    }
    let dirs = std::env::var_os("PATH")?;
    std::env::split_paths(&dirs)
        .map(|dir| dir.join(program))
        .find(|path| executable(path))
}

impl Tool {
    /// A command for this tool, for runs that need more than arguments (a working folder).
    pub fn command(&self) -> Command {
        Command::new(&self.path)
    }

    /// Runs the tool and returns what it did, succeeded or not (for tests that expect a
    /// refusal). Only a failure to start it fails the test.
    pub fn output<I, S>(&self, args: I) -> Output
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let args: Vec<OsString> = args.into_iter().map(|a| a.as_ref().to_owned()).collect();
        self.command()
            .args(&args)
            .output()
            .unwrap_or_else(|e| panic!("cannot run {} {args:?}: {e}", self.path.display()))
    }

    /// Runs the tool; a run that does not succeed fails the test with its output.
    pub fn run<I, S>(&self, args: I) -> Output
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut command = self.command();
        command.args(args);
        run(&mut command)
    }

    /// [`Tool::run`] in the working folder `dir`.
    pub fn run_in<I, S>(&self, dir: &Path, args: I) -> Output
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut command = self.command();
        command.current_dir(dir).args(args);
        run(&mut command)
    }

    /// Runs the tool and parses its standard output as JSON.
    pub fn json<I, S>(&self, args: I) -> serde_json::Value
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let out = self.run(args);
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "{} printed no JSON ({e}): {}",
                self.path.display(),
                String::from_utf8_lossy(&out.stdout)
            )
        })
    }
}

/// Runs `command`, failing the test with its output if it does not start or does not succeed.
pub fn run(command: &mut Command) -> Output {
    let out = command
        .output()
        .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"));
    assert!(
        out.status.success(),
        "{command:?} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The names in the folder `dir`, sorted (none for a folder that does not exist): to prove what
/// a writer left behind, and that nothing partial is published.
pub fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// `qemu-img info --output=json` of `path`, read as `format` (probed when `None`).
pub fn qemu_img_info(qemu: &Tool, path: &Path, format: Option<&str>) -> serde_json::Value {
    let mut args: Vec<&OsStr> = vec!["info".as_ref(), "--output=json".as_ref()];
    if let Some(format) = format {
        args.extend([OsStr::new("-f"), OsStr::new(format)]);
    }
    args.push(path.as_os_str());
    qemu.json(args)
}

/// The guest size `qemu-img info` reports for `path` read as `format`.
pub fn qemu_virtual_size(qemu: &Tool, path: &Path, format: &str) -> u64 {
    let info = qemu_img_info(qemu, path, Some(format));
    info["virtual-size"]
        .as_u64()
        .unwrap_or_else(|| panic!("no virtual-size in {info}"))
}

/// `qemu-img check` of `path` read as `format`; fails the test unless the image is clean.
pub fn qemu_img_check(qemu: &Tool, path: &Path, format: &str) {
    qemu.run([
        "check".as_ref(),
        "-f".as_ref(),
        format.as_ref(),
        path.as_os_str(),
    ]);
}

/// `qemu-img compare` of a raw disk and an image read as `format`; fails the test unless their
/// guest bytes are the same.
pub fn qemu_img_compare(qemu: &Tool, raw: &Path, image: &Path, format: &str) {
    let args: [&OsStr; 7] = [
        "compare".as_ref(),
        "-f".as_ref(),
        "raw".as_ref(),
        "-F".as_ref(),
        format.as_ref(),
        raw.as_os_str(),
        image.as_os_str(),
    ];
    qemu.run(args);
}

//! Where outputs land: a temporary beside the final name, swept after a `kill -9` by the next
//! run that publishes into the folder; character devices and FIFOs refused and left as they
//! were; a symbolic link followed, as qemu-img does.

use std::os::unix::fs::FileTypeExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::common::images::run;
use crate::require_tools;

fn cloudimg(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cloudimg"))
        .args(args)
        .output()
        .expect("the cloudimg binary runs")
}

fn s(path: &Path) -> &str {
    path.to_str().expect("UTF-8 temporary path")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// A raw disk of `len` bytes: data, a 1 MiB hole, more data.
fn source_disk(path: &Path, len: usize) -> Vec<u8> {
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut bytes = Vec::with_capacity(len + 8);
    while bytes.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        bytes.extend_from_slice(&state.to_le_bytes());
    }
    bytes.truncate(len);
    bytes[1 << 20..2 << 20].fill(0);
    std::fs::write(path, &bytes).expect("write the source");
    bytes
}

fn temporaries(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .expect("list the folder")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".cloudimg-tmp"))
        .collect()
}

#[test]
fn a_temporary_left_by_kill_9_is_swept_by_the_next_run_in_the_folder() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let src = dir.path().join("src.raw");
    // Incompressible data compressed into qcow2: slow enough to be killed mid-way.
    source_disk(&src, 64 << 20);
    let out = dir.path().join("out.qcow2");
    let mut child = Command::new(env!("CARGO_BIN_EXE_cloudimg"))
        .args(["convert", "-c", "-O", "qcow2", s(&src), s(&out)])
        .stderr(Stdio::null())
        .spawn()
        .expect("start a conversion");
    let deadline = Instant::now() + Duration::from_secs(60);
    while temporaries(dir.path()).is_empty() && Instant::now() < deadline {
        assert!(
            child.try_wait().expect("poll").is_none(),
            "finished before it was killed"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    child.kill().expect("kill -9");
    child.wait().expect("reap");
    let left = temporaries(dir.path());
    assert_eq!(left.len(), 1, "{left:?}");
    assert!(!out.exists(), "a killed conversion published its output");
    // Change times count in seconds: the next run must start in a later one.
    std::thread::sleep(Duration::from_millis(1100));
    let other = dir.path().join("other.raw");
    let output = cloudimg(&["create", "-f", "raw", s(&other), "1M"]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(temporaries(dir.path()), Vec::<String>::new());
    assert!(other.exists() && !out.exists());
}

#[test]
fn a_running_conversion_keeps_its_temporary_while_another_publishes_beside_it() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let src = dir.path().join("src.raw");
    source_disk(&src, 32 << 20);
    let out = dir.path().join("slow.qcow2");
    let child = Command::new(env!("CARGO_BIN_EXE_cloudimg"))
        .args(["convert", "-c", "-O", "qcow2", s(&src), s(&out)])
        .stderr(Stdio::piped())
        .spawn()
        .expect("start a conversion");
    let deadline = Instant::now() + Duration::from_secs(60);
    while temporaries(dir.path()).is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(Duration::from_millis(1100));
    let other = dir.path().join("other.raw");
    let output = cloudimg(&["create", "-f", "raw", s(&other), "1M"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let status = child.wait_with_output().expect("the conversion ends");
    assert!(status.status.success(), "{}", stderr(&status));
    run(Command::new("qemu-img").args(["check", "-q", s(&out)]));
    assert_eq!(temporaries(dir.path()), Vec::<String>::new());
}

#[test]
fn fifos_and_character_devices_are_refused_and_kept() {
    require_tools!("mkfifo");
    let dir = tempfile::tempdir().expect("temporary directory");
    let raw = dir.path().join("src.raw");
    source_disk(&raw, 3 << 20);
    let fifo = dir.path().join("out.fifo");
    run(Command::new("mkfifo").arg(s(&fifo)));
    for target in [fifo.as_path(), Path::new("/dev/null")] {
        for args in [
            vec!["convert", "-O", "raw", s(&raw), s(target)],
            vec!["create", "-f", "qcow2", s(target), "1M"],
        ] {
            let output = cloudimg(&args);
            assert_eq!(
                output.status.code(),
                Some(2),
                "{args:?}: {}",
                stderr(&output)
            );
            assert!(
                stderr(&output).contains("never replaces"),
                "{}",
                stderr(&output)
            );
        }
    }
    let kind = std::fs::symlink_metadata(&fifo)
        .expect("the FIFO")
        .file_type();
    assert!(kind.is_fifo(), "the FIFO was replaced");
    let null = std::fs::symlink_metadata("/dev/null")
        .expect("/dev/null")
        .file_type();
    assert!(null.is_char_device(), "/dev/null was replaced");
    let mut names: Vec<_> = std::fs::read_dir(dir.path())
        .expect("list")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["out.fifo", "src.raw"]);
}

#[test]
fn a_symbolic_link_at_the_output_is_followed() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let raw = dir.path().join("src.raw");
    let expected = source_disk(&raw, 3 << 20);
    let real = dir.path().join("real.raw");
    std::fs::write(&real, b"old").expect("the old target");
    let link = dir.path().join("link.raw");
    std::os::unix::fs::symlink("real.raw", &link).expect("symlink");
    let output = cloudimg(&["convert", "-O", "raw", s(&raw), s(&link)]);
    assert!(output.status.success(), "{}", stderr(&output));
    let kind = std::fs::symlink_metadata(&link).expect("link").file_type();
    assert!(kind.is_symlink(), "the link was replaced");
    assert!(std::fs::read(&real).expect("the target") == expected);
    // A dangling link creates the file it names.
    let dangling = dir.path().join("dangling.raw");
    std::os::unix::fs::symlink("made.raw", &dangling).expect("symlink");
    let output = cloudimg(&["create", "-f", "raw", s(&dangling), "64K"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let made = std::fs::metadata(dir.path().join("made.raw")).expect("made");
    assert_eq!(made.len(), 64 << 10);
}

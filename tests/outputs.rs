//! Where outputs land: a temporary beside the final name, swept after a `kill -9` by the next
//! run that publishes into the folder; a block device (a loop device here) written in place,
//! refused when too small or mounted; character devices and FIFOs refused and left as they
//! were; a symbolic link followed, as qemu-img does.

use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
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

/// A loop device over a file, detached on drop.
struct Loop {
    device: PathBuf,
}

impl Loop {
    /// Attaches `backing`; `None` (after reporting) when loop devices cannot be used here.
    fn attach(backing: &Path) -> Option<Loop> {
        let output = Command::new("losetup")
            .args(["-f", "--show", s(backing)])
            .output();
        match output {
            Ok(output) if output.status.success() => {
                let device = String::from_utf8_lossy(&output.stdout).trim().to_owned();
                Some(Loop {
                    device: PathBuf::from(device),
                })
            }
            other => {
                crate::common::tools::unusable("losetup", format!("{other:?}"));
                None
            }
        }
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup")
            .args(["-d", s(&self.device)])
            .status();
    }
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
    require_tools!("qemu-img");
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

#[test]
fn convert_writes_a_block_device_in_place_with_zeroes_over_old_data() {
    require_tools!("losetup", "qemu-img");
    let dir = tempfile::tempdir().expect("temporary directory");
    let backing = dir.path().join("backing");
    // 8 MiB of 0xAA: old data that the image's hole must not leave behind.
    std::fs::write(&backing, vec![0xAAu8; 8 << 20]).expect("backing file");
    let Some(device) = Loop::attach(&backing) else {
        return;
    };
    let raw = dir.path().join("src.raw");
    let expected = source_disk(&raw, (5 << 20) + 4096);
    let qcow2 = dir.path().join("src.qcow2");
    run(Command::new("qemu-img").args(["convert", "-f", "raw", "-O", "qcow2", s(&raw), s(&qcow2)]));

    let output = cloudimg(&["convert", "-O", "raw", s(&qcow2), s(&device.device)]);
    assert!(output.status.success(), "{}", stderr(&output));
    let metadata = std::fs::metadata(&device.device).expect("the device");
    assert!(
        metadata.file_type().is_block_device(),
        "the device was replaced"
    );
    let written = std::fs::read(&backing).expect("read the backing file");
    assert!(
        written[..expected.len()] == expected[..],
        "the device differs from the image"
    );
    assert!(
        written[expected.len()..].iter().all(|&b| b == 0xAA),
        "bytes past the image were touched"
    );
    // No temporary beside the device.
    let leftovers: Vec<_> = std::fs::read_dir("/dev")
        .expect("/dev")
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".cloudimg-tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    // The device reads back whole as an input (its size from the kernel, not its metadata).
    let output = cloudimg(&["info", "--output=json", s(&device.device)]);
    assert!(output.status.success(), "{}", stderr(&output));
    let info: serde_json::Value = serde_json::from_slice(&output.stdout).expect("info JSON");
    assert_eq!(info["virtual-size"], 8u64 << 20, "{info}");
    let copy = dir.path().join("copy.qcow2");
    let output = cloudimg(&["convert", "-O", "qcow2", s(&device.device), s(&copy)]);
    assert!(output.status.success(), "{}", stderr(&output));
    run(Command::new("qemu-img").args([
        "compare",
        "-q",
        "-f",
        "raw",
        "-F",
        "qcow2",
        s(&backing),
        s(&copy),
    ]));

    // A 16 MiB image does not fit the 8 MiB device: refused, nothing written.
    std::fs::write(&backing, vec![0xAAu8; 8 << 20]).expect("reset the backing file");
    let big = dir.path().join("big.qcow2");
    run(Command::new("qemu-img").args(["create", "-q", "-f", "qcow2", s(&big), "16M"]));
    let output = cloudimg(&["convert", "-O", "raw", s(&big), s(&device.device)]);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("fewer than"),
        "{}",
        stderr(&output)
    );
    let untouched = std::fs::read(&backing).expect("read the backing file");
    assert!(
        untouched.iter().all(|&b| b == 0xAA),
        "a refused write wrote"
    );

    // Other formats are not written onto devices.
    let output = cloudimg(&["convert", "-O", "qcow2", s(&raw), s(&device.device)]);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
}

#[test]
fn a_mounted_block_device_is_refused() {
    require_tools!("losetup", "mkfs.ext4", "mount", "umount");
    let dir = tempfile::tempdir().expect("temporary directory");
    let backing = dir.path().join("backing");
    std::fs::write(&backing, vec![0u8; 8 << 20]).expect("backing file");
    let Some(device) = Loop::attach(&backing) else {
        return;
    };
    run(Command::new("mkfs.ext4").args(["-q", s(&device.device)]));
    let point = dir.path().join("mnt");
    std::fs::create_dir(&point).expect("mount point");
    run(Command::new("mount").args([s(&device.device), s(&point)]));
    let raw = dir.path().join("src.raw");
    let image = source_disk(&raw, 3 << 20);
    let output = cloudimg(&["convert", "-O", "raw", s(&raw), s(&device.device)]);
    run(Command::new("umount").arg(s(&point)));
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(stderr(&output).contains("mounted"), "{}", stderr(&output));
    let device_bytes = std::fs::read(&backing).expect("reread");
    assert!(
        device_bytes[..image.len()] != image[..],
        "a mounted device was written"
    );
}

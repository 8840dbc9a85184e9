//! Oracle tests: real filesystems and partition tables made by mkfs.ext4/mkfs.ext2 and sfdisk,
//! read by this room and compared with their source files and with `debugfs`; and the real
//! bootable guest of the bake tests (`CLOUDIMG_TEST_GUEST`), whose kernel and initrd must match
//! what debugfs dumps from it.

use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

use super::boot;
use crate::formats;
use crate::test_tools::missing;

/// Runs `program args`, or reports it missing (`None`).
fn run(program: &str, args: &[&str]) -> Option<std::process::Output> {
    match Command::new(program).args(args).output() {
        Ok(output) => {
            assert!(
                output.status.success(),
                "{program} {args:?}: {}",
                String::from_utf8_lossy(&output.stderr)
            );
            Some(output)
        }
        Err(e) => {
            missing(program, e);
            None
        }
    }
}

fn s(path: &Path) -> &str {
    path.to_str().unwrap()
}

fn sha256(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// The bootable guest of the bake tests, when `.ci/run` (or the developer) names it.
fn guest() -> Option<PathBuf> {
    match std::env::var_os("CLOUDIMG_TEST_GUEST").map(PathBuf::from) {
        Some(path) if path.is_file() => Some(path),
        other => {
            missing(
                "the bootable guest",
                format!("CLOUDIMG_TEST_GUEST is {other:?}; .ci/run builds and sets it"),
            );
            None
        }
    }
}

#[test]
fn the_test_guest_gives_the_kernel_and_initrd_its_grub_boots() {
    let Some(guest) = guest() else { return };
    let mut reader = formats::open(&guest, None).unwrap();
    let found = boot::find(&mut *reader).unwrap();
    // make-bootable-guest.sh: GPT, p1 the ext4 root with /boot, GRUB's cfg in /boot/grub.
    assert_eq!(found.kernel.location.partition, Some(1));
    assert!(found.kernel.path.starts_with("/boot/vmlinuz-"), "{found:?}");
    assert_eq!(found.initrds.len(), 1, "{found:?}");
    assert!(found.initrds[0].path.starts_with("/boot/initrd.img-"));
    assert!(
        found.cmdline.starts_with(&format!(
            "BOOT_IMAGE={} root=LABEL=cloudimg-rootfs ro",
            found.kernel.path
        )),
        "{}",
        found.cmdline
    );
    assert!(
        found.cmdline.ends_with("console=ttyS0,115200n8"),
        "{}",
        found.cmdline
    );
    let (mut kernel, mut initrd) = (Vec::new(), Vec::new());
    let written = boot::extract(&mut *reader, &found, &mut kernel, &mut initrd).unwrap();
    assert_eq!(written, (kernel.len() as u64, initrd.len() as u64));
    assert_eq!(written, (found.kernel.size, found.initrd_len()));

    // The oracle: qemu-img cuts the root partition out as raw, debugfs dumps the files.
    let dir = tempfile::tempdir().unwrap();
    let part = dir.path().join("p1.raw");
    let spec = format!(
        r#"json:{{"driver":"raw","offset":{},"size":{},"file":{{"driver":"qcow2","file":{{"driver":"file","filename":"{}"}}}}}}"#,
        found.kernel.location.start,
        found.kernel.location.len,
        s(&guest)
    );
    if run("qemu-img", &["convert", "-O", "raw", &spec, s(&part)]).is_none() {
        return;
    }
    for (path, ours) in [
        (&found.kernel.path, &kernel),
        (&found.initrds[0].path, &initrd),
    ] {
        let out = dir.path().join("dumped");
        let request = format!("dump {path} {}", s(&out));
        if run("debugfs", &["-R", &request, s(&part)]).is_none() {
            return;
        }
        let theirs = std::fs::read(&out).unwrap();
        assert_eq!(theirs.len(), ours.len(), "{path}");
        assert_eq!(sha256(&theirs), sha256(ours), "{path}");
    }
}

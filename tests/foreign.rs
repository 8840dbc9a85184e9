//! Formats qemu-img knows and cloudimg does not read are refused by name, never read as raw.
//!
//! The images are made by qemu-img itself (qed, parallels, luks) and by `cloudimg seed`
//! (an ISO 9660 volume, which the seed tests check with isoinfo); bochs, cloop and dmg have
//! byte-literal probe tests beside the probe (src/formats/foreign.rs).

use std::path::Path;
use std::process::{Command, Output};

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

/// Names in `dir`, sorted.
fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("list the folder")
        .map(|entry| {
            entry
                .expect("entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    names.sort();
    names
}

/// Every image command refuses `image` with exit status 2 and one line naming `format`, and
/// leaves the folder (and the image) as it was.
fn assert_refused(image: &Path, format: &str) {
    let dir = image.parent().expect("a folder");
    let before = listing(dir);
    let bytes = std::fs::read(image).expect("read the image");
    let out = dir.join("out.qcow2");
    let commands: [Vec<&str>; 5] = [
        vec!["info", s(image)],
        vec!["check", s(image)],
        vec!["convert", "-O", "qcow2", s(image), s(&out)],
        vec!["convert", "-O", "raw", s(image), s(&out)],
        vec!["resize", s(image), "+1M"],
    ];
    for args in commands {
        let output = cloudimg(&args);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "{args:?}: {stderr}");
        assert!(
            stderr.contains(&format!("(format {format})")),
            "{args:?} does not name {format}: {stderr}"
        );
        assert_eq!(listing(dir), before, "{args:?} wrote something");
    }
    assert_eq!(
        std::fs::read(image).expect("reread"),
        bytes,
        "the image changed"
    );
}

#[test]
fn qemu_made_foreign_images_are_refused_by_name() {
    require_tools!("qemu-img");
    let cases: [(&str, &[&str]); 3] = [
        ("qed", &[]),
        ("parallels", &[]),
        (
            "luks",
            &[
                "--object",
                "secret,id=sec0,data=not-a-real-secret",
                "-o",
                "key-secret=sec0,iter-time=10",
            ],
        ),
    ];
    for (format, extra) in cases {
        let dir = tempfile::tempdir().expect("temporary directory");
        let image = dir.path().join(format!("disk.{format}"));
        run(Command::new("qemu-img")
            .args(["create", "-q", "-f", format])
            .args(extra)
            .args([s(&image), "4M"]));
        assert_refused(&image, format);
    }
}

#[test]
fn iso_is_detected_as_iso_and_not_converted() {
    let dir = tempfile::tempdir().expect("temporary directory");
    std::fs::write(dir.path().join("user-data"), "#cloud-config\n").expect("user-data");
    let made = Command::new(env!("CARGO_BIN_EXE_cloudimg"))
        .current_dir(dir.path())
        .args(["seed", "--user-data", "user-data", "-o", "seed.iso"])
        .output()
        .expect("cloudimg seed runs");
    assert!(made.status.success(), "{made:?}");
    let work = tempfile::tempdir().expect("temporary directory");
    let iso = work.path().join("seed.iso");
    std::fs::copy(dir.path().join("seed.iso"), &iso).expect("copy the ISO");
    assert_refused(&iso, "iso");
}

#[test]
fn forcing_raw_reads_a_foreign_image_as_bytes() {
    require_tools!("qemu-img");
    let dir = tempfile::tempdir().expect("temporary directory");
    let image = dir.path().join("disk.qed");
    run(Command::new("qemu-img").args(["create", "-q", "-f", "qed", s(&image), "4M"]));
    let out = dir.path().join("copy.raw");
    let output = cloudimg(&["convert", "-f", "raw", "-O", "raw", s(&image), s(&out)]);
    assert!(output.status.success(), "{output:?}");
    assert_eq!(
        std::fs::read(&out).expect("the copy"),
        std::fs::read(&image).expect("the image")
    );
    let info = cloudimg(&["info", "-f", "raw", s(&image)]);
    assert!(info.status.success(), "{info:?}");
}

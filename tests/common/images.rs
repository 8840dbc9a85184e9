//! Realistic disk images built at test time, once per test process.
//!
//! The base is a raw disk shaped like a small cloud image: a GPT, one ext4 partition filled with
//! real files (documentation and a block of incompressible bytes), free space inside the
//! filesystem, an unpartitioned zero tail, and a size that is not a multiple of 64 KiB. From it
//! qemu-img makes every format and subformat, and tar makes the archives Ubuntu and Debian ship.
//! Needs qemu-img, sfdisk, mkfs.ext4, tar and xz.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

pub use super::tools::run;
use super::tools::{oracle, oracles};

/// 48 MiB + 12 KiB: a multiple of 512 (qemu rounds other sizes) but not of any cluster size.
pub const RAW_SIZE: u64 = (48 << 20) + (12 << 10);
/// Where the ext4 partition starts (sector 2048, as Ubuntu's).
const PARTITION_START: u64 = 1 << 20;
/// Size of the ext4 partition; the rest of the disk after it stays zero.
const PARTITION_MIB: u64 = 36;
/// How much of /usr/share/doc goes into the filesystem.
const DOC_BYTES: u64 = 10 << 20;
/// Incompressible content, so compressed formats hold both kinds of clusters.
const RANDOM_BYTES: usize = 3 << 20;

/// One source image.
pub struct Input {
    /// Short name used in test names and output file names.
    pub name: &'static str,
    pub path: PathBuf,
}

/// Every source image; all hold the same guest bytes as `raw`.
pub struct Images {
    pub raw: PathBuf,
    pub inputs: Vec<Input>,
    _dir: tempfile::TempDir,
}

impl Images {
    /// The input named `name`; panics with the list of names otherwise (a typo in a test).
    pub fn input(&self, name: &str) -> &Path {
        match self.inputs.iter().find(|input| input.name == name) {
            Some(input) => &input.path,
            None => panic!(
                "no input {name}; have {:?}",
                self.inputs.iter().map(|i| i.name).collect::<Vec<_>>()
            ),
        }
    }
}

/// The tools [`images`] runs.
pub const TOOLS: [&str; 5] = ["qemu-img", "sfdisk", "mkfs.ext4", "tar", "xz"];

/// Whether [`images`] can be built: a test that uses them returns at once when this is false
/// (each missing tool is reported: a loud skip, or a failure under CI).
pub fn have_images() -> bool {
    oracles(TOOLS).is_some()
}

/// Builds the images on first use; later callers (other test threads) wait and share them.
/// Callers check [`have_images`] first.
pub fn images() -> &'static Images {
    static IMAGES: OnceLock<Images> = OnceLock::new();
    IMAGES.get_or_init(build)
}

/// qemu-img, the oracle: what it did for `args`, succeeded or not. Callers check for it first
/// (`require_tools!("qemu-img")` or [`have_images`]).
pub fn qemu_img(args: &[&str]) -> std::process::Output {
    oracle("qemu-img")
        .expect("the test checked for qemu-img")
        .output(args)
}

fn build() -> Images {
    let dir = super::scratch::tempdir();
    let raw = dir.path().join("base.raw");
    stage_and_make_raw(dir.path(), &raw);
    let mut inputs = vec![Input {
        name: "raw",
        path: raw.clone(),
    }];
    let s = |p: &Path| p.to_str().expect("UTF-8 temporary path").to_owned();
    let qemu_made: &[(&str, &str, &[&str])] = &[
        ("qcow2", "qcow2", &["-O", "qcow2"]),
        ("qcow2-zlib", "qcow2", &["-O", "qcow2", "-c"]),
        (
            "qcow2-zstd",
            "qcow2",
            &["-O", "qcow2", "-c", "-o", "compression_type=zstd"],
        ),
        ("qcow2-v2", "qcow2", &["-O", "qcow2", "-o", "compat=0.10"]),
        (
            "vmdk-sparse",
            "vmdk",
            &["-O", "vmdk", "-o", "subformat=monolithicSparse"],
        ),
        (
            "vmdk-stream",
            "vmdk",
            &["-O", "vmdk", "-o", "subformat=streamOptimized"],
        ),
        (
            "vhd-fixed",
            "vhd",
            &["-O", "vpc", "-o", "subformat=fixed,force_size=on"],
        ),
        (
            "vhd-dynamic",
            "vhd",
            &["-O", "vpc", "-o", "subformat=dynamic,force_size=on"],
        ),
        (
            "vhdx-dynamic",
            "vhdx",
            &["-O", "vhdx", "-o", "subformat=dynamic,block_size=1M"],
        ),
        (
            "vhdx-fixed",
            "vhdx",
            &["-O", "vhdx", "-o", "subformat=fixed"],
        ),
        ("vdi-dynamic", "vdi", &["-O", "vdi"]),
        ("vdi-static", "vdi", &["-O", "vdi", "-o", "static=on"]),
    ];
    for &(name, extension, args) in qemu_made {
        let path = dir.path().join(format!("{name}.{extension}"));
        run(Command::new("qemu-img")
            .args(["convert", "-q", "-f", "raw"])
            .args(args)
            .args([s(&raw), s(&path)]));
        inputs.push(Input { name, path });
    }
    let archives = dir.path().join("archives");
    fs::create_dir(&archives).expect("archives dir");
    let link = |from: &Path, name: &str| {
        fs::hard_link(from, archives.join(name)).expect("hard link into archives/");
    };
    // Ubuntu's .tar.gz: a raw disk named after the release.
    link(&raw, "noble-server-cloudimg-amd64.img");
    let tar_gz = dir.path().join("raw.tar.gz");
    run(Command::new("tar").current_dir(&archives).args([
        "-Sczf",
        &s(&tar_gz),
        "noble-server-cloudimg-amd64.img",
    ]));
    inputs.push(Input {
        name: "raw-tar-gz",
        path: tar_gz,
    });
    // Debian's .tar.xz: disk.raw (xz -0 keeps the build quick).
    link(&raw, "disk.raw");
    let tar_xz = dir.path().join("raw.tar.xz");
    run(Command::new("tar")
        .current_dir(&archives)
        .env("XZ_OPT", "-0")
        .args(["-ScJf", &s(&tar_xz), "disk.raw"]));
    inputs.push(Input {
        name: "raw-tar-xz",
        path: tar_xz,
    });
    // Ubuntu's -azure.vhd.tar.gz: a fixed VHD.
    link(
        inputs_path(&inputs, "vhd-fixed"),
        "livecd.ubuntu-cpc.azure.vhd",
    );
    let vhd_tar_gz = dir.path().join("azure.vhd.tar.gz");
    run(Command::new("tar").current_dir(&archives).args([
        "-Sczf",
        &s(&vhd_tar_gz),
        "livecd.ubuntu-cpc.azure.vhd",
    ]));
    inputs.push(Input {
        name: "vhd-tar-gz",
        path: vhd_tar_gz,
    });
    // An OVA: descriptor first, then manifest, then the streamOptimized disk.
    link(inputs_path(&inputs, "vmdk-stream"), "disk1.vmdk");
    fs::write(archives.join("appliance.ovf"), OVF).expect("write ovf");
    fs::write(
        archives.join("appliance.mf"),
        "SHA256(appliance.ovf)= 0\nSHA256(disk1.vmdk)= 0\n",
    )
    .expect("write mf");
    let ova = dir.path().join("appliance.ova");
    run(Command::new("tar").current_dir(&archives).args([
        "--format=ustar",
        "-cf",
        &s(&ova),
        "appliance.ovf",
        "appliance.mf",
        "disk1.vmdk",
    ]));
    inputs.push(Input {
        name: "ova",
        path: ova,
    });
    Images {
        raw,
        inputs,
        _dir: dir,
    }
}

fn inputs_path<'a>(inputs: &'a [Input], name: &str) -> &'a Path {
    &inputs
        .iter()
        .find(|input| input.name == name)
        .expect("built earlier")
        .path
}

/// A minimal OVF envelope; only its presence (and being skipped) matters here.
const OVF: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/1">
  <References><File ovf:href="disk1.vmdk" ovf:id="file1"/></References>
</Envelope>
"#;

/// Fills a staging folder with real files and makes the GPT + ext4 raw disk from it.
fn stage_and_make_raw(dir: &Path, raw: &Path) {
    let stage = dir.join("stage");
    let docs = stage.join("usr/share/doc");
    fs::create_dir_all(&docs).expect("stage dir");
    let mut copied = 0;
    let mut entries: Vec<_> = fs::read_dir("/usr/share/doc")
        .map(|dir| dir.filter_map(Result::ok).map(|e| e.path()).collect())
        .unwrap_or_default();
    entries.sort();
    for entry in entries {
        if copied + (1 << 20) > DOC_BYTES {
            break;
        }
        // Whole folders only, and none that would overflow the filesystem.
        let size = du(&entry);
        if copied + size > DOC_BYTES {
            continue;
        }
        // -L: package doc folders are often symlinks to other packages'.
        let status = Command::new("cp")
            .args(["-rL", "--"])
            .arg(&entry)
            .arg(&docs)
            .status();
        if status.is_ok_and(|s| s.success()) {
            copied += size;
        }
    }
    // Deterministic incompressible bytes (xorshift), split into two files.
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut random = Vec::with_capacity(RANDOM_BYTES);
    while random.len() < RANDOM_BYTES {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        random.extend_from_slice(&state.to_le_bytes());
    }
    let (a, b) = random.split_at(RANDOM_BYTES / 3);
    fs::write(stage.join("random-a.bin"), a).expect("write random");
    fs::write(stage.join("random-b.bin"), b).expect("write random");

    let file = fs::File::create(raw).expect("create raw");
    file.set_len(RAW_SIZE).expect("size raw");
    drop(file);
    let start_sector = PARTITION_START / 512;
    let sectors = (PARTITION_MIB << 20) / 512;
    let script = format!(
        "label: gpt\nstart={start_sector}, size={sectors}, \
         type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, name=cloudimg-rootfs\n"
    );
    let mut sfdisk = Command::new("sfdisk")
        .args(["-q", "--no-reread", "--no-tell-kernel"])
        .arg(raw)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("sfdisk (package fdisk) must be installed");
    {
        use std::io::Write;
        let mut stdin = sfdisk.stdin.take().expect("piped stdin");
        stdin.write_all(script.as_bytes()).expect("sfdisk script");
    }
    assert!(
        sfdisk.wait().expect("sfdisk ran").success(),
        "sfdisk failed"
    );
    run(Command::new("mkfs.ext4")
        .args(["-q", "-F", "-L", "cloudimg-rootfs"])
        .arg("-E")
        .arg(format!("offset={PARTITION_START}"))
        .arg("-d")
        .arg(&stage)
        .arg(raw)
        .arg(format!("{PARTITION_MIB}M")));
    assert_eq!(
        fs::metadata(raw).expect("raw exists").len(),
        RAW_SIZE,
        "mkfs changed the disk size"
    );
}

/// Bytes used by a file tree, following symlinks as `cp -L` does.
fn du(path: &Path) -> u64 {
    let output = Command::new("du").args(["-sbL"]).arg(path).output();
    output
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .split_whitespace()
                .next()
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or(0)
}

//! Every reader × every writer through the `cloudimg` binary, with qemu-img as the oracle;
//! the other image commands; hostile inputs.
//!
//! Each source (qemu-made images of every format and subformat, the raw base, archives) is
//! converted to every output kind; each output must `qemu-img compare` identical to the raw
//! base, pass `qemu-img check` where qemu can check the format, and show the expected format
//! and options in `qemu-img info`. One test per source, each reporting all its failing outputs.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

use crate::common::images::{have_images, images, qemu_img, RAW_SIZE};
use crate::common::tools::{oracles, qemu_img_check, qemu_img_info};

/// Runs the binary under test.
fn cloudimg(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cloudimg"))
        .args(args)
        .output()
        .expect("the cloudimg binary runs")
}

fn s(path: &Path) -> &str {
    path.to_str().expect("UTF-8 temporary path")
}

/// One kind of output.
struct OutputKind {
    name: &'static str,
    /// `-O` value.
    format: &'static str,
    /// `-o` value, if any.
    options: Option<&'static str>,
    /// `-c`.
    compress: bool,
    /// qemu-img's `-f` for the output.
    qemu_format: &'static str,
    /// Whether `qemu-img check` supports the format (raw and vpc answer "not supported").
    check: bool,
    /// JSON pointers into `qemu-img info --output=json` and the values they must have.
    expect: &'static [(&'static str, &'static str)],
}

const OUTPUTS: &[OutputKind] = &[
    OutputKind {
        name: "raw",
        format: "raw",
        options: None,
        compress: false,
        qemu_format: "raw",
        check: false,
        expect: &[("/format", "raw")],
    },
    OutputKind {
        name: "qcow2",
        format: "qcow2",
        options: None,
        compress: false,
        qemu_format: "qcow2",
        check: true,
        expect: &[
            ("/format", "qcow2"),
            ("/format-specific/data/compat", "1.1"),
        ],
    },
    OutputKind {
        name: "qcow2-metadata",
        format: "qcow2",
        options: Some("preallocation=metadata"),
        compress: false,
        qemu_format: "qcow2",
        check: true,
        expect: &[("/format", "qcow2")],
    },
    OutputKind {
        name: "qcow2-zlib",
        format: "qcow2",
        options: None,
        compress: true,
        qemu_format: "qcow2",
        check: true,
        expect: &[
            ("/format", "qcow2"),
            ("/format-specific/data/compression-type", "zlib"),
        ],
    },
    OutputKind {
        name: "qcow2-zstd",
        format: "qcow2",
        options: Some("compression_type=zstd"),
        compress: true,
        qemu_format: "qcow2",
        check: true,
        expect: &[
            ("/format", "qcow2"),
            ("/format-specific/data/compression-type", "zstd"),
        ],
    },
    OutputKind {
        name: "qcow2-v2",
        format: "qcow2",
        options: Some("compat=0.10"),
        compress: false,
        qemu_format: "qcow2",
        check: true,
        expect: &[
            ("/format", "qcow2"),
            ("/format-specific/data/compat", "0.10"),
        ],
    },
    OutputKind {
        name: "vmdk-sparse",
        format: "vmdk",
        options: Some("subformat=monolithicSparse"),
        compress: false,
        qemu_format: "vmdk",
        check: true,
        expect: &[
            ("/format", "vmdk"),
            ("/format-specific/data/create-type", "monolithicSparse"),
        ],
    },
    OutputKind {
        name: "vmdk-stream",
        format: "vmdk",
        options: Some("subformat=streamOptimized"),
        compress: false,
        qemu_format: "vmdk",
        check: true,
        expect: &[
            ("/format", "vmdk"),
            ("/format-specific/data/create-type", "streamOptimized"),
        ],
    },
    OutputKind {
        name: "vmdk-stream-qemu",
        format: "vmdk",
        options: Some("subformat=streamOptimized,stream_layout=qemu"),
        compress: false,
        qemu_format: "vmdk",
        check: true,
        expect: &[
            ("/format", "vmdk"),
            ("/format-specific/data/create-type", "streamOptimized"),
        ],
    },
    OutputKind {
        name: "vmdk-flat",
        format: "vmdk",
        options: Some("subformat=monolithicFlat"),
        compress: false,
        qemu_format: "vmdk",
        check: false,
        expect: &[
            ("/format", "vmdk"),
            ("/format-specific/data/create-type", "monolithicFlat"),
        ],
    },
    OutputKind {
        name: "vhd-fixed",
        format: "vpc",
        options: Some("subformat=fixed,force_size=on"),
        compress: false,
        qemu_format: "vpc",
        check: false,
        expect: &[("/format", "vpc")],
    },
    OutputKind {
        name: "vhd-dynamic",
        format: "vpc",
        options: Some("subformat=dynamic,force_size=on"),
        compress: false,
        qemu_format: "vpc",
        check: false,
        expect: &[("/format", "vpc")],
    },
    OutputKind {
        name: "vhd-azure",
        format: "vpc",
        options: Some("azure=on"),
        compress: false,
        qemu_format: "vpc",
        check: false,
        // Azure wants a whole number of MiB: 48 MiB + 12 KiB rounds up to 49 MiB.
        expect: &[("/format", "vpc"), ("/virtual-size", "51380224")],
    },
    OutputKind {
        name: "vhdx-dynamic",
        format: "vhdx",
        options: None,
        compress: false,
        qemu_format: "vhdx",
        check: true,
        expect: &[("/format", "vhdx"), ("/cluster-size", "8388608")],
    },
    OutputKind {
        name: "vhdx-fixed",
        format: "vhdx",
        options: Some("subformat=fixed,block_state_zero=off,block_size=1M"),
        compress: false,
        qemu_format: "vhdx",
        check: true,
        expect: &[("/format", "vhdx"), ("/cluster-size", "1048576")],
    },
    OutputKind {
        name: "vdi-dynamic",
        format: "vdi",
        options: None,
        compress: false,
        qemu_format: "vdi",
        check: true,
        expect: &[("/format", "vdi")],
    },
    OutputKind {
        name: "vdi-static",
        format: "vdi",
        options: Some("static=on"),
        compress: false,
        qemu_format: "vdi",
        check: true,
        expect: &[("/format", "vdi")],
    },
];

/// Converts `input` to one output kind and checks it; returns what went wrong.
fn convert_and_check(
    input: &str,
    source: &Path,
    output: &OutputKind,
    dir: &Path,
) -> Result<(), String> {
    let dst = dir.join(format!("{input}-to-{}.img", output.name));
    let mut args = vec!["convert", "-O", output.format];
    if let Some(options) = output.options {
        args.extend(["-o", options]);
    }
    if output.compress {
        args.push("-c");
    }
    args.extend([s(source), s(&dst)]);
    let result = cloudimg(&args);
    let stderr = String::from_utf8_lossy(&result.stderr);
    if !result.status.success() || stderr.contains("panicked") {
        return Err(format!("cloudimg {args:?}: {}: {stderr}", result.status));
    }
    let compare = qemu_img(&[
        "compare",
        "-f",
        "raw",
        "-F",
        output.qemu_format,
        s(&images().raw),
        s(&dst),
    ]);
    if !compare.status.success() {
        return Err(format!(
            "qemu-img compare: {}{}",
            String::from_utf8_lossy(&compare.stdout),
            String::from_utf8_lossy(&compare.stderr)
        ));
    }
    if output.check {
        let check = qemu_img(&["check", "-f", output.qemu_format, s(&dst)]);
        if !check.status.success() {
            return Err(format!(
                "qemu-img check: {}{}",
                String::from_utf8_lossy(&check.stdout),
                String::from_utf8_lossy(&check.stderr)
            ));
        }
    }
    let info = qemu_img(&["info", "--output=json", "-f", output.qemu_format, s(&dst)]);
    let info: Value = serde_json::from_slice(&info.stdout)
        .map_err(|error| format!("qemu-img info is not JSON: {error}"))?;
    for &(pointer, expected) in output.expect {
        let actual = match info.pointer(pointer) {
            Some(Value::String(text)) => text.clone(),
            Some(other) => other.to_string(),
            None => "(absent)".to_owned(),
        };
        if actual != expected {
            return Err(format!(
                "qemu-img info {pointer} = {actual}, expected {expected}"
            ));
        }
    }
    if info["virtual-size"]
        .as_u64()
        .is_none_or(|size| size < RAW_SIZE)
    {
        return Err(format!(
            "virtual size {} < {RAW_SIZE}",
            info["virtual-size"]
        ));
    }
    Ok(())
}

/// Converts one source to every output; fails with the list of failing outputs.
fn matrix(input: &str) {
    if !have_images() {
        return;
    }
    let source = images().input(input).to_owned();
    let dir = tempfile::tempdir().expect("temporary directory");
    let failures: Vec<String> = OUTPUTS
        .iter()
        .filter_map(|output| {
            let result = convert_and_check(input, &source, output, dir.path());
            // Keep disk use low: outputs are ~48 MiB each.
            for entry in std::fs::read_dir(dir.path())
                .into_iter()
                .flatten()
                .flatten()
            {
                let _ = std::fs::remove_file(entry.path());
            }
            result
                .err()
                .map(|error| format!("  {input} -> {}: {error}", output.name))
        })
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} conversions from {input} failed:\n{}",
        failures.len(),
        OUTPUTS.len(),
        failures.join("\n")
    );
}

macro_rules! matrix_tests {
    ($($test:ident => $input:literal,)*) => {
        $(
            #[test]
            fn $test() {
                matrix($input);
            }
        )*
    };
}

matrix_tests! {
    matrix_from_raw => "raw",
    matrix_from_qcow2 => "qcow2",
    matrix_from_qcow2_zlib => "qcow2-zlib",
    matrix_from_qcow2_zstd => "qcow2-zstd",
    matrix_from_qcow2_v2 => "qcow2-v2",
    matrix_from_vmdk_sparse => "vmdk-sparse",
    matrix_from_vmdk_stream => "vmdk-stream",
    matrix_from_vhd_fixed => "vhd-fixed",
    matrix_from_vhd_dynamic => "vhd-dynamic",
    matrix_from_vhdx_dynamic => "vhdx-dynamic",
    matrix_from_vhdx_fixed => "vhdx-fixed",
    matrix_from_vdi_dynamic => "vdi-dynamic",
    matrix_from_vdi_static => "vdi-static",
    matrix_from_raw_tar_gz => "raw-tar-gz",
    matrix_from_raw_tar_xz => "raw-tar-xz",
    matrix_from_vhd_tar_gz => "vhd-tar-gz",
    matrix_from_ova => "ova",
}

/// The library path the CLI uses, for the inputs whose readers live with the copy loop (raw
/// and archives): runs without the CLI.
#[test]
fn library_converts_raw_and_archives_to_raw() {
    if !have_images() {
        return;
    }
    use cloudimg::formats::convert::{convert_file, Output, Source};
    use cloudimg::formats::{DiskFormat, Options};
    let dir = tempfile::tempdir().expect("temporary directory");
    for input in ["raw", "raw-tar-gz", "raw-tar-xz", "vhd-tar-gz"] {
        let dst = dir.path().join(format!("{input}.raw"));
        let output = Output {
            path: &dst,
            format: DiskFormat::Raw,
            options: &Options::default(),
        };
        let source = Source::file(images().input(input));
        let stats = convert_file(source, output, None, &cloudimg::io::progress::Silent)
            .unwrap_or_else(|error| panic!("{input}: {error}"));
        assert_eq!(stats.virtual_size, RAW_SIZE, "{input}");
        assert!(stats.zero_bytes_skipped > 8 << 20, "{input}: {stats:?}");
        let compare = qemu_img(&[
            "compare",
            "-f",
            "raw",
            "-F",
            "raw",
            s(&images().raw),
            s(&dst),
        ]);
        assert!(
            compare.status.success(),
            "{input}: {}",
            String::from_utf8_lossy(&compare.stdout)
        );
        // The output is sparse: the skipped zeroes take no blocks.
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::metadata(&dst).expect("output exists");
        assert_eq!(meta.len(), RAW_SIZE);
        assert!(
            meta.blocks() * 512 < RAW_SIZE - (8 << 20),
            "{input} is not sparse"
        );
    }
}

fn new_dir() -> tempfile::TempDir {
    tempfile::tempdir().expect("temporary directory")
}

fn assert_ok(args: &[&str]) -> Output {
    let output = cloudimg(args);
    assert!(
        output.status.success(),
        "cloudimg {args:?}: {}: {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

#[test]
fn create_qcow2_with_metadata_preallocation_is_clean() {
    let Some([qemu]) = oracles(["qemu-img"]) else {
        return;
    };
    let dir = new_dir();
    let path = dir.path().join("big.qcow2");
    assert_ok(&[
        "create",
        "-f",
        "qcow2",
        "-o",
        "preallocation=metadata",
        s(&path),
        "8G",
    ]);
    qemu_img_check(&qemu, &path, "qcow2");
    assert_eq!(
        qemu_img_info(&qemu, &path, Some("qcow2"))["virtual-size"],
        8u64 << 30
    );
}

#[test]
fn create_makes_a_blank_image_of_every_format() {
    let Some([qemu]) = oracles(["qemu-img"]) else {
        return;
    };
    let dir = new_dir();
    for (format, qemu_format, check) in [
        ("raw", "raw", false),
        ("qcow2", "qcow2", true),
        ("vmdk", "vmdk", true),
        ("vhd", "vpc", false),
        ("vhdx", "vhdx", true),
        ("vdi", "vdi", true),
    ] {
        let path = dir.path().join(format!("blank.{format}"));
        assert_ok(&["create", "-f", format, s(&path), "64M"]);
        if check {
            qemu_img_check(&qemu, &path, qemu_format);
        }
        let size = qemu_img_info(&qemu, &path, Some(qemu_format))["virtual-size"].as_u64();
        assert!(
            size.is_some_and(|size| size >= 64 << 20),
            "{format}: {size:?}"
        );
    }
}

#[test]
fn resize_grows_and_refuses_to_shrink_without_the_flag() {
    let Some([qemu]) = oracles(["qemu-img"]) else {
        return;
    };
    let dir = new_dir();
    for (format, qemu_format) in [("qcow2", "qcow2"), ("raw", "raw")] {
        let path = dir.path().join(format!("r.{format}"));
        assert_ok(&["create", "-f", format, s(&path), "1G"]);
        assert_ok(&["resize", s(&path), "+1G"]);
        assert_eq!(
            qemu_img_info(&qemu, &path, Some(qemu_format))["virtual-size"],
            2u64 << 30
        );
        let refused = cloudimg(&["resize", s(&path), "512M"]);
        assert!(
            !refused.status.success(),
            "{format}: shrink without --shrink"
        );
        assert!(!String::from_utf8_lossy(&refused.stderr).contains("panicked"));
        assert_eq!(
            qemu_img_info(&qemu, &path, Some(qemu_format))["virtual-size"],
            2u64 << 30
        );
    }
    let raw = dir.path().join("r.raw");
    assert_ok(&["resize", "--shrink", s(&raw), "512M"]);
    assert_eq!(std::fs::metadata(&raw).expect("raw").len(), 512 << 20);
}

#[test]
fn info_and_check_describe_the_inputs() {
    if !have_images() {
        return;
    }
    for (input, format) in [
        ("raw", "raw"),
        ("qcow2", "qcow2"),
        ("vmdk-sparse", "vmdk"),
        ("vhd-dynamic", "vpc"),
        ("vhdx-dynamic", "vhdx"),
        ("vhdx-fixed", "vhdx"),
        ("vdi-dynamic", "vdi"),
        ("raw-tar-gz", "raw"),
    ] {
        let path = images().input(input);
        let output = assert_ok(&["info", "--json", s(path)]);
        let info: Value = serde_json::from_slice(&output.stdout)
            .unwrap_or_else(|error| panic!("{input}: info --json is not JSON: {error}"));
        assert_eq!(info["format"], format, "{input}: {info}");
        assert_eq!(info["virtual-size"], RAW_SIZE, "{input}: {info}");
        // Raw has no checks (qemu-img's status 63, tested in qemu_img.rs).
        if !input.contains("tar") && format != "raw" {
            assert_ok(&["check", s(path)]);
        }
    }
}

/// Bytes that look like `magic` at first and are noise after it.
fn noise_after(magic: &[u8], len: usize) -> Vec<u8> {
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut bytes = magic.to_vec();
    while bytes.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        bytes.extend_from_slice(&state.to_le_bytes());
    }
    bytes.truncate(len);
    bytes
}

#[test]
fn hostile_inputs_fail_cleanly() {
    if !have_images() {
        return;
    }
    let dir = new_dir();
    let qcow2 = std::fs::read(images().input("qcow2")).expect("qcow2 input");
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("truncated.qcow2", qcow2[..1000.min(qcow2.len())].to_vec()),
        (
            "header-only.qcow2",
            qcow2[..(64 << 10).min(qcow2.len())].to_vec(),
        ),
        ("noise.qcow2", noise_after(b"QFI\xfb\0\0\0\x03", 256 << 10)),
        ("noise.vmdk", noise_after(b"KDMV\x01\0\0\0", 256 << 10)),
        ("noise.vhdx", noise_after(b"vhdxfile", 2 << 20)),
        (
            "noise.tar.gz",
            noise_after(&[0x1f, 0x8b, 0x08, 0x00], 64 << 10),
        ),
    ];
    for (name, bytes) in cases {
        let path: PathBuf = dir.path().join(name);
        std::fs::write(&path, bytes).expect("write hostile input");
        let dst = dir.path().join(format!("{name}.out"));
        for args in [
            vec!["info", s(&path)],
            vec!["convert", "-O", "raw", s(&path), s(&dst)],
        ] {
            let output = cloudimg(&args);
            let stderr = String::from_utf8_lossy(&output.stderr);
            assert!(!output.status.success(), "{args:?} succeeded");
            assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
            assert!(!stderr.trim().is_empty(), "{args:?}: no error message");
        }
        assert!(!dst.exists(), "{name}: a failed convert left its output");
    }
}

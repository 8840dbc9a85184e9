//! Oracle tests: qemu-img makes and judges images; our reader, writer, check and resize must
//! agree with it.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::*;
use crate::formats::{Extent, Options, Target};
use crate::test_tools::{oracles, qemu_img_check, qemu_img_compare, qemu_img_info, Tool};

/// Guest size of the test disk: 24 MiB and a bit, not a multiple of any cluster size.
const RAW_SIZE: u64 = (24 << 20) + 12345;

fn s(p: &Path) -> &str {
    p.to_str().expect("temporary paths are UTF-8")
}

/// Deterministic pseudo-random bytes (incompressible).
fn noise(len: usize, mut x: u32) -> Vec<u8> {
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

/// A raw disk: an ext4 filesystem with real files, a hole, incompressible and compressible
/// regions, and data in the unaligned tail.
fn make_raw(mkfs: &Tool, dir: &Path) -> PathBuf {
    let raw = dir.join("disk.raw");
    let file = File::create(&raw).unwrap();
    file.set_len(16 << 20).unwrap();
    drop(file);
    mkfs.run(["-q", "-d", "/usr/share/doc/git", s(&raw)]);
    let file = std::fs::OpenOptions::new().write(true).open(&raw).unwrap();
    file.set_len(RAW_SIZE).unwrap();
    // Incompressible data across the 18 MiB mark (and across 4 KiB-cluster L2 boundaries).
    file.write_all_at(&noise(700_000, 7), (18 << 20) - 300_000)
        .unwrap();
    // Compressible text with a one-cluster gap of zeroes inside.
    let text: Vec<u8> = b"cloudimg qcow2 test ".repeat(10_000);
    file.write_all_at(&text, 20 << 20).unwrap();
    file.write_all_at(&text, (20 << 20) + 300_000).unwrap();
    // The unaligned tail.
    file.write_all_at(b"tail bytes", RAW_SIZE - 10).unwrap();
    raw
}

/// Reads a whole image through our reader, checking that `map` zero runs read as zeroes.
fn read_all(path: &Path) -> Vec<u8> {
    let file = File::open(path).unwrap();
    let mut reader = open(path, file).unwrap();
    let size = reader.virtual_size();
    let mut out = vec![0u8; size as usize];
    let mut pos = 0;
    while pos < size {
        let m = reader.map(pos).unwrap();
        assert!(m.len > 0 && pos + m.len <= size);
        // Read in uneven pieces to exercise partial clusters too.
        let mut at = pos;
        while at < pos + m.len {
            let n = (pos + m.len - at).min(3 << 20) as usize;
            reader
                .read_at(at, &mut out[at as usize..at as usize + n])
                .unwrap();
            at += n as u64;
        }
        if m.extent == Extent::Zero {
            assert!(out[pos as usize..(pos + m.len) as usize]
                .iter()
                .all(|b| *b == 0));
        }
        pos += m.len;
    }
    out
}

fn raw_bytes(raw: &Path) -> Vec<u8> {
    let mut bytes = std::fs::read(raw).unwrap();
    bytes.resize(RAW_SIZE.div_ceil(512) as usize * 512, 0);
    bytes
}

/// The generic convert loop in miniature: whole units, all-zero units skipped.
fn write_with_ours(raw: &Path, out: &Path, options: &str) {
    let options = Options::parse(options).unwrap();
    let target = Target {
        path: out,
        final_path: out,
    };
    let mut writer = create(target, RAW_SIZE, &options).unwrap();
    let unit = writer.granularity() as usize;
    let input = File::open(raw).unwrap();
    // Several units per call, as the real loop may do.
    let mut buf = vec![0; unit * 3];
    let mut pos = 0u64;
    while pos < RAW_SIZE {
        let n = (RAW_SIZE - pos).min(buf.len() as u64) as usize;
        input.read_exact_at(&mut buf[..n], pos).unwrap();
        let mut start = 0;
        while start < n {
            let end = (start + unit).min(n);
            if buf[start..end].iter().all(|b| *b == 0) {
                start = end;
                continue;
            }
            // Extend over following non-zero units to pass several at once.
            let mut stop = end;
            while stop < n {
                let next = (stop + unit).min(n);
                if buf[stop..next].iter().all(|b| *b == 0) {
                    break;
                }
                stop = next;
            }
            writer
                .write_data(pos + start as u64, &buf[start..stop])
                .unwrap();
            start = stop;
        }
        pos += n as u64;
    }
    writer.finish().unwrap();
}

fn assert_qemu_clean(qemu: &Tool, image: &Path, raw: &Path) {
    qemu_img_check(qemu, image, "qcow2");
    // Our own check must agree.
    let report = check(image, File::open(image).unwrap()).unwrap();
    assert_eq!(report.exit_code(), 0, "{report:?}");
    qemu_img_compare(qemu, raw, image, "qcow2");
}

fn same_bytes(a: &Path, b: &Path) -> bool {
    std::fs::read(a).unwrap() == std::fs::read(b).unwrap()
}

#[test]
fn reader_matches_raw_for_every_qemu_variant() {
    let Some([qemu, mkfs]) = oracles(["qemu-img", "mkfs.ext4"]) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let raw = make_raw(&mkfs, dir.path());
    let expected = raw_bytes(&raw);
    let variants: [&[&str]; 8] = [
        &["-o", "compat=1.1"],
        &["-o", "compat=0.10"],
        &["-c"],
        &["-c", "-o", "compat=0.10"],
        &["-c", "-o", "compression_type=zstd"],
        &["-o", "extended_l2=on,cluster_size=128K"],
        &["-o", "cluster_size=4096"],
        &["-c", "-o", "cluster_size=512"],
    ];
    for (i, extra) in variants.iter().enumerate() {
        let image = dir.path().join(format!("v{i}.qcow2"));
        let mut args = vec!["convert", "-f", "raw", "-O", "qcow2"];
        args.extend_from_slice(extra);
        args.extend_from_slice(&[s(&raw), s(&image)]);
        qemu.run(args);
        assert!(read_all(&image) == expected, "variant {extra:?} differs");
    }
}

#[test]
fn info_matches_qemu_format_specific() {
    let Some([qemu, mkfs]) = oracles(["qemu-img", "mkfs.ext4"]) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    for (i, opts) in [
        "compat=1.1",
        "compat=0.10",
        "compression_type=zstd",
        "extended_l2=on",
    ]
    .iter()
    .enumerate()
    {
        let image = dir.path().join(format!("i{i}.qcow2"));
        qemu.run(["create", "-q", "-f", "qcow2", "-o", opts, s(&image), "3M"]);
        let json = qemu_img_info(&qemu, &image, None);
        let reader = open(&image, File::open(&image).unwrap()).unwrap();
        let info = reader.info();
        assert_eq!(
            serde_json::Value::Object(info.format_specific),
            json["format-specific"]["data"],
            "{opts}"
        );
        assert_eq!(info.virtual_size, 3 << 20);
        assert_eq!(info.compression, None);
    }
    let (image, _) = compressed_image(&qemu, &mkfs, dir.path());
    let reader = open(&image, File::open(&image).unwrap()).unwrap();
    assert_eq!(reader.info().compression.as_deref(), Some("zlib"));
}

#[test]
fn probe_recognises_the_magic_only() {
    let probe = |head: &[u8]| crate::formats::Probe {
        head: head.to_vec(),
        tail: Vec::new(),
        len: head.len() as u64,
    };
    assert!(super::probe(&probe(b"QFI\xfb\0\0\0\x03")));
    assert!(!super::probe(&probe(b"QFI\xfa\0\0\0\x03")));
    assert!(!super::probe(&probe(b"QFI")));
}

#[test]
fn reader_sees_zero_clusters_and_subclusters() {
    let Some([qemu, qemu_io]) = oracles(["qemu-img", "qemu-io"]) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    for (i, opts) in ["compat=1.1", "extended_l2=on"].iter().enumerate() {
        let image = dir.path().join(format!("z{i}.qcow2"));
        qemu.run(["create", "-q", "-f", "qcow2", "-o", opts, s(&image), "4M"]);
        let io = |cmd: &str| {
            qemu_io.run(["-f", "qcow2", "-c", cmd, s(&image)]);
        };
        io("write -P 0xab 0 1M");
        // Zero a range inside written data (zero flag / zero subclusters) and a fresh range.
        io("write -z 64k 64k");
        io("write -z 2M 64k");
        io("write -P 0xcd 3M 4k");
        let data = read_all(&image);
        assert!(data[..65536].iter().all(|b| *b == 0xab));
        assert!(data[65536..131072].iter().all(|b| *b == 0));
        assert!(data[131072..1 << 20].iter().all(|b| *b == 0xab));
        assert!(data[3 << 20..(3 << 20) + 4096].iter().all(|b| *b == 0xcd));
        let mut reader = open(&image, File::open(&image).unwrap()).unwrap();
        assert_eq!(reader.map(65536).unwrap().extent, Extent::Zero);
        assert_eq!(reader.map(0).unwrap().len, 65536);
    }
}

#[test]
fn map_returns_long_runs() {
    let Some([qemu, qemu_io]) = oracles(["qemu-img", "qemu-io"]) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("long.qcow2");
    qemu.run([
        "create",
        "-q",
        "-f",
        "qcow2",
        "-o",
        "cluster_size=4096",
        s(&image),
        "64M",
    ]);
    qemu_io.run(["-f", "qcow2", "-c", "write -P 1 1M 20M", s(&image)]);
    let mut reader = open(&image, File::open(&image).unwrap()).unwrap();
    assert_eq!(
        reader.map(0).unwrap(),
        crate::formats::Mapping {
            extent: Extent::Zero,
            len: 1 << 20
        }
    );
    // 20 MiB of data spans ten L2 tables of 4 KiB clusters: one run.
    assert_eq!(reader.map(1 << 20).unwrap().len, 20 << 20);
    let info = reader.info();
    assert_eq!(info.cluster_size, Some(4096));
    assert_eq!(info.compat.as_deref(), Some("1.1"));
}

#[test]
fn uncompressed_output_is_identical_to_qemu() {
    let Some([qemu, mkfs]) = oracles(["qemu-img", "mkfs.ext4"]) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let raw = make_raw(&mkfs, dir.path());
    let cases = [
        ("", vec![]),
        ("compat=0.10", vec!["-o", "compat=0.10"]),
        (
            "preallocation=metadata",
            vec!["-o", "preallocation=metadata"],
        ),
        (
            "preallocation=metadata,cluster_size=4096",
            vec!["-o", "preallocation=metadata,cluster_size=4096"],
        ),
        ("cluster_size=2M", vec!["-o", "cluster_size=2M"]),
        ("cluster_size=4096", vec!["-o", "cluster_size=4096"]),
        // 2 KiB clusters: a refcount block covers 2 MiB, so the layout crosses several.
        (
            "preallocation=metadata,cluster_size=2048",
            vec!["-o", "preallocation=metadata,cluster_size=2048"],
        ),
    ];
    for (i, (ours_opts, qemu_opts)) in cases.iter().enumerate() {
        let ours = dir.path().join(format!("ours{i}.qcow2"));
        let theirs = dir.path().join(format!("theirs{i}.qcow2"));
        write_with_ours(&raw, &ours, ours_opts);
        let mut args = vec!["convert", "-f", "raw", "-O", "qcow2"];
        args.extend_from_slice(qemu_opts);
        args.extend_from_slice(&[s(&raw), s(&theirs)]);
        qemu.run(args);
        assert_qemu_clean(&qemu, &ours, &raw);
        assert!(
            same_bytes(&ours, &theirs),
            "{ours_opts:?} differs from qemu-img"
        );
    }
}

#[test]
fn small_clusters_cross_refcount_blocks_cleanly() {
    let Some([qemu, mkfs]) = oracles(["qemu-img", "mkfs.ext4"]) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let raw = make_raw(&mkfs, dir.path());
    for (i, opts) in [
        // Below 4 KiB qemu's 4 KiB zero detection allocates some all-zero clusters, so only
        // validity is compared, not bytes.
        "cluster_size=2048",
        "cluster_size=512",
        "cluster_size=512,preallocation=metadata",
        "preallocation=falloc",
        "preallocation=full,cluster_size=16K",
    ]
    .iter()
    .enumerate()
    {
        let ours = dir.path().join(format!("small{i}.qcow2"));
        write_with_ours(&raw, &ours, opts);
        assert_qemu_clean(&qemu, &ours, &raw);
        assert!(read_all(&ours) == raw_bytes(&raw), "{opts}");
    }
}

#[test]
fn compressed_output_is_valid_and_close_to_qemu_size() {
    let Some([qemu, mkfs]) = oracles(["qemu-img", "mkfs.ext4"]) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let raw = make_raw(&mkfs, dir.path());
    for (i, (ours_opts, qemu_opts)) in [
        ("compress=on", vec!["-c"]),
        (
            "compress=on,compression_type=zstd",
            vec!["-c", "-o", "compression_type=zstd"],
        ),
        ("compress=on,compat=0.10", vec!["-c", "-o", "compat=0.10"]),
        (
            "compress=on,cluster_size=4096",
            vec!["-c", "-o", "cluster_size=4096"],
        ),
        (
            "compress=on,cluster_size=2M",
            vec!["-c", "-o", "cluster_size=2M"],
        ),
    ]
    .iter()
    .enumerate()
    {
        let ours = dir.path().join(format!("c{i}.qcow2"));
        let theirs = dir.path().join(format!("t{i}.qcow2"));
        write_with_ours(&raw, &ours, ours_opts);
        let mut args = vec!["convert", "-f", "raw", "-O", "qcow2"];
        args.extend_from_slice(qemu_opts);
        args.extend_from_slice(&[s(&raw), s(&theirs)]);
        qemu.run(args);
        assert_qemu_clean(&qemu, &ours, &raw);
        assert!(read_all(&ours) == raw_bytes(&raw));
        let (a, b) = (
            std::fs::metadata(&ours).unwrap().len(),
            std::fs::metadata(&theirs).unwrap().len(),
        );
        assert_eq!(a % 512, 0);
        assert!(
            a.abs_diff(b) * 100 <= b * 3,
            "{ours_opts}: {a} bytes vs qemu's {b}"
        );
    }
}

#[test]
fn blank_image_matches_qemu_create() {
    let Some([qemu]) = oracles(["qemu-img"]) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    for (i, (opts, size)) in [
        ("", "100M"),
        ("compat=0.10", "100M"),
        ("", "0"),
        ("compression_type=zstd", "1M"),
    ]
    .iter()
    .enumerate()
    {
        let ours = dir.path().join(format!("b{i}.qcow2"));
        let theirs = dir.path().join(format!("q{i}.qcow2"));
        let bytes = crate::formats::options::parse_size(size).unwrap();
        let writer = create(
            Target {
                path: &ours,
                final_path: &ours,
            },
            bytes,
            &Options::parse(opts).unwrap(),
        )
        .unwrap();
        writer.finish().unwrap();
        let mut args = vec!["create", "-q", "-f", "qcow2"];
        if !opts.is_empty() {
            args.extend_from_slice(&["-o", opts]);
        }
        args.extend_from_slice(&[s(&theirs), size]);
        qemu.run(args);
        qemu.run(["check", s(&ours)]);
        assert!(same_bytes(&ours, &theirs), "blank {opts} {size}");
    }
}

#[test]
fn invalid_options_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("x.qcow2");
    for opts in [
        "lazy_refcounts=on",
        "refcount_bits=8",
        "cluster_size=3000",
        "cluster_size=4M",
        "compat=0.10,compression_type=zstd",
        "compress=on,preallocation=metadata",
        "bogus=1",
    ] {
        let result = create(
            Target {
                path: &out,
                final_path: &out,
            },
            1 << 20,
            &Options::parse(opts).unwrap(),
        );
        assert!(
            matches!(result, Err(FormatError::InvalidOption { .. })),
            "{opts} accepted"
        );
    }
}

#[test]
fn check_is_clean_on_qemu_images_and_finds_refcount_damage() {
    let Some([qemu, mkfs]) = oracles(["qemu-img", "mkfs.ext4"]) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let raw = make_raw(&mkfs, dir.path());
    let image = dir.path().join("c.qcow2");
    qemu.run([
        "convert",
        "-f",
        "raw",
        "-O",
        "qcow2",
        "-c",
        s(&raw),
        s(&image),
    ]);
    let report = check(&image, File::open(&image).unwrap()).unwrap();
    assert_eq!(report.exit_code(), 0, "{report:?}");
    assert!(report.allocated_clusters.unwrap() > 0);

    let image = dir.path().join("u.qcow2");
    qemu.run(["convert", "-f", "raw", "-O", "qcow2", s(&raw), s(&image)]);
    assert_eq!(
        check(&image, File::open(&image).unwrap())
            .unwrap()
            .exit_code(),
        0
    );
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&image)
        .unwrap();
    // Refcount of cluster 5 (a data cluster) raised to 2: leaked, and its COPIED flag wrong.
    file.write_all_at(&2u16.to_be_bytes(), 0x20000 + 5 * 2)
        .unwrap();
    let report = check(&image, File::open(&image).unwrap()).unwrap();
    assert_eq!(report.exit_code(), 2, "{report:?}");
    assert!(report.leaks.iter().any(|l| l.contains("cluster 5 ")));
    // Refcount of cluster 5 dropped to 0: a corruption.
    file.write_all_at(&0u16.to_be_bytes(), 0x20000 + 5 * 2)
        .unwrap();
    let report = check(&image, File::open(&image).unwrap()).unwrap();
    assert!(report.corruptions.iter().any(|c| c.contains("cluster 5 ")));
    // qemu-img agrees that it is corrupt.
    assert_eq!(qemu.output(["check", s(&image)]).status.code(), Some(2));
    // Only a leak: an unused cluster counted once.
    let image = dir.path().join("leak.qcow2");
    qemu.run(["create", "-q", "-f", "qcow2", s(&image), "1M"]);
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&image)
        .unwrap();
    file.write_all_at(&1u16.to_be_bytes(), 0x20000 + 9 * 2)
        .unwrap();
    let report = check(&image, File::open(&image).unwrap()).unwrap();
    assert_eq!(report.exit_code(), 3, "{report:?}");
}

#[test]
fn resize_grows_within_and_beyond_the_l1_table() {
    let Some([qemu, mkfs]) = oracles(["qemu-img", "mkfs.ext4"]) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let raw = make_raw(&mkfs, dir.path());
    let image = dir.path().join("r.qcow2");
    // 512-byte clusters: one L1 entry maps only 32 KiB, so growing needs a bigger L1.
    qemu.run([
        "convert",
        "-f",
        "raw",
        "-O",
        "qcow2",
        "-o",
        "cluster_size=512",
        s(&raw),
        s(&image),
    ]);
    let before = read_all(&image);
    for new_size in [RAW_SIZE.div_ceil(512) * 512 + 512, 64 << 20, 200 << 20] {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&image)
            .unwrap();
        resize(&image, file, new_size, false).unwrap();
        qemu.run(["check", s(&image)]);
        let json = qemu_img_info(&qemu, &image, None);
        assert_eq!(json["virtual-size"], new_size);
    }
    let after = read_all(&image);
    assert!(after[..before.len()] == before[..]);
    assert!(after[before.len()..].iter().all(|b| *b == 0));
}

#[test]
fn resize_grows_a_compressed_image_whose_end_is_not_cluster_aligned() {
    let Some([qemu, mkfs]) = oracles(["qemu-img", "mkfs.ext4"]) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (image, _) = compressed_image(&qemu, &mkfs, dir.path());
    let before = read_all(&image);
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&image)
        .unwrap();
    // One L1 entry maps 512 MiB with 64 KiB clusters: 1 GiB needs a new L1.
    resize(&image, file, 1 << 30, false).unwrap();
    qemu.run(["check", s(&image)]);
    assert_eq!(
        check(&image, File::open(&image).unwrap())
            .unwrap()
            .exit_code(),
        0
    );
    let mut reader = open(&image, File::open(&image).unwrap()).unwrap();
    assert_eq!(reader.virtual_size(), 1 << 30);
    let mut head = vec![0; before.len()];
    reader.read_at(0, &mut head).unwrap();
    assert!(head == before);
}

#[test]
fn resize_shrinks_only_when_allowed_and_empty() {
    let Some([qemu, qemu_io]) = oracles(["qemu-img", "qemu-io"]) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("s.qcow2");
    qemu.run(["create", "-q", "-f", "qcow2", s(&image), "64M"]);
    qemu_io.run(["-f", "qcow2", "-c", "write -P 1 1M 1M", s(&image)]);
    let rw = || {
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&image)
            .unwrap()
    };
    assert!(matches!(
        resize(&image, rw(), 32 << 20, false),
        Err(FormatError::ShrinkRefused { .. })
    ));
    assert!(matches!(
        resize(&image, rw(), 1 << 20, true),
        Err(FormatError::Unsupported { .. })
    ));
    resize(&image, rw(), 2 << 20, true).unwrap();
    qemu.run(["check", s(&image)]);
    let mut reader = open(&image, File::open(&image).unwrap()).unwrap();
    assert_eq!(reader.virtual_size(), 2 << 20);
    let mut buf = vec![0; 4096];
    reader.read_at(1 << 20, &mut buf).unwrap();
    assert!(buf.iter().all(|b| *b == 1));
}

/// A small valid compressed image to damage.
fn compressed_image(qemu: &Tool, mkfs: &Tool, dir: &Path) -> (PathBuf, Vec<u8>) {
    let raw = make_raw(mkfs, dir);
    let image = dir.join("h.qcow2");
    qemu.run([
        "convert",
        "-f",
        "raw",
        "-O",
        "qcow2",
        "-c",
        s(&raw),
        s(&image),
    ]);
    let bytes = std::fs::read(&image).unwrap();
    (image, bytes)
}

/// Opens and reads everything; must fail cleanly (an error, no panic, no hang).
fn read_fails(path: &Path) -> bool {
    let Ok(file) = File::open(path) else {
        return true;
    };
    let mut reader = match open(path, file) {
        Ok(r) => r,
        Err(_) => return true,
    };
    let size = reader.virtual_size();
    let mut buf = vec![0; 1 << 20];
    let mut pos = 0;
    while pos < size {
        let n = (size - pos).min(buf.len() as u64) as usize;
        if reader.read_at(pos, &mut buf[..n]).is_err() || reader.map(pos).is_err() {
            return true;
        }
        pos += n as u64;
    }
    false
}

#[test]
fn hostile_images_fail_cleanly() {
    let Some([qemu, mkfs]) = oracles(["qemu-img", "mkfs.ext4"]) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (image, good) = compressed_image(&qemu, &mkfs, dir.path());
    let bad = dir.path().join("bad.qcow2");
    let l1 = 0x30000;
    let l2 = u64::from_be_bytes(good[l1..l1 + 8].try_into().unwrap()) & tables::OFFSET_MASK;
    let damage = |f: &dyn Fn(&mut Vec<u8>)| {
        let mut bytes = good.clone();
        f(&mut bytes);
        std::fs::write(&bad, &bytes).unwrap();
        read_fails(&bad)
    };
    assert!(!read_fails(&image));
    // Truncated inside the header, and before the L1 table.
    assert!(damage(&|b| b.truncate(50)));
    assert!(damage(&|b| b.truncate(0x30004)));
    // Truncated in the middle of compressed data.
    assert!(damage(&|b| b.truncate(b.len() / 2)));
    // L1 entry pointing past the end of the file.
    assert!(damage(
        &|b| b[l1..l1 + 8].copy_from_slice(&(0x8000_0000_7fff_0000u64).to_be_bytes())
    ));
    // Huge L1 size (header field l1_size).
    assert!(damage(
        &|b| b[36..40].copy_from_slice(&u32::MAX.to_be_bytes())
    ));
    // A compressed L2 entry pointing past the end of the file.
    assert!(damage(&|b| {
        let at = l2 as usize;
        b[at..at + 8].copy_from_slice(&(0x4000_00ff_ffff_0000u64).to_be_bytes())
    }));
    // Garbage in place of compressed data.
    assert!(damage(&|b| {
        let first = u64::from_be_bytes(b[l2 as usize..l2 as usize + 8].try_into().unwrap());
        let host = (first & ((1 << 54) - 1)) as usize;
        b[host..host + 64].fill(0xff);
    }));
    // A malformed entry for a later compressed cluster spoils reads of that cluster only,
    // although read-ahead would have inflated it together with cluster 0.
    let mut bytes = good.clone();
    let later = (1..8)
        .find(|i| bytes[l2 as usize + i * 8] & 0xc0 == 0x40)
        .expect("one of the first clusters is compressed");
    bytes[l2 as usize + later * 8] |= 0x80; // COPIED on a compressed entry is invalid
    std::fs::write(&bad, &bytes).unwrap();
    let mut reader = open(&bad, File::open(&bad).unwrap()).unwrap();
    let mut cluster = vec![0; 65536];
    reader.read_at(0, &mut cluster).unwrap();
    assert!(cluster[..] == raw_bytes(&dir.path().join("disk.raw"))[..65536]);
    assert!(reader.read_at(later as u64 * 65536, &mut cluster).is_err());
    // An L2 table that points at the header as data is readable (no loop possible) but
    // check reports the double reference.
    let mut bytes = good.clone();
    bytes[l2 as usize..l2 as usize + 8]
        .copy_from_slice(&(0x8000_0000_0000_0000u64 | 0x30000).to_be_bytes());
    std::fs::write(&bad, &bytes).unwrap();
    let report = check(&bad, File::open(&bad).unwrap()).unwrap();
    assert_eq!(report.exit_code(), 2);
}
